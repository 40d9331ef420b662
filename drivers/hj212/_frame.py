"""HJ 212-2017 / HJ 212-2025 communication packets: pure functions, no I/O.

Packet on the wire (ASCII)::

    ##  dddd  <data segment>  XXXX  \\r\\n

* ``dddd``: length of the data segment, 4 decimal digits; HJ 212-2017 6.3.1 allows
  0..1024 (the limit is a parameter here).
* data segment: ``QN=..;ST=..;CN=..;PW=..;MN=..;Flag=..;[PNUM=..;PNO=..;]CP=&&...&&``
* ``XXXX``: CRC of the data segment only, 4 hex digits (upper case as the standard
  prints it; lower case is rejected).

CRC (HJ 212-2017 appendix A) -- *not* CRC-16/MODBUS::

    crc = 0xFFFF
    for byte in segment:
        crc = (crc >> 8) ^ byte          # MODBUS does: crc ^= byte
        repeat 8: crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1

Same polynomial and start value as MODBUS, but every byte first throws away the
low 8 bits of the register, so only 8 bits of state survive from one byte to the
next (the final value is one of 256 table entries).  Consequences: the two
checksums differ (the standard's own example segment ``QN=20160801085857223;...``
gives 1C80 here, 0759 with MODBUS -- some public code gets this wrong), and the
check is much weaker than a real CRC-16 against multi-byte damage (~1/256 misses).
It still detects every single changed byte: each step maps the carried high byte
through a permutation, so one differing byte keeps the state different to the end.

Flag: bit 0 = A (answer requested), bit 1 = D (packet split; PNUM/PNO present),
bits 2..7 = standard version: 0 HJ/T 212-2005, 1 HJ 212-2017 (Flag 4/5).  HJ 212-2025
(in force from 2026-01-01) uses version 2 (Flag 8/9) according to implementations
that cite the 2025 text; the standard itself was not at hand to confirm it.
Other 2025 differences reported by those sources and NOT implemented here (doubts):
SM4 encryption of the CP content of data commands on internet links, and a length
counted in UTF-8 bytes with Chinese text allowed in CP.  This module keeps the 2017
framing (ASCII only) for both versions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Final, Literal

from drivers._limits import TS_RANGE_TEXT, ts_in_range

__all__ = [
    "CN_DATA_RESPONSE",
    "CN_DAY_DATA",
    "CN_HOUR_DATA",
    "CN_MINUTE_DATA",
    "CN_NOTIFY_ANSWER",
    "CN_REALTIME_DATA",
    "CN_REQUEST_ANSWER",
    "FLAG_ANSWER",
    "FLAG_SPLIT",
    "MAX_DATA_LEN",
    "MAX_FIELD_LEN",
    "VERSION_CODES",
    "CrcError",
    "EncodingError",
    "FrameError",
    "Hj212Error",
    "LengthError",
    "Packet",
    "PacketError",
    "TerminatorError",
    "Version",
    "build_data_reply",
    "build_frame",
    "crc16_hj212",
    "data_time_ns",
    "needs_reply",
    "parse_frame",
    "parse_segment",
]

Version = Literal["2017", "2025"]

HEADER: Final = b"##"
TRAILER: Final = b"\r\n"
#: HJ 212-2017 6.3.1: data segment 0..1024 characters.
MAX_DATA_LEN: Final = 1024
#: Longest header value (QN, ST, CN, PW, MN, Flag, PNUM, PNO, ...) accepted. HJ 212-2017 table 4
#: allows at most 27 characters (MN); the margin is for loggers that pad. Bounding these also
#: bounds the 9014 reply built from QN, PW and MN (3 x 64 + 45 < 1024 bytes).
MAX_FIELD_LEN: Final = 64

FLAG_ANSWER: Final = 0x01  # A: the receiver must answer
FLAG_SPLIT: Final = 0x02  # D: packet is one of PNUM parts
#: Flag bits 2..7 per standard.  "2025" -> 2 is from secondary sources (see module doc).
VERSION_CODES: Final[dict[str, int]] = {"2005": 0, "2017": 1, "2025": 2}

CN_REALTIME_DATA: Final = "2011"
CN_MINUTE_DATA: Final = "2051"
CN_HOUR_DATA: Final = "2061"
CN_DAY_DATA: Final = "2031"
CN_REQUEST_ANSWER: Final = "9011"
CN_NOTIFY_ANSWER: Final = "9012"  # HJ 212-2017 calls 9012 "execution result"
CN_DATA_RESPONSE: Final = "9014"
ST_SYSTEM_INTERACTION: Final = "91"

_PREFIX_LEN: Final = 6  # "##" + 4 digits
_SUFFIX_LEN: Final = 6  # 4 CRC + CRLF
_CRC_RE: Final = re.compile(rb"[0-9A-F]{4}")
_DATA_TIME_RE: Final = re.compile(r"\d{14}")

# --------------------------------------------------------------------------- errors


class Hj212Error(Exception):
    """Base of every HJ 212 error raised by this module.

    When raised by :func:`parse_frame`, ``raw`` holds the offending bytes and
    ``consumed`` the number of bytes (from the start of the buffer) to drop before
    parsing again; otherwise they are empty / 0.
    """

    def __init__(self, message: str, raw: bytes = b"", consumed: int = 0) -> None:
        super().__init__(message)
        self.raw = raw
        self.consumed = consumed


class FrameError(Hj212Error):
    """The packet framing is broken: the bytes are not a valid HJ 212 packet."""

    def __init__(self, message: str, raw: bytes, consumed: int) -> None:
        super().__init__(f"{message}: {raw!r}", raw, consumed)


class LengthError(FrameError):
    """Length digits are not decimal, exceed the maximum, or disagree with the packet end."""


class CrcError(FrameError):
    """CRC field is not 4 upper-case hex digits or does not match the data segment."""


class TerminatorError(FrameError):
    """No CR LF where the length says the packet ends."""


class EncodingError(FrameError):
    """The data segment has non-ASCII bytes."""


class PacketError(Hj212Error):
    """A correctly framed data segment whose content does not parse; ``field`` names the culprit."""

    def __init__(self, field_name: str, detail: str, raw: bytes = b"", consumed: int = 0) -> None:
        where = f" in {raw!r}" if raw else ""
        super().__init__(f"HJ 212 field {field_name}: {detail}{where}", raw, consumed)
        self.field = field_name
        self.detail = detail


# --------------------------------------------------------------------------- CRC and building


def crc16_hj212(data: bytes) -> int:
    """HJ 212 CRC of ``data`` (see module docstring for how it differs from CRC-16/MODBUS)."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def build_frame(segment: str, *, max_len: int = MAX_DATA_LEN) -> bytes:
    """``##`` + length + ``segment`` + CRC + CRLF.  ValueError for non-ASCII or too long."""
    try:
        data = segment.encode("ascii")
    except UnicodeEncodeError as exc:
        raise ValueError(f"HJ 212 data segment must be ASCII: {segment!r}") from exc
    if len(data) > min(max_len, 9999):
        raise ValueError(f"HJ 212 data segment has {len(data)} bytes, limit {max_len}")
    if b"\r\n" in data:
        raise ValueError("HJ 212 data segment must not contain CR LF")
    return b"##%04d%s%04X\r\n" % (len(data), data, crc16_hj212(data))


