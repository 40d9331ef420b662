"""What gateways deliver: submissions by (gateway, batch seq), the quarantine, and the verified
records (docs/design/006, docs/portal.md)."""

from __future__ import annotations

import sqlalchemy as sa

from portal._meta import address, hash32, metadata

BIG = sa.BigInteger

ingest_batches = sa.Table(
    "ingest_batches", metadata,
    sa.Column("gateway_id", sa.Text, primary_key=True),
    sa.Column("seq", BIG, primary_key=True, autoincrement=False),
    hash32("gateway_key", nullable=False),
    hash32("header_hash", nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # unanchored | verified | quarantined
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("received_ns", BIG, nullable=False),
    sa.Column("verified_ns", BIG, nullable=True),
    sa.Column("record_count", BIG, nullable=False),
    sa.Column("payload", sa.Text, nullable=True),  # the submission while unanchored
    sa.Index("ix_ingest_batches_state", "state"),
)

quarantine = sa.Table(
    "quarantine", metadata,
    sa.Column("id", BIG().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("gateway_id", sa.Text, nullable=False),
    sa.Column("seq", BIG, nullable=False),
    hash32("header_hash", nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("received_ns", BIG, nullable=False),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Index("ix_quarantine_gateway", "gateway_id", "seq"),
)

records = sa.Table(
    "records", metadata,
    sa.Column("gateway_id", sa.Text, primary_key=True),
    sa.Column("seq", BIG, primary_key=True, autoincrement=False),
    sa.Column("batch_seq", BIG, nullable=False),
    address("enterprise", nullable=False),
    sa.Column("kind", sa.SmallInteger, nullable=False),  # 1 reading, 2 derived, 3 audit
    sa.Column("point_id", sa.Text, nullable=False),
    sa.Column("ts_ns", BIG, nullable=False),
    sa.Column("value", sa.Float, nullable=True),  # NULL: NaN (no value)
    sa.Column("value_bits", BIG, nullable=False),  # IEEE-754 bits as a signed 64-bit integer
    sa.Column("unit", sa.Text, nullable=False),
    sa.Column("quality", BIG, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("extra", sa.Text, nullable=True),  # derived: JSON; audit: the payload
    hash32("leaf", nullable=False),
    sa.Column("record_signature", sa.String(130), nullable=True),
    sa.Index("ix_records_enterprise_ts", "enterprise", "ts_ns"),
    sa.Index("ix_records_point_ts", "point_id", "ts_ns"),
    sa.Index("ix_records_batch", "gateway_id", "batch_seq"),
)
