"""The whole path against a real pymodbus plant and a real anvil chain."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

from config import contract_address, load_config
from gateway._daemon import run_daemon
from ledger_client import EvmChain, Outbox, bundle_from_outbox, verify_bundle
from mrv_core._metrics import Metrics
from simulator import ModbusPlant, Provisioned


async def _run_until(cfg_path: Path, metrics: Metrics, polls: int, timeout: float = 60) -> None:
    cfg = load_config(cfg_path)
    stop = asyncio.Event()
    task = asyncio.create_task(run_daemon(cfg, stop=stop, metrics=metrics))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while metrics.counters["polls"] < polls and loop.time() < deadline and not task.done():
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, timeout)


async def test_polls_end_in_anchored_verifiable_batches(gateway: Provisioned,
                                                        plant: ModbusPlant) -> None:
    metrics = Metrics()
    await _run_until(gateway.config, metrics, polls=30)
    cfg = load_config(gateway.config)
    points = sum(len(d.points) for d in cfg.devices)
    per_device = {len(d.points) for d in cfg.devices}
    assert per_device == {3}  # so each poll (of any device) yields 3 readings
    polls = metrics.counters["polls"]
    assert polls >= 30
    assert metrics.counters["readings_accepted"] == polls * 3

    outbox = await Outbox.open(cfg.outbox_path(), cfg.gateway.id)
    chain = EvmChain(gateway.rpc_url, contract_address=contract_address(cfg))
    try:
        st = await outbox.stats()
        assert st.records == polls * 3
        assert st.pending == 0
        assert st.batches_by_state == {"built": 0, "submitted": 0, "confirmed": st.batches}
        assert st.batches >= 2  # max_records 50 forces several batches
        assert await chain.last_seq(cfg.gateway.id) == st.batches
        gw = await chain.gateway(cfg.gateway.id)
        assert gw.last_record_seq == st.records
        # every accepted reading is provable against the ledger
        for seq in range(1, st.records + 1):
            bundle = await bundle_from_outbox(outbox, seq, chain_id=cfg.chain.chain_id,
                                              contract=gateway.contract)
            report = await verify_bundle(bundle, chain)
            assert report.ok, report.text()
        # plausibly decoded values from the simulated meters
        first = await outbox.records(1, points)
        by_point = {r.point_id: r for r in first}
        assert 100_000 < by_point["feeder.energy"].value < 200_000
        assert 200 < by_point["feeder.power"].value < 700
        assert 225 < by_point["feeder.voltage_a"].value < 235
        assert 50 < by_point["boiler.gas_flow"].value < 200
        assert all(r.quality == 0 and not math.isnan(r.value) for r in first)
    finally:
        await chain.close()
        await outbox.close()
    assert plant.models[1].reads >= polls // 2
