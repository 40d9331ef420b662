"""Minute and hour aggregates and their validity rules."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from cleaning._aggregate import (
    HOUR_NS,
    MINUTE_NS,
    Aggregate,
    aggregate,
    aggregate_hours,
    aggregate_minutes,
    capture_rate,
)
from cleaning._config import AggregationConfig
from mrv_core._records import Quality

S = 1_000_000_000
H0 = 1_700_002_800 * S  # an hour boundary (1_700_002_800 = 472_223 * 3600)
assert H0 % HOUR_NS == 0


def test_minute_worked_example() -> None:
    # 60 readings a minute expected; minute 0 has 50 (46 valid), minute 1 has 44 valid
    ts0 = H0 + np.arange(50) * S
    v0 = np.arange(50, dtype=np.float64)
    q0 = np.zeros(50, np.uint32)
    q0[[3, 4]] = Quality.SPIKE
    q0[5] = Quality.MANUAL  # not an invalid bit: still valid
    v0[6] = math.nan
    q0[6] = Quality.COMM_FAULT
    v0[7] = math.nan  # NaN without a flag is not valid data either
    ts1 = H0 + MINUTE_NS + np.arange(44) * S
    v1 = np.full(44, 2.0)
    ts = np.concatenate([ts1, ts0])  # order of input does not matter
    v = np.concatenate([v1, v0])
    q = np.concatenate([np.zeros(44, np.uint32), q0])
    seq = np.concatenate([np.arange(200, 244), np.arange(100, 150)])
    m0, m1 = aggregate_minutes("p", ts, v, q, expected_per_minute=60, seq=seq, unit="kW")
    good = [x for i, x in enumerate(range(50)) if i not in (3, 4, 6, 7)]
    assert m0 == Aggregate(
        point_id="p",
        period_s=60,
        start_ns=H0,
        count=50,
        valid_count=46,
        mean=sum(good) / 46,
        min=0.0,
        max=49.0,
        expected=60,
        valid_minutes=1,
        capture_rate=46 / 60,
        valid=True,  # 46 >= 0.75 * 60 = 45
        first_seq=100,
        last_seq=149,
        unit="kW",
    )
    assert m1.valid is False and m1.valid_count == 44 and m1.valid_minutes == 0
    assert (m1.first_seq, m1.last_seq) == (200, 243)
    assert m1.mean == 2.0 and m1.end_ns == H0 + 2 * MINUTE_NS


def test_minute_without_valid_data() -> None:
    (m,) = aggregate_minutes("p", [H0], [math.nan], [Quality.COMM_FAULT], expected_per_minute=60)
    assert m.count == 1 and m.valid_count == 0 and not m.valid
    assert math.isnan(m.mean) and math.isnan(m.min) and math.isnan(m.max)
    assert (m.first_seq, m.last_seq) == (0, 0)


def test_min_fraction_boundary() -> None:
    ts = H0 + np.arange(45) * S
    v = np.ones(45)
    q = np.zeros(45, np.uint32)
    (m,) = aggregate_minutes("p", ts, v, q, expected_per_minute=60)
    assert m.valid
    (m,) = aggregate_minutes("p", ts, v, q, expected_per_minute=60, min_minute_fraction=0.8)
    assert not m.valid


def _minutes(valid_minutes: int, value: float = 10.0, hour: int = 0) -> list[Aggregate]:
    out = []
    for k in range(valid_minutes):
        out.append(
            Aggregate(
                point_id="p",
                period_s=60,
                start_ns=H0 + hour * HOUR_NS + k * MINUTE_NS,
                count=60,
                valid_count=60,
                mean=value + k,
                min=value,
                max=value + 2 * k,
                expected=60,
                valid_minutes=1,
                capture_rate=1.0,
                valid=True,
                first_seq=1000 + k,
                last_seq=1000 + k,
                unit="kW",
            )
        )
    return out


def test_hour_valid_with_45_minutes() -> None:
    (h,) = aggregate_hours(_minutes(45))
    assert h.valid and h.valid_minutes == 45 and h.capture_rate == 0.75
    assert h.mean == pytest.approx(10 + 22)  # mean of 10..54
    assert (h.min, h.max) == (10.0, 10.0 + 88)
    assert (h.first_seq, h.last_seq) == (1000, 1044)
    assert h.count == 45 * 60 and h.expected == 60 and h.unit == "kW"
    (h,) = aggregate_hours(_minutes(44))
    assert not h.valid
    (h,) = aggregate_hours(_minutes(44), min_valid_minutes=40)
    assert h.valid


def test_hour_mean_weighs_minutes_equally_and_ignores_invalid_minutes() -> None:
    ms = _minutes(50)
    bad = Aggregate(
        point_id="p",
        period_s=60,
        start_ns=H0 + 55 * MINUTE_NS,
        count=10,
        valid_count=10,
        mean=1e9,
        min=1e9,
        max=1e9,
        expected=60,
        valid_minutes=0,
        capture_rate=10 / 60,
        valid=False,
        first_seq=5000,
        last_seq=5009,
    )
    (h,) = aggregate_hours([*ms, bad])
    assert h.mean == pytest.approx(10 + 24.5) and h.max < 1e9
    assert h.count == 50 * 60 + 10 and h.last_seq == 5009  # the raw data it comes from


def test_hours_over_a_range_include_missing_hours() -> None:
    ms = _minutes(60, hour=1)
    hours = aggregate_hours(ms, start_ns=H0, end_ns=H0 + 3 * HOUR_NS)
    assert [h.start_ns for h in hours] == [H0, H0 + HOUR_NS, H0 + 2 * HOUR_NS]
    assert [h.valid for h in hours] == [False, True, False]
    assert hours[0].count == 0 and math.isnan(hours[0].mean)
    assert capture_rate(hours) == pytest.approx(1 / 3)
    assert capture_rate([]) == 0.0


def test_aggregate_end_to_end() -> None:
    n = 2 * 3600  # two hours of 1 s readings; the second hour loses 20 minutes
    ts = H0 + np.arange(n, dtype=np.int64) * S
    v = np.full(n, 5.0)
    q = np.zeros(n, np.uint32)
    q[3600 + 600 : 3600 + 1800] = Quality.MAINTENANCE
    minutes, hours = aggregate(
        "p", ts, v, q, AggregationConfig(expected_per_minute=60), seq=np.arange(1, n + 1)
    )
    assert len(minutes) == 120
    assert [h.valid_minutes for h in hours] == [60, 40]
    assert [h.valid for h in hours] == [True, False]
    assert hours[0].first_seq == 1 and hours[1].last_seq == n


def test_errors() -> None:
    with pytest.raises(ValueError, match="one length"):
        aggregate_minutes("p", [H0], [1.0, 2.0], [0], expected_per_minute=60)
    with pytest.raises(ValueError, match="min_valid_minutes"):
        aggregate_hours([], min_valid_minutes=0)
    with pytest.raises(ValueError, match="both"):
        aggregate_hours([], start_ns=H0)
    with pytest.raises(ValueError, match="minute aggregates"):
        aggregate_hours(aggregate_hours(_minutes(1)))
    other = [dataclasses.replace(m, point_id="q") for m in _minutes(1)]
    with pytest.raises(ValueError, match="several points"):
        aggregate_hours(_minutes(1) + other)
    assert aggregate_minutes("p", [], [], [], expected_per_minute=60) == []
