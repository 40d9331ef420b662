"""EmissionsLedger on anvil: every rule of anchorBatch, every role check, events, getters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from ledger_client import ChainRevert, EvmChain, Signer, load_account
from ledger_client._admin import register_gateway
from ledger_client._chain import header_tuple
from ledger_client._format import ZERO32, BatchHeader, build_header, gateway_key, keccak256
from simulator import DEV_KEYS, Anvil


@dataclass
class Ledger:
    chain: EvmChain
    admin: object
    gw: object
    other: object
    signer: Signer


@pytest.fixture
async def ledger(anvil: Anvil, tmp_path: Path) -> AsyncIterator[Ledger]:
    keys = []
    for i in range(3):
        p = tmp_path / f"k{i}"
        p.write_text(DEV_KEYS[i])
        keys.append(load_account(p))
    chain = EvmChain(anvil.url)
    await chain.deploy(keys[0])
    signer = Signer(b"\x07" * 32)
    await register_gateway(chain, keys[0], "gw-1", keys[1].address, signer.public_key)
    yield Ledger(chain, keys[0], keys[1], keys[2], signer)
    await chain.close()


def _header(seq: int, prev: bytes, first: int, n: int) -> BatchHeader:
    return build_header(gateway_id="gw-1", seq=seq, prev_hash=prev,
                        records=[(first + i, 1000 + i, keccak256(bytes([i]))) for i in range(n)])


async def _anchor(lg: Ledger, h: BatchHeader, sender: object = None,
                  sig: bytes | None = None) -> None:
    fn = lg.chain.contract.functions.anchorBatch(header_tuple(h), sig or lg.signer.sign(h.hash()))
    await lg.chain.transact(sender or lg.gw, fn)  # type: ignore[arg-type]


async def _reverts(lg: Ledger, name: str, h: BatchHeader, **kw: object) -> ChainRevert:
    with pytest.raises(ChainRevert) as ei:
        await _anchor(lg, h, **kw)  # type: ignore[arg-type]
    assert ei.value.name == name, ei.value
    return ei.value


async def test_anchor_chain_of_batches(ledger: Ledger) -> None:
    h1 = _header(1, ZERO32, 1, 3)
    await _anchor(ledger, h1)
    h2 = _header(2, h1.hash(), 4, 5)
    await _anchor(ledger, h2)
    c = ledger.chain
    assert await c.last_seq("gw-1") == 2
    b2 = await c.batch("gw-1", 2)
    assert (b2.header_hash, b2.root, b2.count, b2.first_record_seq, b2.last_record_seq) == (
        h2.hash(), h2.root, 5, 4, 8)
    g = await c.gateway("gw-1")
    assert (g.last_seq, g.last_record_seq, g.last_header_hash) == (2, 8, h2.hash())
    logs = await c.contract.events.BatchAnchored.get_logs(from_block=0)
    assert [(bytes(e.args.gatewayKey), e.args.seq) for e in logs] == [
        (gateway_key("gw-1"), 1), (gateway_key("gw-1"), 2)]
    assert bytes(logs[1].args.signature) == ledger.signer.sign(h2.hash())
    assert bytes(logs[1].args.headerHash) == h2.hash()


async def test_anchor_rules(ledger: Ledger) -> None:
    h1 = _header(1, ZERO32, 1, 3)
    await _reverts(ledger, "WrongSeq", _header(2, ZERO32, 1, 3))
    await _reverts(ledger, "WrongPrevHash", _header(1, b"\x01" * 32, 1, 3))
    await _reverts(ledger, "WrongRecordRange", _header(1, ZERO32, 2, 3))
    await _reverts(ledger, "WrongRecordRange", replace(h1, count=2))
    await _reverts(ledger, "NotGatewaySender", h1, sender=ledger.other)
    await _reverts(ledger, "BadSignatureLength", h1, sig=b"\x01" * 63)
    await _reverts(ledger, "UnknownGateway", replace(h1, gateway_id="nobody"))
    await _anchor(ledger, h1)
    err = await _reverts(ledger, "BatchAlreadyAnchored", h1)
    assert err.args_ == (1, h1.hash())
    rogue = replace(h1, root=b"\x09" * 32)
    err = await _reverts(ledger, "ConflictingBatch", rogue)
    assert err.args_ == (1, h1.hash(), rogue.hash())
    await _reverts(ledger, "WrongRecordRange", _header(2, h1.hash(), 5, 1))  # record gap


async def test_admin_only_and_revocation(ledger: Ledger) -> None:
    c = ledger.chain
    with pytest.raises(ChainRevert, match="NotAdmin"):
        await c.transact(ledger.other, c.contract.functions.registerGateway(  # type: ignore[arg-type]
            "gw-2", ledger.other.address, b"\x01" * 32))  # type: ignore[attr-defined]
    with pytest.raises(ChainRevert, match="GatewayExists"):
        await register_gateway(c, ledger.admin, "gw-1", ledger.other.address,  # type: ignore[arg-type, attr-defined]
                               b"\x02" * 32)
    with pytest.raises(ChainRevert, match="NotAdmin"):
        await c.transact(ledger.gw, c.contract.functions.revokeGateway(gateway_key("gw-1")))  # type: ignore[arg-type]
    await c.transact(ledger.admin, c.contract.functions.revokeGateway(gateway_key("gw-1")))  # type: ignore[arg-type]
    assert (await c.gateway("gw-1")).active is False
    await _reverts(ledger, "GatewayNotActive", _header(1, ZERO32, 1, 1))
    with pytest.raises(ChainRevert, match="UnknownGateway"):
        await c.gateway("nobody")


async def test_verify_record_on_chain(ledger: Ledger) -> None:
    from ledger_client import merkle_proof

    leaves = [keccak256(bytes([i])) for i in range(5)]
    h = _header(1, ZERO32, 1, 5)
    await _anchor(ledger, h)
    for i in range(5):
        assert await ledger.chain.verify_record("gw-1", 1, leaves[i], merkle_proof(leaves, i))
    assert not await ledger.chain.verify_record("gw-1", 1, keccak256(b"x"), merkle_proof(leaves, 0))
    assert not await ledger.chain.verify_record("gw-1", 2, leaves[0], merkle_proof(leaves, 0))


async def test_gas_per_batch_does_not_grow_with_records(ledger: Ledger) -> None:
    """A batch of 1 record and of 100,000 records cost the same to anchor (only the header
    goes on-chain)."""
    c = ledger.chain
    h1 = build_header(gateway_id="gw-1", seq=1, prev_hash=ZERO32,
                      records=[(1, 0, keccak256(b"a"))])
    big_leaves = [(2 + i, i, keccak256(i.to_bytes(4, "big"))) for i in range(100_000)]
    await _anchor(ledger, h1)
    h2 = build_header(gateway_id="gw-1", seq=2, prev_hash=h1.hash(), records=big_leaves)
    fn = c.contract.functions.anchorBatch(header_tuple(h2), ledger.signer.sign(h2.hash()))
    r2 = await c.transact(ledger.gw, fn)  # type: ignore[arg-type]
    h3 = build_header(gateway_id="gw-1", seq=3, prev_hash=h2.hash(),
                      records=[(100_002, 0, keccak256(b"b"))])
    r3 = await c.transact(ledger.gw, c.contract.functions.anchorBatch(  # type: ignore[arg-type]
        header_tuple(h3), ledger.signer.sign(h3.hash())))
    assert abs(r2.gas_used - r3.gas_used) < 200  # calldata bytes differ a little, nothing more
