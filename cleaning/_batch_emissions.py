"""CO2e per scope for each batch header, from the valid readings of cumulative meters.

A point with an ``emissions:`` block is a cumulative register (energy in kWh or MWh, gas volume
in Nm3, coal mass in t, heat in GJ). For each batch, per point: the activity is the increase
between the point's last valid reading before the batch and its last valid reading in the batch,
summed over consecutive valid readings, where

- a valid reading has no invalid quality bit (COUNTER_ROLLOVER is informational) and a value;
- an increase across a wrap (the previous value above 90% of ``register_max``) counts the
  wrapped amount: ``register_max + resolution - prev + value``;
- any other decrease is a reset or a meter swap: it counts 0 and the new value becomes the base.

The activity is converted to kg CO2 by `cleaning._emissions` (pint units, the versioned factor
table) and summed per scope into integer grams. Anyone holding the batch's records and the
point's previous reading can recompute the header's figures.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cleaning._emissions import (
    EmissionResult,
    FactorTable,
    electricity_location_based,
    fuel_combustion_default,
    load_factors,
    purchased_heat,
    to_grams,
)
from mrv_core import Reading, Record, is_valid


class PointEmissions(BaseModel):
    """``emissions:`` under a cumulative point: which scope and how to turn it into CO2."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    scope: Literal[1, 2]
    method: Literal["fuel", "electricity", "heat"]
    fuel: Literal["natural_gas", "bituminous_coal"] | None = None
    factor: str | None = Field(default=None, description="factor id, e.g. CN-GRID-ETS")
    #: The register's range, as in ``checks.counter``; under a point of the gateway's config
    #: both come from the point's register where it defines them and must not contradict it
    #: (config/_schema.py, `meter_range`). Unset (no range known): a decrease counts 0.
    register_max: float | None = Field(default=None, gt=0)
    resolution: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> PointEmissions:
        if self.method == "fuel":
            if self.fuel is None:
                raise ValueError("method fuel needs 'fuel' (natural_gas or bituminous_coal)")
            if self.scope != 1:
                raise ValueError("fuel combustion is scope 1")
        elif self.scope != 2:
            raise ValueError(f"purchased {self.method} is scope 2")
        if self.factor is not None:
            try:
                load_factors().get(self.factor)
            except KeyError:
                raise ValueError(f"unknown factor id {self.factor!r}") from None
        return self


@dataclass(frozen=True, slots=True)
class EmissionPoint:
    point_id: str
    unit: str
    config: PointEmissions


def activity(values: Iterable[float], prev: float | None, cfg: PointEmissions
             ) -> tuple[float, float | None]:
    """Increase of a cumulative register over ``values`` after ``prev``; returns the activity
    and the new base (the last value)."""
    total = 0.0
    for v in values:
        if prev is not None:
            d = v - prev
            if d < 0:
                rmax = cfg.register_max
                d = (rmax + cfg.resolution - prev + v) if rmax and prev > 0.9 * rmax else 0.0
            total += d
        prev = v
    return total, prev


def emission(amount: float, unit: str, cfg: PointEmissions,
             table: FactorTable | None = None) -> EmissionResult:
    if cfg.method == "fuel":
        assert cfg.fuel is not None
        return fuel_combustion_default(amount, unit, cfg.fuel, table=table)
    if cfg.method == "electricity":
        return electricity_location_based(amount, unit, factor=cfg.factor or "CN-GRID-ETS",
                                          table=table)
    return purchased_heat(amount, unit, factor=cfg.factor or "CN-HEAT", table=table)


class BatchEmissions:
    """The batch header's CO2e callback. Stateful (the last valid value of each point), so
    `stage` computes without changing state and `commit` applies it once the batch is stored."""

    def __init__(self, points: Sequence[EmissionPoint], table: FactorTable | None = None):
        self.points = {p.point_id: p for p in points}
        self.table = table
        self.last: dict[str, float] = {}
        self._staged: dict[str, float] = {}

    def seed(self, last_values: Mapping[str, float]) -> None:
        self.last.update({k: v for k, v in last_values.items() if k in self.points})

    def stage(self, records: Sequence[Record]) -> tuple[int, int, int]:
        series: dict[str, list[float]] = {}
        for r in records:
            if (isinstance(r, Reading) and r.point_id in self.points and is_valid(r.quality)
                    and not math.isnan(r.value)):
                series.setdefault(r.point_id, []).append(r.value)
        grams = [0, 0, 0]
        staged: dict[str, float] = {}
        for pid, values in series.items():
            p = self.points[pid]
            amount, base = activity(values, self.last.get(pid), p.config)
            if base is not None:
                staged[pid] = base
            if amount > 0:
                grams[p.config.scope - 1] += to_grams(
                    emission(amount, p.unit, p.config, self.table).kg_co2)
        self._staged = staged
        return grams[0], grams[1], grams[2]

    def commit(self) -> None:
        self.last.update(self._staged)
        self._staged = {}
