"""Command-to-ack latency of the control service on loopback.

    .venv/bin/python -m benchmarks.control_latency [--commands 300] [--out FILE]
    .venv/bin/python benchmarks/control_latency.py  (the same)

One sender publishes signed commands one at a time to a real Mosquitto and waits for each ack.
Each command goes the whole way: broker -> parse, Ed25519 verification, policy, replay-cache
commit (SQLite FULL), audit commit (outbox, SQLite FULL), Modbus read of the present value,
write, read-back (pymodbus against the simulated PLC), audit commit, signed ack -> broker ->
sender. The simulated PLC runs in its own process, as a real one would. Reported as
p50/p90/p99/max in ms, with Mosquitto's ``set_tcp_nodelay true`` (the recommended setting)
and, for comparison, with its default (Nagle on: ~40 ms a hop). Also reported: this machine's
SQLite commit latency with ``synchronous=FULL`` (an fsync), the floor under the p99, since one
such commit (the control journal's write-ahead record) is on every command's path. JSON to
stdout, and to ``--out`` when given.

With ``--beside-devices N`` the commands are sent while ``benchmarks.peer``'s gateway polls N
devices (our side only, without its own control probe) in another process: a control service
in a process of its own, beside that load (design 008, decision 29). The run waits for the
peer's measuring window, measures (nothing through a default broker), then reports the
peer's own figures under ``beside``, and whether the commands fell inside its window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiomqtt

from benchmarks import stop_on_sigterm
from control import Command, ControlConfig, ControlService, public_key_of, sign_bytes, sign_command
from ledger_client import Outbox
from mrv_core import AuditRecord, Metrics
from simulator import ActuatorModel, ActuatorPlant, Mosquitto, free_port, stop_process, wait_port

GW = "bench-gw"
ISSUER = b"\x11" * 32
GATEWAY = b"\x12" * 32
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
ROOT = Path(__file__).resolve().parent.parent


def control_config(plc_port: int, broker_port: int, journal: str = "FULL") -> ControlConfig:
    return ControlConfig.model_validate({
        "broker": {"host": "127.0.0.1", "port": broker_port},
        "journal_synchronous": journal,
        "issuers": [{"key_id": "bench", "public_key": public_key_of(ISSUER).hex(),
                     "points": ["*"]}],
        "devices": [{"id": "plc", "host": "127.0.0.1", "port": plc_port, "unit_id": 1}],
        "points": [{"id": "vent.opening", "device": "plc", "address": 0, "type": "uint16",
                    "scale": 0.1, "unit": "%", "min": 0, "max": 100, "max_step": 10,
                    "rate_limit": {"max_writes": 10_000, "window_s": 1}}],
        "telemetry": {"enabled": False},
    })


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s)) - 1))]


def summary(xs: list[float]) -> dict[str, float]:
    return {"p50": round(_pct(xs, 50), 3), "p90": round(_pct(xs, 90), 3),
            "p99": round(_pct(xs, 99), 3), "max": round(max(xs), 3),
            "mean": round(statistics.fmean(xs), 3)}


async def serve_plc(port: int) -> None:
    """The simulated PLC alone (the benchmark runs it in a child process)."""
    plant = await ActuatorPlant(ActuatorModel(), port=port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await plant.stop()


def sqlite_commit_ms(path: Path, n: int = 200) -> dict[str, float]:
    """This machine's latency of one small SQLite commit with synchronous=FULL (WAL)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        xs = []
        for i in range(n):
            t = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES (?, ?)", (i, "x" * 300))
            db.execute("COMMIT")
            xs.append((time.perf_counter() - t) * 1000)
    finally:
        db.close()
    return summary(xs)


async def _audit_by_category(outbox: Outbox) -> dict[str, int]:
    """What the outbox holds, by audit category and outcome (e.g. ``command:applied``)."""
    n = (await outbox.stats()).records
    out: dict[str, int] = {}
    for r in await outbox.records(1, n) if n else []:
        if isinstance(r, AuditRecord):
            p = json.loads(r.payload)
            status = p.get("status", p.get("verdict", "?"))
            key = f"{r.category}:{status}"
            out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


async def measure(broker: Mosquitto, work: Path, commands: int, warmup: int,
                  journal: str = "FULL") -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    plc_port = free_port()
    plc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.control_latency", "--serve-plc", str(plc_port),
        cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        await wait_port("127.0.0.1", plc_port, 20)
        return await _measure(broker, work, commands, warmup, journal, plc_port)
    finally:
        plc.terminate()
        await asyncio.wait_for(plc.wait(), 10)


