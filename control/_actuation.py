"""Actuation with read-back: every write to the plant, remote or local, goes through here.

One `asyncio.Lock` per writable point serialises the read-decide-write-read-back sequence of
that point (a remote command and a local rule never interleave on one point); below it, each
device's Modbus link (`control._modbus`) serialises the requests on the connection, shared
with the acquisition poller. A write is read back and compared register for register:
`WriteOutcome` says what happened. The PLC heartbeat is written here too.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from control._clock import SYSTEM_CLOCK, Clock
from control._config import ActuatorDevice, ControlConfig, SignalConfig, WritablePoint
from control._journal import Journal
from control._modbus import ActuatorError, PlantIO
from drivers.modbus import ModbusLinks
from mrv_core import Metrics

if TYPE_CHECKING:
    from drivers.modbus import ModbusRtuBus

log = logging.getLogger("mrv.control")


def num(x: float | None) -> float | None:
    """A value for an audit record: NaN becomes null."""
    return None if x is None or math.isnan(x) else x


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """The result of one write and its read-back."""

    status: Literal["applied", "failed"]
    reason: Literal["write-failed", "readback-mismatch"] | None
    detail: str
    registers: list[int] | None  # written (None: the write itself failed)
    read_back: float | None
    read_back_registers: list[int] | None

    @property
    def applied(self) -> bool:
        return self.status == "applied"

    def audit(self) -> dict[str, Any]:
        """The fields of a ``write`` / ``local-rule`` audit record this outcome fills."""
        return {"registers": self.registers, "read_back": num(self.read_back),
                "read_back_registers": self.read_back_registers, "status": self.status,
                "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class PlantSnapshot:
    """What a command's policy check reads from the plant just before deciding."""

    current: float | None
    signals: dict[str, float]
    errors: list[str]


LocalStatus = Literal["applied", "failed", "skipped"]


class Actuator:
    def __init__(self, *, config: ControlConfig, metrics: Metrics, journal: Journal,
                 links: ModbusLinks | None = None,
                 buses: Mapping[str, ModbusRtuBus] | None = None) -> None:
        self.metrics = metrics
        self.journal = journal
        self.plant = PlantIO(config.devices, links, buses)
        self.signals: dict[str, SignalConfig] = {s.id: s for s in config.signals}
        self.locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def snapshot(self, point: WritablePoint) -> PlantSnapshot:
        """The point's present value and its permissive signals (errors collected)."""
        current: float | None = None
        signals: dict[str, float] = {}
        errors: list[str] = []
        try:
            current, _ = await self.plant.read_point(point)
        except ActuatorError as e:
            errors.append(str(e))
        for perm in point.permissives:
            if perm.signal in signals:
                continue
            try:
                signals[perm.signal] = await self.plant.read_signal(self.signals[perm.signal])
            except ActuatorError as e:
                errors.append(str(e))
        return PlantSnapshot(current, signals, errors)

    async def write_and_check(self, point: WritablePoint, value: float) -> WriteOutcome:
        """Write, read back, compare registers."""
        try:
            regs = await self.plant.write_point(point, value)
        except (ActuatorError, ValueError) as e:
            self.metrics.inc("control_write_failures")
            rb: float | None = None
            rb_regs: list[int] | None = None
            try:  # what is there now, for the record
                rb, rb_regs = await self.plant.read_point(point)
            except ActuatorError:
                pass
            return WriteOutcome("failed", "write-failed", str(e), None, rb, rb_regs)
        if point.readback_delay_s:
            await asyncio.sleep(point.readback_delay_s)
        try:
            rb, rb_regs = await self.plant.read_point(point)
        except ActuatorError as e:
            self.metrics.inc("control_readback_failures")
            return WriteOutcome("failed", "readback-mismatch",
                                f"written, but the read-back failed: {e}", regs, None, None)
        if rb_regs != regs:
            self.metrics.inc("control_readback_mismatches")
            return WriteOutcome("failed", "readback-mismatch",
                                f"wrote {regs} ({value:g}), read back {rb_regs} ({rb:g})",
                                regs, rb, rb_regs)
        return WriteOutcome("applied", None, "written and read back", regs, rb, rb_regs)

    async def local_write(self, rule: str, point: WritablePoint,
                          decide: Callable[[float | None], float | None],
                          why: dict[str, Any]) -> LocalStatus:
        """A local rule's write (no remote policy: local rules win), read back and audited.
        ``decide(present value or None)`` gives the value to write, or None to leave the
        point alone; it runs under the point's lock, so no remote command interleaves."""
        async with self.locks[point.id]:
            current: float | None = None
            try:
                current, _ = await self.plant.read_point(point)
            except ActuatorError as e:
                log.warning("control: rule %s: cannot read %s: %s", rule, point.id, e)
            value = decide(current)
            if value is None:
                return "skipped"
            out = await self.write_and_check(point, value)
            await self.journal.now("local-rule", rule, {
                **why, "rule": rule, "point": point.id, "previous": num(current),
                "value": value, **out.audit()})
        level = logging.WARNING if not out.applied else logging.INFO
        log.log(level, "control: rule %s set %s = %g: %s", rule, point.id, value,
                out.status if out.reason is None else f"{out.status} ({out.reason}: "
                f"{out.detail})")
        self.metrics.inc(f"control_local_writes_{out.status}")
        return out.status


class Heartbeat:
    """The PLC heartbeat: a counter written to each device that asks for one."""

    def __init__(self, devices: list[ActuatorDevice], plant: PlantIO, metrics: Metrics,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.plant = plant
        self.metrics = metrics
        self.beats = [d for d in devices if d.heartbeat is not None]
        self.tick = min([0.5, *(d.heartbeat.interval_s for d in self.beats if d.heartbeat)])
        self.counter = {d.id: (clock.now_ns() // 10**9) & 0xFFFF for d in self.beats}
        self.due = dict.fromkeys(self.counter, 0.0)

    async def beat(self, now: float) -> None:
        """Write the heartbeat of every device whose interval has passed (monotonic ``now``)."""
        for d in self.beats:
            assert d.heartbeat is not None
            if now < self.due[d.id]:
                continue
            self.due[d.id] = now + d.heartbeat.interval_s
            self.counter[d.id] = (self.counter[d.id] + 1) & 0xFFFF
            try:
                await self.plant.heartbeat(d, self.counter[d.id])
                self.metrics.inc("control_heartbeats")
                if self.metrics.set_state(f"control:device:{d.id}", "ok"):
                    log.info("control: heartbeat to %s running", d.id)
            except ActuatorError as e:
                self.metrics.inc("control_heartbeat_failures")
                if self.metrics.set_state(f"control:device:{d.id}", "failing", str(e)):
                    log.warning("control: heartbeat to %s failed: %s (logged once)", d.id, e)
