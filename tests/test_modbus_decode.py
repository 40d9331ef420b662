"""Tests for drivers.modbus._decode: vectors, pymodbus cross-check, properties, errors."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.client import ModbusTcpClient

from drivers.modbus._decode import (
    DATA_TYPES,
    WORD_ORDERS,
    DataType,
    WordOrder,
    decode,
    decode_array,
    decode_bits,
    encode,
    is_sentinel,
    register_count,
)

VECTORS_PATH = Path(__file__).resolve().parent.parent / "docs" / "vectors" / "modbus-types.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text())

# Most properties run once per (dtype, order), so few examples each add up to many.
HYP = settings(database=None, deadline=None, max_examples=50)
HYP_MANY = settings(database=None, deadline=None, max_examples=300)

INT_TYPES: dict[str, tuple[str, int, int]] = {  # dtype -> (struct code, min, max)
    "int16": ("h", -(2**15), 2**15 - 1),
    "uint16": ("H", 0, 2**16 - 1),
    "int32": ("i", -(2**31), 2**31 - 1),
    "uint32": ("I", 0, 2**32 - 1),
    "int64": ("q", -(2**63), 2**63 - 1),
    "uint64": ("Q", 0, 2**64 - 1),
}
FLOAT_TYPES: dict[str, str] = {"float32": "f", "float64": "d"}
NUMERIC_CODES: dict[str, str] = {**{k: v[0] for k, v in INT_TYPES.items()}, **FLOAT_TYPES}
EXPECTED_COUNTS = {
    "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "int64": 4, "uint64": 4,
    "float32": 2, "float64": 4, "bool": 1, "bitfield": 1,
}
PYMODBUS_TYPES = {
    "int16": ModbusTcpClient.DATATYPE.INT16,
    "uint16": ModbusTcpClient.DATATYPE.UINT16,
    "int32": ModbusTcpClient.DATATYPE.INT32,
    "uint32": ModbusTcpClient.DATATYPE.UINT32,
    "int64": ModbusTcpClient.DATATYPE.INT64,
    "uint64": ModbusTcpClient.DATATYPE.UINT64,
    "float32": ModbusTcpClient.DATATYPE.FLOAT32,
    "float64": ModbusTcpClient.DATATYPE.FLOAT64,
}

register = st.integers(min_value=0, max_value=0xFFFF)


def ref_registers(canonical: bytes, order: str) -> list[int]:
    """Independent model: big-endian value bytes -> registers in ``order``."""
    words = [canonical[i : i + 2] for i in range(0, len(canonical), 2)]
    if order in ("CDAB", "DCBA"):
        words = words[::-1]
    if order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def ref_canonical(registers: list[int], order: str) -> bytes:
    """Inverse of :func:`ref_registers`."""
    words = [r.to_bytes(2, "big") for r in registers]
    if order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    if order in ("CDAB", "DCBA"):
        words = words[::-1]
    return b"".join(words)


def f32(x: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", x))[0])


def same_number(a: object, b: object) -> bool:
    """Equality that treats NaN == NaN and distinguishes -0.0 from 0.0."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return type(a) is type(b) and a == b


def vector_value(v: dict[str, Any]) -> int | float | bool:
    value = v["value"]
    if isinstance(value, str):  # "NaN", "Infinity", "-Infinity"
        return float(value)
    if v["dtype"] in FLOAT_TYPES:
        value = float(value)
    return value  # type: ignore[no-any-return]


def vector_id(v: dict[str, Any]) -> str:
    bit = f"-bit{v['bit']}" if "bit" in v else ""
    return f"{v['dtype']}-{v['order']}-{v['value']}{bit}-{v['registers']}"


# --------------------------------------------------------------------------- vectors


def test_vectors_cover_every_type_and_order() -> None:
    assert len(VECTORS) > 0
    seen = {(v["dtype"], v["order"]) for v in VECTORS}
    missing = {(d, o) for d in DATA_TYPES for o in WORD_ORDERS} - seen
    assert not missing, f"no vectors for {sorted(missing)}"
    for v in VECTORS:
        assert set(v) <= {"dtype", "order", "value", "registers", "bit", "decode_only"}, v
        assert len(v["registers"]) == EXPECTED_COUNTS[v["dtype"]], v


