"""Streaming cleaners: `PointCleaner` (one point, keeps the trailing state) and `Cleaner`
(many points, works on `Reading` records).

Order of evaluation for each chunk of one point:

1. stateless checks on every sample: sentinels, range;
2. timestamp checks and the duplicate-reading check on every sample;
3. the value checks (rate of change, spike, flatline, counter) on the *eligible* samples
   only: finite value and no `INVALID` bit, neither in the input quality (device flags) nor
   from steps 1-2. A sentinel, an out-of-range value, a repeated or out-of-order reading never
   enters a trailing window or a counter reference.

Each check is causal, so feeding a stream in chunks gives the same flags as feeding it whole
(provided ``now_ns`` is the same: the future/stale checks depend on it by design).

Two paths, one definition
-------------------------
Each check is defined once, as a rule in `cleaning._rules`; both paths below feed the same
rules, and neither decides a flag by itself. `PointCleaner.apply` runs the numpy kernels of
`cleaning._checks` on a chunk of one point. Their cost is a few tens of microseconds per call
whatever the chunk's length, which is cheap for a long chunk (a backfill) and far too dear for
the gateway's usual chunk: one reading for each of thousands of points. `Cleaner.clean`
therefore sends a point with few readings in the chunk (at most ``_FAST_MAX``; fewer with a
long spike window, see `_fast_limit`) through the *scalar* path, `PointCleaner._step`: the
same rules, one sample at a time in plain Python (about 0.5 us per reading for a range check,
a few us with every check), on the same trailing state (last timestamp and value, running
maximum timestamp, spike window, flatline run, counter reference). For points whose checks
need no window (sentinels, range, timestamps, duplicates) the scalar path is compiled
(`cleaning/_cleanc.c`): the same four rules written once more in C, on the same state in the
same slots, kept equal to `_step` by ``tests/test_cleanc.py``. Both paths update that
state identically, so a point may take either path from one chunk to the next, and chunked
still equals whole. The scalar path copies numpy's arithmetic exactly: float64 operations in
the same order, int64 wrap-around of timestamp differences, NaN never equal to anything,
numpy's conversion of the `Reading` fields. ``tests/test_cleaning_stream_speed.py`` checks
that both paths give identical readings; ``tests/test_cleaning_rules.py`` that each rule gives
on an array what it gives on each element, and that both paths use the same rule objects.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import os
from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from mrv_core import INVALID, Quality, Reading

from ._state import CounterParams, CounterState, FlatState, seconds_to_ns

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from ._checks import FlagArray, FloatArray

from ._config import ChecksConfig
from ._rules import (
    MAD_SCALE,
    counter_allowed,
    counter_steps,
    flat_continues,
    flat_reached,
    out_of_range,
    rate_exceeded,
    same_reading,
    sentinel_hit,
    sentinel_table,
    spike_beyond_floor,
    spike_outlier,
    ts_limits,
    wrap_i64,
)

__all__ = ["Cleaner", "PointCleaner", "run_checks"]

# numpy and the vectorised kernels (`cleaning._checks`) are imported where a chunk is
# vectorised, not here: the daemon's cleaning runs the scalar and compiled paths, and a process
# that never vectorises never loads numpy (~15 MB; design 008, decision 26)

# -- scalar path ------------------------------------------------------------------------------

_FAST_MAX = 32  # readings of one point in a chunk up to which `Cleaner.clean` uses `_step`

_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_U32_MAX = 0xFFFF_FFFF

_RANGE = int(Quality.RANGE)
_SENTINEL = int(Quality.SENTINEL)
_TS_FUTURE = int(Quality.TS_FUTURE)
_TS_STALE = int(Quality.TS_STALE)
_TS_DUP = int(Quality.TS_DUPLICATE)
_TS_NONMONO = int(Quality.TS_NON_MONOTONIC)
_NOT_TS_DUP_INT = _U32_MAX ^ _TS_DUP
_DUP = int(Quality.DUPLICATE)
_RATE = int(Quality.RATE_OF_CHANGE)
_SPIKE = int(Quality.SPIKE)
_FLAT = int(Quality.FLATLINE)
_ROLL = int(Quality.COUNTER_ROLLOVER)
_RESET = int(Quality.COUNTER_RESET)
_GLITCH = int(Quality.COUNTER_GLITCH)
# A committed reading is eligible for the value checks when its value is finite and it holds
# none of the INVALID bits that come before them (the device's and steps 1-2): the bits the
# value checks set themselves do not count (`PointCleaner.resume`).
_PRE_VALUE_INVALID = INVALID & ~(_RATE | _SPIKE | _FLAT | _ROLL | _RESET | _GLITCH)
_NORMAL, _ROLLOVER, _ABNORMAL = 0, 1, 2  # as in `CounterParams.classify`

_isfinite = math.isfinite
_point_id = operator.attrgetter("point_id")

# The compiled scalar path (cleaning/_cleanc.c): the checks without a window, the same flags
# and state as `PointCleaner._step`; None when not built or MRV_PURE_PYTHON=1.
_cleanc: ModuleType | None = None
if os.environ.get("MRV_PURE_PYTHON", "") in ("", "0"):
    try:
        from cleaning import _cleanc
    except ImportError:  # not built (no C compiler at install): the pure path
        _cleanc = None


def _fast_limit(config: ChecksConfig) -> int:
    """The most readings of one point in a chunk for which the scalar path is cheaper. The
    numpy path costs 30-150 us per point and chunk; the scalar path about 0.5-5 us per
    reading, plus ~0.1 us per value of the spike window (sorted twice per reading)."""
    if config.spike is None:
        return _FAST_MAX
    return max(1, min(_FAST_MAX, 1000 // config.spike.window))


# numpy's conversions of a `Reading` field, for anything but a plain in-range int or float
def _as_i64(x: object) -> int:
    import numpy as np

    return int(np.fromiter((x,), dtype=np.int64, count=1)[0])


def _as_f64(x: object) -> float:
    import numpy as np

    return float(np.fromiter((x,), dtype=np.float64, count=1)[0])


def _as_u32(x: object) -> int:
    import numpy as np

    return int(np.fromiter((x,), dtype=np.uint32, count=1)[0])


def _median_sorted(s: list[float]) -> float:
    """The median of the sorted ``s``, as `_checks._median_rows_inplace` computes it."""
    n = len(s)
    half = n // 2
    if n % 2:
        return s[half]
    return (s[half - 1] + s[half]) / 2


def _classify(p: CounterParams, dv: float, dt_ns: float, dk: float) -> int:
    """`CounterParams.classify` for one step, from the same rules (no NaN can occur: ``dv``
    comes from finite values, ``dt_ns`` and ``dk`` from integers)."""
    allowed = counter_allowed(p.max_step, p.max_rate_per_s, dt_ns, dk)
    assert isinstance(allowed, float)
    normal, rollover = counter_steps(dv, allowed, p.modulus)
    return _NORMAL if normal else _ROLLOVER if rollover else _ABNORMAL


class PointCleaner:
    """Runs the configured checks on the successive chunks of one point's stream."""

    __slots__ = (
        "_config",
        "_counter",
        "_counter_params",
        "_dup_prev",
        "_dups",
        "_flat",
        "_flat_count",
        "_flat_duration_ns",
        "_flat_on",
        "_flat_tol",
        "_max_ts",
        "_range_max",
        "_range_min",
        "_rate_max",
        "_rate_prev",
        "_sentinels",
        "_spike_hist",
        "_spike_min_dev",
        "_spike_scale",
        "_spike_sorted",
        "_spike_window",
        "_ts_age_ns",
        "_ts_future_ns",
        "_value_checks",
    )

    def __init__(self, config: ChecksConfig) -> None:
        self._config = config
        c = config.counter
        if c is not None and c.register_max is None:
            raise ValueError("counter.register_max is not set (the config takes it from the "
                             "point's register, or needs it where the point has none)")
        self._counter_params = (
            None
            if c is None or c.register_max is None
            else CounterParams(c.register_max + c.resolution, c.max_step, c.max_rate_per_s)
        )
        f = config.flatline
        self._flat_duration_ns = None if f is None or f.duration_s is None else seconds_to_ns(f.duration_s)
        self._max_ts: int | None = None
        self._dup_prev: tuple[int, float] | None = None
        self._rate_prev: tuple[int, float] | None = None
        # a list after `_step`, an array after `apply`; each converts what it finds
        self._spike_hist: FloatArray | list[float] = []
        self._spike_sorted: list[float] = []  # `_spike_hist` sorted, while it is a list
        self._flat: FlatState | None = None
        self._counter: CounterState | None = None
        self._init_scalar(config)

    def _init_scalar(self, config: ChecksConfig) -> None:
        """The config, flattened for `_step`."""
        # (s, tolerance) as in `check_sentinels`; tolerance None: +-inf, matched exactly
        self._sentinels = sentinel_table(config.sentinels)
        r = config.range
        self._range_min = None if r is None else r.min
        self._range_max = None if r is None else r.max
        t = config.timestamps
        self._ts_future_ns = None if t is None else seconds_to_ns(t.max_future_s)
        self._ts_age_ns = None if t is None or t.max_age_s is None else seconds_to_ns(t.max_age_s)
        self._dups = config.duplicates
        self._rate_max = None if config.rate_of_change is None else config.rate_of_change.max_per_s
        s = config.spike
        self._spike_window = 0 if s is None else s.window
        self._spike_scale = 0.0 if s is None else s.k * MAD_SCALE
        self._spike_min_dev = 0.0 if s is None else s.min_deviation
        f = config.flatline
        self._flat_on = f is not None
        self._flat_count = None if f is None else f.count
        self._flat_tol = 0.0 if f is None else f.tolerance
        self._value_checks = any(x is not None for x in (config.rate_of_change, s, f, config.counter))

    @property
    def config(self) -> ChecksConfig:
        return self._config

    def reset(self) -> None:
        """Forget the trailing state (as after a restart)."""
        self._max_ts = None
        self._dup_prev = None
        self._rate_prev = None
        self._spike_hist = []
        self._spike_sorted = []
        self._flat = None
        self._counter = None

    def history_needed(self) -> tuple[int, float | None, bool] | None:
        """How much of this point's latest committed readings `resume` needs to restore the
        trailing state exactly: ``(count, run_tolerance, newest_ts)``, i.e. back to the reading
        that makes ``count`` readings eligible for the value checks (`resume_eligible`); for a
        flatline check by duration (``run_tolerance``: its tolerance), back to the start of the
        current flat run (an eligible reading that the next eligible one does not continue):
        the run's first sample, in arrival order, is what its duration is measured from,
        whatever the timestamps; with ``newest_ts`` (a timestamp check), back to a reading that
        set the newest timestamp seen (`sets_newest_ts`); at least one reading in any case.
        None when the checks keep no state."""
        c = self._config
        newest_ts = c.timestamps is not None
        if not (self._value_checks or newest_ts or c.duplicates):
            return None
        if not self._value_checks:
            return 0, None, newest_ts
        count = 1
        if c.spike is not None:
            count = max(count, c.spike.window)
        if c.flatline is not None and c.flatline.count is not None:
            count = max(count, c.flatline.count)
        if c.counter is not None:
            count = max(count, 16)  # a glitch pending from before the history is not seen
        return count, None if self._flat_duration_ns is None else self._flat_tol, newest_ts

    def resume(self, ts_ns: ArrayLike, values: ArrayLike, quality: ArrayLike) -> None:
        """Restore the trailing state from this point's committed readings, as the outbox
        holds them (arrival order; ``quality`` with the checks' bits): the state this cleaner
        would have after cleaning them, so a restarted gateway flags the next readings as if
        it had never stopped. Exact when the readings cover `history_needed` and their input
        quality carried none of the checks' own bits. Forgets any state held before."""
        import numpy as np

        from ._checks import as_ts, as_values

        self.reset()
        ts = as_ts(ts_ns).tolist()
        v = as_values(values).tolist()
        q = np.asarray(quality, dtype=np.uint32).tolist()
        if not len(ts) == len(v) == len(q):
            raise ValueError(f"ts_ns, values and quality differ in length: {len(ts)}, {len(v)}, {len(q)}")
        if not ts:
            return
        if self._config.timestamps is not None:
            # `_step` moves the newest timestamp on for every sample not in the future; a
            # sample neither in the future nor out of order (`sets_newest_ts`) was the newest
            # when it came, so from it on the maximum is exact (issue 11, item 18: a history
            # of out-of-order samples alone would take the newest of *them* for it)
            seen = [t for t, f in zip(ts, q, strict=True) if not f & _TS_FUTURE]
            self._max_ts = max(seen) if seen else None
        if self._dups:
            self._dup_prev = (ts[-1], v[-1])
        if self._value_checks:
            step, pre = self._step_values, _PRE_VALUE_INVALID
            for t, x, f in zip(ts, v, q, strict=True):
                if not f & pre and _isfinite(x):
                    step(t, x)

    def apply(self, ts_ns: ArrayLike, values: ArrayLike, quality: ArrayLike, now_ns: int) -> FlagArray:
        """The new quality of each sample: the input ``quality`` OR'ed with the check bits.

        ``ts_ns`` (int64 ns), ``values`` (float64) and ``quality`` (uint32) are parallel
        arrays in arrival order; none of them is modified.
        """
        import numpy as np

        from ._checks import (
            as_ts,
            as_values,
            check_range,
            check_sentinels,
            counter_kernel,
            duplicates_kernel,
            flatline_kernel,
            rate_kernel,
            spike_kernel,
            timestamps_kernel,
        )

        ts = as_ts(ts_ns)
        v = as_values(values)
        q = np.asarray(quality, dtype=np.uint32)
        if not ts.shape == v.shape == q.shape or ts.ndim != 1:
            raise ValueError(
                f"ts_ns, values and quality must be 1-d and of one length: {ts.shape}, {v.shape}, {q.shape}"
            )
        cfg = self._config
        out = q.copy()
        if cfg.sentinels:
            out |= check_sentinels(v, cfg.sentinels)
        if cfg.range is not None:
            out |= check_range(v, cfg.range.min, cfg.range.max)
        if cfg.timestamps is not None:
            t = cfg.timestamps
            age = None if t.max_age_s is None else seconds_to_ns(t.max_age_s)
            ts_flags, self._max_ts = timestamps_kernel(
                ts, now_ns, seconds_to_ns(t.max_future_s), age, self._max_ts
            )
            out |= ts_flags
        if cfg.duplicates:
            dup, self._dup_prev = duplicates_kernel(ts, v, self._dup_prev)
            # a verbatim repeat is a DUPLICATE, not a conflicting timestamp
            is_dup = dup != 0
            out[is_dup] &= np.uint32(0xFFFF_FFFF ^ int(Quality.TS_DUPLICATE))
            out |= dup
        if cfg.rate_of_change is None and cfg.spike is None and cfg.flatline is None and cfg.counter is None:
            return out
        idx = np.flatnonzero(np.isfinite(v) & ((out & np.uint32(INVALID)) == 0))
        te, ve = ts[idx], v[idx]
        value_flags = np.zeros(idx.shape[0], dtype=np.uint32)
        if cfg.rate_of_change is not None:
            f, self._rate_prev = rate_kernel(te, ve, cfg.rate_of_change.max_per_s, self._rate_prev)
            value_flags |= f
        if cfg.spike is not None:
            s = cfg.spike
            hist = np.asarray(self._spike_hist, dtype=np.float64)
            f, self._spike_hist = spike_kernel(ve, s.window, s.k, s.min_deviation, hist)
            value_flags |= f
        if cfg.flatline is not None:
            fl = cfg.flatline
            f, self._flat = flatline_kernel(
                te, ve, fl.count, self._flat_duration_ns, fl.tolerance, self._flat
            )
            value_flags |= f
        if self._counter_params is not None:
            f, self._counter = counter_kernel(te, ve, self._counter_params, self._counter)
            value_flags |= f
        out[idx] |= value_flags
        return out

    # -- scalar path: one sample in plain Python, the same flags and state as `apply` --------

    def _step(self, t: int, v: float, q: int, now_ns: int) -> int:
        """The new quality of one sample, exactly as `apply` gives it for a chunk of that one
        sample. ``t`` must be an int in the int64 range, ``v`` a float, ``q`` an int in the
        uint32 range (`Cleaner.clean` converts the fields of a `Reading` as numpy does)."""
        out = q
        if self._sentinels and sentinel_hit(v, self._sentinels):
            out |= _SENTINEL
        lo, hi = self._range_min, self._range_max
        if (lo is not None or hi is not None) and out_of_range(v, lo, hi):
            out |= _RANGE
        future_ns = self._ts_future_ns
        if future_ns is not None:
            future_limit, stale_limit = ts_limits(now_ns, future_ns, self._ts_age_ns)
            future = t > future_limit
            if future:
                out |= _TS_FUTURE
            if stale_limit is not None and t < stale_limit:
                out |= _TS_STALE
            m = self._max_ts
            if m is not None:
                if t == m:
                    out |= _TS_DUP
                elif t < m:
                    out |= _TS_NONMONO
            if not future and (m is None or t > m):
                self._max_ts = t
        if self._dups:
            p = self._dup_prev
            if p is not None and same_reading(t, v, p[0], p[1]):
                # a verbatim repeat is a DUPLICATE, not a conflicting timestamp
                out = (out & _NOT_TS_DUP_INT) | _DUP
            self._dup_prev = (t, v)
        if self._value_checks and not out & INVALID and _isfinite(v):
            out |= self._step_values(t, v)
        return out

    def _step_values(self, t: int, v: float) -> int:
        """The value checks on one eligible (finite, valid) sample."""
        flags = 0
        max_per_s = self._rate_max
        if max_per_s is not None:
            p = self._rate_prev
            if p is not None:
                dt = t - p[0]
                if not _I64_MIN <= dt <= _I64_MAX:
                    dt = wrap_i64(dt)
                if rate_exceeded(float(dt), v - p[1], max_per_s):
                    flags |= _RATE
            self._rate_prev = (t, v)
        if self._spike_window:
            flags |= self._step_spike(v)
        if self._flat_on:
            flags |= self._step_flatline(t, v)
        if self._counter_params is not None:
            flags |= self._step_counter(t, v)
        return flags

    def _step_spike(self, v: float) -> int:
        h = self._spike_hist
        if not isinstance(h, list):  # `apply` left an array
            h = self._spike_hist = h.tolist()
            self._spike_sorted = sorted(h)
        srt = self._spike_sorted
        window = self._spike_window
        flag = 0
        if len(h) >= window:
            med = _median_sorted(srt)
            min_dev = self._spike_min_dev
            if spike_beyond_floor(v, med, min_dev):  # else no MAD makes it a spike
                # |x - med| of the sorted window: two ascending runs (med - x is exactly
                # |x - med| for x <= med), which sort in one merge
                i = bisect_left(srt, med)
                dev = [med - x for x in reversed(srt[:i])]
                dev += [x - med for x in srt[i:]]
                mad = _median_sorted(sorted(dev))
                if spike_outlier(v, med, mad, self._spike_scale, min_dev):
                    flag = _SPIKE
        h.append(v)
        insort(srt, v)
        if len(h) > window:
            del srt[bisect_left(srt, h[0])]  # finite values only: found, an equal one
            del h[0]
        return flag

    def _step_flatline(self, t: int, v: float) -> int:
        st = self._flat
        if st is not None and flat_continues(v, st.last_value, self._flat_tol):
            length, start = st.run_length + 1, st.run_start_ts
        else:
            length, start = 1, t
        if st is None:
            self._flat = FlatState(v, start, length)
        else:
            st.last_value, st.run_start_ts, st.run_length = v, start, length
        elapsed = t - start
        if not _I64_MIN <= elapsed <= _I64_MAX:
            elapsed = wrap_i64(elapsed)
        if flat_reached(length, elapsed, self._flat_count, self._flat_duration_ns):
            return _FLAT
        return 0

    def _step_counter(self, t: int, v: float) -> int:
        """One sample of the `counter_kernel` state machine."""
        params = self._counter_params
        assert params is not None
        st = self._counter
        if st is None:  # the first sample ever is compared with itself: a zero step, normal
            self._counter = CounterState(v, t, 0, v, t, 1, False)
            return 0
        k = st.next_k
        # against the previous sample
        dt = t - st.last_t
        if not _I64_MIN <= dt <= _I64_MAX:
            dt = wrap_i64(dt)
        cls = _classify(params, v - st.last_v, float(dt), 1.0)
        if not st.pending:
            if cls == _ABNORMAL:  # a jump: held as pending, the reference stays
                flag, accepted = _GLITCH, False
                st.pending = True
            else:
                flag, accepted = (_ROLL if cls == _ROLLOVER else 0), True
        else:
            c_ref = _classify(params, v - st.ref_v, float(t - st.ref_t), float(k - st.ref_k))
            if c_ref != _ABNORMAL:  # back in line with the reference: the jump was a glitch
                flag, accepted = (_ROLL if c_ref == _ROLLOVER else 0), True
            elif cls != _ABNORMAL:  # in line with the jumped sample: reset or replacement
                flag, accepted = _RESET, True
            else:
                flag, accepted = _GLITCH, False
            if accepted:
                st.pending = False
        if accepted:
            st.ref_v, st.ref_t, st.ref_k = v, t, k
        st.last_v, st.last_t, st.next_k = v, t, k + 1
        return flag


