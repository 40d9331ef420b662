"""The web view's enterprises pages in a real browser over the fixed data set
(tests/portal_data.py): the list each role sees, an enterprise's carbon account as a step table,
its gateways, batches, meter charts and green index, the refusals (with their access-log rows)
and the Chinese page."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from ledger_client import PortalRefused, portal_login_link
from mrv_core import INVALID
from portal._api_tables import access_log
from tests.portal_data import NOW_NS, addr, ns
from tests.ui_support import AXE, LAPTOP, TABLET, horizontal_overflow, shoot, sign_in

END_OF_2024 = ns(2025, 1, 1)


def rows(page: Any, table: str = "enterprises") -> list[str]:
    return [r.get_attribute("data-account") or r.get_attribute("data-batch") or ""
            for r in page.locator(f"table[data-testid={table}] tbody tr").all()]


def cell(page: Any, account: str, col: str) -> str:
    return str(page.inner_text(f"tr[data-account='{account}'] td[data-col={col}]")).strip()


def step(page: Any, key: str, col: str = "amount") -> str:
    return str(page.inner_text(f"table[data-testid=account] tr[data-step={key}] td.{col}")
               ).replace("\u00a0", " ").strip()


def fits(page: Any) -> None:
    """No horizontal scrolling of the page at a laptop's and a tablet's size (each loaded at
    that size, as a device does: the charts take the width they find)."""
    for size in (TABLET, LAPTOP):
        page.set_viewport_size(size)
        page.reload()
        page.wait_for_load_state("load")
        assert horizontal_overflow(page) == 0, f"the page is wider than {size}"


def assert_accessible(page: Any) -> None:
    """``tests.ui_support.assert_accessible``, with axe-core evaluated through the browser's
    devtools protocol: the pages' CSP (script-src 'self') refuses the inline script tag that
    ``page.add_script_tag`` adds, and the CSP is what these tests must keep on."""
    page.evaluate(AXE.read_text() + "\n;0")
    found = page.evaluate("""async () => {
        const r = await axe.run(document, {runOnly: {type: 'tag',
            values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}});
        return r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
            .map(v => ({id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))}));
    }""")
    assert not found, "accessibility violations:\n" + json.dumps(found, indent=1,
                                                                 ensure_ascii=False)


def log_rows(ui_portal: Any, viewer: str, enterprise: str) -> list[Any]:
    with ui_portal.ctx.engine.connect() as c:
        return list(c.execute(sa.select(access_log).where(
            access_log.c.viewer == viewer, access_log.c.enterprise == enterprise)
            .order_by(access_log.c.id)))


# -- the list ----------------------------------------------------------------------------------

def test_the_government_sees_every_enterprise_with_this_periods_figures(
        ui_portal: Any, page: Any) -> None:
    ds = ui_portal.ds
    A, B, C, D = (addr(x) for x in (ds.a, ds.b, ds.c, ds.d))
    sign_in(page, ui_portal.url, ds.government)
    page.goto(f"{ui_portal.url}/ui/enterprises?lang=en")
    assert page.inner_text("h1") == "Enterprises"
    # by name: Bay Cement, Foshan Thermal, Lingnan Cement, Pearl River Power
    assert rows(page) == [C, D, B, A]
    # the clock stands in 2025: period 2, where A reported 50 + 5 t (one batch) and holds
    # its 700 t allocation; the others have no figures in period 2
    assert cell(page, A, "emissions") == "55.0\u00a0t CO₂e"
    assert cell(page, A, "balance") == "700.0\u00a0t CO₂e"
    assert cell(page, A, "compliance").startswith("open")
    assert cell(page, B, "emissions") == "0.0\u00a0t CO₂e"
    assert "suspended" in page.inner_text(f"tr[data-account='{D}']")
    assert "91440300A00000000A" in page.inner_text(f"tr[data-account='{A}']")
    assert_accessible(page)
    fits(page)
    shoot(page, "enterprises")
    # the GET form: cement in period 1
    page.select_option("#f-industry", "C3011")
    page.select_option("#f-period", "1")
    with page.expect_navigation():
        page.click("form.filters button[type=submit]")
    assert "industry=C3011" in page.url and "period=1" in page.url
    assert rows(page) == [C, B]
    # B: verified 280 t corrected to 380 t by the finding, + 50 t penalty, 350 t surrendered
    assert cell(page, B, "compliance") == "non-compliant"
    assert cell(page, B, "emissions") == "280.0\u00a0t CO₂e"
    assert cell(page, B, "balance") == "40.0\u00a0t CO₂e"
    assert cell(page, C, "compliance") == "unverified"
    page.select_option("#f-region", "440600")
    with page.expect_navigation():
        page.click("form.filters button[type=submit]")
    assert rows(page) == [B]
    # each name links to the enterprise's page
    with page.expect_navigation():
        page.click(f"tr[data-account='{B}'] th a")
    assert page.url.endswith(f"/ui/enterprises/{B}?period=1")
    assert page.inner_text("h1").startswith("Lingnan Cement")


def test_an_enterprise_sees_only_itself(ui_portal: Any, page: Any) -> None:
    ds = ui_portal.ds
    A, B = addr(ds.a), addr(ds.b)
    sign_in(page, ui_portal.url, ds.a)
    page.goto(f"{ui_portal.url}/ui/enterprises?lang=en")
    assert rows(page) == [A]
    resp = page.goto(f"{ui_portal.url}/ui/enterprises/{B}?lang=en")
    assert resp is not None and resp.status == 403
    assert "only as published aggregates" in page.inner_text("[data-testid=problem-detail]")
    resp = page.goto(f"{ui_portal.url}/ui/enterprises/{A}?lang=en")
    assert resp is not None and resp.status == 200
    assert page.inner_text("h1").startswith("Pearl River Power")


def test_the_bank_sees_only_the_enterprise_that_granted_it_access(
        ui_portal: Any, page: Any) -> None:
    ds = ui_portal.ds
    A, B, C, D = (addr(x) for x in (ds.a, ds.b, ds.c, ds.d))
    fin = addr(ds.finance)
    sign_in(page, ui_portal.url, ds.finance)
    page.goto(f"{ui_portal.url}/ui/enterprises?lang=en")
    assert rows(page) == [A]
    assert cell(page, A, "balance") == "700.0\u00a0t CO₂e"
    before = len(log_rows(ui_portal, fin, A))
    resp = page.goto(f"{ui_portal.url}/ui/enterprises/{A}?period=1&lang=en")
    assert resp is not None and resp.status == 200
    assert step(page, "allocated") == "+800.0 t CO₂e"
    # every read of A's data by the bank is in the access log, as through the API
    # (the page's own reads, its live section's stream opened by the browser, and the
    # section's first refresh when the stream says where the data stands)
    got = log_rows(ui_portal, fin, A)[before:]
    assert all(r.status == 200 and "granted access until" in r.reason for r in got)
    assert {r.path for r in got} <= {f"/ui/enterprises/{A}?period=1&lang=en",
                                     f"/ui/events/enterprises/{A}",
                                     f"/ui/fragments/enterprises/{A}/gateways"}
    assert f"/ui/enterprises/{A}?period=1&lang=en" in {r.path for r in got}
    # B revoked, C's grant expired an hour ago, D never granted: 403 pages with the reason,
    # and a refusal row each in the access log
    for ent, reason in ((B, "has revoked"), (C, "expired at"), (D, "has not granted")):
        resp = page.goto(f"{ui_portal.url}/ui/enterprises/{ent}?lang=en")
        assert resp is not None and resp.status == 403, ent
        assert reason in page.inner_text("[data-testid=problem-detail]")
        last = log_rows(ui_portal, fin, ent)[-1]
        assert (last.status, last.path) == (403, f"/ui/enterprises/{ent}?lang=en")
        assert reason in last.reason
    # in the bank's language
    resp = page.goto(f"{ui_portal.url}/ui/enterprises/{B}?lang=zh")
    assert resp is not None and resp.status == 403
    assert page.inner_text("h1") == "错误 403"
    assert "您无权查看此页面。" in page.inner_text("main")
    assert_accessible(page)
    shoot(page, "enterprise-bank-denied")


def test_a_bank_without_grants_is_told_how_enterprises_grant_access(
        ui_portal: Any, page: Any) -> None:
    sign_in(page, ui_portal.url, ui_portal.ds.finance2)
    page.goto(f"{ui_portal.url}/ui/enterprises?lang=en")
    assert rows(page) == []
    assert "mrvctl grant-access" in page.inner_text("[data-testid=no-grants]")
    page.goto(f"{ui_portal.url}/ui/enterprises?lang=zh")
    assert "授权" in page.inner_text("[data-testid=no-grants]")


def test_the_stranger_cannot_sign_in_at_all(ui_portal: Any, page: Any) -> None:
    with pytest.raises(PortalRefused, match=r"403: .*holds no role"):
        portal_login_link(ui_portal.url, ui_portal.ds.stranger)
    page.goto(f"{ui_portal.url}/ui/enterprises/{addr(ui_portal.ds.a)}")
    assert "/ui/login?next=" in page.url


# -- one enterprise ---------------------------------------------------------------------------

def test_the_carbon_account_steps_gateways_batches_meters_and_green_index_of_A(
        ui_portal: Any, page: Any) -> None:
    ds = ui_portal.ds
    A = addr(ds.a)
    sign_in(page, ui_portal.url, ds.government)
    page.goto(f"{ui_portal.url}/ui/enterprises/{A}?period=1&lang=en")
    assert page.inner_text("h1").startswith("Pearl River Power")
    # period 1: allocated 800 t; reported 540 + 60 t in 3 batches; the report verified
    # 600 t; the one finding about A was rejected; sold 60 + 40 t to B; surrendered 600 t;
    # the ledger's balance 100 t = 800 - 100 - 600; settled compliant
    assert step(page, "allocated") == "+800.0 t CO₂e"
    assert step(page, "reported") == "600.0 t CO₂e"
    assert "3 batches" in step(page, "reported", "note")
    assert step(page, "verified") == "600.0 t CO₂e"
    assert step(page, "corrected") == "–"
    assert step(page, "penalty") == "0.0 t CO₂e"
    assert step(page, "obligation") == "600.0 t CO₂e"
    assert step(page, "traded_in") == "+0.0 t CO₂e"
    assert step(page, "traded_out") == "\u2212100.0 t CO₂e"
    assert step(page, "traded_out", "running") == "700.0 t CO₂e"
    assert step(page, "surrendered") == "\u2212600.0 t CO₂e"
    assert step(page, "balance") == "100.0 t CO₂e"
    assert step(page, "balance", "running") == "100.0 t CO₂e"
    assert "differs" not in step(page, "balance", "note")
    assert "compliant" in page.inner_text("[data-testid=compliance]")
    assert "settled" in page.inner_text("[data-testid=compliance]")
    # its gateway: active, 4 batches anchored (the last in block 104: blocks count from 101
    # over A's batches first), all verified, nothing quarantined
    gw = ds.gws["a"]
    row = page.locator(f"tr[data-gateway='{gw.gateway_id}']")
    assert "active" in row.inner_text()
    assert "batch 4, block 104" in row.locator("td[data-col=anchored]").inner_text()
    assert row.locator("td[data-col=quarantined]").inner_text().strip() == "0"
    assert row.locator("td[data-col=verified]").inner_text().strip() != "never"
    # batches: each with its verification state, linking to the batch's page
    assert rows(page, "batches") == [f"{gw.gateway_id}/{i}" for i in (1, 2, 3, 4)]
    assert page.locator("table[data-testid=batches] td[data-col=state]").all_inner_texts() \
        == ["verified"] * 4
    assert page.get_attribute(f"tr[data-batch='{gw.gateway_id}/2'] a", "href") \
        == f"/ui/batches/{gw.gateway_id}/2"
    # the meter chart: A's readings of period 1, drawn by uPlot, with its data table
    in_p1 = [r for r in gw.records if r.ts_ns < END_OF_2024]
    flagged = sum(1 for r in in_p1 if r.quality & INVALID)
    assert (len(in_p1), flagged) == (16, 2)
    meters = page.locator("div.meter")
    assert meters.count() == 1
    assert meters.first.get_attribute("data-point") == f"{gw.gateway_id}/stack.co2"
    page.wait_for_selector("div.meter .chart canvas")
    assert meters.first.locator("table[data-testid=meter-data] tbody tr").count() == len(in_p1)
    assert meters.first.locator("table[data-testid=meter-data] tbody tr .bad").count() == flagged
    assert f"{len(in_p1)} readings shown, {flagged} flagged, 1 without a value" in \
        page.inner_text("[data-testid=meter-summary]")
    assert "mg/m³" in meters.first.locator("h3").inner_text()
    # the green index: trend neutral 50 x 25 %, intensity 100 x (1.5 - 600/800) = 75 x 30 %,
    # quality 100 x 15/16 x (1 - 2/16) = 82.03 x 20 %, findings 100 x 15 %, compliance
    # 100 x 10 %: 12.5 + 22.5 + 16.41 + 15 + 10 = 76.4
    assert "Score 76.4 of 100" in page.inner_text("[data-testid=green-score]")
    pts = page.locator("table[data-testid=green] tbody td.points").all_inner_texts()
    assert pts == ["12.50", "22.50", "16.41", "15.00", "10.00"]
    assert "capture_rate" in page.inner_text("tr[data-component=data_quality]")
    assert page.get_attribute("a[href='/ui/rankings#method']", "href") == "/ui/rankings#method"
    assert_accessible(page)
    page.set_viewport_size(TABLET)
    page.reload()
    page.wait_for_selector("div.meter .chart canvas")
    shoot(page, "enterprise-tablet")
    fits(page)
    page.wait_for_selector("div.meter .chart canvas")
    shoot(page, "enterprise")


def test_Bs_account_shows_the_finding_and_the_penalty(ui_portal: Any, page: Any) -> None:
    ds = ui_portal.ds
    B = addr(ds.b)
    sign_in(page, ui_portal.url, ds.auditor)
    page.goto(f"{ui_portal.url}/ui/enterprises/{B}?period=1&lang=en")
    # the report verified 280 t; the confirmed finding corrected it to 380 t with a 50 t
    # penalty: 430 t to surrender; 300 t allocated + 100 t bought - 350 t surrendered = 50 t,
    # while the ledger holds 40 t (the page says so)
    assert step(page, "allocated") == "+300.0 t CO₂e"
    assert step(page, "verified") == "280.0 t CO₂e"
    assert step(page, "corrected") == "380.0 t CO₂e"
    assert step(page, "penalty") == "50.0 t CO₂e"
    assert step(page, "obligation") == "430.0 t CO₂e"
    assert step(page, "traded_in") == "+100.0 t CO₂e"
    assert step(page, "surrendered") == "\u2212350.0 t CO₂e"
    assert step(page, "surrendered", "running") == "50.0 t CO₂e"
    assert step(page, "balance") == "40.0 t CO₂e"
    assert "differs from the steps above by -10.0" in step(page, "balance", "note")
    assert "non-compliant" in page.inner_text("[data-testid=compliance]")
    # one refused submission of B's gateway in the quarantine
    assert page.inner_text("tr[data-gateway='plant-b-gw1'] td[data-col=quarantined]").strip() \
        == "1"
    # B's meter: 8 readings, the comm fault and the spike flagged (MANUAL is not invalid)
    assert page.locator("div.meter table[data-testid=meter-data] tbody tr").count() == 8
    assert "8 readings shown, 2 flagged, 1 without a value" in \
        page.inner_text("[data-testid=meter-summary]")


def test_the_default_period_is_the_one_holding_the_clock(ui_portal: Any, page: Any) -> None:
    ds = ui_portal.ds
    A = addr(ds.a)
    sign_in(page, ui_portal.url, ds.government)
    page.goto(f"{ui_portal.url}/ui/enterprises/{A}?lang=en")
    assert page.locator("#f-period option[selected]").get_attribute("value") == "2"
    assert step(page, "allocated") == "+700.0 t CO₂e"
    # one batch of 6 readings in 2025
    assert page.locator("div.meter table[data-testid=meter-data] tbody tr").count() == 6
    # in mid-2024 the default is period 1
    ui_portal.clock.now = ns(2024, 7, 1)
    try:
        page.goto(f"{ui_portal.url}/ui/enterprises/{A}?lang=en")
        assert page.locator("#f-period option[selected]").get_attribute("value") == "1"
        assert step(page, "allocated") == "+800.0 t CO₂e"
    finally:
        ui_portal.clock.now = NOW_NS


def test_an_unknown_enterprise_or_period_is_404(ui_portal: Any, page: Any) -> None:
    sign_in(page, ui_portal.url, ui_portal.ds.government)
    resp = page.goto(f"{ui_portal.url}/ui/enterprises/0x{'ab' * 20}?lang=en")
    assert resp is not None and resp.status == 404
    resp = page.goto(f"{ui_portal.url}/ui/enterprises/{addr(ui_portal.ds.a)}?period=9&lang=en")
    assert resp is not None and resp.status == 404
    assert "no period 9" in page.inner_text("[data-testid=problem-detail]")


def test_the_enterprise_page_in_chinese(ui_portal: Any, page: Any) -> None:
    ds = ui_portal.ds
    A = addr(ds.a)
    sign_in(page, ui_portal.url, ds.a)
    page.goto(f"{ui_portal.url}/ui/enterprises/{A}?period=1&lang=zh")
    assert page.get_attribute("html", "lang") == "zh-Hans"
    assert page.inner_text("#account-h") == "碳账户"
    assert page.inner_text("#gw-h") == "网关"
    assert step(page, "allocated") == "+800.0 吨 CO₂e"
    assert "已履约" in page.inner_text("[data-testid=compliance]")
    # dates as Chinese writes them: 2024年3月1日 (the first batch's readings, Shanghai time)
    first = page.inner_text(f"tr[data-batch='{ds.gws['a'].gateway_id}/1'] time")
    assert first.startswith("2024年3月1日"), first
    assert "得分 76.4" in page.inner_text("[data-testid=green-score]")
    page.wait_for_selector("div.meter .chart canvas")
    assert_accessible(page)
    fits(page)
    shoot(page, "enterprise-zh")


def _live_row(gw: str, seq: int, ts_ns: int, value: float, *, verified: bool,
              at: int) -> dict[str, Any]:
    """A ``telemetry_live`` row of stack.co2, as the telemetry worker writes one."""
    return {"gateway_id": gw, "seq": seq, "point": "stack.co2", "ts_ns": ts_ns, "value": value,
            "unit": "mg/m3", "quality": 0, "signed": True, "verified": verified,
            "received_ns": at}


def _alarm_row(gw: str, rule: str, point: str, *, state: str, level: str, value: float,
               unit: str, at: int) -> dict[str, Any]:
    """A ``gateway_alarms`` row, as the telemetry worker writes one."""
    return {"gateway_id": gw, "rule": rule, "point": point, "state": state, "level": level,
            "value": value, "unit": unit, "ts_ms": at // 10**6, "received_ns": at}


def _forget_live(engine: Any, gw: str) -> None:
    """Take the live rows away again (the portal is shared by this module's tests)."""
    from portal._ui_tables import gateway_alarms, telemetry_live

    with engine.begin() as c:
        c.execute(sa.delete(telemetry_live).where(telemetry_live.c.gateway_id == gw))
        c.execute(sa.delete(gateway_alarms).where(gateway_alarms.c.gateway_id == gw))


def test_the_gateways_live_reading_and_raised_alarms_arrive_live(
        ui_portal: Any, page: Any) -> None:
    """Rows the telemetry worker writes for A's gateway while its page is open show in the
    gateway's health row without a reload (and are taken away again: the portal is shared by
    this module's tests)."""
    from portal._ui_tables import gateway_alarms, telemetry_live

    ds = ui_portal.ds
    gw = ds.gws["a"].gateway_id
    at = ns(2025, 2, 28, 12)
    sign_in(page, ui_portal.url, ds.government)
    page.goto(f"{ui_portal.url}/ui/enterprises/{addr(ds.a)}?lang=en")
    row = f"#gateways-live tr[data-gateway='{gw}']"
    assert page.inner_text(f"{row} td[data-col=live]").strip() == "–"
    page.wait_for_selector("#gw-live[data-state=on]")
    page.wait_for_selector("#gateways-live[data-live-version]", state="attached")
    try:
        with ui_portal.ctx.engine.begin() as c:
            c.execute(sa.insert(telemetry_live), [
                _live_row(gw, 40, at - 60 * 10**9, 405.0, verified=True, at=at),
                _live_row(gw, 41, at, 1234.5, verified=False, at=at)])
            c.execute(sa.insert(gateway_alarms), [
                _alarm_row(gw, "co2-high", "stack.co2", state="raised", level="critical",
                           value=1234.5, unit="mg/m3", at=at),
                _alarm_row(gw, "flow-low", "stack.flow", state="cleared", level="warning",
                           value=3.0, unit="m3/h", at=at)])
        page.wait_for_selector("#gateways-live[data-live-updates]", state="attached")
        live = page.inner_text(f"{row} td[data-col=live]")
        assert "stack.co2 = 1,234.5\u00a0mg/m³" in live  # the newest row
        assert "signature not verified" in live
        alarms = page.locator(f"{row} td[data-col=alarms] li").all_inner_texts()
        assert alarms == ["co2-high · stack.co2 (critical): 1,234.5\u00a0mg/m³"]  # not cleared
        # and as the page is rendered afresh
        page.reload()
        assert "1,234.5" in page.inner_text(f"{row} td[data-col=live]")
    finally:
        _forget_live(ui_portal.ctx.engine, gw)


def test_the_gateways_fragment_never_shows_half_of_a_telemetry_write(
        ui_portal: Any, page: Any) -> None:
    """A reading and the alarm it raised are written in one transaction. A fragment whose
    reads straddle that commit (here: the commit lands between its reading and alarm look-ups)
    shows both or neither, never the alarm without its reading; the next fetch shows both."""
    from portal._ui_tables import gateway_alarms, telemetry_live

    ds = ui_portal.ds
    gw = ds.gws["a"].gateway_id
    at = ns(2025, 2, 28, 12)
    engine = ui_portal.ctx.engine
    fired: list[bool] = []

    def write_now() -> None:
        with engine.begin() as c:
            c.execute(sa.insert(telemetry_live),
                      [_live_row(gw, 50, at, 1234.5, verified=True, at=at)])
            c.execute(sa.insert(gateway_alarms), [
                _alarm_row(gw, "co2-high", "stack.co2", state="raised", level="critical",
                           value=1234.5, unit="mg/m3", at=at)])

    def between(_conn: Any, _cur: Any, statement: str, *_: Any) -> None:
        # the fragment's alarm look-up, after its reading look-up: the telemetry commits now
        if not fired and "ORDER BY gateway_alarms.rule" in statement:
            fired.append(True)
            write_now()

    sign_in(page, ui_portal.url, ds.government)
    page.goto("about:blank")  # no page's event stream reads while the hook is in place
    url = f"{ui_portal.url}/ui/fragments/enterprises/{addr(ds.a)}/gateways?lang=en"
    sa.event.listen(engine, "before_cursor_execute", between)
    try:
        first = page.request.get(url)
        assert fired, "the fragment did not look up the alarms"
        assert first.status == 200
        html = first.text()
        assert ("stack.co2 = 1,234.5" in html) == ("co2-high" in html), html
        second = page.request.get(url).text()
        assert "stack.co2 = 1,234.5" in second and "co2-high" in second, second
    finally:
        sa.event.remove(engine, "before_cursor_execute", between)
        _forget_live(engine, gw)


def test_the_live_routes_refuse_whom_the_page_refuses(ui_portal: Any, page: Any) -> None:
    ds = ui_portal.ds
    sign_in(page, ui_portal.url, ds.finance)
    B = addr(ds.b)
    for path in (f"/ui/fragments/enterprises/{B}/gateways", f"/ui/events/enterprises/{B}"):
        resp = page.request.get(f"{ui_portal.url}{path}?lang=en")
        assert resp.status == 403, path
        assert "has revoked" in resp.text()
    resp = page.request.get(f"{ui_portal.url}/ui/fragments/enterprises/{addr(ds.a)}/gateways")
    assert resp.status == 200 and ds.gws["a"].gateway_id in resp.text()


def test_batches_are_paged(ui_portal: Any, page: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from portal import _ui_enterprises

    monkeypatch.setattr(_ui_enterprises, "BATCH_PAGE", 3)  # the portal runs in this process
    ds = ui_portal.ds
    gw = ds.gws["a"].gateway_id
    sign_in(page, ui_portal.url, ds.government)
    page.goto(f"{ui_portal.url}/ui/enterprises/{addr(ds.a)}?lang=en")
    assert rows(page, "batches") == [f"{gw}/{i}" for i in (1, 2, 3)]
    with page.expect_navigation():
        page.click("section[aria-labelledby=batches-h] a[rel=next]")
    assert "offset=3" in page.url
    assert rows(page, "batches") == [f"{gw}/4"]
    assert page.locator("section[aria-labelledby=batches-h] a[rel=next]").count() == 0
    assert page.locator("section[aria-labelledby=batches-h] a[rel=prev]").count() == 1


# -- the pure parts ----------------------------------------------------------------------------

def test_account_steps_follow_the_allowances_and_name_a_difference() -> None:
    from portal._i18n import Fmt, gettext
    from portal._routes_data import CarbonAccount, Scopes
    from portal._ui_enterprises import MINUS, account_steps

    T = 1_000_000
    a = CarbonAccount(
        enterprise="0x" + "11" * 20, period=1, period_start_ns=0, period_end_ns=1,
        period_closed=True, allocated_g=300 * T,
        reported_g=Scopes(scope1_g=280 * T, scope2_g=0, scope3_g=0, total_g=280 * T),
        batches=2, verified_g=280 * T, corrected_g=380 * T, accounted_g=380 * T,
        penalty_g=50 * T, penalty_deducted_g=20 * T, traded_in_g=100 * T, traded_out_g=5 * T,
        surrendered_g=350 * T, balance_g=25 * T, obligation_g=410 * T,
        compliance="non_compliant", settled=False)

    def t(key: str, **kw: object) -> str:
        return gettext("en", key, **kw)

    steps, diff = account_steps(a, t, Fmt("en"))
    assert [s.key for s in steps] == ["allocated", "reported", "verified", "corrected",
                                      "penalty", "obligation", "traded_in", "traded_out",
                                      "surrendered", "balance"]
    by = {s.key: s for s in steps}
    # 300 - 20 (penalty deducted) + 100 - 5 - 350 = 25: the ledger's balance, no difference
    assert [by[k].running_g for k in ("allocated", "penalty", "traded_in", "traded_out",
                                      "surrendered")] == [300 * T, 280 * T, 380 * T, 375 * T,
                                                          25 * T]
    assert diff == 0 and by["penalty"].sign == MINUS and by["penalty"].moves
    assert not by["verified"].moves and by["verified"].running_g is None
    steps, diff = account_steps(a.model_copy(update={"balance_g": 40 * T}), t, Fmt("en"))
    assert diff == 15 * T
    assert "differs from the steps above by 15.0" in steps[-1].note


def test_a_meters_chart_splits_valid_and_flagged_readings() -> None:
    from mrv_core import Quality
    from portal._ui_enterprises import Meter, quality_names

    spike, comm = int(Quality.SPIKE), int(Quality.COMM_FAULT)
    m = Meter("gw", "p", "mg/m3", [(10**9, 1.0, 0), (2 * 10**9, 9.0, spike),
                                   (3 * 10**9, None, comm), (4 * 10**9, 2.0, int(Quality.MANUAL))])
    assert (m.flagged, m.missing) == (2, 1)
    d = m.chart("valid", "flagged", "mg/m³")
    assert d["x"] == [1, 2, 3, 4]
    assert d["series"][0]["values"] == [1.0, None, None, 2.0]
    assert d["series"][1]["values"] == [None, 9.0, None, None]
    assert quality_names(spike | comm) == "COMM_FAULT, SPIKE"
