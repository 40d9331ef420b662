"""Delivery of batches from the gateway's outbox to the portal: the real portal app served by
uvicorn over HTTPS (certificates from `simulator.SimPki`) on a loopback socket; the outbox and
the delivery task directly, a process killed between the POST and the marking, and a real
provisioned gateway on anvil delivering as it runs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from config import load_config
from gateway._daemon import run_daemon
from gateway._health import prometheus_text
from ledger_client import Delivery, Outbox, Signer
from mrv_core import Metrics, TlsConfig, client_context, new_reading
from portal import PortalContext
from portal._ingest_tables import ingest_batches, quarantine, records
from simulator import Anvil, ModbusPlant, Postgres, SimPki, plant_devices, provision
from simulator._postgres import pg_bindir
from tests.ingest_support import (
    ServedPortal,
    anchor,
    index_chain,
    portal_context,
    register,
    signer,
)
from tests.support import until

GW = "plant-d-gw1"
ROOT = Path(__file__).resolve().parent.parent


async def _outbox(tmp_path: Path, key: Signer, batches: int, per: int = 20) -> Outbox:
    ob = await Outbox.open(tmp_path / "outbox.sqlite", GW, sign_records=key.sign)
    await _more(ob, key, batches, per)
    return ob


async def _more(ob: Outbox, key: Signer, batches: int, per: int = 20) -> None:
    for _ in range(batches):
        t = 1_767_225_600_000_000_000 + (await ob.pending_count() + 1) * 10**9
        await ob.append([new_reading(f"p{i % 3}", t + i, float(i), "kW", "modbus_tcp:m")
                         for i in range(per)])
        assert await ob.make_batch(per, key.sign) is not None


def _delivery(ob: Outbox, url: str, pki: SimPki, metrics: Metrics) -> Delivery:
    return Delivery(ob, url, metrics=metrics,
                    verify=client_context(TlsConfig(ca_file=pki.ca_file)), timeout_s=10,
                    retry_initial_s=0.05, retry_max_s=0.2, idle_poll_s=0.1)


def _stored(ctx: PortalContext) -> dict[int, str]:
    with ctx.engine.connect() as c:
        return {int(r.seq): r.state for r in c.execute(
            sa.select(ingest_batches.c.seq, ingest_batches.c.state))}


def _count(ctx: PortalContext, table: sa.Table) -> int:
    with ctx.engine.connect() as c:
        return int(c.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


async def test_portal_down_then_up_nothing_lost_nothing_twice(tmp_path: Path) -> None:
    pki = SimPki.create(tmp_path / "pki")
    key = signer(3)
    ob = await _outbox(tmp_path, key, 4)
    with portal_context(f"sqlite:///{tmp_path / 'portal.db'}") as ctx:
        register(ctx.engine, GW, key)
        for seq in (1, 2):  # the portal's index has seen the anchors of batches 1 and 2
            b = await ob.batch(seq)
            assert b is not None
            anchor(ctx.engine, b.header, b.signature)
        portal = ServedPortal(ctx, pki)  # bound, not listening: down
        metrics = Metrics()
        delivery = _delivery(ob, portal.url, pki, metrics)
        task = asyncio.create_task(delivery.run())
        try:
            await until(lambda: metrics.counters["delivery_failures"] >= 3)
            assert metrics.components["delivery"].state == "failing"
            assert metrics.gauges["delivery_backlog"] == 4
            assert (await ob.delivery_stats()).delivered == 0
            await _more(ob, key, 1)  # batches go on being built meanwhile
            await asyncio.to_thread(portal.start)
            await until(lambda: metrics.gauges.get("delivery_backlog") == 0, timeout=30)
            await _more(ob, key, 2)  # and are delivered as they come
            delivery.wake.set()
            await until(lambda: metrics.counters["batches_delivered"] == 7
                        and metrics.gauges.get("delivery_backlog") == 0, timeout=30)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            portal.stop()
        st = await ob.delivery_stats()
        assert (st.backlog, st.delivered, st.refused, st.last_delivered_batch) == (0, 7, 0, 7)
        assert _stored(ctx) == {1: "verified", 2: "verified", **{s: "unanchored"
                                                                for s in range(3, 8)}}
        m = ctx.metrics.counters
        assert m["ingest_submissions"] == 7 and m["ingest_replays"] == 0  # nothing twice
        assert _count(ctx, records) == 40  # the records of the two anchored batches
        assert metrics.components["delivery"].state == "ok"
        assert "mrv_delivery_backlog 0" in prometheus_text(metrics)
        assert "mrv_batches_delivered_total 7" in prometheus_text(metrics)
    await ob.close()


_CHILD = """
import asyncio, sys
from pathlib import Path
from ledger_client import Delivery, Outbox
from mrv_core import Metrics, TlsConfig, client_context