def _slot_copier(cls: type[PointCleaner]) -> Callable[[PointCleaner], PointCleaner]:
    """``like(pc)``: a new cleaner with every slot of ``pc`` (generated from ``__slots__``, as
    dataclasses generate their methods, so no slot can be left out)."""
    body = "".join(f"    n.{name} = o.{name}\n" for name in cls.__slots__)
    ns: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    exec(f"def like(o):\n    n = _new(_cls)\n{body}    return n\n", ns)
    return cast("Callable[[PointCleaner], PointCleaner]", ns["like"])


_copy_slots = _slot_copier(PointCleaner)


def _like(pc: PointCleaner) -> PointCleaner:
    """A cleaner of ``pc``'s config with fresh state: what ``PointCleaner(pc.config)`` gives,
    for a fraction of its cost (`Cleaner` builds one per config and copies it for the other
    points that share it)."""
    new = _copy_slots(pc)
    new.reset()
    return new


if _cleanc is not None and not _cleanc.configure(
        Reading, PointCleaner, (_SENTINEL, _RANGE, _TS_FUTURE, _TS_STALE, _TS_DUP, _TS_NONMONO, _DUP)):
    _cleanc = None  # a class of another shape than the compiled path reads: the pure path

#: True when `Cleaner.clean`'s scalar path runs compiled (cleaning/_cleanc.c).
COMPILED: bool = _cleanc is not None


