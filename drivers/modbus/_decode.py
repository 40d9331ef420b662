"""Pure decoding/encoding of Modbus register values (no I/O, no pymodbus).

Word orders name the four bytes of a 32-bit value A (most significant) .. D as
they appear on the wire: "ABCD" big-endian (Modbus default), "CDAB" word-swapped,
"BADC" byte-swapped inside each register, "DCBA" fully little-endian. 64-bit
types generalise this (CDAB reverses the word order, BADC swaps bytes in each
word, DCBA does both); for 16-bit types CDAB == ABCD and DCBA == BADC.
"""

from __future__ import annotations

import functools
import math
import numbers
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

if TYPE_CHECKING:  # numpy only where arrays are decoded (`decode_array`; design 008, decision 26)
    import numpy.typing as npt

__all__ = [
    "DATA_TYPES",
    "WORD_ORDERS",
    "DataType",
    "Decoder",
    "WordOrder",
    "compile_block",
    "compile_decoder",
    "decode",
    "decode_array",
    "decode_bits",
    "encode",
    "is_sentinel",
    "register_count",
    "sentinel_of",
]

DataType = Literal[
    "int16", "uint16", "int32", "uint32", "int64", "uint64",
    "float32", "float64", "bool", "bitfield",
]
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]

DATA_TYPES: Final[tuple[DataType, ...]] = get_args(DataType)
WORD_ORDERS: Final[tuple[WordOrder, ...]] = get_args(WordOrder)

# dtype -> (struct code of the value, registers, kind)
_TYPES: Final[dict[str, tuple[str, int, str]]] = {
    "int16": ("h", 1, "int"),
    "uint16": ("H", 1, "int"),
    "int32": ("i", 2, "int"),
    "uint32": ("I", 2, "int"),
    "int64": ("q", 4, "int"),
    "uint64": ("Q", 4, "int"),
    "float32": ("f", 2, "float"),
    "float64": ("d", 4, "float"),
    "bool": ("H", 1, "bool"),
    "bitfield": ("H", 1, "bit"),
}

# Decoded value of each integer "not implemented" sentinel (0x8000..., 0xFFFF...).
_INT_SENTINELS: Final[dict[str, int]] = {
    "int16": -0x8000,
    "uint16": 0xFFFF,
    "int32": -0x80000000,
    "uint32": 0xFFFFFFFF,
    "int64": -0x8000000000000000,
    "uint64": 0xFFFFFFFFFFFFFFFF,
}


@dataclass(frozen=True, slots=True)
class _Spec:
    dtype: str
    count: int
    kind: str  # "int" | "float" | "bool" | "bit"
    regs: struct.Struct  # packs registers into canonical value bytes (after word reversal)
    value: struct.Struct  # big-endian value <-> bytes
    reverse: bool  # reverse the register order
    swap: bool  # bytes swapped inside each register
    lo: int
    hi: int


def _build_specs() -> dict[tuple[str, str], _Spec]:
    specs: dict[tuple[str, str], _Spec] = {}
    for dtype, (code, count, kind) in _TYPES.items():
        if code.islower() and kind == "int":
            bits = 16 * count
            lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        else:
            lo, hi = 0, (1 << (16 * count)) - 1
        for order in WORD_ORDERS:
            swap = order in ("BADC", "DCBA")
            reverse = order in ("CDAB", "DCBA") and count > 1
            specs[(dtype, order)] = _Spec(
                dtype=dtype,
                count=count,
                kind=kind,
                regs=struct.Struct(("<" if swap else ">") + "H" * count),
                value=struct.Struct(">" + code),
                reverse=reverse,
                swap=swap,
                lo=lo,
                hi=hi,
            )
    return specs


_SPECS: Final[dict[tuple[str, str], _Spec]] = _build_specs()
def _is_bool(value: object) -> bool:
    """A Python or a numpy bool. A numpy bool exists only once numpy is loaded, and it is not
    loaded for this check."""
    if isinstance(value, bool):
        return True
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.bool_)


