"""Group commit (`outbox.commit_interval_s`): the writer commits at most once per interval,
taking everything handed over meanwhile in one transaction; a stop still commits what it holds."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cleaning import Cleaner
from config import ConfigError, parse_config
from gateway._daemon import Pipeline
from ledger_client import Outbox
from mrv_core import Metrics, Reading, cancel_and_wait, supervise
from tests.support import until


def _poll(i: int, n: int = 30) -> list[Reading]:
    return [Reading(point_id=f"p{j}", ts_ns=1_700_000_000_000_000_000 + i, value=float(j),
                    unit="kW", source="modbus_tcp:d") for j in range(n)]


async def _commits(tmp_path: Path, interval_s: float) -> tuple[list[int], int]:
    """Commit sizes when poll B is handed over right after the writer took poll A's successor:
    A, then B, then C as soon as the writer has taken B."""
    ob = await Outbox.open(tmp_path / f"o{interval_s}.sqlite", "gw")
    m = Metrics()
    sizes: list[int] = []
    pipe = Pipeline(ob, Cleaner({}), m, 100, sizes.append, commit_interval_s=interval_s)
    writer = asyncio.create_task(supervise("writer", pipe.run, m))
    try:
        await pipe.submit(_poll(0))
        await until(lambda: sizes == [30])
        await pipe.submit(_poll(1))
        await until(lambda: pipe.queue.empty())  # the writer holds B
        await pipe.submit(_poll(2))
        await until(lambda: sum(sizes) == 90)
        return sizes, (await ob.stats()).records
    finally:
        await cancel_and_wait([writer])
        await ob.close()


async def test_hand_overs_within_the_interval_share_one_commit(tmp_path: Path) -> None:
    sizes, records = await _commits(tmp_path, 1.0)
    assert sizes == [30, 60]  # B waited for the interval, C joined it
    assert records == 90


async def test_without_an_interval_each_hand_over_commits_on_its_own(tmp_path: Path) -> None:
    sizes, records = await _commits(tmp_path, 0.0)
    assert sizes == [30, 30, 30]
    assert records == 90


async def test_the_writer_counts_as_busy_while_it_waits(tmp_path: Path) -> None:
    """A stop drains while the writer is busy: holding a hand-over for the interval is busy,
    so the daemon's drain waits for that commit instead of cancelling the writer over it."""
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    m = Metrics()
    sizes: list[int] = []
    pipe = Pipeline(ob, Cleaner({}), m, 100, sizes.append, commit_interval_s=1.0)
    writer = asyncio.create_task(supervise("writer", pipe.run, m))
    try:
        await pipe.submit(_poll(0))
        await until(lambda: sizes == [30])
        await pipe.submit(_poll(1))
        await until(lambda: pipe.queue.empty())
        assert pipe.busy and sizes == [30]  # held, not yet committed
        await until(lambda: not pipe.busy and pipe.queue.empty())
        assert sizes == [30, 30] and (await ob.stats()).records == 60
    finally:
        await cancel_and_wait([writer])
        await ob.close()


@pytest.mark.parametrize(("text", "ok"), [("0", True), ("0.2", True), ("1", True), ("-0.1", False),
                                          ("1.5", False), ('"soon"', False)])
def test_the_interval_is_bounded_in_the_config(tmp_path: Path, text: str, ok: bool) -> None:
    from tests.test_config import GOOD  # the smallest valid config

    doc = GOOD + f"outbox:\n  commit_interval_s: {text}\n"
    if ok:
        assert parse_config(doc, base_dir=tmp_path).outbox.commit_interval_s == float(text)
    else:
        with pytest.raises(ConfigError, match="commit_interval_s"):
            parse_config(doc, base_dir=tmp_path)


def test_the_default_interval_is_a_twentieth_of_a_second(tmp_path: Path) -> None:
    from tests.test_config import GOOD

    assert parse_config(GOOD, base_dir=tmp_path).outbox.commit_interval_s == 0.05


