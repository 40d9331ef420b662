"""Shared fixtures: a real anvil chain, a real pymodbus plant, a provisioned gateway."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as _hypothesis_settings

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

# No wall-clock deadline on any hypothesis example (a test that sets its own @settings keeps
# this unless it names a deadline): on a CI machine running four workers on two cores, a
# collection or a stall made one example of 0.6 ms take 320 ms, and hypothesis's default
# 200 ms deadline failed the run. Speed is measured by the benchmarks, never asserted here.
_hypothesis_settings.register_profile("mrv", deadline=None)
_hypothesis_settings.load_profile("mrv")

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
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database for the portal: SQLite in the test's folder, then PostgreSQL.

    After a PostgreSQL test, a garbage collection: an engine the test dropped without
    ``dispose()`` (or a connection it did not close) is closed by the collector with a
    ResourceWarning, an error under pytest's filterwarnings. Collected here, the error is the
    leaking test's; left to chance, it was a later test's (in CI, one on SQLite)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'portal.db'}"
        return
    pg: Postgres = request.getfixturevalue("postgres")
    yield pg.create_database(f"t{os.getpid()}_{next(_db_counter)}")
    gc.collect()


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


# -- the portal's web view in a real browser (tests/ui_support.py) -----------------------------

@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """The system's Chromium under Playwright (one browser per test module)."""
    from playwright.sync_api import sync_playwright

    from tests.ui_support import chromium_path

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path())
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: object) -> Iterator[object]:
    """A fresh browser context (no cookies) at 1366×768, and a page in it."""
    from tests.ui_support import LAPTOP

    ctx = chromium.new_context(viewport=LAPTOP, ignore_https_errors=True)  # type: ignore[attr-defined]
    try:
        pg = ctx.new_page()
        pg.set_default_timeout(15_000)
        yield pg
    finally:
        ctx.close()


class UiPortal:
    """The fixed data set (tests/portal_data.py) served by the portal over HTTP."""

    def __init__(self, url: str, ctx: object, ds: object, clock: object) -> None:
        self.url = url
        self.ctx = ctx
        self.ds = ds
        self.clock = clock


@pytest.fixture(scope="module")
def ui_portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiPortal]:
    """The portal over the fixed data set (SQLite), served on a loopback port for a browser;
    its clock stands at the data set's ``NOW_NS`` until a test moves it."""
    import sqlalchemy as sa

    from tests.portal_data import Clock, as_indexed, load, make_context
    from tests.ui_support import HttpPortal

    db = tmp_path_factory.mktemp("ui") / "portal.db"
    clock = Clock()
    ctx = make_context(f"sqlite:///{db}", clock=clock)
    ds = load(ctx.engine)
    with ctx.engine.begin() as c:
        as_indexed(c)
    assert isinstance(ctx.engine, sa.Engine)
    try:
        with HttpPortal(ctx) as served:
            yield UiPortal(served.url, ctx, ds, clock)
    finally:
        ctx.engine.dispose()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Where the browser tests' screenshots of the web view are (CI keeps its log and this
    folder: ``$MRV_SCREENSHOTS``, default ``artifacts/screenshots``)."""
    from tests.ui_support import screenshot_dir

    shots = sorted(screenshot_dir().glob("*.png"))
    if shots:
        terminalreporter.write_sep("-", f"{len(shots)} screenshots of the web view in "
                                        f"{screenshot_dir()}")
        for p in shots:
            terminalreporter.write_line(f"  {p.name}")
