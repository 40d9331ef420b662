"""Worked examples of each check (the same examples as in docs/cleaning.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cleaning._checks import (
    check_counter,
    check_duplicates,
    check_flatline,
    check_range,
    check_rate_of_change,
    check_sentinels,
    check_spike,
    check_timestamps,
    counter_deltas,
)
from cleaning._config import (
    ChecksConfig,
    CounterCheck,
    FlatlineCheck,
    RangeCheck,
    RateCheck,
    SpikeCheck,
    TimestampCheck,
)
from cleaning._stream import PointCleaner, run_checks
from mrv_core._records import INVALID, Quality

Q = Quality
S = 1_000_000_000
T0 = 1_700_000_000 * S
nan = math.nan


def secs(*s: float) -> np.ndarray:
    return T0 + np.array([round(x * S) for x in s], dtype=np.int64)


def bits(flags: np.ndarray) -> list[int]:
    return [int(f) for f in flags]


# -- range, sentinels ----------------------------------------------------------------------


def test_range() -> None:
    v = np.array([-5.0, 0.0, 50.0, 100.0, 101.0, nan, math.inf])
    assert bits(check_range(v, 0, 100)) == [Q.RANGE, 0, 0, 0, Q.RANGE, 0, Q.RANGE]
    assert bits(check_range(v, min=0)) == [Q.RANGE, 0, 0, 0, 0, 0, 0]
    assert bits(check_range(v, max=100)) == [0, 0, 0, 0, Q.RANGE, 0, Q.RANGE]


def test_sentinels_match_to_float32_precision() -> None:
    flt_max = float(np.finfo(np.float32).max)  # what a float32 register holding FLT_MAX reads
    v = np.array([65535.0, 65534.0, flt_max, -9999.0, 0.0, nan, math.inf, 65535.001])
    got = check_sentinels(v, (65535.0, 3.4028235e38, -9999.0, math.inf))
    assert bits(got) == [Q.SENTINEL, 0, Q.SENTINEL, Q.SENTINEL, 0, 0, Q.SENTINEL, Q.SENTINEL]
    assert bits(check_sentinels(v, (0.0,))) == [0, 0, 0, 0, Q.SENTINEL, 0, 0, 0]
    assert bits(check_sentinels(v, ())) == [0] * 8


# -- timestamps, duplicates ----------------------------------------------------------------


def test_timestamps() -> None:
    now = int(secs(100)[0])
    ts = secs(10, 20, 20, 15, 200, 30, 1, 40)
    got = check_timestamps(ts, now, max_future_s=5, max_age_s=95)
    assert bits(got) == [
        0,
        0,
        Q.TS_DUPLICATE,
        Q.TS_NON_MONOTONIC,
        Q.TS_FUTURE,  # 100 s ahead of now; does not raise the running maximum
        0,  # 30 > 20: in order, the future reading is not held against it
        Q.TS_NON_MONOTONIC | Q.TS_STALE,  # 99 s old
        0,
    ]
    # the running maximum carries over from an earlier chunk
    assert bits(check_timestamps(secs(30, 31), now, prev_max_ts=int(secs(30)[0]))) == [
        Q.TS_DUPLICATE,
        0,
    ]


def test_timestamps_skew_is_inclusive() -> None:
    now = int(secs(0)[0])
    got = check_timestamps(secs(5, 5.000000001), now, max_future_s=5)
    assert bits(got) == [0, Q.TS_FUTURE]


def test_duplicate_readings() -> None:
    ts = secs(1, 1, 1, 2, 2, 3)
    v = np.array([5.0, 5.0, 6.0, nan, nan, 7.0])
    assert bits(check_duplicates(ts, v)) == [0, Q.DUPLICATE, 0, 0, Q.DUPLICATE, 0]
    assert bits(check_duplicates(secs(3), [7.0], prev_ts=int(secs(3)[0]), prev_value=7.0)) == [Q.DUPLICATE]


def test_duplicate_reading_is_not_also_a_timestamp_conflict() -> None:
    cfg = ChecksConfig(timestamps=TimestampCheck())
    ts = secs(1, 1, 1)
    v = np.array([5.0, 5.0, 6.0])
    got = run_checks(ts, v, np.zeros(3, np.uint32), cfg, int(ts[-1]))
    assert bits(got) == [0, Q.DUPLICATE, Q.TS_DUPLICATE]
    no_dup = cfg.model_copy(update={"duplicates": False})
    got = run_checks(ts, v, np.zeros(3, np.uint32), no_dup, int(ts[-1]))
    assert bits(got) == [0, Q.TS_DUPLICATE, Q.TS_DUPLICATE]


# -- rate of change --------------------------------------------------------------------------


def test_rate_of_change() -> None:
    ts = secs(0, 1, 2, 3, 3, 5, 6)
    v = np.array([0.0, 1.0, 10.0, 11.0, 30.0, nan, 26.0])
    # 0->1: 1/s; 1->10: 9/s; 10->11; 11->30 at dt=0: not judged; 30->26 over 3 s (NaN skipped)
    assert bits(check_rate_of_change(ts, v, 5.0)) == [0, 0, Q.RATE_OF_CHANGE, 0, 0, 0, 0]
    assert bits(check_rate_of_change(ts[:1], v[:1], 5.0, prev_ts=int(T0 - S), prev_value=-9.0))
    assert bits(check_rate_of_change(ts, v, 1.0)) == [0, 0, Q.RATE_OF_CHANGE, 0, 0, 0, Q.RATE_OF_CHANGE]


# -- spike -----------------------------------------------------------------------------------


def test_spike_hampel_worked_example() -> None:
    v = np.array([10.0, 11.0, 10.0, 12.0, 11.0, 50.0, 11.0, 10.5])
    # at 50: window [10, 11, 10, 12, 11], median 11, |dev| [1, 0, 1, 1, 0], MAD 1,
    # threshold 3 * 1.4826 * 1 = 4.4478 < |50 - 11| = 39 -> spike.
    # at 11: window [11, 10, 12, 11, 50], median 11, MAD 1: |11 - 11| = 0 -> fine.
    got = check_spike(v, window=5, k=3.0)
    assert bits(got) == [0, 0, 0, 0, 0, Q.SPIKE, 0, 0]


def test_spike_min_deviation_on_a_quantised_signal() -> None:
    v = np.array([20.0] * 6 + [20.1, 25.0])
    # MAD is 0: without a floor every step of one resolution unit is a spike
    assert bits(check_spike(v, window=5, k=3.0)) == [0] * 6 + [Q.SPIKE, Q.SPIKE]
    assert bits(check_spike(v, window=5, k=3.0, min_deviation=0.5)) == [0] * 7 + [Q.SPIKE]


def test_spike_skips_nan_and_uses_history() -> None:
    v = np.array([nan, 50.0, nan])
    assert bits(check_spike(v, window=3, k=3.0, history=[10.0, 11.0, 10.0])) == [0, Q.SPIKE, 0]
    assert bits(check_spike(v, window=3, k=3.0)) == [0, 0, 0]


def test_spike_even_window_median() -> None:
    v = np.array([1.0, 2.0, 3.0, 4.0, 2.5, 9.0])
    # window 4 before 2.5: [1, 2, 3, 4], median 2.5, |dev| [1.5, .5, .5, 1.5], MAD 1 -> fine
    # window before 9: [2, 3, 4, 2.5], median 2.75, |dev| [.75, .25, 1.25, .25], MAD 0.5,
    # threshold 3 * 1.4826 * 0.5 = 2.2239 < 6.25 -> spike
    assert bits(check_spike(v, window=4, k=3.0)) == [0, 0, 0, 0, 0, Q.SPIKE]


# -- flatline --------------------------------------------------------------------------------


def test_flatline_by_count() -> None:
    ts = secs(0, 1, 2, 3, 4, 5, 6)
    v = np.array([1.0, 1.0, 1.0, 1.0, 2.0, 2.0, nan])
    assert bits(check_flatline(ts, v, count=3)) == [0, 0, Q.FLATLINE, Q.FLATLINE, 0, 0, 0]


def test_flatline_by_duration_and_tolerance() -> None:
    ts = secs(0, 30, 60, 90, 120, 150)
    v = np.array([5.0, 5.05, 4.98, 5.0, 7.0, 7.0])
    # with tolerance 0.1 the first four are one run; 90 s after its start it is >= 60 s
    got = check_flatline(ts, v, duration_s=60, tolerance=0.1)
    assert bits(got) == [0, 0, Q.FLATLINE, Q.FLATLINE, 0, 0]
    assert bits(check_flatline(ts, v, duration_s=60)) == [0, 0, 0, 0, 0, 0]


# -- counters --------------------------------------------------------------------------------


def counter(values: list[float], **kw: float) -> tuple[list[int], list[float]]:
    ts = secs(*range(len(values)))
    v = np.array(values)
    flags = check_counter(ts, v, **kw)
    rmax = kw["register_max"]
    return bits(flags), counter_deltas(v, flags, rmax, resolution=kw.get("resolution", 1.0)).tolist()


def test_counter_rollover() -> None:
    # a 4-digit register (0..9999) wraps between 9995 and 3: the delta is 3 + 10000 - 9995 = 8
    f, d = counter([9990, 9995, 3, 8], register_max=9999, max_step=20)
    assert f == [0, 0, Q.COUNTER_ROLLOVER, 0]
    assert d == [0, 5, 8, 5]


def test_counter_rollover_of_a_scaled_register() -> None:
    # a uint16 register counting 0.1 kWh: register_max 6553.5, resolution 0.1
    f, d = counter([6553.0, 6553.5, 0.2], register_max=6553.5, resolution=0.1, max_step=5)
    assert f == [0, 0, Q.COUNTER_ROLLOVER]
    assert d[2] == pytest.approx(0.3)  # 6553.5 -> 0.0 -> 0.1 -> 0.2


def test_counter_glitch_up_and_back() -> None:
    f, d = counter([100, 105, 9000, 110, 115], register_max=65535, max_step=20)
    assert f == [0, 0, Q.COUNTER_GLITCH, 0, 0]
    assert d == [0, 5, 0, 5, 5]  # nothing lost: 110 is measured from 105


def test_counter_glitch_down_and_back() -> None:
    f, d = counter([100, 105, 3, 110], register_max=65535, max_step=20)
    assert f == [0, 0, Q.COUNTER_GLITCH, 0]
    assert d == [0, 5, 0, 5]


def test_counter_reset() -> None:
    f, d = counter([100, 105, 110, 2, 5, 9], register_max=65535, max_step=20)
    # the jump to 2 is held as a glitch; 5 continues from 2, so the counter was reset
    assert f == [0, 0, 0, Q.COUNTER_GLITCH, Q.COUNTER_RESET, 0]
    assert d == [0, 5, 5, 0, 0, 4]


def test_counter_meter_replacement_with_a_higher_reading() -> None:
    f, d = counter([100, 105, 50000, 50004, 50010], register_max=65535, max_step=20)
    assert f == [0, 0, Q.COUNTER_GLITCH, Q.COUNTER_RESET, 0]
    assert d == [0, 5, 0, 0, 6]


def test_counter_rate_limit_allows_a_long_gap() -> None:
    ts = secs(0, 60, 3660, 3720)
    v = np.array([1000.0, 1010.0, 1610.0, 1620.0])  # 600 units over an hour without samples
    flags = check_counter(ts, v, register_max=65535, max_rate_per_s=0.5)
    assert bits(flags) == [0, 0, 0, 0]
    flags = check_counter(ts, v, register_max=65535, max_step=20)
    assert bits(flags) == [0, 0, Q.COUNTER_GLITCH, Q.COUNTER_RESET]


def test_counter_needs_a_limit() -> None:
    with pytest.raises(ValueError, match="max_step"):
        check_counter(secs(0), [1.0], register_max=10)


def test_counter_deltas_skip_invalid_samples_without_losing_energy() -> None:
    v = np.array([10.0, 12.0, nan, 65535.0, 15.0])
    f = np.array([0, 0, Q.COMM_FAULT, Q.SENTINEL, 0], dtype=np.uint32)
    assert counter_deltas(v, f, 65535).tolist() == [0, 2, 0, 0, 3]
    assert counter_deltas(v, f, 65535, prev_value=7).tolist() == [3, 2, 0, 0, 3]
    with pytest.raises(ValueError, match="shape"):
        counter_deltas(v, f[:2], 65535)


# -- the pipeline ----------------------------------------------------------------------------


def test_invalid_samples_do_not_enter_trailing_state() -> None:
    cfg = ChecksConfig(
        sentinels=(65535.0,),
        range=RangeCheck(min=0, max=1000),
        spike=SpikeCheck(window=3, k=3.0, min_deviation=2.0),
        flatline=FlatlineCheck(count=3),
        rate_of_change=RateCheck(max_per_s=100),
    )
    ts = secs(0, 1, 2, 3, 4, 5, 6, 7, 8)
    v = np.array([10.0, 11.0, 10.0, 11.0, 65535.0, 10.5, -5.0, 11.0, 11.0])
    q = np.array([0, 0, 0, 0, 0, 0, 0, Q.MAINTENANCE, 0], dtype=np.uint32)
    got = run_checks(ts, v, q, cfg, int(ts[-1]))
    # The sentinel (also out of range) does not count as a jump: 10.5 after it has no rate
    # flag. The sample under maintenance does not extend a flat run: 11, 11 is not three.
    assert bits(got) == [0, 0, 0, 0, Q.SENTINEL | Q.RANGE, 0, Q.RANGE, Q.MAINTENANCE, 0]
    # the same stream without the bad samples gives the same flags on the good ones
    keep = [0, 1, 2, 3, 5, 8]
    alone = run_checks(ts[keep], v[keep], np.zeros(6, np.uint32), cfg, int(ts[-1]))
    assert bits(alone) == [0] * 6


def test_point_cleaner_keeps_state_between_chunks() -> None:
    pc = PointCleaner(ChecksConfig(flatline=FlatlineCheck(count=3)))
    z = np.zeros(2, dtype=np.uint32)
    assert bits(pc.apply(secs(0, 1), [4.0, 4.0], z, T0)) == [0, 0]
    assert bits(pc.apply(secs(2, 3), [4.0, 5.0], z, T0)) == [Q.FLATLINE, 0]
    pc.reset()
    assert bits(pc.apply(secs(4, 5), [5.0, 5.0], z, T0)) == [0, 0]


def test_point_cleaner_rejects_mismatched_arrays() -> None:
    pc = PointCleaner(ChecksConfig())
    with pytest.raises(ValueError, match="one length"):
        pc.apply(secs(0, 1), [1.0], [0, 0], T0)


def test_point_cleaner_with_every_check_on_an_empty_chunk() -> None:
    cfg = ChecksConfig(
        range=RangeCheck(min=0),
        rate_of_change=RateCheck(max_per_s=1),
        spike=SpikeCheck(),
        flatline=FlatlineCheck(count=2),
        sentinels=(1.0,),
        timestamps=TimestampCheck(),
        counter=CounterCheck(register_max=10, max_step=1),
    )
    pc = PointCleaner(cfg)
    e = np.zeros(0)
    assert pc.apply(e.astype(np.int64), e, e.astype(np.uint32), T0).shape == (0,)


def test_check_bits_are_the_gateway_bits_and_invalid() -> None:
    for bit in (Q.RANGE, Q.RATE_OF_CHANGE, Q.SPIKE, Q.FLATLINE, Q.SENTINEL, Q.DUPLICATE):
        assert bit & INVALID
    assert not Q.COUNTER_ROLLOVER & INVALID  # informational: the delta was corrected
