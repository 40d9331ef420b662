"""Gas per anchored batch and per reading, and the anchoring rate, against anvil.

    .venv/bin/python -m benchmarks.gas [--rpc URL] [--sizes 1,10,...] [--reps 3]
                                       [--rate-batches 200] [--out FILE]

Deploys the five contracts (paris, optimizer on, as compiled in contracts/artifacts), has an
enterprise register one gateway, and anchors real batch headers (Merkle roots over that many
reading leaves, Ed25519-signed) through ``anchorBatch``:

- ``gas_per_batch``: the steady-state gas of one batch (the gateway's and the enterprise's
  period slots already written); ``first_batch_gas`` is a gateway's very first batch (every
  slot written from zero); per size, gas per batch and gas per reading (= per batch / size):
  only the 32-byte root goes on-chain, so a batch costs the same whatever it holds;
- ``rate``: batches per second, sequential (sign, send, wait for the receipt, as the uplink
  does) and pipelined (signed ahead with consecutive nonces, all sent, then all receipts).
  On anvil (instant automine) this measures the client and contract path, not a BFT chain's
  block time: divide by it on FISCO BCOS or Besu.

Starts its own anvil unless ``--rpc`` is given. JSON to stdout, or to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from benchmarks import stop_on_sigterm
from ledger_client import (
    ZERO32,
    BatchHeader,
    EvmChain,
    Mrv,
    Signer,
    build_header,
    call_data,
    deploy_system,
    fund,
    header_tuple,
    keccak256,
    load_artifact,
    make_uscc,
)
from simulator import DEV_KEYS, Anvil

DEFAULT_SIZES = (1, 10, 100, 1_000, 10_000, 100_000)
TS0 = 1_735_689_600 * 10**9  # 2025-01-01T00:00:00Z, inside the benchmark's period


class Bench:
    def __init__(self, mrv: Mrv, gw: LocalAccount, signer: Signer) -> None:
        self.mrv = mrv
        self.gw = gw
        self.signer = signer
        self.prev = ZERO32
        self.seq = 0
        self.next_record = 1

    def header(self, n: int) -> BatchHeader:
        leaves = [keccak256(f"{self.next_record + i}".encode()) for i in range(n)]
        h = build_header(gateway_id="bench-gw", seq=self.seq + 1, prev_hash=self.prev,
                         records=[(self.next_record + i, TS0 + self.next_record + i, leaf)
                                  for i, leaf in enumerate(leaves)],
                         co2e_g=(1_234_567, 89_012, 3_456))
        self.seq += 1
        self.prev = h.hash()
        self.next_record += n
        return h

    def fn(self, h: BatchHeader) -> Any:
        return self.mrv.ledger.functions.anchorBatch(header_tuple(h), self.signer.sign(h.hash()))

    async def anchor(self, h: BatchHeader) -> int:
        r = await self.mrv.chain.transact(self.gw, self.fn(h))
        return r.gas_used


async def setup(rpc_url: str) -> Bench:
    regulator: LocalAccount = Account.from_key(DEV_KEYS[0])
    gov: LocalAccount = Account.create()
    ent: LocalAccount = Account.create()
    gw: LocalAccount = Account.create()
    chain = EvmChain(rpc_url)
    book = await deploy_system(chain, regulator)
    mrv = Mrv(chain, book["contracts"])
    for a in (gov, ent, gw):
        await fund(chain, regulator, a.address, 10**20)
    await mrv.grant(regulator, "government", gov.address)
    await mrv.define_period(gov, TS0 - 10**9, TS0 + 10**18)
    await mrv.certify(gov, ent.address, credit_code=make_uscc(ent.address.encode()),
                      name="bench", industry="D4411", region="440300")
    signer = Signer(b"\x42" * 32)
    await mrv.reserve_gateway_id(gov, "bench-gw", ent.address)
    await mrv.register_gateway(ent, "bench-gw", gw.address, signer.public_key)
    return Bench(mrv, gw, signer)


async def measure_gas(b: Bench, sizes: list[int], reps: int) -> dict[str, Any]:
    first = await b.anchor(b.header(1))
    per_size: dict[str, list[int]] = {}
    for n in sizes:
        per_size[str(n)] = [await b.anchor(b.header(n)) for _ in range(reps)]
    med = {k: int(statistics.median(v)) for k, v in per_size.items()}
    all_gas = [g for v in per_size.values() for g in v]
    return {
        "first_batch_gas": first,
        "gas_per_batch": int(statistics.median(all_gas)),
        "gas_per_batch_by_size": med,
        "gas_per_reading_by_size": {k: round(v / int(k), 3) for k, v in med.items()},
        "gas_spread": max(all_gas) - min(all_gas),
        "gas_constant": max(all_gas) - min(all_gas) < 1_000,
        "samples": per_size,
    }


async def measure_rate(b: Bench, n: int) -> dict[str, Any]:
    chain = b.mrv.chain
    # sequential: the uplink's way, one batch at a time
    headers = [b.header(10) for _ in range(n)]
    t0 = time.perf_counter()
    for h in headers:
        await b.anchor(h)
    seq_s = time.perf_counter() - t0
    # pipelined: sign ahead (fixed gas limit: estimates of later seqs would revert), send all
    gas_limit = 400_000
    headers = [b.header(10) for _ in range(n)]
    nonce = await chain.nonce(b.gw.address)
    price, chain_id = await chain.gas_price(), await chain.chain_id()
    raws = []
    for i, h in enumerate(headers):
        tx = {"to": chain.address, "data": call_data(b.fn(h)), "value": 0,
              "gas": gas_limit, "gasPrice": price, "nonce": nonce + i, "chainId": chain_id}
        signed = b.gw.sign_transaction(tx)
        raws.append((bytes(signed.raw_transaction), bytes(signed.hash)))
    t0 = time.perf_counter()
    for raw, _ in raws:
        await chain.send_raw(raw)
    ok = 0
    for _, txh in raws:
        r = await chain.wait_receipt(txh, 120)
        ok += r.status == 1
    pipe_s = time.perf_counter() - t0
    last = await chain.last_seq("bench-gw")
    return {
        "batches": n,
        "sequential_batches_per_s": round(n / seq_s, 1),
        "pipelined_batches_per_s": round(n / pipe_s, 1),
        "pipelined_all_succeeded": ok == n and last == b.seq,
    }


async def run(rpc_url: str, *, sizes: list[int], reps: int, rate_batches: int) -> dict[str, Any]:
    b = await setup(rpc_url)
    try:
        gas = await measure_gas(b, sizes, reps)
        rate = await measure_rate(b, rate_batches) if rate_batches else None
    finally:
        await b.mrv.close()
    art = load_artifact("EmissionsLedger")
    return {
        "scenario": "gas",
        "chain": "anvil" if rpc_url.startswith("http://127.0.0.1") else rpc_url,
        "compiler": art["compiler"]["version"],
        "evm_version": art["settings"]["evmVersion"],
        "optimizer": art["settings"]["optimizer"],
        "ledger_code_bytes": (len(art["deployedBytecode"]) - 2) // 2,
        **gas,
        "rate": rate,
        "notes": "gas_per_batch is the median over all sizes after the gateway's first batch;"
                 " per reading = per batch / readings in it. Rates on anvil (automine) bound"
                 " the client and contract path only.",
    }


def main(argv: list[str] | None = None) -> int:
    stop_on_sigterm()
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gas", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rpc", help="an existing chain (default: start anvil)")
    ap.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                    help="readings per batch, comma separated")
    ap.add_argument("--reps", type=int, default=3, help="batches per size")
    ap.add_argument("--rate-batches", type=int, default=200, help="batches per rate run (0: skip)")
    ap.add_argument("--out", help="write the JSON here instead of stdout")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    kw = {"sizes": sizes, "reps": args.reps, "rate_batches": args.rate_batches}
    if args.rpc:
        result = asyncio.run(run(args.rpc, **kw))
    else:
        with Anvil() as anvil:
            result = asyncio.run(run(anvil.url, **kw))
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
