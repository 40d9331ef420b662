"""The one record type that moves through the gateway, and its quality bitmask.

A `Reading` is immutable. Drivers create it with ``seq = 0`` and an empty ``gateway_id``; the
outbox assigns both when it commits the reading (the acknowledgement point). Cleaning never
changes ``value``: it returns a new `Reading` with more quality bits set.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Quality(enum.IntFlag):
    """Quality bitmask (uint32). Bits 0-7 mirror the HJ 212 per-factor flags; bits 8 and up are
    the gateway's own checks. The table with the HJ 212 mapping is in ``docs/formats.md``."""

    OK = 0
    # -- device / protocol state (HJ 212 flags) --
    COMM_FAULT = 1 << 0  # B: no answer from the device; value is NaN
    STOPPED = 1 << 1  # F: process stopped
    MAINTENANCE = 1 << 2  # M
    MANUAL = 1 << 3  # S: manually entered value
    DEVICE_FAULT = 1 << 4  # D: the device reports a fault, or an exception response
    CALIBRATION = 1 << 5  # C
    DEVICE_OVER_RANGE = 1 << 6  # T: the device reports over range
    # -- gateway checks (cleaning/) --
    RANGE = 1 << 8  # outside the configured physical range
    RATE_OF_CHANGE = 1 << 9
    SPIKE = 1 << 10
    FLATLINE = 1 << 11
    SENTINEL = 1 << 12  # the register holds a "not implemented" sentinel
    TS_DUPLICATE = 1 << 13
    TS_NON_MONOTONIC = 1 << 14
    TS_FUTURE = 1 << 15
    TS_STALE = 1 << 16
    DUPLICATE = 1 << 17
    COUNTER_ROLLOVER = 1 << 18  # informational: the counter wrapped, the delta was corrected
    COUNTER_RESET = 1 << 19
    COUNTER_GLITCH = 1 << 20
    # -- derived records --
    INSUFFICIENT = 1 << 21  # an aggregate without enough valid data (e.g. < 45 valid minutes)
    SUBSTITUTED = 1 << 22  # a substitute value for missing data, not a measurement


#: Bits that make a reading unusable for aggregation and emissions.
INVALID = int(
    Quality.COMM_FAULT
    | Quality.STOPPED
    | Quality.MAINTENANCE
    | Quality.DEVICE_FAULT
    | Quality.CALIBRATION
    | Quality.DEVICE_OVER_RANGE
    | Quality.RANGE
    | Quality.RATE_OF_CHANGE
    | Quality.SPIKE
    | Quality.FLATLINE
    | Quality.SENTINEL
    | Quality.TS_DUPLICATE
    | Quality.TS_NON_MONOTONIC
    | Quality.TS_FUTURE
    | Quality.TS_STALE
    | Quality.DUPLICATE
    | Quality.COUNTER_RESET
    | Quality.COUNTER_GLITCH
    | Quality.INSUFFICIENT
)

# Order matters: the first matching bit names the HJ 212 flag.
_HJ212_ORDER: tuple[tuple[int, str], ...] = (
    (Quality.COMM_FAULT, "B"),
    (Quality.DEVICE_FAULT | Quality.SENTINEL, "D"),
    (Quality.STOPPED, "F"),
    (Quality.MAINTENANCE, "M"),
    (Quality.CALIBRATION, "C"),
    (Quality.MANUAL, "S"),
    (Quality.DEVICE_OVER_RANGE | Quality.RANGE, "T"),
)


def hj212_flag(quality: int) -> str:
    """The HJ 212 per-factor flag (N/F/M/S/D/C/T/B) that best describes ``quality``.

    Gateway-check bits without an HJ 212 counterpart (spike, flatline, timestamps ...) keep the
    flag ``N``: HJ 212 has no letter for them, and the full bitmask travels with the record.
    """
    for bits, flag in _HJ212_ORDER:
        if quality & bits:
            return flag
    return "N"


def is_valid(quality: int) -> bool:
    return not quality & INVALID


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    """One measured value of one point at one time.

    ``ts_ns`` is the acquisition time in integer nanoseconds since the Unix epoch (UTC).
    ``value`` is the engineering value after scale and offset; NaN when there is none (a comms
    fault). ``seq`` and ``gateway_id`` are assigned by the outbox at commit; 0 and "" before.
    """

    point_id: str
    ts_ns: int
    value: float
    unit: str
    source: str
    quality: int = 0
    seq: int = 0
    gateway_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DerivedRecord:
    """A value computed from raw readings: an aggregate, a substitute, an emissions figure.

    It names the raw readings it came from by their record-seq range ``from_seq..to_seq``
    (0..0 when it comes from none, e.g. a substitute for an hour with no data). Raw readings
    are never changed; a derived record is a new record next to them.
    """

    point_id: str
    derivation: str  # e.g. "hour-mean", "substitute:epa-75.33:tier-1", "co2e:scope1"
    period_start_ns: int
    period_end_ns: int
    value: float
    unit: str
    from_seq: int
    to_seq: int
    quality: int = 0
    seq: int = 0
    gateway_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    """Something the gateway did or decided: a control command and its verdict, a write and
    its read-back, a local rule action, a config change. ``payload`` is canonical JSON
    (sorted keys, no spaces, UTF-8), so its bytes are reproducible."""

    ts_ns: int
    category: str  # "command" | "write" | "local-rule" | "config" | ...
    subject: str  # command id, rule name, point id ...
    payload: str
    seq: int = 0
    gateway_id: str = ""


Record = Reading | DerivedRecord | AuditRecord


_new = object.__new__
_set_point, _set_ts, _set_value, _set_unit, _set_source, _set_quality, _set_seq, _set_gw = (
    Reading.__dict__[f].__set__ for f in (
        "point_id", "ts_ns", "value", "unit", "source", "quality", "seq", "gateway_id"))


def new_reading(point_id: str, ts_ns: int, value: float, unit: str, source: str,
                quality: int = 0) -> Reading:
    """``Reading(point_id=..., ...)`` built through the slots (the pollers' hot path; the
    same object, about twice as fast as the frozen dataclass's ``__init__``)."""
    c = _new(Reading)
    _set_point(c, point_id)
    _set_ts(c, ts_ns)
    _set_value(c, value)
    _set_unit(c, unit)
    _set_source(c, source)
    _set_quality(c, quality)
    _set_seq(c, 0)
    _set_gw(c, "")
    return c


def committed_reading(r: Reading, seq: int, gateway_id: str) -> Reading:
    """``r`` as the outbox commits it: ``dataclasses.replace(r, seq=seq, gateway_id=...)``,
    built through the slots directly (about twice as fast as the frozen dataclass's
    ``__init__``; the outbox's hot path)."""
    c = _new(Reading)
    _set_point(c, r.point_id)
    _set_ts(c, r.ts_ns)
    _set_value(c, r.value)
    _set_unit(c, r.unit)
    _set_source(c, r.source)
    _set_quality(c, r.quality)
    _set_seq(c, seq)
    _set_gw(c, gateway_id)
    return c
