"""Every table of the portal, registered on ``_meta.metadata`` by importing the modules that
declare them. Each area owns its tables: the indexer's chain tables, the ingest tables, the
API's own (sign-in nonces, the access log), the web view's (sign-in links, live telemetry)."""

from __future__ import annotations

from portal import _api_tables, _chain_tables, _event_tables, _ingest_tables, _ui_tables

__all__ = ["_api_tables", "_chain_tables", "_event_tables", "_ingest_tables", "_ui_tables"]
