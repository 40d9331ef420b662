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

from benchmarks import stop_on_sigterm
from benchmarks._load import run_load
from benchmarks._portal_data import INDUSTRIES, REGIONS, address_of, fill
from simulator import Postgres, free_port, stop_process, wait_port

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
        stop_process(proc, 30)
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


def make_submissions(n_batches: int, per_batch: int, gateway_id: str = "bench-ingest"
                     ) -> tuple[bytes, list[tuple[bytes, bytes, bytes, int]]]:
    """``n_batches`` real ``mrv-batch/v1`` submissions of ``per_batch`` readings each, signed
    by a fresh Ed25519 key: (public key, [(body, header hash, root, seq)])."""
    from ledger_client import ZERO32, Signer, build_header, record_leaf, submission_bytes
    from mrv_core import Quality, Reading

    signer = Signer(os.urandom(32))
    out = []
    prev, seq0, t0 = ZERO32, 1, 1_767_225_600 * 10**9
    for b in range(1, n_batches + 1):
        recs = []
        for i in range(per_batch):
            s = seq0 + i
            bad = s % 50 == 0
            recs.append(Reading(point_id=f"meter-{s % 40}.p{s % 7}", ts_ns=t0 + s * 10**9,
                                value=float("nan") if bad else 1000.0 + (s % 997) / 8,
                                unit="kWh", quality=int(Quality.COMM_FAULT) if bad else 0,
                                source="modbus_tcp:bench", seq=s, gateway_id=gateway_id))
        h = build_header(gateway_id=gateway_id, seq=b, prev_hash=prev,
                         records=[(r.seq, r.ts_ns, record_leaf(r)) for r in recs],
                         co2e_g=(1000, 0, 0))
        out.append((submission_bytes(h, signer.sign(h.hash()), [(r, None) for r in recs]),
                    h.hash(), h.root, b))
        prev, seq0 = h.hash(), seq0 + per_batch
    return signer.public_key, out


def ingest_bench(pg: Postgres, work: Path, batches: int, per_batch: int) -> dict[str, Any]:
    """The ingest path (parse, check every leaf, the root, the header, the signature, store
    the records) over real submissions, in this process, on PostgreSQL and on SQLite; the
    chain rows it checks against are inserted first, as the indexer would have."""
    from ledger_client import gateway_key
    from portal import PortalConfig, build_context, ingest

    gw = "bench-ingest"
    key, subs = make_submissions(batches, per_batch, gw)
    gkey = "0x" + gateway_key(gw).hex()
    ent = "0x" + "e1" * 20
    book = work / "ingest-book.json"
    book.write_text(json.dumps({"chain_id": 31337, "contracts": {}}))
    out: dict[str, Any] = {"batches": batches, "readings_per_batch": per_batch,
                           "readings": batches * per_batch}
    for name, url in (("postgresql", pg.create_database("bench_ingest")),
                      ("sqlite", f"sqlite:///{work / 'ingest.db'}")):
        ctx = build_context(PortalConfig.model_validate({
            "database": {"url": url}, "chain": {"address_book": book}}), with_secret=False)
        with ctx.engine.begin() as c:
            c.execute(sa.text(
                "INSERT INTO gateways (gateway_key, gateway_id, enterprise, active, registered_at,"
                " sender, signing_key, reserved_for) VALUES (:k, :g, :e, true, 0, :e, :s, NULL)"),
                {"k": gkey, "g": gw, "e": ent, "s": "0x" + key.hex()})
            c.execute(sa.text(
                "INSERT INTO batches (gateway_key, seq, gateway_id, enterprise, header_hash, root,"
                " count, first_record_seq, last_record_seq, first_ts_ns, last_ts_ns,"
                " co2e_scope1_g, co2e_scope2_g, co2e_scope3_g, prev_hash, signature, period,"
                " block_number, tx_hash) VALUES (:k, :seq, :g, :e, :hh, :root, :n, 0, 0, 0, 0,"
                " 0, 0, 0, :z, :z, 1, :seq, :z)"),
                [{"k": gkey, "seq": seq, "g": gw, "e": ent, "hh": "0x" + hh.hex(),
                  "root": "0x" + root.hex(), "n": per_batch, "z": "0x" + "00" * 32}
                 for _, hh, root, seq in subs])
        pids = _pg_pids(pg) if name == "postgresql" else []
        pg0 = _proc_cpu_s(pids)
        w0, c0 = time.perf_counter(), time.process_time()
        for body, *_ in subs:
            a = ingest(ctx, body)
            if a.status != 201:
                raise RuntimeError(f"ingest answered {a.status}: {a.body}")
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        db_cpu = _proc_cpu_s(pids) - pg0
        with ctx.engine.connect() as c:
            stored = int(c.execute(sa.text("SELECT count(*) FROM records")).scalar() or 0)
        ctx.engine.dispose()
        if stored != batches * per_batch:
            raise RuntimeError(f"stored {stored} records, expected {batches * per_batch}")
        n = batches * per_batch
        out[name] = {"wall_s": round(wall, 2), "portal_cpu_s": round(cpu, 2),
                     "database_cpu_s": round(db_cpu, 2) if pids else None,
                     "readings_per_s": round(n / wall),
                     "readings_per_portal_cpu_s": round(n / cpu)}
    return out


