"""kill -9 at any moment loses no accepted reading, anchors no batch twice, leaves no gap."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from config import contract_address, load_config
from ledger_client import EvmChain, Outbox
from ledger_client._format import record_leaf
from simulator import Provisioned
from tests.support import until

from .conftest import GatewayProcess


async def assert_consistent(p: Provisioned) -> int:
    """Outbox and chain agree: gapless records and batches, every batch anchored once."""
    cfg = load_config(p.config)
    ob = await Outbox.open(cfg.outbox_path(), cfg.gateway.id)
    chain = EvmChain(p.rpc_url, contract_address=contract_address(cfg))
    try:
        st = await ob.stats()
        assert st.records > 0
        assert st.pending == 0, st
        assert st.batches_by_state == {"built": 0, "submitted": 0, "confirmed": st.batches}, st
        expected_first = 1
        for seq in range(1, st.batches + 1):
            b = await ob.batch(seq)
            assert b is not None, f"batch {seq} missing"
            assert b.header.first_record_seq == expected_first
            expected_first = b.header.last_record_seq + 1
            held = await chain.batch(cfg.gateway.id, seq)
            assert held.header_hash == b.header_hash, f"batch {seq} differs on chain"
        assert expected_first - 1 == st.records
        assert await chain.last_seq(cfg.gateway.id) == st.batches
        gw = await chain.gateway(cfg.gateway.id)
        assert gw.last_record_seq == st.records
        # every record row is intact: its stored leaf is the leaf of its fields
        for r in await ob.records(1, st.records):
            assert (await ob.leaves(r.seq, r.seq)) == [record_leaf(r)]
        return st.records
    finally:
        await chain.close()
        await ob.close()


async def _finish(gp: type[GatewayProcess], p: Provisioned, tmp: Path, run_s: float = 2.0) -> None:
    """Restart cleanly, run a little, stop with SIGTERM (which anchors what is left)."""
    g = gp(p.config, tmp / "gateway.log").start()
    await asyncio.sleep(run_s)  # the scenario: a running gateway, then a clean stop
    assert g.terminate() == 0
    # the `run` command's daemon, alone in its process, freezes its startup objects
    log = (tmp / "gateway.log").read_text()
    assert "startup objects frozen out of the cyclic garbage collector" in log
    # a restart over an outbox with readings: the checks resume their state from them
    assert "resume their state from" in log


FAILPOINTS = [
    "outbox.before_commit=4",
    "outbox.after_commit=4",
    "batcher.after_build=2",
    "uplink.before_send=2",
    "uplink.after_send=2",
    "uplink.after_receipt=2",
]


@pytest.mark.parametrize("fp", FAILPOINTS)
async def test_kill9_at_each_critical_moment(fp: str, gateway: Provisioned, tmp_path: Path,
                                             gateway_process: type[GatewayProcess]) -> None:
    g = gateway_process(gateway.config, tmp_path / "gateway.log",
                        env={"MRV_FAILPOINTS": fp}).start()
    rc = await g.wait_exit(30)
    assert rc == -signal.SIGKILL, (tmp_path / "gateway.log").read_text()[-3000:]
    await _finish(gateway_process, gateway, tmp_path)
    records = await assert_consistent(gateway)
    assert records >= 6


async def test_kill9_at_random_moments(gateway: Provisioned, tmp_path: Path,
                                       gateway_process: type[GatewayProcess]) -> None:
    rnd = random.Random(os.environ.get("MRV_TEST_SEED", "7"))
    outbox = load_config(gateway.config).outbox_path()
    for i in range(4):
        g = gateway_process(gateway.config, tmp_path / "gateway.log").start()
        if i == 0:  # running, with readings committed (a busy machine may take seconds to start)
            await until(lambda: _committed(outbox) > 0, timeout=120)
        await asyncio.sleep(rnd.uniform(1.0, 3.0))  # the random moment is the scenario
        g.kill9()
    await _finish(gateway_process, gateway, tmp_path)
    await assert_consistent(gateway)


def _committed(outbox: Path) -> int:
    """Records in the outbox as another process sees them (0 while it does not exist yet)."""
    if not outbox.exists():
        return 0
    db = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True, timeout=5)
    try:
        return int(db.execute("SELECT COUNT(*) FROM records").fetchone()[0])
    except sqlite3.OperationalError:  # the schema not created yet
        return 0
    finally:
        db.close()


WRITER = textwrap.dedent("""
    import asyncio, sys, time
    from pathlib import Path
    from gateway import Reading
    from ledger_client import Outbox

    async def main():
        ob = await Outbox.open(Path(sys.argv[1]), "gw-crash")
        i = 0
        while True:
            batch = [Reading(point_id=f"p{j}", ts_ns=time.time_ns(), value=float(i * 10 + j),
                             unit="kW", source="test") for j in range(10)]
            done = await ob.append(batch)
            print("ACK", done[0].seq, done[-1].seq, flush=True)
            i += 1

    asyncio.run(main())
""")


async def test_every_acknowledged_reading_survives_kill9(tmp_path: Path) -> None:
    """Invariant 1 at the outbox: what `append` acknowledged is there after SIGKILL."""
    db = tmp_path / "outbox.sqlite"
    acked: set[int] = set()
    rnd = random.Random(11)
    def note(line: str) -> None:
        # Only whole lines: the kill can cut the last one (with PYTHONUNBUFFERED set, print
        # writes its pieces one by one). A cut line reports less than was acknowledged: safe.
        if line.endswith("\n"):
            _, a, b = line.split()
            acked.update(range(int(a), int(b) + 1))

    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout is not None
        try:
            deadline = asyncio.get_running_loop().time() + rnd.uniform(0.5, 1.5)
            lines = 0
            while asyncio.get_running_loop().time() < deadline or lines < 3:
                line = await asyncio.to_thread(proc.stdout.readline)
                if not line:
                    break
                note(line)
                lines += 1
            proc.send_signal(signal.SIGKILL)
            # whatever was printed before the kill was acknowledged too
            for line in proc.stdout.read().splitlines(keepends=True):
                note(line)
        finally:
            proc.kill()
            proc.stdout.close()
            proc.wait()
    ob = await Outbox.open(db, "gw-crash")
    try:
        st = await ob.stats()
        assert acked and max(acked) <= st.records
        rows = await ob.records(1, st.records)
        assert [r.seq for r in rows] == list(range(1, st.records + 1))  # gapless
        assert acked <= {r.seq for r in rows}
        for r in rows:
            assert (await ob.leaves(r.seq, r.seq)) == [record_leaf(r)]
    finally:
        await ob.close()
