"""The command envelope and the acknowledgement: parsing, canonical bytes, signatures (pure).

Canonical bytes (``docs/control.md``, vectors in ``docs/vectors/command.json``)::

    command: b"mrv-command/v1\\n" + canonical_json(unsigned fields)
    ack:     b"mrv-ack/v1\\n"     + canonical_json(ack fields except "signature")

``canonical_json`` is JSON with keys sorted, no whitespace, UTF-8. Every value in a signed
object is an integer in 0..2**53-1, null, a boolean, or a string drawn from printable ASCII
without '"' and '\\', so there is nothing to escape and nothing a JSON library may format
differently: the numeric value travels as a decimal *string* (``"value": "42.5"``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import nacl.exceptions
import nacl.signing

from mrv_core import InputLimitError, check_json, loads_bounded

VERSION = 1
COMMAND_DOMAIN = b"mrv-command/v1\n"
ACK_DOMAIN = b"mrv-ack/v1\n"
MAX_SAFE_INT = 2**53 - 1
MAX_PAYLOAD = 16 * 1024

#: The deepest nesting a valid envelope has is 3 (object, approvals, approval); deeper payloads
#: are refused before they are parsed.
MAX_DEPTH = 8

# Used with ``fullmatch`` only: ``re.match`` with ``$`` lets a trailing newline through.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_UNIT_RE = re.compile(r'[!#-\[\]-~]{1,32}')
_VALUE_RE = re.compile(r"-?(0|[1-9][0-9]{0,14})(\.[0-9]{1,9})?")
_SIG_RE = re.compile(r"0x[0-9a-fA-F]{128}")

UNSIGNED_FIELDS = ("v", "id", "gateway", "point", "value", "unit", "issued_at_ms",
                   "not_before_ms", "expires_at_ms", "seq", "issuer")
_ALL_FIELDS = frozenset((*UNSIGNED_FIELDS, "signature", "approvals"))


class EnvelopeError(ValueError):
    """The payload is not a well-formed command. ``reason`` is a reason code; ``command_id``
    is the id when one could be read (so the nack can name it)."""

    def __init__(self, reason: str, detail: str, command_id: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.command_id = command_id


def canonical_json(obj: Mapping[str, object]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Approval:
    key_id: str
    signature: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """A parsed, not yet verified command. ``value`` is the decimal string as signed."""

    v: int = VERSION
    id: str
    gateway: str
    point: str
    value: str
    unit: str
    issued_at_ms: int
    not_before_ms: int
    expires_at_ms: int
    seq: int
    issuer: str
    signature: bytes = b""
    approvals: tuple[Approval, ...] = field(default=())

    def unsigned(self) -> dict[str, object]:
        return {"v": self.v, "id": self.id, "gateway": self.gateway, "point": self.point,
                "value": self.value, "unit": self.unit, "issued_at_ms": self.issued_at_ms,
                "not_before_ms": self.not_before_ms, "expires_at_ms": self.expires_at_ms,
                "seq": self.seq, "issuer": self.issuer}

    def signing_bytes(self) -> bytes:
        return COMMAND_DOMAIN + canonical_json(self.unsigned())

    def number(self) -> float:
        return float(Decimal(self.value))

    def to_json(self) -> dict[str, object]:
        d = self.unsigned()
        d["signature"] = "0x" + self.signature.hex()
        if self.approvals:
            d["approvals"] = [{"key_id": a.key_id, "signature": "0x" + a.signature.hex()}
                              for a in self.approvals]
        return d

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())


def format_value(x: float) -> str:
    """A decimal string for ``value`` that `parse_command` accepts (at most 9 decimals)."""
    try:
        d = Decimal(repr(float(x))).quantize(Decimal("1e-9")).normalize()
    except ArithmeticError:
        raise ValueError(f"{x!r} cannot be written as a command value") from None
    s = format(d, "f")
    if s in ("-0", "-0.0"):
        s = "0"
    if not _VALUE_RE.fullmatch(s):
        raise ValueError(f"{x!r} cannot be written as a command value")
    return s


def _no_dup_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise EnvelopeError("malformed", f"duplicate key {k!r}")
        out[k] = v
    return out


def _int(d: Mapping[str, Any], k: str, cid: str | None) -> int:
    v = d[k]
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_SAFE_INT:
        raise EnvelopeError("malformed", f"{k}: expected an integer in 0..2^53-1", cid)
    return v


def _str(d: Mapping[str, Any], k: str, pattern: re.Pattern[str], what: str,
         cid: str | None) -> str:
    v = d[k]
    if not isinstance(v, str) or not pattern.fullmatch(v):
        raise EnvelopeError("malformed", f"{k}: expected {what}", cid)
    return v


def _sig(v: Any, what: str, cid: str | None) -> bytes:
    if not isinstance(v, str) or not _SIG_RE.fullmatch(v):
        raise EnvelopeError("malformed", f"{what}: expected 0x + 128 hex digits (64 bytes)", cid)
    return bytes.fromhex(v[2:])


def parse_command(payload: bytes | str) -> Command:
    """Parse and strictly validate an envelope. Raises `EnvelopeError` (reason ``malformed``
    or ``unsupported-version``); says nothing about authenticity."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    try:
        check_json(payload, max_bytes=MAX_PAYLOAD, max_depth=MAX_DEPTH)
    except InputLimitError as e:
        raise EnvelopeError("malformed", str(e)) from None
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise EnvelopeError("malformed", "payload is not UTF-8") from None
    try:
        d = json.loads(text, object_pairs_hook=_no_dup_keys,
                       parse_constant=lambda c: _reject_constant(c))
    except EnvelopeError:
        raise
    except (ValueError, RecursionError) as e:  # JSONDecodeError, or an int of > 4300 digits
        raise EnvelopeError("malformed", f"not JSON: {e}") from None
    if not isinstance(d, dict):
        raise EnvelopeError("malformed", "expected a JSON object")
    raw_id = d.get("id")
    cid = raw_id if isinstance(raw_id, str) and _ID_RE.fullmatch(raw_id) else None
    missing = [k for k in (*UNSIGNED_FIELDS, "signature") if k not in d]
    if missing:
        raise EnvelopeError("malformed", f"missing field(s): {', '.join(missing)}", cid)
    extra = sorted(set(d) - _ALL_FIELDS)
    if extra:
        raise EnvelopeError("malformed", f"unknown field(s): {', '.join(extra)}", cid)
    v = _int(d, "v", cid)
    if v != VERSION:
        raise EnvelopeError("unsupported-version", f"envelope version {v}; this gateway "
                            f"speaks {VERSION}", cid)
    cmd_id = _str(d, "id", _ID_RE, "an id (1-64 of A-Z a-z 0-9 . _ : -)", cid)
    approvals: list[Approval] = []
    raw_app = d.get("approvals", [])
    if not isinstance(raw_app, list) or len(raw_app) > 8:
        raise EnvelopeError("malformed", "approvals: expected a list of at most 8", cid)
    for i, a in enumerate(raw_app):
        if not isinstance(a, dict) or set(a) != {"key_id", "signature"}:
            raise EnvelopeError("malformed",
                                f"approvals[{i}]: expected {{key_id, signature}}", cid)
        approvals.append(Approval(_str(a, "key_id", _ID_RE, "a key id", cid),
                                  _sig(a["signature"], f"approvals[{i}].signature", cid)))
    return Command(
        v=v, id=cmd_id,
        gateway=_str(d, "gateway", _ID_RE, "a gateway id", cid),
        point=_str(d, "point", _ID_RE, "a point id", cid),
        value=_str(d, "value", _VALUE_RE,
                   'a decimal string such as "42.5" (no exponent, at most 9 decimals)', cid),
        unit=_str(d, "unit", _UNIT_RE, "a unit (printable ASCII, no space, quote or backslash)",
                  cid),
        issued_at_ms=_int(d, "issued_at_ms", cid),
        not_before_ms=_int(d, "not_before_ms", cid),
        expires_at_ms=_int(d, "expires_at_ms", cid),
        seq=_int(d, "seq", cid),
        issuer=_str(d, "issuer", _ID_RE, "a key id", cid),
        signature=_sig(d["signature"], "signature", cid),
        approvals=tuple(approvals),
    )


