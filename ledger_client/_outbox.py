"""The crash-safe outbox: SQLite in WAL mode, through aiosqlite.

A reading is *accepted* when `Outbox.append` returns: its transaction is committed. Records get a
gapless per-gateway ``seq`` from 1. Batches take the next contiguous run of records in one
transaction, so a record's state is derived, never stored twice:

- pending:   ``seq`` > the last batched record seq
- batched:   inside a batch whose state is BUILT
- submitted: inside a batch whose state is SUBMITTED (tx signed, stored, sent)
- confirmed: inside a batch whose state is CONFIRMED (anchored with enough confirmations)

A record that cannot be stored (a field SQLite or the record encoding cannot hold, e.g. a
timestamp beyond int64) is *quarantined*: `append_quarantining` commits the others and puts each
such record, with a bounded dump of its fields and the reason, in the ``dead_letters`` table. A
dead letter gets no record seq (the seqs stay gapless). See docs/outbox.md.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import functools
import itertools
import json
import math
import sqlite3
import struct
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import aiosqlite

from ledger_client._errors import OutboxError
from ledger_client._format import (
    COMPILED,
    KIND_AUDIT,
    KIND_DERIVED,
    KIND_READING,
    RECORD_SIG_TAG,
    ZERO32,
    BatchHeader,
    build_header,
    commit_readings,
    encode_reading,
    encode_record,
    leaf_of_body,
    reading_insert_params,
)
from mrv_core import (
    AuditRecord,
    DerivedRecord,
    Reading,
    Record,
    committed_reading,
    failpoint,
    open_wal,
    untrack_atomic,
)

if TYPE_CHECKING:
    import numpy as np

#: 1: records, batches, meta. 2: + dead_letters. 3: + deliveries (an outbox of version 1 or 2
#: is upgraded in place on open).
SCHEMA_VERSION = 3
#: Most bytes of a dead letter's ``raw`` column; a longer dump is cut (``raw_len`` keeps its size).
DEAD_LETTER_RAW_MAX = 4096
#: Errors that building or inserting one record raises when a field cannot be stored (the
#: record's fault, not the database's): such a record is quarantined, never retried. Database
#: errors (disk full, I/O) are not among them: they fail the commit, which is retried.
POISON_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, OverflowError,
                                              struct.error, sqlite3.DataError,
                                              sqlite3.ProgrammingError)


class UnstorableRecord(ValueError):
    """Building a record's row or leaf failed (a pure step: the record's own fault)."""
#: Most (seq, ts, leaf) keys of pending records kept in memory for the next batches; beyond
#: this (batching far behind), batches read them back from the database.
KEY_CACHE_MAX = 100_000
#: Commits of at least this many records build their leaves and rows in a worker thread when
#: the compiled path is active (it hashes with the GIL released, so the event loop is not held
#: up for the ~2 us a reading: 6 ms for the 3,000 readings of a 50 ms group commit at 2,000
#: devices). Smaller ones (500 devices: ~750) stay on the loop: the hop costs more CPU than it
#: saves (about 3 % of the daemon's at 500 devices with the threshold at 256, paired A/B). A
#: caller that commits a large group in several transactions says so (``off_loop``), so that
#: the last, partial one goes off the loop too.
COMMIT_IN_THREAD_MIN = 1_000
#: Batches of at least this many records build their header in a worker thread.
HEADER_IN_THREAD_MIN = 5_000
#: A batch's keys are copied (`_take_keys`), dropped and freed this many at a time (`_release_batch_keys`).
KEY_RELEASE_CHUNK = 4_096
#: Record signatures (``sign_records``) for at most this many records in one commit are made on
#: the event loop; more go to a worker thread, so polling and commands are not held up.
SIGN_ON_LOOP_MAX = 16
T = TypeVar("T")
R = TypeVar("R", bound=Record)

BUILT, SUBMITTED, CONFIRMED = 0, 1, 2
STATE_NAMES = {BUILT: "built", SUBMITTED: "submitted", CONFIRMED: "confirmed"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq       INTEGER PRIMARY KEY,
    kind      INTEGER NOT NULL,
    point_id  TEXT NOT NULL,
    ts_ns     INTEGER NOT NULL,
    value     REAL,               -- NULL stands for NaN
    unit      TEXT NOT NULL,
    quality   INTEGER NOT NULL,
    source    TEXT NOT NULL,
    extra     TEXT,               -- kind-specific fields as JSON (derived, audit)
    leaf      BLOB NOT NULL,
    sig       BLOB                -- Ed25519 record signature (gateway.sign_records), else NULL
);
CREATE TABLE IF NOT EXISTS batches (
    seq               INTEGER PRIMARY KEY,
    prev_hash         BLOB NOT NULL,
    root              BLOB NOT NULL,
    count             INTEGER NOT NULL,
    first_record_seq  INTEGER NOT NULL,
    last_record_seq   INTEGER NOT NULL UNIQUE,
    first_ts_ns       INTEGER NOT NULL,
    last_ts_ns        INTEGER NOT NULL,
    co2e_scope1_g     INTEGER NOT NULL,
    co2e_scope2_g     INTEGER NOT NULL,
    co2e_scope3_g     INTEGER NOT NULL,
    header_hash       BLOB NOT NULL,
    signature         BLOB NOT NULL,
    state             INTEGER NOT NULL,
    created_ns        INTEGER NOT NULL,
    tx_hash           BLOB,
    raw_tx            BLOB,
    nonce             INTEGER,
    block_number      INTEGER,
    confirmed_ns      INTEGER
);
CREATE INDEX IF NOT EXISTS batches_state ON batches(state, seq);
CREATE TABLE IF NOT EXISTS dead_letters (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    quarantined_ns INTEGER NOT NULL,  -- when it was quarantined (gateway clock)
    source       TEXT NOT NULL,       -- e.g. mqtt:plant-sensors
    point_id     TEXT NOT NULL,
    reason       TEXT NOT NULL,       -- the error that stopped its commit
    raw          BLOB NOT NULL,       -- at most DEAD_LETTER_RAW_MAX bytes of the dump
    raw_len      INTEGER NOT NULL,    -- the dump's full length
    reviewed_ns  INTEGER              -- set by `mrv-gateway dead-letters --reviewed`, else NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    batch_seq    INTEGER PRIMARY KEY, -- the batch delivered to the portal (once)
    delivered_ns INTEGER NOT NULL,    -- gateway clock when the portal's answer was recorded
    status       TEXT NOT NULL,       -- delivered | refused | unavailable
    detail       TEXT                 -- the portal's answer (refused), or why it was not sent
);
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredBatch:
    header: BatchHeader
    header_hash: bytes
    signature: bytes
    state: int
    tx_hash: bytes | None
    raw_tx: bytes | None
    nonce: int | None
    block_number: int | None

    @property
    def seq(self) -> int:
        return self.header.seq


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxStats:
    records: int
    pending: int
    batches: int
    batches_by_state: dict[str, int]
    last_confirmed_batch: int
    dead_letters: int = 0
    dead_letters_unreviewed: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryStats:
    """Delivery of batches to the portal (``deliveries`` table): batches not yet answered
    (``backlog``), delivered, refused by the portal, and not sendable (``unavailable``)."""

    backlog: int
    delivered: int
    refused: int
    unavailable: int
    last_delivered_batch: int


#: Statuses of the ``deliveries`` table.
DELIVERED, REFUSED, UNAVAILABLE = "delivered", "refused", "unavailable"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """A record (or message) that could not be committed, kept for an operator."""

    id: int
    quarantined_ns: int
    source: str
    point_id: str
    reason: str
    raw: bytes
    raw_len: int
    reviewed_ns: int | None = None


_I64_MIN, _I64_MAX, _U32_MAX = -(2**63), 2**63 - 1, 2**32 - 1


def _bad_text(x: object) -> bool:
    if type(x) is not str:
        return True
    if x.isascii():
        return False
    try:
        x.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def unstorable(r: Reading) -> str | None:
    """Why a reading cannot become a record (its fields' types and ranges, as the record
    format and SQLite need them), or None. Cheap: the writer screens every reading with it
    before cleaning, so a bad one never reaches the checks or a commit."""
    t, v, q, p, u, s = r.ts_ns, r.value, r.quality, r.point_id, r.unit, r.source
    if (type(t) is int and _I64_MIN <= t <= _I64_MAX and type(q) is int and 0 <= q <= _U32_MAX
            and isinstance(v, float) and type(p) is str and p.isascii() and type(u) is str
            and u.isascii() and type(s) is str and s.isascii()):
        return None  # the fast path: nearly every reading
    if type(t) is not int or not _I64_MIN <= t <= _I64_MAX:
        return f"ts_ns {_safe_str(repr(t))[:60]} is not an int64 timestamp"
    if not isinstance(v, float) and (type(v) is not int or not -(2**1023) <= v <= 2**1023):
        return f"value {_safe_str(repr(v))[:60]} is not a binary64 number"
    if type(q) is not int or not 0 <= q <= _U32_MAX:
        return f"quality {_safe_str(repr(q))[:60]} is not a uint32"
    for name, x in (("point_id", p), ("unit", u), ("source", s)):
        if _bad_text(x):
            return f"{name} {_safe_str(repr(x))[:60]} is not valid text"
    return None


def _safe_str(x: object) -> str:
    """``x`` as text that always encodes (lone surrogates escaped)."""
    return str(x).encode("utf-8", "backslashreplace").decode("utf-8")


def dump_record(r: object) -> bytes:
    """A faithful, always-encodable dump of a record's fields (JSON; numbers written as Python
    writes them, so an int beyond 64 bits or a NaN is shown as it came)."""
    fields = getattr(r, "__dataclass_fields__", None)
    if fields is None:
        return _safe_str(repr(r)).encode()
    out = {name: _safe_str(repr(getattr(r, name, None))) for name in fields}
    return json.dumps({"type": type(r).__name__, **out}, separators=(",", ":"),
                      ensure_ascii=False).encode()


_RECORD_COLS = "seq, kind, point_id, ts_ns, value, unit, quality, source, extra"
_INSERT = f"INSERT INTO records({_RECORD_COLS}, leaf) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_SIGNED = (f"INSERT INTO records({_RECORD_COLS}, leaf, sig)"
                  " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


#: Rows per INSERT statement of a commit (11 columns signed: 550 parameters of SQLite's 32,766).
ROWS_PER_INSERT = 50


@functools.cache
def _insert_many(k: int, signed: bool) -> str:
    """``INSERT INTO records(...) VALUES (...), (...), ...`` for ``k`` rows."""
    one = "(" + ", ".join("?" * (11 if signed else 10)) + ")"
    cols = f"{_RECORD_COLS}, leaf, sig" if signed else f"{_RECORD_COLS}, leaf"
    return f"INSERT INTO records({cols}) VALUES " + ", ".join([one] * k)


#: The columns of a reading row that are bound; kind (1) and extra (NULL) are literals.
_READING_BOUND = (0, 2, 3, 4, 5, 6, 7, 9)


@functools.cache
def _insert_readings(k: int, signed: bool) -> str:
    """The insert of ``k`` reading rows with kind and extra as literals: 8 parameters a row
    (9 signed) instead of 10 (11). Binding was about a quarter of SQLite's cost of a row."""
    one = f"(?, {KIND_READING}, ?, ?, ?, ?, ?, ?, NULL, ?{', ?' if signed else ''})"
    cols = f"{_RECORD_COLS}, leaf, sig" if signed else f"{_RECORD_COLS}, leaf"
    return f"INSERT INTO records({cols}) VALUES " + ", ".join([one] * k)


