"""Verified records: list (cursor pagination), one record, its ``mrv-proof/v1`` bundle (what
``mrv-gateway verify --bundle`` checks against the chain), and the auditors' bulk export of
records with their leaves and proofs (CSV or JSON Lines, streamed one batch at a time)."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from mrv_core import INVALID
from portal._access import Resource
from portal._api_common import (
    DEFAULT_PAGE,
    GATEWAY_ID_RE,
    I64,
    PROBLEMS,
    Access,
    AddressQ,
    DbRoute,
    GatewayQ,
    TextQ,
    TimeQ,
    access,
    lower,
)
from portal._chain_tables import batches
from portal._errors import ApiProblem
from portal._ingest_tables import records
from portal._proofs import (
    KIND_NAMES,
    BatchProofs,
    StoredRecordError,
    bundle_of,
    check_batch_leaves,
    float_of_bits,
    header_of,
    record_from_row,
    unhex,
)

router = APIRouter(prefix="/v1", tags=["records"], responses=PROBLEMS, route_class=DbRoute)

#: batches read per query while exporting (each batch's leaves are held while it is written)
EXPORT_BATCHES_PER_QUERY = 50
MAX_CURSOR_CHARS = 400


class RecordOut(BaseModel):
    gateway_id: str
    seq: int
    batch_seq: int
    enterprise: str
    kind: Literal["reading", "derived", "audit"]
    point_id: str
    ts_ns: int
    #: null: no value (NaN); ``value_bits`` is authoritative
    value: float | None
    #: the IEEE-754 binary64 bits, 0x + 16 hex digits
    value_bits: str
    unit: str
    quality: int
    #: any invalid quality bit set (mrv_core.INVALID)
    flagged: bool
    source: str
    extra: str | None
    leaf: str
    record_signature: str | None


class RecordPage(BaseModel):
    items: list[RecordOut]
    limit: int
    #: pass as ``cursor`` for the next page; null on the last page
    next_cursor: str | None


def _bits_hex(bits: int) -> str:
    return f"0x{bits & (2**64 - 1):016x}"


def _record(r: Any) -> RecordOut:
    v = r.value
    if v is not None and not math.isfinite(v):
        v = None
    return RecordOut(
        gateway_id=r.gateway_id, seq=r.seq, batch_seq=r.batch_seq, enterprise=r.enterprise,
        kind=KIND_NAMES.get(int(r.kind), "reading"),  # type: ignore[arg-type]
        point_id=r.point_id, ts_ns=r.ts_ns,
        value=None if math.isnan(float_of_bits(int(r.value_bits))) else v,
        value_bits=_bits_hex(int(r.value_bits)), unit=r.unit, quality=r.quality,
        flagged=bool(int(r.quality) & INVALID), source=r.source, extra=r.extra, leaf=r.leaf,
        record_signature=r.record_signature)


def _encode_cursor(gateway_id: str, seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([gateway_id, seq]).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[str, int]:
    try:
        gw, seq = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(gw, str) or not isinstance(seq, int) or isinstance(seq, bool) \
                or not 0 <= seq <= I64 or not re.fullmatch(GATEWAY_ID_RE, gw):
            raise ValueError("not a cursor")
    except (ValueError, TypeError, UnicodeDecodeError):
        raise ApiProblem(422, "Unprocessable Content",
                         "cursor: not a cursor this API gave (pass next_cursor unchanged)"
                         ) from None
    return gw, seq


def _filters(acc: Access, enterprise: str | None, gateway_id: str | None,
             point_id: str | None, from_ns: int | None,
             to_ns: int | None) -> list[sa.ColumnElement[bool]]:
    conds: list[sa.ColumnElement[bool]] = []
    scope = acc.scope(records.c.enterprise, enterprise)
    if scope is not None:
        conds.append(scope)
    if enterprise is not None:
        conds.append(records.c.enterprise == enterprise)
    if gateway_id is not None:
        conds.append(records.c.gateway_id == gateway_id)
    if point_id is not None:
        conds.append(records.c.point_id == point_id)
    if from_ns is not None:
        conds.append(records.c.ts_ns >= from_ns)
    if to_ns is not None:
        conds.append(records.c.ts_ns < to_ns)
    return conds


@router.get("/records", response_model=RecordPage)
def list_records(acc: Annotated[Access, Depends(access)],
                 limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
                 cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_CHARS)] = None,
                 enterprise: AddressQ = None, gateway_id: GatewayQ = None,
                 point_id: TextQ = None,
                 from_ns: TimeQ = None, to_ns: TimeQ = None) -> RecordPage:
    """Verified records in (gateway_id, seq) order; ``cursor`` continues a listing."""
    if limit is None:
        limit = min(DEFAULT_PAGE, acc.ctx.config.api.max_page)
    if limit > acc.ctx.config.api.max_page:
        raise ApiProblem(422, "Unprocessable Content",
                         f"limit {limit} is more than a page may hold "
                         f"({acc.ctx.config.api.max_page})")
    conds = _filters(acc, lower(enterprise), gateway_id, point_id, from_ns, to_ns)
    if cursor is not None:
        gw, seq = _decode_cursor(cursor)
        conds.append(sa.or_(records.c.gateway_id > gw,
                            sa.and_(records.c.gateway_id == gw, records.c.seq > seq)))
    q = (sa.select(records).where(*conds).order_by(records.c.gateway_id, records.c.seq)
         .limit(limit + 1))
    with acc.ctx.engine.connect() as c:
        rows = c.execute(q).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return RecordPage(items=[_record(r) for r in rows], limit=limit,
                      next_cursor=_encode_cursor(rows[-1].gateway_id, rows[-1].seq)
                      if more else None)


GatewayP = Annotated[str, Path(pattern=GATEWAY_ID_RE)]
SeqP = Annotated[int, Path(ge=1, le=I64)]


def _one_record(acc: Access, c: sa.Connection, gateway_id: str, seq: int) -> Any:
    row = c.execute(sa.select(records).where(records.c.gateway_id == gateway_id,
                                             records.c.seq == seq)).first()
    if row is None:
        raise ApiProblem(404, "Not Found",
                         f"no verified record {seq} of gateway {gateway_id} in the portal")
    acc.require(Resource.of(row.enterprise))
    return row


@router.get("/records/{gateway_id}/{seq}", response_model=RecordOut)
def one_record(gateway_id: GatewayP, seq: SeqP,
               acc: Annotated[Access, Depends(access)]) -> RecordOut:
    with acc.ctx.engine.connect() as c:
        return _record(_one_record(acc, c, gateway_id, seq))


class BundleChain(BaseModel):
    chain_id: int
    contract: str


class BundleBatch(BaseModel):
    gateway_id: str
    seq: int
    prev_hash: str
    root: str
    count: int
    first_record_seq: int
    last_record_seq: int
    first_ts_ns: int
    last_ts_ns: int
    co2e_g: list[int]
    header_hash: str
    signature: str


class ProofBundle(BaseModel):
    """``mrv-proof/v1`` (docs/formats.md): check it with ``mrv-gateway verify --bundle``."""

    format: Literal["mrv-proof/v1"]
    chain: BundleChain
    #: the record as the gateway committed it (``value_bits`` authoritative)
    record: dict[str, Any]
    batch: BundleBatch
    proof: list[str]
    record_signature: str | None = None


def _batch_row(c: sa.Connection, gateway_id: str, batch_seq: int) -> Any:
    return c.execute(sa.select(batches).where(batches.c.gateway_id == gateway_id,
                                              batches.c.seq == batch_seq)).first()


def _leaves(c: sa.Connection, gateway_id: str, batch_seq: int) -> tuple[list[int], list[bytes]]:
    seqs, leaves = [], []
    for s, leaf in c.execute(sa.select(records.c.seq, records.c.leaf).where(
            records.c.gateway_id == gateway_id, records.c.batch_seq == batch_seq)
            .order_by(records.c.seq)):
        seqs.append(int(s))
        leaves.append(unhex(leaf))
    return seqs, leaves


@router.get("/records/{gateway_id}/{seq}/proof", response_model=ProofBundle,
            response_model_exclude_none=True)
def record_proof(gateway_id: GatewayP, seq: SeqP,
                 acc: Annotated[Access, Depends(access)]) -> dict[str, Any]:
    """The record's proof bundle: the record, its batch header and signature, and the Merkle
    proof built from the batch's stored leaves."""
    contract = acc.ctx.contracts.get("EmissionsLedger")
    with acc.ctx.engine.connect() as c:
        row = _one_record(acc, c, gateway_id, seq)
        b = _batch_row(c, gateway_id, int(row.batch_seq))
        if b is None:
            raise ApiProblem(409, "Conflict", f"batch {row.batch_seq} of {gateway_id} is not in "
                             "the portal's index of the chain yet")
        header = header_of(b)
        seqs, leaves = _leaves(c, gateway_id, int(row.batch_seq))
    if not contract or not acc.ctx.chain_id:
        raise ApiProblem(503, "Service Unavailable",
                         "the portal does not know the ledger's address or chain id")
    why = check_batch_leaves(header, seqs, leaves)
    if why:
        raise ApiProblem(409, "Conflict", f"no proof for record {seq}: {why}")
    try:
        return bundle_of(record=record_from_row(row), stored_leaf=unhex(row.leaf), header=header,
                         signature=unhex(b.signature), proofs=BatchProofs(leaves),
                         chain_id=acc.ctx.chain_id, contract=contract,
                         record_signature=(unhex(row.record_signature)
                                           if row.record_signature else None))
    except StoredRecordError as e:
        raise ApiProblem(409, "Conflict", f"no proof for record {seq}: {e}") from None


