"""The MRV ledger end to end, every role with its own key: a scripted compliance period.

Regulator sets up roles; government defines the 2024 period, certifies two enterprises and
allocates allowances (A by its industry benchmark); each enterprise registers a gateway; the
gateways anchor signed batches of real readings; A sells allowances to B on the market; an
auditor reports on both, and files a finding on B naming one disputed reading with its Merkle
proof (checked on-chain against the anchored root); government confirms it, so B's verified
emissions are corrected and a penalty is deducted; both surrender; the period closes and each
enterprise's compliance is settled. Every step is checked through getters and events.

``await ledger_scenario(rpc_url, work)`` returns printable lines (the demo prints them);
`run_scenario` returns the whole `Scenario` for tests.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from eth_account.signers.local import LocalAccount

from ledger_client import (
    ZERO32,
    BatchHeader,
    ChainRevert,
    Compliance,
    Event,
    EvmChain,
    FindingKind,
    FindingStatus,
    Mrv,
    Signer,
    build_header,
    deploy_system,
    fund,
    gateway_key,
    generate_account,
    header_tuple,
    keccak256,
    make_uscc,
    merkle_proof,
    record_leaf,
    write_address_book,
)
from mrv_core import Reading
from simulator._anvil import DEV_KEYS

T = 1_000_000  # grams per tonne
#: The scenario's regulator: a dev key no other part of the demo signs with.
REGULATOR_KEY_INDEX = 3


class ScenarioFailed(AssertionError):
    """A step's outcome, read back from the chain, was not what the scenario expects."""


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise ScenarioFailed(what)


def _ns(y: int, m: int, d: int, hh: int = 0) -> int:
    return int(dt.datetime(y, m, d, hh, tzinfo=dt.UTC).timestamp()) * 10**9


@dataclass
class SimGateway:
    """A gateway's signing side, anchoring directly with headers built as the gateway does."""

    gateway_id: str
    account: LocalAccount
    signer: Signer
    records: list[Reading] = field(default_factory=list)
    headers: list[BatchHeader] = field(default_factory=list)

    def batch(self, start_ns: int, n: int, co2e_t: tuple[float, float, float]) -> BatchHeader:
        first = len(self.records) + 1
        recs = [Reading(point_id="boiler.gas_volume", ts_ns=start_ns + i * 60 * 10**9,
                        value=1000.0 + first + i, unit="Nm3", source="modbus:boiler-gas",
                        seq=first + i, gateway_id=self.gateway_id) for i in range(n)]
        self.records.extend(recs)
        prev = self.headers[-1].hash() if self.headers else ZERO32
        h = build_header(gateway_id=self.gateway_id, seq=len(self.headers) + 1, prev_hash=prev,
                         records=[(r.seq, r.ts_ns, record_leaf(r)) for r in recs],
                         co2e_g=(int(co2e_t[0] * T), int(co2e_t[1] * T), int(co2e_t[2] * T)))
        self.headers.append(h)
        return h

    def proof_of(self, record_seq: int) -> tuple[BatchHeader, bytes, list[bytes]]:
        """The batch header, leaf and Merkle proof of one record."""
        for h in self.headers:
            if h.first_record_seq <= record_seq <= h.last_record_seq:
                recs = self.records[h.first_record_seq - 1: h.last_record_seq]
                leaves = [record_leaf(r) for r in recs]
                i = record_seq - h.first_record_seq
                return h, leaves[i], merkle_proof(leaves, i)
        raise KeyError(record_seq)

    async def anchor(self, mrv: Mrv, h: BatchHeader) -> list[Event]:
        fn = mrv.ledger.functions.anchorBatch(header_tuple(h), self.signer.sign(h.hash()))
        _, ev = await mrv.send(self.account, fn)
        return ev