async def test_a_large_group_commit_goes_in_bounded_transactions_and_taps_see_it_whole(
        tmp_path: Path) -> None:
    """More readings than MAX_ROWS_PER_TRANSACTION: several transactions (the outbox is free in
    between), one acknowledgement point, and the taps get every reading with its record
    signature, aligned."""
    from gateway._daemon import MAX_ROWS_PER_TRANSACTION
    from ledger_client import Signer
    from ledger_client._format import record_leaf, record_signing_bytes

    signer = Signer(b"\x03" * 32)
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw", sign_records=signer.sign)
    sizes: list[int] = []
    tapped: list[tuple[list[Reading], list[bytes] | None]] = []
    pipe = Pipeline(ob, Cleaner({}), Metrics(), 100, sizes.append)
    pipe.taps.append(lambda c, s: tapped.append((c, s)))
    where: list[tuple[int, bool | None]] = []  # (size, off_loop) of each transaction
    append = ob.append_quarantining

    async def spy(records: Any, *, now_ns: int, off_loop: bool | None = None) -> Any:
        where.append((len(records), off_loop))
        return await append(records, now_ns=now_ns, off_loop=off_loop)

    ob.append_quarantining = spy  # type: ignore[method-assign]
    n = 2 * MAX_ROWS_PER_TRANSACTION + 345
    readings = [r for i in range(n // 30 + 1) for r in _poll(i)][:n]
    acked: list[int] = []
    try:
        await pipe.commit(readings, [lambda: acked.append(1)])
        assert sizes == [n] and acked == [1]
        # every transaction of the group off the event loop, the partial last one too
        m = MAX_ROWS_PER_TRANSACTION
        assert where == [(m, True), (m, True), (345, True)]
        (committed, sigs), = tapped
        assert [c.seq for c in committed] == list(range(1, n + 1))
        assert sigs is not None and len(sigs) == n
        for c, sig in list(zip(committed, sigs, strict=True))[::97]:
            assert sig == signer.sign(record_signing_bytes(record_leaf(c)))
        assert (await ob.stats()).records == n
    finally:
        await ob.close()


async def test_a_large_group_commit_is_cleaned_in_slices_with_the_loop_turning_between(
        tmp_path: Path) -> None:
    """More readings than CLEAN_SLICE: cleaned a slice at a time, another task's step runs
    between two slices (a command's would), and the flags are those of one call on the whole
    (points repeat across the slices: each keeps its order and its state)."""
    from cleaning import ChecksConfig
    from gateway._daemon import CLEAN_SLICE

    cfg = ChecksConfig.model_validate({"range": {"min": 0, "max": 20}, "duplicates": True,
                                       "timestamps": {"max_future_s": 5}})
    points = {f"p{j}": cfg for j in range(30)}
    n = 2 * CLEAN_SLICE + 345
    readings = [r for i in range(n // 30 + 1) for r in _poll(i % 40)][:n]  # repeats: duplicates
    now = 1_700_000_000_000_000_000 + 10**9
    whole = Cleaner(points).clean(readings, now)
    assert any(r.quality for r in whole) and not all(r.quality for r in whole)
    calls: list[int] = []

    class Spy(Cleaner):
        def clean(self, readings: Any, now_ns: int) -> list[Reading]:
            calls.append(len(readings))
            return super().clean(readings, now_ns)

    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    pipe = Pipeline(ob, Spy(points), Metrics(), 100, lambda n: None, clock=lambda: now)
    turns: list[int] = []

    async def other_task() -> None:
        while True:
            turns.append(len(calls))
            await asyncio.sleep(0)

    other = asyncio.create_task(other_task())
    await asyncio.sleep(0)
    try:
        got = await pipe._clean(readings, now)
    finally:
        await cancel_and_wait([other])
        await ob.close()
    assert calls == [CLEAN_SLICE, CLEAN_SLICE, 345]
    assert 1 in turns and 2 in turns  # the other task ran between the slices
    assert [r.quality for r in got] == [r.quality for r in whole]
    assert got == whole
