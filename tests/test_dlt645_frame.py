"""Tests for drivers.dlt645._frame: vectors, round trips, stream robustness, corruption."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.dlt645._frame import (
    BROADCAST_ADDRESS,
    CTRL_READ_DATA,
    CTRL_READ_REPLY,
    CTRL_READ_REPLY_MORE,
    DATA_ITEMS,
    DI_ACTIVE_POWER_TOTAL,
    DI_COMBINED_ACTIVE_TOTAL,
    DI_FORWARD_ACTIVE_TOTAL,
    DI_FREQUENCY,
    DI_PHASE_A_CURRENT,
    DI_PHASE_A_VOLTAGE,
    DI_POWER_FACTOR_TOTAL,
    DI_REVERSE_ACTIVE_TOTAL,
    PREAMBLE,
    BcdError,
    ChecksumError,
    EndByteError,
    Frame,
    FrameError,
    LengthError,
    MeterError,
    UnexpectedFrameError,
    UnknownDiError,
    build_address_reply,
    build_error_reply,
    build_frame,
    build_read,
    build_read_address,
    build_reply,
    decode_address,
    encode_address,
    parse_address_reply,
    parse_frame,
    parse_read_reply,
    parse_request,
)

VECTORS_PATH = Path(__file__).resolve().parent.parent / "docs" / "vectors" / "dlt645.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))

HYP = settings(database=None, deadline=None, max_examples=200)

ADDR = "000000123456"


def drain(buf: bytes) -> tuple[list[Frame], list[FrameError]]:
    """Feed ``buf`` through parse_frame the way a driver would; collect frames and errors."""
    frames: list[Frame] = []
    errors: list[FrameError] = []
    while buf:
        try:
            frame, used = parse_frame(buf)
        except FrameError as exc:
            assert exc.consumed > 0
            errors.append(exc)
            buf = buf[exc.consumed :]
            continue
        if frame is not None:
            frames.append(frame)
        elif used == 0:
            break  # waiting for more bytes
        buf = buf[used:]
    return frames, errors


def independent_checksum(frame: bytes) -> int:
    start = frame.index(0x68)
    return sum(frame[start:-2]) % 256


# --------------------------------------------------------------------------- vectors


@pytest.mark.parametrize("vec", VECTORS["valid"], ids=lambda v: v["name"])
def test_vector_parses_to_documented_meaning(vec: dict[str, Any]) -> None:
    raw = bytes.fromhex(vec["hex"])
    assert raw[-2] == independent_checksum(raw)
    frame, used = parse_frame(raw)
    assert used == vec["consumed"] == len(raw)
    assert frame == Frame(
        vec["frame"]["address"],
        int(vec["frame"]["control"], 16),
        bytes.fromhex(vec["frame"]["data"]),
    )
    kind = vec["kind"]
    if kind == "request":
        assert parse_request(frame) == int(vec["di"], 16)
        assert build_read(frame.address, int(vec["di"], 16)) == raw
    elif kind == "reply":
        assert parse_read_reply(frame, int(vec["di"], 16)) == vec["value"]
        if frame.control == CTRL_READ_REPLY and not raw.startswith(PREAMBLE):
            assert build_reply(frame.address, int(vec["di"], 16), vec["value"]) == raw
    elif kind == "error_reply":
        with pytest.raises(MeterError) as err:
            parse_read_reply(frame, DI_FORWARD_ACTIVE_TOTAL)
        assert err.value.code == vec["error_code"]
        assert build_error_reply(frame.address, vec["error_code"]) == raw
    elif kind == "address_reply":
        assert parse_address_reply(frame) == vec["address"]
        assert build_address_reply(vec["address"]) == raw
    elif kind == "read_address":
        assert build_read_address() == raw
    else:  # pragma: no cover - a typo in the vector file must fail loudly
        pytest.fail(f"unknown vector kind {kind}")


@pytest.mark.parametrize("vec", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vector_raises_documented_error(vec: dict[str, Any]) -> None:
    raw = bytes.fromhex(vec["hex"])
    with pytest.raises(FrameError) as err:
        parse_frame(raw)
    assert type(err.value).__name__ == vec["error"]
    assert err.value.consumed == vec["consumed"]
    assert err.value.raw and err.value.raw in raw
    assert err.value.raw.hex(" ").upper() in str(err.value)


@pytest.mark.parametrize("vec", VECTORS["incomplete"], ids=lambda v: v["name"])
def test_incomplete_vector_waits(vec: dict[str, Any]) -> None:
    assert parse_frame(bytes.fromhex(vec["hex"])) == (None, vec["consumed"])


def test_vectors_cover_every_data_item_and_kind() -> None:
    dis = {int(v["di"], 16) for v in VECTORS["valid"] if v["kind"] == "reply"}
    assert dis == set(DATA_ITEMS)
    kinds = {v["kind"] for v in VECTORS["valid"]}
    assert kinds == {"request", "reply", "error_reply", "address_reply", "read_address"}
    assert {v["error"] for v in VECTORS["invalid"]} == {
        "ChecksumError",
        "EndByteError",
        "LengthError",
    }


# --------------------------------------------------------------------------- fixed facts


def test_published_frames() -> None:
    assert build_read_address().hex(" ").upper() == "FE FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16"
    assert build_read("000000000001", DI_FORWARD_ACTIVE_TOTAL).hex(" ").upper() == (
        "FE FE FE FE 68 01 00 00 00 00 00 68 11 04 33 33 34 33 B3 16"
    )


def test_address_coding() -> None:
    assert encode_address("000000123456") == bytes.fromhex("563412000000")
    assert decode_address(bytes.fromhex("563412000000")) == "000000123456"
    assert encode_address(BROADCAST_ADDRESS) == b"\xaa" * 6
    assert decode_address(b"\xaa" * 6) == BROADCAST_ADDRESS
    for bad in ("12345", "0000001234567", "00000012345X", "0000001234\uff156"):
        with pytest.raises(ValueError):
            encode_address(bad)
    with pytest.raises(BcdError):
        decode_address(bytes.fromhex("5A3412000000"))
    with pytest.raises(ValueError):
        decode_address(b"\x00" * 5)


def test_data_item_table() -> None:
    expected = {  # DI: (length, decimals, unit, signed)
        0x00000000: (4, 2, "kWh", True),
        0x00010000: (4, 2, "kWh", False),
        0x00020000: (4, 2, "kWh", False),
        0x02010100: (2, 1, "V", False),
        0x02020100: (3, 3, "A", True),
        0x02030000: (3, 4, "kW", True),
        0x02060000: (2, 3, "", True),
        0x02800002: (2, 2, "Hz", False),
    }
    got = {di: (i.length, i.decimals, i.unit, i.signed) for di, i in DATA_ITEMS.items()}
    assert got == expected
    assert all(item.di == di for di, item in DATA_ITEMS.items())


@pytest.mark.parametrize(
    ("di", "value", "value_bytes"),
    [
        (DI_FORWARD_ACTIVE_TOTAL, 1234.56, "56 34 12 00"),
        (DI_COMBINED_ACTIVE_TOTAL, -0.01, "01 00 00 80"),
        (DI_PHASE_A_VOLTAGE, 220.1, "01 22"),
        (DI_PHASE_A_CURRENT, -1.5, "00 15 80"),
        (DI_PHASE_A_CURRENT, 799.999, "99 99 79"),
        (DI_ACTIVE_POWER_TOTAL, 12.3456, "56 34 12"),
        (DI_POWER_FACTOR_TOTAL, -0.5, "00 85"),
        (DI_FREQUENCY, 50.0, "00 50"),
    ],
)
def test_value_layout(di: int, value: float, value_bytes: str) -> None:
    frame, _ = parse_frame(build_reply(ADDR, di, value))
    assert frame is not None
    assert frame.data[:4] == di.to_bytes(4, "little")
    assert frame.data[4:].hex(" ") == value_bytes.lower()
    assert parse_read_reply(frame, di) == value


def test_encode_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="unsigned"):
        build_reply(ADDR, DI_FORWARD_ACTIVE_TOTAL, -1.0)
    with pytest.raises(ValueError, match="exceeds"):
        build_reply(ADDR, DI_PHASE_A_CURRENT, 800.0)
    with pytest.raises(ValueError, match="exceeds"):
        build_reply(ADDR, DI_REVERSE_ACTIVE_TOTAL, 1_000_000.0)
    with pytest.raises(ValueError):
        build_reply(ADDR, DI_FREQUENCY, float("nan"))
    with pytest.raises(UnknownDiError, match="04000101"):
        build_reply(ADDR, 0x04000101, 1.0)


def test_reply_checks() -> None:
    frame, _ = parse_frame(build_reply(ADDR, DI_PHASE_A_VOLTAGE, 230.0))
    assert frame is not None
    with pytest.raises(UnexpectedFrameError, match="02010100"):
        parse_read_reply(frame, DI_FREQUENCY)  # DI echo mismatch
    request, _ = parse_frame(build_read(ADDR, DI_PHASE_A_VOLTAGE))
    assert request is not None
    with pytest.raises(UnexpectedFrameError, match="0x11"):
        parse_read_reply(request, DI_PHASE_A_VOLTAGE)
    short = Frame(ADDR, CTRL_READ_REPLY, DI_PHASE_A_VOLTAGE.to_bytes(4, "little") + b"\x01")
    with pytest.raises(UnexpectedFrameError, match="1 value bytes, expected 2"):
        parse_read_reply(short, DI_PHASE_A_VOLTAGE)
    not_bcd = Frame(ADDR, CTRL_READ_REPLY, DI_PHASE_A_VOLTAGE.to_bytes(4, "little") + b"\x0a\x22")
    with pytest.raises(BcdError, match="0A 22"):
        parse_read_reply(not_bcd, DI_PHASE_A_VOLTAGE)
    more = Frame(ADDR, CTRL_READ_REPLY_MORE, DI_PHASE_A_VOLTAGE.to_bytes(4, "little") + b"\x01\x22")
    assert parse_read_reply(more, DI_PHASE_A_VOLTAGE) == 220.1


def test_meter_error_reply() -> None:
    frame, _ = parse_frame(build_error_reply(ADDR, 0x06))
    assert frame is not None
    with pytest.raises(MeterError) as err:
        parse_read_reply(frame, DI_FORWARD_ACTIVE_TOTAL)
    assert err.value.code == 0x06
    assert "no requested data" in str(err.value) and "password" in str(err.value)
    assert ADDR in str(err.value)


def test_parse_request_rejects_replies() -> None:
    frame, _ = parse_frame(build_reply(ADDR, DI_FREQUENCY, 50.0))
    assert frame is not None
    with pytest.raises(UnexpectedFrameError):
        parse_request(frame)
    odd = Frame(ADDR, CTRL_READ_DATA, b"\x00\x00\x01")
    with pytest.raises(UnexpectedFrameError, match="3 data bytes"):
        parse_request(odd)


def test_max_data_len_is_configurable() -> None:
    raw = build_frame(ADDR, 0x91, bytes(201), preamble=False)
    with pytest.raises(LengthError):
        parse_frame(raw)
    frame, used = parse_frame(raw, max_data_len=255)
    assert frame is not None and frame.data == bytes(201) and used == len(raw)


def test_garbage_only_is_dropped_but_a_possible_start_is_kept() -> None:
    assert parse_frame(b"\x00\x01\x02") == (None, 3)
    assert parse_frame(b"\x00\xfe\xfe\x68\x11") == (None, 3)
    assert parse_frame(b"") == (None, 0)
    # a 68 whose 8th byte is not 68 is garbage
    assert parse_frame(b"\x68\x01\x02\x03\x04\x05\x06\x07\x08") == (None, 9)


def test_false_start_with_a_valid_frame_inside_is_skipped() -> None:
    real = build_reply(ADDR, DI_FREQUENCY, 50.0)
    # "68 x x x x x x" right before the frame: the false candidate has the real 68
    # at +7 and an L (0x56 = 86) that runs past the buffer -> must not wait forever.
    buf = b"\x68" + b"\x00" * 6 + real
    frame, used = parse_frame(buf)
    assert frame is not None and used == len(buf)
    assert parse_read_reply(frame, DI_FREQUENCY) == 50.0


def test_false_start_failing_its_checksum_does_not_swallow_a_frame_inside() -> None:
    # False candidate "68 00 00 00 00 00 00" + a real error reply (13 bytes, L = 1): the
    # real 68 sits at +7 and the real A1 = 0x08 reads as L, so the candidate ends exactly
    # on the real CS and 16 and fails only on the sum.  Consuming the whole candidate
    # would lose the real frame.
    real = build_error_reply("000000000800", 0x02)
    buf = b"\x68" + b"\x00" * 6 + real
    assert 12 + buf[9] == len(buf)
    frame, used = parse_frame(buf)
    assert frame is not None and used == len(buf)
    with pytest.raises(MeterError):
        parse_read_reply(frame, DI_FREQUENCY)
    # the same bytes without a valid frame inside: a checksum error eating the candidate
    broken = bytearray(buf)
    broken[-3] ^= 0x01  # the real frame's error byte
    with pytest.raises(ChecksumError) as err:
        parse_frame(bytes(broken))
    assert err.value.consumed == len(buf)


# --------------------------------------------------------------------------- properties

addresses = st.text(alphabet="0123456789", min_size=12, max_size=12)


@st.composite
def replies(draw: st.DrawFn) -> tuple[str, int, float, bytes]:
    address = draw(addresses)
    di = draw(st.sampled_from(sorted(DATA_ITEMS)))
    item = DATA_ITEMS[di]
    limit = int(item.max_magnitude.scaleb(item.decimals))
    scaled = draw(st.integers(-limit if item.signed else 0, limit))
    value = scaled / 10**item.decimals
    preamble = draw(st.booleans())
    raw = (PREAMBLE if preamble else b"") + build_reply(address, di, value)
    return address, di, value, raw


@HYP
@given(replies())
def test_round_trip(case: tuple[str, int, float, bytes]) -> None:
    address, di, value, raw = case
    frame, used = parse_frame(raw)
    assert used == len(raw)
    assert frame is not None and frame.address == address and frame.control == CTRL_READ_REPLY
    assert parse_read_reply(frame, di) == value
    req, _ = parse_frame(build_read(address, di))
    assert req is not None and parse_request(req) == di


@HYP
@given(replies(), st.binary(max_size=40), st.binary(max_size=40))
def test_garbage_around_a_frame_is_skipped(
    case: tuple[str, int, float, bytes], before: bytes, after: bytes
) -> None:
    _, di, value, raw = case
    frames, _ = drain(before + raw + after)
    expected, _ = parse_frame(raw)
    assert expected in frames
    assert all(f == expected for f in frames)
    assert parse_read_reply(frames[0], di) == value


@HYP
@given(replies(), st.data())
def test_single_byte_corruption_is_detected(case: tuple[str, int, float, bytes], data: st.DataObject) -> None:
    _, _, _, raw = case
    original, _ = parse_frame(raw)
    start = raw.index(0x68)
    pos = data.draw(st.integers(0, len(raw) - 1), label="pos")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != raw[pos]), label="byte")
    bad = bytearray(raw)
    bad[pos] = new
    bad_bytes = bytes(bad)
    frames, errors = drain(bad_bytes)
    if pos < start:  # the FE preamble is not protected, and not needed
        assert frames == [original]
        return
    assert frames == [], f"corruption at {pos} accepted: {frames}"
    offset = pos - start
    length_pos, cs_pos, end_pos = 9, len(raw) - start - 2, len(raw) - start - 1
    if offset in (0, 7):  # a start byte: no frame is recognised at all
        return
    if offset == end_pos:
        assert isinstance(errors[0], EndByteError)
    elif offset == length_pos:
        # re-framed: too long (waits/LengthError) or too short (end byte/sum mismatch)
        assert not errors or isinstance(errors[0], (LengthError, EndByteError, ChecksumError))
    else:  # address, control, data or CS itself: the 8-bit sum catches it
        assert 1 <= offset <= cs_pos
        with pytest.raises(ChecksumError) as err:
            parse_frame(bad_bytes)
        assert err.value.raw == bad_bytes[start:]


@HYP
@given(replies(), st.binary(max_size=8))
def test_stream_split_at_every_boundary(case: tuple[str, int, float, bytes], tail: bytes) -> None:
    _, _, _, raw = case
    expected, _ = parse_frame(raw)
    for cut in range(len(raw) + 1):
        buf = raw[:cut]
        frame, used = parse_frame(buf)
        if cut < len(raw):
            assert frame is None, f"frame reported from {cut} of {len(raw)} bytes"
            buf = buf[used:]
        else:
            assert frame == expected
            continue
        buf += raw[cut:] + tail
        frame, used = parse_frame(buf)
        assert frame == expected
        assert buf[used:] == tail
