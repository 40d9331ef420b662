"""The API's own tables: sign-in challenges (single-use nonces with an expiry) and the access
log (every data access by a financial institution, and every refusal)."""

from __future__ import annotations

import sqlalchemy as sa

from portal._meta import address, metadata

BIG = sa.BigInteger

auth_nonces = sa.Table(
    "auth_nonces", metadata,
    sa.Column("nonce", sa.String(64), primary_key=True),
    address("address", nullable=False),
    sa.Column("message", sa.Text, nullable=False),  # the exact message issued
    sa.Column("issued_ns", BIG, nullable=False),
    sa.Column("expires_ns", BIG, nullable=False),
    sa.Column("used_ns", BIG, nullable=True),  # NULL: not yet redeemed
    sa.Index("ix_auth_nonces_expires", "expires_ns"),
    sa.Index("ix_auth_nonces_address", "address"),
)

access_log = sa.Table(
    "access_log", metadata,
    sa.Column("id", BIG().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("at_ns", BIG, nullable=False),
    address("viewer", nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    address("enterprise", nullable=True),  # NULL: a request over several enterprises
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("status", sa.SmallInteger, nullable=False),  # 200 allowed, 403 denied
    sa.Column("reason", sa.Text, nullable=True),
    sa.Index("ix_access_log_at", "at_ns"),
    sa.Index("ix_access_log_enterprise", "enterprise", "at_ns"),
)
