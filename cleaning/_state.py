"""The trailing state of the stateful checks (flatline, counter) and the time conversion, shared
by the streaming path (`cleaning._stream`) and the numpy kernels (`cleaning._checks`).

Nothing here imports numpy when it is imported: the daemon's cleaning runs the scalar and the
compiled paths, and loads numpy only when a chunk is vectorised (design 008, decision 26).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._rules import counter_allowed, counter_steps

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    FloatArray = NDArray[np.float64]

_NORMAL, _ROLLOVER, _ABNORMAL = 0, 1, 2


def seconds_to_ns(seconds: float) -> int:
    """Seconds (float) to whole nanoseconds, rounded to the nearest nanosecond."""
    return round(seconds * 1_000_000_000)


@dataclass(slots=True)
class FlatState:
    last_value: float
    run_start_ts: int
    run_length: int


@dataclass(slots=True)
class CounterState:
    """``ref``: the last accepted sample (value, ts, index). ``last``: the last sample seen.
    ``pending``: the last sample jumped (flagged COUNTER_GLITCH) and is not yet resolved."""

    ref_v: float
    ref_t: int
    ref_k: int
    last_v: float
    last_t: int
    next_k: int
    pending: bool


@dataclass(frozen=True, slots=True)
class CounterParams:
    modulus: float  # register_max + resolution: the amount lost when the register wraps
    max_step: float | None
    max_rate_per_s: float | None

    def allowed(self, dt_ns: FloatArray | float, dk: FloatArray | float) -> FloatArray:
        """The largest plausible increase over ``dt_ns`` nanoseconds and ``dk`` samples."""
        import numpy as np

        a = counter_allowed(
            self.max_step, self.max_rate_per_s, np.asarray(dt_ns, dtype=np.float64), dk
        )
        return np.broadcast_to(np.asarray(a, dtype=np.float64), np.shape(dt_ns))

    def classify(
        self, dv: FloatArray | float, dt_ns: FloatArray | float, dk: FloatArray | float
    ) -> NDArray[np.int8]:
        import numpy as np

        allowed = self.allowed(dt_ns, dk)
        dv = np.asarray(dv, dtype=np.float64)
        normal, roll = counter_steps(dv, allowed, self.modulus)
        out = np.full(dv.shape, _ABNORMAL, dtype=np.int8)
        out[normal] = _NORMAL
        out[roll] = _ROLLOVER
        return out
