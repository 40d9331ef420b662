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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import stop_on_sigterm

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
    "peer": ("benchmarks.peer", ["--devices", "100,500,2000"],
             ["--devices", "20", "--seconds", "10"]),
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


def _step(d: dict[str, Any], devices: int) -> dict[str, Any] | None:
    """The peer run's figures at one size (``steps``; a single-size JSON without them too)."""
    for st in d.get("steps") or []:
        if isinstance(st, dict) and st.get("devices") == devices:
            return st
    if d.get("devices") == devices and "steps" not in d:
        return {"devices": devices, "ours": d.get("ours"), "thingsboard": d.get("thingsboard"),
                "ratio_per_cpu_s": d.get("ratio_per_cpu_s")}
    return None


def _ours(d: dict[str, Any], devices: int, *path: str) -> Any:
    st = _step(d, devices)
    return None if st is None else _get(st, "ours", *path)


def _load(d: dict[str, Any], devices: int) -> str | None:
    """Other work on the machine over our gateway's window at one size (it skews CPU figures)."""
    o = _ours(d, devices)
    if not isinstance(o, dict) or not o.get("window_s"):
        return None
    other = _get(o, "other_cpu_s", "unaccounted")
    if other is None:
        return None
    main = _get(o, "cpu_s_by_thread", "main")
    speed = o.get("machine_ed25519_signs_per_s")
    return (f"other load {max(0.0, other / o['window_s']):.2f} cores"
            + (" (contended)" if o.get("contended") else "")
            + (f"; daemon's main thread {main / o['window_s']:.0%} of a core"
               if main is not None else "")
            + (f"; machine speed {speed:,} Ed25519 signs/s just before" if speed else ""))


def _zero_loss_detail(d: dict[str, Any], devices: int) -> str | None:
    o = _ours(d, devices)
    if not isinstance(o, dict) or "delivered_dp_per_s" not in o:
        return None
    c = o.get("gateway_counters") or {}
    return (f"delivered {o['delivered_dp_per_s']:,} of {o['expected_dp_per_s']:,} dp/s; "
            f"anchored {_fmt(c.get('records_anchored'))} of {_fmt(c.get('readings_accepted'))} "
            f"accepted; {_load(d, devices) or ''}").rstrip("; ")


def _ratios(d: dict[str, Any]) -> str | None:
    steps = d.get("steps") or [d]  # a single-size JSON has no steps
    parts = [f"{st['devices']}: {st['ratio_per_cpu_s']}x" for st in steps
             if isinstance(st, dict) and st.get("ratio_per_cpu_s") is not None]
    return ", ".join(parts) or None


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return f"{v:,}" if isinstance(v, int) else str(v)


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure, its target (``(report)``/``(limit)``: none) and, where
    the benchmark measures it, the machine's limit or load beside it."""

    label: str
    scenario: str
    get: Callable[[dict[str, Any]], Any]
    target: str
    ok: Callable[[Any], bool] = lambda v: True
    machine: Callable[[dict[str, Any]], str | None] = lambda d: None


def _pipeline_limits(d: dict[str, Any]) -> str | None:
    e, q = _get(d, "limits", "ed25519_signs_per_s"), _get(d, "limits", "sqlite_inserts_per_s")
    if e is None and q is None:
        return None
    return f"Ed25519 {_fmt(e)} signs/s; SQLite {_fmt(q)} inserts/s (one core)"


def _commit_floor(d: dict[str, Any], devices: int | None = None) -> str | None:
    f = (_ours(d, devices, "control_ms", "machine_sqlite_full_commit_ms") if devices
         else _get(d, "machine_sqlite_full_commit_ms"))
    if not isinstance(f, dict):
        return None
    return f"SQLite FULL commit p50 {f.get('p50')} / p99 {f.get('p99')} ms (fsync floor)"


