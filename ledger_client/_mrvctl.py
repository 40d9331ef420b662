"""``mrvctl``: the MRV ledger for each role (regulator, government, enterprise, auditor, finance).

Every transaction is signed locally by the acting role's own key file (``--key``, one line of
hex); queries need no key. Amounts are grams CO2e, or with a unit: ``12.5t``, ``300kg``,
``1500000g``. Prices are minor currency units per tonne. Times are ISO dates (UTC) or integer
nanoseconds. Output is a table, or JSON with ``--json``.

Exit codes: 0 ok, 1 the chain reverted (the contract's custom error is printed) or refused the
transaction, 2 bad input, 3 the chain could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ledger_client import ChainRevert, ChainUnavailable, EvmChain, KeyFileError, load_account
from ledger_client._admin import (
    ROLE_NAMES,
    ROLES,
    Event,
    FindingKind,
    Mrv,
    deploy_system,
    fund,
    read_address_book,
    validate_uscc,
    write_address_book,
)
from ledger_client._errors import ChainRejected
from ledger_client._format import keccak256

EXIT_OK, EXIT_REVERTED, EXIT_INPUT, EXIT_CHAIN = 0, 1, 2, 3

_UNITS = {"g": 1, "kg": 1_000, "t": 1_000_000}
_AMOUNT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(g|kg|t)?\s*$", re.IGNORECASE)


#: Command-line values are short; anything longer is refused before it is parsed.
MAX_ARG_CHARS = 80
_INT64 = (-(2**63), 2**63 - 1)
_UINT128_MAX = 2**128 - 1


def _short(text: str, what: str) -> str:
    if len(text) > MAX_ARG_CHARS:
        raise ValueError(f"{what}: longer than {MAX_ARG_CHARS} characters")
    return text


def parse_amount(text: str) -> int:
    """Grams from ``123``, ``123g``, ``1.5kg``, ``12.5t``; ValueError when not a whole gram
    or beyond the contracts' uint128 amounts."""
    m = _AMOUNT.match(_short(text, "amount"))
    if not m:
        raise ValueError(f"amount {text!r}: expected a number with an optional unit g, kg or t")
    num, unit = m.group(1), (m.group(2) or "g").lower()
    whole, _, frac = num.partition(".")
    scale = _UNITS[unit]
    grams = int(whole) * scale
    if frac:
        f = int(frac) * scale
        d = 10 ** len(frac)
        if f % d:
            raise ValueError(f"amount {text!r} is not a whole number of grams")
        grams += f // d
    if grams > _UINT128_MAX:
        raise ValueError(f"amount {text!r} is larger than the contracts accept (2**128 - 1 g)")
    return grams


_MAX_UINT256 = 2**256 - 1


def parse_wei(text: str) -> int:
    """A native amount in wei: decimal digits only, 0 < wei < 2**256."""
    t = text.strip()
    if not re.fullmatch(r"[0-9]{1,78}", t) or not 0 < int(t) <= _MAX_UINT256:
        raise ValueError(f"wei {text!r}: expected a whole number of wei from 1 to 2**256 - 1")
    return int(t)


def parse_time_ns(text: str) -> int:
    """UTC nanoseconds from an integer or an ISO date / date-time (UTC unless it says), within
    the contracts' int64 range."""
    t = _short(text, "time").strip()
    if re.fullmatch(r"-?[0-9]+", t):
        return _int64_ns(int(t), text)
    try:
        when = dt.datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(f"time {text!r}: expected ISO 8601 (2025-01-01) or nanoseconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return _int64_ns((delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1_000,
                     text)


def _int64_ns(ns: int, text: str) -> int:
    if not _INT64[0] <= ns <= _INT64[1]:
        raise ValueError(f"time {text!r} is outside the int64 nanoseconds the contracts hold"
                         " (years 1677 to 2262)")
    return ns


def parse_hash(text: str, what: str) -> bytes:
    t = _short(text, what).removeprefix("0x")
    if not re.fullmatch(r"[0-9a-fA-F]{64}", t):
        raise ValueError(f"{what}: expected 32 bytes of hex, got {text!r}")
    return bytes.fromhex(t)


