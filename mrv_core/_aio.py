"""Cancellation that cannot be lost, and a shutdown that cannot hang on a task that lost one.

Python 3.11's ``asyncio.wait_for`` (used inside pymodbus and aiomqtt) drops a cancellation that
arrives in the same loop turn as the awaited operation completes: the caller sees the operation's
result or error instead of `CancelledError`. A retry loop that catches that error then runs on,
and a shutdown that waits for it waits forever. Two defences, both here:

* `raise_if_cancelling()` at the top of each retry loop and after each caught error: the lost
  request is still counted by ``Task.cancelling()``, so it is honoured there.
* `cancel_and_wait()` for the daemon's shutdown: cancel, and cancel again every ``retry_s``
  any task that has not ended, naming it in the log.

Our own timed waits use ``asyncio.timeout()``, which does not have the race.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

log = logging.getLogger("mrv.gateway")


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that an ``asyncio.wait_for`` swallowed."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]], *,
                          retry_s: float = 1.0) -> None:
    """Cancel ``tasks`` and wait until every one has ended, re-cancelling stragglers."""
    pending = {t for t in tasks if not t.done()}
    for t in pending:
        t.cancel()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=retry_s)
        for t in pending:
            log.warning("task %s did not end when cancelled; cancelling it again", t.get_name())
            t.cancel()
