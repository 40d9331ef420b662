"""Pure mapping of MQTT messages onto readings: topic filters, JSON paths, values, timestamps.

No I/O. Every problem raises `PayloadError` with a message that names what was expected, so the
source can count and log it and go on with the next message.

Limits applied before a payload is parsed (``docs/drivers.md``, "Limits on untrusted input"):
its size (``max_payload_bytes``) and its JSON nesting depth (`MAX_JSON_DEPTH`), found by a linear
scan outside strings, so the recursive JSON parser never sees a payload deep enough to exhaust
the stack. Values must be finite float64 numbers; timestamps must fall in `TS_NS_MIN` ..
`TS_NS_MAX`, the range of the record format's ``int64 tsNs`` after the Unix epoch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from drivers._limits import TS_NS_MAX, TS_NS_MIN, TS_RANGE_TEXT, ts_in_range
from drivers.mqtt._config import MqttPoint
from mrv_core import Reading, json_depth

__all__ = ["MAX_JSON_DEPTH", "TS_NS_MAX", "TS_NS_MIN", "Mapping", "PayloadError", "compile_points",
           "json_depth", "lookup", "parse_json", "readings_from", "split_path", "to_ts_ns",
           "to_value", "topic_matches"]


class PayloadError(ValueError):
    """A message that cannot become a reading; the text says why."""


def topic_matches(topic: str, topic_filter: str) -> bool:
    """MQTT 3.1.1 section 4.7 matching: ``+`` one level, ``#`` the rest (and the parent level);
    a filter starting with a wildcard does not match topics starting with ``$``."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    t = topic.split("/")
    f = topic_filter.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t):
            return False
        if level != "+" and level != t[i]:
            return False
    return len(t) == len(f)


def split_path(path: str) -> tuple[str, ...]:
    """``"data.co2.value"`` -> ``("data", "co2", "value")``; ``"$"`` (the payload itself) -> ()."""
    return () if path == "$" else tuple(path.split("."))


_MISSING = object()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Deepest JSON nesting (arrays and objects) a payload may have; a sensor's message needs a few.
MAX_JSON_DEPTH = 32

