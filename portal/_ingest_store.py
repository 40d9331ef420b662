"""Ingest, the I/O half: look up what the pure checks need in the portal's own tables (the
gateway's registered key from ``gateways``, the anchored header from ``batches``, both filled by
the indexer from the chain), store the verdict, and re-check unanchored submissions when their
anchor has been indexed (`verify_pending`, the ``ingest_verifier`` worker).

Exactly one submission holds the slot ``(gateway_id, seq)`` in ``ingest_batches`` (its primary
key): one whose batch signature verified. A submission that fails before that (malformed, bad
signature) is kept in ``quarantine`` only, so nobody can take a gateway's slot with garbage.
"""

from __future__ import annotations

import logging
import operator
import threading
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ledger_client import gateway_key
from portal._chain_tables import batches, gateways
from portal._context import PortalContext
from portal._errors import ApiProblem, DatabaseUnavailable
from portal._ingest import (
    QUARANTINED,
    UNANCHORED,
    VERIFIED,
    Refused,
    Submission,
    anchor_state,
    check_submission,
    parse_submission,
    record_rows,
)
from portal._ingest_tables import ingest_batches, quarantine, records

log = logging.getLogger("mrv.portal.ingest")

#: Errors that mean "the database does not answer" (503, the gateway retries).
DB_DOWN: tuple[type[Exception], ...] = (sa.exc.OperationalError, sa.exc.InterfaceError,
                                        sa.exc.TimeoutError)
#: Reasons that come from the gateway's own signed header: such a submission holds its slot
#: (quarantined), so another header for the same seq is seen as equivocation.
_SIGNED_REASONS = frozenset({"header-mismatch", "bad-record-signature", "anchor-mismatch",
                             "gateway-revoked", "equivocation"})
#: Rows inserted per statement when storing the records of a verified batch.
INSERT_CHUNK = 5_000


@dataclass(frozen=True, slots=True)
class Answer:
    """What the endpoint answers: ``status`` and its JSON ``body``."""

    status: int
    body: dict[str, Any]


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _gateway(c: sa.Connection, gateway_id: str) -> Any:
    return c.execute(sa.select(gateways.c.gateway_key, gateways.c.enterprise,
                               gateways.c.active, gateways.c.signing_key)
                     .where(gateways.c.gateway_key == _hex(gateway_key(gateway_id)))).first()


def _anchored(c: sa.Connection, gw_key: str, seq: int) -> tuple[bytes, bytes] | None:
    row = c.execute(sa.select(batches.c.header_hash, batches.c.root)
                    .where(batches.c.gateway_key == gw_key, batches.c.seq == seq)).first()
    if row is None:
        return None
    return bytes.fromhex(row.header_hash[2:]), bytes.fromhex(row.root[2:])


def _slot(c: sa.Connection, gateway_id: str, seq: int) -> Any:
    return c.execute(sa.select(ingest_batches.c.state, ingest_batches.c.header_hash,
                               ingest_batches.c.reason, ingest_batches.c.record_count)
                     .where(ingest_batches.c.gateway_id == gateway_id,
                            ingest_batches.c.seq == seq)).first()


def ingest(ctx: PortalContext, body: bytes) -> Answer:
    """Parse, check and store one submission; the answer of ``POST /v1/ingest/batches``.
    Raises `ApiProblem` (404, 409, 413, 422) and `DatabaseUnavailable` (503)."""
    ctx.metrics.inc("ingest_submissions")
    try:
        for _ in range(3):  # a concurrent insert of the same slot: look again
            try:
                return _ingest(ctx, body)
            except sa.exc.IntegrityError:
                continue
        raise ApiProblem(409, "Conflict", "the batch was stored concurrently; send it again")
    except DB_DOWN as e:
        ctx.metrics.inc("ingest_db_unavailable")
        raise DatabaseUnavailable(str(getattr(e, "orig", e))[:300]) from None
    except ApiProblem as e:
        ctx.metrics.inc(f"ingest_http_{e.status}")
        raise


def _refuse(ctx: PortalContext, e: Refused, *, known_gateway: bool,
            hold_slot: bool = False, record_count: int = 0) -> ApiProblem:
    """Quarantine a refused submission (when its gateway is known), count it, and the
    problem to answer."""
    ctx.metrics.inc("ingest_refused")
    ctx.metrics.inc(f"ingest_refused_{e.reason}")
    now = ctx.now_ns()
    if known_gateway and e.gateway_id is not None:
        hh = None if e.header_hash is None else _hex(e.header_hash)
        with ctx.engine.begin() as c:
            c.execute(quarantine.insert().values(
                gateway_id=e.gateway_id, seq=e.seq or 0, header_hash=hh, reason=e.reason,
                received_ns=now, detail=e.detail[:2000]))
            if hold_slot and e.seq is not None and hh is not None:
                _upsert_quarantined(c, e, hh, record_count, now)
        ctx.metrics.inc("ingest_quarantined")
    log.warning("refused batch %s of %s: %s: %s", e.seq, e.gateway_id, e.reason, e.detail)
    title = "Conflict" if e.status == 409 else \
        "Payload Too Large" if e.status == 413 else "Unprocessable Content"
    return ApiProblem(e.status, title, e.detail, reason=e.reason, gateway_id=e.gateway_id,
                      seq=e.seq)


