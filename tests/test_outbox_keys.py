"""Batches take their keys (seq, time, leaf) from what the outbox just committed, not from a
read-back; whatever path a batch takes, its header equals one built from the stored records."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ledger_client._outbox as outbox_mod
from gateway import AuditRecord, DerivedRecord, Reading
from ledger_client import Outbox
from ledger_client._format import build_header, record_leaf
from ledger_client._outbox import StoredBatch
from ledger_client._signing import Signer

SIGN = Signer(b"\x02" * 32).sign


def _record(i: int) -> Reading | DerivedRecord | AuditRecord:
    if i % 7 == 3:
        return AuditRecord(ts_ns=10_000 - i, category="command", subject=f"c{i}", payload="{}")
    if i % 5 == 4:
        return DerivedRecord(point_id="p", derivation="hour-mean", period_start_ns=i * 3,
                             period_end_ns=i * 3 + 1, value=float(i), unit="kW",
                             from_seq=0, to_seq=0)
    return Reading(point_id=f"p{i % 4}", ts_ns=1_000 + i * 17 % 50, value=i / 3, unit="kW",
                   source="t")


async def _expected(ob: Outbox, b: StoredBatch, prev: StoredBatch | None) -> None:
    """The header rebuilt from the records as stored (the read-back path of old)."""
    h = b.header
    recs = await ob.records(h.first_record_seq, h.last_record_seq)
    ts = [r.period_start_ns if isinstance(r, DerivedRecord) else r.ts_ns for r in recs]
    want = build_header(gateway_id="gw", seq=prev.header.seq + 1 if prev else 1,
                        prev_hash=prev.header_hash if prev else bytes(32),
                        records=[(r.seq, t, record_leaf(r)) for r, t in zip(recs, ts, strict=True)],
                        co2e_g=(0, 0, 0))
    assert h == want


async def _cut_all(ob: Outbox, max_records: int, prev: StoredBatch | None) -> StoredBatch | None:
    while (b := await ob.make_batch(max_records, SIGN)) is not None:
        await _expected(ob, b, prev)
        prev = b
    return prev


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=st.lists(st.tuples(st.integers(0, 40), st.integers(1, 30), st.booleans()),
                     min_size=1, max_size=12),
       cache_max=st.sampled_from([5, 60, 100_000]))
async def test_headers_equal_those_from_stored_records(
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
        plan: list[tuple[int, int, bool]], cache_max: int) -> None:
    monkeypatch.setattr(outbox_mod, "KEY_CACHE_MAX", cache_max)
    path = tmp_path_factory.mktemp("keys") / "o.sqlite"
    ob = await Outbox.open(path, "gw")
    prev: StoredBatch | None = None
    n = 0
    try:
        for append, max_records, reopen in plan:
            await ob.append([_record(n + i) for i in range(append)])
            n += append
            if reopen:  # a restart with records pending: no cache until batching catches up
                await ob.close()
                ob = await Outbox.open(path, "gw")
            b = await ob.make_batch(max_records, SIGN)
            if b is not None:
                await _expected(ob, b, prev)
                prev = b
        prev = await _cut_all(ob, 7, prev)
        assert (await ob.stats()).pending == 0
        assert (prev.header.last_record_seq if prev else 0) == n
    finally:
        await ob.close()


async def test_no_read_back_while_the_cache_keeps_up(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    seen: list[str] = []
    real = ob._db.execute_fetchall

    async def spy(sql: str, *a: object) -> object:
        seen.append(sql)
        return await real(sql, *a)

    monkeypatch.setattr(ob._db, "execute_fetchall", spy)
    try:
        rng = random.Random(3)
        for _ in range(20):
            await ob.append([_record(i) for i in range(rng.randint(1, 50))])
            await ob.make_batch(rng.randint(5, 40), SIGN)
        assert not [s for s in seen if "FROM records" in s]
        await _cut_all(ob, 25, await ob.last_batch())
    finally:
        await ob.close()


@given(st.lists(st.tuples(st.integers(0, 200), st.sampled_from(
    [0.5, -0.0, float("nan"), float("inf"), 1e300, -3.25])), max_size=30),
    st.integers(1, 2**40))
def test_one_pass_commit_gives_the_rows_of_the_general_path(
        items: list[tuple[int, float]], first: int) -> None:
    """The outbox's hot path (readings committed and turned into rows in one pass) gives the
    same records and rows as the general path: ``dataclasses.replace`` then `_to_row`."""
    import dataclasses

    records = []
    for i, v in items:
        r = _record(i)
        records.append(dataclasses.replace(r, value=v) if isinstance(r, Reading) else r)
    committed, rows = outbox_mod._commit_rows(records, first, "gw")
    want = [dataclasses.replace(r, gateway_id="gw", seq=first + k) for k, r in enumerate(records)]
    assert [repr(c) for c in committed] == [repr(w) for w in want]  # repr: NaN == NaN
    assert [repr(row) for row in rows] == [repr(outbox_mod._to_row(w)) for w in want]
    assert all(row[9] == record_leaf(w) for row, w in zip(rows, want, strict=True))


@settings(max_examples=300, deadline=None)
@given(first=st.integers(1, 1_000), count=st.integers(0, 300), last=st.integers(-5, 1_400),
       chunk=st.integers(1, 64), cached=st.booleans())
def test_dropping_a_batchs_keys_drops_exactly_those_through_its_last_seq(
        first: int, count: int, last: int, chunk: int, cached: bool) -> None:
    """The batcher's cut of the key cache (a C-driven popleft, in chunks) equals popping one
    by one; the batch's own list of keys is emptied."""
    from collections import deque

    keys = deque((s, s * 3, s.to_bytes(4, "big")) for s in range(first, first + count))
    naive = deque(keys)
    while naive and naive[0][0] <= last:
        naive.popleft()
    batch = [k for k in keys if k[0] <= last]
    saved = outbox_mod.KEY_RELEASE_CHUNK
    outbox_mod.KEY_RELEASE_CHUNK = chunk
    try:
        outbox_mod._release_batch_keys(keys if cached else None, last, batch)
    finally:
        outbox_mod.KEY_RELEASE_CHUNK = saved
    assert batch == []
    if cached:
        assert keys == naive
        assert all(k[0] > last for k in keys) and len(keys) == len(naive)
    else:
        assert len(keys) == count  # no cache kept: nothing else touched


