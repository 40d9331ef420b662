"""The simulated boiler-room PLC: plausible physics, the heartbeat watchdog, the write log,
over real Modbus TCP (pymodbus client against the SimDevice server)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from pymodbus.client import AsyncModbusTcpClient

from drivers.modbus._decode import decode, encode
from simulator import ActuatorModel, ActuatorPlant


async def _gas(c: AsyncModbusTcpClient) -> float:
    rr = await c.read_input_registers(0, count=6, device_id=1)
    assert not rr.isError()
    return float(decode(rr.registers[0:2], "float32"))


async def _settles(read: Callable[[], Awaitable[float]], ok: Callable[[float], bool],
                   timeout: float = 10.0) -> float:
    """Read until ``ok(value)``: the model's physics runs on the wall clock, so the test waits
    for the value it expects (failing after ``timeout``), not for a fixed time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        v = await read()
        if ok(v) or loop.time() > deadline:
            return v
        await asyncio.sleep(0.05)


async def test_gas_falls_as_the_vent_opens_and_o2_follows_the_damper() -> None:
    model = ActuatorModel(leak_rate=10.0, local_vent=10.0, gas_lel=66.0)
    plant = await ActuatorPlant(model).start()
    c = AsyncModbusTcpClient("127.0.0.1", port=plant.port, timeout=2, retries=0)
    try:
        assert await c.connect()
        await asyncio.sleep(1.0)  # the scenario: it stays near its steady state for a while
        closed = await _gas(c)
        # started near the steady state with the vent at 10 %: 10 / (0.05 + 0.1) = 66.7 %LEL
        assert 60 < closed < 70
        rr = await c.read_input_registers(4, count=1, device_id=1)
        assert rr.registers == [1]  # the PLC's own alarm (>= 25 %LEL)
        assert not (await c.write_register(0, 1000, device_id=1)).isError()  # vent 100 %
        opened = await _settles(lambda: _gas(c), lambda g: g < closed / 2 and 9 < g < 20)
        assert opened < closed / 2  # tends to 10 / 1.05 = 9.5 %LEL, time constant ~1 s
        assert 9 < opened < 20
        # O2 follows the air damper (float32 CDAB at holding 2)
        rr = await c.read_input_registers(2, count=2, device_id=1)
        o2_before = float(decode(rr.registers, "float32"))
        assert abs(o2_before - (0.12 * 45 - 2.2)) < 0.2
        assert not (await c.write_registers(2, encode(60.0, "float32", "CDAB"),
                                            device_id=1)).isError()

        async def o2() -> float:
            rr = await c.read_input_registers(2, count=2, device_id=1)
            return float(decode(rr.registers, "float32"))

        o2_after = await _settles(o2, lambda v: abs(v - (0.12 * 60 - 2.2)) < 0.2)
        assert abs(o2_after - (0.12 * 60 - 2.2)) < 0.2 and o2_after > o2_before + 1
        rr = await c.read_holding_registers(2, count=2, device_id=1)
        assert decode(rr.registers, "float32", "CDAB") == 60.0
        assert [(w.address, w.values) for w in plant.writes] == [
            (0, (1000,)), (2, tuple(encode(60.0, "float32", "CDAB")))]
        # out-of-range raw value: an exception response, nothing applied
        rr = await c.write_register(0, 1001, device_id=1)
        assert rr.isError()
        assert model.vent == 100.0
    finally:
        c.close()
        await plant.stop()


async def test_watchdog_falls_back_without_heartbeat_and_recovers_with_it() -> None:
    model = ActuatorModel(watchdog_s=0.6)
    plant = await ActuatorPlant(model).start()
    c = AsyncModbusTcpClient("127.0.0.1", port=plant.port, timeout=2, retries=0)
    try:
        assert await c.connect()
        assert not (await c.write_register(0, 700, device_id=1)).isError()
        for i in range(1, 8):  # heartbeats every 0.2 s keep it remote
            assert not (await c.write_register(4, i, device_id=1)).isError()
            await asyncio.sleep(0.2)  # the scenario: the heartbeat's period
        rr = await c.read_holding_registers(0, count=2, device_id=1)
        assert rr.registers == [700, 1]
        assert model.heartbeats == 7 and plant.writes[-1].address == 0  # not logged as writes
        # the same counter value again is not a heartbeat: silence
        await c.write_register(4, 7, device_id=1)
        local = [round(model.local_vent * 10), 0]

        async def mode() -> float:
            rr = await c.read_holding_registers(0, count=2, device_id=1)
            return 1.0 if rr.registers == local else 0.0

        assert await _settles(mode, lambda v: v == 1.0) == 1.0  # local mode, own setpoint
        assert model.fallbacks == 1
        # remote writes are ignored in local mode (a read-back shows it)
        await c.write_register(0, 500, device_id=1)
        rr = await c.read_holding_registers(0, count=1, device_id=1)
        assert rr.registers == [round(model.local_vent * 10)]
        # heartbeats resume: remote again, remote setpoints take effect again
        await c.write_register(4, 8, device_id=1)
        await c.write_register(0, 500, device_id=1)
        rr = await c.read_holding_registers(0, count=2, device_id=1)
        assert rr.registers == [500, 1]
    finally:
        c.close()
        await plant.stop()
