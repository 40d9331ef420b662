"""Answers kept per chain version: recomputed when the indexer's checkpoint moves (or comes
back at a height with another hash), bounded."""

from __future__ import annotations

import sqlalchemy as sa

from portal import migrate, open_engine
from portal._cache import VersionedCache, chain_version
from portal._chain_tables import idx_checkpoint


def test_a_value_is_kept_until_the_version_moves() -> None:
    c: VersionedCache[str, int] = VersionedCache(max_entries=2)
    calls: list[str] = []

    def compute(tag: str, v: int):  # type: ignore[no-untyped-def]
        def f() -> int:
            calls.append(tag)
            return v
        return f

    assert c.get("a", (1, "h1"), compute("a1", 10)) == 10
    assert c.get("a", (1, "h1"), compute("a1-again", 99)) == 10  # kept
    assert c.get("a", (2, "h2"), compute("a2", 20)) == 20  # the checkpoint moved
    assert c.get("a", (1, "h1b"), compute("a1b", 30)) == 30  # back at a height, other hash
    c.get("b", (1, "x"), compute("b", 1))
    c.get("c", (1, "x"), compute("c", 2))  # "a" is the least recently used: out
    assert c.get("a", (1, "h1b"), compute("a-out", 40)) == 40
    assert calls == ["a1", "a2", "a1b", "b", "c", "a-out"]
    assert (c.hits, c.misses) == (1, 6)


def test_a_failed_computation_is_not_kept() -> None:
    c: VersionedCache[str, int] = VersionedCache()

    def boom() -> int:
        raise LookupError("no such period")

    for _ in range(2):
        try:
            c.get("k", 1, boom)
        except LookupError:
            pass
    assert c.misses == 2 and c.get("k", 1, lambda: 5) == 5


def test_the_chain_version_is_the_checkpoint(db_url: str) -> None:
    engine = open_engine(db_url)
    migrate(engine)
    try:
        with engine.begin() as conn:
            assert chain_version(conn) == (-1, "")
            conn.execute(sa.insert(idx_checkpoint).values(
                name="chain", block_number=7, block_hash="0x" + "ab" * 32, updated_ns=1))
            assert chain_version(conn) == (7, "0x" + "ab" * 32)
    finally:
        engine.dispose()
