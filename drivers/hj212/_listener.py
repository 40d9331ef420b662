"""HJ 212 data loggers: a TCP listener that CEMS data loggers connect to (the "upper computer").

One `Hj212Listener` per ``listen`` address; the loggers configured on it are told apart by MN.
For every packet:

* framing faults (length, CRC, CR LF, non-ASCII) and unparsable segments are counted
  (``hj212_bad_frames`` / ``hj212_bad_packets``, ``hj212_garbage_bytes`` for noise between
  packets) and logged (rate-limited); the connection stays up and the next packet is read;
  a 9014 reply that cannot be built is counted in ``hj212_bad_replies``;
* a packet from an unknown MN, or with the wrong PW when a password is configured, is counted
  and ignored (no reply: the data was not accepted);
* each configured point (factor code, field, CN) present in CP becomes a reading at the packet's
  ``DataTime`` (plant local time, ``tz_offset_h``); the factor's ``-Flag`` becomes quality bits:
  N -> 0, B -> COMM_FAULT, D -> DEVICE_FAULT, F -> STOPPED, M -> MAINTENANCE, S -> MANUAL,
  C -> CALIBRATION, T -> DEVICE_OVER_RANGE; an unknown flag -> DEVICE_FAULT (counted). The value
  is kept as sent; one that is not a number becomes NaN with DEVICE_FAULT;
* when the packet's Flag has bit A, the 9014 data response goes back once the readings are
  handed over (Flag version bits from the configured ``version``: 2017 now, 2025 next).

Device state ``device:<name>``: ``ok`` on every accepted packet; ``failing`` when
``stale_after_s`` is set and every point of the logger went that long without a reading (the
gap readings are emitted then, as for MQTT).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from drivers._polling import LogLimiter, PointInfo, StaleWatch
from drivers._source import Sink
from drivers.hj212._config import Hj212Device, Hj212Point
from drivers.hj212._frame import (
    VERSION_CODES,
    Hj212Error,
    Packet,
    PacketError,
    build_data_reply,
    data_time_ns,
    needs_reply,
    parse_frame,
)
from mrv_core import Metrics, Quality, Reading

log = logging.getLogger("mrv.drivers.hj212")

#: Open connections one listener serves at a time (a plant has a few loggers per address; each
#: connection holds a buffer and a file descriptor until ``idle_timeout_s``). More are closed at
#: once and counted (``hj212_refused_connections``).
MAX_CONNECTIONS = 64

#: HJ 212-2017 per-factor flags -> quality bits.
FLAG_QUALITY: dict[str, int] = {
    "N": 0,
    "B": int(Quality.COMM_FAULT),
    "D": int(Quality.DEVICE_FAULT),
    "F": int(Quality.STOPPED),
    "M": int(Quality.MAINTENANCE),
    "S": int(Quality.MANUAL),
    "C": int(Quality.CALIBRATION),
    "T": int(Quality.DEVICE_OVER_RANGE),
}


@dataclass
class _Logger:
    dev: Hj212Device
    source: str
    component: str
    points: dict[tuple[str, str, str], Hj212Point]  # (cn, code, field) -> point
    cns: frozenset[str]
    watch: StaleWatch | None = None
    packets: int = 0
    readings: int = 0
    replies: int = 0
    qns: list[str] = field(default_factory=list)


class Hj212Listener:
    def __init__(self, devices: list[Hj212Device], sink: Sink, metrics: Metrics, *,
                 now_ns: Callable[[], int] = time.time_ns) -> None:
        if not devices:
            raise ValueError("an HJ 212 listener needs at least one device")
        self.listen = devices[0].listen
        host, _, port = self.listen.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.name = devices[0].name if len(devices) == 1 else f"hj212@{self.listen}"
        self.sink = sink
        self.metrics = metrics
        self.noise = LogLimiter(log)
        self.loggers: dict[str, _Logger] = {}
        for d in devices:
            if d.mn in self.loggers:
                raise ValueError(f"HJ 212 devices {self.loggers[d.mn].dev.name!r} and {d.name!r} on "
                                 f"{self.listen} have the same MN {d.mn}; expected one device per MN")
            lg = _Logger(d, f"hj212:{d.name}", f"device:{d.name}",
                         {(p.cn, p.code, p.field): p for p in d.points},
                         frozenset(p.cn for p in d.points))
            if d.stale_after_s:
                lg.watch = StaleWatch([PointInfo(p.id, p.unit) for p in d.points], d.stale_after_s,
                                      lg.source, sink, metrics, on_gap=self._stale_cb(lg),
                                      now_ns=now_ns)
            self.loggers[d.mn] = lg
        self.idle_timeout_s = max(d.idle_timeout_s for d in devices)
        self.max_len = max(d.max_frame_len for d in devices)
        self.window = self.max_len + 64  # "##" + 4 digits + data + CRC + CR LF, and a margin
        self.max_connections = MAX_CONNECTIONS
        self.ready = asyncio.Event()
        self.connections = 0
        self.open_connections = 0

    def _stale_cb(self, lg: _Logger) -> Callable[[list[PointInfo]], None]:
        def cb(stale: list[PointInfo]) -> None:
            if len(stale) == len(lg.dev.points) and self.metrics.set_state(
                    lg.component, "failing", f"no data for {lg.dev.stale_after_s} s"):
                log.warning("%s (MN %s): no data for %s s; gap readings until it sends again "
                            "(logged once)", lg.dev.name, lg.dev.mn, lg.dev.stale_after_s)
        return cb

    async def run(self) -> None:
        tasks = [asyncio.create_task(lg.watch.run(), name=f"{lg.dev.name}:stale")
                 for lg in self.loggers.values() if lg.watch is not None]
        try:
            server = await asyncio.start_server(self._connection, self.host or None, self.port,
                                                reuse_address=True)
            self.port = server.sockets[0].getsockname()[1]
            log.info("%s: listening for HJ 212 data loggers on %s:%d (%s)", self.name, self.host,
                     self.port, ", ".join(f"MN {mn}" for mn in self.loggers))
            self.ready.set()
            async with server:
                await server.serve_forever()
        finally:
            self.ready.clear()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if self.open_connections >= self.max_connections:
            self.metrics.inc("hj212_refused_connections")
            self.noise.warning("too-many", "%s: connection from %s closed: %d connections are "
                               "open already (at most %d)", self.name, peer,
                               self.open_connections, self.max_connections)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
            return
        self.connections += 1
        self.open_connections += 1
        self.metrics.inc("hj212_connections")
        log.debug("%s: connection from %s", self.name, peer)
        buf = bytearray()
        try:
            while True:
                try:
                    async with asyncio.timeout(self.idle_timeout_s):
                        chunk = await reader.read(65536)
                except TimeoutError:
                    log.info("%s: closing %s, silent for %s s", self.name, peer, self.idle_timeout_s)
                    return
                if not chunk:
                    return
                buf += chunk
                await self._consume(buf, writer, peer)
                if len(buf) > self.max_len + 64:  # cannot be the start of a valid packet
                    self.metrics.inc("hj212_garbage_bytes", len(buf))
                    buf.clear()
        except (ConnectionError, OSError) as e:
            log.debug("%s: connection from %s lost: %s", self.name, peer, e)
        finally:
            self.open_connections -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _consume(self, buf: bytearray, writer: asyncio.StreamWriter, peer: object) -> None:
        while buf:
            start = buf.find(b"##")
            noise = start if start >= 0 else len(buf) - (1 if buf.endswith(b"#") else 0)
            if noise:
                self.metrics.inc("hj212_garbage_bytes", noise)
                self.noise.warning("garbage", "%s: %d byte(s) of noise from %s skipped",
                                   self.name, noise, peer)
                del buf[:noise]
                continue
            try:
                # A packet starts at buf[0] (noise is gone): hand over no more than one packet can
                # span, so a chunk full of false starts costs linear, not quadratic, time.
                pkt, consumed = parse_frame(bytes(buf[:self.window]), max_len=self.max_len)
            except PacketError as e:
                del buf[:max(e.consumed, 1)]
                self.metrics.inc("hj212_bad_packets")
                self.noise.warning("bad-packet", "%s: unusable packet from %s: %s", self.name, peer, e)
                continue
            except Hj212Error as e:
                del buf[:max(e.consumed, 1)]
                self.metrics.inc("hj212_bad_frames")
                self.noise.warning("bad-frame", "%s: damaged frame from %s: %s", self.name, peer, e)
                continue
            if pkt is None:  # a packet still arriving, after ``consumed`` bytes of "#"
                del buf[:consumed]
                if consumed:
                    continue
                return
            del buf[:consumed]
            await self._packet(pkt, writer, peer)

    async def _packet(self, pkt: Packet, writer: asyncio.StreamWriter, peer: object) -> None:
        self.metrics.inc("hj212_packets")
        lg = self.loggers.get(pkt.mn)
        if lg is None:
            self.metrics.inc("hj212_unknown_mn")
            self.noise.warning(f"mn:{pkt.mn}", "%s: packet from unknown MN %s (%s) ignored; "
                               "expected one of %s", self.name, pkt.mn, peer, ", ".join(self.loggers))
            return
        dev = lg.dev
        if dev.password is not None and pkt.pw != dev.password:
            self.metrics.inc("hj212_bad_password")
            self.noise.warning(f"pw:{pkt.mn}", "%s: packet with a wrong PW from MN %s ignored",
                               dev.name, pkt.mn)
            return
        if pkt.version_code != VERSION_CODES[dev.version]:
            self.metrics.inc("hj212_version_mismatch")
            self.noise.warning(f"ver:{pkt.mn}", "%s: packet Flag says protocol version code %d, "
                               "configured %s (code %d); accepted", dev.name, pkt.version_code,
                               dev.version, VERSION_CODES[dev.version])
        readings: list[Reading] = []
        if pkt.cn in lg.cns:
            try:
                readings = self._readings(lg, pkt)
            except PacketError as e:
                self.metrics.inc("hj212_bad_packets")
                self.noise.warning(f"bad:{pkt.mn}", "%s: unusable packet: %s", dev.name, e)
                return  # not accepted, so not acknowledged: the logger may send it again
        lg.packets += 1
        if pkt.qn:
            lg.qns.append(pkt.qn)
            del lg.qns[:-1000]
        if readings:
            lg.readings += len(readings)
            if lg.watch is not None:
                for r in readings:
                    lg.watch.seen(r.point_id)
            await self.sink(readings)
        if self.metrics.set_state(lg.component, "ok"):
            log.info("%s: receiving from MN %s (%s)", dev.name, dev.mn, peer)
        if needs_reply(pkt):
            try:
                writer.write(build_data_reply(pkt, version=dev.version))
                await writer.drain()
                lg.replies += 1
            except Hj212Error as e:  # no QN to answer, or a reply that cannot be framed
                self.metrics.inc("hj212_bad_replies")
                self.noise.warning(f"reply:{pkt.mn}", "%s: cannot answer: %s", dev.name, e)

    def _readings(self, lg: _Logger, pkt: Packet) -> list[Reading]:
        ts = data_time_ns(pkt, tz_offset=timedelta(hours=lg.dev.tz_offset_h))
        out: list[Reading] = []
        for code, fields in pkt.cp.items():
            flag = fields.get("Flag", "N")
            quality = FLAG_QUALITY.get(flag)
            if quality is None:
                self.metrics.inc("hj212_unknown_flag")
                self.noise.warning(f"flag:{flag}", "%s: unknown flag %r on %s, expected one of %s; "
                                   "read as D (device fault)", lg.dev.name, flag, code,
                                   "".join(FLAG_QUALITY))
                quality = int(Quality.DEVICE_FAULT)
            for name, text in fields.items():
                point = lg.points.get((pkt.cn, code, name))
                if point is None:
                    continue
                q = quality
                try:
                    value = float(text)
                    if not math.isfinite(value):
                        raise ValueError(text)
                except ValueError:
                    value = math.nan
                    q |= int(Quality.DEVICE_FAULT)
                    self.metrics.inc("hj212_bad_values")
                    self.noise.warning(f"value:{code}", "%s: %s-%s=%r is not a number",
                                       lg.dev.name, code, name, text)
                out.append(Reading(point_id=point.id, ts_ns=ts, value=value, unit=point.unit,
                                   source=lg.source, quality=q))
        return out