async def _measure(broker: Mosquitto, work: Path, commands: int, warmup: int, journal: str,
                   plc_port: int) -> dict[str, Any]:
    outbox = await Outbox.open(work / "outbox.sqlite", GW, synchronous="FULL")
    metrics = Metrics()
    service = ControlService(gateway_id=GW,
                             config=control_config(plc_port, broker.port, journal),
                             data_dir=work, outbox=outbox, metrics=metrics,
                             sign=lambda m: sign_bytes(GATEWAY, m))
    run = asyncio.create_task(service.run())
    acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
    lat: list[float] = []
    statuses: dict[str, int] = {}
    try:
        await asyncio.wait_for(service.ready.wait(), 15)
        async with aiomqtt.Client("127.0.0.1", broker.port, socket_options=NODELAY) as c:
            await c.subscribe(f"mrv/{GW}/ack", qos=1)

            async def listen() -> None:
                async for m in c.messages:
                    body = json.loads(bytes(m.payload))
                    fut = acks.get(body["id"])
                    if fut is not None and not fut.done():
                        fut.set_result(body)

            listener = asyncio.create_task(listen())
            seq = time.time_ns() // 1000
            cpu0 = 0.0
            try:
                for i in range(warmup + commands):
                    if i == warmup:
                        cpu0 = time.process_time()
                    now = time.time_ns() // 1_000_000
                    seq += 1
                    cmd = sign_command(Command(
                        id=f"bench-{seq}", gateway=GW, point="vent.opening",
                        value=str(30 + (i % 2)), unit="%", issued_at_ms=now,
                        not_before_ms=now, expires_at_ms=now + 60_000, seq=seq,
                        issuer="bench"), ISSUER)
                    fut = acks[cmd.id] = asyncio.get_running_loop().create_future()
                    t0 = time.perf_counter()
                    await c.publish(f"mrv/{GW}/cmd", cmd.to_bytes(), qos=1)
                    ack = await asyncio.wait_for(fut, 30)
                    dt = (time.perf_counter() - t0) * 1000
                    del acks[cmd.id]
                    if i >= warmup:
                        lat.append(dt)
                        statuses[ack["status"]] = statuses.get(ack["status"], 0) + 1
                cpu_ms = (time.process_time() - cpu0) * 1000 / max(1, commands)
            finally:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await service.aclose()
        by_category = await _audit_by_category(outbox)
        await outbox.close()
    handled = metrics.counters["control_commands_received"]
    return {"commands": len(lat), "statuses": statuses, "latency_ms": summary(lat),
            "gateway_handling_mean_ms": round(
                metrics.counters["control_command_us"] / max(1, handled) / 1000, 3),
            "cpu_ms_per_command": round(cpu_ms, 3),
            "journal_synchronous": journal,
            "audit_records": metrics.counters["control_audit_records"],
            "audit_by_category": by_category,
            "task_restarts": metrics.counters["task_restarts"]}


class Beside:
    """``benchmarks.peer``'s gateway at ``devices`` devices (our side only, no control probe) in
    a child process for ``seconds`` of measuring: the load the commands are sent beside.
    Entering waits for the peer's window to start; `result` waits for the peer to finish."""

    MARK = "[peer] ours: measuring"

    def __init__(self, devices: int, seconds: float, out: Path, wait_quiet_s: float) -> None:
        self.devices, self.seconds, self.out = devices, seconds, out
        self.wait_quiet_s = wait_quiet_s
        self.lines: list[str] = []
        self.started = threading.Event()
        self.proc: subprocess.Popen[str] | None = None
        self.marked_at: float | None = None  # monotonic time of the peer's "measuring"

    def __enter__(self) -> Beside:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.peer", "--devices", str(self.devices),
             "--ours-only", "--seconds", f"{self.seconds:g}", "--control-probe", "off",
             "--wait-quiet", f"{self.wait_quiet_s:g}", "--out", str(self.out)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._drain, name="beside-log", daemon=True).start()
        if not self.started.wait(600) or self.proc.poll() is not None:
            self.__exit__()
            raise RuntimeError("the peer's gateway did not start measuring: "
                               + "".join(self.lines[-20:]))
        return self

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if line.startswith(self.MARK) and self.marked_at is None:
                self.marked_at = time.monotonic()
                self.started.set()
        self.started.set()  # the peer exited: nobody waits for a mark that will not come

    def result(self, began: float, ended: float) -> dict[str, Any]:
        """The peer's figures once it is done, and when the commands ``began`` and ``ended``
        (monotonic) against its window."""
        assert self.proc is not None
        start = self.marked_at
        code = self.proc.wait(self.seconds + 600)
        if code != 0:
            raise RuntimeError(f"the peer exited with {code}: " + "".join(self.lines[-20:]))
        ours = json.loads(self.out.read_text())["ours"]
        return {"command": f"python -m benchmarks.peer --devices {self.devices} --ours-only "
                           f"--seconds {self.seconds:g} --control-probe off",
                "devices": self.devices, "window_s": self.seconds,
                "commands_inside_window": start is not None and start <= began
                                          and ended - start <= self.seconds,
                "commands_began_after_s": None if start is None else round(began - start, 1),
                "commands_done_after_s": None if start is None else round(ended - start, 1),
                **{k: ours.get(k) for k in ("zero_loss", "delivered_dp_per_s", "cpu_us_per_dp",
                                            "machine_ed25519_signs_per_s",
                                            "machine_busy_cores_before")}}

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc, 120)  # the peer stops what it started


