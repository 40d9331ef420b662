"""``mrv-gateway``: the daemon and its tools. Errors are translated here, once, into a message
and an exit code: 0 ok, 1 a check failed (verification), 2 bad input (config, arguments, files),
3 the chain could not be reached."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config import Config
    from ledger_client import Bundle

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_CHAIN = 0, 1, 2, 3

# A SIGTERM that arrives while the (heavy) imports are still loading means "stop" too.
_term_requested = False


def _early_term(signum: int, frame: FrameType | None) -> None:
    global _term_requested
    _term_requested = True


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    logging.getLogger("web3").setLevel(logging.WARNING)


async def _cmd_run(args: argparse.Namespace) -> int:
    from mrv_core import pause_collector

    # the collector is off over the start-up (imports, config, cleaners, pollers): the
    # daemon's `tune_process` turns it on again once started (mrv_core/_gc.py)
    pause_collector()
    try:
        from config import load_config
        from gateway._daemon import install_signal_handlers, run_daemon

        cfg = load_config(args.config)
        _setup_logging(args.log_level or cfg.gateway.log_level)
        stop = asyncio.Event()
        install_signal_handlers(stop)
        if _term_requested:
            stop.set()
        if args.duration:
            asyncio.get_running_loop().call_later(args.duration, stop.set)
        await run_daemon(cfg, stop=stop, freeze_gc=True)
    finally:
        gc.enable()  # a start-up that failed (the daemon has turned it on otherwise)
    return EXIT_OK


def _cmd_check_config(args: argparse.Namespace) -> int:
    from config import ConfigError, load_config

    worst = EXIT_OK
    for path in args.config:
        try:
            cfg = load_config(path)
        except ConfigError as e:
            print(e, file=sys.stderr)
            worst = EXIT_INPUT
            continue
        points = sum(len(d.points) for d in cfg.devices)
        print(f"{path}: OK: gateway {cfg.gateway.id}, {len(cfg.devices)} device(s), "
              f"{points} point(s), chain {cfg.chain.rpc_url} (id {cfg.chain.chain_id})")
    return worst


def _cmd_keygen(args: argparse.Namespace) -> int:
    from ledger_client import Signer, generate_account

    d = Path(args.dir)
    ed, evm = d / "ed25519.key", d / "evm.key"
    for p in (ed, evm):
        if p.exists():
            print(f"{p} exists: refusing to overwrite a key", file=sys.stderr)
            return EXIT_INPUT
    signer = Signer.generate(ed)
    acct = generate_account(evm)
    print(json.dumps({"ed25519_public_key": "0x" + signer.public_key.hex(),
                      "evm_address": acct.address, "files": [str(ed), str(evm)]}, indent=2))
    return EXIT_OK


async def _bundle_for(cfg: Config, seq: int) -> Bundle:
    """The proof bundle of record ``seq``: from the outbox, or, when the disk budget pruned it
    there, from the archive (``outbox.archive_path``)."""
    from config import contract_address
    from ledger_client import Outbox, RecordMissing, bundle_from_outbox

    chain_id, contract = cfg.chain.chain_id, contract_address(cfg)
    archive = cfg.archive_path()
    db = await Outbox.open(cfg.outbox_path(), cfg.gateway.id)
    try:
        committed = (await db.stats()).records  # every seq 1..committed was committed once
        if await db.record(seq) is not None:
            return await bundle_from_outbox(db, seq, chain_id=chain_id, contract=contract)
    finally:
        await db.close()
    where, arc_checked = "the outbox", False
    if archive is not None and archive.exists():
        arc_checked = True
        where = f"the outbox nor in the archive {archive}"
        arc = await Outbox.open(archive, cfg.gateway.id, journal_mode="DELETE")  # as written
        try:
            if await arc.record(seq) is not None:
                return await bundle_from_outbox(arc, seq, chain_id=chain_id, contract=contract)
        finally:
            await arc.close()
    if 1 <= seq <= committed:  # it was committed and is gone: a check that fails (exit 1)
        raise RecordMissing(
            f"record {seq} was committed (the outbox's records run 1..{committed}) but is in "
            f"neither {where}: it was deleted"
            + ("" if archive is not None else " (or pruned, with no outbox.archive_path set)"))
    raise LookupError(f"record {seq} is {'neither' if arc_checked else 'not'} in {where}"
                      f" (the outbox has committed records 1..{committed} only)")


async def _cmd_export_proof(args: argparse.Namespace) -> int:
    from config import load_config

    cfg = load_config(args.config)
    bundle = await _bundle_for(cfg, args.seq)
    text = json.dumps(bundle.to_json(), indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    else:
        print(text)
    return EXIT_OK


async def _cmd_verify(args: argparse.Namespace) -> int:
    from config import contract_address, load_config
    from ledger_client import MAX_BUNDLE_BYTES, BundleError, EvmChain, describe, parse_bundle, verify_bundle

    if args.bundle:
        with Path(args.bundle).open("rb") as f:  # never more than a bundle can be
            data = f.read(MAX_BUNDLE_BYTES + 1)
        try:
            bundle = parse_bundle(data)
        except BundleError as e:
            raise BundleError(f"{args.bundle}: {e}") from None
        rpc = args.rpc
        if not rpc:
            print("--rpc is required with --bundle", file=sys.stderr)
            return EXIT_INPUT
        contract = args.contract or bundle.contract
    else:
        if not args.config or args.seq is None:
            print("give CONFIG and --seq, or --bundle FILE --rpc URL", file=sys.stderr)
            return EXIT_INPUT
        cfg = load_config(args.config)
        bundle = await _bundle_for(cfg, args.seq)
        rpc, contract = args.rpc or cfg.chain.rpc_url, contract_address(cfg)
    chain = EvmChain(rpc, contract_address=contract)
    try:
        report = await verify_bundle(bundle, chain)
    finally:
        await chain.close()
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        r = bundle.record
        print(f"record {r.seq} of gateway {r.gateway_id} ({describe(r)}):")
        print(report.text())
    return EXIT_OK if report.ok else EXIT_FAILED


async def _cmd_status(args: argparse.Namespace) -> int:
    from config import load_config
    from ledger_client import Outbox

    cfg = load_config(args.config)
    outbox = await Outbox.open(cfg.outbox_path(), cfg.gateway.id)
    try:
        st = await outbox.stats()
        ds = await outbox.delivery_stats() if cfg.portal is not None else None
    finally:
        await outbox.close()
    out: dict[str, object] = {
        "gateway": cfg.gateway.id, "records": st.records, "pending": st.pending,
        "batches": st.batches_by_state, "last_confirmed_batch": st.last_confirmed_batch,
        "dead_letters": st.dead_letters, "dead_letters_unreviewed": st.dead_letters_unreviewed}
    if ds is not None:  # batches delivered to the portal (portal:)
        out["delivery"] = {"portal": cfg.portal.url if cfg.portal else "",
                           "backlog": ds.backlog, "delivered": ds.delivered,
                           "refused": ds.refused, "undeliverable": ds.unavailable,
                           "last_delivered_batch": ds.last_delivered_batch}
    archive = cfg.archive_path()
    if archive is not None:  # pruned records copied there (outbox.archive_path)
        if archive.exists():
            arc = await Outbox.open(archive, cfg.gateway.id, journal_mode="DELETE")
            try:
                ast = await arc.stats()
            finally:
                await arc.close()
            out["archive"] = {"path": str(archive), "records": ast.records,
                              "batches": ast.batches}
        else:
            out["archive"] = {"path": str(archive), "records": 0, "batches": 0}
    print(json.dumps(out, indent=2))
    return EXIT_OK


async def _cmd_dead_letters(args: argparse.Namespace) -> int:
    import time

    from config import load_config
    from ledger_client import Outbox

    cfg = load_config(args.config)
    if not cfg.outbox_path().exists():
        print(f"error: no outbox at {cfg.outbox_path()}", file=sys.stderr)
        return EXIT_INPUT
    outbox = await Outbox.open(cfg.outbox_path(), cfg.gateway.id)
    try:
        if args.reviewed is not None:
            n = await outbox.mark_dead_letters_reviewed(args.reviewed, time.time_ns())
            print(f"{n} dead letter(s) marked reviewed")
            return EXIT_OK
        dead = await outbox.dead_letters(limit=args.limit)
    finally:
        await outbox.close()
    print(json.dumps([{"id": d.id, "quarantined_ns": d.quarantined_ns, "source": d.source,
                       "point_id": d.point_id, "reason": d.reason, "raw_len": d.raw_len,
                       "raw": d.raw.decode("utf-8", "backslashreplace"),
                       "reviewed_ns": d.reviewed_ns} for d in dead], indent=2))
    return EXIT_OK


async def _cmd_audit(args: argparse.Namespace) -> int:
    from config import contract_address, load_config
    from ledger_client import EvmChain, Outbox, Signer, audit_outbox

    cfg = load_config(args.config)
    path, archive = cfg.outbox_path(), cfg.archive_path()
    if not path.exists():  # never create an empty outbox and call it sound
        print(f"error: no outbox at {path}", file=sys.stderr)
        return EXIT_INPUT
    outbox = await Outbox.open(path, cfg.gateway.id)
    arc = (await Outbox.open(archive, cfg.gateway.id, journal_mode="DELETE")
           if archive is not None and archive.exists() else None)
    chain = None
    try:
        if args.offline:  # the configured key: checks the outbox against itself only
            key: bytes | None = Signer.load(cfg.gateway.signing_key).public_key
        else:
            chain = EvmChain(args.rpc or cfg.chain.rpc_url, contract_address=contract_address(cfg))
            key = (await chain.gateway(cfg.gateway.id)).signing_key
        report = await audit_outbox(outbox, arc, key=key, chain=chain,
                                    confirmations=cfg.chain.confirmations)
    finally:
        if chain is not None:
            await chain.close()
        if arc is not None:
            await arc.close()
        await outbox.close()
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(f"audit of the outbox of gateway {cfg.gateway.id} ({path}"
              + (f", archive {archive}" if arc is not None else "") + ")"
              + (" OFFLINE: no ledger checks" if args.offline else "") + ":")
        print(report.text())
    return EXIT_OK if report.ok else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mrv-gateway", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="run the gateway daemon")
    p.add_argument("config")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p = sub.add_parser("check-config", help="validate config files without starting")
    p.add_argument("config", nargs="+")
    p = sub.add_parser("keygen", help="create the gateway's Ed25519 and EVM key files")
    p.add_argument("dir")
    p = sub.add_parser("status", help="outbox figures: records, pending, batches by state")
    p.add_argument("config")
    p = sub.add_parser("export-proof", help="write the proof bundle of one reading (JSON)")
    p.add_argument("config")
    p.add_argument("--seq", type=int, required=True, help="the reading's record seq")
    p.add_argument("-o", "--output")
    p = sub.add_parser("audit", help="check the whole outbox: every leaf, root, signature,"
                       " anchor and seq (exit 1 on any failure)")
    p.add_argument("config")
    p.add_argument("--rpc", help="JSON-RPC URL of a ledger node (default: the config's)")
    p.add_argument("--offline", action="store_true",
                   help="no ledger: check signatures with the configured key, skip anchors")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("dead-letters", help="list the quarantined readings, or mark them "
                       "reviewed (which ends the degraded health state)")
    p.add_argument("config")
    p.add_argument("--reviewed", type=int, metavar="ID",
                   help="mark every dead letter up to this id reviewed")
    p.add_argument("--limit", type=int, default=100, help="list at most this many (newest)")
    p = sub.add_parser("verify", help="prove one reading against the ledger")
    p.add_argument("config", nargs="?")
    p.add_argument("--seq", type=int, help="the reading's record seq (with CONFIG)")
    p.add_argument("--bundle", help="a proof bundle file (no outbox needed)")
    p.add_argument("--rpc", help="JSON-RPC URL of a ledger node")
    p.add_argument("--contract", help="ledger address (default: the bundle's)")
    p.add_argument("--json", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _early_term)
    args = build_parser().parse_args(argv)
    if args.cmd != "run":
        _setup_logging("WARNING")
    from config import ConfigError
    from ledger_client import BundleError, ChainUnavailable, KeyFileError, LedgerError

    try:
        if args.cmd == "check-config":
            return _cmd_check_config(args)
        if args.cmd == "keygen":
            return _cmd_keygen(args)
        handler = {"run": _cmd_run, "status": _cmd_status, "export-proof": _cmd_export_proof,
                   "verify": _cmd_verify, "audit": _cmd_audit,
                   "dead-letters": _cmd_dead_letters}[args.cmd]
        return asyncio.run(handler(args))
    except ConfigError as e:
        print(e, file=sys.stderr)
        return EXIT_INPUT
    except (KeyFileError, BundleError, LookupError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except ChainUnavailable as e:
        print(f"error: the chain could not be reached: {e}", file=sys.stderr)
        return EXIT_CHAIN
    except LedgerError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