# -- bulk export ------------------------------------------------------------------------------

EXPORT_FIELDS = ("gateway_id", "seq", "batch_seq", "enterprise", "kind", "point_id", "ts_ns",
                 "value", "value_bits", "unit", "quality", "source", "extra", "leaf",
                 "record_signature", "batch_root", "batch_header_hash", "proof", "proof_error")


def _export_rows(acc: Access, conds: list[sa.ColumnElement[bool]]) -> Iterator[dict[str, Any]]:
    """The matching records with their proofs, one batch at a time (bounded memory: one
    batch's leaves and a page of batch keys)."""
    last: tuple[str, int] | None = None
    with acc.ctx.engine.connect() as c:
        while True:
            q = sa.select(records.c.gateway_id, records.c.batch_seq).where(*conds).distinct()
            if last is not None:
                q = q.where(sa.or_(records.c.gateway_id > last[0],
                                   sa.and_(records.c.gateway_id == last[0],
                                           records.c.batch_seq > last[1])))
            keys = c.execute(q.order_by(records.c.gateway_id, records.c.batch_seq)
                             .limit(EXPORT_BATCHES_PER_QUERY)).all()
            if not keys:
                return
            for gw, bseq in keys:
                b = _batch_row(c, gw, int(bseq))
                seqs, leaves = _leaves(c, gw, int(bseq))
                proofs: BatchProofs | None = None
                why = "the batch is not in the portal's index of the chain" if b is None else ""
                if b is not None:
                    header = header_of(b)
                    why = check_batch_leaves(header, seqs, leaves)
                    if not why:
                        proofs = BatchProofs(leaves)
                for r in c.execute(sa.select(records).where(
                        *conds, records.c.gateway_id == gw, records.c.batch_seq == bseq)
                        .order_by(records.c.seq)):
                    out = _record(r).model_dump()
                    out.pop("flagged")
                    out["batch_root"] = b.root if b is not None else None
                    out["batch_header_hash"] = b.header_hash if b is not None else None
                    out["proof"] = (["0x" + p.hex() for p in
                                     proofs.proof(int(r.seq) - header.first_record_seq)]
                                    if proofs is not None else None)
                    out["proof_error"] = why or None
                    yield out
            last = (keys[-1][0], int(keys[-1][1]))


