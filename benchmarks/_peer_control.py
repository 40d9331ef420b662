"""The control probe of `benchmarks.peer`: signed commands at a steady rate to our gateway while
its acquisition is measured, each answered by a signed ack; command-to-ack latency under load.

The actuator is a real Modbus TCP PLC (`simulator.ActuatorPlant` with an `ActuatorModel`, served
by ``python -m benchmarks.control_latency --serve-plc PORT`` in a child process, as in the control
benchmark); the writable point is its vent opening (holding register 0, scale 0.1). Commands
alternate between two values one step apart, so each is a real write and read-back. The sender
is a paho client with its own network thread plus one sender thread, in a process of its own
(`ProbeProcess`, ``python -m benchmarks._peer_control --probe ...``; its CPU is reported apart).
In the benchmark's process it shared the GIL with the counting subscriber, which parses every
telemetry message (at 2,000 devices about 0.1 core, each message's JSON held the GIL ~1 ms): a
command's publish and its ack's arrival waited for that, up to Python's 5 ms switch interval at
each end, and the latency measured the benchmark as well as the gateway.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.control_latency import sqlite_commit_ms
from control import Command, public_key_of, sign_command, verify_ack
from simulator import stop_process

ROOT = Path(__file__).resolve().parent.parent
ISSUER_SECRET = b"\x11" * 32
ISSUER_ID = "bench"
POINT = "vent.opening"
VALUES = ("30", "31")  # the PLC starts at 20 % (its local setpoint): 30 is within max_step 10


def control_block(broker_port: int, plc_port: int, queue: int,
                  rate_per_s: float) -> dict[str, Any]:
    """The daemon's ``control:`` section: one issuer (the probe's key), the PLC, its vent point
    with a rate limit twice the probe's rate (never the limit that refuses a probe command), and
    live telemetry (what the peer comparison counts)."""
    per_min = max(60, math.ceil(rate_per_s * 60 * 2))
    return {
        "broker": {"host": "127.0.0.1", "port": broker_port},
        "issuers": [{"key_id": ISSUER_ID, "public_key": public_key_of(ISSUER_SECRET).hex(),
                     "points": [POINT]}],
        "devices": [{"id": "plc", "host": "127.0.0.1", "port": plc_port, "unit_id": 1}],
        "points": [{"id": POINT, "device": "plc", "address": 0, "type": "uint16",
                    "scale": 0.1, "unit": "%", "min": 0, "max": 100, "max_step": 10,
                    "rate_limit": {"max_writes": per_min, "window_s": 60}}],
        "telemetry": {"enabled": True, "queue": queue, "max_per_message": 500},
    }


class Plc:
    """The simulated PLC in a child process (its CPU is reported apart, not the gateway's)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.control_latency", "--serve-plc", str(port)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ready(self) -> bool:
        """The PLC listens (for `benchmarks._peer_tb.wait_for`)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the simulated PLC exited with {self.proc.returncode}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop_process(self.proc, 10)


#: ``records.kind`` of an audit record (docs/outbox.md)
KIND_AUDIT = 3


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return round(s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))], 2)


class ControlProbe:
    """Publishes signed commands to ``mrv/<gw>/cmd`` at ``rate_per_s`` (QoS 1, a fixed schedule:
    a slow ack does not delay the next command) and matches each signed ack on ``mrv/<gw>/ack``
    by command id. Latency: from just before the publish to the ack's arrival (perf_counter)."""

    def __init__(self, broker_port: int, gateway_id: str, gateway_public_key: bytes, *,
                 rate_per_s: float) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.gateway_id = gateway_id
        self.key = gateway_public_key
        self.rate = rate_per_s
        self.cmd_topic = f"mrv/{gateway_id}/cmd"
        self.ack_topic = f"mrv/{gateway_id}/ack"
        self.lock = threading.Lock()
        self.all_acked = threading.Condition(self.lock)
        self.sent: dict[str, float] = {}  # id -> perf_counter at publish
        self.acks: dict[str, tuple[float, str, bool]] = {}  # id -> (ms, status, signature ok)
        # wall clock (ms, the daemon's clock too: one machine) for the legs (`legs`)
        self.sent_wall_ms: dict[str, float] = {}
        self.ack_wall_ms: dict[str, tuple[float, int]] = {}  # id -> (arrival, the ack's ts_ms)
        self.duplicate_acks = 0
        self.stray_acks = 0
        self.unparsable = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = itertools.count(time.time_ns() // 1000)
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"bench-peer-control-{os.getpid()}-{id(self)}")
        self._client.on_socket_open = self._on_socket_open
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", broker_port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise TimeoutError(f"could not subscribe to {self.ack_topic}")

    @staticmethod
    def _on_socket_open(client: Any, userdata: Any, sock: Any) -> None:
        # As the control benchmark's sender: without TCP_NODELAY Nagle adds ~40 ms to a hop.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        client.subscribe(self.ack_topic, qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.perf_counter()
        wall_ms = time.time_ns() / 1e6
        try:
            body = json.loads(msg.payload)
            cid = body["id"]
            status = str(body["status"])
            ts_ms = int(body["ts_ms"])
        except (ValueError, KeyError, TypeError):
            self.unparsable += 1
            return
        ok = verify_ack(body, self.key) and body.get("gateway") == self.gateway_id
        with self.lock:
            t0 = self.sent.get(cid)
            if t0 is None:
                self.stray_acks += 1
            elif cid in self.acks:
                self.duplicate_acks += 1
            else:
                self.acks[cid] = ((now - t0) * 1000, status, ok)
                self.ack_wall_ms[cid] = (wall_ms, ts_ms)
                if len(self.acks) == len(self.sent):
                    self.all_acked.notify_all()

    def _send(self, i: int) -> None:
        now_ms = time.time_ns() // 1_000_000
        seq = next(self._seq)
        cmd = sign_command(Command(
            id=f"probe-{seq}", gateway=self.gateway_id, point=POINT, value=VALUES[i % 2],
            unit="%", issued_at_ms=now_ms, not_before_ms=now_ms, expires_at_ms=now_ms + 60_000,
            seq=seq, issuer=ISSUER_ID), ISSUER_SECRET)
        payload = cmd.to_bytes()
        with self.lock:
            self.sent[cmd.id] = time.perf_counter()
            self.sent_wall_ms[cmd.id] = time.time_ns() / 1e6
        self._client.publish(self.cmd_topic, payload, qos=1)

    def _run(self) -> None:
        period = 1.0 / self.rate
        due = time.monotonic()
        for i in itertools.count():
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            self._send(i)
            due += period

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="control-probe", daemon=True)
        self._thread.start()

    def stop_sending(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def finish(self, ack_timeout_s: float = 10.0) -> dict[str, Any]:
        """Stop sending, wait (up to ``ack_timeout_s``) for the acks still due, and summarise."""
        self.stop_sending()
        with self.lock:
            self.all_acked.wait_for(lambda: len(self.acks) >= len(self.sent), ack_timeout_s)
            sent = len(self.sent)
            acks = dict(self.acks)
        lat = [ms for ms, _, _ in acks.values()]
        statuses: dict[str, int] = {}
        for _, status, _ in acks.values():
            statuses[status] = statuses.get(status, 0) + 1
        return {
            "p50": _pct(lat, 0.50), "p99": _pct(lat, 0.99),
            "max": round(max(lat), 2) if lat else None,
            "commands_sent": sent, "acked": len(acks), "without_ack": sent - len(acks),
            "statuses": dict(sorted(statuses.items())),
            "bad_signatures": sum(1 for _, _, ok in acks.values() if not ok),
            "duplicate_acks": self.duplicate_acks, "stray_acks": self.stray_acks,
            "unparsable_acks": self.unparsable,
            "rate_per_s": self.rate, "ack_timeout_s": ack_timeout_s,
        }

    def legs(self, outbox: Path) -> dict[str, Any]:
        """Where each acknowledged command's time went, from what the gateway wrote anyway:
        the command's audit record (``received_ms``, ``decided_ms``), its write record (its
        ``ts_ns``, once written and read back) and the ack's ``ts_ms``, beside this probe's
        wall clock at the publish and at the ack's arrival. Read from the gateway's outbox
        after it stopped. Legs in ms (p50, p90, p99): ``in`` (publish to taken up: the broker,
        the daemon's MQTT session and admission queue), ``decide`` (the journal entry and the
        read of the present value, overlapping), ``write`` (the Modbus write and read-back),
        ``out`` (the ack's signing, publish and way back). The daemon's times are whole
        milliseconds, so a leg is ±1 ms."""
        with self.lock:
            sent, acked = dict(self.sent_wall_ms), dict(self.ack_wall_ms)
        return legs_from_outbox(sent, acked, outbox)

    def close(self) -> None:
        self._stop.set()
        self._client.loop_stop()
        self._client.disconnect()


def legs_from_outbox(sent: dict[str, float], acked: dict[str, tuple[float, int]],
                     outbox: Path) -> dict[str, Any]:
    """`ControlProbe.legs` from the probe's wall clocks (command id -> publish; command id ->
    (ack arrival, the ack's ``ts_ms``)) and the gateway's outbox."""
    import sqlite3

    received: dict[str, tuple[int, int]] = {}
    written: dict[str, float] = {}
    db = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)
    try:
        for subject, ts_ns, category, extra in db.execute(
                "SELECT point_id, ts_ns, source, extra FROM records WHERE kind = ?",
                (KIND_AUDIT,)):
            try:
                payload = json.loads(extra)
            except (TypeError, ValueError):
                continue
            if category == "command" and subject in acked and "decided_ms" in payload:
                received[subject] = (int(payload["received_ms"]), int(payload["decided_ms"]))
            elif category == "write" and payload.get("command") in acked:
                written[payload["command"]] = ts_ns / 1e6
    finally:
        db.close()
    legs: dict[str, list[float]] = {"in": [], "decide": [], "write": [], "out": []}
    for cid, (arrived, ack_ms) in acked.items():
        if cid not in received or cid not in written or cid not in sent:
            continue
        got, decided = received[cid]
        legs["in"].append(got - sent[cid])
        legs["decide"].append(decided - got)
        legs["write"].append(written[cid] - decided)
        legs["out"].append(arrived - ack_ms)
    out: dict[str, Any] = {"commands": len(legs["in"])}
    for name, xs in legs.items():
        out[name] = {"p50": _pct(xs, 0.50), "p90": _pct(xs, 0.90), "p99": _pct(xs, 0.99)}
    return out


