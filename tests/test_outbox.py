"""The outbox alone: every record kind round-trips, seqs are gapless, batches are contiguous."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from gateway import AuditRecord, DerivedRecord, Quality, Reading
from ledger_client import Outbox, OutboxError
from ledger_client._format import merkle_proof, record_leaf, verify_proof
from ledger_client._signing import Signer, verify_signature


def _reading(i: int, value: float = 1.5) -> Reading:
    return Reading(point_id=f"p{i % 3}", ts_ns=1_000 + i, value=value, unit="kW", source="t")


async def test_round_trip_of_every_kind(tmp_path: Path) -> None:
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    try:
        recs = [
            _reading(0, math.nan),
            _reading(1, -0.0),
            DerivedRecord(point_id="p0", derivation="hour-mean", period_start_ns=0,
                          period_end_ns=3_600_000_000_000, value=2.25, unit="kW",
                          quality=int(Quality.RANGE), from_seq=1, to_seq=2),
            AuditRecord(ts_ns=5, category="command", subject="cmd-1",
                        payload='{"verdict":"rejected"}'),
        ]
        committed = await ob.append(recs)
        assert [c.seq for c in committed] == [1, 2, 3, 4]
        assert all(c.gateway_id == "gw" for c in committed)
        back = await ob.records(1, 4)
        for a, b in zip(committed, back, strict=True):
            assert record_leaf(a) == record_leaf(b)
            assert type(a) is type(b)
        assert math.isnan(back[0].value)  # type: ignore[union-attr]
        assert back[2] == committed[2] and back[3] == committed[3]
    finally:
        await ob.close()


async def test_batches_are_contiguous_signed_and_chained(tmp_path: Path) -> None:
    signer = Signer(b"\x01" * 32)
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    try:
        await ob.append([_reading(i) for i in range(25)])
        b1 = await ob.make_batch(10, signer.sign)
        b2 = await ob.make_batch(10, signer.sign)
        b3 = await ob.make_batch(10, signer.sign)
        assert await ob.make_batch(10, signer.sign) is None
        assert b1 and b2 and b3
        assert [(b.header.first_record_seq, b.header.last_record_seq) for b in (b1, b2, b3)] == [
            (1, 10), (11, 20), (21, 25)]
        assert b2.header.prev_hash == b1.header_hash and b3.header.prev_hash == b2.header_hash
        assert verify_signature(signer.public_key, b3.header_hash, b3.signature)
        leaves = await ob.leaves(11, 20)
        assert verify_proof(leaves[4], merkle_proof(leaves, 4), b2.header.root)
        assert (await ob.batch_of_record(15)) == b2
        assert await ob.batch_of_record(26) is None
        st = await ob.stats()
        assert (st.records, st.pending, st.batches) == (25, 0, 3)
    finally:
        await ob.close()


async def test_reopen_continues_the_sequence(tmp_path: Path) -> None:
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    await ob.append([_reading(i) for i in range(3)])
    await ob.close()
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    try:
        more = await ob.append([_reading(9)])
        assert more[0].seq == 4
    finally:
        await ob.close()


async def test_outbox_of_another_gateway_is_refused(tmp_path: Path) -> None:
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw-a")
    await ob.close()
    with pytest.raises(OutboxError, match="belongs to gateway 'gw-a'"):
        await Outbox.open(tmp_path / "o.sqlite", "gw-b")


async def test_concurrent_writers_and_batcher_never_interleave(tmp_path: Path) -> None:
    """Appends and batch cuts from many tasks on one connection stay atomic and gapless."""
    signer = Signer(b"\x02" * 32)
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw", synchronous="NORMAL")
    try:
        async def writer(k: int) -> None:
            for i in range(20):
                await ob.append([_reading(k * 100 + i)] * 5)

        async def batcher() -> None:
            for _ in range(40):
                await ob.make_batch(37, signer.sign)
                await asyncio.sleep(0)

        await asyncio.gather(*(writer(k) for k in range(5)), batcher())
        while await ob.make_batch(37, signer.sign):
            pass
        st = await ob.stats()
        assert st.records == 500 and st.pending == 0
        nxt = 1
        for s in range(1, st.batches + 1):
            b = await ob.batch(s)
            assert b is not None and b.header.first_record_seq == nxt
            nxt = b.header.last_record_seq + 1
        assert nxt == 501
    finally:
        await ob.close()
