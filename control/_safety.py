"""Policy: the state the pure checks of `control._policy` read, kept here and in the journal.

`SafetyState` holds the point limits and issuer keys from the config, the remote writes in
each point's rate window, the local rules' holds (`Override`) and the global enable switch. It
builds the contexts `authenticate` and `authorize` decide on, and makes every change that
must outlive the process durable in the journal first: a rule hold when it changes, a remote
write's time before the write. `restore` brings the journaled state back at start, before
any command is admitted.
"""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Mapping

from control._codec import is_integer_type
from control._config import ControlConfig, WritablePoint
from control._envelope import Command
from control._policy import (
    AuthContext,
    IssuerPolicy,
    Override,
    PermissivePolicy,
    PlantContext,
    PointPolicy,
    Verdict,
    authenticate,
    authorize,
)
from control._state import ReplayStore
from mrv_core import Metrics

log = logging.getLogger("mrv.control")


def point_policy(p: WritablePoint) -> PointPolicy:
    return PointPolicy(
        unit=p.unit, min=p.min, max=p.max, max_step=p.max_step,
        rate_max_writes=p.rate_limit.max_writes,
        rate_window_ms=round(p.rate_limit.window_s * 1000), two_person=p.two_person,
        permissives=tuple(PermissivePolicy(q.signal, q.min, q.max, q.equals, q.when)
                          for q in p.permissives),
        resolution=abs(p.scale) if is_integer_type(p.type) else None, offset=p.offset,
        float_type=None if is_integer_type(p.type) else str(p.type), scale=p.scale)


class SafetyState:
    def __init__(self, *, gateway_id: str, config: ControlConfig, metrics: Metrics,
                 store: Callable[[], Awaitable[ReplayStore]]) -> None:
        self.gw = gateway_id
        self.cfg = config
        self.metrics = metrics
        self._store = store
        self.enabled = config.enabled
        self.policies = {p.id: point_policy(p) for p in config.points}
        self.issuers = {i.key_id: IssuerPolicy(i.key_bytes(), frozenset(i.points))
                        for i in config.issuers}
        self.two_person = frozenset(p.id for p in config.points if p.two_person)
        self.overrides: dict[str, Override] = {}
        self.recent_writes: dict[str, deque[int]] = defaultdict(deque)

    # -- the contexts the pure policy decides on ------------------------------------------

    def auth_context(self, store: ReplayStore, now_ms: int) -> AuthContext:
        return AuthContext(
            gateway_id=self.gw, issuers=self.issuers, two_person_points=self.two_person,
            now_ms=now_ms, skew_ms=round(self.cfg.clock_skew_s * 1000),
            max_lifetime_ms=round(self.cfg.max_lifetime_s * 1000), seen_ids=store.seen,
            last_seq=store.last_seq)

    def authenticate(self, cmd: Command, store: ReplayStore, now_ms: int) -> Verdict:
        return authenticate(cmd, self.auth_context(store, now_ms))

    def authorize(self, cmd: Command, *, now_ms: int, current: float | None,
                  signals: Mapping[str, float]) -> Verdict:
        return authorize(cmd, PlantContext(
            points=self.policies, now_ms=now_ms, current=current, signals=signals,
            recent_writes_ms=self.recent_writes.get(cmd.point, ()), overrides=self.overrides,
            enabled=self.enabled))

    def longest_window_ms(self) -> int:
        return max((p.rate_window_ms for p in self.policies.values()), default=0)

    # -- durable changes ------------------------------------------------------------------

    async def note_write(self, point: str, now_ms: int) -> None:
        """Count a remote write in the point's rate window, in memory and durably in the
        journal (before the write: a restart must not reopen the window)."""
        q = self.recent_writes[point]
        q.append(now_ms)
        window = self.policies[point].rate_window_ms
        while q and now_ms - q[0] >= window:
            q.popleft()
        await (await self._store()).note_write(point, now_ms)

    async def hold(self, point: str, hold: Override, now_ms: int) -> None:
        """Set a local rule's hold, durably when it changes (in memory first: a command
        checked meanwhile already sees it)."""
        before = self.overrides.get(point)
        self.overrides[point] = hold
        if before is None or (before.rule, before.forbid) != (hold.rule, hold.forbid):
            await (await self._store()).set_hold(point, hold.rule, hold.forbid, hold.detail,
                                                 now_ms)

    async def release(self, point: str) -> None:
        if self.overrides.pop(point, None) is not None:
            await (await self._store()).clear_hold(point)

    async def restore(self, store: ReplayStore, now_ms: int,
                      live: Callable[[str, str], bool]) -> list[tuple[str, str]]:
        """The safety state the last process left in the journal: rate-limit windows and local
        rule holds (those ``live(rule, point)`` still configured). Returns the holds restored,
        as (rule, point)."""
        for point, times in store.writes.items():
            policy = self.policies.get(point)
            if policy is None:
                continue
            recent = [t for t in times if 0 <= now_ms - t < policy.rate_window_ms]
            if recent:
                self.recent_writes[point] = deque(recent)
        restored: list[tuple[str, str]] = []
        for point, (rule, forbid, detail) in list(store.holds.items()):
            if not live(rule, point) or forbid not in ("decrease", "increase"):
                log.warning("control: dropping the journaled hold of rule %s on %s: the rule "
                            "is no longer configured for that point", rule, point)
                await store.clear_hold(point)
                continue
            self.overrides[point] = Override(rule, forbid,  # type: ignore[arg-type]
                                             f"{detail} (held since before a restart)")
            self.metrics.inc("control_holds_restored")
            log.warning("control: rule %s still holds %s (no %s) from before the restart",
                        rule, point, forbid)
            restored.append((rule, point))
        return restored
