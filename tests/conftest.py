"""Shared fixtures: a real anvil chain, a real pymodbus plant, a provisioned gateway."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from simulator import (
    Anvil,
    ModbusPlant,
    Mosquitto,
    Postgres,
    Provisioned,
    default_plant,
    plant_devices,
    provision,
)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    """One chain for the session; each test deploys its own ledger on it."""
    with Anvil() as a:
        yield a


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL server (the system's) per test worker; each test gets its own database."""
    with Postgres() as pg:
        yield pg


_db_counter = iter(range(1, 1_000_000))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database for the portal: SQLite in the test's folder, then PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'portal.db'}"
    pg: Postgres = request.getfixturevalue("postgres")
    return pg.create_database(f"t{os.getpid()}_{next(_db_counter)}")


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A real broker per test (restartable: ``mosquitto.restart()``)."""
    with Mosquitto() as m:
        yield m


@pytest.fixture
async def plant() -> AsyncIterator[ModbusPlant]:
    p = default_plant()
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def gateway(tmp_path: Path, anvil: Anvil, plant: ModbusPlant) -> Provisioned:
    """A gateway provisioned on a fresh ledger: keys, registration, config file."""
    return await provision(tmp_path / "gw", anvil.url,
                           devices=plant_devices(plant.port, interval_s=0.2),
                           batch_interval_s=0.5, max_records=50,
                           extra={"outbox": {"shutdown_drain_s": 20}})


class GatewayProcess:
    """``mrv-gateway run`` in a child process, to kill -9 it for real."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "mrv-gateway"), "run", str(self.config), "--log-level", "INFO"],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    async def wait_exit(self, timeout: float) -> int | None:
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.proc.poll() is None and loop.time() < deadline:
            await asyncio.sleep(0.05)
        return self.proc.poll()


@pytest.fixture
def gateway_process() -> Iterator[type[GatewayProcess]]:
    started: list[GatewayProcess] = []

    class _Tracked(GatewayProcess):
        def start(self) -> GatewayProcess:
            started.append(self)
            return super().start()

    yield _Tracked
    for g in started:
        if g.proc is not None and g.proc.poll() is None:
            g.kill9()
