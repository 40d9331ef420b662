"""Fuzz targets of the control service: every parser of bytes that reach control from the
network (the command topic, acks read by ``mrv-command send``, telemetry read by
``mrv-command watch``), and the admission checks run on a parsed command."""

from __future__ import annotations

import json
from pathlib import Path

from control._envelope import (
    Ack,
    EnvelopeError,
    best_effort_id,
    parse_ack_message,
    parse_command,
    verify_ack,
)
from control._policy import (
    REASON_CODES,
    AuthContext,
    IssuerPolicy,
    PlantContext,
    PointPolicy,
    authenticate,
    authorize,
)
from control._telemetry import telemetry_json, verify_telemetry
from mrv_core._records import Reading
from tests.fuzz import Target

_VECTORS = json.loads((Path(__file__).resolve().parents[2] / "docs" / "vectors" /
                       "command.json").read_text())
_KEYS = {k["key_id"]: bytes.fromhex(k["public_key"][2:]) for k in _VECTORS["keys"]}
_GW_KEY = _KEYS["gateway"]
_ENVELOPES = tuple(json.dumps(c["envelope"]).encode() for c in _VECTORS["commands"]) + tuple(
    v["payload"].encode() for v in _VECTORS["invalid"])
_ACKS = tuple(json.dumps(a["message"]).encode() for a in _VECTORS["acks"])


def _envelope(data: bytes) -> object:
    return parse_command(data)


def _best_effort_id(data: bytes) -> object:
    got = best_effort_id(data)  # never raises
    if got is None:
        raise LookupError("no id")  # the clean "rejection": the nack names no command
    if not isinstance(got, str):
        raise AssertionError(f"best_effort_id returned {got!r}")
    return got


def _ack(data: bytes) -> object:
    """What ``mrv-command send`` does with a message on the ack topic."""
    msg = parse_ack_message(data)
    try:
        ok = verify_ack(msg, _GW_KEY)  # a bool for anything parsed, never an exception
    except Exception as e:
        raise AssertionError(f"verify_ack raised {type(e).__name__}: {e}") from e
    if not isinstance(ok, bool):
        raise AssertionError(f"verify_ack returned {ok!r}")
    return ok


def _readings() -> list[Reading]:
    return [Reading(gateway_id="plant-a-gw1", seq=i, point_id=p, ts_ns=1_767_225_600 * 10**9 + i,
                    value=v, unit=u, quality=q, source="modbus_tcp:plc")
            for i, (p, v, u, q) in enumerate([("stack.so2", 31.2, "mg/m3", 0),
                                               ("boiler.flue_o2", float("nan"), "%", 4),
                                               ("meter.kwh", 1e12, "kWh", 0)], 1)]


_TELEMETRY = (telemetry_json("plant-a-gw1", _readings()),
              telemetry_json("plant-a-gw1", _readings(), [bytes(64)] * 3))


def _telemetry(data: bytes) -> object:
    """What ``mrv-command watch`` and `verify_telemetry` do with a telemetry message."""
    out = verify_telemetry(data, _GW_KEY)
    if not all(isinstance(s, int) and isinstance(ok, bool) for s, ok in out):
        raise AssertionError(f"verify_telemetry returned {out!r}")
    return out


_NOW = 1_767_225_630_000
_AUTH = AuthContext(gateway_id="plant-a-gw1",
                    issuers={k: IssuerPolicy(pub, frozenset({"*"})) for k, pub in _KEYS.items()
                             if k != "gateway"},
                    two_person_points=frozenset({"burner.air_damper"}), now_ms=_NOW,
                    skew_ms=5000, max_lifetime_ms=3_600_000, seen_ids=frozenset({"seen-1"}),
                    last_seq={})
_POINTS = {
    "vent.opening": PointPolicy(unit="%", min=0, max=100, max_step=50, rate_max_writes=6,
                                rate_window_ms=60_000, resolution=0.1),
    "burner.air_damper": PointPolicy(unit="%", min=20, max=80, max_step=5, rate_max_writes=10,
                                     rate_window_ms=600_000, float_type="float32"),
    "boiler.setpoint": PointPolicy(unit="degC", min=-1e15, max=1e15, max_step=1e15,
                                   rate_max_writes=10, rate_window_ms=60_000, resolution=0.5,
                                   offset=-40.0),
}


def _admission(data: bytes) -> object:
    """The checks a payload passes before and after the queue, on a fixed context (the
    vectors' keys and time): every outcome is a verdict with a documented reason code."""
    cmd = parse_command(data)
    v = authenticate(cmd, _AUTH)
    if v.ok:
        v = authorize(cmd, PlantContext(points=_POINTS, now_ms=_NOW, current=40.0,
                                        signals={}, recent_writes_ms=(), overrides={},
                                        enabled=True))
    if not v.ok and v.reason not in REASON_CODES:
        raise AssertionError(f"undocumented reason {v.reason!r}")
    return v


_NACK = Ack(id=None, gateway="gw", status="rejected", reason="malformed", detail="x",
            point=None, requested=None, applied=None, read_back=None, ts_ms=1).to_bytes()

TARGETS: list[Target] = [
    Target("control.envelope", _envelope, (EnvelopeError,), _ENVELOPES, max_len=20_000,
           oversize=100_000),
    Target("control.best_effort_id", _best_effort_id, (LookupError,), _ENVELOPES, max_len=20_000,
           oversize=100_000),
    Target("control.ack", _ack, (ValueError,), (*_ACKS, _NACK), max_len=20_000,
           oversize=100_000),
    Target("control.telemetry", _telemetry, (ValueError,), _TELEMETRY, max_len=20_000,
           oversize=100_000),
    Target("control.admission", _admission, (EnvelopeError,), _ENVELOPES, max_len=20_000,
           oversize=100_000),
]