async def bench(commands: int, default_broker_commands: int, journal: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mrv-bench-control-",
                                     dir=os.environ.get("MRV_BENCH_DIR")) as d:
        fsync = sqlite_commit_ms(Path(d) / "fsync.sqlite")
        with Mosquitto(tcp_nodelay=True) as m:
            tuned = await measure(m, Path(d) / "tuned", commands, 20, journal)
        default = None
        if default_broker_commands:
            with Mosquitto(persistence=False, tcp_nodelay=False) as m:
                default = await measure(m, Path(d) / "default", default_broker_commands, 3,
                                        journal)
    out: dict[str, Any] = {
        "scenario": "control", "target_p99_ms": 20.0,
        "path": "publish -> broker -> parse, Ed25519 verify, policy, journal commit, Modbus "
                "read, write, read-back (PLC in another process), signed ack -> broker -> "
                "sender; audit records committed to the outbox by the recorder alongside",
        "broker": "mosquitto set_tcp_nodelay true", **tuned,
        "meets_target": tuned["latency_ms"]["p99"] < 20.0,
        "machine_sqlite_full_commit_ms": fsync,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "note": "cpu_ms_per_command is the gateway process (service, recorder, sender) on all "
                "threads; the PLC and the broker run in other processes",
        "cpus": os.cpu_count(),
    }
    if default is not None:
        out["default_broker"] = {"broker": "mosquitto defaults (set_tcp_nodelay false)",
                                 **default}
    return out


def main(argv: list[str] | None = None) -> int:
    stop_on_sigterm()
    ap = argparse.ArgumentParser(prog="python -m benchmarks.control_latency",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commands", type=int, default=300)
    ap.add_argument("--default-broker-commands", type=int, default=30,
                    help="commands through a default-config broker, for comparison (0: skip)")
    ap.add_argument("--journal-synchronous", choices=["FULL", "NORMAL"], default="FULL",
                    help="control.journal_synchronous (FULL: the default, survives power loss)")
    ap.add_argument("--beside-devices", type=int, default=0, metavar="N",
                    help="send the commands while benchmarks.peer's gateway polls N devices in "
                         "another process (no default-broker run then)")
    ap.add_argument("--beside-seconds", type=float, default=60.0,
                    help="the peer's measuring window; the commands must fit in it")
    ap.add_argument("--beside-wait-quiet", type=float, default=120.0, metavar="S",
                    help="the peer's --wait-quiet: up to S s for an idle machine first")
    ap.add_argument("--out")
    ap.add_argument("--serve-plc", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_plc:
        asyncio.run(serve_plc(args.serve_plc))
        return 0
    if args.beside_devices > 0:
        with tempfile.TemporaryDirectory(prefix="mrv-bench-beside-") as d, \
                Beside(args.beside_devices, args.beside_seconds, Path(d) / "peer.json",
                       args.beside_wait_quiet) as load:
            began = time.monotonic()
            res = asyncio.run(bench(args.commands, 0, args.journal_synchronous))
            res["beside"] = load.result(began, time.monotonic())
    else:
        res = asyncio.run(bench(args.commands, args.default_broker_commands,
                                args.journal_synchronous))
    text = json.dumps(res, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    bad = res["statuses"].get("applied", 0) != res["commands"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
