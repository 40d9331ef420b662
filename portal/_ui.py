"""The web view (``/ui``): server-rendered pages (Jinja2) over the same data, the same route
functions and the same access rule as the API, with a little JavaScript for live updates and
charts. Everything a page needs is served by the portal (``/ui/static``); nothing is fetched from
elsewhere, and the Content-Security-Policy says so to the browser.

A browser signs in once (``_ui_login.py``) and holds the portal's token in an HttpOnly cookie;
who it is and what it may see are decided exactly as for a bearer token (``_viewer.py``). Each
area's pages are a module of their own (``_ui_<area>.py``) with a router and messages; this
module has what they share: rendering, the viewer, the language, the event stream."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import sqlalchemy as sa
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portal import _i18n
from portal._api_common import Access
from portal._cache import chain_version
from portal._context import PortalContext, context_of
from portal._errors import ApiProblem
from portal._viewer import SESSION_COOKIE, Viewer, decode_token, viewer_of

log = logging.getLogger("mrv.portal.ui")

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
LANG_COOKIE = "mrv_lang"

#: the browser may load and connect to this portal only (no inline script, no other origin)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")

_i18n.register({
    "app.name": ("MRV portal", "碳排放监测核查平台"),
    "app.skip": ("Skip to content", "跳到正文"),
    "nav.label": ("Main", "主导航"),
    "nav.overview": ("Overview", "总览"),
    "nav.enterprises": ("Enterprises", "企业"),
    "nav.rankings": ("Rankings", "排名"),
    "nav.market": ("Market", "交易市场"),
    "nav.verification": ("Verification", "核查"),
    "nav.telemetry": ("Live telemetry", "实时遥测"),
    "nav.mine": ("My enterprise", "本企业"),
    "lang.label": ("Language", "语言"),
    "lang.en": ("English", "English"),
    "lang.zh": ("中文", "中文"),
    "who.signed_in_as": ("Signed in as", "当前账户"),
    "who.roles": ("Roles", "角色"),
    "who.sign_out": ("Sign out", "退出"),
    "role.admin": ("regulator (admin)", "主管部门（管理员）"),
    "role.government": ("government", "政府"),
    "role.auditor": ("auditor", "核查机构"),
    "role.enterprise": ("enterprise", "企业"),
    "role.finance": ("bank", "金融机构"),
    "foot.chain": ("Ledger indexed to block {block}", "账本已索引至区块 {block}"),
    "foot.not_indexed": ("The ledger is not indexed yet", "账本尚未索引"),
    "foot.times": ("Times in {tz}", "时间为 {tz}"),
    "error.title": ("Error {status}", "错误 {status}"),
    "error.page": ("Error", "错误"),
    "error.403": ("You may not see this page.", "您无权查看此页面。"),
    "error.404": ("There is nothing here.", "此处没有内容。"),
    "error.back": ("Back to the start", "返回首页"),
    "live.connected": ("Live: updates as batches are verified", "实时：批次核验后自动更新"),
    "live.offline": ("Live updates paused: reconnecting…", "实时更新已暂停，正在重连…"),
    "empty": ("None", "无"),
})


@functools.cache
def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                      autoescape=select_autoescape(["html"]), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "ensure_ascii": False}
    return env


class SignInRequired(Exception):
    """A page needs a signed-in viewer: the browser is sent to the sign-in page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def session_address(request: Request, ctx: PortalContext) -> str | None:
    """The account of the request's session cookie; None without a valid one."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        return decode_token(ctx, token)
    except ApiProblem:
        return None


def _here(request: Request) -> str:
    path = request.url.path
    return path + (f"?{request.url.query}" if request.url.query else "")


def ui_viewer(request: Request, ctx: Annotated[PortalContext, Depends(context_of)]) -> Viewer:
    """FastAPI dependency of a page: the signed-in viewer, or off to the sign-in page. An
    account the ledger gives no role gets 403 (``viewer_of``)."""
    address = session_address(request, ctx)
    if address is None:
        raise SignInRequired(_here(request))
    return viewer_of(request, ctx, address)


def ui_access(request: Request, ctx: Annotated[PortalContext, Depends(context_of)],
              viewer: Annotated[Viewer, Depends(ui_viewer)]) -> Access:
    """The page's ``Access``: the API's access rule and log, for the session's viewer."""
    return Access(ctx, viewer, _here(request), getattr(request.state, "chain_version", None))


def lang_of(request: Request, ctx: PortalContext) -> str:
    return _i18n.pick_lang(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE),
                           request.headers.get("accept-language"), ctx.config.ui.default_lang)


