"""MRV edge gateway: the composition root (the daemon, its CLIs). Nothing imports it; the record
types are re-exported from `mrv_core` (where they live) for old callers and tests."""

from mrv_core import (
    INVALID,
    AuditRecord,
    DerivedRecord,
    Quality,
    Reading,
    Record,
    hj212_flag,
    is_valid,
)

__all__ = [
    "INVALID",
    "AuditRecord",
    "DerivedRecord",
    "Quality",
    "Reading",
    "Record",
    "hj212_flag",
    "is_valid",
]
