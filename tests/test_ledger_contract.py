"""EmissionsLedger on anvil: every rule of anchorBatch, registration through the registry,
the batch-to-period mapping, events, getters, on-chain Merkle proofs, gas per batch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest
from aiohttp import web

from ledger_client import EvmChain, merkle_proof
from ledger_client._admin import ROLES, Mrv, deploy_system, register_gateway
from ledger_client._chain import header_tuple
from ledger_client._format import ZERO32, BatchHeader, build_header, gateway_key, keccak256
from simulator import Anvil, free_port

from .test_contracts_support import P2024, P_OPEN, Sys, T, fresh_system, names, new_account, ns
from .test_contracts_support import reverts as _reverts


@pytest.fixture
async def s(anvil: Anvil) -> AsyncIterator[Sys]:
    sys_ = await fresh_system(anvil.url)
    yield sys_
    await sys_.mrv.close()


def _header(seq: int, prev: bytes, first: int, n: int, gw: str = "gw-a",
            ts: int = P2024[0] + 1) -> BatchHeader:
    return build_header(gateway_id=gw, seq=seq, prev_hash=prev,
                        records=[(first + i, ts + i, keccak256(bytes([i]))) for i in range(n)])


async def _anchor(s: Sys, h: BatchHeader, sender: object = None, sig: bytes | None = None) -> list:
    fn = s.led.functions.anchorBatch(header_tuple(h), sig or s.gw_a.signer.sign(h.hash()))
    _, ev = await s.mrv.send(sender or s.gw_a.account, fn)  # type: ignore[arg-type]
    return ev


async def test_anchor_chain_of_batches(s: Sys) -> None:
    h1 = _header(1, ZERO32, 1, 3)
    await _anchor(s, h1)
    h2 = _header(2, h1.hash(), 4, 5)
    ev = await _anchor(s, h2)
    assert names(ev) == ["BatchAnchored", "EmissionsAccrued"]
    c = s.mrv.chain
    assert await c.last_seq("gw-a") == 2
    b2 = await c.batch("gw-a", 2)
    assert (b2.header_hash, b2.root, b2.count, b2.first_record_seq, b2.last_record_seq,
            b2.period) == (h2.hash(), h2.root, 5, 4, 8, 1)
    g = await c.gateway("gw-a")
    assert (g.gateway_id, g.sender, g.signing_key, g.active) == (
        "gw-a", s.gw_a.account.address, s.gw_a.signer.public_key, True)
    assert (g.last_seq, g.last_record_seq, g.last_header_hash) == (2, 8, h2.hash())
    logs = await s.led.events.BatchAnchored.get_logs(from_block=0)
    assert [(bytes(e.args.gatewayKey), e.args.seq) for e in logs] == [
        (gateway_key("gw-a"), 1), (gateway_key("gw-a"), 2)]
    assert bytes(logs[1].args.signature) == s.gw_a.signer.sign(h2.hash())
    assert bytes(logs[1].args.headerHash) == h2.hash()
    assert await c.header_hash_on_chain(h2) == h2.hash()
    # another gateway's chain is independent
    hb = _header(1, ZERO32, 1, 2, gw="gw-b")
    await _anchor(s, hb, sender=s.gw_b.account, sig=s.gw_b.signer.sign(hb.hash()))
    assert (await c.last_seq("gw-b"), await c.last_seq("gw-a")) == (1, 2)


async def test_anchor_rules(s: Sys) -> None:
    h1 = _header(1, ZERO32, 1, 3)
    await _reverts(_anchor(s, _header(2, ZERO32, 1, 3)), "WrongSeq", 1, 2)
    await _reverts(_anchor(s, _header(1, b"\x01" * 32, 1, 3)), "WrongPrevHash")
    await _reverts(_anchor(s, _header(1, ZERO32, 2, 3)), "WrongRecordRange")
    await _reverts(_anchor(s, replace(h1, count=2)), "WrongRecordRange")
    await _reverts(_anchor(s, replace(h1, count=0, last_record_seq=0)), "WrongRecordRange")
    await _reverts(_anchor(s, _header(0, ZERO32, 1, 3)), "WrongSeq")
    await _reverts(_anchor(s, h1, sig=b"\x01" * 63), "BadSignatureLength", 63)
    await _reverts(_anchor(s, replace(h1, gateway_id="nobody")), "UnknownGateway",
                   gateway_key("nobody"))
    await _anchor(s, h1)
    err = await _reverts(_anchor(s, h1), "BatchAlreadyAnchored")
    assert err.args_ == (1, h1.hash())
    rogue = replace(h1, root=b"\x09" * 32)
    err = await _reverts(_anchor(s, rogue), "ConflictingBatch")
    assert err.args_ == (1, h1.hash(), rogue.hash())
    await _reverts(_anchor(s, _header(2, h1.hash(), 5, 1)), "WrongRecordRange")  # record gap


@pytest.mark.parametrize("who", ["enterprise", "other-gateway", "regulator", "stranger"])
async def test_only_the_registered_sender_anchors(s: Sys, who: str) -> None:
    sender = {"enterprise": s.a, "other-gateway": s.gw_b.account, "regulator": s.regulator,
              "stranger": s.stranger}[who]
    h1 = _header(1, ZERO32, 1, 3)
    await _reverts(_anchor(s, h1, sender=sender), "NotGatewaySender", gateway_key("gw-a"),
                   sender.address)


async def test_revoked_gateway_stops_anchoring(s: Sys) -> None:
    c = s.mrv.chain
    await _anchor(s, _header(1, ZERO32, 1, 1))
    ev = await s.mrv.revoke_gateway(s.gov, "gw-a")
    assert names(ev) == ["GatewayRevoked"]
    assert (await c.gateway("gw-a")).active is False
    await _reverts(_anchor(s, _header(2, ZERO32, 2, 1)), "GatewayNotActive", gateway_key("gw-a"))
    with pytest.raises(Exception, match="UnknownGateway"):
        await c.gateway("nobody")


async def test_suspended_enterprise_keeps_anchoring(s: Sys) -> None:
    """Suspension stops allocation and trading, not monitoring."""
    await s.mrv.suspend(s.gov, s.a.address, "late report")
    await _anchor(s, _header(1, ZERO32, 1, 1))
    assert await s.mrv.chain.last_seq("gw-a") == 1


async def test_batch_maps_to_the_period_of_its_last_timestamp(s: Sys) -> None:
    """A batch accrues wholly to the period holding its lastTsNs; outside every period to 0."""
    gw = s.gw_a
    cases = [
        (ns(2023, 6), 0),              # before the first period
        (P2024[0], 1),                 # the first nanosecond of 2024
        (P2024[1] - 10, 1),            # ends at the last ns of 2024 (ts + 0..2)
        (P2024[1] - 1, 2),             # straddles: last record in 2025 -> period 2
        (ns(2030), 2),
        (ns(2101), 0),                 # after the last period
    ]
    for i, (ts, period) in enumerate(cases):
        h = gw.header(ts, 3, co2e=(1000 * (i + 1), 10, 1))
        ev = await gw.anchor(s.mrv, h)
        acc = next(e for e in ev if e.name == "EmissionsAccrued")
        assert (acc["enterprise"], acc["period"], acc["seq"]) == (s.a.address, period, i + 1), ts
        assert (await s.mrv.chain.batch("gw-a", i + 1)).period == period
    for period, idx in ((0, [0, 5]), (1, [1, 2]), (2, [3, 4])):
        e = await s.call(s.led.functions.emissionsOf(s.a.address, period))
        assert tuple(e) == (sum(1000 * (i + 1) for i in idx), 10 * len(idx), len(idx), len(idx))
        total = await s.call(s.led.functions.reportedTotal(s.a.address, period))
        assert total == sum(1000 * (i + 1) + 11 for i in idx)
    assert await s.call(s.reg.functions.periodAt(P2024[0] - 1)) == 0
    assert await s.call(s.reg.functions.periodAt(P2024[0])) == 1
    assert await s.call(s.reg.functions.periodAt(P_OPEN[1])) == 0


async def test_verify_record_on_chain(s: Sys) -> None:
    leaves = [keccak256(bytes([i])) for i in range(5)]
    h = _header(1, ZERO32, 1, 5)
    await _anchor(s, h)
    for i in range(5):
        assert await s.mrv.chain.verify_record("gw-a", 1, leaves[i], merkle_proof(leaves, i))
    assert not await s.mrv.chain.verify_record("gw-a", 1, keccak256(b"x"), merkle_proof(leaves, 0))
    assert not await s.mrv.chain.verify_record("gw-a", 2, leaves[0], merkle_proof(leaves, 0))


async def test_registry_binding(anvil: Anvil) -> None:
    """The ledger takes its registry once, from its deployer; nothing anchors before."""
    from eth_account import Account

    from simulator import DEV_KEYS

    deployer = Account.from_key(DEV_KEYS[0])
    chain = EvmChain(anvil.url)
    try:
        await chain.deploy(deployer)
        assert await chain._rpc(chain.contract.functions.deployer().call()) == deployer.address
        await _reverts(chain.gateway("gw-a"), "RegistryNotBound")
        h = _header(1, ZERO32, 1, 1)
        await _reverts(chain.transact(deployer, chain.contract.functions.anchorBatch(
            header_tuple(h), b"\x00" * 64)), "RegistryNotBound")
        other = Account.from_key(DEV_KEYS[1])
        registry = await chain.deploy_artifact(deployer, "MrvRegistry", (deployer.address,))
        await _reverts(chain.transact(other, chain.contract.functions.bindRegistry(registry)),
                       "NotDeployer", other.address)
        await _reverts(chain.transact(deployer, chain.contract.functions.bindRegistry(
            "0x" + "00" * 20)), "ZeroAddress")
        r = await chain.transact(deployer, chain.contract.functions.bindRegistry(registry))
        mrv = Mrv(chain, {"EmissionsLedger": str(chain.address), "MrvRegistry": registry})
        assert [e.name for e in mrv.events(r)] == ["RegistryBound"]
        await _reverts(chain.transact(deployer, chain.contract.functions.bindRegistry(registry)),
                       "RegistryAlreadyBound", registry)
    finally:
        await chain.close()


async def test_dev_shortcut_registers_through_a_derived_enterprise(anvil: Anvil) -> None:
    """`register_gateway` with the regulator's key (tests and demos): a development
    enterprise derived from it owns the gateway; the regulator never becomes an enterprise."""
    from eth_account import Account

    from ledger_client._admin import dev_enterprise_account
    from simulator import DEV_KEYS

    regulator = Account.from_key(DEV_KEYS[0])
    chain = EvmChain(anvil.url)
    try:
        book = await deploy_system(chain, regulator)
        sender = new_account()
        await register_gateway(chain, regulator, "dev-gw", sender.address, b"\x05" * 32)
        await register_gateway(chain, regulator, "dev-gw2", sender.address, b"\x06" * 32)
        mrv = Mrv(chain, book["contracts"])
        dev = dev_enterprise_account(regulator)
        g = await mrv.call(mrv.registry.functions.gateway(gateway_key("dev-gw")))
        assert g[1] == dev.address
        assert await mrv.call(mrv.registry.functions.enterpriseCount()) == 1
        assert await mrv.call(mrv.registry.functions.enterpriseStatus(regulator.address)) == 0
        # an account that is neither: the contract says why
        await _reverts(register_gateway(chain, sender, "x", sender.address, b"\x01" * 32),
                       "NotActiveEnterprise", sender.address)
    finally:
        await chain.close()


async def test_gas_per_batch_does_not_grow_with_records(s: Sys) -> None:
    """A batch of 1 record and of 100,000 records cost the same to anchor (only the header
    goes on-chain)."""
    c = s.mrv.chain
    gw = s.gw_a
    await gw.anchor(s.mrv, gw.header(P2024[0], 1, co2e=(1, 1, 1)))
    big = [keccak256(i.to_bytes(4, "big")) for i in range(100_000)]
    h2 = gw.header(P2024[0] + 10, leaves=big, co2e=(5 * T, 1, 1))
    r2 = await c.transact(gw.account, c.contract.functions.anchorBatch(
        header_tuple(h2), gw.signer.sign(h2.hash())))
    gw.headers.append(h2)
    gw.next_record = h2.last_record_seq + 1
    h3 = gw.header(P2024[0] + 20, 1, co2e=(7 * T, 1, 1))
    r3 = await c.transact(gw.account, c.contract.functions.anchorBatch(
        header_tuple(h3), gw.signer.sign(h3.hash())))
    assert abs(r2.gas_used - r3.gas_used) < 200  # calldata bytes differ a little, nothing more


async def test_role_ids_match_the_registry(s: Sys) -> None:
    for name, fn in (("government", "GOVERNMENT_ROLE"), ("auditor", "AUDITOR_ROLE"),
                     ("finance", "FINANCE_ROLE"), ("market-contract", "MARKET_CONTRACT_ROLE"),
                     ("verification-contract", "VERIFICATION_CONTRACT_ROLE"),
                     ("regulator", "DEFAULT_ADMIN_ROLE")):
        assert bytes(await s.call(getattr(s.reg.functions, fn)())) == ROLES[name]


async def test_chain_id_is_asked_once_not_before_every_call(s: Sys, anvil: Anvil) -> None:
    """web3.py's validation middleware asks for eth_chainId before every eth_call; the client
    caches it (one round trip per call instead of two), seen by a counting JSON-RPC relay:
    without the cache, ten calls make eleven eth_chainId requests."""
    seen: list[str] = []

    async def relay(request: web.Request) -> web.Response:
        body = await request.json()
        seen.extend(b["method"] for b in (body if isinstance(body, list) else [body]))
        async with aiohttp.ClientSession() as session, session.post(anvil.url, json=body) as r:
            return web.json_response(await r.json())

    app = web.Application()
    app.router.add_post("/", relay)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    chain = EvmChain(f"http://127.0.0.1:{port}", contract_address=s.led.address)
    try:
        assert [await chain.last_seq("gw-a") for _ in range(10)] == [0] * 10
        assert await chain.chain_id() == 31337
    finally:
        await chain.close()
        await runner.cleanup()
    assert seen.count("eth_call") == 10, seen
    assert seen.count("eth_chainId") <= 2, seen  # web3's cache asks once more on its first use
