"""``mrvctl``: ledger administration (deploy the ledger, register gateways, fund accounts).

Each role signs with its own key file (one line of hex). Exit codes as ``mrv-gateway``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from ledger_client import ChainRevert, ChainUnavailable, EvmChain, KeyFileError, load_account
from ledger_client._admin import deploy_ledger, fund, register_gateway, write_address_book


def _contract(args: argparse.Namespace) -> str:
    book = json.loads(Path(args.address_book).read_text())
    return str(book["contracts"]["EmissionsLedger"])


async def _run(args: argparse.Namespace) -> int:
    key = load_account(Path(args.key))
    if args.cmd == "deploy":
        chain = EvmChain(args.rpc)
        try:
            book = await deploy_ledger(chain, key)
        finally:
            await chain.close()
        write_address_book(Path(args.address_book), book)
        print(json.dumps(book, indent=2))
        return 0
    chain = EvmChain(args.rpc, contract_address=_contract(args))
    try:
        if args.cmd == "register-gateway":
            pub = bytes.fromhex(args.signing_key.removeprefix("0x"))
            gk = await register_gateway(chain, key, args.gateway_id, args.sender, pub)
            print(json.dumps({"gateway_id": args.gateway_id, "gateway_key": "0x" + gk.hex()}))
        elif args.cmd == "fund":
            await fund(chain, key, args.to, int(args.wei))
            print(json.dumps({"funded": args.to, "wei": int(args.wei)}))
        elif args.cmd == "gateway":
            g = await chain.gateway(args.gateway_id)
            print(json.dumps({"gateway_id": g.gateway_id, "sender": g.sender,
                              "signing_key": "0x" + g.signing_key.hex(), "active": g.active,
                              "last_seq": g.last_seq, "last_record_seq": g.last_record_seq},
                             indent=2))
    finally:
        await chain.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mrvctl", description=__doc__)
    ap.add_argument("--rpc", required=True, help="JSON-RPC URL")
    ap.add_argument("--key", required=True, help="key file of the acting account")
    ap.add_argument("--address-book", required=True, help="address book JSON")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("deploy", help="deploy the EmissionsLedger; writes the address book")
    p = sub.add_parser("register-gateway", help="register a gateway (admin)")
    p.add_argument("gateway_id")
    p.add_argument("--sender", required=True, help="the gateway's EVM address")
    p.add_argument("--signing-key", required=True, help="the gateway's Ed25519 public key, hex")
    p = sub.add_parser("fund", help="send native balance to an account")
    p.add_argument("to")
    p.add_argument("wei")
    p = sub.add_parser("gateway", help="show a gateway's registration")
    p.add_argument("gateway_id")
    args = ap.parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except (KeyFileError, OSError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ChainUnavailable as e:
        print(f"error: the chain could not be reached: {e}", file=sys.stderr)
        return 3
    except ChainRevert as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
