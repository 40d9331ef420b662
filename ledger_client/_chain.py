"""Thin I/O to an EVM chain over JSON-RPC: raw signed transactions only.

Works with any node that serves ``eth_sendRawTransaction``, ``eth_call``, ``eth_estimateGas``,
``eth_getTransactionReceipt``, ``eth_getTransactionCount``, ``eth_gasPrice`` and
``eth_chainId``: anvil, Hyperledger Besu, FISCO BCOS >= 3.9 with ``[web3_rpc] enable=true``.
Every transport failure becomes `ChainUnavailable`; every revert becomes `ChainRevert` with the
contract's custom error decoded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import aiohttp
from eth_abi.abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError
from web3.types import RPCEndpoint

from contracts import ARTIFACTS
from ledger_client._errors import ChainRejected, ChainRevert, ChainUnavailable
from ledger_client._format import BatchHeader, gateway_key, keccak256

T = TypeVar("T")


@cache
def load_artifact(name: str) -> dict[str, Any]:
    path = ARTIFACTS / f"{name}.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"contract artifact {name!r} not found at {path}: the package was installed without "
            "its contract artifacts (reinstall it, or run `node contracts/build.mjs` in a checkout)"
        ) from None
    data: dict[str, Any] = json.loads(text)
    return data


@cache
def all_errors_abi() -> list[dict[str, Any]]:
    """The custom errors of every compiled contract: a revert bubbling up from another
    contract of the system (the registry, allowances) decodes by name too."""
    items: dict[str, dict[str, Any]] = {}
    for path in sorted(ARTIFACTS.glob("*.json")):
        for item in load_artifact(path.stem)["abi"]:
            if item.get("type") == "error":
                sig = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
                items.setdefault(sig, item)
    return list(items.values())


def call_data(fn: Any) -> str:
    """The ABI-encoded call data (``0x`` + selector + arguments) of a bound contract function,
    ``contract.functions.name(*args)``, through web3's public ``Contract.encode_abi``.

    The one place that turns a bound function into transaction data (web3's own shortcut,
    ``ContractFunction._encode_transaction_data``, is private). It reads the bound function's
    public attributes (``w3``, ``contract_abi``, ``abi_element_identifier``, ``args``,
    ``kwargs``); tests/test_third_party_api.py checks the bytes against an independent
    encoding, so a web3 upgrade that changes them fails there, not on a plant."""
    contract = _abi_contract(fn.w3, fn.contract_abi)
    return str(contract.encode_abi(fn.abi_element_identifier, args=fn.args, kwargs=fn.kwargs))


# (w3, abi) -> an address-less contract for encoding; building one parses the whole ABI (ms)
_ABI_CONTRACTS: dict[tuple[int, int], tuple[object, object, Any]] = {}


def _abi_contract(w3: Any, abi: Any) -> Any:
    key = (id(w3), id(abi))
    hit = _ABI_CONTRACTS.get(key)
    if hit is not None and hit[0] is w3 and hit[1] is abi:  # the entry holds both: ids stay theirs
        return hit[2]
    if len(_ABI_CONTRACTS) >= 64:
        _ABI_CONTRACTS.clear()
    contract = w3.eth.contract(abi=abi)
    _ABI_CONTRACTS[key] = (w3, abi, contract)
    return contract


def _type_str(param: dict[str, Any]) -> str:
    """The canonical ABI type of a parameter (tuples spelled out, for selectors)."""
    t = str(param["type"])
    if t.startswith("tuple"):
        return "(" + ",".join(_type_str(c) for c in param["components"]) + ")" + t[5:]
    return t


def _error_table(abi: list[dict[str, Any]]) -> dict[bytes, tuple[str, list[str]]]:
    table: dict[bytes, tuple[str, list[str]]] = {}
    for item in abi:
        if item.get("type") != "error":
            continue
        types = [_type_str(i) for i in item["inputs"]]
        sel = keccak256(f"{item['name']}({','.join(types)})".encode())[:4]
        table[sel] = (item["name"], types)
    # Solidity's built-in Error(string) and Panic(uint256)
    table[bytes.fromhex("08c379a0")] = ("Error", ["string"])
    table[bytes.fromhex("4e487b71")] = ("Panic", ["uint256"])
    return table


def decode_revert(abi: list[dict[str, Any]], data: str | bytes | None) -> ChainRevert:
    if isinstance(data, str):
        raw = bytes.fromhex(data.removeprefix("0x")) if data.startswith("0x") else b""
    else:
        raw = data or b""
    if len(raw) < 4:
        return ChainRevert("unknown", (), "0x" + raw.hex())
    entry = _error_table(abi).get(raw[:4])
    if entry is None:
        return ChainRevert("unknown", (), "0x" + raw.hex())
    name, types = entry
    try:
        args = tuple(AsyncWeb3.to_checksum_address(a) if t == "address" else a
                     for t, a in zip(types, abi_decode(types, raw[4:]), strict=True))
    except Exception:  # malformed revert data: keep the raw bytes
        args = ()
    return ChainRevert(name, args, "0x" + raw.hex())


@dataclass(frozen=True, slots=True)
class OnChainBatch:
    header_hash: bytes
    root: bytes
    count: int
    first_record_seq: int
    last_record_seq: int
    block_number: int
    period: int = 0


@dataclass(frozen=True, slots=True)
class OnChainGateway:
    gateway_id: str
    sender: str
    signing_key: bytes
    active: bool
    last_seq: int
    last_record_seq: int
    last_header_hash: bytes


@dataclass(frozen=True, slots=True)
class Receipt:
    tx_hash: bytes
    status: int
    block_number: int
    gas_used: int
    contract_address: str | None
    logs: tuple[Any, ...] = ()


def header_tuple(h: BatchHeader) -> tuple[object, ...]:
    return (
        gateway_key(h.gateway_id), h.seq, h.prev_hash, h.root, h.count, h.first_record_seq,
        h.last_record_seq, h.first_ts_ns, h.last_ts_ns, h.co2e_scope1_g, h.co2e_scope2_g,
        h.co2e_scope3_g,
    )


class EvmChain:
    """A JSON-RPC endpoint plus one contract (by artifact name) at one address."""

    def __init__(
        self,
        rpc_url: str,
        *,
        contract_address: str | None = None,
        artifact: str = "EmissionsLedger",
        request_timeout_s: float = 10.0,
        gas_margin: float = 1.25,
        gas_price_wei: int | None = None,
    ) -> None:
        self.rpc_url = rpc_url
        # web3.py's validation middleware asks the node for eth_chainId before every eth_call
        # and gas estimate; an endpoint's chain id does not change, so that one is cached.
        self.w3 = AsyncWeb3(AsyncHTTPProvider(
            rpc_url, request_kwargs={"timeout": request_timeout_s}, cache_allowed_requests=True,
            cacheable_requests={RPCEndpoint("eth_chainId")}))
        art = load_artifact(artifact)
        self.artifact = artifact
        self.abi: list[dict[str, Any]] = art["abi"]
        self._errors_abi = [*self.abi, *all_errors_abi()]
        self.bytecode: str = art["bytecode"]
        self.address = AsyncWeb3.to_checksum_address(contract_address) if contract_address else None
        self.gas_margin = gas_margin
        self.gas_price_wei = gas_price_wei
        self._chain_id: int | None = None
        self._contract: tuple[str, Any] | None = None

    @property
    def contract(self) -> Any:
        """The web3 contract object at ``address``, built once per address (building one
        parses the whole ABI: about a millisecond, and the uplink asks several times a batch)."""
        if self.address is None:
            raise ValueError("no contract address configured")
        cached = self._contract
        if cached is None or cached[0] != self.address:
            cached = self._contract = (self.address,
                                       self.w3.eth.contract(address=self.address, abi=self.abi))
        return cached[1]

    def contract_at(self, artifact: str, address: str) -> Any:
        """Another contract of the system on the same endpoint (its calls go to ``address``)."""
        return self.w3.eth.contract(address=AsyncWeb3.to_checksum_address(address),
                                    abi=load_artifact(artifact)["abi"])

    async def _rpc(self, aw: Awaitable[T]) -> T:
        """The one place where transport and revert errors are translated."""
        try:
            return await aw
        except TransactionNotFound:
            raise
        except ContractLogicError as e:
            raise decode_revert(self._errors_abi, e.data if isinstance(e.data, str) else None) from e
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise ChainUnavailable(f"{self.rpc_url}: {e}") from e
        except Web3RPCError as e:
            raise ChainRejected(f"{self.rpc_url}: {e}") from e

    async def close(self) -> None:
        provider = self.w3.provider
        disconnect = getattr(provider, "disconnect", None)
        if disconnect is not None:
            await disconnect()

    async def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(await self._rpc(self.w3.eth.chain_id))
        return self._chain_id

    async def block_number(self) -> int:
        return int(await self._rpc(self.w3.eth.block_number))

    async def nonce(self, address: str) -> int:
        return int(await self._rpc(self.w3.eth.get_transaction_count(
            AsyncWeb3.to_checksum_address(address), "pending")))

    async def gas_price(self) -> int:
        if self.gas_price_wei is not None:
            return self.gas_price_wei
        return int(await self._rpc(self.w3.eth.gas_price))

    # -- views ------------------------------------------------------------------------------

    async def last_seq(self, gateway_id: str) -> int:
        return int(await self._rpc(self.contract.functions.lastSeq(gateway_key(gateway_id)).call()))

    async def batch(self, gateway_id: str, seq: int) -> OnChainBatch:
        b = await self._rpc(self.contract.functions.batch(gateway_key(gateway_id), seq).call())
        return OnChainBatch(bytes(b[0]), bytes(b[1]), int(b[2]), int(b[3]), int(b[4]), int(b[5]),
                            int(b[6]) if len(b) > 6 else 0)

    async def gateway(self, gateway_id: str) -> OnChainGateway:
        g = await self._rpc(self.contract.functions.gateway(gateway_key(gateway_id)).call())
        return OnChainGateway(str(g[0]), str(g[1]), bytes(g[2]), bool(g[3]), int(g[4]),
                              int(g[5]), bytes(g[6]))

    async def verify_record(self, gateway_id: str, batch_seq: int, leaf: bytes,
                            proof: list[bytes]) -> bool:
        fn = self.contract.functions.verifyRecord(gateway_key(gateway_id), batch_seq, leaf, proof)
        return bool(await self._rpc(fn.call()))

    async def header_hash_on_chain(self, header: BatchHeader) -> bytes:
        fn = self.contract.functions.headerHash(header_tuple(header))
        return bytes(await self._rpc(fn.call()))

    # -- transactions -----------------------------------------------------------------------

    async def sign_call(self, account: LocalAccount, fn: Any, *, nonce: int | None = None,
                        to: str | None = None, data: str | None = None,
                        value: int = 0) -> tuple[bytes, bytes, int]:
        """Estimate gas (a revert raises `ChainRevert` here), sign locally; returns
        ``(raw_tx, tx_hash, nonce)``. Nothing is sent."""
        if fn is not None:
            data = call_data(fn)
            to = getattr(fn, "address", None) or self.address
        tx: dict[str, Any] = {"from": account.address, "data": data, "value": value}
        if to:
            tx["to"] = to
        gas = await self._rpc(self.w3.eth.estimate_gas(tx))  # type: ignore[arg-type]
        if nonce is None:
            nonce = await self.nonce(account.address)
        tx.update({
            "gas": int(gas * self.gas_margin) + 10_000,
            "gasPrice": await self.gas_price(),
            "nonce": nonce,
            "chainId": await self.chain_id(),
        })
        del tx["from"]
        signed = account.sign_transaction(tx)
        return bytes(signed.raw_transaction), bytes(signed.hash), nonce

    async def send_raw(self, raw_tx: bytes) -> bytes:
        return bytes(await self._rpc(self.w3.eth.send_raw_transaction(raw_tx)))

    async def receipt(self, tx_hash: bytes) -> Receipt | None:
        try:
            r = await self._rpc(self.w3.eth.get_transaction_receipt(tx_hash))  # type: ignore[arg-type]
        except TransactionNotFound:
            return None
        return Receipt(bytes(r["transactionHash"]), int(r["status"]), int(r["blockNumber"]),
                       int(r["gasUsed"]), r.get("contractAddress"), tuple(r.get("logs") or ()))

    async def wait_receipt(self, tx_hash: bytes, timeout_s: float, poll_s: float = 0.05) -> Receipt:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            r = await self.receipt(tx_hash)
            if r is not None:
                return r
            if loop.time() > deadline:
                raise ChainUnavailable(f"no receipt for 0x{tx_hash.hex()} within {timeout_s:g} s")
            await asyncio.sleep(poll_s)
            poll_s = min(poll_s * 1.5, 1.0)

    async def replay_revert(self, account_address: str, raw_call_data: str, block: int,
                            to: str | None = None) -> ChainRevert:
        """Re-run a reverted transaction as ``eth_call`` at its block to learn why."""
        try:
            await self._rpc(self.w3.eth.call(
                {"from": account_address, "to": to or self.address, "data": raw_call_data},  # type: ignore[typeddict-item]
                block))
        except ChainRevert as e:
            return e
        return ChainRevert("unknown", ())

    async def transact(self, account: LocalAccount, fn: Any, timeout_s: float = 60.0) -> Receipt:
        """Sign, send and wait: for admin tools and tests, not the anchoring path."""
        raw, txh, _ = await self.sign_call(account, fn)
        await self.send_raw(raw)
        r = await self.wait_receipt(txh, timeout_s)
        if r.status != 1:
            raise await self.replay_revert(account.address, call_data(fn),
                                           r.block_number, getattr(fn, "address", None))
        return r

    async def deploy(self, account: LocalAccount, timeout_s: float = 60.0) -> str:
        """Deploy this chain's own artifact (no constructor arguments) and point at it."""
        address = await self.deploy_artifact(account, self.artifact, (), timeout_s)
        self.address = AsyncWeb3.to_checksum_address(address)
        return address

    async def deploy_artifact(self, account: LocalAccount, artifact: str,
                              args: tuple[object, ...] = (), timeout_s: float = 60.0) -> str:
        """Deploy any compiled contract with constructor ``args``; returns its address (taken
        from the receipt, as FISCO BCOS before 3.12 does not follow the Ethereum rule)."""
        art = load_artifact(artifact)
        data = self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"]).constructor(
            *args).data_in_transaction
        raw, txh, _ = await self.sign_call(account, None, data=data)
        await self.send_raw(raw)
        r = await self.wait_receipt(txh, timeout_s)
        if r.status != 1 or not r.contract_address:
            raise ChainRevert("DeploymentFailed", (artifact,))
        return str(AsyncWeb3.to_checksum_address(r.contract_address))


