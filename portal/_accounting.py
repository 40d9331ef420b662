"""Pure pieces of the carbon account and the emissions series: compliance as the contract
computes it, the day and month buckets, and the data-quality ratios."""

from __future__ import annotations

import datetime as dt
from typing import Literal

DAY_NS = 86_400 * 10**9
GRAMS_PER_TONNE = 1_000_000
ComplianceName = Literal["open", "unverified", "compliant", "non_compliant"]
_NAMES: tuple[ComplianceName, ...] = ("open", "unverified", "compliant", "non_compliant")


def compliance(*, closed: bool, has_verified: bool, verified_g: int, penalty_g: int,
               penalty_deducted_g: int, surrendered_g: int, settled: bool,
               settled_status: int) -> ComplianceName:
    """``Allowances.compliance`` (the settled status once settled): open until the period
    closes; unverified without a verified figure; compliant when the surrendered allowances
    cover verified emissions plus the penalty not yet deducted."""
    if settled and 0 <= settled_status < len(_NAMES):
        return _NAMES[settled_status]
    if not closed:
        return "open"
    if not has_verified:
        return "unverified"
    owed = verified_g + penalty_g - penalty_deducted_g
    return "compliant" if surrendered_g >= owed else "non_compliant"


def obligation(*, verified_g: int, penalty_g: int, penalty_deducted_g: int) -> int:
    return verified_g + penalty_g - penalty_deducted_g


def bucket_start_ns(day: int, bucket: Literal["day", "month"]) -> int:
    """The start (ns) of the day or month bucket holding UTC day ``day``."""
    if bucket == "day":
        return day * DAY_NS
    d = dt.date(1970, 1, 1) + dt.timedelta(days=day)
    start = dt.datetime(d.year, d.month, 1, tzinfo=dt.UTC)
    return int(start.timestamp()) * 10**9


def ratio(part: int, whole: int) -> float | None:
    """``part / whole``, or None when there is nothing to measure."""
    return None if whole <= 0 else part / whole


def vwap(volume_g: int, price_volume: int) -> float | None:
    """Volume-weighted average price per tonne: sum(amount x price) / sum(amount)."""
    return None if volume_g <= 0 else price_volume / volume_g
