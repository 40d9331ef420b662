"""Acquisition: N simulated Modbus TCP devices x 30 registers polled at 1 s through the real
pollers (the Neuron scenario: 500 devices -> 15,000 tags/s).

    .venv/bin/python -m benchmarks.acquisition [--devices 500] [--seconds 20] [--interval 1]
                                               [--registers 30] [--out FILE] [--profile FILE]

The simulated devices run in a child process (a small asyncio Modbus TCP responder, so the
simulator's cost is not counted and does not compete with pymodbus' server code); the gateway
side is this process: one `ModbusTcpPoller` (the lean client of `drivers/modbus/_lean.py` on
pymodbus's PDU classes, one connection) per device,
30 one-register points each (int16/uint16 with a scale), decoded into `Reading`s and handed to
a sink that counts them. Measured over ``--seconds`` after a warm-up: CPU share of one core of
this process, missed polls, polls and readings per second, poll latency (request to decoded
readings) p50/p99/max, peak RSS. JSON goes to stdout or to ``--out``. ``--profile FILE`` runs
cProfile over the window and writes the top functions to FILE (raw stats to FILE.pstats).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import stop_on_sigterm

# ------------------------------------------------------------------------- the simulated devices


class _Responder(asyncio.Protocol):
    """Answers Modbus TCP reads (FC 3/4) with moving register values; nothing else."""

    requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buf = b""
        self.tick = 0

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        out = []
        while len(buf) >= 12:
            tid, _, length, unit = struct.unpack_from(">HHHB", buf)
            end = 6 + length
            if len(buf) < end:
                break
            fc, address, count = struct.unpack_from(">BHH", buf, 7)
            if fc in (3, 4) and 1 <= count <= 125:
                self.tick += 1
                t = self.tick
                regs = [(address + i + t) & 0x7FFF for i in range(count)]
                body = struct.pack(f">BB{count}H", fc, 2 * count, *regs)
            else:
                body = bytes([fc | 0x80, 1])
            out.append(struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body)
            buf = buf[end:]
            _Responder.requests += 1
        self.buf = buf
        if out:
            self.transport.write(b"".join(out))


async def serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Responder, "127.0.0.1", 0, backlog=2048)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    async with server:
        await server.serve_forever()


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of a process from /proc (Linux), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------- the gateway side


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def measure(devices: int, seconds: float, interval: float, registers: int, port: int,
                  sim_pid: int, warmup: float, profile: Path | None) -> dict[str, Any]:
    from config import ModbusTcpDevice
    from drivers.modbus import ModbusTcpPoller
    from mrv_core import Metrics, Reading

    counted = [0]

    async def sink(rs: list[Reading]) -> None:
        counted[0] += len(rs)

    metrics = Metrics()
    pollers = []
    for i in range(devices):
        points = [{"id": f"d{i}.r{j}", "address": j, "type": "int16" if j % 2 else "uint16",
                   "scale": 0.1, "unit": "kW"} for j in range(registers)]
        dev = ModbusTcpDevice.model_validate({
            "driver": "modbus_tcp", "name": f"dev{i}", "host": "127.0.0.1", "port": port,
            "unit_id": i % 247 + 1, "interval_s": interval, "timeout_s": 1.0, "retries": 0,
            "points": points})
        pollers.append(ModbusTcpPoller(dev, sink, metrics))
    assert all(len(p.plan) == 1 for p in pollers)  # 30 registers, one read per poll
    tasks = [asyncio.create_task(p.run()) for p in pollers]

    # event-loop lag: how late a 10 ms timer fires, a proxy for scheduling pressure
    lags: list[float] = []

    async def lag_probe() -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.01)
            lags.append(loop.time() - t - 0.01)

    probe = asyncio.create_task(lag_probe())
    await asyncio.sleep(warmup)

    for p in pollers:
        p.loop.latencies = []
    lags.clear()
    missed0 = sum(p.missed for p in pollers)
    polls0 = sum(p.polls for p in pollers)
    fails0 = metrics.counters["device_failures"]
    readings0 = counted[0]
    sim0 = _proc_cpu_s(sim_pid)
    prof = None
    if profile is not None:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if prof is not None:
        prof.disable()
    sim_cpu = _proc_cpu_s(sim_pid) - sim0
    missed = sum(p.missed for p in pollers) - missed0
    polls = sum(p.polls for p in pollers) - polls0
    fails = metrics.counters["device_failures"] - fails0
    readings = counted[0] - readings0
    latencies = [x for p in pollers for x in (p.loop.latencies or [])]

    probe.cancel()
    for t in tasks:
        t.cancel()
    await asyncio.gather(probe, *tasks, return_exceptions=True)

    if prof is not None and profile is not None:
        import io
        import pstats

        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(40)
        buf.write("\n\n")
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(40)
        profile.write_text(buf.getvalue())
        prof.dump_stats(f"{profile}.pstats")  # raw, for pstats / snakeviz

    expected = devices * wall / interval
    ms = 1000.0
    return {
        "scenario": "acquisition",
        "devices": devices,
        "registers_per_device": registers,
        "interval_s": interval,
        "seconds": round(wall, 2),
        "tags_per_s_target": round(devices * registers / interval),
        "polls": polls,
        "expected_polls": round(expected),
        "missed_polls": missed,
        "failed_polls": fails,
        "readings_per_s": round(readings / wall),
        "cpu_s": round(cpu, 3),
        "cpu_share": round(cpu / wall, 3),
        "cpu_us_per_reading": round(cpu / readings * 1e6, 2) if readings else None,
        "simulator_cpu_share": round(sim_cpu / wall, 3),
        "poll_latency_ms": {"p50": round(_percentile(latencies, 0.50) * ms, 2),
                            "p99": round(_percentile(latencies, 0.99) * ms, 2),
                            "max": round(max(latencies, default=float("nan")) * ms, 2),
                            "samples": len(latencies)},
        "loop_lag_ms": {"p50": round(_percentile(lags, 0.50) * ms, 2),
                        "p99": round(_percentile(lags, 0.99) * ms, 2)},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }


def run(devices: int, seconds: float, interval: float = 1.0, registers: int = 30,
        warmup: float | None = None, profile: Path | None = None) -> dict[str, Any]:
    if warmup is None:
        warmup = min(3.0, 1.0 + devices / 500)
    sim = subprocess.Popen([sys.executable, "-m", "benchmarks.acquisition", "--serve"],
                           stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    try:
        assert sim.stdout is not None
        port = int(sim.stdout.readline())
        return asyncio.run(measure(devices, seconds, interval, registers, port, sim.pid, warmup,
                                   profile))
    finally:
        sim.terminate()
        try:
            sim.wait(5)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.wait()


def main(argv: list[str] | None = None) -> int:
    stop_on_sigterm()
    ap = argparse.ArgumentParser(prog="python -m benchmarks.acquisition", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--registers", type=int, default=30)
    ap.add_argument("--warmup", type=float, default=None)
    ap.add_argument("--out", help="write the JSON here instead of stdout")
    ap.add_argument("--profile", help="cProfile the measurement window into this file")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve())
        return 0
    import logging

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    result = run(args.devices, args.seconds, args.interval, args.registers, args.warmup,
                 Path(args.profile) if args.profile else None)
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
