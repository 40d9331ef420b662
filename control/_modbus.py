"""Modbus TCP I/O for control: writes with the point's type and word order, read-back,
permissive signals, heartbeat (pymodbus 3.16).

Every request goes through the device's `ModbusLink` (``drivers/modbus/_link.py``): one client
and one lock per connection, the same ones the acquisition poller uses when it polls that
host and port. A write therefore waits for a running poll to end and never interleaves with
its requests; without a shared ``links`` (tests, tools) each device gets a link of its own."""

from __future__ import annotations

import logging
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from control._codec import from_registers, to_registers
from control._config import ActuatorDevice, SignalConfig, WritablePoint
from drivers.modbus import ModbusLink, ModbusLinks
from drivers.modbus import own_links as _links
from drivers.modbus._decode import register_count

log = logging.getLogger("mrv.control.modbus")


class ActuatorError(Exception):
    """A Modbus request to an actuator device failed (connection, timeout, exception)."""


class Endpoint:
    def __init__(self, dev: ActuatorDevice, links: ModbusLinks | None = None) -> None:
        self.dev = dev
        self.link: ModbusLink[AsyncModbusTcpClient] = _links(links).get(
            ModbusLinks.tcp_key(dev.host, dev.port), self._new_client)
        self.lock = self.link.lock
        self._closed = False

    def _new_client(self) -> AsyncModbusTcpClient:
        return AsyncModbusTcpClient(
            self.dev.host, port=self.dev.port, timeout=self.dev.timeout_s, retries=0,
            reconnect_delay=0, name=f"control:{self.dev.id}")

    async def _connected(self) -> AsyncModbusTcpClient:
        c = self.link.client
        if not c.connected and not await c.connect():
            raise ActuatorError(f"device {self.dev.id} ({self.dev.host}:{self.dev.port}): "
                                "connection refused")
        return c

    async def _call(self, what: str, fn_name: str, *args: Any, **kwargs: Any) -> Any:
        async with self.lock:
            c = await self._connected()
            try:
                rr = await getattr(c, fn_name)(*args, device_id=self.dev.unit_id, **kwargs)
            except (ModbusException, OSError, TimeoutError) as e:
                c.close()
                raise ActuatorError(f"device {self.dev.id}: {what}: {e or type(e).__name__}"
                                    ) from e
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

    def __init__(self, devices: list[ActuatorDevice], links: ModbusLinks | None = None) -> None:
        self.endpoints = {d.id: Endpoint(d, links) for d in devices}

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
