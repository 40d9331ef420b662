"""Live telemetry for the web view (``ui.telemetry``): the portal subscribes to the gateways'
``<prefix>/+/telemetry`` and ``<prefix>/+/alarm`` topics (docs/control.md "Topics"), checks
each telemetry reading's record signature with the gateway's Ed25519 key as registered on the
ledger (the indexed ``gateways`` table) and keeps the newest readings per gateway in
``telemetry_live`` and the newest alarm states in ``gateway_alarms``.

The pure part, `telemetry_rows` and `alarm_row`, turns one message into rows or raises
`TelemetryRejected` (and nothing else). The worker around it is thin: an MQTT session in an
asyncio loop of its own (reconnected with backoff), a queue, and a store step that writes the
messages received since the last one in one transaction."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from control import verify_telemetry
from mrv_core import loads_bounded
from portal._chain_tables import gateways
from portal._config import TelemetrySection
from portal._context import PortalContext
from portal._errors import PortalError
from portal._ui_tables import gateway_alarms, telemetry_live

log = logging.getLogger("mrv.portal.telemetry")

#: {"gateway", "readings": [{...}]}: deeper than this is not a telemetry message
MAX_DEPTH = 4
MAX_ID = 128
MAX_UNIT = 32
MAX_LEVEL = 32
INT64 = 2**63 - 1
#: messages written in one store step at most
BATCH = 500
#: messages waiting for the store step at most (more are dropped and counted)
QUEUE = 10_000
RECONNECT_INITIAL_S = 0.5
RECONNECT_MAX_S = 10.0
DB_DOWN: tuple[type[Exception], ...] = (sa.exc.OperationalError, sa.exc.InterfaceError)

#: the kinds of refusal (the metric ``portal_telemetry_rejected_<kind>`` counts each)
KINDS = ("oversize", "topic", "unknown-gateway", "gateway-mismatch", "malformed")


class TelemetryRejected(PortalError):
    """A message was refused: ``kind`` is one of `KINDS`; nothing of it is stored."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


# -- the pure part ----------------------------------------------------------------------------

def topic_gateway(topic: str, prefix: str, kind: str) -> str:
    """The gateway id of ``<prefix>/<gw>/<kind>``."""
    head, tail = f"{prefix}/", f"/{kind}"
    if not (topic.startswith(head) and topic.endswith(tail)):
        raise TelemetryRejected("topic", f"not a {kind} topic: {topic[:200]!r}")
    gw = topic[len(head):len(topic) - len(tail)]
    if not gw or "/" in gw or "+" in gw or "#" in gw or len(gw) > MAX_ID:
        raise TelemetryRejected("topic", f"no gateway id in {topic[:200]!r}")
    return gw


def _parse(payload: bytes, max_bytes: int, what: str) -> Any:
    if len(payload) > max_bytes:
        raise TelemetryRejected("oversize", f"{len(payload)} bytes; at most {max_bytes} read")
    try:
        return loads_bounded(payload, max_bytes=max_bytes, max_depth=MAX_DEPTH, what=what)
    except ValueError as e:
        raise TelemetryRejected("malformed", f"not JSON: {str(e)[:200]}") from None


def _text(v: object, most: int, what: str, *, empty: bool = False) -> str:
    if not isinstance(v, str) or len(v) > most or (not v and not empty):
        raise TelemetryRejected("malformed", f"{what}: expected a string of at most {most}")
    return v


def _int(v: object, what: str, lo: int = 0, hi: int = INT64) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise TelemetryRejected("malformed", f"{what}: expected an integer in [{lo}, {hi}]")
    return v


