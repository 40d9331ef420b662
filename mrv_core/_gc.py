"""Keeping immutable records of plain values out of the cyclic garbage collector's work.

At 2,000 devices the gateway makes 60,000 `Reading`s a second, and the commit as many committed
copies and row tuples. Every one is tracked by the cyclic GC, so each young-generation collection
walked tens of thousands of them: 10-20 ms of CPU, several times a second, each a pause of the
event loop. A `Reading` refers to str, int, float and None only; it cannot be part of a cycle,
so untracking it changes nothing but the collector's work (docs/compiled-path.md).

`untrack_atomic(objects)` untracks the exact tuples and the instances of ``__slots__`` classes
(no ``__dict__``) in the list whose references are all plain values (str, int, bool, float,
bytes, None), and returns how many. The caller passes only objects it never changes afterwards
(the frozen records). It is compiled (``mrv_core/_recordc.c``); without the extension, or with
``MRV_PURE_PYTHON=1``, it does nothing and returns 0: the same program, with more GC work.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any


def _untrack_nothing(objects: list[Any]) -> int:
    if not isinstance(objects, list):
        raise TypeError("untrack_atomic: a list is required")
    return 0


_compiled: Callable[[list[Any]], int] | None = None
#: The compiled builder of a Modbus read's readings (``mrv_core/_recordc.c``,
#: ``block_readings(out, fast, values, ts_ns, source, sentinel_quality, reading_type)``;
#: drivers/modbus/_io.py runs its Python loop when it returns False); None on the pure path.
block_readings: Callable[[list[Any], tuple[Any, ...], tuple[Any, ...], int, str, int, type],
                         bool] | None = None
if os.environ.get("MRV_PURE_PYTHON", "") in ("", "0"):
    try:
        from mrv_core._recordc import block_readings
        from mrv_core._recordc import untrack_atomic as _compiled
    except ImportError:  # not built (no C compiler at install)
        _compiled = block_readings = None

#: True when the compiled `untrack_atomic` is in use.
UNTRACK_COMPILED: bool = _compiled is not None

untrack_atomic: Callable[[list[Any]], int] = (
    _compiled if _compiled is not None else _untrack_nothing)
