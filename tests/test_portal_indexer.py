"""The portal's chain indexer against a real anvil, on SQLite and PostgreSQL: after the demo's
ledger scenario every model table equals the contracts' getters; a data-access revocation shows
after one step; killed at random points and restarted it gives the tables of a one-shot index;
a node that goes down and comes back; re-applying a range changes nothing; confirmations are
respected; values that do not fit are anomalies, never rounded."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from eth_abi.abi import encode as abi_encode

from ledger_client import FindingKind, Mrv, keccak256, read_address_book, write_address_book
from portal import PortalContext, build_context
from portal._cli import main as cli_main
from portal._config import ChainSection, DatabaseSection, PortalConfig
from portal._db import all_tables
from portal._errors import ChainUnavailable
from portal._event_tables import EVENTS, idx_anomalies
from portal._indexer import (
    ChainBehind,
    Indexer,
    RawLog,
    ReorgDetected,
    Rpc,
    apply_log,
    events_of,
    indexer_worker,
    read_checkpoint,
)
from simulator import Anvil
from simulator._anvil import rpc
from simulator._scenario import run_scenario

from .support import until
from .test_contracts_support import fresh_system

ROOT = Path(__file__).resolve().parent.parent
ZERO = "0x" + "00" * 20
T = 1_000_000


def _ctx(db_url: str, book: Path, rpc_url: str, **chain: Any) -> PortalContext:
    cfg = PortalConfig(database=DatabaseSection(url=db_url),
                       chain=ChainSection(address_book=book, rpc_url=rpc_url, **chain))
    return build_context(cfg, with_secret=False)


def _head(url: str) -> int:
    return int(str(rpc(url, "eth_blockNumber")), 16)


# -- the scenario, once per module (the chain is only read afterwards) ------------------------


@dataclass
class Played:
    book: Path
    start_block: int
    end_block: int  # the chain's head when the scenario was over
    accounts: list[str]  # every account the scenario used, lowercase


async def _play(url: str, work: Path) -> Played:
    start = _head(url) + 1
    s = await run_scenario(url, work)
    m = s.mrv
    try:
        # beyond the demo: the paths it does not take
        a, b, fin = s.ent_a.address, s.ent_b.address, s.finance.address
        until_s = int((await m.chain.w3.eth.get_block("latest"))["timestamp"]) + 86_400
        await m.grant_data_access(s.ent_a, fin, until_s)
        await m.grant_data_access(s.ent_b, fin, until_s + 1)
        await m.revoke_data_access(s.ent_b, fin)
        await m.suspend(s.government, b, "late report")
        await m.reinstate(s.government, b)
        p2 = await m.define_period(s.government, 1_735_689_600 * 10**9, 1_767_225_600 * 10**9)
        await m.allocate(s.government, a, p2, 50 * T)
        await m.transfer(s.ent_a, p2, b, 5 * T)
        oid = await m.offer(s.ent_a, p2, 10 * T, 8_000, buyer=b)
        await m.accept(s.ent_b, oid, 4 * T)
        await m.cancel(s.ent_a, oid)
        fid = await m.file_finding(s.auditor, a, p2, FindingKind.ABNORMAL, 1, keccak256(b"x"),
                                   "https://evidence.example/A/2")
        await m.reject_finding(s.government, fid, "meter was calibrated")
        await m.set_penalty_rate(s.government, FindingKind.ABNORMAL, 15_000)
        await m.reserve_gateway_id(s.government, "plant-a-gw2", b)
        await m.reserve_gateway_id(s.government, "plant-a-gw2", a)  # moved before registration
        await m.revoke_gateway(s.ent_a, s.gw_a.gateway_id)
        await m.grant(s.regulator, "auditor", s.gw_a.account.address)
        await m.revoke_role(s.regulator, "auditor", s.gw_a.account.address)
        accts = [x.address for x in (s.regulator, s.government, s.auditor, s.finance, s.ent_a,
                                     s.ent_b, s.gw_a.account, s.gw_b.account)]
        accts += list(m.addresses.values())
    finally:
        await m.close()
    return Played(work / "address-book.json", start, _head(url),
                  [x.lower() for x in accts])


@pytest.fixture(scope="module")
def played(anvil: Anvil, tmp_path_factory: pytest.TempPathFactory) -> Played:
    return asyncio.run(_play(anvil.url, tmp_path_factory.mktemp("scenario")))


# -- the contracts' getters, table by table ------------------------------------------------------


def _h(b: Any) -> str:
    return "0x" + bytes(b).hex()


def _a(x: Any) -> str:
    return str(x).lower()


async def chain_tables(m: Mrv, accounts: list[str]) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    """What each model table must hold, read from the getters (keys enumerated on-chain where
    the contracts can, else every candidate key with a non-zero answer)."""
    reg, led, alw, ver, mkt = m.registry.functions, m.ledger.functions, \
        m.allowances.functions, m.verification.functions, m.market.functions
    cs = m.chain.w3.to_checksum_address
    out: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}

    ents = [_a(await m.call(reg.enterpriseAt(i)))
            for i in range(await m.call(reg.enterpriseCount()))]
    t = out["enterprises"] = {}
    for e in ents:
        r = await m.call(reg.enterprise(cs(e)))
        t[(e,)] = {"status": r[1], "certified_at": r[2], "credit_code": r[3], "name": r[4],
                   "industry_code": r[5], "region": r[6]}

    keys = [bytes(await m.call(reg.gatewayKeyAt(i)))
            for i in range(await m.call(reg.gatewayCount()))]
    t = out["gateways"] = {}
    for k in keys:
        g = await m.call(reg.gateway(k))
        t[(_h(k),)] = {"gateway_id": g[0], "enterprise": _a(g[1]), "active": g[2],
                       "registered_at": g[3], "sender": _a(g[4]), "signing_key": _h(g[5]),
                       "reserved_for": _a(await m.call(reg.gatewayReservedFor(k)))}

    n_periods = await m.call(reg.periodCount())
    t = out["periods"] = {}
    for i in range(1, n_periods + 1):
        p = await m.call(reg.period(i))
        t[(i,)] = {"start_ns": p[0], "end_ns": p[1], "closed": p[2]}

    roles = {"admin": b"\x00" * 32, "government": keccak256(b"GOVERNMENT_ROLE"),
             "auditor": keccak256(b"AUDITOR_ROLE"), "finance": keccak256(b"FINANCE_ROLE"),
             "market_contract": keccak256(b"MARKET_CONTRACT_ROLE"),
             "verification_contract": keccak256(b"VERIFICATION_CONTRACT_ROLE")}
    t = out["roles"] = {}
    for name, rid in roles.items():
        for acct in accounts:
            if await m.call(reg.hasRole(rid, cs(acct))):
                t[(name, acct)] = {}

    t = out["data_access"] = {}
    for e in ents:
        for f in accounts:
            u = await m.call(reg.dataAccessUntil(cs(e), cs(f)))
            if u:
                t[(e, f)] = {"until_at": u}

    t = out["batches"] = {}
    for k in keys:
        for seq in range(1, await m.call(led.lastSeq(k)) + 1):
            b = await m.call(led.batch(k, seq))
            t[(_h(k), seq)] = {"header_hash": _h(b[0]), "root": _h(b[1]), "count": b[2],
                               "first_record_seq": b[3], "last_record_seq": b[4],
                               "block_number": b[5], "period": b[6]}

    t = out["emissions"] = {}
    for e in ents:
        for p in range(0, n_periods + 1):
            x = await m.call(led.emissionsOf(cs(e), p))
            if any(x):
                t[(e, p)] = {"scope1_g": x[0], "scope2_g": x[1], "scope3_g": x[2],
                             "batches": x[3]}

    t = out["accounts"] = {}
    for e in ents:
        for p in range(1, n_periods + 1):
            x = await m.call(alw.accountOf(cs(e), p))
            if any(x):
                t[(e, p)] = {"allocated_g": x[0], "surrendered_g": x[1], "verified_g": x[2],
                             "penalty_g": x[3], "penalty_deducted_g": x[4],
                             "has_verified": x[5], "settled": x[6], "settled_status": x[7]}

    t = out["balances"] = {}
    for p in range(0, n_periods + 1):
        for acct in accounts:
            x = await m.call(alw.balanceOf(p, cs(acct)))
            if x:
                t[(p, acct)] = {"amount_g": x}

    t = out["benchmarks"] = {}
    for p in range(1, n_periods + 1):
        for code in ("D4411", "C3011"):
            x = await m.call(alw.benchmark(p, code))
            if x:
                t[(p, code)] = {"grams_per_unit": x}

    t = out["reports"] = {}
    for i in range(1, await m.call(ver.reportCount()) + 1):
        r = await m.call(ver.report(i))
        t[(i,)] = {"enterprise": _a(r[0]), "period": r[1], "auditor": _a(r[2]),
                   "filed_at": r[3], "verified_g": r[4], "reported_g": r[5],
                   "report_hash": _h(r[6]), "uri": r[7]}

    t = out["findings"] = {}
    for i in range(1, await m.call(ver.findingCount()) + 1):
        f = await m.call(ver.finding(i))
        t[(i,)] = {"enterprise": _a(f[0]), "period": f[1], "kind": f[2], "status": f[3],
                   "auditor": _a(f[4]), "filed_at": f[5], "corrected_g": f[6],
                   "previous_g": f[7], "penalty_g": f[8], "decided_by": _a(f[9]),
                   "decided_at": f[10], "evidence_hash": _h(f[11]), "gateway_key": _h(f[12]),
                   "batch_seq": f[13], "record_leaf": _h(f[14]), "evidence_uri": f[15],
                   "decision_note": f[16]}

    out["penalty_rates"] = {(k,): {"bps": await m.call(ver.penaltyRate(k))} for k in (1, 2)}

    t = out["offers"] = {}
    for i in range(1, await m.call(mkt.offerCount()) + 1):
        o = await m.call(mkt.getOffer(i))
        t[(i,)] = {"seller": _a(o[0]), "period": o[1], "status": o[2], "created_at": o[3],
                   "buyer": _a(o[4]), "amount_g": o[5], "remaining_g": o[6],
                   "price_per_tonne": o[7]}

    t = out["trades"] = {}
    for i in range(1, await m.call(mkt.tradeCount()) + 1):
        x = await m.call(mkt.trade(i))
        t[(i,)] = {"offer_id": x[0], "seller": _a(x[1]), "period": x[2], "traded_at": x[3],
                   "buyer": _a(x[4]), "amount_g": x[5], "price_per_tonne": x[6],
                   "value": x[7], "payment_ref": _h(x[8]), "settled_by": _a(x[9])}
    return out


def db_tables(engine: sa.Engine, names: list[str]) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    md = all_tables()
    out: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
    with engine.connect() as c:
        for name in names:
            t = md.tables[name]
            pk = [col.name for col in t.primary_key.columns]
            out[name] = {tuple(r[k] for k in pk): {k: v for k, v in r.items() if k not in pk}
                         for r in c.execute(sa.select(t)).mappings()}
    return out


def dump(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every table the indexer writes, rows sorted (the checkpoint's time left out)."""
    md = all_tables()
    out = {}
    with engine.connect() as c:
        for name, t in md.tables.items():
            if name.startswith(("ingest", "quarantine", "records", "auth", "access")):
                continue
            cols = [col for col in t.columns if col.name != "updated_ns"]
            out[name] = sorted((tuple(r) for r in c.execute(sa.select(*cols))), key=repr)
    return out


