"""A commit inserts its rows several to a statement (`ROWS_PER_INSERT`): every count of rows,
signed or not, lands whole, in order, and reads back as committed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ledger_client import Outbox, Signer
from ledger_client._format import record_leaf, record_signing_bytes
from ledger_client._outbox import ROWS_PER_INSERT
from mrv_core import Reading


def _readings(n: int, start: int) -> list[Reading]:
    return [Reading(point_id=f"p{(start + i) % 7}", ts_ns=1_700_000_000_000_000_000 + start + i,
                    value=math.nan if (start + i) % 11 == 0 else float(start + i), unit="kW",
                    source="modbus_tcp:m", quality=(start + i) % 3) for i in range(n)]


@pytest.mark.parametrize("signed", [False, True])
async def test_every_count_of_rows_lands_whole_and_in_order(tmp_path: Path, signed: bool) -> None:
    k = ROWS_PER_INSERT
    signer = Signer(b"\x07" * 32)
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw", sign_records=signer.sign if signed else None)
    try:
        sizes = [1, k - 1, k, k + 1, 2 * k, 3 * k + 7, 0, 2]
        start = 0
        for n in sizes:
            committed = await ob.append(_readings(n, start))
            assert [c.seq for c in committed] == list(range(start + 1, start + n + 1))
            start += n
        stored = await ob.records(1, start)
        assert len(stored) == start
        for i, r in enumerate(stored):
            want = _readings(1, i)[0]
            assert (r.seq, r.point_id, r.ts_ns, r.quality) == (i + 1, want.point_id, want.ts_ns,
                                                                 want.quality)
            assert (math.isnan(r.value) and math.isnan(want.value)) or r.value == want.value
        assert await ob.leaves(1, start) == [record_leaf(r) for r in stored]
        for r in stored[:: k // 2]:
            sig = await ob.record_signature(r.seq)
            if signed:
                assert sig == signer.sign(record_signing_bytes(record_leaf(r)))
            else:
                assert sig is None
    finally:
        await ob.close()


async def test_a_large_batch_has_the_header_of_its_records(tmp_path: Path) -> None:
    """A batch of HEADER_IN_THREAD_MIN records or more (its header built off the event loop)
    holds the root and bounds of exactly its records."""
    from ledger_client import Signer, merkle_root
    from ledger_client._outbox import HEADER_IN_THREAD_MIN

    n = HEADER_IN_THREAD_MIN + 3
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    try:
        await ob.append(_readings(n, 0))
        b = await ob.make_batch(n, Signer(b"\x08" * 32).sign)
        assert b is not None
        h = b.header
        assert (h.count, h.first_record_seq, h.last_record_seq) == (n, 1, n)
        assert h.root == merkle_root(await ob.leaves(1, n))
        stored = await ob.records(1, n)
        assert (h.first_ts_ns, h.last_ts_ns) == (stored[0].ts_ns, stored[-1].ts_ns)
        # its keys were dropped from the cache (off the loop too): the next batch starts after
        await ob.append(_readings(5, n))
        b2 = await ob.make_batch(n, Signer(b"\x08" * 32).sign)
        assert b2 is not None
        assert (b2.header.count, b2.header.first_record_seq) == (5, n + 1)
        assert b2.header.root == merkle_root(await ob.leaves(n + 1, n + 5))
        assert await ob.make_batch(n, Signer(b"\x08" * 32).sign) is None
    finally:
        await ob.close()


@pytest.mark.parametrize("signed", [False, True])
async def test_reading_rows_bound_without_their_constants_store_the_same_rows(
        tmp_path: Path, signed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading rows are inserted with kind and extra as literals (`_insert_readings`); the
    table then holds exactly what binding every column stores, column by column."""
    import sqlite3

    from ledger_client import _outbox

    signer = Signer(b"\x09" * 32)
    sizes = [1, ROWS_PER_INSERT - 1, ROWS_PER_INSERT, 2 * ROWS_PER_INSERT + 3]

    async def fill(path: Path) -> list[tuple[object, ...]]:
        ob = await Outbox.open(path, "gw", sign_records=signer.sign if signed else None)
        try:
            start = 0
            for n in sizes:
                await ob.append(_readings(n, start))
                start += n
        finally:
            await ob.close()
        db = sqlite3.connect(path)
        try:
            # the leaf and the signature are BLOBs whether bound as bytes or as bytearray
            assert db.execute("SELECT DISTINCT typeof(leaf), typeof(sig) FROM records"
                              ).fetchall() == [("blob", "blob" if signed else "null")]
            return db.execute("SELECT * FROM records ORDER BY seq").fetchall()
        finally:
            db.close()

    calls: list[int] = []
    real = _outbox.reading_insert_params

    def counted(rows: list[tuple[object, ...]], k: int) -> list[list[object]] | None:
        got = real(rows, k)
        calls.append(got is not None)
        return got

    monkeypatch.setattr(_outbox, "reading_insert_params", counted)
    literal = await fill(tmp_path / "literal.sqlite")
    monkeypatch.setattr(_outbox, "reading_insert_params", lambda rows, k: None)
    bound = await fill(tmp_path / "bound.sqlite")
    assert len(literal) == sum(sizes)
    assert literal == bound
    assert {r[1] for r in literal} == {1} and {r[8] for r in literal} == {None}
    from ledger_client import COMPILED
    assert calls and all(calls) == COMPILED  # the literal path ran when it is built
