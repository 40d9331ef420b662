"""MRV edge gateway: the record types, and (through ``gateway._cli``) the daemon and its tools."""

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
