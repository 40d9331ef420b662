"""Time is injected: the drivers take the clock they read (``now_ns`` for timestamps,
``monotonic`` for intervals), with the system clocks as defaults. Each test gives a fake clock,
far from the real one, and checks that what the component produced carries the fake time."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiomqtt
import pytest

from config import ModbusTcpDevice
from config._schema import Dlt645Bus, MqttDevice
from drivers._errors import DeviceUnreachable
from drivers._polling import LogLimiter, PointInfo, PollLoop, StaleWatch
from drivers.dlt645._io import Dlt645BusPoller
from drivers.modbus._io import ModbusTcpPoller
from drivers.mqtt._source import MqttSource, _Acks
from gateway import Quality, Reading
from ledger_client import Outbox
from ledger_client._signing import Signer
from mrv_core._metrics import Metrics
from simulator import Dlt645Line, Dlt645SimMeter, ModbusPlant, plant_devices

from .support import Collector, until

FAKE_EPOCH_NS = 946_684_800_000_000_000  # 2000-01-01: no real clock of this test run says that


class FakeNs:
    """A wall clock that moves only when asked to; remembers every value it handed out."""

    def __init__(self, start: int = FAKE_EPOCH_NS, step: int = 1_000) -> None:
        self.t = start
        self.step = step
        self.issued: list[int] = []

    def __call__(self) -> int:
        self.t += self.step
        self.issued.append(self.t)
        return self.t


class FakeMono:
    def __init__(self) -> None:
        self.t = 5_000.0

    def __call__(self) -> float:
        return self.t


async def _run_until(run: Any, cond: Any) -> None:
    task = asyncio.create_task(run())
    try:
        await until(cond)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_modbus_readings_are_stamped_by_the_injected_clock(plant: ModbusPlant) -> None:
    dev = ModbusTcpDevice.model_validate(plant_devices(plant.port, interval_s=0.05)[0])
    sink, clock = Collector(), FakeNs()
    p = ModbusTcpPoller(dev, sink, Metrics(), now_ns=clock)
    await _run_until(p.run, lambda: len(sink.readings) >= 6)
    assert all(r.quality == 0 for r in sink.readings)
    assert {r.ts_ns for r in sink.readings} <= set(clock.issued)


async def test_poll_loop_gap_readings_are_stamped_by_the_injected_clock() -> None:
    async def attempt() -> list[Reading]:
        raise DeviceUnreachable("meter", "no answer")

    opts = SimpleNamespace(interval_s=0.01, breaker_failures=100, backoff_initial_s=1.0,
                           backoff_max_s=1.0)
    sink, clock = Collector(), FakeNs()
    loop = PollLoop("meter", "test:meter", [PointInfo("p", "kW")], opts, sink, Metrics(),
                    logging.getLogger("test"), now_ns=clock)
    await _run_until(lambda: loop.run(attempt), lambda: len(sink.readings) >= 3)
    assert all(math.isnan(r.value) and r.quality & Quality.COMM_FAULT for r in sink.readings)
    assert [r.ts_ns for r in sink.readings] == clock.issued[:len(sink.readings)]


async def test_stale_watch_measures_silence_on_the_injected_clocks() -> None:
    """A point silent for 10 minutes of the injected monotonic clock is stale at the watch's
    first look, although only a fraction of a second really passed."""
    sink, wall, mono = Collector(), FakeNs(), FakeMono()
    watch = StaleWatch([PointInfo("a", "kW"), PointInfo("b", "kW")], 600.0, "test:push", sink,
                       Metrics(), now_ns=wall, monotonic=mono)
    mono.t += 30.0
    watch.seen("b")  # b spoke 30 s (injected) after the start; a never did
    assert watch.last == {"a": 5_000.0, "b": 5_030.0}
    mono.t += 600.0  # a: silent 630 s, b: 600 s
    await _run_until(watch.run, lambda: len(sink.readings) >= 2)
    assert sorted(r.point_id for r in sink.readings[:2]) == ["a", "b"]
    assert {r.ts_ns for r in sink.readings} <= set(wall.issued)


def test_log_limiter_counts_its_interval_on_the_injected_clock(
        caplog: pytest.LogCaptureFixture) -> None:
    mono = FakeMono()
    noise = LogLimiter(logging.getLogger("test.noise"), every_s=10.0, monotonic=mono)
    with caplog.at_level(logging.WARNING, "test.noise"):
        noise.warning("k", "bad frame")
        noise.warning("k", "bad frame")  # same instant: counted, not logged
        mono.t += 10.0
        noise.warning("k", "bad frame")
    assert [r.getMessage() for r in caplog.records] == [
        "bad frame", "bad frame (and 1 more since the last report)"]


class _NoAck:
    def ack(self, mid: int, qos: int) -> None:
        raise AssertionError("QoS 0 is not acknowledged")


async def test_mqtt_reading_without_a_timestamp_gets_the_injected_arrival_time() -> None:
    dev = MqttDevice.model_validate({
        "driver": "mqtt", "name": "s", "host": "127.0.0.1", "port": 1, "client_id": "c",
        "points": [{"id": "boiler.t", "topic": "plant/boiler/temp", "value": "data.t",
                    "unit": "degC"}]})
    sink, clock = Collector(), FakeNs()
    src = MqttSource(dev, sink, Metrics(), now_ns=clock)
    msg = aiomqtt.Message("plant/boiler/temp", json.dumps({"data": {"t": 81.5}}).encode(),
                          qos=0, retain=False, mid=1, properties=None)
    await src._handle(msg, _Acks(_NoAck()))
    (r,) = sink.readings
    assert (r.point_id, r.value, r.ts_ns) == ("boiler.t", 81.5, clock.issued[-1])


async def test_dlt645_readings_are_stamped_by_the_injected_clock() -> None:
    address = "000000123456"
    line = Dlt645Line([Dlt645SimMeter(address=address)])
    await line.start()
    try:
        bus = Dlt645Bus.model_validate({
            "driver": "dlt645", "name": "rs485", "port": line.path, "inter_frame_s": 0.005,
            "meters": [{"name": "m", "address": address, "interval_s": 0.1, "timeout_s": 0.3,
                        "retries": 0, "points": [{"id": "m.energy", "di": "00000000"}]}]})
        sink, clock = Collector(), FakeNs()
        p = Dlt645BusPoller(bus, sink, Metrics(), now_ns=clock)
        await _run_until(p.run, lambda: len(sink.of("m.energy", 0)) >= 2)
    finally:
        await line.stop()
    assert {r.ts_ns for r in sink.readings} <= set(clock.issued)


async def test_outbox_bookkeeping_times_come_from_the_injected_clock(tmp_path: Path) -> None:
    clock = FakeNs()
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw", now_ns=clock)
    try:
        await ob.append([Reading(point_id="p", ts_ns=1_000 + i, value=1.0, unit="kW", source="t")
                         for i in range(4)])
        b = await ob.make_batch(10, Signer(b"\x01" * 32).sign)
        assert b is not None
        created = clock.issued[-1]
        await ob.mark_submitted(b.seq, b"\x01" * 32, b"raw", 0)
        await ob.mark_confirmed(b.seq, 42)
        confirmed = clock.issued[-1]
    finally:
        await ob.close()
    with sqlite3.connect(tmp_path / "o.sqlite") as db:
        row = db.execute("SELECT created_ns, confirmed_ns FROM batches WHERE seq = ?",
                         (b.seq,)).fetchone()
    assert row == (created, confirmed)
    assert created < confirmed
