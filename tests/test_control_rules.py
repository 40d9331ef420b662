"""Local rules as pure state machines: leak detection with hysteresis, combustion trim."""

from __future__ import annotations

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from control._rules import LeakDetector, trim_forbid, trim_target


def test_leak_needs_n_samples_in_a_row_and_clears_with_hysteresis() -> None:
    d = LeakDetector(threshold=20, samples=3, clear_level=10, clear_samples=2)
    assert [d.feed(v) for v in (25, 25, 5, 25, 25)] == [None] * 5  # a dip resets the count
    assert d.feed(21) == "raised" and d.active
    assert d.feed(50) is None
    assert [d.feed(v) for v in (15, 12, 11)] == [None] * 3  # below threshold, above clear level
    assert d.feed(10) is None  # one sample at the clear level
    assert d.feed(30) is None  # ... interrupted
    assert d.feed(9) is None
    assert d.feed(8) == "cleared" and not d.active


def test_invalid_readings_neither_count_nor_clear() -> None:
    d = LeakDetector(threshold=20, samples=2, clear_level=10, clear_samples=2)
    assert d.feed(30) is None
    assert d.feed(math.nan) is None
    assert d.feed(0, valid=False) is None
    assert d.feed(30) == "raised"
    for _ in range(5):
        assert d.feed(0, valid=False) is None  # a dead sensor never clears the alarm
        assert d.feed(math.nan) is None
    assert d.active


@settings(max_examples=300)
@given(st.lists(st.tuples(st.floats(0, 100), st.booleans()), max_size=60),
       st.integers(1, 5), st.integers(1, 5))
def test_leak_alarm_events_alternate_and_need_runs(samples: list[tuple[float, bool]],
                                                   n: int, m: int) -> None:
    d = LeakDetector(threshold=50, samples=n, clear_level=30, clear_samples=m)
    events: list[str] = []
    run_above = run_below = 0
    for value, valid in samples:
        was = d.active
        e = d.feed(value, valid)
        if valid:
            run_above = run_above + 1 if value > 50 else 0
            run_below = run_below + 1 if value <= 30 else 0
        if e == "raised":
            assert not was and run_above >= n
            run_below = 0
        if e == "cleared":
            assert was and run_below >= m
            run_above = 0
        if e:
            events.append(e)
    assert all(a != b for a, b in itertools.pairwise(events))
    if events:
        assert events[0] == "raised"


def test_trim_moves_one_step_the_right_way_within_limits() -> None:
    kw = dict(low=2.5, high=4.5, step=2.0, lo=20.0, hi=80.0)
    assert trim_target(1.0, 50.0, **kw) == 52.0  # too little air: open
    assert trim_target(6.0, 50.0, **kw) == 48.0  # too much air: close
    assert trim_target(3.5, 50.0, **kw) is None  # in band
    assert trim_target(1.0, 79.0, **kw) == 80.0  # capped at the limit
    assert trim_target(1.0, 80.0, **kw) is None  # already at the limit
    assert trim_target(6.0, 20.0, **kw) is None
    assert trim_target(math.nan, 50.0, **kw) is None
    assert trim_forbid(1.0, low=2.5, high=4.5) == "decrease"
    assert trim_forbid(6.0, low=2.5, high=4.5) == "increase"
    assert trim_forbid(3.0, low=2.5, high=4.5) is None


@settings(max_examples=500)
@given(o2=st.floats(0, 21), current=st.floats(0, 100), step=st.floats(0.1, 10),
       lo=st.floats(0, 50), width=st.floats(0, 50))
def test_trim_target_properties(o2: float, current: float, step: float, lo: float,
                                width: float) -> None:
    hi = lo + width
    t = trim_target(o2, current, low=2.5, high=4.5, step=step, lo=lo, hi=hi)
    if t is None:
        return
    assert lo <= t <= hi
    if o2 < 2.5:
        assert t > current  # more air when O2 is low
        assert t - current <= step + 1e-9 or current < lo
    else:
        assert o2 > 4.5 and t < current
        assert current - t <= step + 1e-9 or current > hi
