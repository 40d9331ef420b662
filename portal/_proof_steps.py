"""One record's proof, checked step by step for people (the web view's reading page), and its
quality bits decoded into named flags. Pure functions over plain values: the page fetches the
rows, this module recomputes everything from them.

The steps (docs/portal.md, "Batches and readings"; byte formats in ``docs/formats.md``):

1. ``leaf``: the leaf rebuilt from the record's fields (``ledger_client.record_leaf``:
   ``keccak256(keccak256(abi.encode(...)))``) equals the leaf stored with the record;
2. ``merkle``: that leaf, folded with the proof's sibling hashes (sorted pairs), reaches the
   batch's Merkle root;
3. ``anchor``: the header rebuilt from the batch's fields hashes to the header hash the ledger
   holds, and the root in it is the root the ledger holds (the root step 2 reached);
4. ``signature``: the batch signature (Ed25519 over the header hash) verifies with the
   gateway's key registered on the ledger;
5. ``record-signature``: when the record has its own signature, it verifies with the same key
   over ``RECORD_SIG_TAG ‖ leaf``.

Every step is computed on its own, whatever the others gave (nothing stops at the first
failure); then a step that rests on one that failed is "not reached" even when its own
comparison holds (it proves nothing about this record). ``ledger_client.verify_bundle`` does the
same checks against a live chain; it needs an RPC connection and has no stored leaf to compare,
so the page uses this module and the chain as the portal indexed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ledger_client import (
    BatchHeader,
    Bundle,
    keccak256,
    record_leaf,
    record_signing_bytes,
    verify_proof,
    verify_signature,
)
from mrv_core import INVALID, Quality, Record, hj212_flag

# -- quality bits ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Flag:
    """One set bit of a record's quality bitmask."""

    bit: int
    #: the ``Quality`` member's name (``SPIKE``); ``RESERVED`` for a bit no flag defines
    name: str
    #: the HJ 212 per-factor flag this bit alone maps to; "" when HJ 212 has no letter for it
    hj212: str
    #: the bit makes the value unusable for aggregation and emissions (``mrv_core.INVALID``)
    invalid: bool

    @property
    def known(self) -> bool:
        return self.name != "RESERVED"


def quality_flags(quality: int) -> list[Flag]:
    """The bits set in ``quality`` (uint32), lowest first, each named (``docs/formats.md``,
    "Quality bitmask"). A bit no flag defines is named ``RESERVED`` (and counted invalid: a
    reading carrying one was not made by this version of the gateway)."""
    out: list[Flag] = []
    for bit in range(32):
        mask = 1 << bit
        if not quality & mask:
            continue
        try:
            name = Quality(mask).name or "RESERVED"
        except ValueError:
            name = "RESERVED"
        if name == "RESERVED":
            out.append(Flag(bit, name, "", True))
            continue
        letter = hj212_flag(mask)
        out.append(Flag(bit, name, "" if letter == "N" else letter, bool(mask & INVALID)))
    return out


# -- the proof, step by step -------------------------------------------------------------------

StepName = Literal["leaf", "merkle", "anchor", "signature", "record-signature"]
State = Literal["passed", "failed", "not-reached", "not-applicable"]
#: the steps each step rests on (a failure there leaves this one "not reached")
DEPENDS: dict[str, tuple[str, ...]] = {
    "leaf": (), "merkle": ("leaf",), "anchor": ("merkle",), "signature": ("anchor",),
    "record-signature": ("leaf",)}


@dataclass(frozen=True, slots=True)
class Comparison:
    """One thing a step compared: ``what`` (a short key), the value computed here and the value
    it must equal (hex or text)."""

    what: str
    computed: str
    expected: str

    @property
    def same(self) -> bool:
        return self.computed == self.expected