async def main() -> None:
    ob = await Outbox.open(Path(sys.argv[1]), sys.argv[2])
    d = Delivery(ob, sys.argv[3], metrics=Metrics(),
                 verify=client_context(TlsConfig(ca_file=Path(sys.argv[4]))))
    await d.run()

asyncio.run(main())
"""


async def test_a_crash_between_post_and_marking_resends_and_the_portal_answers_once(
        tmp_path: Path) -> None:
    pki = SimPki.create(tmp_path / "pki")
    key = signer(4)
    ob = await _outbox(tmp_path, key, 3)
    await ob.close()
    with portal_context(f"sqlite:///{tmp_path / 'portal.db'}") as ctx:
        register(ctx.engine, GW, key)
        portal = ServedPortal(ctx, pki)
        await asyncio.to_thread(portal.start)
        try:
            # a delivery process killed (SIGKILL) right after its first POST was answered
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _CHILD, str(tmp_path / "outbox.sqlite"), GW, portal.url,
                str(pki.ca_file), env={**os.environ, "MRV_FAILPOINTS": "delivery.after_post=1",
                                       "PYTHONPATH": str(ROOT)})
            assert await asyncio.wait_for(proc.wait(), 60) == -9
            assert _stored(ctx) == {1: "unanchored"}  # the portal has it ...
            ob = await Outbox.open(tmp_path / "outbox.sqlite", GW)
            assert await ob.delivery(1) is None  # ... the outbox never marked it
            metrics = Metrics()
            delivery = _delivery(ob, portal.url, pki, metrics)
            async with delivery.client() as client:
                while await delivery.step(client):
                    pass
        finally:
            portal.stop()
        assert await ob.delivery(1) == ("delivered", None)
        assert (await ob.delivery_stats()).delivered == 3
        m = ctx.metrics.counters
        assert (m["ingest_submissions"], m["ingest_replays"]) == (4, 1)  # batch 1 re-sent
        assert _stored(ctx) == {1: "unanchored", 2: "unanchored", 3: "unanchored"}
        assert metrics.counters["batches_delivered"] == 3
    await ob.close()


async def test_refusals_are_recorded_and_never_retried_and_404_is_retried(
        tmp_path: Path) -> None:
    pki = SimPki.create(tmp_path / "pki")
    key = signer(5)
    ob = await _outbox(tmp_path, key, 3)
    with portal_context(f"sqlite:///{tmp_path / 'portal.db'}") as ctx:
        portal = ServedPortal(ctx, pki)
        await asyncio.to_thread(portal.start)
        metrics = Metrics()
        delivery = _delivery(ob, portal.url, pki, metrics)
        task = asyncio.create_task(delivery.run())
        try:
            # the portal's index has not seen the gateway yet: 404, tried again
            await until(lambda: ctx.metrics.counters["ingest_unknown_gateway"] >= 2)
            assert (await ob.delivery_stats()).backlog == 3
            b2 = await ob.batch(2)
            assert b2 is not None
            anchor(ctx.engine, b2.header, b2.signature, header_hash=b"\x09" * 32)  # 409
            register(ctx.engine, GW, key)
            await until(lambda: metrics.gauges.get("delivery_backlog") == 0, timeout=30)
            register(ctx.engine, GW, signer(6))  # the ledger now holds another key: 422
            await _more(ob, key, 2)
            delivery.wake.set()
            await until(lambda: metrics.counters["batches_refused"] == 3, timeout=30)
            await until(lambda: metrics.gauges.get("delivery_backlog") == 0)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        try:
            async with delivery.client() as client:  # nothing left to send, nothing re-sent
                assert await delivery.step(client) is False
        finally:
            portal.stop()
        st = await ob.delivery_stats()
        assert (st.delivered, st.refused, st.backlog) == (2, 3, 0)
        status, detail = await ob.delivery(2) or ("", "")
        assert status == "refused" and detail is not None and detail.startswith("409")
        status, detail = await ob.delivery(4) or ("", "")
        assert status == "refused" and detail is not None and "does not verify" in detail
        m = ctx.metrics.counters
        assert m["ingest_submissions"] - m["ingest_unknown_gateway"] == 5  # each once
        with ctx.engine.connect() as c:
            reasons = sorted(c.execute(sa.select(quarantine.c.seq, quarantine.c.reason)).all())
        assert reasons == [(2, "anchor-mismatch"), (4, "bad-signature"), (5, "bad-signature")]
        assert metrics.counters["batches_refused"] == 3
    await ob.close()


async def test_a_provisioned_gateway_delivers_to_the_portal_as_it_runs(
        tmp_path: Path, anvil: Anvil, plant: ModbusPlant) -> None:
    pki = SimPki.create(tmp_path / "pki")
    with portal_context(f"sqlite:///{tmp_path / 'portal.db'}") as ctx:
        portal = ServedPortal(ctx, pki)
        prov = await provision(
            tmp_path / "gw", anvil.url, devices=plant_devices(plant.port, interval_s=0.2),
            gateway_id=GW, batch_interval_s=0.5, max_records=50,
            extra={"portal": {"url": portal.url, "tls": {"ca_file": str(pki.ca_file)},
                              "retry": {"initial_s": 0.1, "max_s": 0.5}},
                   "gateway": {"sign_records": True}})
        await asyncio.to_thread(portal.start)
        cfg = load_config(prov.config)
        assert cfg.portal is not None and cfg.portal.tls is not None
        metrics = Metrics()
        stop = asyncio.Event()
        daemon = asyncio.create_task(run_daemon(cfg, stop=stop, metrics=metrics))

        async def verified() -> int:
            await asyncio.to_thread(index_chain, ctx.engine, prov)  # the portal's indexer
            return sum(1 for s in _stored(ctx).values() if s == "verified")

        try:
            for _ in range(600):
                if await verified() >= 3:
                    break
                await asyncio.sleep(0.1)
            assert await verified() >= 3
        finally:
            stop.set()
            await asyncio.wait_for(daemon, 60)
            portal.stop()
        assert metrics.counters["batches_delivered"] >= 3
        assert metrics.counters["batches_refused"] == 0
        assert ctx.metrics.counters["ingest_replays"] == 0
        with ctx.engine.connect() as c:
            rows = c.execute(sa.select(records.c.seq, records.c.record_signature,
                                       records.c.enterprise)).all()
        assert rows and all(r.record_signature for r in rows)
        seqs = sorted(r.seq for r in rows)
        assert seqs == list(range(1, len(seqs) + 1))  # verified batches 1..n, whole
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "mrv-gateway"), "status", str(prov.config),
            stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
        stdout, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0
        out = json.loads(stdout)
        d = out["delivery"]
        assert d["portal"] == portal.url and d["refused"] == 0
        assert d["delivered"] == metrics.counters["batches_delivered"]
        assert d["backlog"] + d["delivered"] == sum(out["batches"].values())
        # a clean stop hands the portal (which still answered) what was cut and anchored last
        assert d["backlog"] == 0, d


# -- the outbox's deliveries table, the config, batches that cannot be sent ---------------------


async def test_a_version_2_outbox_is_upgraded_in_place(tmp_path: Path) -> None:
    import sqlite3

    from ledger_client._outbox import SCHEMA_VERSION

    key = signer(7)
    ob = await _outbox(tmp_path, key, 2)
    await ob.close()
    db = sqlite3.connect(tmp_path / "outbox.sqlite")  # as version 2 left it
    db.execute("DROP TABLE deliveries")
    db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    ob = await Outbox.open(tmp_path / "outbox.sqlite", GW)
    try:
        st = await ob.delivery_stats()
        assert (st.backlog, st.delivered) == (2, 0)  # every batch waits for its delivery
        assert await ob.undelivered() == [1, 2]
        assert await ob.mark_delivered(1, "delivered") is True
        assert await ob.mark_delivered(1, "refused", "again") is False  # once only
        assert await ob.delivery(1) == ("delivered", None)
        assert await ob.undelivered() == [2]
    finally:
        await ob.close()
    db = sqlite3.connect(tmp_path / "outbox.sqlite")
    assert SCHEMA_VERSION == 3
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("3",)
    db.close()


async def test_pruning_keeps_what_the_portal_has_not_answered(tmp_path: Path) -> None:
    key = signer(8)
    ob = await _outbox(tmp_path, key, 3, per=10)
    try:
        for seq in (1, 2, 3):
            await ob.mark_confirmed(seq, seq)
        await ob.mark_delivered(1, "delivered")
        await ob.mark_delivered(3, "delivered")  # 2 not yet: 3 is kept behind it
        assert await ob.prune_anchored(10, delivered_only=True) == 10
        assert await ob.record(10) is None and await ob.record(11) is not None
        assert await ob.prune_anchored(10, delivered_only=True) == 0
        await ob.mark_delivered(2, "refused", "422")
        assert await ob.prune_anchored(10, delivered_only=True) == 20
    finally:
        await ob.close()


async def test_a_batch_that_cannot_be_sent_is_recorded_not_retried(tmp_path: Path) -> None:
    pki = SimPki.create(tmp_path / "pki")
    key = signer(9)
    ob = await _outbox(tmp_path, key, 2, per=30)
    try:
        await ob.mark_confirmed(1, 1)
        await ob.prune_anchored(1)  # batch 1's records pruned before it was delivered
        metrics = Metrics()
        # nothing listens there: a POST would fail; neither batch is ever POSTed
        d = _delivery(ob, "https://127.0.0.1:9", pki, metrics)
        d.max_body_bytes = 2048  # batch 2's submission is larger
        async with d.client() as client:
            assert await d.step(client) and await d.step(client)
            assert await d.step(client) is False
        s1, why1 = await ob.delivery(1) or ("", "")
        s2, why2 = await ob.delivery(2) or ("", "")
        assert s1 == "unavailable" and why1 is not None and "pruned" in why1
        assert s2 == "unavailable" and why2 is not None and "max_body_bytes" in why2
        assert metrics.counters["batches_undeliverable"] == 2
        assert metrics.counters["delivery_failures"] == 0
    finally:
        await ob.close()


def test_the_portal_section_of_the_gateway_config(tmp_path: Path) -> None:
    import yaml

    from config import ConfigError, parse_config

    pki = SimPki.create(tmp_path / "pki")
    examples = ROOT / "config/examples"
    base = yaml.safe_load((examples / "plant-a.yaml").read_text())
    base.pop("portal", None)

    def parse(**sections: object) -> object:
        return parse_config(yaml.safe_dump({**base, **sections}), base_dir=examples)

    import config._schema
    import ledger_client

    assert config._schema.MAX_SUBMISSION_RECORDS == ledger_client.MAX_SUBMISSION_RECORDS
    assert config._schema.DEFAULT_MAX_BODY_BYTES == ledger_client.DEFAULT_MAX_BODY_BYTES
    assert parse().portal is None  # no section: no delivery, as before
    cfg = parse(portal={"url": "https://portal.example:8600", "tls": {"ca_file": str(pki.ca_file)},
                        "timeout_s": 5})
    assert cfg.portal is not None and cfg.portal.tls is not None  # type: ignore[attr-defined]
    assert cfg.portal.tls.ca_file == pki.ca_file  # type: ignore[attr-defined]
    assert cfg.portal.max_body_bytes == 32 << 20  # type: ignore[attr-defined]
    assert parse(portal={"url": "http://127.0.0.1:8600"}).portal is not None  # type: ignore[attr-defined]
    for sections, words in [
        ({"portal": {"url": "http://portal.example"}}, "loopback"),
        ({"portal": {"url": "ftp://x"}}, "portal.url"),
        ({"portal": {"url": "https://x", "tls": {"ca_file": "/nonexistent.pem"}}}, "cannot read"),
        ({"portal": {"url": "https://x", "retry": {"initial_s": 5, "max_s": 1}}}, "max_s"),
        ({"portal": {"url": "https://x"}, "batching": {"max_records": 20_001}}, "20,000"),
    ]:
        try:
            parse(**sections)
        except ConfigError as e:
            assert words in str(e), (sections, str(e))
        else:
            raise AssertionError(f"accepted: {sections}")


def _postgres_down(pg: Postgres) -> None:
    """Stop the server (a fast shutdown), keeping its data directory."""
    assert pg.proc is not None
    pg.proc.send_signal(signal.SIGINT)
    pg.proc.wait(30)


def _postgres_up(pg: Postgres) -> None:
    """Start the server again on the same data directory and port."""
    assert pg.dir is not None
    pg.proc = subprocess.Popen(
        pg._as_user([str(pg_bindir() / "postgres"), "-D", str(pg.dir / "data"), "-p",
                     str(pg.port), "-h", "127.0.0.1", "-k", str(pg.dir / "sock"),
                     "-c", "fsync=off"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        cwd=pg.dir)


async def test_the_portals_database_down_then_up_nothing_lost(tmp_path: Path) -> None:
    """The portal's PostgreSQL stops: submissions get 503 and the gateway retries; the
    verifier worker waits; when the database is back everything is stored once and the
    batches that wait for their anchor are verified when it is indexed."""
    pki = SimPki.create(tmp_path / "pki")
    key = signer(10)
    ob = await _outbox(tmp_path, key, 2)
    with Postgres() as pg, portal_context(pg.create_database("ingest_down")) as ctx:
        register(ctx.engine, GW, key)
        portal = ServedPortal(ctx, pki)
        await asyncio.to_thread(portal.start)
        metrics = Metrics()
        delivery = _delivery(ob, portal.url, pki, metrics)
        task = asyncio.create_task(delivery.run())
        try:
            await until(lambda: metrics.gauges.get("delivery_backlog") == 0, timeout=30)
            await asyncio.to_thread(_postgres_down, pg)
            await _more(ob, key, 3)
            delivery.wake.set()
            await until(lambda: ctx.metrics.counters["ingest_db_unavailable"] >= 2, timeout=30)
            assert metrics.components["delivery"].state == "failing"
            assert (await ob.delivery_stats()).backlog == 3
            await until(lambda: metrics.gauges.get("delivery_backlog") == 3)
            await asyncio.to_thread(_postgres_up, pg)
            await until(lambda: metrics.gauges.get("delivery_backlog") == 0, timeout=60)
            for seq in range(1, 6):  # the indexer sees the anchors: the worker verifies
                b = await ob.batch(seq)
                assert b is not None
                await asyncio.to_thread(anchor, ctx.engine, b.header, b.signature)
            await until(lambda: set(_stored(ctx).values()) == {"verified"}, timeout=30)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            portal.stop()
        assert sorted(_stored(ctx)) == [1, 2, 3, 4, 5]
        assert _count(ctx, records) == 100
        assert (await ob.delivery_stats()).delivered == 5
        assert ctx.metrics.counters["ingest_verified_later"] == 5
    await ob.close()
