"""The JSON-RPC layer of `EvmChain` (raw HTTP + the own ABI codec, no web3.py): every revert of a real
node becomes `ChainRevert` with the custom error decoded, every other JSON-RPC error
`ChainRejected`, and every transport failure or answer that is not JSON-RPC -- a closed port, a
tiny real HTTP server answering garbage, too much or too deep JSON, nothing -- `ChainUnavailable`.
Transactions are signed byte for byte as eth_account signs them, and the daemon's import path
does not load web3 at all."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from eth_account import Account
from eth_utils.address import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from config import contract_address, load_config
from ledger_client import (
    ChainRejected,
    ChainRevert,
    ChainUnavailable,
    EvmChain,
    KeyFileError,
    generate_account,
    load_account,
    load_tx_key,
)
from ledger_client._chain import MAX_RESPONSE_BYTES, _revert_data, call_data
from ledger_client._format import keccak256
from ledger_client._signing import TxKey
from simulator import DEV_KEYS, Anvil, Provisioned

from .conftest import GatewayProcess

ROOT = Path(__file__).resolve().parent.parent
ZERO = "0x" + "00" * 20


# -- the daemon's import path -----------------------------------------------------------------


def test_the_daemon_does_not_import_web3() -> None:
    # nor eth_account (its import pulls eth_keyfile and py_ecc's pairings: 0.4 s of CPU), nor
    # eth_utils / eth_abi / eth_keys (~13 MB: the own ABI codec and coincurve sign instead); and
    # the recursion limit is the interpreter's (py_ecc's side effect undone by _deps)
    code = ("import sys; limit = sys.getrecursionlimit(); import gateway._daemon, gateway._cli;"
            "heavy = ('web3', 'eth_account', 'eth_keyfile', 'py_ecc.bls', 'eth_utils',"
            " 'eth_abi', 'eth_keys');"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy),"
            " sys.getrecursionlimit() == limit)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[] True", out.stdout[:500]


def test_asking_for_w3_imports_web3_on_demand() -> None:
    # the check above can fail: web3 is importable and is loaded once something asks for it
    code = ("import sys, ledger_client;"
            "c = ledger_client.EvmChain('http://127.0.0.1:9');"
            "assert 'web3' not in sys.modules; c.w3; print('web3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "True"


# -- signing ----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(key=st.binary(min_size=32, max_size=32).filter(
           lambda k: 0 < int.from_bytes(k, "big") < 2**256 - 2**129),
       nonce=st.integers(0, 2**64 - 1), gas_price=st.integers(0, 2**128),
       gas=st.integers(21_000, 2**63), to=st.one_of(st.just(b""), st.binary(min_size=20,
                                                                               max_size=20)),
       value=st.integers(0, 2**128), data=st.binary(max_size=300),
       chain_id=st.integers(1, 2**32))
def test_transactions_are_signed_as_eth_account_signs_them(
        key: bytes, nonce: int, gas_price: int, gas: int, to: bytes, value: int, data: bytes,
        chain_id: int) -> None:
    tx: dict[str, Any] = {"nonce": nonce, "gasPrice": gas_price, "gas": gas, "value": value,
                          "data": data, "chainId": chain_id}
    if to:
        tx["to"] = to_checksum_address(to)
    expected = Account.sign_transaction(tx, key)
    raw, txh = TxKey(key).sign_legacy(nonce=nonce, gas_price=gas_price, gas=gas, to=to,
                                      value=value, data=data, chain_id=chain_id)
    assert (raw, txh) == (bytes(expected.raw_transaction), bytes(expected.hash))
    assert TxKey(key).address == Account.from_key(key).address


def test_a_key_file_loads_as_the_same_account(tmp_path: Path) -> None:
    path = tmp_path / "evm.key"
    acct = generate_account(path)
    assert load_tx_key(path).address == load_account(path).address == acct.address
    assert acct.key.hex() not in repr(load_tx_key(path))
    for bad in (b"\x00" * 32, b"\xff" * 32):  # zero, and above the curve order
        with pytest.raises(KeyFileError):
            TxKey(bad)


# -- error translation against a real node ------------------------------------------------------


@pytest.fixture
async def ledger(anvil: Anvil) -> AsyncIterator[EvmChain]:
    """A fresh EmissionsLedger, its registry not bound (so its views revert)."""
    chain = EvmChain(anvil.url)
    await chain.deploy(Account.from_key(DEV_KEYS[0]))
    yield chain
    await chain.close()


async def test_a_reverting_view_raises_the_decoded_custom_error(ledger: EvmChain) -> None:
    with pytest.raises(ChainRevert) as ei:
        await ledger.gateway("gw-x")
    assert (ei.value.name, ei.value.args_) == ("RegistryNotBound", ())
    assert ei.value.data == "0x" + keccak256(b"RegistryNotBound()")[:4].hex()


async def test_a_reverting_transaction_raises_at_gas_estimation_with_its_arguments(
        ledger: EvmChain) -> None:
    stranger = Account.from_key(DEV_KEYS[1])
    fn = ledger.contract.functions.bindRegistry("0x" + "22" * 20)
    with pytest.raises(ChainRevert) as ei:
        await ledger.sign_call(stranger, fn)
    assert (ei.value.name, ei.value.args_) == ("NotDeployer", (stranger.address,))
    deployer = Account.from_key(DEV_KEYS[0])
    with pytest.raises(ChainRevert) as ei:
        await ledger.transact(deployer, ledger.contract.functions.bindRegistry(ZERO))
    assert ei.value.name == "ZeroAddress"


async def test_views_and_transactions_round_trip(ledger: EvmChain) -> None:
    deployer = Account.from_key(DEV_KEYS[0])
    assert await ledger.contract.functions.deployer().call() == deployer.address
    registry = "0x" + "ab" * 20
    r = await ledger.transact(deployer, ledger.contract.functions.bindRegistry(registry))
    assert r.status == 1 and r.block_number == await ledger.block_number()
    assert r.logs == () or all(isinstance(lg["topics"][0], bytes) for lg in r.logs)
    assert (await ledger.contract.functions.registry().call()).lower() == registry
    with pytest.raises(ChainRevert) as ei:
        await ledger.transact(deployer, ledger.contract.functions.bindRegistry(registry))
    assert ei.value.name == "RegistryAlreadyBound"
    assert ei.value.args_ == (to_checksum_address(registry),)


async def test_a_refused_transaction_is_rejected_not_a_revert(ledger: EvmChain) -> None:
    deployer = TxKey(bytes.fromhex(DEV_KEYS[0].removeprefix("0x")))  # the daemon's signer
    raw, txh, _ = await ledger.sign_call(deployer, ledger.contract.functions.bindRegistry(
        "0x" + "cd" * 20))
    assert await ledger.send_raw(raw) == txh
    assert (await ledger.wait_receipt(txh, 30)).status == 1
    with pytest.raises(ChainRejected):  # nonce too low (or already known): the node refuses it
        await ledger.send_raw(raw)
    with pytest.raises(ChainRejected):
        await ledger.send_raw(b"\x01\x02\x03")
    with pytest.raises(ChainRejected):
        await ledger.request("eth_noSuchMethod", [])


async def test_an_unknown_transaction_has_no_receipt(ledger: EvmChain) -> None:
    assert await ledger.receipt(b"\x77" * 32) is None


async def test_own_and_web3_contract_calls_encode_alike(ledger: EvmChain) -> None:
    args = (b"\x01" * 32, 3, b"\x02" * 32, [b"\x03" * 32])
    assert ledger.address is not None
    web3_fn = ledger.contract_at("EmissionsLedger", ledger.address).functions.verifyRecord(*args)
    assert call_data(ledger.contract.functions.verifyRecord(*args)) == call_data(web3_fn)


# -- transport failures against a tiny real HTTP server -----------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_closed_port_is_unavailable() -> None:
    chain = EvmChain(f"http://127.0.0.1:{_closed_port()}")
    try:
        with pytest.raises(ChainUnavailable):
            await chain.chain_id()
    finally:
        await chain.close()


RELEASE = web.AppKey("release", asyncio.Event)


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), status=status,
                        content_type="application/json")


async def _reset(req: web.Request) -> web.StreamResponse:
    assert req.transport is not None
    req.transport.close()
    return web.Response()


async def _hang(req: web.Request) -> web.StreamResponse:
    await req.app[RELEASE].wait()  # set at teardown: the client's timeout ends the request
    return web.Response()


ANSWERS: dict[str, Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]] = {}


def answer(name: str) -> Callable[[Any], Any]:
    def reg(f: Any) -> Any:
        ANSWERS[name] = f
        return f
    return reg


@answer("not-json")
async def _a1(req: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
    return web.Response(body=b"<html>502 Bad Gateway</html>", content_type="text/html")


@answer("http-500")
async def _a2(req: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
    return _json({"jsonrpc": "2.0", "id": msg["id"], "result": "0x1"}, status=500)


@answer("too-large")
async def _a3(req: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
    pad = "0" * (MAX_RESPONSE_BYTES + 2)
    return web.Response(body=f'{{"jsonrpc":"2.0","id":{msg["id"]},"result":"0x1{pad}"}}'.encode())


@answer("too-deep")
async def _a4(req: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
    return web.Response(body=b'{"jsonrpc":"2.0","id":1,"result":' + b"[" * 100_000)


@answer("another-id")
async def _a5(req: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
    return _json({"jsonrpc": "2.0", "id": msg["id"] + 1, "result": "0x1"})


@answer("no-result")
async def _a6(req: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
    return _json({"jsonrpc": "2.0", "id": msg["id"]})


@answer("not-a-quantity")
async def _a7(req: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
    return _json({"jsonrpc": "2.0", "id": msg["id"], "result": {"chain": 1}})


@answer("array")
async def _a8(req: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
    return _json([{"jsonrpc": "2.0", "id": msg["id"], "result": "0x1"}])


@answer("reset")
async def _a9(req: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
    return await _reset(req)


@answer("hang")
async def _a10(req: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
    return await _hang(req)


@answer("rejected")
async def _a11(req: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
    return _json({"jsonrpc": "2.0", "id": msg["id"],
                  "error": {"code": -32000, "message": "nonce too low"}})


@answer("nested-revert")
async def _a12(req: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
    sel = keccak256(b"ZeroAddress()")[:4].hex()
    return _json({"jsonrpc": "2.0", "id": msg["id"], "error": {
        "code": -32015, "message": "VM execution error", "data": {"data": "0x" + sel}}})


@answer("revert-no-data")
async def _a13(req: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
    return _json({"jsonrpc": "2.0", "id": msg["id"],
                  "error": {"code": 3, "message": "execution reverted"}})


@answer("bad-receipt")
async def _a14(req: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
    return _json({"jsonrpc": "2.0", "id": msg["id"], "result": {"status": "0x1"}})


@answer("bad-call-result")
async def _a15(req: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
    return _json({"jsonrpc": "2.0", "id": msg["id"], "result": "0x1234"})


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def handle(req: web.Request) -> web.StreamResponse:
        msg = json.loads(await req.read())
        return await ANSWERS[req.match_info["kind"]](req, msg)

    app = web.Application()
    app[RELEASE] = asyncio.Event()
    app.router.add_post("/{kind}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        app[RELEASE].set()
        await runner.cleanup()


@pytest.mark.parametrize("kind", ["not-json", "http-500", "too-large", "too-deep", "another-id",
                                  "no-result", "not-a-quantity", "array", "reset", "hang"])
async def test_a_bad_answer_is_unavailable(server: str, kind: str) -> None:
    chain = EvmChain(f"{server}/{kind}", request_timeout_s=0.5)
    try:
        with pytest.raises(ChainUnavailable):
            await chain.block_number()
    finally:
        await chain.close()


async def test_errors_of_a_node_are_translated(server: str) -> None:
    addr = "0x" + "11" * 20
    chains = {k: EvmChain(f"{server}/{k}", contract_address=addr) for k in ANSWERS}
    try:
        with pytest.raises(ChainRejected):
            await chains["rejected"].send_raw(b"\x01")
        with pytest.raises(ChainRevert) as ei:
            await chains["nested-revert"].last_seq("gw")
        assert ei.value.name == "ZeroAddress"
        with pytest.raises(ChainRevert) as ei:
            await chains["revert-no-data"].last_seq("gw")
        assert ei.value.name == "unknown"
        with pytest.raises(ChainRejected):  # a transaction's error is never read as a revert
            await chains["revert-no-data"].send_raw(b"\x01")
        with pytest.raises(ChainUnavailable):
            await chains["bad-receipt"].receipt(b"\x01" * 32)
        with pytest.raises(ChainUnavailable):
            await chains["bad-call-result"].gateway("gw")
    finally:
        for c in chains.values():
            await c.close()


@pytest.mark.parametrize(("error", "expected"), [
    ({"code": 3, "message": "execution reverted", "data": "0x1234abcd"}, "0x1234abcd"),
    ({"code": -32000, "message": "x", "data": "0xdeadbeef"}, "0xdeadbeef"),
    ({"code": -32015, "message": "VM error", "data": {"data": "0x01020304"}}, "0x01020304"),
    ({"code": -32015, "message": "VM error", "data": {"reason": "x"}}, None),
    ({"code": -32000, "message": "boom", "data": None}, None),
    ({"code": 3, "message": "execution reverted"}, None),
    ({"code": -32000, "message": "execution reverted: no data"}, None),
    ({"code": -32000, "message": "insufficient funds for gas * price + value"}, False),
    ({"code": -32601, "message": "method not found"}, False),
    ({"code": -32000, "data": {"reason": "x"}}, False),
    ({}, False),
])
def test_which_errors_are_reverts(error: dict[str, Any], expected: str | bool | None) -> None:
    assert _revert_data(error) == expected


async def test_a_running_gateway_anchors_without_importing_web3(
        gateway: Provisioned, tmp_path: Path, gateway_process: type[GatewayProcess]) -> None:
    log = tmp_path / "gateway.log"
    g = gateway_process(gateway.config, log, env={"PYTHONPROFILEIMPORTTIME": "1"}).start()
    chain = EvmChain(gateway.rpc_url, contract_address=contract_address(
        load_config(gateway.config)))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while await chain.last_seq(gateway.gateway_id) < 2:  # two batches signed and anchored
            assert loop.time() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.1)
    finally:
        await chain.close()
    assert g.terminate() == 0
    text = log.read_text()
    imported = {m.group(1) for m in re.finditer(r"^import time:.*\|\s*([\w.]+)\s*$", text, re.M)}
    assert "ledger_client._uplink" in imported  # the import log is there to be read
    heavy = sorted(m for m in imported if m.split(".")[0] in (
        "web3", "eth_account", "eth_keyfile", "eth_utils", "eth_abi", "eth_keys"))
    assert heavy == []


def test_transactions_are_signed_by_libsecp256k1() -> None:
    # coincurve is a declared dependency: without it eth_keys falls back to its pure-Python
    # curve (~10 ms a signature instead of ~0.1 ms)
    assert TxKey(b"\x01" * 32).backend == "CoinCurveECCBackend"
