"""DL/T 645-2007 electricity meters on a pty (one RS-485 line, one or more meters).

Each meter answers "read data" (C = 0x11) for the data identifiers of
`drivers.dlt645._frame.DATA_ITEMS` with plausible, moving values, and "read address" (C = 0x13,
broadcast) with its address. Faults (`simulator.Faults`): silent, garbage (noise instead of a
reply), late answers, and ``exception=<code>``: an abnormal reply (C = 0xD1) with that error byte.
Data identifiers listed in ``unsupported`` get the abnormal reply "no requested data" (0x02).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

from drivers.dlt645 import (
    BROADCAST_ADDRESS,
    CTRL_READ_ADDRESS,
    CTRL_READ_DATA,
    DI_ACTIVE_POWER_TOTAL,
    DI_COMBINED_ACTIVE_TOTAL,
    DI_FORWARD_ACTIVE_TOTAL,
    DI_FREQUENCY,
    DI_PHASE_A_CURRENT,
    DI_PHASE_A_VOLTAGE,
    DI_POWER_FACTOR_TOTAL,
    DI_REVERSE_ACTIVE_TOTAL,
    FrameError,
    UnexpectedFrameError,
    build_address_reply,
    build_error_reply,
    build_reply,
    parse_frame,
    parse_request,
)
from simulator._plant import Faults
from simulator._pty import PtyDevice

ERR_NO_DATA = 0x02


@dataclass
class Dlt645SimMeter:
    """A three-phase meter seen through phase A: power wanders around ``base_kw``."""

    address: str = "000000123456"
    base_kw: float = 12.0
    energy_kwh: float = 12_345.67
    seed: int = 3
    faults: Faults = field(default_factory=Faults)
    unsupported: set[int] = field(default_factory=set)
    reads: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._last = time.monotonic()
        self.power_kw = self.base_kw

    def _step(self) -> None:
        now = time.monotonic()
        dt, self._last = max(0.0, now - self._last), now
        self.power_kw = max(0.0, self.base_kw * (1 + 0.1 * math.sin(now / 30.0))
                            + self.rng.gauss(0, 0.05))
        self.energy_kwh += self.power_kw * dt / 3600.0

    def value(self, di: int) -> float:
        self._step()
        volts = 220.0 + self.rng.gauss(0, 0.5)
        pf = 0.95
        return {
            DI_COMBINED_ACTIVE_TOTAL: round(self.energy_kwh, 2),
            DI_FORWARD_ACTIVE_TOTAL: round(self.energy_kwh, 2),
            DI_REVERSE_ACTIVE_TOTAL: 0.0,
            DI_PHASE_A_VOLTAGE: round(volts, 1),
            DI_PHASE_A_CURRENT: round(self.power_kw * 1000 / (3 * volts * pf), 3),
            DI_ACTIVE_POWER_TOTAL: round(self.power_kw, 4),
            DI_POWER_FACTOR_TOTAL: pf,
            DI_FREQUENCY: round(50.0 + self.rng.gauss(0, 0.01), 2),
        }[di]


class Dlt645Line(PtyDevice):
    """The meters of one RS-485 line, on a pty."""

    def __init__(self, meters: list[Dlt645SimMeter], reply_delay_s: float = 0.003,
                 seed: int = 11) -> None:
        super().__init__(reply_delay_s)
        self.meters = {m.address: m for m in meters}
        self.rng = random.Random(seed)

    def handle(self) -> None:
        while self.buf:
            try:
                frame, consumed = parse_frame(bytes(self.buf))
            except FrameError as e:
                del self.buf[:e.consumed]
                self.bad_frames += 1
                continue
            del self.buf[:consumed]
            if frame is None:
                return
            self.requests += 1
            if frame.control == CTRL_READ_ADDRESS and frame.address == BROADCAST_ADDRESS:
                for m in self.meters.values():
                    if not m.faults.silent:
                        self.send(build_address_reply(m.address))
                continue
            meter = self.meters.get(frame.address)
            if meter is None or frame.control != CTRL_READ_DATA or meter.faults.silent:
                continue
            try:
                di = parse_request(frame)
            except UnexpectedFrameError:
                self.bad_frames += 1
                continue
            delay = self.reply_delay_s + meter.faults.delay_s
            if meter.faults.garbage:
                self.send(b"\x68" + bytes(self.rng.randrange(256) for _ in range(17)), delay)
            elif meter.faults.exception is not None:
                self.send(build_error_reply(meter.address, meter.faults.exception), delay)
            elif di in meter.unsupported:
                self.send(build_error_reply(meter.address, ERR_NO_DATA), delay)
            else:
                try:
                    reply = build_reply(meter.address, di, meter.value(di))
                except (KeyError, ValueError):
                    reply = build_error_reply(meter.address, ERR_NO_DATA)
                else:
                    meter.reads += 1
                self.send(reply, delay)
