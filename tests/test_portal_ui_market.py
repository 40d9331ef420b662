"""The web view's market area in a real browser: rankings with their method, the allowance
market, verification. Every figure is checked against the fixed data set
(tests/portal_data.py), worked out by hand below; each role sees the rows the API gives it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from portal._chain_tables import accounts
from portal._routes_data import FindingOut
from portal._ui_market import batch_path, penalties_by_enterprise, web_link, yuan
from tests.portal_data import T, addr, as_indexed
from tests.ui_support import (
    LAPTOP,
    TABLET,
    assert_accessible,
    horizontal_overflow,
    shoot,
    sign_in,
)

NAMES = {"a": "Pearl River Power", "b": "Lingnan Cement", "c": "Bay Cement",
         "d": "Foshan Thermal"}


def rows(page: Any, table: str, attr: str) -> list[str]:
    return [str(x) for x in page.eval_on_selector_all(
        f"{table} tbody tr", f"els => els.map(e => e.getAttribute('{attr}'))")]


def cells(page: Any, selector: str) -> list[str]:
    return [str(x).strip() for x in page.eval_on_selector_all(
        f"{selector} > td, {selector} > th", "els => els.map(e => e.innerText)")]


def rows_of_chart(page: Any, section: str) -> list[tuple[str, str, str]]:
    """A ranking chart's bars: (rank, label, value)."""
    return [tuple(x) for x in page.eval_on_selector_all(
        f"{section} svg.rank-chart g.bar", "els => els.map(g => [g.dataset.rank,"
        " ...[...g.querySelectorAll('text')].map(t => t.textContent)])")]


def fits(page: Any, name: str | None = None, tablet_name: str | None = None) -> None:
    """Accessible and without horizontal scrolling at the laptop's and the tablet's size."""
    assert_accessible(page)
    assert horizontal_overflow(page) == 0
    if name:
        shoot(page, name)
    page.set_viewport_size(TABLET)
    try:
        page.reload()
        assert horizontal_overflow(page) == 0
        assert_accessible(page)
        if tablet_name:
            shoot(page, tablet_name)
    finally:
        page.set_viewport_size(LAPTOP)


# -- pure helpers ----------------------------------------------------------------------------

def test_prices_are_fen_on_the_ledger_and_yuan_on_the_page() -> None:
    # docs/ledger.md: the price is per tonne in minor currency units (fen for CNY)
    assert yuan(9_000) == 90 and yuan(95_000) == 950 and str(yuan(1)) == "0.01"
    assert yuan(None) is None


def test_only_web_addresses_from_the_chain_become_links() -> None:
    assert web_link("https://reports.example/A/2024.pdf") == "https://reports.example/A/2024.pdf"
    assert web_link("http://x.example/r") == "http://x.example/r"
    for bad in ("javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,<b>x</b>",
                "//evil.example/x", "/ui/verification", "ipfs://bafy", "https://", "",
                "https://a.example/\x00", "https://a.example/ x", "https://a.example/" + "x" * 2000,
                None):
        assert web_link(bad) is None, bad


def test_a_batch_link_escapes_the_gateway_id() -> None:
    assert batch_path("plant-b-gw1", 2) == "/ui/batches/plant-b-gw1/2"
    assert batch_path("a/b?c#d", 7) == "/ui/batches/a%2Fb%3Fc%23d/7"


def _f(fid: int, ent: str, outcome: str, penalty: int) -> FindingOut:
    return FindingOut(finding_id=fid, enterprise=ent, period=1, kind="abnormal",
                      outcome=outcome, auditor="0x" + "a" * 40,  # type: ignore[arg-type]
                      filed_at=1, corrected_g=0, previous_g=0, penalty_g=penalty,
                      decided_by=None, decided_at=None, decision_note="", evidence_hash="0x",
                      evidence_uri="", gateway_key=None, batch_seq=None, record_leaf=None)


def test_penalties_count_confirmed_findings_only() -> None:
    got = penalties_by_enterprise([_f(1, "0xb", "confirmed", 50 * T),
                                   _f(2, "0xb", "confirmed", 5 * T),
                                   _f(3, "0xa", "rejected", 99 * T),
                                   _f(4, "0xc", "filed", 7 * T),
                                   _f(5, "0xd", "confirmed", 0)])
    assert got == [("0xb", 2, 55 * T), ("0xd", 1, 0)]


