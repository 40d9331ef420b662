"""Control from governance bodies: signed commands, a safety policy, Modbus write with
read-back, signed acknowledgements, local leak and combustion rules (``docs/control.md``).

Kept light on purpose: ``config`` imports `control._config`, so this package must not import
the service (which imports ``config``). Use ``control._service.ControlService``.
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
    sign_command,
    verify_ack,
)
from control._policy import REASON_CODES, REASONS, Verdict, authenticate, authorize, evaluate
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
    "EnvelopeError",
    "Verdict",
    "approve_command",
    "authenticate",
    "authorize",
    "canonical_json",
    "evaluate",
    "parse_command",
    "sign_command",
    "telemetry_json",
    "verify_ack",
    "verify_telemetry",
]
