"""The outbox disk budget: alarm, prune only anchored records, otherwise hold acquisition."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway import Reading
from gateway._daemon import DiskBudget
from ledger_client import Outbox, Signer
from ledger_client._errors import OutboxError
from mrv_core._metrics import Metrics
from simulator import Anvil, ModbusPlant
from tests.conftest import GatewayProcess


async def _filled(tmp_path: Path, sign_records: bool = False) -> Outbox:
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw",
                           sign_records=Signer(b"\x04" * 32).sign if sign_records else None)
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


async def test_archives_before_pruning_and_proofs_come_from_the_archive(tmp_path: Path) -> None:
    """With an archive, what is pruned is copied there first (records with their leaves and
    record signatures, and their batches); a proof bundle from the archive is the one the
    outbox gave before pruning."""
    from ledger_client import bundle_from_outbox

    ob = await _filled(tmp_path, sign_records=True)
    archive = tmp_path / "usb" / "archive.sqlite"
    archive.parent.mkdir()
    try:
        before = {seq: (await bundle_from_outbox(ob, seq, chain_id=1, contract="0x" + "ab" * 20)
                        ).to_json() for seq in (1, 1500, 3000)}
        originals = await ob.records(1, 3000)
        used = await ob.used_bytes()
        m = Metrics()
        budget = DiskBudget(ob, m, budget_bytes=int(used * 0.7), alarm_fraction=0.5,
                            prune=True, archive=archive)
        await asyncio.wait_for(budget.wait_for_room(), 10)
        assert m.counters["records_pruned"] == 3000
        assert await ob.record(1) is None
        assert m.component("outbox:archive").state == "ok"
        # a copy interrupted before the delete (a crash) is made again without harm
        await ob._archive(archive, 1, 1000, 1, 1)
    finally:
        await ob.close()
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(archive)) as raw:  # a rollback journal: fit for removable disks
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    arc = await Outbox.open(archive, "gw", journal_mode="DELETE")
    try:
        assert await arc.records(1, 3000) == originals
        assert (await arc.stats()).records == 3000
        for seq, want in before.items():
            got = await bundle_from_outbox(arc, seq, chain_id=1, contract="0x" + "ab" * 20)
            assert got.to_json() == want
            assert got.record_signature is not None
        assert await arc.batch(4) is None  # only the batches whose records it holds
    finally:
        await arc.close()
    with pytest.raises(Exception, match="belongs to gateway 'gw'"):
        await Outbox.open(archive, "another-gw")


async def test_an_archive_that_cannot_be_written_prunes_nothing(tmp_path: Path) -> None:
    ob = await _filled(tmp_path)
    (tmp_path / "not-a-folder").write_text("")
    try:
        used = await ob.used_bytes()
        m = Metrics()
        budget = DiskBudget(ob, m, budget_bytes=int(used * 0.7), alarm_fraction=0.5,
                            prune=True, archive=tmp_path / "not-a-folder" / "archive.sqlite")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(budget.wait_for_room(), 1.5)
        assert m.counters["archive_failures"] >= 1 and m.counters["budget_holds"] == 1
        state = m.component("outbox:archive")
        assert state.state == "alarm" and "not-a-folder" in state.detail
        assert len(await ob.records(1, 6000)) == 6000  # nothing deleted
        # a disk that is not mounted: its folder is never created on the root file system
        with pytest.raises(OutboxError, match="does not exist"):
            await ob.prune_anchored(1, tmp_path / "mnt" / "usb" / "archive.sqlite")
        assert not (tmp_path / "mnt").exists()
        assert len(await ob.records(1, 6000)) == 6000
    finally:
        await ob.close()


async def test_export_proof_falls_back_to_the_archive(tmp_path: Path) -> None:
    """`mrv-gateway export-proof` / `verify` by config find a pruned record in the archive."""
    from config import parse_config
    from gateway._cli import _bundle_for

    data = tmp_path / "data"
    data.mkdir()
    cfg = parse_config(
        "gateway: {id: gw, signing_key: k/ed.key, data_dir: data}\n"
        "chain: {rpc_url: 'http://127.0.0.1:8545', chain_id: 31337, account_key: k/evm.key,\n"
        "        contract: '0x5FbDB2315678afecb367f032d93F642f64180aa3'}\n"
        "outbox: {path: o.sqlite, disk_budget_mb: 1, prune_anchored: true,\n"
        "         archive_path: archive.sqlite}\n"
        "devices: [{driver: mqtt, name: s, host: h, client_id: c,\n"
        "           points: [{id: p, topic: t, value: v, unit: kW}]}]\n", base_dir=tmp_path)
    assert cfg.archive_path() == data / "archive.sqlite"
    ob = await _filled(data)
    try:
        await ob.prune_anchored(1, cfg.archive_path())  # batch 1: records 1..1000
        [pending] = await ob.append([Reading(point_id="p", ts_ns=1, value=1.0, unit="u",
                                             source="s")])
    finally:
        await ob.close()
    b = await _bundle_for(cfg, 10)
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(data / "archive.sqlite")) as raw:  # reading it left its journal mode
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert b.record.seq == 10 and b.header.seq == 1 and b.contract.lower().startswith("0x5fbdb")
    assert (await _bundle_for(cfg, 1001)).header.seq == 2  # still in the outbox
    with pytest.raises(LookupError, match="pending"):
        await _bundle_for(cfg, pending.seq)
    with pytest.raises(LookupError, match="neither in the outbox nor in the archive"):
        await _bundle_for(cfg, 99_999)


def test_archive_without_pruning_is_a_config_error(tmp_path: Path) -> None:
    from config import ConfigError, parse_config

    with pytest.raises(ConfigError) as e:
        parse_config(
            "gateway: {id: gw, signing_key: k/ed.key}\n"
            "chain: {rpc_url: 'http://127.0.0.1:8545', chain_id: 31337, account_key: k.key,\n"
            "        contract: '0x5FbDB2315678afecb367f032d93F642f64180aa3'}\n"
            "outbox: {archive_path: archive.sqlite}\n"
            "devices: [{driver: mqtt, name: s, host: h, client_id: c,\n"
            "           points: [{id: p, topic: t, value: v, unit: kW}]}]\n")
    (issue,) = e.value.issues
    assert issue.path == "outbox" and issue.line == 4
    assert "only with prune_anchored: true" in issue.message


async def test_a_pruned_reading_still_verifies_against_the_chain(
        tmp_path: Path, anvil: Anvil, plant: ModbusPlant,
        gateway_process: type[GatewayProcess]) -> None:
    """The whole path: a gateway with a tiny budget anchors, archives and prunes while it
    runs; afterwards `mrv-gateway verify CONFIG --seq 1` proves the first reading, which is
    no longer in the outbox, from the archive against the chain."""
    import subprocess
    import sys

    from simulator import plant_devices, provision

    p = await provision(tmp_path / "gw", anvil.url,
                        devices=plant_devices(plant.port, interval_s=0.1),
                        batch_interval_s=0.3, max_records=50,
                        extra={"outbox": {"disk_budget_mb": 0.12, "budget_alarm_fraction": 0.5,
                                          "prune_anchored": True,
                                          "archive_path": "archive/readings.sqlite"}})
    (p.config.parent / "data" / "archive").mkdir(parents=True)
    log = tmp_path / "gateway.log"
    g = gateway_process(p.config, log).start()
    try:
        for _ in range(1200):  # the log line is the condition: looked at every 0.1 s
            if "archived in" in log.read_text():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("nothing was archived:\n" + log.read_text()[-3000:])
    finally:
        assert g.terminate() == 0
    exe = [sys.executable, "-m", "gateway._cli"]
    ok = subprocess.run([*exe, "verify", str(p.config), "--seq", "1"],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "verdict: the reading HOLDS" in ok.stdout
    ob = await Outbox.open(p.config.parent / "data" / "outbox.sqlite", "plant-a-gw1")
    try:
        assert await ob.record(1) is None  # pruned here: the proof came from the archive
    finally:
        await ob.close()
    st = json.loads(subprocess.run([*exe, "status", str(p.config)], capture_output=True,
                                   text=True, check=True).stdout)
    assert st["archive"]["records"] > 0 and st["archive"]["batches"] > 0
    assert st["archive"]["path"].endswith("archive/readings.sqlite")
    assert st["records"] > 0 and st["pending"] == 0
