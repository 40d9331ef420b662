"""Emissions worked examples, reproduced to the kilogram, and the factor table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cleaning._config import ElectricityContract
from cleaning._emissions import (
    CO2_PER_C,
    EmissionResult,
    electricity_location_based,
    electricity_market_based,
    fuel_combustion,
    fuel_combustion_default,
    load_factors,
    purchased_heat,
    to_grams,
    unit_registry,
)

DATA = Path(__file__).resolve().parent.parent / "cleaning" / "data" / "factors.json"


def test_natural_gas_worked_example() -> None:
    # 10^4 Nm3 x 389.31 GJ/10^4 Nm3 = 389.31 GJ = 0.38931 TJ
    # x 15.3 tC/TJ = 5.956443 tC x 0.99 = 5.89687857 tC x 44/12 = 21.62188809 tCO2
    r = fuel_combustion_default(10_000, "Nm3", "natural_gas")
    assert round(r.kg_co2) == 21_622
    assert r.kg_co2 == pytest.approx(21_621.888_09, abs=1e-6)
    assert r.grams == 21_621_888
    assert (r.scope, r.category) == (1, "fuel_combustion")
    assert r.factor_ids == ("CN-NG-NCV", "CN-NG-CC", "CN-NG-OX")
    assert r.table_version == load_factors().version


def test_natural_gas_unit_conversion_is_done_by_pint() -> None:
    ureg = unit_registry()
    assert ureg.Quantity(1, "kNm3").to("Nm3").magnitude == 1000
    a = fuel_combustion_default(10_000, "Nm3", "natural_gas").kg_co2
    b = fuel_combustion_default(10, "kNm3", "natural_gas").kg_co2
    assert a == pytest.approx(b, rel=1e-12)
    with pytest.raises(ValueError, match="does not match the NCV unit"):
        fuel_combustion_default(10_000, "m**3", "natural_gas")  # actual, not normal m3
    with pytest.raises(ValueError, match="does not match the NCV unit"):
        fuel_combustion_default(10, "t", "natural_gas")


def test_bituminous_coal_worked_example() -> None:
    # 1 t x 19.570 GJ/t x 26.18 tC/TJ x 93 % x 44/12
    # = 19.570 GJ x 0.02618 tC/GJ = 0.5123426 tC x 0.93 = 0.476478618 tC -> 1.747088266 tCO2
    r = fuel_combustion_default(1, "t", "bituminous_coal")
    assert r.kg_co2 == pytest.approx(1_747.088_266, abs=1e-6)
    assert fuel_combustion_default(1000, "kg", "bituminous_coal").kg_co2 == pytest.approx(r.kg_co2)
    assert r.grams == 1_747_088


def test_fuel_with_explicit_factors_and_quantity_check() -> None:
    r = fuel_combustion(
        2.5, "t", ncv="CN-COAL-BIT-NCV", carbon_content="CN-COAL-BIT-CC", oxidation="CN-COAL-BIT-OX"
    )
    assert r.kg_co2 == pytest.approx(2.5 * 1_747.088_266)
    with pytest.raises(ValueError, match="is a carbon_content, expected a net_calorific_value"):
        fuel_combustion(1, "t", ncv="CN-NG-CC", carbon_content="CN-NG-CC", oxidation="CN-NG-OX")
    with pytest.raises(ValueError, match="non-negative"):
        fuel_combustion_default(-1, "t", "bituminous_coal")
    with pytest.raises(ValueError, match="no default factors"):
        fuel_combustion_default(1, "t", "peat")
    with pytest.raises(ValueError, match="unknown unit"):
        fuel_combustion_default(1, "furlongs of coal", "bituminous_coal")
    assert float(CO2_PER_C) == 44 / 12


def test_grid_compliance_factor_worked_example() -> None:
    # 1,000 MWh x 0.5703 tCO2/MWh = 570.3 t
    r = electricity_location_based(1000, "MWh", factor="CN-GRID-ETS")
    assert round(r.kg_co2) == 570_300
    assert r.grams == 570_300_000
    assert (r.scope, r.category, r.factor_ids) == (2, "electricity_location", ("CN-GRID-ETS",))
    assert electricity_location_based(1_000_000, "kWh", factor="CN-GRID-ETS").grams == 570_300_000
    assert electricity_location_based(3600, "GJ", factor="CN-GRID-ETS").grams == 570_300_000


@pytest.mark.parametrize(
    ("factor_id", "kg"), [("CN-GRID-2021", 556_800), ("CN-GRID-2022", 536_600), ("CN-GRID-2023", 530_600)]
)
def test_annual_grid_factors(factor_id: str, kg: int) -> None:
    # 1,000 MWh x 0.5568 / 0.5366 / 0.5306 kgCO2/kWh
    assert round(electricity_location_based(1000, "MWh", factor=factor_id).kg_co2) == kg


def test_market_based() -> None:
    # 1,000 MWh; green certificates for 300 MWh (0 kg/kWh), a supplier contract for 200 MWh at
    # 0.4 kg/kWh, the remaining 500 MWh at the residual factor 0.5703 t/MWh:
    # 0 + 200 x 0.4 t + 500 x 0.5703 t = 80 t + 285.15 t = 365.15 t
    contracts = [
        ElectricityContract(id="GEC-2024-001", instrument="green_certificate", mwh=300),
        ElectricityContract(id="SUP-7", instrument="supplier_specific", mwh=200, kg_co2_per_kwh=0.4),
    ]
    r = electricity_market_based(1000, "MWh", contracts=contracts, residual_factor="CN-GRID-ETS")
    assert r.grams == 365_150_000
    assert r.factor_ids == ("GEC-2024-001", "SUP-7", "CN-GRID-ETS")
    # contracts beyond consumption are not claimed: 250 MWh all covered by certificates
    r = electricity_market_based(250, "MWh", contracts=contracts, residual_factor="CN-GRID-ETS")
    assert r.kg_co2 == 0 and r.factor_ids == ("GEC-2024-001", "CN-GRID-ETS")
    # without contracts it is the residual factor alone
    r = electricity_market_based(1000, "MWh", contracts=[], residual_factor="CN-GRID-ETS")
    assert r.grams == 570_300_000


def test_purchased_heat() -> None:
    # 100 GJ x 0.11 tCO2/GJ = 11 t; 1 MWh of heat = 3.6 GJ -> 396 kg
    assert purchased_heat(100, "GJ").grams == 11_000_000
    assert purchased_heat(1, "MWh").kg_co2 == pytest.approx(396.0)
    with pytest.raises(ValueError, match="is not"):
        purchased_heat(1, "t")
    with pytest.raises(ValueError, match="expected a heat_emission_factor"):
        purchased_heat(1, "GJ", factor="CN-GRID-ETS")


def test_to_grams_rounds_half_up_in_decimal() -> None:
    assert to_grams(570.3) == 570_300
    assert to_grams(570300.0000000001) == 570_300_000
    assert to_grams(0.0005) == 1
    assert to_grams(0.00049) == 0
    r = EmissionResult(scope=1, category="x", kg_co2=1.2345, activity="", factor_ids=(), table_version="t")
    assert r.grams == 1235


def test_factor_table_rows() -> None:
    table = load_factors()
    doc = json.loads(DATA.read_text("utf-8"))
    assert table.version == doc["version"]
    assert len(table.factors) == len(doc["factors"])
    for row in doc["factors"]:
        assert {"id", "source", "year", "region", "value", "unit"} <= set(row)
        assert row["source"].strip()
    expected = {
        "CN-GRID-2021": (0.5568, "kg/kWh", 2021),
        "CN-GRID-2022": (0.5366, "kg/kWh", 2022),
        "CN-GRID-2023": (0.5306, "kg/kWh", 2023),
        "CN-GRID-ETS": (0.5703, "t/MWh", 2022),
        "CN-NG-NCV": (389.31, "GJ / (1e4 * Nm3)", 2015),
        "CN-NG-CC": (15.3, "t / TJ", 2015),
        "CN-NG-OX": (99, "percent", 2015),
        "CN-HEAT": (0.11, "t / GJ", 2015),
    }
    for fid, (value, unit, year) in expected.items():
        f = table.get(fid)
        assert (f.value, f.unit, f.year) == (value, unit, year)
    assert table.get("CN-NG-NCV").quantity().to("GJ/Nm3").magnitude == pytest.approx(0.038931)
    assert [f.year for f in table.select("grid_emission_factor", region="CN")] == [
        2021,
        2022,
        2022,
        2023,
    ]
    assert table.select("oxidation_rate", fuel="natural_gas")[0].id == "CN-NG-OX"
    with pytest.raises(KeyError, match="no factor 'nope'"):
        table.get("nope")


def test_custom_factor_table(tmp_path: Path) -> None:
    row = {
        "id": "X-GRID",
        "kind": "grid_emission_factor",
        "fuel": None,
        "region": "X",
        "year": 2024,
        "value": 0.5,
        "unit": "kg/kWh",
        "source": "test",
    }
    p = tmp_path / "f.json"
    p.write_text(json.dumps({"version": "t1", "factors": [row]}))
    table = load_factors(p)
    r = electricity_location_based(10, "MWh", factor="X-GRID", table=table)
    assert (r.grams, r.table_version) == (5_000_000, "t1")
    bad = [
        ({"version": "t", "factors": [row, row]}, "duplicate id"),
        ({"factors": [row]}, "missing 'version'"),
        ({"version": "t", "factors": [{**row, "unit": "kg"}]}, "is not"),
        ({"version": "t", "factors": [{**row, "kind": "magic"}]}, "unknown kind"),
        ({"version": "t", "factors": [{**row, "source": " "}]}, "needs its source"),
        ({"version": "t", "factors": [{k: v for k, v in row.items() if k != "year"}]}, "bad row"),
    ]
    for doc, message in bad:
        p.write_text(json.dumps(doc))
        with pytest.raises(ValueError, match=message):
            load_factors(p)
