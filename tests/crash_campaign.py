"""The crash campaign: SIGKILL the real gateway at random moments, many times, and check after
every kill and at the end that nothing acknowledged was lost, duplicated or changed.

    python -m tests.crash_campaign --kills 200 --seed 1 --json crash-campaign.json
    make crash                          # the same, ARGS="--kills 500 --seed 7" to change it

What runs: `mrv-gateway run` in a child process (the CLI, as a deployment runs it) against the
simulated plant (pymodbus servers, two meters, six points polled every 0.2 s), a real anvil
chain with the contracts deployed and the gateway registered, and MQTT sensors published with
QoS 1 through a real Mosquitto (persistent session). Each published message carries its own
number ``n``; a message counts as *acknowledged* once the broker returned PUBACK to the
publisher, so from then on the broker alone is responsible for handing it to the gateway, and
the gateway for acknowledging it only after its commit (docs/drivers.md).

How each gateway life ends, drawn from the seed (the draws are the randomness; every wait is on
a condition: the gateway's process, rows in its outbox):

* ``commits``: after the outbox holds N more records (N drawn 1..400), at once;
* ``delay``: after a delay drawn 0..4 s from the process start (start-up, recovery, imports);
* ``anchoring``: 0..0.3 s after a new batch is built (while it is signed, sent, confirmed);
* ``failpoint``: the gateway kills itself at a named crash point (``MRV_FAILPOINTS``), its
  n-th pass drawn 1..4;
* ``shutdown``: SIGTERM, then SIGKILL 0..0.5 s later, in the middle of the graceful stop (if it
  finished first, that life counts as a clean stop, not a kill).

After every kill, with the process dead, the outbox (read-only) and the chain are checked:
records gapless from 1; every record seen before is still there, byte for byte; every new
record's stored leaf is the leaf of its fields; batches gapless with first/last record seqs
contiguous, the previous-hash chain unbroken, the header hash, Merkle root and Ed25519 signature
(against the key registered on chain) right; a batch seen before never changes; every batch the
chain holds equals the outbox's, and the chain is never ahead of the outbox; no Modbus reading
twice; every MQTT record is a message that was published, with its value and time; an MQTT
message is in the outbox twice only across a kill (at least once: committed, then killed before
its PUBACK, redelivered), never within one life or after a graceful stop. At the end the
publisher stops, the gateway runs cleanly until every acknowledged message is in the outbox,
stops with SIGTERM, and then everything is anchored and the chain's last seqs are the outbox's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiomqtt

from config import contract_address, load_config
from ledger_client import EvmChain
from ledger_client._format import ZERO32, BatchHeader, merkle_root, record_leaf
from ledger_client._outbox import _RECORD_COLS, CONFIRMED, _row_to_record
from ledger_client._signing import verify_signature

ROOT = Path(__file__).resolve().parent.parent
MODES = ("commits", "delay", "anchoring", "failpoint", "shutdown")
MODE_WEIGHTS = (35, 25, 15, 15, 10)
FAILPOINTS = ("outbox.before_commit", "outbox.after_commit", "batcher.after_build",
              "uplink.before_send", "uplink.after_send", "uplink.after_receipt")
MQTT_TOPIC = "plant/crash/counter"
MQTT_POINT = "crash.counter"
MQTT_SOURCE = "mqtt:crash-sensors"
#: One gateway life may not take longer than this to reach its kill condition: a gateway that
#: commits nothing for this long after a restart is a finding ("no progress").
STALL_S = 60.0

log = logging.getLogger("crash_campaign")


@dataclass
class Finding:
    cycle: int
    kind: str
    detail: str


@dataclass
class Cycle:
    n: int
    mode: str
    param: str
    outcome: str  # killed | failpoint | clean-stop | exited(rc) | stalled
    records: int
    batches: int
    anchored: int
    seconds: float


@dataclass
class Report:
    seed: str
    kills_target: int
    kills: int = 0
    kills_by_mode: dict[str, int] = field(default_factory=dict)
    clean_stops: int = 0
    lives: int = 0
    records: int = 0
    readings_modbus: int = 0
    batches: int = 0
    batches_anchored: int = 0
    mqtt_published: int = 0
    mqtt_acknowledged: int = 0
    mqtt_uncertain: int = 0
    mqtt_in_outbox: int = 0
    mqtt_redelivered_across_kill: int = 0
    checks: int = 0
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    cycles: list[Cycle] = field(default_factory=list)

    def table(self) -> str:
        rows = [
            ("SIGKILLs (all modes)", f"{self.kills} of {self.kills_target}"),
            *((f"  {m}", str(self.kills_by_mode.get(m, 0))) for m in MODES),
            ("gateway lives (starts)", str(self.lives)),
            ("clean stops (SIGTERM won the race)", str(self.clean_stops)),
            ("consistency checks run", str(self.checks)),
            ("records committed", str(self.records)),
            ("  Modbus readings", str(self.readings_modbus)),
            ("batches built / anchored", f"{self.batches} / {self.batches_anchored}"),
            ("MQTT published / acked by broker", f"{self.mqtt_published} / {self.mqtt_acknowledged}"),
            ("MQTT acked messages in outbox", f"{self.mqtt_in_outbox} of {self.mqtt_acknowledged}"),
            ("MQTT committed again after a kill", str(self.mqtt_redelivered_across_kill)),
            ("findings", str(len(self.findings))),
            ("seconds", f"{self.seconds:.0f}"),
        ]
        w = max(len(a) for a, _ in rows)
        lines = [f"crash campaign, seed {self.seed}", "-" * (w + 20)]
        lines += [f"{a.ljust(w)}  {b}" for a, b in rows]
        for f in self.findings[:20]:
            lines.append(f"FINDING cycle {f.cycle} [{f.kind}]: {f.detail}")
        return "\n".join(lines)


# -- the MQTT publisher ----------------------------------------------------------------------


class CounterPublisher:
    """Publishes ``{"ts": <ms>, "data": {"n": n}}`` with QoS 1, n = 1, 2, ... A message is
    *acknowledged* when ``publish`` returned (the broker's PUBACK); one whose publish failed is
    *uncertain* (it may or may not have reached the broker)."""

    def __init__(self, port: int, interval_s: float = 0.1) -> None:
        self.port = port
        self.interval_s = interval_s
        self.acked: dict[int, int] = {}  # n -> ts ms
        self.uncertain: dict[int, int] = {}
        self.n = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="crash-publisher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    def known(self, n: int) -> int | None:
        return self.acked.get(n, self.uncertain.get(n))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier="crash-publisher",
                                          timeout=10) as client:
                    next_t = loop.time()
                    while True:
                        self.n += 1
                        n, ts = self.n, time.time_ns() // 1_000_000
                        self.uncertain[n] = ts
                        body = json.dumps({"ts": ts, "data": {"n": n}}).encode()
                        await client.publish(MQTT_TOPIC, body, qos=1)
                        del self.uncertain[n]
                        self.acked[n] = ts
                        next_t += self.interval_s
                        await asyncio.sleep(max(0.0, next_t - loop.time()))
            except aiomqtt.MqttError as e:
                log.warning("publisher: %s; reconnecting", e)
                await asyncio.sleep(0.2)


# -- the checker -------------------------------------------------------------------------------


class Published(Protocol):
    def known(self, n: int) -> int | None:
        """The publication time (ms) of counter ``n``; None if it was never published."""


_ROW = f"{_RECORD_COLS}, leaf, sig"


def _digest(row: tuple[Any, ...]) -> bytes:
    return hashlib.blake2b(repr(tuple(row)).encode(), digest_size=16).digest()


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


class Checker:
    """What an auditor would check, kept incrementally across kills: everything seen before
    must still be there unchanged; everything new must be right."""

    def __init__(self, outbox: Path, gateway_id: str, chain: EvmChain,
                 publisher: Published | None) -> None:
        self.outbox = outbox
        self.gateway_id = gateway_id
        self.chain = chain
        self.publisher = publisher
        self.leaves: list[bytes] = []  # index seq - 1
        self.rows: list[bytes] = []  # digest of every column, index seq - 1
        self.headers: list[bytes] = []  # header hash, index seq - 1
        self.on_chain = 0  # batches compared with the chain so far
        self.modbus_keys: set[tuple[str, int]] = set()
        self.mqtt_copies: dict[int, list[int]] = {}  # n -> record seqs
        self.life_ends: list[int] = []  # max record seq at the end of each life
        self.life_clean: list[bool] = []  # that life ended with a graceful stop, not a kill
        self.public_key: bytes | None = None
        self.modbus_readings = 0
        self.confirmed = 0

    def life_of(self, seq: int) -> int:
        for i, end in enumerate(self.life_ends):
            if seq <= end:
                return i
        return len(self.life_ends)

    async def check(self, cycle: int, *, clean: bool = False) -> list[Finding]:
        """Check what is new since the last call; the gateway's life just ended (``clean``:
        with a graceful stop)."""
        out: list[Finding] = []

        def bad(kind: str, detail: str) -> None:
            out.append(Finding(cycle, kind, detail))

        if self.public_key is None:
            self.public_key = (await self.chain.gateway(self.gateway_id)).signing_key
        if not self.outbox.exists():
            if self.leaves:
                bad("outbox-gone", f"{self.outbox} disappeared")
            return out
        with contextlib.closing(_ro(self.outbox)) as db:
            try:
                db.execute("SELECT 1 FROM records LIMIT 1")
            except sqlite3.OperationalError:
                if self.leaves:
                    bad("outbox-unreadable", "the records table is gone")
                return out  # killed before the schema was created
            count, lo, hi = db.execute("SELECT COUNT(*), MIN(seq), MAX(seq) FROM records").fetchone()
            hi = hi or 0
            if count != hi or (count and lo != 1):
                bad("record-gap", f"{count} records but seqs {lo}..{hi}")
            if hi < len(self.leaves):
                bad("record-lost", f"the outbox holds up to seq {hi}; {len(self.leaves)} were "
                                   "committed before")
            # every record seen before: unchanged, every column
            for row in db.execute(f"SELECT {_ROW} FROM records WHERE seq <= ? ORDER BY seq",
                                  (len(self.leaves),)):
                if _digest(row) != self.rows[int(row[0]) - 1]:
                    bad("record-changed", f"record {row[0]} changed after a restart")
                    break
            # the new ones: their leaf is the leaf of their fields
            for row in db.execute(f"SELECT {_ROW} FROM records WHERE seq > ? ORDER BY seq",
                                  (len(self.leaves),)):
                rec = _row_to_record(self.gateway_id, row[:9])
                leaf = bytes(row[9])
                if record_leaf(rec) != leaf:
                    bad("leaf-mismatch", f"record {rec.seq}: stored leaf is not its fields' leaf")
                self.leaves.append(leaf)
                self.rows.append(_digest(row))
                self._note_reading(rec, bad)
            # batches
            rows = db.execute(
                "SELECT seq, prev_hash, root, count, first_record_seq, last_record_seq, "
                "first_ts_ns, last_ts_ns, co2e_scope1_g, co2e_scope2_g, co2e_scope3_g, "
                "header_hash, signature, state FROM batches ORDER BY seq").fetchall()
        if len(rows) < len(self.headers):
            bad("batch-lost", f"{len(rows)} batches, {len(self.headers)} seen before")
        confirmed = 0
        for i, r in enumerate(rows):
            seq = int(r[0])
            if seq != i + 1:
                bad("batch-gap", f"batch seq {seq} at position {i + 1}")
                break
            hh, state = bytes(r[11]), int(r[13])
            confirmed += state == CONFIRMED
            if i < len(self.headers):
                if self.headers[i] != hh:
                    bad("batch-changed", f"batch {seq}'s header changed after a restart")
                continue
            h = BatchHeader(gateway_id=self.gateway_id, seq=seq, prev_hash=bytes(r[1]),
                            root=bytes(r[2]), count=int(r[3]), first_record_seq=int(r[4]),
                            last_record_seq=int(r[5]), first_ts_ns=int(r[6]),
                            last_ts_ns=int(r[7]), co2e_scope1_g=int(r[8]),
                            co2e_scope2_g=int(r[9]), co2e_scope3_g=int(r[10]))
            prev = self.headers[i - 1] if i else ZERO32
            first = int(rows[i - 1][5]) + 1 if i else 1
            if h.prev_hash != prev:
                bad("prev-hash", f"batch {seq}: prev_hash is not batch {seq - 1}'s header hash")
            if h.first_record_seq != first or h.count != h.last_record_seq - first + 1:
                bad("batch-range", f"batch {seq}: records {h.first_record_seq}..{h.last_record_seq}"
                                   f" (count {h.count}), expected to start at {first}")
            if h.hash() != hh:
                bad("header-hash", f"batch {seq}: stored header hash is not its header's")
            leaves = self.leaves[h.first_record_seq - 1:h.last_record_seq]
            if len(leaves) != h.count or merkle_root(leaves) != h.root:
                bad("merkle-root", f"batch {seq}: root is not the root of its records' leaves")
            if not verify_signature(self.public_key, hh, bytes(r[12])):
                bad("signature", f"batch {seq}: Ed25519 signature does not verify")
            self.headers.append(hh)
        self.confirmed = confirmed
        # the chain: never ahead of the outbox; what it holds is the outbox's
        last = await self.chain.last_seq(self.gateway_id)
        if last > len(self.headers):
            bad("chain-ahead", f"chain holds batch {last}, the outbox {len(self.headers)}")
        for seq in range(self.on_chain + 1, min(last, len(self.headers)) + 1):
            held = await self.chain.batch(self.gateway_id, seq)
            if held.header_hash != self.headers[seq - 1]:
                bad("chain-differs", f"batch {seq} on chain differs from the outbox's")
        self.on_chain = max(self.on_chain, min(last, len(self.headers)))
        for i, r in enumerate(rows[:len(self.headers)]):
            if int(r[13]) == CONFIRMED and i + 1 > last:
                bad("confirmed-not-on-chain", f"batch {i + 1} confirmed in the outbox, chain "
                                              f"holds up to {last}")
                break
        if 0 < last <= len(self.headers):
            gw = await self.chain.gateway(self.gateway_id)
            if gw.last_header_hash != self.headers[last - 1] or \
                    gw.last_record_seq != int(rows[last - 1][5]):
                bad("chain-gateway", f"chain's last header/record seq differ from batch {last}")
        self.life_ends.append(len(self.leaves))
        self.life_clean.append(clean)
        return out

    def _note_reading(self, rec: Any, bad: Any) -> None:
        source = getattr(rec, "source", "")
        if source.startswith("modbus"):
            self.modbus_readings += 1
            key = (rec.point_id, rec.ts_ns)
            if key in self.modbus_keys:
                bad("modbus-duplicate", f"record {rec.seq}: {key} committed twice")
            self.modbus_keys.add(key)
        elif source == MQTT_SOURCE:
            v = rec.value
            if not (isinstance(v, float) and v.is_integer() and v >= 1):
                bad("mqtt-value", f"record {rec.seq}: value {v!r} is no published counter")
                return
            n = int(v)
            ts = self.publisher.known(n) if self.publisher is not None else None
            if ts is None:
                bad("mqtt-unknown", f"record {rec.seq}: counter {n} was never published")
            elif rec.ts_ns != ts * 1_000_000:
                bad("mqtt-time", f"record {rec.seq}: counter {n} has time {rec.ts_ns}, "
                                 f"published at {ts} ms")
            copies = self.mqtt_copies.setdefault(n, [])
            life = self.life_of(rec.seq)
            if any(self.life_of(s) == life for s in copies):
                bad("mqtt-duplicate", f"counter {n} committed twice in one gateway life "
                                      f"(records {copies[0]} and {rec.seq})")
            elif copies and all(self.life_clean[k]
                                for k in range(self.life_of(copies[-1]), life)):
                bad("mqtt-duplicate-after-clean-stop",
                    f"counter {n} committed again (record {rec.seq}) after a graceful stop "
                    f"(record {copies[-1]}): a stop must acknowledge what it committed")
            copies.append(rec.seq)

    def full_recheck(self, cycle: int) -> list[Finding]:
        """At the end: every record's leaf recomputed from its fields, not only the new ones."""
        out: list[Finding] = []
        with contextlib.closing(_ro(self.outbox)) as db:
            for row in db.execute(f"SELECT {_RECORD_COLS}, leaf FROM records ORDER BY seq"):
                rec = _row_to_record(self.gateway_id, row[:9])
                if record_leaf(rec) != bytes(row[9]) or self.leaves[rec.seq - 1] != bytes(row[9]):
                    out.append(Finding(cycle, "leaf-mismatch", f"record {rec.seq} (full recheck)"))
        return out