def _upsert_quarantined(c: sa.Connection, e: Refused, hh: str, count: int, now: int) -> None:
    assert e.gateway_id is not None and e.seq is not None
    cur = c.execute(ingest_batches.update()
                    .where(ingest_batches.c.gateway_id == e.gateway_id,
                           ingest_batches.c.seq == e.seq,
                           ingest_batches.c.state == QUARANTINED)
                    .values(header_hash=hh, state=QUARANTINED, reason=e.reason,
                            received_ns=now, record_count=count, payload=None))
    if cur.rowcount == 0:
        c.execute(ingest_batches.insert().values(
            gateway_id=e.gateway_id, seq=e.seq, gateway_key=_hex(gateway_key(e.gateway_id)),
            header_hash=hh, state=QUARANTINED, reason=e.reason, received_ns=now,
            verified_ns=None, record_count=count, payload=None))


def _ingest(ctx: PortalContext, body: bytes) -> Answer:
    try:
        sub = parse_submission(body, max_bytes=ctx.config.api.max_body_bytes)
    except Refused as e:
        known = False
        if e.gateway_id is not None:
            with ctx.engine.connect() as c:
                known = _gateway(c, e.gateway_id) is not None
        raise _refuse(ctx, e, known_gateway=known) from None
    gid, seq, hh = sub.gateway_id, sub.header.seq, sub.header_hash
    with ctx.engine.connect() as c:
        gw = _gateway(c, gid)
        if gw is None:
            ctx.metrics.inc("ingest_unknown_gateway")
            raise ApiProblem(404, "Not Found", f"gateway {gid!r} is not registered on the "
                             "ledger (as far as the portal's index has seen)",
                             reason="unknown-gateway", gateway_id=gid, seq=seq)
        slot = _slot(c, gid, seq)
        anchored = _anchored(c, gw.gateway_key, seq)
    if slot is not None and slot.header_hash == _hex(hh) and slot.state != QUARANTINED:
        ctx.metrics.inc("ingest_replays")
        return Answer(200, {"gateway_id": gid, "seq": seq, "header_hash": _hex(hh),
                            "state": slot.state, "records": int(slot.record_count),
                            "replay": True})
    count = len(sub.records)
    try:
        leaves = check_submission(sub, bytes.fromhex(gw.signing_key[2:]))
    except Refused as e:
        hold = e.reason in _SIGNED_REASONS and (slot is None or slot.state == QUARANTINED)
        raise _refuse(ctx, e, known_gateway=True, hold_slot=hold, record_count=count) from None
    if slot is not None and slot.header_hash != _hex(hh):
        eq = Refused("equivocation", f"batch {seq} of {gid} is stored with header "
                    f"{slot.header_hash[:18]}.. ({slot.state}); this one has "
                    f"{_hex(hh)[:18]}..: two signed headers for one seq", status=409,
                    gateway_id=gid, seq=seq, header_hash=hh)
        raise _refuse(ctx, eq, known_gateway=True)
    try:
        state = anchor_state(sub, anchored)
    except Refused as e:
        raise _refuse(ctx, e, known_gateway=True, hold_slot=True, record_count=count) from None
    if state == UNANCHORED and not gw.active:
        rv = Refused("gateway-revoked", f"gateway {gid} is revoked on the ledger and batch "
                    f"{seq} is not anchored: it never will be", gateway_id=gid, seq=seq,
                    header_hash=hh)
        raise _refuse(ctx, rv, known_gateway=True, hold_slot=True, record_count=count)
    now = ctx.now_ns()
    with ctx.engine.begin() as c:
        if slot is not None:  # a quarantined one of the same header, now good: replaced
            c.execute(ingest_batches.delete().where(ingest_batches.c.gateway_id == gid,
                                                    ingest_batches.c.seq == seq,
                                                    ingest_batches.c.state == QUARANTINED))
        c.execute(ingest_batches.insert().values(
            gateway_id=gid, seq=seq, gateway_key=gw.gateway_key, header_hash=_hex(hh),
            state=state, reason=None, received_ns=now,
            verified_ns=now if state == VERIFIED else None, record_count=count,
            payload=body.decode() if state == UNANCHORED else None))
        if state == VERIFIED:
            _store_records(c, sub, leaves, gw.enterprise)
    ctx.metrics.inc(f"ingest_{state}")
    if state == VERIFIED:
        ctx.metrics.inc("ingest_records_verified", count)
    return Answer(201, {"gateway_id": gid, "seq": seq, "header_hash": _hex(hh), "state": state,
                        "records": count, "replay": False})


_RECORD_COLUMNS = [col.name for col in records.columns]


