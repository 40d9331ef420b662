"""Minute and hour aggregates of one point, with the validity rules of the data-capture
requirements.

* A reading is *valid* when its value is finite and its quality has no `INVALID` bit.
* A minute is valid when it holds at least ``min_minute_fraction * expected_per_minute``
  valid readings. Its mean/min/max are over its valid readings.
* An hour is valid when it holds at least ``min_valid_minutes`` valid minutes (default 45 of
  60). Its mean is the mean of its valid minutes' means (each minute weighs the same), its
  min/max the extremes of its valid minutes.
* Capture rate: valid readings / expected readings for a minute (at most 1), valid minutes /
  60 for an hour.

Periods are aligned on UTC (Unix time is a multiple of 60 s / 3600 s at their start). An
aggregate names the raw readings it was derived from by the first and last ``seq`` (the
smallest and largest outbox sequence number in the period, 0 when unknown); nothing is
overwritten.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mrv_core import INVALID

from ._config import AggregationConfig

if TYPE_CHECKING:  # numpy is imported where an aggregate is computed (design 008, decision 26)
    from numpy.typing import ArrayLike

    from ._checks import BoolArray, FlagArray, FloatArray

__all__ = [
    "HOUR_NS",
    "MINUTE_NS",
    "Aggregate",
    "aggregate",
    "aggregate_hours",
    "aggregate_minutes",
    "capture_rate",
]

MINUTE_NS = 60 * 1_000_000_000
HOUR_NS = 60 * MINUTE_NS


@dataclass(frozen=True, slots=True, kw_only=True)
class Aggregate:
    """One minute or hour of one point."""

    point_id: str
    period_s: int  # 60 or 3600
    start_ns: int  # UTC-aligned period start, ns since the Unix epoch
    count: int  # readings in the period, valid or not
    valid_count: int  # valid readings in the period
    mean: float  # NaN when there is no valid data
    min: float
    max: float
    expected: int  # expected readings (minute) or minutes (hour)
    valid_minutes: int  # minute: 1 if valid else 0; hour: number of valid minutes
    capture_rate: float
    valid: bool
    first_seq: int  # the raw readings this aggregate comes from (0: unknown)
    last_seq: int
    unit: str = ""

    @property
    def end_ns(self) -> int:
        return self.start_ns + self.period_s * 1_000_000_000


def _valid_mask(values: FloatArray, quality: FlagArray) -> BoolArray:
    import numpy as np

    valid: BoolArray = np.isfinite(values) & ((quality & np.uint32(INVALID)) == 0)
    return valid


def aggregate_minutes(
    point_id: str,
    ts_ns: ArrayLike,
    values: ArrayLike,
    quality: ArrayLike,
    *,
    expected_per_minute: float,
    min_minute_fraction: float = 0.75,
    seq: ArrayLike | None = None,
    unit: str = "",
) -> list[Aggregate]:
    """Minute aggregates of the minutes that hold at least one reading, in time order."""
    import numpy as np

    from ._checks import as_ts, as_values

    ts = as_ts(ts_ns)
    v = as_values(values)
    q = np.asarray(quality, dtype=np.uint32)
    s = np.zeros(ts.shape, dtype=np.int64) if seq is None else np.asarray(seq, dtype=np.int64)
    if not ts.shape == v.shape == q.shape == s.shape:
        raise ValueError("ts_ns, values, quality and seq must have one length")
    if expected_per_minute <= 0 or not 0 < min_minute_fraction <= 1:
        raise ValueError("expected_per_minute must be > 0 and min_minute_fraction in (0, 1]")
    if ts.shape[0] == 0:
        return []
    minute = np.floor_divide(ts, MINUTE_NS)
    order = np.argsort(minute, kind="stable")
    minute, v, q, s = minute[order], v[order], q[order], s[order]
    valid = _valid_mask(v, q)
    starts = np.flatnonzero(np.r_[True, minute[1:] != minute[:-1]])
    counts = np.diff(np.r_[starts, minute.shape[0]])
    n_valid = np.add.reduceat(valid.astype(np.int64), starts)
    total = np.add.reduceat(np.where(valid, v, 0.0), starts)
    vmin = np.minimum.reduceat(np.where(valid, v, np.inf), starts)
    vmax = np.maximum.reduceat(np.where(valid, v, -np.inf), starts)
    has_seq = s > 0
    first_seq = np.minimum.reduceat(np.where(has_seq, s, np.iinfo(np.int64).max), starts)
    last_seq = np.maximum.reduceat(s, starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n_valid > 0, total / n_valid, np.nan)
    vmin = np.where(n_valid > 0, vmin, np.nan)
    vmax = np.where(n_valid > 0, vmax, np.nan)
    first_seq = np.where(last_seq > 0, first_seq, 0)
    expected = max(1, round(expected_per_minute))
    ok = n_valid >= min_minute_fraction * expected_per_minute
    capture = np.minimum(n_valid / expected_per_minute, 1.0)
    return [
        Aggregate(
            point_id=point_id,
            period_s=60,
            start_ns=int(minute[st]) * MINUTE_NS,
            count=int(c),
            valid_count=int(nv),
            mean=float(m),
            min=float(lo),
            max=float(hi),
            expected=expected,
            valid_minutes=int(k),
            capture_rate=float(cr),
            valid=bool(k),
            first_seq=int(fs),
            last_seq=int(ls),
            unit=unit,
        )
        for st, c, nv, m, lo, hi, k, cr, fs, ls in zip(
            starts.tolist(),
            counts.tolist(),
            n_valid.tolist(),
            mean.tolist(),
            vmin.tolist(),
            vmax.tolist(),
            ok.tolist(),
            capture.tolist(),
            first_seq.tolist(),
            last_seq.tolist(),
            strict=True,
        )
    ]


def aggregate_hours(
    minutes: Sequence[Aggregate],
    *,
    min_valid_minutes: int = 45,
    start_ns: int | None = None,
    end_ns: int | None = None,
    point_id: str | None = None,
    unit: str = "",
) -> list[Aggregate]:
    """Hour aggregates from minute aggregates of one point, in time order (``unit`` names the
    unit of an hour without any minute).

    Without ``start_ns``/``end_ns`` only the hours that hold a minute are returned. With them,
    every hour that starts in ``[start_ns, end_ns)`` (aligned down to the hour) is returned,
    an hour without data as an invalid aggregate with ``count == 0``: the substitution step
    needs the missing hours explicitly.
    """
    import numpy as np

    if not 1 <= min_valid_minutes <= 60:
        raise ValueError("min_valid_minutes must be between 1 and 60")
    if any(m.period_s != 60 for m in minutes):
        raise ValueError("aggregate_hours takes minute aggregates")
    pids = {m.point_id for m in minutes}
    if point_id is not None:
        pids.add(point_id)
    if len(pids) > 1:
        raise ValueError(f"minute aggregates of several points: {sorted(pids)}")
    pid = next(iter(pids), "")
    unit = minutes[0].unit if minutes else unit
    by_hour: dict[int, list[Aggregate]] = {}
    for m in minutes:
        by_hour.setdefault(m.start_ns // HOUR_NS, []).append(m)
    hours = set(by_hour)
    if start_ns is not None or end_ns is not None:
        if start_ns is None or end_ns is None:
            raise ValueError("give both start_ns and end_ns, or neither")
        first, last = start_ns // HOUR_NS, -(-end_ns // HOUR_NS)
        hours = {h for h in hours if first <= h < last} | set(range(first, last))
    out: list[Aggregate] = []
    for h in sorted(hours):
        ms = by_hour.get(h, [])
        good = [m for m in ms if m.valid]
        seqs = [m.first_seq for m in ms if m.first_seq > 0]
        n_good = len(good)
        out.append(
            Aggregate(
                point_id=pid,
                period_s=3600,
                start_ns=h * HOUR_NS,
                count=sum(m.count for m in ms),
                valid_count=sum(m.valid_count for m in ms),
                mean=float(np.mean([m.mean for m in good])) if good else float("nan"),
                min=min(m.min for m in good) if good else float("nan"),
                max=max(m.max for m in good) if good else float("nan"),
                expected=60,
                valid_minutes=n_good,
                capture_rate=n_good / 60,
                valid=n_good >= min_valid_minutes,
                first_seq=min(seqs) if seqs else 0,
                last_seq=max((m.last_seq for m in ms), default=0),
                unit=unit,
            )
        )
    return out


def aggregate(
    point_id: str,
    ts_ns: ArrayLike,
    values: ArrayLike,
    quality: ArrayLike,
    config: AggregationConfig,
    *,
    seq: ArrayLike | None = None,
    unit: str = "",
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> tuple[list[Aggregate], list[Aggregate]]:
    """Minute and hour aggregates of one point by ``config``."""
    minutes = aggregate_minutes(
        point_id,
        ts_ns,
        values,
        quality,
        expected_per_minute=config.expected_per_minute,
        min_minute_fraction=config.min_minute_fraction,
        seq=seq,
        unit=unit,
    )
    hours = aggregate_hours(
        minutes,
        min_valid_minutes=config.min_valid_minutes,
        start_ns=start_ns,
        end_ns=end_ns,
        point_id=point_id,
        unit=unit,
    )
    return minutes, hours


def capture_rate(aggregates: Sequence[Aggregate]) -> float:
    """Share of valid periods among ``aggregates`` (0 when empty). Over the hours of a
    period that is the hourly data capture rate."""
    if not aggregates:
        return 0.0
    return sum(1 for a in aggregates if a.valid) / len(aggregates)
