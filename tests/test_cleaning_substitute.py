"""Missing-data substitution: worked examples of the 40 CFR 75.33 Table 1 tiers.

The arithmetic of each example is written out in the comments, so that it can be checked by
hand against the rule (and docs/cleaning.md repeats the first ones).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from cleaning._aggregate import HOUR_NS, Aggregate
from cleaning._config import SubstitutionConfig, SubstitutionTier
from cleaning._substitute import PART75_SOURCE, nearest_rank, part75_table1, substitute

H0 = 1_700_002_800 * 1_000_000_000
MPC = 500.0
POLICY = part75_table1(max_potential=MPC)


def make_hours(values: list[float | None]) -> list[Aggregate]:
    out = []
    for i, v in enumerate(values):
        ok = v is not None
        out.append(
            Aggregate(
                point_id="so2",
                period_s=3600,
                start_ns=H0 + i * HOUR_NS,
                count=3600 if ok else 0,
                valid_count=3600 if ok else 0,
                mean=float(v) if v is not None else math.nan,
                min=float(v) if v is not None else math.nan,
                max=float(v) if v is not None else math.nan,
                expected=60,
                valid_minutes=60 if ok else 0,
                capture_rate=1.0 if ok else 0.0,
                valid=ok,
                first_seq=i * 3600 + 1 if ok else 0,
                last_seq=i * 3600 + 3600 if ok else 0,
                unit="mg/m3",
            )
        )
    return out


def hour(i: int) -> int:
    return H0 + i * HOUR_NS


def test_part75_table_is_the_regulation() -> None:
    t = POLICY.tiers
    assert [(x.min_availability, x.max_gap_hours, x.methods) for x in t] == [
        (95, 24, ("hb_ha_average",)),
        (95, None, ("hb_ha_average", "p90")),
        (90, 8, ("hb_ha_average",)),
        (90, None, ("hb_ha_average", "p95")),
        (80, None, ("lookback_max",)),
        (0, None, ("max_potential",)),
    ]
    assert POLICY.lookback_hours == 720 and POLICY.availability_hours == 8760
    assert "75.33" in POLICY.source and POLICY.source == PART75_SOURCE


def test_high_availability_short_gap_average_of_hour_before_and_after() -> None:
    # 100 hours, value 100 + i, hours 60-62 invalid. PMA at hour 60 = 60 valid / 61 = 98.4 %,
    # at hour 62 = 60 / 63 = 95.2 %: >= 95 % and N = 3 <= 24 -> (HB + HA) / 2
    # = (159 + 163) / 2 = 161.
    values: list[float | None] = [100.0 + i for i in range(100)]
    values[60:63] = [None, None, None]
    hours = make_hours(values)
    before = list(hours)
    (s,) = substitute(hours, POLICY)
    assert s.hours == (hour(60), hour(61), hour(62))
    assert s.value == 161.0 and s.method == "hb_ha_average" and s.tier == 0
    assert s.availability == pytest.approx(100 * 60 / 61)
    assert (s.hour_before_ns, s.hour_after_ns) == (hour(59), hour(63))
    assert (s.gap_start_ns, s.gap_hours) == (hour(60), 3)
    assert (s.start_ns, s.end_ns) == (hour(60), hour(63))
    assert s.point_id == "so2" and s.unit == "mg/m3" and s.policy == POLICY.name
    assert hours == before  # the hour aggregates are not touched


def test_high_availability_long_gap_greater_of_average_and_p90() -> None:
    # 1000 valid hours with value (i % 100) + 1, then a 30 h gap, then hour 1030 (value 31).
    # PMA stays >= 1000 / 1030 = 97.1 %, N = 30 > 24: greater of (HB + HA) / 2 and the 90th
    # percentile of the last 720 QA hours (hours 280-999).
    # Those 720 values: 81..100 eight times each (hours 280-299 and seven full cycles),
    # 1..80 seven times each. Nearest rank ceil(0.90 * 720) = 648 = 560 + 88 -> the 11th
    # value above 80 -> 91. (HB + HA) / 2 = (100 + 31) / 2 = 65.5, so the substitute is 91.
    values: list[float | None] = [float(i % 100 + 1) for i in range(1000)]
    values += [None] * 30 + [31.0]
    (s,) = substitute(make_hours(values), POLICY)
    assert s.hours == tuple(hour(i) for i in range(1000, 1030))
    assert (s.value, s.method, s.tier) == (91.0, "p90", 1)
    assert s.lookback_hours == 720 and s.gap_hours == 30


def test_availability_is_evaluated_hour_by_hour() -> None:
    # value 10 + (i % 7); gaps at hours 10-14 (N = 5) and 95-97 (N = 3); MPC 500.
    # hour 10: PMA 10/11 = 90.9 %, N <= 8     -> average of h9 (12) and h15 (11) = 11.5
    # hour 11: PMA 10/12 = 83.3 %             -> maximum of the lookback (h0-h9) = 16
    # hours 12-14: PMA 10/13 = 76.9 % and less -> maximum potential value 500
    # hours 95-97: PMA 90/96 = 93.75 % .. 90/98 = 91.8 %, N = 3 -> (h94 13 + h98 10) / 2
    values: list[float | None] = [10.0 + i % 7 for i in range(100)]
    for i in (*range(10, 15), *range(95, 98)):
        values[i] = None
    subs = substitute(make_hours(values), POLICY)
    got = [(s.hours, s.value, s.method, s.tier) for s in subs]
    assert got == [
        ((hour(10),), 11.5, "hb_ha_average", 2),
        ((hour(11),), 16.0, "lookback_max", 4),
        ((hour(12), hour(13), hour(14)), MPC, "max_potential", 5),
        ((hour(95), hour(96), hour(97)), 11.5, "hb_ha_average", 2),
    ]
    assert subs[0].availability == pytest.approx(100 * 10 / 11)
    assert subs[3].availability == pytest.approx(93.75)
    assert all(s.gap_hours == 5 for s in subs[:3]) and subs[3].gap_hours == 3


def test_mid_availability_long_gap_greater_of_average_and_p95() -> None:
    # 200 hours, value i, every hour i % 20 == 5 invalid (10 one-hour gaps); then a 10 h gap
    # (hours 200-209) and hour 210 with value 1. PMA at hour 200 = 190 / 201 = 94.5 %, at
    # hour 209 = 190 / 210 = 90.5 %: 90-95 % and N = 10 > 8 -> greater of (199 + 1) / 2 = 100
    # and the 95th percentile of the 190 QA hours: rank ceil(0.95 * 190) = 181; the top 14
    # values are 186..199 (ranks 177-190), so rank 181 is 190.
    values: list[float | None] = [None if i % 20 == 5 else float(i) for i in range(200)]
    values += [None] * 10 + [1.0]
    subs = substitute(make_hours(values), POLICY)
    (s,) = [s for s in subs if s.gap_start_ns == hour(200)]
    assert (s.value, s.method, s.tier, s.gap_hours) == (190.0, "p95", 3, 10)
    assert len(s.hours) == 10 and s.lookback_hours == 190
    assert len(subs) == 11  # the one-hour gaps are substituted too


def test_open_gap_waits_for_the_hour_after() -> None:
    assert substitute(make_hours([5.0, 6.0, None, None]), POLICY) == []
    assert substitute(make_hours([None, None]), POLICY) == []
    assert substitute([], POLICY) == []


def test_gap_at_the_start_uses_the_hour_after() -> None:
    # no hour before (75.31(b)(2)): the hour after alone; PMA 0 % -> MPC tier though
    policy = SubstitutionConfig(tiers=(SubstitutionTier(min_availability=0, methods=("hb_ha_average",)),))
    (s,) = substitute(make_hours([None, None, 7.0]), policy)
    assert (s.value, s.hour_before_ns, s.hour_after_ns) == (7.0, None, hour(2))
    (s,) = substitute(make_hours([None, 7.0]), POLICY)
    assert (s.value, s.method) == (MPC, "max_potential")


def test_method_without_data_is_skipped() -> None:
    # lookback_max has no QA hour before the gap: the record is left out
    policy = SubstitutionConfig(tiers=(SubstitutionTier(min_availability=0, methods=("lookback_max",)),))
    assert substitute(make_hours([None, 3.0]), policy) == []


def test_lookback_is_limited_in_hours_and_clock_time() -> None:
    policy = SubstitutionConfig(
        tiers=(SubstitutionTier(min_availability=0, methods=("lookback_max",)),),
        lookback_hours=3,
    )
    (s,) = substitute(make_hours([99.0, 1.0, 2.0, 3.0, None, 0.0]), policy)
    assert s.value == 3.0 and s.lookback_hours == 3  # 99 is older than 3 QA hours
    policy = policy.model_copy(update={"lookback_hours": 720, "max_lookback_clock_hours": 2})
    (s,) = substitute(make_hours([99.0, 1.0, 2.0, 3.0, None, 0.0]), policy)
    assert s.value == 3.0 and s.lookback_hours == 2


def test_custom_tiers_as_in_the_issue() -> None:
    # the simplified scheme of the issue, expressed as configuration
    simple = SubstitutionConfig(
        name="simple",
        tiers=(
            SubstitutionTier(min_availability=95, methods=("hb_ha_average",)),
            SubstitutionTier(min_availability=90, methods=("p90",)),
            SubstitutionTier(min_availability=80, methods=("p95",)),
            SubstitutionTier(min_availability=0, methods=("lookback_max",)),
        ),
    )
    values: list[float | None] = [float(i % 100 + 1) for i in range(1000)]
    values += [None] * 30 + [31.0]
    (s,) = substitute(make_hours(values), simple)
    assert (s.value, s.method, s.policy) == (65.5, "hb_ha_average", "simple")


def test_nearest_rank() -> None:
    xs = np.arange(1.0, 11.0)  # 1..10
    assert nearest_rank(xs, Fraction(90)) == 9.0
    assert nearest_rank(xs, Fraction(95)) == 10.0
    assert nearest_rank(xs, Fraction(1)) == 1.0
    assert nearest_rank(np.array([4.0]), Fraction(50)) == 4.0


def test_input_errors() -> None:
    hs = make_hours([1.0, None, 2.0])
    with pytest.raises(ValueError, match="increasing"):
        substitute([hs[1], hs[0]], POLICY)
    with pytest.raises(ValueError, match="hour aggregates"):
        from dataclasses import replace

        substitute([replace(hs[0], period_s=60)], POLICY)
