"""The acceptance scenario (simulator/_scenario.py) against anvil, then read back independently
from the chain: every step's getters and events, per contract, in order."""

from __future__ import annotations

from pathlib import Path

from ledger_client._admin import ROLES, Compliance, FindingKind, FindingStatus, OfferStatus
from ledger_client._format import gateway_key, verify_proof
from simulator import Anvil
from simulator._scenario import T, ledger_scenario, run_scenario


async def _logs(contract: object, event: str) -> list[dict]:
    logs = await getattr(contract.events, event).get_logs(from_block=0)  # type: ignore[attr-defined]
    return [dict(e.args) for e in logs]


async def test_scenario_end_to_end(anvil: Anvil, tmp_path: Path) -> None:
    s = await run_scenario(anvil.url, tmp_path / "scenario")
    m = s.mrv
    A, B = s.ent_a.address, s.ent_b.address
    try:
        reg, led, alw, ver, mkt = m.registry, m.ledger, m.allowances, m.verification, m.market
        # roles
        granted = {(bytes(e["role"]), e["account"]) for e in await _logs(reg, "RoleGranted")}
        for role, acct in (("government", s.government), ("auditor", s.auditor),
                           ("finance", s.finance)):
            assert (ROLES[role], acct.address) in granted
        assert (ROLES["regulator"], s.regulator.address) in granted
        # enterprises and gateways
        certified = await _logs(reg, "EnterpriseCertified")
        assert [(e["account"], e["info"]["industryCode"]) for e in certified] == [
            (A, "D4411"), (B, "C3011")]
        regs = await _logs(reg, "GatewayRegistered")
        assert [(bytes(e["gatewayKey"]), e["enterprise"]) for e in regs] == [
            (gateway_key("plant-a-gw1"), A), (gateway_key("plant-b-gw1"), B)]
        # anchoring: 3 batches each, all in period 1, the chain's headers are the gateways'
        anchored = await _logs(led, "BatchAnchored")
        assert len(anchored) == 6
        for gw in (s.gw_a, s.gw_b):
            for h in gw.headers:
                held = await m.chain.batch(gw.gateway_id, h.seq)
                assert (held.header_hash, held.period) == (h.hash(), 1)
        accrued = await _logs(led, "EmissionsAccrued")
        assert sum(e["co2eScope1G"] + e["co2eScope2G"] for e in accrued
                   if e["enterprise"] == A) == 600 * T
        assert {e["period"] for e in accrued} == {1}
        # allocations: A by benchmark, B directly
        alloc = {e["enterprise"]: e for e in await _logs(alw, "Allocated")}
        assert (alloc[A]["amountG"], alloc[A]["output"], alloc[A]["benchmarkGramsPerUnit"]) == (
            800 * T, 1000, 800_000)
        assert (alloc[B]["amountG"], alloc[B]["output"]) == (300 * T, 0)
        # market: one offer, two trades at 9,000 per tonne, escrow in and out
        offer = await m.call(mkt.functions.getOffer(s.offer_id))
        assert (offer[0], offer[2], offer[5], offer[6]) == (A, OfferStatus.FILLED, 100 * T, 0)
        trades = await _logs(mkt, "Traded")
        assert [(t["seller"], t["buyer"], t["amountG"], t["pricePerTonne"], t["value"])
                for t in trades] == [(A, B, 60 * T, 9_000, 540_000), (A, B, 40 * T, 9_000, 360_000)]
        moves = [(e["from"], e["to"], e["amountG"]) for e in await _logs(alw, "Transferred")]
        market = m.addresses["Market"]
        assert moves == [(A, market, 100 * T), (market, B, 60 * T), (market, B, 40 * T)]
        settled = await _logs(mkt, "SettlementConfirmed")
        assert [(e["tradeId"], e["by"]) for e in settled] == [(s.trade_ids[0], s.finance.address)]
        # verification: two reports, one finding proven on-chain, confirmed by government
        reports = await _logs(ver, "ReportFiled")
        assert [(e["enterprise"], e["verifiedG"], e["reportedG"], e["auditor"]) for e in reports
                ] == [(A, 600 * T, 600 * T, s.auditor.address), (B, 280 * T, 280 * T,
                                                                 s.auditor.address)]
        f = await m.call(ver.functions.finding(s.finding_id))
        assert (f[0], f[2], f[3], f[4], f[6], f[7], f[8], f[9]) == (
            B, FindingKind.FALSIFIED, FindingStatus.CONFIRMED, s.auditor.address, 380 * T,
            280 * T, 300 * T, s.government.address)
        # the disputed record's leaf is in the anchored batch (checked here off-chain as well)
        batch = await m.chain.batch("plant-b-gw1", int(f[13]))
        h, leaf, proof = s.gw_b.proof_of(s.gw_b.records[6].seq)
        assert bytes(f[14]) == leaf and verify_proof(leaf, proof, batch.root)
        assert await m.chain.verify_record("plant-b-gw1", h.seq, leaf, proof)
        confirmed = await _logs(ver, "FindingConfirmed")
        assert [(e["enterprise"], e["previousG"], e["correctedG"], e["penaltyG"])
                for e in confirmed] == [(B, 280 * T, 380 * T, 300 * T)]
        penalties = await _logs(alw, "PenaltyApplied")
        assert [(e["enterprise"], e["penaltyG"], e["deductedG"], e["outstandingG"])
                for e in penalties] == [(B, 300 * T, 300 * T, 0)]
        # the close and the compliance of each enterprise
        assert [e["period"] for e in await _logs(reg, "PeriodClosed")] == [1]
        st = {e["enterprise"]: e for e in await _logs(alw, "ComplianceSettled")}
        assert (st[A]["status"], st[A]["verifiedG"], st[A]["surrenderedG"]) == (
            Compliance.COMPLIANT, 600 * T, 600 * T)
        assert (st[B]["status"], st[B]["verifiedG"], st[B]["surrenderedG"], st[B]["penaltyG"]) == (
            Compliance.NON_COMPLIANT, 380 * T, 100 * T, 300 * T)
        a = await m.period_account(A, 1)
        b = await m.period_account(B, 1)
        assert (a["balance_g"], a["compliance"], a["settled"]) == (100 * T, "compliant",
                                                                   "compliant")
        assert (b["balance_g"], b["obligation_g"], b["compliance"], b["settled"]) == (
            0, 380 * T, "non_compliant", "non_compliant")
        view = await m.account_view(B)
        assert view["name"] == "Lingnan Cement Co." and view["gateways"][0]["last_seq"] == 3
        assert view["periods"][0]["findings"] == [s.finding_id]
        assert "A: reported 600 t, verified 600 t" in s.lines[-2]
        assert s.lines[-1].endswith("non-compliant (short 280 t)")
    finally:
        await m.close()


async def test_ledger_scenario_lines_for_the_demo(anvil: Anvil, tmp_path: Path) -> None:
    lines = await ledger_scenario(anvil.url, tmp_path / "demo")
    assert all(isinstance(x, str) and x for x in lines)
    text = "\n".join(lines)
    for expected in ("regulator granted", "certified A", "registered their gateways",
                     "A reported 600 t, B reported 280 t", "B bought 60 t then 40 t",
                     "Merkle proof on-chain", "280 t -> 380 t", "-> compliant",
                     "-> non-compliant"):
        assert expected in text, expected
    assert (tmp_path / "demo" / "address-book.json").exists()
