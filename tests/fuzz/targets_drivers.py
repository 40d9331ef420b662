"""Fuzz targets of the acquisition drivers: every parser of bytes a device or a broker sends.

Each target also checks what it accepts (a reading's value finite and its time within the
record format's range; a decoder agreeing with the other decoders of the same registers), so an
accepted input that yields a wrong result is a finding too (an AssertionError is no rejection).
"""

from __future__ import annotations

import json
import logging
import math

from pymodbus.pdu import DecodePDU

from config._schema import Dlt645Bus, MqttPoint
from drivers._limits import TS_NS_MAX, TS_NS_MIN
from drivers._polling import LogLimiter
from drivers.dlt645._frame import (
    CTRL_READ_REPLY,
    DATA_ITEMS,
    DI_ACTIVE_POWER_TOTAL,
    DI_FORWARD_ACTIVE_TOTAL,
    DI_PHASE_A_VOLTAGE,
    Dlt645Error,
    build_address_reply,
    build_error_reply,
    build_frame,
    build_read,
    build_reply,
    parse_address_reply,
    parse_frame,
    parse_read_reply,
    parse_request,
)
from drivers.dlt645._io import Dlt645BusPoller
from drivers.hj212._frame import (
    Hj212Error,
    PacketError,
    build_data_reply,
    data_time_ns,
    parse_segment,
)
from drivers.hj212._frame import build_frame as hj212_frame
from drivers.hj212._frame import parse_frame as hj212_parse
from drivers.modbus._decode import (
    DATA_TYPES,
    WORD_ORDERS,
    compile_decoder,
    decode,
    decode_array,
    encode,
    is_sentinel,
    register_count,
)
from drivers.modbus._lean import FrameError, decode_response, split_frames
from drivers.mqtt._payload import PayloadError, compile_points, readings_from
from mrv_core._metrics import Metrics
from tests.fuzz import Target

# --------------------------------------------------------------------------- MQTT

_MQTT_POINTS = compile_points([
    MqttPoint(id="co2", topic="plant/+/gas", value="data.co2", timestamp="ts", unit="ppm"),
    MqttPoint(id="o2", topic="plant/+/gas", value="data.values.1", timestamp="t_s",
              timestamp_unit="s", unit="%"),
    MqttPoint(id="nox", topic="plant/+/gas", value="nox", timestamp="iso",
              timestamp_unit="iso8601", unit="mg/m3"),
    MqttPoint(id="flow", topic="plant/+/gas", value="flow", timestamp="t_ns", timestamp_unit="ns",
              unit="m3/h"),
    MqttPoint(id="raw", topic="plant/+/gas", value="$", unit="x"),
])
_MQTT_MAX = 65_536


def _mqtt_payload(data: bytes) -> None:
    readings, problems = readings_from("plant/a/gas", data, _MQTT_POINTS, source="mqtt:fuzz",
                                       now_ns=1_767_225_600_000_000_000, max_bytes=_MQTT_MAX)
    for r in readings:
        assert math.isfinite(r.value), r
        assert TS_NS_MIN <= r.ts_ns <= TS_NS_MAX, r
    if problems and not readings:
        raise PayloadError(problems[0])


_MQTT_SEEDS = (
    json.dumps({"data": {"co2": 412.5, "values": [1, 20.9]}, "ts": 1767225600123, "t_s": 1767225600,
                "nox": "35.5", "iso": "2026-01-01T08:00:00+08:00", "flow": 12,
                "t_ns": 1767225600000000001}).encode(),
    json.dumps({"data": {"co2": "400", "values": [0, True]}, "ts": "2026-01-01T00:00:00Z",
                "t_s": 1.5e9, "nox": 1e308, "iso": "2026-01-01T00:00:00.123456Z", "flow": -0.0,
                "t_ns": 1}).encode(),
    b"12.5",
    b"[1, 2, 3]",
    b'{"data": {"co2": null}, "ts": []}',
)

# --------------------------------------------------------------------------- HJ 212

