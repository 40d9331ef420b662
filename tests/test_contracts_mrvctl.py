"""``mrvctl`` for every role, each with its own key file: a compliance period driven from the
command line; tables and JSON; exit codes 0 ok, 1 reverted (decoded), 2 bad input, 3 no chain."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger_client import EvmChain, Signer, load_account
from ledger_client._admin import make_uscc, uscc_check_char, validate_uscc
from ledger_client._chain import header_tuple
from ledger_client._format import ZERO32, build_header, merkle_proof, record_leaf
from ledger_client._mrvctl import main, parse_amount, parse_time_ns, parse_until_s, parse_wei
from ledger_client._verify import Bundle
from mrv_core._records import Reading
from simulator import DEV_KEYS, Anvil

from .test_contracts_support import T, ns

BIN = Path(sys.executable).parent


class Ctl:
    def __init__(self, anvil: Anvil, work: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.rpc = anvil.url
        self.work = work
        self.book = work / "book.json"
        self.capsys = capsys

    def key(self, name: str) -> str:
        return str(self.work / f"{name}.key")

    def run(self, *args: str, key: str | None = None, rpc: str | None = None,
            as_json: bool = True) -> tuple[int, Any, str]:
        argv = ["--address-book", str(self.book)]
        argv += ["--rpc", rpc or self.rpc]
        if key:
            argv += ["--key", self.key(key)]
        if as_json:
            argv.append("--json")
        self.capsys.readouterr()
        rc = main([*argv, *args])
        cap = self.capsys.readouterr()
        out: Any = cap.out
        if as_json and cap.out.strip():
            out = json.loads(cap.out)
        return rc, out, cap.err

    def ok(self, *args: str, key: str | None = None) -> Any:
        rc, out, err = self.run(*args, key=key)
        assert rc == 0, err
        return out

    def reverted(self, name: str, *args: str, key: str | None = None) -> str:
        rc, out, err = self.run(*args, key=key)
        assert rc == 1, (rc, err)
        assert out["error"] == name, out
        assert f"error: reverted: {name}(" in err
        return err


def _anchor(rpc: str, gw_key: Path, gateway_id: str, signer: Signer, ledger: str,
            recs: list[Reading]) -> None:
    async def go() -> None:
        chain = EvmChain(rpc, contract_address=ledger)
        try:
            h = build_header(gateway_id=gateway_id, seq=1, prev_hash=ZERO32,
                             records=[(r.seq, r.ts_ns, record_leaf(r)) for r in recs],
                             co2e_g=(250 * T, 30 * T, 0))
            await chain.transact(load_account(gw_key), chain.contract.functions.anchorBatch(
                header_tuple(h), signer.sign(h.hash())))
        finally:
            await chain.close()
    asyncio.run(go())


def test_mrvctl_drives_a_compliance_period(anvil: Anvil, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    c = Ctl(anvil, tmp_path, capsys)
    (tmp_path / "regulator.key").write_text(DEV_KEYS[0] + "\n")
    book = c.ok("deploy", key="regulator")
    assert set(book["contracts"]) == {"MrvRegistry", "EmissionsLedger", "Allowances",
                                      "Verification", "Market"}
    assert json.loads(c.book.read_text())["chain_id"] == 31337
    addr = {n: c.ok("new-key", c.key(n))["address"] for n in
            ("gov", "auditor", "finance", "a", "b", "gwa", "gwb")}
    for a in addr.values():
        c.ok("fund", a, str(10**18), key="regulator")
    for role, who in (("government", "gov"), ("auditor", "auditor"), ("finance", "finance")):
        ev = c.ok("grant", role, addr[who], key="regulator")
        assert ev["events"][0]["event"] == "RoleGranted"
    assert c.ok("roles", addr["gov"])["roles"] == ["government"]
    # a role check, decoded with the role's name
    err = c.reverted("AccessControlUnauthorizedAccount", "grant", "auditor", addr["a"], key="gov")
    assert f"({addr['gov']}, regulator role)" in err

    assert c.ok("define-period", "2024-01-01", "2025-01-01", key="gov")["period"] == 1
    assert c.ok("periods")["periods"][0] == {"period": 1, "start_ns": ns(2024),
                                             "end_ns": ns(2025), "closed": False}
    for who, name, ind in (("a", "Pearl River Power", "D4411"), ("b", "Lingnan Cement", "C3011")):
        c.ok("certify", addr[who], "--credit-code", make_uscc(who.encode()), "--name", name,
             "--industry", ind, "--region", "440300", key="gov")
    err = c.reverted("AccessControlUnauthorizedAccount", "certify", addr["gwa"], "--credit-code",
                     make_uscc(b"z"), "--name", "x", "--industry", "x", "--region", "x",
                     key="auditor")
    assert "government role" in err
    sig_a, sig_b = Signer(b"\x0a" * 32), Signer(b"\x0b" * 32)
    # government reserves each gateway id for its enterprise; another enterprise cannot take it
    for gid, who in (("gw-a", "a"), ("gw-b", "b")):
        ev = c.ok("reserve-gateway", gid, addr[who], key="gov")
        assert ev["events"][0]["event"] == "GatewayIdReserved"
    c.reverted("GatewayIdNotReserved", "register-gateway", "gw-b", "--sender", addr["gwa"],
               "--signing-key", "11" * 32, key="a")
    out = c.ok("register-gateway", "gw-a", "--sender", addr["gwa"], "--signing-key",
               sig_a.public_key.hex(), key="a")
    assert out["gateway_id"] == "gw-a"
    c.ok("register-gateway", "gw-b", "--sender", addr["gwb"], "--signing-key",
         sig_b.public_key.hex(), key="b")
    c.reverted("NotActiveEnterprise", "register-gateway", "gw-x", "--sender", addr["gwa"],
               "--signing-key", "11" * 32, key="gov")
    assert c.ok("gateway", "gw-a")["sender"] == addr["gwa"]

    c.ok("benchmark", "1", "D4411", "0.8t", key="gov")
    assert c.ok("allocate", addr["a"], "1", "1000", "--by-output", key="gov")["amount_g"] == 800 * T
    c.ok("allocate", addr["b"], "1", "300t", key="gov")
    c.reverted("NoBenchmark", "allocate", addr["b"], "1", "5", "--by-output", key="gov")

    book = json.loads(c.book.read_text())
    recs_b = [Reading(point_id="kiln.co2", ts_ns=ns(2024, 5) + i, value=float(i), unit="t/h",
                      source="hj212", seq=i + 1, gateway_id="gw-b") for i in range(5)]
    _anchor(c.rpc, tmp_path / "gwb.key", "gw-b", sig_b, book["contracts"]["EmissionsLedger"],
            recs_b)

    oid = c.ok("offer", "1", "100t", "9000", key="a")["offer_id"]
    tr = c.ok("accept", str(oid), "40t", key="b")
    assert (tr["trade_id"], tr["value"]) == (1, 360_000)
    assert c.ok("accept", str(oid), key="b")["trade_id"] == 2  # the rest
    c.reverted("OfferNotOpen", "cancel", str(oid), key="a")
    c.ok("settle-trade", "1", "bank transfer 0001", key="finance")
    # the enterprise's consent for the bank: granted until a date, then withdrawn
    ev = c.ok("grant-access", addr["finance"], "2100-01-01", key="a")
    assert ev["events"][0]["event"] == "DataAccessGranted" and ev["until"] == 4_102_444_800
    c.reverted("NotFinance", "grant-access", addr["auditor"], "2100-01-01", key="a")
    c.reverted("AccessUntilInPast", "grant-access", addr["finance"], "2000-01-01", key="a")
    c.reverted("NotActiveEnterprise", "grant-access", addr["finance"], "2100-01-01",
               key="finance")
    ev = c.ok("revoke-access", addr["finance"], key="a")
    assert ev["events"][0]["event"] == "DataAccessRevoked"
    c.reverted("NoDataAccess", "revoke-access", addr["finance"], key="a")
    mk = c.ok("market")
    assert [t["amount_g"] for t in mk["trades"]] == [40 * T, 60 * T]
    assert mk["offers"][0]["status"] == "filled" and mk["trades"][0]["settled"] is True

    (tmp_path / "report.pdf").write_bytes(b"%PDF verification report")
    assert c.ok("report", addr["b"], "1", "280t", "--report-file",
                str(tmp_path / "report.pdf"), "--uri", "https://r/b", key="auditor")["report_id"] == 1
    # a finding naming one disputed reading, from a proof bundle as an auditor would get it
    leaves = [record_leaf(r) for r in recs_b]
    h = build_header(gateway_id="gw-b", seq=1, prev_hash=ZERO32,
                     records=[(r.seq, r.ts_ns, record_leaf(r)) for r in recs_b],
                     co2e_g=(250 * T, 30 * T, 0))
    bundle = Bundle(record=recs_b[3], header=h, signature=sig_b.sign(h.hash()),
                    proof=merkle_proof(leaves, 3), chain_id=31337,
                    contract=book["contracts"]["EmissionsLedger"])
    (tmp_path / "proof.json").write_text(json.dumps(bundle.to_json()))
    f = c.ok("finding", addr["b"], "1", "falsified", "380t", "--evidence-hash", "ab" * 32,
             "--proof", str(tmp_path / "proof.json"), key="auditor")
    assert f["record"] == "0x" + leaves[3].hex()
    bad = bundle.to_json()
    bad["record"]["value_bits"] = "0x4059000000000000"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    c.reverted("InvalidRecordProof", "finding", addr["b"], "1", "abnormal", "1t",
               "--evidence-hash", "ab" * 32, "--proof", str(tmp_path / "bad.json"),
               key="auditor")
    c.reverted("AccessControlUnauthorizedAccount", "confirm-finding", "1", key="auditor")
    ev = c.ok("confirm-finding", str(f["finding_id"]), key="gov")
    assert [e["event"] for e in ev["events"]] == ["VerifiedEmissionsSet", "PenaltyApplied",
                                                  "FindingConfirmed"]
    fid2 = c.ok("finding", addr["a"], "1", "abnormal", "1t", "--evidence-hash", "cd" * 32,
                key="auditor")["finding_id"]
    c.ok("reject-finding", str(fid2), "--reason", "calibration", key="gov")
    c.ok("penalty-rate", "abnormal", "5000", key="gov")

    c.ok("surrender", "1", "100t", key="b")
    c.ok("close-period", "1", key="gov")
    assert c.ok("settle", addr["b"], "1", key="gov")["status"] == "non_compliant"
    c.reverted("PeriodIsClosed", "surrender", "1", "1t", key="b")

    acct = c.ok("account", addr["b"])
    assert acct["name"] == "Lingnan Cement" and acct["gateways"][0]["last_seq"] == 1
    p1 = acct["periods"][0]
    assert (p1["reported_g"]["total"], p1["verified_g"], p1["penalty_g"], p1["balance_g"],
            p1["compliance"], p1["findings"]) == (280 * T, 380 * T, 300 * T, 0,
                                                  "non_compliant", [1])
    rc, table, _ = c.run("account", addr["b"], as_json=False)
    assert rc == 0
    assert "Lingnan Cement" in table and "non_compliant" in table and "380.000000 t" in table
    rc, table, _ = c.run("market", as_json=False)
    assert rc == 0 and "price/t" in table and "9000" in table


def test_mrvctl_exit_codes(anvil: Anvil, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    c = Ctl(anvil, tmp_path, capsys)
    (tmp_path / "regulator.key").write_text(DEV_KEYS[0] + "\n")
    c.ok("deploy", key="regulator")
    # 2: bad input, caught before anything is sent
    for argv, key in ((("allocate", "0x" + "11" * 20, "1", "12.5x"), "regulator"),
                      (("allocate", "0x" + "11" * 20, "1", "0.5g"), "regulator"),
                      (("certify", "0x" + "11" * 20, "--credit-code", "91440300MA5FQXXXX1",
                        "--name", "n", "--industry", "i", "--region", "r"), "regulator"),
                      (("grant", "auditor", "not-an-address"), "regulator"),
                      (("grant", "auditor", "0x" + "11" * 20), None),
                      (("grant", "auditor", "0x" + "11" * 20), "missing"),
                      (("define-period", "yesterday", "2025-01-01"), "regulator")):
        rc, _, err = c.run(*argv, key=key)
        assert rc == 2 and err.startswith("error:"), (argv, rc, err)
    rc = main(["--address-book", str(tmp_path / "nope.json"), "periods"])
    assert rc == 2
    # 1: reverted, with the decoded custom error
    rc, _, err = c.run("close-period", "1", key="regulator")
    assert rc == 1 and "AccessControlUnauthorizedAccount" in err and "government role" in err
    # 3: the chain cannot be reached
    rc, _, err = c.run("periods", rpc="http://127.0.0.1:9")
    assert rc == 3 and "could not be reached" in err
    # argparse usage errors are exit 2 as well
    with pytest.raises(SystemExit) as ei:
        main(["no-such-command"])
    assert ei.value.code == 2


def test_mrvctl_fund_needs_only_rpc(anvil: Anvil, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    # issue 11, item 16: `fund` read the address book first and failed without one, --rpc or not
    c = Ctl(anvil, tmp_path, capsys)
    (tmp_path / "regulator.key").write_text(DEV_KEYS[0] + "\n")
    assert not c.book.exists()
    to = c.ok("new-key", c.key("fresh"))["address"]
    assert c.ok("fund", to, "123456789", key="regulator") == {"funded": to, "wei": 123456789}
    assert not c.book.exists()

    async def balance() -> int:
        chain = EvmChain(anvil.url)
        try:
            return int(await chain.w3.eth.get_balance(to))
        finally:
            await chain.close()
    assert asyncio.run(balance()) == 123456789
    # bad amounts are bad input (2), before anything is sent
    for wei in ("0", "-5", "1e18", "0x10", str(2**256), "1_000"):
        rc, _, err = c.run("fund", to, wei, key="regulator")
        assert rc == 2 and "wei" in err, (wei, rc, err)
    # without --rpc and without an address book there is nothing to talk to: bad input
    rc = main(["--address-book", str(c.book), "--key", c.key("regulator"), "fund", to, "1"])
    assert rc == 2
    assert asyncio.run(balance()) == 123456789


def test_mrvctl_console_script(anvil: Anvil, tmp_path: Path) -> None:
    (tmp_path / "r.key").write_text(DEV_KEYS[0] + "\n")
    book = tmp_path / "b.json"
    r = subprocess.run([str(BIN / "mrvctl"), "--rpc", anvil.url, "--key", str(tmp_path / "r.key"),
                        "--address-book", str(book), "deploy"], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert "EmissionsLedger" in r.stdout and "Market" in r.stdout
    r = subprocess.run([str(BIN / "mrvctl"), "--address-book", str(book), "--json", "periods"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0 and json.loads(r.stdout) == {"periods": []}


def test_parsers() -> None:
    assert parse_amount("12.5t") == 12_500_000
    assert parse_amount("300 kg") == 300_000
    assert parse_amount("7") == 7 and parse_amount("7g") == 7
    for bad in ("", "-1", "1.5", "1e6", "3 tonnes"):
        with pytest.raises(ValueError):
            parse_amount(bad)
    assert parse_time_ns("2024-01-01") == ns(2024)
    assert parse_time_ns("2024-01-01T08:00:00+08:00") == ns(2024)
    assert parse_time_ns("123") == 123
    # GB 32100-2015 check characters of published codes (Huawei, Tencent, Alibaba)
    for code in ("914403001922038216", "9144030071526726XG", "91330100799655058B",
                 "91350100M000100Y43"):
        assert uscc_check_char(code[:17]) == code[17]
    assert validate_uscc("91350100m000100y43") == "91350100M000100Y43"
    with pytest.raises(ValueError, match="check character"):
        validate_uscc("91350100M000100Y44")
    with pytest.raises(ValueError, match="not allowed"):
        validate_uscc("91350100M000100I43")
    assert validate_uscc(make_uscc(b"x")) == make_uscc(b"x")
    assert parse_until_s("2100-01-01") == 4_102_444_800
    assert parse_until_s("2100-01-01T08:00:00+08:00") == 4_102_444_800
    assert parse_until_s("123") == 123
    for bad in ("0", "-5", "soon", str(2**64), "9" * 5000):
        with pytest.raises(ValueError):
            parse_until_s(bad)


def test_parsers_refuse_out_of_range_values_before_sending() -> None:
    # times beyond the contracts' int64 nanoseconds (years 1677 to 2262) were passed on
    for bad in ("9999-12-31", "1500-01-01", str(2**63), str(-(2**63) - 1), "9" * 5000):
        with pytest.raises(ValueError):
            parse_time_ns(bad)
    assert parse_time_ns(str(2**63 - 1)) == 2**63 - 1
    assert parse_time_ns("2262-04-11T23:47:16") == 9_223_372_036 * 10**9
    # amounts beyond uint128 grams, and runs of digits, are refused before any arithmetic
    assert parse_amount(str(2**128 - 1)) == 2**128 - 1
    for bad in (str(2**128), "9" * 5000 + "t", "\u0663t"):  # Arabic-Indic three
        with pytest.raises(ValueError):
            parse_amount(bad)


def test_address_books_are_checked_before_they_are_parsed(tmp_path: Path) -> None:
    from ledger_client._admin import MAX_ADDRESS_BOOK_BYTES, AddressBookError, read_address_book

    good = {"chain_id": 31337, "contracts": {"EmissionsLedger": "0x" + "ab" * 20}}
    p = tmp_path / "book.json"
    p.write_text(json.dumps(good))
    assert read_address_book(p) == good
    for text, why in (("[" * 100_000, "nested deeper"),
                      ('{"contracts": ' + "[" * 50 + "]" * 50 + "}", "nested deeper|contracts"),
                      ('{"contracts": {"X": "0x12"}}', "contracts.X"),
                      ('{"contracts": {}, "chain_id": true}', "chain_id"),
                      ('{"contracts": {}, "chain_id": ' + "9" * 5000 + "}", "not JSON"),
                      ('{"contracts": {}, "rpc_url": 5}', "rpc_url"),
                      ("\udcff", "UTF-8|not JSON"), ("[]", "no 'contracts'")):
        p.write_text(text, errors="surrogateescape")
        with pytest.raises(AddressBookError, match=why):
            read_address_book(p)
    p.write_bytes(b" " * (MAX_ADDRESS_BOOK_BYTES + 1))
    with pytest.raises(AddressBookError, match="larger than"):
        read_address_book(p)
    # mrvctl: bad input (2), not a crash, for the 65,536 "[" (and far deeper)
    p.write_text("[" * 1_000_000)
    r = subprocess.run([str(BIN / "mrvctl"), "--address-book", str(p), "periods"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "nested deeper" in r.stderr, (r.returncode, r.stderr[-300:])


_UNIT_G = {"g": 1, "kg": 1_000, "t": 1_000_000}


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**128 - 1), st.sampled_from(sorted(_UNIT_G)))
def test_amount_round_trips_in_every_unit(grams: int, unit: str) -> None:
    # write `grams` in `unit` with exact decimal arithmetic; it must parse back to `grams`
    scale = _UNIT_G[unit]
    whole, rest = divmod(grams, scale)
    digits = len(str(scale)) - 1
    text = f"{whole}.{rest:0{digits}d}{unit}" if rest else f"{whole}{unit}"
    assert parse_amount(text) == grams


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**12), st.integers(1, 9))
def test_amount_below_a_gram_is_refused(whole_t: int, extra_digit: int) -> None:
    # seven decimals of a tonne are a tenth of a gram: never silently rounded
    with pytest.raises(ValueError, match="whole number of grams"):
        parse_amount(f"{whole_t}.000000{extra_digit}t")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789ABCDEFGHJKLMNPQRTUWXY", min_size=17, max_size=17),
       st.sampled_from("0123456789ABCDEFGHJKLMNPQRTUWXY"))
def test_exactly_one_check_character_fits(first17: str, last: str) -> None:
    weights = [pow(3, i, 31) for i in range(17)]  # GB 32100-2015, from first principles
    chars = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    expected = chars[(31 - sum(chars.index(c) * w for c, w in zip(first17, weights, strict=True))
                      % 31) % 31]
    if last == expected:
        assert validate_uscc(first17 + last) == first17 + last
    else:
        with pytest.raises(ValueError, match="check character"):
            validate_uscc(first17 + last)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 2**256 - 1))
def test_wei_parses_every_uint256(wei: int) -> None:
    assert parse_wei(str(wei)) == wei
