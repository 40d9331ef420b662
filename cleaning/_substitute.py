"""Missing-data substitution for invalid or missing hours, by configurable tiers.

The shipped policy is the US EPA standard missing-data procedure of 40 CFR Part 75,
§75.33(b) and its Table 1 (SO2 concentration; the same structure is used for CO2 and
moisture), with the percent monitor data availability (PMA) of §75.32 (Equations 8 and 9):

====================  ==============  ===============================================
PMA                   gap length N    substitute value for each hour of the gap
====================  ==============  ===============================================
>= 95 %               N <= 24 h       average of the hour before and the hour after
>= 95 %               N > 24 h        greater of that average and the 90th percentile
                                      of the 720 quality-assured lookback hours
>= 90 %, < 95 %       N <= 8 h        average of the hour before and the hour after
>= 90 %, < 95 %       N > 8 h         greater of that average and the 95th percentile
>= 80 %, < 90 %       any             maximum of the 720 lookback hours
< 80 %                any             maximum potential value (configured)
====================  ==============  ===============================================

How this module reads the rule (our interpretation, stated so that it can be reviewed):

* The input is the sequence of *operating* hours of one monitored parameter, in time order
  (`aggregate_hours` output, with the non-operating hours removed by the caller). An hour is
  quality-assured when its aggregate is ``valid``.
* A gap is a maximal run of hours that are not valid. Only closed gaps (followed by a valid
  hour) are substituted: the gap length N and the hour after are unknown before that.
* PMA is evaluated for each hour of the gap, hourly as §75.32 says: quality-assured hours /
  operating hours over the last ``availability_hours`` (8,760) operating hours up to and
  including that hour, so the gap's own hours count as unavailable (Equation 8 applies
  automatically while there are fewer than 8,760 hours of history).
* The lookback is the last ``lookback_hours`` (720) quality-assured hours before the gap, and
  no older than ``max_lookback_clock_hours`` (26,280 h = three years, §75.33(a)).
* Percentiles use the nearest-rank definition (the smallest value with at least p % of the
  lookback at or below it); Part 75 does not spell out an interpolation.
* Without a valid hour before the gap (start of the record) the hour after is used alone, as
  in §75.31(b)(2). A method that has no data (empty lookback) is skipped; if no method of the
  tier has data the hour is left unsubstituted.

Substitute records are derived data: they name the hours they replace and never change the
raw readings or the hour aggregates.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from ._aggregate import HOUR_NS, Aggregate
from ._config import SubstitutionConfig, SubstitutionTier

if TYPE_CHECKING:  # imported where a gap is filled (design 008, decision 26)
    import numpy as np

__all__ = ["PART75_SOURCE", "Substitute", "part75_table1", "substitute"]

PART75_SOURCE = (
    "US EPA, 40 CFR Part 75 (Continuous Emission Monitoring), Subpart D: §75.33(b) "
    "standard missing data procedures for SO2, Table 1; monitor data availability per §75.32 "
    "Equations 8 and 9"
)


def part75_table1(
    max_potential: float, *, lookback_hours: int = 720, name: str = "40 CFR 75.33 Table 1"
) -> SubstitutionConfig:
    """The §75.33(b) / Table 1 tiers. ``max_potential`` is the maximum potential value of the
    parameter (for SO2 the MPC of Appendix A §2.1.1.1), used below 80 % availability."""
    return SubstitutionConfig(
        name=name,
        source=PART75_SOURCE,
        lookback_hours=lookback_hours,
        max_potential=max_potential,
        tiers=(
            SubstitutionTier(min_availability=95, max_gap_hours=24, methods=("hb_ha_average",)),
            SubstitutionTier(min_availability=95, methods=("hb_ha_average", "p90")),
            SubstitutionTier(min_availability=90, max_gap_hours=8, methods=("hb_ha_average",)),
            SubstitutionTier(min_availability=90, methods=("hb_ha_average", "p95")),
            SubstitutionTier(min_availability=80, methods=("lookback_max",)),
            SubstitutionTier(min_availability=0, methods=("max_potential",)),
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Substitute:
    """A substitute value for one or more consecutive hours of one gap."""

    point_id: str
    hours: tuple[int, ...]  # start_ns of each hour this record replaces
    value: float
    method: str  # the method whose value was used (the greatest of the tier's methods)
    tier: int  # index of the tier in the policy
    availability: float  # PMA (percent) at the first hour of this record
    gap_start_ns: int
    gap_hours: int  # N, the length of the whole gap
    hour_before_ns: int | None  # the valid hours used by hb_ha_average
    hour_after_ns: int | None
    lookback_hours: int  # quality-assured hours in the lookback
    policy: str
    unit: str = ""

    @property
    def start_ns(self) -> int:
        """Start of the first replaced hour."""
        return self.hours[0]

    @property
    def end_ns(self) -> int:
        """End of the last replaced hour."""
        return self.hours[-1] + HOUR_NS


def nearest_rank(sorted_values: np.ndarray, p: Fraction) -> float:
    """The nearest-rank ``p``-th percentile of ascending ``sorted_values`` (non-empty)."""
    n = sorted_values.shape[0]
    rank = max(1, math.ceil(p * n / 100))
    return float(sorted_values[rank - 1])


def substitute(hours: Sequence[Aggregate], policy: SubstitutionConfig) -> list[Substitute]:
    """Substitute records for the closed gaps of ``hours`` (see the module docstring)."""
    n = len(hours)
    if n == 0:
        return []
    starts = [h.start_ns for h in hours]
    if any(b <= a for a, b in itertools.pairwise(starts)):
        raise ValueError("hours must be in strictly increasing time order")
    if any(h.period_s != 3600 for h in hours):
        raise ValueError("substitute takes hour aggregates")
    import numpy as np

    valid = np.array([h.valid and math.isfinite(h.mean) for h in hours], dtype=np.bool_)
    means = np.array([h.mean for h in hours], dtype=np.float64)
    csum = np.concatenate(([0], np.cumsum(valid, dtype=np.int64)))
    valid_idx = np.flatnonzero(valid)
    out: list[Substitute] = []
    i = 0
    while i < n:
        if valid[i]:
            i += 1
            continue
        a = i
        while i < n and not valid[i]:
            i += 1
        b = i
        if b >= n:
            break  # open gap: wait for the hour after
        out.extend(_fill_gap(hours, a, b, valid, means, csum, valid_idx, policy))
    return out


def _fill_gap(
    hours: Sequence[Aggregate],
    a: int,
    b: int,
    valid: np.ndarray,
    means: np.ndarray,
    csum: np.ndarray,
    valid_idx: np.ndarray,
    policy: SubstitutionConfig,
) -> list[Substitute]:
    import numpy as np

    gap_len = b - a
    hb = a - 1 if a > 0 else None  # valid by construction (maximal gap)
    ha = b
    before = valid_idx[valid_idx < a][-policy.lookback_hours :]
    if policy.max_lookback_clock_hours is not None:
        oldest = hours[a].start_ns - policy.max_lookback_clock_hours * HOUR_NS
        before = before[[hours[int(k)].start_ns >= oldest for k in before]]
    lookback = np.sort(means[before])
    cache: dict[int, tuple[float, str] | None] = {}

    def tier_value(t: int, tier: SubstitutionTier) -> tuple[float, str] | None:
        if t not in cache:
            best: tuple[float, str] | None = None
            for m in tier.methods:
                val = _method_value(m, means, hb, ha, lookback, policy)
                if val is not None and (best is None or val > best[0]):
                    best = (val, m)
            cache[t] = best
        return cache[t]

    records: list[Substitute] = []
    current: tuple[int, float, str, float] | None = None  # tier, value, method, PMA
    current_hours: list[int] = []

    def flush() -> None:
        if current is not None and current_hours:
            t, val, meth, pma = current
            records.append(
                Substitute(
                    point_id=hours[a].point_id,
                    hours=tuple(current_hours),
                    value=val,
                    method=meth,
                    tier=t,
                    availability=pma,
                    gap_start_ns=hours[a].start_ns,
                    gap_hours=gap_len,
                    hour_before_ns=None if hb is None else hours[hb].start_ns,
                    hour_after_ns=hours[ha].start_ns,
                    lookback_hours=int(lookback.shape[0]),
                    policy=policy.name,
                    unit=hours[a].unit,
                )
            )

    for j in range(a, b):
        lo = max(0, j - policy.availability_hours + 1)
        pma = 100.0 * int(csum[j + 1] - csum[lo]) / (j + 1 - lo)
        t, tier = next(
            (k, tr)
            for k, tr in enumerate(policy.tiers)
            if pma >= tr.min_availability and (tr.max_gap_hours is None or gap_len <= tr.max_gap_hours)
        )
        tv = tier_value(t, tier)
        if tv is None:
            flush()
            current, current_hours = None, []
            continue
        if current is None or current[0] != t:
            flush()
            current, current_hours = (t, tv[0], tv[1], pma), []
        current_hours.append(hours[j].start_ns)
    flush()
    return records


def _method_value(
    method: str,
    means: np.ndarray,
    hb: int | None,
    ha: int,
    lookback: np.ndarray,
    policy: SubstitutionConfig,
) -> float | None:
    if method == "hb_ha_average":
        if hb is None:
            return float(means[ha])
        return float((means[hb] + means[ha]) / 2)
    if method == "max_potential":
        return policy.max_potential
    if lookback.shape[0] == 0:
        return None
    if method == "lookback_max":
        return float(lookback[-1])
    if method.startswith("p"):
        return nearest_rank(lookback, Fraction(method[1:]))
    raise ValueError(f"unknown substitution method {method!r}")
