"""Proofs from the stored records: a record rebuilt from its row, the Merkle proofs of a whole
batch from its stored leaves (one pass over the tree), and the ``mrv-proof/v1`` bundle that
``mrv-gateway verify --bundle`` checks. Pure functions over rows; the routes fetch the rows.

How a ``records`` row holds each kind (the ingest stores it so, docs/portal.md):
reading — ``point_id, ts_ns, value_bits, unit, quality, source``; derived — ``point_id,
value_bits, unit, quality``, and ``extra`` the JSON object ``{derivation, period_start_ns,
period_end_ns, from_seq, to_seq}``; audit — ``ts_ns``, ``source`` the category, ``point_id``
the subject, ``extra`` the payload."""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

from ledger_client import BatchHeader, Bundle, keccak256, merkle_root, record_leaf
from mrv_core import AuditRecord, DerivedRecord, Reading, Record

KIND_READING, KIND_DERIVED, KIND_AUDIT = 1, 2, 3
KIND_NAMES = {KIND_READING: "reading", KIND_DERIVED: "derived", KIND_AUDIT: "audit"}


class StoredRecordError(ValueError):
    """A stored row does not make a record (or not the one its leaf commits to)."""


def float_of_bits(bits: int) -> float:
    """The float64 whose IEEE-754 bits are ``bits`` (stored as a signed 64-bit integer)."""
    return float(struct.unpack(">d", (bits & (2**64 - 1)).to_bytes(8, "big"))[0])


def unhex(s: str) -> bytes:
    return bytes.fromhex(s.removeprefix("0x"))


def record_from_row(row: Any) -> Record:
    """The record a ``records`` row holds (`StoredRecordError` when it cannot be one)."""
    value = float_of_bits(int(row.value_bits))
    if row.kind == KIND_READING:
        return Reading(gateway_id=row.gateway_id, seq=int(row.seq), point_id=row.point_id,
                       ts_ns=int(row.ts_ns), value=value, unit=row.unit,
                       quality=int(row.quality), source=row.source)
    if row.kind == KIND_DERIVED:
        try:
            x = json.loads(row.extra or "")
            return DerivedRecord(
                gateway_id=row.gateway_id, seq=int(row.seq), point_id=row.point_id,
                derivation=str(x["derivation"]), period_start_ns=int(x["period_start_ns"]),
                period_end_ns=int(x["period_end_ns"]), value=value, unit=row.unit,
                quality=int(row.quality), from_seq=int(x["from_seq"]), to_seq=int(x["to_seq"]))
        except (ValueError, KeyError, TypeError) as e:
            raise StoredRecordError(f"derived record {row.gateway_id}/{row.seq}: its extra "
                                    f"fields are not readable ({e})") from None
    if row.kind == KIND_AUDIT:
        return AuditRecord(gateway_id=row.gateway_id, seq=int(row.seq), ts_ns=int(row.ts_ns),
                           category=row.source, subject=row.point_id, payload=row.extra or "")
    raise StoredRecordError(f"record {row.gateway_id}/{row.seq}: unknown kind {row.kind}")


def header_of(b: Any) -> BatchHeader:
    """The batch header a ``batches`` row holds."""
    return BatchHeader(
        gateway_id=b.gateway_id, seq=int(b.seq), prev_hash=unhex(b.prev_hash),
        root=unhex(b.root), count=int(b.count), first_record_seq=int(b.first_record_seq),
        last_record_seq=int(b.last_record_seq), first_ts_ns=int(b.first_ts_ns),
        last_ts_ns=int(b.last_ts_ns), co2e_scope1_g=int(b.co2e_scope1_g),
        co2e_scope2_g=int(b.co2e_scope2_g), co2e_scope3_g=int(b.co2e_scope3_g))


def _pair(a: bytes, b: bytes) -> bytes:
    return keccak256(a + b) if a < b else keccak256(b + a)


class BatchProofs:
    """Every leaf's Merkle proof in a batch, from one pass over the tree (what
    ``ledger_client.merkle_proof`` gives for each index, without rebuilding the tree each
    time)."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        if not leaves:
            raise ValueError("a batch holds at least one leaf")
        self.levels: list[list[bytes]] = [list(leaves)]
        level = self.levels[0]
        while len(level) > 1:
            nxt = [_pair(level[k], level[k + 1]) for k in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])
            self.levels.append(nxt)
            level = nxt

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    def proof(self, index: int) -> list[bytes]:
        if not 0 <= index < len(self.levels[0]):
            raise IndexError(f"leaf index {index} outside 0..{len(self.levels[0]) - 1}")
        out: list[bytes] = []
        i = index
        for level in self.levels[:-1]:
            sib = i ^ 1
            if sib < len(level):
                out.append(level[sib])
            i //= 2
        return out


def check_batch_leaves(header: BatchHeader, seqs: Sequence[int], leaves: Sequence[bytes]) -> str:
    """Why the stored leaves of a batch cannot prove its records ('' when they can)."""
    want = list(range(header.first_record_seq, header.last_record_seq + 1))
    if list(seqs) != want:
        return (f"the portal holds {len(seqs)} of the batch's {len(want)} records "
                f"({header.first_record_seq}..{header.last_record_seq})")
    if merkle_root(leaves) != header.root:
        return "the stored leaves do not give the anchored root"
    return ""


def bundle_of(*, record: Record, stored_leaf: bytes, header: BatchHeader, signature: bytes,
              proofs: BatchProofs, chain_id: int, contract: str,
              record_signature: bytes | None) -> dict[str, Any]:
    """The ``mrv-proof/v1`` bundle of ``record`` (`StoredRecordError` when the stored row does
    not rebuild the leaf the batch commits to)."""
    if record_leaf(record) != stored_leaf:
        raise StoredRecordError(f"record {record.gateway_id}/{record.seq}: the stored fields do "
                                "not rebuild its stored leaf")
    index = record.seq - header.first_record_seq
    b = Bundle(record=record, header=header, signature=signature, proof=proofs.proof(index),
               chain_id=chain_id, contract=contract, record_signature=record_signature)
    return b.to_json()
