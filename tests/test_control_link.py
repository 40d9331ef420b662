"""Control writes and acquisition polls of one device share one Modbus connection and its
lock (drivers/_link.py): a write never lands between the reads of one poll. Checked
against a real pymodbus server that records the order in which requests reach the device."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.simulator import SimDevice

from config._schema import ModbusRtuBus, ModbusTcpDevice
from control._config import ActuatorDevice, WritablePoint
from control._modbus import PlantIO
from drivers.modbus import ModbusLinks
from drivers.modbus._io import ModbusRtuBusPoller, ModbusTcpPoller
from mrv_core._metrics import Metrics
from simulator import ElectricityMeter, RtuLine
from simulator._plant import SimServer, sim_blocks

from .support import Collector

READ_ADDRESSES = (0, 10, 20)  # three read requests per poll (max_gap 0)
SETPOINT = 40
READ_ADDRESSES_RTU = (0, 2, 4)
FC_READ_HR, FC_WRITE_ONE = 3, 6


@dataclass
class RecordingDevice:
    """A device that answers slowly and records every request it receives, in order."""

    read_delay_s: float = 0.01
    log: list[tuple[int, int]] = field(default_factory=list)  # (function code, address)

    def sim(self) -> SimDevice:
        async def action(fc: int, start: int, address: int, count: int, registers: list[int],
                         set_values: list[int] | list[bool] | None) -> ExcCodes | None:
            self.log.append((fc, address))
            if fc == FC_READ_HR:
                await asyncio.sleep(self.read_delay_s)  # a slow device: a poll takes a while
            return None

        return SimDevice(1, simdata=sim_blocks(64), action=action)


@pytest.fixture
async def device() -> AsyncIterator[tuple[RecordingDevice, SimServer]]:
    dev = RecordingDevice()
    server = SimServer("127.0.0.1", 0, "recording")
    await server.serve([dev.sim()])
    try:
        yield dev, server
    finally:
        await server.stop()


def _configs(port: int) -> tuple[ModbusTcpDevice, ActuatorDevice, WritablePoint]:
    acq = ModbusTcpDevice.model_validate({
        "driver": "modbus_tcp", "name": "boiler", "host": "127.0.0.1", "port": port,
        "unit_id": 1, "interval_s": 0.05, "timeout_s": 1.0, "retries": 0, "max_gap": 0,
        "points": [{"id": f"p{a}", "address": a, "type": "uint16", "unit": "1"}
                   for a in READ_ADDRESSES]})
    act = ActuatorDevice(id="boiler", host="127.0.0.1", port=port, unit_id=1, timeout_s=1.0)
    point = WritablePoint.model_validate({
        "id": "boiler.setpoint", "device": "boiler", "address": SETPOINT, "type": "uint16",
        "unit": "1", "min": 0, "max": 1000, "max_step": 1000,
        "rate_limit": {"max_writes": 100, "window_s": 1}})
    return acq, act, point


def _polls_are_whole(log: list[tuple[int, int]]) -> list[str]:
    """Every poll's reads arrive back to back: no other request between its first and last."""
    faults = []
    for i, (fc, address) in enumerate(log):
        if fc == FC_READ_HR and address == READ_ADDRESSES[0]:
            got = log[i:i + len(READ_ADDRESSES)]
            if got != [(FC_READ_HR, a) for a in READ_ADDRESSES][:len(got)]:
                faults.append(f"at request {i}: {got}")
    return faults


async def _write_while_polling(port: int, links_for_control: ModbusLinks,
                               links_for_poller: ModbusLinks) -> tuple[int, int]:
    """Write the setpoint again and again while the poller polls the same device; returns
    (writes, writes that found a poll holding the lock)."""
    acq, act, point = _configs(port)
    poller = ModbusTcpPoller(acq, Collector(), Metrics(), links_for_poller)
    plant = PlantIO([act], links_for_control)
    lock = plant.endpoints["boiler"].lock
    task = asyncio.create_task(poller.run())
    writes = contended = 0
    try:
        async with asyncio.timeout(30):
            while poller.polls < 10 or writes < 20:
                await asyncio.sleep(0)  # a yield: a poll waiting for the lock takes it now
                contended += lock.locked()
                await plant.write_point(point, writes % 1000)
                writes += 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        plant.close()
    return writes, contended


