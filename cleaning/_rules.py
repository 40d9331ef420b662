"""The definition of each check: one rule per check, written once.

A rule is the arithmetic that decides a flag. It is written with Python operators only
(``<``, ``&``, ``|``, ``abs``, ``*``) so that the *same* function runs elementwise on numpy
arrays (the batch path, `cleaning._checks`: a long chunk, a backfill) and on plain Python
numbers (the streaming path, `cleaning._stream.PointCleaner._step`: one reading of one point).
The two paths differ only in how they feed a rule its operands: the batch path shifts arrays
by one sample (the previous sample, the running maximum ...), the streaming path keeps the same
values as trailing state. Neither path decides a flag on its own.

(mypy does not type ``abs`` of a float-or-array union: the few ``type: ignore`` comments on
``abs`` say no more than that.)

Rules return a bool (scalar operands) or a bool array (array operands); the caller turns it
into a `Quality` bit. Conventions that make both paths agree bit for bit:

* float64 arithmetic in the same order (Python floats are IEEE doubles, as numpy's float64);
* timestamp differences wrap around as numpy's int64 does (`wrap_i64`);
* NaN is equal to nothing; a comparison with NaN is false.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, overload

if TYPE_CHECKING:  # numpy is not imported at run time here: the rules take arrays, not make them
    import numpy as np
    from numpy.typing import NDArray

__all__ = [
    "MAD_SCALE",
    "SENTINEL_RTOL",
    "clamp_i64",
    "counter_allowed",
    "counter_steps",
    "flat_continues",
    "flat_reached",
    "out_of_range",
    "rate_exceeded",
    "same_reading",
    "sentinel_hit",
    "sentinel_table",
    "spike_beyond_floor",
    "spike_outlier",
    "ts_limits",
    "wrap_i64",
]

if TYPE_CHECKING:
    FloatArray = NDArray[np.float64]
    IntArray = NDArray[np.int64]
    BoolArray = NDArray[np.bool_]

MAD_SCALE = 1.4826  # MAD -> standard deviation for normally distributed data
SENTINEL_RTOL = 1.2e-7  # float32 precision: a float32 register sentinel written in decimal

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1


def clamp_i64(x: int) -> int:
    return I64_MIN if x < I64_MIN else I64_MAX if x > I64_MAX else x


def wrap_i64(x: int) -> int:
    """``x`` wrapped into int64 as numpy's int64 arithmetic wraps it (timestamps more than
    292 years apart)."""
    if I64_MIN <= x <= I64_MAX:
        return x
    return ((x - I64_MIN) & 0xFFFF_FFFF_FFFF_FFFF) + I64_MIN


# --------------------------------------------------------------------------------------------
# sentinels: ``|v - s| <= 1.2e-7 * |s|``; an infinite sentinel matches exactly


def sentinel_table(sentinels: tuple[float, ...] | list[float]) -> tuple[tuple[float, float | None], ...]:
    """``(s, tolerance)`` for each configured sentinel; tolerance None: matched exactly."""
    return tuple((float(s), None if math.isinf(float(s)) else SENTINEL_RTOL * abs(float(s)))
                 for s in sentinels)


@overload
def sentinel_hit(v: float, table: tuple[tuple[float, float | None], ...]) -> bool: ...
@overload
def sentinel_hit(v: FloatArray, table: tuple[tuple[float, float | None], ...]) -> BoolArray: ...
def sentinel_hit(
    v: float | FloatArray, table: tuple[tuple[float, float | None], ...]
) -> bool | BoolArray:
    hit: bool | BoolArray = False
    for s, tol in table:
        hit = hit | ((v == s) if tol is None else (abs(v - s) <= tol))  # type: ignore[operator]
    return hit


# --------------------------------------------------------------------------------------------
# range: ``v < min`` or ``v > max`` (NaN never)


@overload
def out_of_range(v: float, lo: float | None, hi: float | None) -> bool: ...
@overload
def out_of_range(v: FloatArray, lo: float | None, hi: float | None) -> bool | BoolArray: ...
def out_of_range(v: float | FloatArray, lo: float | None, hi: float | None) -> bool | BoolArray:
    below = False if lo is None else v < lo
    above = False if hi is None else v > hi
    return below | above


# --------------------------------------------------------------------------------------------
# timestamps: future ``t > now + max_future``, stale ``t < now - max_age``; duplicate / non
# monotonic ``t == m`` / ``t < m`` with ``m`` the largest earlier timestamp that was not in the
# future (a future timestamp does not raise it)


def ts_limits(now_ns: int, future_ns: int, age_ns: int | None) -> tuple[int, int | None]:
    """``(future_limit, stale_limit)``: a timestamp above the first is in the future, one
    below the second is stale. Clamped to int64, as numpy compares int64 timestamps."""
    hi = now_ns + future_ns
    if not I64_MIN <= hi <= I64_MAX:
        hi = clamp_i64(hi)
    if age_ns is None:
        return hi, None
    lo = now_ns - age_ns
    if not I64_MIN <= lo <= I64_MAX:
        lo = clamp_i64(lo)
    return hi, lo


# --------------------------------------------------------------------------------------------
# duplicate reading: the same timestamp and the same value as the previous reading (NaN
# equals NaN here)


@overload
def same_reading(t: int, v: float, pt: int, pv: float) -> bool: ...
@overload
def same_reading(t: IntArray, v: FloatArray, pt: IntArray, pv: FloatArray) -> BoolArray: ...
def same_reading(
    t: int | IntArray, v: float | FloatArray, pt: int | IntArray, pv: float | FloatArray
) -> bool | BoolArray:
    return (t == pt) & ((v == pv) | ((v != v) & (pv != pv)))  # x != x: x is NaN


# --------------------------------------------------------------------------------------------
# value checks, on eligible samples (finite and valid), ``p`` the previous eligible sample


@overload
def rate_exceeded(dt_ns: float, dv: float, max_per_s: float) -> bool: ...
@overload
def rate_exceeded(dt_ns: FloatArray, dv: FloatArray, max_per_s: float) -> BoolArray: ...
def rate_exceeded(
    dt_ns: float | FloatArray, dv: float | FloatArray, max_per_s: float
) -> bool | BoolArray:
    """Rate of change: ``|v - v_p| > max_per_s * (t - t_p)`` seconds; a time step that is not
    positive is not judged (the timestamp check reports it). ``dt_ns`` is the int64 step
    (wrapped) as a float."""
    return (dt_ns > 0) & (abs(dv) > max_per_s * (dt_ns * 1e-9))  # type: ignore[operator]


@overload
def spike_beyond_floor(x: float, med: float, min_dev: float) -> bool: ...
@overload
def spike_beyond_floor(x: FloatArray, med: FloatArray, min_dev: float) -> BoolArray: ...
def spike_beyond_floor(
    x: float | FloatArray, med: float | FloatArray, min_dev: float
) -> bool | BoolArray:
    """The part of `spike_outlier` that needs no MAD: ``|x - median(W)| > min_dev``. When it
    is false, no MAD makes ``x`` a spike (the streaming path then skips computing the MAD)."""
    return abs(x - med) > min_dev  # type: ignore[operator]


@overload
def spike_outlier(x: float, med: float, mad: float, scale: float, min_dev: float) -> bool: ...
@overload
def spike_outlier(
    x: FloatArray, med: FloatArray, mad: FloatArray, scale: float, min_dev: float
) -> BoolArray: ...
def spike_outlier(
    x: float | FloatArray,
    med: float | FloatArray,
    mad: float | FloatArray,
    scale: float,
    min_dev: float,
) -> bool | BoolArray:
    """Hampel filter: ``|x - median(W)| > max(scale * MAD(W), min_dev)`` with ``W`` the
    previous ``window`` eligible values and ``scale = k * 1.4826``. A NaN threshold (inf * 0)
    flags nothing. The medians are those of `_checks._median_rows_inplace` (the mean of the
    two middle values for an even window)."""
    return spike_beyond_floor(x, med, min_dev) & (abs(x - med) > scale * mad)  # type: ignore[operator,arg-type]


@overload
def flat_continues(v: float, prev: float, tolerance: float) -> bool: ...
@overload
def flat_continues(v: FloatArray, prev: FloatArray, tolerance: float) -> BoolArray: ...
def flat_continues(v: float | FloatArray, prev: float | FloatArray, tolerance: float) -> bool | BoolArray:
    """Flatline: a sample within ``tolerance`` of the previous one continues its run (NaN: no
    previous sample, a run starts)."""
    return abs(v - prev) <= tolerance  # type: ignore[operator]


@overload
def flat_reached(length: int, elapsed_ns: int, count: int | None, duration_ns: int | None) -> bool: ...
@overload
def flat_reached(
    length: IntArray, elapsed_ns: IntArray, count: int | None, duration_ns: int | None
) -> bool | BoolArray: ...
def flat_reached(
    length: int | IntArray, elapsed_ns: int | IntArray, count: int | None, duration_ns: int | None
) -> bool | BoolArray:
    """Flatline: the run up to this sample holds at least ``count`` samples, or this sample
    comes at least ``duration_ns`` after the run's first (``elapsed_ns``, int64-wrapped)."""
    by_count = False if count is None else length >= count
    by_time = False if duration_ns is None else elapsed_ns >= duration_ns
    return by_count | by_time


