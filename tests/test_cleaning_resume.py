"""A restarted gateway resumes each point's trailing check state from the readings the outbox
committed, and flags the next readings exactly as if it had never stopped."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from cleaning import Cleaner, ResumeHistory
from cleaning._config import ChecksConfig, FlatlineCheck, SpikeCheck, TimestampCheck
from cleaning._stream import PointCleaner, resume_eligible
from mrv_core._records import Quality
from tests.test_cleaning_properties import (
    FAST,
    NOW,
    T0,
    S,
    _arrays,
    analog_streams,
    configs,
    counter_configs,
    counter_streams,
)

Stream = tuple[list[int], list[float], list[int]]


def _flags_after_restart(cfg: ChecksConfig, stream: Stream, cut: int, now: int,
                         history: int | None) -> tuple[list[int], list[int]]:
    """Flags of the readings after ``cut``: from a cleaner that ran on (the whole stream), and
    from a fresh one resumed from the first ``cut`` readings as committed (their flags in the
    quality), of which only the suffix ``ResumeHistory`` asks for when ``history`` is None,
    else the last ``history``."""
    ts, vals, qual = stream
    cut = cut % (len(ts) + 1)
    a = PointCleaner(cfg)
    stored = a.apply(*_arrays(ts[:cut], vals[:cut], qual[:cut]), now).tolist()
    want = a.apply(*_arrays(ts[cut:], vals[cut:], qual[cut:]), now).tolist()
    b = PointCleaner(cfg)
    need = b.history_needed()
    if history is not None:
        lo = max(0, cut - history)
        b.resume(ts[lo:cut], vals[lo:cut], stored[lo:])
    elif need is not None:
        rh = ResumeHistory({"p": need})
        for i in range(cut - 1, -1, -1):  # newest first, as the outbox is read
            if rh.done:
                break
            rh.add("p", ts[i], vals[i], stored[i])
        got = rh.history().get("p")
        if got is not None:
            b.resume(*got)
    got_flags = b.apply(*_arrays(ts[cut:], vals[cut:], qual[cut:]), now).tolist()
    return want, got_flags


@FAST
@given(analog_streams(), configs(), NOW, st.integers(0, 100))
def test_resumed_from_every_committed_reading_flags_as_if_never_stopped(
        stream: Stream, cfg: ChecksConfig, now: int, cut: int) -> None:
    want, got = _flags_after_restart(cfg, stream, cut, now, history=10**6)
    assert got == want


@FAST
@given(counter_streams(), counter_configs(), NOW, st.integers(0, 100))
def test_counter_resumed_from_every_committed_reading(
        stream: Stream, cfg: ChecksConfig, now: int, cut: int) -> None:
    want, got = _flags_after_restart(cfg, stream, cut, now, history=10**6)
    assert got == want


# issue 11, item 18: 18 readings at T, then 6 at T - 1 s, a restart after 19. The 19th was
# out of order; resumed from it alone, the newest timestamp seen was taken to be T - 1 s, so
# the 20th was flagged TS_DUPLICATE where the uninterrupted cleaner flags TS_NON_MONOTONIC.
@example(stream=([T0 + S] * 18 + [T0] * 6, [1.0] * 24, [0] * 24),
         cfg=ChecksConfig(timestamps=TimestampCheck(max_future_s=30.0), duplicates=False),
         now=T0, cut=19)
# Found in a parallel run: a flatline by duration (1 s), equal values at T0, T0, T0 - 1 s, T0...,
# a restart after 4. The history stopped at the reading 1 s older than the newest and took it
# for the run's start; the run started at the first T0 (arrival order), so the resumed cleaner
# flagged FLATLINE where the one that never stopped does not.
@example(stream=([T0, T0, T0 - S] + [T0] * 13, [0.0] * 16, [0] * 16),
         cfg=ChecksConfig(flatline=FlatlineCheck(duration_s=1.0), duplicates=False),
         now=T0, cut=4)
@FAST
@given(analog_streams(), configs(), NOW, st.integers(0, 100))
def test_resumed_from_the_history_it_asks_for(
        stream: Stream, cfg: ChecksConfig, now: int, cut: int) -> None:
    """Only the suffix `history_needed` / `ResumeHistory` asks for is enough."""
    want, got = _flags_after_restart(cfg, stream, cut, now, history=None)
    assert got == want


def test_without_resume_a_restart_loses_the_state() -> None:
    """The reason for all this: a stuck meter, a flatline by count of 5, a restart after 4
    equal readings. Resumed, the 5th is flagged; from an empty state it is not."""
    cfg = ChecksConfig(flatline=FlatlineCheck(count=5, tolerance=0.0))
    ts = [T0 + i * S for i in range(5)]
    first = PointCleaner(cfg)
    stored = first.apply(*_arrays(ts[:4], [7.0] * 4, [0] * 4), T0).tolist()
    resumed, fresh = PointCleaner(cfg), PointCleaner(cfg)
    resumed.resume(ts[:4], [7.0] * 4, stored)
    fifth = _arrays(ts[4:], [7.0], [0])
    assert resumed.apply(*fifth, T0).tolist() == [int(Quality.FLATLINE)]
    assert fresh.apply(*fifth, T0).tolist() == [0]


def test_history_needed_and_collection() -> None:
    spike = ChecksConfig(spike=SpikeCheck(window=4, k=3.0))
    flat = ChecksConfig(flatline=FlatlineCheck(duration_s=10.0))
    ts_only = ChecksConfig.model_validate({"timestamps": {"max_future_s": 5}})
    stateless = ChecksConfig.model_validate({"range": {"min": 0, "max": 10},
                                             "duplicates": False})
    c = Cleaner({"s": spike, "f": flat, "t": ts_only, "r": stateless})
    needs = c.history_needed()
    assert needs == {"s": (4, None, False), "f": (1, 0.0, False), "t": (0, None, True)}
    rh = ResumeHistory(needs)
    bad = int(Quality.COMM_FAULT)
    # newest first: spike needs 4 eligible readings (the invalid one does not count)
    for i, (v, q) in enumerate([(1.0, 0), (math.nan, bad), (2.0, 0), (3.0, bad), (4.0, 0)]):
        rh.add("s", T0 - i * S, v, q)
    assert not rh.done
    rh.add("s", T0 - 5 * S, 5.0, int(Quality.SPIKE))  # flagged by a value check: eligible
    rh.add("s", T0 - 6 * S, 6.0, 0)  # not taken: "s" is complete
    rh.add("t", T0, math.nan, bad)  # one reading of any kind
    for i in range(12):  # a flat run by duration: back to its start, whatever the times
        rh.add("f", T0 - i * S, 1.0, 0)
        assert not rh.done
    rh.add("f", T0 - 12 * S, 2.0, 0)  # does not continue the run: the run starts after it
    assert rh.done
    rh.add("r", T0, 1.0, 0)  # stateless: ignored
    h = rh.history()
    assert sorted(h) == ["f", "s", "t"]
    assert h["s"][0] == [T0 - 5 * S, T0 - 4 * S, T0 - 3 * S, T0 - 2 * S, T0 - S, T0]
    assert h["s"][2] == [int(Quality.SPIKE), 0, bad, 0, bad, 0]
    assert h["s"][1][:4] == [5.0, 4.0, 3.0, 2.0] and math.isnan(h["s"][1][4])
    assert h["s"][1][5] == 1.0
    assert len(h["f"][0]) == 13 and h["f"][1][0] == 2.0 and h["t"] == ([T0], h["t"][1], [bad])
    assert c.resume(h) == 3
    assert resume_eligible(1.0, int(Quality.FLATLINE)) and not resume_eligible(math.inf, 0)
    assert not resume_eligible(1.0, int(Quality.RANGE))


def test_resume_replaces_state_and_checks_lengths() -> None:
    cfg = ChecksConfig(spike=SpikeCheck(window=3, k=0.5, min_deviation=0.1))
    pc = PointCleaner(cfg)
    ts = np.array([T0 + i * S for i in range(3)], dtype=np.int64)
    pc.resume(ts, [10.0, 10.0, 10.0], [0, 0, 0])
    spike_flag = pc.apply(np.array([T0 + 3 * S]), np.array([50.0]), np.array([0], dtype=np.uint32),
                          T0)
    assert spike_flag.tolist() == [int(Quality.SPIKE)]
    pc.resume([], [], [])  # an empty history: the state of a fresh cleaner
    assert pc.apply(np.array([T0 + 4 * S]), np.array([50.0]), np.array([0], dtype=np.uint32),
                    T0).tolist() == [0]
    try:
        pc.resume(ts, [1.0], [0, 0, 0])
    except ValueError as e:
        assert "differ in length" in str(e)
    else:
        raise AssertionError("lengths that differ were accepted")


async def test_daemon_resumes_the_checks_from_the_outbox(tmp_path: Path) -> None:
    """Readings cleaned and committed, the gateway stops; a new cleaner resumed from the
    outbox flags the next readings as the old one would have; a fresh one does not."""
    from gateway import Reading
    from gateway._daemon import resume_cleaner
    from ledger_client import Outbox

    cfgs = {
        "stack.so2": ChecksConfig(flatline=FlatlineCheck(count=6, tolerance=0.0),
                                  spike=SpikeCheck(window=5, k=3.0, min_deviation=1.0)),
        "feeder.kw": ChecksConfig.model_validate(
            {"rate_of_change": {"max_per_s": 10}, "timestamps": {"max_future_s": 5}}),
        "gas.total": ChecksConfig.model_validate(
            {"counter": {"register_max": 65535, "max_step": 100}}),
    }

    def chunk(i0: int, n: int) -> list[Reading]:
        out = []
        for i in range(i0, i0 + n):
            t = T0 + i * S
            out += [Reading(point_id="stack.so2", ts_ns=t, value=31.0 if i >= 3 else 20.0 + i,
                            unit="mg/m3", source="t"),
                    Reading(point_id="feeder.kw", ts_ns=t, value=100.0 + 3 * i, unit="kW",
                            source="t"),
                    Reading(point_id="gas.total", ts_ns=t, value=float(65500 + 20 * i) % 65536,
                            unit="m3", source="t"),
                    Reading(point_id="unchecked", ts_ns=t, value=1.0, unit="", source="t")]
        return out

    before = Cleaner(cfgs)
    ob = await Outbox.open(tmp_path / "outbox.sqlite", "gw-1")
    try:
        for i0 in range(0, 8, 2):
            await ob.append(before.clean(chunk(i0, 2), T0))
        resumed, fresh = Cleaner(cfgs), Cleaner(cfgs)
        assert await resume_cleaner(ob, resumed) == (3, 32)
        nxt = chunk(8, 3)
        want = [r.quality for r in before.clean(nxt, T0)]
        assert [r.quality for r in resumed.clean(nxt, T0)] == want
        assert int(Quality.FLATLINE) in {q & int(Quality.FLATLINE) for q in want}
        assert [r.quality for r in fresh.clean(nxt, T0)] != want
        # nothing in the outbox: nothing resumed
        empty = await Outbox.open(tmp_path / "empty.sqlite", "gw-1")
        try:
            assert await resume_cleaner(empty, Cleaner(cfgs)) == (0, 0)
        finally:
            await empty.close()
    finally:
        await ob.close()


def test_a_timestamp_check_resumes_back_to_the_newest_timestamp() -> None:
    """Item 18 by hand: readings out of order since the last in-order one are not enough to
    know the newest timestamp seen; the history goes back to the reading that set it."""
    cfg = ChecksConfig(timestamps=TimestampCheck(max_future_s=30.0))
    ts = [T0 + S] * 3 + [T0] * 3
    first = PointCleaner(cfg)
    stored = first.apply(*_arrays(ts, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [0] * 6), T0).tolist()
    nonmono = int(Quality.TS_NON_MONOTONIC)
    assert stored[3:] == [nonmono] * 3  # the uninterrupted cleaner's flags
    need = first.history_needed()
    assert need == (0, None, True)
    rh = ResumeHistory({"p": need})
    taken = 0
    for i in range(5, -1, -1):
        if rh.done:
            break
        rh.add("p", ts[i], float(i), stored[i])
        taken += 1
    assert taken == 4  # the three out of order, and the last one that set T0 + 1 s
    resumed = PointCleaner(cfg)
    resumed.resume(*rh.history()["p"])
    nxt = _arrays([T0], [7.0], [0])
    assert resumed.apply(*nxt, T0).tolist() == first.apply(*nxt, T0).tolist() == [nonmono]
