"""The FastAPI application: routers of every area, the request-size limit (checked before a
body is parsed), errors as RFC 9457 problem details (as a page under ``/ui``), the web view,
and the background workers (indexer, ingest verifier) started and stopped with the app."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portal._context import PortalContext
from portal._errors import ApiProblem, DatabaseUnavailable

log = logging.getLogger("mrv.portal")

PROBLEM = "application/problem+json"

#: a background worker: runs until ``stop`` is set (a thread of its own)
Worker = Callable[[PortalContext, threading.Event], None]


def problem(status: int, title: str, detail: str, type_: str = "about:blank",
            **extra: Any) -> JSONResponse:
    body = {"type": type_, "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


class BodyLimit:
    """Refuses a request body larger than ``limit`` bytes with 413 before anything reads it:
    by its Content-Length when given, else by counting the chunks as they arrive."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    n = int(v)
                except ValueError:
                    n = -1
                if n < 0 or n > self.limit:
                    await self._refuse(scope, receive, send)
                    return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return msg

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        resp = problem(413, "Payload Too Large",
                       f"the request body is larger than {self.limit:,} bytes")
        await resp(scope, receive, send)


class _TooLarge(Exception):
    pass


def create_app(ctx: PortalContext, *, workers: list[Worker] | None = None) -> FastAPI:
    """The portal's app over ``ctx``. ``workers`` run in threads from startup to shutdown."""
    from portal import _routes, _ui, _ui_app

    stop = threading.Event()
    threads: list[threading.Thread] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop.clear()
        for w in workers or []:
            t = threading.Thread(target=w, args=(ctx, stop), name=getattr(w, "__name__", "w"),
                                 daemon=True)
            t.start()
            threads.append(t)
        try:
            yield
        finally:
            stop.set()
            for t in threads:
                t.join(30)
            threads.clear()

    app = FastAPI(
        title="MRV portal",
        version="1",
        summary="The off-chain half of the carbon MRV platform: verified readings, the ledger "
                "as tables, accounts, rankings and the green index.",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    for router in _routes.routers():
        app.include_router(router)

    @app.exception_handler(ApiProblem)
    async def _problem(req: Request, e: ApiProblem) -> Response:
        if _ui.is_ui(req):
            return _ui.problem_page(req, e)
        return problem(e.status, e.title, e.detail, e.type, **e.extra)

    @app.exception_handler(DatabaseUnavailable)
    async def _db_down(_req: Request, e: DatabaseUnavailable) -> JSONResponse:
        return problem(503, "Service Unavailable", f"the database does not answer: {e}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, e: StarletteHTTPException) -> Response:
        if _ui.is_ui(req):
            return _ui.problem_page(req, ApiProblem(e.status_code, _reason(e.status_code),
                                                    str(e.detail)))
        return problem(e.status_code, _reason(e.status_code), str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, e: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(err.get("loc", ())), "msg": str(err.get("msg", ""))}
                  for err in e.errors()[:20]]
        return problem(422, "Unprocessable Content", "the request does not match the API",
                       errors=errors)

    _ui_app.install(app, ctx)
    app.add_middleware(BodyLimit, limit=ctx.config.api.max_body_bytes)
    return app


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
