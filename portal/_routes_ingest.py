"""``POST /v1/ingest/batches``: a gateway delivers one built batch (``mrv-batch/v1``,
docs/portal.md "Ingest"). The body is limited by the app before it is read; parsing, the checks
and the database work run in the thread pool."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from portal._context import PortalContext, context_of
from portal._ingest_store import ingest

router = APIRouter(tags=["ingest"])

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


@router.post(
    "/v1/ingest/batches",
    status_code=201,
    summary="Deliver one built batch (mrv-batch/v1)",
    responses={200: {"description": "already stored: exactly this batch (a replay)"},
               201: {"description": "stored: verified against its anchor, or unanchored "
                                    "(signature good, waiting for the anchor)"},
               404: {"description": "unknown gateway", **_PROBLEM},
               409: {"description": "another header for this (gateway, seq), or the ledger "
                                    "anchors another: quarantined", **_PROBLEM},
               413: {"description": "the body is too large", **_PROBLEM},
               422: {"description": "refused (malformed, bad signature, records that are "
                                    "not the header's...): quarantined when the gateway is "
                                    "known", **_PROBLEM},
               503: {"description": "the database does not answer: send it again later",
                     **_PROBLEM}},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "object", "description": "mrv-batch/v1 (docs/portal.md)"}}}}},
)
async def post_batch(request: Request,
                     ctx: Annotated[PortalContext, Depends(context_of)]) -> JSONResponse:
    body = await request.body()
    answer = await run_in_threadpool(ingest, ctx, body)
    return JSONResponse(answer.body, status_code=answer.status)
