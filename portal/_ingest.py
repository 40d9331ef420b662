"""Ingest, the pure half: a gateway's submission (``mrv-batch/v1``) parsed within limits and
checked, to a verdict. No I/O: the caller (``_ingest_store``) looks up the gateway's key and the
anchored batch in the portal's own tables and stores what this says.

Limits, all checked before the part they guard is parsed: the body's size (``api.max_body_bytes``,
also enforced by the app before it is read) and nesting depth (`MAX_DEPTH`, by
``mrv_core.loads_bounded``), records per submission (`MAX_RECORDS`, before any record is parsed),
text lengths (`MAX_TEXT`, `MAX_PAYLOAD_TEXT`), and every number's range (``ledger_client``'s
record and batch readers: uint32, uint64, int64 as in the record format).

Checks, in order (the first that fails is the reason):

1. ``malformed`` — not JSON, wrong types, ranges, unknown keys, text too long (422);
2. ``gateway-mismatch`` — the batch or a record names another gateway than the submission;
3. ``bad-signature`` — the batch signature does not verify with the gateway's registered key
   over the hash of the header fields as sent;
4. ``header-mismatch`` — the records are not the header's: count, contiguous seqs, first/last
   record seq, first/last time, or the Merkle root over the rebuilt leaves differ; or the
   ``header_hash`` shown is not the hash of the header's fields;
5. ``bad-record-signature`` — a record signature present does not verify;
6. against the anchor (`anchor_state`): ``anchor-mismatch`` when the portal's index holds
   another header hash or root for ``(gateway, seq)`` (409: equivocation); else ``verified``
   when anchored, ``unanchored`` when not yet.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

from ledger_client import (
    MAX_SUBMISSION_RECORDS,
    BatchHeader,
    BundleError,
    batch_from_json,
    build_header,
    record_from_json_checked,
    record_leaf,
    record_signing_bytes,
    value_bits,
    verify_signature,
)
from mrv_core import AuditRecord, DerivedRecord, InputLimitError, Reading, Record, loads_bounded

FORMAT = "mrv-batch/v1"
#: Most records in one submission (the gateway's batches are cut no larger: config).
MAX_RECORDS = MAX_SUBMISSION_RECORDS
#: Deepest nesting of a submission: {records: [{...}]} and {batch: {co2e_g: [...]}} are 3.
MAX_DEPTH = 4
#: Longest text field of a record (ids, units, sources, derivations, categories, subjects).
MAX_TEXT = 1024
#: Longest audit payload (the control service's are at most 16 KiB).
MAX_PAYLOAD_TEXT = 65_536
_GATEWAY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_TOP_KEYS = frozenset({"format", "gateway_id", "batch", "records"})
_I64 = 1 << 63

VERIFIED, UNANCHORED, QUARANTINED = "verified", "unanchored", "quarantined"


class Refused(ValueError):
    """A submission refused: ``reason`` (a short code, docs/portal.md), ``status`` (HTTP), and
    what was known of it when refused (``gateway_id``, ``seq``, ``header_hash``)."""

    def __init__(self, reason: str, detail: str, *, status: int = 422,
                 gateway_id: str | None = None, seq: int | None = None,
                 header_hash: bytes | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.status = status
        self.gateway_id = gateway_id
        self.seq = seq
        self.header_hash = header_hash


@dataclass(frozen=True, slots=True)
class Submission:
    gateway_id: str
    header: BatchHeader
    #: the hash of the header's fields as sent (computed here, not the one shown)
    header_hash: bytes
    signature: bytes
    shown_header_hash: bytes | None
    records: list[Record]
    record_signatures: list[bytes | None]


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _text_ok(r: Record) -> str | None:
    """Which text field of ``r`` is longer than allowed, or None."""
    if type(r) is Reading:  # the common kind, in one test; the long way names the field
        p, u, src = r.point_id, r.unit, r.source
        if (len(p) <= MAX_TEXT and len(u) <= MAX_TEXT and len(src) <= MAX_TEXT
                and "\x00" not in p and "\x00" not in u and "\x00" not in src):
            return None
    if isinstance(r, Reading):
        fields: tuple[tuple[str, str], ...] = (("point_id", r.point_id), ("unit", r.unit),
                                               ("source", r.source))
    elif isinstance(r, DerivedRecord):
        fields = (("point_id", r.point_id), ("derivation", r.derivation), ("unit", r.unit))
    else:
        fields = (("category", r.category), ("subject", r.subject))
        if len(r.payload) > MAX_PAYLOAD_TEXT:
            return f"payload of {len(r.payload):,} characters (at most {MAX_PAYLOAD_TEXT:,})"
    for name, v in fields:
        if len(v) > MAX_TEXT:
            return f"{name} of {len(v):,} characters (at most {MAX_TEXT:,})"
        if "\x00" in v:
            return f"{name} holds a NUL character (no database text can)"
    if isinstance(r, AuditRecord) and "\x00" in r.payload:
        return "payload holds a NUL character (no database text can)"
    return None


def parse_submission(data: bytes, *, max_bytes: int) -> Submission:
    """A submission from a request body; `Refused` (``malformed``, 413 ``too-large``) when it
    is not one. Limits are checked before what they guard is parsed."""
    if len(data) <= max_bytes:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise Refused("malformed",
                          f"not JSON: not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        d = loads_bounded(data, max_bytes=max_bytes, max_depth=MAX_DEPTH, what="submission",
                          parse_constant=_reject_constant)
    except InputLimitError as e:
        status = 413 if len(data) > max_bytes else 422
        raise Refused("too-large" if status == 413 else "malformed", str(e),
                      status=status) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise Refused("malformed", f"not JSON: {str(e)[:200]}") from None
    if not isinstance(d, dict):
        raise Refused("malformed", "a submission is a JSON object")
    if d.get("format") != FORMAT:
        raise Refused("malformed", f"format: expected {FORMAT!r}, got {str(d.get('format'))[:80]!r}")
    extra = set(d) - _TOP_KEYS
    if extra or len(d) != len(_TOP_KEYS):
        what = f"unknown key(s) {sorted(extra)[:5]}" if extra else \
            f"missing key(s) {sorted(_TOP_KEYS - set(d))}"
        raise Refused("malformed", what)
    gw = d["gateway_id"]
    if not isinstance(gw, str) or not _GATEWAY_ID.match(gw):
        raise Refused("malformed", "gateway_id: expected a gateway id (1-64 of A-Z a-z 0-9 . _ : -)")
    try:
        header, signature, shown = batch_from_json(d["batch"])
    except BundleError as e:
        raise Refused("malformed", str(e)[:300], gateway_id=gw) from None
    seq, hh = header.seq, header.hash()
    if max(seq, header.first_record_seq, header.last_record_seq) >= _I64:
        raise Refused("malformed", "batch: a seq beyond 2^63-1", gateway_id=gw)
    known: dict[str, Any] = {"gateway_id": gw, "seq": seq, "header_hash": hh}
    recs = d["records"]
    if not isinstance(recs, list) or not recs:
        raise Refused("malformed", "records: expected a non-empty list", **known)
    if len(recs) > MAX_RECORDS:
        raise Refused("malformed", f"records: {len(recs):,} records, at most {MAX_RECORDS:,} "
                      "in one submission", **known)
    records: list[Record] = []
    sigs: list[bytes | None] = []
    for i, rd in enumerate(recs):
        try:
            r = record_from_json_checked(rd)
            s = rd.get("record_signature")
            if s is not None and (not isinstance(s, str) or len(s) != 130
                                  or not s.startswith("0x")):
                raise BundleError("record_signature: expected 0x and 64 bytes of hex")
            sig = None if s is None else bytes.fromhex(s[2:])
        except (BundleError, ValueError) as e:
            raise Refused("malformed", f"records[{i}]: {str(e)[:300]}", **known) from None
        if r.seq >= _I64:
            raise Refused("malformed", f"records[{i}].seq: beyond 2^63-1", **known)
        too_long = _text_ok(r)
        if too_long is not None:
            raise Refused("malformed", f"records[{i}]: {too_long}", **known)
        records.append(r)
        sigs.append(sig)
    return Submission(gateway_id=gw, header=header, header_hash=hh, signature=signature,
                      shown_header_hash=shown, records=records, record_signatures=sigs)


def _ts_of(r: Record) -> int:
    """The time a record contributes to its batch header (derived: its period start)."""
    return r.period_start_ns if isinstance(r, DerivedRecord) else r.ts_ns


def check_submission(sub: Submission, signing_key: bytes) -> list[bytes]:
    """Checks 2-5 of the module's list against the gateway's registered ``signing_key``;
    returns the records' leaves, or raises `Refused`."""
    h = sub.header
    known: dict[str, Any] = {"gateway_id": sub.gateway_id, "seq": h.seq,
                             "header_hash": sub.header_hash}
    if h.gateway_id != sub.gateway_id:
        raise Refused("gateway-mismatch", f"the batch is of gateway {h.gateway_id[:64]!r}, the "
                      f"submission of {sub.gateway_id!r}", **known)
    for i, r in enumerate(sub.records):
        if r.gateway_id != sub.gateway_id:
            raise Refused("gateway-mismatch", f"records[{i}] is of gateway "
                          f"{r.gateway_id[:64]!r}", **known)
    if not verify_signature(signing_key, sub.header_hash, sub.signature):
        raise Refused("bad-signature", f"the batch signature does not verify with the key "
                      f"0x{signing_key.hex()[:16]}.. registered for {sub.gateway_id}", **known)
    if sub.shown_header_hash is not None and sub.shown_header_hash != sub.header_hash:
        raise Refused("header-mismatch", "batch.header_hash is not the hash of the batch's "
                      "fields", **known)
    if len(sub.records) != h.count:
        raise Refused("header-mismatch", f"the header counts {h.count} records, the "
                      f"submission holds {len(sub.records)}", **known)
    leaves = [record_leaf(r) for r in sub.records]
    try:
        rebuilt = build_header(
            gateway_id=h.gateway_id, seq=h.seq, prev_hash=h.prev_hash,
            records=[(r.seq, _ts_of(r), leaf) for r, leaf in zip(sub.records, leaves,
                                                                  strict=True)],
            co2e_g=(h.co2e_scope1_g, h.co2e_scope2_g, h.co2e_scope3_g))
    except ValueError as e:  # not a contiguous run of record seqs
        raise Refused("header-mismatch", f"records: {e}", **known) from None
    if rebuilt != h:
        diff = [f for f in ("root", "first_record_seq", "last_record_seq", "first_ts_ns",
                            "last_ts_ns") if getattr(rebuilt, f) != getattr(h, f)]
        raise Refused("header-mismatch", f"the records do not give the header's "
                      f"{', '.join(diff)}", **known)
    for i, (leaf, sig) in enumerate(zip(leaves, sub.record_signatures, strict=True)):
        if sig is not None and not verify_signature(signing_key, record_signing_bytes(leaf),
                                                    sig):
            raise Refused("bad-record-signature", f"the record signature of record "
                          f"{sub.records[i].seq} does not verify", **known)
    return leaves


