"""Poison readings: a reading the outbox cannot store is quarantined as a dead letter (with a
bounded dump of its fields and the reason), acknowledged, counted and shown on /health; the
others are committed with gapless seqs and the writer never restarts over it."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleaning import Cleaner
from config import load_config
from gateway._daemon import Pipeline, run_daemon, supervise
from gateway._health import health_body, prometheus_text
from ledger_client import Outbox
from ledger_client._format import record_leaf
from ledger_client._outbox import DEAD_LETTER_RAW_MAX, SCHEMA_VERSION
from ledger_client._signing import Signer
from mrv_core._metrics import Metrics
from mrv_core._records import Reading
from simulator import Anvil, Mosquitto, Provisioned, free_port, provision
from tests.support import until

INT64_MAX = 2**63 - 1
#: 9999-12-31T23:59:59Z in ns: beyond int64, so SQLite cannot store it (the issue's case)
YEAR_9999_NS = 253_402_300_799 * 10**9


def _r(i: int, **kw: object) -> Reading:
    base: dict[str, object] = {"point_id": f"p{i % 3}", "ts_ns": 1_000 + i, "value": float(i),
                               "unit": "kW", "source": "mqtt:stack"}
    base.update(kw)
    return Reading(**base)  # type: ignore[arg-type]


#: Readings no outbox can store, each for a different reason.
POISON: list[Callable[[int], Reading]] = [
    lambda i: _r(i, ts_ns=YEAR_9999_NS),                  # SQLite INTEGER overflow
    lambda i: _r(i, ts_ns=-(2**70)),                      # the other side
    lambda i: _r(i, point_id="p\ud800"),                  # not encodable as UTF-8
    lambda i: _r(i, value="12.5"),                        # not a float at all
    lambda i: _r(i, seq=0, ts_ns=1.5),                    # a float where an int belongs
]


@pytest.mark.parametrize("bad", POISON)
def test_each_poison_reading_really_fails_a_plain_commit(tmp_path: Path,
                                                         bad: Callable[[int], Reading]) -> None:
    """Independent of our code: the plain append (what the writer did before) fails on it."""
    async def go() -> None:
        ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
        try:
            with pytest.raises(Exception) as e:  # each fails its own way
                await ob.append([_r(0), bad(1), _r(2)])
            assert not isinstance(e.value, sqlite3.OperationalError)
            assert await ob.records(1, 10) == []  # nothing of the group was committed
        finally:
            await ob.close()
    asyncio.run(go())


@pytest.mark.parametrize("signed", [False, True])
async def test_poison_records_are_quarantined_and_the_rest_committed_in_order(
        tmp_path: Path, signed: bool) -> None:
    signer = Signer(b"\x02" * 32)
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw",
                           sign_records=signer.sign if signed else None)
    try:
        recs: list[Reading] = []
        bad_at = {3: 0, 4: 1, 50: 2, 51: 3, 99: 4, 100: 0}
        for i in range(101):
            recs.append(POISON[bad_at[i]](i) if i in bad_at else _r(i))
        committed, sigs, dead = await ob.append_quarantining(recs, now_ns=42)
        good = [r for i, r in enumerate(recs) if i not in bad_at]
        assert [c.seq for c in committed] == list(range(1, len(good) + 1))  # gapless
        assert [(c.point_id, c.ts_ns, c.value) for c in committed] == [
            (r.point_id, r.ts_ns, r.value) for r in good]  # in submission order
        assert (sigs is not None) == signed and (not signed or len(sigs or []) == len(good))
        back = await ob.records(1, len(good))
        assert [record_leaf(b) for b in back] == [record_leaf(c) for c in committed]
        assert len(dead) == len(bad_at)
        assert {d.quarantined_ns for d in dead} == {42}
        stored = await ob.dead_letters()
        assert sorted(d.id for d in stored) == sorted(d.id for d in dead)
        by_ts = {json.loads(d.raw)["ts_ns"] for d in stored}
        assert str(YEAR_9999_NS) in by_ts and str(1.5) in by_ts and str(-(2**70)) in by_ts
        for d in stored:
            assert d.source == "mqtt:stack" and d.reason and d.raw_len == len(d.raw)
        st = await ob.stats()
        assert st.records == len(good) and st.dead_letters == 6
        assert st.dead_letters_unreviewed == 6
        # the next commit continues the seqs
        more, _, none = await ob.append_quarantining([_r(200)], now_ns=43)
        assert more[0].seq == len(good) + 1 and none == []
        assert await ob.mark_dead_letters_reviewed(max(d.id for d in stored), 44) == 6
        assert (await ob.stats()).dead_letters_unreviewed == 0
    finally:
        await ob.close()


async def test_dead_letter_raw_is_bounded(tmp_path: Path) -> None:
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    try:
        huge = _r(0, ts_ns=YEAR_9999_NS, point_id="x" * 100_000)
        _, _, dead = await ob.append_quarantining([huge], now_ns=1)
        assert len(dead[0].raw) == DEAD_LETTER_RAW_MAX and dead[0].raw_len > 100_000
        d = await ob.add_dead_letter(source="s\udcff", point_id="p", reason="r",
                                     raw=b"\xff" * 10_000, now_ns=2)
        assert len(d.raw) == DEAD_LETTER_RAW_MAX and d.raw_len == 10_000
        assert len(await ob.dead_letters()) == 2
    finally:
        await ob.close()


async def test_a_version_1_outbox_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    ob = await Outbox.open(path, "gw")
    await ob.append([_r(0)])
    await ob.close()
    db = sqlite3.connect(path)  # as version 1 left it: no dead_letters table
    db.execute("DROP TABLE dead_letters")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    ob = await Outbox.open(path, "gw")
    try:
        _, _, dead = await ob.append_quarantining([_r(1), _r(2, ts_ns=YEAR_9999_NS)], now_ns=5)
        assert len(dead) == 1 and (await ob.stats()).records == 2
    finally:
        await ob.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
        str(SCHEMA_VERSION),)
    db.close()


async def test_the_running_writer_quarantines_acks_counts_and_degrades(tmp_path: Path) -> None:
    """Through the daemon's real queue and supervised writer task: a poison reading among
    good ones; every submission is acknowledged, the writer never restarts, later readings
    keep flowing, /health is degraded naming the source and point."""
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    m = Metrics()
    committed: list[int] = []
    pipe = Pipeline(ob, Cleaner({}), m, 4, committed.append, clock=lambda: 7)
    writer = asyncio.create_task(supervise("writer", pipe.run, m))
    acked: list[int] = []
    try:
        for i in range(30):
            bad = i % 10 == 5
            r = _r(i, ts_ns=YEAR_9999_NS, source="mqtt:stack-sensors",
                   point_id="stack.co2") if bad else _r(i)
            await pipe.submit([r], on_commit=lambda i=i: acked.append(i))  # type: ignore[misc]
        await until(lambda: len(acked) == 30)
        assert sorted(acked) == list(range(30))  # each message acknowledged exactly once
        assert m.counters["task_restarts"] == 0 and not writer.done()
        assert m.counters["dead_letters"] == 3 and m.counters["readings_accepted"] == 27
        assert sum(committed) == 27
        st = await ob.stats()
        assert st.records == 27 and st.dead_letters == 3
        code, body = await health_body(m, ob)
        assert code == 200 and body["status"] == "degraded"
        assert body["degraded"] == ["dead_letters"]
        detail = m.component("dead_letters").detail
        assert "mqtt:stack-sensors" in detail and "stack.co2" in detail and "3 unreviewed" in detail
        assert body["outbox"]["dead_letters"] == 3  # type: ignore[index]
        assert "mrv_dead_letters_total 3" in prometheus_text(m)
        seqs = [r.seq for r in await ob.records(1, 100)]
        assert seqs == list(range(1, 28))
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await ob.close()


async def test_a_database_error_is_not_quarantined(tmp_path: Path) -> None:
    """A failure of the database itself (here: a read-only file) is raised, never turned into
    dead letters: the records were not at fault and are retried."""
    path = tmp_path / "o.sqlite"
    ob = await Outbox.open(path, "gw")
    await ob._exec("PRAGMA query_only = ON")  # every write now fails as the database's fault
    try:
        with pytest.raises(sqlite3.OperationalError):
            await ob.append_quarantining([_r(0), _r(1)], now_ns=1)
        await ob._exec("PRAGMA query_only = OFF")
        assert (await ob.stats()).dead_letters == 0
    finally:
        await ob.close()


async def test_a_poison_mqtt_message_never_stalls_the_broker(
        tmp_path: Path, anvil: Anvil, mosquitto: Mosquitto,
        caplog: pytest.LogCaptureFixture) -> None:
    """Issue 11, item 4, end to end: the daemon with a real Mosquitto. A message timestamped in
    year 9999 (QoS 1), then 40 good ones. Before: the writer restarted, the message was never
    acknowledged, every later PUBACK queued behind it and the broker stopped delivering after
    its in-flight window (about 20). Now every good message is committed and acknowledged,
    and the poison one is accounted for (a dead letter here; a parser that refuses such a time
    counts it as malformed instead); the writer never restarted. Then: restarts."""
    port = free_port()
    p = await provision(tmp_path / "gw", anvil.url, devices=[{
        "driver": "mqtt", "name": "stack-sensors", "host": "127.0.0.1", "port": mosquitto.port,
        "client_id": "gw-dead-letters", "backoff_initial_s": 0.1, "backoff_max_s": 0.5,
        "points": [{"id": "stack.co2", "topic": "plant/stack/co2", "value": "v",
                    "timestamp": "ts", "unit": "%"}]}],
        batch_interval_s=0.5, health_listen=f"127.0.0.1:{port}")
    cfg = load_config(p.config)
    stop, m = asyncio.Event(), Metrics()
    caplog.set_level(logging.INFO, logger="mrv.daemon")
    task = asyncio.create_task(run_daemon(cfg, stop=stop, metrics=m, acceptance_log_s=0.2))
    try:
        # "ok" is set once the broker's SUBACK is in: subscribed
        await until(lambda: m.component("device:stack-sensors").state == "ok", 20)
        now_ms = time.time_ns() // 10**6
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="pub-poison") as c:
            await c.publish("plant/stack/co2", json.dumps(
                {"v": 1.0, "ts": "9999-12-31T23:59:59Z"}), qos=1)
            for i in range(40):
                await c.publish("plant/stack/co2", json.dumps({"v": 10.0 + i,
                                                               "ts": now_ms + i}), qos=1)
        await until(lambda: m.counters["readings_accepted"] >= 40, 30)
        # refused at parse (its time is outside the record format), and kept as a dead
        # letter with its raw bytes; acknowledged, so the 40 after it flow
        assert (m.counters["mqtt_malformed"], m.counters["dead_letters"]) == (1, 1)
        assert m.counters["task_restarts"] == 0
        health = await _get(port, "/health")
        assert health["status"] == "degraded" and "mqtt:stack-sensors" in str(
            health["components"]["dead_letters"])  # type: ignore[index]
        await until(lambda: any("reading(s) committed" in r.getMessage()
                                for r in caplog.records if r.levelno == logging.INFO), 5)
    finally:
        stop.set()
        await task
    ob = await Outbox.open(cfg.outbox_path(), cfg.gateway.id)
    try:
        values = sorted(r.value for r in await ob.records(1, 1000)  # type: ignore[union-attr]
                        if r.point_id == "stack.co2" and r.quality == 0)  # type: ignore[union-attr]
    finally:
        await ob.close()
    assert values == [10.0 + i for i in range(40)]  # every good one, once
    ob = await Outbox.open(cfg.outbox_path(), cfg.gateway.id)
    try:
        [kept] = await ob.dead_letters()
    finally:
        await ob.close()
    assert (kept.source, kept.point_id) == ("mqtt:stack-sensors", "plant/stack/co2")
    assert kept.raw == json.dumps({"v": 1.0, "ts": "9999-12-31T23:59:59Z"}).encode()
    assert "outside" in kept.reason
    await _restarts_stay_degraded_until_reviewed(p, m.counters["dead_letters"])


async def _restarts_stay_degraded_until_reviewed(p: Provisioned, before: int) -> None:
    """Dead letters survive a restart: the restarted daemon starts degraded, naming the source;
    `status` shows the count; `dead-letters --reviewed ID` ends the degraded state. (Part of
    the test above: one provisioned ledger.)"""
    import subprocess
    import sys

    cfg = load_config(p.config)
    ob = await Outbox.open(cfg.outbox_path(), cfg.gateway.id)
    try:
        _, _, dead = await ob.append_quarantining(
            [_r(0, ts_ns=YEAR_9999_NS, source="mqtt:stack-sensors", point_id="stack.co2")],
            now_ns=1)
    finally:
        await ob.close()

    async def health_after_start() -> dict[str, object]:
        stop, m = asyncio.Event(), Metrics()
        task = asyncio.create_task(run_daemon(cfg, stop=stop, metrics=m))
        try:
            await until(lambda: m.component("device:stack-sensors").state == "ok"
                        or task.done(), 20)
            ob = await Outbox.open(cfg.outbox_path(), cfg.gateway.id)  # a second reader (WAL)
            try:
                _, body = await health_body(m, ob)
            finally:
                await ob.close()
            return body
        finally:
            stop.set()
            await task

    body = await health_after_start()
    assert body["status"] == "degraded" and body["degraded"] == ["dead_letters"]
    assert "mqtt:stack-sensors" in str(body["components"])
    cli = [sys.executable, "-m", "gateway._cli"]
    st = json.loads(subprocess.run([*cli, "status", str(p.config)], capture_output=True,
                                   text=True, check=True).stdout)
    assert st["dead_letters"] == st["dead_letters_unreviewed"] == before + 1
    listed = json.loads(subprocess.run([*cli, "dead-letters", str(p.config)],
                                       capture_output=True, text=True, check=True).stdout)
    assert listed[0]["id"] == dead[0].id and str(YEAR_9999_NS) in listed[0]["raw"]
    subprocess.run([*cli, "dead-letters", str(p.config), "--reviewed", str(dead[0].id)],
                   check=True, capture_output=True)
    body = await health_after_start()
    assert body["status"] == "ok" and body["degraded"] == []


async def _get(port: int, path: str) -> dict[str, object]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])  # type: ignore[no-any-return]


async def test_a_review_ends_the_degraded_state_of_a_running_gateway(tmp_path: Path) -> None:
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    m = Metrics()
    pipe = Pipeline(ob, Cleaner({}), m, 4, lambda n: None)
    try:
        await pipe.commit([_r(0, ts_ns=YEAR_9999_NS)], [])
        await pipe.commit([_r(1, ts_ns=YEAR_9999_NS)], [])
        assert "2 unreviewed" in m.component("dead_letters").detail
        code, body = await health_body(m, ob)
        assert (code, body["status"]) == (200, "degraded")
        newest = (await ob.dead_letters(limit=1))[0]
        assert await ob.mark_dead_letters_reviewed(newest.id, 9) == 2  # as the CLI does
        code, body = await health_body(m, ob)
        assert (code, body["status"]) == (200, "ok")
        assert m.component("dead_letters").state == "ok"
    finally:
        await ob.close()


@pytest.mark.parametrize("bad", POISON)
async def test_the_checks_never_see_a_poison_reading(tmp_path: Path,
                                                     bad: Callable[[int], Reading]) -> None:
    """With checks configured on the point (whose int64/float64 arrays would overflow on such
    a reading), the writer screens it out first: dead letter, the rest cleaned and committed."""
    from cleaning import ChecksConfig

    checks = ChecksConfig.model_validate({"range": {"min": -1e9, "max": 1e9},
                                          "timestamps": {"max_future_s": 3_155_760_000}})
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    m = Metrics()
    pipe = Pipeline(ob, Cleaner({f"p{i}": checks for i in range(3)}), m, 4, lambda n: None)
    try:
        poison = bad(1)
        await pipe.commit([_r(0), poison, _r(2)], [])
        assert m.counters["dead_letters"] == 1 and m.counters["readings_accepted"] == 2
        assert m.counters["cleaning_failures"] == 0
        (d,) = await ob.dead_letters()
        assert d.point_id.startswith(str(poison.point_id)[:1]) and d.reason
        assert [r.seq for r in await ob.records(1, 10)] == [1, 2]
    finally:
        await ob.close()


async def test_a_failure_of_the_checks_loses_nothing(tmp_path: Path) -> None:
    """A bug in the checks never drops readings or stops the writer: they are committed as
    they came, the failure is counted and `cleaning` turns degraded."""
    class Broken:
        def clean(self, rs: list[Reading], now_ns: int) -> list[Reading]:
            raise IndexError("a bug")

    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    m = Metrics()
    pipe = Pipeline(ob, Broken(), m, 4, lambda n: None)  # type: ignore[arg-type]
    acked: list[int] = []
    try:
        await pipe.commit([_r(0), _r(1)], [lambda: acked.append(1)])
        assert acked == [1] and m.counters["readings_accepted"] == 2
        assert m.counters["cleaning_failures"] == 1
        assert m.component("cleaning").state == "degraded"
        assert [r.quality for r in await ob.records(1, 2)] == [0, 0]  # type: ignore[union-attr]
    finally:
        await ob.close()


async def test_the_acceptance_line_is_info_and_counts_the_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    from gateway._daemon import log_acceptance

    caplog.set_level(logging.INFO, logger="mrv.daemon")
    m = Metrics()
    m.inc("readings_accepted", 100)  # before the first interval: counted in "in all" only
    task = asyncio.create_task(log_acceptance(m, 0.05))
    await asyncio.sleep(0)  # one step of the task: it has read the counters (no timing)
    try:
        m.inc("readings_accepted", 7)
        m.inc("batches_anchored", 2)
        m.inc("records_anchored", 50)
        m.inc("dead_letters", 1)
        await until(lambda: any("committed" in r.getMessage() for r in caplog.records), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    line = next(r for r in caplog.records if "committed" in r.getMessage())
    assert line.levelno == logging.INFO
    assert line.getMessage() == (
        "in the last 0.05 s: 7 reading(s) committed (107 in all), 2 batch(es) anchored (50 "
        "record(s); 2 batches in all), 1 dead letter(s) (1 in all)")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.just(-1), st.integers(0, len(POISON) - 1)), min_size=1, max_size=40),
       st.booleans())
def test_any_mix_commits_exactly_the_good_in_order(tmp_path_factory: pytest.TempPathFactory,
                                                   kinds: list[int], chunked: bool) -> None:
    """Property: whatever the mix and positions of poison readings, the good ones are committed
    once each, in order, with seqs 1..n, and each poison one is a dead letter."""
    recs = [_r(i) if k < 0 else POISON[k](i) for i, k in enumerate(kinds)]
    good = [r for r, k in zip(recs, kinds, strict=True) if k < 0]

    async def go() -> None:
        ob = await Outbox.open(tmp_path_factory.mktemp("p") / "o.sqlite", "gw")
        try:
            parts = [recs[i:i + 7] for i in range(0, len(recs), 7)] if chunked else [recs]
            for part in parts:
                await ob.append_quarantining(part, now_ns=1)
            back = await ob.records(1, 1000)
            assert [(b.seq, b.ts_ns, b.value) for b in back] == [  # type: ignore[union-attr]
                (i + 1, r.ts_ns, r.value) for i, r in enumerate(good)]
            assert (await ob.stats()).dead_letters == len(recs) - len(good)
        finally:
            await ob.close()
    asyncio.run(go())
