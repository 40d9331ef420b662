"""The web view's wiring: each area's router, the static files, the sign-in redirect and the
security headers, added to the portal's app by ``create_app`` (when ``ui.enabled``)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from portal import (
    _ui_enterprises,
    _ui_login,
    _ui_market,
    _ui_overview,
    _ui_records,
    _ui_telemetry,
)
from portal._context import PortalContext
from portal._ui import STATIC, SecurityHeaders, SignInRequired, StreamSlots, sign_in_redirect


def routers() -> list[APIRouter]:
    return [_ui_login.router, _ui_overview.router, _ui_enterprises.router, _ui_records.router,
            _ui_market.router, _ui_telemetry.router]


def install(app: FastAPI, ctx: PortalContext) -> None:
    """Add the web view to the portal's app (when ``ui.enabled``)."""
    if not ctx.config.ui.enabled:
        return
    app.state.ui_streams = StreamSlots(ctx.config.ui.max_streams)
    app.mount("/ui/static", StaticFiles(directory=str(STATIC)), name="ui-static")
    for r in routers():
        app.include_router(r, include_in_schema=False)

    @app.get("/", include_in_schema=False)
    async def _root() -> Response:
        return RedirectResponse("/ui/", status_code=303)

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, e: SignInRequired) -> Response:
        return sign_in_redirect(request, e)

    app.add_middleware(SecurityHeaders)
