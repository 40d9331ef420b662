"""Keeping immutable records of plain values out of the cyclic garbage collector's work.

At 2,000 devices the gateway makes 60,000 `Reading`s a second, and the commit as many committed
copies and row tuples. Every one is tracked by the cyclic GC, so each young-generation collection
walked tens of thousands of them: 10-20 ms of CPU, several times a second, each a pause of the
event loop. A `Reading` refers to str, int, float and None only; it cannot be part of a cycle,
so untracking it changes nothing but the collector's work (docs/compiled-path.md).

`tune_process()` is the process-wide part: the start-up objects frozen, the collector's
thresholds raised, the GIL's switch interval shortened (for a process that runs the gateway
and nothing else).

`untrack_atomic(objects)` untracks the exact tuples and the instances of ``__slots__`` classes
(no ``__dict__``) in the list whose references are all plain values (str, int, bool, float,
bytes, None), and returns how many. The caller passes only objects it never changes afterwards
(the frozen records). It is compiled (``mrv_core/_recordc.c``); without the extension, or with
``MRV_PURE_PYTHON=1``, it does nothing and returns 0: the same program, with more GC work.
"""

from __future__ import annotations

import gc
import os
import sys
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


#: The cyclic garbage collector's thresholds while the daemon runs (`gc.set_threshold`;
#: Python's default is (700, 10, 10)): a young collection per 200,000 net allocations. At
#: 50,000, 2,000 devices set one off about three times a second, each 4-7.5 ms of the event
#: loop walking the writer's lists of readings; a control command waited behind them
#: (docs/performance.md, "What limits the figures that miss").
GC_THRESHOLDS = (200_000, 50, 100)

#: How long a thread may hold the GIL while another waits for it (`sys.setswitchinterval`;
#: Python's default is 5 ms). The event loop gives the GIL up at every socket call, and a worker
#: thread (the SQLite writer, the commit's hashing, a batch header) that takes it then kept it
#: for up to the whole interval: a poll's or a command's step waited 3-16 ms for 0.1 ms of work.
SWITCH_INTERVAL_S = 0.001


def tune_process() -> int:
    """The process-wide settings of a daemon that has the process to itself (``mrv-gateway
    run``, once it has started; the pipeline benchmark, to measure as the daemon runs): the
    objects made so far frozen out of the cyclic collector's scans, its thresholds
    `GC_THRESHOLDS`, the GIL's switch interval `SWITCH_INTERVAL_S`; the collector enabled
    (`mrv-gateway run` pauses it over its start-up: `pause_collector`). Returns how many
    objects were frozen."""
    gc.collect()
    gc.freeze()
    # Readings live for a commit interval, so most of them outlived the default young
    # generation (700 allocations) and were scanned again in the older ones: 13 ms of CPU
    # a second at 500 devices. They are freed by reference counting, not by the collector.
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.enable()
    return gc.get_freeze_count()


def pause_collector() -> None:
    """The cyclic garbage collector off until `tune_process` (or ``gc.enable()``): for the
    start-up of a daemon that has the process to itself. Start-up makes about a million
    objects at 2,000 devices (imports, the config's models, the cleaners, the pollers) and
    frees few: each young collection walked the new ones and the older generations all of
    them again, some 20-30 % of the start-up's CPU (docs/performance.md, "Start-up"). The
    first thing `tune_process` does is the one full collection that start-up needs."""
    gc.disable()
