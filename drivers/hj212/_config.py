"""The HJ 212 driver's config models: a point (code, field, CN) and a data logger (by MN)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from cleaning import PointEmissions, SharedChecks, meter_range
from drivers._config import ID_PATTERN, MAX_POINTS, DeviceConfig
from mrv_core import StrictModel


class Hj212Point(StrictModel):
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    #: Pollutant / parameter code as sent in CP, e.g. a34013 (smoke dust), a21026 (SO2).
    code: Annotated[str, Field(pattern=r"^[A-Za-z0-9]{1,16}$")]
    #: Field of the code: Rtd (real-time), Avg, Min, Max, Cou ...
    field: Annotated[str, Field(pattern=r"^[A-Za-z]{1,16}$")] = "Rtd"
    #: Command number of the packets that carry it: 2011 real-time, 2051 minute, 2061 hour, 2031 day.
    cn: Literal["2011", "2051", "2061", "2031"] = "2011"
    unit: Annotated[str, Field(min_length=1, max_length=32)]
    checks: SharedChecks | None = None
    emissions: PointEmissions | None = None

    @model_validator(mode="after")
    def _one_range(self) -> Hj212Point:
        checks, emissions = meter_range(self.checks, self.emissions, None, "an HJ 212 point")
        if checks is self.checks and emissions is self.emissions:
            return self
        return self.model_copy(update={"checks": checks, "emissions": emissions})


class Hj212Device(DeviceConfig):
    """One HJ 212 data logger (by MN) connecting to a listener of the gateway.

    Several loggers may share one ``listen`` address; packets are told apart by MN."""

    driver: Literal["hj212"]
    name: Annotated[str, Field(pattern=ID_PATTERN)]
    #: host:port the listener binds, e.g. 0.0.0.0:7001 (port 0: any free port, for tests).
    listen: str
    mn: Annotated[str, Field(pattern=r"^[A-Za-z0-9]{1,24}$", description="the logger's MN")]
    #: When set, packets with another PW are counted and ignored.
    password: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    version: Literal["2017", "2025"] = "2017"
    #: Offset of the logger's DataTime (plant local time) from UTC, hours.
    tz_offset_h: Annotated[float, Field(ge=-12, le=14)] = 8.0
    idle_timeout_s: Annotated[float, Field(ge=1, le=86_400)] = 600.0
    stale_after_s: Annotated[float, Field(gt=0, le=86_400)] | None = None
    max_frame_len: Annotated[int, Field(ge=64, le=9999)] = 1024
    points: Annotated[list[Hj212Point], Field(min_length=1, max_length=MAX_POINTS)]

    @field_validator("listen", mode="before")
    @classmethod
    def _listen(cls, v: object) -> object:
        m = re.fullmatch(r"([0-9A-Za-z.:\[\]-]+):(\d{1,5})", v) if isinstance(v, str) else None
        if m is None or int(m.group(2)) > 65535:
            raise ValueError("expected host:port, e.g. 0.0.0.0:7001")
        return v

    @model_validator(mode="after")
    def _distinct_fields(self) -> Hj212Device:
        _distinct_on("code/field/cn", [(p.code, p.field, p.cn) for p in self.points])
        return self


def _distinct_on(what: str, values: list[tuple[str, ...]]) -> None:
    seen: set[tuple[str, ...]] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{what} {'/'.join(v)} is mapped to two points; expected each once")
        seen.add(v)