def _spec(dtype: str, order: str) -> _Spec:
    try:
        return _SPECS[(dtype, order)]
    except KeyError:
        if dtype not in _TYPES:
            raise ValueError(
                f"unknown data type {dtype!r}; expected one of {', '.join(DATA_TYPES)}"
            ) from None
        raise ValueError(
            f"unknown word order {order!r}; expected one of {', '.join(WORD_ORDERS)}"
        ) from None


def register_count(dtype: DataType) -> int:
    """Number of 16-bit registers a value of ``dtype`` occupies."""
    try:
        return _TYPES[dtype][1]
    except KeyError:
        raise ValueError(
            f"unknown data type {dtype!r}; expected one of {', '.join(DATA_TYPES)}"
        ) from None


def _check_bit(bit: int | None) -> int:
    if bit is None:
        raise ValueError("bitfield needs bit= (0..15)")
    if isinstance(bit, bool) or not isinstance(bit, numbers.Integral) or not 0 <= bit <= 15:
        raise ValueError(f"bit must be an integer in 0..15, got {bit!r}")
    return int(bit)


def _bit_value(value: object, dtype: str) -> int:
    if _is_bool(value):
        return 1 if value else 0
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return int(value)
    raise ValueError(f"{dtype} value must be a bool or 0/1, got {value!r}")


def _to_bytes(registers: Sequence[int], spec: _Spec) -> bytes:
    if len(registers) != spec.count:
        raise ValueError(
            f"{spec.dtype} needs {spec.count} register(s), got {len(registers)}"
        )
    try:
        return spec.regs.pack(*(reversed(registers) if spec.reverse else registers))
    except struct.error:
        bad = [r for r in registers if not isinstance(r, int) or not 0 <= r <= 0xFFFF]
        raise ValueError(f"registers must be integers in 0..65535, got {bad!r}") from None


def decode(
    registers: Sequence[int],
    dtype: DataType,
    order: WordOrder = "ABCD",
    *,
    bit: int | None = None,
) -> int | float | bool:
    """Decode the registers of one value (exactly ``register_count(dtype)`` of them)."""
    spec = _spec(dtype, order)
    kind = spec.kind
    if kind == "bit":
        k = _check_bit(bit)
        word: int = spec.value.unpack(_to_bytes(registers, spec))[0]
        return bool((word >> k) & 1)
    if bit is not None:
        raise ValueError(f"bit= is only valid for bitfield, not {dtype}")
    value: int | float = spec.value.unpack(_to_bytes(registers, spec))[0]
    if kind == "bool":
        return value != 0
    return value


def _from_value(value: int | float, spec: _Spec) -> list[int]:
    regs = spec.regs.unpack(spec.value.pack(value))
    return list(reversed(regs)) if spec.reverse else list(regs)


def encode(
    value: int | float | bool,
    dtype: DataType,
    order: WordOrder = "ABCD",
    *,
    bit: int | None = None,
    current: int | None = None,
) -> list[int]:
    """Encode ``value`` into registers; inverse of :func:`decode`.

    ``bool`` encodes as 1/0 (byte-swapped for BADC/DCBA). ``bitfield`` needs
    ``bit`` and ``current`` (the register as read) and returns that register with
    the bit set or cleared. Raises ValueError when the value does not fit.
    """
    spec = _spec(dtype, order)
    kind = spec.kind
    if kind == "bit":
        k = _check_bit(bit)
        if current is None:
            raise ValueError("bitfield encode needs current= (the register's present value)")
        if isinstance(current, bool) or not isinstance(current, numbers.Integral) or not (
            0 <= current <= 0xFFFF
        ):
            raise ValueError(f"current must be a register value in 0..65535, got {current!r}")
        on = _bit_value(value, dtype)
        word = spec.value.unpack(spec.regs.pack(int(current)))[0]
        word = word | (1 << k) if on else word & ~(1 << k)
        return _from_value(word, spec)
    if bit is not None or current is not None:
        raise ValueError(f"bit=/current= are only valid for bitfield, not {dtype}")
    if kind == "bool":
        return _from_value(_bit_value(value, dtype), spec)
    if _is_bool(value):
        raise ValueError(f"{dtype} value must be a number, not bool {value!r}")
    if kind == "int":
        if not isinstance(value, numbers.Integral):
            raise ValueError(f"{dtype} value must be an integer, got {value!r}")
        ivalue = int(value)
        if not spec.lo <= ivalue <= spec.hi:
            raise ValueError(
                f"{ivalue} does not fit {dtype} (range {spec.lo}..{spec.hi})"
            )
        return _from_value(ivalue, spec)
    # float
    if not isinstance(value, numbers.Real):
        raise ValueError(f"{dtype} value must be a real number, got {value!r}")
    fvalue = float(value)
    try:
        return _from_value(fvalue, spec)
    except (OverflowError, struct.error):
        raise ValueError(f"{fvalue!r} is out of range for {dtype}") from None


