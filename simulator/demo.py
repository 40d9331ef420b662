"""The demo: a local chain with the ledger's roles at work, the portal following it, a simulated
plant and its gateway; readings flow, batches anchor and reach the portal, readings from several
anchored batches are verified as an auditor would, and the portal answers a regulator's and a
bank's questions.

    python -m simulator.demo [--duration 60] [--forever] [--workdir DIR]

It prints the portal's address and how to sign a browser in to its web view; with
``--forever`` everything keeps running (the portal's pages update live) until Ctrl-C, and the
checks run then.

Exits 0 only if every check held: the ledger scenario, batches anchored, every sampled reading
verified, a tampered copy rejected, the portal verified what the gateway anchored, and its
answers (B's account, the cement ranking, A's green index under A's on-chain consent) are
what the ledger says.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from simulator._live import LiveMrv
from simulator._scenario import ScenarioFailed

BIN = Path(sys.executable).parent


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
    ap.add_argument("--forever", action="store_true",
                    help="keep the plant, the gateway and the portal running until Ctrl-C")
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
        say("ledger scenario: government, enterprises, market, auditor; then the portal, a "
            "broker, the plant and its gateway")
        live = LiveMrv(work, anvil.url)
        try:
            await live.start()
        except ScenarioFailed as e:
            failures.append(f"ledger scenario: {e}")
            say(f"FAILED: {failures[-1]}")
            await live.stop()
            return 1
        try:
            return await _run(args, live, anvil.url, failures)
        finally:
            await live.stop()


async def _run(args: argparse.Namespace, live: LiveMrv, rpc_url: str,
               failures: list[str]) -> int:
    for line in live.scenario_lines:
        print(f"  {line}")
    portal, prov = live.portal, live.prov
    assert portal is not None and portal.pki is not None and prov is not None
    work = live.work
    say(f"portal on {portal.url} (log: {portal.log}), indexing the scenario's contracts")
    say(f"simulated plant: feeder electricity meter, boiler natural-gas meter, boiler-room PLC;"
        f" gateway {prov.gateway_id} registered on the same ledger ({prov.contract}), signing"
        " its records, publishing live telemetry and delivering to the portal")
    _print_sign_in(live)
    listen = live.health_listen
    t_end = time.monotonic() + args.duration
    # Ctrl-C or SIGTERM ends the acquisition; the checks then run and everything is stopped
    # (the portal and the gateway run in sessions of their own: a signal to the demo's process
    # group does not reach them, the demo stops them)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.forever:
        say("running until Ctrl-C (or SIGTERM); the checks run then")
    try:
        while (args.forever or time.monotonic() < t_end) and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5)
            if stop.is_set():
                break
            if not live.gateway_alive():
                failures.append("the gateway exited early")
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
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    # let the last batch anchor, then stop the gateway cleanly
    await asyncio.sleep(6)
    await live.stop_gateway()

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
        r = cli("verify", "--bundle", str(tampered), "--rpc", rpc_url)
        say(f"a tampered copy of reading {seqs[0]} (value changed to 100.0):")
        print(r.stdout.rstrip())
        if r.returncode != 1:
            failures.append("a tampered reading was not rejected")
    # The portal: what the gateway anchored, verified with the portal's own eyes; then the
    # questions a regulator and a bank ask, answered from the ledger's tables.
    try:
        for line in await asyncio.to_thread(portal.answers, prov.gateway_id, last, rpc_url):
            print(f"  {line}")
    except AssertionError as e:
        failures.append(f"portal: {e}")
    if failures:
        for f in failures:
            say(f"FAILED: {f}")
        return 1
    say(f"all checks held: {len(seqs)} readings from {last} anchored batches verified,"
        " the tampered copy was rejected, the ledger scenario held, the portal verified"
        " every anchored batch and answered")
    return 0


def _print_sign_in(live: LiveMrv) -> None:
    """The portal's address, and how each role signs a browser in to its web view."""
    from ledger_client import PortalRefused, portal_login_link

    portal = live.portal
    assert portal is not None and portal.pki is not None
    ca = portal.pki.ca_file
    say(f"the portal's web view: {portal.url}/ui/  (its certificate is the simulated PKI's:"
        f" {ca}; a browser will warn about it)")
    say("sign a browser in as a role: mrvctl --key KEY login --portal URL --ca-file CA prints a"
        " one-time link; for example:")
    for role in ("government", "auditor", "enterprise-a", "finance"):
        print(f"    {BIN / 'mrvctl'} --key {live.key_file(role)} login --portal {portal.url}"
              f" --ca-file {ca}")
    try:
        link = portal_login_link(portal.url, live.key("government"), ca_file=str(ca))
        say(f"a link for the government, valid for a few minutes: {link['url']}")
    except (PortalRefused, OSError) as e:  # the indexer may not have caught up yet
        say(f"(no link yet: {e}; run the command above in a moment)")


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
