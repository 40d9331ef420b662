"""The outbox disk budget: alarm, prune only anchored records, otherwise hold acquisition."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway import Reading
from gateway._daemon import DiskBudget
from gateway._metrics import Metrics
from ledger_client import Outbox, Signer


async def _filled(tmp_path: Path) -> Outbox:
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    sign = Signer(b"\x03" * 32).sign
    await ob.append([Reading(point_id=f"p{i % 7}", ts_ns=i, value=float(i), unit="kW",
                             source="s" * 40) for i in range(6000)])
    for _ in range(6):
        await ob.make_batch(1000, sign)
    for seq in (1, 2, 3):  # three batches anchored, three still waiting
        await ob.mark_confirmed(seq, 10 + seq)
    return ob


async def test_holds_when_nothing_anchored_can_go(tmp_path: Path) -> None:
    ob = await _filled(tmp_path)
    try:
        used = await ob.used_bytes()
        m = Metrics()
        budget = DiskBudget(ob, m, budget_bytes=used // 2, alarm_fraction=0.5, prune=False)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(budget.wait_for_room(), 1.5)
        assert m.component("outbox").state == "alarm"
        assert m.counters["budget_holds"] == 1
        assert (await ob.stats()).records == 6000  # nothing deleted
        assert len(await ob.records(1, 6000)) == 6000
    finally:
        await ob.close()


async def test_prunes_anchored_records_only(tmp_path: Path) -> None:
    ob = await _filled(tmp_path)
    try:
        used = await ob.used_bytes()
        m = Metrics()
        budget = DiskBudget(ob, m, budget_bytes=int(used * 0.7), alarm_fraction=0.5, prune=True)
        await asyncio.wait_for(budget.wait_for_room(), 10)
        left = await ob.records(1, 6000)
        assert left and left[0].seq == 3001  # batches 1-3 (records 1..3000) pruned
        assert [r.seq for r in left] == list(range(3001, 6001))  # unanchored ones all kept
        assert m.counters["records_pruned"] == 3000
        assert (await ob.batch(1)) is not None  # headers stay
    finally:
        await ob.close()
    # a restart continues the sequence after pruned records
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    try:
        [r] = await ob.append([Reading(point_id="p", ts_ns=1, value=1.0, unit="u", source="s")])
        assert r.seq == 6001
    finally:
        await ob.close()


async def test_under_budget_is_quiet(tmp_path: Path) -> None:
    ob = await _filled(tmp_path)
    try:
        m = Metrics()
        budget = DiskBudget(ob, m, budget_bytes=10**12, alarm_fraction=0.8, prune=False)
        await asyncio.wait_for(budget.wait_for_room(), 5)
        assert m.component("outbox").state == "ok"
    finally:
        await ob.close()
