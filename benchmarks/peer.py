"""Peer side by side: ThingsBoard IoT Gateway and ours, same Modbus -> MQTT scenario, same machine,
same run, same Mosquitto.

    .venv/bin/python -m benchmarks.peer [--devices 100[,300,...]] [--seconds 30] [--warmup 5]
                                        [--quick] [--ours-only] [--tb-qos 0|1] [--wait-quiet S]
                                        [--keep] [--profile FILE] [--out FILE]

N simulated Modbus TCP devices (one port each, 30 uint16 holding registers whose values move on
every read; `benchmarks._peer_sim`, a child process) are polled every second by one gateway at a
time: first ours, then ThingsBoard's, never both at once, so neither steals CPU from the other.

* ours: ``mrv-gateway run CONFIG`` as a subprocess, provisioned against a local anvil chain
  (`simulator.provision`), 30 uint16 points per device, with the control service's live telemetry
  (``mrv/<gw>/telemetry``, QoS 0) going to the Mosquitto. Every datapoint it delivers has also been
  cleaned (each point with the checks `POINT_CHECKS`: range, timestamps, duplicates), committed
  to the SQLite outbox (synchronous=FULL), put in a Merkle batch, signed and anchored on the
  chain: that work is counted in its CPU (anvil's own CPU is not).
* ThingsBoard IoT Gateway 3.8.5 (its own venv, `benchmarks._peer_tb`): Modbus connector, one
  timeseries entry per device over registers 0-29 in one request (its efficient layout), memory
  storage, publishing to ``v1/gateway/telemetry``; a responder answers its getSessionLimits RPC
  with no rate limits.

A subscriber in this process counts the datapoints each gateway delivers, by device and sample
time. After the gateway's first datapoint and a warm-up, the window is ``--seconds`` long: a
datapoint counts when its sample time lies in the window and it arrives by the end of the window
plus a short grace. Reported per gateway: delivered and expected datapoints/s, loss (delivered vs
expected; polls read but not delivered, from gaps in each device's read counter in register 0;
polls behind schedule; incomplete, invalid or late datapoints), CPU seconds of the gateway process
over the window (/proc/<pid>/stat) and per thread, datapoints per CPU-second, sample-to-broker
latency, peak RSS, and the CPU everything else on the machine used meanwhile (other sessions'
work on the same 2 cores skews the figures: ``--wait-quiet`` waits for an idle machine before
each gateway, and ``contended`` flags a window that was not). Top level:
``ratio_per_cpu_s`` = our datapoints per CPU-second / theirs (target >= 3; ours <= 10 us CPU
per datapoint). With several sizes (``--devices 100,500,2000``) every size's figures are kept in
``steps``, each gateway's largest size at zero loss is reported too, and the ratio is taken at
the largest size both handle at zero loss. ``startup_to_first_datapoint_s``: from just before
the gateway process is spawned to its first datapoint's arrival at the broker.

Control probe (ours; ``--control-probe largest|all|off``, ``--control-rate N``): during the
window, signed commands at N/s (default 5) to ``mrv/<gw>/cmd``, each a write with read-back to a
simulated PLC, each answered by a signed ack; command-to-ack p50/p99/max and the commands
without an ack in ``ours.control_ms`` (`benchmarks._peer_control`), sent and timed by a process
of its own (not the benchmark's, whose counting subscriber holds the GIL). By default only at the
largest size: its CPU (2.5-3 ms per command) would weigh on the small sizes' CPU per datapoint.

If ThingsBoard cannot be installed or run, the JSON carries ``"error"`` and ours is still measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # `python benchmarks/peer.py` works too
    sys.path.insert(0, str(ROOT))

from benchmarks import stop_on_sigterm  # noqa: E402
from benchmarks._peer_control import Plc, ProbeProcess, control_block, machine_commit_ms  # noqa: E402
from benchmarks._peer_sim import DeviceSim  # noqa: E402
from benchmarks._peer_tb import (  # noqa: E402
    TELEMETRY_TOPIC,
    SessionLimitsResponder,
    TbGateway,
    TbUnavailable,
    ensure_venv,
    temp_conf_dir,
    wait_for,
    write_config,
)
from benchmarks.acquisition import _percentile, _proc_cpu_s  # noqa: E402
from benchmarks.pipeline import ed25519_limit  # noqa: E402
from simulator import stop_process  # noqa: E402

GATEWAY_ID = "bench-peer"
OUR_TOPIC = f"mrv/{GATEWAY_ID}/telemetry"
GRACE_S = 3.0
START_TIMEOUT_S = 120.0

# (device, sample time ns, valid datapoints, null/flagged datapoints, register 0 or -1)
Datapoints = Iterator[tuple[str, int, int, int, int]]


def log(msg: str) -> None:
    print(f"[peer] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- counting subscriber
#
# The simulated devices answer each read with register 0 = the number of reads on that
# connection so far (`benchmarks.acquisition._Responder`), so register 0 of a delivered poll
# is the poll's sequence number: a gap in it is a poll that was read from the device but never
# delivered, whatever the timing.


def parse_ours(payload: bytes) -> Datapoints:
    """``{"gateway", "readings": [{"seq", "point", "ts_ns", "value", "unit", "quality"}]}``;
    point ids are ``d<i>.r<j>``; a null value (NaN) or a quality flag is not a good datapoint."""
    body = json.loads(payload)
    polls: dict[tuple[str, int], list[int]] = {}
    for r in body["readings"]:
        dev, reg = r["point"].split(".", 1)
        key = (dev, int(r["ts_ns"]))
        c = polls.get(key)
        if c is None:
            c = polls[key] = [0, 0, -1]
        v = r["value"]
        if v is None or r["quality"]:
            c[1] += 1
        else:
            c[0] += 1
            if reg == "r0":
                c[2] = int(v)
    for (dev, ts), (good, bad, tick) in polls.items():
        yield dev, ts, good, bad, tick


def parse_tb(payload: bytes) -> Datapoints:
    """``{"<device>": [{"ts": <ms>, "values": {"r_0": ..., ...}}]}``."""
    body = json.loads(payload)
    for dev, entries in body.items():
        for e in entries:
            values = e.get("values") or {}
            bad = sum(1 for v in values.values() if v is None)
            tick = values.get("r_0")
            yield (dev, int(e["ts"]) * 1_000_000, len(values) - bad, bad,
                   int(tick) if tick is not None else -1)


class Counter:
    """Subscribes to one topic (paho, its own thread) and tallies datapoints per device and
    sample time, with the poll's sequence number and the arrival time of its first datapoint."""

    def __init__(self, broker_port: int, topic: str, parse: Callable[[bytes], Datapoints]) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.topic = topic
        self.parse = parse
        self.lock = threading.Lock()
        # device -> sample ts ns -> [good, bad, register 0, first arrival ns]
        self.polls: dict[str, dict[int, list[int]]] = {}
        self.messages: list[tuple[int, int]] = []  # (arrival ns, bytes)
        self.errors = 0
        self.subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"bench-peer-count-{os.getpid()}-{id(self)}")
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", broker_port)
        self._client.loop_start()
        if not self.subscribed.wait(10):
            raise TimeoutError(f"could not subscribe to {topic}")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        client.subscribe(self.topic, qos=0)

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, rcs: Any, props: Any = None) -> None:
        self.subscribed.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.time_ns()
        try:
            items = list(self.parse(msg.payload))
        except (ValueError, KeyError, TypeError, AttributeError):
            self.errors += 1
            return
        with self.lock:
            self.messages.append((now, len(msg.payload)))
            for dev, ts, good, bad, tick in items:
                d = self.polls.get(dev)
                if d is None:
                    d = self.polls[dev] = {}
                c = d.get(ts)
                if c is None:
                    d[ts] = [good, bad, tick, now]
                else:
                    c[0] += good
                    c[1] += bad
                    c[2] = max(c[2], tick)

    def first_arrival(self) -> bool:
        with self.lock:
            return bool(self.messages)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def analyse(counter: Counter, devices: list[str], t0_ns: int, t1_ns: int, registers: int,
            interval_s: float, arrived_by_ns: int) -> dict[str, Any]:
    """Datapoints sampled in [t0, t1) that arrived by ``arrived_by_ns``.

    Two kinds of loss: ``lost_polls``, read from a device but not delivered (gaps in register
    0's sequence), and ``polls_behind_schedule``, polls a device did not get in the window (at
    least one poll less than the window holds intervals, as a poll may fall either side of an
    edge: a lower bound). Zero loss: neither, and every datapoint complete, valid and on time.
    """
    window_s = (t1_ns - t0_ns) / 1e9
    slots = round(window_s / interval_s)
    good = bad = lost = behind = incomplete = late = extra = reconnects = 0
    polls = 0
    per_device: list[int] = []
    latencies: list[float] = []
    with counter.lock:
        snapshot = {d: dict(counter.polls.get(d, {})) for d in devices}
        msgs = [m for m in counter.messages if t0_ns <= m[0] < t1_ns]
    unknown = sorted(set(counter.polls) - set(devices))
    for dev in devices:
        ticks: list[int] = []
        n = 0
        for ts, (g, b, tick, arrival) in sorted(snapshot[dev].items()):
            if not t0_ns <= ts < t1_ns:
                continue
            if arrival > arrived_by_ns:
                late += g + b
                continue
            n += 1
            good += g
            bad += b
            if g + b < registers:
                incomplete += 1
            elif g + b > registers:
                extra += g + b - registers
            if tick >= 0:
                ticks.append(tick)
            latencies.append((arrival - ts) / 1e6)
        for a, b in itertools.pairwise(ticks):
            if b > a:
                lost += b - a - 1
            else:  # a new connection starts counting again
                reconnects += 1
        polls += n
        per_device.append(n)
        behind += max(0, slots - 1 - n)
    expected = len(devices) * registers * window_s / interval_s
    loss_pct = max(0.0, 100.0 * (1 - good / expected)) if expected else 0.0
    zero_loss = (lost == 0 and behind == 0 and incomplete == 0 and bad == 0 and late == 0)
    return {
        "window_s": round(window_s, 2),
        "expected_dp_per_s": round(expected / window_s, 1),
        "delivered_dp_per_s": round(good / window_s, 1),
        "delivered_datapoints": good,
        "loss_pct": round(loss_pct, 2),
        "zero_loss": zero_loss,
        "lost_polls": lost,
        "polls_behind_schedule": behind,
        "incomplete_polls": incomplete,
        "invalid_datapoints": bad,
        "late_datapoints": late,
        "duplicate_datapoints": extra,
        "polls": polls,
        "polls_per_device": {"min": min(per_device, default=0),
                             "max": max(per_device, default=0), "window_slots": slots},
        "reconnects": reconnects,
        "messages_per_s": round(len(msgs) / window_s, 1),
        "bytes_per_datapoint": round(sum(m[1] for m in msgs) / good, 1) if good else None,
        "sample_to_broker_ms": {"p50": round(_percentile(latencies, 0.5), 1),
                                "p99": round(_percentile(latencies, 0.99), 1),
                                "max": round(max(latencies, default=float("nan")), 1)},
        "unknown_devices": len(unknown),
        "parse_errors": counter.errors,
    }