def _jsonl(rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    for r in rows:
        yield (json.dumps(r, separators=(",", ":")) + "\n").encode()


def _csv(rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(EXPORT_FIELDS)
    for n, r in enumerate(rows, 1):
        proof = r["proof"]
        w.writerow(["" if r[k] is None else (";".join(proof) if k == "proof" else r[k])
                    for k in EXPORT_FIELDS])
        if n % 200 == 0:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()


@router.get("/export/records", response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}, "application/jsonl": {}},
                             "description": "the records, streamed"}})
def export_records(acc: Annotated[Access, Depends(access)],
                   format: Literal["csv", "jsonl"] = "jsonl",
                   enterprise: AddressQ = None, gateway_id: GatewayQ = None,
                   from_ns: TimeQ = None, to_ns: TimeQ = None) -> StreamingResponse:
    """Bulk export for auditors: records with their leaves and Merkle proofs, streamed. CSV
    joins a proof's hashes with ``;``. Government and auditors export everything; others the
    enterprises they may see in full."""
    conds = _filters(acc, lower(enterprise), gateway_id, None, from_ns, to_ns)
    rows = _export_rows(acc, conds)
    if format == "csv":
        return StreamingResponse(_csv(rows), media_type="text/csv; charset=utf-8",
                                 headers={"content-disposition":
                                          'attachment; filename="records.csv"'})
    return StreamingResponse(_jsonl(rows), media_type="application/jsonl",
                             headers={"content-disposition":
                                      'attachment; filename="records.jsonl"'})
