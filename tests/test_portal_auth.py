"""Sign-in: the EIP-4361 message byte for byte (the vector in docs/portal.md), the whole
flow on SQLite and PostgreSQL, and every way a sign-in is refused (replay, expiry, another
signer, a changed message, another domain or chain, no role, too many challenges)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger_client import keccak256
from portal import create_app
from portal._api_tables import auth_nonces
from portal._auth import (
    MAX_PENDING_PER_ADDRESS,
    STATEMENT,
    SignIn,
    parse_siwe,
    siwe_message,
    to_checksum_address,
)
from portal._chain_tables import roles
from tests.portal_data import Clock, Dataset, account, addr, as_indexed, load, make_context

PROBLEM = "application/problem+json"

#: the test vector of docs/portal.md
VECTOR_KEY = "0x938f35ad3df6034331019bebeb8fc1243b1e5b9eb672c536706284fa112e41ec"
VECTOR_MESSAGE = (
    "portal.example wants you to sign in with your Ethereum account:\n"
    "0x37c4E8cA09C639ee0090fA64C96055Af4d8D2360\n"
    "\n"
    "Sign in to the MRV portal. Your roles are read from the ledger.\n"
    "\n"
    "URI: https://portal.example/\n"
    "Version: 1\n"
    "Chain ID: 31337\n"
    "Nonce: 0123456789abcdef0123456789abcdef\n"
    "Issued At: 2025-03-01T00:00:00Z\n"
    "Expiration Time: 2025-03-01T00:05:00Z")
VECTOR_SIGNATURE = (
    "0x205e01b8d2eed070a7b097728b0917cf74838bf7176cb68dc111998e15f055e2742e095e197310d236fd3b5a"
    "7aec5415ad27a3fc3b4078b3590ea3de2601accb1c")


def sign(who: LocalAccount, message: str) -> str:
    return "0x" + Account.sign_message(encode_defunct(text=message), who.key).signature.hex()


def test_the_sign_in_message_byte_for_byte() -> None:
    who = Account.from_key(VECTOR_KEY)
    assert who.address == "0x37c4E8cA09C639ee0090fA64C96055Af4d8D2360"
    s = SignIn(domain="portal.example", address=who.address, statement=STATEMENT,
               uri="https://portal.example/", chain_id=31337,
               nonce="0123456789abcdef0123456789abcdef", issued_at="2025-03-01T00:00:00Z",
               expires_at="2025-03-01T00:05:00Z")
    assert siwe_message(s) == VECTOR_MESSAGE
    assert keccak256(VECTOR_MESSAGE.encode()).hex() == (
        "c7fd09b2a5a27a2dcd3cb55d4c74b9ee2971275062dae10c5222285d7c536542")
    assert sign(who, VECTOR_MESSAGE) == VECTOR_SIGNATURE  # RFC 6979: deterministic
    assert Account.recover_message(encode_defunct(text=VECTOR_MESSAGE),
                                   signature=VECTOR_SIGNATURE) == who.address
    assert parse_siwe(VECTOR_MESSAGE) == s


def test_the_docs_carry_the_vector() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "portal.md").read_text()
    assert f"```\n{VECTOR_MESSAGE}\n```" in doc
    assert f"({len(VECTOR_MESSAGE.encode())} bytes;" in doc
    assert VECTOR_SIGNATURE in doc and VECTOR_KEY in doc
    assert keccak256(VECTOR_MESSAGE.encode()).hex() in doc


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=20, max_size=20))
def test_checksum_addresses_as_eth_account_writes_them(raw: bytes) -> None:
    from eth_utils.address import to_checksum_address as reference

    assert to_checksum_address("0x" + raw.hex()) == reference("0x" + raw.hex())


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=600))
def test_parse_refuses_anything_but_the_form(text: str) -> None:
    try:
        s = parse_siwe(text)
    except ValueError:
        return
    assert siwe_message(s) == text


@pytest.mark.parametrize("change", [
    lambda m: m + "\n",
    lambda m: m.replace("Version: 1", "Version: 2"),
    lambda m: m.replace("Nonce: 0123456789abcdef0123456789abcdef", "Nonce: short"),
    lambda m: m.replace("wants you", "wants  you"),
    lambda m: m.replace("\n\nURI", "\nURI"),
    lambda m: m.replace("2025-03-01T00:05:00Z", "tomorrow"),
    lambda m: "x" * 3000,
])
def test_parse_refuses_a_changed_form(change: Any) -> None:
    with pytest.raises(ValueError):
        parse_siwe(change(VECTOR_MESSAGE))


# -- the flow ------------------------------------------------------------------------------

@dataclass
class Env:
    ctx: Any
    client: TestClient
    ds: Dataset
    clock: Clock

    def challenge(self, who: LocalAccount) -> dict[str, Any]:
        r = self.client.post("/v1/auth/challenge", json={"address": who.address})
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    def token(self, message: str, signature: str) -> Any:
        return self.client.post("/v1/auth/token",
                                json={"message": message, "signature": signature})


@pytest.fixture
def env(db_url: str) -> Iterator[Env]:
    clock = Clock()
    ctx = make_context(db_url, clock=clock)
    ds = load(ctx.engine)
    with TestClient(create_app(ctx)) as client:
        yield Env(ctx, client, ds, clock)
    ctx.engine.dispose()


def test_sign_in_then_use_the_token(env: Env) -> None:
    ds = env.ds
    ch = env.challenge(ds.b)
    msg = ch["message"]
    assert ch["address"] == ds.b.address  # EIP-55
    s = parse_siwe(msg)
    assert (s.domain, s.uri, s.chain_id, s.address) == (
        "portal.example", "https://portal.example/", 31337, ds.b.address)
    assert (s.issued_at, s.expires_at) == ("2025-03-01T00:00:00Z", "2025-03-01T00:05:00Z")
    r = env.token(msg, sign(ds.b, msg))
    assert r.status_code == 200, r.text
    tok = r.json()
    assert tok["address"] == addr(ds.b) and tok["roles"] == ["enterprise"]
    assert tok["token_type"] == "Bearer" and tok["expires_at"] == env.clock.now // 10**9 + 900
    h = {"Authorization": f"Bearer {tok['token']}"}
    assert env.client.get("/v1/auth/me", headers=h).json() == {
        "address": addr(ds.b), "roles": ["enterprise"]}
    assert env.client.get(f"/v1/enterprises/{addr(ds.b)}/accounts/1", headers=h).status_code == 200
    # the token expires on the portal's clock
    env.clock.now += 901 * 10**9
    r = env.client.get("/v1/auth/me", headers=h)
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    # the government signs in with its roles
    ch = env.challenge(ds.government)
    assert env.token(ch["message"], sign(ds.government, ch["message"])).json()["roles"] == [
        "government"]


def _refused(r: Any, status: int, words: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    assert words in r.json()["detail"], r.json()["detail"]


def test_a_challenge_is_used_once(env: Env) -> None:
    ch = env.challenge(env.ds.a)
    sig = sign(env.ds.a, ch["message"])
    assert env.token(ch["message"], sig).status_code == 200
    _refused(env.token(ch["message"], sig), 401, "already used")


def test_a_challenge_expires(env: Env) -> None:
    ch = env.challenge(env.ds.a)
    env.clock.now += 300 * 10**9  # challenge_ttl_s
    _refused(env.token(ch["message"], sign(env.ds.a, ch["message"])), 401, "expired")
    with env.ctx.engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(auth_nonces)).scalar() == 1
    env.challenge(env.ds.a)  # a new challenge clears the expired ones
    with env.ctx.engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(auth_nonces)).scalar() == 1


def test_signed_by_another_key_or_changed_is_refused(env: Env) -> None:
    ds = env.ds
    ch = env.challenge(ds.a)
    msg = ch["message"]
    _refused(env.token(msg, sign(ds.b, msg)), 401, f"signed by {addr(ds.b)}, not by {addr(ds.a)}")
    # B rewrites A's challenge to its own address: not the message issued with that nonce
    forged = msg.replace(ds.a.address, ds.b.address)
    _refused(env.token(forged, sign(ds.b, forged)), 401, "not the one issued")
    # another domain, URI or chain: refused before the nonce is even looked up
    for old, new, words in (("portal.example wants", "evil.example wants", "domain"),
                            ("URI: https://portal.example/", "URI: https://evil.example/", "URI"),
                            ("Chain ID: 31337", "Chain ID: 1", "chain id")):
        m = msg.replace(old, new)
        _refused(env.token(m, sign(ds.a, m)), 401, words)
    unknown = msg.replace(parse_siwe(msg).nonce, "f" * 32)
    _refused(env.token(unknown, sign(ds.a, unknown)), 401, "unknown nonce")
    _refused(env.token("hello", sign(ds.a, "hello")), 401, "EIP-4361")
    _refused(env.token(msg, "0x" + "00" * 65), 401, "not a valid signature")
    # the challenge survived every failed attempt: A can still use it
    assert env.token(msg, sign(ds.a, msg)).status_code == 200


def test_malformed_requests_are_422(env: Env) -> None:
    for path, body in (
            ("/v1/auth/challenge", {"address": "0x1234"}),
            ("/v1/auth/challenge", {"address": "0x" + "aa" * 20, "extra": 1}),
            ("/v1/auth/challenge", {}),
            ("/v1/auth/token", {"message": "m", "signature": "0x12"}),
            ("/v1/auth/token", {"message": "m" * 3000, "signature": "0x" + "11" * 65}),
            ("/v1/auth/token", {"message": 5, "signature": "0x" + "11" * 65})):
        r = env.client.post(path, json=body)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, (path, body)
    r = env.client.post("/v1/auth/token", content=b"{not json", headers={
        "content-type": "application/json"})
    assert r.status_code == 422
    # larger than a sign-in can be, or of no declared length: 413 before it is read
    r = env.client.post("/v1/auth/token", json={"message": "m" * 9000, "signature": "0x"})
    assert r.status_code == 413 and r.headers["content-type"] == PROBLEM
    r = env.client.post("/v1/auth/challenge", content=iter([b'{"address": "0x', b'00"}']),
                        headers={"content-type": "application/json"})
    assert r.status_code == 413 and "Content-Length" in r.json()["detail"]


def test_no_role_no_token(env: Env) -> None:
    who = env.ds.stranger
    ch = env.challenge(who)
    _refused(env.token(ch["message"], sign(who, ch["message"])), 403, "holds no role")
    # a suspended enterprise has no role the portal serves either
    ch = env.challenge(env.ds.d)
    _refused(env.token(ch["message"], sign(env.ds.d, ch["message"])), 403, "holds no role")


def test_a_role_revoked_after_sign_in_takes_effect_at_once(env: Env) -> None:
    ds = env.ds
    ch = env.challenge(ds.auditor)
    tok = env.token(ch["message"], sign(ds.auditor, ch["message"])).json()["token"]
    h = {"Authorization": f"Bearer {tok}"}
    assert env.client.get("/v1/quarantine", headers=h).status_code == 200
    with env.ctx.engine.begin() as c:
        c.execute(sa.delete(roles).where(roles.c.account == addr(ds.auditor)))
        as_indexed(c)
    assert env.client.get("/v1/quarantine", headers=h).status_code == 403


def test_unanswered_challenges_are_bounded(env: Env) -> None:
    who = account("someone")
    for _ in range(MAX_PENDING_PER_ADDRESS):
        env.challenge(who)
    r = env.client.post("/v1/auth/challenge", json={"address": who.address})
    _refused(r, 429, "unanswered challenges")
    assert env.ctx.metrics.counters["portal_auth_refused_total"] == 1  # counted
    env.clock.now += 300 * 10**9  # they expire: room again
    env.challenge(who)


def test_a_forged_or_foreign_token_is_401(env: Env) -> None:
    import jwt

    for tok in ("abc", jwt.encode({"sub": addr(env.ds.a), "exp": 2**40, "iss": "mrv-portal"},
                                  b"another secret of 32 bytes......", algorithm="HS256"),
                "x" * 5000):
        r = env.client.get("/v1/auth/me", headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 401 and r.headers["content-type"] == PROBLEM