def _reject_constant(c: str) -> Any:
    raise EnvelopeError("malformed", f"not JSON: {c} is not allowed")


def best_effort_id(payload: bytes) -> str | None:
    """The command id of a payload that failed to parse, when one can be read. Within the
    envelope's limits only (size and depth are checked before parsing); never raises."""
    try:
        d = loads_bounded(payload, max_bytes=MAX_PAYLOAD, max_depth=MAX_DEPTH)
    except (ValueError, RecursionError):
        return None
    v = d.get("id") if isinstance(d, dict) else None
    return v if isinstance(v, str) and _ID_RE.fullmatch(v) else None


# -- signing ------------------------------------------------------------------------------


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Ed25519 (RFC 8032) verification; False on any bad key, signature or message."""
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    return True


def sign_bytes(seed: bytes, message: bytes) -> bytes:
    return bytes(nacl.signing.SigningKey(seed).sign(message).signature)


def public_key_of(seed: bytes) -> bytes:
    return bytes(nacl.signing.SigningKey(seed).verify_key)


def sign_command(cmd: Command, seed: bytes) -> Command:
    """``cmd`` with the issuer's signature (replacing any)."""
    from dataclasses import replace

    return replace(cmd, signature=sign_bytes(seed, cmd.signing_bytes()))


