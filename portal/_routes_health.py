"""``GET /v1/health``: is the portal up, can it reach its database."""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends

from portal._context import PortalContext, context_of

router = APIRouter(tags=["health"])


@router.get("/v1/health")
def health(ctx: Annotated[PortalContext, Depends(context_of)]) -> dict[str, object]:
    with ctx.engine.connect() as c:
        c.execute(sa.text("SELECT 1"))
    return {"status": "ok", "database": ctx.engine.dialect.name}