def _rss_peak_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)  # idle + iowait
    return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_wait_s: float, threshold_cores: float = 0.3) -> float:
    """Wait (up to ``max_wait_s``) until the machine is nearly idle before starting a gateway:
    other work on the same 2 cores (another session's tests or benchmarks) skews CPU per
    datapoint. Returns the busy cores seen last (this process and its idle children count)."""
    deadline = time.monotonic() + max_wait_s
    while True:
        b0 = _machine_busy_s()
        time.sleep(2.0)
        busy = (_machine_busy_s() - b0) / 2.0
        if busy < threshold_cores or time.monotonic() >= deadline:
            if busy >= threshold_cores:
                log(f"machine still busy ({busy:.2f} cores) after {max_wait_s:.0f} s: measuring "
                    "anyway")
            return round(busy, 2)
        log(f"machine busy ({busy:.2f} cores of other work): waiting")
        time.sleep(3.0)


def _thread_cpu(pid: int) -> dict[int, float]:
    """utime + stime of each thread of ``pid`` (Linux), seconds."""
    out: dict[int, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    tck = os.sysconf("SC_CLK_TCK")
    for tid in tids:
        try:
            f = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(f[11]) + int(f[12])) / tck
    return out


def _thread_split(pid: int, before: dict[int, float], after: dict[int, float]) -> dict[str, Any]:
    """CPU over the window: the main thread (ours: the asyncio loop) and the busiest others."""
    delta = {t: after[t] - before.get(t, 0.0) for t in after}
    others = sorted((round(v, 2) for t, v in delta.items() if t != pid), reverse=True)
    return {"main": round(delta.get(pid, 0.0), 2), "busiest_others": others[:4],
            "threads": len(after)}


