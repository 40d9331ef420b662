"""The compiled scalar path of `Cleaner.clean` (cleaning/_cleanc.c) against the pure one:
the same readings (replaced exactly where the quality changed), the same flags and the same
trailing state of every point (`_max_ts`, `_dup_prev`), chunk after chunk. Points with a
value check, and readings with fields of other types, are left to Python in their order.

The streams and configs are those of tests/test_cleaning_stream_speed.py."""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cleaning._stream as stream_mod
from cleaning._config import ChecksConfig, RangeCheck, RateCheck, TimestampCheck
from cleaning._stream import Cleaner, PointCleaner
from mrv_core import Quality, Reading

from .test_cleaning_stream_speed import (
    NOWS,
    POINTS,
    SLOW,
    T0,
    _assert_same,
    _chunks,
    configs,
    readings,
)

PURE = os.environ.get("MRV_PURE_PYTHON", "") not in ("", "0")
pytestmark = pytest.mark.skipif(PURE, reason="the compiled path is off (MRV_PURE_PYTHON=1)")
S = 1_000_000_000


@pytest.fixture(autouse=True)
def _built() -> None:
    if not PURE:  # built by `make setup` (a C compiler is there): its absence is a failure
        assert stream_mod.COMPILED and stream_mod._cleanc is not None


def _without_window(cfg: ChecksConfig) -> ChecksConfig:
    return cfg.model_copy(update={"rate_of_change": None, "spike": None, "flatline": None,
                                  "counter": None})


def _state(c: Cleaner) -> dict[str, tuple[Any, Any, str, str]]:
    out = {}
    for pid in POINTS:
        pc = c.point(pid)
        assert pc is not None
        out[pid] = (pc._max_ts, pc._dup_prev, type(pc._max_ts).__name__,
                    type(pc._dup_prev).__name__)
    return out


def _same_state(a: Cleaner, b: Cleaner) -> None:
    sa, sb = _state(a), _state(b)
    for pid in POINTS:
        (ma, pa, ta, tpa), (mb, pb, tb, tpb) = sa[pid], sb[pid]
        assert (ta, tpa) == (tb, tpb) and ma == mb, pid
        if pa is not None:  # NaN == NaN for the comparison of the previous reading
            assert pa[0] == pb[0] and type(pa[1]) is type(pb[1])
            assert pa[1] == pb[1] or (math.isnan(pa[1]) and math.isnan(pb[1]))


def _run_both(cfgs: dict[str, ChecksConfig], chunks: list[tuple[list[Reading], int]],
              monkeypatch: pytest.MonkeyPatch, fast_max: int | None = None) -> None:
    compiled, pure = Cleaner(cfgs), Cleaner(cfgs)
    compiled._fast_max = pure._fast_max = fast_max
    real = stream_mod._cleanc
    for chunk, now in chunks:
        got = compiled.clean(chunk, now)
        monkeypatch.setattr(stream_mod, "_cleanc", None)
        want = pure.clean(chunk, now)
        monkeypatch.setattr(stream_mod, "_cleanc", real)
        _assert_same(got, want, chunk)
        _same_state(compiled, pure)


@SLOW
@given(st.lists(configs(), min_size=len(POINTS), max_size=len(POINTS)), st.lists(st.booleans(),
       min_size=len(POINTS), max_size=len(POINTS)), readings(),
       st.lists(st.integers(0, 200), max_size=12), st.lists(NOWS, min_size=1, max_size=4),
       st.sampled_from([None, 1 << 30, 0, 2]))
def test_the_compiled_path_gives_what_the_pure_path_gives(
        cfg_list: list[ChecksConfig], windowless: list[bool], stream: list[Reading],
        cuts: list[int], nows: list[int], fast_max: int | None) -> None:
    """Points with only windowless checks (compiled) beside points with value checks (left
    to Python), readings with numpy fields now and then (left to Python with the rest of their
    point's readings in the chunk), the numpy path for some points (fast_max 0 or 2)."""
    cfgs = {pid: _without_window(c) if w else c
            for pid, c, w in zip(POINTS, cfg_list, windowless, strict=True)}
    with pytest.MonkeyPatch.context() as mp:
        _run_both(cfgs, [(stream[a:b], nows[k % len(nows)])
                         for k, (a, b) in enumerate(_chunks(len(stream), cuts))], mp, fast_max)