# -- rankings ----------------------------------------------------------------------------------

def test_rankings_by_industry_with_the_method_one_click_away(ui_portal: Any, page: Any) -> None:
    sign_in(page, ui_portal.url, ui_portal.ds.government)
    page.goto(f"{ui_portal.url}/ui/rankings?lang=en")
    assert page.inner_text("h1") == "Rankings"
    # the default period is the latest closed one: period 1
    assert page.eval_on_selector("#f-period", "e => e.value") == "1"
    ds = ui_portal.ds
    A, B, C, D = addr(ds.a), addr(ds.b), addr(ds.c), addr(ds.d)
    # power (D4411): A verified 600 t / output 1000 on the chain = 0.600 t per unit, its
    # benchmark 800,000 g = 0.8 t: ratio 0.75; D has no output figure: unranked
    power = "section[data-group='D4411']"
    assert rows(page, power, "data-enterprise") == [A, D]
    assert rows(page, power, "data-rank") == ["1", ""]
    a = cells(page, f"{power} tr[data-enterprise='{A}']")
    assert a[0] == "1" and a[1] == NAMES["a"]
    assert a[2] == "0.600\u00a0t CO₂e/unit" and a[3] == "0.750"
    assert a[4] == "600.0\u00a0t CO₂e\nverified"
    # data quality: A's 16 readings in 2024, 15 with a value, 2 flagged (COMM_FAULT, SPIKE)
    assert a[6] == "captured 93.8%\nflagged 12.5%"
    assert a[7] == "verified by a report"
    d = cells(page, f"{power} tr[data-enterprise='{D}']")
    assert d[0] == "unranked" and "no output figure for the period" in d[1]
    assert page.get_attribute(f"{power} tr[data-enterprise='{A}'] a", "href") == \
        f"/ui/enterprises/{A}"
    # cement (C3011): neither B nor C has an output figure: both unranked, by address
    cement = "section[data-group='C3011']"
    assert rows(page, cement, "data-enterprise") == sorted([B, C])
    assert rows(page, cement, "data-rank") == ["", ""]
    assert "could be ranked" in page.inner_text(cement)
    # the bar chart of the ranked entries is drawn
    assert rows_of_chart(page, power) == [("1", "1. Pearl River Power", "0.600")]
    assert page.locator(f"{cement} svg.rank-chart").count() == 0
    # the method: one click to the section that explains ranking and green index
    page.click("#method-link")
    assert page.url.endswith("#method")
    top = page.evaluate("() => document.getElementById('method').getBoundingClientRect().top")
    assert -2 <= top < LAPTOP["height"] / 2
    method = page.inner_text("#method")
    assert "ranking/v1" in method and "green-index/v1" in method
    assert "the higher capture rate" in method and "share a rank (1, 2, 2, 4)" in method
    assert "no output figure" in method
    weights = {r: cells(page, f"#method tr[data-component='{r}']")[1]
               for r in ("trend", "intensity", "quality", "findings", "compliance")}
    assert weights == {"trend": "25%", "intensity": "30%", "quality": "20%", "findings": "15%",
                       "compliance": "10%"}
    trend = cells(page, "#method tr[data-component='trend']")[2]
    assert "50 \u2212 2.5 × (100 c)" in trend  # a minus sign
    fits(page, "rankings")


@contextmanager
def cement_outputs(ui_portal: Any) -> Iterator[None]:
    """Give B and C period 1 output figures (as a benchmark allocation on the chain would:
    output and the benchmark of 800,000 g per t clinker), then put the data set back."""
    ds = ui_portal.ds
    B, C = addr(ds.b), addr(ds.c)

    def put(out_b: int, out_c: int, bench: int) -> None:
        with ui_portal.ctx.engine.begin() as c:
            for ent, out in ((B, out_b), (C, out_c)):
                c.execute(sa.update(accounts)
                          .where(accounts.c.enterprise == ent, accounts.c.period == 1)
                          .values(output=out, benchmark_g_per_unit=bench))
            as_indexed(c)

    put(400, 200, 800_000)
    try:
        yield
    finally:
        put(0, 0, 0)