def resume_eligible(value: float, quality: int) -> bool:
    """Whether a committed reading (value and stored quality) took part in the value checks:
    what `PointCleaner.resume` replays and `ResumeHistory` counts."""
    return not quality & _PRE_VALUE_INVALID and _isfinite(value)


def sets_newest_ts(quality: int) -> bool:
    """Whether a committed reading (its stored quality) was, when it came, the newest
    timestamp its point's timestamp check had seen (equal to or later than all before it,
    and not in the future): the state of that check is then its timestamp, and later
    readings' timestamps can only raise it."""
    return not quality & (_TS_FUTURE | _TS_NONMONO)


class ResumeHistory:
    """Collects, newest first, the committed readings each point's `PointCleaner.resume`
    needs (`Cleaner.history_needed`): for each point, at least one reading, readings back to
    the one that makes ``count`` eligible readings, with a flatline by duration, back to an
    eligible reading that the next eligible one does not continue (the run's start), and with
    ``newest_ts``, back to a reading that set the newest timestamp (`sets_newest_ts`). Pure:
    the caller reads the outbox."""

    __slots__ = ("_needs", "_open", "_rows")

    def __init__(self, needs: Mapping[str, tuple[int, float | None, bool]]) -> None:
        self._needs = dict(needs)
        # point -> [ts list, values, quality, eligible count, the last (newer) eligible value,
        # value checks done, timestamp check done]
        self._rows: dict[str, list[Any]] = {}
        self._open = set(self._needs)

    @property
    def done(self) -> bool:
        """Every point has what it needs."""
        return not self._open

    def add(self, point_id: str, ts_ns: int, value: float, quality: int) -> None:
        """The next older committed reading (any point; points not needed are ignored)."""
        if point_id not in self._open:
            return
        st = self._rows.get(point_id)
        if st is None:
            st = self._rows[point_id] = [[], [], [], 0, None, False, False]
        st[0].append(ts_ns)
        st[1].append(value)
        st[2].append(quality)
        count, run_tol, newest_ts = self._needs[point_id]
        run_broken = False
        if resume_eligible(value, quality):
            st[3] += 1
            newer = st[4]
            run_broken = (run_tol is not None and newer is not None
                          and not flat_continues(value, newer, run_tol))
            st[4] = value
        if not st[5] and st[3] >= count and (run_tol is None or run_broken):
            st[5] = True  # the value checks have what they need
        if not st[6] and (not newest_ts or sets_newest_ts(quality)):
            st[6] = True  # the timestamp check has what it needs
        if st[5] and st[6]:
            self._open.discard(point_id)

    def history(self) -> dict[str, tuple[list[int], list[float], list[int]]]:
        """Point id -> ``(ts_ns, values, quality)``, oldest first, for `Cleaner.resume`."""
        return {pid: (st[0][::-1], st[1][::-1], st[2][::-1]) for pid, st in self._rows.items()}


