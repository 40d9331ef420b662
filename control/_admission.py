"""Authentication and replay, before the queue (admission).

`Admission.admit` takes each payload from the command topic, synchronously and with bounded
work (at most 16 KiB parsed, one signature check unless the issuer's own signature verifies):
malformed, unauthentic, untimely or replayed payloads are refused here, so a flood of them
never takes a valid command's place. Refusals are always counted; they are nacked at most
``reject_acks_per_s`` a second and audited at most ``audit_rejects_per_min`` a minute.
Authentic commands wait in their issuer's queue (``command_queue`` each, served round-robin);
a full one answers ``overloaded``. The command task takes them with `next`; there the
authentication is decided again against the journal, durably.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from control._clock import SYSTEM_CLOCK, Clock
from control._config import ControlConfig
from control._envelope import MAX_PAYLOAD, Ack, Command, EnvelopeError, parse_command
from control._fair import FairQueue
from control._journal import Journal, audit_record
from control._policy import Verdict, consumes_id
from control._safety import SafetyState
from control._transport import MqttTransport
from mrv_core import AuditRecord, Metrics

log = logging.getLogger("mrv.control")


def command_audit(cmd: Command, v: Verdict, received_ms: int) -> dict[str, Any]:
    return {"envelope": cmd.to_json(), "verdict": "accepted" if v.ok else "rejected",
            "reason": v.reason, "detail": v.detail, "received_ms": received_ms}


def malformed_audit(cid: str | None, reason: str, detail: str, payload: bytes,
                    received_ms: int, *, ts_ns: int) -> AuditRecord:
    return audit_record("command", cid or "-", {
        "verdict": "rejected", "reason": reason, "detail": detail,
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "payload_bytes": len(payload), "received_ms": received_ms}, ts_ns=ts_ns)


def nack(gateway_id: str, cid: str | None, point: str | None, requested: str | None,
         reason: str | None, detail: str, *, ts_ms: int) -> Ack:
    return Ack(id=cid, gateway=gateway_id, status="rejected", reason=reason,
               detail=f"{detail}; nothing was written", point=point, requested=requested,
               applied=None, read_back=None, ts_ms=ts_ms)


class Admission:
    def __init__(self, *, gateway_id: str, config: ControlConfig, metrics: Metrics,
                 safety: SafetyState, journal: Journal, transport: MqttTransport,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.gw = gateway_id
        self.cfg = config
        self.metrics = metrics
        self.safety = safety
        self.journal = journal
        self.transport = transport
        # authentic commands only, a queue of `command_queue` per issuer, served round-robin
        self.commands: FairQueue[tuple[str, bytes]] = FairQueue(config.command_queue)
        self._queued_ids: set[str] = set()
        self._nack_tokens = float(config.reject_acks_per_s)
        self._nack_refill = clock.monotonic()

    def admit(self, data: bytes) -> None:
        """A payload from the command topic, checked before it may take a place in the queue."""
        received_ms = self.clock.now_ms()
        if len(data) > MAX_PAYLOAD:  # not even looked at
            self._refuse(None, None, None, "malformed",
                         f"payload of {len(data)} bytes exceeds {MAX_PAYLOAD}",
                         malformed_audit(None, "malformed", "oversize", data, received_ms,
                                         ts_ns=self.clock.now_ns()))
            return
        try:
            cmd = parse_command(data)
        except EnvelopeError as e:
            self._refuse(e.command_id, None, None, e.reason, e.detail,
                         malformed_audit(e.command_id, e.reason, e.detail, data, received_ms,
                                         ts_ns=self.clock.now_ns()))
            return
        store = self.journal.opened
        if store is not None:
            auth = self.safety.authenticate(cmd, store, received_ms)
            if not auth.ok and not consumes_id(auth):
                self._refuse(cmd.id, cmd.point, cmd.value, auth.reason, auth.detail,
                             audit_record("command", cmd.id,
                                          command_audit(cmd, auth, received_ms),
                                          ts_ns=self.clock.now_ns()))
                return
        if cmd.id in self._queued_ids:
            v = Verdict("replayed", f"command id {cmd.id!r} is already queued")
            self._refuse(cmd.id, cmd.point, cmd.value, v.reason, v.detail,
                         audit_record("command", cmd.id, command_audit(cmd, v, received_ms),
                                      ts_ns=self.clock.now_ns()))
            return
        if not self.commands.put_nowait(cmd.issuer, (cmd.id, data)):
            self.metrics.inc("control_commands_received")
            self.metrics.inc("control_commands_overloaded")
            log.warning("control: the command queue of issuer %s is full; refusing %s",
                        cmd.issuer, cmd.id)
            self.transport.send_ack(Ack(
                id=cmd.id, gateway=self.gw, status="rejected", reason="overloaded",
                detail=f"the command queue of issuer {cmd.issuer} is full; not evaluated, "
                       "nothing written", point=cmd.point, requested=cmd.value, applied=None,
                read_back=None, ts_ms=self.clock.now_ms()))
            return
        self._queued_ids.add(cmd.id)

    async def next(self) -> bytes:
        """The next admitted command's payload (round-robin over issuers)."""
        cid, payload = await self.commands.get()
        self._queued_ids.discard(cid)
        return payload

    def _refuse(self, cid: str | None, point: str | None, requested: str | None,
                reason: str | None, detail: str, audit: AuditRecord) -> None:
        """A payload refused before the queue: counted always; audited, logged and nacked
        within their budgets."""
        self.metrics.inc("control_commands_received")
        if reason in ("malformed", "unsupported-version"):
            self.metrics.inc("control_commands_malformed")
        if self.journal.may_audit_reject():
            log.warning("control: refused %s: %s (%s)", cid or "a payload", reason, detail)
            if not self.journal.later_nowait(audit):
                self.metrics.inc("control_audit_suppressed")
        if self._may_nack():
            self.transport.send_ack(nack(self.gw, cid, point, requested, reason, detail,
                                         ts_ms=self.clock.now_ms()))
        else:
            self.metrics.inc("control_acks_suppressed")
            if reason:
                self.metrics.inc("control_rejected_" + reason.replace("-", "_"))

    def _may_nack(self) -> bool:
        """A token bucket of ``reject_acks_per_s`` (burst: one second's worth)."""
        rate = self.cfg.reject_acks_per_s
        now = self.clock.monotonic()
        self._nack_tokens = min(max(rate, 1.0),
                                self._nack_tokens + (now - self._nack_refill) * rate)
        self._nack_refill = now
        if self._nack_tokens >= 1.0:
            self._nack_tokens -= 1.0
            return True
        return False