def test_vectors_agree_with_independent_model() -> None:
    """The JSON vectors themselves must match the byte-permutation model."""
    checked = 0
    for v in VECTORS:
        if v["dtype"] in NUMERIC_CODES:
            value = vector_value(v)
            canonical = struct.pack(">" + NUMERIC_CODES[v["dtype"]], value)
            if isinstance(value, float) and math.isnan(value):
                got = struct.unpack(">" + NUMERIC_CODES[v["dtype"]],
                                    ref_canonical(v["registers"], v["order"]))[0]
                assert math.isnan(got), v
            else:
                assert ref_registers(canonical, v["order"]) == v["registers"], v
            checked += 1
    assert checked > 100


@pytest.mark.parametrize("v", VECTORS, ids=vector_id)
def test_vector_decode(v: dict[str, Any]) -> None:
    value = vector_value(v)
    got = decode(v["registers"], v["dtype"], v["order"], bit=v.get("bit"))
    expected = f32(value) if v["dtype"] == "float32" else value
    assert same_number(got, expected), (got, expected)


@pytest.mark.parametrize(
    "v", [v for v in VECTORS if not v.get("decode_only")], ids=vector_id
)
def test_vector_encode(v: dict[str, Any]) -> None:
    value = vector_value(v)
    if v["dtype"] == "bitfield":
        got = encode(value, "bitfield", v["order"], bit=v["bit"], current=v["registers"][0])
        assert got == v["registers"]
        # Starting from the flipped bit must also give the vector's register.
        flipped = encode(not value, "bitfield", v["order"], bit=v["bit"],
                         current=v["registers"][0])
        assert flipped != v["registers"]
        assert encode(value, "bitfield", v["order"], bit=v["bit"], current=flipped[0]) == (
            v["registers"]
        )
    else:
        assert encode(value, v["dtype"], v["order"]) == v["registers"]


# ------------------------------------------------------------------- known bytes


@pytest.mark.parametrize(
    ("order", "regs"),
    [
        ("ABCD", [0x42F6, 0xE979]),
        ("CDAB", [0xE979, 0x42F6]),
        ("BADC", [0xF642, 0x79E9]),
        ("DCBA", [0x79E9, 0xF642]),
    ],
)
def test_float32_known_bytes(order: WordOrder, regs: list[int]) -> None:
    assert encode(123.456, "float32", order) == regs
    assert decode(regs, "float32", order) == pytest.approx(123.456, rel=1e-7)


@pytest.mark.parametrize(
    ("dtype", "order", "value", "regs"),
    [
        ("uint32", "ABCD", 0x12345678, [0x1234, 0x5678]),
        ("uint32", "CDAB", 0x12345678, [0x5678, 0x1234]),
        ("uint32", "BADC", 0x12345678, [0x3412, 0x7856]),
        ("uint32", "DCBA", 0x12345678, [0x7856, 0x3412]),
        ("uint64", "ABCD", 0x0102030405060708, [0x0102, 0x0304, 0x0506, 0x0708]),
        ("uint64", "CDAB", 0x0102030405060708, [0x0708, 0x0506, 0x0304, 0x0102]),
        ("uint64", "BADC", 0x0102030405060708, [0x0201, 0x0403, 0x0605, 0x0807]),
        ("uint64", "DCBA", 0x0102030405060708, [0x0807, 0x0605, 0x0403, 0x0201]),
        ("int16", "ABCD", -2, [0xFFFE]),
        ("int16", "CDAB", -2, [0xFFFE]),
        ("int16", "BADC", -2, [0xFEFF]),
        ("int16", "DCBA", -2, [0xFEFF]),
        ("int32", "CDAB", -2, [0xFFFE, 0xFFFF]),
        ("float64", "ABCD", 1.0, [0x3FF0, 0, 0, 0]),
        ("float64", "CDAB", 1.0, [0, 0, 0, 0x3FF0]),
        ("float64", "BADC", 1.0, [0xF03F, 0, 0, 0]),
        ("float64", "DCBA", 1.0, [0, 0, 0, 0xF03F]),
        ("bool", "ABCD", True, [0x0001]),
        ("bool", "BADC", True, [0x0100]),
    ],
)
def test_known_bytes(
    dtype: DataType, order: WordOrder, value: int | float, regs: list[int]
) -> None:
    assert encode(value, dtype, order) == regs
    assert decode(regs, dtype, order) == value


def test_register_count() -> None:
    assert {d: register_count(d) for d in DATA_TYPES} == EXPECTED_COUNTS
    with pytest.raises(ValueError, match="unknown data type"):
        register_count("int8")  # type: ignore[arg-type]


