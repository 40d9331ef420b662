"""The control service: signed commands in, acknowledgements and live telemetry out, local
rules, setpoint leases and the PLC heartbeat.

    MQTT <prefix>/<gw>/cmd --> admission (size, depth, parse, checks 1-9: junk refused here)
         --> a bounded queue per issuer (round-robin) --> policy --> Modbus write --> read back
         <prefix>/<gw>/ack <-- signed ack  <--------------- audit records (outbox) <--'
    Pipeline tap --> telemetry queue (drop and count) --> <prefix>/<gw>/telemetry
                 --> rule queue --> leak detector / combustion trim --> local writes, alarms

Tasks, each run under the daemon's supervisor so one failing never stops the others, nor
acquisition or anchoring: ``control:mqtt`` (broker connection, publishing), ``control:commands``
(one command at a time), ``control:recorder`` (audit records into the outbox),
``control:rules`` and ``control:heartbeat`` (heartbeat, leases, journal purge).

Durability: an authentic command is committed to the control journal (``control.sqlite``,
``_state.py``) before anything is read from or written to the plant; that is the one fsync on
the way to the ack. Its audit records (the command with its verdict, the write with its
read-back) go to the outbox in the recorder's next commit, a few milliseconds later, and the
journal entry is then marked recorded; after a crash in between, the entry is recovered into
the outbox as an ``interrupted`` command. Local rule actions are committed to the outbox
directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import socket
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt

from control._codec import is_integer_type
from control._config import ControlConfig, SignalConfig, WritablePoint
from control._envelope import (
    MAX_PAYLOAD,
    Ack,
    Command,
    EnvelopeError,
    best_effort_id,
    parse_command,
)
from control._fair import FairQueue
from control._modbus import ActuatorError, PlantIO
from control._policy import (
    AuthContext,
    IssuerPolicy,
    Override,
    PermissivePolicy,
    PlantContext,
    PointPolicy,
    Verdict,
    advances_seq,
    authenticate,
    authorize,
    consumes_id,
)
from control._rules import LeakDetector, trim_forbid, trim_target
from control._state import ReplayStore
from control._telemetry import telemetry_chunks, telemetry_json
from drivers.modbus import ModbusLinks
from gateway._aio import raise_if_cancelling
from gateway._metrics import Metrics
from gateway._records import AuditRecord, Reading, is_valid
from gateway._tls import client_context

if TYPE_CHECKING:
    from config import Config

log = logging.getLogger("mrv.control")

Sign = Callable[[bytes], bytes]
#: Commands and acks are small: send them at once (Nagle plus delayed ACKs adds ~40 ms a hop).
#: The broker needs the same (Mosquitto: ``set_tcp_nodelay true``).
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
TaskFactory = tuple[str, Callable[[], Awaitable[None]]]


def _canonical(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _num(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else x


def _fmt(x: float | None) -> str | None:
    return None if x is None or math.isnan(x) else repr(float(x))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def point_policy(p: WritablePoint) -> PointPolicy:
    return PointPolicy(
        unit=p.unit, min=p.min, max=p.max, max_step=p.max_step,
        rate_max_writes=p.rate_limit.max_writes,
        rate_window_ms=round(p.rate_limit.window_s * 1000), two_person=p.two_person,
        permissives=tuple(PermissivePolicy(q.signal, q.min, q.max, q.equals, q.when)
                          for q in p.permissives),
        resolution=abs(p.scale) if is_integer_type(p.type) else None, offset=p.offset,
        float_type=None if is_integer_type(p.type) else str(p.type), scale=p.scale)


class ControlService:
    def __init__(self, *, gateway_id: str, config: ControlConfig, data_dir: Path,
                 outbox: Any, metrics: Metrics, sign: Sign | None = None,
                 reading_points: Iterable[str] | None = None,
                 links: ModbusLinks | None = None) -> None:
        self.gw = gateway_id
        self.cfg = config
        self.data_dir = data_dir
        self.outbox = outbox
        self.metrics = metrics
        self.sign = sign
        self.enabled = config.enabled
        self.t_cmd = config.topic(gateway_id, "cmd")
        self.t_ack = config.topic(gateway_id, "ack")
        self.t_telemetry = config.topic(gateway_id, "telemetry")
        self.t_alarm = config.topic(gateway_id, "alarm")
        self.plant = PlantIO(config.devices, links)
        self.points: dict[str, WritablePoint] = {p.id: p for p in config.points}
        self.signals: dict[str, SignalConfig] = {s.id: s for s in config.signals}
        self.policies = {p.id: point_policy(p) for p in config.points}
        self.issuers = {i.key_id: IssuerPolicy(i.key_bytes(), frozenset(i.points))
                        for i in config.issuers}
        self.two_person = frozenset(p.id for p in config.points if p.two_person)
        self.overrides: dict[str, Override] = {}
        self.recent_writes: dict[str, deque[int]] = defaultdict(deque)
        self.leases: dict[str, float] = {}  # point -> time.monotonic() deadline
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # authentic commands only, a queue of `command_queue` per issuer, served round-robin
        self.commands: FairQueue[tuple[str, bytes]] = FairQueue(config.command_queue)
        self._queued_ids: set[str] = set()
        self._nack_tokens = float(config.reject_acks_per_s)
        self._nack_refill = time.monotonic()
        self._outgoing: deque[tuple[str, bytes, int, bool]] = deque()
        self._telemetry: deque[tuple[list[Reading], list[bytes] | None]] = deque()
        self._telemetry_n = 0
        self._wake = asyncio.Event()
        self.ready = asyncio.Event()  # set while subscribed to the command topic
        self._rule_q: asyncio.Queue[Reading] = asyncio.Queue(10_000)
        self._reject_audits: deque[float] = deque()
        self._store: ReplayStore | None = None
        self._store_lock = asyncio.Lock()
        self._records: asyncio.Queue[tuple[list[AuditRecord], list[str]]] = asyncio.Queue(10_000)
        self._inflight: tuple[list[AuditRecord], list[str]] | None = None
        self._inflight_committed = False  # the outbox holds them; only the journal mark is due
        self._committing: asyncio.Task[None] | None = None
        known = set(reading_points) if reading_points is not None else None
        rules = config.rules
        self.leak_rule = rules.leak
        self.trim_rule = rules.combustion
        for name, rule, point in (("leak", rules.leak, rules.leak and rules.leak.gas_point),
                                  ("combustion", rules.combustion,
                                   rules.combustion and rules.combustion.o2_point)):
            if rule is not None and known is not None and point not in known:
                msg = (f"rule {name}: reading point {point!r} is not acquired by any device; "
                       "the rule is disabled")
                log.critical(msg)
                metrics.set_state(f"control:rule:{name}", "alarm", msg)
                if name == "leak":
                    self.leak_rule = None
                else:
                    self.trim_rule = None
        self.leak = (LeakDetector(self.leak_rule.threshold, self.leak_rule.samples,
                                  self.leak_rule.clear_level, self.leak_rule.clear_samples)
                     if self.leak_rule else None)
        self._last_trim = -math.inf
        self._leak_write_pending = False
        self._rule_points = {r for r in (self.leak_rule and self.leak_rule.gas_point,
                                         self.trim_rule and self.trim_rule.o2_point) if r}

    @classmethod
    def from_config(cls, cfg: Config, outbox: Any, metrics: Metrics,
                    sign: Sign | None = None, links: ModbusLinks | None = None
                    ) -> ControlService:
        assert cfg.control is not None
        return cls(gateway_id=cfg.gateway.id, config=cfg.control, data_dir=cfg.gateway.data_dir,
                   outbox=outbox, metrics=metrics, sign=sign,
                   reading_points=[p.id for d in cfg.devices for p in d.points], links=links)

    # -- lifecycle ------------------------------------------------------------------------

    def tasks(self) -> list[TaskFactory]:
        out: list[TaskFactory] = [("control:mqtt", self.run_mqtt),
                                  ("control:commands", self.run_commands),
                                  ("control:recorder", self.run_recorder),
                                  ("control:heartbeat", self.run_heartbeat)]
        if self._rule_points:
            out.append(("control:rules", self.run_rules))
        return out

    async def run(self) -> None:
        """Every task under the daemon's supervisor (for use without the daemon)."""
        from gateway._daemon import supervise

        async with asyncio.TaskGroup() as tg:
            for name, factory in self.tasks():
                tg.create_task(supervise(name, factory, self.metrics), name=name)

    async def aclose(self) -> None:
        """After the tasks are cancelled: commit what the recorder still holds, close."""
        self.plant.close()
        try:
            while self._inflight is not None or not self._records.empty():
                await self._record_once(block=False)
        except Exception:
            log.exception("control: audit records still queued at stop were not committed; "
                          "the journal recovers the commands at the next start")
        if self._store is not None:
            await self._store.close()
            self._store = None

    async def store(self) -> ReplayStore:
        async with self._store_lock:
            if self._store is None:
                store = await ReplayStore.open(self.data_dir / "control.sqlite",
                                               self.cfg.journal_synchronous)
                await self._recover(store)
                await self._restore(store)
                self._store = store
            return self._store

    async def _restore(self, store: ReplayStore) -> None:
        """The safety state the last process left in the journal: rate-limit windows and local
        rule holds. Runs before the service subscribes to commands or reads a rule sample."""
        now_ms = _now_ms()
        for point, times in store.writes.items():
            policy = self.policies.get(point)
            if policy is None:
                continue
            recent = [t for t in times if 0 <= now_ms - t < policy.rate_window_ms]
            if recent:
                self.recent_writes[point] = deque(recent)
        for point, (rule, forbid, detail) in list(store.holds.items()):
            live = ((rule == "leak" and self.leak_rule is not None
                     and point == self.leak_rule.vent_point)
                    or (rule == "combustion" and self.trim_rule is not None
                        and point == self.trim_rule.damper_point))
            if not live or forbid not in ("decrease", "increase"):
                log.warning("control: dropping the journaled hold of rule %s on %s: the rule "
                            "is no longer configured for that point", rule, point)
                await store.clear_hold(point)
                continue
            self.overrides[point] = Override(rule, forbid,  # type: ignore[arg-type]
                                             f"{detail} (held since before a restart)")
            self.metrics.inc("control_holds_restored")
            log.warning("control: rule %s still holds %s (no %s) from before the restart",
                        rule, point, forbid)
            if rule == "leak" and self.leak is not None:
                # the alarm is still raised: it clears only on clear_samples good readings,
                # and the vent is checked (opened if need be) at the next gas sample
                self.leak.active = True
                self._leak_write_pending = True

    async def _hold(self, point: str, hold: Override) -> None:
        """Set a local rule's hold, durably when it changes (in memory first: a command
        checked meanwhile already sees it)."""
        before = self.overrides.get(point)
        self.overrides[point] = hold
        if before is None or (before.rule, before.forbid) != (hold.rule, hold.forbid):
            await (await self.store()).set_hold(point, hold.rule, hold.forbid, hold.detail,
                                                _now_ms())

    async def _release(self, point: str) -> None:
        if self.overrides.pop(point, None) is not None:
            await (await self.store()).clear_hold(point)

    async def _recover(self, store: ReplayStore) -> None:
        """Commands journaled but never recorded (the gateway stopped in between)."""
        lost = await store.unrecorded()
        if not lost:
            return
        log.warning("control: %d command(s) were journaled but not recorded before the last "
                    "stop; recording them as interrupted", len(lost))
        await self.outbox.append([AuditRecord(
            ts_ns=time.time_ns(), category="command", subject=cid, payload=_canonical({
                "envelope": json.loads(envelope), "verdict": "interrupted", "reason": None,
                "detail": "the gateway stopped after journaling this command and before "
                          "recording its outcome; the write may or may not have happened",
                "received_ms": received_ms})) for cid, envelope, received_ms in lost])
        await store.mark_recorded(cid for cid, _, _ in lost)
        self.metrics.inc("control_commands_recovered", len(lost))

    async def flush(self) -> None:
        """Wait until every queued audit record is committed to the outbox."""
        await self._records.join()

    # -- pipeline tap (must never block or raise) -----------------------------------------

    def on_readings(self, chunk: list[Reading], signatures: list[bytes] | None = None) -> None:
        """Committed readings (with their record signatures when the gateway signs records)."""
        try:
            if self.cfg.telemetry.enabled and chunk:
                if self._telemetry_n + len(chunk) > self.cfg.telemetry.queue:
                    self.metrics.inc("control_telemetry_dropped", len(chunk))
                else:
                    self._telemetry.append((chunk, signatures))
                    self._telemetry_n += len(chunk)
                    self._wake.set()
            if self._rule_points:
                for r in chunk:
                    if r.point_id in self._rule_points:
                        try:
                            self._rule_q.put_nowait(r)
                        except asyncio.QueueFull:
                            self.metrics.inc("control_rule_readings_dropped")
        except Exception:
            self.metrics.inc("control_tap_errors")
            log.exception("control tap failed (the readings are committed; control lost them)")

    # -- MQTT -----------------------------------------------------------------------------

    def _publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        if len(self._outgoing) >= 10_000:
            self._outgoing.popleft()
            self.metrics.inc("control_outgoing_dropped")
        self._outgoing.append((topic, payload, qos, retain))
        self._wake.set()

    def _send_ack(self, ack: Ack) -> None:
        self._publish(self.t_ack, ack.to_bytes(self.sign), qos=1)
        self.metrics.inc(f"control_ack_{ack.status}")
        if ack.reason:
            self.metrics.inc("control_rejected_" + ack.reason.replace("-", "_"))

    async def run_mqtt(self) -> None:
        # the journal's safety state (replay cache, sequences, rate windows, rule holds) is
        # restored before the first command can arrive
        await self.store()
        b = self.cfg.broker
        delay = b.reconnect_initial_s
        while True:
            raise_if_cancelling()
            try:
                client = aiomqtt.Client(
                    b.host, b.port, username=b.username, password=b.password,
                    identifier=b.client_id or f"mrv-{self.gw}-control", clean_session=False,
                    keepalive=b.keepalive_s, timeout=b.connect_timeout_s,
                    tls_context=client_context(b.tls) if b.tls is not None else None,
                    socket_options=NODELAY)
                async with client:
                    await client.subscribe(self.t_cmd, qos=1)
                    if self.metrics.set_state("control:mqtt", "ok"):
                        log.info("control: subscribed to %s on %s:%d", self.t_cmd, b.host, b.port)
                    delay = b.reconnect_initial_s
                    self.ready.set()
                    await self._connected(client)
            except aiomqtt.MqttError as e:
                self.ready.clear()
                self.metrics.inc("control_mqtt_failures")
                if self.metrics.set_state("control:mqtt", "failing", str(e)):
                    log.warning("control: broker %s:%d: %s (logged once until it recovers)",
                                b.host, b.port, e)
            finally:
                self.ready.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, b.reconnect_max_s)

    async def _connected(self, client: aiomqtt.Client) -> None:
        pub = asyncio.create_task(self._publisher(client), name="control:publisher")
        recv = asyncio.create_task(self._receiver(client), name="control:receiver")
        try:
            done, _ = await asyncio.wait({pub, recv}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (pub, recv):
                t.cancel()
            await asyncio.gather(pub, recv, return_exceptions=True)
        for t in done:
            t.result()
        raise aiomqtt.MqttError("connection loop ended")

    async def _receiver(self, client: aiomqtt.Client) -> None:
        async for msg in client.messages:
            payload = msg.payload
            if isinstance(payload, bytes | bytearray):
                data = bytes(payload)
            elif payload is None:
                data = b""
            else:
                data = str(payload).encode()
            try:
                self.admit(data)
            except Exception:  # a bug: the receiver goes on with the next message
                self.metrics.inc("control_internal_errors")
                log.exception("control: admitting a command payload failed")

    async def _publisher(self, client: aiomqtt.Client) -> None:
        maxn = self.cfg.telemetry.max_per_message
        while True:
            self._wake.clear()
            while self._outgoing:
                topic, payload, qos, retain = self._outgoing[0]
                await client.publish(topic, payload, qos=qos, retain=retain)
                self._outgoing.popleft()
            if self._telemetry:
                chunk, sigs = self._telemetry.popleft()
                self._telemetry_n -= len(chunk)
                for part, part_sigs in telemetry_chunks(chunk, sigs, maxn):
                    await client.publish(self.t_telemetry, telemetry_json(self.gw, part, part_sigs),
                                         qos=0)
                    self.metrics.inc("control_telemetry_messages")
                self._wake.set()  # more may be waiting: go round again, acks first
            await self._wake.wait()

    # -- audit ----------------------------------------------------------------------------

    @staticmethod
    def _record(category: str, subject: str, payload: dict[str, Any]) -> AuditRecord:
        return AuditRecord(ts_ns=time.time_ns(), category=category, subject=subject,
                           payload=_canonical(payload))

    async def _audit(self, category: str, subject: str, payload: dict[str, Any]) -> None:
        """Commit one record to the outbox now (local rule actions)."""
        await self.outbox.append([self._record(category, subject, payload)])
        self.metrics.inc("control_audit_records")

    async def _audit_later(self, records: list[AuditRecord], journal_ids: list[str]) -> None:
        """Hand records to the recorder; ``journal_ids`` are marked recorded after commit."""
        await self._records.put((records, journal_ids))

    async def run_recorder(self) -> None:
        while True:
            await self._record_once(block=True)

    async def _record_once(self, *, block: bool) -> None:
        """Commit everything queued (and a batch left by a failed attempt) in one transaction."""
        if self._inflight is None:
            items = [await self._records.get()] if block else []
            while not self._records.empty():
                items.append(self._records.get_nowait())
            if not items:
                return
            self._inflight = ([r for recs, _ in items for r in recs],
                              [i for _, ids in items for i in ids])
            for _ in items:
                self._records.task_done()
        # One commit at a time, in its own task: a cancelled recorder (the daemon stopping)
        # must not leave a commit running that ``aclose`` would then make a second time.
        if self._committing is None:
            self._committing = asyncio.create_task(self._commit_inflight(),
                                                   name="control:recorder-commit")
        task = self._committing
        try:
            await asyncio.shield(task)
        finally:
            if task.done():
                self._committing = None

    async def _commit_inflight(self) -> None:
        assert self._inflight is not None
        records, ids = self._inflight
        if not self._inflight_committed:
            await self.outbox.append(records)
            self._inflight_committed = True
            self.metrics.inc("control_audit_records", len(records))
        await (await self.store()).mark_recorded(ids)
        self._inflight, self._inflight_committed = None, False

    def _may_audit_reject(self) -> bool:
        """Unauthenticated rejections are audited at most ``audit_rejects_per_min`` a minute
        (a flood of junk must not flood the ledger); beyond that they are counted."""
        now = time.monotonic()
        q = self._reject_audits
        while q and now - q[0] > 60:
            q.popleft()
        if len(q) >= self.cfg.audit_rejects_per_min:
            self.metrics.inc("control_audit_suppressed")
            return False
        q.append(now)
        return True

    # -- commands -------------------------------------------------------------------------

    def _auth_context(self, store: ReplayStore, now_ms: int) -> AuthContext:
        return AuthContext(
            gateway_id=self.gw, issuers=self.issuers, two_person_points=self.two_person,
            now_ms=now_ms, skew_ms=round(self.cfg.clock_skew_s * 1000),
            max_lifetime_ms=round(self.cfg.max_lifetime_s * 1000), seen_ids=store.seen,
            last_seq=store.last_seq)

    def admit(self, data: bytes) -> None:
        """A payload from the command topic, checked before it may take a place in the queue
        (synchronous, bounded work: at most 16 KiB parsed, one signature check unless the
        issuer's own signature verifies). Malformed, unauthentic, untimely or replayed payloads are refused
        here, so a flood of them never takes a valid command's place: they are nacked at most
        ``reject_acks_per_s`` a second and audited at most ``audit_rejects_per_min`` a minute,
        the rest counted. Authentic commands wait in their issuer's queue; a full one answers
        ``overloaded``."""
        now_ms = _now_ms()
        if len(data) > MAX_PAYLOAD:  # not even looked at
            self._refuse_early(None, None, None, "malformed",
                               f"payload of {len(data)} bytes exceeds {MAX_PAYLOAD}", now_ms,
                               self._malformed_audit(None, "malformed", "oversize", data,
                                                     now_ms))
            return
        try:
            cmd = parse_command(data)
        except EnvelopeError as e:
            self._refuse_early(e.command_id, None, None, e.reason, e.detail, now_ms,
                               self._malformed_audit(e.command_id, e.reason, e.detail, data,
                                                     now_ms))
            return
        store = self._store
        if store is not None:
            auth = authenticate(cmd, self._auth_context(store, now_ms))
            if not auth.ok and not consumes_id(auth):
                self._refuse_early(cmd.id, cmd.point, cmd.value, auth.reason, auth.detail,
                                   now_ms, self._record("command", cmd.id,
                                                        self._command_audit(cmd, auth, now_ms)))
                return
        if cmd.id in self._queued_ids:
            v = Verdict("replayed", f"command id {cmd.id!r} is already queued")
            self._refuse_early(cmd.id, cmd.point, cmd.value, v.reason, v.detail, now_ms,
                               self._record("command", cmd.id,
                                            self._command_audit(cmd, v, now_ms)))
            return
        if not self.commands.put_nowait(cmd.issuer, (cmd.id, data)):
            self.metrics.inc("control_commands_received")
            self.metrics.inc("control_commands_overloaded")
            log.warning("control: the command queue of issuer %s is full; refusing %s",
                        cmd.issuer, cmd.id)
            self._send_ack(Ack(id=cmd.id, gateway=self.gw, status="rejected",
                               reason="overloaded", detail=f"the command queue of issuer "
                               f"{cmd.issuer} is full; not evaluated, nothing written",
                               point=cmd.point, requested=cmd.value, applied=None,
                               read_back=None, ts_ms=_now_ms()))
            return
        self._queued_ids.add(cmd.id)

    def _malformed_audit(self, cid: str | None, reason: str, detail: str, payload: bytes,
                         now_ms: int) -> AuditRecord:
        return self._record("command", cid or "-", {
            "verdict": "rejected", "reason": reason, "detail": detail,
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
            "payload_bytes": len(payload), "received_ms": now_ms})

    def _refuse_early(self, cid: str | None, point: str | None, requested: str | None,
                      reason: str | None, detail: str, now_ms: int, audit: AuditRecord) -> None:
        """A payload refused before the queue: counted always; audited, logged and nacked
        within their budgets."""
        self.metrics.inc("control_commands_received")
        if reason in ("malformed", "unsupported-version"):
            self.metrics.inc("control_commands_malformed")
        if self._may_audit_reject():
            log.warning("control: refused %s: %s (%s)", cid or "a payload", reason, detail)
            try:
                self._records.put_nowait(([audit], []))
            except asyncio.QueueFull:
                self.metrics.inc("control_audit_suppressed")
        if self._may_nack():
            self._send_ack(self._nack(cid, point, requested, reason, detail, now_ms))
        else:
            self.metrics.inc("control_acks_suppressed")
            if reason:
                self.metrics.inc("control_rejected_" + reason.replace("-", "_"))

    def _may_nack(self) -> bool:
        """A token bucket of ``reject_acks_per_s`` (burst: one second's worth)."""
        rate = self.cfg.reject_acks_per_s
        now = time.monotonic()
        self._nack_tokens = min(max(rate, 1.0),
                                self._nack_tokens + (now - self._nack_refill) * rate)
        self._nack_refill = now
        if self._nack_tokens >= 1.0:
            self._nack_tokens -= 1.0
            return True
        return False

    async def run_commands(self) -> None:
        await self.store()
        while True:
            raise_if_cancelling()
            cid, payload = await self.commands.get()
            self._queued_ids.discard(cid)
            # A command being handled finishes (write, read-back, audit, ack) even when the
            # task is cancelled meanwhile.
            await asyncio.shield(self._handle_safely(payload))

    async def _handle_safely(self, payload: bytes) -> Ack:
        t0 = time.perf_counter()
        try:
            ack = await self.handle(payload)
        except Exception as e:
            self.metrics.inc("control_internal_errors")
            log.exception("control: command failed")
            ack = Ack(id=best_effort_id(payload), gateway=self.gw, status="failed",
                      reason="internal-error", detail=f"{type(e).__name__}: {e}", point=None,
                      requested=None, applied=None, read_back=None, ts_ms=_now_ms())
        self._send_ack(ack)
        self.metrics.inc("control_command_us", round((time.perf_counter() - t0) * 1e6))
        return ack

    async def handle(self, payload: bytes) -> Ack:
        """Decide and carry out one command; returns its ack (the caller publishes it)."""
        store = await self.store()
        now_ms = _now_ms()
        self.metrics.inc("control_commands_received")
        try:
            cmd = parse_command(payload)
        except EnvelopeError as e:
            log.warning("control: refused a payload of %d bytes: %s: %s", len(payload), e.reason,
                        e.detail)
            self.metrics.inc("control_commands_malformed")
            if self._may_audit_reject():
                await self._audit_later([self._malformed_audit(e.command_id, e.reason,
                                                               e.detail, payload, now_ms)], [])
            return self._nack(e.command_id, None, None, e.reason, e.detail, now_ms)
        auth = authenticate(cmd, self._auth_context(store, now_ms))
        journaled = consumes_id(auth)
        if journaled:  # the write-ahead record: durable before the plant is touched
            await store.record(command_id=cmd.id, issuer=cmd.issuer, seq=cmd.seq,
                               keep_until_ms=cmd.expires_at_ms + round(
                                   self.cfg.clock_skew_s * 1000),
                               now_ms=now_ms, advance_seq=advances_seq(auth),
                               envelope=cmd.to_bytes().decode())
        jid = [cmd.id] if journaled else []
        if not auth.ok:
            log.warning("control: command %s from %s refused: %s (%s)", cmd.id, cmd.issuer,
                        auth.reason, auth.detail)
            if journaled or self._may_audit_reject():
                await self._audit_later([self._record(
                    "command", cmd.id, self._command_audit(cmd, auth, now_ms))], jid)
            return self._nack(cmd.id, cmd.point, cmd.value, auth.reason, auth.detail, now_ms)
        point = self.points.get(cmd.point)
        # (an undeclared point gets a throwaway lock: no per-name state for unknown points)
        async with self._locks[cmd.point] if point is not None else asyncio.Lock():
            current: float | None = None
            signals: dict[str, float] = {}
            read_errors: list[str] = []
            if point is not None:
                try:
                    current, _ = await self.plant.read_point(point)
                except ActuatorError as e:
                    read_errors.append(str(e))
                for perm in point.permissives:
                    if perm.signal in signals:
                        continue
                    try:
                        signals[perm.signal] = await self.plant.read_signal(
                            self.signals[perm.signal])
                    except ActuatorError as e:
                        read_errors.append(str(e))
            now_ms = _now_ms()
            verdict = authorize(cmd, PlantContext(
                points=self.policies, now_ms=now_ms, current=current, signals=signals,
                recent_writes_ms=self.recent_writes.get(cmd.point, ()), overrides=self.overrides,
                enabled=self.enabled))
            if read_errors and verdict.reason == "plant-unavailable":
                verdict = Verdict(verdict.reason, f"{verdict.detail}: {'; '.join(read_errors)}")
            audit = self._command_audit(cmd, verdict, now_ms)
            audit.update(current=_num(current), signals=signals)
            command_record = self._record("command", cmd.id, audit)
            if not verdict.ok:
                log.warning("control: command %s (%s = %s) refused: %s (%s)", cmd.id, cmd.point,
                            cmd.value, verdict.reason, verdict.detail)
                await self._audit_later([command_record], jid)
                return self._nack(cmd.id, cmd.point, cmd.value, verdict.reason, verdict.detail,
                                  now_ms)
            assert point is not None
            value = cmd.number()
            await self._note_write(cmd.point, now_ms)
            status, reason, detail, regs, rb, rb_regs = await self._write_and_check(point, value)
            if status == "applied" and point.lease_s is not None:
                self.leases[point.id] = time.monotonic() + point.lease_s
            await self._audit_later([command_record, self._record("write", point.id, {
                "origin": "remote", "command": cmd.id, "issuer": cmd.issuer,
                "point": point.id, "value": value, "registers": regs,
                "read_back": _num(rb), "read_back_registers": rb_regs, "status": status,
                "reason": reason, "detail": detail})], jid)
        log.info("control: command %s: %s = %s %s -> %s", cmd.id, cmd.point, cmd.value, cmd.unit,
                 status if reason is None else f"{status} ({reason})")
        return Ack(id=cmd.id, gateway=self.gw, status=status, reason=reason, detail=detail,
                   point=cmd.point, requested=cmd.value,
                   applied=_fmt(value) if regs is not None else None, read_back=_fmt(rb),
                   ts_ms=_now_ms())

    async def _note_write(self, point: str, now_ms: int) -> None:
        """Count a remote write in the point's rate window, in memory and durably in the
        journal (before the write: a restart must not reopen the window)."""
        q = self.recent_writes[point]
        q.append(now_ms)
        window = self.policies[point].rate_window_ms
        while q and now_ms - q[0] >= window:
            q.popleft()
        await (await self.store()).note_write(point, now_ms)

    def _command_audit(self, cmd: Command, v: Verdict, now_ms: int) -> dict[str, Any]:
        return {"envelope": cmd.to_json(), "verdict": "accepted" if v.ok else "rejected",
                "reason": v.reason, "detail": v.detail, "received_ms": now_ms}

    def _nack(self, cid: str | None, point: str | None, requested: str | None, reason: str | None,
              detail: str, now_ms: int) -> Ack:
        return Ack(id=cid, gateway=self.gw, status="rejected", reason=reason,
                   detail=f"{detail}; nothing was written", point=point, requested=requested,
                   applied=None, read_back=None, ts_ms=_now_ms())

    async def _write_and_check(self, point: WritablePoint, value: float) -> tuple[
            str, str | None, str, list[int] | None, float | None, list[int] | None]:
        """Write, read back, compare registers: (status, reason, detail, registers written,
        read-back value, read-back registers)."""
        try:
            regs = await self.plant.write_point(point, value)
        except (ActuatorError, ValueError) as e:
            self.metrics.inc("control_write_failures")
            rb = rb_regs = None
            try:  # what is there now, for the record
                rb, rb_regs = await self.plant.read_point(point)
            except ActuatorError:
                pass
            return "failed", "write-failed", str(e), None, rb, rb_regs
        if point.readback_delay_s:
            await asyncio.sleep(point.readback_delay_s)
        try:
            rb, rb_regs = await self.plant.read_point(point)
        except ActuatorError as e:
            self.metrics.inc("control_readback_failures")
            return "failed", "readback-mismatch", f"written, but the read-back failed: {e}", \
                regs, None, None
        if rb_regs != regs:
            self.metrics.inc("control_readback_mismatches")
            return ("failed", "readback-mismatch",
                    f"wrote {regs} ({value:g}), read back {rb_regs} ({rb:g})", regs, rb, rb_regs)
        return "applied", None, "written and read back", regs, rb, rb_regs

    # -- local rules ----------------------------------------------------------------------

    async def local_write(self, rule: str, point: WritablePoint,
                          decide: Callable[[float | None], float | None],
                          why: dict[str, Any]) -> str:
        """A local rule's write (no remote policy: local rules win), read back and audited.
        ``decide(present value or None)`` gives the value to write, or None to leave the
        point alone; it runs under the point's lock, so no remote command interleaves.
        Returns "applied", "failed" or "skipped"."""
        async with self._locks[point.id]:
            current: float | None = None
            try:
                current, _ = await self.plant.read_point(point)
            except ActuatorError as e:
                log.warning("control: rule %s: cannot read %s: %s", rule, point.id, e)
            value = decide(current)
            if value is None:
                return "skipped"
            status, reason, detail, regs, rb, rb_regs = await self._write_and_check(point, value)
            await self._audit("local-rule", rule, {
                **why, "rule": rule, "point": point.id, "previous": _num(current),
                "value": value, "registers": regs, "read_back": _num(rb),
                "read_back_registers": rb_regs, "status": status, "reason": reason,
                "detail": detail})
        level = logging.WARNING if status != "applied" else logging.INFO
        log.log(level, "control: rule %s set %s = %g: %s", rule, point.id, value,
                status if reason is None else f"{status} ({reason}: {detail})")
        self.metrics.inc(f"control_local_writes_{status}")
        return status

    async def run_rules(self) -> None:
        await self.store()  # restored holds first: a sample may clear one
        while True:
            raise_if_cancelling()
            r = await self._rule_q.get()
            valid = is_valid(r.quality) and not math.isnan(r.value)
            if self.leak_rule is not None and r.point_id == self.leak_rule.gas_point:
                await self._leak_sample(r, valid)
            if self.trim_rule is not None and r.point_id == self.trim_rule.o2_point:
                await self._trim_sample(r, valid)

    async def _leak_sample(self, r: Reading, valid: bool) -> None:
        rule, det = self.leak_rule, self.leak
        assert rule is not None and det is not None
        event = det.feed(r.value, valid)
        vent = self.points[rule.vent_point]
        if event == "raised":
            self.metrics.inc("control_leak_alarms")
            await self._hold(vent.id, Override(
                "leak", "decrease", f"combustible gas {r.value:g} > {rule.threshold:g}"))
            self._alarm("leak", "raised", r, rule.threshold)
            log.warning("control: LEAK alarm: %s = %g %s (threshold %g); opening %s to %g",
                        r.point_id, r.value, r.unit, rule.threshold, vent.id, rule.safe_opening)
            why = {"event": "leak-raised", "trigger": {"point": r.point_id, "value": r.value,
                                                       "seq": r.seq, "ts_ns": r.ts_ns},
                   "threshold": rule.threshold}
            self._leak_write_pending = await self.local_write(
                "leak", vent, self._open_vent, why) == "failed"
        elif event == "cleared":
            await self._release(vent.id)
            self._alarm("leak", "cleared", r, rule.clear_level)
            log.warning("control: leak alarm cleared: %s = %g", r.point_id, r.value)
            await self._audit("local-rule", "leak", {
                "event": "leak-cleared", "rule": "leak", "point": vent.id,
                "trigger": {"point": r.point_id, "value": r.value, "seq": r.seq,
                            "ts_ns": r.ts_ns}, "clear_below": rule.clear_level})
        elif det.active and self._leak_write_pending:
            # the vent write failed when the alarm rose: retry on every sample while it lasts
            self._leak_write_pending = await self.local_write(
                "leak", vent, self._open_vent, {"event": "leak-retry"}) == "failed"

    def _open_vent(self, current: float | None) -> float | None:
        """The leak rule's vent target: the safe opening, unless the vent is open wider."""
        assert self.leak_rule is not None
        safe = self.leak_rule.safe_opening
        return safe if current is None or current < safe else None

    def _alarm(self, rule: str, state: str, r: Reading, level: float) -> None:
        self._publish(self.t_alarm, _canonical({
            "gateway": self.gw, "rule": rule, "state": state, "point": r.point_id,
            "value": _num(r.value), "unit": r.unit, "level": level,
            "ts_ms": _now_ms()}).encode(), qos=1, retain=True)

    async def _trim_sample(self, r: Reading, valid: bool) -> None:
        rule = self.trim_rule
        assert rule is not None
        damper = self.points[rule.damper_point]
        forbid = trim_forbid(r.value, low=rule.low, high=rule.high) if valid else None
        if forbid is None:
            if valid:
                await self._release(damper.id)
        else:
            await self._hold(damper.id, Override(
                "combustion", forbid,
                f"flue O2 {r.value:g} outside [{rule.low:g}, {rule.high:g}]"))
        if not valid or forbid is None:
            return
        now = time.monotonic()
        if now - self._last_trim < rule.interval_s:
            return
        self._last_trim = now
        o2 = r.value

        def target(current: float | None) -> float | None:
            if current is None:
                return None
            return trim_target(o2, current, low=rule.low, high=rule.high, step=rule.step,
                               lo=rule.min, hi=rule.max)

        await self.local_write("combustion", damper, target, {
            "event": "o2-trim", "trigger": {"point": r.point_id, "value": o2, "seq": r.seq,
                                            "ts_ns": r.ts_ns},
            "band": [rule.low, rule.high]})

    # -- heartbeat, leases, purge ---------------------------------------------------------

    async def run_heartbeat(self) -> None:
        beats = [d for d in self.cfg.devices if d.heartbeat is not None]
        tick = min([0.5, *(d.heartbeat.interval_s for d in beats if d.heartbeat)])
        counter = {d.id: int(time.time()) & 0xFFFF for d in beats}
        due = dict.fromkeys(counter, 0.0)
        next_purge = time.monotonic() + 60
        while True:
            raise_if_cancelling()
            now = time.monotonic()
            for d in beats:
                assert d.heartbeat is not None
                if now < due[d.id]:
                    continue
                due[d.id] = now + d.heartbeat.interval_s
                counter[d.id] = (counter[d.id] + 1) & 0xFFFF
                try:
                    await self.plant.heartbeat(d, counter[d.id])
                    self.metrics.inc("control_heartbeats")
                    if self.metrics.set_state(f"control:device:{d.id}", "ok"):
                        log.info("control: heartbeat to %s running", d.id)
                except ActuatorError as e:
                    self.metrics.inc("control_heartbeat_failures")
                    if self.metrics.set_state(f"control:device:{d.id}", "failing", str(e)):
                        log.warning("control: heartbeat to %s failed: %s (logged once)", d.id, e)
            for pid, deadline in list(self.leases.items()):
                if now >= deadline:
                    await self._lease_expired(pid)
            if now >= next_purge:
                next_purge = now + 60
                store = await self.store()
                await store.purge(_now_ms())
                longest = max((p.rate_window_ms for p in self.policies.values()), default=0)
                await store.purge_writes(_now_ms() - longest)
            await asyncio.sleep(tick)

    async def _lease_expired(self, pid: str) -> None:
        self.leases.pop(pid, None)
        p = self.points[pid]
        assert p.fallback is not None
        fallback = p.fallback
        hold = self.overrides.get(pid)
        self.metrics.inc("control_leases_expired")
        log.info("control: lease of %s expired: back to %g", pid, fallback)

        def target(cur: float | None) -> float | None:
            if hold is None:
                return fallback
            if cur is None:
                return None  # a local safety hold is on and the present value is unknown
            way = "decrease" if fallback < cur else "increase" if fallback > cur else "none"
            return None if way == hold.forbid else fallback  # the hold wins over the lease

        status = await self.local_write("lease", p, target,
                                        {"event": "lease-expired", "lease_s": p.lease_s})
        if status == "failed":  # try again a little later
            self.leases[pid] = time.monotonic() + 5.0
