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


def _device(port: int, **kw: object) -> ModbusTcpDevice:
    d = plant_devices(port, interval_s=0.1)[0]
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


async def _run(poller: object, seconds: float) -> None:
    from drivers.modbus._io import ModbusTcpPoller

    assert isinstance(poller, ModbusTcpPoller)
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_values_and_schedule(plant: ModbusPlant) -> None:
    from drivers.modbus._io import ModbusTcpPoller

    sink, m = Collector(), Metrics()
    p = ModbusTcpPoller(_device(plant.port), sink, m)
    assert len(p.plan) == 1  # three points coalesced into one read of 5 registers
    assert (p.plan[0].address, p.plan[0].count) == (0, 5)
    await _run(p, 1.05)
    assert 9 <= p.polls <= 12 and p.missed == 0
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
    healthy = ModbusTcpPoller(_device(plant.port), s1, m)
    silent_cfg = ModbusTcpDevice.model_validate(
        {**plant_devices(plant.port, interval_s=0.1)[1], "timeout_s": 0.2})
    silent = ModbusTcpPoller(silent_cfg, s2, m)
    await asyncio.gather(_run(healthy, 1.05), _run(silent, 1.05))
    assert healthy.missed == 0 and 9 <= healthy.polls <= 12
    assert s2.readings and all(r.quality & Quality.COMM_FAULT for r in s2.readings)
    assert m.component("device:boiler-gas").state == "failing"


async def test_exception_response_is_a_device_fault(plant: ModbusPlant) -> None:
    from drivers.modbus._io import ModbusTcpPoller

    plant.models[1].faults.exception = 4  # SERVER_DEVICE_FAILURE
    sink, m = Collector(), Metrics()
    p = ModbusTcpPoller(_device(plant.port), sink, m)
    await _run(p, 0.35)
    assert sink.readings and all(r.quality == Quality.DEVICE_FAULT for r in sink.readings)
    assert m.counters["modbus_exception_responses"] >= 3
    plant.models[1].faults.exception = None
    await _run(p, 0.25)
    assert sink.readings[-1].quality == 0


async def test_wrong_unit_id_is_flagged_not_fatal(plant: ModbusPlant) -> None:
    from drivers.modbus._io import ModbusTcpPoller

    sink, m = Collector(), Metrics()
    p = ModbusTcpPoller(_device(plant.port, unit_id=99), sink, m)
    await _run(p, 0.35)
    assert sink.readings and all(r.quality == Quality.DEVICE_FAULT for r in sink.readings)


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
