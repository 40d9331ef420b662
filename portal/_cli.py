"""``mrv-portal``: run the portal, migrate its database, run the chain indexer alone, write its
OpenAPI schema.

Exit codes: 0 ok, 1 the indexer stopped at a reorg deeper than its confirmations, 2 a bad config
or a refused start, 3 the chain could not be reached (``index --once``)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from config import ConfigError

if TYPE_CHECKING:
    from portal._config import PortalConfig
    from portal._context import PortalContext


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mrv-portal", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="serve the API and run the indexer (uvicorn)")
    p_run.add_argument("config", type=Path)
    p_run.add_argument("--log-level", default="INFO")
    p_run.add_argument("--api-only", action="store_true",
                       help="serve the API only (another process runs the indexer)")
    p_mig = sub.add_parser("migrate", help="bring the database schema up to date")
    p_mig.add_argument("config", type=Path)
    p_idx = sub.add_parser("index", help="run the chain indexer alone (no API)")
    p_idx.add_argument("config", type=Path)
    p_idx.add_argument("--once", action="store_true", help="index until caught up, then exit")
    p_idx.add_argument("--reset", action="store_true",
                       help="empty the index first and rebuild it from chain.start_block"
                            " (after a reorg deeper than chain.confirmations)")
    p_api = sub.add_parser("openapi", help="print the API's OpenAPI schema (JSON)")
    p_api.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from portal._config import load_portal_config
    from portal._errors import PortalConfigError

    try:
        if args.cmd == "openapi":
            return _openapi(args.out)
        cfg = load_portal_config(args.config)
        logging.basicConfig(level=getattr(args, "log_level", "INFO"),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if args.cmd == "migrate":
            from portal._db import migrate, open_engine

            engine = open_engine(cfg.database.url)
            try:
                migrate(engine)
            finally:
                engine.dispose()  # its pooled connections closed, not left to the GC
            print(f"migrated {cfg.database.url.split('@')[-1]}")
            return 0
        if args.cmd == "index":
            return _index(cfg, once=args.once, reset=args.reset)
        from portal._runtime import serve

        serve(cfg, args.config, background=not args.api_only)
        return 0
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    except PortalConfigError as e:
        print(f"mrv-portal: {e}", file=sys.stderr)
        return 2


def _index(cfg: PortalConfig, *, once: bool, reset: bool) -> int:
    """Run the indexer alone: until caught up (``once``) or until SIGINT/SIGTERM; ``reset``
    first empties the index (a rebuild from ``chain.start_block``). Exit codes: 0 ok, 1 a
    reorg deeper than the confirmations, 3 the chain could not be reached (``once`` only)."""
    from portal._runtime import build_context

    ctx = build_context(cfg, with_secret=False)
    try:
        return _index_with(ctx, cfg, once=once, reset=reset)
    finally:
        # its pooled connections closed here: left to the garbage collector, each would be
        # closed at some later moment with a warning (and the server's slot held till then)
        ctx.engine.dispose()


def _index_with(ctx: PortalContext, cfg: PortalConfig, *, once: bool, reset: bool) -> int:
    from portal._errors import ChainUnavailable
    from portal._indexer import COMPONENT, Indexer, ReorgDetected, indexer_worker, reset_index

    if reset:
        reset_index(ctx.engine)
        logging.getLogger("mrv.portal.indexer").warning(
            "the index was emptied; it is rebuilt from block %d", cfg.chain.start_block)
    if once:
        ix = Indexer(ctx)
        try:
            n = ix.catch_up()
        except ReorgDetected as e:
            print(f"mrv-portal index: {e}", file=sys.stderr)
            return 1
        except ChainUnavailable as e:
            print(f"mrv-portal index: {e}", file=sys.stderr)
            return 3
        finally:
            ix.close()
        print(f"indexed {n} blocks")
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    indexer_worker(ctx, stop)
    return 1 if ctx.metrics.component(COMPONENT).state == "alarm" else 0


def _openapi(out: Path | None) -> int:
    from portal._app import create_app
    from portal._config import ChainSection, PortalConfig
    from portal._context import PortalContext
    from portal._db import open_engine

    cfg = PortalConfig(chain=ChainSection(address_book=Path("deployment.json")))
    app = create_app(PortalContext(config=cfg, engine=open_engine("sqlite://")))
    text = json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
