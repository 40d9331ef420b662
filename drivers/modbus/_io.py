"""Modbus TCP poller: the one I/O module of the Modbus driver (pymodbus 3.16).

One poller per device. Every failure is translated here into flagged readings and a device
state; nothing is invented: a failed poll yields NaN readings flagged COMM_FAULT (HJ 212 "B"),
an exception response yields NaN readings flagged DEVICE_FAULT ("D").
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from config._schema import ModbusPoint, ModbusTcpDevice
from drivers._errors import DeviceUnreachable
from drivers.modbus._decode import decode, is_sentinel, register_count
from drivers.modbus._plan import PointRef, ReadRequest, plan_reads
from gateway._metrics import Metrics
from gateway._records import Quality, Reading

log = logging.getLogger("mrv.drivers.modbus")

Sink = Callable[[list[Reading]], Awaitable[None]]


def decode_point(p: ModbusPoint, regs: list[int]) -> tuple[float, int]:
    """Engineering value and quality bits of one point from its registers (pure)."""
    if is_sentinel(regs, p.type, p.word_order):
        return math.nan, int(Quality.SENTINEL)
    raw = decode(regs, p.type, p.word_order)
    return float(raw) * p.scale + p.offset, 0


class ModbusTcpPoller:
    def __init__(self, dev: ModbusTcpDevice, sink: Sink, metrics: Metrics) -> None:
        self.dev = dev
        self.name = dev.name
        self.sink = sink
        self.metrics = metrics
        self.source = f"modbus_tcp:{dev.name}"
        self.component = f"device:{dev.name}"
        self.points = dev.points
        self.plan: list[ReadRequest] = plan_reads(
            (PointRef(key=i, table=p.table, address=p.address, count=register_count(p.type))
             for i, p in enumerate(dev.points)),
            max_registers=dev.max_registers, max_gap=dev.max_gap)
        self.polls = 0
        self.missed = 0

    def _client(self) -> AsyncModbusTcpClient:
        return AsyncModbusTcpClient(
            self.dev.host, port=self.dev.port, timeout=self.dev.timeout_s,
            retries=self.dev.retries, reconnect_delay=0, name=self.dev.name)

    def _flagged(self, keys: list[int], ts_ns: int, quality: int) -> list[Reading]:
        return [Reading(point_id=self.points[k].id, ts_ns=ts_ns, value=math.nan,
                        unit=self.points[k].unit, source=self.source, quality=quality)
                for k in keys]

    async def poll_once(self, client: AsyncModbusTcpClient) -> list[Reading]:
        """Read every request of the plan; raises `DeviceUnreachable` on a comms failure."""
        out: list[Reading] = []
        unit = self.dev.unit_id
        for req in self.plan:
            ts = time.time_ns()
            fn: Any = (client.read_holding_registers if req.table == "holding"
                       else client.read_input_registers)
            try:
                rr = await fn(req.address, count=req.count, device_id=unit)
            except (ModbusException, OSError, TimeoutError) as e:
                raise DeviceUnreachable(self.dev.name, str(e) or type(e).__name__) from e
            if rr.isError():
                code = getattr(rr, "exception_code", "?")
                self.metrics.inc("modbus_exception_responses")
                log.debug("%s: exception response %s to %s@%d", self.dev.name, code, req.table,
                          req.address)
                out += self._flagged([k for k, _ in req.members], ts, int(Quality.DEVICE_FAULT))
                continue
            regs = rr.registers
            if len(regs) < req.count:
                self.metrics.inc("modbus_short_responses")
                out += self._flagged([k for k, _ in req.members], ts, int(Quality.DEVICE_FAULT))
                continue
            for key, off in req.members:
                p = self.points[key]
                value, q = decode_point(p, regs[off:off + register_count(p.type)])
                out.append(Reading(point_id=p.id, ts_ns=ts, value=value, unit=p.unit,
                                   source=self.source, quality=q))
        return out

    async def run(self) -> None:
        client = self._client()
        interval = self.dev.interval_s
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        try:
            while True:
                ts = time.time_ns()
                try:
                    if not client.connected and not await client.connect():
                        raise DeviceUnreachable(self.dev.name, "connection refused")
                    readings = await self.poll_once(client)
                    if self.metrics.set_state(self.component, "ok"):
                        log.info("%s: polling %s:%d", self.dev.name, self.dev.host, self.dev.port)
                except DeviceUnreachable as e:
                    client.close()
                    self.metrics.inc("device_failures")
                    if self.metrics.set_state(self.component, "failing", e.reason):
                        log.warning("%s: %s (logged once until it recovers)", self.dev.name, e)
                    readings = self._flagged(list(range(len(self.points))), ts,
                                             int(Quality.COMM_FAULT))
                self.polls += 1
                self.metrics.inc("polls")
                await self.sink(readings)
                next_t += interval
                now = loop.time()
                if now > next_t:
                    skipped = int((now - next_t) // interval) + 1
                    self.missed += skipped
                    self.metrics.inc("polls_missed", skipped)
                    next_t += skipped * interval
                await asyncio.sleep(next_t - now if next_t > now else 0)
        finally:
            client.close()
