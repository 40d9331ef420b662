"""The web view as its users meet it, on the whole platform live: the ledger scenario on anvil,
``mrv-portal run`` (HTTPS) following it, Mosquitto, the simulated plant and a gateway process
that signs its records, publishes live telemetry, anchors and delivers (``simulator.LiveMrv``,
what ``make demo`` runs). A real Chromium signs in as each role with ``mrvctl login``'s
one-time link and is checked against what the ledger and the gateway hold."""

from __future__ import annotations

import asyncio
import sqlite3
import struct
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from simulator import Anvil, LiveMrv
from tests.ui_support import LAPTOP, shoot, sign_in

T = TypeVar("T")
GW = "plant-c-gw1"


class Live:
    """The running platform, and a loop of its own (the simulated plant serves from it)."""

    def __init__(self, stack: LiveMrv, loop: asyncio.AbstractEventLoop) -> None:
        self.stack = stack
        self.loop = loop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 300) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def url(self) -> str:
        assert self.stack.portal is not None
        return self.stack.portal.url

    @property
    def ca(self) -> str:
        assert self.stack.portal is not None and self.stack.portal.pki is not None
        return str(self.stack.portal.pki.ca_file)

    def client(self, cookies: dict[str, str] | None = None) -> httpx.Client:
        import ssl

        return httpx.Client(base_url=self.url, cookies=cookies, timeout=30,
                            verify=ssl.create_default_context(cafile=self.ca))

    def browser_in(self, chromium: Any, role: str) -> Any:
        """A browser context signed in as the scenario's ``role`` (government, auditor,
        finance, enterprise-a, enterprise-b) and a page in it."""
        ctx = chromium.new_context(viewport=LAPTOP, ignore_https_errors=True)
        page = ctx.new_page()
        page.set_default_timeout(20_000)
        sign_in(page, self.url, self.stack.key(role), ca_file=self.ca)
        return page

    def verified_batches(self, page: Any) -> list[dict[str, Any]]:
        """The live gateway's verified batches, read through the API with the page's session
        cookie (GET only: the API reads it as a bearer token)."""
        jar = {c["name"]: c["value"] for c in page.context.cookies()}
        with self.client(jar) as c:
            r = c.get("/v1/batches", params={"gateway_id": GW, "limit": 1000})
            r.raise_for_status()
            return [b for b in r.json()["items"] if b["ingest"]["state"] == "verified"]