def is_sentinel(registers: Sequence[int], dtype: DataType, order: WordOrder = "ABCD") -> bool:
    """True if the registers hold the type's "not implemented" marker.

    int*: minimum value (0x8000...), uint*: all ones, float*: any NaN;
    bool/bitfield never.
    """
    spec = _spec(dtype, order)
    raw = _to_bytes(registers, spec)
    if spec.kind == "int":
        return bool(spec.value.unpack(raw)[0] == _INT_SENTINELS[spec.dtype])
    if spec.kind == "float":
        return math.isnan(spec.value.unpack(raw)[0])
    return False


def decode_bits(bits: Sequence[bool]) -> bool:
    """Decode one coil/discrete input (a sequence of exactly one bit)."""
    if len(bits) != 1:
        raise ValueError(f"a coil/discrete point needs 1 bit, got {len(bits)}")
    return bool(bits[0])


def decode_array(
    registers: npt.ArrayLike,
    offsets: npt.ArrayLike,
    dtype: DataType,
    order: WordOrder = "ABCD",
    *,
    bit: int | None = None,
) -> npt.NDArray[Any]:
    """Decode many values of one type/order from one block of registers.

    ``offsets`` are register offsets into ``registers`` (a 1-D uint16 array).
    Returns a 1-D array of the native numpy dtype (bool for bool/bitfield),
    element-wise equal to :func:`decode`.
    """
    import numpy as np

    spec = _spec(dtype, order)
    if spec.kind == "bit":
        k = _check_bit(bit)
    elif bit is not None:
        raise ValueError(f"bit= is only valid for bitfield, not {dtype}")
    block = np.asarray(registers)
    if block.ndim != 1:
        raise ValueError(f"registers must be a 1-D array, got shape {block.shape}")
    if block.dtype != np.uint16:
        if block.size and (
            block.dtype.kind not in "iu" or block.min() < 0 or block.max() > 0xFFFF
        ):
            raise ValueError("registers must be integers in 0..65535")
        block = block.astype(np.uint16)
    offs = np.asarray(offsets)
    if offs.ndim != 1:
        raise ValueError(f"offsets must be a 1-D array, got shape {offs.shape}")
    if offs.size and offs.dtype.kind not in "iu":
        raise ValueError("offsets must be integers")
    offs = offs.astype(np.intp, copy=False)
    if offs.size and (offs.min() < 0 or offs.max() + spec.count > block.size):
        raise ValueError(
            f"offsets out of range for a block of {block.size} registers "
            f"and {dtype} ({spec.count} register(s) each)"
        )
    words = block[offs[:, None] + np.arange(spec.count, dtype=np.intp)]  # (n, count)
    if spec.reverse:
        words = words[:, ::-1]
    # Lay the registers out as wire bytes; reading them as big-endian words
    # corrects a per-register byte swap.
    wire = np.ascontiguousarray(words, dtype="<u2" if spec.swap else ">u2")
    values = wire.view(np.dtype(spec.value.format)).reshape(offs.size)  # big-endian value
    result: npt.NDArray[Any]
    if spec.kind == "bool":
        result = values != 0
    elif spec.kind == "bit":
        result = ((values >> k) & 1).astype(np.bool_)
    else:
        result = values.astype(np.dtype(spec.dtype))  # the type's name is numpy's (int16 ...)
    return result


