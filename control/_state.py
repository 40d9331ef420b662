"""The control journal: replay cache, issuer sequences and the write-ahead record of every
authentic command, in ``<data_dir>/control.sqlite`` (SQLite WAL, ``synchronous=FULL`` unless
``control.journal_synchronous`` says NORMAL).

A command that is authentic, timely and new is committed here (id, issuer, seq, the envelope)
before anything is read from or written to the plant: it is the one durable step on the way to
the ack. Its audit records follow in the outbox; once they are committed there the entry is
marked ``recorded``. An entry still unrecorded at start (the gateway stopped in between) is
recovered into the outbox as an ``interrupted`` command record.

The journal also holds the safety state that must outlive the process: each local rule's hold
on a point (``rule_holds``: while a leak lasts, no remote command may close the vent, also
after a restart) and the time of every remote write (``point_writes``, for the rate limit's
window). The service restores both before it subscribes to the command topic.

An id is kept until its ``expires_at`` plus the allowed skew (and until it is recorded): after
that the time window refuses the command anyway. The in-memory copies (``seen``,
``last_seq``) are what the pure policy reads.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Iterable, Sequence
from pathlib import Path

import aiosqlite

from mrv_core import open_wal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen_commands (
    id            TEXT PRIMARY KEY,
    issuer        TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    keep_until_ms INTEGER NOT NULL,
    received_ms   INTEGER NOT NULL,
    envelope      TEXT NOT NULL,
    recorded      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS seen_keep ON seen_commands(keep_until_ms);
CREATE INDEX IF NOT EXISTS seen_unrecorded ON seen_commands(recorded) WHERE recorded = 0;
CREATE TABLE IF NOT EXISTS issuer_seq (
    issuer TEXT PRIMARY KEY,
    seq    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rule_holds (
    point    TEXT PRIMARY KEY,
    rule     TEXT NOT NULL,
    forbid   TEXT NOT NULL,
    detail   TEXT NOT NULL,
    since_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS point_writes (
    point TEXT NOT NULL,
    ts_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS point_writes_ts ON point_writes(ts_ms);
-- A command's write-ahead entry as one statement (so one round trip to the database's thread,
-- atomic on its own): the id and envelope, and the issuer's sequence raised when advance_seq.
CREATE VIEW IF NOT EXISTS command_entry AS
    SELECT id, issuer, seq, keep_until_ms, received_ms, envelope, 0 AS advance_seq
    FROM seen_commands;
CREATE TRIGGER IF NOT EXISTS command_entry_insert INSTEAD OF INSERT ON command_entry
BEGIN
    INSERT INTO seen_commands(id, issuer, seq, keep_until_ms, received_ms, envelope)
        VALUES (NEW.id, NEW.issuer, NEW.seq, NEW.keep_until_ms, NEW.received_ms, NEW.envelope);
    INSERT INTO issuer_seq(issuer, seq) SELECT NEW.issuer, NEW.seq WHERE NEW.advance_seq
        ON CONFLICT(issuer) DO UPDATE SET seq = MAX(seq, excluded.seq);
END;
"""


def _quick_connection(path: Path) -> sqlite3.Connection:
    """A second connection to the journal for the writes that need no fsync of their own (the
    write notes, the recorded marks), used on the event loop itself: an insert into the WAL
    without fsync takes tens of microseconds, where a trip through aiosqlite's thread cost a
    command two GIL hand-offs and a turn of a loop busy with thousands of polls. It never
    checkpoints (``wal_autocheckpoint=0``: checkpoints and their fsync stay with the main
    connection, in its thread) and never meets a lock: the store's lock keeps the two
    connections' writes apart."""
    quick = sqlite3.connect(path, isolation_level=None)
    try:
        quick.execute("PRAGMA synchronous=NORMAL")
        quick.execute("PRAGMA wal_autocheckpoint=0")
        quick.execute("PRAGMA busy_timeout=1000")
    except BaseException:
        quick.close()
        raise
    return quick


