"""Alembic environment: the engine comes from ``portal._db.migrate`` (never from a URL in an
ini file); the target metadata is every table of the portal."""

from __future__ import annotations

from alembic import context

from portal._db import all_tables

config = context.config
target_metadata = all_tables()


def run_migrations_online() -> None:
    engine = config.attributes["engine"]
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata,
                          render_as_batch=conn.dialect.name == "sqlite")
        context.run_migrations()


run_migrations_online()
