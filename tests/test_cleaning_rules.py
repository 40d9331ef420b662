"""Each check is defined once, in `cleaning._rules`, and both paths take it from there: the
numpy kernels (`cleaning._checks`) and the scalar streaming steps (`cleaning._stream`).

A rule must give on a numpy array, element by element, exactly what it gives on each element
as a Python number: that is what lets one definition serve both paths. The end-to-end equality
of the two paths (every flag of every stream) is proved in ``test_cleaning_stream_speed.py``,
``test_cleaning_properties.py`` and ``test_cleaning_resume.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cleaning import _checks, _rules, _state, _stream

I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1

RULES = [
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
]

# finite and non-finite floats, huge and tiny, plus values that collide on purpose
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 65535.0, 3.4028235e38, 1e308, -1e308, math.nan]),
)
maybe = st.one_of(st.none(), floats)
ints = st.one_of(st.integers(I64_MIN, I64_MAX), st.sampled_from([0, 1, -1, I64_MIN, I64_MAX]))


def test_both_paths_take_every_rule_from_the_one_definition() -> None:
    """No path keeps a copy of a rule: the kernels and the scalar steps name the same
    function objects (so a change to a rule changes both paths)."""
    assert sorted(RULES) == sorted(n for n in _rules.__all__ if callable(getattr(_rules, n)) and
                                   n not in ("clamp_i64", "wrap_i64"))
    for name in RULES:
        rule = getattr(_rules, name)
        if name in ("counter_allowed", "counter_steps"):  # the kernels: through CounterParams
            assert getattr(_state, name, None) is rule, f"cleaning._state does not use {name}"
            assert _checks.CounterParams is _state.CounterParams
        elif name != "spike_beyond_floor":  # the kernels reach it through `spike_outlier`
            assert getattr(_checks, name, None) is rule, f"cleaning._checks does not use {name}"
        assert getattr(_stream, name, None) is rule, f"cleaning._stream does not use {name}"


def _same(got_array: object, got_scalars: Sequence[object]) -> None:
    arr = np.broadcast_to(np.asarray(got_array), (len(got_scalars),))
    assert [bool(x) for x in arr.tolist()] == [bool(x) for x in got_scalars]


def _elementwise(rule: Callable[..., object], columns: list[list[float]], *fixed: object) -> None:
    arrays = [np.array(c, dtype=np.float64) for c in columns]
    # as in the kernels (`_checks._quietly`): an overflow to inf is intended
    with np.errstate(over="ignore", invalid="ignore"):
        on_array = rule(*arrays, *fixed)
    on_scalars = [rule(*(float(c[i]) for c in columns), *fixed) for i in range(len(columns[0]))]
    for s in on_scalars:
        assert isinstance(s, bool)  # the streaming path gets plain bools, not numpy scalars
    _same(on_array, on_scalars)


@settings(max_examples=300, deadline=None)
@given(st.lists(floats, max_size=20), st.lists(floats, max_size=4))
def test_sentinel_hit_array_equals_scalar(v: list[float], sentinels: list[float]) -> None:
    table = _rules.sentinel_table(sentinels)
    if not table:
        return  # both paths skip the check without sentinels
    _elementwise(_rules.sentinel_hit, [v], table)


@settings(max_examples=300, deadline=None)
@given(st.lists(floats, max_size=20), maybe, maybe)
def test_out_of_range_array_equals_scalar(v: list[float], lo: float | None, hi: float | None) -> None:
    if lo is None and hi is None:
        return  # both paths skip the check without limits
    _elementwise(_rules.out_of_range, [v], lo, hi)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(ints, floats, ints, floats), max_size=20))
def test_same_reading_array_equals_scalar(rows: list[tuple[int, float, int, float]]) -> None:
    t = np.array([r[0] for r in rows], dtype=np.int64)
    v = np.array([r[1] for r in rows], dtype=np.float64)
    pt = np.array([r[2] for r in rows], dtype=np.int64)
    pv = np.array([r[3] for r in rows], dtype=np.float64)
    on_scalars = [_rules.same_reading(*r) for r in rows]
    with np.errstate(over="ignore", invalid="ignore"):
        _same(_rules.same_reading(t, v, pt, pv), on_scalars)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(ints, floats), max_size=20), st.floats(min_value=1e-300, allow_infinity=True))
def test_rate_exceeded_array_equals_scalar(rows: list[tuple[int, float]], max_per_s: float) -> None:
    # the int64 step as each path computes it: numpy wraps; the scalar path wraps explicitly
    dts = [float(_rules.wrap_i64(d)) for d, _ in rows]
    dt_arr = np.array([d for d, _ in rows], dtype=np.int64).astype(np.float64)
    assert dt_arr.tolist() == dts
    _elementwise(_rules.rate_exceeded, [dts, [dv for _, dv in rows]], max_per_s)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(floats, floats, floats), max_size=20),
       st.floats(min_value=0, allow_infinity=True), st.floats(min_value=0, allow_infinity=True))
def test_spike_outlier_array_equals_scalar(
    rows: list[tuple[float, float, float]], scale: float, min_dev: float
) -> None:
    _elementwise(_rules.spike_outlier, [list(c) for c in zip(*rows, strict=True)] or [[], [], []],
                 scale, min_dev)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(floats, floats), max_size=20), st.floats(min_value=0, allow_infinity=True))
def test_spike_beyond_floor_array_equals_scalar(rows: list[tuple[float, float]], min_dev: float) -> None:
    _elementwise(_rules.spike_beyond_floor, [list(c) for c in zip(*rows, strict=True)] or [[], []],
                 min_dev)


@given(floats, floats, floats, st.floats(min_value=0, allow_infinity=True),
       st.floats(min_value=0, allow_infinity=True))
def test_no_spike_below_the_floor_whatever_the_mad(
    x: float, med: float, mad: float, scale: float, min_dev: float
) -> None:
    """The streaming path skips the MAD when `spike_beyond_floor` is false: sound only if
    `spike_outlier` is then false for every MAD."""
    if not _rules.spike_beyond_floor(x, med, min_dev):
        assert not _rules.spike_outlier(x, med, mad, scale, min_dev)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(floats, floats), max_size=20), st.floats(min_value=0, allow_infinity=True))
def test_flat_continues_array_equals_scalar(rows: list[tuple[float, float]], tol: float) -> None:
    _elementwise(_rules.flat_continues, [list(c) for c in zip(*rows, strict=True)] or [[], []], tol)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 1 << 40), ints), max_size=20),
       st.one_of(st.none(), st.integers(1, 100)), st.one_of(st.none(), st.integers(0, I64_MAX)))
def test_flat_reached_array_equals_scalar(
    rows: list[tuple[int, int]], count: int | None, duration_ns: int | None
) -> None:
    length = np.array([r[0] for r in rows], dtype=np.int64)
    elapsed = np.array([r[1] for r in rows], dtype=np.int64)
    on_scalars = [_rules.flat_reached(n, e, count, duration_ns) for n, e in rows]
    if count is None and duration_ns is None:
        assert not any(on_scalars)
        return
    _same(_rules.flat_reached(length, elapsed, count, duration_ns), on_scalars)


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(finite, st.integers(I64_MIN, I64_MAX)), max_size=20),
       st.one_of(st.none(), st.floats(min_value=0, max_value=1e9)),
       st.one_of(st.none(), st.floats(min_value=0, max_value=1e9)),
       st.floats(min_value=1, max_value=1e12))
def test_counter_rules_array_equal_scalar(
    rows: list[tuple[float, int]], max_step: float | None, max_rate: float | None, modulus: float
) -> None:
    if max_step is None and max_rate is None:
        max_step = 1.0
    dv = np.array([r[0] for r in rows], dtype=np.float64)
    dt = np.array([r[1] for r in rows], dtype=np.int64).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        allowed = _rules.counter_allowed(max_step, max_rate, dt, 1.0)
        normal, roll = _rules.counter_steps(dv, allowed, modulus)
    for i, (d, t) in enumerate(rows):
        a = _rules.counter_allowed(max_step, max_rate, float(t), 1.0)
        assert isinstance(a, float)
        n1, r1 = _rules.counter_steps(d, a, modulus)
        assert (bool(n1), bool(r1)) == (bool(np.broadcast_to(normal, dv.shape)[i]),
                                        bool(np.broadcast_to(roll, dv.shape)[i]))


@given(ints, st.integers(0, I64_MAX), st.one_of(st.none(), st.integers(0, I64_MAX)))
def test_ts_limits_are_clamped_to_int64(now: int, future: int, age: int | None) -> None:
    hi, lo = _rules.ts_limits(now, future, age)
    assert hi == min(I64_MAX, now + future)
    assert lo == (None if age is None else max(I64_MIN, now - age))
