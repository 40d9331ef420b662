"""Tests for drivers.hj212._frame: vectors, CRC, round trips, stream robustness, corruption."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.hj212._frame import (
    CrcError,
    EncodingError,
    FrameError,
    Hj212Error,
    LengthError,
    Packet,
    PacketError,
    TerminatorError,
    build_data_reply,
    build_frame,
    crc16_hj212,
    data_time_ns,
    needs_reply,
    parse_frame,
    parse_segment,
)

VECTORS_PATH = Path(__file__).resolve().parent.parent / "docs" / "vectors" / "hj212.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))

HYP = settings(database=None, deadline=None, max_examples=200)

STANDARD_EXAMPLE = (
    b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;"
    b"Flag=5;CP=&&RtdInterval=30&&1C80\r\n"
)
UPLOAD = (
    "QN=20260101120000000;ST=31;CN=2011;PW=123456;MN=88888880000001;Flag=5;"
    "CP=&&DataTime=20260101120000;a34013-Rtd=12.3,a34013-Flag=N;a21026-Rtd=35.1,a21026-Flag=N&&"
)


def crc16_modbus(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def drain(buf: bytes) -> tuple[list[Packet], list[Hj212Error]]:
    """Feed ``buf`` through parse_frame the way a driver would; collect packets and errors."""
    packets: list[Packet] = []
    errors: list[Hj212Error] = []
    while buf:
        try:
            packet, used = parse_frame(buf)
        except Hj212Error as exc:
            assert exc.consumed > 0
            errors.append(exc)
            buf = buf[exc.consumed :]
            continue
        if packet is not None:
            packets.append(packet)
        elif used == 0:
            break
        buf = buf[used:]
    return packets, errors


# --------------------------------------------------------------------------- vectors


@pytest.mark.parametrize("vec", VECTORS["valid"], ids=lambda v: v["name"])
def test_vector_parses_to_documented_meaning(vec: dict[str, Any]) -> None:
    raw = vec["text"].encode("ascii")
    packet, used = parse_frame(raw)
    assert packet is not None and used == len(raw)
    segment = raw[6:-6]
    assert int(raw[2:6]) == len(segment) == vec["length"]
    assert f"{crc16_hj212(segment):04X}" == vec["crc"] == raw[-6:-2].decode()
    assert f"{crc16_modbus(segment):04X}" == vec["crc16_modbus"] != vec["crc"]
    assert build_frame(segment.decode()) == raw
    want = vec["packet"]
    got = {
        "qn": packet.qn, "st": packet.st, "cn": packet.cn, "pw": packet.pw, "mn": packet.mn,
        "flag": packet.flag, "pnum": packet.pnum, "pno": packet.pno,
        "data_time": packet.data_time, "cp": packet.cp, "cp_fields": packet.cp_fields,
    }  # fmt: skip
    assert got == want
    assert needs_reply(packet) is vec["needs_reply"]
    if "data_time_ns_utc8" in vec:
        assert data_time_ns(packet) == vec["data_time_ns_utc8"]
    if "data_reply" in vec:
        assert build_data_reply(packet) == vec["data_reply"].encode("ascii")


@pytest.mark.parametrize("vec", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vector_raises_documented_error(vec: dict[str, Any]) -> None:
    raw = vec["text"].encode("latin-1")
    with pytest.raises(Hj212Error) as err:
        parse_frame(raw)
    assert type(err.value).__name__ == vec["error"]
    assert err.value.consumed == vec["consumed"]
    assert err.value.raw and raw.startswith(err.value.raw)
    if "field" in vec:
        assert isinstance(err.value, PacketError) and err.value.field == vec["field"]
        assert vec["field"] in str(err.value)


def test_vectors_include_the_standard_example_and_every_error_class() -> None:
    assert STANDARD_EXAMPLE.decode() in [v["text"] for v in VECTORS["valid"]]
    assert {v["error"] for v in VECTORS["invalid"]} >= {
        "CrcError", "LengthError", "TerminatorError", "PacketError",
    }  # fmt: skip


# --------------------------------------------------------------------------- CRC


def test_crc_of_the_standard_example() -> None:
    segment = STANDARD_EXAMPLE[6:-6]
    assert len(segment) == 101
    assert crc16_hj212(segment) == 0x1C80
    assert crc16_modbus(segment) == 0x0759  # what a MODBUS CRC would (wrongly) give
    assert crc16_hj212(b"") == 0xFFFF


def test_crc_keeps_only_eight_bits_of_state() -> None:
    # documented weakness: the final value depends on (high byte of the state before the
    # last byte) XOR last byte, so only 256 results are possible.
    results = {crc16_hj212(bytes([a, b])) for a in range(256) for b in range(256)}
    assert len(results) == 256


@HYP
@given(st.binary(min_size=1, max_size=200), st.data())
def test_crc_detects_every_single_byte_change(data: bytes, draw: st.DataObject) -> None:
    pos = draw.draw(st.integers(0, len(data) - 1))
    new = draw.draw(st.integers(0, 255).filter(lambda b: b != data[pos]))
    changed = data[:pos] + bytes([new]) + data[pos + 1 :]
    assert crc16_hj212(changed) != crc16_hj212(data)


# --------------------------------------------------------------------------- segment and reply


def test_cp_groups_and_fields() -> None:
    packet = parse_segment(UPLOAD)
    assert packet.cp == {
        "a34013": {"Rtd": "12.3", "Flag": "N"},
        "a21026": {"Rtd": "35.1", "Flag": "N"},
    }
    assert packet.cp_fields == {"DataTime": "20260101120000"}
    assert packet.fields["Flag"] == "5" and packet.flag == 5
    assert packet.answer_requested and not packet.split and packet.version_code == 1
    assert parse_segment(UPLOAD.replace("Flag=5", "Flag=4")).answer_requested is False


@pytest.mark.parametrize(
    ("segment", "field"),
    [
        ("QN=1;ST=31;PW=1;MN=1;Flag=4;CP=&&&&", "CN"),
        ("QN=1;ST=31;CN=2011;PW=1;Flag=4;CP=&&&&", "MN"),
        ("QN=1;ST=31;CN=2011;PW=1;MN=;Flag=4;CP=&&&&", "MN"),
        ("QN=1;CN=2011;PW=1;MN=1;Flag=4;CP=&&&&", "ST"),
        ("QN=1;ST=31;CN=20110;PW=1;MN=1;Flag=4;CP=&&&&", "CN"),
        ("QN=1;ST=31;CN=2011;PW=1;MN=1;Flag=x;CP=&&&&", "Flag"),
        ("QN=1;ST=31;CN=2011;PW=1;MN=1;Flag=4", "CP"),
        ("QN=1;ST=31;CN=2011;PW=1;MN=1;Flag=4;CP=&&a=1", "CP"),
        ("QN=1;ST=31;CN=2011;PW=1;MN=1;Flag=4;CP=&&a-Rtd=1,a-Rtd=2&&", "CP"),
        ("QN=1;ST=31;CN=2011;PW=1;MN=1;Flag=4;CP=&&-Rtd=1&&", "CP"),
        ("QN=1;ST=31;CN=2011;PW=1;MN=1;Flag=4;CP=&&DataTime&&", "CP"),
        ("QN=1;ST=31;CN=2011;PW=1;MN=1;Flag=7;PNUM=2;PNO=3;CP=&&&&", "PNO"),
        ("QN=1;ST=31;CN=2011;PW=1;MN=1;Flag=6;PNUM=2;CP=&&&&", "PNO"),
        ("QN=1;QN=2;ST=31;CN=2011;PW=1;MN=1;Flag=4;CP=&&&&", "QN"),
    ],
)
def test_bad_segments_name_the_field(segment: str, field: str) -> None:
    with pytest.raises(PacketError) as err:
        parse_segment(segment)
    assert err.value.field == field
    assert field in str(err.value)


def test_packet_error_from_parse_frame_consumes_the_packet() -> None:
    raw = build_frame("QN=1;ST=31;PW=1;MN=1;Flag=4;CP=&&&&")
    with pytest.raises(PacketError) as err:
        parse_frame(raw + b"##")
    assert err.value.consumed == len(raw) and err.value.raw == raw


def test_data_reply_format() -> None:
    packet = parse_segment(UPLOAD)
    reply = build_data_reply(packet)
    assert reply == build_frame(
        "QN=20260101120000000;ST=91;CN=9014;PW=123456;MN=88888880000001;Flag=4;CP=&&&&"
    )
    answer, used = parse_frame(reply)
    assert answer is not None and used == len(reply)
    assert answer.cn == "9014" and answer.qn == packet.qn and not needs_reply(answer)
    assert b"Flag=8;" in build_data_reply(packet, version="2025")
    v2025 = parse_segment(UPLOAD.replace("Flag=5", "Flag=9"))
    assert v2025.version_code == 2 and needs_reply(v2025)
    assert b"Flag=8;" in build_data_reply(v2025)
    assert b"Flag=4;" in build_data_reply(v2025, version="2017")
    with pytest.raises(PacketError, match="QN"):
        build_data_reply(parse_segment(UPLOAD.replace("QN=20260101120000000;", "")))


def test_data_time_ns() -> None:
    packet = parse_segment(UPLOAD)
    expected = datetime(2026, 1, 1, 4, 0, 0, tzinfo=UTC).timestamp()
    assert data_time_ns(packet) == int(expected) * 10**9
    assert data_time_ns(packet, tz_offset=timedelta(0)) == (int(expected) + 8 * 3600) * 10**9
    assert data_time_ns(packet, tz_offset=timedelta(hours=-5)) == (int(expected) + 13 * 3600) * 10**9
    for bad in ("2026010112000", "20261301120000", "2026010112000x"):
        with pytest.raises(PacketError, match="DataTime"):
            data_time_ns(parse_segment(UPLOAD.replace("20260101120000;", bad + ";")))
    with pytest.raises(PacketError, match="DataTime"):
        data_time_ns(parse_segment(UPLOAD.replace("DataTime=20260101120000;", "")))


def test_build_frame_rejects_bad_segments() -> None:
    with pytest.raises(ValueError, match="ASCII"):
        build_frame("CP=&&温度&&")
    with pytest.raises(ValueError, match="1025"):
        build_frame("x" * 1025)
    assert build_frame("x" * 1025, max_len=2000).startswith(b"##1025")


def test_max_len_is_configurable() -> None:
    segment = UPLOAD.replace("CP=&&", "CP=&&Note=" + "x" * 900 + ";")
    raw = build_frame(segment, max_len=4000)
    with pytest.raises(LengthError, match="exceeds 1024"):
        parse_frame(raw)
    packet, used = parse_frame(raw, max_len=4000)
    assert packet is not None and used == len(raw)
    with pytest.raises(LengthError, match="exceeds 100"):
        parse_frame(STANDARD_EXAMPLE, max_len=100)


def test_non_ascii_segment_with_matching_crc() -> None:
    data = UPLOAD.replace("N;a21026", "N;a21026-Info=\u6e29,a21026").encode("utf-8")
    raw = b"##%04d%s%04X\r\n" % (len(data), data, crc16_hj212(data))
    with pytest.raises(EncodingError) as err:
        parse_frame(raw)
    assert err.value.consumed == len(raw)


def test_garbage_handling() -> None:
    assert parse_frame(b"abc") == (None, 3)
    assert parse_frame(b"abc#") == (None, 3)
    assert parse_frame(b"abc##01") == (None, 3)
    assert parse_frame(b"#####") == (None, 3)
    packet, used = parse_frame(b"x###" + STANDARD_EXAMPLE[2:])
    assert packet is not None and packet.cn == "1062" and used == len(STANDARD_EXAMPLE) + 2


# --------------------------------------------------------------------------- properties

codes = st.text(alphabet="0123456789", min_size=4, max_size=4)
tokens = st.text(alphabet="ABCDEFabcdef0123456789._", min_size=1, max_size=12)
factor_codes = st.from_regex(r"[a-w][0-9]{5}", fullmatch=True)
field_names = st.sampled_from(["Rtd", "Flag", "Avg", "Min", "Max", "Cou", "ZsRtd", "SampleTime"])


@st.composite
def segments(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    flag = draw(st.sampled_from([0, 1, 4, 5, 8, 9]))
    qn = draw(st.from_regex(r"20[0-9]{15}", fullmatch=True))
    st_code = draw(st.sampled_from(["21", "22", "31", "32", "91"]))
    cn = draw(codes)
    pw = draw(tokens)
    mn = draw(tokens)
    data_time = draw(
        st.from_regex(
            r"20[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|1[0-9]|2[0-8])"
            r"([01][0-9]|2[0-3])[0-5][0-9][0-5][0-9]",
            fullmatch=True,
        )
    )
    cp = draw(
        st.dictionaries(
            factor_codes, st.dictionaries(field_names, tokens, min_size=1, max_size=3), max_size=5
        )
    )
    groups = [
        ",".join(f"{code}-{name}={value}" for name, value in fields.items()) for code, fields in cp.items()
    ]
    content = ";".join([f"DataTime={data_time}", *groups])
    segment = f"QN={qn};ST={st_code};CN={cn};PW={pw};MN={mn};Flag={flag};CP=&&{content}&&"
    meaning = {
        "qn": qn,
        "st": st_code,
        "cn": cn,
        "pw": pw,
        "mn": mn,
        "flag": flag,
        "cp": cp,
        "data_time": data_time,
    }
    return segment, meaning


@HYP
@given(segments())
def test_round_trip(case: tuple[str, dict[str, Any]]) -> None:
    segment, meaning = case
    raw = build_frame(segment)
    packet, used = parse_frame(raw)
    assert packet is not None and used == len(raw)
    got = {
        "qn": packet.qn,
        "st": packet.st,
        "cn": packet.cn,
        "pw": packet.pw,
        "mn": packet.mn,
        "flag": packet.flag,
        "cp": packet.cp,
        "data_time": packet.data_time,
    }
    assert got == meaning
    assert packet.segment == segment
    assert needs_reply(packet) is bool(meaning["flag"] & 1)


@HYP
@given(segments(), st.binary(max_size=40), st.binary(max_size=40))
def test_garbage_around_a_packet_is_skipped(
    case: tuple[str, dict[str, Any]], before: bytes, after: bytes
) -> None:
    segment, _ = case
    raw = build_frame(segment)
    packets, _ = drain(before + raw + after)
    assert [p.segment for p in packets] == [segment]


@HYP
@given(segments(), st.data())
def test_single_byte_corruption_is_detected(case: tuple[str, dict[str, Any]], data: st.DataObject) -> None:
    segment, _ = case
    raw = build_frame(segment)
    pos = data.draw(st.integers(0, len(raw) - 1), label="pos")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != raw[pos]), label="byte")
    bad = raw[:pos] + bytes([new]) + raw[pos + 1 :]
    packets, _ = drain(bad)
    assert packets == [], f"corruption at {pos} accepted"
    if pos < 2:  # "##" gone: nothing that looks like a packet start (or a one-off '#')
        return
    with pytest.raises(FrameError) as err:
        parse_frame(bad)
    n = len(segment)
    if pos < 6:
        assert isinstance(err.value, (LengthError, TerminatorError))
    elif pos < 6 + n:
        assert isinstance(err.value, (CrcError, LengthError))  # LengthError: a CR LF was created
    elif pos < 10 + n:
        assert isinstance(err.value, CrcError)
    else:
        assert isinstance(err.value, (TerminatorError, LengthError))


@HYP
@given(segments(), st.binary(max_size=8))
def test_stream_split_at_every_boundary(case: tuple[str, dict[str, Any]], tail: bytes) -> None:
    segment, _ = case
    raw = build_frame(segment)
    for cut in range(len(raw) + 1):
        buf = raw[:cut]
        packet, used = parse_frame(buf)
        if cut == len(raw):
            assert packet is not None and packet.segment == segment
            continue
        assert packet is None, f"packet reported from {cut} of {len(raw)} bytes"
        buf = buf[used:] + raw[cut:] + tail
        packet, used = parse_frame(buf)
        assert packet is not None and packet.segment == segment
        assert buf[used:] == tail
