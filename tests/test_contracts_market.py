"""Market: offers escrowed at once, whole or partial acceptance, cancellation, payment
settlement records; every trade's volume and price in an event; every rule and role violation."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from fractions import Fraction

import pytest

from ledger_client._admin import ROLES, OfferStatus
from ledger_client._format import keccak256
from simulator import Anvil

from .test_contracts_support import Sys, T, fresh_system, names, new_account, reverts

UNAUTHORIZED = "AccessControlUnauthorizedAccount"
ZERO = "0x" + "00" * 20


@pytest.fixture
async def s(anvil: Anvil) -> AsyncIterator[Sys]:
    sys_ = await fresh_system(anvil.url)
    await sys_.mrv.allocate(sys_.gov, sys_.a.address, 1, 500 * T)
    await sys_.mrv.allocate(sys_.gov, sys_.b.address, 1, 100 * T)
    yield sys_
    await sys_.mrv.close()


async def _bal(s: Sys, who: str, period: int = 1) -> int:
    return int(await s.call(s.alw.functions.balanceOf(period, who)))


async def _offer(s: Sys, oid: int) -> tuple:
    return tuple(await s.call(s.mkt.functions.getOffer(oid)))


async def test_offer_escrows_and_partial_accepts_trade(s: Sys) -> None:
    market = s.addr["Market"]
    oid = await s.mrv.offer(s.a, 1, 100 * T, 8_750)
    logs = await s.mkt.events.OfferMade.get_logs(from_block=0)
    a = logs[-1].args
    assert (a.offerId, a.seller, a.buyer, a.period, a.amountG, a.pricePerTonne) == (
        oid, s.a.address, ZERO, 1, 100 * T, 8_750)
    assert (await _bal(s, s.a.address), await _bal(s, market)) == (400 * T, 100 * T)
    o = await _offer(s, oid)
    assert (o[0], o[1], o[2], o[4], o[5], o[6], o[7]) == (
        s.a.address, 1, OfferStatus.OPEN, ZERO, 100 * T, 100 * T, 8_750)
    tr = await s.mrv.accept(s.b, oid, 30 * T)
    assert (tr["tradeId"], tr["offerId"], tr["buyer"], tr["seller"], tr["period"], tr["amountG"],
            tr["pricePerTonne"], tr["value"]) == (1, oid, s.b.address, s.a.address, 1, 30 * T,
                                                  8_750, 30 * 8_750)
    assert (await _offer(s, oid))[6] == 70 * T
    tr2 = await s.mrv.accept(s.b, oid, 70 * T)
    assert tr2["tradeId"] == 2
    o = await _offer(s, oid)
    assert (o[2], o[6]) == (OfferStatus.FILLED, 0)
    assert (await _bal(s, s.a.address), await _bal(s, s.b.address), await _bal(s, market)) == (
        400 * T, 200 * T, 0)
    t = await s.call(s.mkt.functions.trade(1))
    assert (t[0], t[1], t[2], t[4], t[5], t[6], t[7]) == (oid, s.a.address, 1, s.b.address,
                                                          30 * T, 8_750, 262_500)
    assert await s.call(s.mkt.functions.tradeCount()) == 2
    assert await s.call(s.mkt.functions.offerCount()) == 1
    await reverts(s.mrv.accept(s.b, oid, 1), "OfferNotOpen", oid, OfferStatus.FILLED)
    # the value rounds up to the minor unit: 1 g at 8,750 per tonne is worth 1, never 0
    oid2 = await s.mrv.offer(s.a, 1, 1, 8_750)
    assert (await s.mrv.accept(s.b, oid2, 1))["value"] == 1


def _ceil_value(amount_g: int, price: int) -> int:
    """The documented rule, computed with exact fractions (independent of the contract)."""
    return math.ceil(Fraction(amount_g * price, 1_000_000))


async def test_trade_value_rounds_up_to_a_whole_minor_unit(s: Sys) -> None:
    # issue 11, item 14: 111 g at 9,000 per tonne is 999/1000 of a minor unit; it was recorded
    # as 0 (a buyer could take an offer in 111 g slices for nothing). It is now 1.
    oid = await s.mrv.offer(s.a, 1, 10 * T, 9_000)
    tr = await s.mrv.accept(s.b, oid, 111)
    assert tr["value"] == _ceil_value(111, 9_000) == 1
    t = await s.call(s.mkt.functions.trade(tr["tradeId"]))
    assert t[7] == 1
    # an exact product is unchanged; one gram more costs at most one minor unit more
    assert (await s.mrv.accept(s.b, oid, 2 * T))["value"] == 18_000
    assert (await s.mrv.accept(s.b, oid, T + 1))["value"] == 9_001
    # splitting a purchase never lowers what the buyer owes: 9 x 111 g >= 999 g
    parts = [(await s.mrv.accept(s.b, oid, 111))["value"] for _ in range(9)]
    assert parts == [1] * 9 and sum(parts) >= _ceil_value(999, 9_000) == 9  # 8.991 -> 9
    fn = s.mkt.functions.tradeValue
    # the extremes of the argument types: no overflow, no revert
    top = 2**128 - 1
    assert await s.call(fn(top, top)) == _ceil_value(top, top)
    assert await s.call(fn(1, 1)) == 1 and await s.call(fn(0, 9_000)) == 0
    assert await s.call(fn(999_999, 1)) == 1 and await s.call(fn(1_000_001, 1)) == 2
    assert await s.call(fn(1_000_000, 1)) == 1
    # and a sample of amounts and prices against exact arithmetic
    rng = random.Random(14)
    for _ in range(60):
        a = rng.choice((rng.randrange(1, 10**3), rng.randrange(1, 10**9), rng.randrange(1, 2**128)))
        p = rng.choice((rng.randrange(1, 10**5), rng.randrange(1, 2**128)))
        assert await s.call(fn(a, p)) == _ceil_value(a, p), (a, p)


async def test_offer_to_a_named_buyer(s: Sys) -> None:
    c = new_account()
    from ledger_client._admin import fund, make_uscc

    await fund(s.mrv.chain, s.regulator, c.address, 10**18)
    await s.mrv.certify(s.gov, c.address, credit_code=make_uscc(b"c"), name="C", industry="x",
                        region="x")
    oid = await s.mrv.offer(s.a, 1, 10 * T, 9_000, buyer=s.b.address)
    assert (await _offer(s, oid))[4] == s.b.address
    await reverts(s.mrv.accept(c, oid, T), "NotOfferBuyer", oid, c.address)
    await s.mrv.accept(s.b, oid, 10 * T)


async def test_offer_rules(s: Sys) -> None:
    await reverts(s.mrv.offer(s.a, 1, 0, 1), "ZeroAmount")
    await reverts(s.mrv.offer(s.a, 1, T, 0), "ZeroPrice")
    await reverts(s.mrv.offer(s.a, 1, 501 * T, 1), "InsufficientAllowance",
                  s.a.address, 1, 500 * T, 501 * T)
    await reverts(s.mrv.offer(s.a, 2, T, 1), "InsufficientAllowance")
    await reverts(s.mrv.offer(s.a, 7, T, 1), "UnknownPeriod", 7)
    await reverts(s.mrv.offer(s.a, 1, T, 1, buyer=s.a.address), "SelfTrade", s.a.address)
    x = new_account().address
    await reverts(s.mrv.offer(s.a, 1, T, 1, buyer=x), "UnknownEnterprise", x)
    for who in (s.gov, s.auditor, s.finance, s.regulator, s.stranger):
        await reverts(s.mrv.offer(who, 1, T, 1), "UnknownEnterprise", who.address)
    await s.mrv.suspend(s.gov, s.b.address, "x")
    await reverts(s.mrv.offer(s.b, 1, T, 1), "NotActiveEnterprise", s.b.address)
    await reverts(s.mrv.offer(s.a, 1, T, 1, buyer=s.b.address), "NotActiveEnterprise", s.b.address)
    await s.mrv.close_period(s.gov, 1)
    await reverts(s.mrv.offer(s.a, 1, T, 1), "PeriodIsClosed", 1)


async def test_accept_rules(s: Sys) -> None:
    oid = await s.mrv.offer(s.a, 1, 10 * T, 9_000)
    await reverts(s.mrv.accept(s.a, oid, T), "SelfTrade", s.a.address)
    await reverts(s.mrv.accept(s.b, oid, 0), "ZeroAmount")
    await reverts(s.mrv.accept(s.b, oid, 11 * T), "AmountExceedsOffer", oid, 10 * T, 11 * T)
    await reverts(s.mrv.accept(s.b, 42, T), "UnknownOffer", 42)
    for who in (s.gov, s.auditor, s.finance, s.regulator, s.stranger):
        await reverts(s.mrv.accept(who, oid, T), "UnknownEnterprise", who.address)
    # a suspended seller's offer cannot be taken; a suspended buyer cannot take
    await s.mrv.suspend(s.gov, s.a.address, "x")
    await reverts(s.mrv.accept(s.b, oid, T), "NotActiveEnterprise", s.a.address)
    await s.mrv.reinstate(s.gov, s.a.address)
    await s.mrv.suspend(s.gov, s.b.address, "x")
    await reverts(s.mrv.accept(s.b, oid, T), "NotActiveEnterprise", s.b.address)
    await s.mrv.reinstate(s.gov, s.b.address)
    await s.mrv.close_period(s.gov, 1)
    await reverts(s.mrv.accept(s.b, oid, T), "PeriodIsClosed", 1)


async def test_cancel_returns_the_escrow(s: Sys) -> None:
    oid = await s.mrv.offer(s.a, 1, 50 * T, 9_000)
    await s.mrv.accept(s.b, oid, 20 * T)
    for who in (s.b, s.auditor, s.finance, s.regulator, s.stranger):
        await reverts(s.mrv.cancel(who, oid), "NotOfferSeller", oid, who.address)
    ev = await s.mrv.cancel(s.a, oid)
    assert (ev["offerId"], ev["by"], ev["returnedG"]) == (oid, s.a.address, 30 * T)
    assert (await _offer(s, oid))[2] == OfferStatus.CANCELLED
    assert (await _bal(s, s.a.address), await _bal(s, s.addr["Market"])) == (480 * T, 0)
    await reverts(s.mrv.cancel(s.a, oid), "OfferNotOpen", oid, OfferStatus.CANCELLED)
    await reverts(s.mrv.accept(s.b, oid, T), "OfferNotOpen")
    await reverts(s.mrv.cancel(s.a, 99), "UnknownOffer", 99)


async def test_government_cancels_and_escrow_returns_after_close(s: Sys) -> None:
    """Government can withdraw an offer (e.g. of a suspended seller); the escrow goes back to
    the seller even when the period is closed."""
    o1 = await s.mrv.offer(s.a, 1, 10 * T, 9_000)
    o2 = await s.mrv.offer(s.a, 1, 5 * T, 9_000)
    await s.mrv.suspend(s.gov, s.a.address, "fraud inquiry")
    ev = await s.mrv.cancel(s.gov, o1)
    assert (ev["by"], ev["returnedG"]) == (s.gov.address, 10 * T)
    await s.mrv.close_period(s.gov, 1)
    ev = await s.mrv.cancel(s.a, o2)  # suspended seller, closed period
    assert ev["returnedG"] == 5 * T
    assert await _bal(s, s.a.address) == 500 * T


async def test_settlement_records(s: Sys) -> None:
    oid = await s.mrv.offer(s.a, 1, 10 * T, 9_000)
    tid = int((await s.mrv.accept(s.b, oid, 10 * T))["tradeId"])
    ref = keccak256(b"CNAPS 2025-03-02 0001")
    for who in (s.gov, s.auditor, s.a, s.b, s.regulator, s.stranger):
        await reverts(s.mrv.confirm_settlement(who, tid, ref), UNAUTHORIZED, who.address,
                      ROLES["finance"])
    await reverts(s.mrv.confirm_settlement(s.finance, tid, b"\x00" * 32), "ZeroPaymentRef")
    await reverts(s.mrv.confirm_settlement(s.finance, 9, ref), "UnknownTrade", 9)
    ev = await s.mrv.confirm_settlement(s.finance, tid, ref)
    assert (ev["tradeId"], ev["by"], ev["paymentRef"]) == (tid, s.finance.address, ref)
    t = await s.call(s.mkt.functions.trade(tid))
    assert (bytes(t[8]), t[9]) == (ref, s.finance.address)
    await reverts(s.mrv.confirm_settlement(s.finance, tid, ref), "TradeAlreadySettled", tid)
    await reverts(s.call(s.mkt.functions.trade(0)), "UnknownTrade", 0)


async def test_escrow_is_out_of_reach_of_transfers_and_penalties(s: Sys) -> None:
    """Escrowed allowances are held by the market: the seller cannot spend them twice."""
    await s.mrv.offer(s.a, 1, 450 * T, 9_000)
    await reverts(s.mrv.transfer(s.a, 1, s.b.address, 51 * T), "InsufficientAllowance")
    await reverts(s.mrv.surrender(s.a, 1, 51 * T), "InsufficientAllowance")
    await reverts(s.mrv.offer(s.a, 1, 51 * T, 1), "InsufficientAllowance")
    assert names(await s.mrv.transfer(s.a, 1, s.b.address, 50 * T)) == ["Transferred"]