def test_the_cement_ranking_and_the_region_ranking(ui_portal: Any, page: Any) -> None:
    ds = ui_portal.ds
    A, B, C, D = addr(ds.a), addr(ds.b), addr(ds.c), addr(ds.d)
    sign_in(page, ui_portal.url, ui_portal.ds.auditor)
    with cement_outputs(ui_portal):
        page.goto(f"{ui_portal.url}/ui/rankings?lang=en&period=1&by=industry&group=C3011")
        # C: 100 t reported / 200 = 0.500; B: 380 t verified (the confirmed finding) / 400
        # = 0.950: C first
        assert page.locator("section.rank-group").count() == 1
        cement = "section[data-group='C3011']"
        assert rows(page, cement, "data-enterprise") == [C, B]
        assert rows(page, cement, "data-rank") == ["1", "2"]
        assert cells(page, f"{cement} tr[data-enterprise='{C}']")[2] == \
            "0.500\u00a0t CO₂e/unit"
        b = cells(page, f"{cement} tr[data-enterprise='{B}']")
        assert b[2] == "0.950\u00a0t CO₂e/unit" and b[4] == "380.0\u00a0t CO₂e\nverified"
        assert b[7] == "corrected by a finding"
        # the bars: best first, B's (0.95) the longest, C's 0.5/0.95 of it
        assert rows_of_chart(page, cement) == [("1", "1. Bay Cement", "0.500"),
                                               ("2", "2. Lingnan Cement", "0.950")]
        w = [float(x) for x in page.eval_on_selector_all(
            f"{cement} svg.rank-chart rect", "els => els.map(e => e.getAttribute('width'))")]
        assert w[1] == 450 and abs(w[0] - 450 * 0.5 / 0.95) < 0.1
        # by region, through the form: Shenzhen (440300): C 0.5/0.8 = 0.625 before A
        # 0.6/0.8 = 0.75
        page.select_option("#f-by", "region")
        page.select_option("#f-group", "")
        with page.expect_navigation():
            page.click("form.filters button")
        assert "by=region" in page.url
        assert "ranked by their emissions intensity divided by" in page.inner_text("main")
        sz = "section[data-group='440300']"
        assert rows(page, sz, "data-enterprise") == [C, A]
        assert [cells(page, f"{sz} tr[data-enterprise='{e}']")[3] for e in (C, A)] == \
            ["0.625", "0.750"]
        # Foshan (440600): B 0.95/0.8 = 1.1875 ranked; D without output unranked
        fs = "section[data-group='440600']"
        assert rows(page, fs, "data-enterprise") == [B, D]
        assert cells(page, f"{fs} tr[data-enterprise='{B}']")[3] == "1.188"
    # put back: the default data set's cement ranking has nobody ranked again
    page.goto(f"{ui_portal.url}/ui/rankings?lang=en&period=1&group=C3011")
    assert rows(page, "section[data-group='C3011']", "data-rank") == ["", ""]


def test_rankings_in_chinese(ui_portal: Any, page: Any) -> None:
    sign_in(page, ui_portal.url, ui_portal.ds.government)
    page.goto(f"{ui_portal.url}/ui/rankings?lang=zh")
    assert page.inner_text("h1") == "排名"
    assert page.get_attribute("html", "lang") == "zh-Hans"
    # the period's dates as the Chinese locale writes them (UTC: the ledger's periods)
    opts = page.inner_text("#f-period")
    assert "第 1 期\uff1a2024年1月1日 至 2024年12月31日" in opts  # a full-width colon
    assert "第 2 期\uff1a2025年1月1日 至 2025年12月31日" in opts
    power = "section[data-group='D4411']"
    A = addr(ui_portal.ds.a)
    a = cells(page, f"{power} tr[data-enterprise='{A}']")
    assert a[2] == "0.600\u00a0吨 CO₂e/单位产出" and a[4] == "600.0\u00a0吨 CO₂e\n核查值"
    assert "行业 D4411 · 火力发电" in page.inner_text(f"{power} h2")
    assert "本期无产出数据" in page.inner_text(power)
    page.click("#method-link")
    assert page.url.endswith("#method")
    assert "排名与绿色指数的计算方法" in page.inner_text("#method h2")
    assert "采集率" in page.inner_text("#method")
    fits(page, "rankings-zh")