_HJ_SEGMENTS = (
    "QN=20260101120000000;ST=22;CN=2011;PW=123456;MN=88888880000001;Flag=5;"
    "CP=&&DataTime=20260101120000;a34013-Rtd=12.5,a34013-Flag=N;a21026-Rtd=35.0,a21026-Flag=D&&",
    "QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;"
    "CP=&&RtdInterval=30&&",
    "ST=22;CN=2051;PW=123456;MN=88888880000001;Flag=7;PNUM=2;PNO=1;"
    "CP=&&DataTime=20260101120000;a01011-Avg=1.5,a01011-Min=1.0,a01011-Max=2.0,a01011-Flag=N&&",
    "QN=20260101120000000;ST=22;CN=2011;PW=123456;MN=88888880000001;Flag=9;CP=&&&&",
)


def _hj212_frame(data: bytes) -> None:
    """The listener's loop over one buffer: every packet, until no complete one is left; the
    input is refused when it held no packet and a framing or content error."""
    buf, packets, first_error = data, 0, None
    while buf:
        try:
            pkt, used = hj212_parse(buf[:9999 + 64], max_len=9999)
        except Hj212Error as e:
            assert e.consumed > 0
            first_error = first_error or e
            buf = buf[e.consumed:]
            continue
        if pkt is not None:
            packets += 1
        elif used == 0:
            break
        buf = buf[used:]
    if first_error is not None and not packets:
        raise first_error


def _hj212_segment(data: bytes) -> None:
    """A framed packet's content: parsed, its time read, its 9014 reply built and parsed back."""
    try:
        segment = data.decode("ascii")
    except UnicodeDecodeError:
        raise PacketError("segment", "non-ASCII") from None
    pkt = parse_segment(segment)
    if pkt.data_time is not None:
        assert TS_NS_MIN <= data_time_ns(pkt) <= TS_NS_MAX
    if pkt.qn:
        reply = build_data_reply(pkt)
        answer, used = hj212_parse(reply)
        assert answer is not None and used == len(reply) and answer.qn == pkt.qn, reply


# --------------------------------------------------------------------------- DL/T 645

_ADDR = "000000123456"
_DLT_SEEDS = (
    build_reply(_ADDR, DI_FORWARD_ACTIVE_TOTAL, 12345.67),
    build_reply(_ADDR, DI_PHASE_A_VOLTAGE, 220.1),
    build_reply(_ADDR, DI_ACTIVE_POWER_TOTAL, -1.2345),
    build_error_reply(_ADDR, 0x02),
    build_address_reply(_ADDR),
    build_read(_ADDR, DI_FORWARD_ACTIVE_TOTAL),
    build_frame(_ADDR, CTRL_READ_REPLY, b"\x00" * 200, preamble=False),
)


def _dlt645_frame(data: bytes) -> None:
    frame, _ = parse_frame(data)
    if frame is None:
        raise Dlt645Error("no complete frame")
    di = int.from_bytes(frame.data[:4], "little") if len(frame.data) >= 4 else 0
    errors = 0
    for check in (lambda: parse_read_reply(frame, di if di in DATA_ITEMS else
                                           DI_FORWARD_ACTIVE_TOTAL),
                  lambda: parse_address_reply(frame), lambda: parse_request(frame)):
        try:
            v = check()
            if isinstance(v, float):
                assert math.isfinite(v)
        except Dlt645Error:
            errors += 1
    if errors == 3:
        raise Dlt645Error("not a reply, address reply or request")


_DLT_POLLER = Dlt645BusPoller(Dlt645Bus.model_validate({
    "driver": "dlt645", "name": "fuzz-bus", "port": "/dev/null",
    "meters": [{"name": "m", "address": _ADDR, "points": [
        {"id": "m.energy", "di": f"{DI_FORWARD_ACTIVE_TOTAL:08X}"}]}]}),
    sink=lambda rs: None, metrics=Metrics())  # type: ignore[arg-type, return-value]
_QUIET = logging.getLogger("mrv.fuzz.quiet")
_QUIET.propagate, _QUIET.disabled = False, True
_DLT_POLLER.noise = LogLimiter(_QUIET)  # counted as always; 10^6 warnings are not wanted