@settings(max_examples=200, deadline=None)
@given(count=st.integers(0, 300), n=st.integers(0, 400), chunk=st.integers(1, 64))
def test_taking_a_batchs_keys_copies_the_first_n_a_piece_at_a_time(
        count: int, n: int, chunk: int) -> None:
    """The batcher's copy of the key cache equals ``list(islice(keys, n))``, leaves the cache
    as it was, and gives the event loop a turn between two pieces."""
    import asyncio
    import itertools
    from collections import deque

    keys = deque((s, s * 3, s.to_bytes(4, "big")) for s in range(1, count + 1))
    before = list(keys)
    turns: list[int] = []

    async def run() -> list[tuple[int, int, bytes]]:
        got: list[tuple[int, int, bytes]] = []

        async def other() -> None:
            while True:
                turns.append(1)
                await asyncio.sleep(0)

        t = asyncio.create_task(other())
        await asyncio.sleep(0)
        turns.clear()
        try:
            got = await outbox_mod._take_keys(keys, n)
        finally:
            t.cancel()
        return got

    saved = outbox_mod.KEY_RELEASE_CHUNK
    outbox_mod.KEY_RELEASE_CHUNK = chunk
    try:
        got = asyncio.run(run())
    finally:
        outbox_mod.KEY_RELEASE_CHUNK = saved
    assert got == list(itertools.islice(before, n))
    assert list(keys) == before
    pieces = -(-min(n, count) // chunk)  # ceil: the copy takes this many steps at least
    assert len(turns) >= pieces - 1
