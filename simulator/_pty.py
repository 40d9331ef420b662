"""Serial devices on a pseudo terminal: the gateway opens ``path`` as it would /dev/ttyUSB0, the
simulated device reads and writes the master end from the asyncio loop.

A pty has no baud rate (bytes arrive at once), no parity errors and no collisions; faults are
injected by the devices themselves (silence, garbage, error replies).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty


class PtyDevice:
    """Base of the simulated serial devices: owns the pty, buffers what the gateway sends and
    calls `handle` on every arrival. Subclasses consume requests from ``self.buf`` and answer
    with `send`."""

    def __init__(self, reply_delay_s: float = 0.002) -> None:
        self.reply_delay_s = reply_delay_s
        self.buf = bytearray()
        self.master = self.slave = -1
        self.path = ""
        self.bad_frames = 0  # requests that did not parse
        self.requests = 0

    async def start(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no line editing, until the gateway configures it
        self.path = os.ttyname(self.slave)
        os.set_blocking(self.master, False)
        asyncio.get_running_loop().add_reader(self.master, self._readable)

    async def stop(self) -> None:
        if self.master >= 0:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self.master)
            for fd in (self.master, self.slave):
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.master = self.slave = -1

    async def __aenter__(self) -> PtyDevice:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _readable(self) -> None:
        try:
            chunk = os.read(self.master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO while no one has the slave open: nothing to read
            return
        self.buf += chunk
        self.handle()

    def handle(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def send(self, data: bytes, delay_s: float | None = None) -> None:
        """Write ``data`` to the gateway after ``delay_s`` (default ``reply_delay_s``)."""
        delay = self.reply_delay_s if delay_s is None else delay_s
        asyncio.get_running_loop().call_later(delay, self._write, data)

    def _write(self, data: bytes) -> None:
        if self.master < 0:
            return
        with contextlib.suppress(OSError):  # buffer full or port closed: the bytes are lost
            os.write(self.master, data)
