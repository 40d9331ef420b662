"""The control journal's writes (control/_state.py): the write-ahead entry is one atomic,
durable statement; the notes and marks without fsync are committed at once on a second
connection, and both connections' writes reach the same tables."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from control._state import ReplayStore


async def _entry(store: ReplayStore, cid: str, seq: int, advance: bool) -> None:
    await store.record(command_id=cid, issuer="epb", seq=seq, keep_until_ms=10_000,
                       now_ms=1_000, advance_seq=advance, envelope="{}")


def _table(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return list(db.execute(sql))


async def test_the_entry_raises_the_issuers_sequence_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "control.sqlite"
    store = await ReplayStore.open(path)
    try:
        await _entry(store, "a", 5, advance=False)
        assert _table(path, "SELECT issuer, seq FROM issuer_seq") == []
        await _entry(store, "b", 7, advance=True)
        await _entry(store, "c", 6, advance=True)  # never lowered
        assert _table(path, "SELECT issuer, seq FROM issuer_seq") == [("epb", 7)]
        assert store.last_seq == {"epb": 7} and set(store.seen) == {"a", "b", "c"}
        assert _table(path, "SELECT id, seq, recorded FROM seen_commands ORDER BY id") == [
            ("a", 5, 0), ("b", 7, 0), ("c", 6, 0)]
    finally:
        await store.close()
    reopened = await ReplayStore.open(path)  # what a restart restores
    try:
        assert reopened.last_seq == {"epb": 7} and set(reopened.seen) == {"a", "b", "c"}
    finally:
        await reopened.close()


async def test_a_failed_entry_writes_neither_table(tmp_path: Path) -> None:
    path = tmp_path / "control.sqlite"
    store = await ReplayStore.open(path)
    try:
        await _entry(store, "a", 5, advance=True)
        with pytest.raises(sqlite3.IntegrityError):
            await _entry(store, "a", 9, advance=True)  # the same id: refused as a whole
        assert _table(path, "SELECT issuer, seq FROM issuer_seq") == [("epb", 5)]
        assert store.last_seq == {"epb": 5}
        await _entry(store, "b", 6, advance=True)  # the journal goes on
        assert _table(path, "SELECT seq FROM issuer_seq") == [(6,)]
    finally:
        await store.close()


async def test_notes_are_committed_at_once_and_a_failed_one_changes_nothing(
        tmp_path: Path) -> None:
    """The fsync-free writes go through the second connection, on the event loop: committed
    when the call returns (another connection sees them), the main connection still FULL."""
    path = tmp_path / "control.sqlite"
    store = await ReplayStore.open(path)
    try:
        await store.note_write("vent", 1_000)
        assert store.writes == {"vent": [1_000]}
        assert _table(path, "SELECT point, ts_ms FROM point_writes") == [("vent", 1_000)]
        with pytest.raises(sqlite3.IntegrityError):
            await store.note_write(None, 2_000)  # type: ignore[arg-type]  # NOT NULL
        assert store.writes == {"vent": [1_000]}
        assert _table(path, "SELECT point, ts_ms FROM point_writes") == [("vent", 1_000)]
        assert list(await store._db.execute_fetchall("PRAGMA synchronous")) == [(2,)]  # FULL
        assert store._quick.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
        assert store._quick.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        await _entry(store, "a", 1, advance=True)  # the durable path after a quick one
        await store.note_write("vent", 3_000)
    finally:
        await store.close()
    reopened = await ReplayStore.open(path)  # a restart restores the rate window
    try:
        assert reopened.writes == {"vent": [1_000, 3_000]}
    finally:
        await reopened.close()
    with pytest.raises(sqlite3.ProgrammingError):
        await reopened.note_write("vent", 4_000)  # closed


async def test_marks_reach_every_id(tmp_path: Path) -> None:
    path = tmp_path / "control.sqlite"
    store = await ReplayStore.open(path)
    try:
        for i in range(1_100):
            await _entry(store, f"c{i}", i, advance=False)
        await store.mark_recorded([f"c{i}" for i in range(1_100) if i != 777])
        assert _table(path, "SELECT id FROM seen_commands WHERE recorded = 0") == [("c777",)]
        assert [u[0] for u in await store.unrecorded()] == ["c777"]
    finally:
        await store.close()
