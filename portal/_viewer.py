"""Who is asking: the bearer token's account and its roles, read from the indexed chain on
every request (so a role revoked on-chain, or a data-access grant withdrawn, takes effect at
the indexer's next step, whatever the token says).

Tokens are JWTs (HS256 with the portal's secret) that carry the account and an expiry only;
``_auth.py`` issues them after a signed sign-in challenge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import jwt
import sqlalchemy as sa
from fastapi import Depends, Request

from portal._cache import chain_version
from portal._chain_tables import data_access, enterprises, roles
from portal._context import PortalContext, context_of
from portal._errors import ApiProblem

ISSUER = "mrv-portal"

#: the roles a viewer can have; ``enterprise`` is an active certified enterprise
SEES_ALL = frozenset({"admin", "government", "auditor"})


@dataclass(frozen=True, slots=True)
class Viewer:
    address: str  # lowercase 0x hex
    roles: frozenset[str]

    @property
    def sees_all(self) -> bool:
        """Government (and the regulator's admin) and auditors see everything."""
        return bool(self.roles & SEES_ALL)

    @property
    def is_enterprise(self) -> bool:
        return "enterprise" in self.roles

    @property
    def is_finance(self) -> bool:
        return "finance" in self.roles


def issue_token(ctx: PortalContext, address: str, ttl_s: int | None = None) -> tuple[str, int]:
    """A token for ``address`` and its expiry (Unix seconds); ``ttl_s``: its lifetime
    (``auth.token_ttl_s`` by default; a browser session's is ``ui.session_ttl_s``)."""
    now_s = ctx.now_ns() // 1_000_000_000
    exp = now_s + (ctx.config.auth.token_ttl_s if ttl_s is None else ttl_s)
    token = jwt.encode({"sub": address.lower(), "iat": now_s, "exp": exp, "iss": ISSUER},
                       ctx.token_secret, algorithm="HS256")
    return token, exp


def roles_of(conn: sa.Connection, address: str) -> frozenset[str]:
    """The account's roles as the chain says (the indexed ``roles`` and ``enterprises``)."""
    addr = address.lower()
    found = {r for (r,) in conn.execute(sa.select(roles.c.role).where(roles.c.account == addr))}
    status = conn.execute(sa.select(enterprises.c.status)
                          .where(enterprises.c.account == addr)).scalar()
    if status == 1:
        found.add("enterprise")
    return frozenset(found & (SEES_ALL | {"finance", "enterprise"}))


def finance_access_until(conn: sa.Connection, enterprise: str, finance: str) -> int:
    """Until when (block seconds) ``finance`` may see ``enterprise``'s data; 0 for never."""
    until = conn.execute(sa.select(data_access.c.until_at).where(
        data_access.c.enterprise == enterprise.lower(),
        data_access.c.finance == finance.lower())).scalar()
    return int(until or 0)


def decode_token(ctx: PortalContext, token: str) -> str:
    """The account a valid token names; 401 otherwise. A token checked once is remembered
    (its account and expiry; the expiry is still compared with the clock on every use)."""
    if len(token) > 4096:
        raise ApiProblem(401, "Unauthorized", "the token is too long")
    sub, exp = ctx.cache("tokens").get(token, 0, lambda: _verified_claims(ctx, token))
    if exp <= ctx.now_ns() // 1_000_000_000:
        # the expiry is checked against the portal's (injected) clock, not the system's
        raise ApiProblem(401, "Unauthorized", "the token has expired: sign in again")
    return str(sub)


def _verified_claims(ctx: PortalContext, token: str) -> tuple[str, int]:
    """(account, expiry) of a token whose signature, issuer and claims check; 401 otherwise."""
    try:
        claims = jwt.decode(token, ctx.token_secret, algorithms=["HS256"], issuer=ISSUER,
                            options={"require": ["exp", "sub", "iss"], "verify_exp": False})
    except jwt.PyJWTError as e:
        raise ApiProblem(401, "Unauthorized", f"invalid token: {e}") from None
    exp = claims.get("exp")
    if not isinstance(exp, int):
        raise ApiProblem(401, "Unauthorized", "the token has no expiry")
    sub = claims.get("sub")
    if not isinstance(sub, str) or len(sub) != 42 or not sub.startswith("0x"):
        raise ApiProblem(401, "Unauthorized", "the token names no account")
    return sub, exp


#: the browser session's cookie (``_ui.py``): the same token, HttpOnly
SESSION_COOKIE = "mrv_session"


def current_viewer(request: Request,
                   ctx: Annotated[PortalContext, Depends(context_of)]) -> Viewer:
    """FastAPI dependency: the signed-in viewer (401 without a valid bearer token, 403 for an
    account that holds no role the portal serves). A GET may carry the token as the web view's
    session cookie instead (a page's download link, a chart's data); nothing that changes
    state is accepted on a cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header and request.method in ("GET", "HEAD"):
        scheme, token = "bearer", request.cookies.get(SESSION_COOKIE, "")
    if scheme.lower() != "bearer" or not token:
        raise ApiProblem(401, "Unauthorized", "sign in first: Authorization: Bearer <token> "
                         "(POST /v1/auth/challenge, then /v1/auth/token)")
    return viewer_of(request, ctx, decode_token(ctx, token.strip()))


def viewer_of(request: Request, ctx: PortalContext, address: str) -> Viewer:
    """The viewer ``address`` with its roles as of the chain tables' version (kept in
    ``request.state.chain_version``); 403 for an account with no role the portal serves."""
    # autocommit: two reads need no transaction, and no BEGIN/ROLLBACK round trips either
    with ctx.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # the roles as of the chain tables' version (one lookup when unchanged, _cache.py)
        version = chain_version(conn)
        request.state.chain_version = version
        found = ctx.cache("roles").get(address, version, lambda: roles_of(conn, address))
    if not found:
        raise ApiProblem(403, "Forbidden", f"{address} holds no role on the ledger that the "
                         "portal serves (government, auditor, finance, or an active "
                         "enterprise)")
    return Viewer(address, found)
