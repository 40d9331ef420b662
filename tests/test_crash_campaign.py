"""The crash campaign's short form (the long form: `make crash`, tests/crash_campaign.py), and
proof that its checker fails on what it is meant to catch."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from config import contract_address, load_config
from ledger_client import EvmChain
from ledger_client._format import record_leaf
from ledger_client._outbox import _RECORD_COLS, _row_to_record
from simulator import Anvil, ModbusPlant, Mosquitto

from .crash_campaign import (
    MODES,
    MQTT_SOURCE,
    MQTT_TOPIC,
    Checker,
    Gateway,
    OutboxWatch,
    Setup,
    provision_campaign,
    run_campaign,
    until,
)

SEED = os.environ.get("MRV_TEST_SEED", "7")


@pytest.fixture
async def campaign_setup(tmp_path: Path, anvil: Anvil, plant: ModbusPlant,
                         mosquitto: Mosquitto) -> Setup:
    return await provision_campaign(tmp_path, anvil.url, plant.port, mosquitto.port)


async def test_short_crash_campaign(campaign_setup: Setup, tmp_path: Path) -> None:
    """A handful of SIGKILLs, one in each mode in turn, against the real gateway process, the
    simulated plant, anvil and MQTT through Mosquitto: nothing found, everything anchored."""
    report = await run_campaign(campaign_setup, tmp_path, kills=5, seed=SEED, modes=MODES)
    assert report.findings == [], report.table()
    assert report.kills == 5
    assert {"commits", "delay", "anchoring", "failpoint"} <= set(report.kills_by_mode), report.table()
    assert report.lives == len(report.cycles) + 1  # the last, clean one
    assert report.mqtt_acknowledged > 0
    assert report.mqtt_in_outbox == report.mqtt_acknowledged
    assert report.batches > 0 and report.batches_anchored == report.batches


class _Known:
    """A publisher stand-in: every counter was published at the time its record carries."""

    def __init__(self, times: dict[int, int]) -> None:
        self.times = times

    def known(self, n: int) -> int | None:
        return self.times.get(n)


def _copy(src: Path, dst: Path) -> None:
    with contextlib.closing(sqlite3.connect(src)) as a, contextlib.closing(sqlite3.connect(dst)) as b:
        a.backup(b)


def _exec(db: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    with contextlib.closing(sqlite3.connect(db)) as c:
        c.execute(sql, params)
        c.commit()


async def test_checker_catches_what_it_is_for(campaign_setup: Setup, tmp_path: Path) -> None:
    """Each kind of damage a crash could do, made by hand on a copy of a real outbox, is a
    finding of the kind that names it; the untouched copy has none."""
    report = await run_campaign(campaign_setup, tmp_path, kills=1, seed=SEED, modes=("commits",))
    assert report.findings == [], report.table()
    cfg = load_config(campaign_setup.config)
    src = cfg.outbox_path()
    with contextlib.closing(sqlite3.connect(src)) as c:
        times = {int(v): ts // 1_000_000 for v, ts in c.execute(
            "SELECT value, ts_ns FROM records WHERE source = ?", (MQTT_SOURCE,))}
        (mqtt_seq,) = c.execute("SELECT MIN(seq) FROM records WHERE source = ?",
                                (MQTT_SOURCE,)).fetchone()
        (modbus_seq,) = c.execute("SELECT MIN(seq) FROM records WHERE source LIKE 'modbus%'"
                                  ).fetchone()
        (n_records,) = c.execute("SELECT MAX(seq) FROM records").fetchone()
    assert times and mqtt_seq and modbus_seq and n_records > 20
    chain = EvmChain(campaign_setup.rpc_url, contract_address=contract_address(cfg))

    async def findings(tamper: list[tuple[str, tuple[object, ...]]], *, before: bool = False,
                       clean: bool = False, name: str) -> set[str]:
        """Kinds found on a copy tampered by ``tamper``; ``before``: the checker saw the copy
        untouched first (a change after a restart; ``clean``: a graceful one)."""
        db = tmp_path / f"{name}.sqlite"
        _copy(src, db)
        checker = Checker(db, cfg.gateway.id, chain, _Known(times))
        if before:
            assert await checker.check(0, clean=clean) == []
        for sql, params in tamper:
            _exec(db, sql, params)
        return {f.kind for f in await checker.check(1)}

    def duplicate_of(seq: int) -> list[tuple[str, tuple[object, ...]]]:
        """A second copy of record ``seq`` at the end, with a right leaf for its new seq."""
        with contextlib.closing(sqlite3.connect(src)) as c:
            row = c.execute(f"SELECT {_RECORD_COLS} FROM records WHERE seq = ?", (seq,)).fetchone()
        new = (n_records + 1, *row[1:])
        leaf = record_leaf(_row_to_record(cfg.gateway.id, new))
        return [(f"INSERT INTO records({_RECORD_COLS}, leaf) VALUES (?,?,?,?,?,?,?,?,?,?)",
                 (*new, leaf))]

    try:
        assert await findings([], name="untouched") == set()
        assert "record-gap" in await findings(
            [("DELETE FROM records WHERE seq = ?", (n_records // 2,))], name="gap")
        assert "record-lost" in await findings(
            [("DELETE FROM records WHERE seq = ?", (n_records,))], before=True, name="lost")
        assert "record-changed" in await findings(
            [("UPDATE records SET value = value + 1 WHERE seq = 3", ())], before=True,
            name="changed")
        assert "leaf-mismatch" in await findings(
            [("UPDATE records SET value = value + 1 WHERE seq = 3", ())], name="leaf")
        assert {"merkle-root", "header-hash"} <= await findings(
            [("UPDATE batches SET root = zeroblob(32) WHERE seq = 1", ())], name="root")
        assert {"header-hash", "chain-differs"} <= await findings(
            [("UPDATE batches SET header_hash = zeroblob(32) WHERE seq = 1", ())], name="hh")
        assert "signature" in await findings(
            [("UPDATE batches SET signature = zeroblob(64) WHERE seq = 2", ())], name="sig")
        assert {"batch-gap", "chain-ahead"} <= await findings(
            [("DELETE FROM batches WHERE seq = 1", ())], name="batch-gap")
        assert "prev-hash" in await findings(
            [("UPDATE batches SET prev_hash = zeroblob(32) WHERE seq = 2", ())], name="prev")
        assert "mqtt-duplicate" in await findings(duplicate_of(mqtt_seq), name="mqtt-dup")
        assert "mqtt-duplicate-after-clean-stop" in await findings(
            duplicate_of(mqtt_seq), before=True, clean=True, name="mqtt-dup-clean")
        assert await findings(duplicate_of(mqtt_seq), before=True, name="mqtt-dup-kill") == set()
        assert "modbus-duplicate" in await findings(duplicate_of(modbus_seq), name="mb-dup")
        assert "mqtt-time" in await findings(
            [("UPDATE records SET ts_ns = ts_ns + 1000000 WHERE seq = ?", (mqtt_seq,))],
            name="mqtt-time")
    finally:
        await chain.close()


async def test_a_clean_stop_leaves_nothing_committed_to_be_sent_again(campaign_setup: Setup,
                                                                      tmp_path: Path) -> None:
    """SIGTERM while a backlog of MQTT messages streams in: what the stop commits is also
    acknowledged, so the next start gets none of it again (each message once in the outbox)."""
    import aiomqtt

    assert campaign_setup.broker_port is not None
    sent = 300
    async with aiomqtt.Client("127.0.0.1", campaign_setup.broker_port,
                              identifier="backlog-publisher") as c:
        for n in range(1, sent + 1):  # queued by the broker for the gateway's session
            await c.publish(MQTT_TOPIC, json.dumps({"ts": 1_700_000_000_000 + n,
                                                    "data": {"n": n}}), qos=1)
    cfg = load_config(campaign_setup.config)
    watch = OutboxWatch(cfg.outbox_path())

    def committed() -> list[int]:
        if not cfg.outbox_path().exists():
            return []
        with contextlib.closing(sqlite3.connect(f"file:{cfg.outbox_path()}?mode=ro",
                                                uri=True)) as db:
            try:
                return [int(v) for (v,) in db.execute(
                    "SELECT value FROM records WHERE source = ? ORDER BY seq", (MQTT_SOURCE,))]
            except sqlite3.OperationalError:  # the schema is not there yet
                return []

    gw = Gateway(campaign_setup.config, tmp_path / "gateway.log")
    try:
        gw.start()
        assert await until(lambda: len(committed()) > 0, 60, gw), gw.tail()
        gw.signal(signal.SIGTERM)  # the backlog is still coming in
        assert await gw.wait(60) == 0, gw.tail()
        first_life = len(committed())
        assert 0 < first_life < sent
        gw.start()
        assert await until(lambda: len(set(committed())) == sent, 60, gw), gw.tail()
        gw.signal(signal.SIGTERM)
        assert await gw.wait(60) == 0, gw.tail()
    finally:
        if gw.running:
            await gw.kill9()
    order = committed()  # in seq order: the first ``first_life`` ones came before the stop
    seen = Counter(order)
    assert set(seen) == set(range(1, sent + 1))
    twice = sorted(n for n, k in seen.items() if k > 1)
    where = {n: [i < first_life for i, m in enumerate(order) if m == n] for n in twice[:5]}
    assert twice == [], (f"{len(twice)} message(s) committed twice: {twice[:20]}; "
                         f"{first_life} before the stop; in the first life: {where}\n{gw.tail()}")
    assert watch.counts()[0] > 0
