"""The one way this project opens a SQLite database: WAL, the chosen fsync level, autocommit."""

from __future__ import annotations

from pathlib import Path

import aiosqlite


async def open_wal(path: Path, synchronous: str, schema: str, *,
                   journal_mode: str = "WAL") -> aiosqlite.Connection:
    """Open (creating folders and tables as needed) a WAL-mode database; transactions are
    explicit (``isolation_level=None``). The caller closes it. ``journal_mode="DELETE"`` for
    a database written rarely, on a disk where WAL's shared memory may not work (network or
    removable file systems)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        await db.execute(f"PRAGMA journal_mode={journal_mode}")
        await db.execute(f"PRAGMA synchronous={synchronous}")
        await db.execute("PRAGMA busy_timeout=5000")
        await db.executescript(schema)
    except BaseException:
        await db.close()
        raise
    return db
