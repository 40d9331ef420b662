"""Engineering value <-> registers for a writable point or a signal (pure)."""

from __future__ import annotations

from typing import Protocol

from drivers.modbus import DataType, WordOrder, decode, encode

_INT_TYPES = frozenset({"int16", "uint16", "int32", "uint32", "int64", "uint64"})


class RegisterSpec(Protocol):
    @property
    def type(self) -> DataType: ...
    @property
    def word_order(self) -> WordOrder: ...
    @property
    def scale(self) -> float: ...
    @property
    def offset(self) -> float: ...


def is_integer_type(dtype: str) -> bool:
    return dtype in _INT_TYPES


def to_registers(spec: RegisterSpec, value: float) -> list[int]:
    """Registers holding ``value`` (engineering units): raw = (value - offset) / scale.

    Raises ValueError when the raw value does not fit the register type.
    """
    raw = (value - spec.offset) / spec.scale
    if is_integer_type(spec.type):
        return encode(round(raw), spec.type, spec.word_order)
    return encode(raw, spec.type, spec.word_order)


def from_registers(spec: RegisterSpec, regs: list[int]) -> float:
    return float(decode(list(regs), spec.type, spec.word_order)) * spec.scale + spec.offset