class ProbeProcess:
    """A `ControlProbe` in a child process of its own (``python -m benchmarks._peer_control
    --probe``), driven over its stdin and stdout, with the same methods: its GIL is not the
    benchmark's, so the counting subscriber's work never delays a command or an ack's arrival,
    and its CPU is reported apart (``pid``)."""

    def __init__(self, broker_port: int, gateway_id: str, gateway_public_key: bytes, *,
                 rate_per_s: float) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.sent_wall_ms: dict[str, float] = {}
        self.ack_wall_ms: dict[str, tuple[float, int]] = {}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._peer_control", "--probe", str(broker_port),
             gateway_id, gateway_public_key.hex(), repr(float(rate_per_s))],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self._reply()
        if ready != "ready":
            self.close()
            raise RuntimeError(f"the control probe did not start: {ready!r}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _reply(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def _ask(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def start(self) -> None:
        if self._ask("start") != "ok":
            raise RuntimeError("the control probe did not start sending")

    def stop_sending(self) -> None:
        self._ask("stop")

    def finish(self, ack_timeout_s: float = 10.0) -> dict[str, Any]:
        data = json.loads(self._ask(f"finish {ack_timeout_s!r}"))
        self.sent_wall_ms = data["sent_wall_ms"]
        self.ack_wall_ms = {k: (float(a), int(t)) for k, (a, t) in data["ack_wall_ms"].items()}
        return dict(data["summary"])

    def legs(self, outbox: Path) -> dict[str, Any]:
        return legs_from_outbox(self.sent_wall_ms, self.ack_wall_ms, outbox)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self._ask("close")
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _serve_probe(argv: list[str]) -> int:
    """The child of `ProbeProcess`: one `ControlProbe`, commands on stdin, one line each out."""
    broker_port, gateway_id, key_hex, rate = argv
    probe = ControlProbe(int(broker_port), gateway_id, bytes.fromhex(key_hex),
                         rate_per_s=float(rate))
    print("ready", flush=True)
    try:
        for line in sys.stdin:
            cmd, _, arg = line.strip().partition(" ")
            if cmd == "start":
                probe.start()
                print("ok", flush=True)
            elif cmd == "stop":
                probe.stop_sending()
                print("ok", flush=True)
            elif cmd == "finish":
                summary = probe.finish(float(arg))
                with probe.lock:
                    data = {"summary": summary, "sent_wall_ms": dict(probe.sent_wall_ms),
                            "ack_wall_ms": dict(probe.ack_wall_ms)}
                print(json.dumps(data), flush=True)
            elif cmd == "close":
                print("ok", flush=True)
                break
    finally:
        probe.close()
    return 0


def machine_commit_ms(work: Path) -> dict[str, float]:
    """This machine's SQLite commit latency with synchronous=FULL, in the gateway's work dir (the
    same disk): one such commit (the control journal's) is on every command's path."""
    path = work / "fsync-probe.sqlite"
    try:
        return sqlite_commit_ms(path, 100)
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)


if __name__ == "__main__":
    if sys.argv[1:2] != ["--probe"] or len(sys.argv) != 6:
        sys.exit("usage: python -m benchmarks._peer_control --probe BROKER_PORT GATEWAY_ID "
                 "PUBLIC_KEY_HEX RATE_PER_S")
    sys.exit(_serve_probe(sys.argv[2:]))