def test_decode_return_types() -> None:
    assert type(decode([5], "uint16")) is int
    assert type(decode([0x3F80, 0], "float32")) is float
    assert decode([0x3F80, 0], "float32") == 1.0
    assert decode([0x8000], "bool") is True
    assert decode([0], "bool") is False
    assert decode([0x0100], "bitfield", "BADC", bit=0) is True
    assert decode([0x0100], "bitfield", "ABCD", bit=0) is False
    assert decode([0x0100], "bitfield", "ABCD", bit=8) is True
    assert decode((1, 2), "uint32") == 0x00010002  # any sequence works


def test_decode_bits() -> None:
    assert decode_bits([True]) is True
    assert decode_bits([False]) is False
    with pytest.raises(ValueError, match="1 bit"):
        decode_bits([True, False])
    with pytest.raises(ValueError, match="1 bit"):
        decode_bits([])


# ----------------------------------------------------------------------- pymodbus


def _pymodbus_order(order: str) -> str:
    return {"ABCD": "big", "CDAB": "little"}[order]


@pytest.mark.parametrize("order", ["ABCD", "CDAB"])
@pytest.mark.parametrize("dtype", list(PYMODBUS_TYPES))
def test_pymodbus_decode_crosscheck(dtype: DataType, order: WordOrder) -> None:
    n = register_count(dtype)

    @HYP
    @given(st.lists(register, min_size=n, max_size=n))
    def check(regs: list[int]) -> None:
        theirs = ModbusTcpClient.convert_from_registers(
            list(regs), data_type=PYMODBUS_TYPES[dtype], word_order=_pymodbus_order(order)  # type: ignore[arg-type]
        )
        ours = decode(regs, dtype, order)
        assert same_number(ours, theirs), (regs, ours, theirs)

    check()


@pytest.mark.parametrize("order", ["ABCD", "CDAB"])
@pytest.mark.parametrize("dtype", list(PYMODBUS_TYPES))
def test_pymodbus_encode_crosscheck(dtype: DataType, order: WordOrder) -> None:
    if dtype in INT_TYPES:
        _, lo, hi = INT_TYPES[dtype]
        values: st.SearchStrategy[Any] = st.integers(min_value=lo, max_value=hi)
    else:
        values = st.floats(width=32 if dtype == "float32" else 64, allow_nan=False)

    @HYP
    @given(values)
    def check(value: int | float) -> None:
        theirs = ModbusTcpClient.convert_to_registers(
            value, data_type=PYMODBUS_TYPES[dtype], word_order=_pymodbus_order(order)  # type: ignore[arg-type]
        )
        assert encode(value, dtype, order) == theirs

    check()


def test_pymodbus_float32_example() -> None:
    dt = ModbusTcpClient.DATATYPE.FLOAT32
    for order, regs in (("ABCD", [0x42F6, 0xE979]), ("CDAB", [0xE979, 0x42F6])):
        theirs = ModbusTcpClient.convert_from_registers(
            list(regs), data_type=dt, word_order=_pymodbus_order(order)  # type: ignore[arg-type]
        )
        assert decode(regs, "float32", order) == theirs  # type: ignore[arg-type]


# -------------------------------------------------------------------- properties


@pytest.mark.parametrize("order", WORD_ORDERS)
@pytest.mark.parametrize("dtype", list(INT_TYPES))
def test_int_round_trip(dtype: DataType, order: WordOrder) -> None:
    _, lo, hi = INT_TYPES[dtype]

    @HYP
    @given(st.integers(min_value=lo, max_value=hi))
    def check(value: int) -> None:
        regs = encode(value, dtype, order)
        assert len(regs) == register_count(dtype)
        assert all(0 <= r <= 0xFFFF for r in regs)
        assert decode(regs, dtype, order) == value

    check()


@pytest.mark.parametrize("order", WORD_ORDERS)
@pytest.mark.parametrize("dtype", DATA_TYPES)
def test_decode_matches_reference_model(dtype: DataType, order: WordOrder) -> None:
    """decode == struct.unpack of the independently permuted bytes, for any registers."""
    n = register_count(dtype)

    @HYP
    @given(st.lists(register, min_size=n, max_size=n), st.integers(0, 15))
    def check(regs: list[int], bit: int) -> None:
        canonical = ref_canonical(regs, order)
        if dtype == "bool":
            assert decode(regs, dtype, order) is (canonical != b"\0\0")
        elif dtype == "bitfield":
            word = int.from_bytes(canonical, "big")
            assert decode(regs, dtype, order, bit=bit) is bool(word >> bit & 1)
        else:
            expected = struct.unpack(">" + NUMERIC_CODES[dtype], canonical)[0]
            assert same_number(decode(regs, dtype, order), expected)
            if dtype in INT_TYPES or not math.isnan(expected):
                # every bit pattern is canonical, so registers round trip too
                assert encode(expected, dtype, order) == regs

    check()


