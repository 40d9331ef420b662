"""The demo: a local chain with the ledger's roles at work, the portal following it, a simulated
plant and its gateway; readings flow, batches anchor and reach the portal, readings from several
anchored batches are verified as an auditor would, and the portal answers a regulator's and a
bank's questions.

    python -m simulator.demo [--duration 60] [--forever] [--workdir DIR]

Exits 0 only if every check held: the ledger scenario, batches anchored, every sampled reading
verified, a tampered copy rejected, the portal verified what the gateway anchored, and its
answers (B's account, the cement ranking, A's green index under A's on-chain consent) are
what the ledger says.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from simulator._anvil import Anvil
from simulator._plant import default_plant, free_port
from simulator._portal_demo import PortalDemo
from simulator._provision import plant_devices, provision
from simulator._scenario import REGULATOR_KEY_INDEX, ScenarioFailed, ledger_scenario

BIN = Path(sys.executable).parent
GATEWAY_ID = "plant-c-gw1"


def say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "mrv-gateway"), *args], capture_output=True, text=True,
                          check=False)


def health(listen: str) -> dict[str, object]:
    with urllib.request.urlopen(f"http://{listen}/health", timeout=2) as r:
        data: dict[str, object] = json.loads(r.read())
        return data


async def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m simulator.demo", description=__doc__)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of acquisition")
    ap.add_argument("--forever", action="store_true", help="keep running until Ctrl-C")
    ap.add_argument("--workdir", help="keep the run's files here (default: a temp dir)")
    args = ap.parse_args(argv)

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="mrv-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    say(f"working directory {work}")
    failures: list[str] = []

    with Anvil(log=work / "anvil.log") as anvil:
        say(f"local chain (anvil) on {anvil.url}")
        # The ledger's roles at work first: certification, allowances, a trade, an audit
        # finding corrected and penalised, the period closed. The plant's gateway then joins
        # the same deployment, and the portal follows all of it.
        say("ledger scenario: government, enterprises, market, auditor")
        try:
            for line in await ledger_scenario(anvil.url, work / "scenario"):
                print(f"  {line}")
        except ScenarioFailed as e:
            failures.append(f"ledger scenario: {e}")
            say(f"FAILED: {failures[-1]}")
            return 1
        portal = PortalDemo(work / "portal", anvil.url, work / "scenario")
        await asyncio.to_thread(portal.start)
        say(f"portal on {portal.url} (log: {portal.log}), indexing the scenario's contracts")
        plant = default_plant()
        await plant.start()
        say(f"simulated plant on 127.0.0.1:{plant.port}: feeder electricity meter (unit 1),"
            " boiler natural-gas meter (unit 2)")
        listen = f"127.0.0.1:{free_port()}"
        prov = await provision(work, anvil.url, devices=plant_devices(plant.port),
                               gateway_id=GATEWAY_ID, batch_interval_s=5.0,
                               health_listen=listen, contract=portal.ledger_address,
                               admin_index=REGULATOR_KEY_INDEX,
                               extra={"portal": portal.gateway_section()})
        say(f"gateway {prov.gateway_id} registered on the same ledger ({prov.contract}),"
            " delivering to the portal")
        gw = await asyncio.create_subprocess_exec(
            str(BIN / "mrv-gateway"), "run", str(prov.config),
            stdout=open(work / "gateway.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        say(f"gateway running (log: {work / 'gateway.log'})")
        t_end = time.monotonic() + args.duration
        try:
            while args.forever or time.monotonic() < t_end:
                await asyncio.sleep(5)
                if gw.returncode is not None:
                    failures.append(f"the gateway exited early with {gw.returncode}")
                    break
                try:
                    h = await asyncio.to_thread(health, listen)
                except OSError:
                    continue
                c = h.get("counters", {})
                ob = h.get("outbox", {})
                assert isinstance(c, dict) and isinstance(ob, dict)
                say(f"readings accepted {c.get('readings_accepted', 0):>5}  "
                    f"batches built {c.get('batches_built', 0):>3}  "
                    f"anchored {c.get('batches_anchored', 0):>3}  "
                    f"delivered {c.get('batches_delivered', 0):>3}  "
                    f"pending {ob.get('pending', 0):>4}  status {h.get('status')}")
        except (KeyboardInterrupt, asyncio.CancelledError):
            pass
        # let the last batch anchor, then stop the gateway cleanly
        await asyncio.sleep(6)
        if gw.returncode is None:
            gw.send_signal(signal.SIGTERM)
        await gw.wait()
        await plant.stop()

        status = json.loads(cli("status", str(prov.config)).stdout or "{}")
        say(f"outbox: {status.get('records')} records, batches {status.get('batches')}")
        last = int(status.get("last_confirmed_batch", 0))
        if last < 3:
            failures.append(f"only {last} batch(es) anchored, expected at least 3")
        # Verify readings from several anchored batches, as an auditor would.
        per_batch = max(1, last // 5)
        seqs = await _sample_seqs(prov.config, list(range(1, last + 1, per_batch))[:6])
        for seq in seqs:
            r = cli("verify", str(prov.config), "--seq", str(seq))
            print(r.stdout.rstrip())
            if r.returncode != 0:
                failures.append(f"reading {seq} did not verify: {r.stderr.strip()}")
        # A tampered copy must fail.
        if seqs:
            bundle = work / "proof.json"
            cli("export-proof", str(prov.config), "--seq", str(seqs[0]), "-o", str(bundle))
            data = json.loads(bundle.read_text())
            data["record"]["value_bits"] = "0x4059000000000000"  # 100.0
            tampered = work / "proof-tampered.json"
            tampered.write_text(json.dumps(data))
            r = cli("verify", "--bundle", str(tampered), "--rpc", anvil.url)
            say(f"a tampered copy of reading {seqs[0]} (value changed to 100.0):")
            print(r.stdout.rstrip())
            if r.returncode != 1:
                failures.append("a tampered reading was not rejected")
        # The portal: what the gateway anchored, verified with the portal's own eyes; then the
        # questions a regulator and a bank ask, answered from the ledger's tables.
        try:
            for line in await asyncio.to_thread(portal.answers, GATEWAY_ID, last, anvil.url):
                print(f"  {line}")
        except AssertionError as e:
            failures.append(f"portal: {e}")
        finally:
            await asyncio.to_thread(portal.stop)
    if failures:
        for f in failures:
            say(f"FAILED: {f}")
        return 1
    say(f"all checks held: {len(seqs)} readings from {last} anchored batches verified,"
        " the tampered copy was rejected, the ledger scenario held, the portal verified"
        " every anchored batch and answered")
    return 0


async def _sample_seqs(config: Path, batches: list[int]) -> list[int]:
    from config import load_config
    from ledger_client import Outbox

    cfg = load_config(config)
    ob = await Outbox.open(cfg.outbox_path(), cfg.gateway.id)
    try:
        out = []
        rnd = random.Random(int.from_bytes(os.urandom(4), "big"))
        for b in batches:
            sb = await ob.batch(b)
            if sb is not None:
                out.append(rnd.randint(sb.header.first_record_seq, sb.header.last_record_seq))
        return out
    finally:
        await ob.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
