"""DL/T 645-2007 meters on a pty: values by data identifier, error replies, a silent meter,
line noise, address discovery."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

from config._schema import Dlt645Bus
from drivers.dlt645._frame import DI_FREQUENCY
from drivers.dlt645._io import Dlt645BusPoller
from gateway import Quality
from mrv_core._metrics import Metrics
from simulator import Dlt645Line, Dlt645SimMeter

from .support import Collector, LoopLag, until

A1, A2 = "000000123456", "210987654321"


def bus(path: str, timeout_s: float = 1.0, main_timeout_s: float | None = None,
        **kw: Any) -> Dlt645Bus:
    """The two meters' bus. The timeout is far above the replies' (ms): on a loaded machine a
    reply can come hundreds of ms late (the simulator runs in the test's event loop), and a
    test that is not about timeouts must not see a good reply flagged. ``main_timeout_s``: the
    main meter's own, for the test where it is silent and its timeout is what is tested."""
    meter = {"interval_s": 0.25, "timeout_s": timeout_s, "retries": 0, "backoff_initial_s": 0.5,
             "backoff_max_s": 1.0}
    cfg: dict[str, Any] = {
        "driver": "dlt645", "name": "rs485-2", "port": path, "inter_frame_s": 0.005,
        "meters": [
            {**meter, "name": "main-meter", "address": A1,
             **({} if main_timeout_s is None else {"timeout_s": main_timeout_s}), "points": [
                {"id": "main.energy", "di": "00000000"},
                {"id": "main.voltage_a", "di": "02010100"},
                {"id": "main.current_a", "di": "02020100"},
                {"id": "main.power", "di": "02030000"},
                {"id": "main.pf", "di": "02060000"},
                {"id": "main.freq", "di": "02800002"},
            ]},
            {**meter, "name": "aux-meter", "address": A2, "points": [
                {"id": "aux.energy", "di": "00010000"}]},
        ]}
    cfg.update(kw)
    return Dlt645Bus.model_validate(cfg)


@pytest.fixture
async def line() -> AsyncIterator[Dlt645Line]:
    ln = Dlt645Line([Dlt645SimMeter(address=A1, unsupported={DI_FREQUENCY}),
                     Dlt645SimMeter(address=A2, energy_kwh=500.0, seed=4)])
    await ln.start()
    yield ln
    await ln.stop()


async def test_values_units_and_error_replies(line: Dlt645Line) -> None:
    sink, m = Collector(), Metrics()
    p = Dlt645BusPoller(bus(line.path), sink, m)
    task = asyncio.create_task(p.run())
    try:
        await until(lambda: len(sink.of("main.freq")) >= 3 and len(sink.of("aux.energy")) >= 3)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    last = {r.point_id: r for r in sink.readings}
    assert last["main.energy"].unit == "kWh" and 12_345 < last["main.energy"].value < 12_400
    assert last["main.voltage_a"].unit == "V" and 215 < last["main.voltage_a"].value < 225
    assert last["main.current_a"].unit == "A" and 0 < last["main.current_a"].value < 100
    assert last["main.power"].unit == "kW" and 9 < last["main.power"].value < 15
    assert last["main.pf"].unit == "1" and last["main.pf"].value == 0.95
    assert 500 <= last["aux.energy"].value < 501
    # the meter answers "no requested data" for the frequency: that point alone is a device fault
    assert all(math.isnan(r.value) and r.quality == Quality.DEVICE_FAULT
               for r in sink.of("main.freq"))
    assert all(r.quality == 0 for r in sink.readings if r.point_id != "main.freq")
    assert m.counters["dlt645_error_replies"] >= 3
    energy = [r.value for r in sink.of("main.energy")]
    assert energy == sorted(energy)
    assert {r.source for r in sink.readings} == {"dlt645:rs485-2/main-meter",
                                                 "dlt645:rs485-2/aux-meter"}


async def test_silent_meter_is_a_gap_and_does_not_stall_the_other(line: Dlt645Line) -> None:
    line.meters[A1].faults.silent = True
    sink, m = Collector(), Metrics()
    # the silent meter times out after 0.15 s (what is tested); the healthy one has 1 s, so a
    # busy machine delays its replies without flagging them
    p = Dlt645BusPoller(bus(line.path, main_timeout_s=0.15), sink, m)
    aux, main = p.loop_of("aux-meter"), p.loop_of("main-meter")
    loop = asyncio.get_running_loop()
    async with LoopLag() as lag:
        task = asyncio.create_task(p.run())
        try:
            t0 = loop.time()
            # the window: ten ticks of the healthy meter's schedule (0.25 s), served or missed
            await until(lambda: aux.polls + aux.missed >= 10, 20)
            elapsed = loop.time() - t0
            seen = (f"aux: {aux.polls} polls, {aux.missed} missed; main: {main.attempts} asks, "
                    f"{main.polls} polls; {elapsed:.2f} s; {lag}")
            # a stall (the silent meter holding the line) would miss most of the ten ticks; a
            # tick is allowed to be missed for each one the event loop lost to a busy machine
            assert aux.missed <= 2 + lag.ticks_lost(0.25), seen
            assert all(r.quality == 0 for r in sink.of("aux.energy")), seen
            # the breaker: three failures, then probes 0.5 s and 1 s apart, gaps in between
            assert main.breaker_open and main.attempts <= 4 + elapsed / 1.0, seen
            # ticks served with a gap without asking: only the open breaker does that
            assert main.polls > main.attempts, seen
            assert all(r.quality == Quality.COMM_FAULT for r in sink.of("main.energy")), seen
            assert m.component("device:main-meter").state == "failing"
            line.meters[A1].faults.silent = False
            await until(lambda: m.component("device:main-meter").state == "ok", 5)
            await until(lambda: sink.of("main.energy")[-1].quality == 0, 5)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_line_noise_is_counted_and_survived(line: Dlt645Line,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    sink, m = Collector(), Metrics()
    # (the bus's 1 s timeout: in CI a 150 ms one once expired for a good reply and flagged it)
    p = Dlt645BusPoller(bus(line.path), sink, m)
    task = asyncio.create_task(p.run())
    try:
        await until(lambda: len(sink.of("main.energy")) >= 2)
        line.meters[A1].faults.garbage = True
        await until(lambda: m.counters["dlt645_garbage_bytes"] + m.counters["dlt645_bad_frames"] > 0)
        await until(lambda: sink.of("main.energy")[-1].quality == Quality.COMM_FAULT)
        line.meters[A1].faults.garbage = False
        await until(lambda: sink.of("main.energy")[-1].quality == 0, 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert all(r.quality == 0 for r in sink.of("aux.energy"))
    assert any("line noise" in r.getMessage() or "damaged frame" in r.getMessage()
               for r in caplog.records)


async def test_address_discovery_and_no_wakeup_preamble() -> None:
    async with Dlt645Line([Dlt645SimMeter(address=A2)]) as ln:
        assert isinstance(ln, Dlt645Line)
        sink, m = Collector(), Metrics()
        b = bus(ln.path, wakeup=False, meters=[
            {"name": "aux-meter", "address": A2, "interval_s": 0.1, "timeout_s": 1.0,
             "points": [{"id": "aux.energy", "di": "00000000"}]}])
        p = Dlt645BusPoller(b, sink, m)
        assert await p.read_address(timeout_s=2.0) == A2
        task = asyncio.create_task(p.run())
        try:
            await until(lambda: len(sink.readings) >= 2)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert all(r.quality == 0 for r in sink.readings)
        p.line.close()
