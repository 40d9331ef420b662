"""The portal's live telemetry (``portal/_telemetry.py``): the pure check of one message with
plain values, a property test of it, and the worker against a real Mosquitto with the data
set's gateways registered in the portal's ``gateways`` table. Messages are built by the
gateway's own code (``control.telemetry_json``) and signed as the outbox signs records."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiomqtt
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control import telemetry_json
from ledger_client._format import record_leaf, record_signing_bytes
from ledger_client._signing import Signer
from mrv_core import Reading
from portal._chain_tables import gateways
from portal._config import TelemetrySection, UiSection
from portal._telemetry import (
    TelemetryRejected,
    alarm_row,
    store_messages,
    telemetry_rows,
    telemetry_worker,
)
from portal._ui_tables import gateway_alarms, telemetry_live
from simulator import Mosquitto
from tests.portal_data import Dataset, load, make_context
from tests.support import until

T0 = 1_740_787_200_000_000_000  # 2025-03-01 00:00 UTC
GW_A, GW_B = "plant-a-gw1", "plant-b-gw1"


def readings(gw: str, first_seq: int, n: int, point: str = "stack.so2") -> list[Reading]:
    return [Reading(point_id=point, ts_ns=T0 + (first_seq + i) * 10**9, value=30.0 + i,
                    unit="mg/m3", source="modbus:cems", quality=0, seq=first_seq + i,
                    gateway_id=gw) for i in range(n)]


def signed(gw: str, signer: Signer, rs: list[Reading]) -> bytes:
    """The gateway's telemetry message with the record signatures the outbox stores."""
    return telemetry_json(gw, rs, [signer.sign(record_signing_bytes(record_leaf(r)))
                                   for r in rs])


# -- the pure check ---------------------------------------------------------------------------

_SIGNER = Signer(b"\x05" * 32)
_KEYS = {GW_A: _SIGNER.public_key}
_GOOD = signed(GW_A, _SIGNER, readings(GW_A, 1, 3))


def rows_of(payload: bytes, topic: str = f"mrv/{GW_A}/telemetry",
            keys: dict[str, bytes] | None = None, max_bytes: int = 4096) -> list[dict[str, Any]]:
    return telemetry_rows(topic, payload, _KEYS if keys is None else keys, prefix="mrv",
                          max_bytes=max_bytes, received_ns=7)


def test_signed_readings_verify_and_a_changed_one_does_not() -> None:
    rows = rows_of(_GOOD)
    assert [(r["seq"], r["point"], r["value"], r["unit"], r["signed"], r["verified"])
            for r in rows] == [(1, "stack.so2", 30.0, "mg/m3", True, True),
                               (2, "stack.so2", 31.0, "mg/m3", True, True),
                               (3, "stack.so2", 32.0, "mg/m3", True, True)]
    assert {r["gateway_id"] for r in rows} == {GW_A} and {r["received_ns"] for r in rows} == {7}
    doc = json.loads(_GOOD)
    doc["readings"][1]["value"] = 99.0
    assert [r["verified"] for r in rows_of(json.dumps(doc).encode())] == [True, False, True]
    # another key (a gateway's key replaced on the way) verifies nothing
    assert not any(r["verified"] for r in rows_of(_GOOD, keys={GW_A: Signer(b"\x06" * 32)
                                                                  .public_key}))


def test_unsigned_readings_are_kept_as_unsigned() -> None:
    rows = rows_of(telemetry_json(GW_A, readings(GW_A, 1, 2)))
    assert [(r["signed"], r["verified"]) for r in rows] == [(False, False), (False, False)]


def test_nan_is_stored_as_null() -> None:
    rs = [Reading(point_id="p", ts_ns=T0, value=math.nan, unit="", source="s", quality=4,
                  seq=1, gateway_id=GW_A)]
    (row,) = rows_of(signed(GW_A, _SIGNER, rs))
    assert row["value"] is None and row["quality"] == 4 and row["verified"] is True


