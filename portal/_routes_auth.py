"""``/v1/auth``: sign in by signing a challenge (EIP-4361), then a bearer token (or a
one-time sign-in link for a browser)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field

from portal import _auth
from portal._api_common import ADDRESS_RE, BEARER, PROBLEMS, DbRoute, Problem
from portal._context import PortalContext, context_of
from portal._viewer import Viewer, current_viewer

#: the largest sign-in request body (a real token request is under 1 kB)
MAX_AUTH_BODY = 8 * 1024


class SmallBodyRoute(DbRoute):
    """A route whose body must declare its length, at most ``MAX_AUTH_BODY`` bytes: refused
    with 413 before it is read (the app-wide limit is sized for ingest batches)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def limited(request: Request) -> Response:
            if request.method == "POST":
                n = request.headers.get("content-length", "")
                if not n.isdigit() or int(n) > MAX_AUTH_BODY:
                    request.app.state.ctx.metrics.inc("portal_auth_refused_total")
                    return JSONResponse(
                        {"type": "about:blank", "title": "Payload Too Large", "status": 413,
                         "detail": f"a sign-in request is at most {MAX_AUTH_BODY:,} bytes, "
                                   "with a Content-Length"},
                        status_code=413, media_type="application/problem+json")
            return await handler(request)

        return limited


router = APIRouter(prefix="/v1/auth", tags=["auth"], route_class=SmallBodyRoute,
                   responses={k: v for k, v in PROBLEMS.items() if k != 503})
_REFUSALS: dict[int | str, dict[str, Any]] = {
    413: {"model": Problem, "description": "a body over 8 KiB or without a Content-Length"},
    429: {"model": Problem, "description": "too many unanswered challenges"}}


class ChallengeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: Annotated[str, Field(pattern=ADDRESS_RE, description="the account signing in")]


class ChallengeOut(BaseModel):
    address: str
    #: the EIP-4361 message to sign, byte for byte (personal_sign / EIP-191)
    message: str
    nonce: str
    issued_at: str
    expires_at: str


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: Annotated[str, Field(max_length=_auth.MAX_MESSAGE_CHARS)]
    signature: Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{130}$",
                                    description="65-byte EIP-191 signature, 0x hex")]


class TokenOut(BaseModel):
    token: str
    token_type: Literal["Bearer"] = "Bearer"
    #: Unix seconds
    expires_at: int
    address: str
    roles: list[str]


class LinkOut(BaseModel):
    #: open it in a browser (once, before ``expires_at``) to be signed in there
    url: str
    #: Unix seconds
    expires_at: int
    address: str
    roles: list[str]


class Me(BaseModel):
    address: str
    roles: list[str]


@router.post("/challenge", response_model=ChallengeOut, status_code=201, responses=_REFUSALS)
def challenge(body: ChallengeIn,
              ctx: Annotated[PortalContext, Depends(context_of)]) -> ChallengeOut:
    s, text = _auth.challenge(ctx, body.address)
    return ChallengeOut(address=s.address, message=text, nonce=s.nonce, issued_at=s.issued_at,
                        expires_at=s.expires_at)


@router.post("/token", response_model=TokenOut, responses=_REFUSALS)
def token(body: TokenIn, ctx: Annotated[PortalContext, Depends(context_of)]) -> TokenOut:
    tok, exp, address, roles = _auth.redeem(ctx, body.message, body.signature)
    return TokenOut(token=tok, expires_at=exp, address=address, roles=sorted(roles))


@router.post("/link", response_model=LinkOut, status_code=201, responses=_REFUSALS)
def link(body: TokenIn, request: Request,
         ctx: Annotated[PortalContext, Depends(context_of)]) -> LinkOut:
    """A one-time sign-in link for a browser, for a signed challenge (``mrvctl login``): the
    browser that opens it is signed in as the signer. The link works once, for
    ``ui.link_ttl_s`` seconds."""
    address, roles = _auth.check_signed(ctx, body.message, body.signature)
    code, exp = _auth.new_link(ctx, address)
    base = str(request.base_url).rstrip("/")
    return LinkOut(url=f"{base}/ui/login/{code}", expires_at=exp, address=address,
                   roles=sorted(roles))


@router.get("/me", response_model=Me)
def me(viewer: Annotated[Viewer, Depends(current_viewer)],
       _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> Me:
    return Me(address=viewer.address, roles=sorted(viewer.roles))
