"""The pollers' shared ticker: one event-loop timer per slot, never early, cancel-safe."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import random
from typing import Any

import pytest

from drivers._polling import TICK_SLOT_S, PointInfo, PollLoop, Ticker, ticker
from mrv_core import Metrics, Reading


class RecordingLoop:
    """The two loop methods a `Ticker` uses, recording the timers asked for."""

    def __init__(self) -> None:
        self.timers: list[tuple[float, Any, tuple[Any, ...]]] = []
        self.real = asyncio.new_event_loop()

    def create_future(self) -> asyncio.Future[None]:
        return self.real.create_future()

    def call_at(self, when: float, cb: Any, *args: Any) -> None:
        self.timers.append((when, cb, args))

    def fire_all(self) -> None:
        timers, self.timers = self.timers, []
        for _, cb, args in sorted(timers, key=lambda t: t[0]):
            cb(*args)


def test_one_timer_per_slot_never_before_the_asked_time() -> None:
    loop = RecordingLoop()
    t = Ticker(loop)  # type: ignore[arg-type]
    rng = random.Random(7)
    slot = 0.05
    whens = [1000 + rng.random() for _ in range(500)]
    futs = [t.at(w, slot) for w in whens]
    slots = {math.ceil(w / slot) for w in whens}
    assert len(loop.timers) == len(slots) <= 21  # 500 waits over one second: ~20 timers
    for when, _, (key,) in loop.timers:
        members = [w for w in whens if math.ceil(w / slot) == key[1]]
        assert when >= max(members) - 1e-9  # no one woken before its time
        assert when - min(members) <= slot + 1e-9  # nor more than a slot late
    assert not any(f.done() for f in futs)
    loop.fire_all()
    assert all(f.done() and f.result() is None for f in futs)
    loop.real.close()


def test_slot_sizes_do_not_share_timers() -> None:
    loop = RecordingLoop()
    t = Ticker(loop)  # type: ignore[arg-type]
    a = t.at(10.01, 0.05)
    b = t.at(10.01, 0.005)
    assert len(loop.timers) == 2
    loop.fire_all()
    assert a.done() and b.done()
    loop.real.close()


def test_a_cancelled_waiter_leaves_the_others_waiting_and_woken() -> None:
    loop = RecordingLoop()
    t = Ticker(loop)  # type: ignore[arg-type]
    futs = [t.at(5.0, 0.05) for _ in range(3)]
    futs[1].cancel()
    assert len(loop.timers) == 1
    loop.fire_all()  # must not raise on the cancelled one
    assert futs[0].result() is None and futs[2].result() is None
    assert futs[1].cancelled()
    loop.real.close()


async def test_real_loop_wakes_at_or_after_the_asked_time() -> None:
    loop = asyncio.get_running_loop()
    t = ticker(loop)
    assert ticker(loop) is t  # one per loop
    start = loop.time()
    whens = [start + 0.01 + i * 0.003 for i in range(20)]
    woke: list[tuple[float, float]] = []

    async def wait(w: float) -> None:
        await t.at(w, 0.02)
        woke.append((w, loop.time()))

    await asyncio.gather(*(wait(w) for w in whens))
    assert len(woke) == 20
    # the loop may run a timer up to its clock resolution early, never more
    res = loop._clock_resolution  # type: ignore[attr-defined]
    assert all(at >= w - res for w, at in woke), woke


def test_the_table_does_not_keep_a_finished_loop() -> None:
    import drivers._polling as polling

    loop = asyncio.new_event_loop()
    ticker(loop)
    n = len(polling._tickers)
    loop.close()
    del loop
    gc.collect()
    assert len(polling._tickers) == n - 1


@pytest.mark.parametrize("interval", [0.02, 0.2, 1.0, 60.0])
async def test_poll_loop_slots_are_at_most_a_twentieth_of_the_interval(interval: float) -> None:
    """The loop ticks on the grid of its slot: never before its tick, and the slot is bounded by
    `TICK_SLOT_S` and a twentieth of the interval, so a tick is at most 5 % late."""

    class Opts:
        interval_s = interval
        breaker_failures = 3
        backoff_initial_s = 1.0
        backoff_max_s = 2.0

    seen: list[tuple[float, int]] = []
    asked: list[tuple[float, float]] = []
    loop = asyncio.get_running_loop()
    t = ticker(loop)
    real_at = t.at

    def spy(when: float, slot_s: float) -> asyncio.Future[None]:
        asked.append((when, slot_s))
        return real_at(when, slot_s)

    t.at = spy  # type: ignore[method-assign]
    done = asyncio.Event()

    async def sink(readings: list[Reading]) -> None:
        seen.append((loop.time(), len(readings)))
        if len(seen) >= 3:
            done.set()

    async def attempt() -> list[Reading]:
        return []

    pl = PollLoop("dev", "test:dev", [PointInfo("p", "1")], Opts(), sink, Metrics(),
                  logging.getLogger("test"))
    pl.phase_s = 0.0
    start = loop.time()
    task = asyncio.create_task(pl.run(attempt))
    try:
        if interval <= 1.0:
            await asyncio.wait_for(done.wait(), 30)
        else:
            while not asked:
                await asyncio.sleep(0.001)
    finally:
        task.cancel()
        del t.at
    assert asked, "the loop never waited on the ticker"
    for _, slot_s in asked:
        assert slot_s == min(TICK_SLOT_S, interval / 20)
    if interval <= 1.0:
        for i, (at, _) in enumerate(seen):  # never before its tick
            assert at >= start + i * interval - loop._clock_resolution - 1e-6  # type: ignore[attr-defined]


def test_callbacks_share_the_slot_and_one_failing_does_not_stop_the_rest() -> None:
    loop = RecordingLoop()
    reported: list[dict[str, Any]] = []
    loop.call_exception_handler = reported.append  # type: ignore[attr-defined]
    t = Ticker(loop)  # type: ignore[arg-type]
    called: list[str] = []
    fut = t.at(7.01, 0.05)

    def boom() -> None:
        raise RuntimeError("boom")

    t.call(7.02, 0.05, lambda: called.append("a"))
    t.call(7.03, 0.05, boom)
    t.call(7.04, 0.05, lambda: called.append("b"))
    t.call(7.06, 0.05, lambda: called.append("next slot"))
    assert len(loop.timers) == 2  # 7.00-7.05 and 7.05-7.10
    assert all(w >= 7.04 - 1e-9 for w, _, _ in loop.timers)
    loop.fire_all()
    assert fut.done() and called == ["a", "b", "next slot"]
    assert len(reported) == 1 and isinstance(reported[0]["exception"], RuntimeError)
    loop.real.close()
