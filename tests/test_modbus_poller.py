"""The Modbus TCP poller against real pymodbus servers: values, faults flagged, recovery."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

import pytest

from config import ModbusTcpDevice
from gateway import Quality, Reading
from gateway._daemon import supervise
from mrv_core._metrics import Metrics
from simulator import ModbusPlant, plant_devices

from .support import LoopLag


def _device(port: int, **kw: object) -> ModbusTcpDevice:
    # a timeout far above a reply's (ms): the server runs in the test's event loop, and on a
    # loaded machine a reply can come hundreds of ms late; only a test about timeouts has a
    # short one
    d = {**plant_devices(port, interval_s=0.1)[0], "timeout_s": 2.0}
    d.update(kw)
    return ModbusTcpDevice.model_validate(d)


class Collector:
    def __init__(self) -> None:
        self.readings: list[Reading] = []

    async def __call__(self, rs: list[Reading]) -> None:
        self.readings.extend(rs)

    def flags(self) -> list[int]:
        return [r.quality for r in self.readings]


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    from .support import until as _until

    await _until(cond, timeout)


async def _run(pollers: list[object], cond: Callable[[], bool], timeout: float = 10.0) -> float:
    """Run the pollers until ``cond()`` holds; the seconds that took."""
    from drivers.modbus._io import ModbusTcpPoller

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tasks = []
    for p in pollers:
        assert isinstance(p, ModbusTcpPoller)
        tasks.append(asyncio.create_task(p.run()))
    try:
        await until(cond, timeout)
        return loop.time() - t0
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_values_and_schedule(plant: ModbusPlant) -> None:
    from drivers.modbus._io import ModbusTcpPoller

    sink, m = Collector(), Metrics()
    p = ModbusTcpPoller(_device(plant.port), sink, m)
    assert len(p.plan) == 1  # three points coalesced into one read of 5 registers
    assert (p.plan[0].address, p.plan[0].count) == (0, 5)
    async with LoopLag() as lag:
        elapsed = await _run([p], lambda: p.polls >= 10)
    seen = f"polls {p.polls}, missed {p.missed} in {elapsed:.2f} s; {lag}"
    # on schedule: not faster than the interval, no tick missed but those a busy machine took
    assert p.polls <= elapsed / 0.1 + 2 and p.missed <= lag.ticks_lost(0.1), seen
    assert len(sink.readings) == 3 * p.polls
    energy = [r.value for r in sink.readings if r.point_id == "feeder.energy"]
    assert energy == sorted(energy)  # a cumulative register never goes down
    assert all(r.quality == 0 for r in sink.readings)
    assert m.component("device:feeder-meter").state == "ok"


async def test_device_down_flags_gaps_and_recovers(plant: ModbusPlant,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    from drivers.modbus._io import ModbusTcpPoller

    sink, m = Collector(), Metrics()
    # the breaker opens after 3 failures; probes every 0.2-0.4 s find the server back quickly
    p = ModbusTcpPoller(_device(plant.port, backoff_initial_s=0.2, backoff_max_s=0.4), sink, m)
    caplog.set_level(logging.INFO, logger="mrv.drivers.modbus")
    task = asyncio.create_task(p.run())
    await until(lambda: p.polls >= 2 and m.component("device:feeder-meter").state == "ok")
    await plant.stop()  # the meter's server goes away
    await until(lambda: m.component("device:feeder-meter").state == "failing")
    gaps = [r for r in sink.readings if r.quality & Quality.COMM_FAULT]
    assert gaps and all(math.isnan(r.value) for r in gaps)
    await plant.start()  # same port
    await until(lambda: m.component("device:feeder-meter").state == "ok"
                and sink.readings[-1].quality == 0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert m.component("device:feeder-meter").state == "ok"
    assert sink.readings[-1].quality == 0
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1  # logged once while failing, not on every poll
    assert sum("polling" in r.getMessage() for r in caplog.records) == 2  # start + recovery


async def test_silent_device_times_out_without_stalling_others(plant: ModbusPlant) -> None:
    from drivers.modbus._io import ModbusTcpPoller

    plant.models[2].faults.silent = True
    s1, s2, m = Collector(), Collector(), Metrics()
    healthy = ModbusTcpPoller(_device(plant.port), s1, m)  # a long timeout (see _device)
    silent_cfg = ModbusTcpDevice.model_validate(
        {**plant_devices(plant.port, interval_s=0.1)[1], "timeout_s": 0.2})  # what is tested
    silent = ModbusTcpPoller(silent_cfg, s2, m)
    async with LoopLag() as lag:
        elapsed = await _run([healthy, silent], lambda: healthy.polls >= 10 and len(s2.readings) >= 4)
    seen = (f"healthy: polls {healthy.polls}, missed {healthy.missed}; silent: attempts "
            f"{silent.loop.attempts}, {len(s2.readings)} readings; {elapsed:.2f} s; {lag}")
    # the silent device's 0.2 s timeouts (two ticks each) do not hold up the healthy one
    assert healthy.polls <= elapsed / 0.1 + 2 and healthy.missed <= lag.ticks_lost(0.1), seen
    assert all(r.quality == 0 for r in s1.readings), seen
    assert all(r.quality & Quality.COMM_FAULT for r in s2.readings), seen
    assert m.component("device:boiler-gas").state == "failing"


async def test_exception_response_is_a_device_fault(plant: ModbusPlant) -> None:
    from drivers.modbus._io import ModbusTcpPoller

    plant.models[1].faults.exception = 4  # SERVER_DEVICE_FAILURE
    sink, m = Collector(), Metrics()
    p = ModbusTcpPoller(_device(plant.port), sink, m)
    await _run([p], lambda: m.counters["modbus_exception_responses"] >= 3)
    assert sink.readings and all(r.quality == Quality.DEVICE_FAULT for r in sink.readings)
    plant.models[1].faults.exception = None
    await _run([p], lambda: sink.readings[-1].quality == 0)


async def test_wrong_unit_id_is_flagged_not_fatal(plant: ModbusPlant) -> None:
    from drivers.modbus._io import ModbusTcpPoller

    sink, m = Collector(), Metrics()
    p = ModbusTcpPoller(_device(plant.port, unit_id=99), sink, m)
    await _run([p], lambda: len(sink.readings) >= 3)
    assert all(r.quality == Quality.DEVICE_FAULT for r in sink.readings)


async def test_supervisor_restarts_a_crashed_task(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError("boom")

    m = Metrics()
    await asyncio.wait_for(supervise("flaky", flaky, m, initial_s=0.01), 5)
    assert runs == 3
    assert m.counters["task_restarts"] == 2
