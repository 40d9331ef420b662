"""The command envelope: test vectors an auditor can reproduce, strict parsing, signatures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from Crypto.PublicKey import ECC
from Crypto.Signature import eddsa
from hypothesis import given
from hypothesis import strategies as st

from control import _vectors
from control._envelope import (
    COMMAND_DOMAIN,
    Ack,
    EnvelopeError,
    best_effort_id,
    format_value,
    parse_ack_message,
    parse_command,
    public_key_of,
    sign_bytes,
    sign_command,
    verify_ack,
    verify_command_signature,
)
from tests.test_control_support import EPB, make_command

ROOT = Path(__file__).resolve().parent.parent
VECTORS = json.loads((ROOT / "docs" / "vectors" / "command.json").read_text())


def _independent_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """RFC 8032 Ed25519 from pycryptodome (not the PyNaCl the gateway uses)."""
    key = eddsa.import_public_key(public_key)
    try:
        eddsa.new(key, "rfc8032").verify(message, signature)
    except ValueError:
        return False
    return True


def _independent_sign(seed: bytes, message: bytes) -> bytes:
    key = ECC.construct(curve="Ed25519", seed=seed)  # type: ignore[arg-type]  # stub is narrow
    return bytes(eddsa.new(key, "rfc8032").sign(message))


def _by_hand(unsigned: dict[str, Any]) -> bytes:
    """The canonical bytes written out by hand: sorted keys, integers as digits, strings
    quoted verbatim (the allowed characters need no escaping)."""
    parts = []
    for k in sorted(unsigned):
        v = unsigned[k]
        parts.append(f'"{k}":' + (str(v) if isinstance(v, int) else f'"{v}"'))
    return b"mrv-command/v1\n" + ("{" + ",".join(parts) + "}").encode("ascii")


def test_vectors_file_is_current() -> None:
    """The checked-in file is exactly what the generator writes (a format change shows)."""
    assert (ROOT / "docs" / "vectors" / "command.json").read_text() == _vectors.render()


@pytest.mark.parametrize("vec", VECTORS["commands"], ids=lambda v: v["name"])
def test_command_vectors(vec: dict[str, Any]) -> None:
    keys = {k["key_id"]: k for k in VECTORS["keys"]}
    expected = bytes.fromhex(vec["canonical_bytes_hex"][2:])
    assert expected == vec["canonical_bytes_utf8"].encode("utf-8")
    assert _by_hand(vec["unsigned"]) == expected
    assert expected.startswith(COMMAND_DOMAIN)
    cmd = parse_command(json.dumps(vec["envelope"], indent=3))  # whitespace does not matter
    assert cmd.signing_bytes() == expected
    issuer = keys[cmd.issuer]
    pub = bytes.fromhex(issuer["public_key"][2:])
    seed = bytes.fromhex(issuer["seed"][2:])
    assert public_key_of(seed) == pub
    # deterministic: both implementations produce the vector's signature, and verify it
    assert _independent_sign(seed, expected) == cmd.signature
    assert sign_bytes(seed, expected) == cmd.signature
    assert _independent_verify(pub, expected, cmd.signature)
    assert verify_command_signature(cmd, pub, cmd.signature)
    for a in cmd.approvals:
        apub = bytes.fromhex(keys[a.key_id]["public_key"][2:])
        assert _independent_verify(apub, expected, a.signature)
    assert json.loads(cmd.to_bytes()) == vec["envelope"]


@pytest.mark.parametrize("vec", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vectors(vec: dict[str, Any]) -> None:
    keys = {k["key_id"]: bytes.fromhex(k["public_key"][2:]) for k in VECTORS["keys"]}
    if vec["reason"] == "malformed":
        with pytest.raises(EnvelopeError) as e:
            parse_command(vec["payload"])
        assert e.value.reason == "malformed"
    else:
        cmd = parse_command(vec["payload"])
        assert not verify_command_signature(cmd, keys[cmd.issuer], cmd.signature)
        assert not _independent_verify(keys[cmd.issuer], cmd.signing_bytes(), cmd.signature)


@pytest.mark.parametrize("vec", VECTORS["acks"], ids=lambda v: v["name"])
def test_ack_vectors(vec: dict[str, Any]) -> None:
    gw = next(k for k in VECTORS["keys"] if k["key_id"] == "gateway")
    pub = bytes.fromhex(gw["public_key"][2:])
    msg = vec["message"]
    assert verify_ack(msg, pub)
    body = {k: v for k, v in msg.items() if k != "signature"}
    assert body == vec["unsigned"]
    canon = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert b"mrv-ack/v1\n" + canon == vec["canonical_bytes_utf8"].encode()
    assert _independent_verify(pub, vec["canonical_bytes_utf8"].encode(),
                               bytes.fromhex(msg["signature"][2:]))
    tampered = dict(msg, status="applied" if msg["status"] != "applied" else "failed")
    assert not verify_ack(tampered, pub)


def _env(**changes: Any) -> dict[str, Any]:
    d = dict(make_command("40").to_json())
    d.update(changes)
    return {k: v for k, v in d.items() if v is not _DROP}


_DROP = object()


@pytest.mark.parametrize(("payload", "fragment"), [
    (b"", "not JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b"[1, 2]", "expected a JSON object"),
    (b'{"v": 1}', "missing field(s)"),
    (json.dumps(_env(colour="red")).encode(), "unknown field(s): colour"),
    (json.dumps(_env(value=40)).encode(), "value: expected a decimal string"),
    (json.dumps(_env(value="4e1")).encode(), "value: expected a decimal string"),
    (json.dumps(_env(value="NaN")).encode(), "value: expected a decimal string"),
    (json.dumps(_env(value="040")).encode(), "value: expected a decimal string"),
    (json.dumps(_env(seq=-1)).encode(), "seq: expected an integer"),
    (json.dumps(_env(seq=True)).encode(), "seq: expected an integer"),
    (json.dumps(_env(seq=2**53)).encode(), "seq: expected an integer"),
    (json.dumps(_env(expires_at_ms=1.5e12)).encode(), "expires_at_ms: expected an integer"),
    (json.dumps(_env(unit="m 3")).encode(), "unit: expected a unit"),
    (json.dumps(_env(id="../../etc")).encode(), "id: expected an id"),
    (json.dumps(_env(signature="0x1234")).encode(), "signature: expected 0x"),
    (json.dumps(_env(signature=_DROP)).encode(), "missing field(s): signature"),
    (json.dumps(_env(approvals=[{"key_id": "auditor"}])).encode(), "approvals[0]"),
    (b'{"v": 1, "v": 1}', "duplicate key"),
    (b"NaN", "NaN is not allowed"),
    (b"[" * 10_000, "nests deeper than 8"),  # refused before parsing
    (b'{"a":' * 9 + b"1" + b"}" * 9, "nests deeper than 8"),
    (b"[" * 100_000, "exceeds"),
    (b'{"v": 1, "seq": ' + b"9" * 5000 + b"}", "not JSON"),  # > 4300 digits: ValueError
    (b" " * 20_000, "exceeds"),
])
def test_malformed_payloads_are_named(payload: bytes, fragment: str) -> None:
    with pytest.raises(EnvelopeError) as e:
        parse_command(payload)
    assert e.value.reason == "malformed"
    assert fragment in e.value.detail, e.value.detail


def test_version_and_best_effort_id() -> None:
    with pytest.raises(EnvelopeError) as e:
        parse_command(json.dumps(_env(v=2, id="c-1")))
    assert e.value.reason == "unsupported-version"
    assert e.value.command_id == "c-1"
    with pytest.raises(EnvelopeError) as e:
        parse_command(json.dumps(_env(id="c-2", value=1)))
    assert e.value.command_id == "c-2"  # the nack can still name the command


def test_every_signed_field_is_covered() -> None:
    cmd = make_command("40")
    pub = public_key_of(EPB)
    assert verify_command_signature(cmd, pub, cmd.signature)
    for field, new in [("id", "other"), ("gateway", "gw2"), ("point", "burner.air_damper"),
                       ("value", "41"), ("unit", "m3/h"), ("issued_at_ms", 1),
                       ("not_before_ms", 1), ("expires_at_ms", 2), ("seq", 7),
                       ("issuer", "auditor")]:
        changed = parse_command(json.dumps(_env(**{**cmd.to_json(), field: new})))
        assert not verify_command_signature(changed, pub, cmd.signature), field


@given(st.decimals(min_value=-10**12, max_value=10**12, places=6, allow_nan=False,
                   allow_infinity=False))
def test_format_value_round_trips(d: Any) -> None:
    s = format_value(float(d))
    cmd = sign_command(make_command("1"), EPB)
    parsed = parse_command(json.dumps(_env(**{**cmd.to_json(), "value": s})))
    assert parsed.value == s
    assert abs(parsed.number() - float(d)) <= 1e-9 * max(1.0, abs(float(d)))


def test_ack_detail_is_made_canonical_safe() -> None:
    a = Ack(id=None, gateway="gw", status="rejected", reason="malformed",
            detail='bad "quote" \\ and \n newline and ü', point=None, requested=None,
            applied=None, read_back=None, ts_ms=1)
    body = json.loads(a.to_bytes())
    assert body["detail"] == "bad 'quote' / and ? newline and ?"
    assert body["signature"] is None


@pytest.mark.parametrize("field", ["value", "id", "gateway", "point", "unit", "issuer",
                                   "signature"])
def test_a_trailing_newline_is_malformed(field: str) -> None:
    """``re.match`` with ``$`` accepts "47\\n"; the patterns are matched in full."""
    good = make_command("47").to_json()
    parse_command(json.dumps(good))  # the unchanged envelope parses
    with pytest.raises(EnvelopeError) as e:
        parse_command(json.dumps(_env(**{**good, field: f"{good[field]}\n"})))
    assert e.value.reason == "malformed"
    assert e.value.detail.startswith(f"{field}: expected"), e.value.detail
    if field == "id":
        assert e.value.command_id is None  # the nack does not echo the bad id


def test_best_effort_id_is_bounded() -> None:
    assert best_effort_id(json.dumps(_env(id="c-9", value=1)).encode()) == "c-9"
    assert best_effort_id(json.dumps(_env(id="c-9\n")).encode()) is None
    assert best_effort_id(b"[" * 100_000) is None
    assert best_effort_id(b'{"id": "c-9", "x": ' + b"[" * 50 + b"]" * 50 + b"}") is None
    assert best_effort_id(b'{"id": "c-9", "x": "' + b"a" * 20_000 + b'"}') is None


_DEEP_SCRIPT = """
import sys
import ledger_client
# The worst case: a dependency raised the limit (py_ecc did, before ledger_client._deps undid it),
# so json's C recursion would overflow the C stack long before a RecursionError.
sys.setrecursionlimit(100_000)
from control._envelope import EnvelopeError, best_effort_id, parse_ack_message, parse_command
from control._telemetry import verify_telemetry
deep = b"[" * 100_000
assert best_effort_id(deep) is None
for f in (parse_command, parse_ack_message, lambda b: verify_telemetry(b, bytes(32))):
    for data in (deep, b"[" * 16_000, b'{"a":' * 3000):
        try:
            f(data)
        except ValueError:
            pass
        else:
            raise AssertionError("accepted")
print("survived")
"""


def test_deep_nesting_does_not_crash_even_with_a_raised_recursion_limit() -> None:
    """In its own process: before the limits, this died with SIGSEGV."""
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "-c", _DEEP_SCRIPT], cwd=root, capture_output=True,
                       text=True, timeout=120, env={"PYTHONPATH": str(root)})
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert r.stdout.strip() == "survived"


def test_ack_messages_are_bounded() -> None:
    a = Ack(id="c-1", gateway="gw", status="applied", reason=None, detail="ok", point="p",
            requested="1", applied="1", read_back="1", ts_ms=1)
    assert parse_ack_message(a.to_bytes())["id"] == "c-1"
    for bad in (b"[]", b"[" * 100_000, b'{"detail": "' + b"x" * 20_000 + b'"}', b"\xff"):
        with pytest.raises(ValueError):
            parse_ack_message(bad)
