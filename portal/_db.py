"""The database: an engine for a URL (SQLite with WAL, or PostgreSQL through psycopg 3) and the
Alembic migrations, run programmatically (``mrv-portal migrate``; ``run`` migrates first)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig

from portal._meta import metadata

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def open_engine(url: str, *, pool_size: int = 10, connect_timeout_s: float = 5.0) -> sa.Engine:
    """An engine for ``url``. SQLite: WAL, NORMAL sync, foreign keys on, a busy timeout (the API
    and the indexer write from different threads); PostgreSQL: a bounded connection pool."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _rec: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return sa.create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                            connect_args={"connect_timeout": max(1, int(connect_timeout_s))})


@contextmanager
def snapshot(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection whose reads all see the database as of its first one: what one rendering
    shows is never half of a transaction that committed while it read. PostgreSQL: a
    REPEATABLE READ transaction; SQLite: an explicit ``BEGIN`` (the driver starts none before
    a read, so each statement would see the newest commit). Rolled back at the end."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN")
            yield conn
        else:
            yield conn.execution_options(isolation_level="REPEATABLE READ")


def alembic_config(engine: sa.Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent)."""
    command.upgrade(alembic_config(engine), revision)


def all_tables() -> sa.MetaData:
    """The metadata with every table of the portal registered (imports the table modules)."""
    from portal import _tables  # noqa: F401  (registers the tables on the metadata)

    return metadata
