"""CO2e per scope in batch headers: from valid cumulative readings only, reproducible."""

from __future__ import annotations

import asyncio
import math

import pytest
from pydantic import ValidationError

from cleaning import BatchEmissions, EmissionPoint, PointEmissions
from cleaning._batch_emissions import activity
from config import load_config
from gateway import Quality, Reading
from gateway._daemon import run_daemon
from ledger_client import Outbox
from mrv_core._metrics import Metrics
from simulator import Provisioned

GAS = PointEmissions(scope=1, method="fuel", fuel="natural_gas", register_max=1000.0,
                     resolution=0.1)
POWER = PointEmissions(scope=2, method="electricity", factor="CN-GRID-ETS")


def _r(pid: str, v: float, q: int = 0) -> Reading:
    return Reading(point_id=pid, ts_ns=0, value=v, unit="x", source="t", quality=q)


def test_activity_counts_increases_wraps_and_ignores_resets() -> None:
    assert activity([1.0, 2.5, 4.0], None, GAS) == (3.0, 4.0)
    assert activity([5.0], 4.0, GAS) == (1.0, 5.0)
    wrapped, base = activity([2.0], 999.0, GAS)  # 999 -> wrap at 1000 (+0.1) -> 2
    assert math.isclose(wrapped, 3.1) and base == 2.0
    assert activity([3.0, 4.0], 500.0, GAS) == (1.0, 4.0)  # reset mid-range: 0, new base


def test_ten_thousand_nm3_of_gas_is_the_guideline_figure() -> None:
    em = BatchEmissions([EmissionPoint("gas", "Nm3",
                                       PointEmissions(scope=1, method="fuel",
                                                      fuel="natural_gas"))])
    em.seed({"gas": 100.0})
    assert em.stage([_r("gas", 10_100.0)]) == (21_621_888, 0, 0)


def test_electricity_at_the_compliance_factor() -> None:
    em = BatchEmissions([EmissionPoint("kwh", "kWh", POWER)])
    assert em.stage([_r("kwh", 1_000.0), _r("kwh", 1_000_000.0)]) == (0, 569_729_700, 0)


def test_invalid_readings_do_not_count_and_state_moves_only_on_commit() -> None:
    em = BatchEmissions([EmissionPoint("kwh", "kWh", POWER)])
    em.seed({"kwh": 100.0})
    batch = [_r("kwh", 5_000.0, int(Quality.COUNTER_GLITCH)), _r("kwh", 110.0),
             _r("kwh", math.nan, int(Quality.COMM_FAULT)), _r("other", 9.0)]
    first = em.stage(batch)
    assert first == (0, 5_703, 0)  # 10 kWh x 0.5703 kg/kWh
    assert em.stage(batch) == first  # staging twice without commit: same answer
    em.commit()
    assert em.stage([_r("kwh", 120.0)]) == (0, 5_703, 0)


@pytest.mark.parametrize(("block", "fragment"), [
    ({"scope": 2, "method": "fuel", "fuel": "natural_gas"}, "scope 1"),
    ({"scope": 1, "method": "fuel"}, "needs 'fuel'"),
    ({"scope": 1, "method": "electricity"}, "scope 2"),
    ({"scope": 2, "method": "electricity", "factor": "NOPE"}, "unknown factor id"),
    ({"scope": 2, "method": "heat", "colour": 1}, "Extra inputs"),
])
def test_config_errors(block: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        PointEmissions.model_validate(block)


async def test_batch_headers_carry_co2e_of_the_plant(gateway: Provisioned,
                                                     request: pytest.FixtureRequest) -> None:
    cfg = load_config(gateway.config)
    gas = request.getfixturevalue("plant").models[2]  # the gas meter the gateway polls
    stop, metrics = asyncio.Event(), Metrics()
    task = asyncio.create_task(run_daemon(cfg, stop=stop, metrics=metrics))
    # Scope 1 is there only once the gas register (0.1 Nm3 steps: one every ~3 s at 120 Nm3/h)
    # has moved between two polls: wait for the volume to grow 0.1 Nm3 past its first poll,
    # then for two more anchored batches to take that reading in (and at least 4 in all).
    c, v0 = metrics.counters, gas.volume_nm3
    first: float | None = None
    anchored_after: int | None = None
    while not task.done():
        if first is None and gas.volume_nm3 != v0:
            first = gas.volume_nm3  # polled once
        if anchored_after is None and first is not None and gas.volume_nm3 - first >= 0.1:
            anchored_after = c["batches_anchored"]
        if anchored_after is not None and c["batches_anchored"] >= max(4, anchored_after + 2):
            break
        await asyncio.sleep(0.05)
    stop.set()
    await task
    ob = await Outbox.open(cfg.outbox_path(), cfg.gateway.id)
    try:
        st = await ob.stats()
        # recompute every header's figures from the records alone
        em = BatchEmissions([EmissionPoint(p.id, p.unit, p.emissions)
                             for p in cfg.points() if p.emissions])
        totals = [0, 0, 0]
        for s in range(1, st.batches + 1):
            b = await ob.batch(s)
            assert b is not None
            recs = await ob.records(b.header.first_record_seq, b.header.last_record_seq)
            expected = em.stage(recs)
            em.commit()
            got = (b.header.co2e_scope1_g, b.header.co2e_scope2_g, b.header.co2e_scope3_g)
            assert got == expected
            totals = [a + g for a, g in zip(totals, got, strict=True)]
        assert totals[0] > 0 and totals[1] > 0 and totals[2] == 0  # gas burnt, power bought
    finally:
        await ob.close()
