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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from gateway._records import INVALID, Quality, Reading

from ._checks import (
    CounterParams,
    CounterState,
    FlagArray,
    FlatState,
    as_ts,
    as_values,
    check_range,
    check_sentinels,
    counter_kernel,
    duplicates_kernel,
    flatline_kernel,
    rate_kernel,
    seconds_to_ns,
    spike_kernel,
    timestamps_kernel,
)
from ._config import ChecksConfig

__all__ = ["Cleaner", "PointCleaner", "run_checks"]

_INVALID = np.uint32(INVALID)
_NOT_TS_DUP = np.uint32(0xFFFF_FFFF ^ int(Quality.TS_DUPLICATE))


class PointCleaner:
    """Runs the configured checks on the successive chunks of one point's stream."""

    __slots__ = (
        "_config",
        "_counter",
        "_counter_params",
        "_dup_prev",
        "_flat",
        "_flat_duration_ns",
        "_max_ts",
        "_rate_prev",
        "_spike_hist",
    )

    def __init__(self, config: ChecksConfig) -> None:
        self._config = config
        c = config.counter
        self._counter_params = (
            None if c is None else CounterParams(c.register_max + c.resolution, c.max_step, c.max_rate_per_s)
        )
        f = config.flatline
        self._flat_duration_ns = None if f is None or f.duration_s is None else seconds_to_ns(f.duration_s)
        self._max_ts: int | None = None
        self._dup_prev: tuple[int, float] | None = None
        self._rate_prev: tuple[int, float] | None = None
        self._spike_hist = np.zeros(0, dtype=np.float64)
        self._flat: FlatState | None = None
        self._counter: CounterState | None = None

    @property
    def config(self) -> ChecksConfig:
        return self._config

    def reset(self) -> None:
        """Forget the trailing state (as after a restart)."""
        self._max_ts = None
        self._dup_prev = None
        self._rate_prev = None
        self._spike_hist = np.zeros(0, dtype=np.float64)
        self._flat = None
        self._counter = None

    def apply(self, ts_ns: ArrayLike, values: ArrayLike, quality: ArrayLike, now_ns: int) -> FlagArray:
        """The new quality of each sample: the input ``quality`` OR'ed with the check bits.

        ``ts_ns`` (int64 ns), ``values`` (float64) and ``quality`` (uint32) are parallel
        arrays in arrival order; none of them is modified.
        """
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
            out[is_dup] &= _NOT_TS_DUP
            out |= dup
        if cfg.rate_of_change is None and cfg.spike is None and cfg.flatline is None and cfg.counter is None:
            return out
        idx = np.flatnonzero(np.isfinite(v) & ((out & _INVALID) == 0))
        te, ve = ts[idx], v[idx]
        value_flags = np.zeros(idx.shape[0], dtype=np.uint32)
        if cfg.rate_of_change is not None:
            f, self._rate_prev = rate_kernel(te, ve, cfg.rate_of_change.max_per_s, self._rate_prev)
            value_flags |= f
        if cfg.spike is not None:
            s = cfg.spike
            f, self._spike_hist = spike_kernel(ve, s.window, s.k, s.min_deviation, self._spike_hist)
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


def run_checks(
    ts_ns: ArrayLike, values: ArrayLike, quality: ArrayLike, config: ChecksConfig, now_ns: int
) -> FlagArray:
    """All configured checks on one whole stream (a fresh `PointCleaner`)."""
    return PointCleaner(config).apply(ts_ns, values, quality, now_ns)


class Cleaner:
    """Cleans batches of `Reading` records of many points, keeping each point's state between
    batches. Points without a config pass through untouched."""

    __slots__ = ("_points",)

    def __init__(self, configs: Mapping[str, ChecksConfig]) -> None:
        self._points = {pid: PointCleaner(cfg) for pid, cfg in configs.items()}

    def point(self, point_id: str) -> PointCleaner | None:
        return self._points.get(point_id)

    def clean(self, readings: Sequence[Reading], now_ns: int) -> list[Reading]:
        """New readings in the input order; a reading is replaced (with
        ``dataclasses.replace(r, quality=...)``) only where its quality changed. Values are
        never touched. Readings of one point must come in arrival order."""
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(readings):
            if r.point_id in self._points:
                groups.setdefault(r.point_id, []).append(i)
        result = list(readings)
        for pid, idxs in groups.items():
            n = len(idxs)
            rs = [readings[i] for i in idxs]
            ts = np.fromiter((r.ts_ns for r in rs), dtype=np.int64, count=n)
            vals = np.fromiter((r.value for r in rs), dtype=np.float64, count=n)
            qual = np.fromiter((r.quality for r in rs), dtype=np.uint32, count=n)
            new_q = self._points[pid].apply(ts, vals, qual, now_ns)
            for j in np.flatnonzero(new_q != qual).tolist():
                result[idxs[j]] = dataclasses.replace(rs[j], quality=int(new_q[j]))
        return result
