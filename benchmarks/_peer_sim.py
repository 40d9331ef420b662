"""Simulated Modbus TCP devices for `benchmarks.peer`: one listening port per device, as N meters
with their own addresses would be, in a child process (so its CPU is not the gateways').

    .venv/bin/python -m benchmarks._peer_sim N      (prints the N ports as one JSON line)

The responder is `benchmarks.acquisition`'s (FC 3/4 reads, register values moving on every read,
any unit id), imported, not copied. One port per device matters for the comparison: ThingsBoard's
Modbus connector shares one client connection between all devices at the same host:port, ours
opens one per device; with a port each, both open N connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path

from benchmarks.acquisition import _Responder

ROOT = Path(__file__).resolve().parent.parent


async def serve(n: int) -> None:
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(_Responder, "127.0.0.1", 0, backlog=64) for _ in range(n)]
    print(json.dumps([s.sockets[0].getsockname()[1] for s in servers]), flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


class DeviceSim:
    """The child process serving ``n`` devices; ``ports[i]`` is device i's port."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.ports: list[int] = []
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> DeviceSim:
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks._peer_sim", str(self.n)],
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"device simulator exited with {self.proc.wait()}")
        self.ports = [int(p) for p in json.loads(line)]
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> DeviceSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(int(args[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
