"""Counters and component states, shared by every task of the daemon and served by health."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class ComponentState:
    state: str = "starting"  # starting | ok | failing | stopped | degraded | alarm
    since_ns: int = field(default_factory=time.time_ns)
    detail: str = ""
    last_success_ns: int = 0
    consecutive_failures: int = 0


class Metrics:
    """Process-wide counters (monotonic), gauges (a current level, e.g. a backlog) and the
    state of each component (device, uplink...)."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.gauges: dict[str, float] = {}
        self.components: dict[str, ComponentState] = {}

    def set_gauge(self, name: str, value: float) -> None:
        self.gauges[name] = value

    def inc(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def component(self, name: str) -> ComponentState:
        c = self.components.get(name)
        if c is None:
            c = self.components[name] = ComponentState()
        return c

    def set_state(self, name: str, state: str, detail: str = "") -> bool:
        """Set a component's state; True when it changed (so callers log once per change)."""
        c = self.component(name)
        now = time.time_ns()
        if state == "ok":
            c.last_success_ns = now
            c.consecutive_failures = 0
        elif state == "failing":
            c.consecutive_failures += 1
        changed = c.state != state
        if changed:
            c.state, c.since_ns = state, now
        c.detail = detail
        return changed

    def snapshot(self) -> dict[str, object]:
        return {
            "counters": dict(sorted(self.counters.items())),
            "gauges": dict(sorted(self.gauges.items())),
            "components": {
                k: {"state": v.state, "since_ns": v.since_ns, "detail": v.detail,
                    "last_success_ns": v.last_success_ns,
                    "consecutive_failures": v.consecutive_failures}
                for k, v in sorted(self.components.items())
            },
        }
