"""Differential fuzz target of the cleaning checks (issue 12: one rule per check, two paths).

Cleaning parses no bytes from outside; what it must never do is give different flags on its two
paths (the numpy kernels and the scalar streaming steps, `cleaning._rules`). The target decodes
the bytes into a config and a stream of readings of two points (timestamps near each other or
anywhere in int64, values anywhere in float64 including NaN and inf, device quality bits) and
cleans it three ways: the default paths in chunks of 1-3 readings, the numpy path only (whole)
and the scalar path only (whole). Any difference in any quality is a finding (AssertionError).
An input too short to hold a reading is the declared rejection (`NoReadings`).
"""

from __future__ import annotations

import struct

from cleaning._config import (
    ChecksConfig,
    CounterCheck,
    FlatlineCheck,
    RangeCheck,
    RateCheck,
    SpikeCheck,
    TimestampCheck,
)
from cleaning._rules import wrap_i64
from cleaning._stream import Cleaner
from mrv_core._records import Quality, Reading
from tests.fuzz import Target

S = 1_000_000_000
T0 = 1_700_000_000 * S
_RECORD = struct.Struct("<BhdB")  # kind, time step, value, quality bits (12 bytes)
_QUALITY = (0, 0, 0, int(Quality.COMM_FAULT), int(Quality.RANGE), 0, int(Quality.SPIKE), 0)
_VALUES = (0.0, 1.0, 1000.0, 999.0, 80.0, 65535.0, -1.0, 1e308)


class NoReadings(ValueError):
    """The input holds no complete reading."""


def _config(b: int) -> ChecksConfig:
    return ChecksConfig(
        range=RangeCheck(min=0, max=200) if b & 1 else None,
        sentinels=(65535.0,) if b & 2 else (),
        timestamps=TimestampCheck(max_future_s=5, max_age_s=3600 if b & 4 else None) if b & 8 else None,
        duplicates=bool(b & 16),
        rate_of_change=RateCheck(max_per_s=5.0) if b & 32 else None,
        spike=SpikeCheck(window=3 + (b >> 6), k=3.0, min_deviation=0.5 * (b >> 7)),
        flatline=FlatlineCheck(count=3, duration_s=10) if b & 4 else None,
    )


def _counter_config(b: int) -> ChecksConfig:
    return ChecksConfig(
        timestamps=TimestampCheck(max_future_s=5) if b & 8 else None,
        counter=CounterCheck(register_max=1000.0, max_step=10.0 if b & 1 else None,
                             max_rate_per_s=2.0 if b & 2 or not b & 1 else None),
    )


def _decode(data: bytes) -> tuple[dict[str, ChecksConfig], list[Reading], int]:
    if len(data) < 1 + _RECORD.size:
        raise NoReadings(f"{len(data)} bytes: no reading")
    b = data[0]
    configs = {"a": _config(b), "c": _counter_config(b)}
    t = T0
    readings = []
    for off in range(1, len(data) - _RECORD.size + 1, _RECORD.size):
        kind, step, value, qsel = _RECORD.unpack_from(data, off)
        # a step of step/4 seconds (often 0 or negative; a Reading's ts_ns is an int64), or
        # anywhere in int64 (numpy wraps the differences)
        t = wrap_i64(t + step * (S // 4)) if kind & 1 else struct.unpack("<q", data[off + 1:off + 9])[0]
        if not kind & 2:
            value = _VALUES[(kind >> 2) & 7] + (step & 3)
        readings.append(Reading(point_id="c" if kind & 32 else "a", ts_ns=t, value=value,
                                unit="kW", source="fuzz", quality=_QUALITY[qsel & 7]))
    return configs, readings, T0 + (b & 7) * 60 * S


def _clean(configs: dict[str, ChecksConfig], readings: list[Reading], now: int,
           fast_max: int | None, chunks: int) -> list[int]:
    c = Cleaner(configs)
    c._fast_max = fast_max
    out: list[int] = []
    i = 0
    while i < len(readings):
        n = len(readings) if chunks == 0 else 1 + i % chunks
        out += [r.quality for r in c.clean(readings[i:i + n], now)]
        i += n
    return out


def _run(data: bytes) -> object:
    configs, readings, now = _decode(data)
    default = _clean(configs, readings, now, None, 3)
    numpy_only = _clean(configs, readings, now, 0, 0)
    scalar_only = _clean(configs, readings, now, 1 << 30, 0)
    if not default == numpy_only == scalar_only:
        raise AssertionError(f"paths differ: default {default}, numpy {numpy_only}, scalar {scalar_only}")
    return default


def _seed(b: int, rows: list[tuple[int, int, float, int]]) -> bytes:
    return bytes([b]) + b"".join(_RECORD.pack(*r) for r in rows)


TARGETS = [
    Target(
        name="cleaning.paths",
        run=_run,
        rejects=(NoReadings,),
        seeds=(
            _seed(0xFF, [(1, 4, 0.0, 0)] * 6 + [(3, 4, 90.0, 0), (3, 0, 90.0, 0), (1, -4, 0.0, 3)]),
            _seed(0x3B, [(33 | 2, 4, float(v), 0) for v in (1, 5, 999, 3, 20, 20, 4)]),
            _seed(0x1C, [(3, 8, 80.0, 0), (2, 0, float("nan"), 0), (0, 0, 0.0, 0), (3, 1, 1e308, 0)]),
        ),
        max_len=600,
    )
]
