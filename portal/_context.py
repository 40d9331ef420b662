"""What every part of the portal is given: its config, the database engine, the clock, the
metrics registry. Built once by ``_app.create_app`` (or a test) and passed down; nothing reads
a global."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from fastapi import Request

from mrv_core import Metrics
from portal._cache import VersionedCache
from portal._config import PortalConfig


@dataclass
class PortalContext:
    config: PortalConfig
    engine: sa.Engine
    #: the clock: integer ns since the Unix epoch (tests give their own)
    now_ns: Callable[[], int] = time.time_ns
    metrics: Metrics = field(default_factory=Metrics)
    #: the address book's contents (contracts by name, chain id), read at start
    contracts: dict[str, str] = field(default_factory=dict)
    chain_id: int = 0
    #: the HMAC key of sign-in tokens (``_runtime.ensure_secret``; tests give their own)
    token_secret: bytes = b""
    #: answers kept per chain version (``_cache.py``), by name
    caches: dict[str, VersionedCache[Any, Any]] = field(default_factory=dict)

    def cache(self, name: str) -> VersionedCache[Any, Any]:
        found = self.caches.get(name)
        if found is None:
            found = self.caches.setdefault(name, VersionedCache())
        return found


async def context_of(request: Request) -> PortalContext:
    """The portal context of a request (a FastAPI dependency; ``async``: FastAPI runs a sync
    dependency in its thread pool, a hop that costs more than this attribute lookup)."""
    ctx: PortalContext = request.app.state.ctx
    return ctx
