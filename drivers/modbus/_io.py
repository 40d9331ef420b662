"""Modbus TCP and RTU pollers: the I/O modules of the Modbus driver (pymodbus 3.16).

Every failure is translated here into flagged readings and a device state; nothing is invented:
a failed poll yields NaN readings flagged COMM_FAULT (HJ 212 "B"), an exception response yields
NaN readings flagged DEVICE_FAULT ("D") for the points of that request, a "not implemented"
sentinel NaN flagged SENTINEL. Schedule, circuit breaker and health: `drivers._polling`.

* TCP: one `ModbusTcpPoller` (one connection, one task) per device, through a `LeanTcpClient`
  (``_lean.py``: pymodbus's PDUs on a plain asyncio protocol, no per-request timer or lock).
* The connection and its lock are a `ModbusLink` (``drivers/_link.py``) that the control service
  shares when it writes to the same device or line: a poll holds the lock for all its
  requests, so a control write never lands between them.
* RTU: one `ModbusRtuBusPoller` per serial port. Its units poll on their own schedules but share
  one client and one lock, so only one frame is on the line at a time, and each exchange is
  followed by the inter-frame silence (3.5 character times by default). Timeouts and retries
  are per unit; a unit that stops answering costs the line one timeout per probe once its
  breaker is open, not one per poll.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType

from drivers._errors import DeviceUnreachable, LinkDown
from drivers._link import ModbusLink, ModbusLinks
from drivers._link import own_links as _links
from drivers._polling import LogLimiter, PointInfo, PollLoop
from drivers._source import Sink
from drivers.modbus._config import ModbusPoint, ModbusRtuBus, ModbusRtuUnit, ModbusTcpDevice
from drivers.modbus._decode import (
    Decoder,
    compile_block,
    compile_decoder,
    register_count,
    sentinel_of,
)
from drivers.modbus._lean import LeanTcpClient
from drivers.modbus._plan import BIT_TABLES, PointRef, ReadRequest, plan_reads
from mrv_core import Metrics, Quality, Reading, new_reading
from mrv_core import block_readings as _block_readings

log = logging.getLogger("mrv.drivers.modbus")

_DEVICE_FAULT = int(Quality.DEVICE_FAULT)
_SENTINEL = int(Quality.SENTINEL)
#: The function code a reply to each read must carry (Modbus application protocol 6.1-6.4).
_FUNCTION_CODES = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


def decode_point(p: ModbusPoint, regs: list[int]) -> tuple[float, int]:
    """Engineering value and quality bits of one point from its registers (pure)."""
    value, sentinel = compile_decoder(p.type, p.word_order, bit=p.bit)(regs)
    if sentinel:
        return math.nan, _SENTINEL
    return value * p.scale + p.offset, 0


@dataclass(frozen=True, slots=True)
class _Member:
    """One point inside one read request, with everything the hot path needs."""

    id: str
    unit: str
    offset: int
    count: int
    decoder: Decoder | None  # None for coil/discrete bits
    scale: float
    add: float


@dataclass(frozen=True, slots=True)
class _Request:
    table: str
    address: int
    count: int
    members: tuple[_Member, ...]
    #: the whole read decoded by one struct (`compile_block`), None: member by member
    block: Callable[[Sequence[int]], tuple[Any, ...]] | None = None
    #: per member, in order, for ``block``: (id, unit, scale, offset, int sentinel or None)
    fast: tuple[tuple[str, str, float, float, int | None], ...] = ()


def block_readings_py(out: list[Reading], fast: tuple[tuple[str, str, float, float, int | None], ...],
                      values: tuple[Any, ...], ts: int, source: str) -> None:
    """The readings of a read decoded by one struct, appended to ``out``: the reference for
    the compiled `mrv_core.block_readings`, which makes the same ones (tested) and leaves
    anything unusual to this loop."""
    for (pid, unit, scale, add, sent), v in zip(fast, values, strict=True):
        if v != v or v == sent:  # NaN (floats) or the type's sentinel (ints)
            out.append(new_reading(pid, ts, math.nan, unit, source, _SENTINEL))
        else:
            out.append(new_reading(pid, ts, v * scale + add, unit, source))


class UnitReader:
    """Reads and decodes every point of one Modbus unit (slave) through a pymodbus client."""

    def __init__(self, name: str, unit_id: int, points: Sequence[ModbusPoint], *,
                 max_registers: int, max_gap: int, source: str, metrics: Metrics,
                 now_ns: Callable[[], int] = time.time_ns) -> None:
        self.name = name
        self.now_ns = now_ns  # each reading's timestamp: when its request was sent
        self.unit_id = unit_id
        self.points = list(points)
        self.source = source
        self.metrics = metrics
        self._max_registers, self._max_gap = max_registers, max_gap
        self._requests = [self._request(r) for r in self.plan]
        self.infos = [PointInfo(p.id, p.unit) for p in self.points]
        self.noise = LogLimiter(log)

    @property
    def plan(self) -> list[ReadRequest]:
        """The read requests of this unit (computed again on each access: the poller keeps
        only their compiled form)."""
        return plan_reads(
            (PointRef(key=i, table=p.table, address=p.address,
                      count=1 if p.table in BIT_TABLES else register_count(p.type))
             for i, p in enumerate(self.points)),
            max_registers=self._max_registers, max_gap=self._max_gap)

    def _request(self, r: ReadRequest) -> _Request:
        pts = [(self.points[k], off) for k, off in r.members]
        if r.table in BIT_TABLES:
            return _Request(r.table, r.address, r.count, tuple(
                _Member(p.id, p.unit, off, 1, None, p.scale, p.offset) for p, off in pts))
        block = compile_block(r.count, [(off, p.type, p.word_order) for p, off in pts])
        fast = tuple((p.id, p.unit, p.scale, p.offset, sentinel_of(p.type)) for p, _ in pts)
        if block is not None:  # no members needed: ``fast`` holds what is read
            return _Request(r.table, r.address, r.count, (), block, fast)
        members = tuple(_Member(p.id, p.unit, off, register_count(p.type),
                                compile_decoder(p.type, p.word_order, bit=p.bit), p.scale,
                                p.offset) for p, off in pts)
        return _Request(r.table, r.address, r.count, members, block, fast)

    @staticmethod
    def _method(client: Any, table: str) -> Callable[..., Awaitable[Any]]:
        fn: Callable[..., Awaitable[Any]] = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
        }[table]
        return fn

    def _bad(self, req: _Request, why: str) -> None:
        self.metrics.inc("modbus_bad_responses")
        self.noise.warning("bad-response", "%s: reply to %s@%d refused: %s", self.name, req.table,
                           req.address, why)

    def _flagged(self, req: _Request, ts: int, quality: int) -> list[Reading]:
        points = [(f[0], f[1]) for f in req.fast] if req.block is not None else [
            (m.id, m.unit) for m in req.members]
        return [Reading(point_id=pid, ts_ns=ts, value=math.nan, unit=unit, source=self.source,
                        quality=quality) for pid, unit in points]

    async def _ask(self, client: Any, req: _Request, timeout_s: float | None, retries: int,
                   pause: float) -> Any:
        fn = self._method(client, req.table)
        tries = retries + 1 if timeout_s is not None else 1
        last = "no answer"
        for _ in range(tries):
            try:
                if timeout_s is None:  # pymodbus applies its own timeout and retries (TCP)
                    return await fn(req.address, count=req.count, device_id=self.unit_id)
                async with asyncio.timeout(timeout_s):
                    return await fn(req.address, count=req.count, device_id=self.unit_id)
            except ConnectionException as e:
                raise LinkDown(self.name, str(e) or "not connected") from e
            except (ModbusException, TimeoutError) as e:
                last = str(e) or f"no answer within {timeout_s} s"
                if timeout_s is None:
                    raise DeviceUnreachable(self.name, last) from e
            except OSError as e:
                raise LinkDown(self.name, str(e) or type(e).__name__) from e
            finally:
                if pause:
                    await asyncio.sleep(pause)
        raise DeviceUnreachable(self.name, f"{last} ({tries} tries)")

    async def read(self, client: Any, *, timeout_s: float | None = None, retries: int = 0,
                   pause: float = 0.0) -> list[Reading]:
        """Read every request of the plan; raises `DeviceUnreachable` on a comms failure.

        ``timeout_s``/``retries``: applied here per request (RTU); None leaves them to pymodbus.
        ``pause``: silence after every exchange (RTU inter-frame gap)."""
        out: list[Reading] = []
        source = self.source
        for req in self._requests:
            ts = self.now_ns()
            rr = await self._ask(client, req, timeout_s, retries, pause)
            if rr.isError():
                code = getattr(rr, "exception_code", "?")
                self.metrics.inc("modbus_exception_responses")
                log.debug("%s: exception response %s to %s@%d", self.name, code, req.table,
                          req.address)
                out += self._flagged(req, ts, _DEVICE_FAULT)
                continue
            if getattr(rr, "function_code", None) != _FUNCTION_CODES[req.table]:
                # pymodbus pairs a reply with its request by transaction id only.
                self._bad(req, f"function code {getattr(rr, 'function_code', None)} in the reply "
                               f"to a {req.table} read (expected {_FUNCTION_CODES[req.table]})")
                out += self._flagged(req, ts, _DEVICE_FAULT)
                continue
            if req.table in BIT_TABLES:
                bits = rr.bits
                if len(bits) < req.count:
                    self.metrics.inc("modbus_short_responses")
                    out += self._flagged(req, ts, _DEVICE_FAULT)
                    continue
                if len(bits) > 8 * ((req.count + 7) // 8):  # a reply carries whole bytes
                    self._bad(req, f"{len(bits)} bits for {req.count} requested")
                    out += self._flagged(req, ts, _DEVICE_FAULT)
                    continue
                for m in req.members:
                    out.append(new_reading(m.id, ts,
                                           (1.0 if bits[m.offset] else 0.0) * m.scale + m.add,
                                           m.unit, source))
                continue
            regs = rr.registers
            if len(regs) < req.count:
                self.metrics.inc("modbus_short_responses")
                out += self._flagged(req, ts, _DEVICE_FAULT)
                continue
            if len(regs) > req.count:  # the byte count must be exactly 2 x the quantity asked
                self._bad(req, f"{len(regs)} registers for {req.count} requested")
                out += self._flagged(req, ts, _DEVICE_FAULT)
                continue
            block = req.block
            if block is not None:  # one struct for the whole read (nearly every device)
                values = block(regs)
                if _block_readings is None or not _block_readings(
                        out, req.fast, values, ts, source, _SENTINEL, Reading):
                    block_readings_py(out, req.fast, values, ts, source)
                continue
            for m in req.members:
                assert m.decoder is not None
                value, sentinel = m.decoder(regs[m.offset:m.offset + m.count])
                if sentinel:
                    out.append(new_reading(m.id, ts, math.nan, m.unit, source, _SENTINEL))
                else:
                    out.append(new_reading(m.id, ts, value * m.scale + m.add, m.unit, source))
        return out


class ModbusTcpPoller:
    """One Modbus TCP device: one connection, one task."""

    def __init__(self, dev: ModbusTcpDevice, sink: Sink, metrics: Metrics,
                 links: ModbusLinks | None = None, *,
                 now_ns: Callable[[], int] = time.time_ns) -> None:
        self.dev = dev
        self.name = dev.name
        self.sink = sink
        self.metrics = metrics
        self.source = f"modbus_tcp:{dev.name}"
        self.component = f"device:{dev.name}"
        self.points = dev.points
        self.reader = UnitReader(dev.name, dev.unit_id, dev.points, max_registers=dev.max_registers,
                                 max_gap=dev.max_gap, source=self.source, metrics=metrics,
                                 now_ns=now_ns)
        self.loop = PollLoop(dev.name, self.source, self.reader.infos, dev, sink, metrics, log,
                             now_ns=now_ns)
        self.link: ModbusLink[LeanTcpClient] = _links(links).get(
            ModbusLinks.tcp_key(dev.host, dev.port), self._client)

    @property
    def plan(self) -> list[ReadRequest]:
        return self.reader.plan

    @property
    def polls(self) -> int:
        return self.loop.polls

    @property
    def missed(self) -> int:
        return self.loop.missed

    def _client(self) -> LeanTcpClient:
        return LeanTcpClient(self.dev.host, port=self.dev.port, timeout=self.dev.timeout_s,
                             retries=self.dev.retries, name=self.dev.name)

    async def poll_once(self, client: LeanTcpClient) -> list[Reading]:
        """Read every request of the plan; raises `DeviceUnreachable` on a comms failure."""
        try:
            return await self.reader.read(client)
        except LinkDown:
            raise
        except DeviceUnreachable as e:  # TCP: a timeout leaves the connection in doubt
            raise LinkDown(e.device, e.reason) from e

    async def run(self) -> None:
        client, lock = self.link.client, self.link.lock

        async def attempt() -> list[Reading]:
            async with lock:  # a whole poll: a control write waits for its end
                try:
                    if not client.connected and not await client.connect():
                        raise LinkDown(self.dev.name,
                                       f"cannot connect to {self.dev.host}:{self.dev.port}")
                    return await self.poll_once(client)
                except DeviceUnreachable:
                    # reset the connection while no one else (control) is using it
                    client.close()
                    raise

        try:
            await self.loop.run(attempt)
        finally:
            client.close()


def serial_client(b: ModbusRtuBus) -> AsyncModbusSerialClient:
    """The client of one serial line (shared by its units and by control writes to them)."""
    # Timeouts and retries are applied per request by their users; this is only a backstop.
    backstop = max(u.timeout_s for u in b.units) + 1.0
    return AsyncModbusSerialClient(
        b.port, framer=FramerType.RTU, baudrate=b.baudrate, bytesize=b.bytesize,
        parity=b.parity, stopbits=b.stopbits, timeout=backstop, retries=0,
        reconnect_delay=0, name=b.name)


class ModbusRtuBusPoller:
    """One RS-485 port: every unit on it polls through one client, one at a time."""

    def __init__(self, bus: ModbusRtuBus, sink: Sink, metrics: Metrics,
                 links: ModbusLinks | None = None, *,
                 now_ns: Callable[[], int] = time.time_ns) -> None:
        self.bus = bus
        self.name = bus.name
        self.metrics = metrics
        self.pause = bus.frame_pause_s()
        self.units: list[tuple[ModbusRtuUnit, UnitReader, PollLoop]] = []
        for u in bus.units:
            source = f"modbus_rtu:{bus.name}/{u.name}"
            reader = UnitReader(u.name, u.unit_id, u.points, max_registers=u.max_registers,
                                max_gap=u.max_gap, source=source, metrics=metrics,
                                now_ns=now_ns)
            self.units.append((u, reader, PollLoop(u.name, source, reader.infos, u, sink,
                                                    metrics, log, now_ns=now_ns)))
        self.link: ModbusLink[AsyncModbusSerialClient] = _links(links).get(
            ModbusLinks.serial_key(bus.port), self._client)
        self.lock = self.link.lock
        self.client: AsyncModbusSerialClient | None = None

    def loop_of(self, unit_name: str) -> PollLoop:
        for u, _, loop in self.units:
            if u.name == unit_name:
                return loop
        raise KeyError(unit_name)

    def _client(self) -> AsyncModbusSerialClient:
        return serial_client(self.bus)

    async def _poll_unit(self, client: AsyncModbusSerialClient, u: ModbusRtuUnit,
                         reader: UnitReader, loop: PollLoop) -> None:
        async def attempt() -> list[Reading]:
            async with self.lock:
                try:
                    if not client.connected and not await client.connect():
                        raise LinkDown(u.name, f"cannot open serial port {self.bus.port}")
                    return await reader.read(client, timeout_s=u.timeout_s, retries=u.retries,
                                             pause=self.pause)
                except LinkDown:  # the port itself; a silent unit leaves it open
                    client.close()  # (under the lock: no other exchange is using it)
                    raise

        await loop.run(attempt)

    async def run(self) -> None:
        client = self.client = self.link.client
        try:
            async with asyncio.TaskGroup() as tg:
                for u, reader, loop in self.units:
                    tg.create_task(self._poll_unit(client, u, reader, loop),
                                   name=f"rtu:{self.bus.name}/{u.name}")
        finally:
            client.close()