def test_a_bank_sees_the_published_rankings(ui_portal: Any, page: Any) -> None:
    """``get_rankings`` is a published aggregate: a bank gets every enterprise's entry, not
    only those that granted it access."""
    ds = ui_portal.ds
    sign_in(page, ui_portal.url, ds.finance)
    page.goto(f"{ui_portal.url}/ui/rankings?lang=en&period=1")
    got = (rows(page, "section[data-group='C3011']", "data-enterprise")
           + rows(page, "section[data-group='D4411']", "data-enterprise"))
    assert got == [*sorted([addr(ds.b), addr(ds.c)]), addr(ds.a), addr(ds.d)]
    assert "every signed-in account sees the same rankings" in page.inner_text("main")


# -- the market -------------------------------------------------------------------------------

def test_the_market_offers_trades_and_prices(ui_portal: Any, page: Any) -> None:
    ds = ui_portal.ds
    sign_in(page, ui_portal.url, ds.government)
    page.goto(f"{ui_portal.url}/ui/market?lang=en")
    assert page.inner_text("h1") == "Allowance market"
    assert rows(page, "#offers-table", "data-offer") == ["1", "2", "3"]
    o1 = cells(page, "#offers-table tr[data-offer='1']")
    assert o1[1] == NAMES["a"] and o1[3] == "filled" and o1[5] == "anyone"
    assert o1[6] == "100.0\u00a0t CO₂e" and o1[7] == "0.0\u00a0t CO₂e" and o1[8] == "CN¥90.00"
    o2 = cells(page, "#offers-table tr[data-offer='2']")
    assert o2[1] == NAMES["d"] and o2[3] == "cancelled" and o2[5] == NAMES["c"]
    assert o2[7] == "40.0\u00a0t CO₂e" and o2[8] == "CN¥95.00"
    o3 = cells(page, "#offers-table tr[data-offer='3']")
    assert o3[3] == "open" and o3[8] == "CN¥100.00"
    # trades: 60 t and 40 t at 9,000 fen (90 yuan) per tonne, 10 t at 9,500 fen (95 yuan);
    # values 540,000 / 360,000 / 95,000 fen
    assert rows(page, "#trades-table", "data-trade") == ["1", "2", "3"]
    t = {i: cells(page, f"#trades-table tr[data-trade='{i}']") for i in (1, 2, 3)}
    assert [(r[3], r[4], r[6], r[7], r[8]) for r in t.values()] == [
        (NAMES["a"], NAMES["b"], "60.0\u00a0t CO₂e", "CN¥90.00", "CN¥5,400.00"),
        (NAMES["a"], NAMES["b"], "40.0\u00a0t CO₂e", "CN¥90.00", "CN¥3,600.00"),
        (NAMES["d"], NAMES["c"], "10.0\u00a0t CO₂e", "CN¥95.00", "CN¥950.00")]
    assert t[1][9].startswith("recorded by " + addr(ds.finance)[:6])
    assert t[2][9] == "not recorded"
    # prices of period 1: 3 trades, 110 t; VWAP (60×9000 + 40×9000 + 10×9500) / 110
    # = 9,045.45 fen = 90.45 yuan
    assert cells(page, "#prices-table tr[data-period='1']") == [
        "1", "3", "110.0\u00a0t CO₂e", "CN¥90.45", "CN¥90.00", "CN¥95.00"]
    # the price history chart, over time, with its table
    page.wait_for_selector("#prices ~ .chart-box .uplot canvas")
    chart = page.evaluate("() => JSON.parse(document.getElementById('price-chart').textContent)")
    assert chart["x"] == [1720000200, 1720000300, 1720000400]
    assert chart["series"][0]["values"] == [90.0, 90.0, 95.0]
    fits(page, "market")


def test_the_market_filters(ui_portal: Any, page: Any) -> None:
    sign_in(page, ui_portal.url, ui_portal.ds.auditor)
    page.goto(f"{ui_portal.url}/ui/market?lang=en")
    page.select_option("#f-status", "open")
    with page.expect_navigation():
        page.click("form.filters button")
    assert "status=open" in page.url
    assert rows(page, "#offers-table", "data-offer") == ["3"]
    assert rows(page, "#trades-table", "data-trade") == ["1", "2", "3"]  # trades: no status
    page.select_option("#f-status", "")
    page.select_option("#f-period", "2")
    with page.expect_navigation():
        page.click("form.filters button")
    assert rows(page, "#offers-table", "data-offer") == ["3"]
    assert page.locator("#trades-table").count() == 0
    assert "No trades you may see." in page.inner_text("main")
    assert "No trades yet." in page.inner_text("main")


