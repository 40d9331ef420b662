"""Sign-in: an EIP-4361 ("Sign-In with Ethereum") challenge signed with the account's own key,
then a short-lived token (``_viewer.issue_token``). The message is built and parsed here as
pure functions (docs/portal.md has it byte for byte with a test vector); the nonce is
single-use, stored with its expiry in ``auth_nonces``.

The portal issues the exact message and keeps it: a token request must present that message
unchanged, with a signature (EIP-191 ``personal_sign``) that recovers to the challenge's
address, before the nonce's expiry, and only once."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from eth_account import Account
from eth_account.messages import encode_defunct

from ledger_client import keccak256
from portal._api_tables import auth_nonces
from portal._context import PortalContext
from portal._errors import ApiProblem
from portal._ui_tables import login_links
from portal._viewer import issue_token, roles_of

STATEMENT = "Sign in to the MRV portal. Your roles are read from the ledger."
VERSION = "1"
#: the longest message a token request may carry (a real one is about 400 characters)
MAX_MESSAGE_CHARS = 2048
#: unredeemed, unexpired challenges one address may hold at once, and all addresses together
MAX_PENDING_PER_ADDRESS = 8
MAX_PENDING = 100_000

_MESSAGE = re.compile(
    r"(?P<domain>[^\s/]{1,253}) wants you to sign in with your Ethereum account:\n"
    r"(?P<address>0x[0-9a-fA-F]{40})\n"
    r"\n"
    r"(?P<statement>[^\n]{1,500})\n"
    r"\n"
    r"URI: (?P<uri>[^\s]{1,500})\n"
    r"Version: (?P<version>1)\n"
    r"Chain ID: (?P<chain_id>[0-9]{1,20})\n"
    r"Nonce: (?P<nonce>[0-9a-zA-Z]{8,64})\n"
    r"Issued At: (?P<issued_at>[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z)\n"
    r"Expiration Time: (?P<expires_at>[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z)",
)


@dataclass(frozen=True, slots=True)
class SignIn:
    domain: str
    address: str  # EIP-55 checksummed, as in the message
    statement: str
    uri: str
    chain_id: int
    nonce: str
    issued_at: str  # RFC 3339, UTC, seconds
    expires_at: str


def to_checksum_address(address: str) -> str:
    """EIP-55: a hex digit of the address is upper case when the same nibble of the
    keccak-256 of the lowercase hex is 8 or more."""
    hexa = address.lower().removeprefix("0x")
    h = keccak256(hexa.encode()).hex()
    return "0x" + "".join(c.upper() if int(h[i], 16) >= 8 else c for i, c in enumerate(hexa))


def rfc3339(at_s: int) -> str:
    return dt.datetime.fromtimestamp(at_s, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def siwe_message(s: SignIn) -> str:
    """The EIP-4361 message of ``s`` (no trailing newline)."""
    return (f"{s.domain} wants you to sign in with your Ethereum account:\n"
            f"{s.address}\n"
            "\n"
            f"{s.statement}\n"
            "\n"
            f"URI: {s.uri}\n"
            f"Version: {VERSION}\n"
            f"Chain ID: {s.chain_id}\n"
            f"Nonce: {s.nonce}\n"
            f"Issued At: {s.issued_at}\n"
            f"Expiration Time: {s.expires_at}")


def parse_siwe(text: str) -> SignIn:
    """The fields of a sign-in message in exactly the portal's form (``ValueError``
    otherwise)."""
    if len(text) > MAX_MESSAGE_CHARS:
        raise ValueError(f"the message is longer than {MAX_MESSAGE_CHARS} characters")
    m = _MESSAGE.fullmatch(text)
    if m is None:
        raise ValueError("not a sign-in message in the portal's EIP-4361 form")
    g = m.groupdict()
    return SignIn(domain=g["domain"], address=g["address"], statement=g["statement"],
                  uri=g["uri"], chain_id=int(g["chain_id"]), nonce=g["nonce"],
                  issued_at=g["issued_at"], expires_at=g["expires_at"])


def recover_signer(message: str, signature: str) -> str:
    """The lowercase address that signed ``message`` (EIP-191); ``ValueError`` when the
    signature is not one."""
    try:
        addr = Account.recover_message(encode_defunct(text=message), signature=signature)
    except Exception as e:  # eth_keys' BadSignature and friends derive from Exception only
        raise ValueError(f"not a valid signature: {e}") from None
    return str(addr).lower()


def _unauthorized(detail: str) -> ApiProblem:
    return ApiProblem(401, "Unauthorized", f"sign-in refused: {detail}")


def challenge(ctx: PortalContext, address: str) -> tuple[SignIn, str]:
    """A new challenge for ``address``: its fields and message, stored with the nonce."""
    now_ns = ctx.now_ns()
    now_s = now_ns // 1_000_000_000
    ttl = ctx.config.auth.challenge_ttl_s
    s = SignIn(domain=ctx.config.auth.domain, address=to_checksum_address(address),
               statement=STATEMENT, uri=ctx.config.auth.uri, chain_id=ctx.chain_id,
               nonce=secrets.token_hex(16), issued_at=rfc3339(now_s),
               expires_at=rfc3339(now_s + ttl))
    text = siwe_message(s)
    with ctx.engine.begin() as c:
        c.execute(sa.delete(auth_nonces).where(auth_nonces.c.expires_ns <= now_ns))
        pending = sa.select(sa.func.count()).select_from(auth_nonces).where(
            auth_nonces.c.used_ns.is_(None))
        mine = c.execute(pending.where(auth_nonces.c.address == address.lower())).scalar_one()
        if mine >= MAX_PENDING_PER_ADDRESS:
            ctx.metrics.inc("portal_auth_refused_total")
            raise ApiProblem(429, "Too Many Requests",
                             f"{address} already holds {mine} unanswered challenges: sign one "
                             f"or wait up to {ttl} s for them to expire")
        if c.execute(pending).scalar_one() >= MAX_PENDING:
            ctx.metrics.inc("portal_auth_refused_total")
            raise ApiProblem(429, "Too Many Requests", "too many sign-ins are pending: try "
                             "again shortly")
        c.execute(sa.insert(auth_nonces).values(
            nonce=s.nonce, address=address.lower(), message=text, issued_ns=now_s * 10**9,
            expires_ns=(now_s + ttl) * 10**9, used_ns=None))
    return s, text


def redeem(ctx: PortalContext, message: str, signature: str) -> tuple[str, int, str,
                                                                      frozenset[str]]:
    """Check a signed challenge; the token, its expiry (Unix s), the address and its roles."""
    signer, found = check_signed(ctx, message, signature)
    token, exp = issue_token(ctx, signer)
    ctx.metrics.inc("portal_auth_tokens_total")
    return token, exp, signer, found


def check_signed(ctx: PortalContext, message: str, signature: str) -> tuple[str, frozenset[str]]:
    """Check a signed challenge and use up its nonce: the signer and its roles (401 for a
    bad or used challenge, 403 for an account with no role the portal serves)."""
    try:
        s = parse_siwe(message)
        if s.domain != ctx.config.auth.domain:
            raise ValueError(f"the domain {s.domain!r} is not this portal's "
                             f"({ctx.config.auth.domain!r})")
        if s.uri != ctx.config.auth.uri:
            raise ValueError(f"the URI {s.uri!r} is not this portal's ({ctx.config.auth.uri!r})")
        if s.chain_id != ctx.chain_id:
            raise ValueError(f"the chain id {s.chain_id} is not this portal's ({ctx.chain_id})")
        signer = recover_signer(message, signature)
    except ValueError as e:
        ctx.metrics.inc("portal_auth_refused_total")
        raise _unauthorized(str(e)) from None
    now_ns = ctx.now_ns()
    with ctx.engine.begin() as c:
        row = c.execute(sa.select(auth_nonces).where(auth_nonces.c.nonce == s.nonce)).first()
        problem = None
        if row is None:
            problem = "unknown nonce: ask for a challenge first (POST /v1/auth/challenge)"
        elif row.message != message:
            problem = "the message is not the one issued with this nonce"
        elif row.used_ns is not None:
            problem = "this challenge was already used: ask for a new one"
        elif now_ns >= row.expires_ns:
            problem = "the challenge has expired: ask for a new one"
        elif signer != row.address:
            problem = f"the message is signed by {signer}, not by {row.address}"
        if problem is None:
            done = c.execute(sa.update(auth_nonces).where(
                auth_nonces.c.nonce == s.nonce, auth_nonces.c.used_ns.is_(None))
                .values(used_ns=now_ns))
            if done.rowcount != 1:
                problem = "this challenge was already used: ask for a new one"
        if problem is not None:
            ctx.metrics.inc("portal_auth_refused_total")
            raise _unauthorized(problem)
        found = roles_of(c, signer)
    if not found:
        ctx.metrics.inc("portal_auth_refused_total")
        raise ApiProblem(403, "Forbidden", f"{signer} holds no role on the ledger that the "
                         "portal serves (government, auditor, finance, or an active "
                         "enterprise)")
    return signer, found


# -- one-time sign-in links (``mrvctl login``, POST /v1/auth/link) --------------------------------

#: the most unopened, unexpired sign-in links held at once
MAX_PENDING_LINKS = 10_000
LINK_CODE = re.compile(r"^[A-Za-z0-9_-]{32,64}$")


def _code_hash(code: str) -> str:
    import hashlib

    return hashlib.sha256(code.encode()).hexdigest()


def new_link(ctx: PortalContext, address: str) -> tuple[str, int]:
    """A one-time sign-in code for ``address`` and its expiry (Unix s). Only its SHA-256 is
    stored: the database cannot sign anybody in."""
    now_ns = ctx.now_ns()
    code = secrets.token_urlsafe(32)
    exp_ns = now_ns + ctx.config.ui.link_ttl_s * 1_000_000_000
    with ctx.engine.begin() as c:
        c.execute(sa.delete(login_links).where(login_links.c.expires_ns <= now_ns))
        pending = c.execute(sa.select(sa.func.count()).select_from(login_links)
                            .where(login_links.c.used_ns.is_(None))).scalar() or 0
        if pending >= MAX_PENDING_LINKS:
            raise ApiProblem(429, "Too Many Requests",
                             "too many sign-in links wait to be opened: try again later")
        c.execute(sa.insert(login_links).values(code_hash=_code_hash(code),
                                                address=address.lower(), created_ns=now_ns,
                                                expires_ns=exp_ns))
    return code, exp_ns // 1_000_000_000


def peek_link(ctx: PortalContext, code: str) -> str:
    """The account a sign-in code is for, without using it up; ``ValueError`` with the reason
    for a code that is unknown, used or expired."""
    if not LINK_CODE.match(code):
        raise ValueError("this is not a sign-in link")
    with ctx.engine.connect() as c:
        row = c.execute(sa.select(login_links).where(
            login_links.c.code_hash == _code_hash(code))).first()
    if row is None:
        raise ValueError("unknown sign-in link")
    if row.used_ns is not None:
        raise ValueError("this sign-in link was used already: run mrvctl login again")
    if ctx.now_ns() >= row.expires_ns:
        raise ValueError("this sign-in link has expired: run mrvctl login again")
    return str(row.address)


def use_link(ctx: PortalContext, code: str) -> str:
    """Use up a sign-in code: the account it signs in; ``ValueError`` as ``peek_link``."""
    address = peek_link(ctx, code)
    with ctx.engine.begin() as c:
        done = c.execute(sa.update(login_links).where(
            login_links.c.code_hash == _code_hash(code), login_links.c.used_ns.is_(None))
            .values(used_ns=ctx.now_ns()))
    if done.rowcount != 1:
        raise ValueError("this sign-in link was used already: run mrvctl login again")
    ctx.metrics.inc("portal_auth_links_used_total")
    return address
