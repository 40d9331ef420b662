"""The portal under load: API latency with a large database, ingest throughput, indexer speed.

    .venv/bin/python -m benchmarks.portal [--readings 10000000] [--rate 200] [--seconds 30]
                                          [--workers 2] [--out FILE]

- **api**: PostgreSQL (a throw-away server of the system's packages) filled with N readings,
  the chain tables of 300 enterprises; ``mrv-portal run --api-only`` with ``--workers`` uvicorn
  processes; an open-loop load generator on loopback sends ``--rate`` requests per second for
  ``--seconds`` to the carbon-account and ranking endpoints, each latency counted from the
  request's scheduled time. The first request of each ranking (cold cache) is reported apart.
- **ingest**: real signed batches (ledger_client's formats) verified and stored by the ingest
  path into the same database; readings per second of wall time and per CPU-second (this
  process and the PostgreSQL server's processes).
- **indexer**: a fresh anvil with N anchored batches; events indexed per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks._load import run_load
from benchmarks._portal_data import INDUSTRIES, REGIONS, address_of, fill
from simulator import Postgres, free_port, wait_port

BIN = Path(sys.executable).parent
GOV = "0x" + "ab" * 20


def _proc_cpu_s(pids: list[int]) -> float:
    """utime + stime of the processes (Linux /proc), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def _children(root: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == root:
                out.append(int(d.name))
    return out


def _pg_pids(pg: Postgres) -> list[int]:
    assert pg.proc is not None
    return [pg.proc.pid, *_children(pg.proc.pid)]


def _write_config(work: Path, url: str, port: int, workers: int) -> Path:
    book = work / "address-book.json"
    book.write_text(json.dumps({"chain_id": 31337, "rpc_url": "http://127.0.0.1:1",
                                "contracts": {"EmissionsLedger": "0x" + "11" * 20,
                                              "MrvRegistry": "0x" + "22" * 20}}))
    cfg = work / "portal.yaml"
    cfg.write_text(json.dumps({
        "database": {"url": url, "pool_size": 20},
        "chain": {"address_book": str(book)},
        "api": {"host": "127.0.0.1", "port": port, "workers": workers},
        "auth": {"secret_file": str(work / "secret")},
    }))
    (work / "secret").write_bytes(os.urandom(32))
    os.chmod(work / "secret", 0o600)
    return cfg


def _token(cfg_path: Path) -> str:
    from portal import PortalContext, issue_token, load_portal_config

    cfg = load_portal_config(cfg_path)
    ctx = PortalContext(config=cfg, engine=sa.create_engine("sqlite://"),
                        token_secret=cfg.auth.secret_file.read_bytes())
    tok, _ = issue_token(ctx, GOV)
    return tok


async def api_load(pg: Postgres, work: Path, *, rate: float, seconds: float,
                   workers: int, account_paths: list[str]) -> dict[str, Any]:
    url = pg.url()
    port = free_port()
    cfg = _write_config(work, url, port, workers)
    token = _token(cfg)
    log = open(work / "portal.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(  # noqa: ASYNC220  (started once, before the measurement)
        [str(BIN / "mrv-portal"), "run", str(cfg), "--api-only"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        await wait_port("127.0.0.1", port, 60.0)
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        rankings = ([f"/v1/rankings?period=2&by=industry&group={g}" for g in INDUSTRIES]
                    + [f"/v1/rankings?period=2&by=region&group={r}" for r in REGIONS[:4]])
        # cold: the first request of each path (the ranking computes its period's inputs)
        cold = await run_load(base, rankings + account_paths[:5],
                              rate=5, seconds=(len(rankings) + 5) / 5, headers=headers,
                              timeout_s=120)
        paths = [p for pair in zip(account_paths, rankings * 30, strict=False) for p in pair]
        # warm-up at the full rate (connection pools fill, caches fill), not measured
        warm = await run_load(base, paths, rate=rate, seconds=min(5.0, seconds), headers=headers)
        portal_pids = [proc.pid, *_children(proc.pid)]
        pg_pids = _pg_pids(pg)
        cpu0 = (_proc_cpu_s(portal_pids), _proc_cpu_s(pg_pids), time.process_time())
        hot = await run_load(base, paths, rate=rate, seconds=seconds, headers=headers)
        cpu1 = (_proc_cpu_s(portal_pids), _proc_cpu_s(pg_pids + _children(pg.proc.pid)),
                time.process_time())
        return {"rate": rate, "seconds": seconds, "workers": workers,
                "cold": cold.summary(), "warm_up": warm.summary(), "load": hot.summary(),
                "cpu_s": {"portal": round(cpu1[0] - cpu0[0], 2),
                          "postgres": round(cpu1[1] - cpu0[1], 2),
                          "load_generator": round(cpu1[2] - cpu0[2], 2)}}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def indexer_bench(pg: Postgres, work: Path, batches: int) -> dict[str, Any]:
    """A fresh deployment whose one gateway anchors ``batches`` one-record batches (two events
    each), then the indexer from block 0 to the head, on PostgreSQL and on SQLite."""
    from ledger_client import (
        ZERO32,
        EvmChain,
        Mrv,
        Signer,
        build_header,
        header_tuple,
        load_account,
        read_address_book,
        record_leaf,
    )
    from mrv_core import Reading
    from portal import Indexer, PortalConfig, build_context
    from simulator import Anvil, provision

    out: dict[str, Any] = {"batches": batches}
    with Anvil() as anvil:
        gw = "bench-idx"
        prov = await provision(work / "idx-gw", anvil.url, devices=[], gateway_id=gw)
        keys = work / "idx-gw" / "keys"
        signer, acct = Signer.load(keys / "ed25519.key"), load_account(keys / "evm.key")
        chain = EvmChain(anvil.url, contract_address=prov.contract)
        book = read_address_book(prov.address_book)
        mrv = Mrv(chain, book["contracts"])
        prev, t0 = ZERO32, time.time_ns() - batches * 10**9
        w0 = time.perf_counter()
        for i in range(1, batches + 1):
            r = Reading(point_id="p", ts_ns=t0 + i * 10**9, value=float(i), unit="kWh",
                        source="bench", seq=i, gateway_id=gw)
            h = build_header(gateway_id=gw, seq=i, prev_hash=prev,
                             records=[(i, r.ts_ns, record_leaf(r))], co2e_g=(1000, 0, 0))
            await mrv.send(acct, mrv.ledger.functions.anchorBatch(header_tuple(h),
                                                                  signer.sign(h.hash())))
            prev = h.hash()
        out["anchor_s"] = round(time.perf_counter() - w0, 1)
        await chain.close()
        for name, url in (("postgresql", pg.create_database("bench_idx")),
                          ("sqlite", f"sqlite:///{work / 'idx.db'}")):
            cfg = PortalConfig.model_validate({
                "database": {"url": url},
                "chain": {"rpc_url": anvil.url, "address_book": prov.address_book,
                          "confirmations": 0, "step_blocks": 2_000},
                "auth": {"secret_file": work / f"idx-secret-{name}"}})
            ctx = build_context(cfg, with_secret=False)
            ix = Indexer(ctx)
            w0, c0 = time.perf_counter(), time.process_time()
            blocks = 0
            while (n := ix.step()) > 0:
                blocks += n
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            with ctx.engine.connect() as c:
                names = [t for t in sa.inspect(c).get_table_names() if t.startswith("ev_")]
                events = sum(int(c.execute(sa.text(f'SELECT count(*) FROM "{t}"')).scalar() or 0)
                             for t in names)
            ctx.engine.dispose()
            out[name] = {"blocks": blocks, "events": events, "wall_s": round(wall, 2),
                         "indexer_cpu_s": round(cpu, 2),
                         "events_per_s": round(events / wall) if wall else None}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.portal", description=__doc__)
    ap.add_argument("--readings", type=int, default=10_000_000)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=1000, help="anchored batches to index")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from portal import migrate, open_engine

    result: dict[str, Any] = {"scenario": "portal"}
    with tempfile.TemporaryDirectory(prefix="mrv-bench-portal-") as tmp, Postgres() as pg:
        work = Path(tmp)
        engine = open_engine(pg.url())
        migrate(engine)
        ds = fill(engine, readings=args.readings)
        with engine.begin() as c:
            c.execute(sa.text("INSERT INTO roles (role, account) VALUES ('government', :a)"),
                      {"a": GOV})
            db_bytes = c.execute(sa.text("SELECT pg_database_size(current_database())")).scalar()
        result["dataset"] = {"readings": ds.readings, "enterprises": ds.enterprises,
                             "gateways": ds.gateways, "fill_s": round(ds.fill_s, 1),
                             "database_mb": round(int(db_bytes or 0) / 2**20)}
        print(f"data set: {ds.readings:,} readings, {ds.enterprises} enterprises "
              f"({ds.fill_s:.0f} s, {result['dataset']['database_mb']:,} MB)", flush=True)
        account_paths = [f"/v1/enterprises/{address_of(e)}/accounts/2" for e in range(1, 301)]
        result["api"] = asyncio.run(api_load(pg, work, rate=args.rate, seconds=args.seconds,
                                             workers=args.workers,
                                             account_paths=account_paths))
        print(f"api: p99 {result['api']['load']['p99_ms']} ms at {args.rate:g} requests/s",
              flush=True)
        result["indexer"] = asyncio.run(indexer_bench(pg, work, args.batches))
        print(f"indexer: {result['indexer']['postgresql']['events_per_s']} events/s "
              "(PostgreSQL)", flush=True)
        engine.dispose()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
