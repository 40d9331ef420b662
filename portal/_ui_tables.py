"""The web view's own tables: one-time sign-in links (``mrvctl login``) and the live telemetry
the portal keeps for governance bodies (the newest readings per gateway, each with whether its
record signature verified), and the newest state of their local alarms."""

from __future__ import annotations

import sqlalchemy as sa

from portal._meta import address, metadata

BIG = sa.BigInteger

login_links = sa.Table(
    "login_links", metadata,
    # SHA-256 of the link's secret code (the code itself is never stored), hex
    sa.Column("code_hash", sa.String(64), primary_key=True),
    address("address", nullable=False),
    sa.Column("created_ns", BIG, nullable=False),
    sa.Column("expires_ns", BIG, nullable=False),
    sa.Column("used_ns", BIG, nullable=True),  # NULL: not yet opened
    sa.Index("ix_login_links_expires", "expires_ns"),
)

telemetry_live = sa.Table(
    "telemetry_live", metadata,
    sa.Column("id", BIG().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("gateway_id", sa.String(128), nullable=False),
    sa.Column("seq", BIG, nullable=False),
    sa.Column("point", sa.String(128), nullable=False),
    sa.Column("ts_ns", BIG, nullable=False),
    sa.Column("value", sa.Float, nullable=True),  # NULL: NaN
    sa.Column("unit", sa.String(32), nullable=False),
    sa.Column("quality", sa.Integer, nullable=False),
    # the reading carried a record signature ...
    sa.Column("signed", sa.Boolean, nullable=False),
    # ... and it verified with the gateway's registered key
    sa.Column("verified", sa.Boolean, nullable=False),
    sa.Column("received_ns", BIG, nullable=False),
    sa.Index("ix_telemetry_live_gateway", "gateway_id", "id"),
)

gateway_alarms = sa.Table(
    "gateway_alarms", metadata,
    # the newest state of each (gateway, rule, point) alarm, from the gateways' retained
    # ``<prefix>/<gw>/alarm`` messages (docs/control.md), kept by the telemetry worker
    sa.Column("gateway_id", sa.String(128), primary_key=True),
    sa.Column("rule", sa.String(128), primary_key=True),
    sa.Column("point", sa.String(128), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),  # "raised" | "cleared"
    sa.Column("level", sa.String(32), nullable=True),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("unit", sa.String(32), nullable=True),
    sa.Column("ts_ms", BIG, nullable=False),
    sa.Column("received_ns", BIG, nullable=False),
)
