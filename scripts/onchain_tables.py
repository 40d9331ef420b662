"""Print the generated parts of docs/onchain.md from contracts/artifacts: every event with its
topic0, every custom error with its selector, every function with its selector and return
layout, and the worked vectors (a `verifyRecord` call and a `GatewayRegistered` log).

    python scripts/onchain_tables.py --write docs/onchain.md   # after a contract change

tests/test_onchain_docs.py recomputes every value in docs/onchain.md from the artifacts with
eth_utils / eth_abi / web3 (not with this script) and runs the vectors on anvil.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ledger_client._chain import _type_str, load_artifact
from ledger_client._format import gateway_key, keccak256, merkle_proof, merkle_root

CONTRACTS = ("MrvRegistry", "EmissionsLedger", "Allowances", "Verification", "Market")
VECTORS = Path(__file__).resolve().parent.parent / "docs" / "vectors" / "formats.json"


def _param(p: dict[str, Any], *, indexed: bool = False) -> str:
    t = str(p["type"])
    if t.startswith("tuple"):
        inner = ", ".join(_param(c) for c in p["components"])
        t = f"({inner}){t[5:]}"
    name = f" {p['name']}" if p.get("name") else ""
    return f"{t}{' indexed' if indexed and p.get('indexed') else ''}{name}"


def canonical(item: dict[str, Any]) -> str:
    return f"{item['name']}({','.join(_type_str(i) for i in item['inputs'])})"


def returns(item: dict[str, Any]) -> str:
    outs = item.get("outputs") or []
    return "(" + ", ".join(_param(o) for o in outs) + ")" if outs else "—"


def events() -> list[str]:
    rows = ["| contract | event (indexed fields marked) | topic0 = keccak256(canonical signature) |",
            "| --- | --- | --- |"]
    for c in CONTRACTS:
        for item in load_artifact(c)["abi"]:
            if item["type"] != "event":
                continue
            decl = f"{item['name']}({', '.join(_param(i, indexed=True) for i in item['inputs'])})"
            topic = "0x" + keccak256(canonical(item).encode()).hex()
            rows.append(f"| {c} | `{decl}` | `{topic}` |")
    return rows


def errors() -> list[str]:
    seen: dict[str, list[str]] = {}
    for c in CONTRACTS:
        for item in load_artifact(c)["abi"]:
            if item["type"] == "error":
                seen.setdefault(canonical(item), []).append(c)
    rows = ["| error (canonical signature) | selector | raised by |", "| --- | --- | --- |"]
    for sig in sorted(seen):
        sel = "0x" + keccak256(sig.encode())[:4].hex()
        rows.append(f"| `{sig}` | `{sel}` | {', '.join(seen[sig])} |")
    return rows


def functions(c: str) -> list[str]:
    rows = [f"| {c} function | selector | kind | arguments | returns |",
            "| --- | --- | --- | --- | --- |"]
    items = [i for i in load_artifact(c)["abi"] if i["type"] == "function"]
    for item in sorted(items, key=lambda i: canonical(i)):
        sel = "0x" + keccak256(canonical(item).encode())[:4].hex()
        kind = item["stateMutability"]
        args = "(" + ", ".join(_param(i) for i in item["inputs"]) + ")"
        rows.append(f"| `{canonical(item)}` | `{sel}` | {kind} | `{args}` | `{returns(item)}` |")
    return rows


def verify_record_vector() -> dict[str, Any]:
    v = json.loads(VECTORS.read_text())
    leaves = [bytes.fromhex(r["leaf"][2:]) for r in v["records"][:3]]
    root = merkle_root(leaves)
    assert "0x" + root.hex() == v["header"]["fields"]["root"], "vectors changed"
    proof = merkle_proof(leaves, 1)
    key = gateway_key(v["header"]["fields"]["gateway_id"])
    item = next(i for i in load_artifact("EmissionsLedger")["abi"]
                if i.get("name") == "verifyRecord")
    sel = keccak256(canonical(item).encode())[:4]
    # head: key, seq, leaf, offset of the dynamic array (4 words); tail: length, elements
    words = [key, (1).to_bytes(32, "big"), leaves[1], (4 * 32).to_bytes(32, "big"),
             len(proof).to_bytes(32, "big"), *proof]
    return {"gatewayKey": key, "seq": 1, "leaf": leaves[1], "proof": proof,
            "calldata": sel + b"".join(words)}


def gateway_registered_vector() -> dict[str, Any]:
    """The log of `registerGateway("plant-a-gw1", sender, key)` sent by enterprise ``ent``
    (anvil's dev accounts 1 and 2; the Ed25519 key of docs/vectors/formats.json)."""
    from eth_abi import encode
    from eth_account import Account

    from simulator._anvil import DEV_KEYS

    v = json.loads(VECTORS.read_text())
    ent, snd = Account.from_key(DEV_KEYS[1]).address, Account.from_key(DEV_KEYS[2]).address
    pub = bytes.fromhex(v["header"]["ed25519_public_key"][2:])
    item = next(i for i in load_artifact("MrvRegistry")["abi"]
                if i.get("name") == "GatewayRegistered")
    topics = [keccak256(canonical(item).encode()), gateway_key("plant-a-gw1"),
              bytes(12) + bytes.fromhex(ent[2:])]
    data = encode(["string", "address", "bytes32"], ["plant-a-gw1", snd, pub])
    return {"enterprise": ent, "sender": snd, "signing_key": pub, "topics": topics, "data": data}


def _hex_words(b: bytes, first: int = 0) -> str:
    h = b.hex()
    head = [h[:first * 2]] if first else []
    rest = h[first * 2:]
    return "\n".join([*head, *(rest[i:i + 64] for i in range(0, len(rest), 64))])


def blocks() -> dict[str, str]:
    """Each generated block of docs/onchain.md, by marker name."""
    out = {"events": "\n".join(events()), "errors": "\n".join(errors())}
    for c in CONTRACTS:
        out[f"functions:{c}"] = "\n".join(functions(c))
    vr = verify_record_vector()
    out["vector:verifyRecord"] = "\n".join([
        "```text",
        f"gatewayKey = 0x{vr['gatewayKey'].hex()}   (keccak256 of \"plant-a-gw1\")",
        f"seq        = {vr['seq']}",
        f"leaf       = 0x{vr['leaf'].hex()}   (record seq 2)",
        "proof      = [" + ", ".join("0x" + p.hex() for p in vr["proof"]) + "]",
        "```", "", "```hex verifyRecord-calldata", _hex_words(vr["calldata"], 4), "```"])
    gr = gateway_registered_vector()
    out["vector:GatewayRegistered"] = "\n".join([
        "```text",
        f"enterprise = {gr['enterprise']}   (msg.sender of registerGateway)",
        f"sender     = {gr['sender']}",
        f"signingKey = 0x{gr['signing_key'].hex()}",
        "```", "", "```hex GatewayRegistered-topics",
        "\n".join(t.hex() for t in gr["topics"]), "```", "",
        "```hex GatewayRegistered-data", _hex_words(gr["data"]), "```"])
    return out


def write(doc: Path) -> None:
    """Replace every ``<!-- NAME:begin -->`` … ``<!-- NAME:end -->`` block of ``doc``."""
    import re

    text = doc.read_text(encoding="utf-8")
    for name, body in blocks().items():
        pat = re.compile(rf"(<!-- {re.escape(name)}:begin -->).*?(<!-- {re.escape(name)}:end -->)",
                         re.S)
        if not pat.search(text):
            raise SystemExit(f"{doc}: no block {name}")
        text = pat.sub(lambda m, b=body: m.group(1) + "\n" + b + "\n" + m.group(2), text)
    doc.write_text(text, encoding="utf-8")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        write(Path(sys.argv[2]))
        return
    for name, body in blocks().items():
        sys.stdout.write(f"<!-- {name}:begin -->\n{body}\n<!-- {name}:end -->\n\n")


if __name__ == "__main__":
    main()
