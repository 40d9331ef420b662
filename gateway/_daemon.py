"""The daemon: one asyncio process, one TaskGroup, every task named and supervised.

    pollers --list[Reading]--> bounded queue --> writer (clean, commit = accept) --> outbox
    batcher: outbox pending -> signed batch;  uplink: batch -> chain -> confirmed

The queue blocks when full (back-pressure on the pollers), it never drops. A task that fails is
restarted by its supervisor with capped backoff, so one device, the chain or the health endpoint
failing never stops the others. An anchoring alarm (conflict, gap, rejection) stops the uplink
only: acquisition goes on and the backlog stays in the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path

from cleaning import (
    AggregationConfig,
    BatchEmissions,
    Cleaner,
    EmissionPoint,
    ResumeHistory,
    part75_table1,
)
from config import Config, Part75Substitution, contract_address
from control import ControlService, Sign
from drivers import Acknowledging, make_sources
from drivers.modbus import ModbusLinks, ModbusRtuBus
from gateway._aggregator import AggregatedPoint, Aggregator
from gateway._health import serve_health
from ledger_client import (
    Batcher,
    DeadLetter,
    Delivery,
    EvmChain,
    Outbox,
    OutboxError,
    Signer,
    Uplink,
    all_storable,
    dump_record,
    load_tx_key,
    unstorable,
)
from mrv_core import (
    INVALID,
    Metrics,
    Reading,
    cancel_and_wait,
    client_context,
    supervise,
    tune_process,
    untrack_atomic,
)

log = logging.getLogger("mrv.daemon")


def _control_service(cfg: Config, outbox: Outbox, metrics: Metrics, sign: Sign,
                     links: ModbusLinks) -> ControlService:
    """The control service of ``cfg.control``, sharing the pollers' Modbus connections."""
    assert cfg.control is not None
    return ControlService(gateway_id=cfg.gateway.id, config=cfg.control,
                          data_dir=cfg.gateway.data_dir, outbox=outbox, metrics=metrics,
                          sign=sign, reading_points=[p.id for p in cfg.points()], links=links,
                          buses={d.name: d for d in cfg.devices if isinstance(d, ModbusRtuBus)})


class _Acked(list[Reading]):
    """Readings handed over with a callback to run once they are committed (MQTT PUBACK)."""

    on_commit: Callable[[], None]