PEER = "peer: ours, whole daemon"
TARGETS: list[Row] = [
    Row("pipeline readings/s/core (batch signatures)", "pipeline",
        lambda d: _get(d, "readings_per_cpu_s"), ">= 250,000", lambda v: v >= 250_000,
        _pipeline_limits),
    Row("pipeline readings/s/core (per-reading signatures)", "pipeline",
        lambda d: _get(d, "per_reading_signatures", "readings_per_cpu_s"), ">= 20,000",
        lambda v: v >= 20_000, _pipeline_limits),
    Row("Ed25519 signs/s (machine limit)", "pipeline",
        lambda d: _get(d, "limits", "ed25519_signs_per_s"), "(limit)"),
    Row("SQLite inserts/s (machine limit)", "pipeline",
        lambda d: _get(d, "limits", "sqlite_inserts_per_s"), "(limit)"),
    Row("acquisition missed polls (500 dev x 30 reg, 1 s)", "acquisition",
        lambda d: _get(d, "missed_polls"), "0", lambda v: v == 0),
    Row("acquisition CPU share of one core", "acquisition",
        lambda d: _get(d, "cpu_share"), "< 1.0", lambda v: v < 1.0),
    Row("acquisition poll latency p99 (ms)", "acquisition",
        lambda d: _get(d, "poll_latency_ms", "p99"), "(report)"),
    Row("pollers alone, peak RSS in acquisition (MB)", "acquisition",
        lambda d: _get(d, "peak_rss_mb"), "(report)"),
    Row(f"{PEER}: CPU us per datapoint, 100 dev x 30 reg at 1 s", "peer",
        lambda d: _ours(d, 100, "cpu_us_per_dp"), "(report)", machine=lambda d: _load(d, 100)),
    Row(f"{PEER}: CPU us per datapoint, 500 dev x 30 reg at 1 s", "peer",
        lambda d: _ours(d, 500, "cpu_us_per_dp"), "<= 10", lambda v: v <= 10,
        lambda d: _load(d, 500)),
    Row(f"{PEER}: CPU us per datapoint, 2,000 dev x 30 reg at 1 s", "peer",
        lambda d: _ours(d, 2000, "cpu_us_per_dp"), "(report)", machine=lambda d: _load(d, 2000)),
    Row("peer: datapoints per CPU-second, ours / ThingsBoard (largest size both at zero loss)",
        "peer", lambda d: _get(d, "ratio_per_cpu_s"), ">= 3x", lambda v: v >= 3,
        lambda d: f"taken at {d.get('devices')} devices; by size: {_ratios(d) or 'n/a'}"),
    Row(f"{PEER}: zero loss at 2,000 dev x 30 reg at 1 s, every reading committed and anchored",
        "peer", lambda d: _ours(d, 2000, "zero_loss"), "yes", lambda v: v is True,
        lambda d: _zero_loss_detail(d, 2000)),
    Row(f"{PEER}: control command-to-ack p99 (ms) under load at 2,000 dev", "peer",
        lambda d: _ours(d, 2000, "control_ms", "p99"), "< 20", lambda v: v < 20,
        lambda d: _commit_floor(d, 2000)),
    Row(f"{PEER}: control commands without an ack at 2,000 dev", "peer",
        lambda d: _ours(d, 2000, "control_ms", "without_ack"), "0", lambda v: v == 0),
    Row(f"{PEER}: peak RSS at 500 dev x 30 reg at 1 s (MB)", "peer",
        lambda d: _ours(d, 500, "peak_rss_mb"), "<= 100", lambda v: v <= 100),
    Row(f"{PEER}: start-up to first datapoint at the broker, 2,000 dev (s)", "peer",
        lambda d: _ours(d, 2000, "startup_to_first_datapoint_s"), "<= 5", lambda v: v <= 5,
        lambda d: _load(d, 2000)),
    Row("control alone: command-to-ack p50 (ms)", "control",
        lambda d: _get(d, "latency_ms", "p50"), "(report)", machine=_commit_floor),
    Row("control alone: command-to-ack p99 (ms)", "control",
        lambda d: _get(d, "latency_ms", "p99"), "< 20", lambda v: v < 20, _commit_floor),
    Row("backlog of 1,000,000 readings drained (s)", "backlog",
        lambda d: _get(d, "drain_s"), "< 60", lambda v: v < 60),
    Row("gas per batch", "gas", lambda d: _get(d, "gas_per_batch"), "constant"),
    Row("portal ingest: readings verified + stored per portal CPU-s (PostgreSQL)", "portal",
        lambda d: _get(d, "ingest", "postgresql", "readings_per_portal_cpu_s"), ">= 50,000",
        lambda v: v >= 50_000),
    Row("portal ingest: readings per CPU-s, portal + PostgreSQL together", "portal",
        lambda d: (_get(d, "ingest", "readings") or 0) / max(
            1e-9, (_get(d, "ingest", "postgresql", "portal_cpu_s") or 0)
            + (_get(d, "ingest", "postgresql", "database_cpu_s") or 0)), "(report)"),
    Row("portal indexer events/s (PostgreSQL)", "portal",
        lambda d: _get(d, "indexer", "postgresql", "events_per_s"), "(report)"),
    Row("portal API p99 (ms), accounts + rankings at 200 req/s, 10M readings", "portal",
        lambda d: _get(d, "api", "load", "p99_ms"), "< 50", lambda v: v < 50),
]

