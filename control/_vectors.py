"""Test vectors for the command envelope and the ack (``docs/vectors/command.json``).

Ed25519 (RFC 8032) signatures are deterministic, so the file is reproducible from the fixed
seeds below: ``python -m control._vectors docs/vectors/command.json`` rewrites it and the tests
check that it still matches. The seeds are public test keys: never configure them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from control._envelope import (
    Ack,
    Command,
    approve_command,
    public_key_of,
    sign_bytes,
    sign_command,
)

SEEDS = {
    "epb": bytes(range(32)),
    "auditor": bytes(range(32, 64)),
    "gateway": bytes(range(64, 96)),
}
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms


def _cmd(**kw: Any) -> Command:
    base: dict[str, Any] = dict(
        id="cmd-2026-0001", gateway="plant-a-gw1", point="vent.opening", value="40", unit="%",
        issued_at_ms=T0, not_before_ms=T0, expires_at_ms=T0 + 60_000, seq=1, issuer="epb")
    base.update(kw)
    return Command(**base)


def _command_vector(name: str, cmd: Command, note: str) -> dict[str, Any]:
    b = cmd.signing_bytes()
    return {"name": name, "note": note, "unsigned": cmd.unsigned(),
            "canonical_bytes_utf8": b.decode("utf-8"), "canonical_bytes_hex": "0x" + b.hex(),
            "envelope": cmd.to_json()}


def build() -> dict[str, Any]:
    epb, aud, gw = SEEDS["epb"], SEEDS["auditor"], SEEDS["gateway"]
    vent = sign_command(_cmd(), epb)
    damper = approve_command(sign_command(_cmd(
        id="cmd-2026-0002", point="burner.air_damper", value="47.5", seq=2), epb), "auditor", aud)
    negative = sign_command(_cmd(id="cmd-2026-0003", point="boiler.offset", value="-0.125",
                                 unit="degC", seq=3), epb)
    tampered = vent.to_json()
    tampered["value"] = "45"
    float_value = dict(vent.to_json())
    float_value["value"] = 40.0
    dup = vent.to_bytes().decode().replace('"value":"40"', '"value":"40","value":"90"')
    ack = Ack(id=vent.id, gateway="plant-a-gw1", status="applied", reason=None,
              detail="written and read back", point="vent.opening", requested="40",
              applied="40.0", read_back="40.0", ts_ms=T0 + 12)
    nack = replace(ack, id="cmd-2026-0004", status="rejected", reason="step-too-large",
                   detail="20 -> 90 is a step of 70, max 50; nothing was written",
                   requested="90", applied=None, read_back=None)
    return {
        "format": "mrv-command/v1 and mrv-ack/v1 (docs/control.md)",
        "keys": [{"key_id": k, "seed": "0x" + s.hex(), "public_key": "0x" + public_key_of(s).hex()}
                 for k, s in SEEDS.items()],
        "commands": [
            _command_vector("vent-40", vent, "one signature; integer value as a string"),
            _command_vector("damper-two-person", damper,
                            "second approver signs the same canonical bytes"),
            _command_vector("negative-decimal", negative, "negative value with decimals"),
        ],
        "invalid": [
            {"name": "value-tampered", "payload": json.dumps(tampered, sort_keys=True),
             "reason": "bad-signature", "note": "value changed after signing"},
            {"name": "value-as-number", "payload": json.dumps(float_value, sort_keys=True),
             "reason": "malformed", "note": "value must be a decimal string"},
            {"name": "duplicate-key", "payload": dup, "reason": "malformed",
             "note": "duplicate keys are ambiguous: refused"},
            {"name": "not-json", "payload": "open the vent please", "reason": "malformed"},
        ],
        "acks": [
            {"name": n, "unsigned": a.unsigned(),
             "canonical_bytes_utf8": a.signing_bytes().decode("utf-8"),
             "message": json.loads(a.to_bytes(lambda m: sign_bytes(gw, m)))}
            for n, a in (("applied", ack), ("rejected", nack))
        ],
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if args:
        Path(args[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
