"""A serial port driven by the asyncio loop: pyserial opens and configures it, the loop watches
its file descriptor (``add_reader``), so no thread is needed and reads never block the loop.

Used by the DL/T 645 driver (the Modbus RTU driver uses pymodbus's own serial transport).
Works on any POSIX tty, including a pty (the tests' simulated meters).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import TypeVar

import serial

from drivers._errors import LinkDown

T = TypeVar("T")

_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
#: Bytes kept while waiting for a frame; beyond this the oldest are dropped (line noise).
MAX_BUFFER = 4096


class SerialLine:
    """One open serial port with a receive buffer. Not thread-safe; one user at a time (the
    caller holds the bus lock around each exchange)."""

    def __init__(self, port: str, *, baudrate: int, bytesize: int = 8, parity: str = "N",
                 stopbits: int = 1, name: str = "") -> None:
        self.port = port
        self.settings = {"baudrate": baudrate, "bytesize": bytesize,
                         "parity": _PARITY[parity], "stopbits": stopbits}
        self.name = name or port
        self.buf = bytearray()
        self._ser: serial.Serial | None = None
        self._fd = -1
        self._data = asyncio.Event()
        self._error: Exception | None = None
        self.dropped = 0  # bytes dropped from an overflowing buffer

    @property
    def is_open(self) -> bool:
        return self._ser is not None

    def open(self) -> None:
        """Open and configure the port (raw, non-blocking); `LinkDown` when it cannot."""
        if self._ser is not None:
            return
        try:
            ser = serial.Serial(self.port, timeout=0, write_timeout=0, exclusive=True,
                                **self.settings)
        except (serial.SerialException, OSError, ValueError) as e:
            raise LinkDown(self.name, f"cannot open {self.port}: {e}") from e
        self._ser, self._fd, self._error = ser, ser.fileno(), None
        self.buf.clear()
        asyncio.get_running_loop().add_reader(self._fd, self._readable)

    def close(self) -> None:
        ser, self._ser = self._ser, None
        if ser is None:
            return
        try:
            asyncio.get_running_loop().remove_reader(self._fd)
        except RuntimeError:  # pragma: no cover - loop already closed
            pass
        try:
            ser.close()
        except (serial.SerialException, OSError):  # pragma: no cover
            pass
        self._fd = -1
        self._data.set()

    def _readable(self) -> None:
        try:
            chunk = os.read(self._fd, 4096)
            if not chunk:
                raise OSError("end of file on the serial port")
        except BlockingIOError:
            return
        except OSError as e:
            self._error = e
            asyncio.get_running_loop().remove_reader(self._fd)
            self._data.set()
            return
        self.buf += chunk
        if len(self.buf) > MAX_BUFFER:
            extra = len(self.buf) - MAX_BUFFER
            del self.buf[:extra]
            self.dropped += extra
        self._data.set()

    def _check(self) -> None:
        if self._ser is None:
            raise LinkDown(self.name, f"{self.port} is closed")
        if self._error is not None:
            raise LinkDown(self.name, f"{self.port}: {self._error}")

    def discard_input(self) -> None:
        """Forget whatever arrived before the next request (late replies, noise)."""
        self._check()
        self.buf.clear()

    async def write(self, data: bytes) -> None:
        self._check()
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                n = 0
            except OSError as e:
                raise LinkDown(self.name, f"write to {self.port} failed: {e}") from e
            view = view[n:]
            if view:
                await asyncio.sleep(0.001)

    async def read(self, parse: Callable[[bytearray], T | None], deadline: float) -> T | None:
        """Call ``parse(buffer)`` on every arrival until it returns a value or the loop time
        passes ``deadline`` (then None). ``parse`` consumes what it used from the buffer."""
        loop = asyncio.get_running_loop()
        while True:
            self._check()
            result = parse(self.buf)
            if result is not None:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            self._data.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._data.wait()
            except TimeoutError:
                continue
