"""The control service against a real Mosquitto broker and the simulated boiler-room PLC
(pymodbus): acks, nacks with reasons, zero writes for refused commands, read-back, replay
cache across restarts, heartbeat and watchdog, leases, telemetry, local rules."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

from control._clock import Clock
from control._config import ControlConfig
from control._envelope import Command, public_key_of, sign_bytes, verify_ack
from control._service import ControlService
from ledger_client import Outbox
from mrv_core._metrics import Metrics
from mrv_core._records import AuditRecord, Quality, Reading
from simulator import ActuatorModel, Mosquitto, free_port
from simulator._actuators import HR_VENT
from tests.test_control_support import (
    AUDITOR,
    GATEWAY_SEED,
    GW,
    MALLORY,
    control_dict,
    harness,
    make_command,
)

GW_PUB = public_key_of(GATEWAY_SEED)


def _audits(records: list[Any], category: str, subject: str | None = None) -> list[dict[str, Any]]:
    return [json.loads(r.payload) for r in records
            if isinstance(r, AuditRecord) and r.category == category
            and (subject is None or r.subject == subject)]


async def test_happy_path_write_readback_ack_and_audit(tmp_path: Path,
                                                       mosquitto: Mosquitto) -> None:
    async with harness(tmp_path, mosquitto.port) as h:
        assert h.model.vent == 20.0
        cmd = make_command("42.5")
        ack = await h.send(cmd)
        assert ack["status"] == "applied", ack
        assert ack["reason"] is None
        assert (ack["requested"], ack["applied"], ack["read_back"]) == ("42.5", "42.5", "42.5")
        assert verify_ack(ack, GW_PUB)  # signed by the gateway's Ed25519 key
        # exactly one write, of the signed value, with the point's type (uint16, 0.1 %)
        assert [(w.address, w.values) for w in h.plant.writes] == [(HR_VENT, (425,))]
        assert h.model.vent == 42.5
        # float32 in CDAB word order, two-person point with the auditor's approval
        ack2 = await h.send(make_command("47.25", point="burner.air_damper",
                                         approvers=(("auditor", AUDITOR),)))
        assert ack2["status"] == "applied", ack2
        assert h.plant.writes[-1].address == 2
        assert h.plant.writes[-1].values == (0x0000, 0x423D)  # 47.25 = 0x423D0000, CDAB
        assert h.model.damper == 47.25
        records = await h.audit()
        cmd_audit = _audits(records, "command", cmd.id)
        assert len(cmd_audit) == 1
        assert cmd_audit[0]["verdict"] == "accepted"
        assert cmd_audit[0]["envelope"] == json.loads(cmd.to_bytes())
        assert cmd_audit[0]["current"] == 20.0
        write = _audits(records, "write", "vent.opening")
        assert write == [{"origin": "remote", "command": cmd.id, "issuer": "epb",
                          "point": "vent.opening", "value": 42.5, "registers": [425],
                          "read_back": 42.5, "read_back_registers": [425],
                          "status": "applied", "reason": None,
                          "detail": "written and read back"}]
        # the command record is committed before the write record (write-ahead)
        kinds = [(r.category, r.subject) for r in records if isinstance(r, AuditRecord)]
        assert kinds.index(("command", cmd.id)) < kinds.index(("write", "vent.opening"))
        assert h.metrics.counters["control_ack_applied"] == 2


async def test_the_write_ahead_entry_is_committed_while_the_plant_is_read_never_after_a_write(
        tmp_path: Path, mosquitto: Mosquitto, monkeypatch: Any) -> None:
    """The journal's commit and the read of the present value overlap (a command waits for
    the longer, not both); nothing is written or acked until the entry is durable."""
    from control._actuation import Actuator
    from control._state import ReplayStore

    release, journaling, read = asyncio.Event(), asyncio.Event(), asyncio.Event()
    record, snapshot = ReplayStore.record, Actuator.snapshot

    async def slow_record(self: ReplayStore, **kw: Any) -> None:
        journaling.set()
        await release.wait()
        await record(self, **kw)

    async def noted_snapshot(self: Actuator, point: Any) -> Any:
        snap = await snapshot(self, point)
        read.set()
        return snap

    monkeypatch.setattr(ReplayStore, "record", slow_record)
    monkeypatch.setattr(Actuator, "snapshot", noted_snapshot)
    async with harness(tmp_path, mosquitto.port) as h:
        cmd = make_command("33")
        await h.send_raw(cmd.to_bytes())
        await asyncio.wait_for(journaling.wait(), 15)
        await asyncio.wait_for(read.wait(), 15)  # read while the entry is not yet committed
        await asyncio.sleep(0.2)
        assert h.plant.writes == [] and cmd.id not in h.acks  # nothing before it is durable
        release.set()
        await h.wait_for(lambda: cmd.id in h.acks)
        assert h.acks[cmd.id]["status"] == "applied"
        assert [w.values for w in h.plant.writes] == [(330,)]


async def test_a_write_ahead_entry_that_cannot_be_committed_stops_the_command(
        tmp_path: Path, mosquitto: Mosquitto, monkeypatch: Any) -> None:
    """The plant was read meanwhile, but nothing is written: the command fails, acked so."""
    from control._state import ReplayStore

    async def failing_record(self: ReplayStore, **kw: Any) -> None:
        await asyncio.sleep(0.05)
        raise OSError("disk full")

    monkeypatch.setattr(ReplayStore, "record", failing_record)
    async with harness(tmp_path, mosquitto.port) as h:
        ack = await h.send(make_command("34"))
        assert (ack["status"], ack["reason"]) == ("failed", "internal-error"), ack
        assert "disk full" in ack["detail"]
        assert h.plant.writes == []
        assert h.metrics.counters["control_internal_errors"] == 1


async def test_a_failure_admitting_a_payload_is_counted_and_the_session_goes_on(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """A bug in admission is counted and logged, and drops neither the broker connection nor
    the next command."""
    async with harness(tmp_path, mosquitto.port) as h:
        admit = h.service.transport.admit
        seen: list[bytes] = []

        def broken_once(data: bytes) -> None:
            seen.append(data)
            if len(seen) == 1:
                raise RuntimeError("a bug in admission")
            admit(data)

        h.service.transport.admit = broken_once
        await h.send_raw(b"the first payload")
        ack = await h.send(make_command("31"))
        assert ack["status"] == "applied", ack
        assert seen[0] == b"the first payload"
        assert h.metrics.counters["control_internal_errors"] == 1
        assert h.metrics.counters["control_mqtt_failures"] == 0
        assert h.metrics.components["control:mqtt"].state == "ok"


async def test_refused_commands_are_nacked_with_reason_and_write_nothing(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    model = ActuatorModel()
    async with harness(tmp_path, mosquitto.port, model=model) as h:
        now = time.time_ns() // 1_000_000
        replay = make_command("21")
        assert (await h.send(replay))["status"] == "applied"
        base_writes = len(h.plant.writes)
        forged = make_command("30", seed=MALLORY)  # claims epb, signed by someone else
        tampered = make_command("30")
        tampered_json = dict(tampered.to_json(), value="90")
        cases: list[tuple[str, Command | bytes, str]] = [
            ("forged", forged, "bad-signature"),
            ("tampered", json.dumps(tampered_json).encode(), "bad-signature"),
            ("replayed", replay, "replayed"),
            ("expired", make_command("30", not_before_ms=now - 120_000,
                                     expires_at_ms=now - 60_000), "expired"),
            ("not-yet-valid", make_command("30", not_before_ms=now + 60_000,
                                           issued_at_ms=now, expires_at_ms=now + 120_000),
             "not-yet-valid"),
            ("unknown-issuer", make_command("30", issuer="mallory", seed=MALLORY),
             "unknown-issuer"),
            ("wrong-point", make_command("30", point="boiler.main_valve"), "point-not-allowed"),
            ("undeclared-point", make_command("30", point="boiler.main_valve",
                                              issuer="auditor", seed=AUDITOR),
             "point-not-writable"),
            ("wrong-gateway", make_command("30", gateway="plant-b-gw1"), "wrong-gateway"),
            ("stale-seq", make_command("30", seq=1), "stale-sequence"),
            ("out-of-range", make_command("100.5"), "out-of-range"),
            ("not-representable", make_command("30.05"), "not-representable"),
            # item 6: within 1e-6 of a multiple of 0.1 was once written rounded
            ("sub-resolution", make_command("30.00000001"), "not-representable"),
            ("unit", make_command("30", unit="m3/h"), "unit-mismatch"),
            ("too-large-step", make_command("90"), "step-too-large"),
            ("no-approval", make_command("46", point="burner.air_damper"),
             "approval-required"),
        ]
        for name, c, want in cases:
            if isinstance(c, Command):
                ack = await h.send(c)
            else:
                cid = json.loads(c)["id"]
                h.acks.pop(cid, None)
                await h.send_raw(c)
                await h.wait_for(lambda cid=cid: cid in h.acks)  # type: ignore[misc]
                ack = h.acks[cid]
            assert (ack["status"], ack["reason"]) == ("rejected", want), (name, ack)
            assert ack["detail"].endswith("nothing was written"), ack
            assert verify_ack(ack, GW_PUB)
            assert len(h.plant.writes) == base_writes, (name, h.plant.writes)
        # permissive: the PLC's own gas alarm blocks closing the vent, not opening it
        model.plc_alarm_lel = -1.0
        ack = await h.send(make_command("15"))
        assert (ack["status"], ack["reason"]) == ("rejected", "permissive-blocked"), ack
        assert len(h.plant.writes) == base_writes
        assert (await h.send(make_command("30")))["status"] == "applied"
        model.plc_alarm_lel = 25.0
        # global switch
        h.service.enabled = False
        ack = await h.send(make_command("35"))
        assert ack["reason"] == "control-disabled"
        h.service.enabled = True
        assert len(h.plant.writes) == base_writes + 1
        records = await h.audit()
        rejected = [a for a in _audits(records, "command") if a.get("verdict") == "rejected"]
        assert {a["reason"] for a in rejected} >= {w for _, _, w in cases}
        assert h.metrics.counters["control_rejected_bad_signature"] == 2


def _vent_rate_limited(*, max_writes: int, window_s: int) -> dict[str, Any]:
    """The two points, the vent's writes limited to ``max_writes`` per ``window_s``."""
    return {"points": [
        {"id": "vent.opening", "device": "boiler-room-plc", "address": 0, "type": "uint16",
         "scale": 0.1, "unit": "%", "min": 0, "max": 100, "max_step": 50,
         "rate_limit": {"max_writes": max_writes, "window_s": window_s}},
        {"id": "burner.air_damper", "device": "boiler-room-plc", "address": 2,
         "type": "float32", "word_order": "CDAB", "unit": "%", "min": 20, "max": 80,
         "max_step": 10, "rate_limit": {"max_writes": 20, "window_s": 60}}]}