def _store_records(c: sa.Connection, sub: Submission, leaves: list[bytes],
                   enterprise: str) -> None:
    """The verified records, in the caller's transaction: PostgreSQL's COPY (several times
    faster than INSERTs), or INSERTs of `INSERT_CHUNK` rows."""
    rows = record_rows(sub, leaves, enterprise)
    if c.dialect.name == "postgresql":
        _copy_records(c, rows)
        return
    for i in range(0, len(rows), INSERT_CHUNK):
        c.execute(records.insert(), rows[i:i + INSERT_CHUNK])


def _copy_records(c: sa.Connection, rows: list[dict[str, Any]]) -> None:
    import psycopg

    sql = f"COPY records ({', '.join(_RECORD_COLUMNS)}) FROM STDIN"
    raw: Any = c.connection.driver_connection  # the same connection, the same transaction
    try:
        cols = operator.itemgetter(*_RECORD_COLUMNS)
        with raw.cursor() as cur, cur.copy(sql) as copy:
            for r in rows:
                copy.write_row(cols(r))
    except psycopg.Error as e:  # as SQLAlchemy would raise it (IntegrityError, ...)
        raise sa.exc.DBAPIError.instance(sql, None, e, psycopg.Error) from e


def verify_pending(ctx: PortalContext, limit: int = 100) -> int:
    """Re-check unanchored submissions whose batch the index now holds: verified (records
    stored) or quarantined (``anchor-mismatch``, or a check that no longer passes, e.g. the
    gateway's key changed). Returns how many changed state."""
    with ctx.engine.connect() as c:
        rows = c.execute(
            sa.select(ingest_batches.c.gateway_id, ingest_batches.c.seq,
                      ingest_batches.c.payload)
            .select_from(ingest_batches.join(
                batches, sa.and_(batches.c.gateway_key == ingest_batches.c.gateway_key,
                                 batches.c.seq == ingest_batches.c.seq)))
            .where(ingest_batches.c.state == UNANCHORED)
            .order_by(ingest_batches.c.received_ns).limit(limit)).all()
    changed = 0
    for row in rows:
        changed += _settle(ctx, row.gateway_id, int(row.seq), row.payload or "")
    return changed


def _settle(ctx: PortalContext, gid: str, seq: int, payload: str) -> int:
    now = ctx.now_ns()
    reason: Refused | None = None
    leaves: list[bytes] = []
    sub: Submission | None = None
    with ctx.engine.connect() as c:
        gw = _gateway(c, gid)
        anchored = _anchored(c, _hex(gateway_key(gid)), seq)
    try:
        # stored by us after these checks passed; checked again: the key may have changed
        sub = parse_submission(payload.encode(), max_bytes=max(len(payload.encode()), 1) + 1)
        if gw is None:
            raise Refused("unknown-gateway", f"gateway {gid} is no longer in the index",
                          gateway_id=gid, seq=seq)
        leaves = check_submission(sub, bytes.fromhex(gw.signing_key[2:]))
        anchor_state(sub, anchored)
    except Refused as e:
        reason = e
    with ctx.engine.begin() as c:
        guard = (ingest_batches.c.gateway_id == gid, ingest_batches.c.seq == seq,
                 ingest_batches.c.state == UNANCHORED)
        if reason is None and sub is not None and gw is not None:
            cur = c.execute(ingest_batches.update().where(*guard).values(
                state=VERIFIED, verified_ns=now, payload=None))
            if cur.rowcount != 1:
                return 0
            _store_records(c, sub, leaves, gw.enterprise)
        else:
            assert reason is not None
            cur = c.execute(ingest_batches.update().where(*guard).values(
                state=QUARANTINED, reason=reason.reason, payload=None))
            if cur.rowcount != 1:
                return 0
            c.execute(quarantine.insert().values(
                gateway_id=gid, seq=seq,
                header_hash=None if reason.header_hash is None else _hex(reason.header_hash),
                reason=reason.reason, received_ns=now, detail=reason.detail[:2000]))
    if reason is None:
        ctx.metrics.inc("ingest_verified_later")
        ctx.metrics.inc("ingest_records_verified", len(leaves))
        log.info("batch %d of %s: anchored, verified", seq, gid)
    else:
        ctx.metrics.inc("ingest_quarantined")
        ctx.metrics.inc(f"ingest_refused_{reason.reason}")
        log.warning("batch %d of %s quarantined when its anchor was seen: %s", seq, gid,
                    reason)
    return 1


def ingest_verifier(ctx: PortalContext, stop: threading.Event) -> None:
    """The worker: `verify_pending` every ``chain.poll_s`` until ``stop``; a database that
    does not answer is waited for."""
    poll = ctx.config.chain.poll_s
    while not stop.is_set():
        try:
            n = verify_pending(ctx)
        except DB_DOWN as e:
            log.warning("ingest verifier: the database does not answer: %s",
                        str(getattr(e, "orig", e))[:200])
            n = 0
        except Exception:  # a bug: keep the worker alive, loudly
            log.exception("ingest verifier failed")
            ctx.metrics.inc("ingest_verifier_failures")
            n = 0
        if n == 0:
            stop.wait(poll)
