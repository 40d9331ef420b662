"""Limits on untrusted JSON, checked before it is parsed (pure).

Python's ``json`` module parses nested arrays and objects recursively in C; how deep it can go
before it overflows the C stack depends on the process's recursion limit, which a dependency
may raise (py_ecc sets it to 100,000 unless ``ledger_client._deps`` undoes it). So every JSON
that reaches us from outside (sensor payloads, commands, acks, telemetry, proof bundles, address
books) is first measured here: its size, and its nesting depth counted by a scan of the bytes
that never recurses. Only then is it parsed. One scanner for all of them.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["InputLimitError", "check_json", "json_depth", "loads_bounded"]

_STRUCTURAL = re.compile(rb'["\\\[\]{}]')
_QUOTE, _BACKSLASH, _OPEN_A, _OPEN_O = 0x22, 0x5C, 0x5B, 0x7B


class InputLimitError(ValueError):
    """The input exceeds a size or nesting limit; it was not parsed."""


#: A JSON string, escapes honoured, or an unterminated one up to the end (possessive: linear on
#: any input, never a backtracking blow-up).
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
#: Every byte but the four brackets (deleted by ``bytes.translate``).
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(data: bytes, stop_at: int | None = None) -> int:
    """The deepest nesting of arrays and objects in ``data`` (strings skipped, escapes
    honoured), without parsing it; stops counting once ``stop_at`` is exceeded. Works on any
    bytes: UTF-8 never puts ASCII bytes inside a multi-byte character.

    The strings are cut out first (one regular-expression pass in C), so only the brackets
    outside them are counted here; a closing bracket never takes the count below zero. An
    unterminated string hides the rest of the input, as it would from a parser."""
    # no escapes: the strings are exactly what lies between quotes 2k+1 and 2k+2
    outside = (_STRING.sub(b"", data) if b"\\" in data
               else b"".join(data.split(b'"')[::2]))
    brackets = outside.translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for c in brackets:
        if c in (_OPEN_A, _OPEN_O):
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_at is not None and deepest > stop_at:
                    return deepest
        elif depth:
            depth -= 1
    return deepest


def _json_depth_scan(data: bytes, stop_at: int | None = None) -> int:
    """The former scanner of `json_depth` (one step per quote, backslash and bracket), kept
    as the reference the tests compare it with."""
    depth = deepest = 0
    in_string = False
    skip = -1
    for m in _STRUCTURAL.finditer(data):
        pos = m.start()
        if pos == skip:
            continue
        c = data[pos]
        if in_string:
            if c == _BACKSLASH:
                skip = pos + 1
            elif c == _QUOTE:
                in_string = False
        elif c == _QUOTE:
            in_string = True
        elif c in (_OPEN_A, _OPEN_O):
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_at is not None and deepest > stop_at:
                    return deepest
        elif c != _BACKSLASH:
            depth = max(0, depth - 1)
    return deepest


def check_json(data: bytes, *, max_bytes: int, max_depth: int, what: str = "payload") -> None:
    """Raise `InputLimitError` when ``data`` is larger than ``max_bytes`` or nests deeper than
    ``max_depth``."""
    if len(data) > max_bytes:
        raise InputLimitError(f"{what} of {len(data)} bytes exceeds {max_bytes}")
    depth = json_depth(data, stop_at=max_depth)
    if depth > max_depth:
        raise InputLimitError(f"{what} nests deeper than {max_depth} levels")


def loads_bounded(data: bytes, *, max_bytes: int, max_depth: int, what: str = "payload",
                  **kwargs: Any) -> Any:
    """``json.loads`` after `check_json`. Every failure is a ``ValueError``: `InputLimitError`
    for the limits, ``json.JSONDecodeError`` or ``ValueError`` (e.g. an integer of more than
    4,300 digits, invalid UTF-8) for the rest."""
    check_json(data, max_bytes=max_bytes, max_depth=max_depth, what=what)
    try:
        return json.loads(data, **kwargs)
    except RecursionError:  # not reachable after the depth check; kept as a last guard
        raise InputLimitError(f"{what} nests too deep") from None