def nav_for(viewer: Viewer | None) -> list[tuple[str, str]]:
    """The navigation entries a viewer has: (message key, path)."""
    if viewer is None:
        return []
    out: list[tuple[str, str]] = []
    if viewer.sees_all:
        out.append(("nav.overview", "/ui/"))
    if viewer.is_enterprise:
        out.append(("nav.mine", f"/ui/enterprises/{viewer.address}"))
    out.append(("nav.enterprises", "/ui/enterprises"))
    out += [("nav.rankings", "/ui/rankings"), ("nav.market", "/ui/market"),
            ("nav.verification", "/ui/verification")]
    if viewer.sees_all:
        out.append(("nav.telemetry", "/ui/telemetry"))
    return out


def render(request: Request, template: str, *, viewer: Viewer | None = None,
           status: int = 200, title: str = "", **data: Any) -> HTMLResponse:
    """A page: ``template`` with the shared context (language, formatting, viewer, navigation,
    the indexer's checkpoint) and ``data``."""
    ctx: PortalContext = request.app.state.ctx
    lang = lang_of(request, ctx)
    version = getattr(request.state, "chain_version", None)
    if version is None:
        with ctx.engine.connect() as c:
            version = chain_version(c)
    page = environment().get_template(template).render(
        request=request, lang=lang, t=functools.partial(_i18n.gettext, lang),
        fmt=_i18n.Fmt(lang, ctx.config.ui.timezone), viewer=viewer, nav=nav_for(viewer),
        path=request.url.path, here=_here(request), title=title, chain_block=version[0],
        tz=ctx.config.ui.timezone, **data)
    resp = HTMLResponse(page, status_code=status)
    if request.query_params.get("lang") in _i18n.LANGS:
        resp.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="lax",
                        secure=request.url.scheme == "https")
    return resp


def problem_page(request: Request, e: ApiProblem) -> HTMLResponse:
    """An ``ApiProblem`` raised under ``/ui``, as a page in the viewer's language (with the
    viewer's navigation when signed in)."""
    ctx: PortalContext = request.app.state.ctx
    viewer = None
    address = session_address(request, ctx)
    if address is not None:
        try:
            viewer = viewer_of(request, ctx, address)
        except ApiProblem:
            viewer = None
    return render(request, "error.html", viewer=viewer, status=e.status, title="error.page",
                  problem=e)


def sign_in_redirect(request: Request, e: SignInRequired) -> RedirectResponse:
    return RedirectResponse(f"/ui/login?next={quote(e.next_path, safe='')}", status_code=303)


class SecurityHeaders:
    """The web view's response headers: the CSP, no sniffing, no referrer to other sites (a
    sign-in link's code stays out of their logs), no framing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/ui"):
            await self.app(scope, receive, send)
            return

        async def with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                headers = list(msg.get("headers", []))
                headers += [(b"content-security-policy", CSP.encode()),
                            (b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"same-origin"),
                            (b"x-frame-options", b"DENY")]
                msg["headers"] = headers
            await send(msg)

        await self.app(scope, receive, with_headers)


# -- live pages: Server-Sent Events -------------------------------------------------------------

class StreamSlots:
    """The live pages open at once in this process (``ui.max_streams``)."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.open = 0


def event_stream(request: Request, ctx: PortalContext, poll: Callable[[], Any], *,
                 event: str = "update", heartbeat_s: float = 15.0) -> StreamingResponse:
    """A ``text/event-stream`` that sends ``poll()`` (JSON) as ``event`` at once and then each
    time its value changes; ``poll`` runs in a thread every ``ui.live_poll_s`` seconds. A
    comment line every ``heartbeat_s`` keeps proxies from closing a quiet stream; the stream
    ends when the browser goes away. Past ``ui.max_streams`` open streams: 503."""
    slots: StreamSlots = request.app.state.ui_streams
    if slots.open >= slots.most:
        raise ApiProblem(503, "Service Unavailable",
                         f"{slots.most} live pages are open already: try again later")
    slots.open += 1
    every = ctx.config.ui.live_poll_s

    async def stream() -> AsyncIterator[bytes]:
        last: object = object()
        quiet_since = time.monotonic()
        try:
            yield b"retry: 2000\n\n"
            while True:
                try:
                    value = await asyncio.to_thread(poll)
                except (sa.exc.OperationalError, sa.exc.InterfaceError):
                    value = last  # the database is away: say nothing new, keep the stream
                if value != last:
                    last = value
                    data = json.dumps(value, separators=(",", ":"), sort_keys=True)
                    yield f"event: {event}\ndata: {data}\n\n".encode()
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since > heartbeat_s:
                    yield b": keep-alive\n\n"
                    quiet_since = time.monotonic()
                if await request.is_disconnected():
                    return
                await asyncio.sleep(every)
        finally:
            slots.open -= 1

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def is_ui(request: Request) -> bool:
    return request.url.path.startswith("/ui/") or request.url.path == "/ui"
