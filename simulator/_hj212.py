"""A simulated CEMS data logger speaking HJ 212 to the gateway's listener.

It connects (and reconnects after a drop), uploads real-time data (CN 2011) every ``interval_s``
with Flag bit A set (answer requested) and checks each 9014 reply against its QN. Faults a test
can inject: garbage bytes and frames with a wrong CRC before the next packet, per-factor flags
(``factors[code].flag = "D"``), and `drop` (the connection is cut; the logger reconnects).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from drivers.hj212 import (
    CN_DATA_RESPONSE,
    CN_REALTIME_DATA,
    FLAG_ANSWER,
    VERSION_CODES,
    Hj212Error,
    build_frame,
    parse_frame,
)
from mrv_core import cancel_and_wait


@dataclass
class Factor:
    """One monitored factor (pollutant code): value around ``base`` and its HJ 212 flag."""

    base: float
    noise: float = 0.0
    flag: str = "N"


@dataclass
class Hj212Logger:
    host: str
    port: int
    mn: str = "88888880000001"
    pw: str = "123456"
    st: str = "31"  # 31: flue gas
    factors: dict[str, Factor] = field(default_factory=lambda: {
        "a34013": Factor(12.0, 0.5),  # smoke dust, mg/m3
        "a21026": Factor(35.0, 2.0),  # SO2, mg/m3
        "a21002": Factor(80.0, 3.0),  # NOx, mg/m3
    })
    interval_s: float = 1.0
    version: str = "2017"
    ask_reply: bool = True
    reply_timeout_s: float = 2.0
    reconnect_s: float = 0.2
    tz_offset_h: float = 8.0
    seed: int = 5
    # what happened
    sent: int = 0
    replied: int = 0
    connects: int = 0
    garbage_sent: int = 0
    bad_crc_sent: int = 0
    sent_qns: list[str] = field(default_factory=list)
    replied_qns: list[str] = field(default_factory=list)
    # faults to inject before the next packet
    garbage_next: int = 0
    bad_crc_next: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self) -> Hj212Logger:
        self._task = asyncio.create_task(self._run(), name=f"hj212-logger:{self.mn}")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
        self._task = None
        self._close()

    def drop(self) -> None:
        """Cut the connection (as a broken link would); the logger reconnects."""
        if self._writer is not None:
            self._writer.transport.abort()

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def packet(self, now: datetime) -> tuple[str, bytes]:
        local = now.astimezone(timezone(timedelta(hours=self.tz_offset_h)))
        qn = local.strftime("%Y%m%d%H%M%S") + f"{local.microsecond // 1000:03d}"
        flag = (VERSION_CODES[self.version] << 2) | (FLAG_ANSWER if self.ask_reply else 0)
        cp = ";".join(
            f"{code}-Rtd={f.base + self.rng.gauss(0, f.noise) if f.noise else f.base:.3f},"
            f"{code}-Flag={f.flag}" for code, f in self.factors.items())
        segment = (f"QN={qn};ST={self.st};CN={CN_REALTIME_DATA};PW={self.pw};MN={self.mn};"
                   f"Flag={flag};CP=&&DataTime={local.strftime('%Y%m%d%H%M%S')};{cp}&&")
        return qn, build_frame(segment)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(self.reconnect_s)
                continue
            self._writer = writer
            self.connects += 1
            try:
                next_t = loop.time()
                while True:
                    await self._inject(writer)
                    qn, frame = self.packet(datetime.now(UTC))
                    writer.write(frame)
                    await writer.drain()
                    self.sent += 1
                    self.sent_qns.append(qn)
                    if self.ask_reply:
                        await self._await_reply(reader, qn)
                    next_t += self.interval_s
                    await asyncio.sleep(max(0.0, next_t - loop.time()))
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                pass
            finally:
                self._close()
            await asyncio.sleep(self.reconnect_s)

    async def _inject(self, writer: asyncio.StreamWriter) -> None:
        while self.garbage_next > 0:
            self.garbage_next -= 1
            writer.write(bytes(self.rng.randrange(32, 127) for _ in range(40)) + b"\r\n")
            self.garbage_sent += 1
        while self.bad_crc_next > 0:
            self.bad_crc_next -= 1
            _, frame = self.packet(datetime.now(UTC))
            crc = frame[-6:-2]
            wrong = b"%04X" % (int(crc, 16) ^ 0x0101)
            writer.write(frame[:-6] + wrong + b"\r\n")
            self.bad_crc_sent += 1

    async def _await_reply(self, reader: asyncio.StreamReader, qn: str) -> None:
        buf = b""
        deadline = time.monotonic() + self.reply_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return  # no answer: keep uploading, as loggers do (they may resend later)
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can lose a cancel (_aio.py)
                async with asyncio.timeout(remaining):
                    chunk = await reader.read(4096)
            except TimeoutError:
                return
            if not chunk:
                raise asyncio.IncompleteReadError(buf, None)
            buf += chunk
            with contextlib.suppress(Hj212Error):
                pkt, _ = parse_frame(buf)
                if pkt is not None and pkt.cn == CN_DATA_RESPONSE and pkt.qn == qn:
                    self.replied += 1
                    self.replied_qns.append(qn)
                    return
