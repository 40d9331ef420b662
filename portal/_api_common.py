"""What every data route shares: the access check with its log (``Access``), pagination, the
query parameters' limits, and the page envelopes of the OpenAPI schema."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Hashable
from typing import Annotated, Any, Generic, TypeVar

import sqlalchemy as sa
from fastapi import Depends, Query, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from portal._access import Decision, Resource, decide, visible
from portal._api_tables import access_log
from portal._chain_tables import data_access
from portal._context import PortalContext, context_of
from portal._errors import ApiProblem, DatabaseUnavailable
from portal._viewer import Viewer, current_viewer

T = TypeVar("T")

ADDRESS_RE = r"^0x[0-9a-fA-F]{40}$"
GATEWAY_ID_RE = r"^[\x21-\x7e]{1,128}$"
MAX_OFFSET = 10_000_000
DEFAULT_PAGE = 100
I64 = 2**63 - 1

AddressQ = Annotated[str | None, Query(pattern=ADDRESS_RE, description="an account (0x + 40 hex)")]
GatewayQ = Annotated[str | None, Query(pattern=GATEWAY_ID_RE, max_length=128)]
PeriodQ = Annotated[int | None, Query(ge=0, le=2**32 - 1)]
#: free text in a query: no control characters (PostgreSQL text holds no NUL)
CodeQ = Annotated[str | None, Query(pattern=r"^[^\x00-\x1f\x7f]{1,64}$")]
TextQ = Annotated[str | None, Query(pattern=r"^[^\x00-\x1f\x7f]{1,256}$")]
TimeQ = Annotated[int | None, Query(ge=-I64, le=I64, description="ns since the Unix epoch")]


class DbRoute(APIRoute):
    """A route whose database errors of connection (the server down, unreachable, restarting)
    answer 503 problem details (``DatabaseUnavailable``) instead of 500."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except (sa.exc.OperationalError, sa.exc.InterfaceError) as e:
                request.app.state.ctx.metrics.inc("portal_api_database_errors_total")
                raise DatabaseUnavailable(str(e.orig or e).strip().splitlines()[0][:300]) from None

        return guarded


class Problem(BaseModel):
    """RFC 9457 problem details (``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: str


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description,
            "content": {"application/problem+json": {}}}


#: the errors every data route may answer, for the OpenAPI schema
PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: _problem("no valid bearer token"),
    403: _problem("refused, with the reason"),
    422: _problem("parameters not as the schema says"),
    503: _problem("the database does not answer"),
}

#: declares the bearer token in the OpenAPI schema (``current_viewer`` checks it)
BEARER = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description="a token from POST /v1/auth/token")


class Page(BaseModel, Generic[T]):
    items: list[T]
    limit: int
    offset: int
    #: the offset of the next page; null on the last page
    next_offset: int | None


class Paging:
    def __init__(self, limit: int, offset: int) -> None:
        self.limit = limit
        self.offset = offset

    def apply(self, q: sa.Select[tuple[object, ...]]) -> sa.Select[tuple[object, ...]]:
        return q.limit(self.limit + 1).offset(self.offset)

    def page(self, items: list[T]) -> Page[T]:
        more = len(items) > self.limit
        return Page[T](items=items[:self.limit], limit=self.limit, offset=self.offset,
                       next_offset=self.offset + self.limit if more else None)


async def paging(ctx: Annotated[PortalContext, Depends(context_of)],
           limit: Annotated[int | None, Query(
               ge=1, le=100_000,
               description="rows a page holds (at most api.max_page; default 100 or less)")]
           = None,
           offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> Paging:
    most = ctx.config.api.max_page
    if limit is None:
        limit = min(DEFAULT_PAGE, most)
    if limit > most:
        raise ApiProblem(422, "Unprocessable Content",
                         f"limit {limit} is more than a page may hold ({most})")
    return Paging(limit, offset)


class Access:
    """The viewer of one request, the grants it holds, the clock, and the access log."""

    def __init__(self, ctx: PortalContext, viewer: Viewer, path: str,
                 version: tuple[int, str] | None = None) -> None:
        self.ctx = ctx
        self.viewer = viewer
        self.path = path[:2000]
        self.now_s = ctx.now_ns() // 1_000_000_000
        #: the chain tables' version this request reads at (``_cache.py``); None: not cached
        self.version = version
        self.grants: dict[str, int] = {}
        if viewer.is_finance:
            def load() -> dict[str, int]:
                with ctx.engine.connect() as c:
                    return {e: int(u) for e, u in c.execute(
                        sa.select(data_access.c.enterprise, data_access.c.until_at)
                        .where(data_access.c.finance == viewer.address))}

            self.grants = (load() if version is None else
                           ctx.cache("grants").get(viewer.address, version, load))

    def cached(self, name: str, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()`` kept per chain version under ``name``/``key`` (``_cache.py``)."""
        if self.version is None:
            return compute()
        result: T = self.ctx.cache(name).get(key, self.version, compute)
        return result

    def decide(self, resource: Resource) -> Decision:
        return decide(self.viewer, resource, self.grants, self.now_s)

    @property
    def role(self) -> str:
        return ",".join(sorted(self.viewer.roles))[:32]

    def log(self, enterprise: str | None, status: int, reason: str) -> None:
        """One row of the access log (finance's every access; everybody's refusals)."""
        with self.ctx.engine.begin() as c:
            c.execute(sa.insert(access_log).values(
                at_ns=self.ctx.now_ns(), viewer=self.viewer.address, role=self.role,
                enterprise=enterprise, path=self.path, status=status, reason=reason[:1000]))

    def require(self, resource: Resource, enterprise: str | None = None) -> Decision:
        """Allowed, or a 403 naming the reason; finance's accesses and every refusal logged."""
        d = self.decide(resource)
        if enterprise is None and len(resource.owners) == 1:
            enterprise = resource.owners[0]
        if not d.allowed:
            self.ctx.metrics.inc("portal_api_denied_total")
            self.log(enterprise, 403, d.reason)
            raise ApiProblem(403, "Forbidden", d.reason, type_="/problems/access-denied")
        if self.viewer.is_finance and not self.viewer.sees_all:
            self.log(enterprise, 200, d.reason)
        return d

    def scope(self, column: sa.ColumnElement[str], enterprise: str | None,
              *also: sa.ColumnElement[str]) -> sa.ColumnElement[bool] | None:
        """The WHERE clause that keeps a list to the enterprises the viewer may see: ``None``
        (no restriction) for government and auditors; a 403 when ``enterprise`` (a filter) names
        one it may not see. ``also``: more owner columns (a trade's buyer) any of which may
        match."""
        if enterprise is not None:
            self.require(Resource.of(enterprise))
            return None
        if self.viewer.sees_all:
            return None
        own = self.visible_enterprises()
        if self.viewer.is_finance:
            self.log(None, 200, "rows of the enterprises that granted access: "
                     + (", ".join(own) or "none"))
        conds = [c.in_(own) for c in (column, *also)]
        return sa.or_(*conds) if conds else sa.false()

    def visible_enterprises(self) -> list[str]:
        owners = set(self.grants)
        if self.viewer.is_enterprise:
            owners.add(self.viewer.address)
        return sorted(visible(self.viewer, owners, self.grants, self.now_s))


def access(request: Request, ctx: Annotated[PortalContext, Depends(context_of)],
           _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
           viewer: Annotated[Viewer, Depends(current_viewer)]) -> Access:
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return Access(ctx, viewer, path, getattr(request.state, "chain_version", None))


def lower(v: str | None) -> str | None:
    return None if v is None else v.lower()
