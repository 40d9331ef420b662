"""A real Mosquitto broker on a loopback port, for the demo and the tests."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from simulator._plant import free_port
from simulator._process import stop_process
from simulator._tls import SimPki


def mosquitto_bin() -> str:
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if cand and Path(cand).exists():
            return cand
    raise FileNotFoundError("mosquitto not found: run `make setup` (it installs the Debian package)")


class Mosquitto:
    """``persistence`` keeps QoS 1 sessions and queued messages across a broker restart.
    ``tls``: listen with TLS only, with that PKI's broker certificate; ``require_client_cert``:
    and ask for a client certificate signed by its CA (mutual TLS)."""

    def __init__(self, port: int = 0, persistence: bool = True, tcp_nodelay: bool = True,
                 tls: SimPki | None = None, require_client_cert: bool = False) -> None:
        self.port = port or free_port()
        self.tls = tls
        self.require_client_cert = require_client_cert
        self.dir = Path(tempfile.mkdtemp(prefix="mrv-mosquitto-"))
        self.persistence = persistence
        self.tcp_nodelay = tcp_nodelay
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        conf = self.dir / "mosquitto.conf"
        # set_tcp_nodelay: without it Nagle's algorithm adds ~40 ms per hop to small messages
        # (command acks); a deployment's broker wants it too (docs/control.md).
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true",
                 f"set_tcp_nodelay {'true' if self.tcp_nodelay else 'false'}",
                 f"log_dest file {self.dir / 'mosquitto.log'}"]
        if os.geteuid() == 0:
            # started as root, mosquitto switches to its own user before it reads the TLS
            # files and writes its log and store, none of which that user may read here
            lines.append(f"user {pwd.getpwuid(0).pw_name}")
        if self.tls is not None:
            lines += [f"cafile {self.tls.ca_file}", f"certfile {self.tls.server_cert}",
                      f"keyfile {self.tls.server_key}", "tls_version tlsv1.2",
                      f"require_certificate {'true' if self.require_client_cert else 'false'}"]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.dir}/"]
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([mosquitto_bin(), "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}; see {conf}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"mosquitto did not listen on {self.port}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Mosquitto:
        return self.start()

    def close(self) -> None:
        """Stop it for good: `stop`, then remove its folder (config, log and store), which
        `stop` keeps so that a `restart` finds its persisted sessions."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        self.close()