# -- (1) the tables equal the getters after the demo's scenario ---------------------------------


async def test_model_tables_equal_the_getters_after_the_scenario(
        db_url: str, anvil: Anvil, played: Played) -> None:
    ctx = _ctx(db_url, played.book, anvil.url, confirmations=0, step_blocks=25,
               start_block=played.start_block)
    ix = Indexer(ctx)
    try:
        assert ix.catch_up() > 0
    finally:
        ix.close()
    m = Mrv.from_book(anvil.url, read_address_book(played.book))
    try:
        want = await chain_tables(m, played.accounts)
        # the columns that come from events only: the BatchAnchored header and signature, the
        # last Allocated event's output and benchmark (decoded here by web3, not the indexer)
        anchored = await m.ledger.events.BatchAnchored.get_logs(from_block=played.start_block)
        allocated = await m.allowances.events.Allocated.get_logs(from_block=played.start_block)
    finally:
        await m.close()
    got = db_tables(ctx.engine, list(want))
    # a balance moved to zero, a revoked grant: rows of 0, as the getters answer for them
    for name, col in (("balances", "amount_g"), ("data_access", "until_at")):
        zero = {k for k, r in got[name].items() if r[col] == 0}
        assert zero and all(k[-1] in played.accounts for k in zero), name
        got[name] = {k: r for k, r in got[name].items() if k not in zero}
    for name, rows in want.items():
        assert set(got[name]) == set(rows), name
        for key, cols in rows.items():
            assert {k: got[name][key][k] for k in cols} == cols, (name, key)
    assert len(got["batches"]) == 6 and len(got["trades"]) == 3 and len(got["findings"]) == 2
    for lg in anchored:
        h = lg.args.header
        row = got["batches"][(_h(lg.args.gatewayKey), lg.args.seq)]
        assert (row["first_ts_ns"], row["last_ts_ns"], row["co2e_scope1_g"],
                row["co2e_scope2_g"], row["co2e_scope3_g"], row["prev_hash"],
                row["signature"], row["tx_hash"]) == (
            h.firstTsNs, h.lastTsNs, h.co2eScope1G, h.co2eScope2G, h.co2eScope3G,
            _h(h.prevHash), _h(lg.args.signature), _h(lg.transactionHash))
        gw = got["gateways"][(_h(lg.args.gatewayKey),)]
        assert (row["gateway_id"], row["enterprise"]) == (gw["gateway_id"], gw["enterprise"])
    last: dict[tuple[str, int], Any] = {}
    for lg in allocated:
        last[(_a(lg.args.enterprise), lg.args.period)] = lg.args
    assert last
    for key, args in last.items():
        assert (got["accounts"][key]["output"], got["accounts"][key]["benchmark_g_per_unit"]) \
            == (args.output, args.benchmarkGramsPerUnit)
    # the reservation that moved before registration, and one per registered gateway
    res = db_tables(ctx.engine, ["gateway_reservations"])["gateway_reservations"]
    assert res[(_h(keccak256(b"plant-a-gw2")),)]["reserved_for"] == played.accounts[4]
    # one ev_* row per log of our contracts
    with ctx.engine.connect() as c:
        n_rows = sum(c.execute(sa.select(sa.func.count()).select_from(s.table)).scalar_one()
                     for s in EVENTS.values())
        assert c.execute(sa.select(sa.func.count()).select_from(idx_anomalies)).scalar_one() == 0
    n_logs = len(rpc(anvil.url, "eth_getLogs", [{
        "fromBlock": hex(played.start_block), "toBlock": "latest",
        "address": sorted(ctx.contracts.values())}]))  # type: ignore[arg-type]
    assert n_rows == n_logs
    assert ctx.metrics.counters["indexer_logs"] == n_logs
    ctx.engine.dispose()


