"""The control service: signed commands in, acknowledgements and live telemetry out, local
rules, setpoint leases and the PLC heartbeat.

    MQTT <prefix>/<gw>/cmd --> admission (size, depth, parse, checks 1-9: junk refused here)
         --> a bounded queue per issuer (round-robin) --> policy --> Modbus write --> read back
         <prefix>/<gw>/ack <-- signed ack  <--------------- audit records (outbox) <--'
    Pipeline tap --> telemetry queue (drop and count) --> <prefix>/<gw>/telemetry
                 --> rule queue --> leak detector / combustion trim --> local writes, alarms

`ControlService` is a small facade that wires the parts, each with one job, and runs the
command path (`handle`):

* `control._transport.MqttTransport`: the broker session, publishing (acks first), telemetry;
* `control._admission.Admission`: authentication and replay before the queue, the fair queue;
* `control._safety.SafetyState`: the policy's state (limits, rate windows, holds) and the
  contexts the pure checks of `control._policy` decide on;
* `control._actuation.Actuator`: every write, read back and compared (`WriteOutcome`), under
  one lock per point, over the device's shared Modbus link; `Heartbeat`;
* `control._journal.Journal`: the control journal and the audit records (the recorder);
* `control._local.LocalRules`: leak detector, combustion trim, setpoint leases.

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
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from control._actuation import Actuator, Heartbeat, num
from control._admission import Admission, command_audit, malformed_audit, nack
from control._clock import SYSTEM_CLOCK, Clock
from control._config import ControlConfig, LeakRule, WritablePoint
from control._envelope import Ack, Command, EnvelopeError, best_effort_id, parse_command
from control._journal import AuditSink, Journal, audit_record, canonical
from control._local import LocalRules
from control._modbus import PlantIO
from control._policy import Override, Verdict, advances_seq, consumes_id
from control._safety import SafetyState, point_policy
from control._state import ReplayStore
from control._transport import NODELAY, MqttTransport, Sign
from drivers.modbus import ModbusLinks
from mrv_core import AuditRecord, Metrics, Reading, raise_if_cancelling

if TYPE_CHECKING:
    from drivers.modbus import ModbusRtuBus

log = logging.getLogger("mrv.control")

TaskFactory = tuple[str, Callable[[], Awaitable[None]]]
_canonical = canonical  # the name tests and tools have used

__all__ = ["NODELAY", "ControlService", "Sign", "TaskFactory", "point_policy"]


def _fmt(x: float | None) -> str | None:
    return None if x is None or math.isnan(x) else repr(float(x))


class ControlService:
    def __init__(self, *, gateway_id: str, config: ControlConfig, data_dir: Path,
                 outbox: AuditSink, metrics: Metrics, sign: Sign | None = None,
                 reading_points: Iterable[str] | None = None,
                 links: ModbusLinks | None = None,
                 buses: Mapping[str, ModbusRtuBus] | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.gw = gateway_id
        self.clock = clock  # every part reads time from it (tests inject their own)
        self.cfg = config
        self.metrics = metrics
        self.points: dict[str, WritablePoint] = {p.id: p for p in config.points}
        self.journal = Journal(path=data_dir / "control.sqlite",
                               synchronous=config.journal_synchronous, outbox=outbox,
                               metrics=metrics, audit_rejects_per_min=config.audit_rejects_per_min,
                               clock=clock)
        self.safety = SafetyState(gateway_id=gateway_id, config=config, metrics=metrics,
                                  store=self.journal.store)
        self.transport = MqttTransport(gateway_id=gateway_id, config=config, metrics=metrics,
                                       admit=self.admit, sign=sign,
                                       before_connect=self.store)
        self.admission = Admission(gateway_id=gateway_id, config=config, metrics=metrics,
                                   safety=self.safety, journal=self.journal,
                                   transport=self.transport, clock=clock)
        self.actuator = Actuator(config=config, metrics=metrics, journal=self.journal,
                                 links=links, buses=buses)
        self.rules = LocalRules(gateway_id=gateway_id, config=config, metrics=metrics,
                                actuator=self.actuator, safety=self.safety,
                                alarm=self.transport.alarm, reading_points=reading_points,
                                clock=clock)
        self.journal.on_open = self._restore

    # -- the parts' state, by the names the daemon and tests use --------------------------

    @property
    def enabled(self) -> bool:
        return self.safety.enabled

    @enabled.setter
    def enabled(self, on: bool) -> None:
        self.safety.enabled = on

    @property
    def overrides(self) -> dict[str, Override]:
        return self.safety.overrides

    @property
    def plant(self) -> PlantIO:
        return self.actuator.plant

    @property
    def _locks(self) -> dict[str, asyncio.Lock]:
        return self.actuator.locks

    @property
    def leak_rule(self) -> LeakRule | None:
        return self.rules.leak_rule

    @property
    def ready(self) -> asyncio.Event:
        return self.transport.ready

    # -- lifecycle ------------------------------------------------------------------------

    def tasks(self) -> list[TaskFactory]:
        out: list[TaskFactory] = [("control:mqtt", self.run_mqtt),
                                  ("control:commands", self.run_commands),
                                  ("control:recorder", self.run_recorder),
                                  ("control:heartbeat", self.run_heartbeat)]
        if self.rules.rule_points:
            out.append(("control:rules", self.run_rules))
        return out

    async def run(self) -> None:
        """Every task under the daemon's supervisor (for use without the daemon)."""
        from mrv_core import supervise

        async with asyncio.TaskGroup() as tg:
            for name, factory in self.tasks():
                tg.create_task(supervise(name, factory, self.metrics), name=name)

    async def aclose(self) -> None:
        """After the tasks are cancelled: commit what the recorder still holds, close."""
        self.actuator.plant.close()
        await self.journal.close()

    async def store(self) -> ReplayStore:
        """The journal, opened (recovered and restored) once."""
        return await self.journal.store()

    async def _restore(self, store: ReplayStore) -> None:
        """The safety state the last process left in the journal: rate-limit windows and local
        rule holds. Runs before the service subscribes to commands or reads a rule sample."""
        self.rules.restored(await self.safety.restore(store, self.clock.now_ms(),
                                                      self.rules.holds_point))

    async def flush(self) -> None:
        """Wait until every queued audit record is committed to the outbox."""
        await self.journal.flush()

    async def _audit_later(self, records: list[AuditRecord], journal_ids: list[str]) -> None:
        await self.journal.later(records, journal_ids)

    async def run_mqtt(self) -> None:
        # the journal's safety state (replay cache, sequences, rate windows, rule holds) is
        # restored before the first command can arrive (the transport's before_connect)
        await self.transport.run()

    async def run_recorder(self) -> None:
        await self.journal.run_recorder()

    async def run_rules(self) -> None:
        await self.store()  # restored holds first: a sample may clear one
        await self.rules.run()

    # -- pipeline tap (must never block or raise) -----------------------------------------

    def on_readings(self, chunk: list[Reading], signatures: list[bytes] | None = None) -> None:
        """Committed readings (with their record signatures when the gateway signs records)."""
        try:
            if self.cfg.telemetry.enabled and chunk:
                self.transport.telemetry(chunk, signatures)
            if self.rules.rule_points:
                self.rules.feed(chunk)
        except Exception:
            self.metrics.inc("control_tap_errors")
            log.exception("control tap failed (the readings are committed; control lost them)")

    # -- commands -------------------------------------------------------------------------

    def admit(self, data: bytes) -> None:
        """A payload from the command topic (see `Admission.admit`)."""
        self.admission.admit(data)

    async def run_commands(self) -> None:
        await self.store()
        while True:
            raise_if_cancelling()
            payload = await self.admission.next()
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
                      requested=None, applied=None, read_back=None,
                      ts_ms=self.clock.now_ms())
        self.transport.send_ack(ack)
        self.metrics.inc("control_command_us", round((time.perf_counter() - t0) * 1e6))
        return ack

    async def handle(self, payload: bytes) -> Ack:
        """Decide and carry out one command; returns its ack (the caller publishes it)."""
        store = await self.store()
        received_ms = self.clock.now_ms()
        self.metrics.inc("control_commands_received")
        try:
            cmd = parse_command(payload)
        except EnvelopeError as e:
            log.warning("control: refused a payload of %d bytes: %s: %s", len(payload), e.reason,
                        e.detail)
            self.metrics.inc("control_commands_malformed")
            if self.journal.may_audit_reject():
                await self.journal.later([malformed_audit(e.command_id, e.reason, e.detail,
                                                          payload, received_ms,
                                                          ts_ns=self.clock.now_ns())], [])
            return nack(self.gw, e.command_id, None, None, e.reason, e.detail,
                        ts_ms=self.clock.now_ms())
        auth = self.safety.authenticate(cmd, store, received_ms)
        journaled = consumes_id(auth)
        # The write-ahead record: durable before anything is decided, written or acked. It is
        # committed while the plant's present value is read (a read changes nothing), so a
        # command waits for the longer of the two, not for both (design 008, decision 17).
        write_ahead = asyncio.ensure_future(store.record(
            command_id=cmd.id, issuer=cmd.issuer, seq=cmd.seq,
            keep_until_ms=cmd.expires_at_ms + round(self.cfg.clock_skew_s * 1000),
            now_ms=received_ms, advance_seq=advances_seq(auth),
            envelope=cmd.to_bytes().decode())) if journaled else None
        try:
            return await self._carry_out(cmd, auth, received_ms, write_ahead)
        finally:
            if write_ahead is not None:
                await write_ahead  # done already but on an error; its own error is raised

    async def _carry_out(self, cmd: Command, auth: Verdict, received_ms: int,
                         write_ahead: asyncio.Future[None] | None) -> Ack:
        journaled = write_ahead is not None
        jid = [cmd.id] if journaled else []
        if not auth.ok:
            if write_ahead is not None:
                await write_ahead
            log.warning("control: command %s from %s refused: %s (%s)", cmd.id, cmd.issuer,
                        auth.reason, auth.detail)
            if journaled or self.journal.may_audit_reject():
                await self.journal.later([audit_record(
                    "command", cmd.id, command_audit(cmd, auth, received_ms),
                    ts_ns=self.clock.now_ns())], jid)
            return nack(self.gw, cmd.id, cmd.point, cmd.value, auth.reason, auth.detail,
                        ts_ms=self.clock.now_ms())
        point = self.points.get(cmd.point)
        # (an undeclared point gets a throwaway lock: no per-name state for unknown points)
        async with self.actuator.locks[cmd.point] if point is not None else asyncio.Lock():
            current: float | None = None
            signals: dict[str, float] = {}
            read_errors: list[str] = []
            if point is not None:
                snap = await self.actuator.snapshot(point)
                current, signals, read_errors = snap.current, snap.signals, snap.errors
            if write_ahead is not None:
                await write_ahead
            decided_ms = self.clock.now_ms()
            verdict = self.safety.authorize(cmd, now_ms=decided_ms, current=current,
                                            signals=signals)
            if read_errors and verdict.reason == "plant-unavailable":
                verdict = Verdict(verdict.reason, f"{verdict.detail}: {'; '.join(read_errors)}")
            audit = command_audit(cmd, verdict, received_ms)
            audit.update(decided_ms=decided_ms, current=num(current), signals=signals)
            command_record = audit_record("command", cmd.id, audit, ts_ns=self.clock.now_ns())
            if not verdict.ok:
                log.warning("control: command %s (%s = %s) refused: %s (%s)", cmd.id, cmd.point,
                            cmd.value, verdict.reason, verdict.detail)
                await self.journal.later([command_record], jid)
                return nack(self.gw, cmd.id, cmd.point, cmd.value, verdict.reason,
                            verdict.detail, ts_ms=self.clock.now_ms())
            assert point is not None
            value = cmd.number()
            await self.safety.note_write(cmd.point, decided_ms)
            out = await self.actuator.write_and_check(point, value)
            if out.applied:
                self.rules.lease(point)
            await self.journal.later([command_record, audit_record("write", point.id, {
                "origin": "remote", "command": cmd.id, "issuer": cmd.issuer,
                "point": point.id, "value": value, **out.audit()},
                ts_ns=self.clock.now_ns())], jid)
        log.info("control: command %s: %s = %s %s -> %s", cmd.id, cmd.point, cmd.value, cmd.unit,
                 out.status if out.reason is None else f"{out.status} ({out.reason})")
        return Ack(id=cmd.id, gateway=self.gw, status=out.status, reason=out.reason,
                   detail=out.detail, point=cmd.point, requested=cmd.value,
                   applied=_fmt(value) if out.registers is not None else None,
                   read_back=_fmt(out.read_back), ts_ms=self.clock.now_ms())

    # -- heartbeat, leases, purge ---------------------------------------------------------

    async def run_heartbeat(self) -> None:
        beat = Heartbeat(self.cfg.devices, self.actuator.plant, self.metrics, self.clock)
        next_purge = self.clock.monotonic() + 60
        while True:
            raise_if_cancelling()
            now = self.clock.monotonic()
            await beat.beat(now)
            await self.rules.expire_leases(now)
            if now >= next_purge:
                next_purge = now + 60
                store = await self.store()
                await store.purge(self.clock.now_ms())
                await store.purge_writes(self.clock.now_ms() - self.safety.longest_window_ms())
            await asyncio.sleep(beat.tick)
