"""A cancellation lost inside a library's ``asyncio.wait_for`` must not keep a task (and so the
daemon's shutdown) running (mrv_core/_aio.py)."""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest

from gateway._daemon import supervise
from mrv_core._aio import cancel_and_wait, raise_if_cancelling
from mrv_core._metrics import Metrics


async def _lose_a_cancellation() -> None:
    """What Python 3.11's ``wait_for`` does when the cancel and the result arrive together."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    try:
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        pass  # swallowed; ``task.cancelling()`` still counts it


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the race is Python 3.11's wait_for")
async def test_python_311_wait_for_loses_a_cancel_that_arrives_with_the_result() -> None:
    """The premise: on the Python this project supports first, the race is real."""
    fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    seen: list[str] = []

    async def waiter() -> None:
        seen.append(await asyncio.wait_for(fut, 10))
        seen.append(f"cancelling={asyncio.current_task().cancelling()}")  # type: ignore[union-attr]

    t = asyncio.create_task(waiter())
    await asyncio.sleep(0)  # the waiter is inside wait_for
    fut.set_result("result")
    t.cancel()
    await t
    assert seen == ["result", "cancelling=1"]


async def test_raise_if_cancelling_honours_a_lost_cancellation() -> None:
    async def loop_like_a_poller() -> int:
        rounds = 0
        while True:
            raise_if_cancelling()
            rounds += 1
            if rounds == 3:
                await _lose_a_cancellation()
            await asyncio.sleep(0)

    t = asyncio.create_task(loop_like_a_poller())
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(t, 5)


async def test_raise_if_cancelling_does_nothing_in_a_task_not_cancelled() -> None:
    raise_if_cancelling()
    assert not asyncio.current_task().cancelling()  # type: ignore[union-attr]


async def test_supervise_does_not_restart_a_task_whose_cancellation_was_lost() -> None:
    calls = 0

    async def factory() -> None:
        nonlocal calls
        calls += 1
        await _lose_a_cancellation()
        raise ConnectionRefusedError("the error wait_for returned instead")

    metrics = Metrics()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(supervise("probe", factory, metrics, initial_s=0.01), 5)
    assert calls == 1
    assert metrics.counters["task_restarts"] == 1


async def test_cancel_and_wait_recancels_a_task_that_ignored_the_first_cancel(
        caplog: pytest.LogCaptureFixture) -> None:
    ignored = 0

    async def stubborn() -> None:
        nonlocal ignored
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if ignored:
                    raise
                ignored += 1  # the first one is lost, as in a library's retry loop

    t = asyncio.create_task(stubborn(), name="source:stubborn")
    polite = asyncio.create_task(asyncio.sleep(3600), name="source:polite")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="mrv.gateway"):
        await asyncio.wait_for(cancel_and_wait([t, polite], retry_s=0.05), 5)
    assert t.cancelled() and polite.cancelled()
    assert ignored == 1
    assert [r.getMessage() for r in caplog.records] == [
        "task source:stubborn did not end when cancelled; cancelling it again"]
