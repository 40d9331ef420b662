"""Helpers shared by the tests: a sink that collects readings, a polling wait, and an
auditor's proof bundle and verification of a provisioned gateway's reading."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from config import load_config
from gateway import Reading
from ledger_client import Bundle, EvmChain, verify_bundle
from simulator import Provisioned


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


class LoopLag:
    """Watches how late the event loop wakes a short sleep, while the block runs: on a loaded
    machine (CPU contention, a GC pause) every task of the loop is late by that much, the
    pollers and the in-process simulators alike. A timing test uses it to allow for the poll
    ticks the machine took away (`ticks_lost`) and says what it saw in its failure message
    (``str(lag)``). Loop stalls only: time a task spends waiting (for a bus, a lock, a device)
    is not lag, so a stall caused by the code under test is not excused.

        async with LoopLag() as lag:
            ...
            assert loop.missed <= 1 + lag.ticks_lost(0.25), (loop.missed, str(lag))
    """

    def __init__(self, step_s: float = 0.01, min_stall_s: float = 0.05) -> None:
        self.step_s = step_s
        self.min_stall_s = min_stall_s
        self.stalls: list[float] = []  # each wake-up later than ``min_stall_s``, in seconds
        self.max_s = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(self.step_s)
            late = loop.time() - t - self.step_s
            self.max_s = max(self.max_s, late)
            if late >= self.min_stall_s:
                self.stalls.append(late)

    def ticks_lost(self, interval_s: float) -> int:
        """Poll ticks of period ``interval_s`` the observed stalls can have made a loop miss."""
        return sum(math.ceil(s / interval_s) for s in self.stalls)

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def __str__(self) -> str:
        return (f"event loop lag: max {self.max_s:.3f} s, {len(self.stalls)} stalls >= "
                f"{self.min_stall_s:g} s totalling {sum(self.stalls):.2f} s")


async def proof_bundle(p: Provisioned, seq: int) -> Bundle:
    """The proof bundle of record ``seq`` from gateway ``p``'s outbox, as `export-proof`
    makes it."""
    from gateway._cli import _bundle_for

    return await _bundle_for(load_config(p.config), seq)


async def verify_checks(p: Provisioned, b: Bundle) -> dict[str, bool]:
    """Each check of `verify_bundle` against ``p``'s ledger: name -> passed."""
    chain = EvmChain(p.rpc_url, contract_address=p.contract)
    try:
        rep = await verify_bundle(b, chain)
    finally:
        await chain.close()
    return {name: ok for name, ok, _ in rep.checks}


def on_both_paths(code: str) -> dict[str, list[str]]:
    """Run ``code`` in a fresh interpreter with the pure-Python path forced
    (``MRV_PURE_PYTHON=1``) and without (``0``); the words it printed, by that value."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out: dict[str, list[str]] = {}
    for pure in ("1", "0"):
        env = {**os.environ, "MRV_PURE_PYTHON": pure, "PYTHONPATH": str(root)}
        p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                           timeout=120, check=False, cwd=root)
        assert p.returncode == 0, p.stderr[-2000:]
        out[pure] = p.stdout.split()
    return out
