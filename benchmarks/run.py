"""Run every benchmark scenario, each in its own process, and write the results.

    .venv/bin/python -m benchmarks.run [--quick] [--only NAME ...]   (or: make bench)

Writes ``benchmarks/results.json`` (every scenario's JSON plus the machine) and
``benchmarks/results.md`` (a table against the targets). Scenarios are runnable alone too:
``python -m benchmarks.<name> --help``. Benchmarks are measurements, not tests: nothing here
fails a build, and a scenario that errors is recorded as such.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# name -> (module, full-size args, quick args)
SCENARIOS: dict[str, tuple[str, list[str], list[str]]] = {
    "pipeline": ("benchmarks.pipeline", ["--readings", "300000"], ["--readings", "20000"]),
    "acquisition": ("benchmarks.acquisition", ["--devices", "500", "--seconds", "30"],
                    ["--devices", "20", "--seconds", "5"]),
    "control": ("benchmarks.control_latency", [], ["--commands", "50"]),
    "backlog": ("benchmarks.backlog", ["--readings", "1000000"],
                ["--readings", "50000", "--batch", "5000"]),
    "gas": ("benchmarks.gas", [], []),
    "peer": ("benchmarks.peer", ["--devices", "500"], ["--devices", "20", "--seconds", "10"]),
    "portal": ("benchmarks.portal", ["--readings", "10000000"],
               ["--readings", "200000", "--seconds", "5", "--batches", "100",
                "--ingest-batches", "4"]),
}


def _get(d: dict[str, Any], *path: str) -> Any:
    cur: Any = d
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


# (label, scenario, extractor, target text, check)
TARGETS: list[tuple[str, str, Callable[[dict[str, Any]], Any], str, Callable[[Any], bool]]] = [
    ("pipeline readings/s/core (batch signatures)", "pipeline",
     lambda d: _get(d, "readings_per_cpu_s"), ">= 100,000", lambda v: v >= 100_000),
    ("pipeline readings/s/core (per-reading signatures)", "pipeline",
     lambda d: _get(d, "per_reading_signatures", "readings_per_cpu_s"), ">= 20,000",
     lambda v: v >= 20_000),
    ("Ed25519 signs/s (machine limit)", "pipeline",
     lambda d: _get(d, "limits", "ed25519_signs_per_s"), "(limit)", lambda v: True),
    ("SQLite inserts/s (machine limit)", "pipeline",
     lambda d: _get(d, "limits", "sqlite_inserts_per_s"), "(limit)", lambda v: True),
    ("acquisition missed polls (500 dev x 30 reg, 1 s)", "acquisition",
     lambda d: _get(d, "missed_polls"), "0", lambda v: v == 0),
    ("acquisition CPU share of one core", "acquisition",
     lambda d: _get(d, "cpu_share"), "< 1.0", lambda v: v < 1.0),
    ("acquisition poll latency p99 (ms)", "acquisition",
     lambda d: _get(d, "poll_latency_ms", "p99"), "(report)", lambda v: True),
    ("pollers alone, peak RSS in acquisition (MB)", "acquisition",
     lambda d: _get(d, "peak_rss_mb"), "(report)", lambda v: True),
    ("whole daemon peak RSS, 500 dev x 30 reg at 1 s (MB)", "peer",
     lambda d: _get(d, "ours", "peak_rss_mb"), "< 150", lambda v: v < 150),
    ("control command-to-ack p50 (ms)", "control",
     lambda d: _get(d, "latency_ms", "p50"), "(report)", lambda v: True),
    ("control command-to-ack p99 (ms)", "control",
     lambda d: _get(d, "latency_ms", "p99"), "< 20", lambda v: v < 20),
    ("backlog of 1,000,000 readings drained (s)", "backlog",
     lambda d: _get(d, "drain_s"), "< 60", lambda v: v < 60),
    ("gas per batch", "gas", lambda d: _get(d, "gas_per_batch"), "constant", lambda v: True),
    ("portal ingest: readings verified + stored per portal CPU-s (PostgreSQL)", "portal",
     lambda d: _get(d, "ingest", "postgresql", "readings_per_portal_cpu_s"), ">= 50,000",
     lambda v: v >= 50_000),
    ("portal ingest: readings per CPU-s, portal + PostgreSQL together", "portal",
     lambda d: (_get(d, "ingest", "readings") or 0) / max(
         1e-9, (_get(d, "ingest", "postgresql", "portal_cpu_s") or 0)
         + (_get(d, "ingest", "postgresql", "database_cpu_s") or 0)), "(report)",
     lambda v: True),
    ("portal indexer events/s (PostgreSQL)", "portal",
     lambda d: _get(d, "indexer", "postgresql", "events_per_s"), "(report)", lambda v: True),
    ("portal API p99 (ms), accounts + rankings at 200 req/s, 10M readings", "portal",
     lambda d: _get(d, "api", "load", "p99_ms"), "< 50", lambda v: v < 50),
    ("delivered datapoints per CPU-second vs ThingsBoard", "peer",
     lambda d: _get(d, "ratio_per_cpu_s"), ">= 10x", lambda v: v >= 10),
]


def run_one(name: str, quick: bool, timeout_s: float) -> dict[str, Any]:
    module, full, small = SCENARIOS[name]
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [sys.executable, "-m", module, *(small if quick else full), "--out", out]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False,
                           cwd=HERE.parent)
    except subprocess.TimeoutExpired:
        return {"scenario": name, "error": f"timed out after {timeout_s:.0f} s",
                "command": " ".join(cmd)}
    wall = round(time.perf_counter() - t0, 1)
    try:
        data: dict[str, Any] = json.loads(Path(out).read_text())
    except (OSError, json.JSONDecodeError):
        return {"scenario": name, "error": (p.stderr or p.stdout)[-2000:] or f"exit {p.returncode}",
                "command": " ".join(cmd)}
    finally:
        Path(out).unlink(missing_ok=True)
    data["command"] = " ".join(["python", "-m", module, *(small if quick else full)])
    data["run_wall_s"] = wall
    return data


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["memory_gb"] = round(int(mem) / 1024 / 1024, 1)
    except OSError:
        pass
    return info


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| measure | value | target | met |", "| --- | --- | --- | --- |"]
    for label, scen, get, target, ok in TARGETS:
        d = results.get(scen)
        if d is None:
            continue
        if "error" in d:
            lines.append(f"| {label} | error: see results.json | {target} | no |")
            continue
        v = get(d)
        shown = "n/a" if v is None else (f"{v:,}" if isinstance(v, int) else str(v))
        met = "" if target.startswith("(") else ("n/a" if v is None else ("yes" if ok(v) else "no"))
        lines.append(f"| {label} | {shown} | {target} | {met} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    ap.add_argument("--only", nargs="*", choices=sorted(SCENARIOS))
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--out-dir", default=str(HERE))
    args = ap.parse_args(argv)
    names = args.only or list(SCENARIOS)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        if not (HERE / f"{SCENARIOS[name][0].split('.')[-1]}.py").exists():
            results[name] = {"scenario": name, "error": "not built"}
            continue
        print(f"== {name}", flush=True)
        results[name] = run_one(name, args.quick, args.timeout)
        print(json.dumps(results[name], indent=1)[:2000], flush=True)
    out = Path(args.out_dir)
    doc = {"machine": machine(), "quick": args.quick,
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": results}
    (out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    md = table(results)
    (out / "results.md").write_text(
        f"# Benchmark results\n\n{doc['date']}, {doc['machine'].get('cpu', '?')}, "
        f"{doc['machine'].get('cpus')} CPUs{' (quick run)' if args.quick else ''}\n\n" + md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
