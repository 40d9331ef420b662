"""MQTT sensors: payload mapping (pure), and the source against a real Mosquitto: readings,
malformed payloads, a broker restart, and acknowledgement only after commit."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from typing import Any

import aiomqtt
import pytest

from config._schema import MqttDevice, MqttPoint
from drivers import Acknowledging, ack_sink_of
from drivers.mqtt._payload import (
    PayloadError,
    compile_points,
    lookup,
    readings_from,
    split_path,
    to_ts_ns,
    topic_matches,
)
from drivers.mqtt._source import MqttSource
from gateway import Quality, Reading
from mrv_core._metrics import Metrics
from simulator import Mosquitto, MqttSensorGroup, SimSensor

from .support import Collector
from .support import until as _until

# -- pure mapping -------------------------------------------------------------------------------


@pytest.mark.parametrize(("topic", "flt", "ok"), [
    ("plant/stack1/co2", "plant/stack1/co2", True),
    ("plant/stack1/co2", "plant/+/co2", True),
    ("plant/stack1/co2", "plant/#", True),
    ("plant", "plant/#", True),
    ("plant/stack1/co2", "plant/+", False),
    ("plant/stack1", "plant/+/co2", False),
    ("plant/stack1/o2", "plant/+/co2", False),
    ("$SYS/broker/uptime", "#", False),
    ("$SYS/broker/uptime", "$SYS/#", True),
    ("a//b", "a/+/b", True),
])
def test_topic_matching(topic: str, flt: str, ok: bool) -> None:
    assert topic_matches(topic, flt) is ok


def test_paths_and_values() -> None:
    doc = {"data": {"co2": {"value": 412.5}, "list": [{"v": 1}, {"v": True}]}}
    assert lookup(doc, split_path("data.co2.value")) == 412.5
    assert lookup(doc, split_path("data.list.1.v")) is True
    assert lookup(7, split_path("$")) == 7
    from drivers.mqtt._payload import _MISSING
    assert lookup(doc, split_path("data.co2.missing")) is _MISSING
    assert lookup(doc, split_path("data.list.9.v")) is _MISSING


@pytest.mark.parametrize(("raw", "unit", "ns"), [
    (1_700_000_000, "auto", 1_700_000_000 * 10**9),
    (1_700_000_000_123, "auto", 1_700_000_000_123 * 10**6),
    (1_700_000_000_123_456, "auto", 1_700_000_000_123_456 * 10**3),
    (1_700_000_000_123_456_789, "auto", 1_700_000_000_123_456_789),
    (1_700_000_000.5, "s", 1_700_000_000_500_000_000),
    ("1700000000", "auto", 1_700_000_000 * 10**9),
    ("2023-11-14T22:13:20Z", "auto", 1_700_000_000 * 10**9),
    ("2023-11-15T06:13:20.25+08:00", "iso8601", 1_700_000_000_250_000_000),
])
def test_timestamps(raw: object, unit: str, ns: int) -> None:
    assert to_ts_ns(raw, unit, "t") == ns


@pytest.mark.parametrize(("raw", "unit", "fragment"), [
    ("2023-11-14T22:13:20", "auto", "UTC offset"),
    ("yesterday", "auto", "expected an ISO 8601 time"),
    (1_700_000_000, "iso8601", "expected an ISO 8601 string"),
    (-5, "auto", "positive epoch"),
    ({"a": 1}, "ms", "expected an epoch number"),
])
def test_bad_timestamps_name_what_was_expected(raw: object, unit: str, fragment: str) -> None:
    with pytest.raises(PayloadError, match=fragment):
        to_ts_ns(raw, unit, "t")


def _points(**kw: Any) -> list[MqttPoint]:
    base: dict[str, Any] = {"id": "s.co2", "topic": "plant/+/co2", "value": "data.co2",
                            "timestamp": "ts", "unit": "ppm"}
    base.update(kw)
    return [MqttPoint.model_validate(base),
            MqttPoint.model_validate({"id": "s.t", "topic": "plant/#", "value": "data.t",
                                      "unit": "degC"})]


def test_readings_from_a_message() -> None:
    maps = compile_points(_points())
    payload = json.dumps({"ts": 1_700_000_000_000, "data": {"co2": "415.5", "t": 21}}).encode()
    rs, problems = readings_from("plant/s1/co2", payload, maps, source="mqtt:x", now_ns=42,
                                 max_bytes=1000)
    assert problems == []
    assert [(r.point_id, r.value, r.ts_ns, r.unit) for r in rs] == [
        ("s.co2", 415.5, 1_700_000_000 * 10**9, "ppm"), ("s.t", 21.0, 42, "degC")]
    # a topic no point listens to: nothing, and no problem
    assert readings_from("other/x", b"garbage", maps, source="x", now_ns=1, max_bytes=10) == ([], [])


@pytest.mark.parametrize(("payload", "fragment"), [
    (b"{not json", "expected a JSON payload"),
    (b'{"ts": 1700000000000, "data": {"co2": "n/a", "t": 1}}', "expected a number"),
    (b'{"ts": 1700000000000, "data": {"t": 1}}', "no value at 'data.co2'"),
    (b'{"data": {"co2": 1, "t": 1}}', "no timestamp at 'ts'"),
    (b'{"ts": 1700000000000, "data": {"co2": null, "t": 1}}', "expected a number, got NoneType"),
    (b"x" * 2000, "expected at most 1000"),
])
def test_malformed_payloads_are_explained(payload: bytes, fragment: str) -> None:
    maps = compile_points(_points())
    try:
        _, problems = readings_from("plant/s1/co2", payload, maps, source="x", now_ns=1,
                                    max_bytes=1000)
    except PayloadError as e:
        problems = [str(e)]
    assert any(fragment in p for p in problems), problems


def test_an_acknowledging_sink_is_typed_not_detected() -> None:
    async def plain(rs: list[Reading]) -> None: ...

    async def acking(rs: list[Reading], on_commit: Callable[[], None] | None = None) -> None: ...

    # a sink is acknowledging because it is wrapped as one, not because of its signature
    assert ack_sink_of(plain) is None and ack_sink_of(acking) is None
    assert ack_sink_of(Acknowledging(acking)) is acking


# -- against Mosquitto -----------------------------------------------------------------------




def mqtt_device(port: int, **kw: Any) -> MqttDevice:
    cfg: dict[str, Any] = {
        "driver": "mqtt", "name": "stack-sensors", "host": "127.0.0.1", "port": port,
        "client_id": "gw-test-stack", "backoff_initial_s": 0.1, "backoff_max_s": 0.5,
        "points": [
            {"id": "stack.co2", "topic": "plant/+/cems", "value": "data.co2", "timestamp": "ts",
             "unit": "%"},
            {"id": "stack.o2", "topic": "plant/+/cems", "value": "data.o2", "timestamp": "ts",
             "unit": "%"},
            {"id": "boiler.t", "topic": "plant/boiler/temp", "value": "data.t", "unit": "degC"},
        ],
    }
    cfg.update(kw)
    return MqttDevice.model_validate(cfg)




SENSORS = [SimSensor("plant/stack1/cems", {"co2": (11.0, 0.2), "o2": (6.0, 0.1)}),
           SimSensor("plant/boiler/temp", {"t": (180.0, 1.0)})]


async def test_readings_and_malformed_payloads(mosquitto: Mosquitto,
                                               caplog: pytest.LogCaptureFixture) -> None:
    sink, m = Collector(), Metrics()
    src = MqttSource(mqtt_device(mosquitto.port), sink, m)
    task = asyncio.create_task(src.run())
    await until(lambda: m.component("device:stack-sensors").state == "ok")
    pub = await MqttSensorGroup("127.0.0.1", mosquitto.port, SENSORS, interval_s=0.05,
                                malformed_every=3).start()
    try:
        await until(lambda: pub.published >= 60 and src.messages >= 60)
    finally:
        await pub.stop()
        await until(lambda: src.messages == pub.published, 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()  # a malformed payload never crashed the subscriber
    co2 = sink.of("stack.co2")
    assert co2 and all(r.quality == 0 and 9 < r.value < 13 for r in co2)
    assert all(abs(r.ts_ns - time.time_ns()) < 60e9 and r.ts_ns % 1_000_000 == 0 for r in co2)
    # every good message became its readings, every malformed one was counted and skipped
    for topic, points in (("plant/stack1/cems", ("stack.co2", "stack.o2")),
                          ("plant/boiler/temp", ("boiler.t",))):
        bad = pub.malformed_per_topic[topic]
        assert bad > 0
        for p in points:
            assert len(sink.of(p)) == pub.per_topic[topic] - bad
    assert m.counters["mqtt_malformed"] >= pub.malformed_sent
    assert src.messages == pub.published
    assert any("malformed message skipped" in r.getMessage() for r in caplog.records)


async def test_broker_restart_is_a_flagged_gap_then_recovery(mosquitto: Mosquitto) -> None:
    sink, m = Collector(), Metrics()
    src = MqttSource(mqtt_device(mosquitto.port, stale_after_s=0.4), sink, m)
    task = asyncio.create_task(src.run())
    pub = await MqttSensorGroup("127.0.0.1", mosquitto.port, SENSORS, interval_s=0.05).start()
    try:
        await until(lambda: len(sink.of("boiler.t", 0)) >= 5)
        await asyncio.to_thread(mosquitto.stop)
        await until(lambda: m.component("device:stack-sensors").state == "failing")
        await until(lambda: len(sink.of("boiler.t", int(Quality.COMM_FAULT))) >= 2)
        assert all(math.isnan(r.value) for r in sink.of("boiler.t", int(Quality.COMM_FAULT)))
        good_before = len(sink.of("boiler.t", 0))
        await asyncio.to_thread(mosquitto.start)
        await until(lambda: m.component("device:stack-sensors").state == "ok")
        await until(lambda: len(sink.of("boiler.t", 0)) >= good_before + 5)
    finally:
        await pub.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert src.connects >= 2 and m.counters["mqtt_disconnects"] >= 1
    assert sink.readings[-1].quality == 0 or sink.readings[-1].point_id != "boiler.t"


class HoldingSink:
    """Commits nothing until told: keeps the on_commit callbacks."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.pending: list[Callable[[], None]] = []

    async def __call__(self, rs: list[Reading],
                       on_commit: Callable[[], None] | None = None) -> None:
        self.readings.extend(rs)
        if on_commit is not None:
            self.pending.append(on_commit)


