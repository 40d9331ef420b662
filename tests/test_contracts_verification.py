"""Verification: reports, findings with on-chain Merkle proofs of a disputed record,
government's decision (correct and penalise), penalty rates; every rule and role violation."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ledger_client._admin import ROLES, FindingKind, FindingStatus
from ledger_client._format import gateway_key, keccak256, merkle_proof, record_leaf
from mrv_core._records import Reading
from simulator import Anvil

from .test_contracts_support import P2024, P_OPEN, Sys, T, fresh_system, names, new_account, reverts

UNAUTHORIZED = "AccessControlUnauthorizedAccount"
H = keccak256(b"evidence")


@pytest.fixture
async def s(anvil: Anvil) -> AsyncIterator[Sys]:
    sys_ = await fresh_system(anvil.url)
    yield sys_
    await sys_.mrv.close()


def _readings(gw: str, first: int, ts: int, n: int) -> list[Reading]:
    return [Reading(point_id="stack.co2", ts_ns=ts + i * 10**9, value=float(400 + i), unit="ppm",
                    source="hj212:cems", seq=first + i, gateway_id=gw) for i in range(n)]


async def _anchor_b(s: Sys, ts: int, co2e_t: int, n: int = 6) -> list[Reading]:
    """Anchor one batch of real readings from gateway B; returns them."""
    recs = _readings("gw-b", s.gw_b.next_record, ts, n)
    h = s.gw_b.header(ts, leaves=[record_leaf(r) for r in recs], co2e=(co2e_t * T, 0, 0))
    await s.gw_b.anchor(s.mrv, h)
    return recs


def _proof(recs: list[Reading], i: int) -> tuple[bytes, list[bytes]]:
    leaves = [record_leaf(r) for r in recs]
    return leaves[i], merkle_proof(leaves, i)


async def test_report(s: Sys) -> None:
    await _anchor_b(s, P2024[0], 120)
    rid = await s.mrv.file_report(s.auditor, s.b.address, 1, 125 * T, keccak256(b"r1"), "ipfs://r1")
    assert rid == 1
    logs = await s.ver.events.ReportFiled.get_logs(from_block=0)
    a = logs[-1].args
    assert (a.reportId, a.enterprise, a.period, a.auditor, a.verifiedG, a.reportedG,
            bytes(a.reportHash), a.uri) == (1, s.b.address, 1, s.auditor.address, 125 * T,
                                            120 * T, keccak256(b"r1"), "ipfs://r1")
    r = await s.call(s.ver.functions.report(1))
    assert (r[0], r[1], r[2], r[4], r[5], bytes(r[6]), r[7]) == (
        s.b.address, 1, s.auditor.address, 125 * T, 120 * T, keccak256(b"r1"), "ipfs://r1")
    acct = await s.mrv.period_account(s.b.address, 1)
    assert (acct["verified_g"], acct["latest_report"]) == (125 * T, 1)
    # a later report supersedes
    rid2 = await s.mrv.file_report(s.auditor, s.b.address, 1, 121 * T, keccak256(b"r2"), "")
    assert rid2 == 2
    assert await s.call(s.ver.functions.latestReport(s.b.address, 1)) == 2
    assert (await s.mrv.period_account(s.b.address, 1))["verified_g"] == 121 * T
    assert await s.call(s.ver.functions.reportCount()) == 2
    await reverts(s.call(s.ver.functions.report(3)), "UnknownReport", 3)


async def test_report_rules(s: Sys) -> None:
    x = new_account().address
    await reverts(s.mrv.file_report(s.auditor, x, 1, T, H, ""), "UnknownEnterprise", x)
    await reverts(s.mrv.file_report(s.auditor, s.a.address, 9, T, H, ""), "UnknownPeriod", 9)
    await reverts(s.mrv.file_report(s.auditor, s.a.address, 1, T, b"\x00" * 32, ""),
                  "EmptyReportHash")
    # a suspended enterprise is still audited
    await s.mrv.suspend(s.gov, s.a.address, "x")
    await s.mrv.file_report(s.auditor, s.a.address, 1, T, H, "")
    await s.mrv.close_period(s.gov, 1)
    await reverts(s.mrv.file_report(s.auditor, s.a.address, 1, T, H, ""), "PeriodIsClosed", 1)


@pytest.mark.parametrize("who", ["gov", "regulator", "finance", "a", "stranger"])
async def test_only_auditors_report_and_file_findings(s: Sys, who: str) -> None:
    caller = getattr(s, who)
    need = (caller.address, ROLES["auditor"])
    await reverts(s.mrv.file_report(caller, s.a.address, 1, T, H, ""), UNAUTHORIZED, *need)
    await reverts(s.mrv.file_finding(caller, s.a.address, 1, FindingKind.ABNORMAL, T, H),
                  UNAUTHORIZED, *need)


@pytest.mark.parametrize("who", ["auditor", "regulator", "finance", "a", "stranger"])
async def test_only_government_decides_findings(s: Sys, who: str) -> None:
    caller = getattr(s, who)
    fid = await s.mrv.file_finding(s.auditor, s.a.address, 1, FindingKind.ABNORMAL, T, H)
    need = (caller.address, ROLES["government"])
    await reverts(s.mrv.confirm_finding(caller, fid), UNAUTHORIZED, *need)
    await reverts(s.mrv.reject_finding(caller, fid, "no"), UNAUTHORIZED, *need)
    await reverts(s.mrv.set_penalty_rate(caller, FindingKind.FALSIFIED, 1), UNAUTHORIZED, *need)


async def test_finding_with_a_disputed_record_is_proven_on_chain(s: Sys) -> None:
    await _anchor_b(s, P2024[0], 100)
    recs = await _anchor_b(s, P2024[0] + 10**12, 100, n=7)
    leaf, proof = _proof(recs, 4)
    fid = await s.mrv.file_finding(s.auditor, s.b.address, 1, FindingKind.FALSIFIED, 260 * T,
                                   keccak256(b"site photos"), "https://evidence/1",
                                   gateway_id="gw-b", batch_seq=2, record_leaf=leaf, proof=proof)
    logs = await s.ver.events.FindingFiled.get_logs(from_block=0)
    a = logs[-1].args
    assert (a.findingId, a.enterprise, a.period, a.auditor, a.kind, a.correctedG,
            bytes(a.evidenceHash), bytes(a.gatewayKey), a.batchSeq, bytes(a.recordLeaf)) == (
        fid, s.b.address, 1, s.auditor.address, FindingKind.FALSIFIED, 260 * T,
        keccak256(b"site photos"), gateway_key("gw-b"), 2, leaf)
    f = await s.call(s.ver.functions.finding(fid))
    assert (f[0], f[1], f[2], f[3], f[4], f[6], bytes(f[12]), f[13], bytes(f[14]), f[15]) == (
        s.b.address, 1, FindingKind.FALSIFIED, FindingStatus.FILED, s.auditor.address, 260 * T,
        gateway_key("gw-b"), 2, leaf, "https://evidence/1")
    assert list(await s.call(s.ver.functions.findingsOf(s.b.address, 1))) == [fid]
    assert await s.call(s.ver.functions.findingCount()) == 1


async def test_finding_record_checks(s: Sys) -> None:
    recs = await _anchor_b(s, P2024[0], 100)
    leaf, proof = _proof(recs, 2)
    later = await _anchor_b(s, P_OPEN[0] + 10**9, 5)  # batch 2 is in period 2
    l2, p2 = _proof(later, 0)

    async def finding(**kw: object) -> object:
        base: dict[str, object] = {"gateway_id": "gw-b", "batch_seq": 1, "record_leaf": leaf,
                                   "proof": proof}
        base.update(kw)
        ent = base.pop("enterprise", s.b.address)
        period = base.pop("period", 1)
        return await s.mrv.file_finding(s.auditor, ent, period, FindingKind.ABNORMAL,  # type: ignore[arg-type]
                                        200 * T, H, **base)  # type: ignore[arg-type]

    # a tampered reading (value changed) is not in the anchored batch
    fake = Reading(**{**{k: getattr(recs[2], k) for k in (
        "point_id", "ts_ns", "unit", "source", "seq", "gateway_id")}, "value": 999.0})
    await reverts(finding(record_leaf=record_leaf(fake)), "InvalidRecordProof",
                  gateway_key("gw-b"), 1, record_leaf(fake))
    await reverts(finding(proof=proof[:-1]), "InvalidRecordProof")
    await reverts(finding(proof=[]), "InvalidRecordProof")
    await reverts(finding(batch_seq=7), "UnknownBatch", gateway_key("gw-b"), 7)
    await reverts(finding(enterprise=s.a.address), "GatewayNotOfEnterprise", gateway_key("gw-b"),
                  s.a.address)
    await reverts(finding(gateway_id="nobody"), "UnknownGateway", gateway_key("nobody"))
    await reverts(finding(batch_seq=2, record_leaf=l2, proof=p2), "BatchOutsidePeriod",
                  gateway_key("gw-b"), 2, 2)
    await reverts(finding(gateway_id=None), "IncompleteRecordRef")
    await reverts(finding(gateway_id=None, batch_seq=0, record_leaf=b"\x00" * 32, proof=[leaf]),
                  "IncompleteRecordRef")
    # and the right one, in period 2, passes
    assert await finding(batch_seq=2, record_leaf=l2, proof=p2, period=2) == 1


async def test_finding_rules(s: Sys) -> None:
    x = new_account().address
    await reverts(s.mrv.file_finding(s.auditor, x, 1, FindingKind.ABNORMAL, T, H),
                  "UnknownEnterprise", x)
    await reverts(s.mrv.file_finding(s.auditor, s.a.address, 5, FindingKind.ABNORMAL, T, H),
                  "UnknownPeriod", 5)
    await reverts(s.mrv.file_finding(s.auditor, s.a.address, 1, FindingKind.NONE, T, H),
                  "BadFindingKind", 0)
    await reverts(s.mrv.file_finding(s.auditor, s.a.address, 1, FindingKind.ABNORMAL, T,
                                     b"\x00" * 32), "EmptyEvidenceHash")
    await reverts(s.call(s.ver.functions.finding(1)), "UnknownFinding", 1)
    # a finding may come after the period closed
    await s.mrv.close_period(s.gov, 1)
    assert await s.mrv.file_finding(s.auditor, s.a.address, 1, FindingKind.ABNORMAL, T, H) == 1


async def test_confirm_corrects_and_penalises(s: Sys) -> None:
    await _anchor_b(s, P2024[0], 280)
    await s.mrv.allocate(s.gov, s.b.address, 1, 500 * T)
    await s.mrv.file_report(s.auditor, s.b.address, 1, 280 * T, H, "")
    fid = await s.mrv.file_finding(s.auditor, s.b.address, 1, FindingKind.FALSIFIED, 380 * T, H)
    ev = await s.mrv.confirm_finding(s.gov, fid)
    assert names(ev) == ["VerifiedEmissionsSet", "PenaltyApplied", "FindingConfirmed"]
    fc = ev[2]
    assert (fc["findingId"], fc["enterprise"], fc["period"], fc["by"], fc["previousG"],
            fc["correctedG"], fc["penaltyG"]) == (fid, s.b.address, 1, s.gov.address, 280 * T,
                                                  380 * T, 300 * T)
    assert (ev[1]["penaltyG"], ev[1]["deductedG"], ev[1]["outstandingG"]) == (300 * T, 300 * T, 0)
    acct = await s.mrv.period_account(s.b.address, 1)
    assert (acct["verified_g"], acct["penalty_g"], acct["balance_g"], acct["obligation_g"]) == (
        380 * T, 300 * T, 200 * T, 380 * T)
    f = await s.call(s.ver.functions.finding(fid))
    assert (f[3], f[7], f[8], f[9]) == (FindingStatus.CONFIRMED, 280 * T, 300 * T, s.gov.address)
    assert await s.call(s.ver.functions.isCorrected(s.b.address, 1))
    # a report can no longer undo the correction
    await reverts(s.mrv.file_report(s.auditor, s.b.address, 1, 280 * T, H, ""),
                  "AlreadyCorrected", s.b.address, 1)
    await reverts(s.mrv.confirm_finding(s.gov, fid), "FindingNotPending", fid,
                  FindingStatus.CONFIRMED)
    await reverts(s.mrv.reject_finding(s.gov, fid, "x"), "FindingNotPending")
    await reverts(s.mrv.confirm_finding(s.gov, 99), "UnknownFinding", 99)


async def test_penalty_base_and_rates(s: Sys) -> None:
    """Without a report the reported figure is the base; a lower correction costs nothing;
    rates follow the kind and are set by government."""
    f = s.ver.functions
    assert (await s.call(f.penaltyRate(FindingKind.ABNORMAL)),
            await s.call(f.penaltyRate(FindingKind.FALSIFIED))) == (10_000, 30_000)
    ev = await s.mrv.set_penalty_rate(s.gov, FindingKind.ABNORMAL, 5_000)
    assert (ev["kind"], ev["bps"], ev["by"]) == (FindingKind.ABNORMAL, 5_000, s.gov.address)
    await reverts(s.mrv.set_penalty_rate(s.gov, FindingKind.ABNORMAL, 100_001), "BadPenaltyRate",
                  100_001)
    await reverts(s.mrv.set_penalty_rate(s.gov, FindingKind.NONE, 1), "BadFindingKind", 0)
    await _anchor_b(s, P2024[0], 100)
    fid = await s.mrv.file_finding(s.auditor, s.b.address, 1, FindingKind.ABNORMAL, 140 * T, H)
    ev2 = await s.mrv.confirm_finding(s.gov, fid)
    fc = next(e for e in ev2 if e.name == "FindingConfirmed")
    assert (fc["previousG"], fc["penaltyG"]) == (100 * T, 20 * T)  # (140 - 100) x 0.5
    # nothing allocated: the whole penalty is outstanding
    pen = next(e for e in ev2 if e.name == "PenaltyApplied")
    assert (pen["deductedG"], pen["outstandingG"]) == (0, 20 * T)
    fid2 = await s.mrv.file_finding(s.auditor, s.b.address, 1, FindingKind.FALSIFIED, 90 * T, H)
    ev3 = await s.mrv.confirm_finding(s.gov, fid2)
    assert names(ev3) == ["VerifiedEmissionsSet", "FindingConfirmed"]
    assert ev3[1]["penaltyG"] == 0 and ev3[1]["previousG"] == 140 * T
    assert (await s.mrv.period_account(s.b.address, 1))["obligation_g"] == 110 * T


async def test_reject_finding(s: Sys) -> None:
    fid = await s.mrv.file_finding(s.auditor, s.a.address, 1, FindingKind.ABNORMAL, 5 * T, H)
    ev = await s.mrv.reject_finding(s.gov, fid, "meter was under calibration, flagged C")
    assert (ev["findingId"], ev["enterprise"], ev["period"], ev["by"], ev["reason"]) == (
        fid, s.a.address, 1, s.gov.address, "meter was under calibration, flagged C")
    f = await s.call(s.ver.functions.finding(fid))
    assert (f[3], f[9], f[16]) == (FindingStatus.REJECTED, s.gov.address,
                                   "meter was under calibration, flagged C")
    assert (await s.mrv.period_account(s.a.address, 1))["verified_g"] is None
    assert not await s.call(s.ver.functions.isCorrected(s.a.address, 1))
    await reverts(s.mrv.confirm_finding(s.gov, fid), "FindingNotPending", fid,
                  FindingStatus.REJECTED)


async def test_no_one_reviews_their_own_finding(s: Sys) -> None:
    """An account holding both roles cannot file and then confirm the same finding."""
    await s.mrv.grant(s.regulator, "auditor", s.gov2.address)
    fid = await s.mrv.file_finding(s.gov2, s.a.address, 1, FindingKind.ABNORMAL, T, H)
    await reverts(s.mrv.confirm_finding(s.gov2, fid), "SelfReview", s.gov2.address)
    await reverts(s.mrv.reject_finding(s.gov2, fid, "x"), "SelfReview", s.gov2.address)
    await s.mrv.confirm_finding(s.gov, fid)