# --------------------------------------------------------------------------- packets


@dataclass(frozen=True, slots=True)
class Packet:
    """A parsed data segment.

    ``fields``: every ``key=value`` before ``CP`` as sent (QN, ST, CN, PW, MN, Flag, PNUM, ...).
    ``cp``: factor code -> its fields, e.g. ``{"a34013": {"Rtd": "12.3", "Flag": "N"}}``.
    ``cp_fields``: CP items without a factor code (``DataTime``, ``RtdInterval``, ``QnRtn``...).
    """

    qn: str | None
    st: str
    cn: str
    pw: str
    mn: str
    flag: int
    fields: dict[str, str]
    cp: dict[str, dict[str, str]]
    data_time: str | None
    cp_fields: dict[str, str] = field(default_factory=dict)
    pnum: int | None = None
    pno: int | None = None
    segment: str = ""

    @property
    def answer_requested(self) -> bool:
        return bool(self.flag & FLAG_ANSWER)

    @property
    def split(self) -> bool:
        return bool(self.flag & FLAG_SPLIT)

    @property
    def version_code(self) -> int:
        """Flag bits 2..7: 0 = HJ/T 212-2005, 1 = HJ 212-2017, 2 = HJ 212-2025."""
        return self.flag >> 2


def _split_pair(item: str, where: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise PacketError(where, f"item {item!r} is not key=value")
    return key, value


def _parse_cp(
    content: str,
) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    factors: dict[str, dict[str, str]] = {}
    plain: dict[str, str] = {}
    for group in content.split(";"):
        for item in group.split(","):
            if not item:
                continue
            key, value = _split_pair(item, "CP")
            code, dash, name = key.partition("-")
            if dash:
                if not code or not name:
                    raise PacketError("CP", f"item {item!r}: expected <factor>-<field>=value")
                target = factors.setdefault(code, {})
                if name in target:
                    raise PacketError("CP", f"{code}-{name} appears twice")
                target[name] = value
            else:
                if key in plain:
                    raise PacketError("CP", f"{key} appears twice")
                plain[key] = value
    return factors, plain


def _int_field(fields: dict[str, str], name: str, limit: int) -> int:
    text = fields[name]
    # Length first: int() of more than 4,300 digits raises ValueError (and costs quadratic time).
    if not (text.isascii() and text.isdigit() and len(text) <= len(str(limit))) or int(text) > limit:
        raise PacketError(name, f"{text[:20]!r} is not an integer 0..{limit}")
    return int(text)


def parse_segment(segment: str) -> Packet:
    """Parse a data segment (the part between the length and the CRC)."""
    head, sep, rest = segment.partition("CP=&&")
    if not sep:
        raise PacketError("CP", "missing CP=&&...&&")
    if not rest.endswith("&&"):
        raise PacketError("CP", "CP section does not end with &&")
    content = rest[:-2]
    if "&&" in content:
        raise PacketError("CP", "&& inside the CP section")
    if head and not head.endswith(";"):
        raise PacketError("CP", "CP must follow a ';'")
    fields: dict[str, str] = {}
    for item in head[:-1].split(";") if head else []:
        key, value = _split_pair(item, "header")
        if len(key) > MAX_FIELD_LEN or len(value) > MAX_FIELD_LEN:
            raise PacketError(key[:MAX_FIELD_LEN], f"longer than {MAX_FIELD_LEN} characters")
        if key in fields:
            raise PacketError(key, "appears twice")
        fields[key] = value
    for required in ("ST", "CN", "PW", "MN"):
        if not fields.get(required):
            raise PacketError(required, "missing")
    cn = fields["CN"]
    if not (len(cn) == 4 and cn.isascii() and cn.isdigit()):
        raise PacketError("CN", f"{cn!r} is not 4 digits")
    # HJ/T 212-2005 packets may omit Flag; 0 is its meaning there (no answer, not split).
    flag = _int_field(fields, "Flag", 255) if "Flag" in fields else 0
    pnum = pno = None
    if flag & FLAG_SPLIT:
        for name in ("PNUM", "PNO"):
            if name not in fields:
                raise PacketError(name, "missing although Flag has the D (split) bit")
        pnum = _int_field(fields, "PNUM", 9999)
        pno = _int_field(fields, "PNO", 9999)
        if not 1 <= pno <= pnum:
            raise PacketError("PNO", f"packet {pno} of {pnum}")
    cp, cp_fields = _parse_cp(content)
    data_time = cp_fields.get("DataTime")
    return Packet(
        qn=fields.get("QN"),
        st=fields["ST"],
        cn=cn,
        pw=fields["PW"],
        mn=fields["MN"],
        flag=flag,
        fields=fields,
        cp=cp,
        data_time=data_time,
        cp_fields=cp_fields,
        pnum=pnum,
        pno=pno,
        segment=segment,
    )


def parse_frame(buf: bytes, *, max_len: int = MAX_DATA_LEN) -> tuple[Packet | None, int]:
    """Find the first packet in a stream buffer.

    Returns ``(packet, consumed)``; ``(None, n)`` means no complete packet yet: drop the
    ``n`` garbage bytes (everything before the next ``##``) and wait for more data.
    Framing faults (length, CR LF, CRC) raise a :class:`FrameError` subclass whose
    ``consumed`` drops only the first ``#``, so a real packet overlapping a false start
    is not lost (the rest of a damaged packet is skipped as garbage by the next call).
    A packet whose CRC checks but whose content is bad raises :class:`EncodingError`
    (non-ASCII) or :class:`PacketError` (segment does not parse), consuming the packet.
    """
    n = len(buf)
    i = buf.find(HEADER)
    if i < 0:
        return None, n - 1 if buf.endswith(b"#") else n
    while buf[i + 2 : i + 3] == b"#":  # "###0101...": the packet starts at the last "##"
        i += 1
    digits = buf[i + 2 : i + _PREFIX_LEN]
    if not (digits.isdigit() or digits == b""):
        raise LengthError(
            "HJ 212 packet: length field is not 4 decimal digits", buf[i : i + _PREFIX_LEN], i + 1
        )
    if len(digits) < 4:
        return None, i
    length = int(digits)
    if length > max_len:
        raise LengthError(
            f"HJ 212 packet: data length {length} exceeds {max_len}",
            buf[i : i + _PREFIX_LEN],
            i + 1,
        )
    crc_at = i + _PREFIX_LEN + length
    end = crc_at + _SUFFIX_LEN
    crlf = buf.find(TRAILER, i + _PREFIX_LEN)
    if crlf != -1 and crlf < crc_at + 4:
        actual = crlf - 4 - (i + _PREFIX_LEN)
        raise LengthError(
            f"HJ 212 packet: length field says {length} but the packet ends after "
            f"{max(actual, 0)} data bytes",
            buf[i : crlf + 2],
            i + 1,
        )
    if crlf != crc_at + 4:
        if n < end:
            return None, i
        raise TerminatorError(
            f"HJ 212 packet: no CR LF after the CRC where the length field ({length}) puts it",
            buf[i:end],
            i + 1,
        )
    data = buf[i + _PREFIX_LEN : crc_at]
    crc_field = buf[crc_at : crc_at + 4]
    if not _CRC_RE.fullmatch(crc_field):
        raise CrcError("HJ 212 packet: CRC field is not 4 upper-case hex digits", buf[i:end], i + 1)
    crc = crc16_hj212(data)
    if int(crc_field, 16) != crc:
        raise CrcError(f"HJ 212 packet: CRC {crc_field.decode()} but data gives {crc:04X}", buf[i:end], i + 1)
    try:
        segment = data.decode("ascii")
    except UnicodeDecodeError:
        raise EncodingError("HJ 212 packet: non-ASCII data segment", buf[i:end], end) from None
    try:
        return parse_segment(segment), end
    except PacketError as exc:
        raise PacketError(exc.field, exc.detail, buf[i:end], end) from None


def needs_reply(p: Packet) -> bool:
    """Flag bit A: the sender waits for an answer (a 9014 for uploaded data)."""
    return p.answer_requested


def _version_of(p: Packet) -> Version:
    return "2025" if p.version_code == VERSION_CODES["2025"] else "2017"


def build_data_reply(p: Packet, *, version: Version | None = None) -> bytes:
    """The 9014 "data response" the upper computer sends for an uploaded data packet.

    Raises `PacketError` (field ``QN`` or ``reply``) when ``p`` has no QN or the reply cannot be
    framed (over 1,024 bytes; a packet parsed by `parse_frame` always fits).

    HJ 212-2017 (appendix C examples): ``QN=<QN of p>;ST=91;CN=9014;PW=<p.pw>;MN=<p.mn>;
    Flag=4;CP=&&&&`` -- the QN moved from CP (HJ/T 212-2005: ``CP=&&QN=...;CN=...&&``) to
    the header.  ``version`` sets the Flag version bits; default: the version of ``p``
    (2025 if its Flag says so, else 2017).  The reply itself asks no answer.
    """
    if not p.qn:
        raise PacketError("QN", "the packet has no QN to answer")
    v = version if version is not None else _version_of(p)
    flag = VERSION_CODES[v] << 2
    segment = (
        f"QN={p.qn};ST={ST_SYSTEM_INTERACTION};CN={CN_DATA_RESPONSE};PW={p.pw};MN={p.mn};Flag={flag};CP=&&&&"
    )
    try:
        return build_frame(segment)
    except ValueError as exc:  # over 1,024 bytes, non-ASCII or CR LF in QN, PW or MN
        raise PacketError("reply", f"cannot build the 9014 reply: {str(exc)[:120]}") from None


def data_time_ns(p: Packet, *, tz_offset: timedelta = timedelta(hours=8)) -> int:
    """``DataTime`` (yyyyMMddHHmmss, plant local time at ``tz_offset``) -> Unix time in ns."""
    text = p.data_time
    if text is None:
        raise PacketError("DataTime", "missing from CP")
    if not (text.isascii() and _DATA_TIME_RE.fullmatch(text)):
        raise PacketError("DataTime", f"{text!r} is not yyyyMMddHHmmss")
    try:
        local = datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=timezone(tz_offset))
    except ValueError as exc:
        raise PacketError("DataTime", f"{text!r} is not a valid time") from exc
    delta = local - datetime(1970, 1, 1, tzinfo=UTC)
    ns = (delta // timedelta(microseconds=1)) * 1000
    if not ts_in_range(ns):
        raise PacketError("DataTime", f"{text!r} is outside {TS_RANGE_TEXT}")
    return ns
