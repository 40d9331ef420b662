"""Journal and audit: the control journal (``control.sqlite``, `control._state.ReplayStore`)
and the audit records the control service commits to the outbox.

* `Journal.store()` opens the journal once, recovers the commands journaled but never recorded
  (an ``interrupted`` command record each) and runs the opener's restore hook (the safety
  state: rate windows, rule holds) before anyone else may use it.
* `Journal.later()` hands records to the recorder task (``control:recorder``), which commits
  everything queued in one outbox transaction and then marks the journal entries recorded.
* `Journal.now()` commits one record at once (local rule actions).
* Unauthenticated rejections are audited within a budget (`Journal.may_audit_reject`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from control._clock import SYSTEM_CLOCK, Clock
from control._state import ReplayStore
from mrv_core import AuditRecord, Metrics

log = logging.getLogger("mrv.control")


class AuditSink(Protocol):
    """Where audit records are committed (the outbox)."""

    async def append(self, records: Sequence[AuditRecord], /) -> Sequence[AuditRecord]: ...


def canonical(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def audit_record(category: str, subject: str, payload: dict[str, Any], *,
                 ts_ns: int) -> AuditRecord:
    return AuditRecord(ts_ns=ts_ns, category=category, subject=subject,
                       payload=canonical(payload))


Batch = tuple[list[AuditRecord], list[str]]  # records, journal ids to mark recorded


class Journal:
    def __init__(self, *, path: Path, synchronous: str, outbox: AuditSink, metrics: Metrics,
                 audit_rejects_per_min: int, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.path = path
        self.synchronous = synchronous
        self.outbox = outbox
        self.metrics = metrics
        self.audit_rejects_per_min = audit_rejects_per_min
        #: run once when the journal is opened, after recovery (the safety state's restore)
        self.on_open: Callable[[ReplayStore], Awaitable[None]] | None = None
        self.opened: ReplayStore | None = None
        self._lock = asyncio.Lock()
        self._records: asyncio.Queue[Batch] = asyncio.Queue(10_000)
        self._inflight: Batch | None = None
        self._inflight_committed = False  # the outbox holds them; only the journal mark is due
        self._committing: asyncio.Task[None] | None = None
        self._reject_audits: deque[float] = deque()

    async def store(self) -> ReplayStore:
        async with self._lock:
            if self.opened is None:
                store = await ReplayStore.open(self.path, self.synchronous)
                await self._recover(store)
                if self.on_open is not None:
                    await self.on_open(store)
                self.opened = store
            return self.opened

    async def _recover(self, store: ReplayStore) -> None:
        """Commands journaled but never recorded (the gateway stopped in between)."""
        lost = await store.unrecorded()
        if not lost:
            return
        log.warning("control: %d command(s) were journaled but not recorded before the last "
                    "stop; recording them as interrupted", len(lost))
        await self.outbox.append([AuditRecord(
            ts_ns=self.clock.now_ns(), category="command", subject=cid, payload=canonical({
                "envelope": json.loads(envelope), "verdict": "interrupted", "reason": None,
                "detail": "the gateway stopped after journaling this command and before "
                          "recording its outcome; the write may or may not have happened",
                "received_ms": received_ms})) for cid, envelope, received_ms in lost])
        await store.mark_recorded(cid for cid, _, _ in lost)
        self.metrics.inc("control_commands_recovered", len(lost))

    # -- audit records --------------------------------------------------------------------

    async def now(self, category: str, subject: str, payload: dict[str, Any]) -> None:
        """Commit one record to the outbox now (local rule actions)."""
        await self.outbox.append([audit_record(category, subject, payload,
                                                ts_ns=self.clock.now_ns())])
        self.metrics.inc("control_audit_records")

    async def later(self, records: list[AuditRecord], journal_ids: list[str]) -> None:
        """Hand records to the recorder; ``journal_ids`` are marked recorded after commit."""
        await self._records.put((records, journal_ids))

    def later_nowait(self, record: AuditRecord) -> bool:
        """`later` without waiting (admission); False when the recorder's queue is full."""
        try:
            self._records.put_nowait(([record], []))
        except asyncio.QueueFull:
            return False
        return True

    def may_audit_reject(self) -> bool:
        """Unauthenticated rejections are audited at most ``audit_rejects_per_min`` a minute
        (a flood of junk must not flood the ledger); beyond that they are counted."""
        now = self.clock.monotonic()
        q = self._reject_audits
        while q and now - q[0] > 60:
            q.popleft()
        if len(q) >= self.audit_rejects_per_min:
            self.metrics.inc("control_audit_suppressed")
            return False
        q.append(now)
        return True

    async def flush(self) -> None:
        """Wait until every queued audit record is committed to the outbox."""
        await self._records.join()

    # -- the recorder ---------------------------------------------------------------------

    async def run_recorder(self) -> None:
        while True:
            await self.record_once(block=True)

    async def record_once(self, *, block: bool) -> None:
        """Commit everything queued (and a batch left by a failed attempt) in one transaction."""
        if self._inflight is None:
            items = [await self._records.get()] if block else []
            while not self._records.empty():
                items.append(self._records.get_nowait())
            if not items:
                return
            self._inflight = ([r for recs, _ in items for r in recs],
                              [i for _, ids in items for i in ids])
            for _ in items:
                self._records.task_done()
        # One commit at a time, in its own task: a cancelled recorder (the daemon stopping)
        # must not leave a commit running that ``close`` would then make a second time.
        if self._committing is None:
            self._committing = asyncio.create_task(self._commit_inflight(),
                                                   name="control:recorder-commit")
        task = self._committing
        try:
            await asyncio.shield(task)
        finally:
            if task.done():
                self._committing = None

    async def _commit_inflight(self) -> None:
        assert self._inflight is not None
        records, ids = self._inflight
        if not self._inflight_committed:
            await self.outbox.append(records)
            self._inflight_committed = True
            self.metrics.inc("control_audit_records", len(records))
        await (await self.store()).mark_recorded(ids)
        self._inflight, self._inflight_committed = None, False

    async def close(self) -> None:
        """After the tasks are cancelled: commit what the recorder still holds, close."""
        try:
            while self._inflight is not None or not self._records.empty():
                await self.record_once(block=False)
        except Exception:
            log.exception("control: audit records still queued at stop were not committed; "
                          "the journal recovers the commands at the next start")
        if self.opened is not None:
            await self.opened.close()
            self.opened = None
