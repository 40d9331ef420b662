"""Helpers shared by the tests: a sink that collects readings, a polling wait, and an
auditor's proof bundle and verification of a provisioned gateway's reading."""

from __future__ import annotations

import asyncio
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