@pytest.mark.parametrize(("topic", "payload", "kind"), [
    (f"mrv/{GW_A}/telemetry", b"x" * 4097, "oversize"),
    (f"mrv/{GW_B}/telemetry", telemetry_json(GW_B, readings(GW_B, 1, 1)), "unknown-gateway"),
    (f"mrv/{GW_A}/telemetry", telemetry_json(GW_B, readings(GW_B, 1, 1)), "gateway-mismatch"),
    ("other/plant-a-gw1/telemetry", _GOOD, "topic"),
    ("mrv//telemetry", _GOOD, "topic"),
    (f"mrv/{GW_A}/telemetry", b'{"gateway":"plant-a-gw1"', "malformed"),
    (f"mrv/{GW_A}/telemetry", b'{"gateway":"plant-a-gw1","readings":[1]}', "malformed"),
    (f"mrv/{GW_A}/telemetry", _GOOD.replace(b'"seq":1', b'"seq":true'), "malformed"),
    (f"mrv/{GW_A}/telemetry", _GOOD.replace(b'"seq":1', b'"seq":-1'), "malformed"),
    (f"mrv/{GW_A}/telemetry", b'[[[[[[[[]]]]]]]]', "malformed"),
])
def test_refusals(topic: str, payload: bytes, kind: str) -> None:
    with pytest.raises(TelemetryRejected) as e:
        rows_of(payload, topic)
    assert e.value.kind == kind


def test_alarm_rows() -> None:
    msg = {"gateway": GW_A, "rule": "leak", "state": "raised", "point": "plc.methane",
           "value": 2.5, "unit": "%LEL", "level": "critical", "ts_ms": 1_740_787_200_000}
    row = alarm_row(f"mrv/{GW_A}/alarm", json.dumps(msg).encode(), _KEYS, prefix="mrv",
                    max_bytes=4096, received_ns=9)
    assert row == {"gateway_id": GW_A, "rule": "leak", "point": "plc.methane",
                   "state": "raised", "level": "critical", "value": 2.5, "unit": "%LEL",
                   "ts_ms": 1_740_787_200_000, "received_ns": 9}
    for bad, kind in (({**msg, "state": "on"}, "malformed"),
                      ({**msg, "gateway": GW_B}, "gateway-mismatch")):
        with pytest.raises(TelemetryRejected) as e:
            alarm_row(f"mrv/{GW_A}/alarm", json.dumps(bad).encode(), _KEYS, prefix="mrv",
                      max_bytes=4096, received_ns=9)
        assert e.value.kind == kind


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)
_BASE = json.loads(_GOOD)
_FIELDS = ["seq", "point", "ts_ns", "value", "unit", "quality", "source", "sig"]


#: a replacement of the field's own type (a change a verifier must catch), per field
_PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "seq": st.integers(0, 2**63 - 1), "ts_ns": st.integers(0, 2**63 - 1),
    "quality": st.integers(0, 2**31 - 1), "value": st.floats(allow_nan=False) | st.none(),
    "point": st.text(min_size=1, max_size=20), "unit": st.text(max_size=8),
    "source": st.text(max_size=12),
    "sig": st.binary(min_size=64, max_size=64).map(lambda b: "0x" + b.hex())}


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    d = json.loads(json.dumps(_BASE))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["gateway", "readings", "reading", "reading", "field"]))
        if where in ("reading", "field"):
            r = d["readings"][draw(st.integers(0, 2))] if isinstance(d.get("readings"), list) \
                and len(d["readings"]) == 3 else None
            if isinstance(r, dict):
                f = draw(st.sampled_from(_FIELDS))
                if where == "field":
                    r[f] = draw(_PLAUSIBLE[f])
                elif draw(st.booleans()):
                    r.pop(f, None)
                else:
                    r[f] = draw(json_values)
        elif draw(st.booleans()):
            d.pop(where, None)
        else:
            d[where] = draw(json_values)
    return json.dumps(d).encode()