async def test_rate_limit(tmp_path: Path, mosquitto: Mosquitto) -> None:
    extra = _vent_rate_limited(max_writes=2, window_s=30)
    async with harness(tmp_path, mosquitto.port, extra=extra) as h:
        assert (await h.send(make_command("25")))["status"] == "applied"
        assert (await h.send(make_command("30")))["status"] == "applied"
        ack = await h.send(make_command("35"))
        assert (ack["status"], ack["reason"]) == ("rejected", "rate-limited"), ack
        assert len(h.plant.writes) == 2


class ShiftedClock:
    """The real clock, moved forward on demand: the service reads its wall time here."""

    def __init__(self) -> None:
        self.offset_ns = 0

    def now_ns(self) -> int:
        return time.time_ns() + self.offset_ns

    def command(self, value: str) -> Command:
        now = self.now_ns() // 1_000_000
        return make_command(value, issued_at_ms=now - 1000, not_before_ms=now - 1000,
                            expires_at_ms=now + 60_000, seq=self.now_ns() // 1000)


async def test_a_rate_window_lapses_on_the_service_clock(tmp_path: Path,
                                                         mosquitto: Mosquitto) -> None:
    """Time is injected: the window passes on the service's clock, not by waiting 30 s."""
    extra = _vent_rate_limited(max_writes=2, window_s=30)
    shifted = ShiftedClock()
    async with harness(tmp_path, mosquitto.port, extra=extra,
                       clock=Clock(now_ns=shifted.now_ns)) as h:
        assert (await h.send(shifted.command("25")))["status"] == "applied"
        assert (await h.send(shifted.command("30")))["status"] == "applied"
        shifted.offset_ns += 29 * 10**9  # still inside the window
        ack = await h.send(shifted.command("35"))
        assert (ack["status"], ack["reason"]) == ("rejected", "rate-limited"), ack
        shifted.offset_ns += 2 * 10**9  # the first write is now 31 s old
        ack = await h.send(shifted.command("35"))
        assert ack["status"] == "applied", ack
        assert ack["ts_ms"] >= (time.time_ns() + 30 * 10**9) // 1_000_000  # the service's time
        assert len(h.plant.writes) == 3


async def test_the_command_record_keeps_when_it_was_received_and_when_decided(
        tmp_path: Path, mosquitto: Mosquitto, monkeypatch: Any) -> None:
    """The record says when the service took the command up and when the policy decided,
    apart: here the read of the present value takes 5 s on the service's clock."""
    from control._actuation import Actuator

    shifted = ShiftedClock()
    snapshot = Actuator.snapshot

    async def slow_snapshot(self: Actuator, point: Any) -> Any:
        shifted.offset_ns += 5 * 10**9
        return await snapshot(self, point)

    monkeypatch.setattr(Actuator, "snapshot", slow_snapshot)
    async with harness(tmp_path, mosquitto.port, clock=Clock(now_ns=shifted.now_ns)) as h:
        cmd = shifted.command("33")
        before_ms = shifted.now_ns() // 1_000_000
        assert (await h.send(cmd))["status"] == "applied"
        (audit,) = _audits(await h.audit(), "command", cmd.id)
        assert before_ms <= audit["received_ms"] < before_ms + 5000
        assert audit["decided_ms"] - audit["received_ms"] >= 5000


async def test_malformed_payloads_are_nacked_counted_and_the_service_goes_on(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with harness(tmp_path, mosquitto.port) as h:
        good = make_command("30")
        missing = {k: v for k, v in good.to_json().items() if k != "seq"}
        payloads = [b"not json", b"", b"\xff\x00", b"[]", json.dumps(missing).encode(),
                    b'{"v": 1, "id": "x-1"}', json.dumps(dict(good.to_json(), v=9)).encode()]
        for p in payloads:
            await h.send_raw(p)
        # the missing-seq one and the v=9 one carry good.id: 4 nacks cannot name a command
        await h.wait_for(lambda: len(h.anon_acks) >= 4 and "x-1" in h.acks
                         and h.acks.get(good.id, {}).get("reason") == "unsupported-version")
        assert all(a["reason"] == "malformed" for a in h.anon_acks)
        assert h.acks["x-1"]["reason"] == "malformed"
        assert "missing field(s)" in h.acks["x-1"]["detail"]
        assert h.metrics.counters["control_commands_malformed"] == len(payloads)
        assert h.plant.writes == []
        # and it goes on
        assert (await h.send(make_command("30")))["status"] == "applied"
        records = await h.audit()
        assert len([a for a in _audits(records, "command") if a["reason"] == "malformed"]) == 6


async def test_replay_cache_and_sequence_survive_a_restart(tmp_path: Path,
                                                           mosquitto: Mosquitto) -> None:
    first = make_command("25", seq=100)
    async with harness(tmp_path, mosquitto.port) as h:
        assert (await h.send(first))["status"] == "applied"
    async with harness(tmp_path, mosquitto.port) as h:  # new process state, same data_dir
        ack = await h.send(first)
        assert ack["reason"] == "replayed", ack
        ack = await h.send(make_command("25", seq=99))
        assert ack["reason"] == "stale-sequence", ack
        assert h.plant.writes == []
        assert (await h.send(make_command("25", seq=101)))["status"] == "applied"


async def test_readback_mismatch_and_write_failure_are_reported(tmp_path: Path,
                                                                mosquitto: Mosquitto) -> None:
    model = ActuatorModel(vent_limit=60.0)  # the PLC clamps the vent at 60 %
    extra = {"points": [
        {"id": "vent.opening", "device": "boiler-room-plc", "address": 0, "type": "uint16",
         "scale": 0.1, "unit": "%", "min": 0, "max": 150, "max_step": 50,
         "rate_limit": {"max_writes": 20, "window_s": 60}},
        {"id": "burner.air_damper", "device": "boiler-room-plc", "address": 2,
         "type": "float32", "word_order": "CDAB", "unit": "%", "min": 20, "max": 80,
         "max_step": 10, "rate_limit": {"max_writes": 20, "window_s": 60}}]}
    async with harness(tmp_path, mosquitto.port, model=model, extra=extra) as h:
        ack = await h.send(make_command("65"))
        assert (ack["status"], ack["reason"]) == ("failed", "readback-mismatch"), ack
        assert (ack["applied"], ack["read_back"]) == ("65.0", "60.0")
        assert len(h.plant.writes) == 1
        model.vent_limit = 200.0
        assert (await h.send(make_command("100")))["status"] == "applied"
        ack = await h.send(make_command("120"))  # the PLC refuses raw > 1000 with an exception
        assert (ack["status"], ack["reason"]) == ("failed", "write-failed"), ack
        assert ack["read_back"] == "100.0"
        records = await h.audit()
        statuses = [(w["status"], w["reason"]) for w in _audits(records, "write")]
        assert statuses == [("failed", "readback-mismatch"), ("applied", None),
                            ("failed", "write-failed")]
        # plant down: nothing is written, the command is refused
        await h.plant.stop()
        ack = await h.send(make_command("95"))
        assert (ack["status"], ack["reason"]) == ("rejected", "plant-unavailable"), ack


async def test_heartbeat_keeps_the_plc_remote_and_silence_trips_its_watchdog(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    model = ActuatorModel(watchdog_s=1.5)
    async with harness(tmp_path, mosquitto.port, model=model) as h:
        assert (await h.send(make_command("60")))["status"] == "applied"
        # Time passing beyond the watchdog IS the scenario; the wait ends on a condition: the
        # PLC has seen enough heartbeats (every 0.2 s) to span more than the watchdog's 1.5 s.
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await h.wait_for(lambda: model.heartbeats >= 5 and loop.time() - t0 > 2.0)
        model.step()
        assert model.remote and model.vent == 60.0 and model.fallbacks == 0
        h.service.plant.close()
        run_tasks = [t for t in asyncio.all_tasks() if t.get_name() == "control:heartbeat"]
        for t in run_tasks:
            t.cancel()  # the gateway goes silent

        def fell_back() -> bool:
            model.step()
            return not model.remote

        await h.wait_for(fell_back)  # the watchdog (1.5 s without a heartbeat change) trips
        assert model.fallbacks == 1
        assert model.vent == model.local_vent  # the PLC is back on its own setpoint
        # in local mode the PLC ignores remote setpoints: the read-back shows it
        ack = await h.send(make_command("50"))
        assert (ack["status"], ack["reason"]) == ("failed", "readback-mismatch"), ack


async def test_setpoint_lease_expires_to_the_fallback(tmp_path: Path,
                                                      mosquitto: Mosquitto) -> None:
    extra = {"points": [
        {"id": "vent.opening", "device": "boiler-room-plc", "address": 0, "type": "uint16",
         "scale": 0.1, "unit": "%", "min": 0, "max": 100, "max_step": 50,
         "rate_limit": {"max_writes": 20, "window_s": 60}, "lease_s": 6.0, "fallback": 25},
        {"id": "burner.air_damper", "device": "boiler-room-plc", "address": 2,
         "type": "float32", "word_order": "CDAB", "unit": "%", "min": 20, "max": 80,
         "max_step": 10, "rate_limit": {"max_writes": 20, "window_s": 60}}]}
    async with harness(tmp_path, mosquitto.port, extra=extra) as h:
        loop = asyncio.get_running_loop()
        # Time passing is the scenario here: renew half-way through a 6 s lease, then look
        # just past the first lease's end. A lease runs 6 s from its write, which lies between
        # the command's send and its ack; each step keeps ~3 s of margin for a loaded machine.
        sent = loop.time()
        assert (await h.send(make_command("60")))["status"] == "applied"
        acked = loop.time()  # the first lease ends in [sent + 6, acked + 6]
        await asyncio.sleep(3.0)
        renew_sent = loop.time()
        assert (await h.send(make_command("61")))["status"] == "applied"  # renews
        assert loop.time() < sent + 6.0, "the renewal came after the first lease had ended"
        await asyncio.sleep(acked + 6.3 - loop.time())  # past the first lease's end
        assert loop.time() < renew_sent + 6.0, "the look came after the renewed lease had ended"
        assert h.model.vent == 61.0
        deadline = loop.time() + 10
        while h.model.vent != 25.0 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert h.model.vent == 25.0
        leases = _audits(await h.audit(), "local-rule", "lease")
        assert [(a["event"], a["value"], a["status"]) for a in leases] == [
            ("lease-expired", 25.0, "applied")]


def _reading(point: str, value: float, seq: int, quality: int = 0, unit: str = "%LEL"
             ) -> Reading:
    return Reading(point_id=point, ts_ns=time.time_ns(), value=value, unit=unit,
                   source="modbus_tcp:plc", quality=quality, seq=seq, gateway_id=GW)


def _count_samples(h: Any, rule: str) -> list[int]:
    """Count the readings the rules task has finished with (``rule``: "leak" or "trim"): a
    test waits for the count instead of sleeping before it checks that nothing happened."""
    rules = h.service.rules
    real = getattr(rules, f"_{rule}_sample")
    done = [0]

    async def counted(r: Reading, valid: bool) -> None:
        await real(r, valid)
        done[0] += 1

    setattr(rules, f"_{rule}_sample", counted)
    return done


LEAK_RULES = {"rules": {"leak": {"gas_point": "room.gas_lel", "threshold": 20, "samples": 3,
                                 "clear_below": 10, "clear_samples": 2,
                                 "vent_point": "vent.opening", "safe_opening": 100}}}


async def test_leak_rule_opens_the_vent_and_refuses_closing_until_clear(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with harness(tmp_path, mosquitto.port, extra=LEAK_RULES,
                       reading_points=["room.gas_lel"]) as h:
        assert (await h.send(make_command("60")))["status"] == "applied"
        samples = _count_samples(h, "leak")
        seq = 0
        for v in (25.0, 30.0, math.nan, 5.0, 25.0, 26.0):  # NaN and a dip: not yet
            seq += 1
            h.service.on_readings([_reading("room.gas_lel", v, seq)])
        await h.wait_for(lambda: samples[0] == 6)  # all six handled by the rule
        assert h.alarms == [] and h.model.vent == 60.0
        seq += 1
        h.service.on_readings([_reading("room.gas_lel", 27.0, seq)])
        await h.wait_for(lambda: h.alarms and h.model.vent == 100.0)
        assert h.alarms[0]["state"] == "raised" and h.alarms[0]["rule"] == "leak"
        assert h.alarms[0]["value"] == 27.0
        writes = len(h.plant.writes)
        ack = await h.send(make_command("80"))  # closing during the leak: refused
        assert (ack["status"], ack["reason"]) == ("rejected", "local-rule-active"), ack
        assert len(h.plant.writes) == writes
        for v in (8.0, 9.0):
            seq += 1
            h.service.on_readings([_reading("room.gas_lel", v, seq)])
        await h.wait_for(lambda: len(h.alarms) == 2)
        assert h.alarms[1]["state"] == "cleared"
        assert (await h.send(make_command("80")))["status"] == "applied"
        rule = _audits(await h.audit(), "local-rule", "leak")
        assert [a["event"] for a in rule] == ["leak-raised", "leak-cleared"]
        assert rule[0]["status"] == "applied" and rule[0]["previous"] == 60.0
        assert rule[0]["trigger"]["value"] == 27.0


async def test_combustion_trim_follows_o2_and_wins_over_remote(tmp_path: Path,
                                                               mosquitto: Mosquitto) -> None:
    extra = {"rules": {"combustion": {"o2_point": "boiler.flue_o2", "low": 2.5, "high": 4.5,
                                      "damper_point": "burner.air_damper", "step": 2,
                                      "min": 30, "max": 70, "interval_s": 0.2}}}
    async with harness(tmp_path, mosquitto.port, extra=extra,
                       reading_points=["boiler.flue_o2"]) as h:
        assert h.model.damper == 45.0
        samples = _count_samples(h, "trim")
        h.service.on_readings([_reading("boiler.flue_o2", 1.5, 1, unit="%")])
        await h.wait_for(lambda: h.model.damper == 47.0)
        # O2 low: a remote command to reduce air is refused while it lasts
        ack = await h.send(make_command("44", point="burner.air_damper",
                                        approvers=(("auditor", AUDITOR),)))
        assert (ack["status"], ack["reason"]) == ("rejected", "local-rule-active"), ack
        await asyncio.sleep(0.25)  # the scenario: past the rule's 0.2 s trim interval
        h.service.on_readings([_reading("boiler.flue_o2", 6.0, 2, unit="%")])
        await h.wait_for(lambda: h.model.damper == 45.0)
        await asyncio.sleep(0.25)  # as above: a trim would be allowed again
        h.service.on_readings([_reading("boiler.flue_o2", 3.5, 3, unit="%")])  # in band
        await h.wait_for(lambda: samples[0] == 3)  # handled: no trim
        assert h.model.damper == 45.0
        ack = await h.send(make_command("44", point="burner.air_damper",
                                        approvers=(("auditor", AUDITOR),)))
        assert ack["status"] == "applied", ack
        # invalid readings do nothing
        h.service.on_readings([_reading("boiler.flue_o2", 0.5, 4, unit="%",
                                        quality=int(Quality.COMM_FAULT))])
        await h.wait_for(lambda: samples[0] == 4)
        assert h.model.damper == 44.0
        trims = _audits(await h.audit(), "local-rule", "combustion")
        assert [(a["previous"], a["value"]) for a in trims] == [(45.0, 47.0), (47.0, 45.0)]


async def test_telemetry_is_published_and_a_full_queue_drops_and_counts(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    extra = {"telemetry": {"queue": 10, "max_per_message": 4}}
    async with harness(tmp_path, mosquitto.port, extra=extra) as h:
        chunk = [_reading(f"p{i}", float(i), i + 1, unit="kW") for i in range(6)]
        h.service.on_readings(chunk)
        h.service.on_readings(chunk)  # 12 > 10: dropped, counted, never blocks
        assert h.metrics.counters["control_telemetry_dropped"] == 6
        await h.wait_for(lambda: sum(len(t["readings"]) for t in h.telemetry) >= 6)
        assert [len(t["readings"]) for t in h.telemetry] == [4, 2]
        first = h.telemetry[0]
        assert first["gateway"] == GW
        assert first["readings"][1] == {"seq": 2, "point": "p1", "ts_ns": chunk[1].ts_ns,
                                        "value": 1.0, "unit": "kW", "quality": 0}
        h.service.on_readings([_reading("x", math.nan, 99, unit="kW")])
        await h.wait_for(lambda: any(r["point"] == "x" for t in h.telemetry
                                     for r in t["readings"]))
        assert h.telemetry[-1]["readings"][0]["value"] is None


async def test_an_ack_never_waits_behind_telemetry(tmp_path: Path, mosquitto: Mosquitto,
                                                   monkeypatch: Any) -> None:
    """Telemetry has a broker session of its own: with its publishing stuck (as behind a
    broker slow to read megabytes of it), commands are still applied and acked."""
    import aiomqtt

    stuck = asyncio.Event()  # never set
    entered = asyncio.Event()
    publish = aiomqtt.Client.publish

    async def stuck_telemetry(self: aiomqtt.Client, topic: str, payload: Any = None,
                              *a: Any, **k: Any) -> None:
        if topic.endswith("/telemetry"):
            entered.set()
            await stuck.wait()
        await publish(self, topic, payload, *a, **k)

    monkeypatch.setattr(aiomqtt.Client, "publish", stuck_telemetry)
    async with harness(tmp_path, mosquitto.port) as h:
        assert h.metrics.components["control:mqtt"].state == "ok"
        h.service.on_readings([_reading("p0", 1.0, 1, unit="kW")])
        await asyncio.wait_for(entered.wait(), 15)  # the telemetry session is stuck in it
        h.service.on_readings([_reading("p1", 2.0, 2, unit="kW")])
        ack = await h.send(make_command("30"))
        assert ack["status"] == "applied", ack
        assert verify_ack(ack, GW_PUB)
        assert h.model.vent == 30.0
        assert h.telemetry == []
        assert h.metrics.components["control:telemetry"].state == "ok"


async def test_broker_restart_is_survived(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with harness(tmp_path, mosquitto.port) as h:
        assert (await h.send(make_command("30")))["status"] == "applied"
        mosquitto.restart()  # the harness' own client dies with it: use a fresh one below
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while loop.time() < deadline and (h.metrics.counters["control_mqtt_failures"] == 0
                                          or not h.service.ready.is_set()):
            await asyncio.sleep(0.05)
        assert h.service.ready.is_set()
        # both sessions saw the broker go (the telemetry one, which subscribes to nothing,
        # too) and came back
        while loop.time() < deadline and (
                h.metrics.counters["control_mqtt_failures"] < 2
                or h.metrics.components["control:telemetry"].state != "ok"):
            await asyncio.sleep(0.05)
        assert h.metrics.counters["control_mqtt_failures"] >= 2
        assert h.metrics.components["control:telemetry"].state == "ok"
        import aiomqtt

        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
            await c.subscribe(f"mrv/{GW}/ack", qos=1)
            await c.subscribe(f"mrv/{GW}/telemetry", qos=0)
            cmd = make_command("35")
            await c.publish(f"mrv/{GW}/cmd", cmd.to_bytes(), qos=1)
            h.service.on_readings([_reading("after", 7.0, 1, unit="kW")])  # once: not lost
            ack: dict[str, Any] | None = None
            telemetry: dict[str, Any] | None = None
            async with asyncio.timeout(15):
                async for m in c.messages:
                    body = json.loads(bytes(m.payload))  # type: ignore[arg-type]
                    if str(m.topic).endswith("/telemetry"):
                        telemetry = body
                    elif body["id"] == cmd.id:
                        ack = body
                    if ack is not None and telemetry is not None:
                        break
        assert ack is not None and ack["status"] == "applied", ack
        assert telemetry is not None and telemetry["readings"][0]["point"] == "after"
        assert len(h.plant.writes) == 2


async def test_rule_for_a_point_no_device_acquires_is_disabled_and_alarmed(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with harness(tmp_path, mosquitto.port, extra=LEAK_RULES, reading_points=["other"]) as h:
        assert h.service.leak_rule is None
        assert h.metrics.components["control:rule:leak"].state == "alarm"
        assert ("control:rules", h.service.run_rules) not in h.service.tasks()
        assert (await h.send(make_command("30")))["status"] == "applied"  # the rest works


async def test_a_journaled_but_unrecorded_command_is_recovered(tmp_path: Path,
                                                               mosquitto: Mosquitto) -> None:
    """As if the gateway died between the write-ahead journal commit and the audit commit."""
    from control._state import ReplayStore

    lost = make_command("33", seq=500)
    store = await ReplayStore.open(tmp_path / "control.sqlite")
    await store.record(command_id=lost.id, issuer="epb", seq=500,
                       keep_until_ms=lost.expires_at_ms, now_ms=lost.issued_at_ms,
                       advance_seq=True, envelope=lost.to_bytes().decode())
    assert [u[0] for u in await store.unrecorded()] == [lost.id]
    await store.close()
    async with harness(tmp_path, mosquitto.port) as h:
        ack = await h.send(lost)  # still known: not executed twice
        assert ack["reason"] == "replayed", ack
        assert (await h.send(make_command("33", seq=499)))["reason"] == "stale-sequence"
        records = _audits(await h.audit(), "command", lost.id)
        assert records[0]["verdict"] == "interrupted"
        assert records[0]["envelope"] == json.loads(lost.to_bytes())
        assert h.metrics.counters["control_commands_recovered"] == 1
        assert await (await h.service.store()).unrecorded() == []
        assert h.plant.writes == []
    async with harness(tmp_path, mosquitto.port) as h:  # recovered once, not again
        await h.send(make_command("34"))
        assert len(_audits(await h.audit(), "command", lost.id)) == 2  # interrupted + replayed
        assert h.metrics.counters["control_commands_recovered"] == 0


async def test_a_recorder_stopped_mid_commit_records_each_command_once(tmp_path: Path) -> None:
    """The daemon stopping while the recorder commits: the commit finishes once (the outbox
    shields it) and ``aclose`` must not make it a second time."""
    cfg = ControlConfig.model_validate(control_dict(free_port(), free_port()))
    outbox = await Outbox.open(tmp_path / "outbox.sqlite", GW)
    service = ControlService(gateway_id=GW, config=cfg, data_dir=tmp_path, outbox=outbox,
                             metrics=Metrics(), sign=lambda m: sign_bytes(GATEWAY_SEED, m))
    started = asyncio.Event()
    real_append = outbox.append

    async def slow_commit(records: Any) -> Any:
        await asyncio.sleep(0.2)  # the commit is under way when the recorder is cancelled
        return await real_append(records)

    async def slow_append(records: Any) -> Any:
        started.set()
        return await asyncio.shield(slow_commit(records))  # as Outbox.append shields its commit

    outbox.append = slow_append  # type: ignore[method-assign]
    try:
        await service._audit_later(
            [AuditRecord(ts_ns=1, category="command", subject="c1", payload="{}"),
             AuditRecord(ts_ns=2, category="write", subject="vent.opening", payload="{}")], [])
        recorder = asyncio.create_task(service.run_recorder())
        await asyncio.wait_for(started.wait(), 5)
        recorder.cancel()
        await asyncio.gather(recorder, return_exceptions=True)
        await service.aclose()
        st = await outbox.stats()
        assert st.records == 2, st
        assert service.metrics.counters["control_audit_records"] == 2
    finally:
        await service.aclose()
        await outbox.close()


async def test_a_leak_hold_survives_a_restart(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Item 3: after a restart during a leak, remote commands closed the vent while the
    retained alarm still said "raised". The hold is journaled and restored before the first
    command; it clears only on good readings, as before the restart."""
    model = ActuatorModel()
    async with harness(tmp_path, mosquitto.port, model=model, extra=LEAK_RULES,
                       reading_points=["room.gas_lel"]) as h:
        for seq, v in enumerate((25.0, 26.0, 27.0), 1):
            h.service.on_readings([_reading("room.gas_lel", v, seq)])
        await h.wait_for(lambda: h.alarms and h.model.vent == 100.0)
        assert h.alarms[-1]["state"] == "raised"
    # a new service on the same data dir (the process restarted); the PLC kept its vent
    async with harness(tmp_path, mosquitto.port, model=model, extra=LEAK_RULES,
                       reading_points=["room.gas_lel"]) as h:
        hold = h.service.overrides.get("vent.opening")  # in place before the first command
        assert hold is not None and (hold.rule, hold.forbid) == ("leak", "decrease"), hold
        assert h.metrics.counters["control_holds_restored"] == 1
        writes = len(model.writes)  # the model keeps its writes across plants
        for value in ("60", "90", "99.9"):  # 100 -> 60 -> 20 was applied before the fix
            ack = await h.send(make_command(value))
            assert (ack["status"], ack["reason"]) == ("rejected", "local-rule-active"), ack
        assert len(model.writes) == writes and model.vent == 100.0
        # it clears as it would have without the restart: clear_samples (2) good readings
        h.service.on_readings([_reading("room.gas_lel", 5.0, 10),
                               _reading("room.gas_lel", 4.0, 11)])
        await h.wait_for(lambda: any(a["state"] == "cleared" for a in h.alarms))
        assert (await h.send(make_command("60")))["status"] == "applied"
        assert model.vent == 60.0
    async with harness(tmp_path, mosquitto.port, model=model, extra=LEAK_RULES,
                       reading_points=["room.gas_lel"]) as h:  # cleared stays cleared
        assert "vent.opening" not in h.service.overrides
        assert h.metrics.counters["control_holds_restored"] == 0


async def test_the_rate_limit_window_survives_a_restart(tmp_path: Path,
                                                        mosquitto: Mosquitto) -> None:
    """Item 5: after a restart, a write beyond the limit within the window was applied."""
    extra = _vent_rate_limited(max_writes=3, window_s=600)
    model = ActuatorModel()
    async with harness(tmp_path, mosquitto.port, model=model, extra=extra) as h:
        for value in ("25", "30"):
            assert (await h.send(make_command(value)))["status"] == "applied"
    async with harness(tmp_path, mosquitto.port, model=model, extra=extra) as h:
        assert (await h.send(make_command("35")))["status"] == "applied"  # 3 of 3
        assert len(model.writes) == 3
    async with harness(tmp_path, mosquitto.port, model=model, extra=extra) as h:
        ack = await h.send(make_command("40"))
        assert (ack["status"], ack["reason"]) == ("rejected", "rate-limited"), ack
        assert "3 write(s) in the last 600000 ms" in ack["detail"]
        assert len(model.writes) == 3 and model.vent == 35.0


async def test_a_hold_of_a_rule_no_longer_configured_is_dropped(tmp_path: Path,
                                                                mosquitto: Mosquitto) -> None:
    model = ActuatorModel()
    async with harness(tmp_path, mosquitto.port, model=model, extra=LEAK_RULES,
                       reading_points=["room.gas_lel"]) as h:
        for seq, v in enumerate((25.0, 26.0, 27.0), 1):
            h.service.on_readings([_reading("room.gas_lel", v, seq)])
        await h.wait_for(lambda: h.model.vent == 100.0)
    async with harness(tmp_path, mosquitto.port, model=model) as h:  # the leak rule removed
        assert h.service.overrides == {}
        assert (await h.send(make_command("60")))["status"] == "applied"
        assert (await h.service.store()).holds == {}


async def test_a_combustion_hold_survives_a_restart(tmp_path: Path,
                                                    mosquitto: Mosquitto) -> None:
    extra = {"rules": {"combustion": {"o2_point": "boiler.flue_o2", "low": 2.5, "high": 4.5,
                                      "damper_point": "burner.air_damper", "step": 2,
                                      "min": 30, "max": 70, "interval_s": 0.2}}}
    model = ActuatorModel()
    async with harness(tmp_path, mosquitto.port, model=model, extra=extra,
                       reading_points=["boiler.flue_o2"]) as h:
        h.service.on_readings([_reading("boiler.flue_o2", 1.5, 1, unit="%")])  # O2 low
        await h.wait_for(lambda: h.model.damper == 47.0)
    async with harness(tmp_path, mosquitto.port, model=model, extra=extra,
                       reading_points=["boiler.flue_o2"]) as h:
        ack = await h.send(make_command("44", point="burner.air_damper",
                                        approvers=(("auditor", AUDITOR),)))
        assert (ack["status"], ack["reason"]) == ("rejected", "local-rule-active"), ack
        h.service.on_readings([_reading("boiler.flue_o2", 3.5, 2, unit="%")])  # back in band
        await h.wait_for(lambda: "burner.air_damper" not in h.service.overrides)
        ack = await h.send(make_command("44", point="burner.air_damper",
                                        approvers=(("auditor", AUDITOR),)))
        assert ack["status"] == "applied", ack
