"""The byte formats of docs/formats.md: vectors, an independent ABI encoder, and the EVM."""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import AuditRecord, DerivedRecord, Reading, Record
from ledger_client._chain import EvmChain
from ledger_client._format import (
    BATCH_TAG,
    BatchHeader,
    build_header,
    encode_reading,
    encode_record,
    gateway_key,
    keccak256,
    merkle_proof,
    merkle_root,
    record_leaf,
    value_bits,
    verify_proof,
)
from ledger_client._signing import Signer, load_account, verify_signature
from ledger_client._verify import record_from_json, record_to_json
from mrv_core._records import committed_reading, new_reading
from simulator import DEV_KEYS, Anvil

VECTORS = json.loads((Path(__file__).parent.parent / "docs/vectors/formats.json").read_text())


def _abi_body(r: Record) -> bytes:
    """The record body by eth_abi, an encoder independent of ours."""
    if isinstance(r, Reading):
        return abi_encode(
            ["uint8", "string", "uint64", "string", "int64", "uint64", "string", "uint32",
             "string"],
            [1, r.gateway_id, r.seq, r.point_id, r.ts_ns, value_bits(r.value), r.unit, r.quality,
             r.source])
    if isinstance(r, DerivedRecord):
        return abi_encode(
            ["uint8", "string", "uint64", "string", "string", "int64", "int64", "uint64",
             "string", "uint32", "uint64", "uint64"],
            [2, r.gateway_id, r.seq, r.point_id, r.derivation, r.period_start_ns,
             r.period_end_ns, value_bits(r.value), r.unit, r.quality, r.from_seq, r.to_seq])
    return abi_encode(["uint8", "string", "uint64", "int64", "string", "string", "string"],
                      [3, r.gateway_id, r.seq, r.ts_ns, r.category, r.subject, r.payload])


@pytest.mark.parametrize("vec", VECTORS["records"],
                         ids=lambda v: f"{v['record']['kind']}-{v['record']['seq']}")
def test_record_vectors(vec: dict[str, Any]) -> None:
    r = record_from_json(vec["record"])
    assert record_to_json(r) == vec["record"]
    assert "0x" + encode_record(r).hex() == vec["body"]
    assert "0x" + record_leaf(r).hex() == vec["leaf"]
    assert encode_record(r) == _abi_body(r)  # eth_abi agrees


def test_vectors_cover_every_kind() -> None:
    assert {v["record"]["kind"] for v in VECTORS["records"]} == {"reading", "derived", "audit"}


@pytest.mark.parametrize("tree", VECTORS["merkle"], ids=lambda t: f"{len(t['leaves'])}-leaves")
def test_merkle_vectors(tree: dict[str, list[str] | str]) -> None:
    leaves = [bytes.fromhex(x[2:]) for x in tree["leaves"]]
    root = merkle_root(leaves)
    assert "0x" + root.hex() == tree["root"]
    for i, expected in enumerate(tree["proofs"]):
        proof = merkle_proof(leaves, i)
        assert ["0x" + p.hex() for p in proof] == expected
        assert verify_proof(leaves[i], proof, root)


def test_header_vector_and_signature() -> None:
    h = VECTORS["header"]
    f = h["fields"]
    header = BatchHeader(
        gateway_id=f["gateway_id"], seq=f["seq"], prev_hash=bytes.fromhex(f["prev_hash"][2:]),
        root=bytes.fromhex(f["root"][2:]), count=f["count"],
        first_record_seq=f["first_record_seq"], last_record_seq=f["last_record_seq"],
        first_ts_ns=f["first_ts_ns"], last_ts_ns=f["last_ts_ns"], co2e_scope1_g=f["co2e_g"][0],
        co2e_scope2_g=f["co2e_g"][1], co2e_scope3_g=f["co2e_g"][2])
    assert "0x" + gateway_key(header.gateway_id).hex() == f["gateway_key"]
    assert "0x" + header.encode().hex() == h["encoded"]
    assert "0x" + header.hash().hex() == h["header_hash"]
    independent = abi_encode(
        ["bytes32", "bytes32", "uint64", "bytes32", "bytes32", "uint32", "uint64", "uint64",
         "int64", "int64", "uint64", "uint64", "uint64"],
        [BATCH_TAG, gateway_key(header.gateway_id), header.seq, header.prev_hash, header.root,
         header.count, header.first_record_seq, header.last_record_seq, header.first_ts_ns,
         header.last_ts_ns, *f["co2e_g"]])
    assert header.encode() == independent
    signer = Signer(bytes.fromhex(h["ed25519_seed"][2:]))
    assert "0x" + signer.public_key.hex() == h["ed25519_public_key"]
    sig = bytes.fromhex(h["signature"][2:])
    assert signer.sign(header.hash()) == sig  # Ed25519 is deterministic
    assert verify_signature(signer.public_key, header.hash(), sig)
    assert not verify_signature(signer.public_key, header.hash()[::-1], sig)


def test_value_bits_is_canonical() -> None:
    assert value_bits(math.nan) == value_bits(-math.nan) == 0x7FF8000000000000
    assert value_bits(-0.0) == value_bits(0.0) == 0
    assert value_bits(1.0) == 0x3FF0000000000000
    assert value_bits(-2.5) == int.from_bytes(struct.pack(">d", -2.5), "big")


def test_uncommitted_reading_has_no_body() -> None:
    r = Reading(point_id="p", ts_ns=1, value=1.0, unit="u", source="s")
    with pytest.raises(ValueError, match="committed"):
        encode_reading(r)


