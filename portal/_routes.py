"""The API's routers, one module per area; ``create_app`` includes each of them."""

from __future__ import annotations

from fastapi import APIRouter


def routers() -> list[APIRouter]:
    from portal import (
        _routes_auth,
        _routes_data,
        _routes_health,
        _routes_ingest,
        _routes_records,
        _routes_scores,
    )

    return [_routes_health.router, _routes_ingest.router, _routes_auth.router,
            _routes_data.router, _routes_records.router, _routes_scores.router]