Decoder = Callable[[Sequence[int]], tuple[float, bool]]


@functools.cache
def compile_decoder(dtype: DataType, order: WordOrder = "ABCD", *, bit: int | None = None) -> Decoder:
    """A fast decoder for one point: registers -> (value as float, is the "not implemented"
    sentinel). Element-wise equal to :func:`decode` and :func:`is_sentinel` (bool and bitfield
    give 1.0/0.0 and are never sentinels); for the poller's hot path. One per type, order and bit
    (cached: 15,000 points of a few types share a handful of decoders)."""
    spec = _spec(dtype, order)
    pack = spec.regs.pack
    unpack = spec.value.unpack
    count = spec.count
    reverse = spec.reverse
    kind = spec.kind

    def raw(registers: Sequence[int]) -> Any:
        if len(registers) != count:
            raise ValueError(f"{dtype} needs {count} register(s), got {len(registers)}")
        try:
            return unpack(pack(*(reversed(registers) if reverse else registers)))[0]
        except struct.error:
            raise ValueError(f"registers must be integers in 0..65535, got {list(registers)!r}") from None

    if kind == "bit":
        k = _check_bit(bit)

        def decode_bit(registers: Sequence[int]) -> tuple[float, bool]:
            return float((raw(registers) >> k) & 1), False

        return decode_bit
    if bit is not None:
        raise ValueError(f"bit= is only valid for bitfield, not {dtype}")
    if kind == "bool":

        def decode_bool(registers: Sequence[int]) -> tuple[float, bool]:
            return (1.0 if raw(registers) else 0.0), False

        return decode_bool
    if kind == "int":
        sentinel = _INT_SENTINELS[dtype]

        def decode_int(registers: Sequence[int]) -> tuple[float, bool]:
            v = raw(registers)
            return float(v), v == sentinel

        return decode_int

    def decode_float(registers: Sequence[int]) -> tuple[float, bool]:
        v: float = raw(registers)
        return v, v != v

    return decode_float


def compile_block(count: int, members: Sequence[tuple[int, DataType, WordOrder]]
                  ) -> Callable[[Sequence[int]], tuple[Any, ...]] | None:
    """One struct for a whole read of ``count`` registers: its members ``(offset, type,
    order)`` decoded by a single unpack, in member order, as raw values (ints or floats; the
    caller checks them against `sentinel_of`). Element-wise equal to `compile_decoder`'s
    values (tested). None when the read does not fit one big-endian struct: a bool or bitfield
    member, a byte- or word-swapped multi-register member, members out of offset order or
    overlapping; those reads go member by member."""
    return _compile_block(count, tuple(members))


@functools.lru_cache(maxsize=4096)  # devices of one model share their reads' layout
def _compile_block(count: int, members: tuple[tuple[int, DataType, WordOrder], ...]
                   ) -> Callable[[Sequence[int]], tuple[Any, ...]] | None:
    fmt = [">"]
    pos = 0
    for offset, dtype, order in members:
        spec = _spec(dtype, order)
        if spec.kind not in ("int", "float") or spec.swap or spec.reverse:
            return None
        if offset < pos or offset + spec.count > count:
            return None
        if offset > pos:
            fmt.append(f"{2 * (offset - pos)}x")
        fmt.append(spec.value.format[1:])
        pos = offset + spec.count
    if pos < count:
        fmt.append(f"{2 * (count - pos)}x")
    whole = struct.Struct("".join(fmt))
    regs = struct.Struct(f">{count}H")
    unpack, pack = whole.unpack, regs.pack

    def block(registers: Sequence[int]) -> tuple[Any, ...]:
        try:
            return unpack(pack(*registers))
        except struct.error:
            raise ValueError(f"registers must be {count} integers in 0..65535") from None

    return block


def sentinel_of(dtype: DataType) -> int | None:
    """The decoded "not implemented" value of an integer type (None for floats: any NaN)."""
    return _INT_SENTINELS.get(dtype)