def run_checks(
    ts_ns: ArrayLike, values: ArrayLike, quality: ArrayLike, config: ChecksConfig, now_ns: int
) -> FlagArray:
    """All configured checks on one whole stream (a fresh `PointCleaner`)."""
    return PointCleaner(config).apply(ts_ns, values, quality, now_ns)


class Cleaner:
    """Cleans batches of `Reading` records of many points, keeping each point's state between
    batches. Points without a config pass through untouched."""

    __slots__ = ("_fast_limits", "_fast_max", "_min_fast_limit", "_points")

    def __init__(self, configs: Mapping[str, ChecksConfig]) -> None:
        # one cleaner built per config object, copied for the other points that share it (a
        # plant repeats one `checks:` block on thousands of points; config shares the model)
        made: dict[int, PointCleaner] = {}  # by id: each config is held by `configs` meanwhile
        points: dict[str, PointCleaner] = {}
        for pid, cfg in configs.items():
            first = made.get(id(cfg))
            if first is None:
                points[pid] = made[id(cfg)] = PointCleaner(cfg)
            else:
                points[pid] = _like(first)
        self._points = points
        # a point with at most this many readings in a chunk takes the scalar path
        self._fast_limits = {pid: _fast_limit(cfg) for pid, cfg in configs.items()}
        self._min_fast_limit = min(self._fast_limits.values(), default=0)
        # overrides every point's limit when set (0: numpy path only); for the tests
        self._fast_max: int | None = None

    def point(self, point_id: str) -> PointCleaner | None:
        return self._points.get(point_id)

    def history_needed(self) -> dict[str, tuple[int, float | None, bool]]:
        """`PointCleaner.history_needed` of every point whose checks keep state."""
        out = {pid: pc.history_needed() for pid, pc in self._points.items()}
        return {pid: need for pid, need in out.items() if need is not None}

    def resume(self, history: Mapping[str, tuple[Sequence[int], Sequence[float], Sequence[int]]]
               ) -> int:
        """`PointCleaner.resume` for each point of ``history`` (point id -> ``(ts_ns, values,
        quality)`` of its latest committed readings, oldest first); points without a config
        are ignored. Returns the number of points resumed."""
        n = 0
        for pid, (ts, values, quality) in history.items():
            pc = self._points.get(pid)
            if pc is not None and len(ts):
                pc.resume(ts, values, quality)
                n += 1
        return n

    def clean(self, readings: Sequence[Reading], now_ns: int) -> list[Reading]:
        """New readings in the input order; a reading is replaced (with
        ``dataclasses.replace(r, quality=...)``) only where its quality changed. Values are
        never touched. Readings of one point must come in arrival order."""
        points = self._points
        result = list(readings)
        if not points or not result:
            return result
        counts = Counter(map(_point_id, result))
        vectorised: set[str] = set()
        forced = self._fast_max
        if max(counts.values()) > (self._min_fast_limit if forced is None else forced):
            limits = self._fast_limits
            vectorised = {
                pid
                for pid, n in counts.items()
                if pid in limits and n > (limits[pid] if forced is None else forced)
            }

        # scalar path, in input order (points are independent, each keeps its own order)
        todo: Sequence[int] = range(len(result))
        if _cleanc is not None:  # the checks without a window compiled; the rest left here
            got = _cleanc.clean_scalar(result, points, now_ns, vectorised or None)
            if got is not None:
                changes, todo = got
                for i, q in changes:
                    result[i] = dataclasses.replace(result[i], quality=q)
        for i in todo:
            r = result[i]
            pid = r.point_id
            pc = points.get(pid)
            if pc is None or pid in vectorised:
                continue
            t, v, q = r.ts_ns, r.value, r.quality
            if type(t) is not int or not _I64_MIN <= t <= _I64_MAX:
                t = _as_i64(t)
            if type(v) is not float:
                v = _as_f64(v)
            if type(q) is not int or not 0 <= q <= _U32_MAX:
                q = _as_u32(q)
            new_q = pc._step(t, v, q, now_ns)
            if new_q != q:
                result[i] = dataclasses.replace(r, quality=new_q)

        if vectorised:
            self._clean_vectorised(readings, vectorised, result, now_ns)
        return result

    def _clean_vectorised(
        self, readings: Sequence[Reading], pids: set[str], result: list[Reading], now_ns: int
    ) -> None:
        """The numpy path for the points ``pids``, writing into ``result``."""
        import numpy as np

        groups: dict[str, list[int]] = {}
        for i, r in enumerate(readings):
            if r.point_id in pids:
                groups.setdefault(r.point_id, []).append(i)
        for pid, idxs in groups.items():
            n = len(idxs)
            rs = [readings[i] for i in idxs]
            ts = np.fromiter((r.ts_ns for r in rs), dtype=np.int64, count=n)
            vals = np.fromiter((r.value for r in rs), dtype=np.float64, count=n)
            qual = np.fromiter((r.quality for r in rs), dtype=np.uint32, count=n)
            new_q = self._points[pid].apply(ts, vals, qual, now_ns)
            for j in np.flatnonzero(new_q != qual).tolist():
                result[idxs[j]] = dataclasses.replace(rs[j], quality=int(new_q[j]))