class DiskBudget:
    """The outbox's disk budget (docs/design/003-outbox-disk-budget.md). Checked before each
    commit, at most once a second: over ``alarm_fraction`` -> alarm; at the budget -> prune
    anchored records if allowed, else hold the writer (back-pressure up to the pollers) until
    there is room. An unanchored record is never deleted."""

    def __init__(self, outbox: Outbox, metrics: Metrics, budget_bytes: int,
                 alarm_fraction: float, prune: bool, archive: Path | None = None,
                 delivered_only: bool = False) -> None:
        #: a portal is configured: prune only batches it has answered (never one not sent yet)
        self.delivered_only = delivered_only
        self.outbox = outbox
        self.metrics = metrics
        self.budget = budget_bytes
        self.alarm_at = int(budget_bytes * alarm_fraction)
        self.prune = prune
        self.archive = archive
        self._checked = 0.0
        self._used = 0

    async def check(self) -> int:
        used = self._used = await self.outbox.used_bytes()
        detail = f"outbox uses {used / 1e6:.1f} of {self.budget / 1e6:.1f} MB"
        if used >= self.alarm_at:
            if self.metrics.set_state("outbox", "alarm", detail):
                log.warning("%s: the chain may be down; see docs/design/003", detail)
        elif self.metrics.set_state("outbox", "ok", detail):
            log.info("%s", detail)
        return used

    async def wait_for_room(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._checked < 1.0 and self._used < self.budget:
            return
        self._checked = loop.time()
        held = False
        while await self.check() >= self.budget:
            if self.prune:
                try:
                    n = await self.outbox.prune_anchored(10, self.archive,
                                                         delivered_only=self.delivered_only)
                except OutboxError as e:  # the archive cannot be written: keep everything
                    n = 0
                    self.metrics.inc("archive_failures")
                    if self.metrics.set_state("outbox:archive", "alarm", str(e)):
                        log.error("%s: nothing is pruned until it can be written", e)
                else:
                    if self.archive is not None and n and self.metrics.set_state(
                            "outbox:archive", "ok", str(self.archive)):
                        log.info("archiving pruned records to %s", self.archive)
                if n:
                    self.metrics.inc("records_pruned", n)
                    log.warning("outbox at its budget: pruned %d anchored record(s)%s", n,
                                f" (archived in {self.archive})" if self.archive else "")
                    continue
            if not held:
                held = True
                self.metrics.inc("budget_holds")
                log.error("outbox at its budget with nothing anchored it may prune: holding"
                          " acquisition (polls are missed, counted) until there is room")
            await asyncio.sleep(1.0)


#: The writer's group commit goes to the outbox in transactions of at most this many readings.
MAX_ROWS_PER_TRANSACTION = 1_000
#: Readings cleaned in one step of the event loop (`Pipeline._clean`; ~0.3-0.8 ms).
CLEAN_SLICE = 1_000

#: Most committed readings read back at start to resume the checks' state (about a second).
RESUME_SCAN_MAX = 1_000_000


async def resume_cleaner(outbox: Outbox, cleaner: Cleaner,
                         max_rows: int = RESUME_SCAN_MAX) -> tuple[int, int]:
    """Give each point's checks the state they had before the gateway stopped, from the
    readings the outbox committed (newest first, until every point has what it needs or
    ``max_rows`` were read: a point not seen in them starts empty, as before).
    Returns ``(points resumed, readings read)``."""
    needs = cleaner.history_needed()
    if not needs:
        return 0, 0
    history = ResumeHistory(needs)
    scanned = 0
    async with contextlib.aclosing(outbox.readings_newest_first()) as pages:
        async for rows in pages:
            for point_id, ts_ns, value, quality in rows:
                history.add(point_id, ts_ns, value, quality)
            scanned += len(rows)
            if history.done or scanned >= max_rows:
                break
    return cleaner.resume(history.history()), scanned


def dead_letter_detail(unreviewed: int, newest: DeadLetter) -> str:
    """The /health detail of the ``dead_letters`` component: names the newest one's source."""
    return (f"{unreviewed} unreviewed dead letter(s); newest (id {newest.id}) from source "
            f"{newest.source}, point {newest.point_id}: {newest.reason[:200]}"
            " (see `mrv-gateway dead-letters`)")


#: Seconds between the INFO lines that show acceptance (readings committed, batches anchored).
ACCEPTANCE_LOG_S = 60.0


async def log_acceptance(metrics: Metrics, interval_s: float) -> None:
    """Every ``interval_s``, one INFO line: what was committed, anchored and quarantined in
    the interval and in total (visible at the default log level)."""
    keys = ("readings_accepted", "records_anchored", "batches_anchored", "dead_letters")
    before = {k: metrics.counters[k] for k in keys}
    while True:
        await asyncio.sleep(interval_s)
        now = {k: metrics.counters[k] for k in keys}
        d = {k: now[k] - before[k] for k in keys}
        log.info("in the last %g s: %d reading(s) committed (%d in all), %d batch(es) anchored"
                 " (%d record(s); %d batches in all), %d dead letter(s) (%d in all)",
                 interval_s, d["readings_accepted"], now["readings_accepted"],
                 d["batches_anchored"], d["records_anchored"], now["batches_anchored"],
                 d["dead_letters"], now["dead_letters"])
        before = now


class Pipeline:
    """The bounded hand-off from pollers to the outbox writer."""

    def __init__(self, outbox: Outbox, cleaner: Cleaner, metrics: Metrics, maxsize: int,
                 on_commit: Callable[[int], None],
                 clock: Callable[[], int] = time.time_ns, commit_interval_s: float = 0.0) -> None:
        self.queue: asyncio.Queue[list[Reading]] = asyncio.Queue(maxsize)
        #: group commit: at most one commit per this many seconds (`outbox.commit_interval_s`)
        self.commit_interval_s = commit_interval_s
        self.clock = clock
        self.outbox = outbox
        self.cleaner = cleaner
        self.metrics = metrics
        self.on_commit = on_commit
        self.busy = False
        self.budget: DiskBudget | None = None
        #: Called with every committed chunk (live telemetry, local rules). Must not block:
        #: a tap that cannot keep up drops its own copy, never the outbox's.
        #: called with each committed chunk and its record signatures (None: not signed)
        self.taps: list[Callable[[list[Reading], list[bytes] | None], None]] = []

    async def submit(self, readings: list[Reading],
                     on_commit: Callable[[], None] | None = None) -> None:
        """Queue ``readings``; ``on_commit`` (optional) is called once they are committed."""
        untrack_atomic(readings)  # frozen, plain values: nothing for the cyclic GC (mrv_core/_gc.py)
        if readings and on_commit is not None:
            acked = _Acked(readings)
            acked.on_commit = on_commit
            await self.queue.put(acked)
        elif readings:
            await self.queue.put(readings)
        elif on_commit is not None:
            on_commit()

    async def run(self, max_chunk: int = 20_000) -> None:
        loop = asyncio.get_running_loop()
        last = -math.inf
        while True:
            chunk = await self.queue.get()
            self.busy = True  # (a stop drains what the writer holds, waiting or not)
            wait = last + self.commit_interval_s - loop.time()
            if wait > 0:  # group commit: what comes meanwhile joins this transaction
                await asyncio.sleep(wait)
            last = loop.time()
            acks = [chunk.on_commit] if isinstance(chunk, _Acked) else []
            parts, n = [chunk], len(chunk)
            while n < max_chunk and not self.queue.empty():
                more = self.queue.get_nowait()
                if isinstance(more, _Acked):
                    acks.append(more.on_commit)
                parts.append(more)
                n += len(more)
                if len(parts) % 64 == 0:  # a long gathering lets a command's step in
                    await asyncio.sleep(0)
            readings = chunk if len(parts) == 1 else list(itertools.chain.from_iterable(parts))
            try:
                await asyncio.shield(self.commit(readings, acks))
            finally:
                self.busy = False

    async def quarantine(self, source: str, where: str, reason: str, raw: bytes) -> None:
        """A message a source refused (it cannot become readings): kept as a dead letter with
        its raw bytes (bounded by the outbox), counted, and ``/health`` degraded naming it."""
        d = await self.outbox.add_dead_letter(source=source, point_id=where, reason=reason,
                                              raw=raw, now_ns=self.clock())
        await self._dead_lettered([d])

    async def _dead_lettered(self, dead: list[DeadLetter]) -> None:
        self.metrics.inc("dead_letters", len(dead))
        for d in dead:
            log.error("quarantined what it cannot store (dead letter %d): source %s, %s: %s",
                      d.id, d.source, d.point_id, d.reason)
        unreviewed = (await self.outbox.stats()).dead_letters_unreviewed
        self.metrics.set_state("dead_letters", "degraded",
                               dead_letter_detail(unreviewed, dead[-1]))

    async def _clean(self, readings: list[Reading], now: int) -> list[Reading]:
        """The cleaner's flags on ``readings``, `CLEAN_SLICE` at a time with a turn of the event
        loop between slices: one call on a group commit's 3,000 readings (2,000 devices) held
        the loop 2-3 ms, and a command's step waited behind it. Slices in order keep each
        point's readings in order, so the flags are the same (the cleaner keeps its state
        between calls)."""
        if len(readings) <= CLEAN_SLICE:
            return self.cleaner.clean(readings, now)
        out: list[Reading] = []
        for i in range(0, len(readings), CLEAN_SLICE):
            if i:
                await asyncio.sleep(0)
            out += self.cleaner.clean(readings[i:i + CLEAN_SLICE], now)
        return out

    async def commit(self, readings: list[Reading],
                     acks: list[Callable[[], None]] | None = None) -> None:
        if self.budget is not None:
            await self.budget.wait_for_room()
        now = self.clock()
        # a reading that cannot be stored is quarantined (dead letter), never retried: the
        # others are committed and every source is acknowledged (docs/outbox.md). Screened
        # first, so the checks never see one; the outbox catches what the screen misses.
        dead: list[DeadLetter] = []
        reasons = [] if all_storable(readings) else [unstorable(r) for r in readings]
        if any(reasons):
            for r, why in zip(readings, reasons, strict=True):
                if why is not None:
                    dead.append(await self.outbox.add_dead_letter(
                        source=str(r.source), point_id=str(r.point_id), reason=why,
                        raw=dump_record(r), now_ns=now))
            readings = [r for r, why in zip(readings, reasons, strict=True) if why is None]
        try:
            cleaned = await self._clean(readings, now)
        except Exception as e:  # a bug of the checks: keep the readings as they came, loudly
            log.exception("cleaning failed: %d reading(s) committed without the checks' flags",
                          len(readings))
            self.metrics.inc("cleaning_failures")
            self.metrics.set_state("cleaning", "degraded",
                                   f"checks failed on a chunk (committed unchecked): {e}"[:300])
            cleaned = readings
        # In transactions of at most MAX_ROWS_PER_TRANSACTION: between them the outbox is free
        # for a control command's audit records and the uplink's bookkeeping, which would
        # otherwise wait for the whole group commit (3,000 readings at 2,000 devices).
        committed: list[Reading] = []
        sigs: list[bytes] | None = None
        step = MAX_ROWS_PER_TRANSACTION
        # A group of several transactions has every one built off the event loop, the last,
        # partial one too (up to 4-5 ms of hashing otherwise, about 5 times a second at 2,000
        # devices, that commands waited behind); a smaller group the outbox decides by size.
        off_loop = True if len(cleaned) > step else None
        for i in range(0, len(cleaned), step):
            c, s, late = await self.outbox.append_quarantining(cleaned[i:i + step], now_ns=now,
                                                               off_loop=off_loop)
            committed += c
            if s is not None:
                sigs = s if sigs is None else sigs + s
            dead += late
        self.metrics.inc("readings_accepted", len(committed))
        if dead:
            await self._dead_lettered(dead)
        self.on_commit(len(committed))
        for ack in acks or ():  # after the commit: the acknowledgement point (docs/drivers.md)
            try:
                ack()
            except Exception:
                log.exception("acknowledging committed readings failed")
        for tap in self.taps:
            tap(committed, sigs)


async def run_daemon(cfg: Config, *, stop: asyncio.Event | None = None,
                     metrics: Metrics | None = None, freeze_gc: bool = False,
                     acceptance_log_s: float = ACCEPTANCE_LOG_S) -> None:
    """Run the gateway until ``stop`` is set. ``freeze_gc`` (the ``run`` command: one daemon
    per process): once started, move every object made so far (imports, config, pollers) out
    of the cyclic garbage collector's reach, so its full collections scan only what the
    running daemon makes; they took about 9 % of the CPU at 500 devices. Then the collector's
    thresholds are raised to `GC_THRESHOLDS` and the GIL's switch interval set to
    `SWITCH_INTERVAL_S` (both process-wide: not for a daemon run inside another program).
    ``acceptance_log_s``: seconds between the INFO lines of `log_acceptance`."""
    stop = stop or asyncio.Event()
    metrics = metrics or Metrics()
    signer = Signer.load(cfg.gateway.signing_key)
    account = load_tx_key(cfg.chain.account_key)
    outbox = await Outbox.open(cfg.outbox_path(), cfg.gateway.id, synchronous=cfg.outbox.synchronous,
                               sign_records=signer.sign if cfg.gateway.sign_records else None)
    chain = EvmChain(cfg.chain.rpc_url, contract_address=contract_address(cfg),
                     request_timeout_s=cfg.chain.request_timeout_s,
                     gas_margin=cfg.chain.gas_margin, gas_price_wei=cfg.chain.gas_price_wei)
    wake_uplink = asyncio.Event()
    delivery = _delivery(cfg, outbox, metrics)
    co2e = await _batch_emissions(cfg, outbox)
    batcher = Batcher(outbox, signer.sign, interval_s=cfg.batching.interval_s,
                      max_records=cfg.batching.max_records, metrics=metrics,
                      wake_uplink=wake_uplink, co2e=co2e,
                      wake_delivery=delivery.wake if delivery is not None else None)
    uplink = Uplink(outbox, chain, account, metrics=metrics,
                    confirmations=cfg.chain.confirmations,
                    receipt_timeout_s=cfg.chain.receipt_timeout_s,
                    retry_initial_s=cfg.chain.retry.initial_s, retry_max_s=cfg.chain.retry.max_s,
                    wake=wake_uplink, signing_key=signer.public_key)
    pending = await outbox.pending_count()
    st = await outbox.stats()
    if st.dead_letters_unreviewed:  # degraded until an operator has reviewed them
        newest = (await outbox.dead_letters(unreviewed_only=True, limit=1))[0]
        metrics.set_state("dead_letters", "degraded",
                          dead_letter_detail(st.dead_letters_unreviewed, newest))
        log.warning("the outbox holds %d unreviewed dead letter(s): see `mrv-gateway "
                    "dead-letters`", st.dead_letters_unreviewed)

    def on_commit(n: int) -> None:
        nonlocal pending
        pending += n
        if pending >= cfg.batching.max_records:
            pending = 0
            batcher.kick.set()

    cleaner = Cleaner({p.id: p.checks for p in cfg.points() if p.checks})
    resumed, scanned = await resume_cleaner(outbox, cleaner)
    if resumed:
        log.info("cleaning: the checks of %d point(s) resume their state from %d committed "
                 "reading(s)", resumed, scanned)
    pipeline = Pipeline(outbox, cleaner, metrics, cfg.outbox.queue_batches, on_commit,
                        commit_interval_s=cfg.outbox.commit_interval_s)
    if cfg.outbox.disk_budget_mb is not None:
        pipeline.budget = DiskBudget(outbox, metrics, int(cfg.outbox.disk_budget_mb * 1e6),
                                     cfg.outbox.budget_alarm_fraction, cfg.outbox.prune_anchored,
                                     cfg.archive_path(), delivered_only=cfg.portal is not None)
    links = ModbusLinks()  # one Modbus connection per device, shared by polls and control
    pollers = make_sources(cfg.devices, Acknowledging(pipeline.submit), metrics, links,
                           quarantine=pipeline.quarantine)
    aggregator = await _aggregator(cfg, outbox, metrics)
    ctl = None
    if cfg.control is not None:  # signed commands and local rules (control/, docs/control.md)
        try:
            ctl = _control_service(cfg, outbox, metrics, signer.sign, links)
            pipeline.taps.append(ctl.on_readings)
        except Exception as e:  # control never stops acquisition or anchoring
            log.exception("control disabled: it failed to start")
            metrics.set_state("control", "alarm", f"failed to start: {e}")
    log.info("gateway %s starting: %d device(s), outbox %s, chain %s", cfg.gateway.id,
             len(pollers), cfg.outbox_path(), cfg.chain.rpc_url)
    if freeze_gc:
        log.info("%d startup objects frozen out of the cyclic garbage collector's scans",
                 tune_process())
    try:
        async with asyncio.TaskGroup() as tg:
            pollers_tasks = [tg.create_task(supervise(f"source:{p.name}", p.run, metrics),
                                            name=f"source:{p.name}") for p in pollers]
            ctl_tasks = [tg.create_task(supervise(n, f, metrics), name=n)
                         for n, f in (ctl.tasks() if ctl is not None else [])]
            writer = tg.create_task(supervise("writer", pipeline.run, metrics), name="writer")
            uplink_task = tg.create_task(supervise("uplink", uplink.run, metrics), name="uplink")
            if aggregator is not None:
                pollers_tasks.append(tg.create_task(
                    supervise("aggregator", aggregator.run, metrics), name="aggregator"))
            batcher_task = tg.create_task(supervise("batcher", batcher.run, metrics),
                                          name="batcher")
            workers = [uplink_task, tg.create_task(
                supervise("acceptance-log", lambda: log_acceptance(metrics, acceptance_log_s),
                          metrics), name="acceptance-log")]
            delivery_task: asyncio.Task[None] | None = None
            if delivery is not None:  # batches to the portal: its own task, never waited for
                delivery_task = tg.create_task(supervise("delivery", delivery.run, metrics),
                                               name="delivery")
                workers.append(delivery_task)
            if cfg.health.listen:
                workers.append(tg.create_task(
                    supervise("health", lambda: serve_health(cfg.health.listen or "", metrics,
                                                             outbox), metrics), name="health"))
            await stop.wait()
            log.info("stopping: committing what the pollers handed over")
            # Sources that acknowledge after the commit (MQTT) take no more messages but stay
            # connected through the drain, so what it commits is acknowledged too and the
            # broker does not send it again on the next start.
            acking = [t for p, t in zip(pollers, pollers_tasks, strict=False) if _pause(p)]
            await cancel_and_wait([t for t in pollers_tasks if t not in acking] + ctl_tasks)
            # (bounded: a writer held by a full disk budget cannot commit; what it holds was
            # never accepted, and MQTT sources redeliver what was not acknowledged)
            deadline = asyncio.get_running_loop().time() + max(cfg.outbox.shutdown_drain_s, 1)
            while ((pipeline.busy or not pipeline.queue.empty())
                   and asyncio.get_running_loop().time() < deadline):
                await asyncio.sleep(0.01)
            await cancel_and_wait(acking)  # a graceful disconnect sends their PUBACKs first
            await cancel_and_wait([writer, batcher_task])
            await batcher.cut_all()
            await _drain(outbox, cfg.outbox.shutdown_drain_s, uplink_task)
            if delivery is not None and delivery_task is not None:
                await _drain_delivery(outbox, delivery, cfg.outbox.shutdown_drain_s,
                                      delivery_task, metrics)
            await cancel_and_wait(workers)
    finally:
        if ctl is not None:
            await ctl.aclose()
        await chain.close()
        await outbox.close()
        log.info("gateway %s stopped", cfg.gateway.id)


def _delivery(cfg: Config, outbox: Outbox, metrics: Metrics) -> Delivery | None:
    """The delivery of batches to ``cfg.portal`` (None: no portal configured)."""
    p = cfg.portal
    if p is None:
        return None
    return Delivery(outbox, p.url, metrics=metrics,
                    verify=client_context(p.tls) if p.tls is not None else True,
                    timeout_s=p.timeout_s, retry_initial_s=p.retry.initial_s,
                    retry_max_s=p.retry.max_s, max_body_bytes=p.max_body_bytes)


def _pause(source: object) -> bool:
    """Pause a source that acknowledges after the commit (it has ``pause``); True if it did."""
    pause = getattr(source, "pause", None)
    if pause is None:
        return False
    pause()
    return True


async def _aggregator(cfg: Config, outbox: Outbox, metrics: Metrics) -> Aggregator | None:
    if not cfg.aggregation.points:
        return None
    await outbox.ensure_point_index()
    units = {p.id: p.unit for p in cfg.points()}
    points = []
    for a in cfg.aggregation.points:
        sub = a.substitution
        policy = (part75_table1(sub.part75_max_potential, lookback_hours=sub.lookback_hours)
                  if isinstance(sub, Part75Substitution) else sub)
        rule = AggregationConfig(expected_per_minute=a.expected_per_minute,
                                 min_minute_fraction=a.min_minute_fraction,
                                 min_valid_minutes=a.min_valid_minutes)
        points.append(AggregatedPoint(a.point, units[a.point], rule, policy))
    return Aggregator(outbox, points, metrics, grace_s=cfg.aggregation.grace_s)


async def _batch_emissions(cfg: Config, outbox: Outbox) -> BatchEmissions | None:
    """The CO2e-per-scope callback of the batch headers, seeded with each emissions point's
    last valid value in the batches already cut (so a restart continues where it stopped)."""
    points = [EmissionPoint(p.id, p.unit, p.emissions) for p in cfg.points() if p.emissions]
    if not points:
        return None
    em = BatchEmissions(points)
    last = await outbox.last_batch()
    if last is not None:
        em.seed(await outbox.last_valid_values([p.point_id for p in points],
                                               last.header.last_record_seq, INVALID))
    return em


async def _drain(outbox: Outbox, budget_s: float, uplink_task: asyncio.Task[None]) -> None:
    """Give the uplink up to ``budget_s`` to anchor what is left; what is not stays queued."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    while loop.time() < deadline and not uplink_task.done():
        if await outbox.oldest_unconfirmed() is None:
            return
        await asyncio.sleep(0.05)
    left = await outbox.stats()
    if left.batches_by_state["built"] or left.batches_by_state["submitted"]:
        log.warning("stopping with %s batch(es) not yet anchored: they stay in the outbox",
                    left.batches_by_state["built"] + left.batches_by_state["submitted"])


async def _drain_delivery(outbox: Outbox, delivery: Delivery, budget_s: float,
                          task: asyncio.Task[None], metrics: Metrics) -> None:
    """Give the delivery up to ``budget_s`` to hand the portal what was anchored last, while
    the portal answers (a portal that is down is not waited for); what is left stays in the
    outbox and goes at the next start."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    delivery.wake.set()
    while loop.time() < deadline and not task.done():
        if not await outbox.undelivered(1):
            return
        comp = metrics.components.get("delivery")
        if comp is not None and comp.state == "failing":
            break
        await asyncio.sleep(0.05)
    left = (await outbox.delivery_stats()).backlog
    if left:
        log.warning("stopping with %d batch(es) not yet delivered to the portal: they stay in "
                    "the outbox", left)


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