# a scenario's own time limit when longer than --timeout (the peer steps through 3 sizes, each
# gateway waiting up to 2 min for a quiet machine)
TIMEOUTS: dict[str, float] = {"peer": 5400.0}


#: How long a scenario stopped by SIGTERM may take to stop what it started before SIGKILL.
STOP_GRACE_S = 90.0


def run_child(cmd: list[str], timeout_s: float, cwd: Path) -> tuple[int, str, str] | None:
    """Run ``cmd`` to its end: (exit code, stdout, stderr); None when it ran over
    ``timeout_s``. A scenario that runs over, or whose runner is stopped meanwhile, gets
    SIGTERM first, so that it stops the gateway, chain and devices it started
    (`benchmarks.stop_on_sigterm`), and SIGKILL only after `STOP_GRACE_S`: killed at once, as
    ``subprocess.run`` does, it left them running."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=cwd) as p:
        try:
            out, err = p.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop(p)
            return None
        except BaseException:
            _stop(p)
            raise
        return p.returncode, out, err


def _stop(p: subprocess.Popen[str]) -> None:
    p.terminate()
    try:
        p.communicate(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()


def run_one(name: str, quick: bool, timeout_s: float) -> dict[str, Any]:
    module, full, small = SCENARIOS[name]
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [sys.executable, "-m", module, *(small if quick else full), "--out", out]
    t0 = time.perf_counter()
    done = run_child(cmd, timeout_s, HERE.parent)
    if done is None:
        return {"scenario": name, "error": f"timed out after {timeout_s:.0f} s",
                "command": " ".join(cmd)}
    code, stdout, stderr = done
    wall = round(time.perf_counter() - t0, 1)
    try:
        data: dict[str, Any] = json.loads(Path(out).read_text())
    except (OSError, json.JSONDecodeError):
        return {"scenario": name, "error": (stderr or stdout)[-2000:] or f"exit {code}",
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
    lines = ["| measure | value | target | met | machine (limit or load) |",
             "| --- | --- | --- | --- | --- |"]
    for row in TARGETS:
        d = results.get(row.scenario)
        if d is None:
            continue
        if "error" in d:
            lines.append(f"| {row.label} | error: see results.json | {row.target} | no | |")
            continue
        v = row.get(d)
        met = "" if row.target.startswith("(") else (
            "n/a" if v is None else ("yes" if row.ok(v) else "no"))
        when = f" (run of {d['from_run'][:10]})" if d.get("from_run") else ""
        lines.append(f"| {row.label} | {_fmt(v)}{when} | {row.target} | {met} | "
                     f"{row.machine(d) or ''} |")
    return "\n".join(lines) + "\n"


def _previous(path: Path) -> dict[str, dict[str, Any]]:
    """The scenarios of the last full run in ``path``, each marked with that run's date."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("quick") or not isinstance(doc.get("results"), dict):
        return {}
    out: dict[str, dict[str, Any]] = {}
    for name, res in doc["results"].items():
        if isinstance(res, dict):
            out[name] = {**res, "from_run": res.get("from_run") or doc.get("date")}
    return out


def main(argv: list[str] | None = None) -> int:
    stop_on_sigterm()
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    ap.add_argument("--only", nargs="*", choices=sorted(SCENARIOS),
                    help="run these scenarios; the others keep their figures from the last full "
                         "run in results.json (marked `from_run` with its date)")
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
        results[name] = run_one(name, args.quick, max(args.timeout, TIMEOUTS.get(name, 0.0)))
        print(json.dumps(results[name], indent=1)[:2000], flush=True)
    out = Path(args.out_dir)
    if args.only and not args.quick:  # the scenarios not run now keep their last full run
        for name, res in _previous(out / "results.json").items():
            results.setdefault(name, res)
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