def test_header_needs_contiguous_records() -> None:
    leaf = keccak256(b"x")
    with pytest.raises(ValueError, match="contiguous"):
        build_header(gateway_id="g", seq=1, prev_hash=b"\0" * 32,
                     records=[(1, 0, leaf), (3, 0, leaf)])
    with pytest.raises(ValueError, match="at least one"):
        build_header(gateway_id="g", seq=1, prev_hash=b"\0" * 32, records=[])


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 70), data=st.data())
def test_every_leaf_proves_and_others_do_not(n: int, data: st.DataObject) -> None:
    leaves = [keccak256(i.to_bytes(4, "big")) for i in range(n)]
    root = merkle_root(leaves)
    i = data.draw(st.integers(0, n - 1))
    proof = merkle_proof(leaves, i)
    assert verify_proof(leaves[i], proof, root)
    assert len(proof) <= max(1, math.ceil(math.log2(n))) if n > 1 else proof == []
    assert not verify_proof(keccak256(b"not a leaf"), proof, root)


@settings(max_examples=80, deadline=None)
@given(
    gw=st.text(min_size=1, max_size=40), point=st.text(max_size=80), unit=st.text(max_size=10),
    source=st.text(max_size=40), seq=st.integers(1, 2**63 - 1),
    ts=st.integers(-(2**63), 2**63 - 1), value=st.floats(allow_nan=True),
    quality=st.integers(0, 2**32 - 1))
def test_encoder_matches_eth_abi(gw: str, point: str, unit: str, source: str, seq: int, ts: int,
                                 value: float, quality: int) -> None:
    r = Reading(gateway_id=gw, seq=seq, point_id=point, ts_ns=ts, value=value, unit=unit,
                quality=quality, source=source)
    assert encode_reading(r) == _abi_body(r)


@settings(max_examples=40, deadline=None)
@given(seq=st.integers(1, 2**63 - 1), ts=st.integers(-(2**63), 2**63 - 1),
       cat=st.text(max_size=20), subject=st.text(max_size=40), payload=st.text(max_size=200),
       value=st.floats(allow_nan=True), lo=st.integers(0, 2**64 - 1),
       hi=st.integers(0, 2**64 - 1))
def test_other_kinds_match_eth_abi(seq: int, ts: int, cat: str, subject: str, payload: str,
                                   value: float, lo: int, hi: int) -> None:
    a = AuditRecord(gateway_id="gw", seq=seq, ts_ns=ts, category=cat, subject=subject,
                    payload=payload)
    assert encode_record(a) == _abi_body(a)
    d = DerivedRecord(gateway_id="gw", seq=seq, point_id=subject, derivation=cat,
                      period_start_ns=ts, period_end_ns=ts, value=value, unit="u", quality=1,
                      from_seq=lo, to_seq=hi)
    assert encode_record(d) == _abi_body(d)


async def test_contract_computes_the_same_header_hash(anvil: Anvil,
                                                                   tmp_path: Path) -> None:
    key = tmp_path / "admin.key"
    key.write_text(DEV_KEYS[0])
    chain = EvmChain(anvil.url)
    try:
        await chain.deploy(load_account(key))
        h = VECTORS["header"]["fields"]
        header = BatchHeader(
            gateway_id=h["gateway_id"], seq=h["seq"], prev_hash=bytes.fromhex(h["prev_hash"][2:]),
            root=bytes.fromhex(h["root"][2:]), count=h["count"],
            first_record_seq=h["first_record_seq"], last_record_seq=h["last_record_seq"],
            first_ts_ns=h["first_ts_ns"], last_ts_ns=h["last_ts_ns"],
            co2e_scope1_g=h["co2e_g"][0], co2e_scope2_g=h["co2e_g"][1],
            co2e_scope3_g=h["co2e_g"][2])
        assert await chain.header_hash_on_chain(header) == header.hash()
    finally:
        await chain.close()


@given(point=st.text(max_size=20), ts=st.integers(-(2**63), 2**63 - 1),
       value=st.floats(allow_nan=False), unit=st.text(max_size=5), source=st.text(max_size=5),
       quality=st.integers(0, 2**32 - 1), seq=st.integers(1, 2**63 - 1),
       gw=st.text(min_size=1, max_size=10))
def test_committed_reading_is_replace_with_seq_and_gateway(
        point: str, ts: int, value: float, unit: str, source: str, quality: int, seq: int,
        gw: str) -> None:
    r = Reading(point_id=point, ts_ns=ts, value=value, unit=unit, source=source, quality=quality)
    c = committed_reading(r, seq, gw)
    assert c == dataclasses.replace(r, seq=seq, gateway_id=gw)
    assert type(c) is Reading and r.seq == 0 and r.gateway_id == ""
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.seq = 1  # type: ignore[misc]


@given(point=st.text(max_size=20), ts=st.integers(-(2**63), 2**63 - 1),
       value=st.floats(allow_nan=False), unit=st.text(max_size=5), source=st.text(max_size=5),
       quality=st.integers(0, 2**32 - 1))
def test_new_reading_is_the_dataclass_constructor(
        point: str, ts: int, value: float, unit: str, source: str, quality: int) -> None:
    n = new_reading(point, ts, value, unit, source, quality)
    assert n == Reading(point_id=point, ts_ns=ts, value=value, unit=unit, source=source,
                        quality=quality)
    assert type(n) is Reading and n.seq == 0 and n.gateway_id == ""
    assert new_reading(point, ts, value, unit, source).quality == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        n.value = 1.0  # type: ignore[misc]
