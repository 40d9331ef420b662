"""Proof bundles and their verification: what an auditor runs to trust one reading.

A bundle (JSON, format ``mrv-proof/v1``, see ``docs/formats.md``) holds one record, the header
of the batch that holds it, the gateway's signature and the Merkle proof. Verification rebuilds
the leaf from the record's fields and checks, against the chain:

1. ``record-in-batch``: the rebuilt leaf and the proof give the header's root;
2. ``header-anchored``: the rebuilt header hash is the one the ledger holds for that batch;
3. ``signature``: the Ed25519 signature over the header hash verifies with the key the ledger
   holds for the gateway;
4. ``on-chain-proof``: the ledger contract itself (``verifyRecord``) accepts leaf and proof;

and that what the bundle shows is what was proven:

5. ``chain``: the node's chain id is the bundle's ``chain.chain_id`` (and the contract asked is
   the bundle's ``chain.contract``);
6. ``shown-values``: the bundle's ``value`` (for people) is the value its ``value_bits`` encode,
   and its ``batch.header_hash`` is the hash of its batch fields.

A bundle is untrusted input: `parse_bundle` limits its size and nesting before parsing, and
`Bundle.from_json` checks every field's type and range (`BundleError` otherwise).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

from ledger_client._chain import EvmChain
from ledger_client._errors import ChainRevert, LedgerError
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
from mrv_core import AuditRecord, DerivedRecord, Reading, Record, json_depth

FORMAT = "mrv-proof/v1"
#: Largest proof bundle file read (bytes): a real one is a few kB (a proof of a batch of 2^64
#: records has 64 hashes; an audit record's payload is bounded by the control service).
MAX_BUNDLE_BYTES = 1 << 20
#: Deepest nesting of arrays and objects accepted in a bundle (a real one has 3).
MAX_BUNDLE_DEPTH = 8
#: Most hashes in a Merkle proof (a batch holds fewer than 2^64 records).
MAX_PROOF_LEN = 64
_U32, _U64, _I64 = (0, 2**32 - 1), (0, 2**64 - 1), (-(2**63), 2**63 - 1)


class BundleError(ValueError):
    """A proof bundle is malformed (too large or deep, not JSON, missing field, wrong type or
    range)."""


class RecordMissing(LedgerError):
    """A record seq the outbox has committed is in neither the outbox nor the archive: it was
    deleted (a check that fails, not bad input)."""


def _reject_constant(name: str) -> None:
    raise BundleError(f"{name} is not JSON")


def parse_bundle(data: bytes) -> Bundle:
    """A proof bundle from a file's bytes: size and nesting are limited before parsing."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"{len(data)} bytes: larger than a proof bundle can be "
                          f"({MAX_BUNDLE_BYTES} bytes at most)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BundleError(f"not UTF-8: {e}") from None
    if json_depth(text.encode(), stop_at=MAX_BUNDLE_DEPTH) > MAX_BUNDLE_DEPTH:
        raise BundleError(f"nested deeper than {MAX_BUNDLE_DEPTH} levels: not a proof bundle")
    try:
        d = json.loads(text, parse_constant=_reject_constant)
    except ValueError as e:  # JSONDecodeError, or an integer of more than 4,300 digits
        if isinstance(e, BundleError):
            raise
        raise BundleError(f"not JSON: {e}") from None
    return Bundle.from_json(d)


def _int(d: Any, key: str | int, rng: tuple[int, int], what: str) -> int:
    v = d[key]
    if not isinstance(v, int) or isinstance(v, bool):
        raise BundleError(f"{what}.{key}: expected an integer, got {type(v).__name__}")
    if not rng[0] <= v <= rng[1]:
        raise BundleError(f"{what}.{key}: {v} is out of range {rng[0]}..{rng[1]}")
    return v


def _str(d: Any, key: str, what: str) -> str:
    v = d[key]
    if not isinstance(v, str):
        raise BundleError(f"{what}.{key}: expected a string, got {type(v).__name__}")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise BundleError(f"{what}.{key}: not valid Unicode text") from None
    return v


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


def _bits(d: Any) -> float:
    return _value_from_bits(int(_unhex(d["value_bits"], "record.value_bits", 8).hex(), 16))


_UNPACK_F64 = struct.Struct(">d").unpack
_U64_MAX, _U32_MAX, _I64_MIN, _I64_MAX = 2**64 - 1, 2**32 - 1, -(2**63), 2**63 - 1


