"""MRV edge gateway: the record type, and (through ``gateway._cli``) the daemon and its tools."""

from gateway._records import INVALID, Quality, Reading, hj212_flag, is_valid

__all__ = ["INVALID", "Quality", "Reading", "hj212_flag", "is_valid"]