@dataclass
class Scenario:
    mrv: Mrv
    lines: list[str]
    regulator: LocalAccount
    government: LocalAccount
    auditor: LocalAccount
    finance: LocalAccount
    ent_a: LocalAccount
    ent_b: LocalAccount
    gw_a: SimGateway
    gw_b: SimGateway
    period: int
    offer_id: int = 0
    trade_ids: list[int] = field(default_factory=list)
    report_ids: dict[str, int] = field(default_factory=dict)
    finding_id: int = 0
    events: dict[str, list[Event]] = field(default_factory=dict)


async def _setup(rpc_url: str, work: Path) -> Scenario:
    keys = work / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    from eth_account import Account

    regulator: LocalAccount = Account.from_key(DEV_KEYS[REGULATOR_KEY_INDEX])
    role = {n: generate_account(keys / f"{n}.key") for n in
            ("government", "auditor", "finance", "enterprise-a", "enterprise-b",
             "gateway-a", "gateway-b")}
    chain = EvmChain(rpc_url)
    book = await deploy_system(chain, regulator)
    write_address_book(work / "address-book.json", book)
    mrv = Mrv(chain, book["contracts"])
    for acct in role.values():
        await fund(chain, regulator, acct.address, 10**19)
    return Scenario(
        mrv=mrv, lines=[], regulator=regulator, government=role["government"],
        auditor=role["auditor"], finance=role["finance"], ent_a=role["enterprise-a"],
        ent_b=role["enterprise-b"],
        gw_a=SimGateway("plant-a-gw1", role["gateway-a"], Signer.generate(keys / "gw-a.ed25519")),
        gw_b=SimGateway("plant-b-gw1", role["gateway-b"], Signer.generate(keys / "gw-b.ed25519")),
        period=0)


async def run_scenario(rpc_url: str, work: Path) -> Scenario:
    """Run the whole scenario on a fresh deployment; raises `ScenarioFailed` at the first
    outcome that is not as expected. The caller closes ``result.mrv``."""
    s = await _setup(rpc_url, work)
    try:
        await _play(s)
    except BaseException:
        await s.mrv.close()
        raise
    return s