async def _publish(port: int, values: list[int]) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="pub-acks") as c:
        for v in values:
            await c.publish("plant/boiler/temp", json.dumps({"data": {"t": v}}), qos=1)


async def test_messages_are_acknowledged_only_after_commit(mosquitto: Mosquitto) -> None:
    dev = mqtt_device(mosquitto.port)
    first = HoldingSink()
    src = MqttSource(dev, Acknowledging(first), Metrics())
    task = asyncio.create_task(src.run())
    m = src.metrics
    # subscribed: the source marks its device "ok" once the broker's SUBACK is in
    await until(lambda: src.connects == 1 and src.acks is not None
                and m.components.get(src.component) is not None
                and m.components[src.component].state == "ok")
    await _publish(mosquitto.port, [1, 2, 3, 4])
    await until(lambda: len(first.readings) == 4)
    first.pending[0]()  # only the first reading is committed; 2-4 are not
    first.pending[2]()  # out of order: held back until 2 is done too (PUBACKs stay in order)
    assert src.acks is not None and src.acks.sent == 1
    task.cancel()  # the gateway goes away before committing the rest
    await asyncio.gather(task, return_exceptions=True)
    # Reconnecting within a millisecond can make Mosquitto take the session over before it has
    # read the old connection's last PUBACKs; a real restart takes longer than this pause.
    await asyncio.sleep(1.0)  # the scenario: the gateway is down for a moment (see above)

    second = HoldingSink()
    src2 = MqttSource(dev, Acknowledging(second), Metrics())  # same client id: the broker kept the session
    task2 = asyncio.create_task(src2.run())
    try:
        await until(lambda: len(second.readings) >= 3)
        # A marker published now reaches the subscriber after every redelivery (the broker
        # delivers in order): once it is in, nothing else is still on its way.
        await _publish(mosquitto.port, [9])
        await until(lambda: 9.0 in [r.value for r in second.readings])
        assert sorted(r.value for r in second.readings) == [2.0, 3.0, 4.0, 9.0]  # redelivered
        for cb in second.pending:
            cb()
        assert src2.acks is not None and src2.acks.sent == 4
    finally:
        task2.cancel()
        await asyncio.gather(task2, return_exceptions=True)
    await asyncio.sleep(1.0)  # as above

    third = HoldingSink()
    src3 = MqttSource(dev, Acknowledging(third), Metrics())
    task3 = asyncio.create_task(src3.run())
    try:
        await until(lambda: src3.connects == 1)
        await _publish(mosquitto.port, [5])
        await until(lambda: len(third.readings) >= 1)
        await _publish(mosquitto.port, [6])  # a marker, as above
        await until(lambda: 6.0 in [r.value for r in third.readings])
        assert [r.value for r in third.readings] == [5.0, 6.0]  # 2-4 were acked: not again
    finally:
        task3.cancel()
        await asyncio.gather(task3, return_exceptions=True)


