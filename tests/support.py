"""Helpers shared by the driver tests: a sink that collects readings, and a polling wait."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway import Reading


class Collector:
    """A source sink that keeps every reading handed to it."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []

    async def __call__(self, rs: list[Reading]) -> None:
        self.readings.extend(rs)

    def of(self, point: str, quality: int | None = None) -> list[Reading]:
        return [r for r in self.readings if r.point_id == point
                and (quality is None or r.quality == quality)]


async def until(cond: Callable[[], bool], timeout: float = 10.0, poll_s: float = 0.02) -> None:
    """Wait until ``cond()`` holds; fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(poll_s)