def anchor_state(sub: Submission, anchored: tuple[bytes, bytes] | None) -> str:
    """``verified`` when the portal's index holds this header hash and root for the batch,
    ``unanchored`` when it holds none yet; `Refused` (409 ``anchor-mismatch``) when it holds
    another (``anchored`` = (header_hash, root))."""
    if anchored is None:
        return UNANCHORED
    hh, root = anchored
    if hh != sub.header_hash or root != sub.header.root:
        raise Refused("anchor-mismatch", f"the ledger holds header 0x{hh.hex()[:16]}.. for "
                      f"batch {sub.header.seq} of {sub.gateway_id}, the submission "
                      f"0x{sub.header_hash.hex()[:16]}..", status=409,
                      gateway_id=sub.gateway_id, seq=sub.header.seq,
                      header_hash=sub.header_hash)
    return VERIFIED


def _signed64(bits: int) -> int:
    return bits - (1 << 64) if bits >= _I64 else bits


_NAN_BITS = value_bits(math.nan)
_NAN_SIGNED = _signed64(_NAN_BITS)  # every NaN is stored canonical (docs/formats.md)


def record_rows(sub: Submission, leaves: list[bytes], enterprise: str) -> list[dict[str, Any]]:
    """The ``records`` rows of a verified submission (the outbox's columns, docs/portal.md)."""
    rows: list[dict[str, Any]] = []
    gw, bseq = sub.gateway_id, sub.header.seq
    for r, leaf, sig in zip(sub.records, leaves, sub.record_signatures, strict=True):
        if type(r) is Reading:  # the common kind, in one literal (thousands per batch)
            v = r.value
            nan = v != v
            rows.append({"gateway_id": gw, "seq": r.seq, "batch_seq": bseq,
                         "enterprise": enterprise, "leaf": "0x" + leaf.hex(),
                         "record_signature": None if sig is None else "0x" + sig.hex(),
                         "kind": 1, "point_id": r.point_id, "ts_ns": r.ts_ns,
                         "value": None if nan else v,
                         "value_bits": _NAN_SIGNED if nan else _signed64(value_bits(v)),
                         "unit": r.unit, "quality": r.quality, "source": r.source,
                         "extra": None})
            continue
        row: dict[str, Any] = {"gateway_id": gw, "seq": r.seq, "batch_seq": bseq,
                               "enterprise": enterprise, "leaf": "0x" + leaf.hex(),
                               "record_signature": None if sig is None else "0x" + sig.hex()}
        if isinstance(r, Reading):
            v = r.value
            row.update(kind=1, point_id=r.point_id, ts_ns=r.ts_ns,
                       value=None if math.isnan(v) else v, value_bits=_signed64(value_bits(v)),
                       unit=r.unit, quality=r.quality, source=r.source, extra=None)
        elif isinstance(r, DerivedRecord):
            v = r.value
            row.update(kind=2, point_id=r.point_id, ts_ns=r.period_start_ns,
                       value=None if math.isnan(v) else v, value_bits=_signed64(value_bits(v)),
                       unit=r.unit, quality=r.quality, source=r.derivation,
                       extra=json.dumps({"period_end_ns": r.period_end_ns,
                                         "from_seq": r.from_seq, "to_seq": r.to_seq},
                                        separators=(",", ":"), sort_keys=True))
        else:
            assert isinstance(r, AuditRecord)
            row.update(kind=3, point_id=r.subject, ts_ns=r.ts_ns, value=None,
                       value_bits=_signed64(_NAN_BITS), unit="", quality=0, source=r.category,
                       extra=r.payload)
        rows.append(row)
    return rows


def value_of_bits(bits: int) -> float:
    """The float a stored ``value_bits`` (signed 64-bit) stands for."""
    return float(struct.unpack(">d", struct.pack(">q", bits))[0])
