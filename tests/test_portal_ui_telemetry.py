"""The live telemetry page (``/ui/telemetry``) in a real browser, over a portal whose telemetry
worker subscribes to a real Mosquitto: gateway telemetry published there (built by the
gateway's own ``control.telemetry_json``, signed as its outbox signs records) shows up on the
open page without a reload, each reading said to be verified, NOT verified or unsigned."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.publish as mqtt_publish
import pytest
import sqlalchemy as sa

from control import telemetry_json
from ledger_client._format import record_leaf, record_signing_bytes
from mrv_core import Reading
from portal._config import TelemetrySection, UiSection
from portal._telemetry import telemetry_worker
from simulator import Mosquitto
from tests.portal_data import NOW_NS, Clock, as_indexed, load, make_context
from tests.ui_support import (
    AXE,
    LAPTOP,
    TABLET,
    HttpPortal,
    horizontal_overflow,
    shoot,
    sign_in,
)

GREEN, RED = "rgb(26, 107, 50)", "rgb(179, 38, 30)"  # app.css --ok, --bad


class TelemetryPortal:
    def __init__(self, url: str, ctx: Any, ds: Any, broker: Mosquitto) -> None:
        self.url, self.ctx, self.ds, self.broker = url, ctx, ds, broker

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        mqtt_publish.single(topic, payload, qos=1, retain=retain, hostname="127.0.0.1",
                            port=self.broker.port)

    def telemetry(self, name: str, first_seq: int, n: int, *, sign: bool = True,
                  point: str = "stack.so2", tamper: int | None = None) -> None:
        """Gateway ``name``'s telemetry of ``n`` readings one second apart from NOW."""
        gw = self.ds.gws[name]
        rs = [Reading(point_id=point, ts_ns=NOW_NS + (first_seq + i) * 10**9,
                      value=30.0 + first_seq + i, unit="mg/m3", source="modbus:cems",
                      quality=0, seq=first_seq + i, gateway_id=gw.gateway_id) for i in range(n)]
        sigs = [gw.signer.sign(record_signing_bytes(record_leaf(r))) for r in rs] if sign \
            else None
        msg = telemetry_json(gw.gateway_id, rs, sigs)
        if tamper is not None:
            doc = json.loads(msg)
            doc["readings"][tamper]["value"] = 999.0
            msg = json.dumps(doc).encode()
        self.publish(f"mrv/{gw.gateway_id}/telemetry", msg)

    def stored(self, gw: str) -> int:
        from portal._ui_tables import telemetry_live

        with self.ctx.engine.connect() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(telemetry_live)
                                 .where(telemetry_live.c.gateway_id == gw)).scalar_one())


def assert_accessible(page: Any) -> None:
    """axe-core's serious and critical WCAG 2 A/AA violations: none. (``ui_support``'s
    helper adds axe as an inline script, which the portal's CSP blocks; evaluated through the
    DevTools protocol instead, axe runs under the page's real CSP.)"""
    page.evaluate(AXE.read_text() + "\n;0")
    found = page.evaluate("""async () => {
        const r = await axe.run(document, {runOnly: {type: 'tag',
            values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}});
        return r.violations.filter(v => ['serious', 'critical'].includes(v.impact))
            .map(v => ({id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))}));
    }""")
    assert not found, "accessibility violations:\n" + json.dumps(found, indent=1,
                                                                 ensure_ascii=False)


def wait_for(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def tl_portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TelemetryPortal]:
    """The fixed data set (its gateways registered) served with the telemetry worker running
    against a real broker, ``ui.telemetry`` configured."""
    with Mosquitto() as broker:
        db = tmp_path_factory.mktemp("ui-telemetry") / "portal.db"
        ctx = make_context(f"sqlite:///{db}", clock=Clock())
        ctx.config = ctx.config.model_copy(update={"ui": UiSection(
            live_poll_s=0.2, telemetry=TelemetrySection(broker=f"127.0.0.1:{broker.port}",
                                                        keep_per_gateway=50))})
        ds = load(ctx.engine)
        with ctx.engine.begin() as c:
            as_indexed(c)
        try:
            with HttpPortal(ctx, workers=[telemetry_worker]) as served:
                wait_for(lambda: ctx.metrics.component("portal:telemetry").state == "ok")
                yield TelemetryPortal(served.url, ctx, ds, broker)
        finally:
            ctx.engine.dispose()


