"""Per-point data-quality checks, vectorised over numpy arrays: the batch path.

Each check's flag is decided by its rule in `cleaning._rules` (the one definition, which the
streaming path `cleaning._stream.PointCleaner._step` calls on one sample); the kernels here
only feed the rules whole arrays, each sample beside its predecessor.

Every public ``check_*`` function is pure: it reads ``ts_ns`` (int64 nanoseconds) and
``values`` (float64) and returns a new ``uint32`` array of `Quality` bits, one per sample,
without touching its inputs. Non-finite values (NaN: a comm fault) are never flagged by the
value checks and never enter their trailing state.

The stateful checks (rate of change, spike, flatline, counter, timestamps, duplicates) are
causal: the flag of sample ``i`` depends only on samples ``<= i``. Their kernels take and
return a small state object so that `PointCleaner` can feed a stream in chunks and get exactly
the flags of the whole stream.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike, NDArray

from mrv_core import INVALID, Quality

from ._rules import (
    MAD_SCALE,
    flat_continues,
    flat_reached,
    out_of_range,
    rate_exceeded,
    same_reading,
    sentinel_hit,
    sentinel_table,
    spike_outlier,
    ts_limits,
)
from ._state import (
    _ABNORMAL,
    _ROLLOVER,
    CounterParams,
    CounterState,
    FlatState,
    seconds_to_ns,
)

__all__ = [
    "check_counter",
    "check_duplicates",
    "check_flatline",
    "check_range",
    "check_rate_of_change",
    "check_sentinels",
    "check_spike",
    "check_timestamps",
    "counter_deltas",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
FlagArray = NDArray[np.uint32]
BoolArray = NDArray[np.bool_]

_I64_MIN = np.iinfo(np.int64).min
_SPIKE_BLOCK = 1 << 16  # windows per block: bounds the temporary memory of the spike check

_U_RANGE = np.uint32(Quality.RANGE)
_U_RATE = np.uint32(Quality.RATE_OF_CHANGE)
_U_SPIKE = np.uint32(Quality.SPIKE)
_U_FLAT = np.uint32(Quality.FLATLINE)
_U_SENTINEL = np.uint32(Quality.SENTINEL)
_U_TS_DUP = np.uint32(Quality.TS_DUPLICATE)
_U_TS_NONMONO = np.uint32(Quality.TS_NON_MONOTONIC)
_U_TS_FUTURE = np.uint32(Quality.TS_FUTURE)
_U_TS_STALE = np.uint32(Quality.TS_STALE)
_U_DUP = np.uint32(Quality.DUPLICATE)
_U_ROLL = np.uint32(Quality.COUNTER_ROLLOVER)
_U_RESET = np.uint32(Quality.COUNTER_RESET)
_U_GLITCH = np.uint32(Quality.COUNTER_GLITCH)
_U_ZERO = np.uint32(0)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _quietly(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Arithmetic on extreme but finite values may overflow to inf; that is intended (an
    infinite difference is simply a large one), so numpy must not warn about it."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with np.errstate(over="ignore", invalid="ignore"):
            return fn(*args, **kwargs)

    return wrapper


def as_ts(ts_ns: ArrayLike) -> IntArray:
    return np.ascontiguousarray(ts_ns, dtype=np.int64)


def as_values(values: ArrayLike) -> FloatArray:
    return np.ascontiguousarray(values, dtype=np.float64)


def _zeros(n: int) -> FlagArray:
    return np.zeros(n, dtype=np.uint32)


def _scatter(n: int, idx: IntArray, flags: FlagArray) -> FlagArray:
    out = _zeros(n)
    out[idx] = flags
    return out


# --------------------------------------------------------------------------------------------
# stateless checks


def check_range(values: ArrayLike, min: float | None = None, max: float | None = None) -> FlagArray:
    """``Quality.RANGE`` where ``value < min`` or ``value > max`` (NaN is never out of range)."""
    v = as_values(values)
    if min is None and max is None:
        return _zeros(v.shape[0])
    return np.where(out_of_range(v, min, max), _U_RANGE, _U_ZERO)


@_quietly
def check_sentinels(values: ArrayLike, sentinels: tuple[float, ...] | list[float]) -> FlagArray:
    """``Quality.SENTINEL`` where a value equals a configured sentinel, to float32 precision
    (``|v - s| <= 1.2e-7 * |s|``), so that ``3.4028235e38`` in YAML matches a float32 register
    holding FLT_MAX. ``inf`` sentinels match exactly."""
    v = as_values(values)
    if not sentinels:
        return _zeros(v.shape[0])
    return np.where(sentinel_hit(v, sentinel_table(sentinels)), _U_SENTINEL, _U_ZERO)


# --------------------------------------------------------------------------------------------
# timestamps and duplicates (every sample, whatever its value)


def timestamps_kernel(
    ts: IntArray,
    now_ns: int,
    future_ns: int,
    age_ns: int | None,
    prev_max: int | None,
) -> tuple[FlagArray, int | None]:
    """Flags and the new running maximum of accepted (not future) timestamps."""
    n = ts.shape[0]
    if n == 0:
        return _zeros(0), prev_max
    future_limit, stale_limit = ts_limits(now_ns, future_ns, age_ns)
    future = ts > future_limit
    flags = np.where(future, _U_TS_FUTURE, _U_ZERO)
    if stale_limit is not None:
        flags |= np.where(ts < stale_limit, _U_TS_STALE, _U_ZERO)
    accepted = ~future
    cm = np.maximum.accumulate(np.where(accepted, ts, _I64_MIN))
    have = np.logical_or.accumulate(accepted)
    prev_cm = np.empty(n, dtype=np.int64)
    prev_have = np.empty(n, dtype=np.bool_)
    prev_cm[1:] = cm[:-1]
    prev_have[1:] = have[:-1]
    prev_cm[0] = _I64_MIN
    prev_have[0] = False
    if prev_max is not None:
        np.maximum(prev_cm, prev_max, out=prev_cm)
        prev_have[:] = True
    flags |= np.where(prev_have & (ts == prev_cm), _U_TS_DUP, _U_ZERO)
    flags |= np.where(prev_have & (ts < prev_cm), _U_TS_NONMONO, _U_ZERO)
    new_max = prev_max
    if bool(have[-1]):
        last = int(cm[-1])
        new_max = last if prev_max is None else max(prev_max, last)
    return flags, new_max


def check_timestamps(
    ts_ns: ArrayLike,
    now_ns: int,
    *,
    max_future_s: float = 5.0,
    max_age_s: float | None = None,
    prev_max_ts: int | None = None,
) -> FlagArray:
    """Timestamp problems, in arrival order:

    * ``TS_FUTURE``: ``ts > now_ns + max_future_s``;
    * ``TS_STALE``: ``ts < now_ns - max_age_s`` (only when ``max_age_s`` is given);
    * ``TS_DUPLICATE`` / ``TS_NON_MONOTONIC``: ``ts`` equal to / below the largest timestamp
      seen before it. Future timestamps do not raise that maximum, so one reading from a
      wrong clock does not make every following reading non-monotonic.

    ``prev_max_ts`` is the maximum carried over from earlier samples of the stream.
    """
    age = None if max_age_s is None else seconds_to_ns(max_age_s)
    flags, _ = timestamps_kernel(as_ts(ts_ns), now_ns, seconds_to_ns(max_future_s), age, prev_max_ts)
    return flags


def duplicates_kernel(
    ts: IntArray, v: FloatArray, prev: tuple[int, float] | None
) -> tuple[FlagArray, tuple[int, float] | None]:
    n = ts.shape[0]
    if n == 0:
        return _zeros(0), prev
    prev_ts = np.empty(n, dtype=np.int64)
    prev_v = np.empty(n, dtype=np.float64)
    prev_ts[1:] = ts[:-1]
    prev_v[1:] = v[:-1]
    have = np.ones(n, dtype=np.bool_)
    if prev is None:
        prev_ts[0] = 0
        prev_v[0] = np.nan
        have[0] = False
    else:
        prev_ts[0], prev_v[0] = prev
    dup = have & same_reading(ts, v, prev_ts, prev_v)
    return np.where(dup, _U_DUP, _U_ZERO), (int(ts[-1]), float(v[-1]))


def check_duplicates(
    ts_ns: ArrayLike,
    values: ArrayLike,
    *,
    prev_ts: int | None = None,
    prev_value: float | None = None,
) -> FlagArray:
    """``Quality.DUPLICATE`` where a reading repeats the previous reading of the stream: the
    same timestamp and the same value (NaN equals NaN here)."""
    prev = None if prev_ts is None else (prev_ts, np.nan if prev_value is None else prev_value)
    flags, _ = duplicates_kernel(as_ts(ts_ns), as_values(values), prev)
    return flags


# --------------------------------------------------------------------------------------------
# value checks. The kernels take only finite samples, in arrival order.


@_quietly
def rate_kernel(
    ts: IntArray, v: FloatArray, max_per_s: float, prev: tuple[int, float] | None
) -> tuple[FlagArray, tuple[int, float] | None]:
    n = ts.shape[0]
    if n == 0:
        return _zeros(0), prev
    p_ts = np.empty(n, dtype=np.int64)
    p_v = np.empty(n, dtype=np.float64)
    p_ts[1:] = ts[:-1]
    p_v[1:] = v[:-1]
    if prev is None:
        p_ts[0] = ts[0]  # dt = 0: the first sample of a stream has no rate
        p_v[0] = v[0]
    else:
        p_ts[0], p_v[0] = prev
    bad = rate_exceeded((ts - p_ts).astype(np.float64), v - p_v, max_per_s)
    return np.where(bad, _U_RATE, _U_ZERO), (int(ts[-1]), float(v[-1]))


def check_rate_of_change(
    ts_ns: ArrayLike,
    values: ArrayLike,
    max_per_s: float,
    *,
    prev_ts: int | None = None,
    prev_value: float | None = None,
) -> FlagArray:
    """``Quality.RATE_OF_CHANGE`` where ``|v_i - v_p| > max_per_s * (t_i - t_p)`` seconds, with
    ``p`` the previous finite sample. Pairs whose time step is not positive are not judged
    (the timestamp check reports them)."""
    ts, v = as_ts(ts_ns), as_values(values)
    idx = np.flatnonzero(np.isfinite(v))
    prev = None if prev_ts is None or prev_value is None else (prev_ts, prev_value)
    flags, _ = rate_kernel(ts[idx], v[idx], max_per_s, prev)
    return _scatter(v.shape[0], idx, flags)


def _median_rows_inplace(w: FloatArray) -> FloatArray:
    """Median of each row of the contiguous 2-d ``w`` (the mean of the two middle values for
    an even width). Reorders the rows of ``w`` in place."""
    n = w.shape[1]
    half = n // 2
    if n % 2:
        w.partition(half, axis=1)
        return w[:, half].copy()
    w.partition((half - 1, half), axis=1)
    return (w[:, half - 1] + w[:, half]) / 2


@_quietly
def spike_kernel(
    v: FloatArray,
    window: int,
    k: float,
    min_deviation: float,
    history: FloatArray,
) -> tuple[FlagArray, FloatArray]:
    """Hampel filter on the trailing ``window`` values. ``history`` holds up to ``window``
    earlier values; the new history is returned."""
    n = v.shape[0]
    ext = np.concatenate((history, v)) if history.shape[0] else v
    h = history.shape[0]
    new_history = np.array(ext[-window:], dtype=np.float64)
    flags = _zeros(n)
    first = max(window, h)  # first position in ext that has a full window before it
    total = ext.shape[0]
    if first >= total:
        return flags, new_history
    windows = sliding_window_view(ext, window)  # windows[s] = ext[s : s + window]
    thr_scale = k * MAD_SCALE
    for start in range(first, total, _SPIKE_BLOCK):
        stop = min(start + _SPIKE_BLOCK, total)
        w = np.array(windows[start - window : stop - window])  # contiguous copy
        med = _median_rows_inplace(w)
        np.subtract(w, med[:, None], out=w)
        np.abs(w, out=w)
        mad = _median_rows_inplace(w)
        bad = spike_outlier(ext[start:stop], med, mad, thr_scale, min_deviation)
        flags[start - h : stop - h] = np.where(bad, _U_SPIKE, _U_ZERO)
    return flags, new_history


def check_spike(
    values: ArrayLike,
    window: int = 21,
    k: float = 4.0,
    *,
    min_deviation: float = 0.0,
    history: ArrayLike | None = None,
) -> FlagArray:
    """``Quality.SPIKE`` by a Hampel filter on a trailing window: with ``W`` the previous
    ``window`` finite values, flag ``x`` when ``|x - median(W)| > max(k * 1.4826 * MAD(W),
    min_deviation)``. The first ``window`` values of a stream (no full window yet) are never
    flagged. ``history`` holds finite values that came before ``values``."""
    v = as_values(values)
    idx = np.flatnonzero(np.isfinite(v))
    hist = np.zeros(0) if history is None else as_values(history)
    hist = hist[np.isfinite(hist)][-window:]
    flags, _ = spike_kernel(v[idx], window, k, min_deviation, hist)
    return _scatter(v.shape[0], idx, flags)


@_quietly
def flatline_kernel(
    ts: IntArray,
    v: FloatArray,
    count: int | None,
    duration_ns: int | None,
    tolerance: float,
    state: FlatState | None,
) -> tuple[FlagArray, FlatState | None]:
    n = ts.shape[0]
    if n == 0:
        return _zeros(0), state
    prev = np.empty(n, dtype=np.float64)
    prev[1:] = v[:-1]
    prev[0] = np.nan if state is None else state.last_value
    same = flat_continues(v, prev, tolerance)  # NaN (no previous sample) -> a run starts
    pos = np.arange(n, dtype=np.int64)
    start = np.maximum.accumulate(np.where(same, -1, pos))  # -1: the run came from the state
    carried = start < 0
    start_c = np.where(carried, 0, start)
    if state is None:
        length = pos - start + 1  # start is never -1 without a state (same[0] is False)
        start_ts = ts[start_c]
    else:
        length = np.where(carried, state.run_length + pos + 1, pos - start + 1)
        start_ts = np.where(carried, state.run_start_ts, ts[start_c])
    bad = flat_reached(length, ts - start_ts, count, duration_ns)
    new_state = FlatState(float(v[-1]), int(start_ts[-1]), int(length[-1]))
    return np.where(bad, _U_FLAT, _U_ZERO), new_state


def check_flatline(
    ts_ns: ArrayLike,
    values: ArrayLike,
    *,
    count: int | None = None,
    duration_s: float | None = None,
    tolerance: float = 0.0,
) -> FlagArray:
    """``Quality.FLATLINE`` for a stuck value. Finite samples that each differ from the
    previous finite sample by at most ``tolerance`` form a run; a sample is flagged when its
    run (up to and including it) holds at least ``count`` samples, or when it comes at least
    ``duration_s`` after the run's first sample. The first ``count - 1`` samples of a run are
    not flagged: when they arrive they look like a steady process."""
    ts, v = as_ts(ts_ns), as_values(values)
    idx = np.flatnonzero(np.isfinite(v))
    dur = None if duration_s is None else seconds_to_ns(duration_s)
    flags, _ = flatline_kernel(ts[idx], v[idx], count, dur, tolerance, None)
    return _scatter(v.shape[0], idx, flags)


# --------------------------------------------------------------------------------------------
# cumulative counters

@_quietly
def counter_kernel(
    ts: IntArray, v: FloatArray, params: CounterParams, state: CounterState | None
) -> tuple[FlagArray, CounterState | None]:
    """Causal counter state machine, vectorised for the normal case.

    A sample is compared with the last accepted sample (``ref``): a plausible increase is
    normal, a plausible increase across the register wrap is ``COUNTER_ROLLOVER``, anything
    else is a jump, flagged ``COUNTER_GLITCH`` and held as pending. The next sample resolves
    it: back in line with ``ref`` -> the jump was a glitch (this sample is normal); in line
    with the jumped sample -> the counter was reset or replaced (this sample gets
    ``COUNTER_RESET`` and becomes the new reference); neither -> another jump.
    """
    n = ts.shape[0]
    if n == 0:
        return _zeros(0), state
    k0 = 0 if state is None else state.next_k
    p_t = np.empty(n, dtype=np.int64)
    p_v = np.empty(n, dtype=np.float64)
    p_t[1:] = ts[:-1]
    p_v[1:] = v[:-1]
    if state is None:
        p_t[0], p_v[0] = ts[0], v[0]  # first sample ever: a zero step, normal
    else:
        p_t[0], p_v[0] = state.last_t, state.last_v
    cls = params.classify(v - p_v, (ts - p_t).astype(np.float64), 1.0)
    flags = np.where(cls == _ROLLOVER, _U_ROLL, _U_ZERO)
    abnormal = np.flatnonzero(cls == _ABNORMAL)

    # sequential part: only around jumps
    if state is None:
        ref_v, ref_t, ref_k, pending = float(v[0]), int(ts[0]), k0, False
    else:
        ref_v, ref_t, ref_k, pending = state.ref_v, state.ref_t, state.ref_k, state.pending
    i = 0
    while True:
        if not pending:
            j = int(np.searchsorted(abnormal, i))
            if j >= abnormal.shape[0]:
                break
            i = int(abnormal[j])
            if i > 0:
                ref_v, ref_t, ref_k = float(v[i - 1]), int(ts[i - 1]), k0 + i - 1
            # else: the previous sample (from the state) was accepted, ref already points at it
            flags[i] = _U_GLITCH
            pending = True
            i += 1
            continue
        if i >= n:
            break
        c_ref = int(params.classify(v[i] - ref_v, float(int(ts[i]) - ref_t), float(k0 + i - ref_k)))
        if c_ref != _ABNORMAL:
            flags[i] = _U_ROLL if c_ref == _ROLLOVER else _U_ZERO
            pending = False
        elif cls[i] != _ABNORMAL:  # in line with the previous (jumped) sample
            flags[i] = _U_RESET
            pending = False
        else:
            flags[i] = _U_GLITCH
        if not pending:
            ref_v, ref_t, ref_k = float(v[i]), int(ts[i]), k0 + i
        i += 1
    if not pending:
        ref_v, ref_t, ref_k = float(v[-1]), int(ts[-1]), k0 + n - 1
    new_state = CounterState(
        ref_v=ref_v,
        ref_t=ref_t,
        ref_k=ref_k,
        last_v=float(v[-1]),
        last_t=int(ts[-1]),
        next_k=k0 + n,
        pending=pending,
    )
    return flags, new_state


def check_counter(
    ts_ns: ArrayLike,
    values: ArrayLike,
    *,
    register_max: float,
    resolution: float = 1.0,
    max_step: float | None = None,
    max_rate_per_s: float | None = None,
) -> FlagArray:
    """Cumulative-counter checks over the finite samples (see `counter_kernel`):
    ``COUNTER_ROLLOVER`` (informational: the register wrapped, the delta is corrected by
    ``register_max + resolution``), ``COUNTER_GLITCH`` (a sample that jumps; if the counter
    then comes back it was a one-off glitch) and ``COUNTER_RESET`` (the sample after a jump
    that continues from the jumped level: reset or meter replacement)."""
    if max_step is None and max_rate_per_s is None:
        raise ValueError("check_counter needs max_step, max_rate_per_s or both")
    ts, v = as_ts(ts_ns), as_values(values)
    idx = np.flatnonzero(np.isfinite(v))
    params = CounterParams(register_max + resolution, max_step, max_rate_per_s)
    flags, _ = counter_kernel(ts[idx], v[idx], params, None)
    return _scatter(v.shape[0], idx, flags)


_REF_BLOCKING = np.uint32(INVALID & ~int(Quality.COUNTER_RESET))


@_quietly
def counter_deltas(
    values: ArrayLike,
    flags: ArrayLike,
    register_max: float,
    *,
    resolution: float = 1.0,
    prev_value: float | None = None,
) -> FloatArray:
    """Non-negative energy increments of a cumulative counter, one per sample.

    The increment of a sample is its value minus the value of the last earlier *reference*
    sample: finite, with no `INVALID` bit except ``COUNTER_RESET`` (the first sample on a new
    register base). A ``COUNTER_ROLLOVER`` sample adds ``register_max + resolution``. The
    increment is 0 for an invalid sample (reset, glitch, comm fault ...), for the first sample
    without ``prev_value``, and never negative. Samples skipped as invalid do not lose energy:
    the next valid sample is measured from the last reference.
    """
    v = as_values(values)
    f = np.asarray(flags, dtype=np.uint32)
    if f.shape != v.shape:
        raise ValueError(f"values and flags differ in shape: {v.shape} vs {f.shape}")
    n = v.shape[0]
    finite = np.isfinite(v)
    ref_ok = finite & ((f & _REF_BLOCKING) == 0)
    pos = np.arange(n, dtype=np.int64)
    last_ref = np.maximum.accumulate(np.where(ref_ok, pos, -1))
    prev_ref = np.empty(n, dtype=np.int64)
    if n:
        prev_ref[0] = -1
        prev_ref[1:] = last_ref[:-1]
    start = np.nan if prev_value is None else float(prev_value)
    ref_v = np.where(prev_ref >= 0, v[np.maximum(prev_ref, 0)], start)
    d = v - ref_v
    roll = (f & _U_ROLL) != 0
    d = np.where(roll & (d < 0), d + (register_max + resolution), d)
    usable = finite & ((f & np.uint32(INVALID)) == 0) & np.isfinite(d)
    return np.where(usable, np.maximum(d, 0.0), 0.0)
