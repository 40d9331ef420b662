"""MrvRegistry: roles, enterprises, gateways, the compliance calendar; every rule and every
role violation, checked through events and getters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ledger_client._admin import ROLES, EnterpriseStatus, make_uscc
from ledger_client._format import gateway_key
from simulator import Anvil

from .test_contracts_support import P2024, P_OPEN, Sys, fresh_system, names, new_account, ns, reverts

UNAUTHORIZED = "AccessControlUnauthorizedAccount"
ZERO = "0x" + "00" * 20


@pytest.fixture
async def s(anvil: Anvil) -> AsyncIterator[Sys]:
    sys_ = await fresh_system(anvil.url)
    yield sys_
    await sys_.mrv.close()


def _info(seed: bytes, name: str = "Acme") -> tuple[str, str, str, str]:
    return (make_uscc(seed), name, "C2511", "440300")


# -- roles -------------------------------------------------------------------------------------


async def test_regulator_grants_and_revokes_roles(s: Sys) -> None:
    x = new_account()
    for role in ("government", "auditor", "finance"):
        ev = await s.mrv.grant(s.regulator, role, x.address)
        assert names(ev) == ["RoleGranted"]
        assert (ev[0]["role"], ev[0]["account"], ev[0]["sender"]) == (
            ROLES[role], x.address, s.regulator.address)
        assert await s.mrv.has_role(role, x.address)
    assert await s.mrv.roles_of(x.address) == ["government", "auditor", "finance"]
    ev = await s.mrv.revoke_role(s.regulator, "auditor", x.address)
    assert names(ev) == ["RoleRevoked"]
    assert not await s.mrv.has_role("auditor", x.address)


@pytest.mark.parametrize("who", ["gov", "auditor", "finance", "a", "stranger"])
async def test_only_the_regulator_grants(s: Sys, who: str) -> None:
    caller = getattr(s, who)
    x = new_account()
    for role in ("government", "auditor", "finance", "regulator", "market-contract"):
        await reverts(s.mrv.grant(caller, role, x.address), UNAUTHORIZED,
                      caller.address, ROLES["regulator"])
    await reverts(s.mrv.revoke_role(caller, "government", s.gov.address), UNAUTHORIZED)


async def test_an_enterprise_never_holds_a_role(s: Sys) -> None:
    for role in ("government", "auditor", "finance", "regulator"):
        await reverts(s.mrv.grant(s.regulator, role, s.a.address), "AccountIsEnterprise",
                      s.a.address)
    # and a role holder cannot be certified as an enterprise
    for holder, role in ((s.gov2, "government"), (s.auditor, "auditor"),
                         (s.finance, "finance"), (s.regulator, "regulator")):
        await reverts(s.mrv.certify(s.gov, holder.address, credit_code=make_uscc(b"r" + bytes(
            holder.address, "ascii")), name="x", industry="x", region="x"),
            "AccountHoldsRole", holder.address, ROLES[role])
    market = s.addr["Market"]
    await reverts(s.mrv.certify(s.gov, market, credit_code=make_uscc(b"m"), name="x",
                                industry="x", region="x"), "AccountHoldsRole", market,
                  ROLES["market-contract"])


# -- enterprises -------------------------------------------------------------------------------


async def test_certify_enterprise(s: Sys) -> None:
    x = new_account()
    code, name, ind, region = _info(b"x", "Guangzhou Steel")
    ev = await s.mrv.certify(s.gov, x.address, credit_code=code, name=name, industry=ind,
                             region=region)
    assert names(ev) == ["EnterpriseCertified"]
    assert ev[0]["account"] == x.address and ev[0]["by"] == s.gov.address
    assert ev[0]["info"] == {"creditCode": code, "name": name, "industryCode": ind,
                             "region": region}
    e = await s.mrv.enterprise(x.address)
    assert (e["account"], e["status"], e["credit_code"], e["name"], e["industry"],
            e["region"]) == (x.address, "active", code, name, ind, region)
    assert e["certified_at"] > 0
    r = s.reg.functions
    assert await s.call(r.enterpriseCount()) == 3
    assert await s.call(r.enterpriseAt(2)) == x.address
    assert await s.call(r.enterpriseByCreditCode(code)) == x.address
    assert await s.call(r.isActiveEnterprise(x.address))
    assert await s.call(r.enterpriseIndustry(x.address)) == ind
    assert await s.call(r.enterpriseStatus(new_account().address)) == EnterpriseStatus.NONE
    await reverts(s.mrv.enterprise(new_account().address), "UnknownEnterprise")


async def test_certify_rules(s: Sys) -> None:
    x = new_account()
    code_a = (await s.mrv.enterprise(s.a.address))["credit_code"]

    async def cert(acct: str, code: str, name: str = "n", ind: str = "i", reg: str = "r"
                   ) -> object:
        return await s.mrv.certify(s.gov, acct, credit_code=code, name=name, industry=ind,
                                   region=reg)

    await reverts(cert(s.a.address, make_uscc(b"new")), "EnterpriseExists", s.a.address)
    await reverts(cert(x.address, code_a), "CreditCodeTaken", code_a, s.a.address)
    await reverts(cert(x.address, "12345"), "BadCreditCode", "12345")
    await reverts(cert(x.address, make_uscc(b"y"), name=""), "EmptyField", "name")
    await reverts(cert(x.address, make_uscc(b"y"), ind=""), "EmptyField", "industryCode")
    await reverts(cert(x.address, make_uscc(b"y"), reg=""), "EmptyField", "region")
    await reverts(cert("0x" + "00" * 20, make_uscc(b"y")), "ZeroAddress")


@pytest.mark.parametrize("who", ["regulator", "auditor", "finance", "a", "stranger"])
async def test_only_government_manages_enterprises(s: Sys, who: str) -> None:
    caller = getattr(s, who)
    need = (caller.address, ROLES["government"])
    await reverts(s.mrv.certify(caller, new_account().address, credit_code=make_uscc(b"z"),
                                name="n", industry="i", region="r"), UNAUTHORIZED, *need)
    await reverts(s.mrv.suspend(caller, s.b.address, "no"), UNAUTHORIZED, *need)
    await s.mrv.suspend(s.gov, s.b.address, "inspection")
    await reverts(s.mrv.reinstate(caller, s.b.address), UNAUTHORIZED, *need)


async def test_suspend_and_reinstate(s: Sys) -> None:
    ev = await s.mrv.suspend(s.gov, s.a.address, "data quality")
    assert names(ev) == ["EnterpriseSuspended"]
    assert (ev[0]["account"], ev[0]["reason"], ev[0]["by"]) == (s.a.address, "data quality",
                                                               s.gov.address)
    assert (await s.mrv.enterprise(s.a.address))["status"] == "suspended"
    assert not await s.call(s.reg.functions.isActiveEnterprise(s.a.address))
    await reverts(s.mrv.suspend(s.gov, s.a.address, "again"), "NotActiveEnterprise")
    # a suspended enterprise registers no gateway
    await reverts(s.mrv.register_gateway(s.a, "gw-a2", s.a.address, b"\x01" * 32),
                  "NotActiveEnterprise", s.a.address)
    ev = await s.mrv.reinstate(s.gov2, s.a.address)
    assert names(ev) == ["EnterpriseReinstated"] and ev[0]["by"] == s.gov2.address
    assert (await s.mrv.enterprise(s.a.address))["status"] == "active"
    await reverts(s.mrv.reinstate(s.gov, s.a.address), "EnterpriseNotSuspended")
    stranger = new_account().address
    await reverts(s.mrv.suspend(s.gov, stranger, "x"), "UnknownEnterprise", stranger)
    await reverts(s.mrv.reinstate(s.gov, stranger), "UnknownEnterprise", stranger)


# -- gateways ----------------------------------------------------------------------------------


async def test_enterprise_registers_gateways(s: Sys) -> None:
    sender = new_account()
    await s.mrv.reserve_gateway_id(s.gov, "gw-a2", s.a.address)
    key = await s.mrv.register_gateway(s.a, "gw-a2", sender.address, b"\x02" * 32)
    assert key == gateway_key("gw-a2")
    logs = await s.reg.events.GatewayRegistered.get_logs(from_block=0)
    last = logs[-1].args
    assert (bytes(last.gatewayKey), last.enterprise, last.gatewayId, last.sender,
            bytes(last.signingKey)) == (key, s.a.address, "gw-a2", sender.address, b"\x02" * 32)
    g = await s.call(s.reg.functions.gateway(key))
    assert (g[0], g[1], g[2], g[4], bytes(g[5])) == ("gw-a2", s.a.address, True, sender.address,
                                                     b"\x02" * 32)
    assert [bytes(k) for k in await s.call(s.reg.functions.gatewaysOf(s.a.address))] == [
        gateway_key("gw-a"), key]
    assert await s.call(s.reg.functions.gatewayCount()) == 3
    assert bytes(await s.call(s.reg.functions.gatewayKeyAt(2))) == key
    ctx = await s.call(s.reg.functions.anchorContext(key, P2024[0]))
    assert tuple(ctx) == (sender.address, s.a.address, True, 1)


async def test_no_enterprise_can_take_another_enterprises_gateway_id(s: Sys) -> None:
    # issue 11, item 10: enterprise A registered `plant-b-gw1` first, and B's own registration
    # then reverted. Ids are now reserved by government for one enterprise; only it registers.
    gid, key, snd = "plant-b-gw1", gateway_key("plant-b-gw1"), new_account().address
    assert await s.mrv.gateway_reserved_for(gid) is None
    await reverts(s.mrv.register_gateway(s.a, gid, snd, b"\x01" * 32), "GatewayIdNotReserved",
                  key, ZERO)  # nobody's yet: not first come, first served
    ev = await s.mrv.reserve_gateway_id(s.gov, gid, s.b.address)
    assert (ev["gatewayKey"], ev["enterprise"], ev["gatewayId"], ev["by"]) == (
        key, s.b.address, gid, s.gov.address)
    assert await s.mrv.gateway_reserved_for(gid) == s.b.address
    await reverts(s.mrv.register_gateway(s.a, gid, snd, b"\x01" * 32), "GatewayIdNotReserved",
                  key, s.b.address)  # A cannot take B's id ...
    assert await s.mrv.register_gateway(s.b, gid, snd, b"\x02" * 32) == key  # ... B registers it
    g = await s.call(s.reg.functions.gateway(key))
    assert (g[0], g[1]) == (gid, s.b.address)
    # a registered id is never moved, not even by government
    await reverts(s.mrv.reserve_gateway_id(s.gov2, gid, s.a.address), "GatewayExists", key)
    # an unregistered reservation may be moved: then only the new holder registers it
    await s.mrv.reserve_gateway_id(s.gov, "plant-x", s.a.address)
    await s.mrv.reserve_gateway_id(s.gov2, "plant-x", s.b.address)
    await reverts(s.mrv.register_gateway(s.a, "plant-x", snd, b"\x01" * 32),
                  "GatewayIdNotReserved", gateway_key("plant-x"), s.b.address)
    await s.mrv.register_gateway(s.b, "plant-x", snd, b"\x01" * 32)
    # a revoked gateway's id stays taken (its anchored chain keeps its key)
    await s.mrv.revoke_gateway(s.gov, "gw-a")
    await reverts(s.mrv.reserve_gateway_id(s.gov, "gw-a", s.b.address), "GatewayExists",
                  gateway_key("gw-a"))
    # only government reserves; only for a certified enterprise; never an empty id
    for who in (s.a, s.b, s.auditor, s.regulator, s.stranger):
        await reverts(s.mrv.reserve_gateway_id(who, "plant-y", who.address), UNAUTHORIZED,
                      who.address, ROLES["government"])
    await reverts(s.mrv.reserve_gateway_id(s.gov, "plant-y", s.stranger.address),
                  "UnknownEnterprise", s.stranger.address)
    await reverts(s.mrv.reserve_gateway_id(s.gov, "", s.a.address), "EmptyField", "gatewayId")
    logs = await s.reg.events.GatewayIdReserved.get_logs(from_block=0)
    assert [(x.args.gatewayId, x.args.enterprise) for x in logs][-3:] == [
        (gid, s.b.address), ("plant-x", s.a.address), ("plant-x", s.b.address)]


async def test_gateway_registration_rules(s: Sys) -> None:
    snd = new_account().address
    await reverts(s.mrv.register_gateway(s.b, "gw-a", snd, b"\x01" * 32), "GatewayExists",
                  gateway_key("gw-a"))
    await reverts(s.mrv.register_gateway(s.a, "gw-z", "0x" + "00" * 20, b"\x01" * 32),
                  "ZeroAddress")
    await reverts(s.mrv.register_gateway(s.a, "gw-z", snd, b"\x00" * 32), "ZeroSigningKey")
    await reverts(s.mrv.register_gateway(s.a, "", snd, b"\x01" * 32), "EmptyField", "gatewayId")
    for who in (s.gov, s.regulator, s.auditor, s.stranger, s.gw_a.account):
        await reverts(s.mrv.register_gateway(who, "gw-z", snd, b"\x01" * 32),
                      "NotActiveEnterprise", who.address)


async def test_gateway_revocation(s: Sys) -> None:
    # a stranger, another enterprise, an auditor, the regulator: not the owner, not government
    for who in (s.b, s.stranger, s.auditor, s.regulator, s.gw_a.account):
        await reverts(s.mrv.revoke_gateway(who, "gw-a"), "NotGatewayOwner",
                      gateway_key("gw-a"), who.address)
    ev = await s.mrv.revoke_gateway(s.a, "gw-a")  # the owner retires it
    assert names(ev) == ["GatewayRevoked"]
    assert (ev[0]["gatewayKey"], ev[0]["enterprise"], ev[0]["by"]) == (
        gateway_key("gw-a"), s.a.address, s.a.address)
    await reverts(s.mrv.revoke_gateway(s.gov, "gw-a"), "GatewayNotActive")
    ev = await s.mrv.revoke_gateway(s.gov, "gw-b")  # government revokes
    assert ev[0]["by"] == s.gov.address
    assert not (await s.call(s.reg.functions.gateway(gateway_key("gw-b"))))[2]
    await reverts(s.mrv.revoke_gateway(s.gov, "nobody"), "UnknownGateway", gateway_key("nobody"))
    await reverts(s.call(s.reg.functions.gateway(gateway_key("nobody"))), "UnknownGateway")


# -- calendar ----------------------------------------------------------------------------------


async def test_periods(anvil: Anvil) -> None:
    s = await fresh_system(anvil.url, periods=False, gateways=False)
    try:
        assert await s.call(s.reg.functions.periodCount()) == 0
        assert await s.call(s.reg.functions.periodAt(ns(2024, 5))) == 0
        p1 = await s.mrv.define_period(s.gov, ns(2023), ns(2024))
        logs = await s.reg.events.PeriodDefined.get_logs(from_block=0)
        assert (logs[-1].args.period, logs[-1].args.startNs, logs[-1].args.endNs,
                logs[-1].args.by) == (1, ns(2023), ns(2024), s.gov.address)
        await reverts(s.mrv.define_period(s.gov, ns(2023, 6), ns(2025)), "BadPeriod",
                      ns(2023, 6), ns(2025), ns(2024))  # overlaps
        await reverts(s.mrv.define_period(s.gov, ns(2026), ns(2026)), "BadPeriod")  # empty
        p2 = await s.mrv.define_period(s.gov2, ns(2025), ns(2026))  # a gap is allowed
        assert (p1, p2) == (1, 2)
        f = s.reg.functions
        assert [await s.call(f.periodAt(t)) for t in (
            ns(2022), ns(2023), ns(2024) - 1, ns(2024), ns(2025, 7), ns(2026))] == [0, 1, 1, 0,
                                                                                    2, 0]
        assert tuple(await s.call(f.period(2))) == (ns(2025), ns(2026), False)
        await reverts(s.call(f.period(3)), "UnknownPeriod", 3)
        await reverts(s.call(f.period(0)), "UnknownPeriod", 0)
        ps = await s.mrv.periods()
        assert [p["period"] for p in ps] == [1, 2]
    finally:
        await s.mrv.close()


async def test_close_period(s: Sys) -> None:
    f = s.reg.functions
    assert await s.call(f.isPeriodOpen(1)) and not await s.call(f.isPeriodClosed(1))
    await reverts(s.mrv.close_period(s.gov, 2), "PeriodNotEnded")  # ends in 2100
    ev = await s.mrv.close_period(s.gov, 1)
    assert names(ev) == ["PeriodClosed"] and ev[0]["period"] == 1 and ev[0]["closedAtNs"] > P2024[1]
    assert await s.call(f.isPeriodClosed(1)) and not await s.call(f.isPeriodOpen(1))
    assert (await s.call(f.period(1)))[2] is True
    await reverts(s.mrv.close_period(s.gov, 1), "PeriodIsClosed", 1)
    await reverts(s.mrv.close_period(s.gov, 9), "UnknownPeriod", 9)
    assert not await s.call(f.isPeriodOpen(0)) and not await s.call(f.isPeriodOpen(9))


@pytest.mark.parametrize("who", ["regulator", "auditor", "finance", "a", "stranger"])
async def test_only_government_keeps_the_calendar(s: Sys, who: str) -> None:
    caller = getattr(s, who)
    need = (caller.address, ROLES["government"])
    await reverts(s.mrv.define_period(caller, P_OPEN[1], P_OPEN[1] + 1), UNAUTHORIZED, *need)
    await reverts(s.mrv.close_period(caller, 1), UNAUTHORIZED, *need)


# -- data access (an enterprise's consent for a financial institution) ------------------------


async def _block_time(s: Sys) -> int:
    return int((await s.mrv.chain.w3.eth.get_block("latest"))["timestamp"])


async def test_enterprise_grants_and_revokes_data_access(s: Sys) -> None:
    f = s.reg.functions
    fin, a = s.finance.address, s.a.address
    assert await s.mrv.data_access_until(a, fin) == 0
    assert not await s.mrv.has_data_access(a, fin)
    until = await _block_time(s) + 3600
    ev = await s.mrv.grant_data_access(s.a, fin, until)
    assert (ev.name, ev["enterprise"], ev["finance"], ev["until"]) == (
        "DataAccessGranted", a, fin, until)
    assert await s.mrv.data_access_until(a, fin) == until
    assert await s.mrv.has_data_access(a, fin)
    assert not await s.mrv.has_data_access(s.b.address, fin)  # per enterprise
    # granting again replaces the end, shorter or longer
    ev = await s.mrv.grant_data_access(s.a, fin, until + 60)
    assert await s.call(f.dataAccessUntil(a, fin)) == until + 60
    ev = await s.mrv.revoke_data_access(s.a, fin)
    assert (ev.name, ev["enterprise"], ev["finance"]) == ("DataAccessRevoked", a, fin)
    assert await s.mrv.data_access_until(a, fin) == 0
    assert not await s.mrv.has_data_access(a, fin)
    await reverts(s.mrv.revoke_data_access(s.a, fin), "NoDataAccess", a, fin)


async def test_data_access_rules(s: Sys) -> None:
    fin = s.finance.address
    later = await _block_time(s) + 3600
    # only an account holding the finance role may be granted access
    for who in (s.auditor, s.gov, s.b, s.stranger):
        await reverts(s.mrv.grant_data_access(s.a, who.address, later), "NotFinance",
                      who.address)
    # the end must be in the future
    now = await _block_time(s)
    err = await reverts(s.mrv.grant_data_access(s.a, fin, now - 1), "AccessUntilInPast")
    assert err.args_[0] == now - 1
    await reverts(s.mrv.grant_data_access(s.a, fin, 0), "AccessUntilInPast")
    # only an active enterprise grants or revokes, for itself
    for who in (s.finance, s.gov, s.auditor, s.regulator, s.stranger, s.gw_a.account):
        await reverts(s.mrv.grant_data_access(who, fin, later), "NotActiveEnterprise",
                      who.address)
        await reverts(s.mrv.revoke_data_access(who, fin), "NotActiveEnterprise", who.address)
    await s.mrv.grant_data_access(s.a, fin, later)
    await s.mrv.suspend(s.gov, s.a.address, "audit")
    await reverts(s.mrv.grant_data_access(s.a, fin, later + 1), "NotActiveEnterprise",
                  s.a.address)
    await reverts(s.mrv.revoke_data_access(s.a, fin), "NotActiveEnterprise", s.a.address)
    await s.mrv.reinstate(s.gov, s.a.address)
    # a grant outlives the institution's role; revoking it still works
    await s.mrv.revoke_role(s.regulator, "finance", fin)
    assert await s.mrv.has_data_access(s.a.address, fin)
    await s.mrv.revoke_data_access(s.a, fin)
    assert not await s.mrv.has_data_access(s.a.address, fin)


async def test_data_access_ends_at_until(s: Sys) -> None:
    fin, a = s.finance.address, s.a.address
    until = await _block_time(s) + 2
    await s.mrv.grant_data_access(s.a, fin, until)
    assert await s.mrv.has_data_access(a, fin)
    # wait (on the chain's clock) until a block at or after `until` is mined
    for _ in range(100):  # the chain's clock follows the wall clock: ~2 s
        if await _block_time(s) >= until:
            break
        await s.mrv.chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
    assert await _block_time(s) >= until
    assert not await s.mrv.has_data_access(a, fin)
    assert await s.mrv.data_access_until(a, fin) == until  # the end stays readable
