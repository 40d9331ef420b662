"""``portal.yaml``: the portal's configuration, validated as strictly as the gateway's
(``config.load_yaml_model``: size and depth limits before parsing, errors with YAML path and
line). Relative paths are resolved against the file's folder."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from config import load_yaml_model
from mrv_core import StrictModel

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
MiB = 1024 * 1024


class DatabaseSection(StrictModel):
    #: SQLAlchemy URL: ``sqlite:///portal.db`` (a path relative to portal.yaml's folder) or
    #: ``postgresql+psycopg://user@host:5432/dbname``
    url: str = "sqlite:///portal.db"
    pool_size: Annotated[int, Field(ge=1, le=200)] = 10
    #: seconds a connection attempt may take before the request gets 503
    connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0


class ChainSection(StrictModel):
    rpc_url: str = "http://127.0.0.1:8545"
    #: the address book ``mrvctl deploy`` writes (contracts and chain id)
    address_book: Path
    #: blocks a log must be buried under before it is indexed (0: index the head)
    confirmations: Annotated[int, Field(ge=0, le=10_000)] = 2
    #: the widest block range of one eth_getLogs call
    step_blocks: Annotated[int, Field(ge=1, le=100_000)] = 2_000
    #: the first block to index (the deployment's block; 0 when unknown)
    start_block: Annotated[int, Field(ge=0)] = 0
    #: seconds between two indexer steps when it has caught up
    poll_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0


class TlsSection(StrictModel):
    cert: Path
    key: Path


class ApiSection(StrictModel):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8600
    #: HTTPS: the certificate chain and key (PEM); plain HTTP when absent
    tls: TlsSection | None = None
    #: the largest request body read (ingest batches are the largest requests)
    max_body_bytes: Annotated[int, Field(ge=1024, le=256 * MiB)] = 32 * MiB
    #: API worker processes (uvicorn); the indexer and the ingest verifier run once, in the
    #: main process, whatever this number
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    #: rows a page may hold (``limit``)
    max_page: Annotated[int, Field(ge=1, le=100_000)] = 1_000


class AuthSection(StrictModel):
    #: the HMAC key of the portal's tokens: a file holding at least 32 random bytes, created
    #: (mode 0600) by ``mrv-portal run`` when absent
    secret_file: Path = Path("portal-secret")
    token_ttl_s: Annotated[int, Field(ge=30, le=86_400)] = 900
    #: how long a sign-in challenge may wait for its signature
    challenge_ttl_s: Annotated[int, Field(ge=10, le=3_600)] = 300
    #: the ``domain`` and ``uri`` of the sign-in message (EIP-4361)
    domain: str = "localhost"
    uri: str = "https://localhost/"


class TelemetrySection(StrictModel):
    """Live telemetry for the web view: the portal subscribes to the gateways' telemetry
    topics (``<topic_prefix>/+/telemetry``, docs/control.md) and checks each reading's record
    signature with the gateway's key as registered on the ledger."""

    #: the MQTT broker, ``host:port``
    broker: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-\[\]:]{1,253}:[0-9]{1,5}$")]
    topic_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-/]{1,64}$")] = "mrv"
    #: the CA file of a TLS broker (``None``: plain MQTT)
    ca_file: Path | None = None
    username: str | None = None
    password: str | None = None
    #: readings kept per gateway for the live page (older ones are deleted)
    keep_per_gateway: Annotated[int, Field(ge=10, le=100_000)] = 600
    #: the largest telemetry message read (larger ones are refused unparsed and counted)
    max_message_bytes: Annotated[int, Field(ge=1024, le=8 * MiB)] = 1 * MiB


class UiSection(StrictModel):
    """The web view (``/ui``): server-rendered pages over the same data and access rules as
    the API."""

    enabled: bool = True
    #: how long a browser session lasts (the roles are still read from the ledger on every
    #: request; signing out ends it at once)
    session_ttl_s: Annotated[int, Field(ge=60, le=7 * 86_400)] = 8 * 3600
    #: how long a one-time sign-in link (``mrvctl login``) may wait to be opened
    link_ttl_s: Annotated[int, Field(ge=10, le=3_600)] = 300
    #: seconds between two looks for news by a live page's event stream
    live_poll_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    #: live pages (event streams) open at once, per process; more get 503
    max_streams: Annotated[int, Field(ge=1, le=10_000)] = 200
    #: the time zone dates are shown in (IANA name)
    timezone: Annotated[str, Field(pattern=r"^[A-Za-z0-9_+\-/]{1,64}$")] = "Asia/Shanghai"
    #: the language when the browser asks for neither ``zh`` nor ``en``
    default_lang: Literal["en", "zh"] = "en"
    #: a gateway that delivered no batch and sent no telemetry for this long is "silent" on
    #: the overview (about 3 × its batch interval)
    silent_after_s: Annotated[int, Field(ge=10, le=30 * 86_400)] = 900
    telemetry: TelemetrySection | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name: Asia/Shanghai, UTC)") \
                from None
        return v


class OutputFigure(StrictModel):
    """An enterprise's output in a period (MWh, t clinker, ...), for emissions intensity where
    the chain holds none (``Allocated.output`` of a benchmark allocation is used first)."""

    enterprise: str
    period: Annotated[int, Field(ge=1, le=2**32 - 1)]
    output: Annotated[float, Field(gt=0)]
    unit: str = ""

    @field_validator("enterprise")
    @classmethod
    def _address(cls, v: str) -> str:
        if not _ADDRESS.match(v):
            raise ValueError("expected a 0x-prefixed 20-byte hex address")
        return v.lower()


class PortalConfig(StrictModel):
    database: DatabaseSection = DatabaseSection()
    chain: ChainSection
    api: ApiSection = ApiSection()
    auth: AuthSection = AuthSection()
    ui: UiSection = UiSection()
    outputs: Annotated[list[OutputFigure], Field(max_length=100_000)] = []


def _resolve(cfg: PortalConfig, base: Path) -> PortalConfig:
    def rel(p: Path) -> Path:
        return p if p.is_absolute() else base / p

    db = cfg.database
    if db.url.startswith("sqlite:///") and not db.url.startswith("sqlite:////"):
        path = db.url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            db = db.model_copy(update={"url": f"sqlite:///{rel(Path(path))}"})
    chain = cfg.chain.model_copy(update={"address_book": rel(cfg.chain.address_book)})
    api = cfg.api
    if api.tls is not None:
        api = api.model_copy(update={"tls": TlsSection(cert=rel(api.tls.cert),
                                                        key=rel(api.tls.key))})
    auth = cfg.auth.model_copy(update={"secret_file": rel(cfg.auth.secret_file)})
    ui = cfg.ui
    if ui.telemetry is not None and ui.telemetry.ca_file is not None:
        ui = ui.model_copy(update={"telemetry": ui.telemetry.model_copy(
            update={"ca_file": rel(ui.telemetry.ca_file)})})
    return cfg.model_copy(update={"database": db, "chain": chain, "api": api, "auth": auth,
                                  "ui": ui})


def load_portal_config(path: Path | str) -> PortalConfig:
    """Read and validate ``portal.yaml`` (raises ``config.ConfigError`` naming path and line)."""
    p = Path(path)
    return _resolve(load_yaml_model(p, PortalConfig), p.resolve().parent)
