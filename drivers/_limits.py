"""Limits every driver applies to untrusted input before it becomes a reading
(``docs/drivers.md``, "Limits on untrusted input")."""

from __future__ import annotations

from typing import Final

#: Acquisition times a reading may carry, in ns since the Unix epoch: after
#: 1970-01-01T00:00:00Z, up to the largest ``int64 tsNs`` of the record format
#: (2262-04-11T23:47:16.854775807Z). A device's time outside is refused where it is parsed.
TS_NS_MIN: Final = 1
TS_NS_MAX: Final = 2**63 - 1
TS_RANGE_TEXT: Final = "1970-01-01T00:00:00Z .. 2262-04-11T23:47:16Z (the record format's int64 ns)"


def ts_in_range(ns: int) -> bool:
    return TS_NS_MIN <= ns <= TS_NS_MAX
