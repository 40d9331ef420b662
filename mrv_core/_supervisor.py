"""The supervisor: runs one named task, restarts it with capped backoff when it fails, stops it
for good on a `FatalError` (its state becomes ``alarm``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from mrv_core._aio import raise_if_cancelling
from mrv_core._errors import FatalError
from mrv_core._metrics import Metrics

log = logging.getLogger("mrv.daemon")

#: A run of at least this long resets the backoff to ``initial_s``.
HEALTHY_RUN_S = 60.0


async def supervise(name: str, factory: Callable[[], Awaitable[None]], metrics: Metrics,
                    *, initial_s: float = 0.5, max_s: float = 30.0,
                    monotonic: Callable[[], float] = time.monotonic) -> None:
    """Run ``factory()`` until it returns; restart it after an error (``task_restarts`` is
    counted), waiting ``initial_s`` doubling up to ``max_s``; return on a `FatalError`."""
    delay = initial_s
    while True:
        started = monotonic()
        try:
            await factory()
            log.info("task %s finished", name)
            return
        except FatalError as e:
            metrics.set_state(name, "alarm", str(e))
            log.critical("task %s stopped: %s", name, e)
            return
        except Exception:
            metrics.inc("task_restarts")
            log.exception("task %s failed; restarting in %.1f s", name, delay)
            raise_if_cancelling()
        if monotonic() - started > HEALTHY_RUN_S:
            delay = initial_s
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_s)