@pytest.mark.parametrize("who,trades", [("finance", ["1", "2"]), ("b", ["1", "2"]),
                                        ("c", ["3"]), ("finance2", [])])
def test_each_role_sees_its_trades(ui_portal: Any, page: Any, who: str,
                                   trades: list[str]) -> None:
    """A bank: the trades of A (granted; A sold 1 and 2), not B's (revoked) nor C's
    (expired) nor D's (none); an enterprise its own as buyer or seller (C bought 3; D, the
    seller, is suspended and cannot sign in). Offers and prices
    are public on the ledger and in the API: everyone sees all of them."""
    sign_in(page, ui_portal.url, getattr(ui_portal.ds, who))
    page.goto(f"{ui_portal.url}/ui/market?lang=en")
    assert rows(page, "#trades-table", "data-trade") == trades
    assert rows(page, "#offers-table", "data-offer") == ["1", "2", "3"]
    assert cells(page, "#prices-table tr[data-period='1']")[1] == "3"


def test_the_market_in_chinese(ui_portal: Any, page: Any) -> None:
    sign_in(page, ui_portal.url, ui_portal.ds.government)
    page.goto(f"{ui_portal.url}/ui/market?lang=zh")
    assert page.inner_text("h1") == "配额交易市场"
    t1 = cells(page, "#trades-table tr[data-trade='1']")
    # 1720000200 = 2024-07-03 09:50 UTC = 17:50 in Shanghai
    assert t1[2] == "2024年7月3日 17:50:00" and t1[7] == "¥90.00" and t1[8] == "¥5,400.00"
    assert cells(page, "#offers-table tr[data-offer='2']")[3] == "已撤销"
    fits(page)


# -- verification -----------------------------------------------------------------------------

def test_verification_reports_findings_and_penalties(ui_portal: Any, page: Any) -> None:
    ds = ui_portal.ds
    sign_in(page, ui_portal.url, ds.government)
    page.goto(f"{ui_portal.url}/ui/verification?lang=en")
    assert page.inner_text("h1") == "Verification"
    assert rows(page, "#findings-table", "data-finding") == ["1", "2", "3"]
    f1 = cells(page, "#findings-table tr[data-finding='1']")
    assert f1[1] == NAMES["b"] and f1[3] == "falsified data" and f1[4] == "confirmed"
    assert f1[5:8] == ["380.0\u00a0t CO₂e", "280.0\u00a0t CO₂e", "50.0\u00a0t CO₂e"]
    assert f1[8].startswith("6 Jan 2025, 02:00:00") and addr(ds.auditor)[:6] in f1[8]
    assert f1[9].startswith("7 Jan 2025") and f"by {addr(ds.government)[:6]}" in f1[9]
    assert page.get_attribute("#findings-table tr[data-finding='1'] a.record-link", "href") == \
        "/ui/batches/plant-b-gw1/2"
    assert "batch 2 of plant-b-gw1" in f1[10]
    assert page.get_attribute("#findings-table tr[data-finding='1'] td.evidence a[rel~='noopener']",
                              "href") == "https://evidence.example/B/1"
    f2 = cells(page, "#findings-table tr[data-finding='2']")
    assert f2[1] == NAMES["a"] and f2[3] == "abnormal data" and f2[4] == "rejected"
    assert "meter recalibrated" in f2[9] and "Record" not in f2[10]
    assert page.locator("#findings-table tr[data-finding='2'] td.evidence a").count() == 0
    assert page.locator("#findings-table tr[data-finding='2'] a.record-link").count() == 0
    f3 = cells(page, "#findings-table tr[data-finding='3']")
    assert f3[4] == "pending" and f3[9] == "not decided"
    # penalties: only B's confirmed falsified finding carries one
    assert rows(page, "#penalties-table", "data-enterprise") == [addr(ds.b)]
    assert cells(page, f"#penalties-table tr[data-enterprise='{addr(ds.b)}']") == [
        NAMES["b"], "1", "50.0\u00a0t CO₂e"]
    # reports: verified against reported, and the report's address as a link
    assert rows(page, "#reports-table", "data-report") == ["1", "2", "3"]
    r1 = cells(page, "#reports-table tr[data-report='1']")
    assert r1[1] == NAMES["a"] and r1[4:7] == ["600.0\u00a0t CO₂e", "600.0\u00a0t CO₂e",
                                                 "0.0\u00a0t CO₂e"]
    assert page.get_attribute("#reports-table tr[data-report='2'] a[rel~='noopener']",
                              "href") == "https://reports.example/B/2024.pdf"
    fits(page, "verification", "verification-tablet")


