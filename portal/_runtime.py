"""Running the portal: the context from ``portal.yaml``, the migrations, the token secret, the
background workers, and uvicorn (HTTPS when ``api.tls`` is set)."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from ledger_client import AddressBookError, read_address_book
from portal._config import PortalConfig
from portal._context import PortalContext
from portal._db import migrate, open_engine
from portal._errors import PortalConfigError

log = logging.getLogger("mrv.portal")


def ensure_secret(path: Path) -> bytes:
    """The token HMAC key: read from ``path``, or created there (32 random bytes, mode 0600)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        log.info("created the token secret %s", path)
    if len(data) < 32:
        raise PortalConfigError(f"{path}: a token secret needs at least 32 bytes, has {len(data)}")
    return data


def build_context(cfg: PortalConfig, *, run_migrations: bool = True,
                  with_secret: bool = True) -> PortalContext:
    """The context for ``cfg``: the address book read, the engine open, the schema migrated,
    and (``with_secret``: the API needs it, the indexer alone does not) the token secret."""
    try:
        book = read_address_book(cfg.chain.address_book)
    except (OSError, AddressBookError) as e:
        raise PortalConfigError(f"chain.address_book: {e}") from None
    engine = open_engine(cfg.database.url, pool_size=cfg.database.pool_size,
                         connect_timeout_s=cfg.database.connect_timeout_s)
    try:
        if run_migrations:
            migrate(engine)
        contracts = {str(k): str(v).lower() for k, v in book.get("contracts", {}).items()}
        return PortalContext(config=cfg, engine=engine, contracts=contracts,
                             chain_id=int(book.get("chain_id", 0)),
                             token_secret=ensure_secret(cfg.auth.secret_file) if with_secret
                             else b"")
    except BaseException:  # the context never came to be: its engine's connections close now
        engine.dispose()
        raise


def workers() -> list[object]:
    """The background workers ``mrv-portal run`` starts (indexer, ingest verifier, and the
    live telemetry when ``ui.telemetry`` is configured: it returns at once otherwise)."""
    from portal._indexer import indexer_worker
    from portal._ingest_store import ingest_verifier
    from portal._telemetry import telemetry_worker

    return [indexer_worker, ingest_verifier, telemetry_worker]


CONFIG_ENV = "MRV_PORTAL_CONFIG"


def api_only_app() -> object:
    """The app of one API worker process when ``api.workers`` > 1 (uvicorn's factory): the
    config from ``$MRV_PORTAL_CONFIG``, no background workers (the main process runs them)."""
    from portal._app import create_app
    from portal._config import load_portal_config

    cfg = load_portal_config(os.environ[CONFIG_ENV])
    return create_app(build_context(cfg, run_migrations=False))


def serve(cfg: PortalConfig, config_path: Path | None = None, *,
          background: bool = True) -> None:
    """Serve the API (uvicorn) and, with ``background``, run the indexer and the ingest
    verifier. One process by default; with ``api.workers`` > 1, that many API processes and
    the background workers in this one."""
    import threading

    import uvicorn

    from portal._app import create_app

    ctx = build_context(cfg)
    tls = cfg.api.tls
    certfile = str(tls.cert) if tls else None
    keyfile = str(tls.key) if tls else None
    if cfg.api.workers == 1 or config_path is None:
        app = create_app(ctx, workers=workers() if background else [])  # type: ignore[arg-type]
        uvicorn.run(app, host=cfg.api.host, port=cfg.api.port, log_level="info",
                    ssl_certfile=certfile, ssl_keyfile=keyfile)
        return
    stop = threading.Event()
    threads = [threading.Thread(target=w, args=(ctx, stop), daemon=True)  # type: ignore[arg-type]
               for w in (workers() if background else [])]
    for t in threads:
        t.start()
    os.environ[CONFIG_ENV] = str(config_path.resolve())
    try:
        uvicorn.run("portal._runtime:api_only_app", factory=True, workers=cfg.api.workers,
                    host=cfg.api.host, port=cfg.api.port, log_level="info",
                    ssl_certfile=certfile, ssl_keyfile=keyfile)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
