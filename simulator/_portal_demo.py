"""The portal in the demo: ``mrv-portal run`` over HTTPS (a certificate from the simulated
PKI) on SQLite, following the scenario's deployment; and the questions the demo asks it, each
checked against what the ledger and the gateway hold."""

from __future__ import annotations

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
from eth_account.signers.local import LocalAccount

from ledger_client import EvmChain, Mrv, load_account, read_address_book
from simulator._anvil import DEV_KEYS
from simulator._plant import free_port
from simulator._scenario import REGULATOR_KEY_INDEX
from simulator._tls import SimPki

BIN = Path(sys.executable).parent
T = 10**6  # grams per tonne
#: B's cement output in 2024, t clinker (the scenario's plants are toy-sized): the chain holds
#: none for B (it was allocated by amount, not by benchmark), so portal.yaml carries it, as a
#: regulator's statistics would
B_CLINKER_T = 450


class PortalDemo:
    def __init__(self, work: Path, rpc_url: str, scenario: Path, *,
                 telemetry_broker: str | None = None) -> None:
        self.work = work
        #: ``host:port`` of the broker the web view's live telemetry reads (None: off)
        self.telemetry_broker = telemetry_broker
        self.rpc_url = rpc_url
        self.scenario = scenario
        self.book = scenario / "address-book.json"
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.log = work / "portal.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pki: SimPki | None = None

    @property
    def ledger_address(self) -> str:
        return str(read_address_book(self.book)["contracts"]["EmissionsLedger"])

    def key(self, name: str) -> LocalAccount:
        return load_account(self.scenario / "keys" / f"{name}.key")

    def start(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.pki = SimPki.create(self.work / "pki")
        b = self.key("enterprise-b").address.lower()
        cfg = self.work / "portal.yaml"
        cfg.write_text(json.dumps({
            "database": {"url": "sqlite:///portal.db"},
            "chain": {"rpc_url": self.rpc_url, "address_book": str(self.book),
                      "confirmations": 0, "poll_s": 0.5},
            "api": {"host": "127.0.0.1", "port": self.port,
                    "tls": {"cert": str(self.pki.server_cert), "key": str(self.pki.server_key)}},
            "auth": {"domain": "localhost", "uri": f"https://localhost:{self.port}/"},
            "ui": {"timezone": "Asia/Shanghai", "live_poll_s": 0.5,
                   **({"telemetry": {"broker": self.telemetry_broker}}
                      if self.telemetry_broker else {})},
            "outputs": [{"enterprise": b, "period": 1, "output": B_CLINKER_T,
                         "unit": "t clinker"}],
        }, indent=2))
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([str(BIN / "mrv-portal"), "run", str(cfg)],
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                with self._client() as c:
                    if c.get("/v1/health").status_code == 200:
                        return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the portal did not start (log: {self.log})")
            time.sleep(0.2)

    def gateway_section(self) -> dict[str, Any]:
        assert self.pki is not None
        return {"url": self.url, "tls": {"ca_file": str(self.pki.ca_file)},
                "retry": {"initial_s": 0.2, "max_s": 2.0}}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def _client(self, token: str | None = None) -> httpx.Client:
        assert self.pki is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30,
                            verify=ssl.create_default_context(cafile=self.pki.ca_file))

    def sign_in(self, acct: LocalAccount) -> str:
        """Sign-In with Ethereum: the challenge, signed by the account's own key."""
        with self._client() as c:
            r = c.post("/v1/auth/challenge", json={"address": acct.address})
            r.raise_for_status()
            msg = r.json()["message"]
            sig = Account.sign_message(encode_defunct(text=msg), acct.key).signature
            r = c.post("/v1/auth/token", json={"message": msg, "signature": "0x" + sig.hex()})
            if r.status_code != 200:
                raise AssertionError(f"sign-in of {acct.address}: {r.status_code} {r.text}")
            return str(r.json()["token"])

    def _wait(self, what: str, check: Any, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            got = check()
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.3)

    def answers(self, gateway_id: str, anchored: int, rpc_url: str) -> list[str]:
        """The portal's answers, each checked; printable lines. Raises AssertionError."""
        out: list[str] = []
        regulator: LocalAccount = Account.from_key(DEV_KEYS[REGULATOR_KEY_INDEX])
        token = self.sign_in(regulator)
        out.append(f"signed in as the regulator {regulator.address} (EIP-4361 challenge)")
        with self._client(token) as c:
            def verified() -> list[dict[str, Any]] | None:
                r = c.get("/v1/batches", params={"gateway_id": gateway_id, "limit": 1000})
                r.raise_for_status()
                v = [b for b in r.json()["items"] if b["ingest"]["state"] == "verified"]
                return v if len(v) >= anchored else None

            got = self._wait(f"{anchored} verified batches of {gateway_id}", verified)
            r = c.get("/v1/quarantine")
            r.raise_for_status()
            if r.json()["items"]:
                raise AssertionError(f"quarantined: {r.json()['items'][:3]}")
            n_rec = sum(int(b["count"]) for b in got)
            out.append(f"{gateway_id}: all {len(got)} anchored batches delivered and verified"
                       f" against the chain ({n_rec} records), none quarantined")
            last = max(got, key=lambda b: b["seq"])
            r = c.get(f"/v1/records/{gateway_id}/{last['last_record_seq']}/proof")
            r.raise_for_status()
            bundle = self.work / "portal-proof.json"
            bundle.write_text(r.text)
            v = subprocess.run([str(BIN / "mrv-gateway"), "verify", "--bundle", str(bundle),
                                "--rpc", rpc_url], capture_output=True, text=True, check=False)
            if v.returncode != 0:
                raise AssertionError(f"the portal's proof did not verify: {v.stdout}{v.stderr}")
            out.append(f"a proof from the portal (record {last['last_record_seq']}) verified by"
                       " mrv-gateway verify --bundle: ok")

            b = self.key("enterprise-b").address
            acc = c.get(f"/v1/enterprises/{b}/accounts/1")
            acc.raise_for_status()
            a = acc.json()
            out.append("B's carbon account, period 1 (t): " + ", ".join(
                f"{k.removesuffix('_g')} {a[k] / T:g}" for k in (
                    "allocated_g", "verified_g", "corrected_g", "accounted_g", "penalty_g",
                    "traded_in_g", "traded_out_g", "surrendered_g", "balance_g")
                if a.get(k) is not None) + f"; compliance {a.get('compliance')}")
            chain_acc = self._chain_account(b)
            if int(a["allocated_g"]) != chain_acc["allocated"] or \
                    a["accounted_g"] != chain_acc["verified"]:
                raise AssertionError(f"B's account {a} differs from the chain {chain_acc}")

            rk = c.get("/v1/rankings", params={"period": 1, "by": "industry",
                                               "group": "C3011"})
            rk.raise_for_status()
            grp = rk.json()["groups"][0]
            out.append("cement (C3011) ranking, period 1: " + "; ".join(
                f"#{e['rank']} {e['name']}, {e['intensity_t_per_unit']:.4f} t CO2e per"
                f" {e['output_unit']} ({e['emissions_basis']})" for e in grp["entries"]))
            if grp["entries"][0]["name"] != "Lingnan Cement Co." or grp["entries"][0]["rank"] != 1:
                raise AssertionError(f"unexpected cement ranking {grp}")

        # A's green index, as its bank: refused without consent, served with it, refused
        # again once A revokes it on the ledger
        finance = self.key("finance")
        ent_a = self.key("enterprise-a")
        ftok = self.sign_in(finance)
        path = f"/v1/enterprises/{ent_a.address}/green-index"
        with self._client(ftok) as c:
            r = c.get(path, params={"period": 1})
            if r.status_code != 403:
                raise AssertionError(f"finance read A's data without consent: {r.status_code}")
            out.append(f"the bank asks for A's green index without consent: 403"
                       f" ({r.json()['detail']})")
            self._consent(ent_a, finance.address, grant=True)
            r = self._wait("the bank's access after A's grant",
                           lambda: (x := c.get(path, params={"period": 1})).status_code == 200
                           and x)
            gi = r.json()
            parts = ", ".join(f"{k} {v['points']:g}/{v['weight']}"
                              for k, v in gi["components"].items())
            out.append(f"A granted the bank access on-chain; A's green index, period 1:"
                       f" {gi['score']} ({parts})")
            self._consent(ent_a, finance.address, grant=False)
            self._wait("the revocation to take effect",
                       lambda: c.get(path, params={"period": 1}).status_code == 403)
            out.append("A revoked it on-chain: the bank's next request after the indexer's"
                       " step is refused (403)")
        return out

    def _chain_account(self, enterprise: str) -> dict[str, int]:
        import asyncio

        async def read() -> dict[str, int]:
            book = read_address_book(self.book)
            mrv = Mrv(EvmChain(self.rpc_url), book["contracts"])
            try:
                acc = await mrv.call(mrv.allowances.functions.accountOf(enterprise, 1))
                return {"allocated": int(acc[0]), "verified": int(acc[2])}
            finally:
                await mrv.close()

        return asyncio.run(read())

    def _consent(self, enterprise: LocalAccount, finance: str, *, grant: bool) -> None:
        import asyncio

        async def send() -> None:
            book = read_address_book(self.book)
            mrv = Mrv(EvmChain(self.rpc_url), book["contracts"])
            try:
                if grant:
                    await mrv.grant_data_access(enterprise, finance, int(time.time()) + 30 * 86400)
                else:
                    await mrv.revoke_data_access(enterprise, finance)
            finally:
                await mrv.close()

        asyncio.run(send())