# --------------------------------------------------------------------------------------------
# counter: a step is normal (a plausible increase), a rollover (a plausible increase across the
# register wrap) or abnormal (a jump)


def _maximum(a: float | FloatArray, b: float | FloatArray) -> float | FloatArray:
    if type(a) is float and type(b) is float:
        return b if b > a else a
    if isinstance(a, int | float) and isinstance(b, int | float):  # as np.maximum: in float64
        fa, fb = float(a), float(b)
        return fb if fb > fa or fb != fb else fa
    import numpy as np

    return np.maximum(a, b)


def counter_allowed(
    max_step: float | None,
    max_rate_per_s: float | None,
    dt_ns: float | FloatArray,
    dk: float | FloatArray,
) -> float | FloatArray:
    """The largest plausible increase over ``dt_ns`` nanoseconds and ``dk`` samples."""
    by_step = None if max_step is None else max_step * dk
    if max_rate_per_s is None:
        return -math.inf if by_step is None else by_step  # -inf: nothing is plausible
    by_rate = max_rate_per_s * (_maximum(dt_ns, 0.0) * 1e-9)
    return by_rate if by_step is None else _maximum(by_step, by_rate)


@overload
def counter_steps(dv: float, allowed: float, modulus: float) -> tuple[bool, bool]: ...
@overload
def counter_steps(
    dv: FloatArray, allowed: float | FloatArray, modulus: float
) -> tuple[BoolArray, BoolArray]: ...
def counter_steps(
    dv: float | FloatArray, allowed: float | FloatArray, modulus: float
) -> tuple[bool | BoolArray, bool | BoolArray]:
    """``(normal, rollover)`` of a step ``dv``; neither: abnormal. ``modulus`` is
    ``register_max + resolution``, the amount lost when the register wraps."""
    normal = (dv >= 0) & (dv <= allowed)
    wrapped = dv + modulus
    rollover = (dv < 0) & (wrapped >= 0) & (wrapped <= allowed)
    return normal, rollover