@st.composite
def cut(draw: st.DrawFn) -> bytes:
    i = draw(st.integers(0, len(_GOOD) - 1))
    if draw(st.booleans()):
        return _GOOD[:i]
    return _GOOD[:i] + bytes([draw(st.integers(0, 255))]) + _GOOD[i + 1:]


payloads = st.one_of(mutated(), cut(), st.binary(max_size=200),
                     json_values.map(lambda v: json.dumps(v).encode()),
                     st.integers(1, 50).map(lambda n: b"[" * n + b"]" * n))
topics = st.sampled_from([f"mrv/{GW_A}/telemetry", f"mrv/{GW_A}/alarm", f"mrv/{GW_B}/telemetry",
                          "mrv/telemetry", "mrv/a/b/telemetry"]) | st.text(max_size=40)
_GENUINE = {(r["seq"], r["point"], r["ts_ns"], r["value"], r["unit"], r["quality"])
            for r in rows_of(_GOOD)}
_GENUINE_FIELDS = [{k: v for k, v in it.items() if k != "sig"} for it in _BASE["readings"]]


@settings(max_examples=1500, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(topic=topics, payload=payloads)
def test_the_check_never_raises_anything_else_and_verifies_only_genuine_readings(
        topic: str, payload: bytes) -> None:
    for check in (telemetry_rows, alarm_row):
        try:
            out = check(topic, payload, _KEYS, prefix="mrv", max_bytes=4096,  # type: ignore[operator]
                        received_ns=1)
        except TelemetryRejected as e:
            assert e.kind in ("oversize", "topic", "unknown-gateway", "gateway-mismatch",
                              "malformed")
            continue
        if check is telemetry_rows:
            sent = json.loads(payload)["readings"]
            for r, it in zip(out, sent, strict=True):
                if r["verified"]:  # a verified reading is one the gateway signed, unchanged
                    assert r["signed"] and (r["seq"], r["point"], r["ts_ns"], r["value"],
                                            r["unit"], r["quality"]) in _GENUINE
                    assert {k: v for k, v in it.items() if k != "sig"} in _GENUINE_FIELDS


# -- the worker against a real broker ---------------------------------------------------------

@dataclass
class Live:
    ctx: Any
    ds: Dataset
    broker: Mosquitto

    def count(self, *where: Any) -> int:
        with self.ctx.engine.connect() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(telemetry_live)
                                 .where(*where)).scalar_one())

    def rows(self, gw: str) -> list[Any]:
        with self.ctx.engine.connect() as c:
            return list(c.execute(sa.select(telemetry_live).where(
                telemetry_live.c.gateway_id == gw).order_by(telemetry_live.c.id)))

    def counter(self, name: str) -> int:
        return int(self.ctx.metrics.counters.get(name, 0))

    def connected(self) -> bool:
        return self.ctx.metrics.component("portal:telemetry").state == "ok"

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1,
                      retain: bool = False) -> None:
        async with aiomqtt.Client("127.0.0.1", self.broker.port) as c:
            await c.publish(topic, payload, qos=qos, retain=retain)


def start_live(db_url: str, broker: Mosquitto, keep: int = 10) -> tuple[Live, Any]:
    ctx = make_context(db_url)
    ctx.config = ctx.config.model_copy(update={"ui": UiSection(telemetry=TelemetrySection(
        broker=f"127.0.0.1:{broker.port}", keep_per_gateway=keep, max_message_bytes=4096))})
    ds = load(ctx.engine)
    stop = threading.Event()
    t = threading.Thread(target=telemetry_worker, args=(ctx, stop), daemon=True)
    t.start()

    def close() -> None:
        stop.set()
        t.join(20)
        assert not t.is_alive()
        ctx.engine.dispose()

    return Live(ctx, ds, broker), close


@pytest.fixture
async def live(tmp_path: Any, mosquitto: Mosquitto) -> AsyncIterator[Live]:
    lv, close = start_live(f"sqlite:///{tmp_path / 'portal.db'}", mosquitto)
    try:
        await until(lv.connected, 15)
        yield lv
    finally:
        close()