def _r(pid: str, ts: Any, value: Any, quality: int = 0) -> Reading:
    return Reading(point_id=pid, ts_ns=ts, value=value, unit="kW", source="plc1", quality=quality)


EVERY_WINDOWLESS = ChecksConfig(range=RangeCheck(min=0, max=100), sentinels=(65535.0, -math.inf),
                                timestamps=TimestampCheck(max_future_s=2, max_age_s=60))


def test_each_flag_is_set_as_the_pure_path_sets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """One reading for each flag the compiled path sets, and their combinations."""
    now = T0 + 30 * S
    cases = [
        _r("a", T0 + 10 * S, 50.0),  # clean
        _r("a", T0 + 11 * S, 65535.0),  # sentinel and out of range
        _r("a", T0 + 12 * S, -1.0),  # below the range
        _r("a", T0 + 12 * S, 7.0),  # the same timestamp again: ts duplicate
        _r("a", T0 + 12 * S, 7.0),  # verbatim repeat: duplicate instead
        _r("a", T0 + 5 * S, 7.0),  # non-monotonic
        _r("a", now + 3 * S, 8.0),  # in the future (does not move the newest timestamp)
        _r("a", T0 + 13 * S, math.nan, int(Quality.COMM_FAULT)),  # NaN: no range flag
        _r("a", T0 + 13 * S, math.nan, int(Quality.COMM_FAULT)),  # NaN repeated: duplicate
        _r("a", T0 - 3600 * S, 9.0),  # stale and non-monotonic
        _r("a", T0 + 14 * S, -math.inf),  # the -inf sentinel, below the range
        _r("a", T0 + 15 * S, 100.0),  # at the range's ends: in range
        _r("a", T0 + 16 * S, -0.0),
        _r("a", now + 2 * S, 1.0),  # at the future limit: not in the future
        _r("a", now - 60 * S, 1.0),  # at the stale limit: not stale (but non-monotonic)
    ]
    got_all: list[Reading] = []
    compiled, pure = Cleaner({"a": EVERY_WINDOWLESS}), Cleaner({"a": EVERY_WINDOWLESS})
    for c in cases:
        got = compiled.clean([c], now)
        monkeypatch.setattr(stream_mod, "_cleanc", None)
        want = pure.clean([c], now)
        monkeypatch.undo()
        _assert_same(got, want, [c])
        got_all += got
    flags = [r.quality for r in got_all]
    Q = Quality
    assert flags == [
        0,
        Q.SENTINEL | Q.RANGE,
        Q.RANGE,
        Q.TS_DUPLICATE,
        Q.DUPLICATE,
        Q.TS_NON_MONOTONIC,
        Q.TS_FUTURE,
        Q.COMM_FAULT,
        Q.COMM_FAULT | Q.DUPLICATE,
        Q.TS_STALE | Q.TS_NON_MONOTONIC,
        Q.SENTINEL | Q.RANGE,
        0,
        0,
        0,
        Q.TS_NON_MONOTONIC,
    ]


def test_a_point_left_to_python_keeps_its_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """A numpy timestamp sends its reading to Python; the point's later plain readings in the
    chunk must follow it there, or the newest timestamp would be updated out of order."""
    cfg = ChecksConfig(timestamps=TimestampCheck(max_future_s=5))
    chunk = [_r("a", np.int64(T0 + 5 * S), 1.0), _r("b", T0 + 5 * S, 1.0),
             _r("a", T0 + 4 * S, 2.0), _r("a", T0 + 6 * S, 3.0)]
    got = stream_mod._cleanc.clean_scalar(chunk, Cleaner({"a": cfg, "b": cfg})._points,
                                          T0, None)
    assert got == ([], [0, 2, 3])  # b done here; all of a's left to Python, in order
    _run_both({"a": cfg, "b": cfg, **{p: cfg for p in POINTS}}, [(chunk, T0 + 5 * S)],
              monkeypatch)
    c = Cleaner({"a": cfg})
    assert [r.quality for r in c.clean(chunk, T0 + 5 * S)] == [0, 0, Quality.TS_NON_MONOTONIC, 0]


