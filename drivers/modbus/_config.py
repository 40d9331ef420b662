"""The Modbus driver's config models: a point, a TCP device, an RTU bus and its units."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from cleaning import PointEmissions, SharedChecks, meter_range
from drivers._config import (
    ID_PATTERN,
    MAX_POINTS,
    DeviceConfig,
    Host,
    Polling,
    SerialLine,
    distinct,
)
from drivers.modbus._decode import DataType, WordOrder, register_count
from mrv_core import StrictModel

_UNSIGNED_BITS = {"uint16": 16, "uint32": 32, "uint64": 64}


Table = Literal["holding", "input", "coil", "discrete"]


class ModbusPoint(StrictModel):
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    table: Table = "holding"
    address: Annotated[int, Field(ge=0, le=65535)]
    type: DataType
    word_order: WordOrder = "ABCD"
    bit: Annotated[int, Field(ge=0, le=15, description="bit of the register, for bitfield")] | None = None
    scale: float = 1.0
    offset: float = 0.0
    unit: Annotated[str, Field(min_length=1, max_length=32)]
    checks: SharedChecks | None = None
    emissions: PointEmissions | None = None

    @model_validator(mode="after")
    def _fits(self) -> ModbusPoint:
        if self.address + register_count(self.type) - 1 > 65535:
            raise ValueError(f"a {self.type} at address {self.address} runs past register 65535")
        if self.table in ("coil", "discrete") and self.type != "bool":
            raise ValueError(f"a {self.table} point is a single bit: expected type bool, got {self.type}")
        if self.type == "bitfield" and self.bit is None:
            raise ValueError("type bitfield needs 'bit': expected the bit number 0..15 in the register")
        if self.type != "bitfield" and self.bit is not None:
            raise ValueError(f"'bit' is only valid with type bitfield, not with {self.type}")
        return self

    @model_validator(mode="after")
    def _one_range(self) -> ModbusPoint:
        cumulative = self.emissions is not None or (self.checks and self.checks.counter)
        bits = _UNSIGNED_BITS.get(self.type)
        register = None
        what = f"a {self.type} register"
        if cumulative and bits is not None:
            if self.scale <= 0 or self.offset != 0:
                raise ValueError(f"a cumulative {self.type} register (checks.counter or "
                                 "emissions) needs scale > 0 and offset 0: it wraps to 0")
            register = ((2**bits - 1) * self.scale, self.scale)
            what = f"a {self.type} register scaled by {self.scale}"
        checks, emissions = meter_range(self.checks, self.emissions, register, what)
        if checks is self.checks and emissions is self.emissions:
            return self
        return self.model_copy(update={"checks": checks, "emissions": emissions})


class ModbusTcpDevice(DeviceConfig, Polling):
    driver: Literal["modbus_tcp"]
    name: Annotated[str, Field(pattern=ID_PATTERN)]
    host: Host
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    unit_id: Annotated[int, Field(ge=0, le=255)] = 1
    max_registers: Annotated[int, Field(ge=1, le=125)] = 125
    max_gap: Annotated[int, Field(ge=0, le=124)] = 0
    points: Annotated[list[ModbusPoint], Field(min_length=1, max_length=MAX_POINTS)]


class ModbusRtuUnit(Polling):
    name: Annotated[str, Field(pattern=ID_PATTERN)]
    unit_id: Annotated[int, Field(ge=1, le=247)]
    max_registers: Annotated[int, Field(ge=1, le=125)] = 125
    max_gap: Annotated[int, Field(ge=0, le=124)] = 0
    points: Annotated[list[ModbusPoint], Field(min_length=1, max_length=MAX_POINTS)]


class ModbusRtuBus(DeviceConfig, SerialLine):
    """One RS-485 port with its Modbus RTU units: one task and one lock for the whole line."""

    driver: Literal["modbus_rtu"]
    name: Annotated[str, Field(pattern=ID_PATTERN)]
    units: Annotated[list[ModbusRtuUnit], Field(min_length=1, max_length=247)]

    @model_validator(mode="after")
    def _distinct_units(self) -> ModbusRtuBus:
        distinct("unit name", [u.name for u in self.units])
        distinct("unit_id", [u.unit_id for u in self.units])
        return self

    @property
    def points(self) -> list[ModbusPoint]:
        return [p for u in self.units for p in u.points]
