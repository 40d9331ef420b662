"""`Cleaner` on `Reading` records: grouping, order, identity, state across batches."""

from __future__ import annotations

import math

from cleaning._config import ChecksConfig, FlatlineCheck, RangeCheck, TimestampCheck
from cleaning._stream import Cleaner
from mrv_core._records import Quality, Reading

Q = Quality
S = 1_000_000_000
T0 = 1_700_000_000 * S


def r(point: str, t: float, v: float, q: int = 0, seq: int = 0) -> Reading:
    return Reading(
        point_id=point,
        ts_ns=T0 + round(t * S),
        value=v,
        unit="kW",
        source="plc1",
        quality=q,
        seq=seq,
    )


CFG = {
    "a": ChecksConfig(range=RangeCheck(min=0, max=10), flatline=FlatlineCheck(count=3)),
    "b": ChecksConfig(timestamps=TimestampCheck(max_future_s=1)),
}


def test_clean_groups_by_point_and_keeps_order() -> None:
    readings = [
        r("a", 0, 1.0),
        r("b", 0, 5.0),
        r("x", 0, 99.0),  # no config: passes through
        r("a", 1, 11.0),
        r("b", 100, 5.0),  # 100 s in the future
        r("a", 2, 2.0, q=Q.MANUAL),
        r("b", 0.5, 6.0),
    ]
    out = Cleaner(CFG).clean(readings, T0 + S)
    assert [o.point_id for o in out] == [x.point_id for x in readings]
    assert [o.quality for o in out] == [
        0,
        0,
        0,
        Q.RANGE,
        Q.TS_FUTURE,
        Q.MANUAL,
        0,
    ]
    for before, after in zip(readings, out, strict=True):
        assert after.value == before.value and after.ts_ns == before.ts_ns
        assert after.unit == before.unit and after.source == before.source
        assert after.seq == before.seq and after.gateway_id == before.gateway_id
        if after.quality == before.quality:
            assert after is before  # unchanged readings are not copied
        else:
            assert after is not before
    assert readings[3].quality == 0  # the input is not modified


def test_state_carries_across_batches() -> None:
    c = Cleaner(CFG)
    first = c.clean([r("a", 0, 4.0), r("a", 1, 4.0)], T0)
    second = c.clean([r("a", 2, 4.0), r("a", 3, 5.0)], T0)
    assert [x.quality for x in first + second] == [0, 0, Q.FLATLINE, 0]
    assert c.point("a") is not None and c.point("x") is None


def test_empty_and_unconfigured() -> None:
    c = Cleaner({})
    assert c.clean([], T0) == []
    rs = [r("a", 0, math.nan, q=Q.COMM_FAULT)]
    out = c.clean(rs, T0)
    assert out == rs and out[0] is rs[0]


def test_nan_reading_with_comm_fault() -> None:
    out = Cleaner(CFG).clean([r("a", 0, math.nan, q=Q.COMM_FAULT), r("a", 1, 3.0)], T0)
    assert [x.quality for x in out] == [Q.COMM_FAULT, 0]


def test_a_cleaner_copied_for_a_shared_config_is_one_built_for_it() -> None:
    """`Cleaner` builds one `PointCleaner` per config object and copies it for the other
    points: each copy has every slot `__init__` gives, and state of its own."""
    import numpy as np
    from hypothesis import given, settings

    from cleaning._stream import PointCleaner, _like

    from .test_cleaning_stream_speed import configs

    def slots(pc: PointCleaner) -> dict[str, object]:
        return {name: getattr(pc, name) for name in PointCleaner.__slots__}

    @settings(max_examples=60, deadline=None)
    @given(configs())
    def check(cfg: ChecksConfig) -> None:
        first = PointCleaner(cfg)
        copy, built = _like(first), PointCleaner(cfg)
        a, b = slots(copy), slots(built)
        assert a.keys() == b.keys() == set(PointCleaner.__slots__)
        for name in a:
            assert type(a[name]) is type(b[name]) and a[name] == b[name], name
        # the state is the copy's own: a reading through one leaves the other fresh
        first.apply(np.array([1, 2], dtype=np.int64), np.array([1.0, 2.0]),
                    np.zeros(2, dtype=np.uint32), 10)
        assert slots(copy) == b and copy._spike_hist is not first._spike_hist

    check()
    shared = ChecksConfig(range=RangeCheck(min=0, max=10))
    c = Cleaner({"a": shared, "b": shared, "c": ChecksConfig(range=RangeCheck(min=0, max=5))})
    pa, pb = c.point("a"), c.point("b")
    assert pa is not None and pb is not None and pa is not pb and pa.config is pb.config
    got = c.clean([Reading(point_id=p, ts_ns=1, value=7.0, unit="kW", source="s")
                   for p in "abc"], 10)
    assert [r.quality for r in got] == [0, 0, Quality.RANGE]
