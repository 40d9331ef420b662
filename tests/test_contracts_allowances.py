"""Allowances: benchmarks, allocation, transfer, surrender, the module hooks (market escrow,
verification), settlement and compliance; every rule and every role violation."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ledger_client._admin import ROLES, Compliance
from simulator import Anvil

from .test_contracts_support import Sys, T, fresh_system, names, new_account, reverts

UNAUTHORIZED = "AccessControlUnauthorizedAccount"


@pytest.fixture
async def s(anvil: Anvil) -> AsyncIterator[Sys]:
    sys_ = await fresh_system(anvil.url)
    yield sys_
    await sys_.mrv.close()


async def _bal(s: Sys, who: str, period: int = 1) -> int:
    return int(await s.call(s.alw.functions.balanceOf(period, who)))


async def test_allocate_directly(s: Sys) -> None:
    ev = await s.mrv.allocate(s.gov, s.a.address, 1, 500 * T)
    assert (ev["enterprise"], ev["period"], ev["amountG"], ev["output"],
            ev["benchmarkGramsPerUnit"], ev["by"]) == (s.a.address, 1, 500 * T, 0, 0, s.gov.address)
    await s.mrv.allocate(s.gov2, s.a.address, 1, 20 * T)  # allocations add up
    assert await _bal(s, s.a.address) == 520 * T
    assert await _bal(s, s.a.address, 2) == 0  # per period
    acct = await s.call(s.alw.functions.accountOf(s.a.address, 1))
    assert acct[0] == 520 * T
    assert await s.call(s.alw.functions.allocatedTotal(1)) == 520 * T


async def test_allocate_by_benchmark(s: Sys) -> None:
    ev = await s.mrv.set_benchmark(s.gov, 1, "D4411", 820_000)
    assert names(ev) == ["BenchmarkSet"]
    assert (ev[0]["period"], ev[0]["industryCode"], ev[0]["gramsPerUnit"]) == (1, "D4411", 820_000)
    assert await s.call(s.alw.functions.benchmark(1, "D4411")) == 820_000
    assert await s.call(s.alw.functions.benchmark(2, "D4411")) == 0
    ev2 = await s.mrv.allocate(s.gov, s.a.address, 1, 1500, by_output=True)
    assert (ev2["amountG"], ev2["output"], ev2["benchmarkGramsPerUnit"]) == (
        1500 * 820_000, 1500, 820_000)
    assert await _bal(s, s.a.address) == 1500 * 820_000
    # B's industry (C3011) has no benchmark
    await reverts(s.mrv.allocate(s.gov, s.b.address, 1, 10, by_output=True), "NoBenchmark",
                  1, "C3011")
    await reverts(s.mrv.allocate(s.gov, s.a.address, 2, 10, by_output=True), "NoBenchmark",
                  2, "D4411")


async def test_allocation_rules(s: Sys) -> None:
    x = new_account().address
    await reverts(s.mrv.allocate(s.gov, x, 1, T), "UnknownEnterprise", x)
    await reverts(s.mrv.allocate(s.gov, s.a.address, 1, 0), "ZeroAmount")
    await reverts(s.mrv.allocate(s.gov, s.a.address, 9, T), "UnknownPeriod", 9)
    await reverts(s.mrv.allocate(s.gov, s.a.address, 1, 2**128), "AmountTooLarge")
    await reverts(s.mrv.set_benchmark(s.gov, 9, "D4411", 1), "UnknownPeriod", 9)
    await s.mrv.suspend(s.gov, s.a.address, "x")
    await reverts(s.mrv.allocate(s.gov, s.a.address, 1, T), "NotActiveEnterprise", s.a.address)
    await s.mrv.set_benchmark(s.gov, 1, "D4411", 5)
    await reverts(s.mrv.allocate(s.gov, s.a.address, 1, 10, by_output=True),
                  "NotActiveEnterprise", s.a.address)
    await s.mrv.close_period(s.gov, 1)
    await reverts(s.mrv.allocate(s.gov, s.b.address, 1, T), "PeriodIsClosed", 1)
    await reverts(s.mrv.set_benchmark(s.gov, 1, "D4411", 1), "PeriodIsClosed", 1)


@pytest.mark.parametrize("who", ["regulator", "auditor", "finance", "a", "stranger"])
async def test_only_government_allocates_and_settles(s: Sys, who: str) -> None:
    caller = getattr(s, who)
    need = (caller.address, ROLES["government"])
    await reverts(s.mrv.allocate(caller, s.a.address, 1, T), UNAUTHORIZED, *need)
    await reverts(s.mrv.allocate(caller, s.a.address, 1, 1, by_output=True), UNAUTHORIZED, *need)
    await reverts(s.mrv.set_benchmark(caller, 1, "D4411", 1), UNAUTHORIZED, *need)
    await reverts(s.mrv.settle(caller, s.a.address, 1), UNAUTHORIZED, *need)


async def test_transfer(s: Sys) -> None:
    await s.mrv.allocate(s.gov, s.a.address, 1, 100 * T)
    ev = await s.mrv.transfer(s.a, 1, s.b.address, 30 * T)
    assert names(ev) == ["Transferred"]
    assert (ev[0]["period"], ev[0]["from"], ev[0]["to"], ev[0]["amountG"]) == (
        1, s.a.address, s.b.address, 30 * T)
    assert (await _bal(s, s.a.address), await _bal(s, s.b.address)) == (70 * T, 30 * T)
    await reverts(s.mrv.transfer(s.a, 1, s.b.address, 71 * T), "InsufficientAllowance",
                  s.a.address, 1, 70 * T, 71 * T)
    await reverts(s.mrv.transfer(s.a, 2, s.b.address, 1), "InsufficientAllowance")
    await reverts(s.mrv.transfer(s.a, 1, s.a.address, 1), "SelfTransfer", s.a.address)
    await reverts(s.mrv.transfer(s.a, 1, s.b.address, 0), "ZeroAmount")
    await reverts(s.mrv.transfer(s.a, 7, s.b.address, 1), "UnknownPeriod", 7)
    x = new_account().address
    await reverts(s.mrv.transfer(s.a, 1, x, T), "UnknownEnterprise", x)
    # only certified, active enterprises transfer
    for who in (s.gov, s.auditor, s.regulator, s.stranger, s.gw_a.account):
        await reverts(s.mrv.transfer(who, 1, s.b.address, 1), "UnknownEnterprise", who.address)
    await s.mrv.suspend(s.gov, s.b.address, "x")
    await reverts(s.mrv.transfer(s.a, 1, s.b.address, T), "NotActiveEnterprise", s.b.address)
    await reverts(s.mrv.transfer(s.b, 1, s.a.address, T), "NotActiveEnterprise", s.b.address)
    await s.mrv.close_period(s.gov, 1)
    await reverts(s.mrv.transfer(s.a, 1, s.b.address, T), "NotActiveEnterprise")
    await s.mrv.reinstate(s.gov, s.b.address)
    await reverts(s.mrv.transfer(s.a, 1, s.b.address, T), "PeriodIsClosed", 1)


async def test_surrender(s: Sys) -> None:
    await s.mrv.allocate(s.gov, s.a.address, 1, 100 * T)
    ev = await s.mrv.surrender(s.a, 1, 40 * T)
    assert (ev["enterprise"], ev["period"], ev["amountG"], ev["totalSurrenderedG"]) == (
        s.a.address, 1, 40 * T, 40 * T)
    ev = await s.mrv.surrender(s.a, 1, 10 * T)
    assert ev["totalSurrenderedG"] == 50 * T
    assert await _bal(s, s.a.address) == 50 * T
    assert (await s.call(s.alw.functions.accountOf(s.a.address, 1)))[1] == 50 * T
    assert await s.call(s.alw.functions.surrenderedTotal(1)) == 50 * T
    await reverts(s.mrv.surrender(s.a, 1, 51 * T), "InsufficientAllowance",
                  s.a.address, 1, 50 * T, 51 * T)
    await reverts(s.mrv.surrender(s.a, 1, 0), "ZeroAmount")
    await reverts(s.mrv.surrender(s.a, 5, 1), "UnknownPeriod", 5)
    for who in (s.gov, s.auditor, s.stranger):
        await reverts(s.mrv.surrender(who, 1, 1), "UnknownEnterprise", who.address)
    # a suspended enterprise may still surrender (its obligation does not go away)
    await s.mrv.suspend(s.gov, s.a.address, "x")
    await s.mrv.surrender(s.a, 1, 5 * T)
    await s.mrv.close_period(s.gov, 1)
    await reverts(s.mrv.surrender(s.a, 1, T), "PeriodIsClosed", 1)


@pytest.mark.parametrize("who", ["gov", "regulator", "auditor", "finance", "a", "stranger"])
async def test_module_hooks_only_for_the_system_contracts(s: Sys, who: str) -> None:
    """lock/unlock belong to the Market, recordVerified/correct to Verification."""
    caller = getattr(s, who)
    await s.mrv.allocate(s.gov, s.a.address, 1, 10 * T)
    f = s.alw.functions
    for fn, role in ((f.lock(s.a.address, 1, T), "market-contract"),
                     (f.unlock(1, caller.address, T), "market-contract"),
                     (f.recordVerified(s.a.address, 1, 0), "verification-contract"),
                     (f.correct(s.a.address, 1, 10**12, 10 * T), "verification-contract")):
        await reverts(s.mrv.chain.transact(caller, fn), UNAUTHORIZED, caller.address, ROLES[role])
    assert await _bal(s, s.a.address) == 10 * T


async def test_module_hooks_follow_the_registry_roles(s: Sys) -> None:
    """A module role granted (here to a test account standing in for a contract) works, and
    revoking it disconnects the module."""
    mod = new_account()
    from ledger_client._admin import fund

    await fund(s.mrv.chain, s.regulator, mod.address, 10**18)
    await s.mrv.allocate(s.gov, s.a.address, 1, 10 * T)
    f = s.alw.functions
    await s.mrv.grant(s.regulator, "market-contract", mod.address)
    _, ev = await s.mrv.send(mod, f.lock(s.a.address, 1, 4 * T))
    assert (ev[0]["from"], ev[0]["to"], ev[0]["amountG"]) == (s.a.address, mod.address, 4 * T)
    await reverts(s.mrv.send(mod, f.lock(s.a.address, 1, 7 * T)), "InsufficientAllowance")
    await reverts(s.mrv.send(mod, f.lock(s.a.address, 1, 0)), "ZeroAmount")
    await reverts(s.mrv.send(mod, f.lock(new_account().address, 1, 1)), "UnknownEnterprise")
    _, ev = await s.mrv.send(mod, f.unlock(1, s.b.address, 3 * T))
    assert await _bal(s, s.b.address) == 3 * T
    await reverts(s.mrv.send(mod, f.unlock(1, s.b.address, 2 * T)), "InsufficientAllowance")
    await s.mrv.revoke_role(s.regulator, "market-contract", mod.address)
    await reverts(s.mrv.send(mod, f.unlock(1, s.b.address, T)), UNAUTHORIZED)
    # verification hooks
    await s.mrv.grant(s.regulator, "verification-contract", mod.address)
    _, ev = await s.mrv.send(mod, f.recordVerified(s.a.address, 1, 7 * T))
    assert names(ev) == ["VerifiedEmissionsSet"] and ev[0]["verifiedG"] == 7 * T
    await reverts(s.mrv.send(mod, f.recordVerified(s.a.address, 1, 2**128)), "AmountTooLarge")
    _, ev = await s.mrv.send(mod, f.correct(s.a.address, 1, 9 * T, 0))
    assert names(ev) == ["VerifiedEmissionsSet"] and ev[0]["previousG"] == 7 * T


async def _penalise(s: Sys, who: str, period: int, corrected: int, penalty: int) -> list:
    mod = new_account()
    from ledger_client._admin import fund

    await fund(s.mrv.chain, s.regulator, mod.address, 10**18)
    await s.mrv.grant(s.regulator, "verification-contract", mod.address)
    _, ev = await s.mrv.send(mod, s.alw.functions.correct(who, period, corrected, penalty))
    return ev


async def test_penalty_beyond_the_balance_raises_the_obligation(s: Sys) -> None:
    await s.mrv.allocate(s.gov, s.a.address, 1, 50 * T)
    ev = await _penalise(s, s.a.address, 1, 100 * T, 80 * T)
    assert names(ev) == ["VerifiedEmissionsSet", "PenaltyApplied"]
    assert (ev[1]["penaltyG"], ev[1]["deductedG"], ev[1]["outstandingG"]) == (80 * T, 50 * T,
                                                                              30 * T)
    assert await _bal(s, s.a.address) == 0
    assert await s.call(s.alw.functions.obligation(s.a.address, 1)) == 130 * T
    acct = await s.call(s.alw.functions.accountOf(s.a.address, 1))
    assert tuple(acct[2:6]) == (100 * T, 80 * T, 50 * T, True)


async def test_compliance_and_settlement(s: Sys) -> None:
    """Open until closed; then Unverified / Compliant / NonCompliant, recorded by settle."""
    f = s.alw.functions
    x = new_account()
    await s.mrv.allocate(s.gov, s.a.address, 1, 100 * T)
    await s.mrv.allocate(s.gov, s.b.address, 1, 100 * T)
    await _penalise(s, s.a.address, 1, 60 * T, 0)
    await _penalise(s, s.b.address, 1, 90 * T, 0)
    await s.mrv.surrender(s.a, 1, 60 * T)   # covers exactly
    await s.mrv.surrender(s.b, 1, 89 * T)   # one tonne short
    for who in (s.a.address, s.b.address):
        assert await s.call(f.compliance(who, 1)) == Compliance.OPEN
    await reverts(s.mrv.settle(s.gov, s.a.address, 1), "PeriodNotClosed", 1)
    await s.mrv.close_period(s.gov, 1)
    assert await s.call(f.compliance(s.a.address, 1)) == Compliance.COMPLIANT
    assert await s.call(f.compliance(s.b.address, 1)) == Compliance.NON_COMPLIANT
    ev = await s.mrv.settle(s.gov, s.a.address, 1)
    assert (ev["enterprise"], ev["period"], ev["status"], ev["verifiedG"], ev["surrenderedG"],
            ev["penaltyG"], ev["penaltyDeductedG"]) == (s.a.address, 1, Compliance.COMPLIANT,
                                                        60 * T, 60 * T, 0, 0)
    ev = await s.mrv.settle(s.gov2, s.b.address, 1)
    assert ev["status"] == Compliance.NON_COMPLIANT
    acct = await s.call(f.accountOf(s.b.address, 1))
    assert (acct[6], acct[7]) == (True, Compliance.NON_COMPLIANT)
    # a later correction (a finding confirmed after the close) changes the live status;
    # settling again records it
    await _penalise(s, s.a.address, 1, 70 * T, 0)
    assert await s.call(f.compliance(s.a.address, 1)) == Compliance.NON_COMPLIANT
    ev = await s.mrv.settle(s.gov, s.a.address, 1)
    assert ev["status"] == Compliance.NON_COMPLIANT
    # unknown enterprise, unknown or open period
    await reverts(s.mrv.settle(s.gov, x.address, 1), "UnknownEnterprise", x.address)
    await reverts(s.mrv.settle(s.gov, s.a.address, 8), "UnknownPeriod", 8)
    await reverts(s.mrv.settle(s.gov, s.a.address, 2), "PeriodNotClosed", 2)


async def test_unverified_at_close(s: Sys) -> None:
    await s.mrv.allocate(s.gov, s.a.address, 1, 100 * T)
    await s.mrv.surrender(s.a, 1, 100 * T)
    await s.mrv.close_period(s.gov, 1)
    assert await s.call(s.alw.functions.compliance(s.a.address, 1)) == Compliance.UNVERIFIED
    ev = await s.mrv.settle(s.gov, s.a.address, 1)
    assert ev["status"] == Compliance.UNVERIFIED