@dataclass(frozen=True, slots=True)
class Step:
    name: StepName
    #: the step holds for this record (its own comparisons hold and so do the steps it rests on);
    #: a step that does not apply ("not-applicable") does not count against the record
    passed: bool
    state: State
    #: what was compared and what came out, in words (English; the page has its own words)
    detail: str
    #: the step's own comparisons held (whatever the steps before it gave)
    own_ok: bool = False
    compared: tuple[Comparison, ...] = ()
    #: the Merkle path: (sibling, the hash after pairing with it) from the leaf up
    trail: tuple[tuple[str, str], ...] = ()
    #: the inputs shown beside the comparisons: (what, value)
    facts: tuple[tuple[str, str], ...] = ()
    #: the failed steps that leave this one "not reached"
    blocked_by: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProofCase:
    """What a record's proof is checked with. ``record`` is rebuilt from the stored fields
    (None: they do not make a record, ``record_error`` says why); ``proof`` is the sibling
    hashes from the batch's stored leaves (None: no proof, ``proof_error``); ``header`` holds the
    batch's fields; ``anchored_*`` what the ledger holds for the batch; ``signing_key`` the
    gateway's Ed25519 key registered on the ledger (None: not registered)."""

    record: Record | None
    stored_leaf: bytes
    proof: Sequence[bytes] | None
    header: BatchHeader
    anchored_header_hash: bytes
    anchored_root: bytes
    signature: bytes
    signing_key: bytes | None
    record_signature: bytes | None = None
    record_error: str = ""
    proof_error: str = ""
    seq: int = 0


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def fold_proof(leaf: bytes, proof: Sequence[bytes]) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The root ``leaf`` and ``proof`` reach (sorted pairs, ``docs/formats.md`` "Merkle tree"),
    and each level's (sibling, result)."""
    h = leaf
    trail: list[tuple[bytes, bytes]] = []
    for p in proof:
        h = keccak256(min(h, p) + max(h, p))
        trail.append((p, h))
    return h, trail


def _short(b: bytes) -> str:
    return f"0x{b.hex()[:16]}…"


@dataclass(slots=True)
class _Own:
    """A step's own outcome, before the steps it rests on are looked at."""

    name: StepName
    ok: bool
    detail: str
    compared: tuple[Comparison, ...] = ()
    trail: tuple[tuple[str, str], ...] = ()
    facts: tuple[tuple[str, str], ...] = ()
    applies: bool = True


def _leaf_step(case: ProofCase) -> tuple[_Own, bytes | None]:
    r = case.record
    if r is None:
        return _Own("leaf", False, "the stored fields do not make a record: "
                    f"{case.record_error}"), None
    leaf = record_leaf(r)
    ok = leaf == case.stored_leaf
    return _Own("leaf", ok, f"the leaf rebuilt from record {r.seq}'s fields {_short(leaf)} "
                + ("equals" if ok else "differs from")
                + f" the stored leaf {_short(case.stored_leaf)}",
                compared=(Comparison("leaf", _hex(leaf), _hex(case.stored_leaf)),)), leaf


def _merkle_step(case: ProofCase, leaf: bytes | None) -> _Own:
    h, r = case.header, case.record
    if leaf is None or r is None:
        return _Own("merkle", False, "no leaf to start the path from")
    if case.proof is None:
        return _Own("merkle", False, f"no Merkle proof: {case.proof_error}")
    root, trail = fold_proof(leaf, case.proof)
    in_batch = (r.gateway_id == h.gateway_id
                and h.first_record_seq <= r.seq <= h.last_record_seq)
    ok = in_batch and root == h.root and verify_proof(leaf, case.proof, h.root)
    cmp = [Comparison("root", _hex(root), _hex(h.root))]
    if not in_batch:
        cmp.append(Comparison("range", f"{r.gateway_id} #{r.seq}",
                              f"{h.gateway_id} #{h.first_record_seq}..{h.last_record_seq}"))
    return _Own("merkle", ok,
                f"the leaf and {len(case.proof)} sibling hashes reach {_short(root)}"
                + (", the batch's root" if ok else
                   f", not the batch's root {_short(h.root)}"
                   + ("" if in_batch else "; the record is not in this batch's range")),
                compared=tuple(cmp), trail=tuple((_hex(s), _hex(x)) for s, x in trail),
                facts=(("leaf_index", str(r.seq - h.first_record_seq)),
                       ("proof_length", str(len(case.proof)))))