def approve_command(cmd: Command, key_id: str, seed: bytes) -> Command:
    """``cmd`` with one more approval: a second person's signature over the same bytes."""
    from dataclasses import replace

    others = tuple(a for a in cmd.approvals if a.key_id != key_id)
    return replace(cmd, approvals=(*others, Approval(key_id, sign_bytes(seed,
                                                                        cmd.signing_bytes()))))


def verify_command_signature(cmd: Command, public_key: bytes, signature: bytes) -> bool:
    return verify_signature(public_key, cmd.signing_bytes(), signature)


# -- acknowledgements ---------------------------------------------------------------------

#: Ack statuses: applied (written and read back equal), rejected (policy: nothing written),
#: failed (accepted, but the write or the read-back did not succeed).
STATUSES = ("applied", "rejected", "failed")
_PRINTABLE = re.compile(r'[^ !#-\[\]-~]')


def clean_text(s: str, limit: int = 300) -> str:
    """Free text made safe for canonical JSON: printable ASCII, no '"' or '\\'."""
    s = s.replace('"', "'").replace("\\", "/")
    return _PRINTABLE.sub("?", s)[:limit]


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    id: str | None
    gateway: str
    status: str
    reason: str | None
    detail: str
    point: str | None
    requested: str | None
    applied: str | None
    read_back: str | None
    ts_ms: int
    v: int = VERSION

    def unsigned(self) -> dict[str, object]:
        return {"v": self.v, "id": self.id, "gateway": self.gateway, "status": self.status,
                "reason": self.reason, "detail": clean_text(self.detail), "point": self.point,
                "requested": self.requested, "applied": self.applied,
                "read_back": self.read_back, "ts_ms": self.ts_ms}

    def signing_bytes(self) -> bytes:
        return ACK_DOMAIN + canonical_json(self.unsigned())

    def to_bytes(self, sign: Any = None) -> bytes:
        """The message; ``sign`` (bytes -> 64-byte signature) adds the gateway's signature."""
        d: dict[str, object] = self.unsigned()
        d["signature"] = None if sign is None else "0x" + bytes(sign(self.signing_bytes())).hex()
        return canonical_json(d)


def verify_ack(message: Mapping[str, Any], public_key: bytes) -> bool:
    """Check a received ack's signature with the gateway's Ed25519 key."""
    sig = message.get("signature")
    if not isinstance(sig, str) or not _SIG_RE.fullmatch(sig):
        return False
    body = {k: v for k, v in message.items() if k != "signature"}
    try:
        signed = ACK_DOMAIN + canonical_json(body)
    except (ValueError, TypeError):  # NaN, a non-string key...: not an ack this gateway signed
        return False
    return verify_signature(public_key, signed, bytes.fromhex(sig[2:]))


def parse_ack_message(payload: bytes) -> dict[str, Any]:
    """An ack message as received (size and depth checked before parsing): a JSON object.
    Raises ``ValueError`` for anything else. Says nothing about authenticity: `verify_ack`."""
    d = loads_bounded(payload, max_bytes=MAX_PAYLOAD, max_depth=MAX_DEPTH, what="ack")
    if not isinstance(d, dict):
        raise ValueError("an ack is a JSON object")
    return d


def approvals_by_key(approvals: Sequence[Approval]) -> dict[str, bytes]:
    return {a.key_id: a.signature for a in approvals}