async def test_a_write_never_interleaves_with_a_poll_of_the_same_device(
        device: tuple[RecordingDevice, SimServer]) -> None:
    dev, server = device
    links = ModbusLinks()
    writes, contended = await _write_while_polling(server.port, links, links)
    assert len(links) == 1  # one connection for both
    log = dev.log
    assert writes >= 20 and (FC_WRITE_ONE, SETPOINT) in log
    # the writes really ran during polling: some waited for a poll, and writes sit between polls
    assert contended >= 1
    reads = [i for i, (fc, _) in enumerate(log) if fc == FC_READ_HR]
    writes_at = [i for i, (fc, _) in enumerate(log) if fc == FC_WRITE_ONE]
    assert any(reads[0] < w < reads[-1] for w in writes_at)
    assert _polls_are_whole(log) == []


async def test_without_the_shared_link_writes_do_interleave(
        device: tuple[RecordingDevice, SimServer]) -> None:
    """The check above can fail: with a connection each, writes land inside polls."""
    dev, server = device
    await _write_while_polling(server.port, ModbusLinks(), ModbusLinks())
    assert _polls_are_whole(dev.log) != []


async def test_control_writes_over_rtu_on_the_pollers_line_between_polls() -> None:
    """Modbus RTU: control writes to a unit on a polled RS-485 line go through the bus
    poller's client and lock; each write is read back, and no frame lands inside a poll."""
    async with RtuLine({3: ElectricityMeter(seed=3)}) as line:
        assert isinstance(line, RtuLine)
        bus = ModbusRtuBus.model_validate({
            "driver": "modbus_rtu", "name": "rs485-1", "port": line.path, "baudrate": 19200,
            "units": [{"name": "m3", "unit_id": 3, "interval_s": 0.05, "timeout_s": 0.3,
                       "retries": 0, "max_gap": 0,
                       "points": [{"id": f"m3.r{a}", "address": a, "type": "uint16",
                                   "unit": "1"} for a in READ_ADDRESSES_RTU]}]})
        act = ActuatorDevice(id="m3", bus="rs485-1", unit_id=3, timeout_s=0.3)
        point = WritablePoint.model_validate({
            "id": "m3.setpoint", "device": "m3", "address": 7, "type": "uint16", "unit": "1",
            "min": 0, "max": 1000, "max_step": 1000,
            "rate_limit": {"max_writes": 100, "window_s": 1}})
        links = ModbusLinks()
        poller = ModbusRtuBusPoller(bus, Collector(), Metrics(), links)
        plant = PlantIO([act], links, {bus.name: bus})
        task = asyncio.create_task(poller.run())
        loop = poller.loop_of("m3")
        writes = 0
        try:
            async with asyncio.timeout(30):
                while loop.polls < 10 or writes < 10:
                    regs = await plant.write_point(point, 100 + writes)
                    value, read_back = await plant.read_point(point)
                    assert read_back == regs and value == 100 + writes
                    writes += 1
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            plant.close()
        assert len(links) == 1 and line.bad_frames == 0
        log = line.log
        polled = [(3, FC_READ_HR, a) for a in READ_ADDRESSES_RTU]
        starts = [i for i, e in enumerate(log) if e == polled[0]]
        assert len(starts) >= 10
        assert all(log[i:i + len(polled)] == polled for i in starts if i + len(polled) <= len(log))
        write_at = [i for i, e in enumerate(log) if e[1] == FC_WRITE_ONE]
        assert len(write_at) == writes and any(starts[0] < w < starts[-1] for w in write_at)


def test_an_rtu_actuator_names_a_configured_bus() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ActuatorDevice(id="x", unit_id=3)
    with pytest.raises(ValueError, match="exactly one"):
        ActuatorDevice(id="x", host="10.0.0.1", bus="rs485-1", unit_id=3)
    with pytest.raises(ValueError, match=r"1\.\.247"):
        ActuatorDevice(id="x", bus="rs485-1", unit_id=0)


def test_one_link_per_connection_key() -> None:
    links = ModbusLinks()
    made: list[str] = []

    class FakeClient:
        def __init__(self, key: str) -> None:
            made.append(key)
            self.closed = 0

        def close(self) -> None:
            self.closed += 1

    a = links.get("tcp:h:502", lambda: FakeClient("a"))  # type: ignore[type-var]
    b = links.get("tcp:h:502", lambda: FakeClient("b"))  # type: ignore[type-var]
    c = links.get("serial:/dev/ttyS0", lambda: FakeClient("c"))  # type: ignore[type-var]
    assert a is b and a is not c and len(links) == 2
    assert a.lock is b.lock
    assert a.client is b.client and made == ["a"]  # made at first use, by the first user's
    a.release()
    assert a.client.closed == 0  # another user still holds it
    b.release()
    assert a.client.closed == 1