def _reading_insert_params_py(rows: list[tuple[object, ...]], k: int
                              ) -> list[list[object]] | None:
    """`_format.reading_insert_params` in Python (the reference its tests compare with)."""
    if not rows:
        return []
    width = len(rows[0]) if type(rows[0]) is tuple else 0
    if width not in (10, 11):
        return None
    for r in rows:
        if (type(r) is not tuple or len(r) != width or r[8] is not None
                or type(r[1]) is not int or r[1] != KIND_READING):
            return None
    cols = _READING_BOUND + ((10,) if width == 11 else ())
    return [[_blob(r[c]) if c >= 9 else r[c] for r in rows[i:i + k] for c in cols]
            for i in range(0, len(rows), k)]


def _blob(v: object) -> object:
    """A bytes value as a bytearray (the same BLOB): Python's sqlite3 binds a bytearray as it
    is, but looks bytes up in its adapter registry first, about 0.5 us a row."""
    return bytearray(v) if type(v) is bytes else v


def _row_to_record(gateway_id: str, row: Any) -> Record:
    """Rebuild a record from its row (columns as in ``_RECORD_COLS``)."""
    seq, kind, point_id, ts_ns, value, unit, quality, source, extra = row[:9]
    v = math.nan if value is None else float(value)
    if kind == KIND_READING:
        return Reading(gateway_id=gateway_id, seq=int(seq), point_id=str(point_id),
                       ts_ns=int(ts_ns), value=v, unit=str(unit), quality=int(quality),
                       source=str(source))
    if kind == KIND_DERIVED:
        x = json.loads(extra)
        return DerivedRecord(gateway_id=gateway_id, seq=int(seq), point_id=str(point_id),
                             derivation=str(source), period_start_ns=int(ts_ns),
                             period_end_ns=int(x["period_end_ns"]), value=v, unit=str(unit),
                             quality=int(quality), from_seq=int(x["from_seq"]),
                             to_seq=int(x["to_seq"]))
    if kind == KIND_AUDIT:
        return AuditRecord(gateway_id=gateway_id, seq=int(seq), ts_ns=int(ts_ns),
                           category=str(source), subject=str(point_id), payload=str(extra))
    raise OutboxError(f"record {seq} has unknown kind {kind}")


