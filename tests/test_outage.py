"""Chain down for a while: acquisition goes on, the backlog waits in the outbox, then drains in
order. A chain that lost our batches, or holds another header, raises an alarm, never a rewrite."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from config import load_config
from gateway._daemon import run_daemon
from ledger_client import EvmChain, Outbox, Signer, load_account
from ledger_client._admin import deploy_ledger, register_gateway, write_address_book
from ledger_client._chain import header_tuple
from ledger_client._format import ZERO32, build_header, keccak256
from mrv_core._metrics import Metrics
from simulator import Anvil, ModbusPlant, plant_devices, provision

from .test_crash import assert_consistent


async def _until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_backlog_drains_in_order_after_chain_outage(tmp_path: Path,
                                                          plant: ModbusPlant) -> None:
    anvil = Anvil(state=tmp_path / "chain-state.json").start()
    try:
        prov = await provision(tmp_path / "gw", anvil.url,
                               devices=plant_devices(plant.port, interval_s=0.2),
                               batch_interval_s=0.3, max_records=20)
        cfg = load_config(prov.config)
        metrics = Metrics()
        stop = asyncio.Event()
        task = asyncio.create_task(run_daemon(cfg, stop=stop, metrics=metrics))
        c = metrics.counters
        await _until(lambda: c["batches_anchored"] >= 2, 30, "first anchors")

        anvil.stop()  # the chain goes away (state saved, as a node restart would keep it)
        accepted_at_outage = c["readings_accepted"]
        built_at_outage = c["batches_built"]
        await _until(lambda: metrics.component("uplink").state == "failing", 15, "uplink failing")
        await _until(lambda: c["batches_built"] >= built_at_outage + 4, 30, "a backlog")
        anchored_during = c["batches_anchored"]
        await _until(lambda: c["batches_built"] >= built_at_outage + 6, 30, "more batches")
        assert c["batches_anchored"] == anchored_during  # nothing anchors while down
        assert c["readings_accepted"] > accepted_at_outage  # acquisition never stopped
        assert metrics.component("device:feeder-meter").state == "ok"

        anvil = Anvil(port=anvil.port, state=tmp_path / "chain-state.json").start()
        await _until(lambda: c["batches_anchored"] == c["batches_built"] and
                     metrics.component("uplink").state == "ok", 60, "the backlog to drain")
        stop.set()
        await task
        await assert_consistent(prov)
        chain = EvmChain(anvil.url, contract_address=prov.contract)
        try:  # anchored in order: block numbers never go down with seq
            blocks = [(await chain.batch(cfg.gateway.id, s)).block_number
                      for s in range(1, c["batches_built"] + 1)]
        finally:
            await chain.close()
        assert blocks == sorted(blocks)
    finally:
        anvil.stop()


@pytest.mark.parametrize("case", ["reset-chain", "conflicting-header"])
async def test_chain_disagreement_is_an_alarm(case: str, tmp_path: Path, anvil: Anvil,
                                              plant: ModbusPlant) -> None:
    """A chain that lost our batches, or a clone of this gateway that anchored another header
    at our seq, stops anchoring with an alarm; acquisition goes on; nothing is overwritten."""
    prov = await provision(tmp_path / "gw", anvil.url,
                           devices=plant_devices(plant.port, interval_s=0.2),
                           batch_interval_s=0.3, max_records=20)
    cfg = load_config(prov.config)
    metrics = Metrics()
    stop = asyncio.Event()
    task = asyncio.create_task(run_daemon(cfg, stop=stop, metrics=metrics))
    await _until(lambda: metrics.counters["batches_anchored"] >= 2, 30, "first anchors")
    stop.set()
    await task

    # A new ledger that knows this gateway with the same keys but not its history.
    admin = load_account(prov.admin_key)
    signer = Signer.load(cfg.gateway.signing_key)
    account = load_account(cfg.chain.account_key)
    chain = EvmChain(anvil.url)
    book = await deploy_ledger(chain, admin)
    await register_gateway(chain, admin, cfg.gateway.id, account.address, signer.public_key)
    if case == "conflicting-header":
        rogue = build_header(gateway_id=cfg.gateway.id, seq=1, prev_hash=ZERO32,
                             records=[(1, 0, keccak256(b"rogue"))])
        await chain.transact(account, chain.contract.functions.anchorBatch(
            header_tuple(rogue), signer.sign(rogue.hash())))
        ob = await Outbox.open(cfg.outbox_path(), cfg.gateway.id)
        await ob._exec("UPDATE batches SET state = 0")  # as if none were anchored yet
        await ob.close()
    held_before = await chain.last_seq(cfg.gateway.id)
    write_address_book(prov.address_book, book)

    metrics2 = Metrics()
    stop2 = asyncio.Event()
    task2 = asyncio.create_task(run_daemon(cfg, stop=stop2, metrics=metrics2))
    await _until(lambda: metrics2.component("uplink").state == "alarm", 20, "the alarm")
    polls = metrics2.counters["polls"]
    await _until(lambda: metrics2.counters["polls"] > polls, 10, "more polls")
    assert metrics2.counters["polls"] > polls  # acquisition goes on
    stop2.set()
    await task2
    detail = metrics2.component("uplink").detail
    expected = "was the chain reset" if case == "reset-chain" else "the chain holds header"
    assert expected in detail, detail
    assert await chain.last_seq(cfg.gateway.id) == held_before  # nothing written over
    await chain.close()
