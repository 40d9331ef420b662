"""A throw-away PostgreSQL server from the system's packages, for the tests, the benchmarks and a
demo that asks for one: ``initdb`` into a temporary directory, ``postgres`` on a loopback port,
removed at stop.

PostgreSQL refuses to run as root: when we are root (CI), the data directory is given to the
``postgres`` system user (which Debian's package creates) and the server runs as that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from simulator._plant import free_port
from simulator._process import stop_process


def pg_bindir() -> Path:
    """Where ``initdb`` and ``postgres`` are: $MRV_PG_BINDIR, then Debian's layout, then PATH."""
    env = os.environ.get("MRV_PG_BINDIR")
    if env:
        return Path(env)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    if which:
        return Path(which).resolve().parent
    raise FileNotFoundError(
        "PostgreSQL not found: `make setup` installs it (apt-get install postgresql)")


class Postgres:
    """One PostgreSQL server on 127.0.0.1 with trust authentication for the local user
    ``mrv`` (superuser), and a database ``mrv``. ``url()`` gives SQLAlchemy URLs."""

    def __init__(self, port: int = 0, log: Path | None = None) -> None:
        self.port = port or free_port()
        self.log = log
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._user: str | None = None

    def url(self, database: str = "mrv") -> str:
        return f"postgresql+psycopg://mrv@127.0.0.1:{self.port}/{database}"

    def _as_user(self, cmd: list[str]) -> list[str]:
        # setpriv execs the command (runuser would stay as its parent and own the signals)
        return cmd if self._user is None else [
            "setpriv", f"--reuid={self._user}", f"--regid={self._user}", "--init-groups", *cmd]

    def start(self, timeout_s: float = 30.0) -> Postgres:
        bindir = pg_bindir()
        root = Path(tempfile.mkdtemp(prefix="mrv-pg-"))
        self.dir = root
        data = root / "data"
        sock = root / "sock"
        sock.mkdir()
        if os.geteuid() == 0:
            self._user = "postgres"
            pw = pwd.getpwnam(self._user)
            os.chmod(root, 0o755)
            for p in (root, sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        subprocess.run(
            self._as_user([str(bindir / "initdb"), "-D", str(data), "-U", "mrv", "-A", "trust",
                           "-E", "UTF8", "--locale=C", "--no-sync"]),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=root)
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        # fsync off: a throw-away server for tests and benchmarks (the benchmark says so).
        self.proc = subprocess.Popen(
            self._as_user([str(bindir / "postgres"), "-D", str(data), "-p", str(self.port),
                           "-h", "127.0.0.1", "-k", str(sock), "-c", "fsync=off",
                           "-c", "full_page_writes=off", "-c", "synchronous_commit=off",
                           "-c", "max_connections=200"]),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=root)
        deadline = time.monotonic() + timeout_s
        import psycopg  # the server's own client library, only needed here

        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise RuntimeError(f"postgres exited with {code}")
            try:
                with psycopg.connect(host="127.0.0.1", port=self.port, user="mrv",
                                     dbname="postgres", autocommit=True, connect_timeout=2) as c:
                    c.execute("CREATE DATABASE mrv")
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"postgres did not answer on port {self.port}") from None
                time.sleep(0.1)

    def create_database(self, name: str) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="mrv", dbname="postgres",
                             autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None:
            # SIGINT: "fast" shutdown (rolls back open transactions, closes connections)
            stop_process(self.proc, 20, signal.SIGINT)
            self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
