"""Modbus I/O for control: writes with the point's type and word order, read-back,
permissive signals, heartbeat (pymodbus 3.16), over Modbus TCP or Modbus RTU.

Every request goes through the device's `ModbusLink` (``drivers/_link.py``): one client
and one lock per connection, the same ones the acquisition poller uses when it polls that
host and port (TCP) or that serial line (RTU, ``bus:``). A write therefore waits for a running
poll to end and never interleaves with its requests; on a serial line each exchange is followed
by the line's inter-frame silence, as the poller's are. Without a shared ``links`` (tests,
tools) each device gets a link of its own."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pymodbus.exceptions import ConnectionException, ModbusException

from control._codec import from_registers, to_registers
from control._config import ActuatorDevice, SignalConfig, WritablePoint
from drivers.modbus import LeanTcpClient, ModbusLink, ModbusLinks, register_count
from drivers.modbus import own_links as _links

if TYPE_CHECKING:
    from typing import TypeAlias

    from pymodbus.client import AsyncModbusSerialClient

    from drivers.modbus import ModbusRtuBus

    #: TCP: the lean client; RTU: pymodbus's serial client
    _Client: TypeAlias = LeanTcpClient | AsyncModbusSerialClient

log = logging.getLogger("mrv.control.modbus")


class ActuatorError(Exception):
    """A Modbus request to an actuator device failed (connection, timeout, exception)."""


class Endpoint:
    def __init__(self, dev: ActuatorDevice, links: ModbusLinks | None = None,
                 bus: ModbusRtuBus | None = None) -> None:
        self.dev = dev
        self.bus = bus
        self.link: ModbusLink[_Client]
        if dev.bus is not None:
            if bus is None or bus.name != dev.bus:
                raise ValueError(f"control device {dev.id}: bus {dev.bus!r} is not configured")
            self.where = f"unit {dev.unit_id} on {bus.port}"
            self.pause = bus.frame_pause_s()
            self.link = _links(links).get(ModbusLinks.serial_key(bus.port), self._serial_client)
        else:
            assert dev.host is not None
            self.where = f"{dev.host}:{dev.port}"
            self.pause = 0.0
            self.link = _links(links).get(ModbusLinks.tcp_key(dev.host, dev.port),
                                          self._tcp_client)
        self.lock = self.link.lock
        self._closed = False

    def _tcp_client(self) -> _Client:
        assert self.dev.host is not None
        return LeanTcpClient(self.dev.host, port=self.dev.port, timeout=self.dev.timeout_s,
                             retries=0, name=f"control:{self.dev.id}")

    def _serial_client(self) -> _Client:
        from drivers.modbus import serial_client

        assert self.bus is not None
        return serial_client(self.bus)

    async def _connected(self) -> _Client:
        c = self.link.client
        if not c.connected and not await c.connect():
            raise ActuatorError(f"device {self.dev.id} ({self.where}): connection refused")
        return c

    async def _call(self, what: str, fn_name: str, *args: Any, **kwargs: Any) -> Any:
        async with self.lock:
            c = await self._connected()
            try:
                fn = getattr(c, fn_name)
                if self.bus is None:  # TCP: the client's own timeout
                    rr = await fn(*args, device_id=self.dev.unit_id, **kwargs)
                else:  # RTU: the unit's timeout; a silent unit leaves the line open
                    async with asyncio.timeout(self.dev.timeout_s):
                        rr = await fn(*args, device_id=self.dev.unit_id, **kwargs)
            except (ModbusException, OSError, TimeoutError) as e:
                if self.bus is None or isinstance(e, ConnectionException | OSError):
                    c.close()
                raise ActuatorError(f"device {self.dev.id}: {what}: "
                                    f"{e or type(e).__name__}") from e
            finally:
                if self.pause:  # the inter-frame silence, still holding the line
                    await asyncio.sleep(self.pause)
        if rr.isError():
            raise ActuatorError(f"device {self.dev.id}: {what}: exception response "
                                f"{getattr(rr, 'exception_code', '?')}")
        return rr

    async def read(self, table: str, address: int, count: int) -> list[int]:
        fn = "read_holding_registers" if table == "holding" else "read_input_registers"
        rr = await self._call(f"read {table} {address}+{count}", fn, address, count=count)
        regs = list(rr.registers)
        if len(regs) < count:
            raise ActuatorError(f"device {self.dev.id}: short response ({len(regs)} of {count})")
        return regs[:count]

    async def write(self, address: int, regs: list[int]) -> None:
        if len(regs) == 1:
            await self._call(f"write {address}", "write_register", address, regs[0])
        else:
            await self._call(f"write {address}+{len(regs)}", "write_registers", address,
                             list(regs))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.link.release()


class PlantIO:
    """The actuator devices of one control config."""

    def __init__(self, devices: list[ActuatorDevice], links: ModbusLinks | None = None,
                 buses: Mapping[str, ModbusRtuBus] | None = None) -> None:
        """``buses``: the ``modbus_rtu`` buses of the config by name, for RTU devices."""
        buses = buses or {}
        self.endpoints = {d.id: Endpoint(d, links, buses.get(d.bus) if d.bus else None)
                          for d in devices}

    async def read_point(self, p: WritablePoint) -> tuple[float, list[int]]:
        regs = await self.endpoints[p.device].read("holding", p.address, register_count(p.type))
        return from_registers(p, regs), regs

    async def read_signal(self, s: SignalConfig) -> float:
        regs = await self.endpoints[s.device].read(s.table, s.address, register_count(s.type))
        return from_registers(s, regs)

    async def write_point(self, p: WritablePoint, value: float) -> list[int]:
        regs = to_registers(p, value)
        await self.endpoints[p.device].write(p.address, regs)
        return regs

    async def heartbeat(self, dev: ActuatorDevice, counter: int) -> None:
        assert dev.heartbeat is not None
        await self.endpoints[dev.id].write(dev.heartbeat.address, [counter & 0xFFFF])

    def close(self) -> None:
        for e in self.endpoints.values():
            e.close()
