"""Property tests of the cleaning checks against a plain scalar reference implementation.

`reference_checks` below is written from the definitions in ``docs/cleaning.md``, one sample at a
time with Python loops and no numpy, so that it can be read and checked by eye. The vectorised
implementation must give bit-identical flags on random streams, whether the stream is fed
whole or in chunks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
from cleaning._stream import Cleaner, PointCleaner, run_checks
from mrv_core._records import INVALID, Quality, Reading

T0 = 1_700_000_000 * 1_000_000_000
S = 1_000_000_000

T = TypeVar("T")
Q = Quality
NORMAL, ROLLOVER, ABNORMAL = 0, 1, 2

# ------------------------------------------------------------------------------------------
# scalar reference implementation


def _ns(seconds: float) -> int:
    return round(seconds * 1_000_000_000)


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    if n % 2:
        return s[n // 2]
    return (s[n // 2 - 1] + s[n // 2]) / 2


def ref_sentinel(v: float, sentinels: Sequence[float]) -> bool:
    for s in sentinels:
        if math.isinf(s):
            if v == s:
                return True
        elif abs(v - s) <= 1.2e-7 * abs(s):
            return True
    return False


def ref_classify(cfg: CounterCheck, dv: float, dt_ns: int, dk: int) -> int:
    allowed = -math.inf
    if cfg.max_step is not None:
        allowed = max(allowed, cfg.max_step * float(dk))
    if cfg.max_rate_per_s is not None:
        allowed = max(allowed, cfg.max_rate_per_s * (max(float(dt_ns), 0.0) * 1e-9))
    if 0 <= dv <= allowed:
        return NORMAL
    wrapped = dv + (cfg.register_max + cfg.resolution)
    if dv < 0 and 0 <= wrapped <= allowed:
        return ROLLOVER
    return ABNORMAL


def reference_checks(
    ts: Sequence[int], vals: Sequence[float], qual: Sequence[int], cfg: ChecksConfig, now: int
) -> list[int]:
    n = len(ts)
    out = [int(q) for q in qual]
    for i in range(n):
        v = vals[i]
        if cfg.sentinels and ref_sentinel(v, cfg.sentinels):
            out[i] |= Q.SENTINEL
        if cfg.range is not None:
            if cfg.range.min is not None and v < cfg.range.min:
                out[i] |= Q.RANGE
            if cfg.range.max is not None and v > cfg.range.max:
                out[i] |= Q.RANGE
    if cfg.timestamps is not None:
        fut = _ns(cfg.timestamps.max_future_s)
        age = None if cfg.timestamps.max_age_s is None else _ns(cfg.timestamps.max_age_s)
        max_ts: int | None = None
        for i in range(n):
            future = ts[i] > now + fut
            if future:
                out[i] |= Q.TS_FUTURE
            if age is not None and ts[i] < now - age:
                out[i] |= Q.TS_STALE
            if max_ts is not None:
                if ts[i] == max_ts:
                    out[i] |= Q.TS_DUPLICATE
                elif ts[i] < max_ts:
                    out[i] |= Q.TS_NON_MONOTONIC
            if not future:
                max_ts = ts[i] if max_ts is None else max(max_ts, ts[i])
    if cfg.duplicates:
        for i in range(1, n):
            same_v = vals[i] == vals[i - 1] or (math.isnan(vals[i]) and math.isnan(vals[i - 1]))
            if ts[i] == ts[i - 1] and same_v:
                out[i] = (out[i] & ~int(Q.TS_DUPLICATE)) | Q.DUPLICATE
    elig = [i for i in range(n) if math.isfinite(vals[i]) and not out[i] & INVALID]

    if cfg.rate_of_change is not None:
        prev: tuple[int, float] | None = None
        for i in elig:
            if prev is not None:
                dt = ts[i] - prev[0]
                if dt > 0 and abs(vals[i] - prev[1]) > cfg.rate_of_change.max_per_s * (float(dt) * 1e-9):
                    out[i] |= Q.RATE_OF_CHANGE
            prev = (ts[i], vals[i])

    if cfg.spike is not None:
        w, k, md = cfg.spike.window, cfg.spike.k, cfg.spike.min_deviation
        window: list[float] = []
        for i in elig:
            if len(window) == w:
                med = _median(window)
                mad = _median([abs(x - med) for x in window])
                if abs(vals[i] - med) > max(k * 1.4826 * mad, md):
                    out[i] |= Q.SPIKE
            window = [*window, vals[i]][-w:]

    if cfg.flatline is not None:
        fl = cfg.flatline
        dur = None if fl.duration_s is None else _ns(fl.duration_s)
        last: float | None = None
        length, start = 0, 0
        for i in elig:
            if last is not None and abs(vals[i] - last) <= fl.tolerance:
                length += 1
            else:
                length, start = 1, ts[i]
            if (fl.count is not None and length >= fl.count) or (dur is not None and ts[i] - start >= dur):
                out[i] |= Q.FLATLINE
            last = vals[i]

    if cfg.counter is not None:
        c = cfg.counter
        ref: tuple[float, int, int] | None = None  # value, ts, sample number
        last_s: tuple[float, int] | None = None
        pending = False
        for kk, i in enumerate(elig):
            v, t = vals[i], ts[i]
            if ref is None or last_s is None:
                ref = (v, t, kk)
            elif not pending:
                cls = ref_classify(c, v - ref[0], t - ref[1], kk - ref[2])
                if cls == ABNORMAL:
                    out[i] |= Q.COUNTER_GLITCH
                    pending = True
                else:
                    if cls == ROLLOVER:
                        out[i] |= Q.COUNTER_ROLLOVER
                    ref = (v, t, kk)
            else:
                cls = ref_classify(c, v - ref[0], t - ref[1], kk - ref[2])
                if cls != ABNORMAL:  # the jump was a glitch
                    if cls == ROLLOVER:
                        out[i] |= Q.COUNTER_ROLLOVER
                    ref, pending = (v, t, kk), False
                elif ref_classify(c, v - last_s[0], t - last_s[1], 1) != ABNORMAL:
                    out[i] |= Q.COUNTER_RESET  # the counter restarted at the jumped level
                    ref, pending = (v, t, kk), False
                else:
                    out[i] |= Q.COUNTER_GLITCH
            last_s = (v, t)
    return out


def reference_counter_deltas(
    vals: Sequence[float], flags: Sequence[int], modulus: float, prev: float | None = None
) -> list[float]:
    blocking = INVALID & ~int(Q.COUNTER_RESET)
    ref = prev
    out = []
    for v, f in zip(vals, flags, strict=True):
        d = 0.0
        if math.isfinite(v) and not f & INVALID and ref is not None:
            d = v - ref
            if f & Q.COUNTER_ROLLOVER and d < 0:
                d += modulus
            d = max(d, 0.0) if math.isfinite(d) else 0.0
        out.append(d)
        if math.isfinite(v) and not f & blocking:
            ref = v
    return out


# ------------------------------------------------------------------------------------------
# strategies

_STEPS = [0, 1, 1, 1, 1, 2, 3, 10, 40, -1, -5]


@st.composite
def analog_streams(draw: st.DrawFn, max_size: int = 70) -> tuple[list[int], list[float], list[int]]:
    n = draw(st.integers(0, max_size))
    steps = draw(st.lists(st.sampled_from(_STEPS), min_size=n, max_size=n))
    jitter = draw(st.lists(st.sampled_from([0, 0, 0, 1, 500_000_000]), min_size=n, max_size=n))
    ts, t = [], T0
    for s, j in zip(steps, jitter, strict=True):
        t += s * S
        ts.append(t + j)
    value = st.one_of(
        st.sampled_from([0.0, 1.0, 1.0, 5.0, 50.0, 65535.0, -32768.0, math.nan, 120.0]),
        st.floats(-200, 200, allow_nan=False, allow_infinity=False),
        st.floats(allow_nan=True, allow_infinity=True),
    )
    vals = draw(st.lists(value, min_size=n, max_size=n))
    repeat = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    for i in range(1, n):
        if repeat[i]:  # runs of one value: flatlines and duplicate readings
            vals[i] = vals[i - 1]
    qual = draw(
        st.lists(
            st.sampled_from([0, 0, 0, 0, 0, Q.COMM_FAULT, Q.MAINTENANCE, Q.MANUAL]),
            min_size=n,
            max_size=n,
        )
    )
    return ts, vals, [int(q) for q in qual]


@st.composite
def counter_streams(draw: st.DrawFn, max_size: int = 70) -> tuple[list[int], list[float], list[int]]:
    n = draw(st.integers(0, max_size))
    modulus = 1001.0
    inc = st.one_of(
        st.integers(0, 12),
        st.sampled_from([0, 0, 40, 300, 600, -3, -400, 990]),
    )
    steps = draw(st.lists(inc, min_size=n, max_size=n))
    glitch = draw(st.lists(st.sampled_from([0, 0, 0, 0, 0, 500, -250]), min_size=n, max_size=n))
    vals, c = [], float(draw(st.integers(0, 1000)))
    for s, g in zip(steps, glitch, strict=True):
        c = (c + s) % modulus
        vals.append(c + g)
    dt = draw(st.lists(st.sampled_from([1, 1, 1, 2, 0, 5]), min_size=n, max_size=n))
    ts, t = [], T0
    for d in dt:
        t += d * S
        ts.append(t)
    qual = draw(st.lists(st.sampled_from([0, 0, 0, 0, Q.COMM_FAULT]), min_size=n, max_size=n))
    vals = [math.nan if q else v for v, q in zip(vals, qual, strict=True)]
    return ts, vals, [int(q) for q in qual]


def _opt(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    return st.one_of(st.none(), strategy)


@st.composite
def configs(draw: st.DrawFn) -> ChecksConfig:
    lo = draw(st.sampled_from([None, -100.0, 0.0]))
    hi = draw(st.sampled_from([None, 100.0, 1000.0]))
    rng = None if lo is None and hi is None else RangeCheck(min=lo, max=hi)
    spike = draw(
        _opt(
            st.builds(
                SpikeCheck,
                window=st.integers(3, 8),
                k=st.sampled_from([0.5, 2.0, 3.0]),
                min_deviation=st.sampled_from([0.0, 0.0, 1.0]),
            )
        )
    )
    count = draw(st.sampled_from([None, 2, 3, 5]))
    dur = draw(st.sampled_from([None, 1.0, 4.0]) if count else st.sampled_from([1.0, 4.0]))
    flat = draw(
        _opt(
            st.just(
                FlatlineCheck(count=count, duration_s=dur, tolerance=draw(st.sampled_from([0.0, 0.5, 2.0])))
            )
        )
    )
    ts_check = draw(
        _opt(
            st.builds(
                TimestampCheck,
                max_future_s=st.sampled_from([0.0, 2.0, 30.0]),
                max_age_s=st.sampled_from([None, 20.0, 100.0]),
            )
        )
    )
    return ChecksConfig(
        range=rng,
        rate_of_change=draw(_opt(st.builds(RateCheck, max_per_s=st.sampled_from([0.5, 5.0])))),
        spike=spike,
        flatline=flat,
        sentinels=draw(st.sampled_from([(), (65535.0,), (65535.0, -32768.0, math.inf)])),
        timestamps=ts_check,
        duplicates=draw(st.booleans()),
    )


@st.composite
def counter_configs(draw: st.DrawFn) -> ChecksConfig:
    step = draw(st.sampled_from([None, 10.0, 25.0]))
    rate = draw(st.sampled_from([8.0, 30.0]) if step is None else st.sampled_from([None, 8.0]))
    return ChecksConfig(
        counter=CounterCheck(register_max=1000.0, resolution=1.0, max_step=step, max_rate_per_s=rate),
        timestamps=draw(_opt(st.just(TimestampCheck(max_future_s=1000)))),
        duplicates=draw(st.booleans()),
    )


NOW = st.integers(0, 400).map(lambda s: T0 + s * S)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _split(n: int, cuts: list[int]) -> list[tuple[int, int]]:
    points = sorted({0, n, *(c % (n + 1) for c in cuts)})
    return list(itertools.pairwise(points))


def _chunked(
    cfg: ChecksConfig, ts: list[int], vals: list[float], qual: list[int], now: int, cuts: list[int]
) -> np.ndarray:
    pc = PointCleaner(cfg)
    parts = [np.zeros(0, dtype=np.uint32)]
    for a, b in _split(len(ts), cuts):
        parts.append(
            pc.apply(
                np.array(ts[a:b], dtype=np.int64),
                np.array(vals[a:b], dtype=np.float64),
                np.array(qual[a:b], dtype=np.uint32),
                now,
            )
        )
    return np.concatenate(parts)


def _arrays(ts: list[int], vals: list[float], qual: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.array(ts, dtype=np.int64),
        np.array(vals, dtype=np.float64),
        np.array(qual, dtype=np.uint32),
    )


# ------------------------------------------------------------------------------------------
# properties


@FAST
@given(analog_streams(), configs(), NOW)
def test_vectorised_equals_reference(
    stream: tuple[list[int], list[float], list[int]], cfg: ChecksConfig, now: int
) -> None:
    ts, vals, qual = stream
    got = run_checks(*_arrays(ts, vals, qual), cfg, now)
    assert got.dtype == np.uint32
    assert got.tolist() == reference_checks(ts, vals, qual, cfg, now)


@FAST
@given(counter_streams(), counter_configs(), NOW)
def test_counter_vectorised_equals_reference(
    stream: tuple[list[int], list[float], list[int]], cfg: ChecksConfig, now: int
) -> None:
    ts, vals, qual = stream
    got = run_checks(*_arrays(ts, vals, qual), cfg, now)
    assert got.tolist() == reference_checks(ts, vals, qual, cfg, now)


@FAST
@given(analog_streams(), configs(), NOW, st.lists(st.integers(0, 100), max_size=6))
def test_chunked_equals_whole(
    stream: tuple[list[int], list[float], list[int]],
    cfg: ChecksConfig,
    now: int,
    cuts: list[int],
) -> None:
    ts, vals, qual = stream
    whole = run_checks(*_arrays(ts, vals, qual), cfg, now)
    assert _chunked(cfg, ts, vals, qual, now, cuts).tolist() == whole.tolist()


@FAST
@given(counter_streams(), counter_configs(), NOW, st.lists(st.integers(0, 100), max_size=6))
def test_counter_chunked_equals_whole(
    stream: tuple[list[int], list[float], list[int]],
    cfg: ChecksConfig,
    now: int,
    cuts: list[int],
) -> None:
    ts, vals, qual = stream
    whole = run_checks(*_arrays(ts, vals, qual), cfg, now)
    assert _chunked(cfg, ts, vals, qual, now, cuts).tolist() == whole.tolist()


@FAST
@given(analog_streams(), configs(), NOW)
def test_inputs_never_modified_and_deterministic(
    stream: tuple[list[int], list[float], list[int]], cfg: ChecksConfig, now: int
) -> None:
    ts_a, v_a, q_a = _arrays(*stream)
    copies = (ts_a.copy(), v_a.copy(), q_a.copy())
    first = run_checks(ts_a, v_a, q_a, cfg, now)
    second = run_checks(ts_a, v_a, q_a, cfg, now)
    assert np.array_equal(ts_a, copies[0])
    assert np.array_equal(v_a, copies[1], equal_nan=True)
    assert np.array_equal(q_a, copies[2])
    assert np.array_equal(first, second)
    # input bits are kept: the checks only add bits
    assert np.array_equal(first & q_a, q_a)
    # every single check is pure too
    for flags in (
        check_range(v_a, -1, 1),
        check_sentinels(v_a, (65535.0,)),
        check_timestamps(ts_a, now, max_age_s=10),
        check_duplicates(ts_a, v_a),
        check_rate_of_change(ts_a, v_a, 1.0),
        check_spike(v_a, 3, 2.0),
        check_flatline(ts_a, v_a, count=3),
        check_counter(ts_a, v_a, register_max=1000, max_step=10),
    ):
        assert flags.dtype == np.uint32 and flags.shape == v_a.shape
    assert np.array_equal(v_a, copies[1], equal_nan=True)
    assert np.array_equal(ts_a, copies[0])


@FAST
@given(analog_streams(max_size=40), configs(), NOW)
def test_cleaner_never_changes_values(
    stream: tuple[list[int], list[float], list[int]], cfg: ChecksConfig, now: int
) -> None:
    ts, vals, qual = stream
    readings = [
        Reading(point_id=("p" if i % 3 else "q"), ts_ns=t, value=v, unit="kW", source="s", quality=q)
        for i, (t, v, q) in enumerate(zip(ts, vals, qual, strict=True))
    ]
    out = Cleaner({"p": cfg}).clean(readings, now)
    assert len(out) == len(readings)
    for before, after in zip(readings, out, strict=True):
        assert after.point_id == before.point_id and after.ts_ns == before.ts_ns
        assert after.value is before.value or (math.isnan(after.value) and math.isnan(before.value))
        assert after.quality & before.quality == before.quality
        if after.quality == before.quality:
            assert after is before
        if before.point_id == "q":
            assert after is before
    p_idx = [i for i, r in enumerate(readings) if r.point_id == "p"]
    expected = reference_checks(
        [ts[i] for i in p_idx], [vals[i] for i in p_idx], [qual[i] for i in p_idx], cfg, now
    )
    assert [out[i].quality for i in p_idx] == expected


@FAST
@given(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=50),
    st.lists(
        st.sampled_from([0, 0, 0, Q.COUNTER_ROLLOVER, Q.COUNTER_RESET, Q.COUNTER_GLITCH, Q.SPIKE, Q.MANUAL]),
        max_size=50,
    ),
    st.one_of(st.none(), st.floats(-1e6, 1e6)),
)
def test_counter_deltas_never_negative(vals: list[float], flags: list[int], prev: float | None) -> None:
    n = min(len(vals), len(flags))
    vals, flags = vals[:n], [int(f) for f in flags[:n]]
    d = counter_deltas(np.array(vals), np.array(flags, dtype=np.uint32), 1000.0, prev_value=prev)
    assert d.shape == (n,)
    assert np.all(d >= 0) and np.all(np.isfinite(d))
    assert d.tolist() == reference_counter_deltas(vals, flags, 1001.0, prev)


@FAST
@given(counter_streams(), counter_configs(), NOW)
def test_counter_pipeline_energy_non_negative(
    stream: tuple[list[int], list[float], list[int]], cfg: ChecksConfig, now: int
) -> None:
    ts, vals, qual = stream
    flags = run_checks(*_arrays(ts, vals, qual), cfg, now)
    d = counter_deltas(np.array(vals), flags, 1000.0)
    assert np.all(d >= 0)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(0, 10), min_size=3, max_size=80),
    st.sets(st.integers(1, 78), max_size=8),
    st.integers(0, 1000),
    st.booleans(),
)
def test_counter_glitches_and_rollovers_conserve_energy(
    increments: list[int], glitch_at: set[int], start: int, up: bool
) -> None:
    """Isolated glitches cost no energy and rollovers are corrected: the sum of the deltas
    is the true consumption."""
    modulus = 1001
    vals: list[float] = []
    c = start
    for k, inc in enumerate(increments):
        c = (c + inc) % modulus if k else c
        vals.append(float(c))
    n = len(vals)
    # isolated glitches only (not the first or last sample, never two in a row)
    chosen: list[int] = []
    for g in sorted(glitch_at):
        if 0 < g < n - 1 and all(abs(g - h) > 1 for h in chosen):
            chosen.append(g)
    for g in chosen:
        vals[g] += 400.0 if up else -300.0 - modulus  # far outside any plausible step
    ts = [T0 + k * S for k in range(n)]
    cfg = ChecksConfig(counter=CounterCheck(register_max=1000, max_step=10))
    flags = run_checks(*_arrays(ts, vals, [0] * n), cfg, T0)
    got = flags.tolist()
    for g in chosen:
        assert got[g] & Q.COUNTER_GLITCH
    assert not any(f & Q.COUNTER_RESET for f in got)
    d = counter_deltas(np.array(vals), flags, 1000.0)
    assert d.sum() == sum(increments[1:])
