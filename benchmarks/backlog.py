"""Backlog drain: after a chain outage left N readings in the outbox, time until all are anchored.

    .venv/bin/python -m benchmarks.backlog [--readings 1000000] [--batch 10000] [--out FILE]

The outbox is filled first (as the outage would have), then the real Batcher and Uplink run
against a fresh anvil with the ledger deployed; the clock runs from the chain's return until the
last batch is confirmed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import stop_on_sigterm
from ledger_client import Batcher, EvmChain, Outbox, Signer, Uplink, load_account
from mrv_core import Metrics, Reading
from simulator import Anvil, provision


async def drain(readings: int, batch: int, work: Path) -> dict[str, Any]:
    with Anvil() as anvil:
        prov = await provision(work / "gw", anvil.url, devices=[], gateway_id="bench-gw")
        keys = work / "gw" / "keys"
        signer = Signer.load(keys / "ed25519.key")
        ob = await Outbox.open(work / "outbox.sqlite", "bench-gw", synchronous="NORMAL")
        t0 = time.perf_counter()
        chunk = 20_000
        ts = time.time_ns()
        for start in range(0, readings, chunk):
            n = min(chunk, readings - start)
            await ob.append([Reading(point_id=f"p{(start + i) % 3000}", ts_ns=ts + start + i,
                                     value=float(i), unit="kW", source="bench")
                             for i in range(n)])
        fill_s = time.perf_counter() - t0
        chain = EvmChain(anvil.url, contract_address=prov.contract)
        metrics = Metrics()
        wake = asyncio.Event()
        batcher = Batcher(ob, signer.sign, interval_s=3600, max_records=batch, metrics=metrics,
                          wake_uplink=wake)
        uplink = Uplink(ob, chain, load_account(keys / "evm.key"), metrics=metrics, wake=wake,
                        signing_key=signer.public_key, idle_poll_s=0.05)
        t1 = time.perf_counter()
        up = asyncio.create_task(uplink.run())
        built = await batcher.cut_all()
        while await batcher.cut_all():
            pass
        while (await ob.stats()).batches_by_state["confirmed"] < (await ob.stats()).batches:
            await asyncio.sleep(0.05)
        drain_s = time.perf_counter() - t1
        up.cancel()
        await asyncio.gather(up, return_exceptions=True)
        st = await ob.stats()
        gas = []
        for s in (1, st.batches):
            b = await ob.batch(s)
            assert b is not None and b.tx_hash
            r = await chain.receipt(b.tx_hash)
            assert r is not None
            gas.append(r.gas_used)
        await chain.close()
        await ob.close()
    return {"readings": readings, "batch_records": batch, "batches": st.batches,
            "first_cut_batches": built, "fill_s": round(fill_s, 2),
            "drain_s": round(drain_s, 2), "readings_anchored_per_s": round(readings / drain_s),
            "gas_first_batch": gas[0], "gas_last_batch": gas[-1],
            "gas_per_reading": round(gas[-1] / batch, 3)}


def main(argv: list[str] | None = None) -> int:
    stop_on_sigterm()
    ap = argparse.ArgumentParser(prog="python -m benchmarks.backlog", description=__doc__)
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mrv-backlog-") as d:
        res = asyncio.run(drain(args.readings, args.batch, Path(d)))
    text = json.dumps({"scenario": "backlog_drain", **res}, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