def _sign_each(sign: Callable[[bytes], bytes], msgs: list[bytes]) -> list[bytes]:
    return [sign(m) for m in msgs]


def _commit_rows(records: Sequence[R], first: int,
                 gateway_id: str) -> tuple[list[R], list[tuple[object, ...]]]:
    """``records`` with their gateway id and seqs from ``first``, and their rows, in one pass.
    Readings (nearly every record) take the hot path: built through the slots, the row
    written out here; other kinds go through `_to_row`. A chunk of plain readings goes through
    the compiled path when it is built (`_format.commit_readings`: the same objects and rows)."""
    fast = commit_readings(records, first, gateway_id)
    if fast is not None:
        return cast(tuple[list[R], list[tuple[object, ...]]], fast)
    return _commit_rows_py(records, first, gateway_id)


def _commit_rows_py(records: Sequence[R], first: int,
                    gateway_id: str) -> tuple[list[R], list[tuple[object, ...]]]:
    """`_commit_rows` in Python alone (every record kind, every error as it comes)."""
    committed: list[Any] = []
    rows: list[tuple[object, ...]] = []
    add_c, add_r = committed.append, rows.append
    seq = first
    r: Any
    c: Any
    for r in records:
        if type(r) is Reading:
            c = committed_reading(r, seq, gateway_id)
            v = r.value
            add_r((seq, KIND_READING, r.point_id, r.ts_ns, None if v != v else v, r.unit,
                   r.quality, r.source, None, leaf_of_body(encode_reading(c))))
        else:
            c = dataclasses.replace(r, gateway_id=gateway_id, seq=seq)
            add_r(_to_row(c))
        add_c(c)
        seq += 1
    return cast(list[R], committed), rows


def _to_row(c: Record) -> tuple[object, ...]:
    """The row of a committed record (the inverse of `_row_to_record`)."""
    leaf = leaf_of_body(encode_record(c))
    if isinstance(c, Reading):
        v = c.value
        return (c.seq, KIND_READING, c.point_id, c.ts_ns, None if math.isnan(v) else v, c.unit,
                c.quality, c.source, None, leaf)
    if isinstance(c, DerivedRecord):
        v = c.value
        extra = json.dumps({"period_end_ns": c.period_end_ns, "from_seq": c.from_seq,
                            "to_seq": c.to_seq}, separators=(",", ":"), sort_keys=True)
        return (c.seq, KIND_DERIVED, c.point_id, c.period_start_ns, None if math.isnan(v) else v,
                c.unit, c.quality, c.derivation, extra, leaf)
    return (c.seq, KIND_AUDIT, c.subject, c.ts_ns, None, "", 0, c.category, c.payload, leaf)


_BATCH_COLS = (
    "seq, prev_hash, root, count, first_record_seq, last_record_seq, first_ts_ns, last_ts_ns, "
    "co2e_scope1_g, co2e_scope2_g, co2e_scope3_g, header_hash, signature, state, tx_hash, "
    "raw_tx, nonce, block_number"
)


def _drop_keys_through(keys: deque[tuple[int, int, bytes]], last_seq: int) -> None:
    """Drop the keys of the records up to ``last_seq`` from the front of ``keys`` (ascending
    seqs). Popped one by one in Python, a batch of 60,000 keys held the event loop ~10 ms;
    ``popleft`` called by C iterators does the same without a bytecode per key, in pieces of
    `KEY_RELEASE_CHUNK` (between two, another thread can take the GIL)."""
    n = bisect.bisect_right(keys, last_seq, key=_key_seq)
    pop = keys.popleft
    while n > 0:
        k = min(n, KEY_RELEASE_CHUNK)
        deque(itertools.islice(iter(pop, None), k), maxlen=0)
        n -= k


def _release_batch_keys(cached: deque[tuple[int, int, bytes]] | None, last_seq: int,
                        keys: list[tuple[int, int, bytes]]) -> None:
    """After a batch is stored: drop its keys from the cache (``cached``, if kept) and free
    them (``keys``, the batch's list, emptied), a piece at a time. For a large batch this runs
    in a worker thread: freeing 60,000 keys (a tuple, an int and a leaf each) in one go held
    the event loop 2-3 ms after the 2 ms of dropping them, once a batch (design 008)."""
    if cached is not None:
        _drop_keys_through(cached, last_seq)
    while keys:
        del keys[-KEY_RELEASE_CHUNK:]


async def _take_keys(keys: deque[tuple[int, int, bytes]], n: int
                     ) -> list[tuple[int, int, bytes]]:
    """The first ``n`` keys (fewer if there are fewer), copied `KEY_RELEASE_CHUNK` at a time
    with a turn of the event loop between: a batch's 60,000 keys, scattered in memory, held
    the loop 0.4-2.4 ms in one copy. The caller holds the outbox's lock, so nothing appends to
    or pops from ``keys`` meanwhile (the deque's iterator would refuse a change)."""
    out: list[tuple[int, int, bytes]] = []
    it = itertools.islice(keys, n)
    while True:
        before = len(out)
        out.extend(itertools.islice(it, KEY_RELEASE_CHUNK))
        if len(out) - before < KEY_RELEASE_CHUNK or len(out) >= n:
            return out
        await asyncio.sleep(0)


def _key_seq(k: tuple[int, int, bytes]) -> int:
    return k[0]