def parse_json(payload: bytes, where: str, *, max_bytes: int,
               max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` behind the limits: size first, then UTF-8 (RFC 8259 8.1; a leading BOM is
    allowed), then nesting depth; `PayloadError` for any of them and for invalid JSON (numbers
    of more than 4,300 digits too). UTF-8 is checked before the depth scan because in UTF-8,
    and only there, the bytes of ``"``, ``[``, ``{`` always are those characters."""
    if len(payload) > max_bytes:
        raise PayloadError(f"{where}: payload of {len(payload)} bytes, expected at most {max_bytes}")
    try:
        text = payload.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PayloadError(f"{where}: expected a UTF-8 JSON payload ({e})") from None
    depth = json_depth(payload)
    if depth > max_depth:
        raise PayloadError(f"{where}: JSON nested {depth} deep, expected at most {max_depth}")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise PayloadError(f"{where}: expected a JSON payload ({str(e)[:80]})") from None


def lookup(doc: Any, path: Sequence[str]) -> Any:
    """Walk ``path`` through nested objects (by key) and lists (by index); _MISSING if absent."""
    cur = doc
    for part in path:
        if isinstance(cur, dict):
            if part not in cur:
                return _MISSING
            cur = cur[part]
        elif isinstance(cur, list):
            try:
                cur = cur[int(part)]
            except (ValueError, IndexError):
                return _MISSING
        else:
            return _MISSING
    return cur


def to_value(x: Any, where: str) -> float:
    """A JSON value as a float: numbers, booleans (1/0) and numeric strings."""
    if isinstance(x, bool):
        return 1.0 if x else 0.0
    if isinstance(x, int | float):
        try:
            v = float(x)
        except OverflowError:  # an integer beyond float64
            raise PayloadError(f"{where}: expected a number within the float64 range, got "
                               f"{_show(x)}") from None
    elif isinstance(x, str):
        try:
            v = float(x.strip())
        except ValueError:
            raise PayloadError(f"{where}: expected a number, got the string {x[:40]!r}") from None
    else:
        raise PayloadError(f"{where}: expected a number, got {type(x).__name__} "
                           f"{json.dumps(x)[:40]}")
    if not math.isfinite(v):
        raise PayloadError(f"{where}: expected a finite number, got {_show(x)}")
    return v


def _show(x: Any) -> str:
    """``x`` for an error message, short (str() of an integer of over 4,300 digits would raise)."""
    if isinstance(x, int) and x.bit_length() > 128:
        return f"an integer of {x.bit_length()} bits"
    return repr(str(x)[:40])


def _checked_ns(ns: int, x: Any, where: str) -> int:
    if not ts_in_range(ns):
        raise PayloadError(f"{where}: time {_show(x)} is outside {TS_RANGE_TEXT}")
    return ns


_SCALE = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
#: Largest plausible epoch (year ~2286) in each unit, to tell the units apart in "auto" mode.
_AUTO = ((1e10, "s"), (1e13, "ms"), (1e16, "us"), (1e19, "ns"))


def to_ts_ns(x: Any, unit: str, where: str) -> int:
    """An acquisition time as integer ns since the epoch, within `TS_NS_MIN` .. `TS_NS_MAX`.

    Numbers: epoch in ``unit`` (s, ms, us, ns; "auto" picks by magnitude). Strings: ISO 8601 with
    a UTC offset (``2025-01-01T08:00:00+08:00`` or ``...Z``), or a number in a string.
    """
    if isinstance(x, str) and unit in ("auto", "iso8601"):
        text = x.strip()
        if unit == "auto":
            try:
                return to_ts_ns(float(text), "auto", where)
            except ValueError:
                pass
        try:
            t = datetime.fromisoformat(text)
        except ValueError:
            raise PayloadError(f"{where}: expected an ISO 8601 time, got {x[:40]!r}") from None
        if t.tzinfo is None:
            raise PayloadError(f"{where}: expected a time with a UTC offset (e.g. Z or +08:00), "
                               f"got {x[:40]!r}")
        try:
            ns = ((t - _EPOCH) // timedelta(microseconds=1)) * 1000
        except OverflowError:
            raise PayloadError(f"{where}: time {x[:40]!r} is out of range") from None
        return _checked_ns(ns, x, where)
    if unit == "iso8601":
        raise PayloadError(f"{where}: expected an ISO 8601 string, got {json.dumps(x)[:40]}")
    if isinstance(x, bool) or not isinstance(x, int | float | str):
        raise PayloadError(f"{where}: expected an epoch number, got {json.dumps(x)[:40]}")
    try:
        v = float(x)
    except ValueError:
        raise PayloadError(f"{where}: expected an epoch number, got {_show(x)}") from None
    except OverflowError:  # an integer beyond float64
        raise PayloadError(f"{where}: epoch time {_show(x)} is out of range") from None
    if not math.isfinite(v) or v <= 0:
        raise PayloadError(f"{where}: expected a positive epoch time, got {_show(x)}")
    if unit == "auto":
        for limit, name in _AUTO:
            if v < limit:
                unit = name
                break
        else:
            raise PayloadError(f"{where}: epoch time {_show(x)} is too large for s, ms, us "
                               f"or ns")
    if isinstance(x, int) and not isinstance(x, bool):
        return _checked_ns(x * _SCALE[unit], x, where)
    scaled = v * _SCALE[unit]
    if not math.isfinite(scaled):
        raise PayloadError(f"{where}: epoch time {_show(x)} is out of range")
    return _checked_ns(round(scaled), x, where)


@dataclass(frozen=True, slots=True)
class Mapping:
    """One configured point, compiled."""

    point: MqttPoint
    value_path: tuple[str, ...]
    ts_path: tuple[str, ...] | None


def compile_points(points: Sequence[MqttPoint]) -> list[Mapping]:
    return [Mapping(p, split_path(p.value), None if p.timestamp is None else split_path(p.timestamp))
            for p in points]


def readings_from(topic: str, payload: bytes, mappings: Sequence[Mapping], *, source: str,
                  now_ns: int, max_bytes: int) -> tuple[list[Reading], list[str]]:
    """The readings a message carries for the points whose filter matches ``topic``, and the
    problems found (one text per point that could not be read). Raises `PayloadError` when the
    message as a whole is unusable (too large, not JSON)."""
    matching = [m for m in mappings if topic_matches(topic, m.point.topic)]
    if not matching:
        return [], []
    doc = parse_json(payload, topic, max_bytes=max_bytes)
    out: list[Reading] = []
    problems: list[str] = []
    for m in matching:
        p = m.point
        try:
            raw = lookup(doc, m.value_path)
            if raw is _MISSING:
                raise PayloadError(f"{topic}: no value at {p.value!r} for point {p.id}")
            value = to_value(raw, f"{topic} {p.value}")
            ts = now_ns
            if m.ts_path is not None:
                raw_ts = lookup(doc, m.ts_path)
                if raw_ts is _MISSING:
                    raise PayloadError(f"{topic}: no timestamp at {p.timestamp!r} for point {p.id}")
                ts = to_ts_ns(raw_ts, p.timestamp_unit, f"{topic} {p.timestamp}")
        except PayloadError as e:
            problems.append(str(e))
            continue
        out.append(Reading(point_id=p.id, ts_ns=ts, value=value, unit=p.unit, source=source))
    return out, problems
