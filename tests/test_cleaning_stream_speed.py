"""`Cleaner.clean`'s scalar path (`PointCleaner._step`, for points with few readings in a chunk)
must give exactly what the numpy path (`PointCleaner.apply`) gives: the same qualities, the
same `Reading` objects where nothing changed, identical fields everywhere else, and the same
trailing state, so that a point can switch paths from one chunk to the next.

The streams are deliberately nasty: non-finite and huge values, values given as int or numpy
scalars, repeated and out-of-order readings, timestamps at the ends of the int64 range (numpy
wraps their differences) and ``now`` beyond it (the future/stale limits are clamped).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleaning._config import (
    ChecksConfig,
    CounterCheck,
    FlatlineCheck,
    RangeCheck,
    RateCheck,
    SpikeCheck,
    TimestampCheck,
)
from cleaning._stream import Cleaner, PointCleaner
from mrv_core._records import Quality, Reading

S = 1_000_000_000
T0 = 1_700_000_000 * S
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1
Q = Quality

POINTS = ("a", "b", "c", "d")
UNCONFIGURED = "x"

SLOW = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ------------------------------------------------------------------------------------------
# strategies


@st.composite
def configs(draw: st.DrawFn, windows: tuple[int, ...] = (3, 4, 5, 8, 21, 50, 200)) -> ChecksConfig:
    """Any combination of checks; half of the time every check at once."""
    every = draw(st.booleans())

    def pick(strategy: st.SearchStrategy[Any]) -> Any:
        return draw(strategy if every else st.one_of(st.none(), strategy))

    count = draw(st.sampled_from([None, 2, 3, 5]))
    duration = draw(st.sampled_from([None, 1.0, 4.0]) if count else st.sampled_from([1.0, 4.0]))
    flat = FlatlineCheck(count=count, duration_s=duration, tolerance=draw(st.sampled_from([0.0, 0.5])))
    step = draw(st.sampled_from([None, 10.0, 25.0]))
    rate = draw(st.sampled_from([8.0, 30.0]) if step is None else st.sampled_from([None, 8.0]))
    return ChecksConfig(
        range=pick(st.sampled_from([RangeCheck(min=-100, max=100), RangeCheck(min=0), RangeCheck(max=1000)])),
        rate_of_change=pick(st.builds(RateCheck, max_per_s=st.sampled_from([0.5, 5.0, 1e300]))),
        spike=pick(
            st.builds(
                SpikeCheck,
                # 50 and 200: the default cleaner sends such points down the numpy path sooner
                window=st.sampled_from(windows),
                # 1.5e308: k * 1.4826 is inf, and inf * (MAD = 0) a NaN threshold
                k=st.sampled_from([0.5, 3.0, 1.5e308]),
                min_deviation=st.sampled_from([0.0, 1.0]),
            )
        ),
        flatline=pick(st.just(flat)),
        sentinels=draw(
            st.sampled_from([(), (65535.0,), (65535.0, -32768.0, math.inf), (-math.inf, 0.0)])
            if not every
            else st.sampled_from([(65535.0, -32768.0, math.inf), (-math.inf, 0.0)])
        ),
        timestamps=pick(
            st.builds(
                TimestampCheck,
                max_future_s=st.sampled_from([0.0, 2.0, 30.0]),
                max_age_s=st.sampled_from([None, 20.0, 100.0]),
            )
        ),
        duplicates=True if every else draw(st.booleans()),
        counter=pick(st.just(CounterCheck(register_max=1000.0, max_step=step, max_rate_per_s=rate))),
    )


_SPECIAL = [0.0, -0.0, 1.0, 5.0, 50.0, 65535.0, -32768.0, math.nan, math.inf, -math.inf, 1e308, -1e308]
_VALUES = st.one_of(
    st.sampled_from(_SPECIAL),
    st.floats(-200, 200),
    st.floats(),
    st.integers(-5, 1000),  # numpy converts an int value to float64
)
_EXTREME_TS = [I64_MIN, I64_MIN + 1, -T0, 0, I64_MAX - 1, I64_MAX]
_STEPS_NS = [s * S + j for s in (0, 1, 1, 1, 2, 3, 10, 40, -1, -5) for j in (0, 0, 1, S // 2)]
_KINDS = ["new"] * 5 + ["run", "repeat", "same_ts", "counter", "extreme"]
_QUALITY = [0, 0, 0, 0, 0, 0, int(Q.COMM_FAULT), int(Q.MANUAL), int(Q.TS_DUPLICATE), Q.MAINTENANCE, Q.OK]
_TYPES = ["python"] * 8 + ["np.int64 ts", "numpy value"]


@st.composite
def readings(draw: st.DrawFn, max_size: int = 60) -> list[Reading]:
    """Readings of the points in ``POINTS`` (and of an unconfigured one), each point's in
    arrival order, with whatever a faulty device or clock can produce."""
    n = draw(st.integers(0, max_size))
    clock = dict.fromkeys((*POINTS, UNCONFIGURED), T0)
    last: dict[str, Reading] = {}
    out: list[Reading] = []
    for _ in range(n):
        pid = draw(st.sampled_from((*POINTS, UNCONFIGURED)))
        prev = last.get(pid)
        kind = draw(st.sampled_from(_KINDS))
        quality = draw(st.sampled_from(_QUALITY))
        if prev is not None and kind == "repeat":  # a verbatim repeat: a DUPLICATE
            r = dataclasses.replace(prev, quality=quality, seq=len(out))
        else:
            if kind == "extreme":
                ts: Any = draw(st.sampled_from(_EXTREME_TS))
            elif prev is not None and kind == "same_ts":
                ts = prev.ts_ns
            else:
                clock[pid] += draw(st.sampled_from(_STEPS_NS))
                ts = clock[pid]
            if prev is not None and kind == "run":  # runs of one value: flatlines
                value: Any = prev.value
            elif prev is not None and kind == "counter" and math.isfinite(prev.value):
                value = float(prev.value) + draw(st.sampled_from([0, 1, 3, 12, 40, 600, -400, -995]))
            else:
                value = draw(_VALUES)
            types = draw(st.sampled_from(_TYPES))  # numpy scalars now and then
            if types == "np.int64 ts":
                ts = np.int64(ts)
            elif types == "numpy value" and isinstance(value, float):
                small = not abs(value) > 1e30  # float32 would overflow (with a warning)
                value = np.float32(value) if small and len(out) % 2 else np.float64(value)
            r = Reading(
                point_id=pid, ts_ns=ts, value=value, unit="kW", source="plc1", quality=quality, seq=len(out)
            )
        last[pid] = r
        out.append(r)
    return out


NOWS = st.one_of(
    st.integers(0, 400).map(lambda s: T0 + s * S),
    # beyond the int64 range too: the future/stale limits are clamped
    st.sampled_from([I64_MIN - S, I64_MIN, I64_MIN + 1, I64_MAX - 1, I64_MAX, I64_MAX + 200 * S]),
)


def _chunks(n: int, cuts: list[int]) -> list[tuple[int, int]]:
    points = sorted({0, n, *(c % (n + 1) for c in cuts)})
    return list(itertools.pairwise(points))


def _cleaner(cfgs: dict[str, ChecksConfig], fast_max: int | None) -> Cleaner:
    c = Cleaner(cfgs)
    c._fast_max = fast_max  # None: each point's own limit; 0: numpy path only
    return c


def _assert_same(got: list[Reading], want: list[Reading], inputs: list[Reading]) -> None:
    assert len(got) == len(want) == len(inputs)
    for g, w, r in zip(got, want, inputs, strict=True):
        assert (g is r) == (w is r)  # replaced exactly where the quality changed
        for f in dataclasses.fields(Reading):
            a, b = getattr(g, f.name), getattr(w, f.name)
            assert type(a) is type(b), f.name
            assert a is b or a == b, f.name
        assert g.value is r.value  # the raw value is the input's object


# ------------------------------------------------------------------------------------------
# properties


@SLOW
@given(
    st.lists(configs(), min_size=len(POINTS), max_size=len(POINTS)),
    readings(),
    st.lists(st.integers(0, 200), max_size=12),
    st.lists(NOWS, min_size=1, max_size=4),
    st.integers(0, 3),
)
def test_scalar_path_equals_numpy_path(
    cfg_list: list[ChecksConfig],
    stream: list[Reading],
    cuts: list[int],
    nows: list[int],
    small_limit: int,
) -> None:
    cfgs = dict(zip(POINTS, cfg_list, strict=True))
    numpy_only = _cleaner(cfgs, 0)
    cleaners = [
        _cleaner(cfgs, None),  # the default: each point's limit
        _cleaner(cfgs, 1 << 30),  # scalar path only
        _cleaner(cfgs, small_limit),  # points switch paths from chunk to chunk
    ]
    for k, (a, b) in enumerate(_chunks(len(stream), cuts)):
        chunk = stream[a:b]
        now = nows[k % len(nows)]
        want = numpy_only.clean(chunk, now)
        for c in cleaners:
            _assert_same(c.clean(chunk, now), want, chunk)


@SLOW
@given(
    st.lists(configs(), min_size=len(POINTS), max_size=len(POINTS)),
    readings(),
    st.lists(st.integers(0, 200), max_size=12),
    NOWS,
)
def test_scalar_path_in_chunks_equals_numpy_path_whole(
    cfg_list: list[ChecksConfig], stream: list[Reading], cuts: list[int], now: int
) -> None:
    cfgs = dict(zip(POINTS, cfg_list, strict=True))
    want = _cleaner(cfgs, 0).clean(stream, now)
    default, scalar = _cleaner(cfgs, None), _cleaner(cfgs, 1 << 30)
    by_default: list[Reading] = []
    by_scalar: list[Reading] = []
    for a, b in _chunks(len(stream), cuts):
        by_default += default.clean(stream[a:b], now)
        by_scalar += scalar.clean(stream[a:b], now)
    _assert_same(by_default, want, stream)
    _assert_same(by_scalar, want, stream)


@SLOW
@given(configs(), readings(), st.lists(st.integers(0, 100), max_size=6), NOWS)
def test_step_equals_apply_and_keeps_the_same_state(
    cfg: ChecksConfig, stream: list[Reading], cuts: list[int], now: int
) -> None:
    """One point: `_step` sample by sample against `apply` on chunks, then both continue
    with `apply` on the same tail, which only agrees if they left the same state."""
    ts = [int(np.int64(r.ts_ns)) for r in stream]
    vals = [float(np.float64(r.value)) for r in stream]
    qual = [int(r.quality) for r in stream]
    split = len(stream) // 2
    by_apply, by_step = PointCleaner(cfg), PointCleaner(cfg)
    want: list[int] = []
    for a, b in _chunks(split, cuts):
        flags = by_apply.apply(
            np.array(ts[a:b], dtype=np.int64),
            np.array(vals[a:b], dtype=np.float64),
            np.array(qual[a:b], dtype=np.uint32),
            now,
        )
        want += flags.tolist()
    got = [by_step._step(ts[i], vals[i], qual[i], now) for i in range(split)]
    assert got == want
    tail = (
        np.array(ts[split:], dtype=np.int64),
        np.array(vals[split:], dtype=np.float64),
        np.array(qual[split:], dtype=np.uint32),
    )
    assert by_step.apply(*tail, now).tolist() == by_apply.apply(*tail, now).tolist()


def test_many_points_one_reading_each() -> None:
    """The gateway's shape: one reading per point per chunk, every check configured."""
    every = ChecksConfig(
        range=RangeCheck(min=0, max=200),
        rate_of_change=RateCheck(max_per_s=20),
        spike=SpikeCheck(window=5, k=4.0, min_deviation=0.5),
        flatline=FlatlineCheck(count=4, duration_s=600),
        sentinels=(65535.0, -32768.0),
        timestamps=TimestampCheck(max_future_s=5, max_age_s=3600),
    )
    counter = ChecksConfig(
        timestamps=TimestampCheck(max_future_s=5),
        counter=CounterCheck(register_max=1000.0, max_step=10.0),
    )
    cfgs = {f"p{i}": counter if i % 4 == 0 else every for i in range(300)}
    rng = np.random.default_rng(7)
    numpy_only, default = _cleaner(cfgs, 0), _cleaner(cfgs, None)
    totals = np.zeros(300)
    for c in range(12):
        totals = (totals + rng.choice([0.0, 1.0, 2.0, 5.0, 40.0, -990.0], 300)) % 1001.0
        noise = 80 + rng.normal(0, 1, 300)
        noise[rng.integers(0, 300, 5)] = rng.choice([65535.0, 500.0, math.nan, 150.0], 5)
        chunk = [
            Reading(
                point_id=f"p{i}",
                ts_ns=T0 + c * S + int(rng.integers(0, 10 * S if c == 6 else S // 10)),
                value=float(totals[i] if i % 4 == 0 else noise[i]),
                unit="kW",
                source="plc1",
                quality=int(Q.COMM_FAULT) if math.isnan(noise[i]) else 0,
            )
            for i in range(300)
        ]
        now = T0 + c * S
        want = numpy_only.clean(chunk, now)
        got = default.clean(chunk, now)
        _assert_same(got, want, chunk)
        if c > 6:  # something is flagged, or the comparison proves little
            assert any(r.quality & ~int(Q.COMM_FAULT) for r in got)


_EDGE_TS = [I64_MIN, I64_MIN + 1, -T0, 0, T0, T0 + S, T0 + 3 * S, I64_MAX - 1, I64_MAX]
_EDGE_VALUES = [0.0, 1.0, 1000.0, 999.0, 5e9, -5e9, 1e308, -1e308, math.nan]


@settings(max_examples=600, deadline=None)
@given(
    configs(windows=(3, 4)),
    st.lists(st.tuples(st.sampled_from(_EDGE_TS), st.sampled_from(_EDGE_VALUES)), max_size=10),
    NOWS,
)
def test_step_equals_apply_at_the_edges(
    cfg: ChecksConfig, samples: list[tuple[int, float]], now: int
) -> None:
    """Short streams from small pools, so that the rare cases come up often: timestamps whose
    differences overflow int64 (numpy wraps them), ``now`` outside the int64 range, values
    whose differences overflow to inf, a spike threshold of inf * 0."""
    ts = np.array([t for t, _ in samples], dtype=np.int64)
    vals = np.array([v for _, v in samples], dtype=np.float64)
    want = PointCleaner(cfg).apply(ts, vals, np.zeros(len(samples), dtype=np.uint32), now).tolist()
    pc = PointCleaner(cfg)
    assert [pc._step(t, v, 0, now) for t, v in samples] == want