# -- the gateway process -----------------------------------------------------------------------


class Gateway:
    """``mrv-gateway run`` in a child process of its own session (the CLI's entry point)."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        e = {k: v for k, v in os.environ.items() if k != "MRV_FAILPOINTS"}
        e.update({"PYTHONPATH": str(ROOT), **(env or {})})
        with open(self.log_path, "ab") as out:
            out.write(f"\n=== start {time.strftime('%H:%M:%S')} {env or ''}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway._cli", "run", str(self.config), "--log-level",
                 "INFO"], stdout=out, stderr=subprocess.STDOUT, env=e, cwd=ROOT,
                start_new_session=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    async def wait(self, timeout: float) -> int | None:
        """The exit code once the process has ended; None if it is still running."""
        assert self.proc is not None
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.proc.wait), timeout)
        except TimeoutError:
            return None

    async def kill9(self) -> int:
        self.signal(signal.SIGKILL)
        rc = await self.wait(30)
        assert rc is not None, "a SIGKILLed process did not end"
        return rc

    def tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]


class OutboxWatch:
    """Counts in the outbox, read-only, while the gateway runs (a reader never blocks it)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def counts(self) -> tuple[int, int, int]:
        """(max record seq, batches, batches not yet confirmed)"""
        if not self.path.exists():
            return 0, 0, 0
        try:
            with contextlib.closing(_ro(self.path)) as db:
                (hi,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()
                nb, open_ = db.execute("SELECT COUNT(*), COALESCE(SUM(state != ?), 0) "
                                       "FROM batches", (CONFIRMED,)).fetchone()
            return int(hi), int(nb), int(open_)
        except sqlite3.OperationalError:  # not created yet, or locked for a moment
            return 0, 0, 0

    def mqtt_counters(self) -> set[int]:
        with contextlib.closing(_ro(self.path)) as db:
            return {int(v) for (v,) in db.execute(
                "SELECT value FROM records WHERE source = ? AND value IS NOT NULL", (MQTT_SOURCE,))}


async def until(cond: Any, timeout: float, proc: Gateway | None = None, poll_s: float = 0.01
                ) -> bool:
    """Wait until ``cond()`` holds (True), the deadline passes or ``proc`` exits (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline or (proc is not None and not proc.running):
            return False
        await asyncio.sleep(poll_s)
    return True


# -- the campaign ------------------------------------------------------------------------------


@dataclass
class Setup:
    config: Path
    rpc_url: str
    broker_port: int | None


async def run_campaign(setup: Setup, work: Path, *, kills: int, seed: str,
                       modes: tuple[str, ...] | None = None, max_findings: int = 20,
                       progress: bool = False) -> Report:
    """Kill the gateway ``kills`` times (SIGKILL that landed), then finish cleanly and check.
    ``modes``: the kill modes in turn (the short form covers each); default: drawn by weight."""
    rng = random.Random(seed)
    report = Report(seed=seed, kills_target=kills)
    cfg = load_config(setup.config)
    outbox = cfg.outbox_path()
    chain = EvmChain(setup.rpc_url, contract_address=contract_address(cfg))
    publisher = CounterPublisher(setup.broker_port) if setup.broker_port else None
    checker = Checker(outbox, cfg.gateway.id, chain, publisher)
    watch = OutboxWatch(outbox)
    gw = Gateway(setup.config, work / "gateway.log")
    t0 = time.monotonic()
    cycle = 0

    def finding(kind: str, detail: str) -> None:
        report.findings.append(Finding(cycle, kind, detail))

    try:
        if publisher is not None:
            await publisher.start()
        while report.kills < kills and len(report.findings) < max_findings:
            cycle += 1
            mode = modes[(cycle - 1) % len(modes)] if modes else \
                rng.choices(MODES, MODE_WEIGHTS)[0]
            c0 = time.monotonic()
            hi0, nb0, _ = watch.counts()
            env: dict[str, str] | None = None
            param = ""
            if mode == "failpoint":
                fp, k = rng.choice(FAILPOINTS), rng.randint(1, 4)
                param = f"{fp}={k}"
                env = {"MRV_FAILPOINTS": param}
            gw.start(env)
            report.lives += 1
            outcome = "killed"
            if mode == "commits":
                want = rng.randint(1, 400)
                param = f"+{want} records"
                if not await until(lambda w=hi0 + want: watch.counts()[0] >= w, STALL_S, gw):
                    outcome = "stalled" if gw.running else "exited"
            elif mode == "delay":
                d = rng.uniform(0.0, 4.0)
                param = f"{d:.3f} s"
                await asyncio.sleep(d)  # the drawn delay is the randomness, not a wait for state
            elif mode == "anchoring":
                d = rng.uniform(0.0, 0.3)
                param = f"+{d:.3f} s after a new batch is built"
                if await until(lambda b=nb0: watch.counts()[1] > b, STALL_S, gw):
                    await asyncio.sleep(d)
                else:
                    outcome = "stalled" if gw.running else "exited"
            elif mode == "failpoint":
                rc = await gw.wait(STALL_S)
                outcome = "failpoint" if rc == -signal.SIGKILL else (
                    "stalled" if rc is None else "exited")
            elif mode == "shutdown":
                # let it start and commit something first, so the stop has work to do
                await until(lambda h=hi0: watch.counts()[0] > h, STALL_S, gw)
                d = rng.uniform(0.0, 0.5)
                param = f"SIGTERM, SIGKILL {d:.3f} s later"
                gw.signal(signal.SIGTERM)
                rc = await gw.wait(d)
                if rc is not None:
                    outcome = "clean-stop" if rc == 0 else "exited"
            if outcome == "stalled":
                finding("stalled", f"mode {mode} {param}: no progress in {STALL_S:.0f} s;\n"
                                   f"{gw.tail()}")
            rc = await gw.kill9()
            if outcome == "exited":
                finding("exited", f"mode {mode} {param}: the gateway exited by itself with {rc}"
                                  f";\n{gw.tail()}")
            if outcome in ("killed", "failpoint", "stalled") and rc == -signal.SIGKILL:
                report.kills += 1
                report.kills_by_mode[mode] = report.kills_by_mode.get(mode, 0) + 1
            elif outcome == "clean-stop":
                report.clean_stops += 1
            # the process is dead: the outbox and the chain must agree, whatever the moment
            found = await checker.check(cycle, clean=outcome == "clean-stop")
            report.checks += 1
            report.findings.extend(found)
            hi, nb, open_ = watch.counts()
            report.cycles.append(Cycle(cycle, mode, param, outcome, hi, nb, nb - open_,
                                       round(time.monotonic() - c0, 3)))
            if progress:
                print(f"[{report.kills:4d}/{kills}] cycle {cycle:4d} {mode:9s} {param:42s} "
                      f"{outcome:10s} records {hi:6d} batches {nb:5d} "
                      f"({len(found)} findings)", flush=True)
        # the end: no more messages; a clean life takes everything acknowledged, then stops
        cycle += 1
        if publisher is not None:
            await publisher.stop()
        gw.start()
        report.lives += 1
        acked = set(publisher.acked) if publisher is not None else set()
        if acked and not await until(lambda: acked <= watch.mqtt_counters(), 120, gw, 0.2):
            missing = sorted(acked - watch.mqtt_counters())
            finding("mqtt-lost", f"{len(missing)} acknowledged message(s) never reached the "
                                 f"outbox: {missing[:20]}")
        hi_before_stop = watch.counts()[0]
        await until(lambda: watch.counts()[0] > hi_before_stop, STALL_S, gw)
        gw.signal(signal.SIGTERM)
        rc = await gw.wait(120)
        if rc != 0:
            finding("final-stop", f"SIGTERM ended the gateway with {rc}:\n{gw.tail()}")
            await gw.kill9()
        report.findings.extend(await checker.check(cycle, clean=True))
        report.findings.extend(checker.full_recheck(cycle))
        report.checks += 1
        hi, nb, open_ = watch.counts()
        pending = hi - (int(_last_record_seq(outbox)) if nb else 0)
        if pending or open_:
            finding("not-drained", f"after SIGTERM: {pending} record(s) pending, {open_} "
                                   "batch(es) not confirmed")
        last = await chain.last_seq(cfg.gateway.id)
        if last != nb:
            finding("chain-behind", f"chain holds {last} batches, the outbox {nb}")
        if acked:
            in_outbox = watch.mqtt_counters()
            report.mqtt_in_outbox = len(acked & in_outbox)
        report.records = hi
        report.batches = nb
        report.batches_anchored = checker.confirmed
        report.readings_modbus = checker.modbus_readings
        if publisher is not None:
            report.mqtt_published = publisher.n
            report.mqtt_acknowledged = len(publisher.acked)
            report.mqtt_uncertain = len(publisher.uncertain)
            report.mqtt_redelivered_across_kill = sum(
                len(v) - 1 for v in checker.mqtt_copies.values() if len(v) > 1)
    finally:
        if gw.running:
            await gw.kill9()
        if publisher is not None:
            await publisher.stop()
        await chain.close()
        report.seconds = round(time.monotonic() - t0, 1)
    return report


def _last_record_seq(outbox: Path) -> int:
    with contextlib.closing(_ro(outbox)) as db:
        (v,) = db.execute("SELECT COALESCE(MAX(last_record_seq), 0) FROM batches").fetchone()
    return int(v)


async def provision_campaign(work: Path, rpc_url: str, plant_port: int,
                             broker_port: int | None) -> Setup:
    """A gateway on a fresh ledger: the plant's two meters, and the counter sensor over MQTT."""
    from simulator import plant_devices, provision

    devices = plant_devices(plant_port, interval_s=0.2)
    if broker_port is not None:
        devices.append({
            "driver": "mqtt", "name": "crash-sensors", "host": "127.0.0.1", "port": broker_port,
            "client_id": "crash-gw-sensors", "qos": 1, "clean_session": False,
            "backoff_initial_s": 0.2, "backoff_max_s": 1.0,
            "points": [{"id": MQTT_POINT, "topic": MQTT_TOPIC, "value": "data.n",
                        "timestamp": "ts", "timestamp_unit": "ms", "unit": "1"}]})
    p = await provision(work / "gw", rpc_url, devices=devices, gateway_id="crash-gw1",
                        batch_interval_s=0.5, max_records=50,
                        extra={"outbox": {"shutdown_drain_s": 20}})
    if broker_port is not None:
        # The gateway's persistent session exists before the first message, as after its
        # first run in a deployment: the broker keeps QoS 1 messages only for a session that
        # has subscribed.
        async with aiomqtt.Client("127.0.0.1", broker_port, identifier="crash-gw-sensors",
                                  clean_session=False) as c:
            await c.subscribe(MQTT_TOPIC, qos=1)
    return Setup(p.config, rpc_url, broker_port)


async def _main(args: argparse.Namespace) -> int:
    from simulator import Anvil, Mosquitto, default_plant

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="mrv-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    plant = default_plant()
    await plant.start()
    try:
        with Anvil() as anvil, Mosquitto() as broker:
            setup = await provision_campaign(work, anvil.url, plant.port,
                                             None if args.no_mqtt else broker.port)
            report = await run_campaign(setup, work, kills=args.kills, seed=args.seed,
                                        progress=not args.quiet)
    finally:
        await plant.stop()
    print(report.table())
    out = Path(args.json) if args.json else work / "crash-campaign.json"
    doc = asdict(report)
    doc["command"] = " ".join(["python -m tests.crash_campaign", *sys.argv[1:]])
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"JSON: {out}; gateway log and outbox: {work}")
    return 1 if report.findings else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.crash_campaign", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=200, help="SIGKILLs that must land (200)")
    ap.add_argument("--seed", default="1", help="seed of every random draw (1)")
    ap.add_argument("--json", help="write the report here (default: in the work folder)")
    ap.add_argument("--workdir", help="keep the gateway's files here (default: a temp folder)")
    ap.add_argument("--no-mqtt", action="store_true", help="Modbus only, no broker")
    ap.add_argument("--quiet", action="store_true", help="no line per kill")
    args = ap.parse_args(argv)
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