def parse_address(text: str, what: str = "address") -> str:
    if not re.fullmatch(r"0x[0-9a-fA-F]{40}", text):
        raise ValueError(f"{what}: expected a 0x-prefixed 20-byte address, got {text!r}")
    return text


def _tonnes(g: int | None) -> str:
    return "-" if g is None else f"{g / 1e6:,.6f} t"


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return "0x" + v.hex()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


def _events_json(events: list[Event]) -> list[dict[str, Any]]:
    return [{"contract": e.contract, "event": e.name, "args": _jsonable(e.args)} for e in events]


def _table(rows: list[list[str]], header: list[str] | None = None) -> str:
    all_rows = ([header] if header else []) + rows
    if not all_rows:
        return "(none)"
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(all_rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in all_rows]
    if header:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _kv(d: dict[str, Any]) -> str:
    return _table([[k, _fmt(v)] for k, v in d.items()])


def _fmt(v: Any) -> str:
    if isinstance(v, bytes):
        return "0x" + v.hex()
    if v is None:
        return "-"
    if isinstance(v, list | tuple):
        return ", ".join(_fmt(x) for x in v) or "-"
    return str(v)


class Out:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def result(self, data: dict[str, Any], human: str | None = None) -> None:
        if self.as_json:
            print(json.dumps(_jsonable(data), indent=2))
        else:
            print(human if human is not None else _kv(
                {k: v for k, v in data.items() if k != "events"}))
            for e in data.get("events", []):
                args = ", ".join(f"{k}={_fmt(v)}" for k, v in e.args.items()
                                 if not isinstance(v, dict))
                print(f"  event {e.contract}.{e.name}({args})")

    def events(self, what: str, events: list[Event], **extra: Any) -> None:
        data = {"ok": what, **extra}
        if self.as_json:
            print(json.dumps(_jsonable({**data, "events": _events_json(events)}), indent=2))
        else:
            self.result({**data, "events": events})


# -- commands --------------------------------------------------------------------------------

Handler = Callable[[argparse.Namespace, Mrv, Out], Awaitable[None]]


def _key(args: argparse.Namespace) -> Any:
    if not args.key:
        raise ValueError(f"{args.cmd}: --key (the acting role's key file) is required")
    return load_account(Path(args.key))


