"""A Modbus RTU line on a pty: several units (the plant's meter models) answer on one port.

Reads (function codes 1-4) and holding register writes (6, 16: the written values overlay the
model's holding registers from then on, for read-back); anything else gets exception 1
(illegal function). ``log`` keeps every request in arrival order as (unit, function, address).
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
        self.log: list[tuple[int, int, int]] = []
        self.written: dict[int, dict[int, int]] = {u: {} for u in units}

    def handle(self) -> None:
        buf = self.buf
        while len(buf) >= 8:
            size = 8
            if buf[1] == 16:  # write multiple: unit fc addr(2) count(2) nbytes data crc(2)
                size = 9 + buf[6]
                if len(buf) < size:
                    return
            frame = bytes(buf[:size])
            if crc16_modbus(frame[:-2]) != struct.unpack("<H", frame[-2:])[0]:
                del buf[0]  # resynchronise on the next byte
                self.bad_frames += 1
                continue
            del buf[:size]
            self.requests += 1
            unit, fc = frame[0], frame[1]
            address, word = struct.unpack(">HH", frame[2:6])
            self.log.append((unit, fc, address))
            if fc in (6, 16):
                values = ([word] if fc == 6 else
                          list(struct.unpack(f">{frame[6] // 2}H", frame[7:-2])))
                self._apply_write(unit, fc, address, values, frame[:6])
            else:
                self._answer(unit, fc, address, word)

    def _apply_write(self, unit: int, fc: int, address: int, values: list[int], head: bytes) -> None:
        model = self.units.get(unit)
        if model is None or model.faults.silent:
            return
        delay = self.reply_delay_s + model.faults.delay_s
        if not values or address + len(values) > model.register_count():
            self.send(rtu_frame(bytes([unit, fc | 0x80, 2])), delay)
            return
        for i, v in enumerate(values):
            self.written[unit][address + i] = v
        # the reply echoes unit, function, address and value (6) or count (16)
        self.send(rtu_frame(head if fc == 6 else head[:4] + struct.pack(">H", len(values))),
                  delay)

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
            if fc == 3:
                for a, v in self.written.get(unit, {}).items():
                    if a < len(regs):
                        regs[a] = v
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