def test_verification_filter_by_state(ui_portal: Any, page: Any) -> None:
    sign_in(page, ui_portal.url, ui_portal.ds.auditor)
    page.goto(f"{ui_portal.url}/ui/verification?lang=en")
    for state, expected in (("confirmed", ["1"]), ("rejected", ["2"]), ("filed", ["3"])):
        page.select_option("#f-state", state)
        with page.expect_navigation():
            page.click("form.filters button")
        assert f"state={state}" in page.url
        assert rows(page, "#findings-table", "data-finding") == expected
        assert page.eval_on_selector("#f-state", "e => e.value") == state
        # the penalties count the confirmed findings whatever the state filter shows
        assert rows(page, "#penalties-table", "data-enterprise") == [addr(ui_portal.ds.b)]
    page.select_option("#f-state", "")
    page.select_option("#f-period", "2")
    with page.expect_navigation():
        page.click("form.filters button")
    assert "No findings." in page.inner_text("main") and "No reports." in page.inner_text("main")


@pytest.mark.parametrize("who,findings,reports", [
    ("finance", ["2"], ["1"]), ("b", ["1"], ["2"]), ("c", ["3"], []), ("finance2", [], [])])
def test_each_role_sees_its_verification_rows(ui_portal: Any, page: Any, who: str,
                                              findings: list[str], reports: list[str]) -> None:
    sign_in(page, ui_portal.url, getattr(ui_portal.ds, who))
    page.goto(f"{ui_portal.url}/ui/verification?lang=en")
    assert rows(page, "#findings-table", "data-finding") == findings
    assert rows(page, "#reports-table", "data-report") == reports
    pen = rows(page, "#penalties-table", "data-enterprise")
    assert pen == ([addr(ui_portal.ds.b)] if who == "b" else [])


def test_verification_in_chinese(ui_portal: Any, page: Any) -> None:
    sign_in(page, ui_portal.url, ui_portal.ds.b)
    page.goto(f"{ui_portal.url}/ui/verification?lang=zh")
    assert page.inner_text("h1") == "核查"
    f1 = cells(page, "#findings-table tr[data-finding='1']")
    # filed 1736100000 = 2025-01-05 18:00 UTC = 2025-01-06 02:00 in Shanghai
    assert f1[3] == "数据造假" and f1[4] == "已确认" and f1[8].startswith("2025年1月6日 02:00:00")
    assert f1[7] == "50.0\u00a0吨 CO₂e"
    assert "plant-b-gw1 第 2 批" in f1[10]
    fits(page)


def test_every_message_of_the_area_is_in_both_languages() -> None:
    """Each key the area's templates name, literally or through ``LABELS`` (statuses, kinds,
    components), is registered in English and Chinese."""
    import re
    from pathlib import Path

    from portal import _i18n, _ui_market

    cat = _i18n.catalogue()
    used: set[str] = set()
    for f in (Path(_ui_market.__file__).parent / "templates" / "market").glob("*.html"):
        used |= set(re.findall(r"""\bt\(\s*["']([a-z0-9_.]+)["']""", f.read_text()))
    used |= {k for values in _ui_market.LABELS.values() for k in values.values()}
    assert len(used) > 100
    missing = sorted(k for k in used if k not in cat)
    assert not missing
    for k in used:
        en, zh = cat[k]
        assert en and zh and en != zh, k


def test_filters_out_of_range_are_refused(ui_portal: Any, page: Any) -> None:
    sign_in(page, ui_portal.url, ui_portal.ds.government)
    resp = page.goto(f"{ui_portal.url}/ui/rankings?period=7&lang=en")
    assert resp is not None and resp.status == 404
    assert "no period 7 on the ledger" in page.inner_text("main")
    for bad in ("period=abc", "period=99999999999", "status=sold", "period=0"):
        resp = page.goto(f"{ui_portal.url}/ui/market?{bad}")
        assert resp is not None and resp.status == 422, bad