# -- (2) a data-access grant and its revocation, one step each -----------------------------------


async def test_a_revocation_shows_after_one_step(db_url: str, anvil: Anvil,
                                                 tmp_path: Path) -> None:
    s = await fresh_system(anvil.url, periods=False, gateways=False)
    try:
        book = tmp_path / "book.json"
        write_address_book(book, {"chain_id": 31337, "contracts": s.mrv.addresses})
        ctx = _ctx(db_url, book, anvil.url, confirmations=0, step_blocks=100_000,
                   start_block=_head(anvil.url))
        ix = Indexer(ctx)
        a, fin = s.a.address.lower(), s.finance.address.lower()

        def access() -> dict[tuple[Any, ...], dict[str, Any]]:
            return db_tables(ctx.engine, ["data_access"])["data_access"]

        until_s = int((await s.mrv.chain.w3.eth.get_block("latest"))["timestamp"]) + 3600
        await s.mrv.grant_data_access(s.a, fin, until_s)
        assert ix.step() > 0
        assert access() == {(a, fin): {"until_at": until_s}}
        await s.mrv.revoke_data_access(s.a, fin)
        assert ix.step() > 0  # one step
        assert access() == {(a, fin): {"until_at": 0}}
        assert await s.mrv.data_access_until(a, fin) == 0
        with ctx.engine.connect() as c:
            evs = c.execute(sa.select(EVENTS["DataAccessRevoked"].table)).mappings().all()
        assert [(e["enterprise"], e["finance"], e["contract"]) for e in evs] == [
            (a, fin, "MrvRegistry")]
        ix.close()
        ctx.engine.dispose()
    finally:
        await s.mrv.close()