def main(argv: list[str] | None = None) -> int:
    stop_on_sigterm()
    ap = argparse.ArgumentParser(prog="python -m benchmarks.portal", description=__doc__)
    ap.add_argument("--readings", type=int, default=10_000_000)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=1000, help="anchored batches to index")
    ap.add_argument("--ingest-batches", type=int, default=40)
    ap.add_argument("--ingest-batch-size", type=int, default=5000)
    ap.add_argument("--only", choices=["api", "ingest", "indexer"], action="append")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from portal import migrate, open_engine

    only = set(args.only or ["api", "ingest", "indexer"])
    result: dict[str, Any] = {"scenario": "portal"}
    with tempfile.TemporaryDirectory(prefix="mrv-bench-portal-") as tmp, Postgres() as pg:
        work = Path(tmp)
        if "ingest" in only:
            result["ingest"] = ingest_bench(pg, work, args.ingest_batches,
                                            args.ingest_batch_size)
            print(f"ingest: {result['ingest']['postgresql']['readings_per_portal_cpu_s']:,}"
                  " readings verified and stored per portal CPU-second (PostgreSQL)", flush=True)
        if "indexer" in only:
            result["indexer"] = asyncio.run(indexer_bench(pg, work, args.batches))
            print(f"indexer: {result['indexer']['postgresql']['events_per_s']} events/s "
                  "(PostgreSQL)", flush=True)
        if "api" in only:
            engine = open_engine(pg.url())
            migrate(engine)
            ds = fill(engine, readings=args.readings)
            with engine.begin() as c:
                c.execute(sa.text("INSERT INTO roles (role, account) VALUES ('government', :a)"),
                          {"a": GOV})
                db_bytes = c.execute(
                    sa.text("SELECT pg_database_size(current_database())")).scalar()
            result["dataset"] = {"readings": ds.readings, "enterprises": ds.enterprises,
                                 "gateways": ds.gateways, "fill_s": round(ds.fill_s, 1),
                                 "database_mb": round(int(db_bytes or 0) / 2**20)}
            print(f"data set: {ds.readings:,} readings, {ds.enterprises} enterprises "
                  f"({ds.fill_s:.0f} s, {result['dataset']['database_mb']:,} MB)", flush=True)
            account_paths = [f"/v1/enterprises/{address_of(e)}/accounts/2"
                             for e in range(1, 301)]
            result["api"] = asyncio.run(api_load(pg, work, rate=args.rate,
                                                 seconds=args.seconds, workers=args.workers,
                                                 account_paths=account_paths))
            print(f"api: p99 {result['api']['load']['p99_ms']} ms at {args.rate:g} requests/s",
                  flush=True)
            engine.dispose()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
