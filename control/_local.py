"""Local rules: the leak detector and the combustion trim (task ``control:rules``), and the
setpoint leases that fall back when they run out.

Rules act on committed readings from the pipeline tap (a bounded queue: beyond 10,000 waiting
readings the newest are dropped and counted). They write through `Actuator.local_write` (no
remote policy: local rules win) and hold points against remote commands through
`SafetyState.hold` (journaled, so a hold outlives a restart). Alarms are published retained.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable

from control._actuation import Actuator, num
from control._clock import SYSTEM_CLOCK, Clock
from control._config import ControlConfig, WritablePoint
from control._journal import canonical
from control._policy import Override
from control._rules import LeakDetector, trim_forbid, trim_target
from control._safety import SafetyState
from mrv_core import Metrics, Reading, is_valid, raise_if_cancelling

log = logging.getLogger("mrv.control")


class LocalRules:
    def __init__(self, *, gateway_id: str, config: ControlConfig, metrics: Metrics,
                 actuator: Actuator, safety: SafetyState, alarm: Callable[[bytes], None],
                 reading_points: Iterable[str] | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.gw = gateway_id
        self.clock = clock
        self.metrics = metrics
        self.actuator = actuator
        self.safety = safety
        self.alarm = alarm
        self.points: dict[str, WritablePoint] = {p.id: p for p in config.points}
        self.leases: dict[str, float] = {}  # point -> its deadline on the monotonic clock
        self.queue: asyncio.Queue[Reading] = asyncio.Queue(10_000)
        known = set(reading_points) if reading_points is not None else None
        rules = config.rules
        self.leak_rule = rules.leak
        self.trim_rule = rules.combustion
        for name, rule, point in (("leak", rules.leak, rules.leak and rules.leak.gas_point),
                                  ("combustion", rules.combustion,
                                   rules.combustion and rules.combustion.o2_point)):
            if rule is not None and known is not None and point not in known:
                msg = (f"rule {name}: reading point {point!r} is not acquired by any device; "
                       "the rule is disabled")
                log.critical(msg)
                metrics.set_state(f"control:rule:{name}", "alarm", msg)
                if name == "leak":
                    self.leak_rule = None
                else:
                    self.trim_rule = None
        self.leak = (LeakDetector(self.leak_rule.threshold, self.leak_rule.samples,
                                  self.leak_rule.clear_level, self.leak_rule.clear_samples)
                     if self.leak_rule else None)
        self._last_trim = -math.inf
        self._leak_write_pending = False
        self.rule_points = {r for r in (self.leak_rule and self.leak_rule.gas_point,
                                        self.trim_rule and self.trim_rule.o2_point) if r}

    # -- restart --------------------------------------------------------------------------

    def holds_point(self, rule: str, point: str) -> bool:
        """Whether ``rule`` is configured (and live) to hold ``point``."""
        return ((rule == "leak" and self.leak_rule is not None
                 and point == self.leak_rule.vent_point)
                or (rule == "combustion" and self.trim_rule is not None
                    and point == self.trim_rule.damper_point))

    def restored(self, holds: list[tuple[str, str]]) -> None:
        """Holds restored from the journal: a leak hold means the alarm is still raised."""
        for rule, _ in holds:
            if rule == "leak" and self.leak is not None:
                # the alarm is still raised: it clears only on clear_samples good readings,
                # and the vent is checked (opened if need be) at the next gas sample
                self.leak.active = True
                self._leak_write_pending = True

    # -- readings -------------------------------------------------------------------------

    def feed(self, chunk: list[Reading]) -> None:
        """From the pipeline tap: never blocks."""
        for r in chunk:
            if r.point_id in self.rule_points:
                try:
                    self.queue.put_nowait(r)
                except asyncio.QueueFull:
                    self.metrics.inc("control_rule_readings_dropped")

    async def run(self) -> None:
        while True:
            raise_if_cancelling()
            r = await self.queue.get()
            valid = is_valid(r.quality) and not math.isnan(r.value)
            if self.leak_rule is not None and r.point_id == self.leak_rule.gas_point:
                await self._leak_sample(r, valid)
            if self.trim_rule is not None and r.point_id == self.trim_rule.o2_point:
                await self._trim_sample(r, valid)

    async def _leak_sample(self, r: Reading, valid: bool) -> None:
        rule, det = self.leak_rule, self.leak
        assert rule is not None and det is not None
        event = det.feed(r.value, valid)
        vent = self.points[rule.vent_point]
        if event == "raised":
            self.metrics.inc("control_leak_alarms")
            await self.safety.hold(vent.id, Override(
                "leak", "decrease", f"combustible gas {r.value:g} > {rule.threshold:g}"),
                self.clock.now_ms())
            self._alarm("leak", "raised", r, rule.threshold)
            log.warning("control: LEAK alarm: %s = %g %s (threshold %g); opening %s to %g",
                        r.point_id, r.value, r.unit, rule.threshold, vent.id, rule.safe_opening)
            why = {"event": "leak-raised", "trigger": {"point": r.point_id, "value": r.value,
                                                       "seq": r.seq, "ts_ns": r.ts_ns},
                   "threshold": rule.threshold}
            self._leak_write_pending = await self.actuator.local_write(
                "leak", vent, self._open_vent, why) == "failed"
        elif event == "cleared":
            await self.safety.release(vent.id)
            self._alarm("leak", "cleared", r, rule.clear_level)
            log.warning("control: leak alarm cleared: %s = %g", r.point_id, r.value)
            await self.actuator.journal.now("local-rule", "leak", {
                "event": "leak-cleared", "rule": "leak", "point": vent.id,
                "trigger": {"point": r.point_id, "value": r.value, "seq": r.seq,
                            "ts_ns": r.ts_ns}, "clear_below": rule.clear_level})
        elif det.active and self._leak_write_pending:
            # the vent write failed when the alarm rose: retry on every sample while it lasts
            self._leak_write_pending = await self.actuator.local_write(
                "leak", vent, self._open_vent, {"event": "leak-retry"}) == "failed"

    def _open_vent(self, current: float | None) -> float | None:
        """The leak rule's vent target: the safe opening, unless the vent is open wider."""
        assert self.leak_rule is not None
        safe = self.leak_rule.safe_opening
        return safe if current is None or current < safe else None

    def _alarm(self, rule: str, state: str, r: Reading, level: float) -> None:
        self.alarm(canonical({
            "gateway": self.gw, "rule": rule, "state": state, "point": r.point_id,
            "value": num(r.value), "unit": r.unit, "level": level,
            "ts_ms": self.clock.now_ms()}).encode())

    async def _trim_sample(self, r: Reading, valid: bool) -> None:
        rule = self.trim_rule
        assert rule is not None
        damper = self.points[rule.damper_point]
        forbid = trim_forbid(r.value, low=rule.low, high=rule.high) if valid else None
        if forbid is None:
            if valid:
                await self.safety.release(damper.id)
        else:
            await self.safety.hold(damper.id, Override(
                "combustion", forbid,
                f"flue O2 {r.value:g} outside [{rule.low:g}, {rule.high:g}]"), self.clock.now_ms())
        if not valid or forbid is None:
            return
        now = self.clock.monotonic()
        if now - self._last_trim < rule.interval_s:
            return
        self._last_trim = now
        o2 = r.value

        def target(current: float | None) -> float | None:
            if current is None:
                return None
            return trim_target(o2, current, low=rule.low, high=rule.high, step=rule.step,
                               lo=rule.min, hi=rule.max)

        await self.actuator.local_write("combustion", damper, target, {
            "event": "o2-trim", "trigger": {"point": r.point_id, "value": o2, "seq": r.seq,
                                            "ts_ns": r.ts_ns},
            "band": [rule.low, rule.high]})

    # -- leases ---------------------------------------------------------------------------

    def lease(self, point: WritablePoint) -> None:
        """An applied remote write to a leased point: it falls back when the lease runs out."""
        if point.lease_s is not None:
            self.leases[point.id] = self.clock.monotonic() + point.lease_s

    async def expire_leases(self, now: float) -> None:
        for pid, deadline in list(self.leases.items()):
            if now >= deadline:
                await self._lease_expired(pid)

    async def _lease_expired(self, pid: str) -> None:
        self.leases.pop(pid, None)
        p = self.points[pid]
        assert p.fallback is not None
        fallback = p.fallback
        hold = self.safety.overrides.get(pid)
        self.metrics.inc("control_leases_expired")
        log.info("control: lease of %s expired: back to %g", pid, fallback)

        def target(cur: float | None) -> float | None:
            if hold is None:
                return fallback
            if cur is None:
                return None  # a local safety hold is on and the present value is unknown
            way = "decrease" if fallback < cur else "increase" if fallback > cur else "none"
            return None if way == hold.forbid else fallback  # the hold wins over the lease

        status = await self.actuator.local_write("lease", p, target,
                                                 {"event": "lease-expired",
                                                  "lease_s": p.lease_s})
        if status == "failed":  # try again a little later
            self.leases[pid] = self.clock.monotonic() + 5.0