def _reading_fast(d: dict[str, Any]) -> Reading | None:
    """A well-formed reading, checked field by field as `record_from_json` does but in one
    pass (the portal parses thousands per batch); None for anything else, which the full
    path then checks and names (tested equal on random input)."""
    try:
        gw, seq, pid, ts = d["gateway_id"], d["seq"], d["point_id"], d["ts_ns"]
        vb, unit, q, src = d["value_bits"], d["unit"], d["quality"], d["source"]
    except KeyError:
        return None
    if (type(gw) is not str or type(pid) is not str or type(unit) is not str
            or type(src) is not str or type(vb) is not str or type(seq) is not int
            or type(ts) is not int or type(q) is not int or not gw
            or not 1 <= seq <= _U64_MAX or not _I64_MIN <= ts <= _I64_MAX
            or not 0 <= q <= _U32_MAX or len(vb) != 18 or not vb.startswith("0x")):
        return None
    try:
        raw = bytes.fromhex(vb[2:])
        (gw + pid + unit + src).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        return None
    if len(raw) != 8:
        return None
    return Reading(gateway_id=gw, seq=seq, point_id=pid, ts_ns=ts, value=_UNPACK_F64(raw)[0],
                   unit=unit, quality=q, source=src)


def record_from_json(d: dict[str, Any]) -> Record:
    """A record from its JSON (types and ranges checked: `BundleError`)."""
    if isinstance(d, dict) and d.get("kind") == "reading":
        fast = _reading_fast(d)
        if fast is not None:
            return fast
    return _record_from_json_full(d)


def _record_from_json_full(d: dict[str, Any]) -> Record:
    w = "record"
    if not isinstance(d, dict):
        raise BundleError("record: expected an object")
    kind = d.get("kind")
    gw, seq = _str(d, "gateway_id", w), _int(d, "seq", (1, _U64[1]), w)
    if not gw:
        raise BundleError("record.gateway_id: empty")
    if kind == "reading":
        return Reading(
            gateway_id=gw, seq=seq, point_id=_str(d, "point_id", w),
            ts_ns=_int(d, "ts_ns", _I64, w), value=_bits(d), unit=_str(d, "unit", w),
            quality=_int(d, "quality", _U32, w), source=_str(d, "source", w))
    if kind == "derived":
        return DerivedRecord(
            gateway_id=gw, seq=seq, point_id=_str(d, "point_id", w),
            derivation=_str(d, "derivation", w),
            period_start_ns=_int(d, "period_start_ns", _I64, w),
            period_end_ns=_int(d, "period_end_ns", _I64, w), value=_bits(d),
            unit=_str(d, "unit", w), quality=_int(d, "quality", _U32, w),
            from_seq=_int(d, "from_seq", _U64, w), to_seq=_int(d, "to_seq", _U64, w))
    if kind == "audit":
        return AuditRecord(gateway_id=gw, seq=seq, ts_ns=_int(d, "ts_ns", _I64, w),
                           category=_str(d, "category", w), subject=_str(d, "subject", w),
                           payload=_str(d, "payload", w))
    raise BundleError(f"record.kind: expected reading, derived or audit, got {kind!r}")


def batch_to_json(h: BatchHeader, signature: bytes) -> dict[str, Any]:
    """A batch header and its signature as JSON (the ``batch`` object of a proof bundle and of
    a submission, docs/formats.md); ``header_hash`` is the header's hash, for people."""
    return {
        "gateway_id": h.gateway_id, "seq": h.seq, "prev_hash": _hex(h.prev_hash),
        "root": _hex(h.root), "count": h.count,
        "first_record_seq": h.first_record_seq, "last_record_seq": h.last_record_seq,
        "first_ts_ns": h.first_ts_ns, "last_ts_ns": h.last_ts_ns,
        "co2e_g": [h.co2e_scope1_g, h.co2e_scope2_g, h.co2e_scope3_g],
        "header_hash": _hex(h.hash()), "signature": _hex(signature),
    }


