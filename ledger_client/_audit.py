"""The audit of a whole outbox: what an auditor runs first (`mrv-gateway audit CONFIG`).

It checks, and names every failure it finds (docs/outbox.md, "Audit"):

- ``record-seqs``: record seqs run 1..N with no gap and no missing id, across the outbox and
  the archive (``outbox.archive_path``, where the disk budget moves pruned records); records
  pruned with no archive configured are reported (their leaves cannot be checked) but only a
  contiguous prefix inside confirmed batches can have been pruned: any other hole is a failure;
- ``record-leaves``: every record's stored leaf is the leaf of its fields (a changed value,
  time, unit or quality shows here), and its record signature, when it has one, verifies;
- ``batch-chain``: batch seqs run 1..M with no gap; each batch starts where the previous one
  ended (batch 1 at record 1), its count matches its range, its ``prev_hash`` is the previous
  header's hash, and its stored header hash is the hash of its fields;
- ``batch-roots``: every batch's root is the Merkle root of its records' leaves;
- ``batch-signatures``: every batch's Ed25519 signature verifies with the gateway's key
  registered on the ledger (or, ``--offline``, the configured signing key);
- ``anchors``: every confirmed batch is on the ledger with the same header hash and root and at
  least the configured confirmations; the ledger holds no batch the outbox lacks. Batches not
  yet confirmed (built, submitted) that the ledger does not hold yet are counted, not failed.

The core (`check_records`, `finish_audit`) is pure: rows and the chain's answers in, a report
out; `audit_outbox` reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger_client._chain import EvmChain
from ledger_client._errors import ChainRevert
from ledger_client._format import merkle_root, record_leaf, record_signing_bytes
from ledger_client._outbox import (
    _BATCH_COLS,
    _RECORD_COLS,
    CONFIRMED,
    STATE_NAMES,
    Outbox,
    StoredBatch,
    _row_to_record,
)
from ledger_client._signing import verify_signature
from mrv_core import Record

#: Failures listed per check; beyond this they are counted only.
MAX_LISTED = 50

CHECKS = ("record-seqs", "record-leaves", "batch-chain", "batch-roots", "batch-signatures",
          "anchors")


@dataclass(slots=True)
class AuditReport:
    failures: dict[str, list[str]] = field(default_factory=lambda: {c: [] for c in CHECKS})
    counts: dict[str, int] = field(default_factory=lambda: {c: 0 for c in CHECKS})
    notes: list[str] = field(default_factory=list)
    figures: dict[str, int] = field(default_factory=dict)

    def fail(self, check: str, what: str) -> None:
        self.counts[check] += 1
        if len(self.failures[check]) < MAX_LISTED:
            self.failures[check].append(what)

    @property
    def ok(self) -> bool:
        return not any(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "figures": self.figures, "notes": self.notes,
                "checks": [{"check": c, "ok": self.counts[c] == 0, "failures": self.counts[c],
                            "listed": self.failures[c]} for c in CHECKS]}

    def text(self) -> str:
        lines = [f"  {k}: {v}" for k, v in self.figures.items()]
        for c in CHECKS:
            n = self.counts[c]
            lines.append(f"  [{'PASS' if n == 0 else 'FAIL'}] {c}"
                         + ("" if n == 0 else f": {n} failure(s)"))
            lines += [f"      - {f}" for f in self.failures[c]]
            if n > len(self.failures[c]):
                lines.append(f"      ... and {n - len(self.failures[c])} more")
        lines += [f"  note: {n}" for n in self.notes]
        lines.append(f"verdict: the outbox {'HOLDS' if self.ok else 'DOES NOT HOLD'}")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Anchor:
    """What the ledger holds for one batch seq (None fields: it holds none)."""

    header_hash: bytes | None
    root: bytes | None
    confirmations: int


def _ranges(seqs: Iterable[int]) -> str:
    out: list[str] = []
    it = iter(sorted(seqs))
    for s in it:
        start = end = s
        for t in it:
            if t == end + 1:
                end = t
                continue
            out.append(f"{start}" if start == end else f"{start}..{end}")
            start = end = t
        out.append(f"{start}" if start == end else f"{start}..{end}")
    return ", ".join(out)


def check_records(rep: AuditReport, rows: Sequence[Any], gateway_id: str,
                  key: bytes | None) -> dict[int, bytes]:
    """``rows``: ``(_RECORD_COLS..., leaf, sig)`` tuples. Fails ``record-leaves`` for each
    record whose fields do not give its stored leaf or whose signature does not verify;
    returns ``seq -> stored leaf``."""
    leaves: dict[int, bytes] = {}
    for row in rows:
        seq, stored, sig = int(row[0]), bytes(row[9]), row[10]
        leaves[seq] = stored
        try:
            rec: Record = _row_to_record(gateway_id, row)
            leaf = record_leaf(rec)
        except Exception as e:  # a row no record can have come from
            rep.fail("record-leaves", f"record {seq}: its row is not a record ({e})")
            continue
        if leaf != stored:
            rep.fail("record-leaves", f"record {seq}: its fields give leaf 0x{leaf.hex()[:16]}..,"
                     f" the stored leaf is 0x{stored.hex()[:16]}.. (a field was changed)")
        elif sig is not None and key is not None and not verify_signature(
                key, record_signing_bytes(stored), bytes(sig)):
            rep.fail("record-leaves", f"record {seq}: its record signature does not verify")
    return leaves


def check_batches(rep: AuditReport, batches: Sequence[StoredBatch], key: bytes | None) -> None:
    """``batch-chain`` and ``batch-signatures`` over every stored batch, in seq order."""
    prev_hash, next_first = b"\x00" * 32, 1
    for i, b in enumerate(batches):
        h = b.header
        if h.seq != i + 1:
            rep.fail("batch-chain", f"batch {h.seq} found where batch {i + 1} belongs"
                     " (a batch is missing)")
        if h.first_record_seq != next_first:
            rep.fail("batch-chain", f"batch {h.seq} starts at record {h.first_record_seq}, "
                     f"the previous one ended at {next_first - 1}")
        if h.count != h.last_record_seq - h.first_record_seq + 1:
            rep.fail("batch-chain", f"batch {h.seq}: count {h.count} does not match records "
                     f"{h.first_record_seq}..{h.last_record_seq}")
        if h.prev_hash != prev_hash:
            rep.fail("batch-chain", f"batch {h.seq}: prev_hash 0x{h.prev_hash.hex()[:16]}.. is"
                     f" not the previous header's hash 0x{prev_hash.hex()[:16]}..")
        hh = h.hash()
        if hh != b.header_hash:
            rep.fail("batch-chain", f"batch {h.seq}: stored header hash "
                     f"0x{b.header_hash.hex()[:16]}.. is not the hash of its fields "
                     f"0x{hh.hex()[:16]}..")
        if key is not None and not verify_signature(key, hh, b.signature):
            rep.fail("batch-signatures", f"batch {h.seq}: the signature does not verify with "
                     f"the key 0x{key.hex()[:16]}..")
        prev_hash, next_first = hh, h.last_record_seq + 1


def check_roots(rep: AuditReport, b: StoredBatch, leaves: dict[int, bytes]) -> bool:
    """``batch-roots`` for one batch whose records are all at hand; False when some are not."""
    h = b.header
    got = [leaves.get(s) for s in range(h.first_record_seq, h.last_record_seq + 1)]
    present = [x for x in got if x is not None]
    if len(present) != len(got):
        return False
    root = merkle_root(present)
    if root != h.root:
        rep.fail("batch-roots", f"batch {h.seq}: the leaves of records {h.first_record_seq}.."
                 f"{h.last_record_seq} give root 0x{root.hex()[:16]}.., the header holds "
                 f"0x{h.root.hex()[:16]}..")
    return True


def check_seqs(rep: AuditReport, present: set[int], committed: int,
               batches: Sequence[StoredBatch], archive: bool) -> None:
    """``record-seqs``: every seq 1..committed is present, except a pruned prefix of
    confirmed batches when no archive is configured (noted, not failed)."""
    missing = [s for s in range(1, committed + 1) if s not in present]
    if not missing:
        return
    pruned_upto = 0
    if not archive:  # a pruned prefix: records 1..k, all inside confirmed batches
        confirmed_upto = 0
        for b in batches:
            if b.state != CONFIRMED:
                break
            confirmed_upto = b.header.last_record_seq
        k = 0
        while k < len(missing) and missing[k] == k + 1 and missing[k] <= confirmed_upto:
            k += 1
        # pruning removes whole batches: cut back to the end of a batch
        ends = {b.header.last_record_seq for b in batches}
        while k and k not in ends:
            k -= 1
        pruned_upto = k
    if pruned_upto:
        rep.notes.append(f"records 1..{pruned_upto} were pruned (no archive configured): their "
                         "leaves cannot be checked; their batch headers are")
    holes = [s for s in missing if s > pruned_upto]
    if holes:
        rep.fail("record-seqs", f"{len(holes)} committed record(s) missing"
                 f"{' from the outbox and the archive' if archive else ''}: {_ranges(holes)}")


def check_anchors(rep: AuditReport, batches: Sequence[StoredBatch],
                  anchors: Callable[[int], Anchor | None], chain_last_seq: int,
                  confirmations: int) -> None:
    """``anchors``: each confirmed batch as the ledger holds it; unconfirmed ones counted."""
    pending = 0
    for b in batches:
        h = b.header
        a = anchors(h.seq)
        if a is None:
            continue  # not asked (offline)
        if a.header_hash is None:
            if b.state == CONFIRMED:
                rep.fail("anchors", f"batch {h.seq} is confirmed in the outbox but the ledger "
                         "holds no batch at that seq")
            else:
                pending += 1
            continue
        if a.header_hash != b.header_hash or a.root != h.root:
            rep.fail("anchors", f"batch {h.seq}: the ledger holds header "
                     f"0x{a.header_hash.hex()[:16]}.., the outbox 0x{b.header_hash.hex()[:16]}..")
        elif b.state == CONFIRMED and a.confirmations < confirmations:
            rep.fail("anchors", f"batch {h.seq}: {a.confirmations} confirmation(s), "
                     f"{confirmations} required (a reorganisation?)")
        elif b.state != CONFIRMED:
            pending += 1
    last_local = batches[-1].header.seq if batches else 0
    if chain_last_seq > last_local:
        rep.fail("anchors", f"the ledger holds batches {last_local + 1}..{chain_last_seq} the "
                 "outbox does not")
    if pending:
        rep.notes.append(f"{pending} batch(es) not yet confirmed (states built/submitted)")


def finish_audit(rep: AuditReport, *, leaves: dict[int, bytes],
                 batches: Sequence[StoredBatch], committed: int, key: bytes | None,
                 archive: bool, anchors: Callable[[int], Anchor | None], chain_last_seq: int,
                 confirmations: int) -> AuditReport:
    """The audit's remaining checks once `check_records` has seen every record row (pure).
    ``leaves``: seq -> stored leaf of every record in the outbox and the archive;
    ``committed``: the highest record seq ever committed."""
    check_batches(rep, batches, key)
    unchecked = 0
    for b in batches:
        if not check_roots(rep, b, leaves):
            unchecked += 1
    check_seqs(rep, set(leaves), committed, batches, archive)
    check_anchors(rep, batches, anchors, chain_last_seq, confirmations)
    by_state = {name: 0 for name in STATE_NAMES.values()}
    for b in batches:
        by_state[STATE_NAMES[b.state]] += 1
    rep.figures = {"records": len(leaves), "committed": committed, "batches": len(batches),
                   **{f"batches_{k}": v for k, v in by_state.items()},
                   "batches_without_all_records": unchecked}
    return rep


async def audit_outbox(outbox: Outbox, archive: Outbox | None, *, key: bytes | None,
                       chain: EvmChain | None, confirmations: int,
                       page: int = 50_000) -> AuditReport:
    """Read the outbox (and the archive), ask the ledger (unless ``chain`` is None: offline),
    and audit. Raises `ChainUnavailable` when the ledger does not answer."""
    gw = outbox.gateway_id
    rep = AuditReport()
    leaves: dict[int, bytes] = {}
    for db in [outbox] + ([archive] if archive is not None else []):
        after = 0
        while True:
            rows = await db._fetch(
                f"SELECT {_RECORD_COLS}, leaf, sig FROM records WHERE seq > ? ORDER BY seq"
                " LIMIT ?", (after, page))
            if not rows:
                break
            after = int(rows[-1][0])
            leaves.update(check_records(rep, [r for r in rows if int(r[0]) not in leaves],
                                        gw, key))
    batches = [outbox._batch(r) for r in await outbox._fetch(
        f"SELECT {_BATCH_COLS} FROM batches ORDER BY seq")]
    committed = (await outbox.stats()).records
    held: dict[int, Anchor] = {}
    chain_last = 0
    if chain is not None:
        head = await chain.block_number()
        chain_last = await chain.last_seq(gw)
        for b in batches:
            if b.header.seq > chain_last:
                held[b.header.seq] = Anchor(None, None, 0)
                continue
            try:
                a = await chain.batch(gw, b.header.seq)
            except ChainRevert:
                held[b.header.seq] = Anchor(None, None, 0)
                continue
            zero = a.header_hash == b"\x00" * 32
            held[b.header.seq] = (Anchor(None, None, 0) if zero else
                                  Anchor(a.header_hash, a.root, head - a.block_number + 1))
    return finish_audit(rep, leaves=leaves, batches=batches, committed=committed, key=key,
                        archive=archive is not None, anchors=held.get,
                        chain_last_seq=chain_last, confirmations=confirmations)
