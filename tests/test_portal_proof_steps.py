"""The reading page's proof, step by step (portal/_proof_steps.py), with plain values: a real
batch (leaves, Merkle root, Ed25519 signatures) and each thing an attacker or a broken store
could change, one at a time."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from ledger_client import (
    ZERO32,
    BatchHeader,
    Bundle,
    Signer,
    build_header,
    keccak256,
    merkle_proof,
    merkle_root,
    parse_bundle,
    record_leaf,
    record_signing_bytes,
    verify_proof,
)
from mrv_core import INVALID, Quality, Reading
from portal._proof_steps import (
    Flag,
    ProofCase,
    case_from_bundle,
    check_steps,
    fold_proof,
    quality_flags,
    verified,
)

SIGNER = Signer(keccak256(b"proof-steps-test"))
OTHER = Signer(keccak256(b"someone else"))
T0 = 1_700_000_000 * 10**9


def readings(n: int = 7) -> list[Reading]:
    return [Reading(gateway_id="gw-1", seq=11 + i, point_id="stack.co2", ts_ns=T0 + i * 60 * 10**9,
                    value=400.0 + i, unit="mg/m3", quality=int(Quality.SPIKE) if i == 3 else 0,
                    source="modbus:cems") for i in range(n)]


RECS = readings()
LEAVES = [record_leaf(r) for r in RECS]
HEADER = build_header(gateway_id="gw-1", seq=3, prev_hash=keccak256(b"batch 2"),
                      records=[(r.seq, r.ts_ns, leaf) for r, leaf in zip(RECS, LEAVES, strict=True)],
                      co2e_g=(5_000, 700, 0))
SIG = SIGNER.sign(HEADER.hash())


def case(i: int = 4, **change: object) -> ProofCase:
    base = ProofCase(record=RECS[i], stored_leaf=LEAVES[i], proof=merkle_proof(LEAVES, i),
                     header=HEADER, anchored_header_hash=HEADER.hash(), anchored_root=HEADER.root,
                     signature=SIG, signing_key=SIGNER.public_key, seq=RECS[i].seq)
    return dataclasses.replace(base, **change)  # type: ignore[arg-type]


def states(c: ProofCase) -> dict[str, str]:
    return {s.name: s.state for s in check_steps(c)}


def test_an_untouched_record_passes_every_step() -> None:
    for i in range(len(RECS)):
        steps = check_steps(case(i))
        assert [s.name for s in steps] == ["leaf", "merkle", "anchor", "signature",
                                           "record-signature"]
        assert [s.state for s in steps] == ["passed"] * 4 + ["not-applicable"]
        assert verified(steps)
    leaf, merkle, anchor, _sig, _ = check_steps(case(4))
    assert leaf.compared[0].computed == leaf.compared[0].expected == "0x" + LEAVES[4].hex()
    assert merkle.compared[0].computed == "0x" + HEADER.root.hex()
    assert merkle.trail[-1][1] == "0x" + HEADER.root.hex()
    assert len(merkle.trail) == 3  # 7 leaves: three levels above leaf 4
    assert anchor.compared[0].expected == "0x" + HEADER.hash().hex()


def test_a_changed_value_fails_the_leaf_and_the_path_and_reaches_nothing_after() -> None:
    tampered = dataclasses.replace(RECS[4], value=999.0)
    steps = check_steps(case(record=tampered))
    assert {s.name: s.state for s in steps} == {
        "leaf": "failed", "merkle": "failed", "anchor": "not-reached",
        "signature": "not-reached", "record-signature": "not-applicable"}
    assert not verified(steps)
    leaf = steps[0]
    assert leaf.compared[0].computed == "0x" + record_leaf(tampered).hex()
    assert leaf.compared[0].expected == "0x" + LEAVES[4].hex() and not leaf.compared[0].same
    # the later steps still did their own comparisons (nothing stopped at the first failure)
    assert steps[2].own_ok and steps[3].own_ok and steps[2].blocked_by == ("merkle",)


def test_a_changed_stored_leaf_fails_the_leaf_step_only_but_blocks_the_rest() -> None:
    got = states(case(stored_leaf=keccak256(b"not the leaf")))
    assert got["leaf"] == "failed"
    # the fields themselves still reach the root: the path's own comparison holds
    assert got["merkle"] == got["anchor"] == got["signature"] == "not-reached"


def test_a_changed_root_fails_the_path_the_anchor_and_the_signature() -> None:
    bad = dataclasses.replace(HEADER, root=keccak256(b"another root"))
    got = states(case(header=bad, anchored_root=bad.root))  # the stored root is the index's
    assert got == {"leaf": "passed", "merkle": "failed", "anchor": "failed",
                   "signature": "failed", "record-signature": "not-applicable"}


def test_a_header_the_ledger_does_not_hold_fails_the_anchor() -> None:
    got = states(case(anchored_header_hash=keccak256(b"what the ledger holds")))
    assert got["leaf"] == got["merkle"] == "passed"
    assert got["anchor"] == "failed" and got["signature"] == "not-reached"
    got = states(case(anchored_root=keccak256(b"ledger root")))
    assert got["anchor"] == "failed"


def test_another_changed_header_field_fails_the_anchor_and_the_signature() -> None:
    bad = dataclasses.replace(HEADER, co2e_scope1_g=HEADER.co2e_scope1_g - 1)
    got = states(case(header=bad))
    assert got["merkle"] == "passed" and got["anchor"] == "failed"
    assert got["signature"] == "failed"  # signed was the real header's hash


def test_a_bad_or_foreign_signature_fails_the_signature_step_only() -> None:
    for c in (case(signature=bytes(64)), case(signature=OTHER.sign(HEADER.hash())),
              case(signing_key=OTHER.public_key), case(signing_key=None),
              case(signing_key=b"\x01" * 5)):
        got = states(c)
        assert got == {"leaf": "passed", "merkle": "passed", "anchor": "passed",
                       "signature": "failed", "record-signature": "not-applicable"}, c


def test_a_record_signature_is_checked_over_the_tag_and_the_rebuilt_leaf() -> None:
    good = SIGNER.sign(record_signing_bytes(LEAVES[4]))
    assert states(case(record_signature=good))["record-signature"] == "passed"
    assert verified(check_steps(case(record_signature=good)))
    # a signature over the bare leaf (the tag missing) is not a record signature
    assert states(case(record_signature=SIGNER.sign(LEAVES[4])))["record-signature"] == "failed"
    assert states(case(record_signature=OTHER.sign(record_signing_bytes(LEAVES[4]))))[
        "record-signature"] == "failed"
    # the fields changed: the signature no longer covers the rebuilt leaf
    tampered = dataclasses.replace(RECS[4], quality=0 if RECS[4].quality else 1)
    assert states(case(record=tampered, record_signature=good))["record-signature"] == "failed"
    # a good record signature on a record whose stored leaf is wrong: not reached
    got = states(case(stored_leaf=bytes(32), record_signature=good))
    assert got["record-signature"] == "not-reached"


def test_no_proof_or_no_record_fails_with_the_reason() -> None:
    steps = check_steps(case(proof=None, proof_error="the portal holds 6 of the batch's 7"))
    assert steps[1].state == "failed" and "6 of the batch's 7" in steps[1].detail
    assert steps[2].state == "not-reached"
    steps = check_steps(case(record=None, record_error="unknown kind 9"))
    assert steps[0].state == "failed" and "unknown kind 9" in steps[0].detail
    assert steps[1].state == "failed" and steps[2].state == "not-reached"
    assert not verified(steps)


def test_a_record_of_another_batch_does_not_pass_with_a_borrowed_proof() -> None:
    outside = dataclasses.replace(RECS[4], seq=HEADER.last_record_seq + 1)
    got = check_steps(case(record=outside, stored_leaf=record_leaf(outside)))
    assert got[1].state == "failed"
    assert [c.what for c in got[1].compared] == ["root", "range"]
    other_gw = dataclasses.replace(RECS[4], gateway_id="gw-2")
    assert states(case(record=other_gw, stored_leaf=record_leaf(other_gw)))["merkle"] == "failed"


def test_a_wrong_proof_fails_the_path() -> None:
    assert states(case(proof=merkle_proof(LEAVES, 3)))["merkle"] == "failed"
    assert states(case(proof=[]))["merkle"] == "failed"


def test_the_fold_is_the_ledger_clients_verify_proof() -> None:
    for n in (1, 2, 3, 5, 8, 13):
        leaves = [keccak256(bytes([k])) for k in range(n)]
        root = merkle_root(leaves)
        for i in range(n):
            got, trail = fold_proof(leaves[i], merkle_proof(leaves, i))
            assert got == root and verify_proof(leaves[i], merkle_proof(leaves, i), root)
            assert len(trail) == len(merkle_proof(leaves, i))


def test_a_bundle_is_checked_the_same_way() -> None:
    b = Bundle(record=RECS[2], header=HEADER, signature=SIG, proof=merkle_proof(LEAVES, 2),
               chain_id=31337, contract="0x" + "5f" * 20)
    parsed = parse_bundle(json.dumps(b.to_json()).encode())
    c = case_from_bundle(parsed, stored_leaf=LEAVES[2], anchored_header_hash=HEADER.hash(),
                         anchored_root=HEADER.root, signing_key=SIGNER.public_key)
    assert verified(check_steps(c))
    c = case_from_bundle(parsed, stored_leaf=LEAVES[2], anchored_header_hash=ZERO32,
                         anchored_root=HEADER.root, signing_key=SIGNER.public_key)
    assert not verified(check_steps(c))


# -- quality flags ------------------------------------------------------------------------------

def test_no_bit_no_flag() -> None:
    assert quality_flags(0) == []


def test_each_defined_bit_is_named_with_its_hj212_letter_and_effect() -> None:
    assert quality_flags(int(Quality.SPIKE)) == [Flag(10, "SPIKE", "", True)]
    assert quality_flags(int(Quality.COMM_FAULT | Quality.MANUAL)) == [
        Flag(0, "COMM_FAULT", "B", True), Flag(3, "MANUAL", "S", False)]
    assert quality_flags(int(Quality.RANGE)) == [Flag(8, "RANGE", "T", True)]
    assert quality_flags(int(Quality.SENTINEL)) == [Flag(12, "SENTINEL", "D", True)]
    assert quality_flags(int(Quality.COUNTER_ROLLOVER))[0].invalid is False
    assert quality_flags(int(Quality.SUBSTITUTED))[0].invalid is False
    every = 0
    for q in Quality:
        if q.value:
            every |= int(q)
            (f,) = quality_flags(int(q))
            assert f.name == q.name and f.bit == int(q).bit_length() - 1
            assert f.invalid == bool(int(q) & INVALID)
    assert [f.name for f in quality_flags(every)] == [q.name for q in Quality if q.value]


@pytest.mark.parametrize("bit", [7, 23, 31])
def test_a_reserved_bit_is_shown_as_reserved(bit: int) -> None:
    assert quality_flags(1 << bit | int(Quality.SPIKE)) == [
        Flag(bit, "RESERVED", "", True), Flag(10, "SPIKE", "", True)] if bit < 10 else [
        Flag(10, "SPIKE", "", True), Flag(bit, "RESERVED", "", True)]
    assert not quality_flags(1 << bit)[0].known


def test_a_nan_reading_still_has_a_leaf() -> None:
    r = dataclasses.replace(RECS[0], value=math.nan, quality=int(Quality.COMM_FAULT))
    leaf = record_leaf(r)
    hdr: BatchHeader = build_header(gateway_id="gw-1", seq=1, prev_hash=ZERO32,
                                    records=[(r.seq, r.ts_ns, leaf)])
    c = ProofCase(record=r, stored_leaf=leaf, proof=[], header=hdr,
                  anchored_header_hash=hdr.hash(), anchored_root=hdr.root,
                  signature=SIGNER.sign(hdr.hash()), signing_key=SIGNER.public_key)
    assert verified(check_steps(c))
