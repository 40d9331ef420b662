"""Pipeline throughput: cleaning -> outbox commit (SQLite WAL on disk) -> batching -> signing,
with batch signatures only, then with an Ed25519 signature per reading too
(``gateway.sign_records: true``, reported under ``per_reading_signatures``).

    .venv/bin/python -m benchmarks.pipeline [--readings 200000] [--chunk 5000] [--repeat 5]
                                            [--out FILE]

Measures in one process, on one core (asyncio plus aiosqlite's one worker thread; reported as
readings per CPU-second of the whole process), tuned as the daemon tunes its own
(`mrv_core.tune_process`: the collector's thresholds, the GIL's switch interval) and fed
readings untracked by the collector as the drivers' are; and the machine's own limits in the
same run:
Ed25519 signatures/s with pynacl and raw SQLite batched inserts/s, so the ratio shows how close
the pipeline gets to what the machine can do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import stop_on_sigterm
from cleaning import ChecksConfig, Cleaner
from ledger_client import Outbox, Signer
from mrv_core import Reading, tune_process, untrack_atomic


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _readings(n: int, points: int = 30) -> list[Reading]:
    """``n`` readings of 3,000 points, untracked by the cyclic GC as the drivers' readings are
    (`mrv_core.block_readings`): the collector would otherwise walk all of them."""
    t0 = time.time_ns()
    out = [Reading(point_id=f"dev{i // points % 100}.p{i % points}", ts_ns=t0 + i * 1000,
                   value=100.0 + (i % 97) * 0.5, unit="kW", source="bench")
           for i in range(n)]
    untrack_atomic(out)
    return out


def ed25519_limit(seconds: float = 1.0) -> float:
    s = Signer(b"\x05" * 32)
    msg = b"\x11" * 32
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(200):
            s.sign(msg)
        n += 200
    return n / (time.perf_counter() - t0)


def sqlite_limit(path: Path, rows: int = 200_000, chunk: int = 5000) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, kind INTEGER, point_id TEXT, ts_ns INTEGER,"
               " value REAL, unit TEXT, quality INTEGER, source TEXT, extra TEXT, leaf BLOB)")
    leaf = b"\x01" * 32
    t0 = time.perf_counter()
    for start in range(0, rows, chunk):
        db.execute("BEGIN")
        db.executemany("INSERT INTO t VALUES (?,?,?,?,?,?,?,?,?,?)",
                       [(start + i + 1, 1, "dev.p", 1, 1.0, "kW", 0, "bench", None, leaf)
                        for i in range(chunk)])
        db.execute("COMMIT")
    dt = time.perf_counter() - t0
    db.close()
    return rows / dt


async def pipeline(path: Path, n: int, chunk: int, batch: int,
                   sign_records: bool = False) -> dict[str, Any]:
    readings = _readings(n)
    cleaner = Cleaner({f"dev{d}.p{p}": ChecksConfig.model_validate({"range": {"min": 0, "max": 1e6}})
                       for d in range(100) for p in range(30)})
    signer = Signer(b"\x06" * 32)
    ob = await Outbox.open(path, "bench-gw", synchronous="FULL",
                           sign_records=signer.sign if sign_records else None)
    batches = 0
    cpu0, t0 = _cpu(), time.perf_counter()
    try:
        for start in range(0, n, chunk):
            part = cleaner.clean(readings[start:start + chunk], time.time_ns())
            await ob.append(part)
            while (await ob.pending_count()) >= batch:
                await ob.make_batch(batch, signer.sign)
                batches += 1
        while await ob.make_batch(batch, signer.sign):
            batches += 1
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        signed = sum([await ob.record_signature(s) is not None for s in (1, n // 2, n)])
    finally:
        await ob.close()
    return {"readings": n, "signed_of_3_sampled": signed, "chunk": chunk, "batch_records": batch,
            "batches": batches,
            "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "readings_per_s": round(n / wall), "readings_per_cpu_s": round(n / cpu)}


def main(argv: list[str] | None = None) -> int:
    stop_on_sigterm()
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__)
    ap.add_argument("--readings", type=int, default=200_000)
    ap.add_argument("--chunk", type=int, default=5_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5,
                    help="runs, each on a new outbox; the median is reported (a shared VM's "
                         "CPU speed varies by +-20%% from run to run)")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    tune_process()  # the collector and the GIL as `mrv-gateway run` sets them (mrv_core/_gc.py)
    with tempfile.TemporaryDirectory(prefix="mrv-bench-", dir=os.environ.get("MRV_BENCH_DIR")) as d:
        runs = [asyncio.run(pipeline(Path(d) / f"outbox-{i}.sqlite", args.readings, args.chunk,
                                     args.batch)) for i in range(max(1, args.repeat))]
        res = sorted(runs, key=lambda r: r["readings_per_cpu_s"])[len(runs) // 2]  # the median
        res["runs_readings_per_cpu_s"] = [r["readings_per_cpu_s"] for r in runs]
        signed_runs = [asyncio.run(pipeline(Path(d) / f"signed-{i}.sqlite", args.readings,
                                            args.chunk, args.batch, sign_records=True))
                       for i in range(max(1, args.repeat))]
        signed = sorted(signed_runs, key=lambda r: r["readings_per_cpu_s"])[len(signed_runs) // 2]
        signed["runs_readings_per_cpu_s"] = [r["readings_per_cpu_s"] for r in signed_runs]
        limits = {"ed25519_signs_per_s": round(ed25519_limit()),
                  "sqlite_inserts_per_s": round(sqlite_limit(Path(d) / "raw.sqlite",
                                                             rows=min(args.readings, 200_000)))}
    res["limits"] = limits
    res["ratio_to_sqlite_limit"] = round(res["readings_per_s"] / limits["sqlite_inserts_per_s"], 3)
    signed["ratio_to_ed25519_limit"] = round(signed["readings_per_s"]
                                             / limits["ed25519_signs_per_s"], 3)
    res["per_reading_signatures"] = signed  # gateway.sign_records: true (and batch signatures)
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    text = json.dumps({"scenario": "pipeline", **res}, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
