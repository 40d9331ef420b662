"""`mrv-gateway audit`: a clean outbox holds (exit 0); each tampering is caught and named
(exit 1); bad input is exit 2."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from config import load_config
from gateway._daemon import run_daemon
from ledger_client import Outbox
from ledger_client._outbox import CONFIRMED
from ledger_client._signing import Signer
from mrv_core._metrics import Metrics
from mrv_core._records import Reading
from simulator import Provisioned


@pytest.fixture
async def anchored(gateway: Provisioned) -> Provisioned:
    """A gateway that ran until at least three batches were anchored."""
    cfg = load_config(gateway.config)
    stop = asyncio.Event()
    metrics = Metrics()
    task = asyncio.create_task(run_daemon(cfg, stop=stop, metrics=metrics))
    while metrics.counters["batches_anchored"] < 3 and not task.done():
        await asyncio.sleep(0.05)
    stop.set()
    await task
    return gateway


def _audit(p: Provisioned, *extra: str) -> tuple[int, dict[str, object], str]:
    r = subprocess.run([sys.executable, "-m", "gateway._cli", "audit", str(p.config), "--json",
                        *extra], capture_output=True, text=True, check=False)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, (json.loads(r.stdout) if r.stdout else {}), r.stderr


async def _audit_here(p: Provisioned, *extra: str) -> tuple[int, dict[str, object]]:
    """`_audit` without a new interpreter (the command's own code, in this process): the
    subprocess form above covers the command line itself, this one the many cases."""
    import contextlib
    import io

    from gateway._cli import _cmd_audit, build_parser

    args = build_parser().parse_args(["audit", str(p.config), "--json", *extra])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = await _cmd_audit(args)
    return code, (json.loads(out.getvalue()) if out.getvalue() else {})


def _failing(rep: dict[str, object]) -> dict[str, list[str]]:
    return {c["check"]: c["listed"] for c in rep["checks"]  # type: ignore[attr-defined]
            if not c["ok"]}


def _sql(path: Path, *stmts: str) -> None:
    db = sqlite3.connect(path)
    for s in stmts:
        db.execute(s)
    db.commit()
    db.close()


async def _extra_batch(p: Provisioned, state: int) -> None:
    """One more genuine, correctly signed batch the ledger never received, stored in ``state``."""
    cfg = load_config(p.config)
    ob = await Outbox.open(cfg.outbox_path(), cfg.gateway.id)
    try:
        await ob.append([Reading(point_id="x", ts_ns=1, value=1.0, unit="kW", source="t")])
        b = await ob.make_batch(10, Signer.load(cfg.gateway.signing_key).sign)
        assert b is not None
    finally:
        await ob.close()
    _sql(cfg.outbox_path(), f"UPDATE batches SET state = {state} WHERE seq = {b.seq}")


async def _reheader_batch1(p: Provisioned) -> None:
    """A forger with the gateway's key: batch 1's CO2e changed, header re-hashed and re-signed."""
    cfg = load_config(p.config)
    signer = Signer.load(cfg.gateway.signing_key)
    ob = await Outbox.open(cfg.outbox_path(), cfg.gateway.id)
    try:
        b = await ob.batch(1)
        assert b is not None
    finally:
        await ob.close()
    import dataclasses

    h = dataclasses.replace(b.header, co2e_scope1_g=b.header.co2e_scope1_g + 1_000_000)
    hh = h.hash()
    db = sqlite3.connect(cfg.outbox_path())
    db.execute("UPDATE batches SET co2e_scope1_g = ?, header_hash = ?, signature = ? WHERE seq = 1",
               (h.co2e_scope1_g, hh, signer.sign(hh)))
    db.commit()
    db.close()


async def test_a_clean_outbox_holds_and_each_tampering_is_caught(anchored: Provisioned,
                                                                 tmp_path: Path) -> None:
    """One provisioned ledger for every case (each provision spends a dev account's ether)."""
    cfg = load_config(anchored.config)
    path = cfg.outbox_path()
    code, rep, err = _audit(anchored)
    assert code == 0, (err, rep)
    assert rep["ok"] is True and not _failing(rep)
    figures = rep["figures"]
    assert isinstance(figures, dict) and figures["batches_confirmed"] >= 3
    assert figures["records"] == figures["committed"] > 0
    offline_code, _, _ = _audit(anchored, "--offline")
    assert offline_code == 0

    clean = tmp_path / "clean.sqlite"
    src = sqlite3.connect(path)
    dst = sqlite3.connect(clean)
    src.backup(dst)
    src.close()
    dst.close()

    def sql(*stmts: str) -> Callable[[], None]:
        return lambda: _sql(path, *stmts)

    tamperings: list[tuple[str, Callable[[], object], dict[str, str]]] = [
        ("changed value", sql("UPDATE records SET value = value + 1 WHERE seq = 5"),
         {"record-leaves": "record 5"}),
        ("changed value and leaf", sql(
            "UPDATE records SET value = value + 1, leaf = randomblob(32) WHERE seq = 5"),
         {"record-leaves": "record 5", "batch-roots": "batch 1"}),
        ("deleted record", sql("DELETE FROM records WHERE seq = 7"),
         {"record-seqs": "missing: 7"}),
        ("seq gap", sql("UPDATE records SET seq = seq + 5 WHERE seq = (SELECT MAX(seq) FROM records)"),
         {"record-seqs": "missing", "record-leaves": "a field was changed"}),  # seq is in the leaf
        ("deleted batch", sql("DELETE FROM batches WHERE seq = 2"),
         {"batch-chain": "batch 3 found where batch 2 belongs"}),
        ("forged signature", sql("UPDATE batches SET signature = zeroblob(64) WHERE seq = 2"),
         {"batch-signatures": "batch 2"}),
        ("confirmed but not on the ledger", lambda: _extra_batch(anchored, CONFIRMED),
         {"anchors": "the ledger holds no batch"}),
        ("different header, re-signed", lambda: _reheader_batch1(anchored),
         {"anchors": "batch 1: the ledger holds header", "batch-chain": "batch 2: prev_hash"}),
    ]
    for name, tamper, expect in tamperings:
        out = tamper()
        if asyncio.iscoroutine(out):
            await out
        code, rep = await _audit_here(anchored)
        assert code == 1, (name, rep)
        failing = _failing(rep)
        assert set(failing) == set(expect), (name, failing)
        for check, fragment in expect.items():
            assert any(fragment in f for f in failing[check]), (name, check, failing[check])
        # back to the clean outbox for the next one
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        b = sqlite3.connect(clean)
        d = sqlite3.connect(path)
        b.backup(d)
        b.close()
        d.close()
    assert (await _audit_here(anchored))[0] == 0

    # a batch built but not yet anchored is a note, not a failure
    await _extra_batch(anchored, 0)
    code, rep = await _audit_here(anchored)
    assert code == 0 and any("not yet confirmed" in n for n in rep["notes"])  # type: ignore[attr-defined]

    # bad input: no outbox at the configured path (and the audit does not create one)
    path.rename(tmp_path / "moved.sqlite")
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    code, _, err = _audit(anchored)
    assert code == 2 and "no outbox" in err
    assert not path.exists()


def test_a_pruned_prefix_is_noted_a_hole_is_failed() -> None:
    """Pure core: with no archive, records 1..k of confirmed batches may have been pruned by
    the disk budget (noted); a hole anywhere else, or inside a batch, is a failure."""
    from ledger_client._audit import AuditReport, check_seqs
    from ledger_client._format import ZERO32, BatchHeader
    from ledger_client._outbox import BUILT, StoredBatch

    def batch(seq: int, first: int, last: int, state: int) -> StoredBatch:
        h = BatchHeader(gateway_id="g", seq=seq, prev_hash=ZERO32, root=ZERO32,
                        count=last - first + 1, first_record_seq=first, last_record_seq=last,
                        first_ts_ns=0, last_ts_ns=0)
        return StoredBatch(header=h, header_hash=h.hash(), signature=b"", state=state,
                           tx_hash=None, raw_tx=None, nonce=None, block_number=None)

    batches = [batch(1, 1, 10, CONFIRMED), batch(2, 11, 20, CONFIRMED), batch(3, 21, 30, BUILT)]
    for present, archive, noted, failed in (
            (set(range(1, 31)), False, False, ""),
            (set(range(11, 31)), False, True, ""),           # batch 1 pruned
            (set(range(21, 31)), False, True, ""),           # batches 1-2 pruned
            (set(range(6, 31)), False, False, ": 1..5"),      # half a batch: not a prune
            (set(range(11, 31)), True, False, "1..10"),       # archive configured: must be there
            (set(range(1, 31)) - {15}, False, False, ": 15"),
            (set(range(1, 21)), False, False, "21..30")):    # unconfirmed records gone
        rep = AuditReport()
        check_seqs(rep, present, 30, batches, archive)
        assert bool(rep.notes) == noted, (present, rep.notes)
        assert (rep.counts["record-seqs"] > 0) == bool(failed), (present, rep.failures)
        if failed:
            assert failed in rep.failures["record-seqs"][0]


async def _pruned(tmp_path: Path, archive: Path | None) -> Outbox:
    """6,000 readings in 6 batches of 1,000, batches 1-3 confirmed, then 2 of them pruned."""
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    await ob.append([Reading(point_id=f"p{i % 7}", ts_ns=i, value=float(i), unit="kW",
                             source="s") for i in range(6000)])
    for _ in range(6):
        await ob.make_batch(1000, Signer(b"\x03" * 32).sign)
    for seq in (1, 2, 3):
        await ob.mark_confirmed(seq, 10 + seq)
    assert await ob.prune_anchored(2, archive) == 2000
    return ob


@pytest.mark.parametrize("with_archive", [True, False])
async def test_the_audit_reads_the_archive_for_pruned_records(tmp_path: Path,
                                                              with_archive: bool) -> None:
    from ledger_client._audit import audit_outbox

    key = Signer(b"\x03" * 32).public_key
    path = tmp_path / "archive.sqlite"
    ob = await _pruned(tmp_path, path if with_archive else None)
    arc = await Outbox.open(path, "gw", journal_mode="DELETE") if with_archive else None
    try:
        rep = await audit_outbox(ob, arc, key=key, chain=None, confirmations=1)
        assert rep.ok, rep.text()
        assert rep.figures["records"] == (6000 if with_archive else 4000)
        assert rep.figures["batches_without_all_records"] == (0 if with_archive else 2)
        assert any("pruned" in n for n in rep.notes) != with_archive
        if arc is not None:  # a record deleted from the archive is missing
            await arc._exec("DELETE FROM records WHERE seq = 1500")
            await arc._exec("UPDATE records SET value = 0 WHERE seq = 20")
            rep = await audit_outbox(ob, arc, key=key, chain=None, confirmations=1)
            assert rep.failures["record-seqs"] == ["1 committed record(s) missing from the "
                                                   "outbox and the archive: 1500"]
            assert rep.failures["record-leaves"][0].startswith("record 20:")
        else:  # with no archive a hole after the pruned prefix is still a failure
            await ob._exec("DELETE FROM records WHERE seq = 4500")
            rep = await audit_outbox(ob, None, key=key, chain=None, confirmations=1)
            assert rep.failures["record-seqs"] == ["1 committed record(s) missing: 4500"]
        wrong = await audit_outbox(ob, arc, key=Signer(b"\x09" * 32).public_key, chain=None,
                                   confirmations=1)
        assert wrong.counts["batch-signatures"] == 6
    finally:
        if arc is not None:
            await arc.close()
        await ob.close()
