"""Control from governance bodies: signed commands, a safety policy, Modbus write with
read-back, signed acknowledgements, local leak and combustion rules (``docs/control.md``).

`ControlService` runs it (the daemon builds it from ``config.Config``); its parts are MQTT
transport, admission (authentication and replay), safety policy, actuation with read-back, the
journal and audit, and the local rules.
"""

from control._config import ControlConfig
from control._envelope import (
    ACK_DOMAIN,
    COMMAND_DOMAIN,
    Ack,
    Approval,
    Command,
    EnvelopeError,
    approve_command,
    canonical_json,
    parse_command,
    public_key_of,
    sign_bytes,
    sign_command,
    verify_ack,
)
from control._policy import REASON_CODES, REASONS, Verdict, authenticate, authorize, evaluate
from control._service import ControlService, Sign
from control._telemetry import telemetry_json, verify_telemetry

__all__ = [
    "ACK_DOMAIN",
    "COMMAND_DOMAIN",
    "REASONS",
    "REASON_CODES",
    "Ack",
    "Approval",
    "Command",
    "ControlConfig",
    "ControlService",
    "EnvelopeError",
    "Sign",
    "Verdict",
    "approve_command",
    "authenticate",
    "authorize",
    "canonical_json",
    "evaluate",
    "parse_command",
    "public_key_of",
    "sign_bytes",
    "sign_command",
    "telemetry_json",
    "verify_ack",
    "verify_telemetry",
]
