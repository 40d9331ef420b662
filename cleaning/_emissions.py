"""Emissions accounting: scope 1 fuel combustion, scope 2 purchased electricity (location- and
market-based) and purchased heat, with factors from a versioned data table
(``cleaning/data/factors.json``) and unit conversion by pint.

Formulas (results in kilograms of CO2; `to_grams` gives the integer grams of a batch header):

* fuel combustion (Chinese enterprise GHG accounting guidelines; IPCC 2006 Vol. 2 tier 2):
  ``E = FC x NCV x CC x OF x 44/12`` with FC the fuel quantity, NCV its net calorific value,
  CC the carbon content per unit of heat, OF the oxidation rate;
* purchased electricity, location-based (GHG Protocol Scope 2 Guidance):
  ``E = AD x EF_grid``;
* purchased electricity, market-based: the contractual instruments cover consumption in the
  order given (never more than consumed), each at its own factor, and the rest at the
  residual factor: ``E = sum(MWh_i x EF_i) + (AD - sum(MWh_i)) x EF_residual``. China
  publishes no residual-mix factor, so the caller passes one (commonly the grid average,
  which must then be disclosed as such);
* purchased heat: ``E = heat x EF_heat``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ._config import ElectricityContract

__all__ = [
    "CO2_PER_C",
    "EmissionResult",
    "Factor",
    "FactorTable",
    "electricity_location_based",
    "electricity_market_based",
    "fuel_combustion",
    "fuel_combustion_default",
    "load_factors",
    "purchased_heat",
    "to_grams",
    "unit_registry",
]

#: Mass of CO2 per mass of carbon, 44/12, as the Chinese guidelines and IPCC 2006 write it.
CO2_PER_C = Fraction(44, 12)

_KINDS = frozenset(
    {
        "grid_emission_factor",
        "net_calorific_value",
        "carbon_content",
        "oxidation_rate",
        "heat_emission_factor",
    }
)
# dimensionalities each kind may have (the mass is CO2 or carbon mass)
_DIMS: Mapping[str, tuple[str, ...]] = {
    "grid_emission_factor": ("[mass] / [energy]",),
    "heat_emission_factor": ("[mass] / [energy]",),
    "carbon_content": ("[mass] / [energy]",),
    "oxidation_rate": ("[]",),
    "net_calorific_value": ("[energy] / [mass]", "[energy] / [normal_volume]", "[energy] / [volume]"),
}


@cache
def _pint() -> Any:
    """pint, imported on first use: a gateway without emissions accounting does not carry it
    (about 12 MB of the daemon's memory)."""
    import pint

    return pint


@cache
def unit_registry() -> Any:
    """The pint registry used here: pint's defaults plus the normal cubic metre ``Nm3``, a
    unit of its own (gas volume at reference conditions) so that it never mixes silently with
    an actual cubic metre."""
    ureg: Any = _pint().UnitRegistry()
    ureg.define("normal_cubic_meter = [normal_volume] = Nm3 = Nm³")
    return ureg


def _quantity(value: float, unit: str) -> Any:
    ureg = unit_registry()
    try:
        return ureg.Quantity(value, "dimensionless") * ureg.parse_expression(unit)
    except (_pint().UndefinedUnitError, _pint().errors.DefinitionSyntaxError,
            AttributeError) as e:
        raise ValueError(f"unknown unit {unit!r}: {e}") from e


@dataclass(frozen=True, slots=True, kw_only=True)
class Factor:
    """One row of the factor table."""

    id: str
    kind: str
    fuel: str | None
    region: str
    year: int
    value: float
    unit: str
    source: str
    note: str = ""

    def quantity(self) -> Any:
        """The factor as a pint quantity (``value * unit``)."""
        return _quantity(self.value, self.unit)


@dataclass(frozen=True, slots=True)
class FactorTable:
    version: str
    factors: Mapping[str, Factor]

    def get(self, factor_id: str) -> Factor:
        try:
            return self.factors[factor_id]
        except KeyError:
            raise KeyError(f"no factor {factor_id!r} in factor table {self.version}") from None

    def select(
        self,
        kind: str,
        *,
        fuel: str | None = None,
        region: str | None = None,
        year: int | None = None,
    ) -> list[Factor]:
        """Rows of ``kind`` (and ``fuel``/``region``/``year`` when given), by year."""
        rows = [
            f
            for f in self.factors.values()
            if f.kind == kind
            and (fuel is None or f.fuel == fuel)
            and (region is None or f.region == region)
            and (year is None or f.year == year)
        ]
        return sorted(rows, key=lambda f: (f.year, f.id))


def _parse_table(doc: Mapping[str, Any], origin: str) -> FactorTable:
    version = doc.get("version")
    if not isinstance(version, str) or not version:
        raise ValueError(f"{origin}: missing 'version'")
    factors: dict[str, Factor] = {}
    for n, row in enumerate(doc.get("factors", [])):
        where = f"{origin}: factors[{n}]"
        try:
            f = Factor(
                id=str(row["id"]),
                kind=str(row["kind"]),
                fuel=None if row.get("fuel") is None else str(row["fuel"]),
                region=str(row["region"]),
                year=int(row["year"]),
                value=float(row["value"]),
                unit=str(row["unit"]),
                source=str(row["source"]),
                note=str(row.get("note", "")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: bad row ({e})") from e
        if f.id in factors:
            raise ValueError(f"{where}: duplicate id {f.id!r}")
        if f.kind not in _KINDS:
            raise ValueError(f"{where}: unknown kind {f.kind!r}")
        if not f.source.strip():
            raise ValueError(f"{where}: a factor needs its source")
        q = f.quantity()
        dims = _DIMS[f.kind]
        if not any(q.check(d) for d in dims):
            raise ValueError(f"{where}: unit {f.unit!r} is not {' or '.join(dims)}")
        factors[f.id] = f
    return FactorTable(version=version, factors=factors)


@cache
def _default_table() -> FactorTable:
    text = resources.files("cleaning").joinpath("data/factors.json").read_text("utf-8")
    return _parse_table(json.loads(text), "cleaning/data/factors.json")


def load_factors(path: str | Path | None = None) -> FactorTable:
    """The shipped factor table, or the one at ``path`` (same JSON shape)."""
    if path is None:
        return _default_table()
    p = Path(path)
    return _parse_table(json.loads(p.read_text("utf-8")), str(p))


@dataclass(frozen=True, slots=True, kw_only=True)
class EmissionResult:
    """An emission in kilograms of CO2, with what it was computed from."""

    scope: int  # 1 or 2 (GHG Protocol)
    category: str  # fuel_combustion | electricity_location | electricity_market | heat
    kg_co2: float
    activity: str  # the activity data, e.g. "10000 Nm3"
    factor_ids: tuple[str, ...]
    table_version: str

    @property
    def grams(self) -> int:
        return to_grams(self.kg_co2)


def to_grams(kg: float) -> int:
    """Kilograms to integer grams, rounded half up (decimal, so 570.3 kg is 570300 g)."""
    return int((Decimal(repr(float(kg))) * 1000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


FactorLike = Factor | str


def _factor(f: FactorLike, table: FactorTable | None, kind: str) -> Factor:
    fac = (table or load_factors()).get(f) if isinstance(f, str) else f
    if fac.kind != kind:
        raise ValueError(f"factor {fac.id} is a {fac.kind}, expected a {kind}")
    return fac


def _activity(amount: float, unit: str, dims: str, what: str) -> Any:
    if not amount >= 0:
        raise ValueError(f"{what} must be a non-negative number (got {amount})")
    q = _quantity(amount, unit)
    if not q.check(dims):
        raise ValueError(f"{what} unit {unit!r} is not {dims}")
    return q


def _kg(q: Any, what: str) -> float:
    try:
        return float(q.to("kg").magnitude)
    except _pint().DimensionalityError as e:
        raise ValueError(f"{what}: the units do not combine to a mass ({e})") from e


def _version(table: FactorTable | None) -> str:
    return (table or load_factors()).version


def fuel_combustion(
    amount: float,
    unit: str,
    *,
    ncv: FactorLike,
    carbon_content: FactorLike,
    oxidation: FactorLike,
    table: FactorTable | None = None,
) -> EmissionResult:
    """Scope 1 CO2 of burning ``amount`` ``unit`` of a fuel:
    ``FC x NCV x CC x OF x 44/12``. The fuel unit must match the NCV's (mass for solid and
    liquid fuels, ``Nm3`` for gas); the units are converted by pint."""
    n = _factor(ncv, table, "net_calorific_value")
    c = _factor(carbon_content, table, "carbon_content")
    o = _factor(oxidation, table, "oxidation_rate")
    if not amount >= 0:
        raise ValueError(f"fuel quantity must be a non-negative number (got {amount})")
    fc = _quantity(amount, unit)
    heat = fc * n.quantity()
    if not heat.check("[energy]"):
        raise ValueError(f"fuel unit {unit!r} does not match the NCV unit {n.unit!r}")
    co2 = heat * c.quantity() * o.quantity() * CO2_PER_C.numerator / CO2_PER_C.denominator
    return EmissionResult(
        scope=1,
        category="fuel_combustion",
        kg_co2=_kg(co2, "fuel combustion"),
        activity=f"{amount} {unit}",
        factor_ids=(n.id, c.id, o.id),
        table_version=_version(table),
    )


#: Default factor ids of `fuel_combustion_default`: NCV, carbon content, oxidation rate.
DEFAULT_FUELS: Mapping[str, tuple[str, str, str]] = {
    "natural_gas": ("CN-NG-NCV", "CN-NG-CC", "CN-NG-OX"),
    "bituminous_coal": ("CN-COAL-BIT-NCV", "CN-COAL-BIT-CC", "CN-COAL-BIT-OX"),
}


def fuel_combustion_default(
    amount: float, unit: str, fuel: str, *, table: FactorTable | None = None
) -> EmissionResult:
    """`fuel_combustion` with the Chinese guideline defaults of ``fuel``
    (``natural_gas`` or ``bituminous_coal``)."""
    try:
        ncv, cc, ox = DEFAULT_FUELS[fuel]
    except KeyError:
        raise ValueError(f"no default factors for fuel {fuel!r}: {sorted(DEFAULT_FUELS)}") from None
    return fuel_combustion(amount, unit, ncv=ncv, carbon_content=cc, oxidation=ox, table=table)


def electricity_location_based(
    amount: float, unit: str, *, factor: FactorLike, table: FactorTable | None = None
) -> EmissionResult:
    """Scope 2, location-based: ``amount`` of purchased electricity (any energy unit) times
    the grid factor."""
    f = _factor(factor, table, "grid_emission_factor")
    ad = _activity(amount, unit, "[energy]", "electricity")
    return EmissionResult(
        scope=2,
        category="electricity_location",
        kg_co2=_kg(ad * f.quantity(), "electricity"),
        activity=f"{amount} {unit}",
        factor_ids=(f.id,),
        table_version=_version(table),
    )


def electricity_market_based(
    amount: float,
    unit: str,
    *,
    contracts: Sequence[ElectricityContract],
    residual_factor: FactorLike,
    table: FactorTable | None = None,
) -> EmissionResult:
    """Scope 2, market-based: the contracts cover the consumption in order, never beyond it
    (the surplus of a contract is not claimed); the uncovered rest is at ``residual_factor``."""
    f = _factor(residual_factor, table, "grid_emission_factor")
    ad = _activity(amount, unit, "[energy]", "electricity")
    ureg = unit_registry()
    remaining = ad.to("MWh")
    total = ureg.Quantity(0.0, "kg")
    used: list[str] = []
    for c in contracts:
        if remaining.magnitude <= 0:
            break
        take = min(remaining, ureg.Quantity(c.mwh, "MWh"))
        total = total + take * ureg.Quantity(c.kg_co2_per_kwh, "kg/kWh")
        remaining = remaining - take
        used.append(c.id)
    total = total + remaining * f.quantity()
    return EmissionResult(
        scope=2,
        category="electricity_market",
        kg_co2=_kg(total, "electricity"),
        activity=f"{amount} {unit}",
        factor_ids=(*used, f.id),
        table_version=_version(table),
    )


def purchased_heat(
    amount: float, unit: str, *, factor: FactorLike = "CN-HEAT", table: FactorTable | None = None
) -> EmissionResult:
    """Scope 2 CO2 of ``amount`` of purchased heat (any energy unit, e.g. ``GJ``)."""
    f = _factor(factor, table, "heat_emission_factor")
    ad = _activity(amount, unit, "[energy]", "heat")
    return EmissionResult(
        scope=2,
        category="heat",
        kg_co2=_kg(ad * f.quantity(), "heat"),
        activity=f"{amount} {unit}",
        factor_ids=(f.id,),
        table_version=_version(table),
    )