def measure_window(counter: Counter, gw_pid: int, devices: list[str], *, seconds: float,
                   warmup: float, registers: int, interval_s: float, others: dict[str, int],
                   check: Callable[[], None], spawned_at_ns: int,
                   on_start: Callable[[], None] | None = None,
                   on_end: Callable[[], None] | None = None) -> dict[str, Any]:
    """Wait for the first datapoint, warm up, then measure one window. ``spawned_at_ns``: the
    `time.time_ns` just before the gateway process was started (for the start-up figure)."""
    wait_for(counter.first_arrival, START_TIMEOUT_S, f"first datapoint on {counter.topic}", check)
    with counter.lock:
        started_s = (counter.messages[0][0] - spawned_at_ns) / 1e9
    time.sleep(warmup)
    check()
    if on_start is not None:
        on_start()
    cpu0 = _proc_cpu_s(gw_pid)
    thr0 = _thread_cpu(gw_pid)
    oth0 = {k: _proc_cpu_s(p) for k, p in others.items()}
    self0 = time.process_time()
    busy0 = _machine_busy_s()
    t0 = time.time_ns()
    time.sleep(seconds)
    t1 = time.time_ns()
    cpu = _proc_cpu_s(gw_pid) - cpu0
    if on_end is not None:
        on_end()
    threads = _thread_split(gw_pid, thr0, _thread_cpu(gw_pid))
    oth = {k: round(_proc_cpu_s(p) - oth0[k], 2) for k, p in others.items()}
    oth["counting_subscriber"] = round(time.process_time() - self0, 2)
    busy = _machine_busy_s() - busy0
    # Whatever else ran on the machine meanwhile (other sessions' tests, the kernel): it
    # competes for the same 2 cores, so a large figure here makes the window suspect.
    oth["machine_busy"] = round(busy, 2)
    oth["unaccounted"] = round(busy - cpu - sum(v for k, v in oth.items() if k != "machine_busy"), 2)
    check()
    time.sleep(GRACE_S)
    res = analyse(counter, devices, t0, t1, registers, interval_s, t1 + int(GRACE_S * 1e9))
    window = (t1 - t0) / 1e9
    good = res["delivered_datapoints"]
    res.update({
        # more than a quarter core of foreign load over the window: the figures may be skewed
        "contended": oth["unaccounted"] / window > 0.25,
        # from just before the process was spawned to the first datapoint at the broker (the
        # counting subscriber's receipt): interpreter start, imports, config, connections,
        # first poll, first publish
        "startup_to_first_datapoint_s": round(started_s, 2),
        "cpu_s": round(cpu, 3),
        "cpu_share_of_one_core": round(cpu / window, 3),
        "dp_per_cpu_s": round(good / cpu) if cpu > 0 else None,
        "cpu_us_per_dp": round(cpu / good * 1e6, 2) if good else None,
        "peak_rss_mb": _rss_peak_mb(gw_pid),
        "cpu_s_by_thread": threads,
        "other_cpu_s": oth,
    })
    return res


