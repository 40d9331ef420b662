"""Modbus TCP and RTU against real servers: every data type and table end to end, the circuit
breaker, dropped connections, and an RS-485 line where one silent unit cannot stall the rest."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from config._schema import ModbusRtuBus, ModbusTcpDevice
from drivers.modbus._io import ModbusRtuBusPoller, ModbusTcpPoller
from gateway import Quality, Reading
from mrv_core._metrics import Metrics
from simulator import PATTERN_POINTS, ElectricityMeter, ModbusPlant, PatternDevice, RtuLine

from .support import Collector, LoopLag, until


async def run_until(coro_fn: Callable[[], Any], cond: Callable[[], Any],
                    timeout: float = 10.0) -> None:
    """Run ``coro_fn()`` until ``cond()`` holds (failing after ``timeout``), then stop it."""
    task = asyncio.create_task(coro_fn())
    try:
        await until(lambda: bool(cond()), timeout)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def pattern_points() -> list[dict[str, Any]]:
    out = []
    for p in PATTERN_POINTS:
        d: dict[str, Any] = {"id": f"pat.{p.key}", "table": p.table, "address": p.address,
                             "type": p.type, "word_order": p.word_order, "unit": "1"}
        if p.bit is not None:
            d["bit"] = p.bit
        out.append(d)
    return out


def check_pattern(readings: list[Reading]) -> None:
    by_id = {r.point_id: r for r in readings}
    assert len(by_id) == len(PATTERN_POINTS)
    for p in PATTERN_POINTS:
        r = by_id[f"pat.{p.key}"]
        if p.sentinel:
            assert math.isnan(r.value) and r.quality == Quality.SENTINEL, p
        else:
            assert r.value == p.expected and r.quality == 0, (p, r)


@pytest.fixture
async def pattern_plant() -> AsyncIterator[ModbusPlant]:
    plant = ModbusPlant({1: PatternDevice(), 2: ElectricityMeter(seed=4)})
    await plant.start()
    yield plant
    await plant.stop()


# Timeouts far above a reply's (ms) unless a test is about timeouts: the simulators run in the
# test's event loop, and on a loaded machine a reply can come hundreds of ms late.


def tcp_device(port: int, **kw: Any) -> ModbusTcpDevice:
    cfg: dict[str, Any] = {"driver": "modbus_tcp", "name": "pattern", "host": "127.0.0.1",
                           "port": port, "unit_id": 1, "interval_s": 0.1, "timeout_s": 2.0,
                           "retries": 0, "points": pattern_points()}
    cfg.update(kw)
    return ModbusTcpDevice.model_validate(cfg)


async def test_every_type_order_and_table_over_tcp(pattern_plant: ModbusPlant) -> None:
    sink, m = Collector(), Metrics()
    p = ModbusTcpPoller(tcp_device(pattern_plant.port, max_gap=16), sink, m)
    # 88 holding registers in one read, the input pair, the coils, the discrete inputs
    assert [(r.table, r.address, r.count) for r in p.plan] == [
        ("holding", 0, 88), ("input", 0, 3), ("coil", 0, 15), ("discrete", 0, 15)]
    await run_until(p.run, lambda: p.polls >= 2)
    assert p.polls >= 2
    check_pattern(sink.readings[:len(PATTERN_POINTS)])


async def test_scale_offset_and_gap_coalescing(pattern_plant: ModbusPlant) -> None:
    sink, m = Collector(), Metrics()
    at = {p.key: p.address for p in PATTERN_POINTS}
    assert (at["uint16-ABCD"], at["int32-ABCD"]) == (4, 8)
    pts = [{"id": "a", "address": 4, "type": "uint16", "scale": 0.01, "offset": -1, "unit": "V"},
           {"id": "b", "address": 8, "type": "int32", "word_order": "ABCD", "unit": "1"}]
    dev = tcp_device(pattern_plant.port, points=pts, max_gap=3)
    p = ModbusTcpPoller(dev, sink, m)
    assert [(r.address, r.count) for r in p.plan] == [(4, 6)]  # gap of 3 bridged
    assert len(ModbusTcpPoller(tcp_device(pattern_plant.port, points=pts), sink, m).plan) == 2
    await run_until(p.run, lambda: sink.of("a") and sink.of("b"))
    assert sink.of("a")[0].value == pytest.approx(54321 * 0.01 - 1)
    assert sink.of("b")[0].value == -123_456_789


async def test_breaker_opens_emits_gaps_at_poll_rate_probes_at_backoff_and_closes(
        pattern_plant: ModbusPlant, caplog: pytest.LogCaptureFixture) -> None:
    model = pattern_plant.models[1]
    model.faults.silent = True
    sink, m = Collector(), Metrics()
    dev = tcp_device(pattern_plant.port, points=pattern_points()[:2], interval_s=0.05,
                     timeout_s=0.1, breaker_failures=3, backoff_initial_s=0.4,
                     backoff_max_s=0.8)
    p = ModbusTcpPoller(dev, sink, m)
    task = asyncio.create_task(p.run())
    lag = LoopLag()
    await lag.__aenter__()
    try:
        await asyncio.sleep(2.0)  # the scenario: rates over a 2 s window (see the asserts)
        await lag.__aexit__()
        loop = p.loop
        seen = f"polls {loop.polls}, missed {loop.missed}, attempts {loop.attempts}; {lag}"
        assert loop.breaker_open and loop.breaker_opened == 1, seen
        # probes at 0.4 then 0.8 s after the breaker opened: a handful of attempts, not 40
        assert 4 <= loop.attempts <= 7, seen
        # ...while gap readings kept the poll rate: 2.0 s / 0.05 s = 40 ticks (a stall just
        # before this check leaves ticks the loop has not yet counted as missed)
        assert loop.polls >= 0.8 * 40 - loop.missed - lag.ticks_lost(0.05), seen
        gaps = [r for r in sink.readings if r.quality == Quality.COMM_FAULT]
        assert len(gaps) == 2 * loop.polls and all(math.isnan(r.value) for r in gaps)
        assert m.component("device:pattern").state == "failing"
        assert "breaker open" in m.component("device:pattern").detail
        model.faults.silent = False
        await until(lambda: not loop.breaker_open, 3)
        await until(lambda: sink.readings[-1].quality == 0, 1)
    finally:
        await lag.__aexit__()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert m.component("device:pattern").state == "ok"
    assert m.counters["breaker_opened"] == 1 and m.counters["breaker_closed"] == 1
    assert sum("breaker open" in r.getMessage() for r in caplog.records) == 1


async def test_dropped_connections_recover(pattern_plant: ModbusPlant) -> None:
    sink, m = Collector(), Metrics()
    p = ModbusTcpPoller(tcp_device(pattern_plant.port, points=pattern_points()[:1]), sink, m)
    task = asyncio.create_task(p.run())
    try:
        await until(lambda: len(sink.readings) >= 3)
        for _ in range(3):
            assert pattern_plant.drop_connections() >= 1
            n = len(sink.readings)
            await until(lambda n=n: len(sink.readings) >= n + 3 and sink.readings[-1].quality == 0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert all(r.quality in (0, Quality.COMM_FAULT) for r in sink.readings)
    assert m.component("device:pattern").state == "ok"


async def test_exception_responses_mark_the_device_failing_without_the_breaker(
        pattern_plant: ModbusPlant) -> None:
    pattern_plant.models[1].faults.exception = 2
    sink, m = Collector(), Metrics()
    p = ModbusTcpPoller(tcp_device(pattern_plant.port, breaker_failures=1), sink, m)
    await run_until(p.run, lambda: p.polls >= 3)  # one failure would open it
    assert sink.readings and all(r.quality == Quality.DEVICE_FAULT for r in sink.readings)
    assert not p.loop.breaker_open
    assert p.polls <= p.loop.attempts <= p.polls + 1  # + the ask cancelled in flight, if any
    assert m.component("device:pattern").state == "failing"


# -- RTU over a pty --------------------------------------------------------------------------


def rtu_bus(path: str, units: list[dict[str, Any]], **kw: Any) -> ModbusRtuBus:
    cfg: dict[str, Any] = {"driver": "modbus_rtu", "name": "rs485-1", "port": path,
                           "baudrate": 19200, "units": units}
    cfg.update(kw)
    return ModbusRtuBus.model_validate(cfg)


def meter_unit(name: str, unit_id: int, **kw: Any) -> dict[str, Any]:
    u: dict[str, Any] = {
        "name": name, "unit_id": unit_id, "interval_s": 0.2, "timeout_s": 1.0, "retries": 0,
        "backoff_initial_s": 0.5, "backoff_max_s": 1.0,
        "points": [
            {"id": f"{name}.energy", "address": 0, "type": "uint32", "scale": 0.01, "unit": "kWh"},
            {"id": f"{name}.power", "address": 2, "type": "float32", "unit": "kW"},
        ]}
    u.update(kw)
    return u


async def test_every_type_order_and_table_over_rtu() -> None:
    async with RtuLine({7: PatternDevice()}) as line:
        assert isinstance(line, RtuLine)
        sink, m = Collector(), Metrics()
        bus = rtu_bus(line.path, [{"name": "pattern", "unit_id": 7, "interval_s": 0.1,
                                   "timeout_s": 0.3, "points": pattern_points()}])
        p = ModbusRtuBusPoller(bus, sink, m)
        await run_until(p.run, lambda: p.loop_of("pattern").polls >= 2)
        assert p.loop_of("pattern").polls >= 2
        check_pattern(sink.readings[:len(PATTERN_POINTS)])
        assert all(r.source == "modbus_rtu:rs485-1/pattern" for r in sink.readings)


async def test_rtu_silent_unit_does_not_stall_the_line() -> None:
    units = {1: ElectricityMeter(seed=1), 2: ElectricityMeter(seed=2), 3: ElectricityMeter(seed=3)}
    units[2].faults.silent = True
    async with RtuLine(units) as line:
        assert isinstance(line, RtuLine)
        sink, m = Collector(), Metrics()
        # the silent unit's 0.1 s timeout is what is tested; the healthy ones have 1 s
        bus = rtu_bus(line.path, [meter_unit("u1", 1), meter_unit("u2", 2, timeout_s=0.1),
                                  meter_unit("u3", 3)])
        p = ModbusRtuBusPoller(bus, sink, m)
        u1, silent, u3 = p.loop_of("u1"), p.loop_of("u2"), p.loop_of("u3")
        ev = asyncio.get_running_loop()
        async with LoopLag() as lag:
            task = asyncio.create_task(p.run())
            try:
                t0 = ev.time()
                # the window: fifteen ticks (3 s) of the healthy units' schedules, served or missed
                await until(lambda: min(u.polls + u.missed for u in (u1, u3)) >= 15, 20)
                elapsed = ev.time() - t0
                seen = (f"u1 polls {u1.polls} missed {u1.missed}; u3 polls {u3.polls} missed "
                        f"{u3.missed}; u2 attempts {silent.attempts} polls {silent.polls} missed "
                        f"{silent.missed}; {elapsed:.2f} s; {lag}")
                # a stall (the silent unit holding the line) would miss many ticks; one is
                # allowed, and one for each tick a busy machine's event loop lost
                for name, loop in (("u1", u1), ("u3", u3)):
                    assert loop.missed <= 1 + lag.ticks_lost(0.2), (name, seen)
                    assert all(r.quality == 0 for r in sink.of(f"{name}.energy")), (name, seen)
                # the breaker: three failures, then probes 0.5 s and 1 s apart, gaps in between
                assert silent.breaker_open and silent.attempts <= 4 + elapsed / 1.0, seen
                # ticks served with a gap without asking: only the open breaker does that
                assert silent.polls > silent.attempts, seen
                assert all(r.quality == Quality.COMM_FAULT for r in sink.of("u2.energy"))
                assert m.component("device:u2").state == "failing"
                units[2].faults.silent = False  # the unit is repaired
                await until(lambda: m.component("device:u2").state == "ok", 5)
                await until(lambda: sink.of("u2.energy")[-1].quality == 0, 5)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        # one frame at a time on the line: the responder never saw a damaged request
        assert line.bad_frames == 0
        assert m.component("device:u1").state == "ok" and m.component("device:u3").state == "ok"


async def test_rtu_garbage_and_exceptions_are_flagged() -> None:
    units = {1: ElectricityMeter(seed=1), 2: ElectricityMeter(seed=2)}
    units[1].faults.garbage = True
    units[2].faults.exception = 4
    async with RtuLine(units) as line:
        assert isinstance(line, RtuLine)
        sink, m = Collector(), Metrics()
        bus = rtu_bus(line.path, [meter_unit("u1", 1), meter_unit("u2", 2)])
        p = ModbusRtuBusPoller(bus, sink, m)
        task = asyncio.create_task(p.run())
        try:
            await until(lambda: len(sink.of("u1.energy")) >= 3 and len(sink.of("u2.energy")) >= 3)
            assert all(r.quality == Quality.COMM_FAULT for r in sink.of("u1.energy"))
            assert all(r.quality == Quality.DEVICE_FAULT for r in sink.of("u2.energy"))
            units[1].faults.garbage = False
            units[2].faults.exception = None
            await until(lambda: sink.of("u1.energy")[-1].quality == 0
                        and sink.of("u2.energy")[-1].quality == 0, 5)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_rtu_port_that_does_not_exist_is_a_flagged_gap(tmp_path: Any) -> None:
    sink, m = Collector(), Metrics()
    bus = rtu_bus(str(tmp_path / "ttyUSB9"), [meter_unit("u1", 1, interval_s=0.1)])
    p = ModbusRtuBusPoller(bus, sink, m)
    await run_until(p.run, lambda: sink.readings and m.component("device:u1").detail)
    assert sink.readings and all(r.quality == Quality.COMM_FAULT for r in sink.readings)
    assert "serial port" in m.component("device:u1").detail or "breaker" in m.component(
        "device:u1").detail


async def test_a_swallowed_cancellation_still_stops_the_poller() -> None:
    """Python 3.11's asyncio.wait_for (inside pymodbus) can swallow a cancellation that arrives
    as the awaited call completes; the poll loop must stop anyway, or a shutdown hangs."""
    import logging
    from types import SimpleNamespace

    from drivers._polling import PointInfo, PollLoop

    async def attempt() -> list[Reading]:
        try:
            await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            pass  # what the wait_for race does
        return []

    opts = SimpleNamespace(interval_s=0.01, breaker_failures=3, backoff_initial_s=1.0,
                           backoff_max_s=1.0)
    loop = PollLoop("x", "test", [PointInfo("p", "1")], opts, Collector(), Metrics(),
                    logging.getLogger("test"))
    task = asyncio.create_task(loop.run(attempt))
    await asyncio.sleep(0.1)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert task in done and task.cancelled()