def _number(v: object, what: str) -> float | None:
    """A reading's value: None for null (NaN) and for NaN itself."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TelemetryRejected("malformed", f"{what}: expected a number or null")
    try:
        f = float(v)
    except OverflowError:
        raise TelemetryRejected("malformed", f"{what}: out of range") from None
    return None if math.isnan(f) else f


def telemetry_rows(topic: str, payload: bytes, keys: Mapping[str, bytes], *, prefix: str,
                   max_bytes: int, received_ns: int) -> list[dict[str, Any]]:
    """The ``telemetry_live`` rows of one telemetry message, each reading marked ``signed``
    (it carries a record signature) and ``verified`` (that signature checks with the
    gateway's registered key, ``keys[gateway id]``, over the reading's fields). Refused
    (`TelemetryRejected`) as a whole: larger than ``max_bytes`` (before parsing), not on
    ``<prefix>/<gw>/telemetry``, a gateway not in ``keys`` (unknown or inactive), a message
    naming another gateway than its topic, or anything not of the documented shape."""
    if len(payload) > max_bytes:
        raise TelemetryRejected("oversize", f"{len(payload)} bytes; at most {max_bytes} read")
    gw = topic_gateway(topic, prefix, "telemetry")
    key = keys.get(gw)
    if key is None:
        raise TelemetryRejected("unknown-gateway",
                                f"{gw!r} is not a registered, active gateway")
    doc = _parse(payload, max_bytes, "telemetry message")
    if not isinstance(doc, dict) or not isinstance(doc.get("readings"), list):
        raise TelemetryRejected("malformed", 'expected {"gateway": ..., "readings": [...]}')
    if doc.get("gateway") != gw:
        raise TelemetryRejected("gateway-mismatch",
                                f"topic of {gw!r}, message of {str(doc.get('gateway'))[:130]!r}")
    rows: list[dict[str, Any]] = []
    for i, it in enumerate(doc["readings"]):
        if not isinstance(it, dict):
            raise TelemetryRejected("malformed", f"reading {i} is not an object")
        rows.append({
            "gateway_id": gw, "seq": _int(it.get("seq"), f"reading {i}: seq"),
            "point": _text(it.get("point"), MAX_ID, f"reading {i}: point"),
            "ts_ns": _int(it.get("ts_ns"), f"reading {i}: ts_ns"),
            "value": _number(it.get("value"), f"reading {i}: value"),
            "unit": _text(it.get("unit"), MAX_UNIT, f"reading {i}: unit", empty=True),
            "quality": _int(it.get("quality"), f"reading {i}: quality", 0, 2**31 - 1),
            "signed": "sig" in it, "verified": False, "received_ns": received_ns})
    if any(r["signed"] for r in rows):
        try:
            checked = verify_telemetry(payload, key)
        except ValueError as e:  # not reachable after the checks above; kept as a guard
            raise TelemetryRejected("malformed", str(e)[:200]) from None
        if len(checked) != len(rows):
            raise TelemetryRejected("malformed", "readings and signature checks differ")
        for row, (seq, ok) in zip(rows, checked, strict=True):
            row["verified"] = bool(row["signed"] and ok and seq == row["seq"])
    return rows


def alarm_row(topic: str, payload: bytes, known: Mapping[str, bytes] | set[str], *,
              prefix: str, max_bytes: int, received_ns: int) -> dict[str, Any]:
    """The ``gateway_alarms`` row of one alarm message (``{"gateway", "rule", "state",
    "point", "value", "unit", "level", "ts_ms"}``, docs/control.md). Alarms carry no
    signature: they are as trustworthy as the broker's ACL (only the gateway may publish)."""
    if len(payload) > max_bytes:
        raise TelemetryRejected("oversize", f"{len(payload)} bytes; at most {max_bytes} read")
    gw = topic_gateway(topic, prefix, "alarm")
    if gw not in known:
        raise TelemetryRejected("unknown-gateway",
                                f"{gw!r} is not a registered, active gateway")
    doc = _parse(payload, max_bytes, "alarm message")
    if not isinstance(doc, dict):
        raise TelemetryRejected("malformed", "an alarm is a JSON object")
    if doc.get("gateway") != gw:
        raise TelemetryRejected("gateway-mismatch",
                                f"topic of {gw!r}, message of {str(doc.get('gateway'))[:130]!r}")
    state = doc.get("state")
    if state not in ("raised", "cleared"):
        raise TelemetryRejected("malformed", "state: expected raised or cleared")
    level = doc.get("level")
    unit = doc.get("unit")
    return {"gateway_id": gw, "rule": _text(doc.get("rule"), MAX_ID, "rule"),
            "point": _text(doc.get("point"), MAX_ID, "point"), "state": state,
            "level": None if level is None else _text(level, MAX_LEVEL, "level", empty=True),
            "value": _number(doc.get("value"), "value"),
            "unit": None if unit is None else _text(unit, MAX_UNIT, "unit", empty=True),
            "ts_ms": _int(doc.get("ts_ms"), "ts_ms"), "received_ns": received_ns}


# -- storing ----------------------------------------------------------------------------------

@dataclass
class _State:
    """What the worker remembers between messages: the refusal kinds logged already."""

    logged: set[str] = field(default_factory=set)