@pytest.fixture(scope="module")
def live(anvil: Anvil, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    stack = LiveMrv(tmp_path_factory.mktemp("live"), anvil.url, batch_interval_s=2.0,
                    poll_interval_s=0.5)
    lv = Live(stack, loop)
    broker_dir: Path | None = None
    try:
        lv.run(stack.start())
        assert stack.broker is not None
        broker_dir = stack.broker.dir
        yield lv
    finally:
        try:
            lv.run(stack.stop(), timeout=120)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
            loop.close()
    assert broker_dir is not None and not broker_dir.exists()  # the stack leaves no broker dir


def _wait_verified(live: Live, page: Any, at_least: int) -> list[dict[str, Any]]:
    import time

    deadline = time.monotonic() + 90
    while True:
        got = live.verified_batches(page)
        if len(got) >= at_least:
            return got
        assert time.monotonic() < deadline, f"only {len(got)} verified batches of {GW}"
        page.wait_for_timeout(250)  # the browser's own clock: the portal is another process


def test_the_government_sees_the_overview_update_as_the_next_batch_is_verified(
        live: Live, chromium: Any) -> None:
    page = live.browser_in(chromium, "government")
    # counted before the page is rendered: a batch verified between the two would show in
    # the page and in the count, and the next one would not raise the count above it
    before = len(_wait_verified(live, page, 1))
    page.goto(f"{live.url}/ui/?lang=en")
    page.wait_for_selector("[data-live-status][data-state=on]")
    cell = f"section[data-live] tr[data-gateway='{GW}'] td[data-col=verified]"
    shown = page.locator(cell).inner_text()
    page.evaluate("() => { window.__marker = 1; }")
    # the portal verifies the gateway's next batch: the live section shows it, with no reload
    page.wait_for_function(
        """([sel, before]) => { const c = document.querySelector(sel);
                                return c !== null && c.innerText !== before; }""",
        arg=[cell, shown], timeout=60_000)
    assert page.evaluate("() => window.__marker") == 1, "the page was reloaded"
    assert int(page.locator("section[data-live]").first.get_attribute("data-live-updates")
               or 0) >= 1
    assert len(live.verified_batches(page)) > before
    shoot(page, "e2e-overview-live")
    page.context.close()


def test_a_reading_shows_every_proof_step_passing_and_a_tampered_one_fails(
        live: Live, chromium: Any) -> None:
    page = live.browser_in(chromium, "auditor")
    batch = max(_wait_verified(live, page, 2), key=lambda b: b["seq"])
    seq = int(batch["first_record_seq"])
    page.goto(f"{live.url}/ui/records/{GW}/{seq}?lang=en")
    steps = page.locator("[data-step]")
    assert steps.count() >= 4
    states = {steps.nth(i).get_attribute("data-step"): steps.nth(i).get_attribute("data-state")
              for i in range(steps.count())}
    # the live gateway signs its records: all five steps run, and all pass
    assert set(states.values()) == {"passed"} and len(states) == 5, states
    assert page.get_attribute("[data-testid=verdict]", "data-verified") == "true"
    shoot(page, "e2e-reading-verified")

    # Tamper with another reading as stored in the portal's database (what an intruder with
    # database access would do): its proof must fail in front of the user.
    other = seq + 1
    db = live.stack.work / "portal" / "portal.db"
    with sqlite3.connect(db, timeout=30) as conn:
        (bits,) = conn.execute("SELECT value_bits FROM records WHERE gateway_id=? AND seq=?",
                               (GW, other)).fetchone()
        value = struct.unpack(">d", struct.pack(">q", int(bits)))[0]
        forged = value + 100.0
        conn.execute("UPDATE records SET value=?, value_bits=? WHERE gateway_id=? AND seq=?",
                     (forged, struct.unpack(">q", struct.pack(">d", forged))[0], GW, other))
    page.goto(f"{live.url}/ui/records/{GW}/{other}?lang=en")
    leaf = page.locator("[data-step=leaf]")
    assert leaf.get_attribute("data-passed") == "false"
    assert page.get_attribute("[data-testid=verdict]", "data-verified") == "false"
    shoot(page, "e2e-reading-tampered")
    page.context.close()


def test_each_role_sees_what_the_ledger_lets_it_see(live: Live, chromium: Any) -> None:
    a = live.stack.key("enterprise-a").address.lower()
    b = live.stack.key("enterprise-b").address.lower()
    # the bank: no enterprise of the scenario granted it access
    bank = live.browser_in(chromium, "finance")
    bank.goto(f"{live.url}/ui/enterprises?lang=en")
    listed = bank.locator("main").inner_text()
    assert "Pearl River" not in listed and "Lingnan" not in listed
    r = bank.goto(f"{live.url}/ui/enterprises/{a}?lang=en")
    assert r is not None and r.status == 403
    shoot(bank, "e2e-bank-without-consent")
    bank.context.close()
    # enterprise A: its own page, not B's
    ent = live.browser_in(chromium, "enterprise-a")
    ent.goto(f"{live.url}/ui/")
    assert ent.url.endswith(f"/ui/enterprises/{a}")
    r = ent.goto(f"{live.url}/ui/enterprises/{b}")
    assert r is not None and r.status == 403
    ent.context.close()
    # government: every enterprise
    gov = live.browser_in(chromium, "government")
    gov.goto(f"{live.url}/ui/enterprises?lang=en")
    listed = gov.locator("main").inner_text()
    assert "Pearl River" in listed and "Lingnan" in listed
    gov.context.close()


def test_switching_the_language(live: Live, chromium: Any) -> None:
    page = live.browser_in(chromium, "government")
    page.goto(f"{live.url}/ui/?lang=en")
    assert page.get_attribute("html", "lang") == "en"
    with page.expect_navigation():
        page.click("ul.langs a[hreflang=zh-Hans]")
    assert page.get_attribute("html", "lang") == "zh-Hans"
    assert "总览" in page.locator("header nav").inner_text()
    # the choice sticks: the next page is Chinese too
    page.goto(f"{live.url}/ui/verification")
    assert page.get_attribute("html", "lang") == "zh-Hans"
    shoot(page, "e2e-verification-zh")
    page.context.close()


def test_live_telemetry_shows_signed_readings_verified(live: Live, chromium: Any) -> None:
    page = live.browser_in(chromium, "government")
    page.goto(f"{live.url}/ui/telemetry?lang=en")
    gw = f"article[data-gateway='{GW}']"
    page.wait_for_function(
        f"() => document.querySelectorAll(\"{gw} tr[data-status=verified]\").length >= 3",
        timeout=60_000)
    # the gateway signs every record: nothing it sent is unsigned or fails its signature
    assert page.locator(f"{gw} tr[data-status=unverified]").count() == 0
    assert page.locator(f"{gw} tr[data-status=unsigned]").count() == 0
    shoot(page, "e2e-telemetry")
    page.context.close()