class ReplayStore:
    def __init__(self, db: aiosqlite.Connection, quick: sqlite3.Connection) -> None:
        self._db = db
        self._quick = quick  # the fsync-free writes, on the event loop (`_quick_connection`)
        self.seen: dict[str, int] = {}  # id -> keep until (ms)
        self.last_seq: dict[str, int] = {}
        self.holds: dict[str, tuple[str, str, str]] = {}  # point -> (rule, forbid, detail)
        self.writes: dict[str, list[int]] = {}  # point -> remote write times (ms), ascending
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, synchronous: str = "FULL") -> ReplayStore:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        db = await open_wal(path, synchronous, _SCHEMA)
        quick: sqlite3.Connection | None = None
        try:
            quick = _quick_connection(path)
            store = cls(db, quick)
            for cid, keep in await db.execute_fetchall(
                    "SELECT id, keep_until_ms FROM seen_commands"):
                store.seen[str(cid)] = int(keep)
            for issuer, seq in await db.execute_fetchall("SELECT issuer, seq FROM issuer_seq"):
                store.last_seq[str(issuer)] = int(seq)
            for point, rule, forbid, detail in await db.execute_fetchall(
                    "SELECT point, rule, forbid, detail FROM rule_holds"):
                store.holds[str(point)] = (str(rule), str(forbid), str(detail))
            for point, ts in await db.execute_fetchall(
                    "SELECT point, ts_ms FROM point_writes ORDER BY ts_ms"):
                store.writes.setdefault(str(point), []).append(int(ts))
        except BaseException:
            if quick is not None:
                quick.close()
            await db.close()
            raise
        return store

    async def close(self) -> None:
        async with self._lock:
            self._quick.close()  # (a write after this raises sqlite3.ProgrammingError)
            await self._db.close()

    async def _transaction(self, statements: Sequence[tuple[str, Sequence[object]]]) -> None:
        async with self._lock:
            if len(statements) == 1:  # one statement is a transaction of its own (autocommit)
                sql, params = statements[0]
                await self._db.execute(sql, params)
                return
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    await self._db.execute(sql, params)
                await self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    await self._db.execute("ROLLBACK")
                raise

    def _write(self, statements: Sequence[tuple[str, Sequence[object]]]) -> Awaitable[None]:
        """Durable (the journal's fsync level). A cancelled caller never leaves half a
        transaction (or a masked cancellation)."""
        return asyncio.shield(self._transaction(statements))

    async def _write_quick(self, sql: str, params: Sequence[object]) -> None:
        """One statement committed without an fsync of its own: it survives a crash of the
        process; the next durable commit syncs it (WAL)."""
        async with self._lock:
            self._quick.execute(sql, params)  # on the loop: no fsync, tens of µs

    async def record(self, *, command_id: str, issuer: str, seq: int, keep_until_ms: int,
                     now_ms: int, advance_seq: bool, envelope: str) -> None:
        """Commit the id, the envelope (and the issuer's new sequence number) before acting:
        one statement (the ``command_entry`` view's trigger writes both tables), durable."""
        await self._write([(
            "INSERT INTO command_entry(id, issuer, seq, keep_until_ms, received_ms, envelope,"
            " advance_seq) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (command_id, issuer, seq, keep_until_ms, now_ms, envelope, int(advance_seq)))])
        self.seen[command_id] = keep_until_ms
        if advance_seq:
            self.last_seq[issuer] = max(seq, self.last_seq.get(issuer, seq))

    async def set_hold(self, point: str, rule: str, forbid: str, detail: str,
                       now_ms: int) -> None:
        """A local rule holds ``point`` (durable: it must survive a restart)."""
        await self._write([(
            "INSERT INTO rule_holds(point, rule, forbid, detail, since_ms) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT(point) DO UPDATE SET rule = excluded.rule, forbid = excluded.forbid, "
            "detail = excluded.detail, since_ms = excluded.since_ms",
            (point, rule, forbid, detail, now_ms))])
        self.holds[point] = (rule, forbid, detail)

    async def clear_hold(self, point: str) -> None:
        await self._write([("DELETE FROM rule_holds WHERE point = ?", (point,))])
        self.holds.pop(point, None)

    async def note_write(self, point: str, ts_ms: int) -> None:
        """A remote write to ``point`` is about to happen: committed before the write, without
        an fsync of its own (that would double the fsyncs on a command's path). It survives a
        crash of the process; the next durable commit (the next command's journal entry, a
        hold) syncs it, so a power cut can forget at most the writes since then."""
        await self._write_quick("INSERT INTO point_writes(point, ts_ms) VALUES (?, ?)",
                                (point, ts_ms))
        self.writes.setdefault(point, []).append(ts_ms)

    async def purge_writes(self, before_ms: int) -> int:
        """Forget write times older than every rate window."""
        async with self._lock:
            cur = await self._db.execute("DELETE FROM point_writes WHERE ts_ms < ?",
                                         (before_ms,))
            n = cur.rowcount
        for point, ts in list(self.writes.items()):
            kept = [t for t in ts if t >= before_ms]
            if kept:
                self.writes[point] = kept
            else:
                del self.writes[point]
        return int(n)

    async def mark_recorded(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if not ids:
            return
        # Not fsynced: a mark lost in a power cut only makes the recovery record the command a
        # second time (as interrupted), and it keeps the fsync off the next command's path.
        for i in range(0, len(ids), 500):  # (SQLite's limit on bound values is 999 or more)
            part = ids[i:i + 500]
            await self._write_quick(f"UPDATE seen_commands SET recorded = 1 WHERE id IN "
                                    f"({', '.join('?' * len(part))})", part)

    async def unrecorded(self) -> list[tuple[str, str, int]]:
        """(id, envelope, received_ms) of commands whose audit records never reached the
        outbox."""
        async with self._lock:
            rows = await self._db.execute_fetchall(
                "SELECT id, envelope, received_ms FROM seen_commands WHERE recorded = 0 "
                "ORDER BY received_ms, id")
        return [(str(i), str(e), int(t)) for i, e, t in rows]

    async def purge(self, now_ms: int) -> int:
        """Forget recorded ids whose command can no longer pass the time window."""
        async with self._lock:
            cur = await self._db.execute(
                "DELETE FROM seen_commands WHERE keep_until_ms < ? AND recorded = 1", (now_ms,))
            n = cur.rowcount
            rows = await self._db.execute_fetchall("SELECT id FROM seen_commands")
        # NB: the in-memory view follows the table, so an unrecorded id stays "seen"
        keep = {str(r[0]) for r in rows}
        for cid in [c for c in self.seen if c not in keep]:
            del self.seen[cid]
        return int(n)