async def test_the_daemon_pipeline_acknowledges_only_after_the_outbox_commit() -> None:
    from gateway._daemon import Pipeline

    class SlowOutbox:
        def __init__(self) -> None:
            self.release = asyncio.Event()
            self.entered = asyncio.Event()
            self.rows: list[Reading] = []

        async def append_quarantining(self, rs: list[Reading], *, now_ns: int,
                                      off_loop: bool | None = None
                                      ) -> tuple[list[Reading], None, list[object]]:
            self.entered.set()
            await self.release.wait()
            self.rows += rs
            return rs, None, []

    class NoCleaning:
        def clean(self, rs: list[Reading], now_ns: int) -> list[Reading]:
            return rs

    outbox = SlowOutbox()
    pipe = Pipeline(outbox, NoCleaning(), Metrics(), 10, lambda n: None)  # type: ignore[arg-type]
    assert ack_sink_of(Acknowledging(pipe.submit)) is not None  # as the daemon hands it over
    acked: list[int] = []
    r = Reading(point_id="p", ts_ns=1, value=1.0, unit="1", source="t")
    writer = asyncio.create_task(pipe.run())
    try:
        await pipe.submit([r], on_commit=lambda: acked.append(1))
        await pipe.submit([r])
        await pipe.submit([r], on_commit=lambda: acked.append(3))
        await asyncio.wait_for(outbox.entered.wait(), 2)  # the writer is in the commit
        assert acked == [] and outbox.rows == []  # handed over, not committed: no ack yet
        outbox.release.set()
        await until(lambda: acked == [1, 3], 2)
        assert len(outbox.rows) == 3
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)


async def until(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    await _until(cond, timeout)


async def test_simulated_sensors_notice_a_lost_broker_between_publishes(
        mosquitto: Mosquitto) -> None:
    """The simulated sensor group sees its connection go at once, not at its next publish (the
    broker's error read, not left for asyncio to log when the group is stopped)."""
    pub = await MqttSensorGroup("127.0.0.1", mosquitto.port, SENSORS, interval_s=30).start()
    try:
        await until(lambda: pub.published == len(SENSORS))  # one round, then 30 s of quiet
        await asyncio.to_thread(mosquitto.stop)
        await until(lambda: pub.failures >= 1, 10)  # well before the next publish is due
        assert pub.published == len(SENSORS)
    finally:
        await pub.stop()
        await asyncio.to_thread(mosquitto.start)
