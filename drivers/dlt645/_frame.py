"""DL/T 645-2007 framing and value coding: pure functions, no I/O.

Frame on the wire::

    [FE FE FE FE]  68  A0 A1 A2 A3 A4 A5  68  C  L  DATA[L]  CS  16

* ``FE`` x 4 is an optional wake-up preamble (masters send it; meters usually echo it).
* ``A0..A5``: meter address, 12 BCD digits, least significant byte first
  ("000000123456" -> ``56 34 12 00 00 00``).  ``AA`` is a wildcard byte;
  ``AA`` x 6 is the broadcast address used by "read address" (C = 0x13).
* ``C``: control code. Bit 7 = direction (1 = from meter), bit 6 = abnormal reply,
  bit 5 = follow-up frame exists, bits 4..0 = function (0x11 read data, 0x13 read address).
* ``L``: number of DATA bytes. The standard caps it at 200 for reads (50 for writes).
* ``DATA``: every byte is sent +0x33 (mod 256) and received -0x33.
* ``CS``: sum of all bytes from the first 68 up to the end of DATA, mod 256.

A read request's DATA is the data identifier DI3..DI0 sent DI0 first (each +0x33);
the normal reply (C = 0x91, or 0xB1 when follow-up frames exist) echoes the DI and
appends the value: BCD, least significant byte first, with a fixed number of
decimals per DI; for signed items the sign is bit 7 of the most significant byte
(sign-magnitude, not two's complement). An abnormal reply (C = 0xD1) carries one
error byte.

Error detection: CS is an 8-bit sum, so any single changed byte between the first
68 and CS changes the sum and is detected.  A corrupted L byte re-frames the
bytes instead; the re-framed "frame" then needs an ``16`` at its new end *and*
a matching sum (about 1 in 65536), and a read reply truncated that way still
fails the value-length check in :func:`parse_read_reply`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from types import MappingProxyType
from typing import Final

__all__ = [
    "BROADCAST_ADDRESS",
    "CTRL_READ_ADDRESS",
    "CTRL_READ_ADDRESS_REPLY",
    "CTRL_READ_DATA",
    "CTRL_READ_ERROR_REPLY",
    "CTRL_READ_REPLY",
    "CTRL_READ_REPLY_MORE",
    "DATA_ITEMS",
    "DI_ACTIVE_POWER_TOTAL",
    "DI_COMBINED_ACTIVE_TOTAL",
    "DI_FORWARD_ACTIVE_TOTAL",
    "DI_FREQUENCY",
    "DI_PHASE_A_CURRENT",
    "DI_PHASE_A_VOLTAGE",
    "DI_POWER_FACTOR_TOTAL",
    "DI_REVERSE_ACTIVE_TOTAL",
    "MAX_DATA_LEN",
    "METER_ERROR_BITS",
    "PREAMBLE",
    "BcdError",
    "ChecksumError",
    "DataItem",
    "Dlt645Error",
    "EndByteError",
    "Frame",
    "FrameError",
    "LengthError",
    "MeterError",
    "UnexpectedFrameError",
    "UnknownDiError",
    "build_address_reply",
    "build_error_reply",
    "build_frame",
    "build_read",
    "build_read_address",
    "build_reply",
    "decode_address",
    "encode_address",
    "parse_address_reply",
    "parse_frame",
    "parse_read_reply",
    "parse_request",
]

START: Final = 0x68
END: Final = 0x16
PREAMBLE: Final = b"\xfe\xfe\xfe\xfe"
OFFSET: Final = 0x33
#: DL/T 645-2007 4.3: "L <= 200 when reading data, L <= 50 when writing data".
MAX_DATA_LEN: Final = 200
BROADCAST_ADDRESS: Final = "AAAAAAAAAAAA"

CTRL_READ_DATA: Final = 0x11
CTRL_READ_REPLY: Final = 0x91
CTRL_READ_REPLY_MORE: Final = 0xB1  # normal reply, follow-up frames exist
CTRL_READ_ERROR_REPLY: Final = 0xD1
CTRL_READ_ADDRESS: Final = 0x13
CTRL_READ_ADDRESS_REPLY: Final = 0x93

_HEADER_LEN: Final = 10  # 68 + 6 address + 68 + C + L
_OVERHEAD: Final = 12  # header + CS + 16

#: Bits of the error byte (ERR) in an abnormal reply, DL/T 645-2007 table 3 (bit 7 reserved).
METER_ERROR_BITS: Final[Mapping[int, str]] = MappingProxyType(
    {
        0: "other error",
        1: "no requested data",
        2: "password error / unauthorised",
        3: "baud rate cannot be changed",
        4: "too many annual time zones",
        5: "too many daily time slots",
        6: "too many tariffs",
    }
)


# --------------------------------------------------------------------------- errors


class Dlt645Error(Exception):
    """Base of every DL/T 645 error raised by this module."""


class FrameError(Dlt645Error):
    """A frame candidate in a stream buffer is malformed.

    ``raw`` holds the offending bytes (from the candidate's first 68 on); ``consumed``
    is how many bytes, counted from the start of the buffer handed to
    :func:`parse_frame`, the caller must drop before parsing again.
    """

    def __init__(self, message: str, raw: bytes, consumed: int) -> None:
        super().__init__(f"{message}: {raw.hex(' ').upper()}")
        self.raw = raw
        self.consumed = consumed


class ChecksumError(FrameError):
    """CS byte does not match the sum of the frame (whole candidate is consumed)."""


class EndByteError(FrameError):
    """The byte where L says the frame ends is not 0x16 (only the first 68 is consumed)."""


class LengthError(FrameError):
    """L is larger than the permitted maximum (only the first 68 is consumed)."""


class MeterError(Dlt645Error):
    """The meter answered with an abnormal reply (C = 0xD1); ``code`` is its error byte."""

    def __init__(self, code: int, address: str = "") -> None:
        names = [name for bit, name in METER_ERROR_BITS.items() if code & (1 << bit)]
        detail = ", ".join(names) if names else "no error bit set"
        where = f" {address}" if address else ""
        super().__init__(f"meter{where} error reply 0x{code:02X} ({detail})")
        self.code = code
        self.address = address


class BcdError(Dlt645Error):
    """A byte that must be BCD has a nibble > 9."""


class UnexpectedFrameError(Dlt645Error):
    """A well-formed frame that is not the expected request/reply (control code, DI echo, size)."""


class UnknownDiError(Dlt645Error, KeyError):
    """The data identifier is not in :data:`DATA_ITEMS`."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------- data items


@dataclass(frozen=True, slots=True)
class DataItem:
    """One data identifier: value layout and meaning."""

    di: int
    name: str
    length: int  # value bytes, without the 4 DI bytes
    decimals: int
    unit: str
    signed: bool  # sign = bit 7 of the most significant byte

    @property
    def max_magnitude(self) -> Decimal:
        """Largest representable |value| (the sign bit leaves 3 bits for the top digit)."""
        top = 7 if self.signed else 9
        digits = 2 * self.length
        raw = (top + 1) * 10 ** (digits - 1) - 1
        return Decimal(raw).scaleb(-self.decimals)


DI_COMBINED_ACTIVE_TOTAL: Final = 0x00000000
DI_FORWARD_ACTIVE_TOTAL: Final = 0x00010000
DI_REVERSE_ACTIVE_TOTAL: Final = 0x00020000
DI_PHASE_A_VOLTAGE: Final = 0x02010100
DI_PHASE_A_CURRENT: Final = 0x02020100
DI_ACTIVE_POWER_TOTAL: Final = 0x02030000
DI_POWER_FACTOR_TOTAL: Final = 0x02060000
DI_FREQUENCY: Final = 0x02800002

# Checked against DL/T 645-2007 appendix A (tables A.1 energy, A.3 variables) as
# reproduced by public implementations; the standard text itself was not at hand.
# Doubts:
# * Combined active energy (00000000): A.1's note makes the *combined* energies
#   signed (top bit = sign, range 0..799999.99), because the combination mode word
#   may subtract reverse from forward.  Forward/reverse totals are unsigned
#   (0..999999.99).  A meter that ignores the note and counts past 799999.99 kWh
#   on DI 00000000 would be misread as negative here; read 00010000 instead.
# * Current 02020100 (XXX.XXX A) and active power 02030000 (XX.XXXX kW) carry the
#   direction in the sign bit; power factor 02060000 (X.XXX) too.
# * Frequency is 02800002 (the 0280 "extended variables" block, DI0 = 02), not
#   02800000, which some vendor docs list.
# * Phase B/C (DI1 = 02/03) and per-phase power (DI1 = 01..03) follow the same
#   patterns but are left out until a meter that needs them is on the bench.
DATA_ITEMS: Final[Mapping[int, DataItem]] = MappingProxyType(
    {
        item.di: item
        for item in (
            DataItem(DI_COMBINED_ACTIVE_TOTAL, "combined active energy total", 4, 2, "kWh", True),
            DataItem(DI_FORWARD_ACTIVE_TOTAL, "forward active energy total", 4, 2, "kWh", False),
            DataItem(DI_REVERSE_ACTIVE_TOTAL, "reverse active energy total", 4, 2, "kWh", False),
            DataItem(DI_PHASE_A_VOLTAGE, "phase A voltage", 2, 1, "V", False),
            DataItem(DI_PHASE_A_CURRENT, "phase A current", 3, 3, "A", True),
            DataItem(DI_ACTIVE_POWER_TOTAL, "total active power", 3, 4, "kW", True),
            DataItem(DI_POWER_FACTOR_TOTAL, "total power factor", 2, 3, "", True),
            DataItem(DI_FREQUENCY, "grid frequency", 2, 2, "Hz", False),
        )
    }
)


def _item(di: int) -> DataItem:
    try:
        return DATA_ITEMS[di]
    except KeyError:
        raise UnknownDiError(f"data identifier {di:08X} is not in the DI table") from None


# --------------------------------------------------------------------------- address


def encode_address(addr: str) -> bytes:
    """12 decimal digits (most significant first) -> 6 bytes, least significant first.

    A digit pair may also be ``AA`` (wildcard byte), so ``"AAAAAAAAAAAA"`` is the broadcast
    address.  Raises ValueError for anything else.
    """
    if len(addr) != 12:
        raise ValueError(f"meter address must have 12 digits, got {addr!r}")
    out = bytearray()
    for k in range(10, -1, -2):
        pair = addr[k : k + 2]
        if pair.isascii() and pair.isdigit():
            out.append(int(pair, 16))
        elif pair.upper() == "AA":
            out.append(0xAA)
        else:
            raise ValueError(f"meter address {addr!r}: {pair!r} is not two decimal digits or AA")
    return bytes(out)


def _address_text(b: bytes) -> str:
    return b[::-1].hex().upper()


def decode_address(b: bytes) -> str:
    """6 address bytes (least significant first) -> 12-character string.

    Each byte must be BCD or the wildcard ``AA``; otherwise :class:`BcdError`.
    """
    if len(b) != 6:
        raise ValueError(f"a meter address has 6 bytes, got {len(b)}: {b.hex(' ').upper()}")
    for x in b:
        if x != 0xAA and (x >> 4 > 9 or x & 0xF > 9):
            raise BcdError(f"address byte {x:02X} is not BCD in {b.hex(' ').upper()}")
    return _address_text(b)


# --------------------------------------------------------------------------- frames


@dataclass(frozen=True, slots=True)
class Frame:
    """One checked frame. ``data`` already has the 0x33 offset removed.

    ``address`` is 12 characters, most significant first; BCD addresses are decimal
    digits, wildcard bytes show as ``AA`` (any other non-BCD byte shows as its hex).
    """

    address: str
    control: int
    data: bytes


def _checksum(b: bytes | bytearray) -> int:
    return sum(b) & 0xFF


def build_frame(address: str, control: int, data: bytes = b"", *, preamble: bool = True) -> bytes:
    """Frame ``data`` (plain, the +0x33 offset is applied here) for ``address``."""
    if not 0 <= control <= 0xFF:
        raise ValueError(f"control code {control} is not a byte")
    if len(data) > 0xFF:
        raise ValueError(f"DL/T 645 data field is at most 255 bytes, got {len(data)}")
    body = bytearray([START, *encode_address(address), START, control, len(data)])
    body += bytes((x + OFFSET) & 0xFF for x in data)
    body += bytes([_checksum(body), END])
    return (PREAMBLE if preamble else b"") + bytes(body)


def _frame_at(buf: bytes, i: int, max_data_len: int) -> int | None:
    """End index of a complete, valid frame starting at ``buf[i]``, else None."""
    n = len(buf)
    if n < i + _OVERHEAD or buf[i] != START or buf[i + 7] != START:
        return None
    length = buf[i + 9]
    end = i + _OVERHEAD + length
    if length > max_data_len or end > n or buf[end - 1] != END:
        return None
    return end if _checksum(buf[i : end - 2]) == buf[end - 2] else None


def _find_valid(buf: bytes, start: int, stop: int, max_data_len: int) -> int | None:
    for j in range(start, min(stop, len(buf))):
        if buf[j] == START and _frame_at(buf, j, max_data_len) is not None:
            return j
    return None


def _decode(buf: bytes, i: int, end: int) -> Frame:
    data = bytes((x - OFFSET) & 0xFF for x in buf[i + _HEADER_LEN : end - 2])
    return Frame(_address_text(buf[i + 1 : i + 7]), buf[i + 8], data)


def parse_frame(buf: bytes, *, max_data_len: int = MAX_DATA_LEN) -> tuple[Frame | None, int]:
    """Find the first frame in a stream buffer.

    Returns ``(frame, consumed)``: drop ``consumed`` bytes from the front of the buffer
    (leading garbage / FE preamble + the frame).  ``(None, n)`` means no complete frame
    yet: drop the ``n`` garbage bytes and wait for more data.

    A candidate starts at a 68 that has a second 68 seven bytes later.  Raises
    :class:`LengthError` (L > ``max_data_len``), :class:`EndByteError` (no 16 where L
    says the frame ends) or :class:`ChecksumError`; each carries ``raw`` and
    ``consumed``.  A candidate still waiting for bytes, or failing its checksum, is
    treated as garbage when a complete valid frame starts inside it.
    """
    n = len(buf)
    i = 0
    while True:
        i = buf.find(START, i)
        if i < 0:
            return None, n
        if n < i + _HEADER_LEN:
            if n > i + 7 and buf[i + 7] != START:
                i += 1
                continue
            return None, i
        if buf[i + 7] != START:
            i += 1
            continue
        length = buf[i + 9]
        if length > max_data_len:
            raise LengthError(
                f"DL/T 645 frame: L={length} exceeds {max_data_len}",
                buf[i : i + _HEADER_LEN],
                i + 1,
            )
        end = i + _OVERHEAD + length
        if end > n:
            j = _find_valid(buf, i + 1, n, max_data_len)
            if j is None:
                return None, i
            i = j
            continue
        if buf[end - 1] != END:
            raise EndByteError(
                f"DL/T 645 frame: end byte {buf[end - 1]:02X} instead of 16", buf[i:end], i + 1
            )
        cs = _checksum(buf[i : end - 2])
        if cs != buf[end - 2]:
            j = _find_valid(buf, i + 1, end, max_data_len)
            if j is not None:
                i = j
                continue
            raise ChecksumError(
                f"DL/T 645 frame: checksum {buf[end - 2]:02X}, computed {cs:02X}", buf[i:end], end
            )
        return _decode(buf, i, end), end


# --------------------------------------------------------------------------- BCD values


def _decode_bcd(raw: bytes, decimals: int, signed: bool) -> float:
    b = bytearray(raw)
    negative = False
    if signed and b and b[-1] & 0x80:
        negative = True
        b[-1] &= 0x7F
    digits = b[::-1].hex()
    if not digits.isdigit():
        raise BcdError(f"value bytes {raw.hex(' ').upper()} are not BCD")
    magnitude = int(digits)
    scale: int = 10**decimals
    return (-magnitude if negative else magnitude) / scale  # int / int: correctly rounded


def _encode_bcd(value: float, item: DataItem) -> bytes:
    if not math.isfinite(value):
        raise ValueError(f"{item.name}: cannot encode {value}")
    try:
        scaled = Decimal(repr(value)).scaleb(item.decimals).to_integral_value(ROUND_HALF_EVEN)
    except InvalidOperation as exc:  # pragma: no cover - repr() of a finite float always parses
        raise ValueError(f"{item.name}: cannot encode {value}") from exc
    magnitude = int(abs(scaled))
    negative = scaled < 0
    if negative and not item.signed:
        raise ValueError(f"{item.name} is unsigned, got {value}")
    if Decimal(magnitude).scaleb(-item.decimals) > item.max_magnitude:
        raise ValueError(f"{item.name}: |{value}| exceeds {item.max_magnitude} {item.unit}")
    out = bytearray(bytes.fromhex(f"{magnitude:0{2 * item.length}d}")[::-1])
    if negative:
        out[-1] |= 0x80
    return bytes(out)


# --------------------------------------------------------------------------- requests and replies


def _di_bytes(di: int) -> bytes:
    if not 0 <= di <= 0xFFFFFFFF:
        raise ValueError(f"data identifier {di} is not 4 bytes")
    return di.to_bytes(4, "little")


def build_read(address: str, di: int) -> bytes:
    """Read-data request (C = 0x11) for ``di``, with the 4 x FE preamble."""
    return build_frame(address, CTRL_READ_DATA, _di_bytes(di))


def build_read_address() -> bytes:
    """Broadcast read-address request: ``FE FE FE FE 68 AA..AA 68 13 00 DF 16``."""
    return build_frame(BROADCAST_ADDRESS, CTRL_READ_ADDRESS)


def parse_read_reply(frame: Frame, di: int) -> float:
    """Value of ``di`` from a read reply, in the unit of :data:`DATA_ITEMS` ``[di]``.

    Raises :class:`MeterError` for an abnormal reply (C = 0xD1),
    :class:`UnexpectedFrameError` for another control code, a DI echo that does not
    match or a value of the wrong size, :class:`UnknownDiError` and :class:`BcdError`.
    """
    if frame.control == CTRL_READ_ERROR_REPLY:
        if len(frame.data) != 1:
            raise UnexpectedFrameError(
                f"error reply from {frame.address} has {len(frame.data)} data bytes, expected 1"
            )
        raise MeterError(frame.data[0], frame.address)
    if frame.control not in (CTRL_READ_REPLY, CTRL_READ_REPLY_MORE):
        raise UnexpectedFrameError(
            f"frame from {frame.address} has control 0x{frame.control:02X}, expected a read reply (0x91/0xB1)"
        )
    item = _item(di)
    if len(frame.data) < 4:
        raise UnexpectedFrameError(f"read reply from {frame.address} has no DI")
    echo = int.from_bytes(frame.data[:4], "little")
    if echo != di:
        raise UnexpectedFrameError(f"read reply from {frame.address} is for DI {echo:08X}, expected {di:08X}")
    value = frame.data[4:]
    if len(value) != item.length:
        raise UnexpectedFrameError(
            f"read reply from {frame.address} for {item.name} ({di:08X}) has "
            f"{len(value)} value bytes, expected {item.length}"
        )
    return _decode_bcd(value, item.decimals, item.signed)


def build_reply(address: str, di: int, value: float) -> bytes:
    """Normal read reply (C = 0x91) a meter sends for ``di`` (no preamble)."""
    item = _item(di)
    return build_frame(address, CTRL_READ_REPLY, _di_bytes(di) + _encode_bcd(value, item), preamble=False)


def build_error_reply(address: str, code: int) -> bytes:
    """Abnormal read reply (C = 0xD1) with error byte ``code`` (see :data:`METER_ERROR_BITS`)."""
    if not 0 <= code <= 0xFF:
        raise ValueError(f"error code {code} is not a byte")
    return build_frame(address, CTRL_READ_ERROR_REPLY, bytes([code]), preamble=False)


def parse_request(frame: Frame) -> int:
    """DI of a read-data request (for the simulator).

    L = 4 (DI), 5 (DI + block count N) and 10 (DI + N + time, load records) are the
    request shapes of DL/T 645-2007; the DI is returned for all of them.
    """
    if frame.control != CTRL_READ_DATA:
        raise UnexpectedFrameError(
            f"frame to {frame.address} has control 0x{frame.control:02X}, expected a read request (0x11)"
        )
    if len(frame.data) not in (4, 5, 10):
        raise UnexpectedFrameError(
            f"read request to {frame.address} has {len(frame.data)} data bytes, expected 4, 5 or 10"
        )
    return int.from_bytes(frame.data[:4], "little")


def build_address_reply(address: str) -> bytes:
    """Reply to a read-address request (C = 0x93): the address in both fields."""
    return build_frame(address, CTRL_READ_ADDRESS_REPLY, encode_address(address), preamble=False)


def parse_address_reply(frame: Frame) -> str:
    """Meter address from a read-address reply (C = 0x93)."""
    if frame.control != CTRL_READ_ADDRESS_REPLY or len(frame.data) != 6:
        raise UnexpectedFrameError(
            f"frame from {frame.address} (control 0x{frame.control:02X}, "
            f"{len(frame.data)} data bytes) is not a read-address reply"
        )
    return decode_address(frame.data)