def batch_from_json(bat: Any) -> tuple[BatchHeader, bytes, bytes | None]:
    """The header, the signature and the shown ``header_hash`` (None when absent) of a
    ``batch`` object; types and ranges checked (`BundleError`)."""
    b = "batch"
    try:
        if not isinstance(bat, dict):
            raise BundleError("batch: expected an object")
        co2e_raw = bat["co2e_g"]
        if not isinstance(co2e_raw, list) or len(co2e_raw) != 3:
            raise BundleError("batch.co2e_g: expected a list of 3 integers")
        co2e = [_int(co2e_raw, i, _U64, "batch.co2e_g") for i in range(3)]
        header = BatchHeader(
            gateway_id=_str(bat, "gateway_id", b), seq=_int(bat, "seq", (1, _U64[1]), b),
            prev_hash=_unhex(bat["prev_hash"], "batch.prev_hash", 32),
            root=_unhex(bat["root"], "batch.root", 32), count=_int(bat, "count", _U32, b),
            first_record_seq=_int(bat, "first_record_seq", _U64, b),
            last_record_seq=_int(bat, "last_record_seq", _U64, b),
            first_ts_ns=_int(bat, "first_ts_ns", _I64, b),
            last_ts_ns=_int(bat, "last_ts_ns", _I64, b),
            co2e_scope1_g=co2e[0], co2e_scope2_g=co2e[1], co2e_scope3_g=co2e[2])
        signature = _unhex(bat["signature"], "batch.signature", 64)
        shown = (None if bat.get("header_hash") is None else
                 _unhex(bat["header_hash"], "batch.header_hash", 32))
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:
        if isinstance(e, BundleError):
            raise
        raise BundleError(f"malformed batch: {type(e).__name__}: {e}") from None
    return header, signature, shown


def record_from_json_checked(d: Any) -> Record:
    """`record_from_json` with every malformation (a missing key, a wrong container) as
    `BundleError`."""
    try:
        return record_from_json(d)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:
        if isinstance(e, BundleError):
            raise
        raise BundleError(f"malformed record: {type(e).__name__}: {e}") from None


def _shown_value(d: Any) -> float | str | None:
    """The record's ``value`` as the bundle shows it: a float, None (null), or "absent"."""
    if not isinstance(d, dict) or "value" not in d:
        return "absent"
    v = d["value"]
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise BundleError(f"record.value: expected a number or null, got {type(v).__name__}")
    try:
        return float(v)
    except OverflowError:
        raise BundleError("record.value: out of the range of a binary64 number") from None


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
    #: what the bundle *shows* beside what it proves (from_json; None: made here, consistent):
    #: the record's ``value`` (a float, None for null, "absent") and ``batch.header_hash``
    shown_value: float | str | None = field(default="absent", compare=False)
    shown_header_hash: bytes | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        r, h = self.record, self.header
        out: dict[str, Any] = {
            "format": FORMAT,
            "chain": {"chain_id": self.chain_id, "contract": self.contract},
            "record": record_to_json(r),
            "batch": batch_to_json(h, self.signature),
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
            header, signature, shown_hh = batch_from_json(bat)
            proof = d["proof"]
            if not isinstance(proof, list) or len(proof) > MAX_PROOF_LEN:
                raise BundleError(f"proof: expected a list of at most {MAX_PROOF_LEN} hashes")
            chain = d["chain"]
            if not isinstance(chain, dict):
                raise BundleError("chain: expected an object")
            return cls(
                record=record, header=header,
                signature=signature,
                proof=[_unhex(p, f"proof[{i}]", 32) for i, p in enumerate(proof)],
                chain_id=_int(chain, "chain_id", (1, _U64[1]), "chain"),
                contract=_str(chain, "contract", "chain"),
                record_signature=(None if d.get("record_signature") is None else
                                  _unhex(d["record_signature"], "record_signature", 64)),
                shown_value=_shown_value(d["record"]),
                shown_header_hash=shown_hh)
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


def shown_values_check(b: Bundle) -> tuple[bool, str]:
    """Check 6 (pure): what the bundle shows people is what it proves."""
    problems = []
    r = b.record
    if isinstance(r, Reading | DerivedRecord) and b.shown_value != "absent":
        proven = r.value
        shown = b.shown_value
        same = (math.isnan(proven) if shown is None
                else isinstance(shown, float) and value_bits(shown) == value_bits(proven))
        if not same:
            problems.append(f"record.value {shown!r} is not the proven value {proven!r} "
                            "(value_bits)")
    hh = b.header.hash()
    if b.shown_header_hash is not None and b.shown_header_hash != hh:
        problems.append(f"batch.header_hash 0x{b.shown_header_hash.hex()[:16]}.. is not the "
                        f"hash of the batch fields 0x{hh.hex()[:16]}..")
    if problems:
        return False, "; ".join(problems)
    return True, "the value and header hash shown are the ones proven"


async def verify_bundle(b: Bundle, chain: EvmChain) -> Report:
    """Check a bundle against the ledger. Raises `ChainUnavailable` when the chain is down."""
    rep = Report()
    node_id = await chain.chain_id()
    same_contract = (chain.address or "").lower() == b.contract.lower()
    rep.add("chain", node_id == b.chain_id and same_contract,
            f"the node's chain id is {node_id}, the bundle's {b.chain_id}"
            + ("" if same_contract else
               f"; the contract asked is {chain.address}, the bundle names {b.contract}"))
    rep.add("shown-values", *shown_values_check(b))
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