def _dlt645_line(data: bytes) -> None:
    """The bus poller's reading of a serial buffer: damaged frames skipped and counted."""
    buf = bytearray(data)
    frame = _DLT_POLLER._take_reply(buf, _ADDR)
    if frame is None:
        raise Dlt645Error("no reply from the meter in the buffer")
    assert frame.address == _ADDR and frame.control & 0x80


# --------------------------------------------------------------------------- Modbus


def _modbus_decode(data: bytes) -> None:
    """Registers -> value for every type and word order; the three decoders must agree and an
    integer value must encode back to its registers."""
    if len(data) < 3:
        raise ValueError("need a type, an order and a bit")
    dtype = DATA_TYPES[data[0] % len(DATA_TYPES)]
    order = WORD_ORDERS[data[1] % len(WORD_ORDERS)]
    bit = data[2] % 17 if dtype == "bitfield" else None  # 16 is out of range: a rejection
    regs = [int.from_bytes(data[i:i + 2], "big") for i in range(3, len(data) - 1, 2)]
    value = decode(regs, dtype, order, bit=bit)
    fast, sentinel = compile_decoder(dtype, order, bit=bit)(regs)
    assert sentinel == is_sentinel(regs, dtype, order)
    arr = decode_array(regs, [0], dtype, order, bit=bit)
    if isinstance(value, float) and math.isnan(value):
        assert math.isnan(fast) and math.isnan(float(arr[0]))
    else:
        assert fast == float(value) and arr[0] == value, (fast, value, arr)
    if dtype in ("int16", "uint16", "int32", "uint32", "int64", "uint64"):
        assert encode(value, dtype, order) == regs
    assert len(regs) == register_count(dtype)


_MODBUS_SEEDS = tuple(bytes([t, o, 3]) + b"\x12\x34\x56\x78\x9a\xbc\xde\xf0"[:2 * c]
                      for t, dtype in enumerate(DATA_TYPES) for o in range(4)
                      for c in (register_count(dtype),))

_MODBUS_REF = DecodePDU(False)


def _modbus_tcp_reply(data: bytes) -> None:
    """A Modbus TCP byte stream -> frames -> response PDUs (`LeanTcpClient`'s parser): only a
    `FrameError`, and every PDU decoded exactly as pymodbus's own `DecodePDU` decodes it."""
    frames, used = split_frames(data)
    assert used == sum(7 + len(p) for _, _, p in frames) <= len(data)
    for _, _, pdu in frames:
        got, want = decode_response(pdu), _MODBUS_REF.decode(pdu)
        if got is None or want is None:
            assert got is want
            continue
        assert (type(got), got.function_code, list(got.registers), list(got.bits),
                got.exception_code, got.count) == (
                    type(want), want.function_code, list(want.registers), list(want.bits),
                    want.exception_code, want.count)


_MODBUS_TCP_SEEDS = (
    bytes.fromhex("000100000007010304123456780000"),  # FC 3, 2 registers, a trailing partial
    bytes.fromhex("0002000000030183020002000000050104010f01"),  # exception 2, then coils
    bytes.fromhex("00030000000901040600010002000300040000000401020103"),
)

TARGETS: list[Target] = [
    Target("mqtt-payload", _mqtt_payload, (PayloadError,), _MQTT_SEEDS, oversize=_MQTT_MAX + 1),
    Target("hj212-frame", _hj212_frame, (Hj212Error,),
           tuple(hj212_frame(s) for s in _HJ_SEGMENTS), max_len=12_000, oversize=70_000),
    Target("hj212-segment", _hj212_segment, (Hj212Error,),
           tuple(s.encode() for s in _HJ_SEGMENTS), max_len=9999),
    Target("dlt645-frame", _dlt645_frame, (Dlt645Error,), _DLT_SEEDS, max_len=600),
    Target("dlt645-line", _dlt645_line, (Dlt645Error,), _DLT_SEEDS + tuple(
        b"\xfe\xfe" + a + b for a in _DLT_SEEDS[:2] for b in _DLT_SEEDS[3:5]), max_len=4096),
    Target("modbus-decode", _modbus_decode, (ValueError,), _MODBUS_SEEDS, max_len=64),
    Target("modbus-tcp-reply", _modbus_tcp_reply, (FrameError,), _MODBUS_TCP_SEEDS, max_len=600),
]
