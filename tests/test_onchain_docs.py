"""docs/onchain.md cannot rot: every event's topic0, every error's selector, every function's
selector and layout are recomputed from contracts/artifacts with eth_utils (not with the script
that writes the tables), nothing in the ABI is missing from the page, and both vectors run
against the contracts on anvil."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from eth_abi import decode
from eth_account import Account
from eth_utils import keccak
from eth_utils.abi import abi_to_signature, event_abi_to_log_topic, function_abi_to_4byte_selector

from ledger_client import EvmChain
from ledger_client._admin import Mrv, deploy_system
from ledger_client._chain import load_artifact
from simulator import DEV_KEYS, Anvil

ROOT = Path(__file__).resolve().parent.parent
TEXT = (ROOT / "docs" / "onchain.md").read_text(encoding="utf-8")
VECTORS = json.loads((ROOT / "docs" / "vectors" / "formats.json").read_text())
CONTRACTS = ("MrvRegistry", "EmissionsLedger", "Allowances", "Verification", "Market")


def _block(name: str) -> str:
    m = re.search(rf"<!-- {re.escape(name)}:begin -->\n(.*?)\n<!-- {re.escape(name)}:end -->",
                  TEXT, re.S)
    assert m, f"docs/onchain.md has no block {name}"
    return m.group(1)


def _rows(name: str) -> list[tuple[str, ...]]:
    lines = _block(name).splitlines()
    assert lines[1].startswith("| ---")
    return [tuple(c.strip().strip("`") for c in ln.strip().strip("|").split(" | "))
            for ln in lines[2:]]


def _hex(name: str) -> bytes:
    m = re.search(rf"```hex {re.escape(name)}\n(.*?)```", TEXT, re.S)
    assert m, name
    return bytes.fromhex("".join(m.group(1).split()))


def _render(p: dict[str, Any], *, indexed: bool = False) -> str:
    t = p["type"]
    if t.startswith("tuple"):
        t = "(" + ", ".join(_render(c) for c in p["components"]) + ")" + t[len("tuple"):]
    flag = " indexed" if indexed and p.get("indexed") else ""
    return f"{t}{flag}{' ' + p['name'] if p.get('name') else ''}"


def _abi(contract: str, kind: str) -> list[dict[str, Any]]:
    return [i for i in load_artifact(contract)["abi"] if i["type"] == kind]


def test_every_event_with_its_indexed_fields_and_topic0() -> None:
    want = set()
    for c in CONTRACTS:
        for ev in _abi(c, "event"):
            decl = f"{ev['name']}({', '.join(_render(i, indexed=True) for i in ev['inputs'])})"
            want.add((c, decl, "0x" + event_abi_to_log_topic(ev).hex()))
    got = _rows("events")
    assert len(got) == len(set(got))
    assert set(got) == want


def test_every_custom_error_with_its_selector() -> None:
    want: dict[str, tuple[str, set[str]]] = {}
    for c in CONTRACTS:
        for err in _abi(c, "error"):
            sig = abi_to_signature(err).replace(" ", "")
            want.setdefault(sig, ("0x" + keccak(text=sig)[:4].hex(), set()))[1].add(c)
    got = {sig: (sel, set(by.split(", "))) for sig, sel, by in _rows("errors")}
    assert got == want
    # the selectors the gateway's own decoder knows agree (a second, independent path)
    from ledger_client._chain import _error_table

    table = {name for name, _ in _error_table(_abi("MrvRegistry", "error")).values()}
    assert "GatewayIdNotReserved" in table


@pytest.mark.parametrize("contract", CONTRACTS)
def test_every_function_with_selector_arguments_and_return_layout(contract: str) -> None:
    want = set()
    for fn in _abi(contract, "function"):
        sig = abi_to_signature(fn).replace(" ", "")
        args = "(" + ", ".join(_render(i) for i in fn["inputs"]) + ")"
        outs = fn.get("outputs") or []
        ret = "(" + ", ".join(_render(o) for o in outs) + ")" if outs else "—"
        want.add((sig, "0x" + function_abi_to_4byte_selector(fn).hex(), fn["stateMutability"],
                  args, ret))
    got = _rows(f"functions:{contract}")
    assert len(got) == len(set(got))
    assert set(got) == want


def test_the_tables_name_what_a_verifier_looks_for() -> None:
    # spot checks against values computed by hand from the canonical signatures
    events = {r[1].split("(")[0]: r[2] for r in _rows("events")}
    assert events["BatchAnchored"] == "0x" + keccak(
        text="BatchAnchored(bytes32,uint64,bytes32,(bytes32,uint64,bytes32,bytes32,uint32,"
             "uint64,uint64,int64,int64,uint64,uint64,uint64),bytes)").hex()
    fns = {r[0]: r for r in _rows("functions:EmissionsLedger")}
    vr = fns["verifyRecord(bytes32,uint64,bytes32,bytes32[])"]
    assert vr[1] == "0x" + keccak(text="verifyRecord(bytes32,uint64,bytes32,bytes32[])")[:4].hex()
    assert vr[3:] == ("(bytes32 key, uint64 seq, bytes32 leaf, bytes32[] proof)", "(bool)")


LEDGER_MD = (ROOT / "docs" / "ledger.md").read_text(encoding="utf-8")
USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"


def test_the_credit_code_example_is_worked_correctly() -> None:
    from ledger_client._admin import validate_uscc

    m = re.search(r"A complete example, `(\w{18})`", LEDGER_MD)
    assert m
    code = m[1]
    # GB 32100-2015 from first principles: weights 3^(i-1) mod 31, check = (31 - sum % 31) % 31
    weights = [pow(3, i, 31) for i in range(17)]
    values = [USCC_CHARS.index(c) for c in code[:17]]
    total = sum(v * w for v, w in zip(values, weights, strict=True))
    assert USCC_CHARS[(31 - total % 31) % 31] == code[17]
    worked = re.search(r"weights +([\d ]+)\n.*?sum = (\d+)\n +(\d+) mod 31 = (\d+);", LEDGER_MD,
                       re.S)
    assert worked
    assert [int(x) for x in worked[1].split()] == weights
    assert (int(worked[2]), int(worked[3]), int(worked[4])) == (total, total, total % 31)
    assert validate_uscc(code) == code
    for bad in re.findall(r"`(\w{18})` \(wrong check character\) and `(\w{18})`", LEDGER_MD)[0]:
        with pytest.raises(ValueError):
            validate_uscc(bad)


def _mrvctl_lines() -> list[str]:
    out = []
    for block in re.findall(r"```sh\n(.*?)```", LEDGER_MD, re.S):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split("#")[0].strip()
            for part in line.split("&&"):
                if part.strip().startswith("mrvctl "):
                    out.append(part.strip())
    # inline commands given in full (with a key); the others are fragments
    out += [m[1] for m in re.finditer(r"`(mrvctl [^`]*--key [^`]+)`", LEDGER_MD)]
    return out


def test_every_mrvctl_command_in_ledger_md_parses() -> None:
    import shlex

    from ledger_client._mrvctl import build_parser

    lines = _mrvctl_lines()
    assert len(lines) >= 15 and any(" fund " in ln for ln in lines)
    for line in lines:
        argv = shlex.split(line.replace("$B", "--address-book book.json"))[1:]
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"docs/ledger.md: {line!r} does not parse")


async def test_the_vectors_run_on_the_contracts(anvil: Anvil) -> None:
    regulator, ent, snd, gov = (Account.from_key(DEV_KEYS[i]) for i in (0, 1, 2, 3))
    hdr = VECTORS["header"]
    f = hdr["fields"]
    pub = bytes.fromhex(hdr["ed25519_public_key"][2:])
    chain = EvmChain(anvil.url)
    try:
        book = await deploy_system(chain, regulator)
        m = Mrv(chain, book["contracts"])
        await m.grant(regulator, "government", gov.address)
        code = re.search(r"--credit-code (\w{18})", LEDGER_MD)
        assert code  # the complete example of docs/ledger.md, certified as documented
        await m.certify(gov, ent.address, credit_code=code[1], name="Minjiang Power Co.",
                        industry="D4411", region="350100")
        assert (await m.enterprise(ent.address))["credit_code"] == "91350100M000100Y43"
        await m.reserve_gateway_id(gov, f["gateway_id"], ent.address)
        receipt, _ = await m.send(ent, m.registry.functions.registerGateway(
            f["gateway_id"], snd.address, pub))
        logs = [lg for lg in receipt.logs
                if str(lg["address"]).lower() == book["contracts"]["MrvRegistry"].lower()]
        assert len(logs) == 1
        topics = b"".join(bytes(t) for t in logs[0]["topics"])
        assert topics == _hex("GatewayRegistered-topics")
        assert bytes(logs[0]["data"]) == _hex("GatewayRegistered-data")
        assert decode(["string", "address", "bytes32"], _hex("GatewayRegistered-data")) == (
            f["gateway_id"], snd.address.lower(), pub)

        header = (bytes.fromhex(f["gateway_key"][2:]), f["seq"], bytes.fromhex(f["prev_hash"][2:]),
                  bytes.fromhex(f["root"][2:]), f["count"], f["first_record_seq"],
                  f["last_record_seq"], f["first_ts_ns"], f["last_ts_ns"], *f["co2e_g"])
        await m.send(snd, m.ledger.functions.anchorBatch(header,
                                                         bytes.fromhex(hdr["signature"][2:])))
        calldata = _hex("verifyRecord-calldata")
        # the documented calldata is what an ABI encoder makes of the documented arguments
        args = re.search(r"gatewayKey = (0x\w+).*?seq += (\d+).*?leaf += (0x\w+).*?"
                         r"proof += \[(.*?)\]", _block("vector:verifyRecord"), re.S)
        assert args
        key, seq, leaf = bytes.fromhex(args[1][2:]), int(args[2]), bytes.fromhex(args[3][2:])
        proof = [bytes.fromhex(p.strip()[2:]) for p in args[4].split(",")]
        assert key == keccak(text=f["gateway_id"])
        assert leaf == bytes.fromhex(VECTORS["records"][1]["leaf"][2:])
        assert bytes.fromhex(m.ledger.encode_abi("verifyRecord", args=[key, seq, leaf, proof])[2:]
                             ) == calldata

        async def call(data: bytes) -> bytes:
            out = await chain.w3.eth.call({"to": book["contracts"]["EmissionsLedger"],
                                           "data": "0x" + data.hex()})
            return bytes(out)

        assert await call(calldata) == (1).to_bytes(32, "big")
        for i in (4 + 2 * 32 + 5, len(calldata) - 1):  # a bit of the leaf, of the proof
            bad = bytearray(calldata)
            bad[i] ^= 0x01
            assert await call(bytes(bad)) == bytes(32)
    finally:
        await chain.close()