async def test_worker_stores_verified_unverified_and_unsigned(db_url: str,
                                                              mosquitto: Mosquitto) -> None:
    lv, close = start_live(db_url, mosquitto, keep=10)
    try:
        await until(lv.connected, 15)
        signer = lv.ds.gws["a"].signer
        await lv.publish(f"mrv/{GW_A}/telemetry", signed(GW_A, signer, readings(GW_A, 1, 3)))
        doc = json.loads(signed(GW_A, signer, readings(GW_A, 4, 2)))
        doc["readings"][0]["value"] = 99.0  # changed on the way: seq 4 must not verify
        await lv.publish(f"mrv/{GW_A}/telemetry", json.dumps(doc).encode())
        await lv.publish(f"mrv/{GW_A}/telemetry", telemetry_json(GW_A, readings(GW_A, 6, 2)))
        await until(lambda: lv.count() == 7, 15)
        got = [(r.seq, r.value, r.signed, r.verified) for r in lv.rows(GW_A)]
        assert got == [(1, 30.0, True, True), (2, 31.0, True, True), (3, 32.0, True, True),
                       (4, 99.0, True, False), (5, 31.0, True, True),
                       (6, 30.0, False, False), (7, 31.0, False, False)]
        assert lv.counter("portal_telemetry_verified") == 4
        # retention: 25 more readings in 3 messages keep the 10 newest
        for first, n in ((8, 10), (18, 10), (28, 5)):
            await lv.publish(f"mrv/{GW_A}/telemetry",
                             signed(GW_A, signer, readings(GW_A, first, n)))
        await until(lambda: lv.counter("portal_telemetry_readings") == 32, 15)
        await until(lambda: [r.seq for r in lv.rows(GW_A)] == list(range(23, 33)), 15)
    finally:
        close()


async def test_unknown_inactive_oversize_and_mismatched_are_refused(live: Live) -> None:
    with live.ctx.engine.begin() as c:
        c.execute(sa.update(gateways).where(gateways.c.gateway_id == "plant-d-gw1")
                  .values(active=False))
    a = live.ds.gws["a"].signer
    await live.publish("mrv/plant-x-gw9/telemetry",
                       signed("plant-x-gw9", a, readings("plant-x-gw9", 1, 2)))
    await live.publish("mrv/plant-d-gw1/telemetry", signed(
        "plant-d-gw1", live.ds.gws["d"].signer, readings("plant-d-gw1", 1, 2)))
    await live.publish(f"mrv/{GW_A}/telemetry", b'{"gateway":"plant-a-gw1","readings":["'
                       + b"x" * 5000 + b'"]}')
    await live.publish(f"mrv/{GW_B}/telemetry", signed(GW_A, a, readings(GW_A, 1, 2)))
    await live.publish(f"mrv/{GW_A}/telemetry", b"not json")
    await live.publish(f"mrv/{GW_A}/telemetry", b'{"gateway":"plant-a-gw1","readings":{}}')
    await until(lambda: live.counter("portal_telemetry_rejected") == 6, 15)
    assert {k: live.counter(f"portal_telemetry_rejected_{k}") for k in
            ("unknown-gateway", "oversize", "gateway-mismatch", "malformed")} == {
        "unknown-gateway": 2, "oversize": 1, "gateway-mismatch": 1, "malformed": 2}
    # the worker is alive and nothing was stored of the refused ones
    await live.publish(f"mrv/{GW_A}/telemetry", signed(GW_A, a, readings(GW_A, 1, 1)))
    await until(lambda: live.count() == 1, 15)
    assert [r.verified for r in live.rows(GW_A)] == [True]