async def _play(s: Scenario) -> None:
    m, say = s.mrv, s.lines.append
    a_addr, b_addr = s.ent_a.address, s.ent_b.address
    say(f"contracts deployed: {', '.join(f'{k} {v}' for k, v in m.addresses.items())}")

    # 1. the regulator grants the roles
    for r, acct in (("government", s.government), ("auditor", s.auditor),
                    ("finance", s.finance)):
        ev = await m.grant(s.regulator, r, acct.address)
        _expect([e.name for e in ev] == ["RoleGranted"], f"RoleGranted for {r}")
        _expect(await m.has_role(r, acct.address), f"{r} role held")
    say("regulator granted the government, auditor and finance roles")

    # 2. government: the 2024 compliance period, two enterprises, a benchmark, allocations
    s.period = await m.define_period(s.government, _ns(2024, 1, 1), _ns(2025, 1, 1))
    _expect(s.period == 1, "period 1 defined")
    await m.certify(s.government, a_addr, credit_code=make_uscc(b"enterprise-a"),
                    name="Pearl River Power Co.", industry="D4411", region="440300")
    await m.certify(s.government, b_addr, credit_code=make_uscc(b"enterprise-b"),
                    name="Lingnan Cement Co.", industry="C3011", region="440600")
    for addr in (a_addr, b_addr):
        _expect((await m.enterprise(addr))["status"] == "active", "enterprise certified")
    await m.set_benchmark(s.government, s.period, "D4411", 800_000)  # 0.8 tCO2e per MWh
    ev_a = await m.allocate(s.government, a_addr, s.period, 1000, by_output=True)  # 1,000 MWh
    _expect(ev_a["amountG"] == 800 * T and ev_a["benchmarkGramsPerUnit"] == 800_000,
            "A allocated 800 t by benchmark")
    ev_b = await m.allocate(s.government, b_addr, s.period, 300 * T)
    _expect(ev_b["amountG"] == 300 * T, "B allocated 300 t")
    say("government defined period 1 (2024), certified A (power, D4411) and B (cement,"
        " C3011); allocated A 800 t (1,000 MWh x 0.8 t/MWh benchmark) and B 300 t")

    # 3. government reserves each gateway id for its enterprise; each enterprise registers it
    for ent, gw in ((s.ent_a, s.gw_a), (s.ent_b, s.gw_b)):
        await m.reserve_gateway_id(s.government, gw.gateway_id, ent.address)
        key = await m.register_gateway(ent, gw.gateway_id, gw.account.address,
                                       gw.signer.public_key)
        _expect(key == gateway_key(gw.gateway_id), "gateway key")
        g = await m.chain.gateway(gw.gateway_id)
        _expect(g.sender == gw.account.address and g.active, "gateway registered")
    say("government reserved plant-a-gw1 for A and plant-b-gw1 for B; A and B registered"
        " their gateways (each with its own sender and Ed25519 key)")

    # 4. the gateways anchor signed batches of readings from 2024
    for month, (ta, tb) in zip((3, 6, 9), ((200, 90), (250, 100), (150, 90)), strict=True):
        for gw, t, n in ((s.gw_a, ta, 8), (s.gw_b, tb, 5)):
            h = gw.batch(_ns(2024, month, 1), n, (t * 0.9, t * 0.1, 0))
            ev = await gw.anchor(m, h)
            acc = [e for e in ev if e.name == "EmissionsAccrued"]
            _expect(len(acc) == 1 and acc[0]["period"] == s.period, "batch accrued to period 1")
    rep_a = await m.period_account(a_addr, s.period)
    rep_b = await m.period_account(b_addr, s.period)
    _expect(rep_a["reported_g"]["total"] == 600 * T and rep_a["batches"] == 3, "A reported 600 t")
    _expect(rep_b["reported_g"]["total"] == 280 * T and rep_b["batches"] == 3, "B reported 280 t")
    say("gateways anchored 3 batches each: A reported 600 t, B reported 280 t in period 1")

    # 5. the market: A offers 100 t to anyone; B buys 60 t, then the remaining 40 t
    s.offer_id = await m.offer(s.ent_a, s.period, 100 * T, 9_000)
    _expect(await m.call(m.allowances.functions.balanceOf(s.period, m.addresses["Market"]))
            == 100 * T, "100 t escrowed in the market")
    for amount in (60 * T, 40 * T):
        tr = await m.accept(s.ent_b, s.offer_id, amount)
        _expect(tr["amountG"] == amount and tr["pricePerTonne"] == 9_000
                and tr["value"] == amount // T * 9_000, "trade volume, price and value")
        s.trade_ids.append(int(tr["tradeId"]))
    off = await m.call(m.market.functions.getOffer(s.offer_id))
    _expect(int(off[2]) == 2 and int(off[6]) == 0, "offer filled")
    await m.confirm_settlement(s.finance, s.trade_ids[0], keccak256(b"bank transfer #1"))
    bal_a = await m.call(m.allowances.functions.balanceOf(s.period, a_addr))
    bal_b = await m.call(m.allowances.functions.balanceOf(s.period, b_addr))
    _expect((bal_a, bal_b) == (700 * T, 400 * T), "balances after the trades")
    say("market: A offered 100 t at 90.00/t (9,000 fen); B bought 60 t then 40 t"
        " (2 trades, 900,000 fen); finance recorded trade 1's payment;"
        " balances A 700 t, B 400 t")

    # 6. the auditor reports on A and B
    for name, addr, t in (("A", a_addr, 600), ("B", b_addr, 280)):
        rid = await m.file_report(s.auditor, addr, s.period, t * T,
                                  keccak256(f"verification report {name} 2024".encode()),
                                  f"https://reports.example/{name}/2024.pdf")
        s.report_ids[name] = rid
        r = await m.call(m.verification.functions.report(rid))
        _expect(int(r[4]) == t * T and int(r[5]) == t * T, "report holds verified and reported")
    say("auditor verified A at 600 t and B at 280 t (reports 1 and 2, hashes on-chain)")

    # 7. the auditor files a finding on B: one falsified reading, proven on-chain
    disputed = s.gw_b.records[6]  # in B's second batch
    h, leaf, proof = s.gw_b.proof_of(disputed.seq)
    bad = [bytes(32), *proof[1:]]
    try:
        await m.file_finding(s.auditor, b_addr, s.period, FindingKind.FALSIFIED, 380 * T,
                             keccak256(b"evidence"), gateway_id=s.gw_b.gateway_id,
                             batch_seq=h.seq, record_leaf=leaf, proof=bad)
        raise ScenarioFailed("a finding with a wrong Merkle proof was accepted")
    except ChainRevert as e:
        _expect(e.name == "InvalidRecordProof", f"wrong proof rejected ({e.name})")
    s.finding_id = await m.file_finding(
        s.auditor, b_addr, s.period, FindingKind.FALSIFIED, 380 * T,
        keccak256(b"site inspection 2025-02: gas meter bypass"), "https://evidence.example/B/1",
        gateway_id=s.gw_b.gateway_id, batch_seq=h.seq, record_leaf=leaf, proof=proof)
    f = await m.call(m.verification.functions.finding(s.finding_id))
    _expect(int(f[3]) == FindingStatus.FILED and bytes(f[14]) == leaf, "finding filed")
    say(f"auditor filed finding {s.finding_id} on B: falsified data, corrected to 380 t;"
        f" disputed reading #{disputed.seq} ({disputed.point_id}) proven in batch {h.seq}"
        " by its Merkle proof on-chain (a tampered proof was rejected)")

    # 8. government confirms: B is corrected and penalised
    ev = await m.confirm_finding(s.government, s.finding_id)
    s.events["confirm"] = ev
    pen = next(e for e in ev if e.name == "PenaltyApplied")
    _expect(pen["penaltyG"] == 300 * T and pen["deductedG"] == 300 * T,
            "penalty 3 x 100 t deducted")
    acct_b = await m.period_account(b_addr, s.period)
    _expect(acct_b["verified_g"] == 380 * T and acct_b["balance_g"] == 100 * T,
            "B corrected to 380 t, 100 t left")
    say("government confirmed the finding: B's verified emissions 280 t -> 380 t; penalty"
        " 3 x 100 t = 300 t deducted from B's balance (100 t left)")

    # 9. surrender, close, settle
    await m.surrender(s.ent_a, s.period, 600 * T)
    await m.surrender(s.ent_b, s.period, 100 * T)
    await m.close_period(s.government, s.period)
    try:
        await m.surrender(s.ent_b, s.period, 1)
        raise ScenarioFailed("a surrender after the close was accepted")
    except ChainRevert as e:
        _expect(e.name == "PeriodIsClosed", "no surrender after close")
    st_a = await m.settle(s.government, a_addr, s.period)
    st_b = await m.settle(s.government, b_addr, s.period)
    _expect(st_a["status"] == Compliance.COMPLIANT, "A compliant")
    _expect(st_b["status"] == Compliance.NON_COMPLIANT, "B non-compliant")
    say("A surrendered 600 t, B 100 t; government closed period 1 and settled:")
    for name, addr in (("A", a_addr), ("B", b_addr)):
        p = await m.period_account(addr, s.period)
        short = max(0, p["obligation_g"] - p["surrendered_g"])
        say(f"  {name}: reported {p['reported_g']['total'] / T:g} t, verified"
            f" {p['verified_g'] / T:g} t, penalty {p['penalty_g'] / T:g} t, surrendered"
            f" {p['surrendered_g'] / T:g} t, left {p['balance_g'] / T:g} t ->"
            f" {p['settled'].replace('_', '-')}" + (f" (short {short / T:g} t)" if short else ""))


async def ledger_scenario(rpc_url: str, work: Path) -> list[str]:
    """Run the scenario on a fresh deployment at ``rpc_url`` (keys and address book under
    ``work``); returns printable lines. Raises `ScenarioFailed` when a check fails."""
    s = await run_scenario(rpc_url, work)
    await s.mrv.close()
    return s.lines
