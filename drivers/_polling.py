"""The schedule every polled device runs on: fixed rate, circuit breaker, flagged gaps.

Shared by the Modbus TCP and RTU pollers and the DL/T 645 meters. One `PollLoop` per device:

* Ticks at a fixed rate (``interval_s``) measured from the start, not from the end of the last
  poll, so a slow poll does not drift the schedule. The first tick is offset by a stable phase
  (a hash of the device name, within min(interval, 1 s)) so that many devices on one period do
  not all fire at the same instant. A tick that is already over when the
  previous poll ends is skipped and counted in ``missed`` (metric ``polls_missed``). Ticks are
  woken by a `Ticker`, on a grid of `TICK_SLOT_S` (at most a twentieth of the interval): the
  devices of one slot share one timer, up to one slot late, never early.
* An attempt either returns readings or raises `DeviceUnreachable`. A failure yields one NaN
  reading per point flagged COMM_FAULT (HJ 212 "B") at the tick's time: a gap is recorded,
  never a value invented.
* After ``breaker_failures`` consecutive failures the breaker opens: the device is no longer
  asked at every tick (a dead RS-485 unit would otherwise eat the bus for a timeout every poll).
  It is probed after ``backoff_initial_s``, doubling up to ``backoff_max_s``; the ticks in between
  still emit COMM_FAULT gap readings at the poll rate, so the gap stays visible. The first
  successful probe closes the breaker.
* Device health goes to `Metrics` as component ``device:<name>`` (state, last success,
  consecutive failures); each change of state is logged once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from drivers._errors import DeviceUnreachable
from drivers._source import Sink
from mrv_core import Metrics, Quality, Reading, raise_if_cancelling

_DEVICE_FAULT = int(Quality.DEVICE_FAULT)


class PollOptions(Protocol):
    @property
    def interval_s(self) -> float: ...
    @property
    def breaker_failures(self) -> int: ...
    @property
    def backoff_initial_s(self) -> float: ...
    @property
    def backoff_max_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class PointInfo:
    id: str
    unit: str


def gap_readings(points: Sequence[PointInfo], ts_ns: int, source: str,
                 quality: int = int(Quality.COMM_FAULT)) -> list[Reading]:
    """One NaN reading per point, flagged ``quality``: the record of a missing value."""
    return [Reading(point_id=p.id, ts_ns=ts_ns, value=math.nan, unit=p.unit, source=source,
                    quality=quality) for p in points]


#: A device's ticks are grouped on a grid of this many seconds (at most a twentieth of its
#: interval): the devices whose next tick falls in one slot share one timer and one turn of the
#: event loop (`Ticker`).
TICK_SLOT_S = 0.05


class Ticker:
    """One event-loop timer per slot for every device whose next tick falls in it, instead of
    a timer each (design 008, "Third round").

    At 500 devices the loop's own work per poll (a timer in a heap compared in Python, a turn
    of the loop with its ``epoll_wait`` for every device) was a third of the main thread. Woken
    together, a slot's devices send their requests in one turn and their replies mostly arrive
    in one ``epoll_wait``. A wake-up is at most one slot late; the readings' timestamps are
    taken when each request is sent, as before."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # a proxy: the tickers' table must not keep a finished loop alive
        self.loop = weakref.proxy(loop)
        self._slots: dict[tuple[float, int], tuple[list[asyncio.Future[None]],
                                                    list[Callable[[], None]]]] = {}

    def _slot(self, when: float, slot_s: float) -> tuple[list[asyncio.Future[None]],
                                                         list[Callable[[], None]]]:
        key = (slot_s, math.ceil(when / slot_s))
        entry = self._slots.get(key)
        if entry is None:
            entry = self._slots[key] = ([], [])
            self.loop.call_at(max(key[1] * slot_s, when), self._fire, key)
        return entry

    def at(self, when: float, slot_s: float) -> asyncio.Future[None]:
        """A future done at the end of the slot of ``slot_s`` seconds that holds loop time
        ``when`` (never before ``when``)."""
        fut: asyncio.Future[None] = self.loop.create_future()
        self._slot(when, slot_s)[0].append(fut)
        return fut

    def call(self, when: float, slot_s: float, fn: Callable[[], None]) -> None:
        """Call ``fn`` at the end of the slot that holds ``when`` (never before ``when``), as
        `at` wakes a waiter; the Modbus TCP clients' timeout sweeps use it."""
        self._slot(when, slot_s)[1].append(fn)

    def _fire(self, key: tuple[float, int]) -> None:
        futs, calls = self._slots.pop(key)
        for fut in futs:
            if not fut.done():  # a cancelled waiter's future is done already
                fut.set_result(None)
        for fn in calls:
            try:
                fn()
            except Exception as e:  # one failing callback must not keep the others waiting
                self.loop.call_exception_handler({
                    "message": f"exception in a ticker callback {fn!r}", "exception": e})


