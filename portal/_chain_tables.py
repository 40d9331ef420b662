"""The chain as tables: the model tables (each equal to a contract getter, docs/design/006)
and the indexer's checkpoint. The per-event tables (``ev_*``) are declared by the indexer from
the contracts' ABIs (``_indexer.py``)."""

from __future__ import annotations

import sqlalchemy as sa

from portal._meta import address, hash32, metadata

BIG = sa.BigInteger

idx_checkpoint = sa.Table(
    "idx_checkpoint", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("block_number", BIG, nullable=False),
    hash32("block_hash", nullable=False),
    sa.Column("updated_ns", BIG, nullable=False),
)

enterprises = sa.Table(
    "enterprises", metadata,
    address("account", primary_key=True),
    sa.Column("credit_code", sa.String(64), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("industry_code", sa.String(64), nullable=False),
    sa.Column("region", sa.String(64), nullable=False),
    sa.Column("status", sa.SmallInteger, nullable=False),  # 1 active, 2 suspended
    sa.Column("certified_at", BIG, nullable=False),
)

gateways = sa.Table(
    "gateways", metadata,
    hash32("gateway_key", primary_key=True),
    sa.Column("gateway_id", sa.Text, nullable=False),
    address("enterprise", nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("registered_at", BIG, nullable=False),
    address("sender", nullable=False),
    hash32("signing_key", nullable=False),
    address("reserved_for", nullable=True),
    sa.Index("ix_gateways_gateway_id", "gateway_id"),
    sa.Index("ix_gateways_enterprise", "enterprise"),
)

#: gateway ids government reserved (``GatewayIdReserved``), registered or not: the key's
#: holder is ``MrvRegistry.gatewayReservedFor(key)``. A reservation moves until the id is
#: registered.
gateway_reservations = sa.Table(
    "gateway_reservations", metadata,
    hash32("gateway_key", primary_key=True),
    sa.Column("gateway_id", sa.Text, nullable=False),
    address("reserved_for", nullable=False),
)

periods = sa.Table(
    "periods", metadata,
    sa.Column("period_id", BIG, primary_key=True, autoincrement=False),
    sa.Column("start_ns", BIG, nullable=False),
    sa.Column("end_ns", BIG, nullable=False),
    sa.Column("closed", sa.Boolean, nullable=False),
)

roles = sa.Table(
    "roles", metadata,
    sa.Column("role", sa.String(32), primary_key=True),
    address("account", primary_key=True),
)

data_access = sa.Table(
    "data_access", metadata,
    address("enterprise", primary_key=True),
    address("finance", primary_key=True),
    sa.Column("until_at", BIG, nullable=False),  # block seconds; 0 = revoked
)

batches = sa.Table(
    "batches", metadata,
    hash32("gateway_key", primary_key=True),
    sa.Column("seq", BIG, primary_key=True, autoincrement=False),
    sa.Column("gateway_id", sa.Text, nullable=False),
    address("enterprise", nullable=False),
    hash32("header_hash", nullable=False),
    hash32("root", nullable=False),
    sa.Column("count", BIG, nullable=False),
    sa.Column("first_record_seq", BIG, nullable=False),
    sa.Column("last_record_seq", BIG, nullable=False),
    sa.Column("first_ts_ns", BIG, nullable=False),
    sa.Column("last_ts_ns", BIG, nullable=False),
    sa.Column("co2e_scope1_g", BIG, nullable=False),
    sa.Column("co2e_scope2_g", BIG, nullable=False),
    sa.Column("co2e_scope3_g", BIG, nullable=False),
    hash32("prev_hash", nullable=False),
    sa.Column("signature", sa.String(130), nullable=False),  # 0x + 64 bytes hex
    sa.Column("period", BIG, nullable=False),
    sa.Column("block_number", BIG, nullable=False),
    hash32("tx_hash", nullable=False),
    sa.Index("ix_batches_enterprise_period", "enterprise", "period"),
    sa.Index("ix_batches_gateway_id", "gateway_id", "seq"),
)

emissions = sa.Table(
    "emissions", metadata,
    address("enterprise", primary_key=True),
    sa.Column("period", BIG, primary_key=True, autoincrement=False),
    sa.Column("scope1_g", BIG, nullable=False),
    sa.Column("scope2_g", BIG, nullable=False),
    sa.Column("scope3_g", BIG, nullable=False),
    sa.Column("batches", BIG, nullable=False),
)

accounts = sa.Table(
    "accounts", metadata,
    address("enterprise", primary_key=True),
    sa.Column("period", BIG, primary_key=True, autoincrement=False),
    sa.Column("allocated_g", BIG, nullable=False),
    sa.Column("surrendered_g", BIG, nullable=False),
    sa.Column("verified_g", BIG, nullable=False),
    sa.Column("penalty_g", BIG, nullable=False),
    sa.Column("penalty_deducted_g", BIG, nullable=False),
    sa.Column("has_verified", sa.Boolean, nullable=False),
    sa.Column("settled", sa.Boolean, nullable=False),
    sa.Column("settled_status", sa.SmallInteger, nullable=False),
    # from the last Allocated event: the output figure and benchmark of a benchmark allocation
    sa.Column("output", BIG, nullable=False, server_default="0"),
    sa.Column("benchmark_g_per_unit", BIG, nullable=False, server_default="0"),
)

balances = sa.Table(
    "balances", metadata,
    sa.Column("period", BIG, primary_key=True, autoincrement=False),
    address("account", primary_key=True),
    sa.Column("amount_g", BIG, nullable=False),
)

benchmarks = sa.Table(
    "benchmarks", metadata,
    sa.Column("period", BIG, primary_key=True, autoincrement=False),
    sa.Column("industry_code", sa.String(64), primary_key=True),
    sa.Column("grams_per_unit", BIG, nullable=False),
)

reports = sa.Table(
    "reports", metadata,
    sa.Column("report_id", BIG, primary_key=True, autoincrement=False),
    address("enterprise", nullable=False),
    sa.Column("period", BIG, nullable=False),
    address("auditor", nullable=False),
    sa.Column("filed_at", BIG, nullable=False),
    sa.Column("verified_g", BIG, nullable=False),
    sa.Column("reported_g", BIG, nullable=False),
    hash32("report_hash", nullable=False),
    sa.Column("uri", sa.Text, nullable=False),
    sa.Index("ix_reports_enterprise_period", "enterprise", "period"),
)

findings = sa.Table(
    "findings", metadata,
    sa.Column("finding_id", BIG, primary_key=True, autoincrement=False),
    address("enterprise", nullable=False),
    sa.Column("period", BIG, nullable=False),
    sa.Column("kind", sa.SmallInteger, nullable=False),  # 1 abnormal, 2 falsified
    sa.Column("status", sa.SmallInteger, nullable=False),  # 1 filed, 2 confirmed, 3 rejected
    address("auditor", nullable=False),
    sa.Column("filed_at", BIG, nullable=False),
    sa.Column("corrected_g", BIG, nullable=False),
    sa.Column("previous_g", BIG, nullable=False),
    sa.Column("penalty_g", BIG, nullable=False),
    address("decided_by", nullable=False),
    sa.Column("decided_at", BIG, nullable=False),
    hash32("evidence_hash", nullable=False),
    hash32("gateway_key", nullable=False),
    sa.Column("batch_seq", BIG, nullable=False),
    hash32("record_leaf", nullable=False),
    sa.Column("evidence_uri", sa.Text, nullable=False),
    sa.Column("decision_note", sa.Text, nullable=False),
    sa.Index("ix_findings_enterprise_period", "enterprise", "period"),
)

penalty_rates = sa.Table(
    "penalty_rates", metadata,
    sa.Column("kind", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("bps", BIG, nullable=False),
)

offers = sa.Table(
    "offers", metadata,
    sa.Column("offer_id", BIG, primary_key=True, autoincrement=False),
    address("seller", nullable=False),
    sa.Column("period", BIG, nullable=False),
    sa.Column("status", sa.SmallInteger, nullable=False),  # 1 open, 2 filled, 3 cancelled
    sa.Column("created_at", BIG, nullable=False),
    address("buyer", nullable=False),  # 0x00…00: anyone
    sa.Column("amount_g", BIG, nullable=False),
    sa.Column("remaining_g", BIG, nullable=False),
    sa.Column("price_per_tonne", BIG, nullable=False),
)

trades = sa.Table(
    "trades", metadata,
    sa.Column("trade_id", BIG, primary_key=True, autoincrement=False),
    sa.Column("offer_id", BIG, nullable=False),
    address("seller", nullable=False),
    sa.Column("period", BIG, nullable=False),
    sa.Column("traded_at", BIG, nullable=False),
    address("buyer", nullable=False),
    sa.Column("amount_g", BIG, nullable=False),
    sa.Column("price_per_tonne", BIG, nullable=False),
    sa.Column("value", BIG, nullable=False),
    hash32("payment_ref", nullable=False),  # 0x00…00 until settled
    address("settled_by", nullable=False),
)