class Outbox:
    """One gateway's outbox. Open with `Outbox.open`; one writer per database file."""

    def __init__(self, db: aiosqlite.Connection, gateway_id: str, *,
                 now_ns: Callable[[], int] = time.time_ns) -> None:
        self._db = db
        self.gateway_id = gateway_id
        self.now_ns = now_ns  # the wall clock of a batch's created_ns and confirmed_ns
        self._next_seq = 1
        self._sign_records: Callable[[bytes], bytes] | None = None
        # (seq, ts_ns, leaf) of every pending record, in seq order, as committed: the next
        # batches take their keys from here instead of reading them back. None: not kept
        # (opened with records pending, or overflowed) until batching has caught up.
        self._keys: deque[tuple[int, int, bytes]] | None = None
        # One connection serves every task: a transaction spans several awaits, so each public
        # method holds this lock, and writes are shielded so a cancelled caller never leaves
        # half a transaction behind.
        self._lock = asyncio.Lock()

    async def _locked(self, coro: Coroutine[Any, Any, T]) -> T:
        async with self._lock:
            return await coro

    async def _fetch(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        async with self._lock:
            return list(await self._db.execute_fetchall(sql, params))

    async def _exec(self, sql: str, params: Sequence[object] = ()) -> None:
        async with self._lock:
            await self._db.execute(sql, params)

    def _write(self, coro: Coroutine[Any, Any, T]) -> Awaitable[T]:
        return asyncio.shield(self._locked(coro))

    @classmethod
    async def open(cls, path: Path, gateway_id: str, *, synchronous: str = "FULL",
                   sign_records: Callable[[bytes], bytes] | None = None,
                   journal_mode: str = "WAL",
                   now_ns: Callable[[], int] = time.time_ns) -> Outbox:
        """Open (or create) the outbox. ``sign_records``: an Ed25519 signing function; when
        given, every record committed from now on carries a record signature (docs/formats.md,
        "Record signatures"); records committed before keep none. It is called from a worker
        thread for large commits, so it must be thread-safe (`Signer.sign` is). ``now_ns``: the
        clock of the bookkeeping times (``created_ns``, ``confirmed_ns``)."""
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise OutboxError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        db = await open_wal(path, synchronous, _SCHEMA, journal_mode=journal_mode)
        try:
            ob = cls(db, gateway_id, now_ns=now_ns)
            ob._sign_records = sign_records
            await ob._check_meta()
            await ob._add_signature_column()
            ob._next_seq = await ob._max_record_seq() + 1
            if await ob._pending_count() == 0:
                ob._keys = deque()
        except BaseException:
            await db.close()
            raise
        return ob

    async def close(self) -> None:
        async with self._lock:
            await self._db.close()

    async def _check_meta(self) -> None:
        rows: dict[str, str] = {str(k): str(v) for k, v in await self._db.execute_fetchall(
            "SELECT key, value FROM meta")}
        if not rows:
            await self._db.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?)",
                [("gateway_id", self.gateway_id), ("schema_version", str(SCHEMA_VERSION))],
            )
            return
        if rows.get("gateway_id") != self.gateway_id:
            raise OutboxError(
                f"outbox belongs to gateway {rows.get('gateway_id')!r}, "
                f"not {self.gateway_id!r}: refusing to mix their records"
            )
        version = rows.get("schema_version")
        if version in ("1", "2"):  # the schema script made the new tables: record the upgrade
            await self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                                   (str(SCHEMA_VERSION),))
        elif version != str(SCHEMA_VERSION):
            raise OutboxError(f"outbox schema {version}, expected {SCHEMA_VERSION} (or 1 or 2, "
                              "which are upgraded)")

    async def _add_signature_column(self) -> None:
        """Outboxes created before record signatures existed get the (nullable) column."""
        cols = {str(r[1]) for r in await self._db.execute_fetchall("PRAGMA table_info(records)")}
        if "sig" not in cols:
            await self._db.execute("ALTER TABLE records ADD COLUMN sig BLOB")

    async def _max_record_seq(self) -> int:
        # batches too: records of anchored batches may have been pruned (disk budget)
        rows = list(await self._db.execute_fetchall(
            "SELECT MAX((SELECT COALESCE(MAX(seq), 0) FROM records),"
            " (SELECT COALESCE(MAX(last_record_seq), 0) FROM batches))"))
        return int(rows[0][0])

    # -- acceptance -------------------------------------------------------------------------

    async def append(self, records: Sequence[R]) -> list[R]:
        """Commit ``records`` (readings, derived or audit records) in one transaction and
        return them with ``seq`` and ``gateway_id`` set.

        Returning is the acknowledgement: the records are durable (per the ``synchronous``
        setting) and will be anchored.
        """
        return (await self._write(self._append(records)))[0]

    async def append_signed(self, records: Sequence[R]) -> tuple[list[R], list[bytes] | None]:
        """`append`, also returning the record signatures made (None when the outbox does
        not sign records): for live telemetry that carries them."""
        return await self._write(self._append(records))

    async def append_quarantining(
        self, records: Sequence[R], *, now_ns: int, off_loop: bool | None = None,
    ) -> tuple[list[R], list[bytes] | None, list[DeadLetter]]:
        """`append_signed`, except that a record that cannot be stored does not fail the
        others: when the commit fails with one of `POISON_ERRORS`, the records are split in
        halves and each half committed on its own (in order, so seqs stay gapless and in
        submission order), down to single records; each record that fails alone goes to the
        ``dead_letters`` table instead (no seq). Returns the committed records, their record
        signatures (None when not signing) and the dead letters. Any other error (the database
        itself) is raised as by `append`. ``now_ns``: the quarantine time stamp.
        ``off_loop``: build the leaves and rows in a worker thread (when compiled) whatever
        the size, or never; None: for `COMMIT_IN_THREAD_MIN` records or more. The records
        stored are the same either way."""
        return await self._write(self._append_quarantining(records, now_ns, off_loop))

    async def _append_quarantining(
        self, records: Sequence[R], now_ns: int, off_loop: bool | None = None,
    ) -> tuple[list[R], list[bytes] | None, list[DeadLetter]]:
        committed: list[R] = []
        sigs: list[bytes] | None = None if self._sign_records is None else []
        dead: list[DeadLetter] = []
        todo: list[Sequence[R]] = [records]
        while todo:
            part = todo.pop()
            try:
                c, s = await self._append(part, off_loop)
            except POISON_ERRORS as e:
                if len(part) > 1:
                    mid = len(part) // 2
                    todo.append(part[mid:])
                    todo.append(part[:mid])  # popped first: submission order is kept
                    continue
                r = part[0]
                dead.append(await self._dead_letter(
                    source=_safe_str(getattr(r, "source", getattr(r, "category", ""))),
                    point_id=_safe_str(getattr(r, "point_id", getattr(r, "subject", ""))),
                    reason=_safe_str(f"{type(e).__name__}: {e}")[:1000],
                    raw=dump_record(r), now_ns=now_ns))
                continue
            committed.extend(c)
            if sigs is not None and s is not None:
                sigs.extend(s)
        return committed, sigs, dead

    async def add_dead_letter(self, *, source: str, point_id: str, reason: str, raw: bytes,
                              now_ns: int) -> DeadLetter:
        """Quarantine a message that cannot become a record (e.g. a source's poison message):
        it is kept, bounded, for an operator, and counted in `stats`."""
        return await self._write(self._dead_letter(
            source=_safe_str(source), point_id=_safe_str(point_id),
            reason=_safe_str(reason)[:1000], raw=bytes(raw), now_ns=now_ns))

    async def _dead_letter(self, *, source: str, point_id: str, reason: str, raw: bytes,
                           now_ns: int) -> DeadLetter:
        kept = raw[:DEAD_LETTER_RAW_MAX]
        cur = await self._db.execute(
            "INSERT INTO dead_letters(quarantined_ns, source, point_id, reason, raw, raw_len)"
            " VALUES (?, ?, ?, ?, ?, ?)", (now_ns, source, point_id, reason, kept, len(raw)))
        return DeadLetter(id=int(cur.lastrowid or 0), quarantined_ns=now_ns, source=source,
                          point_id=point_id, reason=reason, raw=kept, raw_len=len(raw))

    async def dead_letters(self, *, unreviewed_only: bool = False,
                           limit: int = 1000) -> list[DeadLetter]:
        """The newest dead letters first (at most ``limit``)."""
        where = " WHERE reviewed_ns IS NULL" if unreviewed_only else ""
        rows = await self._fetch(
            "SELECT id, quarantined_ns, source, point_id, reason, raw, raw_len, reviewed_ns"
            f" FROM dead_letters{where} ORDER BY id DESC LIMIT ?", (limit,))
        return [DeadLetter(id=int(i), quarantined_ns=int(t), source=str(s), point_id=str(p),
                           reason=str(why), raw=bytes(raw), raw_len=int(n),
                           reviewed_ns=None if rv is None else int(rv))
                for i, t, s, p, why, raw, n, rv in rows]

    async def mark_dead_letters_reviewed(self, upto_id: int, now_ns: int) -> int:
        """An operator has looked at the dead letters up to ``upto_id``: they no longer make
        the gateway degraded (they stay in the table). Returns how many were marked."""
        async with self._lock:
            cur = await self._db.execute(
                "UPDATE dead_letters SET reviewed_ns = ? WHERE id <= ? AND reviewed_ns IS NULL",
                (now_ns, upto_id))
            return int(cur.rowcount)

    async def _append(self, records: Sequence[R], off_loop: bool | None = None
                      ) -> tuple[list[R], list[bytes] | None]:
        if not records:
            return [], None if self._sign_records is None else []
        first = self._next_seq
        gw = self.gateway_id
        if off_loop is None:
            off_loop = len(records) >= COMMIT_IN_THREAD_MIN
        try:
            if off_loop and COMPILED:
                # the compiled commit hashes without the GIL: polls and commands go on
                committed, rows = await asyncio.to_thread(_commit_rows, records, first, gw)
            else:
                committed, rows = _commit_rows(records, first, gw)
        except Exception as e:  # pure: only the records themselves can make it fail
            raise UnstorableRecord(f"{type(e).__name__}: {e}") from e
        sign = self._sign_records
        sigs: list[bytes] | None = None
        if sign is not None:  # the leaf is the row's last column
            tag = RECORD_SIG_TAG
            msgs: list[bytes] = [tag + row[9] for row in rows]  # type: ignore[operator]
            if len(msgs) <= SIGN_ON_LOOP_MAX:
                sigs = [sign(m) for m in msgs]
            else:  # ~20 us each: off the event loop (pynacl lets go of the GIL meanwhile)
                sigs = await asyncio.to_thread(_sign_each, sign, msgs)
            rows = [(*row, sig) for row, sig in zip(rows, sigs, strict=True)]
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            await self._insert(rows, signed=sign is not None)
            failpoint("outbox.before_commit")
            await self._db.execute("COMMIT")
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise
        self._next_seq = first + len(records)
        keys = self._keys
        if keys is not None:
            if len(keys) + len(rows) > KEY_CACHE_MAX:
                self._keys = None
            else:
                new = [(row[0], row[3], row[9]) for row in rows]
                untrack_atomic(new)  # plain values kept until the batch: not the GC's work
                keys.extend(new)  # type: ignore[arg-type]
        failpoint("outbox.after_commit")
        return committed, sigs

    async def _insert(self, rows: list[tuple[object, ...]], *, signed: bool) -> None:
        """Insert ``rows`` (in a transaction), `ROWS_PER_INSERT` to a statement: SQLite's
        step and the hand-back of the GIL happen once per statement, not once per row."""
        k = ROWS_PER_INSERT
        groups = reading_insert_params(rows, k)
        if groups is not None:  # reading rows (nearly all): kind and extra not bound
            rest = len(rows) % k
            whole = groups[:-1] if rest else groups
            if whole:
                await self._db.executemany(_insert_readings(k, signed), whole)
            if rest:
                w = len(_READING_BOUND) + signed
                last = groups[-1]
                await self._db.executemany(_insert_readings(1, signed),
                                           [last[i:i + w] for i in range(0, len(last), w)])
            return
        full = len(rows) - len(rows) % k
        if full:
            chain = itertools.chain.from_iterable
            await self._db.executemany(_insert_many(k, signed),
                                       [list(chain(rows[i:i + k])) for i in range(0, full, k)])
        if full < len(rows):
            await self._db.executemany(_INSERT_SIGNED if signed else _INSERT, rows[full:])

    # -- batching ---------------------------------------------------------------------------

    async def last_batch(self) -> StoredBatch | None:
        return await self._locked(self._last_batch())

    async def _last_batch(self) -> StoredBatch | None:
        rows = list(await self._db.execute_fetchall(
            f"SELECT {_BATCH_COLS} FROM batches ORDER BY seq DESC LIMIT 1"))
        return self._batch(rows[0]) if rows else None

    async def pending_count(self) -> int:
        return await self._locked(self._pending_count())

    async def _pending_count(self) -> int:
        last = await self._last_batch()
        done = last.header.last_record_seq if last else 0
        return self._next_seq - 1 - done

    async def make_batch(
        self,
        max_records: int,
        sign: Callable[[bytes], bytes],
        co2e_g: Callable[[Sequence[Record]], tuple[int, int, int]] | None = None,
    ) -> StoredBatch | None:
        """Cut the next batch from the pending records, sign its header, store it; atomic."""
        return await self._write(self._make_batch(max_records, sign, co2e_g))

    async def _make_batch(
        self,
        max_records: int,
        sign: Callable[[bytes], bytes],
        co2e_g: Callable[[Sequence[Record]], tuple[int, int, int]] | None,
    ) -> StoredBatch | None:
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            last = await self._last_batch()
            after = last.header.last_record_seq if last else 0
            cached = self._keys
            if cached is not None and (cached[0][0] if cached else self._next_seq) != after + 1:
                self._keys = cached = None  # out of step (never expected): read from the db
            totals = (0, 0, 0)
            if co2e_g is None and cached is not None:  # the keys as committed, no read-back
                keys = await _take_keys(cached, max_records)
            else:
                # whole records only for the CO2e callback; the header needs seq, time, leaf
                cols = f"{_RECORD_COLS}, leaf" if co2e_g is not None else "seq, ts_ns, leaf"
                rows = list(await self._db.execute_fetchall(
                    f"SELECT {cols} FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after, max_records)))
                if co2e_g is not None:
                    totals = co2e_g([_row_to_record(self.gateway_id, r) for r in rows])
                    keys = [(int(r[0]), int(r[3]), bytes(r[9])) for r in rows]
                else:
                    keys = [(int(r[0]), int(r[1]), bytes(r[2])) for r in rows]
            if not keys:
                await self._db.execute("COMMIT")
                return None
            make = functools.partial(
                build_header, gateway_id=self.gateway_id, seq=(last.seq + 1) if last else 1,
                prev_hash=last.header_hash if last else ZERO32, records=keys, co2e_g=totals)
            # a large batch's header (its lists over every key, the Merkle tree) is built in a
            # worker thread: the event loop gets the GIL at every switch interval meanwhile,
            # instead of waiting ~30 ms for 60,000 keys (a command's answer would)
            header = await asyncio.to_thread(make) if len(keys) >= HEADER_IN_THREAD_MIN \
                else make()
            hh = header.hash()
            sig = sign(hh)
            await self._db.execute(
                "INSERT INTO batches(seq, prev_hash, root, count, first_record_seq,"
                " last_record_seq, first_ts_ns, last_ts_ns, co2e_scope1_g, co2e_scope2_g,"
                " co2e_scope3_g, header_hash, signature, state, created_ns)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (header.seq, header.prev_hash, header.root, header.count,
                 header.first_record_seq, header.last_record_seq, header.first_ts_ns,
                 header.last_ts_ns, header.co2e_scope1_g, header.co2e_scope2_g,
                 header.co2e_scope3_g, hh, sig, BUILT, self.now_ns()),
            )
            await self._db.execute("COMMIT")
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise
        cached = self._keys
        if len(keys) >= HEADER_IN_THREAD_MIN:  # the event loop goes on meanwhile
            await asyncio.to_thread(_release_batch_keys, cached, header.last_record_seq, keys)
        else:
            _release_batch_keys(cached, header.last_record_seq, keys)
        if cached is None and header.last_record_seq == self._next_seq - 1:
            self._keys = deque()  # caught up: keep the keys of the records to come
        failpoint("batcher.after_build")
        return StoredBatch(header=header, header_hash=hh, signature=sig, state=BUILT,
                           tx_hash=None, raw_tx=None, nonce=None, block_number=None)

    def _batch(self, row: Any) -> StoredBatch:
        (seq, prev, root, count, frs, lrs, fts, lts, c1, c2, c3, hh, sig, state, txh, raw,
         nonce, block) = row
        header = BatchHeader(
            gateway_id=self.gateway_id, seq=int(seq), prev_hash=bytes(prev), root=bytes(root),
            count=int(count), first_record_seq=int(frs), last_record_seq=int(lrs),
            first_ts_ns=int(fts), last_ts_ns=int(lts), co2e_scope1_g=int(c1),
            co2e_scope2_g=int(c2), co2e_scope3_g=int(c3),
        )
        return StoredBatch(
            header=header, header_hash=bytes(hh), signature=bytes(sig), state=int(state),
            tx_hash=bytes(txh) if txh is not None else None,
            raw_tx=bytes(raw) if raw is not None else None,
            nonce=int(nonce) if nonce is not None else None,
            block_number=int(block) if block is not None else None,
        )

    async def batch(self, seq: int) -> StoredBatch | None:
        rows = list(await self._fetch(
            f"SELECT {_BATCH_COLS} FROM batches WHERE seq = ?", (seq,)))
        return self._batch(rows[0]) if rows else None

    async def oldest_unconfirmed(self) -> StoredBatch | None:
        rows = list(await self._fetch(
            f"SELECT {_BATCH_COLS} FROM batches WHERE state != ? ORDER BY seq LIMIT 1",
            (CONFIRMED,)))
        return self._batch(rows[0]) if rows else None

    async def mark_submitted(self, seq: int, tx_hash: bytes, raw_tx: bytes, nonce: int) -> None:
        await self._exec(
            "UPDATE batches SET state = ?, tx_hash = ?, raw_tx = ?, nonce = ? WHERE seq = ?",
            (SUBMITTED, tx_hash, raw_tx, nonce, seq))

    async def reset_to_built(self, seq: int) -> None:
        """Forget a stored transaction the node refused, so the batch is signed afresh."""
        await self._exec(
            "UPDATE batches SET state = ?, tx_hash = NULL, raw_tx = NULL, nonce = NULL"
            " WHERE seq = ? AND state = ?", (BUILT, seq, SUBMITTED))

    async def mark_confirmed(self, seq: int, block_number: int) -> None:
        await self._exec(
            "UPDATE batches SET state = ?, block_number = ?, confirmed_ns = ? WHERE seq = ?",
            (CONFIRMED, block_number, self.now_ns(), seq))

    # -- delivery to the portal -------------------------------------------------------------

    async def undelivered(self, limit: int = 100, after: int = 0) -> list[int]:
        """Seqs of built batches (any state) the portal has not answered yet, oldest first."""
        rows = await self._fetch(
            "SELECT b.seq FROM batches b LEFT JOIN deliveries d ON d.batch_seq = b.seq"
            " WHERE d.batch_seq IS NULL AND b.seq > ? ORDER BY b.seq LIMIT ?", (after, limit))
        return [int(r[0]) for r in rows]

    async def records_signed(self, first_seq: int, last_seq: int
                             ) -> list[tuple[Record, bytes | None]]:
        """Records ``first_seq..last_seq`` with their record signatures (None: unsigned)."""
        rows = await self._fetch(
            f"SELECT {_RECORD_COLS}, sig FROM records WHERE seq BETWEEN ? AND ? ORDER BY seq",
            (first_seq, last_seq))
        return [(_row_to_record(self.gateway_id, r), None if r[9] is None else bytes(r[9]))
                for r in rows]

    async def mark_delivered(self, batch_seq: int, status: str, detail: str | None = None) -> bool:
        """Record the portal's final answer for batch ``batch_seq`` (once: a second call changes
        nothing and returns False)."""
        if status not in (DELIVERED, REFUSED, UNAVAILABLE):
            raise ValueError(f"unknown delivery status {status!r}")
        async with self._lock:
            cur = await self._db.execute(
                "INSERT OR IGNORE INTO deliveries(batch_seq, delivered_ns, status, detail)"
                " VALUES (?, ?, ?, ?)",
                (batch_seq, self.now_ns(), status, None if detail is None else detail[:2000]))
            return int(cur.rowcount) == 1

    async def delivery(self, batch_seq: int) -> tuple[str, str | None] | None:
        """The recorded answer for batch ``batch_seq``: (status, detail), or None."""
        rows = list(await self._fetch(
            "SELECT status, detail FROM deliveries WHERE batch_seq = ?", (batch_seq,)))
        return (str(rows[0][0]), rows[0][1]) if rows else None

    async def delivery_stats(self) -> DeliveryStats:
        by: dict[str, int] = {DELIVERED: 0, REFUSED: 0, UNAVAILABLE: 0}
        for status, n in await self._fetch(
                "SELECT status, COUNT(*) FROM deliveries GROUP BY status"):
            by[str(status)] = int(n)
        (batches,), = await self._fetch("SELECT COUNT(*) FROM batches")
        (last,), = await self._fetch(
            "SELECT COALESCE(MAX(batch_seq), 0) FROM deliveries WHERE status = ?", (DELIVERED,))
        return DeliveryStats(backlog=int(batches) - sum(by.values()), delivered=by[DELIVERED],
                             refused=by[REFUSED], unavailable=by[UNAVAILABLE],
                             last_delivered_batch=int(last))

    # -- queries ----------------------------------------------------------------------------

    async def record(self, seq: int) -> Record | None:
        rows = await self._fetch(f"SELECT {_RECORD_COLS} FROM records WHERE seq = ?", (seq,))
        return _row_to_record(self.gateway_id, rows[0]) if rows else None

    async def record_signature(self, seq: int) -> bytes | None:
        """The record signature of record ``seq`` (None when it was committed unsigned)."""
        rows = list(await self._fetch("SELECT sig FROM records WHERE seq = ?", (seq,)))
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    async def batch_of_record(self, record_seq: int) -> StoredBatch | None:
        rows = list(await self._fetch(
            f"SELECT {_BATCH_COLS} FROM batches WHERE last_record_seq >= ?"
            " ORDER BY last_record_seq LIMIT 1", (record_seq,)))
        if not rows:
            return None
        b = self._batch(rows[0])
        return b if b.header.first_record_seq <= record_seq else None

    async def leaves(self, first_seq: int, last_seq: int) -> list[bytes]:
        rows = await self._fetch(
            "SELECT leaf FROM records WHERE seq BETWEEN ? AND ? ORDER BY seq", (first_seq, last_seq))
        return [bytes(r[0]) for r in rows]

    async def records(self, first_seq: int, last_seq: int) -> list[Record]:
        rows = await self._fetch(
            f"SELECT {_RECORD_COLS} FROM records WHERE seq BETWEEN ? AND ? ORDER BY seq",
            (first_seq, last_seq))
        return [_row_to_record(self.gateway_id, r) for r in rows]

    async def readings_newest_first(self, page: int = 20_000
                                    ) -> AsyncGenerator[list[tuple[str, int, float, int]], None]:
        """The readings still in the outbox, newest first, a page at a time, as
        ``(point_id, ts_ns, value, quality)`` (NaN for a missing value): what a restarted
        gateway resumes its checks from. Stop iterating when you have enough."""
        before = self._next_seq
        while True:
            rows = await self._fetch(
                "SELECT seq, point_id, ts_ns, value, quality FROM records"
                " WHERE seq < ? AND kind = ? ORDER BY seq DESC LIMIT ?",
                (before, KIND_READING, page))
            if not rows:
                return
            before = int(rows[-1][0])
            yield [(str(p), int(t), math.nan if v is None else float(v), int(q))
                   for _, p, t, v, q in rows]

    async def used_bytes(self) -> int:
        """Bytes of the database in use: pages minus free pages (deleted records free pages;
        the WAL, a few MB at most between automatic checkpoints, is not counted)."""
        async with self._lock:
            (pages,), = await self._db.execute_fetchall("PRAGMA page_count")
            (free,), = await self._db.execute_fetchall("PRAGMA freelist_count")
            (size,), = await self._db.execute_fetchall("PRAGMA page_size")
        return int((pages - free) * size)

    async def prune_anchored(self, max_batches: int, archive: Path | None = None, *,
                             delivered_only: bool = False) -> int:
        """Delete the records of up to ``max_batches`` of the oldest confirmed batches whose
        records are still here; returns how many records went. Unanchored records are never
        touched; batch headers stay (the chain of hashes stays checkable).

        ``archive``: first copy those records and their batches into this archive (an outbox
        database of the same schema, created when missing, committed with synchronous=FULL),
        from which proofs can still be exported; when that fails nothing is deleted and
        `OutboxError` says why. ``delivered_only`` (a portal is configured): only batches the
        portal has answered (``deliveries``) are pruned, oldest first, up to the first one it
        has not."""
        async with self._lock:
            rows = list(await self._db.execute_fetchall(
                "SELECT MIN(seq) FROM records"))
            lowest = rows[0][0]
            if lowest is None:
                return 0
            rows = list(await self._db.execute_fetchall(
                "SELECT b.seq, b.last_record_seq, d.batch_seq FROM batches b"
                " LEFT JOIN deliveries d ON d.batch_seq = b.seq"
                " WHERE b.state = ? AND b.last_record_seq >= ?"
                " ORDER BY b.seq LIMIT ?", (CONFIRMED, lowest, max_batches)))
            if delivered_only:
                rows = list(itertools.takewhile(lambda r: r[2] is not None, rows))
            if not rows:
                return 0
            upto = int(rows[-1][1])
            if archive is not None:
                await self._archive(archive, int(lowest), upto, int(rows[0][0]), int(rows[-1][0]))
            cur = await self._db.execute("DELETE FROM records WHERE seq <= ?", (upto,))
            await self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            return int(cur.rowcount)

    async def _archive(self, path: Path, first_record: int, last_record: int,
                       first_batch: int, last_batch: int) -> None:
        """Copy records ``first_record..last_record`` and batches ``first_batch..last_batch``
        into the archive at ``path`` (caller holds the lock). Idempotent: a copy interrupted
        before the delete is made again over what is there."""
        if not path.parent.is_dir():  # an unmounted disk: never fill the root file system
            raise OutboxError(f"archive {path}: folder {path.parent} does not exist (is its "
                              "disk mounted?)")
        try:
            # a rollback journal: the archive may sit on a removable or network disk
            arc = await Outbox.open(path, self.gateway_id, synchronous="FULL",
                                    journal_mode="DELETE")
        except (OSError, aiosqlite.Error) as e:
            raise OutboxError(f"archive {path}: cannot open: {e}") from e
        try:
            batches = list(await self._db.execute_fetchall(
                f"SELECT {_BATCH_COLS}, created_ns, confirmed_ns FROM batches"
                " WHERE seq BETWEEN ? AND ?", (first_batch, last_batch)))
            await arc._db.execute("BEGIN IMMEDIATE")
            try:
                start = first_record
                while start <= last_record:
                    end = min(start + 19_999, last_record)
                    recs = list(await self._db.execute_fetchall(
                        f"SELECT {_RECORD_COLS}, leaf, sig FROM records WHERE seq BETWEEN ? AND ?",
                        (start, end)))
                    await arc._db.executemany(
                        f"INSERT OR IGNORE INTO records({_RECORD_COLS}, leaf, sig)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", recs)
                    start = end + 1
                await arc._db.executemany(
                    f"INSERT OR REPLACE INTO batches({_BATCH_COLS}, created_ns, confirmed_ns)"
                    f" VALUES ({', '.join('?' * (_BATCH_COLS.count(',') + 3))})", batches)
                await arc._db.execute("COMMIT")
            except BaseException:
                await arc._db.execute("ROLLBACK")
                raise
        except (OSError, aiosqlite.Error) as e:
            raise OutboxError(f"archive {path}: cannot write: {e}") from e
        finally:
            await arc.close()

    async def ensure_point_index(self) -> None:
        """Index records by point and time, for `point_series` (hourly aggregation). Costs some
        insert speed, so it is created only when aggregation is configured."""
        await self._exec("CREATE INDEX IF NOT EXISTS records_point_ts ON records(point_id, ts_ns)")

    async def point_series(self, point_id: str, start_ns: int, end_ns: int
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The readings of one point with ``start_ns <= ts_ns < end_ns``, as arrays
        ``(seq, ts_ns, value, quality)`` in time order (NaN for a missing value)."""
        rows = await self._fetch(
            "SELECT seq, ts_ns, value, quality FROM records WHERE point_id = ? AND kind = ?"
            " AND ts_ns >= ? AND ts_ns < ? ORDER BY ts_ns, seq",
            (point_id, KIND_READING, start_ns, end_ns))
        import numpy as np  # only here: the daemon loads it when it aggregates (decision 26)

        seq = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        ts = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        val = np.fromiter((math.nan if r[2] is None else r[2] for r in rows), dtype=np.float64,
                          count=len(rows))
        q = np.fromiter((r[3] for r in rows), dtype=np.uint32, count=len(rows))
        return seq, ts, val, q

    async def derived_of_point(self, point_id: str, since_ns: int) -> list[DerivedRecord]:
        """The derived records of one point whose period starts at or after ``since_ns``, in
        seq order (the aggregator rebuilds its hour history from them after a restart)."""
        rows = await self._fetch(
            f"SELECT {_RECORD_COLS} FROM records WHERE point_id = ? AND kind = ? AND ts_ns >= ?"
            " ORDER BY seq", (point_id, KIND_DERIVED, since_ns))
        return [cast(DerivedRecord, _row_to_record(self.gateway_id, r)) for r in rows]

    async def last_valid_values(self, point_ids: Sequence[str], upto_seq: int,
                                invalid_mask: int) -> dict[str, float]:
        """Each point's last reading value at or before ``upto_seq`` with no ``invalid_mask``
        bit and a value (the base for cumulative meters after a restart)."""
        out: dict[str, float] = {}
        for pid in point_ids:
            rows = await self._fetch(
                "SELECT value FROM records WHERE kind = ? AND point_id = ? AND seq <= ?"
                " AND value IS NOT NULL AND (quality & ?) = 0 ORDER BY seq DESC LIMIT 1",
                (KIND_READING, pid, upto_seq, invalid_mask))
            if rows:
                out[pid] = float(rows[0][0])
        return out

    async def stats(self) -> OutboxStats:
        by_state = {name: 0 for name in STATE_NAMES.values()}
        for state, n in await self._fetch(
                "SELECT state, COUNT(*) FROM batches GROUP BY state"):
            by_state[STATE_NAMES[int(state)]] = int(n)
        rows = list(await self._fetch(
            "SELECT COALESCE(MAX(seq), 0) FROM batches WHERE state = ?", (CONFIRMED,)))
        (dl, dl_open), = await self._fetch(
            "SELECT COUNT(*), COUNT(*) - COUNT(reviewed_ns) FROM dead_letters")
        return OutboxStats(
            records=self._next_seq - 1,
            pending=await self.pending_count(),
            batches=sum(by_state.values()),
            batches_by_state=by_state,
            last_confirmed_batch=int(rows[0][0]),
            dead_letters=int(dl),
            dead_letters_unreviewed=int(dl_open),
        )