@pytest.mark.parametrize("order", WORD_ORDERS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_round_trip(dtype: DataType, order: WordOrder) -> None:
    @HYP
    @given(st.floats(width=32 if dtype == "float32" else 64, allow_nan=False))
    def check(value: float) -> None:
        assert same_number(decode(encode(value, dtype, order), dtype, order), value)

    check()


@pytest.mark.parametrize("order", WORD_ORDERS)
def test_float32_rounds_to_nearest(order: WordOrder) -> None:
    @HYP
    @given(st.floats(min_value=-3e38, max_value=3e38))
    def check(value: float) -> None:
        assert decode(encode(value, "float32", order), "float32", order) == f32(value)

    check()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_round_trips_as_nan(dtype: DataType) -> None:
    for order in WORD_ORDERS:
        got = decode(encode(math.nan, dtype, order), dtype, order)
        assert isinstance(got, float)
        assert math.isnan(got)


@HYP_MANY
@given(register)
def test_16bit_order_aliases(reg: int) -> None:
    for dtype in ("int16", "uint16", "bool"):
        assert decode([reg], dtype, "CDAB") == decode([reg], dtype, "ABCD")
        assert decode([reg], dtype, "DCBA") == decode([reg], dtype, "BADC")
    swapped = ((reg & 0xFF) << 8) | (reg >> 8)
    assert decode([reg], "uint16", "BADC") == swapped
    for bit in range(16):
        assert decode([reg], "bitfield", "DCBA", bit=bit) == decode(
            [reg], "bitfield", "BADC", bit=bit
        )


@pytest.mark.parametrize("order", WORD_ORDERS)
def test_bitfield_encode_touches_only_one_bit(order: WordOrder) -> None:
    @HYP
    @given(register, st.integers(0, 15), st.booleans())
    def check(current: int, bit: int, value: bool) -> None:
        (new,) = encode(value, "bitfield", order, bit=bit, current=current)
        assert decode([new], "bitfield", order, bit=bit) is value
        for other in range(16):
            if other != bit:
                assert decode([new], "bitfield", order, bit=other) == decode(
                    [current], "bitfield", order, bit=other
                )
        # the logical (byte-order-corrected) word differs at most in that bit
        before = decode([current], "uint16", order)
        after = decode([new], "uint16", order)
        assert isinstance(before, int) and isinstance(after, int)
        assert (before ^ after) & ~(1 << bit) == 0

    check()


@pytest.mark.parametrize("order", WORD_ORDERS)
def test_bool_round_trip(order: WordOrder) -> None:
    for value in (True, False, 1, 0):
        assert decode(encode(value, "bool", order), "bool", order) is bool(value)
    assert encode(np.bool_(True), "bool", order) == encode(True, "bool", order)  # type: ignore[arg-type]


def test_numpy_scalars_accepted() -> None:
    assert encode(np.int64(-5), "int32") == [0xFFFF, 0xFFFB]  # type: ignore[arg-type]
    assert encode(np.uint16(7), "uint16") == [7]  # type: ignore[arg-type]
    assert encode(np.float32(1.5), "float32") == [0x3FC0, 0]  # type: ignore[arg-type]
    assert encode(3, "float64") == [0x4008, 0, 0, 0]  # ints are fine for float types


# ------------------------------------------------------------------------ errors


@pytest.mark.parametrize("dtype", list(INT_TYPES))
def test_encode_out_of_range(dtype: DataType) -> None:
    _, lo, hi = INT_TYPES[dtype]
    for bad in (lo - 1, hi + 1):
        for order in WORD_ORDERS:
            with pytest.raises(ValueError, match=f"does not fit {dtype}"):
                encode(bad, dtype, order)
    assert decode(encode(lo, dtype), dtype) == lo
    assert decode(encode(hi, dtype), dtype) == hi


def test_encode_specific_errors() -> None:
    with pytest.raises(ValueError, match="70000 does not fit uint16"):
        encode(70000, "uint16")
    with pytest.raises(ValueError, match="-1 does not fit uint32"):
        encode(-1, "uint32")
    with pytest.raises(ValueError, match="must be an integer"):
        encode(1.5, "int16")
    with pytest.raises(ValueError, match="must be an integer"):
        encode(2.0, "uint32")
    with pytest.raises(ValueError, match="must be an integer"):
        encode("3", "int32")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not bool"):
        encode(True, "uint16")
    with pytest.raises(ValueError, match="out of range for float32"):
        encode(1e39, "float32")
    with pytest.raises(ValueError, match="real number"):
        encode("1.0", "float64")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="real number"):
        encode(1j, "float64")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bool or 0/1"):
        encode(2, "bool")
    with pytest.raises(ValueError, match="bool or 0/1"):
        encode(1.0, "bool")
    with pytest.raises(ValueError, match="only valid for bitfield"):
        encode(1, "uint16", bit=3)
    with pytest.raises(ValueError, match="only valid for bitfield"):
        encode(1, "uint16", current=3)
    with pytest.raises(ValueError, match="unknown data type"):
        encode(1, "int8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown word order"):
        encode(1, "int16", "ABDC")  # type: ignore[arg-type]


