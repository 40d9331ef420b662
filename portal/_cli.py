"""``mrv-portal``: run the portal, migrate its database, run the chain indexer alone, write its
OpenAPI schema.

Exit codes: 0 ok, 1 the indexer stopped at a reorg deeper than its confirmations, 2 a bad config
or a refused start, 3 the chain could not be reached (``index --once``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from config import ConfigError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mrv-portal", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="serve the API and run the indexer (uvicorn)")
    p_run.add_argument("config", type=Path)
    p_run.add_argument("--log-level", default="INFO")
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

            migrate(open_engine(cfg.database.url))
            print(f"migrated {cfg.database.url.split('@')[-1]}")
            return 0
        if args.cmd == "index":
            from portal._indexer import run_index

            return run_index(args.config, once=args.once, reset=args.reset)
        from portal._runtime import serve

        serve(cfg)
        return 0
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    except PortalConfigError as e:
        print(f"mrv-portal: {e}", file=sys.stderr)
        return 2


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
