"""A Modbus RTU line on a pty: several units (the plant's meter models) answer on one port.

Read requests only (function codes 1-4); anything else gets exception 1 (illegal function).
Per-unit faults come from the model's `Faults`: silent (no answer at all), exception responses,
late answers and garbage (line noise instead of a reply). A request for a unit that is not on the
line goes unanswered, as on a real RS-485 bus.
"""

from __future__ import annotations

import random
import struct

from simulator._plant import MeterModel, bits_to_words
from simulator._pty import PtyDevice


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc_table()


def crc16_modbus(data: bytes) -> int:
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ b) & 0xFF]
    return crc


def rtu_frame(body: bytes) -> bytes:
    """``body`` (unit, function, data) + CRC, low byte first."""
    return body + struct.pack("<H", crc16_modbus(body))


class RtuLine(PtyDevice):
    """The units of one RS-485 line, on a pty."""

    def __init__(self, units: dict[int, MeterModel], reply_delay_s: float = 0.002,
                 seed: int = 7) -> None:
        super().__init__(reply_delay_s)
        self.units = units
        self.rng = random.Random(seed)
        self.answered: dict[int, int] = dict.fromkeys(units, 0)

    def handle(self) -> None:
        buf = self.buf
        while len(buf) >= 8:
            frame = bytes(buf[:8])
            if crc16_modbus(frame[:6]) != struct.unpack("<H", frame[6:])[0]:
                del buf[0]  # resynchronise on the next byte
                self.bad_frames += 1
                continue
            del buf[:8]
            self.requests += 1
            self._answer(frame[0], frame[1], *struct.unpack(">HH", frame[2:6]))

    def _answer(self, unit: int, fc: int, address: int, count: int) -> None:
        model = self.units.get(unit)
        if model is None or model.faults.silent:
            return
        delay = self.reply_delay_s + model.faults.delay_s
        if model.faults.garbage:
            self.send(bytes(self.rng.randrange(256) for _ in range(5 + count)), delay)
            return
        if model.faults.exception is not None:
            self.send(rtu_frame(bytes([unit, fc | 0x80, model.faults.exception])), delay)
            return
        if fc in (3, 4):
            regs = model.holding() if fc == 3 else model.input()
            if count < 1 or address + count > min(len(regs), model.register_count()):
                self.send(rtu_frame(bytes([unit, fc | 0x80, 2])), delay)
                return
            data = struct.pack(f">{count}H", *regs[address:address + count])
        elif fc in (1, 2):
            bits = model.coils() if fc == 1 else model.discretes()
            if count < 1 or address + count > len(bits):
                self.send(rtu_frame(bytes([unit, fc | 0x80, 2])), delay)
                return
            words = bits_to_words(bits[address:address + count])
            packed = b"".join(struct.pack("<H", w) for w in words)
            data = packed[:(count + 7) // 8]
        else:
            self.send(rtu_frame(bytes([unit, fc | 0x80, 1])), delay)
            return
        model.reads += 1
        self.answered[unit] = self.answered.get(unit, 0) + 1
        self.send(rtu_frame(bytes([unit, fc, len(data)]) + data), delay)
