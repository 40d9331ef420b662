"""The initial schema.

DEVELOPMENT PLACEHOLDER: creates the tables from the current metadata. It is replaced by the
explicit operations (``alembic revision --autogenerate``) before the first release, and
``tests/test_portal_db.py`` checks that the migrated schema equals the metadata.

Revision ID: 0001
Revises:
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from portal._db import all_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    all_tables().create_all(op.get_bind())


def downgrade() -> None:
    all_tables().drop_all(op.get_bind())