def test_bitfield_errors() -> None:
    with pytest.raises(ValueError, match="needs bit"):
        decode([1], "bitfield")
    with pytest.raises(ValueError, match="needs bit"):
        encode(True, "bitfield", current=0)
    for bad_bit in (-1, 16, True, 1.0):
        with pytest.raises(ValueError, match="bit must be"):
            decode([1], "bitfield", bit=bad_bit)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="bit must be"):
            encode(True, "bitfield", bit=bad_bit, current=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs current"):
        encode(True, "bitfield", bit=0)
    for bad_current in (-1, 0x10000, 1.0, True):
        with pytest.raises(ValueError, match="current must be"):
            encode(True, "bitfield", bit=0, current=bad_current)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bool or 0/1"):
        encode(2, "bitfield", bit=0, current=0)
    with pytest.raises(ValueError, match="only valid for bitfield"):
        decode([1], "uint16", bit=0)


@pytest.mark.parametrize("dtype", DATA_TYPES)
def test_wrong_register_count(dtype: DataType) -> None:
    n = register_count(dtype)
    bit = 0 if dtype == "bitfield" else None
    for wrong in (n - 1, n + 1, 0):
        if wrong == n:
            continue
        with pytest.raises(ValueError, match="register"):
            decode([0] * wrong, dtype, bit=bit)
        with pytest.raises(ValueError, match="register"):
            is_sentinel([0] * wrong, dtype)


@pytest.mark.parametrize("bad", [-1, 0x10000, 1.0, None])
def test_bad_register_values(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        decode([bad], "uint16")
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        decode([0, bad], "float32", "CDAB")
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        is_sentinel([bad, 0, 0, 0], "int64")


# --------------------------------------------------------------------- sentinels

SENTINELS = {
    "int16": -(2**15), "uint16": 2**16 - 1, "int32": -(2**31), "uint32": 2**32 - 1,
    "int64": -(2**63), "uint64": 2**64 - 1,
}


@pytest.mark.parametrize("order", WORD_ORDERS)
@pytest.mark.parametrize("dtype", list(SENTINELS))
def test_int_sentinels(dtype: DataType, order: WordOrder) -> None:
    regs = encode(SENTINELS[dtype], dtype, order)
    assert is_sentinel(regs, dtype, order)
    neighbour = SENTINELS[dtype] + (1 if SENTINELS[dtype] < 0 else -1)
    assert not is_sentinel(encode(neighbour, dtype, order), dtype, order)
    assert not is_sentinel(encode(0, dtype, order), dtype, order)


def test_sentinel_raw_patterns() -> None:
    assert is_sentinel([0x8000], "int16")
    assert is_sentinel([0x0080], "int16", "BADC")
    assert not is_sentinel([0x0080], "int16", "ABCD")
    assert is_sentinel([0xFFFF], "uint16")
    assert is_sentinel([0x8000, 0x0000], "int32")
    assert is_sentinel([0x0000, 0x8000], "int32", "CDAB")
    assert not is_sentinel([0x0000, 0x8000], "int32", "ABCD")
    assert is_sentinel([0xFFFF, 0xFFFF], "uint32")
    assert is_sentinel([0x8000, 0, 0, 0], "int64")
    assert is_sentinel([0, 0, 0, 0x0080], "int64", "DCBA")
    assert is_sentinel([0xFFFF] * 4, "uint64")
    assert not is_sentinel([0xFFFF] * 4, "int64")  # -1 is a real value
    assert is_sentinel([0x7FC0, 0x0000], "float32")
    assert is_sentinel([0xFFC0, 0x0001], "float32")  # any NaN payload
    assert is_sentinel([0x7FF8, 0, 0, 0], "float64")
    assert is_sentinel([0, 0, 0, 0xF87F], "float64", "DCBA")
    assert not is_sentinel([0x7F80, 0x0000], "float32")  # +inf is not a sentinel
    assert is_sentinel([0xFFFF, 0xFFFF], "float32", "CDAB")  # all-ones is a NaN
    assert not is_sentinel([0xFFFF], "bool")
    assert not is_sentinel([0xFFFF], "bitfield")
    assert not is_sentinel([0x8000], "bitfield")


@HYP_MANY
@given(st.floats(allow_nan=True, width=32), st.sampled_from(WORD_ORDERS))
def test_float_sentinel_iff_nan(value: float, order: WordOrder) -> None:
    assert is_sentinel(encode(value, "float32", order), "float32", order) is math.isnan(value)
    assert is_sentinel(encode(value, "float64", order), "float64", order) is math.isnan(value)


# ------------------------------------------------------------------ decode_array


@pytest.mark.parametrize("order", WORD_ORDERS)
@pytest.mark.parametrize("dtype", DATA_TYPES)
def test_decode_array_matches_decode(dtype: DataType, order: WordOrder) -> None:
    n = register_count(dtype)

    @HYP
    @given(
        st.lists(register, min_size=n, max_size=40).flatmap(
            lambda block: st.tuples(
                st.just(block),
                st.lists(st.integers(0, len(block) - n), max_size=20),
            )
        ),
        st.integers(0, 15),
    )
    def check(args: tuple[list[int], list[int]], bit: int) -> None:
        block, offsets = args
        b = bit if dtype == "bitfield" else None
        arr = decode_array(
            np.array(block, dtype=np.uint16), np.array(offsets, dtype=np.int64), dtype, order,
            bit=b,
        )
        assert arr.shape == (len(offsets),)
        for got, off in zip(arr.tolist(), offsets, strict=True):
            expected = decode(block[off : off + n], dtype, order, bit=b)
            assert same_number(got, expected), (got, expected, off)

    check()


def test_decode_array_dtypes_and_values() -> None:
    block = np.array([0x42F6, 0xE979, 0x42F6, 0xE979, 0xFFFF], dtype=np.uint16)
    f = decode_array(block, np.array([0, 2]), "float32")
    assert f.dtype == np.float32
    assert f.tolist() == [f32(123.456)] * 2
    assert decode_array(block, [4], "int16").dtype == np.int16
    assert decode_array(block, [4], "int16").tolist() == [-1]
    assert decode_array(block, [0], "uint64").dtype == np.uint64
    assert decode_array(block, [0], "float64").dtype == np.float64
    assert decode_array(block, [0, 4], "bool").dtype == np.bool_
    assert decode_array(block, [0, 1], "bitfield", "ABCD", bit=4).tolist() == [True, True]
    assert decode_array(block, [0, 1], "bitfield", "BADC", bit=4).tolist() == [False, False]
    assert decode_array(block, [0, 1], "bitfield", "BADC", bit=1).tolist() == [True, False]
    assert decode_array(block, [], "int32").shape == (0,)
    assert decode_array([1, 2], [0], "uint32").tolist() == [0x00010002]  # lists accepted


def test_decode_array_errors() -> None:
    block = np.zeros(4, dtype=np.uint16)
    with pytest.raises(ValueError, match="out of range"):
        decode_array(block, [3], "int32")
    with pytest.raises(ValueError, match="out of range"):
        decode_array(block, [-1], "int16")
    with pytest.raises(ValueError, match="1-D"):
        decode_array(block.reshape(2, 2), [0], "int16")
    with pytest.raises(ValueError, match="1-D"):
        decode_array(block, [[0]], "int16")
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        decode_array(np.array([70000]), [0], "uint16")
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        decode_array(np.array([1.0]), [0], "uint16")
    with pytest.raises(ValueError, match="integers"):
        decode_array(block, [0.5], "uint16")
    with pytest.raises(ValueError, match="needs bit"):
        decode_array(block, [0], "bitfield")
    with pytest.raises(ValueError, match="only valid for bitfield"):
        decode_array(block, [0], "uint16", bit=1)
    with pytest.raises(ValueError, match="unknown word order"):
        decode_array(block, [0], "uint16", "XYZW")  # type: ignore[arg-type]