def _count(page: Any, gw: str, which: str) -> str:
    return str(page.inner_text(f'[data-gateway="{gw}"] [data-testid=count-{which}]'))


def test_the_page_shows_live_readings_and_their_signature_status(tl_portal: TelemetryPortal,
                                                                  page: Any) -> None:
    gw = "plant-a-gw1"
    sign_in(page, tl_portal.url, tl_portal.ds.government)
    tl_portal.telemetry("a", 1, 3)
    wait_for(lambda: tl_portal.stored(gw) == 3)
    page.goto(f"{tl_portal.url}/ui/telemetry")
    assert page.inner_text("h1") == "Live telemetry"
    art = f'[data-gateway="{gw}"]'
    assert "Pearl River Power" in page.inner_text(art)
    assert (_count(page, gw, "verified"), _count(page, gw, "unverified"),
            _count(page, gw, "unsigned")) == ("3", "0", "0")
    newest = page.locator(f'{art} table.tl-latest tbody tr').first
    assert newest.get_attribute("data-seq") == "3"
    cells = newest.locator("td").all_inner_texts()
    assert cells[0] == "stack.so2" and cells[2] == "33.00\u00a0mg/m³" and cells[3] == "good"
    assert "signed and verified" in cells[4]
    ok = newest.locator(".tl-status")
    assert ok.evaluate("e => getComputedStyle(e).color") == GREEN
    # the stream's first event (the version the page was rendered at) has arrived
    page.wait_for_selector("#tl-live[data-live-version]")
    page.evaluate("() => { window.__marker = 42; }")

    # live: a tampered reading, unsigned readings, an alarm, no reload
    tl_portal.telemetry("a", 4, 2, tamper=0)
    tl_portal.telemetry("a", 6, 2, sign=False, point="stack.nox")
    page.wait_for_function(
        f"() => document.querySelector('{art} [data-testid=count-unsigned]')"
        "?.textContent.trim() === '2'")
    assert (_count(page, gw, "verified"), _count(page, gw, "unverified")) == ("4", "1")
    bad = page.locator(f'{art} table.tl-latest tr[data-seq="4"]')
    assert "signed, NOT verified" in bad.inner_text() and "999.00" in bad.inner_text()
    assert bad.locator(".tl-status").evaluate("e => getComputedStyle(e).color") == RED
    assert "unsigned" in page.locator(f'{art} table.tl-latest tr[data-seq="7"]').inner_text()
    assert "signed and verified" in page.locator(
        f'{art} table.tl-latest tr[data-seq="5"]').inner_text()
    tl_portal.publish(f"mrv/{gw}/alarm", json.dumps({
        "gateway": gw, "rule": "leak", "state": "raised", "point": "plc.methane",
        "value": 2.5, "unit": "%LEL", "level": "critical",
        "ts_ms": NOW_NS // 10**6 + 5000}).encode(), retain=True)
    page.wait_for_selector(f"{art} table.tl-alarms")
    assert "leak" in page.inner_text(f"{art} table.tl-alarms")
    assert "critical" in page.inner_text(f"{art} table.tl-alarms")
    assert page.evaluate("() => window.__marker") == 42  # no reload happened
    # a chart per point, with its data table
    charts = page.locator(f"{art} .tl-charts figure")
    assert charts.count() == 2
    assert sorted(charts.locator("figcaption").all_inner_texts()) == [
        "stack.nox (mg/m³)", "stack.so2 (mg/m³)"]
    page.wait_for_selector(f"{art} .tl-charts .chart canvas")
    so2 = json.loads(page.locator(
        f"{art} .tl-charts figure:has-text('stack.so2') script").text_content() or "")
    assert so2["x"] == [(NOW_NS + s * 10**9) / 1e9 for s in range(1, 6)]
    # the changed value is charted apart from the verified ones
    assert [(s["label"], s["values"]) for s in so2["series"]] == [
        ("signed and verified", [31.0, 32.0, 33.0, None, 35.0]),
        ("NOT verified or unsigned", [None, None, None, 999.0, None])]
    assert_accessible(page)
    assert horizontal_overflow(page) == 0
    shoot(page, "telemetry")
    page.set_viewport_size(TABLET)  # a tablet loads the page at its own width
    page.reload()
    page.wait_for_selector(f"{art} .tl-charts .chart canvas")
    assert horizontal_overflow(page) == 0
    assert_accessible(page)
    page.set_viewport_size(LAPTOP)


def test_a_gateway_filter_shows_that_gateway_alone(tl_portal: TelemetryPortal,
                                                   page: Any) -> None:
    tl_portal.telemetry("b", 1, 2)
    tl_portal.telemetry("c", 1, 1, sign=False)
    wait_for(lambda: tl_portal.stored("plant-b-gw1") == 2 and tl_portal.stored("plant-c-gw1") == 1)
    sign_in(page, tl_portal.url, tl_portal.ds.auditor)
    page.goto(f"{tl_portal.url}/ui/telemetry")
    page.select_option("#tl-gateway", "plant-c-gw1")
    with page.expect_navigation():
        page.click("form.filters button")
    shown = page.locator("article.tl-gateway").evaluate_all(
        "els => els.map(e => e.dataset.gateway)")
    assert shown == ["plant-c-gw1"]
    assert _count(page, "plant-c-gw1", "unsigned") == "1"
    assert "Bay Cement" in page.inner_text("article.tl-gateway")


@pytest.mark.parametrize("who", ["finance", "a"])
def test_the_bank_and_an_enterprise_get_403(tl_portal: TelemetryPortal, page: Any,
                                            who: str) -> None:
    sign_in(page, tl_portal.url, getattr(tl_portal.ds, who))
    for path in ("/ui/telemetry", "/ui/fragments/telemetry", "/ui/events/telemetry"):
        resp = page.request.get(f"{tl_portal.url}{path}")
        assert resp.status == 403, path
    resp = page.goto(f"{tl_portal.url}/ui/telemetry")
    assert resp is not None and resp.status == 403
    assert "Live telemetry" not in page.inner_text("main h1")
    assert page.locator("nav a[href='/ui/telemetry']").count() == 0


def test_the_page_in_chinese(tl_portal: TelemetryPortal, page: Any) -> None:
    tl_portal.telemetry("d", 1, 2)
    tl_portal.telemetry("d", 3, 1, tamper=0)
    wait_for(lambda: tl_portal.stored("plant-d-gw1") == 3)
    sign_in(page, tl_portal.url, tl_portal.ds.government)
    page.goto(f"{tl_portal.url}/ui/telemetry?lang=zh&gateway=plant-d-gw1")
    assert page.inner_text("h1") == "实时遥测"
    art = '[data-gateway="plant-d-gw1"]'
    rows = page.locator(f"{art} table.tl-latest tbody tr")
    assert rows.count() == 3
    assert "已签名但核验未通过" in rows.nth(0).inner_text()
    assert "已签名且核验通过" in rows.nth(1).inner_text()
    # the time in Chinese conventions, in the portal's zone (UTC+8): 2025年3月1日 08:00:03
    assert "2025年3月1日 08:00:03" in rows.nth(0).locator("td").nth(1).inner_text()
    assert (_count(page, "plant-d-gw1", "verified"),
            _count(page, "plant-d-gw1", "unverified")) == ("2", "1")
    page.wait_for_selector("#tl-live-status[data-state=on]")
    assert page.inner_text("#tl-live-status") == "实时：读数到达即更新"  # noqa: RUF001
    assert_accessible(page)
    assert horizontal_overflow(page) == 0
    shoot(page, "telemetry-zh")
    page.set_viewport_size(TABLET)
    page.reload()
    page.wait_for_selector(f"{art} .tl-charts .chart canvas")
    assert horizontal_overflow(page) == 0
    assert_accessible(page)


def test_a_portal_without_telemetry_says_so(ui_portal: Any, page: Any) -> None:
    assert ui_portal.ctx.config.ui.telemetry is None
    sign_in(page, ui_portal.url, ui_portal.ds.auditor)
    page.goto(f"{ui_portal.url}/ui/telemetry")
    assert "not configured" in page.inner_text("[data-testid=not-configured]")
    assert page.inner_text("[data-testid=tl-none]") == "No live readings have arrived yet."