def _anchor_step(case: ProofCase, hh: bytes) -> _Own:
    h = case.header
    hash_ok = hh == case.anchored_header_hash
    root_ok = h.root == case.anchored_root
    return _Own("anchor", hash_ok and root_ok,
                f"the header rebuilt from batch {h.seq}'s fields hashes to {_short(hh)}, "
                + ("the hash" if hash_ok else
                   f"not the hash {_short(case.anchored_header_hash)}")
                + " the ledger holds; the root in it "
                + ("is" if root_ok else "is not") + " the root the ledger holds",
                compared=(Comparison("header_hash", _hex(hh), _hex(case.anchored_header_hash)),
                          Comparison("anchored_root", _hex(h.root), _hex(case.anchored_root))))


def _signature_step(case: ProofCase, hh: bytes) -> _Own:
    h = case.header
    if case.signing_key is None:
        return _Own("signature", False,
                    f"gateway {h.gateway_id} has no signing key registered on the ledger")
    ok = verify_signature(case.signing_key, hh, case.signature)
    return _Own("signature", ok,
                f"the Ed25519 signature {_short(case.signature)} over header hash {_short(hh)} "
                + ("verifies" if ok else "does NOT verify")
                + f" with the key {_short(case.signing_key)} registered for {h.gateway_id}",
                compared=(Comparison("ed25519", "valid" if ok else "invalid", "valid"),),
                facts=(("message", _hex(hh)), ("signature", _hex(case.signature)),
                       ("signing_key", _hex(case.signing_key))))


def _record_signature_step(case: ProofCase, leaf: bytes | None) -> _Own:
    if case.record_signature is None:
        return _Own("record-signature", True, "the record carries no signature of its own (the "
                    "gateway signs batches only)", applies=False)
    if leaf is None or case.signing_key is None:
        return _Own("record-signature", False,
                    "no leaf or no registered key to check the record's signature with")
    msg = record_signing_bytes(leaf)
    ok = verify_signature(case.signing_key, msg, case.record_signature)
    return _Own("record-signature", ok,
                "the record's Ed25519 signature over RECORD_SIG_TAG ‖ leaf "
                + ("verifies" if ok else "does NOT verify") + " with the same key",
                compared=(Comparison("ed25519", "valid" if ok else "invalid", "valid"),),
                facts=(("message", _hex(msg)), ("signature", _hex(case.record_signature)),
                       ("signing_key", _hex(case.signing_key))))


def check_steps(case: ProofCase) -> list[Step]:
    """Every step of the record's proof, each recomputed from ``case`` on its own; then the
    steps resting on a failed one marked "not reached"."""
    leaf_own, leaf = _leaf_step(case)
    hh = case.header.hash()
    own = [leaf_own, _merkle_step(case, leaf), _anchor_step(case, hh),
           _signature_step(case, hh), _record_signature_step(case, leaf)]
    steps: list[Step] = []
    passed: dict[str, bool] = {}
    for o in own:
        if not o.applies:
            steps.append(Step(o.name, True, "not-applicable", o.detail, own_ok=True))
            passed[o.name] = True
            continue
        blocked = tuple(d for d in DEPENDS[o.name] if not passed[d])
        detail = o.detail
        state: State
        if not o.ok:
            state = "failed"
        elif blocked:
            state = "not-reached"
            detail += f" (but it rests on the {', '.join(blocked)} step, which did not hold)"
        else:
            state = "passed"
        passed[o.name] = state == "passed"
        steps.append(Step(o.name, state == "passed", state, detail, own_ok=o.ok,
                          compared=o.compared, trail=o.trail, facts=o.facts,
                          blocked_by=blocked))
    return steps


def verified(steps: Sequence[Step]) -> bool:
    """The record is proven: every step holds (a step that does not apply aside)."""
    return bool(steps) and all(s.passed for s in steps)


def case_from_bundle(b: Bundle, *, stored_leaf: bytes, anchored_header_hash: bytes,
                     anchored_root: bytes, signing_key: bytes | None) -> ProofCase:
    """A ``mrv-proof/v1`` bundle (``ledger_client.parse_bundle``) with what the ledger holds
    for its batch, as a case to check."""
    return ProofCase(record=b.record, stored_leaf=stored_leaf, proof=b.proof, header=b.header,
                     anchored_header_hash=anchored_header_hash, anchored_root=anchored_root,
                     signature=b.signature, signing_key=signing_key,
                     record_signature=b.record_signature, seq=b.record.seq)
