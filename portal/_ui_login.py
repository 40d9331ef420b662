"""Signing a browser in. A browser cannot read a role's key file, so there are two ways:

- ``mrvctl login --portal URL --key FILE`` signs the portal's EIP-4361 challenge with the key
  and prints a one-time link (``POST /v1/auth/link``); the browser that opens it and confirms is
  signed in (``/ui/login/{code}``).
- A browser with an injected wallet (EIP-1193, ``window.ethereum``) signs the challenge itself
  (``static/login.js``) and posts it to ``/ui/session``.

Either way the browser gets the portal's token in an HttpOnly, SameSite=Lax cookie that
JavaScript cannot read. Every POST here must come from the portal's own pages (its Origin)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from portal import _auth, _i18n
from portal._context import PortalContext, context_of
from portal._errors import ApiProblem
from portal._ui import render, session_address
from portal._viewer import SESSION_COOKIE, issue_token

router = APIRouter(prefix="/ui")

_i18n.register({
    "login.title": ("Sign in", "登录"),
    "login.intro": ("The portal knows you by your account on the ledger. Your roles there "
                    "decide what you see.",
                    "平台以您在账本上的账户识别身份，账本上的角色决定您可查看的内容。"),
    "login.cli.title": ("With your key file", "使用密钥文件"),
    "login.cli.help": ("Run this where your key is kept, then open the link it prints here "
                       "(it works once, for a few minutes):",
                       "在保存密钥的计算机上运行以下命令，然后在此浏览器中打开它输出的链接（仅可使用一次，数分钟内有效）："),
    "login.wallet.title": ("With a browser wallet", "使用浏览器钱包"),
    "login.wallet.button": ("Sign in with my wallet", "用钱包登录"),
    "login.wallet.none": ("No wallet was found in this browser.", "此浏览器中未找到钱包。"),
    "login.wallet.failed": ("Sign-in failed: {reason}", "登录失败：{reason}"),
    "login.link.title": ("Sign in with this link", "通过此链接登录"),
    "login.link.as": ("This link signs this browser in as", "此链接将以下列账户登录本浏览器"),
    "login.link.continue": ("Continue", "继续"),
    "login.link.bad": ("This link cannot sign you in", "此链接无法登录"),
    "login.signed_out": ("You are signed out.", "您已退出登录。"),
})


def _same_origin(request: Request) -> None:
    """Refuse a POST whose Origin is not this portal (a form posted from another site)."""
    origin = request.headers.get("origin")
    if origin is None:
        raise ApiProblem(403, "Forbidden", "a browser request without an Origin")
    o = urlsplit(origin)
    if (o.scheme, o.netloc) != (request.url.scheme, request.url.netloc):
        raise ApiProblem(403, "Forbidden", f"a request from another site ({origin[:200]})")


def _signed_in(request: Request, ctx: PortalContext, address: str, to: str) -> Response:
    token, _exp = issue_token(ctx, address, ttl_s=ctx.config.ui.session_ttl_s)
    resp: Response = RedirectResponse(to, status_code=303)
    resp.set_cookie(SESSION_COOKIE, token, max_age=ctx.config.ui.session_ttl_s, httponly=True,
                    samesite="lax", secure=request.url.scheme == "https", path="/")
    return resp


def _safe_next(next_path: str | None) -> str:
    """Only a path on this portal (no ``//host``, no scheme) is followed after sign-in."""
    if (next_path and next_path.startswith("/ui") and not next_path.startswith("//")
            and "\\" not in next_path and len(next_path) <= 2000):
        return next_path
    return "/ui/"


@router.get("/login")
def login_page(request: Request, ctx: Annotated[PortalContext, Depends(context_of)],
               next: str | None = None) -> Response:
    base = str(request.base_url).rstrip("/")
    return render(request, "login.html", title="login.title", next_path=_safe_next(next),
                  portal_url=base, signed_in_as=session_address(request, ctx))


CodeP = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{32,64}$")]


@router.get("/login/{code}")
def link_page(code: CodeP, request: Request,
              ctx: Annotated[PortalContext, Depends(context_of)]) -> Response:
    """What a one-time link opens: whom it signs in, and a button (opening the link alone,
    as a link preview does, uses nothing up)."""
    try:
        address = _auth.peek_link(ctx, code)
    except ValueError as e:
        return render(request, "login_link.html", status=410, title="login.link.bad",
                      address=None, reason=str(e), code=code)
    return render(request, "login_link.html", title="login.link.title", address=address,
                  reason=None, code=code)


@router.post("/login/{code}")
def use_link(code: CodeP, request: Request,
             ctx: Annotated[PortalContext, Depends(context_of)]) -> Response:
    _same_origin(request)
    try:
        address = _auth.use_link(ctx, code)
    except ValueError as e:
        return render(request, "login_link.html", status=410, title="login.link.bad",
                      address=None, reason=str(e), code=code)
    return _signed_in(request, ctx, address, "/ui/")


class SessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: Annotated[str, Field(max_length=_auth.MAX_MESSAGE_CHARS)]
    signature: Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{130}$")]
    next: Annotated[str | None, Field(max_length=2000)] = None


@router.post("/session")
def wallet_session(body: SessionIn, request: Request,
                   ctx: Annotated[PortalContext, Depends(context_of)]) -> Response:
    """A challenge signed by a browser wallet (``static/login.js``): the session cookie, and
    where to go next."""
    _same_origin(request)
    try:
        address, _roles = _auth.check_signed(ctx, body.message, body.signature)
    except ApiProblem as e:
        return JSONResponse({"detail": e.detail}, status_code=e.status)
    to = _safe_next(body.next)
    redirect = _signed_in(request, ctx, address, to)
    resp = JSONResponse({"next": to})
    resp.headers.append("set-cookie", redirect.headers["set-cookie"])
    return resp


@router.post("/logout")
def logout(request: Request) -> Response:
    _same_origin(request)
    resp = RedirectResponse("/ui/login?signed_out=1", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax",
                       secure=request.url.scheme == "https")
    return resp
