"""The API's routers, one module per area; ``create_app`` includes each of them."""

from __future__ import annotations

from fastapi import APIRouter


def routers() -> list[APIRouter]:
    from portal import _routes_health, _routes_ingest

    return [_routes_health.router, _routes_ingest.router]
