"""Local rules as pure state machines; the service feeds them live readings and carries out
what they decide. They win over remote commands (through `Override`), and they are not a
safety system: trips and interlocks stay in the PLC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass(slots=True)
class LeakDetector:
    """``threshold`` exceeded for ``samples`` valid readings in a row raises the alarm; it clears
    after ``clear_samples`` valid readings in a row at or below ``clear_level``. Invalid
    readings (NaN, bad quality) neither count nor reset: a dead sensor never clears an alarm."""

    threshold: float
    samples: int
    clear_level: float
    clear_samples: int
    active: bool = False
    _above: int = 0
    _below: int = 0

    def feed(self, value: float, valid: bool = True) -> Literal["raised", "cleared"] | None:
        if not valid or math.isnan(value):
            return None
        if not self.active:
            self._above = self._above + 1 if value > self.threshold else 0
            if self._above >= self.samples:
                self.active, self._above, self._below = True, 0, 0
                return "raised"
            return None
        self._below = self._below + 1 if value <= self.clear_level else 0
        if self._below >= self.clear_samples:
            self.active, self._above, self._below = False, 0, 0
            return "cleared"
        return None


def trim_target(o2: float, current: float, *, low: float, high: float, step: float,
                lo: float, hi: float) -> float | None:
    """The damper position the combustion trim asks for, or None to leave it.

    O2 below ``low``: too little air, open by ``step``; above ``high``: close by ``step``. The
    result stays within [lo, hi]; None when O2 is in band, invalid, or the damper is already at
    the limit in the wanted direction.
    """
    if math.isnan(o2) or math.isnan(current):
        return None
    if o2 < low:
        target = min(hi, current + step)
        if current < lo:
            target = lo
        return target if target > current else None
    if o2 > high:
        target = max(lo, current - step)
        if current > hi:
            target = hi
        return target if target < current else None
    return None


def trim_forbid(o2: float, *, low: float, high: float) -> Literal["decrease", "increase"] | None:
    """While O2 is out of band, remote commands that move the damper the wrong way are refused:
    less air when O2 is low, more air when it is high."""
    if math.isnan(o2):
        return None
    if o2 < low:
        return "decrease"
    if o2 > high:
        return "increase"
    return None
