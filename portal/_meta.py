"""The SQL metadata every table of the portal is declared on, and the column conventions.

Conventions (docs/portal.md, "Database"): addresses are lowercase ``0x`` hex text (42
characters); hashes and keys are lowercase ``0x`` hex text (66 characters); times are integer
nanoseconds since the Unix epoch, UTC (``*_ns``) or block timestamps in seconds (``*_at``);
amounts are integer grams CO2e (BIGINT; a chain value beyond 2**63-1 is refused by the indexer
as an anomaly, never stored rounded); a float64 value is stored as REAL plus its exact IEEE-754
bits as a signed 64-bit integer (``value_bits``).
"""

from __future__ import annotations

import sqlalchemy as sa

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING)

ADDRESS = sa.String(42)
HASH = sa.String(66)


def address(name: str, **kw: object) -> sa.Column[str]:
    return sa.Column(name, ADDRESS, **kw)  # type: ignore[arg-type]


def hash32(name: str, **kw: object) -> sa.Column[str]:
    return sa.Column(name, HASH, **kw)  # type: ignore[arg-type]
