"""The whole off-chain path with nothing stood in: a simulated plant, a real gateway process
delivering over HTTPS, ``mrv-portal run`` (its own indexer following anvil, its ingest
verifier, its API) on SQLite and on PostgreSQL, killed with SIGKILL in the middle, and an
auditor who signs in with the regulator's key and checks a reading's proof with
``mrv-gateway verify --bundle``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct

from config import load_config
from ledger_client import Outbox, load_account
from simulator import Anvil, ModbusPlant, SimPki, free_port, plant_devices, provision
from tests.conftest import GatewayProcess

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
GW = "plant-e2e-gw1"


class PortalProcess:
    """``mrv-portal run portal.yaml`` in a child process, to kill -9 it for real."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PortalProcess:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "mrv-portal"), "run", str(self.config), "--log-level", "INFO"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _portal_yaml(tmp: Path, db_url: str, rpc: str, book: Path, pki: SimPki, port: int) -> Path:
    cfg = tmp / "portal.yaml"
    cfg.write_text(json.dumps({
        "database": {"url": db_url},
        "chain": {"rpc_url": rpc, "address_book": str(book), "confirmations": 0,
                  "poll_s": 0.2},
        "api": {"host": "127.0.0.1", "port": port,
                "tls": {"cert": str(pki.server_cert), "key": str(pki.server_key)}},
        "auth": {"secret_file": str(tmp / "portal-secret"), "domain": "localhost",
                 "uri": f"https://localhost:{port}/"},
    }))
    return cfg


async def _until(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = await cond()
        except (httpx.HTTPError, OSError):
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def _sign_in(client: httpx.AsyncClient, key_file: Path) -> str | None:
    """A token for the key's account; None while the portal's indexer has not yet seen the
    account's role (403: "holds no role"), so the caller waits and asks again."""
    acct = load_account(key_file)
    r = await client.post("/v1/auth/challenge", json={"address": acct.address})
    assert r.status_code == 201, r.text
    message = r.json()["message"]
    sig = Account.sign_message(encode_defunct(text=message), acct.key).signature
    r = await client.post("/v1/auth/token", json={"message": message,
                                                    "signature": "0x" + sig.hex()})
    if r.status_code == 403 and "holds no role" in r.json()["detail"]:
        return None
    assert r.status_code == 200, r.text
    assert "admin" in r.json()["roles"]  # the regulator, as the chain says
    return str(r.json()["token"])


async def _verified_batches(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await client.get("/v1/batches", params={"gateway_id": GW, "limit": 1000})
    r.raise_for_status()
    return [b for b in r.json()["items"] if b["ingest"]["state"] == "verified"]


async def test_plant_to_portal_through_a_kill(
        tmp_path: Path, anvil: Anvil, plant: ModbusPlant, db_url: str,
        gateway_process: type[GatewayProcess]) -> None:
    pki = SimPki.create(tmp_path / "pki")
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    health = f"127.0.0.1:{free_port()}"
    prov = await provision(
        tmp_path / "gw", anvil.url, devices=plant_devices(plant.port, interval_s=0.2),
        gateway_id=GW, batch_interval_s=0.5, max_records=50, health_listen=health,
        extra={"portal": {"url": base, "tls": {"ca_file": str(pki.ca_file)},
                          "retry": {"initial_s": 0.1, "max_s": 0.5}},
               "gateway": {"sign_records": True}})
    portal = PortalProcess(_portal_yaml(tmp_path, db_url, anvil.url, prov.address_book, pki,
                                        port), tmp_path / "portal.log").start()
    gw = gateway_process(prov.config, tmp_path / "gateway.log").start()
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10,
                                     verify=ssl.create_default_context(cafile=pki.ca_file)
                                     ) as client:
            async def signed_in() -> str | None:
                return await _sign_in(client, prov.admin_key)

            token = await _until(signed_in, 60, "the portal to index the regulator's role")
            client.headers["Authorization"] = f"Bearer {token}"

            async def at_least(n: int) -> list[dict[str, Any]] | None:
                got = await _verified_batches(client)
                return got if len(got) >= n else None

            await _until(lambda: at_least(3), 90, "3 verified batches")
            # SIGKILL the portal in full flow; the gateway keeps its backlog, the portal
            # comes back, catches up on the chain and takes the rest
            portal.kill9()
            await asyncio.sleep(1.0)  # the gateway builds and anchors while the portal is gone
            portal.start()
            first = len(await _until(lambda: at_least(1), 60, "the portal back"))
            await _until(lambda: at_least(first + 3), 90, "3 more verified batches")
            assert await asyncio.to_thread(gw.terminate) == 0

            # every batch the gateway anchored reaches the portal, verified, exactly once
            cfg = load_config(prov.config)
            ob = await Outbox.open(cfg.outbox_path(), GW)
            try:
                st = await ob.stats()
                confirmed = st.batches_by_state["confirmed"]
                last_b = await ob.batch(confirmed)
                assert last_b is not None
                last_record = last_b.header.last_record_seq
                leaves = dict(enumerate(await ob.leaves(1, last_record), start=1))
            finally:
                await ob.close()
            # A batch anchored in the gateway's last moments may still wait in its outbox for
            # delivery: the gateway delivers its backlog when it runs again.
            # (A clean stop gives delivery a drain of its own, but not while the portal fails
            # to answer, as it may right after its restart.)
            gw = gateway_process(prov.config, tmp_path / "gateway-again.log").start()

            async def running() -> bool:  # serving /health: its signal handlers are in place
                async with httpx.AsyncClient(timeout=2) as h:
                    return (await h.get(f"http://{health}/health")).status_code in (200, 503)

            await _until(running, 60, "the gateway to run again")
            done = await _until(lambda: at_least(confirmed), 90,
                                f"all {confirmed} anchored batches verified")
            assert await asyncio.to_thread(gw.terminate) == 0
            assert sorted(b["seq"] for b in done)[:confirmed] == list(range(1, confirmed + 1))

            got: dict[int, str] = {}
            cursor: str | None = None
            while True:
                params: dict[str, Any] = {"gateway_id": GW, "limit": 1000}
                if cursor:
                    params["cursor"] = cursor
                r = await client.get("/v1/records", params=params)
                r.raise_for_status()
                page = r.json()
                for item in page["items"]:
                    assert item["seq"] not in got  # nothing twice
                    got[item["seq"]] = item["leaf"]
                cursor = page.get("next_cursor")
                if not cursor:
                    break
            for rec_seq, leaf in leaves.items():
                assert got.get(rec_seq) == "0x" + leaf.hex(), rec_seq

            # an auditor's check of one reading, with nothing but the API's bundle and a node
            r = await client.get(f"/v1/records/{GW}/{last_record}/proof")
            assert r.status_code == 200, r.text
            bundle = tmp_path / "proof.json"
            bundle.write_text(r.text)
            proc = await asyncio.create_subprocess_exec(
                str(BIN / "mrv-gateway"), "verify", "--bundle", str(bundle), "--rpc", anvil.url,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, out.decode()

            # nothing was quarantined on the way
            r = await client.get("/v1/quarantine")
            assert r.status_code == 200 and r.json()["items"] == []
    finally:
        portal.stop()
    log = (tmp_path / "portal.log").read_text()
    assert "Traceback" not in log, log[-3000:]


def test_the_portal_refuses_a_bad_config_with_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "portal.yaml"
    cfg.write_text("chain: {address_book: missing.json}\napi: {port: 99999}\n")
    r = subprocess.run([str(BIN / "mrv-portal"), "run", str(cfg)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "api.port" in r.stderr