def _refuse(ctx: PortalContext, state: _State, e: TelemetryRejected, topic: str) -> None:
    ctx.metrics.inc("portal_telemetry_rejected")
    ctx.metrics.inc(f"portal_telemetry_rejected_{e.kind}")
    if e.kind not in state.logged:
        state.logged.add(e.kind)
        log.warning("telemetry: refused a message on %s: %s (logged once per kind; counted "
                    "in portal_telemetry_rejected_%s)", topic[:200], e, e.kind)


def _keys(conn: sa.Connection, ids: set[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if not ids:
        return out
    q = sa.select(gateways.c.gateway_id, gateways.c.signing_key).where(
        gateways.c.active.is_(True), gateways.c.gateway_id.in_(sorted(ids)))
    for gid, key in conn.execute(q):
        try:
            out[str(gid)] = bytes.fromhex(str(key).removeprefix("0x"))
        except ValueError:
            continue
    return out


def _store_alarm(conn: sa.Connection, row: dict[str, Any]) -> bool:
    """Upsert one alarm state; an older one (``ts_ms``) or the same one again changes
    nothing. True when it was written."""
    pk = ((gateway_alarms.c.gateway_id == row["gateway_id"])
          & (gateway_alarms.c.rule == row["rule"]) & (gateway_alarms.c.point == row["point"]))
    cur = conn.execute(sa.select(gateway_alarms.c.ts_ms, gateway_alarms.c.state).where(pk)).first()
    if cur is not None:
        if cur.ts_ms > row["ts_ms"] or (cur.ts_ms == row["ts_ms"] and cur.state == row["state"]):
            return False
        conn.execute(sa.delete(gateway_alarms).where(pk))
    conn.execute(sa.insert(gateway_alarms).values(**row))
    return True


def _prune(conn: sa.Connection, gateway_id: str, keep: int) -> int:
    """Delete a gateway's readings older than its ``keep`` newest."""
    cutoff = conn.execute(
        sa.select(telemetry_live.c.id).where(telemetry_live.c.gateway_id == gateway_id)
        .order_by(telemetry_live.c.id.desc()).limit(1).offset(keep - 1)).scalar()
    if cutoff is None:
        return 0
    res = conn.execute(sa.delete(telemetry_live).where(
        telemetry_live.c.gateway_id == gateway_id, telemetry_live.c.id < cutoff))
    return int(res.rowcount or 0)


def store_messages(ctx: PortalContext, cfg: TelemetrySection,
                   messages: list[tuple[str, bytes, int]], state: _State | None = None) -> int:
    """Check and store ``messages`` ((topic, payload, received_ns) each) in one transaction;
    refused ones are counted and logged once per kind. The readings kept per gateway are cut
    to ``keep_per_gateway`` once, at the end. Returns the readings stored."""
    state = state or _State()
    prefix = cfg.topic_prefix
    ids: set[str] = set()
    for topic, _, _ in messages:
        for kind in ("telemetry", "alarm"):
            try:
                ids.add(topic_gateway(topic, prefix, kind))
            except TelemetryRejected:
                pass
    stored = 0
    with ctx.engine.begin() as conn:
        keys = _keys(conn, ids)
        touched: set[str] = set()
        rows: list[dict[str, Any]] = []
        for topic, payload, received_ns in messages:
            try:
                if topic.endswith("/alarm"):
                    if _store_alarm(conn, alarm_row(topic, payload, keys, prefix=prefix,
                                                    max_bytes=cfg.max_message_bytes,
                                                    received_ns=received_ns)):
                        ctx.metrics.inc("portal_telemetry_alarms")
                    continue
                got = telemetry_rows(topic, payload, keys, prefix=prefix,
                                     max_bytes=cfg.max_message_bytes, received_ns=received_ns)
            except TelemetryRejected as e:
                _refuse(ctx, state, e, topic)
                continue
            ctx.metrics.inc("portal_telemetry_messages")
            rows += got
            if got:
                touched.add(got[0]["gateway_id"])
        if rows:
            conn.execute(sa.insert(telemetry_live), rows)
            stored = len(rows)
            ctx.metrics.inc("portal_telemetry_readings", stored)
            ctx.metrics.inc("portal_telemetry_verified", sum(1 for r in rows if r["verified"]))
        for gw in sorted(touched):
            ctx.metrics.inc("portal_telemetry_pruned", _prune(conn, gw, cfg.keep_per_gateway))
    return stored


# -- the worker -------------------------------------------------------------------------------

def _host_port(broker: str) -> tuple[str, int]:
    host, _, port = broker.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _tls(cfg: TelemetrySection) -> ssl.SSLContext | None:
    if cfg.ca_file is None:
        return None
    c = ssl.create_default_context(cafile=str(cfg.ca_file))
    c.minimum_version = ssl.TLSVersion.TLSv1_2
    return c


async def _subscribe(ctx: PortalContext, cfg: TelemetrySection, state: _State,
                     queue: asyncio.Queue[tuple[str, bytes, int]]) -> None:
    import aiomqtt

    host, port = _host_port(cfg.broker)
    p = cfg.topic_prefix
    delay = RECONNECT_INITIAL_S
    ident = f"mrv-portal-telemetry-{os.urandom(4).hex()}"
    while True:
        try:
            async with aiomqtt.Client(host, port, username=cfg.username, password=cfg.password,
                                      identifier=ident, clean_session=True, keepalive=30,
                                      timeout=10, tls_context=_tls(cfg)) as client:
                await client.subscribe(f"{p}/+/telemetry", qos=0)
                await client.subscribe(f"{p}/+/alarm", qos=1)
                if ctx.metrics.set_state("portal:telemetry", "ok"):
                    log.info("telemetry: subscribed to %s/+/telemetry and %s/+/alarm on %s",
                             p, p, cfg.broker)
                delay = RECONNECT_INITIAL_S
                async for msg in client.messages:
                    topic = str(msg.topic)
                    payload = msg.payload
                    if not isinstance(payload, bytes | bytearray):
                        payload = b"" if payload is None else str(payload).encode()
                    if len(payload) > cfg.max_message_bytes:  # refused before it is queued
                        _refuse(ctx, state, TelemetryRejected(
                            "oversize", f"{len(payload)} bytes; at most "
                            f"{cfg.max_message_bytes} read"), topic)
                        continue
                    try:
                        queue.put_nowait((topic, bytes(payload), ctx.now_ns()))
                    except asyncio.QueueFull:
                        ctx.metrics.inc("portal_telemetry_dropped")
        except aiomqtt.MqttError as e:
            ctx.metrics.inc("portal_telemetry_mqtt_failures")
            if ctx.metrics.set_state("portal:telemetry", "failing", str(e)):
                log.warning("telemetry: broker %s: %s (logged once until it recovers)",
                            cfg.broker, e)
        await asyncio.sleep(delay)
        delay = min(delay * 2, RECONNECT_MAX_S)


async def _store(ctx: PortalContext, cfg: TelemetrySection, state: _State,
                 queue: asyncio.Queue[tuple[str, bytes, int]]) -> None:
    db_down = False
    while True:
        batch = [await queue.get()]
        while len(batch) < BATCH and not queue.empty():
            batch.append(queue.get_nowait())
        try:
            await asyncio.to_thread(store_messages, ctx, cfg, batch, state)
            if db_down:
                db_down = False
                log.info("telemetry: the database answers again")
        except DB_DOWN as e:
            ctx.metrics.inc("portal_telemetry_dropped", len(batch))
            if not db_down:
                db_down = True
                log.warning("telemetry: the database does not answer (messages are dropped "
                            "until it does): %s", str(getattr(e, "orig", e))[:200])
            await asyncio.sleep(1.0)
        except Exception:  # a bug: keep the worker alive, loudly
            ctx.metrics.inc("portal_telemetry_failures")
            log.exception("telemetry: storing %d messages failed", len(batch))


async def _run(ctx: PortalContext, cfg: TelemetrySection, stop: threading.Event) -> None:
    state = _State()
    queue: asyncio.Queue[tuple[str, bytes, int]] = asyncio.Queue(QUEUE)
    tasks = [asyncio.create_task(_subscribe(ctx, cfg, state, queue), name="telemetry:mqtt"),
             asyncio.create_task(_store(ctx, cfg, state, queue), name="telemetry:store")]
    try:
        while not stop.is_set() and not any(t.done() for t in tasks):
            await asyncio.sleep(0.1)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def telemetry_worker(ctx: PortalContext, stop: threading.Event) -> None:
    """The worker (``mrv-portal run`` starts it): with ``ui.telemetry`` configured, keep the
    gateways' live telemetry and alarms until ``stop``; without, return at once."""
    cfg = ctx.config.ui.telemetry
    if cfg is None:
        return
    while not stop.is_set():
        try:
            asyncio.run(_run(ctx, cfg, stop))
        except Exception:  # a bug: start over, loudly
            ctx.metrics.inc("portal_telemetry_failures")
            log.exception("telemetry worker failed; restarting")
            stop.wait(1.0)