async def test_alarms_are_kept_at_their_newest_state(live: Live) -> None:
    def alarm(state: str, ts_ms: int, gw: str = GW_A) -> bytes:
        return json.dumps({"gateway": gw, "rule": "leak", "state": state,
                           "point": "plc.methane", "value": 2.5, "unit": "%LEL",
                           "level": "critical", "ts_ms": ts_ms}).encode()

    def states() -> list[tuple[str, str, int]]:
        with live.ctx.engine.connect() as c:
            return [(r.gateway_id, r.state, r.ts_ms) for r in c.execute(
                sa.select(gateway_alarms).order_by(gateway_alarms.c.gateway_id))]

    await live.publish(f"mrv/{GW_A}/alarm", alarm("raised", 1000), retain=True)
    await until(lambda: states() == [(GW_A, "raised", 1000)], 15)
    await live.publish(f"mrv/{GW_A}/alarm", alarm("cleared", 2000), retain=True)
    await until(lambda: states() == [(GW_A, "cleared", 2000)], 15)
    await live.publish(f"mrv/{GW_A}/alarm", alarm("raised", 1500))  # older: ignored
    await live.publish(f"mrv/{GW_B}/alarm", alarm("raised", 3000, gw=GW_A))  # mismatch
    await live.publish(f"mrv/{GW_B}/alarm", alarm("raised", 3000, gw=GW_B))
    await until(lambda: states() == [(GW_A, "cleared", 2000), (GW_B, "raised", 3000)], 15)
    assert live.counter("portal_telemetry_rejected_gateway-mismatch") == 1


async def test_the_worker_reconnects_after_a_broker_restart(live: Live) -> None:
    a = live.ds.gws["a"].signer
    await live.publish(f"mrv/{GW_A}/telemetry", signed(GW_A, a, readings(GW_A, 1, 1)))
    await until(lambda: live.count() == 1, 15)
    live.broker.restart()
    await until(lambda: live.counter("portal_telemetry_mqtt_failures") >= 1, 15)
    await until(live.connected, 30)
    await live.publish(f"mrv/{GW_A}/telemetry", signed(GW_A, a, readings(GW_A, 2, 1)))
    await until(lambda: live.count() == 2, 15)
    assert [(r.seq, r.verified) for r in live.rows(GW_A)] == [(1, True), (2, True)]


def test_one_store_step_prunes_once_per_gateway(tmp_path: Any) -> None:
    """Many messages in one step: all checked, the table cut to ``keep`` per gateway once."""
    ctx = make_context(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        ds = load(ctx.engine)
        cfg = TelemetrySection(broker="127.0.0.1:1", keep_per_gateway=10)
        a, b = ds.gws["a"].signer, ds.gws["b"].signer
        msgs = [(f"mrv/{GW_A}/telemetry", signed(GW_A, a, readings(GW_A, 1 + 4 * i, 4)), i)
                for i in range(5)]
        msgs += [(f"mrv/{GW_B}/telemetry", signed(GW_B, b, readings(GW_B, 1, 3)), 9),
                 (f"mrv/{GW_B}/telemetry", signed(GW_B, a, readings(GW_B, 4, 1)), 9)]
        assert store_messages(ctx, cfg, msgs) == 24
        with ctx.engine.connect() as c:
            got = c.execute(sa.select(telemetry_live.c.gateway_id, telemetry_live.c.seq,
                                      telemetry_live.c.verified)
                            .order_by(telemetry_live.c.id)).all()
        assert [s for g, s, _ in got if g == GW_A] == list(range(11, 21))
        assert [(s, v) for g, s, v in got if g == GW_B] == [(1, True), (2, True), (3, True),
                                                            (4, False)]
        assert ctx.metrics.counters["portal_telemetry_pruned"] == 10
    finally:
        ctx.engine.dispose()


def test_mrv_portal_run_starts_the_worker_and_it_idles_unconfigured(tmp_path: Any) -> None:
    from portal._runtime import workers

    assert telemetry_worker in workers()
    ctx = make_context(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        assert ctx.config.ui.telemetry is None
        t = threading.Thread(target=telemetry_worker, args=(ctx, threading.Event()))
        t.start()
        t.join(5)  # returns at once: no broker to read, nothing to stop
        assert not t.is_alive()
    finally:
        ctx.engine.dispose()
