"""Hourly aggregates and substitutes become derived records naming what they come from."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

from cleaning import AggregationConfig, part75_table1
from cleaning._aggregate import HOUR_NS, MINUTE_NS
from config import load_config, parse_config
from gateway import DerivedRecord, Quality, Reading
from gateway._aggregator import AggregatedPoint, Aggregator
from gateway._daemon import run_daemon
from ledger_client import Outbox
from mrv_core._metrics import Metrics
from simulator import Anvil, ModbusPlant, plant_devices, provision
from tests.support import until

T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00Z, an hour boundary


def _minute_readings(hour: int, value: float, minutes: range) -> list[Reading]:
    return [Reading(point_id="flow", ts_ns=T0 + hour * HOUR_NS + m * MINUTE_NS + 5 * 10**9,
                    value=value, unit="Nm3/h", source="t") for m in minutes]


async def test_hour_means_and_a_substitute_for_the_invalid_hour(tmp_path: Path) -> None:
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    await ob.ensure_point_index()
    try:
        await ob.append(_minute_readings(0, 100.0, range(60)))  # valid hour
        await ob.append(_minute_readings(1, 999.0, range(10)))  # 10 of 60 minutes: invalid
        await ob.append(_minute_readings(2, 120.0, range(60)))  # valid hour
        rule = AggregationConfig(expected_per_minute=1, min_valid_minutes=45)
        agg = Aggregator(ob, [AggregatedPoint("flow", "Nm3/h", rule, part75_table1(500.0))],
                         Metrics())
        h0 = await agg.close_hour(T0)
        h1 = await agg.close_hour(T0 + HOUR_NS)
        h2 = await agg.close_hour(T0 + 2 * HOUR_NS)
        assert [type(r) for r in h0 + h1] == [DerivedRecord, DerivedRecord]
        mean0, mean1 = h0[0], h1[0]
        assert (mean0.derivation, mean0.value, mean0.quality) == ("hour-mean", 100.0, 0)
        assert (mean0.from_seq, mean0.to_seq) == (1, 60)  # the raw readings it comes from
        assert mean1.quality == Quality.INSUFFICIENT and mean1.value == 999.0
        assert len(h2) == 2
        mean2, sub = h2
        assert mean2.value == 120.0 and mean2.quality == 0
        # 2 of 3 hours available (< 80 %): Part 75 Table 1 takes the maximum potential value
        assert sub.derivation == "substitute:40 CFR 75.33 Table 1:tier-6:max_potential"
        assert sub.value == 500.0
        assert (sub.period_start_ns, sub.period_end_ns) == (T0 + HOUR_NS, T0 + 2 * HOUR_NS)
        assert sub.from_seq == sub.to_seq == mean1.seq  # names the hour it replaces
        assert sub.quality == Quality.SUBSTITUTED
        raw = await ob.records(61, 70)  # raw readings of the invalid hour are untouched
        assert all(isinstance(r, Reading) and r.value == 999.0 for r in raw)
        # closing again does not substitute the same hour twice
        assert [r.derivation for r in await agg.close_hour(T0 + 3 * HOUR_NS)] == ["hour-mean"]
        empty = (await ob.records(mean2.seq + 2, mean2.seq + 2))[0]
        assert isinstance(empty, DerivedRecord) and math.isnan(empty.value)
        assert empty.quality == Quality.INSUFFICIENT
    finally:
        await ob.close()


def test_aggregation_config_validates_points() -> None:
    from tests.test_config import GOOD

    ok = parse_config(GOOD + "aggregation:\n  points:\n    - {point: m.power, expected_per_minute: 60,"
                      " substitution: {part75_max_potential: 900}}\n")
    assert ok.aggregation.points[0].point == "m.power"
    import pytest

    from config import ConfigError

    with pytest.raises(ConfigError, match="point 'nope' is not configured"):
        parse_config(GOOD + "aggregation:\n  points:\n    - {point: nope, expected_per_minute: 1}\n")


async def test_high_availability_uses_the_hours_around_the_gap(tmp_path: Path) -> None:
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    await ob.ensure_point_index()
    try:
        rule = AggregationConfig(expected_per_minute=1, min_valid_minutes=45)
        agg = Aggregator(ob, [AggregatedPoint("flow", "Nm3/h", rule, part75_table1(500.0))],
                         Metrics())
        for h in range(40):
            await ob.append(_minute_readings(h, 100.0, range(60)))
            assert len(await agg.close_hour(T0 + h * HOUR_NS)) == 1
        assert len(await agg.close_hour(T0 + 40 * HOUR_NS)) == 1  # no data at all: invalid
        await ob.append(_minute_readings(41, 120.0, range(60)))
        _mean, sub = await agg.close_hour(T0 + 41 * HOUR_NS)
        # 41 of 42 hours available (>= 95 %), a 1-hour gap: average of the hours around it
        assert sub.derivation == "substitute:40 CFR 75.33 Table 1:tier-1:hb_ha_average"
        assert sub.value == 110.0
        assert sub.period_start_ns == T0 + 40 * HOUR_NS
    finally:
        await ob.close()


async def test_a_restart_restores_the_history_and_closes_the_hours_it_missed(
        tmp_path: Path) -> None:
    """The gateway was down for hour 40 (no readings) and came back during hour 41: the new
    aggregator knows the 40 hours before, resumes at hour 40, and substitutes it from them."""
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    await ob.ensure_point_index()
    rule = AggregationConfig(expected_per_minute=1, min_valid_minutes=45)
    points = [AggregatedPoint("flow", "Nm3/h", rule, part75_table1(500.0))]
    try:
        before = Aggregator(ob, points, Metrics(), grace_s=60)
        for h in range(40):
            await ob.append(_minute_readings(h, 100.0, range(60)))
            assert len(await before.close_hour(T0 + h * HOUR_NS)) == 1
        # ... down during hour 40; back in hour 41, which gets its readings
        await ob.append(_minute_readings(41, 120.0, range(60)))
        after = Aggregator(ob, points, Metrics(), grace_s=60, max_history_hours=24 * 3)
        assert await after.restore(T0 + 41 * HOUR_NS + 30 * MINUTE_NS) == 40
        assert after.done_until_ns == T0 + 40 * HOUR_NS  # resumes at the first missed hour
        assert len(after.history["flow"].hours) == 40
        assert await after.catch_up(T0 + 41 * HOUR_NS + 30 * 10**9) == []  # within the grace
        hour40 = await after.catch_up(T0 + 41 * HOUR_NS + 30 * MINUTE_NS)
        assert [(r.derivation, r.quality, r.unit) for r in hour40] == [
            ("hour-mean", Quality.INSUFFICIENT, "Nm3/h")]  # an hour without data keeps its unit
        recs = await after.catch_up(T0 + 42 * HOUR_NS + 61 * 10**9)
        assert [r.derivation for r in recs] == [
            "hour-mean", "substitute:40 CFR 75.33 Table 1:tier-1:hb_ha_average"]
        # 41 of 42 hours available counts the restored history: tier 1, not the maximum
        assert recs[1].value == 110.0 and recs[1].period_start_ns == T0 + 40 * HOUR_NS
        assert after.done_until_ns == T0 + 42 * HOUR_NS
        # a second restart does not substitute hour 40 again nor re-close any hour
        again = Aggregator(ob, points, Metrics(), grace_s=60, max_history_hours=24 * 3)
        assert await again.restore(T0 + 42 * HOUR_NS + 2 * MINUTE_NS) == 42
        assert T0 + 40 * HOUR_NS in again.history["flow"].substituted
        assert await again.catch_up(T0 + 42 * HOUR_NS + 2 * MINUTE_NS) == []
    finally:
        await ob.close()


async def test_with_nothing_aggregated_yet_it_starts_with_the_current_hour(
        tmp_path: Path) -> None:
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    try:
        agg = Aggregator(ob, [AggregatedPoint("flow", "Nm3/h", AggregationConfig(
            expected_per_minute=1))], Metrics())
        assert await agg.restore(T0 + 5 * HOUR_NS + 17 * MINUTE_NS) == 0
        assert agg.done_until_ns == T0 + 5 * HOUR_NS
    finally:
        await ob.close()


async def test_the_daemon_catches_up_the_hours_missed_while_it_was_down(
        tmp_path: Path, anvil: Anvil, plant: ModbusPlant) -> None:
    """Real daemon, real chain: the outbox says hour H-3 was the last one closed; at start the
    aggregator closes H-2 and H-1 (no readings: invalid hour-means with their unit), and they
    are anchored with the readings."""
    prov = await provision(tmp_path / "gw", anvil.url,
                           devices=plant_devices(plant.port, interval_s=0.2),
                           batch_interval_s=0.5, max_records=200,
                           extra={"aggregation": {"grace_s": 0, "points": [
                               {"point": "feeder.energy", "expected_per_minute": 60}]},
                               "outbox": {"shutdown_drain_s": 20}})
    cfg = load_config(prov.config)
    hour = time.time_ns() // HOUR_NS * HOUR_NS
    ob = await Outbox.open(cfg.outbox_path(), cfg.gateway.id)
    try:
        [last] = await ob.append([DerivedRecord(
            point_id="feeder.energy", derivation="hour-mean", period_start_ns=hour - 3 * HOUR_NS,
            period_end_ns=hour - 2 * HOUR_NS, value=5.0, unit="kWh", from_seq=0, to_seq=0)])
    finally:
        await ob.close()
    metrics = Metrics()
    stop = asyncio.Event()
    daemon = asyncio.create_task(run_daemon(cfg, stop=stop, metrics=metrics))
    try:
        await until(lambda: metrics.counters["derived_records"] >= 2
                    and metrics.counters["polls"] >= 5, timeout=60)
    finally:
        stop.set()
        await asyncio.wait_for(daemon, 60)
    assert metrics.counters["task_restarts"] == 0, metrics.snapshot()
    ob = await Outbox.open(cfg.outbox_path(), cfg.gateway.id)
    try:
        st = await ob.stats()
        assert st.pending == 0 and st.batches_by_state["confirmed"] == st.batches, st
        derived = [r for r in await ob.records(last.seq + 1, st.records)
                   if isinstance(r, DerivedRecord)]
        assert [(r.period_start_ns, r.derivation, r.quality, r.unit) for r in derived] == [
            (hour - 2 * HOUR_NS, "hour-mean", Quality.INSUFFICIENT, "kWh"),
            (hour - HOUR_NS, "hour-mean", Quality.INSUFFICIENT, "kWh")]
    finally:
        await ob.close()


async def test_a_stop_between_points_closes_the_rest_of_that_hour_once(tmp_path: Path) -> None:
    """Hour 3 was closed for one point but not the other when the gateway stopped."""
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    await ob.ensure_point_index()
    rule = AggregationConfig(expected_per_minute=1)
    a, b = (AggregatedPoint(pid, "Nm3/h", rule) for pid in ("flow", "flow2"))
    try:
        for h in range(4):
            await ob.append(_minute_readings(h, 100.0, range(60)))
        first = Aggregator(ob, [a, b], Metrics())
        for h in range(3):
            assert len(await first.close_hour(T0 + h * HOUR_NS)) == 2
        assert len(await Aggregator(ob, [a], Metrics()).close_hour(T0 + 3 * HOUR_NS)) == 1
        again = Aggregator(ob, [a, b], Metrics(), grace_s=0, max_history_hours=24)
        assert await again.restore(T0 + 4 * HOUR_NS) == 4 + 3
        assert again.done_until_ns == T0 + 3 * HOUR_NS  # the earliest hour a point lacks
        recs = await again.catch_up(T0 + 4 * HOUR_NS)
        assert [(r.point_id, r.period_start_ns) for r in recs] == [("flow2", T0 + 3 * HOUR_NS)]
    finally:
        await ob.close()
