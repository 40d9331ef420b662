"""The benchmark scenarios (``python -m benchmarks.<name>``; ``python -m benchmarks.run`` for
all of them). Each starts real components (the gateway, anvil, Mosquitto, simulated devices)
and stops them when it ends."""

from __future__ import annotations

import signal
import sys


def stop_on_sigterm() -> None:
    """Make SIGTERM (``kill``; `benchmarks.run` when a scenario runs over its time) run a
    scenario's cleanup as Ctrl-C does: the ``finally`` blocks that stop the gateway, the chain,
    the broker and the simulated devices it started. Python's default is to die at once and
    leave them running, the gateway in a session of its own: one such orphan, at 28 % of a
    core, skewed the runs after it."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

