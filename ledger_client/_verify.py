"""Proof bundles and their verification: what an auditor runs to trust one reading.

A bundle (JSON, format ``mrv-proof/v1``, see ``docs/formats.md``) holds one record, the header
of the batch that holds it, the gateway's signature and the Merkle proof. Verification rebuilds
the leaf from the record's fields and checks, against the chain:

1. ``record-in-batch``: the rebuilt leaf and the proof give the header's root;
2. ``header-anchored``: the rebuilt header hash is the one the ledger holds for that batch;
3. ``signature``: the Ed25519 signature over the header hash verifies with the key the ledger
   holds for the gateway;
4. ``on-chain-proof``: the ledger contract itself (``verifyRecord``) accepts leaf and proof.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

from gateway._records import AuditRecord, DerivedRecord, Reading, Record
from ledger_client._chain import EvmChain
from ledger_client._errors import ChainRevert
from ledger_client._format import (
    BatchHeader,
    merkle_proof,
    record_leaf,
    record_signing_bytes,
    value_bits,
    verify_proof,
)
from ledger_client._outbox import Outbox
from ledger_client._signing import verify_signature

FORMAT = "mrv-proof/v1"


class BundleError(ValueError):
    """A proof bundle is malformed (missing field, wrong type)."""


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _unhex(s: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(s, str) or not s.startswith("0x"):
        raise BundleError(f"{what}: expected a 0x-prefixed hex string")
    try:
        b = bytes.fromhex(s[2:])
    except ValueError:
        raise BundleError(f"{what}: not hex") from None
    if size is not None and len(b) != size:
        raise BundleError(f"{what}: expected {size} bytes, got {len(b)}")
    return b


def _value_from_bits(bits: int) -> float:
    return float(struct.unpack(">d", bits.to_bytes(8, "big"))[0])


def _value_json(v: float) -> dict[str, object]:
    return {"value": None if math.isnan(v) else v, "value_bits": f"0x{value_bits(v):016x}"}


def record_to_json(r: Record) -> dict[str, object]:
    """A record as JSON; ``value_bits`` is authoritative (``value`` is for people)."""
    base: dict[str, object] = {"gateway_id": r.gateway_id, "seq": r.seq}
    if isinstance(r, Reading):
        return {"kind": "reading", **base, "point_id": r.point_id, "ts_ns": r.ts_ns,
                **_value_json(r.value), "unit": r.unit, "quality": r.quality,
                "source": r.source}
    if isinstance(r, DerivedRecord):
        return {"kind": "derived", **base, "point_id": r.point_id, "derivation": r.derivation,
                "period_start_ns": r.period_start_ns, "period_end_ns": r.period_end_ns,
                **_value_json(r.value), "unit": r.unit, "quality": r.quality,
                "from_seq": r.from_seq, "to_seq": r.to_seq}
    return {"kind": "audit", **base, "ts_ns": r.ts_ns, "category": r.category,
            "subject": r.subject, "payload": r.payload}


def record_from_json(d: dict[str, Any]) -> Record:
    kind = d.get("kind")
    gw, seq = str(d["gateway_id"]), int(d["seq"])
    if kind == "reading":
        return Reading(
            gateway_id=gw, seq=seq, point_id=str(d["point_id"]), ts_ns=int(d["ts_ns"]),
            value=_value_from_bits(int(_unhex(d["value_bits"], "record.value_bits", 8).hex(), 16)),
            unit=str(d["unit"]), quality=int(d["quality"]), source=str(d["source"]))
    if kind == "derived":
        return DerivedRecord(
            gateway_id=gw, seq=seq, point_id=str(d["point_id"]), derivation=str(d["derivation"]),
            period_start_ns=int(d["period_start_ns"]), period_end_ns=int(d["period_end_ns"]),
            value=_value_from_bits(int(_unhex(d["value_bits"], "record.value_bits", 8).hex(), 16)),
            unit=str(d["unit"]), quality=int(d["quality"]), from_seq=int(d["from_seq"]),
            to_seq=int(d["to_seq"]))
    if kind == "audit":
        return AuditRecord(gateway_id=gw, seq=seq, ts_ns=int(d["ts_ns"]),
                           category=str(d["category"]), subject=str(d["subject"]),
                           payload=str(d["payload"]))
    raise BundleError(f"record.kind: expected reading, derived or audit, got {kind!r}")


@dataclass(frozen=True, slots=True)
class Bundle:
    record: Record
    header: BatchHeader
    signature: bytes
    proof: list[bytes]
    chain_id: int
    contract: str
    #: Ed25519 over `record_signing_bytes(leaf)` when the gateway signs records, else None
    record_signature: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        r, h = self.record, self.header
        out: dict[str, Any] = {
            "format": FORMAT,
            "chain": {"chain_id": self.chain_id, "contract": self.contract},
            "record": record_to_json(r),
            "batch": {
                "gateway_id": h.gateway_id, "seq": h.seq, "prev_hash": _hex(h.prev_hash),
                "root": _hex(h.root), "count": h.count,
                "first_record_seq": h.first_record_seq, "last_record_seq": h.last_record_seq,
                "first_ts_ns": h.first_ts_ns, "last_ts_ns": h.last_ts_ns,
                "co2e_g": [h.co2e_scope1_g, h.co2e_scope2_g, h.co2e_scope3_g],
                "header_hash": _hex(h.hash()), "signature": _hex(self.signature),
            },
            "proof": [_hex(p) for p in self.proof],
        }
        if self.record_signature is not None:
            out["record_signature"] = _hex(self.record_signature)
        return out

    @classmethod
    def from_json(cls, d: Any) -> Bundle:
        try:
            if d.get("format") != FORMAT:
                raise BundleError(f"format: expected {FORMAT!r}, got {d.get('format')!r}")
            bat = d["batch"]
            record = record_from_json(d["record"])
            co2e = [int(x) for x in bat["co2e_g"]]
            header = BatchHeader(
                gateway_id=str(bat["gateway_id"]), seq=int(bat["seq"]),
                prev_hash=_unhex(bat["prev_hash"], "batch.prev_hash", 32),
                root=_unhex(bat["root"], "batch.root", 32), count=int(bat["count"]),
                first_record_seq=int(bat["first_record_seq"]),
                last_record_seq=int(bat["last_record_seq"]),
                first_ts_ns=int(bat["first_ts_ns"]), last_ts_ns=int(bat["last_ts_ns"]),
                co2e_scope1_g=co2e[0], co2e_scope2_g=co2e[1], co2e_scope3_g=co2e[2])
            return cls(
                record=record, header=header,
                signature=_unhex(bat["signature"], "batch.signature"),
                proof=[_unhex(p, f"proof[{i}]", 32) for i, p in enumerate(d["proof"])],
                chain_id=int(d["chain"]["chain_id"]), contract=str(d["chain"]["contract"]),
                record_signature=(None if d.get("record_signature") is None else
                                  _unhex(d["record_signature"], "record_signature", 64)))
        except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:
            if isinstance(e, BundleError):
                raise
            raise BundleError(f"malformed proof bundle: {type(e).__name__}: {e}") from None


def describe(r: Record) -> str:
    if isinstance(r, Reading):
        return f"{r.point_id} = {r.value} {r.unit}"
    if isinstance(r, DerivedRecord):
        return f"{r.derivation} of {r.point_id} = {r.value} {r.unit}"
    return f"{r.category} {r.subject}"


async def bundle_from_outbox(outbox: Outbox, seq: int, *, chain_id: int,
                             contract: str) -> Bundle:
    record = await outbox.record(seq)
    if record is None:
        raise LookupError(f"record {seq} is not in the outbox")
    batch = await outbox.batch_of_record(seq)
    if batch is None:
        raise LookupError(f"record {seq} is not in a batch yet (pending)")
    h = batch.header
    leaves = await outbox.leaves(h.first_record_seq, h.last_record_seq)
    proof = merkle_proof(leaves, seq - h.first_record_seq)
    return Bundle(record=record, header=h, signature=batch.signature, proof=proof,
                  chain_id=chain_id, contract=contract,
                  record_signature=await outbox.record_signature(seq))


@dataclass(slots=True)
class Report:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, ok, detail))

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(ok for _, ok, _ in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok,
                "checks": [{"check": n, "ok": ok, "detail": d} for n, ok, d in self.checks]}

    def text(self) -> str:
        lines = [f"  [{'PASS' if ok else 'FAIL'}] {n}: {d}" for n, ok, d in self.checks]
        verdict = "HOLDS" if self.ok else "DOES NOT HOLD"
        return "\n".join([*lines, f"verdict: the reading {verdict}"])


async def verify_bundle(b: Bundle, chain: EvmChain) -> Report:
    """Check a bundle against the ledger. Raises `ChainUnavailable` when the chain is down."""
    rep = Report()
    r, h = b.record, b.header
    leaf = record_leaf(r)
    in_range = h.first_record_seq <= r.seq <= h.last_record_seq and r.gateway_id == h.gateway_id
    proof_ok = in_range and verify_proof(leaf, b.proof, h.root)
    rep.add("record-in-batch", proof_ok,
            f"record {r.seq} ({describe(r)}) leaf 0x{leaf.hex()[:16]}.. "
            + ("reaches" if proof_ok else "does not reach")
            + f" root 0x{h.root.hex()[:16]}.. of batch {h.seq}")
    hh = h.hash()
    held = await chain.batch(h.gateway_id, h.seq)
    anchored = held.header_hash == hh and held.root == h.root
    rep.add("header-anchored", anchored,
            f"batch {h.seq} header 0x{hh.hex()[:16]}.. "
            + (f"is anchored in block {held.block_number}" if anchored else
               f"differs from the ledger's 0x{held.header_hash.hex()[:16]}.."))
    try:
        gw = await chain.gateway(h.gateway_id)
        sig_ok = verify_signature(gw.signing_key, hh, b.signature)
        rep.add("signature", sig_ok,
                f"Ed25519 signature {'verifies' if sig_ok else 'does NOT verify'} with the key"
                f" 0x{gw.signing_key.hex()[:16]}.. registered for {h.gateway_id}")
        if b.record_signature is not None:
            rsig_ok = verify_signature(gw.signing_key, record_signing_bytes(leaf),
                                       b.record_signature)
            rep.add("record-signature", rsig_ok,
                    f"the record's own Ed25519 signature {'verifies' if rsig_ok else 'does NOT verify'}"
                    f" with the same key")
    except ChainRevert as e:
        rep.add("signature", False, f"gateway {h.gateway_id} is not registered ({e.name})")
    on_chain = await chain.verify_record(h.gateway_id, h.seq, leaf, b.proof)
    rep.add("on-chain-proof", on_chain,
            f"the ledger contract's verifyRecord says {str(on_chain).lower()}")
    return rep
