"""A local EVM chain for the demo and the tests: anvil from npm (@foundry-rs/anvil-linux-amd64)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from simulator._plant import free_port
from simulator._process import stop_process

ROOT = Path(__file__).resolve().parent.parent

#: anvil's well-known development accounts (mnemonic "test test ... junk"); local use only.
DEV_KEYS = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
]
CHAIN_ID = 31337


def anvil_bin() -> str:
    env = os.environ.get("MRV_ANVIL")
    if env:
        return env
    local = ROOT / "node_modules" / ".bin" / "anvil"
    if local.exists():
        return str(local)
    found = shutil.which("anvil")
    if found:
        return found
    raise FileNotFoundError("anvil not found: run `make setup` (npm ci installs it)")


def rpc(url: str, method: str, params: list[object] | None = None, timeout: float = 2.0) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    req = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())["result"]


class Anvil:
    """One anvil process. ``state`` keeps the chain across restarts (dumped on SIGTERM)."""

    def __init__(self, port: int = 0, state: Path | None = None, log: Path | None = None) -> None:
        self.port = port or free_port()
        self.state = state
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.cache_path: Path | None = None  # anvil's state cache: its own, removed at stop

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> Anvil:
        # --prune-history: no historical states on disk. Without it anvil writes old states
        # under ~/.foundry/anvil/tmp and leaves them there: tens of GB over test and benchmark
        # runs, enough to fill a disk. Nothing here reads state at past blocks. The cache path
        # is the instance's own, so that whatever it writes goes when it stops.
        self.cache_path = Path(tempfile.mkdtemp(prefix="mrv-anvil-cache-"))
        cmd = [anvil_bin(), "--host", "127.0.0.1", "--port", str(self.port),
               "--chain-id", str(CHAIN_ID), "--prune-history", "--cache-path",
               str(self.cache_path)]
        if self.state is not None:
            cmd += ["--state", str(self.state)]
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise RuntimeError(f"anvil exited with {code}: {' '.join(cmd)}")
            try:
                rpc(self.url, "eth_chainId")
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"anvil did not answer on {self.url}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Graceful stop (anvil writes its state file on SIGTERM)."""
        if self.proc is None:
            return
        stop_process(self.proc, 10)
        self.proc = None
        if self.cache_path is not None:
            shutil.rmtree(self.cache_path, ignore_errors=True)
            self.cache_path = None

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