def test_points_with_a_value_check_are_left_to_python() -> None:
    windowed = ChecksConfig(range=RangeCheck(min=0), rate_of_change=RateCheck(max_per_s=1.0))
    points = Cleaner({"w": windowed, "p": EVERY_WINDOWLESS})._points
    chunk = [_r("w", T0, 1.0), _r("p", T0, -1.0), _r("x", T0, -1.0), _r("w", T0 + S, 9.0)]
    assert stream_mod._cleanc.clean_scalar(chunk, points, T0, None) == (
        [(1, int(Quality.RANGE))], [0, 3])  # x has no checks: nothing to do
    assert stream_mod._cleanc.clean_scalar(chunk, points, T0, {"p"}) == ([], [0, 3])


@pytest.mark.parametrize("bad", [
    lambda c: [*c, object()],  # not a Reading
    lambda c: [*c, dataclasses.replace(c[0], point_id=np.str_("a"))],  # a str subclass
])
def test_a_chunk_it_cannot_read_is_left_whole_to_python(bad: Any) -> None:
    points = Cleaner({"a": EVERY_WINDOWLESS})._points
    chunk = [_r("a", T0, 1.0)]
    assert stream_mod._cleanc.clean_scalar(bad(chunk), points, T0, None) is None
    assert stream_mod._cleanc.clean_scalar(chunk, points, 2 ** 63, None) is None  # now: not int64
    assert stream_mod._cleanc.clean_scalar(chunk, points, T0, ["a"]) is None  # skip: not a set


def test_state_of_another_shape_is_left_to_python() -> None:
    """State the pure path would convert (a numpy newest timestamp after `resume`) or config
    of another type: the reading is Python's, nothing changed."""
    c = Cleaner({"a": EVERY_WINDOWLESS})
    pc = c.point("a")
    assert pc is not None
    for attr, value in [("_max_ts", np.int64(T0)), ("_dup_prev", (T0, 1)),
                        ("_dup_prev", [T0, 1.0]), ("_range_min", 0), ("_ts_future_ns", 2.5)]:
        old = getattr(pc, attr)
        setattr(pc, attr, value)
        assert stream_mod._cleanc.clean_scalar([_r("a", T0, 1.0)], c._points, T0, None) == (
            [], [0])
        assert getattr(pc, attr) is value
        setattr(pc, attr, old)


def test_configure_refuses_classes_of_another_shape_and_keeps_its_own() -> None:
    flags = (1, 2, 4, 8, 16, 32, 64)

    class NoSlots:
        pass

    @dataclasses.dataclass(slots=True)
    class Narrow:
        point_id: str

    class OtherCleaner:
        __slots__ = ("_sentinels",)

    assert stream_mod._cleanc.configure(NoSlots, PointCleaner, flags) is False
    assert stream_mod._cleanc.configure(Narrow, PointCleaner, flags) is False
    assert stream_mod._cleanc.configure(Reading, OtherCleaner, flags) is False
    assert stream_mod._cleanc.configure(Reading, NoSlots, flags) is False
    with pytest.raises(ValueError):
        stream_mod._cleanc.configure(Reading, PointCleaner, (0, *flags[1:]))
    with pytest.raises(TypeError):
        stream_mod._cleanc.configure(Reading, PointCleaner, flags[:6])
    # still configured as at import: the range flag is the real one
    points = Cleaner({"a": EVERY_WINDOWLESS})._points
    assert stream_mod._cleanc.clean_scalar([_r("a", T0, -1.0)], points, T0, None) == (
        [(0, int(Quality.RANGE))], [])


def test_no_reference_leaks_in_100k_readings() -> None:
    cfgs = {"a": EVERY_WINDOWLESS, "w": ChecksConfig(rate_of_change=RateCheck(max_per_s=1.0))}
    c = Cleaner(cfgs)
    pid = "a"
    chunk = [_r(pid, T0 + i * S, v) for i, v in enumerate([1.0, 65535.0, 1.0, math.nan])]
    chunk += [_r("w", T0, 1.0), _r(pid, np.int64(T0), 1.0)]

    def run(n: int) -> None:
        for i in range(n):
            c.clean(chunk, T0 + i)

    run(1000)
    gc.collect()
    refs, blocks = sys.getrefcount(pid), sys.getallocatedblocks()
    run(20_000)
    gc.collect()
    assert sys.getrefcount(pid) == refs
    assert sys.getallocatedblocks() - blocks < 200  # a leak of one object a reading: >= 100,000
