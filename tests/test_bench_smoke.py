"""Smoke runs of the benchmarks: they run, and their JSON has the fields the report reads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_acquisition_smoke(tmp_path: Path) -> None:
    out = tmp_path / "acq.json"
    p = subprocess.run([sys.executable, "-m", "benchmarks.acquisition", "--devices", "5",
                        "--seconds", "3", "--warmup", "1", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    d = json.loads(out.read_text())
    assert d["scenario"] == "acquisition" and d["devices"] == 5
    assert d["registers_per_device"] == 30 and d["tags_per_s_target"] == 150
    assert d["failed_polls"] == 0
    assert d["polls"] >= 0.8 * d["expected_polls"] and d["expected_polls"] >= 14
    assert isinstance(d["missed_polls"], int) and d["missed_polls"] <= 1
    assert d["readings_per_s"] >= 0.8 * 150
    assert 0 < d["cpu_share"] < 1 and 0 <= d["simulator_cpu_share"] < 1
    lat = d["poll_latency_ms"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"] and lat["samples"] == d["polls"]
    assert 20 < d["peak_rss_mb"] < 1000


def test_control_smoke(tmp_path: Path) -> None:
    out = tmp_path / "control.json"
    p = subprocess.run([sys.executable, "-m", "benchmarks.control_latency", "--commands", "30",
                        "--default-broker-commands", "3", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    d = json.loads(out.read_text())
    assert d["scenario"] == "control" and d["target_p99_ms"] == 20.0
    assert d["commands"] == 30 and d["statuses"] == {"applied": 30}
    assert d["audit_records"] == 2 * (30 + 20)  # command + write records, warm-up included
    assert d["audit_by_category"] == {"command:accepted": 50, "write:applied": 50}
    assert d["task_restarts"] == 0
    lat = d["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["p50"] < 500  # tolerant: a shared 2-core machine; the target is for the report
    assert isinstance(d["meets_target"], bool)
    assert d["machine_sqlite_full_commit_ms"]["p50"] > 0
    assert d["default_broker"]["statuses"] == {"applied": 3}


def test_control_beside_smoke(tmp_path: Path) -> None:
    """Control in a process of its own beside the peer scenario's gateway (design 008,
    decision 29): the commands are sent inside the peer's measuring window, and the peer's
    figures come back with them."""
    out = tmp_path / "beside.json"
    p = subprocess.run([sys.executable, "-m", "benchmarks.control_latency", "--commands", "10",
                        "--beside-devices", "5", "--beside-seconds", "30",
                        "--beside-wait-quiet", "0", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    d = json.loads(out.read_text())
    assert d["commands"] == 10 and d["statuses"] == {"applied": 10}
    assert "default_broker" not in d  # beside a load, the tuned broker only
    b = d["beside"]
    assert b["devices"] == 5 and b["window_s"] == 30.0
    assert b["command"].startswith("python -m benchmarks.peer --devices 5 --ours-only")
    assert b["commands_inside_window"] is True
    assert 0 <= b["commands_began_after_s"] < b["commands_done_after_s"] <= 30
    assert b["delivered_dp_per_s"] > 0 and b["cpu_us_per_dp"] > 0
    assert isinstance(b["zero_loss"], bool) and b["machine_ed25519_signs_per_s"] > 0


def test_gas_smoke(tmp_path: Path) -> None:
    """Gas per batch is the same for 1 and 20,000 readings; the rate run anchors every batch."""
    out = tmp_path / "gas.json"
    p = subprocess.run([sys.executable, "-m", "benchmarks.gas", "--sizes", "1,1000,20000",
                        "--reps", "2", "--rate-batches", "10", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["scenario"] == "gas" and r["evm_version"] == "paris"
    by_size = r["gas_per_batch_by_size"]
    assert set(by_size) == {"1", "1000", "20000"}
    assert max(by_size.values()) - min(by_size.values()) < 1_000 and r["gas_constant"] is True
    assert 50_000 < r["gas_per_batch"] < 300_000
    assert r["first_batch_gas"] > r["gas_per_batch"]  # zero-to-nonzero slots cost more
    assert r["gas_per_reading_by_size"]["20000"] == round(by_size["20000"] / 20_000, 3) < 10
    assert r["rate"]["batches"] == 10 and r["rate"]["pipelined_all_succeeded"] is True
    assert r["rate"]["sequential_batches_per_s"] > 0 and r["rate"]["pipelined_batches_per_s"] > 0


def test_peer_smoke(tmp_path: Path) -> None:
    """Our side of the peer scenario only (the test suite never installs ThingsBoard), with the
    control probe: signed commands to a real PLC through the daemon, every one acknowledged."""
    out = tmp_path / "peer.json"
    p = subprocess.run([sys.executable, "-m", "benchmarks.peer", "--ours-only", "--quick",
                        "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["scenario"] == "peer" and r["devices"] == 5
    assert "error" not in r
    assert r["thingsboard"] is None and r["ratio_per_cpu_s"] is None
    assert "ratio_per_cpu_s" in r and r["notes"]
    assert r["target_ratio"] == 3 and r["target_cpu_us_per_dp"] == 10
    assert [s["devices"] for s in r["steps"]] == [5] and r["steps"][0]["ours"] == r["ours"]
    ours = r["ours"]
    assert ours["expected_dp_per_s"] == 150.0
    assert ours["delivered_datapoints"] > 0 and ours["delivered_dp_per_s"] > 0
    assert ours["cpu_s"] > 0 and ours["dp_per_cpu_s"] > 0
    for key in ("loss_pct", "lost_polls", "polls_behind_schedule", "zero_loss",
                "cpu_share_of_one_core", "sample_to_broker_ms", "peak_rss_mb"):
        assert key in ours
    assert 0 < ours["startup_to_first_datapoint_s"] < 120
    assert ours["machine_ed25519_signs_per_s"] > 0  # the VM's phase, measured just before
    counters = ours["gateway_counters"]
    assert counters["readings_accepted"] > 0
    # the control probe: 5 commands/s over the 5 s window, each applied and acked, signed
    c = ours["control_ms"]
    sent = c["commands_sent"]
    assert c["rate_per_s"] == 5.0 and 20 <= sent <= 30
    assert c["acked"] == sent and c["without_ack"] == 0
    assert c["statuses"] == {"applied": sent} and c["bad_signatures"] == 0
    assert c["duplicate_acks"] == 0 and c["stray_acks"] == 0 and c["unparsable_acks"] == 0
    assert 0 < c["p50"] <= c["p99"] <= c["max"]
    assert c["machine_sqlite_full_commit_ms"]["p50"] > 0
    # where each command's time went, from its audit records and its ack (every command)
    legs = c["legs_ms"]
    assert legs["commands"] == sent
    assert legs["in"]["p50"] > -1.0  # the daemon's times are whole ms, the probe's are not
    assert 0 <= legs["decide"]["p50"] <= legs["decide"]["p99"] < c["max"]
    assert 0 <= legs["write"]["p50"] <= legs["write"]["p99"] < c["max"]
    assert 0 <= legs["out"]["p50"] <= legs["out"]["p99"] < c["max"] + 1
    # the daemon's own count agrees: it received and applied exactly the probe's commands
    assert counters["control_commands_received"] == sent
    assert counters["control_ack_applied"] == sent
    assert "plc" in ours["other_cpu_s"]


def test_peer_without_control_probe(tmp_path: Path) -> None:
    """``--control-probe off``: no commands, no PLC, the same figures otherwise."""
    out = tmp_path / "peer.json"
    p = subprocess.run([sys.executable, "-m", "benchmarks.peer", "--ours-only", "--devices", "2",
                        "--seconds", "2", "--warmup", "1", "--wait-quiet", "0",
                        "--control-probe", "off", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(out.read_text())
    ours = r["ours"]
    assert "control_ms" not in ours and "plc" not in ours["other_cpu_s"]
    assert r["control_probe"]["sizes"] == "off"
    assert ours["delivered_datapoints"] > 0
    assert ours["gateway_counters"].get("control_commands_received", 0) == 0


def _children(pid: int) -> dict[int, str]:
    """The live processes whose parent is ``pid``, with their command lines (``/proc``)."""
    kids: dict[int, str] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if int(ppid) == pid and state != "Z":
            kids[int(d)] = cmd
    return kids


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"  # a zombie has exited


def test_peer_stopped_by_kill_stops_what_it_started(tmp_path: Path) -> None:
    """SIGTERM to the benchmark (``kill``) stops the gateway, the chain, the broker and the
    devices it started, as Ctrl-C does; none is left running."""
    with open(tmp_path / "stderr", "wb") as err:
        p = subprocess.Popen([sys.executable, "-m", "benchmarks.peer", "--ours-only", "--devices",
                              "2", "--seconds", "120", "--warmup", "1", "--wait-quiet", "0",
                              "--control-probe", "off"],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    kids: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and p.poll() is None:
            kids = _children(p.pid)
            if any(" run " in c and "gateway" in c for c in kids.values()):
                break
            time.sleep(0.2)
        assert any(" run " in c and "gateway" in c for c in kids.values()), (
            kids, (tmp_path / "stderr").read_text()[-2000:])
        assert any("anvil" in c for c in kids.values()), kids
        time.sleep(2)  # the window has begun: the gateway is polling
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=120) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(k) for k in kids):
            time.sleep(0.2)
        assert not [c for k, c in kids.items() if _alive(k)], (
            (tmp_path / "stderr").read_text()[-2000:])
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for k in kids:  # what a failing run left behind must not outlive the test
            if _alive(k):
                os.kill(k, signal.SIGKILL)


def test_a_scenario_over_its_time_gets_sigterm_first(tmp_path: Path) -> None:
    """`benchmarks.run` stops a scenario that runs over its time with SIGTERM, so that the
    scenario stops what it started (SIGKILL, as ``subprocess.run`` sends, left it running)."""
    from benchmarks.run import run_child

    marker = tmp_path / "stopped"
    code = ("import pathlib, signal, sys, time\n"
            "def stop(signum, frame):\n"
            f"    pathlib.Path({str(marker)!r}).write_text(str(signum))\n"
            "    sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, stop)\n"
            "time.sleep(60)\n")
    t0 = time.monotonic()
    assert run_child([sys.executable, "-c", code], 1.5, tmp_path) is None
    assert marker.read_text() == str(int(signal.SIGTERM))
    assert time.monotonic() - t0 < 30
    assert run_child([sys.executable, "-c", "print('out')"], 30, tmp_path) == (0, "out\n", "")


def _run_module(args: list[str], tmp_path: Path, timeout: float = 240) -> dict[str, object]:
    out = tmp_path / "out.json"
    p = subprocess.run([sys.executable, "-m", *args, "--out", str(out)], capture_output=True,
                       text=True, timeout=timeout, check=False, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    data: dict[str, object] = json.loads(out.read_text())
    return data


def test_pipeline_smoke(tmp_path: Path) -> None:
    d = _run_module(["benchmarks.pipeline", "--readings", "3000", "--chunk", "500",
                     "--batch", "1000", "--repeat", "3"], tmp_path)
    assert d["scenario"] == "pipeline" and d["readings"] == 3000 and d["batches"] == 3
    assert isinstance(d["readings_per_cpu_s"], int) and d["readings_per_cpu_s"] > 0
    runs = d["runs_readings_per_cpu_s"]
    assert isinstance(runs, list) and len(runs) == 3
    assert d["readings_per_cpu_s"] == sorted(runs)[1]  # the median is reported
    assert d["signed_of_3_sampled"] == 0
    signed = d["per_reading_signatures"]
    assert signed["readings"] == 3000 and signed["batches"] == 3
    assert signed["signed_of_3_sampled"] == 3  # first, middle and last reading carry one
    assert signed["readings_per_cpu_s"] == sorted(signed["runs_readings_per_cpu_s"])[1]
    assert signed["ratio_to_ed25519_limit"] > 0
    limits = d["limits"]
    assert isinstance(limits, dict) and limits["ed25519_signs_per_s"] > 0


def test_backlog_smoke(tmp_path: Path) -> None:
    d = _run_module(["benchmarks.backlog", "--readings", "2000", "--batch", "500"], tmp_path)
    assert d["scenario"] == "backlog_drain" and d["batches"] == 4
    assert isinstance(d["drain_s"], float) and d["drain_s"] > 0
    assert isinstance(d["gas_last_batch"], int) and d["gas_last_batch"] > 100_000


def test_bench_runner_quick_writes_json_and_table(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--only", "pipeline",
                        "--out-dir", str(tmp_path)], capture_output=True, text=True,
                       timeout=240, check=False, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["quick"] is True and "pipeline" in doc["results"]
    assert "error" not in doc["results"]["pipeline"], doc["results"]["pipeline"]
    md = (tmp_path / "results.md").read_text()
    assert "pipeline readings/s/core" in md


def test_portal_smoke(tmp_path: Path) -> None:
    """The portal benchmark: ingest of real submissions, the indexer over anchored batches, the
    API under load on a filled PostgreSQL; every answer a 200, every reading stored."""
    out = tmp_path / "portal.json"
    p = subprocess.run([sys.executable, "-m", "benchmarks.portal", "--readings", "60000",
                        "--seconds", "2", "--rate", "50", "--batches", "20",
                        "--ingest-batches", "2", "--ingest-batch-size", "500",
                        "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    d = json.loads(out.read_text())
    ing = d["ingest"]
    assert ing["readings"] == 1000
    for db in ("postgresql", "sqlite"):
        assert ing[db]["readings_per_s"] > 0 and ing[db]["readings_per_portal_cpu_s"] > 0
    ix = d["indexer"]
    for db in ("postgresql", "sqlite"):
        # two events per anchored batch, and the deployment's own (roles, registration)
        assert ix[db]["events"] >= 2 * 20 and ix[db]["events_per_s"] > 0
    assert ix["postgresql"]["events"] == ix["sqlite"]["events"]
    assert d["dataset"]["readings"] >= 60000
    api = d["api"]
    assert api["load"]["sent"] == 100 and api["load"]["ok"] == 100 and not api["load"]["errors"]
    assert api["cold"]["errors"] == {} and api["load"]["p99_ms"] > 0


def test_bench_table_reads_each_peer_size() -> None:
    """The table's peer rows read the figures of their own size from ``steps``, the ratio from
    the size both gateways handled at zero loss, and the control probe from 2,000 devices."""
    from benchmarks.run import table

    def ours(us: float, rss: float, zero: bool,
             control: dict[str, object] | None) -> dict[str, object]:
        o: dict[str, object] = {
            "cpu_us_per_dp": us, "peak_rss_mb": rss, "zero_loss": zero, "window_s": 10.0,
            "startup_to_first_datapoint_s": us / 2, "contended": False,
            "other_cpu_s": {"unaccounted": 1.0}, "delivered_dp_per_s": 1.0,
            "expected_dp_per_s": 1.0, "gateway_counters": {}}
        if control is not None:
            o["control_ms"] = control
        return o

    steps = [
        {"devices": 100, "ours": {**ours(11.5, 70.0, True, None),
                                  "machine_ed25519_signs_per_s": 52868},
         "ratio_per_cpu_s": 2.5},
        {"devices": 500, "ours": ours(9.5, 101.0, True, None), "ratio_per_cpu_s": 3.5},
        {"devices": 2000, "ours": ours(8.5, 300.0, False, {
            "p99": 25.0, "without_ack": 2,
            "machine_sqlite_full_commit_ms": {"p50": 0.5, "p99": 4.0}}),
         "ratio_per_cpu_s": None},
    ]
    peer = {"devices": 500, "ratio_per_cpu_s": 3.5, "ours": steps[1]["ours"], "steps": steps}
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:]
            for line in table({"peer": peer}).splitlines()[2:]}

    def row(fragment: str) -> list[str]:
        (hit,) = [v for k, v in rows.items() if fragment in k]
        return hit

    assert row("CPU us per datapoint, 100 dev")[:3] == ["11.5", "(report)", ""]
    assert row("CPU us per datapoint, 500 dev")[:3] == ["9.5", "<= 10", "yes"]
    assert row("CPU us per datapoint, 2,000 dev")[0] == "8.5"
    assert "other load 0.10 cores" in row("CPU us per datapoint, 500 dev")[3]
    assert "machine speed 52,868 Ed25519 signs/s" in row("CPU us per datapoint, 100 dev")[3]
    assert "machine speed" not in row("CPU us per datapoint, 500 dev")[3]  # not measured
    ratio = row("ours / ThingsBoard")
    assert ratio[:3] == ["3.5", ">= 3x", "yes"]
    assert "taken at 500 devices" in ratio[3] and "100: 2.5x, 500: 3.5x" in ratio[3]
    assert row("zero loss at 2,000")[:3] == ["no", "yes", "no"]
    p99 = row("control command-to-ack p99")
    assert p99[:3] == ["25.0", "< 20", "no"] and "p99 4.0 ms" in p99[3]
    assert row("without an ack")[:3] == ["2", "0", "no"]
    assert row("peak RSS at 500")[:3] == ["101.0", "<= 100", "no"]
    assert row("start-up")[:3] == ["4.25", "<= 5", "yes"]


def test_bench_runner_only_keeps_the_other_scenarios_of_the_last_full_run(tmp_path: Path) -> None:
    """`--only` re-measures what it names; the rest keeps the last full run's figures, dated."""
    from benchmarks.run import _previous, table

    last = {"machine": {}, "quick": False, "date": "2026-12-01T10:00:00Z",
            "results": {"gas": {"scenario": "gas", "gas_per_batch": 148_604},
                        "pipeline": {"scenario": "pipeline", "readings_per_cpu_s": 1}}}
    (tmp_path / "results.json").write_text(json.dumps(last))
    prev = _previous(tmp_path / "results.json")
    assert prev["gas"]["from_run"] == "2026-12-01T10:00:00Z"
    assert "148,604 (run of 2026-12-01)" in table({"gas": prev["gas"]})
    (tmp_path / "results.json").write_text(json.dumps({**last, "quick": True}))
    assert _previous(tmp_path / "results.json") == {}  # a quick run is never carried over
    (tmp_path / "results.json").write_text("not json")
    assert _previous(tmp_path / "results.json") == {}