# --------------------------------------------------------------------------------------- ours


#: The checks of every point of ours: what a plant engineer sets on a meter at the least (a
#: plausible range, the clock, repeated readings). None flags the simulated devices' values
#: (0..32767, moving) and times. Checks with a window (rate, spike, flatline, counter) are
#: not configured: they run in Python (docs/cleaning.md) and cost more a reading.
POINT_CHECKS: dict[str, Any] = {"range": {"min": 0, "max": 40_000},
                                "timestamps": {"max_future_s": 5, "max_age_s": 300},
                                "duplicates": True}


def our_devices(ports: list[int], registers: int, interval_s: float) -> list[dict[str, Any]]:
    return [{"driver": "modbus_tcp", "name": f"dev{i}", "host": "127.0.0.1", "port": port,
             "unit_id": 1, "interval_s": interval_s, "timeout_s": 1.0, "retries": 0,
             "points": [{"id": f"d{i}.r{j}", "address": j, "type": "uint16", "unit": "kW",
                         "checks": POINT_CHECKS}
                        for j in range(registers)]}
            for i, port in enumerate(ports)]


def _health(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return dict(json.loads(r.read()))
    except OSError as e:
        if hasattr(e, "read"):  # 503 still carries the body
            with contextlib.suppress(Exception):
                return dict(json.loads(e.read()))
        return {}


def _our_cli() -> list[str]:
    script = Path(sys.executable).parent / "mrv-gateway"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway._cli"]


def measure_ours(n: int, ports: list[int], *, broker_port: int, sim_pid: int, seconds: float,
                 warmup: float, registers: int, interval_s: float, keep: bool,
                 profile: Path | None = None, quiet_s: float = 0.0,
                 control_rate: float = 0.0,
                 commit_interval_s: float | None = None) -> dict[str, Any]:
    """Our gateway alone; with ``control_rate`` > 0 the control probe sends that many signed
    commands per second to it over the window (`benchmarks._peer_control`).
    ``commit_interval_s``: the gateway's ``outbox.commit_interval_s`` (None: its default)."""
    from ledger_client import Signer
    from simulator import Anvil, free_port, provision

    work = Path(tempfile.mkdtemp(prefix="mrv-bench-peer-ours-"))
    health_port = free_port()
    queue = min(1_000_000, max(100_000, n * registers * 30))
    devices = our_devices(ports[:n], registers, interval_s)
    anvil = Anvil(log=work / "anvil.log").start()
    proc: subprocess.Popen[bytes] | None = None
    counter: Counter | None = None
    plc: Plc | None = None
    probe: ProbeProcess | None = None
    try:
        if control_rate > 0:
            plc = Plc(free_port())
            wait_for(plc.ready, 20, "the simulated PLC's port", plc.check)
        # Without the probe nothing ever connects to the control device: ports[0] stands in.
        prov = asyncio.run(provision(
            work, anvil.url, devices=devices, gateway_id=GATEWAY_ID,
            health_listen=f"127.0.0.1:{health_port}",
            # a batch per second of readings at least (the uplink anchors one batch at a time:
            # about five a second on this machine; docs/performance.md, "Sizing")
            max_records=max(10_000, round(n * registers / interval_s)),
            extra={"control": control_block(broker_port, plc.port if plc else ports[0], queue,
                                            max(control_rate, 1.0)),
                   **({"outbox": {"commit_interval_s": commit_interval_s}}
                      if commit_interval_s is not None else {})}))
        counter = Counter(broker_port, OUR_TOPIC, parse_ours)
        commit_floor = machine_commit_ms(work) if plc is not None else None
        if plc is not None:
            probe = ProbeProcess(broker_port, GATEWAY_ID,
                                 Signer.load(work / "keys" / "ed25519.key").public_key,
                                 rate_per_s=control_rate)
        busy_before = wait_quiet(quiet_s) if quiet_s > 0 else None
        speed = ed25519_limit(0.5)  # the VM's phase: its speed varies up to 2x within minutes
        out = open(work / "gateway.log", "ab")  # noqa: SIM115
        cli = _our_cli() if profile is None else [
            sys.executable, "-m", "cProfile", "-o", str(profile.resolve()), "-m", "gateway._cli"]
        spawned_at_ns = time.time_ns()
        proc = subprocess.Popen([*cli, "run", str(prov.config), "--log-level", "WARNING"],
                                cwd=work, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        out.close()
        p = proc

        def check() -> None:
            if p.poll() is not None:
                tail = (work / "gateway.log").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"mrv-gateway exited with {p.returncode}: {tail}")

        assert anvil.proc is not None
        before: dict[str, Any] = {}
        others = {"anvil": anvil.proc.pid, "simulator": sim_pid, "mosquitto": _mosquitto_pid()}
        if plc is not None:
            others["plc"] = plc.pid
        if probe is not None:
            others["control_probe"] = probe.pid

        def on_start() -> None:
            log(f"ours: measuring {seconds:g} s")  # what `control_latency --beside-devices` awaits
            before.update(_health(health_port))
            if probe is not None:
                probe.start()

        res = measure_window(counter, proc.pid, [f"d{i}" for i in range(n)], seconds=seconds,
                             warmup=warmup, registers=registers, interval_s=interval_s,
                             others=others, check=check, spawned_at_ns=spawned_at_ns,
                             on_start=on_start,
                             on_end=probe.stop_sending if probe is not None else None)
        if probe is not None:
            res["control_ms"] = {**probe.finish(), "machine_sqlite_full_commit_ms": commit_floor}
            check()
        after = _health(health_port)
        res["machine_busy_cores_before"] = busy_before
        res["machine_ed25519_signs_per_s"] = round(speed)
        res["gateway_counters"] = counters = _counter_delta(before, after)
        # Steady state: a saturated daemon keeps telemetry flowing but defers batching and
        # anchoring (the outbox holds the backlog), so its CPU per datapoint would leave out
        # work it still owes. Zero loss for ours also needs the anchoring to keep up.
        accepted = counters.get("readings_accepted", 0)
        res["anchoring_keeps_up"] = accepted > 0 and counters.get("records_anchored", 0) >= \
            0.9 * accepted
        res["zero_loss"] = bool(res["zero_loss"] and res["anchoring_keeps_up"])
        res["outbox"] = after.get("outbox")
        res["components_not_ok"] = {k: v.get("state") for k, v in
                                    (after.get("components") or {}).items()
                                    if v.get("state") != "ok"}
        res["work"] = "poll, decode, clean (range, timestamps, duplicates), commit (SQLite FULL), " \
                      "Merkle batch, Ed25519 sign, anchor on chain, publish live telemetry"
        if probe is not None:
            # the legs come from the gateway's outbox, complete once it has stopped
            stop_process(proc, 60)
            outbox = next(work.rglob("outbox.sqlite"), None)
            if outbox is not None:
                res["control_ms"]["legs_ms"] = probe.legs(outbox)
        return res
    finally:
        if probe is not None:
            probe.close()
        if counter is not None:
            counter.close()
        if proc is not None:
            stop_process(proc, 60)
        if plc is not None:
            plc.stop()
        anvil.stop()
        if keep:
            log(f"ours: work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _counter_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    b = before.get("counters") or {}
    a = after.get("counters") or {}
    keys = [k for k in a if any(s in k for s in ("readings", "telemetry", "missed", "poll",
                                                   "batch", "anchor", "failure", "dropped",
                                                   "control"))]
    return {k: int(a[k]) - int(b.get(k, 0)) for k in sorted(keys)}


_MOSQUITTO_PID = [0]


def _mosquitto_pid() -> int:
    return _MOSQUITTO_PID[0]


# ---------------------------------------------------------------------------------- ThingsBoard


def measure_thingsboard(n: int, ports: list[int], *, broker_port: int, sim_pid: int,
                        seconds: float, warmup: float, registers: int, interval_s: float,
                        qos: int, max_payload_bytes: int, keep: bool,
                        quiet_s: float = 0.0) -> dict[str, Any]:
    ensure_venv(log)
    busy_before = wait_quiet(quiet_s) if quiet_s > 0 else None
    speed = ed25519_limit(0.5)  # the VM's phase: its speed varies up to 2x within minutes
    conf = temp_conf_dir()
    write_config(conf, broker_port=broker_port, ports=ports[:n], registers=registers,
                 interval_s=interval_s, qos=qos, max_payload_bytes=max_payload_bytes)
    responder = SessionLimitsResponder(broker_port)
    counter = Counter(broker_port, TELEMETRY_TOPIC, parse_tb)
    spawned_at_ns = time.time_ns()
    gw = TbGateway(conf).start()
    try:
        res = measure_window(counter, gw.pid, [f"dev{i}" for i in range(n)], seconds=seconds,
                             warmup=warmup, registers=registers, interval_s=interval_s,
                             others={"simulator": sim_pid, "mosquitto": _mosquitto_pid()},
                             check=gw.check, spawned_at_ns=spawned_at_ns)
        res["machine_busy_cores_before"] = busy_before
        res["machine_ed25519_signs_per_s"] = round(speed)
        res["session_limits_answered"] = responder.answered
        res["mqtt_qos"] = qos
        res["max_payload_bytes"] = max_payload_bytes
        res["log_tail"] = gw.tail(600) or None
        res["work"] = "poll, decode, publish (memory storage)"
        return res
    except TimeoutError as e:
        raise TbUnavailable(f"{e}; log: {gw.tail()}") from e
    finally:
        gw.stop()
        counter.close()
        responder.close()
        if keep:
            log(f"thingsboard: config dir kept: {conf}")
        else:
            shutil.rmtree(conf, ignore_errors=True)


# ------------------------------------------------------------------------------------- driver


def _ratio(ours: dict[str, Any] | None, tb: dict[str, Any] | None) -> float | None:
    if not ours or not tb or not ours.get("dp_per_cpu_s") or not tb.get("dp_per_cpu_s"):
        return None
    return round(float(ours["dp_per_cpu_s"]) / float(tb["dp_per_cpu_s"]), 2)


def notes(qos: int, control_rate: float = 5.0) -> list[str]:
    return [
        "Each gateway measured alone (ours first, then ThingsBoard), same devices, same broker, "
        "same machine; CPU = utime+stime of the gateway process over the window "
        "(/proc/<pid>/stat), all its threads.",
        "Ours does more per datapoint than ThingsBoard: cleaning, a durable SQLite commit "
        "(synchronous=FULL), Merkle batching, an Ed25519 signature per batch and anchoring on "
        "an EVM chain (anvil here; anvil's CPU is not counted, the gateway's JSON-RPC client "
        "side is), besides the live MQTT telemetry that is compared. ThingsBoard only polls, "
        "converts and publishes (memory storage: nothing survives a restart).",
        f"MQTT QoS: ours publishes telemetry at QoS 0 (best effort, by design: the durable path "
        f"is the outbox and the chain); ThingsBoard at QoS {qos}"
        + (" (its default), so it also handles a PUBACK per message" if qos == 1 else
           " (set so: its default is 1)") + ".",
        "Payloads differ: ours sends up to 500 readings per message, each with seq, point id, "
        "ns timestamp, unit and quality flags; ThingsBoard sends {device: [{ts, values}]} "
        "packed up to its maxPayloadSizeBytes. bytes_per_datapoint shows the difference.",
        "ThingsBoard layout: one timeseries entry per device over registers 0-29 read in one "
        "request (its most efficient; one entry per register costs it over twice the CPU). "
        "Ours plans the same single 30-register read per device.",
        "Devices: one TCP port each (a child process, not counted), so both gateways hold N "
        "connections; ThingsBoard's connector would share one connection per host:port.",
        "Loss: a datapoint counts when sampled in the window and at the broker within "
        f"{GRACE_S:.0f} s after the window. Zero loss = no lost polls (register 0 of each "
        "simulated device is its read counter, so a gap is a poll read but not delivered), no "
        "device short of its polls by more than one (edge phase), no incomplete, invalid or "
        "late datapoints; for ours also the chain anchoring keeping up (records anchored >= 90% "
        "of readings accepted in the window), as a saturated daemon defers batching and "
        "anchoring to its outbox. loss_pct = 1 - delivered / (N x 30 x window / interval).",
        "2 cores: the simulator, Mosquitto, the counting subscriber (and for ours, anvil) run "
        "beside the gateway; other_cpu_s shows their share, and other_cpu_s.unaccounted what "
        "else ran on the machine in the window (contended: more than a quarter core of it).",
        "startup_to_first_datapoint_s: from just before the gateway process is spawned to the "
        "first datapoint's arrival at the broker (the counting subscriber): interpreter start, "
        "imports, configuration, connections to every device, first poll, first publish.",
        f"Control probe (ours, at the sizes in control_probe; by default the largest): "
        f"{control_rate:g} signed commands/s to mrv/<gw>/cmd (QoS 1) during the window, sent and "
        "timed by a process of its own (other_cpu_s.control_probe), each a "
        "write with read-back to a simulated PLC (its own process), each answered by a signed "
        "ack on mrv/<gw>/ack whose signature is checked; control_ms = command-to-ack latency "
        "p50/p99/max and without_ack (no ack within 10 s of the window's end), beside "
        "machine_sqlite_full_commit_ms (the fsync floor: one FULL commit is on each command's "
        "path) and legs_ms (where the time went: in / decide / write / out, from the audit "
        "records and the acks; ControlProbe.legs). Its CPU is in the gateway's: 2.5-3 ms per "
        "command (measured 2026-12-05: 50 "
        "commands/s vs none, 5 devices, a contended machine), so at 5/s ~0.2 us per datapoint "
        "at 2,000 devices, ~0.9 us at 500, ~4.5 us at 100: by default it runs at the largest "
        "size only, where it is ~2% of a 10 us budget.",
    ]


def run(sizes: list[int], *, seconds: float, warmup: float, registers: int, interval_s: float,
        ours_only: bool, qos: int, max_payload_bytes: int, keep: bool,
        profile: Path | None = None, quiet_s: float = 0.0, control_probe: str = "largest",
        control_rate: float = 5.0, commit_interval_s: float | None = None) -> dict[str, Any]:
    import logging

    from simulator import Mosquitto

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    steps: list[dict[str, Any]] = []
    tb_error: str | None = None
    with Mosquitto(persistence=False) as broker, DeviceSim(max(sizes)) as sim:
        assert broker.proc is not None
        _MOSQUITTO_PID[0] = broker.proc.pid
        for n in sizes:
            step: dict[str, Any] = {"devices": n}
            probing = control_probe == "all" or (control_probe == "largest" and n == max(sizes))
            log(f"ours: {n} devices x {registers} registers, {seconds:.0f} s"
                + (f", control probe {control_rate:g} commands/s" if probing else ""))
            try:
                step["ours"] = measure_ours(
                    n, sim.ports, broker_port=broker.port, sim_pid=sim.pid, seconds=seconds,
                    warmup=warmup, registers=registers, interval_s=interval_s, keep=keep,
                    quiet_s=quiet_s, profile=profile.with_suffix(f".{n}.prof") if profile else None,
                    control_rate=control_rate if probing else 0.0,
                    commit_interval_s=commit_interval_s)
                if profile:
                    step["ours"]["profiled"] = "cProfile on: CPU figures are inflated"
            except Exception as e:  # reported, not raised: the peer's side may still run
                log(f"ours failed: {e}")
                step["ours"] = {"error": f"{type(e).__name__}: {e}"}
            if not ours_only and tb_error is None:
                log(f"thingsboard: {n} devices x {registers} registers, {seconds:.0f} s")
                try:
                    step["thingsboard"] = measure_thingsboard(
                        n, sim.ports, broker_port=broker.port, sim_pid=sim.pid, seconds=seconds,
                        warmup=warmup, registers=registers, interval_s=interval_s, qos=qos,
                        max_payload_bytes=max_payload_bytes, keep=keep, quiet_s=quiet_s)
                except Exception as e:  # TbUnavailable, or anything else it did
                    tb_error = f"ThingsBoard IoT Gateway could not be run: {e}"
                    log(tb_error)
            step["ratio_per_cpu_s"] = _ratio(step.get("ours"), step.get("thingsboard"))
            steps.append(step)

    def largest_zero_loss(side: str) -> int | None:
        ok = [s["devices"] for s in steps if (s.get(side) or {}).get("zero_loss")]
        return max(ok) if ok else None

    both = [s for s in steps if (s.get("ours") or {}).get("zero_loss")
            and (s.get("thingsboard") or {}).get("zero_loss")]
    chosen = max(both, key=lambda s: s["devices"]) if both else steps[0]
    result: dict[str, Any] = {
        "scenario": "peer",
        "devices": chosen["devices"],
        "registers_per_device": registers,
        "interval_s": interval_s,
        "seconds": seconds,
        "ours": chosen.get("ours"),
        "thingsboard": chosen.get("thingsboard"),
        "ratio_per_cpu_s": chosen.get("ratio_per_cpu_s"),
        "target_ratio": 3,
        "target_cpu_us_per_dp": 10,
        "control_probe": {"sizes": control_probe, "rate_per_s": control_rate},
        "notes": notes(qos, control_rate),
    }
    if ours_only:
        result["notes"].insert(0, "--ours-only: ThingsBoard not run; no ratio.")
    if tb_error:
        result["error"] = tb_error
    # every size's figures, ours alone where ThingsBoard did not run or failed
    result["steps"] = steps
    result["max_zero_loss_devices"] = {"ours": largest_zero_loss("ours"),
                                       "thingsboard": largest_zero_loss("thingsboard")}
    if not (both or ours_only or tb_error):
        result["notes"].insert(0, "No size had both gateways at zero loss: the ratio is at the "
                                  "first size.")
    result["python"] = sys.version.split()[0]
    result["cpus"] = os.cpu_count()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.peer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", default="100",
                    help="device count, or a comma-separated list of counts to step through")
    ap.add_argument("--seconds", type=float, default=30.0, help="measurement window per gateway")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--interval", type=float, default=1.0, help="poll interval, s")
    ap.add_argument("--registers", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="a smoke size: 5 devices, 5 s")
    ap.add_argument("--ours-only", action="store_true",
                    help="measure ours only (no ThingsBoard install; for tests)")
    ap.add_argument("--tb-qos", type=int, choices=(0, 1), default=1,
                    help="ThingsBoard's MQTT QoS (its default is 1)")
    ap.add_argument("--tb-max-payload", type=int, default=8196,
                    help="ThingsBoard's maxPayloadSizeBytes (its default is 8196)")
    ap.add_argument("--wait-quiet", type=float, default=120.0, metavar="S",
                    help="before each gateway, wait up to S seconds for the machine to be idle "
                         "(0: don't)")
    ap.add_argument("--control-probe", choices=("largest", "all", "off"), default="largest",
                    help="send signed commands to our gateway during the window at the largest "
                         "size (default), at every size, or not at all")
    ap.add_argument("--control-rate", type=float, default=5.0, metavar="N",
                    help="control probe commands per second")
    ap.add_argument("--commit-interval", type=float, metavar="S",
                    help="our gateway's outbox.commit_interval_s (default: the config's default)")
    ap.add_argument("--keep", action="store_true", help="keep the work and config dirs")
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("--profile", help="run our gateway under cProfile, stats to FILE.<N>.prof "
                    "(inflates its CPU figures)")
    args = ap.parse_args(argv)
    stop_on_sigterm()
    sizes = [int(x) for x in str(args.devices).split(",") if x.strip()]
    seconds, warmup = args.seconds, args.warmup
    if args.quick:
        sizes, seconds, warmup = [5], min(seconds, 5.0), min(warmup, 2.0)
    if not sizes or min(sizes) < 1 or not 1 <= args.registers <= 125:
        ap.error("--devices must be positive counts; --registers 1..125")
    result = run(sorted(set(sizes)), seconds=seconds, warmup=warmup, registers=args.registers,
                 interval_s=args.interval, ours_only=args.ours_only, qos=args.tb_qos,
                 max_payload_bytes=args.tb_max_payload, keep=args.keep,
                 profile=Path(args.profile) if args.profile else None,
                 quiet_s=0.0 if args.quick else args.wait_quiet,
                 control_probe=args.control_probe if args.control_rate > 0 else "off",
                 control_rate=args.control_rate, commit_interval_s=args.commit_interval)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
