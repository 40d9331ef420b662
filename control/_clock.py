"""Where the control service reads time: given to each part, so tests can inject their own."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SYSTEM_CLOCK", "Clock"]


@dataclass(frozen=True)
class Clock:
    """Wall time (ns since the epoch: command windows, acks, audit records, rate windows) and a
    monotonic clock (seconds: leases, budgets, purge timers)."""

    now_ns: Callable[[], int] = time.time_ns
    monotonic: Callable[[], float] = time.monotonic

    def now_ms(self) -> int:
        return self.now_ns() // 1_000_000


SYSTEM_CLOCK = Clock()
