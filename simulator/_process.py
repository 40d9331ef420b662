"""Stopping a child process that a simulator or a benchmark started."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any], wait_s: float, sig: int = signal.SIGTERM) -> None:
    """Stop ``proc`` if it still runs: ``sig`` (each child's graceful stop: SIGTERM, or SIGINT
    for PostgreSQL's fast shutdown), then up to ``wait_s`` for it to exit, then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