async def c_grant(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    o.events("grant", await m.grant(_key(a), a.role, parse_address(a.account)))


async def c_revoke_role(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    o.events("revoke-role", await m.revoke_role(_key(a), a.role, parse_address(a.account)))


async def c_roles(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    acct = parse_address(a.account)
    o.result({"account": acct, "roles": await m.roles_of(acct)})


async def c_define_period(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    start, end = parse_time_ns(a.start), parse_time_ns(a.end)
    pid = await m.define_period(_key(a), start, end)
    o.result({"period": pid, "start": _iso(start), "end": _iso(end), "start_ns": start,
              "end_ns": end})


async def c_close_period(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    o.events("close-period", await m.close_period(_key(a), a.period))


async def c_periods(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    ps = await m.periods()
    o.result({"periods": ps}, _table(
        [[str(p["period"]), _iso(p["start_ns"]), _iso(p["end_ns"]),
          "closed" if p["closed"] else "open"] for p in ps],
        ["period", "start", "end", "state"]))


async def c_certify(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    code = validate_uscc(a.credit_code)
    o.events("certify", await m.certify(_key(a), parse_address(a.account), credit_code=code,
                                        name=a.name, industry=a.industry, region=a.region))


async def c_suspend(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    o.events("suspend", await m.suspend(_key(a), parse_address(a.account), a.reason))


async def c_reinstate(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    o.events("reinstate", await m.reinstate(_key(a), parse_address(a.account)))


async def c_reserve_gateway(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    ev = await m.reserve_gateway_id(_key(a), a.gateway_id, parse_address(a.enterprise,
                                                                        "enterprise"))
    o.events("reserve-gateway", [ev], gateway_key=ev["gatewayKey"])


async def c_register_gateway(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    pub = bytes.fromhex(a.signing_key.removeprefix("0x"))
    if len(pub) != 32:
        raise ValueError(f"--signing-key: expected 32 bytes, got {len(pub)}")
    gk = await m.register_gateway(_key(a), a.gateway_id, parse_address(a.sender, "--sender"), pub)
    o.result({"gateway_id": a.gateway_id, "gateway_key": gk})


async def c_revoke_gateway(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    o.events("revoke-gateway", await m.revoke_gateway(_key(a), a.gateway_id))


def parse_until_s(text: str) -> int:
    """Block seconds from Unix seconds or an ISO date / date-time (UTC unless it says)."""
    t = _short(text, "until").strip()
    if re.fullmatch(r"[0-9]{1,20}", t):
        s = int(t)
    else:
        try:
            when = dt.datetime.fromisoformat(t)
        except ValueError:
            raise ValueError(f"until {text!r}: expected ISO 8601 (2027-01-01) or Unix seconds"
                             ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        s = int(when.timestamp())
    if not 0 < s < 2**64:
        raise ValueError(f"until {text!r}: outside the uint64 seconds the registry holds")
    return s


async def c_grant_access(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    until = parse_until_s(a.until)
    ev = await m.grant_data_access(_key(a), parse_address(a.finance, "finance"), until)
    o.events("grant-access", [ev], until=until)


async def c_revoke_access(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    ev = await m.revoke_data_access(_key(a), parse_address(a.finance, "finance"))
    o.events("revoke-access", [ev])


async def c_gateway(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    g = await m.chain.gateway(a.gateway_id)
    o.result({"gateway_id": g.gateway_id, "sender": g.sender, "signing_key": g.signing_key,
              "active": g.active, "last_seq": g.last_seq, "last_record_seq": g.last_record_seq})


async def c_benchmark(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    o.events("benchmark", await m.set_benchmark(_key(a), a.period, a.industry,
                                                parse_amount(a.grams_per_unit)))


async def c_allocate(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    amount = int(a.amount) if a.by_output else parse_amount(a.amount)
    ev = await m.allocate(_key(a), parse_address(a.enterprise), a.period, amount,
                          by_output=a.by_output)
    o.events("allocate", [ev], amount_g=ev["amountG"])


async def c_transfer(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    o.events("transfer", await m.transfer(_key(a), a.period, parse_address(a.to),
                                          parse_amount(a.amount)))


async def c_surrender(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    ev = await m.surrender(_key(a), a.period, parse_amount(a.amount))
    o.events("surrender", [ev], total_surrendered_g=ev["totalSurrenderedG"])


async def c_settle(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    from ledger_client._admin import Compliance

    ev = await m.settle(_key(a), parse_address(a.enterprise), a.period)
    o.events("settle", [ev], status=Compliance(ev["status"]).name.lower())


async def c_offer(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    buyer = parse_address(a.buyer, "--buyer") if a.buyer else None
    oid = await m.offer(_key(a), a.period, parse_amount(a.amount), int(a.price), buyer)
    o.result({"offer_id": oid})


async def c_accept(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    key = _key(a)
    if a.amount is None:
        off = await m.call(m.market.functions.getOffer(a.offer_id))
        amount = int(off[6])
    else:
        amount = parse_amount(a.amount)
    ev = await m.accept(key, a.offer_id, amount)
    o.events("accept", [ev], trade_id=ev["tradeId"], value=ev["value"])


async def c_cancel(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    ev = await m.cancel(_key(a), a.offer_id)
    o.events("cancel", [ev], returned_g=ev["returnedG"])


async def c_settle_trade(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    ref = keccak256(a.payment_ref.encode()) if not a.payment_ref.startswith("0x") else \
        parse_hash(a.payment_ref, "payment ref")
    o.events("settle-trade", [await m.confirm_settlement(_key(a), a.trade_id, ref)])


async def c_market(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    from ledger_client._admin import OfferStatus

    fns = m.market.functions
    offers = []
    for i in range(1, int(await m.call(fns.offerCount())) + 1):
        f = await m.call(fns.getOffer(i))
        offers.append({"offer_id": i, "seller": f[0], "period": int(f[1]),
                       "status": OfferStatus(int(f[2])).name.lower(),
                       "buyer": None if int(f[4], 16) == 0 else f[4],
                       "amount_g": int(f[5]), "remaining_g": int(f[6]),
                       "price_per_tonne": int(f[7])})
    trades = []
    for i in range(1, int(await m.call(fns.tradeCount())) + 1):
        t = await m.call(fns.trade(i))
        trades.append({"trade_id": i, "offer_id": int(t[0]), "seller": t[1], "period": int(t[2]),
                       "buyer": t[4], "amount_g": int(t[5]), "price_per_tonne": int(t[6]),
                       "value": int(t[7]), "settled": int(t[9], 16) != 0})
    human = "offers\n" + _table(
        [[str(x["offer_id"]), x["seller"], x["buyer"] or "any", str(x["period"]),
          _tonnes(x["remaining_g"]), str(x["price_per_tonne"]), x["status"]] for x in offers],
        ["id", "seller", "buyer", "period", "remaining", "price/t", "status"])
    human += "\ntrades\n" + _table(
        [[str(x["trade_id"]), str(x["offer_id"]), x["seller"], x["buyer"], str(x["period"]),
          _tonnes(x["amount_g"]), str(x["price_per_tonne"]), str(x["value"]),
          "yes" if x["settled"] else "no"] for x in trades],
        ["id", "offer", "seller", "buyer", "period", "amount", "price/t", "value", "settled"])
    o.result({"offers": offers, "trades": trades}, human)


def _hash_arg(file: str | None, text: str | None, what: str) -> bytes:
    if file:
        return keccak256(Path(file).read_bytes())
    if text:
        return parse_hash(text, what)
    raise ValueError(f"give --{what}-file or --{what}-hash")


async def c_report(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    h = _hash_arg(a.report_file, a.report_hash, "report")
    rid = await m.file_report(_key(a), parse_address(a.enterprise), a.period,
                              parse_amount(a.verified), h, a.uri)
    o.result({"report_id": rid, "report_hash": h})


async def c_finding(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    h = _hash_arg(a.evidence_file, a.evidence_hash, "evidence")
    kind = FindingKind[a.kind.upper()]
    ref: dict[str, Any] = {}
    if a.proof:
        from ledger_client._format import record_leaf
        from ledger_client._verify import MAX_BUNDLE_BYTES, parse_bundle

        with Path(a.proof).open("rb") as f:  # limited before it is parsed (BundleError)
            b = parse_bundle(f.read(MAX_BUNDLE_BYTES + 1))
        ref = {"gateway_id": b.header.gateway_id, "batch_seq": b.header.seq,
               "record_leaf": record_leaf(b.record), "proof": b.proof}
    fid = await m.file_finding(_key(a), parse_address(a.enterprise), a.period, kind,
                               parse_amount(a.corrected), h, a.uri, **ref)
    o.result({"finding_id": fid, "evidence_hash": h,
              "record": ("0x" + ref["record_leaf"].hex()) if ref else None})


async def c_confirm_finding(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    o.events("confirm-finding", await m.confirm_finding(_key(a), a.finding_id))


async def c_reject_finding(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    o.events("reject-finding", [await m.reject_finding(_key(a), a.finding_id, a.reason)])


async def c_penalty_rate(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    o.events("penalty-rate", [await m.set_penalty_rate(_key(a), FindingKind[a.kind.upper()],
                                                       a.bps)])


async def c_account(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    view = await m.account_view(parse_address(a.enterprise),
                                None if a.period is None else [a.period])
    if o.as_json:
        o.result(view)
        return
    head = {k: view[k] for k in ("account", "name", "credit_code", "industry", "region",
                                 "status")}
    lines = [_kv(head), "", "gateways", _table(
        [[g["gateway_id"], g["sender"], "active" if g["active"] else "revoked",
          str(g["last_seq"])] for g in view["gateways"]],
        ["id", "sender", "state", "batches"]), "", "periods"]
    rows = []
    for p in view["periods"]:
        rows.append([str(p["period"]), str(p["batches"]), _tonnes(p["reported_g"]["total"]),
                     _tonnes(p.get("verified_g")), _tonnes(p.get("allocated_g")),
                     _tonnes(p.get("balance_g")), _tonnes(p.get("surrendered_g")),
                     _tonnes(p.get("penalty_g")), _tonnes(p.get("obligation_g")),
                     str(p.get("compliance", "-"))])
    lines.append(_table(rows, ["period", "batches", "reported", "verified", "allocated",
                               "balance", "surrendered", "penalty", "obligation", "status"]))
    o.result(view, "\n".join(lines))


async def c_fund(a: argparse.Namespace, m: Mrv, o: Out) -> None:
    to = parse_address(a.to)
    wei = parse_wei(a.wei)
    await fund(m.chain, _key(a), to, wei)
    o.result({"funded": to, "wei": wei})


COMMANDS: dict[str, Handler] = {
    "grant": c_grant, "revoke-role": c_revoke_role, "roles": c_roles,
    "define-period": c_define_period, "close-period": c_close_period, "periods": c_periods,
    "certify": c_certify, "suspend": c_suspend, "reinstate": c_reinstate,
    "reserve-gateway": c_reserve_gateway, "register-gateway": c_register_gateway,
    "revoke-gateway": c_revoke_gateway, "grant-access": c_grant_access,
    "revoke-access": c_revoke_access,
    "gateway": c_gateway, "benchmark": c_benchmark, "allocate": c_allocate,
    "transfer": c_transfer, "surrender": c_surrender, "settle": c_settle, "offer": c_offer,
    "accept": c_accept, "cancel": c_cancel, "settle-trade": c_settle_trade, "market": c_market,
    "report": c_report, "finding": c_finding, "confirm-finding": c_confirm_finding,
    "reject-finding": c_reject_finding, "penalty-rate": c_penalty_rate, "account": c_account,
    "fund": c_fund,
}


async def _run(args: argparse.Namespace) -> int:
    out = Out(args.json)
    if args.cmd == "new-key":
        from ledger_client._signing import generate_account

        acct = generate_account(Path(args.path))
        out.result({"key_file": args.path, "address": acct.address})
        return EXIT_OK
    if args.cmd == "login":
        return _login(args, out)
    book_path = Path(args.address_book)
    if args.cmd == "fund" and args.rpc and not book_path.exists():
        # A plain value transfer needs no contract: --rpc alone is enough.
        to = parse_address(args.to)
        wei = parse_wei(args.wei)
        key = _key(args)
        chain = EvmChain(args.rpc)
        try:
            await fund(chain, key, to, wei)
        finally:
            await chain.close()
        out.result({"funded": to, "wei": wei})
        return EXIT_OK
    if args.cmd == "deploy":
        if not args.rpc:
            raise ValueError("deploy: --rpc is required")
        key = _key(args)
        chain = EvmChain(args.rpc)
        try:
            book = await deploy_system(chain, key)
        finally:
            await chain.close()
        write_address_book(book_path, book)
        out.result(book, _kv({"chain_id": book["chain_id"], "regulator": book["admin"],
                              **book["contracts"], "address_book": str(book_path)}))
        return EXIT_OK
    book = read_address_book(book_path)
    rpc = args.rpc or book.get("rpc_url")
    if not rpc:
        raise ValueError("no --rpc and no rpc_url in the address book")
    mrv = Mrv.from_book(str(rpc), book)
    try:
        await COMMANDS[args.cmd](args, mrv, out)
    finally:
        await mrv.close()
    return EXIT_OK


def _login(args: argparse.Namespace, out: Out) -> int:
    import httpx

    from ledger_client._portal_login import PortalRefused, portal_login_link

    try:
        got = portal_login_link(args.portal, _key(args), ca_file=args.ca_file)
    except PortalRefused as e:
        print(f"error: the portal refused the sign-in: {e}", file=sys.stderr)
        return EXIT_INPUT
    except httpx.HTTPError as e:
        print(f"error: the portal could not be reached: {e}", file=sys.stderr)
        return EXIT_CHAIN
    until = dt.datetime.fromtimestamp(int(got["expires_at"]), tz=dt.UTC)
    out.result(got, f"{got['url']}\n(open it once, before {until:%H:%M:%S} UTC, to sign in as "
                    f"{got['address']}: {', '.join(got['roles'])})")
    return EXIT_OK


def _revert_text(e: ChainRevert) -> str:
    shown = []
    for a in e.args_:
        if isinstance(a, bytes) and a in ROLE_NAMES:
            shown.append(f"{ROLE_NAMES[a]} role")
        elif isinstance(a, bytes):
            shown.append("0x" + a.hex())
        else:
            shown.append(str(a))
    return f"reverted: {e.name}({', '.join(shown)})"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mrvctl", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rpc", help="JSON-RPC URL (default: rpc_url in the address book)")
    ap.add_argument("--key", help="key file of the acting account (transactions only)")
    ap.add_argument("--address-book", default="address-book.json",
                    help="address book JSON (written by deploy)")
    ap.add_argument("--json", action="store_true", help="JSON output")
    sub = ap.add_subparsers(dest="cmd", required=True)
    roles = [r for r in ROLES if not r.endswith("-contract")]

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help)

    cmd("deploy", "regulator: deploy and wire all contracts; writes the address book")
    p = cmd("new-key", "create an EVM key file for a role; prints its address")
    p.add_argument("path")
    p = cmd("grant", "regulator: grant a role")
    p.add_argument("role", choices=roles)
    p.add_argument("account")
    p = cmd("revoke-role", "regulator: revoke a role")
    p.add_argument("role", choices=roles)
    p.add_argument("account")
    p = cmd("roles", "show an account's roles")
    p.add_argument("account")
    p = cmd("define-period", "government: append a compliance period [start, end)")
    p.add_argument("start")
    p.add_argument("end")
    p = cmd("close-period", "government: close an ended period")
    p.add_argument("period", type=int)
    cmd("periods", "list compliance periods")
    p = cmd("certify", "government: certify an enterprise account")
    p.add_argument("account")
    p.add_argument("--credit-code", required=True, help="unified social credit code (18 chars)")
    p.add_argument("--name", required=True)
    p.add_argument("--industry", required=True, help="industry code, e.g. GB/T 4754 D4411")
    p.add_argument("--region", required=True, help="region code, e.g. 440300")
    p = cmd("suspend", "government: suspend an enterprise")
    p.add_argument("account")
    p.add_argument("--reason", required=True)
    p = cmd("reinstate", "government: reinstate a suspended enterprise")
    p.add_argument("account")
    p = cmd("reserve-gateway", "government: reserve a gateway id for an enterprise")
    p.add_argument("gateway_id")
    p.add_argument("enterprise")
    p = cmd("register-gateway", "enterprise: register a gateway id reserved for it")
    p.add_argument("gateway_id")
    p.add_argument("--sender", required=True, help="the gateway's EVM address")
    p.add_argument("--signing-key", required=True, help="the gateway's Ed25519 public key, hex")
    p = cmd("revoke-gateway", "government or the owning enterprise: revoke a gateway")
    p.add_argument("gateway_id")
    p = cmd("grant-access", "enterprise: let a financial institution read its data until a time")
    p.add_argument("finance", help="the institution's account (holds the finance role)")
    p.add_argument("until", help="end of the access: ISO 8601 (2027-01-01) or Unix seconds")
    p = cmd("revoke-access", "enterprise: withdraw a financial institution's data access")
    p.add_argument("finance")
    p = cmd("gateway", "show a gateway's registration and anchoring state")
    p.add_argument("gateway_id")
    p = cmd("benchmark", "government: set an industry's allocation benchmark for a period")
    p.add_argument("period", type=int)
    p.add_argument("industry")
    p.add_argument("grams_per_unit", help="CO2e per unit of output (amount syntax)")
    p = cmd("allocate", "government: allocate allowances to an enterprise for a period")
    p.add_argument("enterprise")
    p.add_argument("period", type=int)
    p.add_argument("amount", help="amount, or the output with --by-output")
    p.add_argument("--by-output", action="store_true",
                   help="AMOUNT is the output; allocate output x the industry benchmark")
    p = cmd("transfer", "enterprise: transfer allowances to another enterprise")
    p.add_argument("period", type=int)
    p.add_argument("to")
    p.add_argument("amount")
    p = cmd("surrender", "enterprise: surrender allowances for a period")
    p.add_argument("period", type=int)
    p.add_argument("amount")
    p = cmd("settle", "government: record an enterprise's compliance for a closed period")
    p.add_argument("enterprise")
    p.add_argument("period", type=int)
    p = cmd("offer", "enterprise: offer allowances (escrowed at once)")
    p.add_argument("period", type=int)
    p.add_argument("amount")
    p.add_argument("price", help="price per tonne, minor currency units")
    p.add_argument("--buyer", help="only this enterprise may accept (default: any)")
    p = cmd("accept", "enterprise: buy from an offer (all that is left by default)")
    p.add_argument("offer_id", type=int)
    p.add_argument("amount", nargs="?")
    p = cmd("cancel", "seller or government: cancel an open offer")
    p.add_argument("offer_id", type=int)
    p = cmd("settle-trade", "finance: record a trade's payment reference")
    p.add_argument("trade_id", type=int)
    p.add_argument("payment_ref", help="0x + 32 bytes hex, or text (hashed)")
    cmd("market", "list offers and trades")
    p = cmd("report", "auditor: file a verification report (sets verified emissions)")
    p.add_argument("enterprise")
    p.add_argument("period", type=int)
    p.add_argument("verified", help="verified emissions (amount syntax)")
    p.add_argument("--report-file", help="the report document (its keccak256 is filed)")
    p.add_argument("--report-hash", help="or the report's hash")
    p.add_argument("--uri", default="", help="where the report can be fetched")
    p = cmd("finding", "auditor: file a finding (abnormal or falsified data)")
    p.add_argument("enterprise")
    p.add_argument("period", type=int)
    p.add_argument("kind", choices=["abnormal", "falsified"])
    p.add_argument("corrected", help="corrected emissions (amount syntax)")
    p.add_argument("--evidence-file")
    p.add_argument("--evidence-hash")
    p.add_argument("--uri", default="")
    p.add_argument("--proof", help="proof bundle of the disputed record (mrv-gateway export-proof)")
    p = cmd("confirm-finding", "government: confirm a finding (correct and penalise)")
    p.add_argument("finding_id", type=int)
    p = cmd("reject-finding", "government: reject a finding")
    p.add_argument("finding_id", type=int)
    p.add_argument("--reason", required=True)
    p = cmd("penalty-rate", "government: set a finding kind's penalty rate")
    p.add_argument("kind", choices=["abnormal", "falsified"])
    p.add_argument("bps", type=int, help="basis points of the under-reported amount")
    p = cmd("account", "an enterprise's record, gateways and per-period accounts")
    p.add_argument("enterprise")
    p.add_argument("--period", type=int)
    p = cmd("login", "a one-time link that signs a browser in to the portal's web view as --key")
    p.add_argument("--portal", required=True, help="the portal's URL, e.g. https://portal:8600")
    p.add_argument("--ca-file", help="CA certificate (PEM) of the portal's TLS certificate")
    p = cmd("fund", "send native balance to an account (--rpc alone is enough, no address book)")
    p.add_argument("to")
    p.add_argument("wei", help="amount in wei (1 ether = 10**18 wei)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except ChainUnavailable as e:
        print(f"error: the chain could not be reached: {e}", file=sys.stderr)
        return EXIT_CHAIN
    except ChainRevert as e:
        msg = _revert_text(e)
        if args.json:
            print(json.dumps({"error": e.name, "args": _jsonable(list(e.args_)),
                              "message": msg}))
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_REVERTED
    except ChainRejected as e:
        print(f"error: the node refused the transaction: {e}", file=sys.stderr)
        return EXIT_REVERTED
    except (KeyFileError, OSError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT


if __name__ == "__main__":
    sys.exit(main())
