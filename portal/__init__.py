"""The off-chain platform: a data hub for regulators, auditors, enterprises and banks.

Gateways deliver their batches here; the portal verifies each against the chain, indexes the
ledger's events into SQL tables, and serves the API (docs/portal.md). It imports the bottom
layer, the gateway's formats (``ledger_client``) and the config loader; nothing imports it but
the simulator's demo and the benchmarks."""

from portal._app import create_app
from portal._config import PortalConfig, load_portal_config
from portal._context import PortalContext
from portal._db import migrate, open_engine
from portal._indexer import Indexer
from portal._ingest_store import ingest
from portal._runtime import build_context
from portal._viewer import issue_token

__all__ = [
    "Indexer",
    "PortalConfig",
    "PortalContext",
    "build_context",
    "create_app",
    "ingest",
    "issue_token",
    "load_portal_config",
    "migrate",
    "open_engine",
]