# -- (3) killed at random points and restarted: the tables of a one-shot index --------------------


def _config(path: Path, db_url: str, book: Path, rpc_url: str, **chain: Any) -> Path:
    cfg = {"database": {"url": db_url},
           "chain": {"rpc_url": rpc_url, "address_book": str(book), **chain}}
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def _child(config: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "portal._cli", "index", str(config), *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def test_killed_at_random_points_it_gives_the_same_tables(
        db_url: str, anvil: Anvil, played: Played, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    chain = {"confirmations": 0, "step_blocks": 2, "start_block": played.start_block,
             "poll_s": 0.05}
    end = _head(anvil.url)
    cfg = _config(tmp_path / "portal.yaml", db_url, played.book, anvil.url, **chain)
    ctx = build_context(PortalConfig.model_validate({
        "database": {"url": db_url},
        "chain": {"rpc_url": anvil.url, "address_book": played.book, **chain}}),
        with_secret=False)

    def checkpoint() -> int:
        with ctx.engine.connect() as c:
            cp = read_checkpoint(c)
        return -1 if cp is None else cp.block_number

    rng = random.Random()
    targets = sorted(rng.sample(range(played.start_block, played.end_block), 5))
    kills = 0
    for target in targets:
        if checkpoint() >= target:
            continue
        child = _child(cfg)
        try:
            def reached(t: int = target, p: subprocess.Popen[bytes] = child) -> bool:
                return checkpoint() >= t or p.poll() is not None

            await until(reached, 30)
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            child.send_signal(signal.SIGKILL)
            kills += 1
        finally:
            child.kill()
            child.wait()
            if child.stderr:
                child.stderr.close()
    assert kills >= 1
    child = _child(cfg, "--once")
    _, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert checkpoint() >= end
    # one shot, in another database of the same kind
    other = (f"sqlite:///{tmp_path / 'one-shot.db'}" if db_url.startswith("sqlite")
             else request.getfixturevalue("postgres").create_database(
                 f"one{os.getpid()}_{random.randrange(10**9)}"))
    one = _ctx(other, played.book, anvil.url, confirmations=0, step_blocks=100_000,
               start_block=played.start_block)
    ix = Indexer(one)
    ix.catch_up()
    ix.close()
    a, b = dump(ctx.engine), dump(one.engine)
    a.pop("idx_checkpoint")
    b.pop("idx_checkpoint")
    assert a == b
    assert sum(len(v) for k, v in a.items() if k.startswith("ev_")) > 50
    ctx.engine.dispose()
    one.engine.dispose()


# -- (4) a node that is down, then back ---------------------------------------------------------


async def test_a_node_down_then_back(db_url: str, tmp_path: Path,
                                     caplog: pytest.LogCaptureFixture) -> None:
    node = Anvil(state=tmp_path / "anvil-state.json").start()
    stop = threading.Event()
    worker: threading.Thread | None = None
    ctx: PortalContext | None = None
    try:
        s = await fresh_system(node.url, periods=False, gateways=False)
        book = tmp_path / "book.json"
        write_address_book(book, {"chain_id": 31337, "contracts": s.mrv.addresses})
        await s.mrv.grant_data_access(s.a, s.finance.address, 2**40)
        await s.mrv.close()
        end = _head(node.url)
        ctx = _ctx(db_url, book, node.url, confirmations=0, step_blocks=3, poll_s=0.05,
                   timeout_s=1.0)
        node.stop()  # down before the indexer ever saw it
        caplog.set_level(logging.INFO, logger="mrv.portal.indexer")
        worker = threading.Thread(target=indexer_worker, args=(ctx, stop), daemon=True)
        worker.start()
        await until(lambda: ctx.metrics.counters["indexer_chain_failures"] >= 3, 30)
        assert ctx.metrics.component("indexer").state == "failing"
        with ctx.engine.connect() as c:
            assert read_checkpoint(c) is None
        node.start()  # back, with its chain (the state file)

        def said(prefix: str) -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.getMessage().startswith(prefix)]

        await until(lambda: ctx.metrics.component("indexer").state == "ok"
                    and ctx.metrics.component("indexer").detail == f"block {end}"
                    and bool(said("indexer recovered")), 30)
        waiting, recovered = said("indexer waiting"), said("indexer recovered")
        assert len(waiting) == 1 and len(recovered) == 1  # once each, not per retry
        rows = db_tables(ctx.engine, ["data_access", "enterprises"])
        assert rows["data_access"] == {(s.a.address.lower(), s.finance.address.lower()):
                                       {"until_at": 2**40}}
        assert len(rows["enterprises"]) == 2
    finally:
        stop.set()
        if worker is not None:
            worker.join(30)
            assert not worker.is_alive()
        # disposed once the worker is stopped: disposed before, the pool got a fresh connection
        # at the worker's next step (every 50 ms) that was never closed; on PostgreSQL the GC
        # then closed it during a later test, a ResourceWarning there (a CI failure)
        if ctx is not None:
            ctx.engine.dispose()
        node.stop()


def test_a_node_behind_the_checkpoint_is_a_wait_and_a_changed_block_a_reorg(
        tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'p.db'}"
    node = Anvil().start()
    try:
        ctx = _ctx(db, _dummy_book(tmp_path), node.url, confirmations=0, step_blocks=10)
        for _ in range(5):
            rpc(node.url, "evm_mine")
        ix = Indexer(ctx)
        assert ix.step() == 6  # blocks 0..5, no logs
        with ctx.engine.begin() as c:  # as if the index had seen block 7 of a longer chain
            c.execute(sa.text("UPDATE idx_checkpoint SET block_number = 7"))
        with pytest.raises(ChainBehind):
            ix.step()
        with ctx.engine.begin() as c:  # block 5 with another hash: the chain was reorganised
            c.execute(sa.text(f"UPDATE idx_checkpoint SET block_number = 5,"
                              f" block_hash = '0x{'ab' * 32}'"))
        with pytest.raises(ReorgDetected, match=r"block 5 .* a reorg deeper than"):
            ix.step()
        stop = threading.Event()
        indexer_worker(ctx, stop)  # returns at once: a reorg stops the worker
        assert ctx.metrics.component("indexer").state == "alarm"
        assert ctx.metrics.counters["indexer_reorgs"] == 1
        ix.close()
        # the command line: exit 1 at the reorg; --reset empties the index and rebuilds it
        cfg = _config(tmp_path / "portal.yaml", db, _dummy_book(tmp_path), node.url,
                      confirmations=0)
        assert cli_main(["index", str(cfg), "--once"]) == 1
        assert cli_main(["index", str(cfg), "--once", "--reset"]) == 0
        with ctx.engine.connect() as c:
            cp = read_checkpoint(c)
        block5 = rpc(node.url, "eth_getBlockByNumber", ["0x5", False])
        assert cp is not None and (cp.block_number, cp.block_hash) == (5, block5["hash"])  # type: ignore[index]
        ctx.engine.dispose()
    finally:
        node.stop()


def _dummy_book(tmp_path: Path) -> Path:
    book = tmp_path / "dummy-book.json"
    write_address_book(book, {"chain_id": 31337,
                              "contracts": {"MrvRegistry": "0x" + "11" * 20}})
    return book


# -- (5) idempotency: re-applying a range changes nothing ---------------------------------------


async def test_reapplying_a_range_changes_nothing(db_url: str, anvil: Anvil,
                                                  played: Played) -> None:
    ctx = _ctx(db_url, played.book, anvil.url, confirmations=0, step_blocks=100_000,
               start_block=played.start_block)
    ix = Indexer(ctx)
    ix.catch_up()
    before = dump(ctx.engine)
    with ctx.engine.connect() as c:
        cp = read_checkpoint(c)
    assert cp is not None
    mid = (played.start_block + cp.block_number) // 2
    ix.apply_range(played.start_block, mid)  # an old range again
    ix.apply_range(mid - 3, cp.block_number)  # overlapping the checkpoint
    with ctx.engine.begin() as c:  # the checkpoint lost: everything from the start again
        c.execute(sa.text("DELETE FROM idx_checkpoint"))
    ix.catch_up()
    after = dump(ctx.engine)
    assert after == before
    assert ctx.metrics.counters["indexer_logs_skipped"] >= 2 * ctx.metrics.counters["indexer_logs"]
    ix.close()
    ctx.engine.dispose()


# -- (6) confirmations --------------------------------------------------------------------------


async def test_confirmations_are_respected(db_url: str, anvil: Anvil, tmp_path: Path) -> None:
    start = _head(anvil.url) + 1
    s = await fresh_system(anvil.url, periods=False, gateways=False)
    try:
        book = tmp_path / "book.json"
        write_address_book(book, {"chain_id": 31337, "contracts": s.mrv.addresses})
        ctx = _ctx(db_url, book, anvil.url, confirmations=3, step_blocks=100_000,
                   start_block=start)
        ix = Indexer(ctx)
        for _ in range(3):
            rpc(anvil.url, "evm_mine")
        ix.catch_up()
        ev = await s.mrv.suspend(s.gov, s.a.address, "test")
        block = (await s.mrv.chain.w3.eth.get_transaction_receipt(
            (await s.mrv.chain.w3.eth.get_block("latest"))["transactions"][0]))["blockNumber"]
        assert ev[0].name == "EnterpriseSuspended"

        def status() -> int:
            return int(db_tables(ctx.engine, ["enterprises"])["enterprises"][
                (s.a.address.lower(),)]["status"])

        for depth in range(3):  # the block under 0, 1, 2 blocks: not yet
            ix.catch_up()
            with ctx.engine.connect() as c:
                cp = read_checkpoint(c)
            assert cp is not None and cp.block_number == _head(anvil.url) - 3 < block
            assert status() == 1, depth
            rpc(anvil.url, "evm_mine")
        ix.catch_up()  # under 3 blocks: indexed
        assert status() == 2
        ix.close()
        ctx.engine.dispose()
    finally:
        await s.mrv.close()


# -- values that do not fit, logs that do not decode (pure: no chain) ---------------------------


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    from portal import migrate, open_engine

    e = open_engine(f"sqlite:///{tmp_path / 'p.db'}")
    migrate(e)
    yield e
    e.dispose()


def _topic_addr(a: str) -> bytes:
    return bytes(12) + bytes.fromhex(a[2:])


def test_an_amount_beyond_int64_is_an_anomaly_never_rounded(engine: sa.Engine) -> None:
    from portal._indexer import Applied

    spec = EVENTS["Allocated"]
    ent, gov = "0x" + "aa" * 20, "0x" + "bb" * 20
    topics = (spec.topic0, _topic_addr(ent), (1).to_bytes(32, "big"), _topic_addr(gov))
    ok = RawLog("0x" + "cc" * 20, 10, "0x" + "00" * 32, 0, "0x" + "01" * 32, topics,
                abi_encode(["uint256", "uint256", "uint128"], [5 * T, 0, 0]))
    big = RawLog("0x" + "cc" * 20, 11, "0x" + "00" * 32, 0, "0x" + "02" * 32, topics,
                 abi_encode(["uint256", "uint256", "uint128"], [2**64, 0, 0]))
    junk = RawLog("0x" + "cc" * 20, 12, "0x" + "00" * 32, 0, "0x" + "03" * 32, topics, b"\x01")
    topics_map = events_of("Allowances")
    out = Applied()
    for raw, at in ((ok, 100), (big, 110), (junk, 120), (big, 110)):
        with engine.begin() as c:
            apply_log(c, topics_map, "Allowances", raw, at, out)
    assert (out.logs, out.skipped, out.anomalies) == (3, 1, 3)
    with engine.connect() as c:
        evs = c.execute(sa.select(spec.table).order_by(spec.table.c.block_number)).mappings().all()
        assert [(e["block_number"], e["amount_g"], e["enterprise"], e["block_at"]) for e in evs] \
            == [(10, 5 * T, ent, 100), (11, None, ent, 110)]
        acct = c.execute(sa.text("SELECT allocated_g FROM accounts")).scalars().all()
        bal = c.execute(sa.text("SELECT amount_g FROM balances")).scalars().all()
        assert acct == [5 * T] and bal == [5 * T]  # the 2**64 allocation was not applied
        an = c.execute(sa.select(idx_anomalies).order_by(
            idx_anomalies.c.block_number, idx_anomalies.c.target)).mappings().all()
    assert [(a["block_number"], a["target"], a["field"], a["value"]) for a in an] == [
        (11, "accounts", "allocated_g", str(2**64 + 5 * T)),
        (11, "ev_allocated", "amount_g", str(2**64)),
        (12, "*", "*", "0x01")]
    assert "signed 64-bit" in an[0]["reason"] and "not updated" in an[0]["reason"]


# -- what the node sends is checked before it is used -------------------------------------------


async def test_a_narrow_answer_limit_splits_the_ranges_and_gives_the_same_tables(
        anvil: Anvil, played: Played, tmp_path: Path) -> None:
    class Counting(Rpc):
        get_logs = 0

        def call(self, method: str, params: list[Any]) -> Any:
            Counting.get_logs += method == "eth_getLogs"
            return super().call(method, params)

    dumps, calls = [], []
    for name, limit in (("wide", None), ("narrow", 6_000)):
        Counting.get_logs = 0
        ctx = _ctx(f"sqlite:///{tmp_path / name}.db", played.book, anvil.url, confirmations=0,
                   step_blocks=100_000, start_block=played.start_block)
        rpc_ = Counting(anvil.url, 5.0, **({"max_response_bytes": limit} if limit else {}))
        ix = Indexer(ctx, rpc_)
        try:
            ix.catch_up()
        finally:
            ix.close()
        d = dump(ctx.engine)
        d.pop("idx_checkpoint")
        dumps.append(d)
        calls.append(Counting.get_logs)
        ctx.engine.dispose()
    assert dumps[0] == dumps[1]
    assert calls[0] == 1 and calls[1] > 10  # split in halves down to what fits
    assert len(dumps[0]["ev_batch_anchored"]) == 6


class _Liar(BaseHTTPRequestHandler):
    answers: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = self.answers.pop(0) if self.answers else b"{}"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("answers, says", [
    ([b"not json"], "not JSON"),
    ([b'{"jsonrpc":"2.0","id":1}'], "no result"),
    ([b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"boom"}}'], "boom"),
    ([b'{"jsonrpc":"2.0","id":1,"result":"12"}'], "hex quantity"),
    ([b'{"jsonrpc":"2.0","id":1,"result":"0x10"}', b'{"jsonrpc":"2.0","id":2,"result":{}}'],
     "not a list"),
    ([b'{"jsonrpc":"2.0","id":1,"result":"0x10"}',
      b'{"jsonrpc":"2.0","id":2,"result":[{"removed":true}]}'], "removed log"),
    ([b'{"jsonrpc":"2.0","id":1,"result":"0x10"}',
      b'{"jsonrpc":"2.0","id":2,"result":[{"address":"0x11","topics":[]}]}'], "expected 20 bytes"),
    ([b'{"jsonrpc":"2.0","id":1,"result":"0x10"}', b'{"jsonrpc":"2.0","id":2,"result":[]}',
      b'[{"jsonrpc":"2.0","id":3,"result":{"number":"0x9","hash":"0x00","timestamp":"0x1"}}]'],
     "asked for block 16, got 9"),
    ([b"x" * 70_000], "larger than"),
    ([b"[" * 100_000 + b"]" * 100_000], "larger than"),
    ([b'{"jsonrpc":"2.0","id":1,"result":' + b"[" * 20 + b"]" * 20 + b"}"], "nested deeper"),
])
def test_a_node_answering_nonsense_is_unavailable_and_nothing_is_stored(
        tmp_path: Path, answers: list[bytes], says: str) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Liar)
    _Liar.answers = list(answers)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        ctx = _ctx(f"sqlite:///{tmp_path / 'p.db'}", _dummy_book(tmp_path), url,
                   confirmations=0)
        ix = Indexer(ctx, Rpc(url, 5.0, max_response_bytes=65_536))
        with pytest.raises(ChainUnavailable, match=re.escape(says)):
            ix.step()
        ix.close()
        assert dump(ctx.engine)["idx_checkpoint"] == []
        ctx.engine.dispose()
    finally:
        server.shutdown()
        server.server_close()


# -- the worker in the app ------------------------------------------------------------------------


async def test_the_app_runs_the_indexer_worker(anvil: Anvil, played: Played,
                                               tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from portal import create_app
    from portal._runtime import workers

    ctx = _ctx(f"sqlite:///{tmp_path / 'p.db'}", played.book, anvil.url, confirmations=0,
               step_blocks=50, start_block=played.start_block, poll_s=0.05)

    def caught_up() -> bool:
        with ctx.engine.connect() as c:
            cp = read_checkpoint(c)
        return cp is not None and cp.block_number >= played.end_block

    with TestClient(create_app(ctx, workers=workers())):  # type: ignore[arg-type]
        await until(lambda: caught_up() and ctx.metrics.component("indexer").state == "ok", 30)
    assert ctx.metrics.component("indexer").state == "stopped"  # the lifespan stopped it
    assert len(db_tables(ctx.engine, ["trades"])["trades"]) == 3
    ctx.engine.dispose()
