"""The DL/T 645-2007 driver's config models: a point (a data identifier), a meter, a bus."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from cleaning import PointEmissions, SharedChecks, meter_range
from drivers._config import ID_PATTERN, MAX_DEVICES, MAX_POINTS, DeviceConfig, Polling, SerialLine, distinct
from drivers.dlt645._frame import DATA_ITEMS as DLT645_ITEMS
from mrv_core import StrictModel


class Dlt645Point(StrictModel):
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    #: Data identifier DI3..DI0 as 8 hex digits; the unit and decimals come from DL/T 645-2007.
    di: str
    checks: SharedChecks | None = None
    emissions: PointEmissions | None = None

    @field_validator("di", mode="before")
    @classmethod
    def _known_di(cls, v: object) -> object:
        known = ", ".join(f"{k:08X} ({it.name})" for k, it in DLT645_ITEMS.items())
        if not isinstance(v, str):
            raise ValueError("expected the data identifier as a quoted string of 8 hex digits, "
                             f"e.g. '00000000'; supported: {known}")
        if re.fullmatch(r"[0-9A-Fa-f]{8}", v) is None or int(v, 16) not in DLT645_ITEMS:
            raise ValueError(f"data identifier {v!r} is not supported; expected one of: {known}")
        return v.upper()

    @property
    def unit(self) -> str:
        return DLT645_ITEMS[int(self.di, 16)].unit or "1"

    @model_validator(mode="after")
    def _one_range(self) -> Dlt645Point:
        item = DLT645_ITEMS[int(self.di, 16)]
        register = None
        if not item.signed:  # BCD digits with fixed decimals: 999999.99 kWh wraps to 0
            register = (float(item.max_magnitude), 10.0 ** -item.decimals)
        checks, emissions = meter_range(self.checks, self.emissions, register,
                                        f"DL/T 645 item {self.di} ({item.name})")
        if checks is self.checks and emissions is self.emissions:
            return self
        return self.model_copy(update={"checks": checks, "emissions": emissions})


class Dlt645Meter(Polling):
    name: Annotated[str, Field(pattern=ID_PATTERN)]
    #: 12 decimal digits, as printed on the meter (quote it in YAML).
    address: str
    points: Annotated[list[Dlt645Point], Field(min_length=1, max_length=MAX_POINTS)]

    @field_validator("address", mode="before")
    @classmethod
    def _address(cls, v: object) -> object:
        if not isinstance(v, str) or re.fullmatch(r"[0-9]{12}", v) is None:
            raise ValueError("expected the meter address as a quoted string of 12 decimal digits, "
                             "e.g. '000000123456'")
        return v


class Dlt645Bus(DeviceConfig, SerialLine):
    """One RS-485 port with DL/T 645-2007 meters (2400 baud 8E1 is the usual default)."""

    driver: Literal["dlt645"]
    name: Annotated[str, Field(pattern=ID_PATTERN)]
    baudrate: Annotated[int, Field(ge=300, le=921_600)] = 2400
    parity: Literal["N", "E", "O"] = "E"
    #: Send the FE FE FE FE wake-up preamble before each request.
    wakeup: bool = True
    meters: Annotated[list[Dlt645Meter], Field(min_length=1, max_length=MAX_DEVICES)]

    @model_validator(mode="after")
    def _distinct_meters(self) -> Dlt645Bus:
        distinct("meter name", [m.name for m in self.meters])
        distinct("meter address", [m.address for m in self.meters])
        return self

    @property
    def points(self) -> list[Dlt645Point]:
        return [p for m in self.meters for p in m.points]
