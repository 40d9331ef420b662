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
                    monotonic: Callable[[], float] = time.monotonic,
                    healthy_s: float = HEALTHY_RUN_S) -> None:
    """Run ``factory()`` until it returns; restart it after an error (``task_restarts`` is
    counted), waiting ``initial_s`` doubling up to ``max_s``; return on a `FatalError`.

    A task that failed is ``failing`` in the health view (component ``name``, with the error)
    until it has run ``healthy_s`` since its last restart without failing again (then ``ok``),
    so a task that keeps failing (a batcher that cannot build a batch) is seen, not only
    logged. The state is left alone when the task has set another detail meanwhile (a task
    that reports under its own name, as the uplink does, says what it knows)."""
    delay = initial_s
    loop = asyncio.get_running_loop()
    ours: str | None = None  # the detail of the failing state this supervisor set
    recover: asyncio.TimerHandle | None = None

    def recovered() -> None:
        nonlocal ours
        c = metrics.components.get(name)
        if c is not None and c.state == "failing" and c.detail == ours:
            metrics.set_state(name, "ok")
            log.info("task %s has run %.0f s since its restart: ok", name, healthy_s)
        ours = None

    try:
        while True:
            started = monotonic()
            if ours is not None:
                recover = loop.call_later(healthy_s, recovered)
            try:
                await factory()
                log.info("task %s finished", name)
                return
            except FatalError as e:
                metrics.set_state(name, "alarm", str(e))
                log.critical("task %s stopped: %s", name, e)
                return
            except Exception as e:
                metrics.inc("task_restarts")
                log.exception("task %s failed; restarting in %.1f s", name, delay)
                raise_if_cancelling()
                if recover is not None:
                    recover.cancel()
                ours = f"restarted after {type(e).__name__}: {e}"[:300]
                metrics.set_state(name, "failing", ours)
            if monotonic() - started > healthy_s:
                delay = initial_s
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_s)
    finally:
        if recover is not None:
            recover.cancel()