_tickers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Ticker] = (
    weakref.WeakKeyDictionary())


def ticker(loop: asyncio.AbstractEventLoop) -> Ticker:
    """The `Ticker` of ``loop`` (one per event loop)."""
    t = _tickers.get(loop)
    if t is None:
        t = _tickers[loop] = Ticker(loop)
    return t


class PollLoop:
    """Schedule, breaker and health of one polled device; the I/O is the caller's ``attempt``."""

    def __init__(self, name: str, source: str, points: Sequence[PointInfo], opts: PollOptions,
                 sink: Sink, metrics: Metrics, log: logging.Logger, *,
                 now_ns: Callable[[], int] = time.time_ns) -> None:
        self.name = name
        self.now_ns = now_ns  # the wall clock of gap readings (the schedule runs on loop.time())
        self.source = source
        self.points = list(points)
        self.interval = opts.interval_s
        self.breaker_failures = opts.breaker_failures
        self.backoff_initial = opts.backoff_initial_s
        self.backoff_max = opts.backoff_max_s
        self.sink = sink
        self.metrics = metrics
        self.log = log
        self.component = f"device:{name}"
        self.polls = 0  # ticks served (real or gap readings)
        self.missed = 0  # ticks skipped because the previous poll overran
        self.attempts = 0  # ticks on which the device was asked
        self.failures = 0  # consecutive failed attempts
        self.breaker_open = False
        self.breaker_opened = 0  # times the breaker opened
        self.next_probe = 0.0
        self._backoff = self.backoff_initial
        #: When a list, the duration (s) of every successful attempt is appended (benchmarks).
        self.latencies: list[float] | None = None
        self.phase_s = (zlib.crc32(name.encode()) % 1000) / 1000 * min(self.interval, 1.0)

    def gap(self, ts_ns: int) -> list[Reading]:
        return gap_readings(self.points, ts_ns, self.source)

    def _succeeded(self, readings: list[Reading]) -> None:
        self.failures = 0
        if self.breaker_open:
            self.breaker_open = False
            self._backoff = self.backoff_initial
            self.metrics.inc("breaker_closed")
        if readings and all(r.quality & _DEVICE_FAULT for r in readings):
            # It answers, so no breaker; but every answer is a fault (exception responses,
            # error replies): the device is not healthy.
            if self.metrics.set_state(self.component, "failing", "the device reports faults"):
                self.log.warning("%s: answers, but only with faults (logged once)", self.name)
        elif self.metrics.set_state(self.component, "ok"):
            self.log.info("%s: polling (%s)", self.name, self.source)

    def _failed(self, e: DeviceUnreachable, now: float) -> None:
        self.failures += 1
        self.metrics.inc("device_failures")
        if self.failures >= self.breaker_failures:
            if not self.breaker_open:
                self.breaker_open = True
                self.breaker_opened += 1
                self.metrics.inc("breaker_opened")
                self.log.warning("%s: %d consecutive failures, breaker open: probing every "
                                 "%.3g s (up to %.3g s), gap readings meanwhile",
                                 self.name, self.failures, self._backoff, self.backoff_max)
            self.next_probe = now + self._backoff
            detail = f"{e.reason}; breaker open, next probe in {self._backoff:.3g} s"
            self._backoff = min(self._backoff * 2, self.backoff_max)
        else:
            detail = e.reason
        if self.metrics.set_state(self.component, "failing", detail):
            self.log.warning("%s: %s (logged once until it recovers)", self.name, e)

    async def run(self, attempt: Callable[[], Awaitable[list[Reading]]],
                  on_failure: Callable[[DeviceUnreachable], None] | None = None) -> None:
        """Poll forever. ``on_failure`` resets the transport after a failed attempt."""
        loop = asyncio.get_running_loop()
        tick = ticker(loop).at
        slot_s = min(TICK_SLOT_S, self.interval / 20)
        interval = self.interval
        # Spread the devices over the first second (by a hash of the name, so it is stable):
        # hundreds of devices on one period would otherwise all fire at the same instant.
        next_t = loop.time() + self.phase_s
        if self.phase_s:
            await asyncio.sleep(self.phase_s)
        while True:
            raise_if_cancelling()
            ts = self.now_ns()
            now = loop.time()
            if self.breaker_open and now < self.next_probe:
                readings = self.gap(ts)
                self.metrics.inc("polls_breaker_open")
            else:
                self.attempts += 1
                try:
                    readings = await attempt()
                except DeviceUnreachable as e:
                    if on_failure is not None:
                        on_failure(e)
                    self._failed(e, loop.time())
                    readings = self.gap(ts)
                else:
                    if self.latencies is not None:
                        self.latencies.append(loop.time() - now)
                    self._succeeded(readings)
            self.polls += 1
            self.metrics.inc("polls")
            await self.sink(readings)
            del readings  # not held through the sleep: 500 devices x 30 readings otherwise
            next_t += interval
            now = loop.time()
            if now > next_t:
                skipped = int((now - next_t) // interval) + 1
                self.missed += skipped
                self.metrics.inc("polls_missed", skipped)
                next_t += skipped * interval
            if next_t > now:
                await tick(next_t, slot_s)
            else:
                await asyncio.sleep(0)


class LogLimiter:
    """Logs a recurring problem (garbage frames, malformed payloads) at most once per
    ``every_s`` per key, with the count of what was not logged: counted always, logged enough."""

    def __init__(self, log: logging.Logger, every_s: float = 10.0, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.every_s = every_s
        self.monotonic = monotonic
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = self.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            self._quiet[key] = self._quiet.get(key, 0) + 1
            return
        self._last[key] = now
        quiet = self._quiet.pop(key, 0)
        if quiet:
            self.log.warning(msg + " (and %d more since the last report)", *args, quiet)
        else:
            self.log.warning(msg, *args)


class StaleWatch:
    """For push sources (MQTT, HJ 212): a point that got nothing for ``after_s`` gets a NaN
    reading flagged COMM_FAULT, once per ``after_s`` while the silence lasts, so an outage shows
    in the record as a gap and not as nothing."""

    def __init__(self, points: Sequence[PointInfo], after_s: float, source: str, sink: Sink,
                 metrics: Metrics,
                 on_gap: Callable[[list[PointInfo]], None] | None = None, *,
                 now_ns: Callable[[], int] = time.time_ns,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.points = list(points)
        self.on_gap = on_gap
        self.after_s = after_s
        self.source = source
        self.sink = sink
        self.metrics = metrics
        self.now_ns = now_ns  # timestamps of the gap readings
        self.monotonic = monotonic  # silence is measured on this one
        now = monotonic()
        self.last = {p.id: now for p in self.points}
        self.gaps = 0

    def seen(self, point_id: str) -> None:
        if point_id in self.last:
            self.last[point_id] = self.monotonic()

    async def run(self) -> None:
        step = max(0.05, min(self.after_s / 4, 5.0))
        while True:
            await asyncio.sleep(step)
            now = self.monotonic()
            stale = [p for p in self.points if now - self.last[p.id] >= self.after_s]
            if not stale:
                continue
            for p in stale:
                self.last[p.id] = now
            self.gaps += len(stale)
            self.metrics.inc("stale_gap_readings", len(stale))
            if self.on_gap is not None:
                self.on_gap(stale)
            await self.sink(gap_readings(stale, self.now_ns(), self.source))
