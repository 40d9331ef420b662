"""DL/T 645-2007 meters on a serial line: the I/O of the DL/T 645 driver.

One `Dlt645BusPoller` per serial port. Its meters poll on their own schedules (`PollLoop`:
fixed rate, breaker, COMM_FAULT gaps) through one `SerialLine` and one lock; each point is one
"read data" exchange (C = 0x11) for its data identifier, followed by the inter-frame silence.

* No reply within ``timeout_s`` (after ``retries``): the meter's poll fails, all its points get
  COMM_FAULT gap readings.
* An abnormal reply (C = 0xD1, e.g. "no requested data"), or a reply that does not fit the DI:
  that point gets a NaN reading flagged DEVICE_FAULT; the other points are read normally.
* Damaged frames on the line (checksum, end byte, length) are skipped and counted in
  ``dlt645_bad_frames``, other line noise in ``dlt645_garbage_bytes``; both are logged
  (rate-limited). Frames from other addresses and the echo of our own request are ignored.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from drivers._errors import DeviceUnreachable, LinkDown
from drivers._polling import LogLimiter, PointInfo, PollLoop
from drivers._serial import SerialLine
from drivers._source import Sink
from drivers.dlt645._config import Dlt645Bus, Dlt645Meter
from drivers.dlt645._frame import (
    PREAMBLE,
    Dlt645Error,
    Frame,
    FrameError,
    MeterError,
    build_read,
    build_read_address,
    parse_address_reply,
    parse_frame,
    parse_read_reply,
)
from mrv_core import Metrics, Quality, Reading

log = logging.getLogger("mrv.drivers.dlt645")

_REPLY_BIT = 0x80  # C bit 7: frame sent by a meter
_OVERHEAD = 12  # 68 A0..A5 68 C L .. CS 16


class Dlt645BusPoller:
    def __init__(self, bus: Dlt645Bus, sink: Sink, metrics: Metrics, *,
                 now_ns: Callable[[], int] = time.time_ns) -> None:
        self.bus = bus
        self.now_ns = now_ns  # each reading's timestamp: when its request was sent
        self.name = bus.name
        self.metrics = metrics
        self.line = SerialLine(bus.port, baudrate=bus.baudrate, bytesize=bus.bytesize,
                               parity=bus.parity, stopbits=bus.stopbits, name=bus.name)
        self.lock = asyncio.Lock()
        self.pause = bus.frame_pause_s()
        self.noise = LogLimiter(log)
        self.meters: list[tuple[Dlt645Meter, PollLoop]] = []
        for m in bus.meters:
            source = f"dlt645:{bus.name}/{m.name}"
            infos = [PointInfo(p.id, p.unit) for p in m.points]
            self.meters.append((m, PollLoop(m.name, source, infos, m, sink, metrics, log,
                                                    now_ns=now_ns)))

    def loop_of(self, meter_name: str) -> PollLoop:
        for m, loop in self.meters:
            if m.name == meter_name:
                return loop
        raise KeyError(meter_name)

    def _take_reply(self, buf: bytearray, address: str | None) -> Frame | None:
        """The first reply frame from ``address`` (any meter when None) in ``buf``."""
        while True:
            try:
                frame, consumed = parse_frame(bytes(buf))
            except FrameError as e:
                del buf[:e.consumed]
                self.metrics.inc("dlt645_bad_frames")
                self.noise.warning("bad-frame", "%s: damaged frame skipped: %s", self.name, e)
                continue
            # Bytes before a frame other than the FE wake-up preamble are line noise.
            frame_len = 0 if frame is None else _OVERHEAD + len(frame.data)
            noise = sum(1 for b in buf[:consumed - frame_len] if b != 0xFE)
            if noise:
                self.metrics.inc("dlt645_garbage_bytes", noise)
                self.noise.warning("garbage", "%s: %d byte(s) of line noise skipped", self.name,
                                   noise)
            del buf[:consumed]
            if frame is None:
                return None
            if not frame.control & _REPLY_BIT:
                continue  # our own request echoed by the RS-485 adapter, or another master
            if address is not None and frame.address != address:
                self.metrics.inc("dlt645_foreign_frames")
                continue
            return frame

    async def exchange(self, request: bytes, address: str | None, *, timeout_s: float,
                       retries: int, what: str) -> Frame:
        """Send ``request`` and wait for the reply; `DeviceUnreachable` when none comes."""
        loop = asyncio.get_running_loop()
        if not self.bus.wakeup and request.startswith(PREAMBLE):
            request = request[len(PREAMBLE):]
        for _ in range(retries + 1):
            self.line.discard_input()
            await self.line.write(request)
            frame = await self.line.read(lambda b: self._take_reply(b, address),
                                         loop.time() + timeout_s)
            if self.pause:
                await asyncio.sleep(self.pause)
            if frame is not None:
                return frame
        raise DeviceUnreachable(what, f"no reply within {timeout_s} s ({retries + 1} tries)")

    async def _read_meter(self, m: Dlt645Meter, source: str) -> list[Reading]:
        out: list[Reading] = []
        async with self.lock:
            self.line.open()
            for p in m.points:
                di = int(p.di, 16)
                ts = self.now_ns()
                frame = await self.exchange(build_read(m.address, di), m.address,
                                            timeout_s=m.timeout_s, retries=m.retries, what=m.name)
                try:
                    value, quality = parse_read_reply(frame, di), 0
                except MeterError as e:
                    self.metrics.inc("dlt645_error_replies")
                    log.debug("%s: %s for DI %08X", m.name, e, di)
                    value, quality = math.nan, int(Quality.DEVICE_FAULT)
                except Dlt645Error as e:  # not a fit for the DI: size, BCD, control code...
                    self.metrics.inc("dlt645_bad_replies")
                    self.noise.warning(f"bad-reply:{m.name}", "%s: unusable reply: %s", m.name, e)
                    value, quality = math.nan, int(Quality.DEVICE_FAULT)
                out.append(Reading(point_id=p.id, ts_ns=ts, value=value, unit=p.unit,
                                   source=source, quality=quality))
        return out

    async def read_address(self, *, timeout_s: float = 1.0, retries: int = 1) -> str:
        """Broadcast "read address" (C = 0x13): the address of the only meter on the line.
        With several meters on the line their replies collide; use it on one meter at a time."""
        async with self.lock:
            self.line.open()
            frame = await self.exchange(build_read_address(), None, timeout_s=timeout_s,
                                        retries=retries, what=self.name)
        return parse_address_reply(frame)

    async def _poll_meter(self, m: Dlt645Meter, loop: PollLoop) -> None:
        def on_failure(e: DeviceUnreachable) -> None:
            if isinstance(e, LinkDown):
                self.line.close()

        await loop.run(lambda: self._read_meter(m, loop.source), on_failure)

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                for m, loop in self.meters:
                    tg.create_task(self._poll_meter(m, loop), name=f"dlt645:{self.name}/{m.name}")
        finally:
            self.line.close()
