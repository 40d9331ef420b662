"""The auditor's drill-down in the web view (portal/_ui_records.py), in a real browser over the
fixed data set (tests/portal_data.py: real leaves, roots and Ed25519 signatures): a batch page
with its readings, one reading with its quality flags and its proof checked step by step, the
proof bundle it links to, and what the page says when a stored value, root or signature was
changed behind the portal's back (a portal of this module's own, on a fresh database)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ledger_client import (
    keccak256,
    parse_bundle,
    record_leaf,
    record_signing_bytes,
    verify_proof,
    verify_signature,
)
from portal._chain_tables import batches
from portal._ingest_tables import records
from portal._proof_steps import case_from_bundle, check_steps, verified
from tests.portal_data import Clock, Dataset, as_indexed, hx, load, make_context, signed_bits
from tests.ui_support import (
    LAPTOP,
    TABLET,
    HttpPortal,
    assert_accessible,
    horizontal_overflow,
    shoot,
    sign_in,
)

STEPS = ["leaf", "merkle", "anchor", "signature", "record-signature"]
OK_RGB = "rgb(26, 107, 50)"  # --ok in app.css
BAD_RGB = "rgb(179, 38, 30)"  # --bad


def anchoring(ds: Dataset) -> dict[tuple[str, int], tuple[int, str]]:
    """(gateway, batch seq) -> (block number, tx hash) as portal_data.load numbers them."""
    out, block = {}, 100
    for gw in ds.gws.values():
        for h in gw.headers:
            block += 1
            out[(gw.gateway_id, h.seq)] = (block, hx(keccak256(f"tx{block}".encode())))
    return out


def step_states(page: Any) -> dict[str, tuple[str, str]]:
    got = {}
    for li in page.query_selector_all("li[data-step]"):
        got[li.get_attribute("data-step")] = (li.get_attribute("data-passed"),
                                              li.get_attribute("data-state"))
    return got


def verdict(page: Any) -> tuple[str, str, str]:
    v = page.locator("[data-testid=verdict]")
    return (v.get_attribute("data-verified") or "", v.inner_text(),
            v.evaluate("e => getComputedStyle(e).color"))


def fits(page: Any) -> None:
    for vp in (LAPTOP, TABLET):
        page.set_viewport_size(vp)
        assert horizontal_overflow(page) == 0, vp
    page.set_viewport_size(LAPTOP)


# -- the batch page ------------------------------------------------------------------------------

def test_a_batch_page_shows_its_header_anchor_state_and_readings(ui_portal: Any,
                                                                 page: Any) -> None:
    ds = ui_portal.ds
    gw = ds.gws["a"]
    h = gw.headers[1]
    block, tx = anchoring(ds)[(gw.gateway_id, 2)]
    sign_in(page, ui_portal.url, ds.auditor)
    page.goto(f"{ui_portal.url}/ui/batches/plant-a-gw1/2?lang=en")
    assert page.inner_text("h1") == "Batch 2 of gateway plant-a-gw1"
    assert page.get_attribute("[data-testid=batch-state]", "data-state") == "verified"
    assert "Verified" in page.inner_text("[data-testid=batch-state]")
    f = {k: page.inner_text(f"[data-field={k}]") for k in (
        "seq", "count", "range", "scope1", "scope2", "scope3", "root", "header_hash",
        "prev_hash", "signature", "block", "tx", "period")}
    assert f["seq"] == "2" and f["count"] == "4" and f["range"] == "7 to 10"
    assert f["scope1"] == "90.000\u00a0t CO₂e" and f["scope2"] == "10.000\u00a0t CO₂e"
    assert f["scope3"] == "0.000\u00a0t CO₂e"
    assert f["root"] == hx(h.root) and f["header_hash"] == hx(h.hash())
    assert f["prev_hash"] == hx(gw.headers[0].hash())
    assert f["signature"] == hx(gw.signer.sign(h.hash()))
    assert f["block"] == f"{block}" and f["tx"] == tx and f["period"] == "1"
    assert "15 Mar 2024, 08:00:00" in page.inner_text("[data-field=time]")  # 00:00 UTC, +8
    assert "Pearl River Power" in page.inner_text("[data-testid=batch-header]")
    rows = page.query_selector_all("table[data-testid=readings] tbody tr")
    assert [r.get_attribute("data-seq") for r in rows] == ["7", "8", "9", "10"]
    cells = [[c.inner_text() for c in r.query_selector_all("th, td")] for r in rows]
    assert cells[0][3] == "410.00\u00a0mg/m³" and cells[0][4] == "good"
    assert cells[1][3] == "no value"
    assert cells[1][4].startswith("communication fault")
    assert cells[3][3] == "430.00\u00a0mg/m³" and cells[3][4].startswith("spike")
    assert rows[3].query_selector("[data-flag=SPIKE]") is not None
    assert rows[1].query_selector("[data-flag=COMM_FAULT]") is not None
    assert rows[0].query_selector("a").get_attribute("href") == "/ui/records/plant-a-gw1/7"
    assert page.get_attribute("a:has-text('batch 1')", "href") == "/ui/batches/plant-a-gw1/1"
    assert_accessible(page)
    fits(page)
    shoot(page, "records-batch")
    with page.expect_navigation():
        rows[3].query_selector("a").click()
    assert page.url.endswith("/ui/records/plant-a-gw1/10")


def test_a_batch_pages_its_readings(ui_portal: Any, page: Any) -> None:
    sign_in(page, ui_portal.url, ui_portal.ds.government)
    page.goto(f"{ui_portal.url}/ui/batches/plant-a-gw1/3?lang=en&limit=4")
    seen = []
    while True:
        seen.append([r.get_attribute("data-seq") for r in
                     page.query_selector_all("table[data-testid=readings] tbody tr")])
        nxt = page.query_selector("[data-testid=next]")
        if nxt is None:
            break
        with page.expect_navigation():
            nxt.click()
    assert seen == [["11", "12", "13", "14"], ["15", "16"]]
    assert page.inner_text("caption") == "Records 15 to 16 (2 of the batch's 6)"


def test_a_quarantined_and_an_undelivered_batch_say_so(ui_portal: Any, page: Any) -> None:
    sign_in(page, ui_portal.url, ui_portal.ds.government)
    page.goto(f"{ui_portal.url}/ui/batches/plant-d-gw1/2?lang=en")
    st = page.locator("[data-testid=batch-state]")
    assert st.get_attribute("data-state") == "quarantined"
    assert "Quarantined: record 3's leaf does not reach the anchored root" in st.inner_text()
    assert st.evaluate("e => getComputedStyle(e).color") == BAD_RGB
    assert page.query_selector("[data-testid=no-readings]") is not None
    page.goto(f"{ui_portal.url}/ui/batches/plant-c-gw1/2?lang=en")
    assert page.get_attribute("[data-testid=batch-state]", "data-state") == "not-delivered"
    assert "Pending" in page.inner_text("[data-testid=batch-state]")


# -- one reading and its proof --------------------------------------------------------------------

def test_a_reading_of_a_verified_batch_passes_every_step(ui_portal: Any, page: Any) -> None:
    ds = ui_portal.ds
    gw = ds.gws["a"]
    r = gw.records[9]  # seq 10: the spike
    assert r.seq == 10
    block, tx = anchoring(ds)[("plant-a-gw1", 2)]
    sign_in(page, ui_portal.url, ds.auditor)
    page.goto(f"{ui_portal.url}/ui/records/plant-a-gw1/10?lang=en")
    assert step_states(page) == {"leaf": ("true", "passed"), "merkle": ("true", "passed"),
                                 "anchor": ("true", "passed"), "signature": ("true", "passed"),
                                 "record-signature": ("true", "not-applicable")}
    ok, text, colour = verdict(page)
    assert ok == "true" and "Verified: every step" in text and colour == OK_RGB
    leaf_row = page.locator("li[data-step=leaf] tr[data-compare=leaf]")
    assert leaf_row.get_attribute("data-same") == "true"
    assert leaf_row.inner_text().count(hx(record_leaf(r))) == 2
    root_row = page.locator("li[data-step=merkle] tr[data-compare=root]")
    assert root_row.inner_text().count(hx(gw.headers[1].root)) == 2
    hh_row = page.locator("li[data-step=anchor] tr[data-compare=header_hash]")
    assert hh_row.inner_text().count(hx(gw.headers[1].hash())) == 2
    assert page.inner_text("[data-testid=anchor-tx]") == tx
    assert f"block {block}" in page.inner_text("li[data-step=anchor]")
    assert hx(gw.signer.public_key) in page.inner_text("li[data-step=signature]")
    flag = page.locator("table[data-testid=flags] tr[data-flag=SPIKE]")
    assert flag.get_attribute("data-bit") == "10"
    assert "spike" in flag.inner_text() and "invalid" in flag.inner_text()
    assert page.inner_text("[data-testid=value]") == "430.00\u00a0mg/m³"
    assert page.inner_text("[data-testid=verify-command]") == \
        "mrv-gateway verify --bundle proof.json --rpc <ledger RPC URL>"
    assert_accessible(page)
    fits(page)
    shoot(page, "records-reading-verified")


def test_the_comm_fault_and_manual_readings_name_their_flags(ui_portal: Any, page: Any) -> None:
    sign_in(page, ui_portal.url, ui_portal.ds.government)
    page.goto(f"{ui_portal.url}/ui/records/plant-a-gw1/8?lang=en")
    row = page.locator("table[data-testid=flags] tbody tr")
    assert row.count() == 1 and row.get_attribute("data-flag") == "COMM_FAULT"
    assert "communication fault" in row.inner_text() and "\tB\t" in row.inner_text()
    assert "HJ 212 flag of the reading: B" in page.inner_text("main")
    assert page.inner_text("[data-testid=value]") == "no value (NaN)"
    assert page.get_attribute("[data-testid=verdict]", "data-verified") == "true"
    page.goto(f"{ui_portal.url}/ui/records/plant-b-gw1/2?lang=en")
    row = page.locator("table[data-testid=flags] tbody tr")
    assert row.get_attribute("data-flag") == "MANUAL"
    assert "informational" in row.inner_text()
    page.goto(f"{ui_portal.url}/ui/records/plant-a-gw1/1?lang=en")
    assert page.query_selector("[data-testid=no-flags]") is not None


def test_the_download_link_gives_a_bundle_the_projects_verifier_accepts(
        ui_portal: Any, page: Any, tmp_path: Path) -> None:
    """The bundle is parsed by ``ledger_client.parse_bundle`` (what ``mrv-gateway verify
    --bundle`` runs first). Its chain part needs a node (this data set is not on a chain), so
    the bundle's record, proof, header and signature are checked against the data set here."""
    ds = ui_portal.ds
    gw = ds.gws["b"]
    r, h = gw.records[5], gw.headers[1]  # seq 6: B's spike, in batch 2
    sign_in(page, ui_portal.url, ds.auditor)
    page.goto(f"{ui_portal.url}/ui/records/plant-b-gw1/6?lang=en")
    link = page.locator("[data-testid=bundle]")
    assert link.get_attribute("href") == "/v1/records/plant-b-gw1/6/proof"
    with page.expect_download() as dl:
        link.click()
    path = tmp_path / "proof.json"
    dl.value.save_as(path)
    b = parse_bundle(path.read_bytes())
    assert b.record == r and b.header == h
    assert b.chain_id == 31337 and b.contract == "0x" + "5f" * 20
    leaf = record_leaf(b.record)
    assert verify_proof(leaf, b.proof, h.root)
    assert b.header.hash() == h.hash()
    assert verify_signature(gw.signer.public_key, h.hash(), b.signature)
    assert json.loads(path.read_text())["batch"]["header_hash"] == hx(h.hash())
    assert verified(check_steps(case_from_bundle(
        b, stored_leaf=record_leaf(r), anchored_header_hash=h.hash(), anchored_root=h.root,
        signing_key=gw.signer.public_key)))


@pytest.mark.parametrize(("who", "gateway", "seq", "status"), [
    ("finance", "plant-b-gw1", 3, 403),    # B revoked the bank's grant
    ("finance", "plant-c-gw1", 1, 403),    # C's grant expired
    ("finance", "plant-d-gw1", 1, 403),    # D never granted one
    ("finance", "plant-a-gw1", 3, 200),    # A granted it
    ("a", "plant-a-gw1", 3, 200),          # an enterprise sees its own
    ("a", "plant-b-gw1", 3, 403),          # and nobody else's
    ("government", "plant-d-gw1", 1, 200),
])
def test_each_role_sees_what_the_api_allows_it(ui_portal: Any, page: Any, who: str,
                                               gateway: str, seq: int, status: int) -> None:
    sign_in(page, ui_portal.url, getattr(ui_portal.ds, who))
    resp = page.goto(f"{ui_portal.url}/ui/records/{gateway}/{seq}?lang=en")
    assert resp is not None and resp.status == status
    if status == 403:
        assert page.inner_text("h1") == "Error 403"
        assert page.query_selector("[data-step]") is None
        # the batch page and the bundle are refused alike
        assert page.goto(f"{ui_portal.url}/ui/batches/{gateway}/1?lang=en").status == 403
        assert page.request.get(f"{ui_portal.url}/v1/records/{gateway}/{seq}/proof"
                                ).status == 403
    else:
        assert page.get_attribute("[data-testid=verdict]", "data-verified") == "true"


def test_an_unknown_reading_is_not_found(ui_portal: Any, page: Any) -> None:
    sign_in(page, ui_portal.url, ui_portal.ds.government)
    resp = page.goto(f"{ui_portal.url}/ui/records/plant-a-gw1/999?lang=en")
    assert resp is not None and resp.status == 404
    resp = page.goto(f"{ui_portal.url}/ui/records/plant-c-gw1/10?lang=en")  # undelivered
    assert resp is not None and resp.status == 404


def test_the_reading_page_in_chinese(ui_portal: Any, page: Any) -> None:
    sign_in(page, ui_portal.url, ui_portal.ds.government)
    page.goto(f"{ui_portal.url}/ui/records/plant-a-gw1/10?lang=zh")
    assert page.inner_text("h1") == "网关 plant-a-gw1 的第 10 条读数"
    assert page.get_attribute("html", "lang") == "zh-Hans"
    assert "已验证" in page.inner_text("[data-testid=verdict]")
    assert "✓ 通过" in page.inner_text("li[data-step=leaf] [data-testid=step-state]")
    assert "尖峰" in page.inner_text("table[data-testid=flags]")
    assert "2024年3月15日 08:03:00" in page.inner_text("[data-testid=record-fields]")
    assert "下载证明文件" in page.inner_text("[data-testid=bundle]")
    assert_accessible(page)
    fits(page)
    shoot(page, "records-reading-zh")
    page.goto(f"{ui_portal.url}/ui/batches/plant-a-gw1/1?lang=zh")
    assert page.inner_text("h1") == "网关 plant-a-gw1 的第 1 批次"
    assert "180.000\u00a0吨 CO₂e" in page.inner_text("[data-field=scope1]")
    assert_accessible(page)
    fits(page)


# -- a portal whose stored data was changed behind its back ---------------------------------------

class Tampered:
    def __init__(self, url: str, ds: Dataset) -> None:
        self.url = url
        self.ds = ds


@pytest.fixture(scope="module")
def tampered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tampered]:
    """The data set on a fresh database of its own, then changed as a broken store or an
    insider could: A's reading 2 has another value; A's batch 3 another root; A's batch 4
    another signature; B's readings 1 and 2 carry a good and a bad record signature."""
    db = tmp_path_factory.mktemp("ui-records") / "portal.db"
    ctx = make_context(f"sqlite:///{db}", clock=Clock())
    ds = load(ctx.engine)
    b = ds.gws["b"]
    with ctx.engine.begin() as c:
        c.execute(sa.update(records).where(records.c.gateway_id == "plant-a-gw1",
                                           records.c.seq == 2)
                  .values(value=401.0, value_bits=signed_bits(401.0)))
        c.execute(sa.update(batches).where(batches.c.gateway_id == "plant-a-gw1",
                                           batches.c.seq == 3)
                  .values(root=hx(keccak256(b"another root"))))
        c.execute(sa.update(batches).where(batches.c.gateway_id == "plant-a-gw1",
                                           batches.c.seq == 4)
                  .values(signature=hx(ds.gws["b"].signer.sign(ds.gws["a"].headers[3].hash()))))
        for seq, sig in ((1, b.signer.sign(record_signing_bytes(record_leaf(b.records[0])))),
                         (2, b.signer.sign(record_leaf(b.records[1])))):  # 2: tag missing
            c.execute(sa.update(records).where(records.c.gateway_id == "plant-b-gw1",
                                               records.c.seq == seq)
                      .values(record_signature=hx(sig)))
        as_indexed(c)
    try:
        with HttpPortal(ctx) as served:
            yield Tampered(served.url, ds)
    finally:
        ctx.engine.dispose()


def test_a_changed_value_fails_the_leaf_and_the_page_says_not_verified(
        tampered: Tampered, page: Any) -> None:
    sign_in(page, tampered.url, tampered.ds.auditor)
    page.goto(f"{tampered.url}/ui/records/plant-a-gw1/2?lang=en")
    assert step_states(page) == {
        "leaf": ("false", "failed"), "merkle": ("false", "failed"),
        "anchor": ("false", "not-reached"), "signature": ("false", "not-reached"),
        "record-signature": ("true", "not-applicable")}
    ok, text, colour = verdict(page)
    assert ok == "false" and colour == BAD_RGB
    assert text == ("✗ NOT verified: step 1 (leaf), step 2 (Merkle path) failed. Not reached "
                    "because of that: step 3 (anchored header), step 4 (signature). Do not rely "
                    "on this reading.")
    assert page.query_selector("[data-testid=bundle]") is None
    assert page.query_selector("[data-testid=no-bundle]") is not None
    assert "Not reached: it rests on step 2 (Merkle path)" in page.inner_text(
        "li[data-step=anchor]")
    assert "rests on" not in page.inner_text("li[data-step=merkle]")
    row = page.locator("li[data-step=leaf] tr[data-compare=leaf]")
    assert row.get_attribute("data-same") == "false"
    stored = hx(record_leaf(tampered.ds.gws["a"].records[1]))
    assert stored in row.inner_text()  # the leaf stored is the one the gateway committed
    assert page.inner_text("[data-testid=value]") == "401.00\u00a0mg/m³"
    assert "✗ not reached" in page.inner_text("li[data-step=anchor] [data-testid=step-state]")
    # the API gives no bundle for it either
    r = page.request.get(f"{tampered.url}/v1/records/plant-a-gw1/2/proof")
    assert r.status == 409 and "do not rebuild its stored leaf" in r.text()
    # the batch's other readings still prove themselves
    page.goto(f"{tampered.url}/ui/records/plant-a-gw1/3?lang=en")
    assert page.get_attribute("[data-testid=verdict]", "data-verified") == "true"
    page.goto(f"{tampered.url}/ui/records/plant-a-gw1/2?lang=en")
    assert_accessible(page)
    fits(page)
    shoot(page, "records-reading-tampered")


def test_a_changed_root_fails_the_path_the_anchor_and_the_signature(
        tampered: Tampered, page: Any) -> None:
    sign_in(page, tampered.url, tampered.ds.government)
    page.goto(f"{tampered.url}/ui/records/plant-a-gw1/12?lang=en")
    got = step_states(page)
    assert got["leaf"] == ("true", "passed")
    assert got["merkle"] == got["anchor"] == got["signature"] == ("false", "failed")
    assert page.get_attribute("[data-testid=verdict]", "data-verified") == "false"
    hh = page.locator("li[data-step=anchor] tr[data-compare=header_hash]")
    assert hh.get_attribute("data-same") == "false"
    assert hx(tampered.ds.gws["a"].headers[2].hash()) in hh.inner_text()


def test_a_changed_signature_fails_the_signature_step_only(tampered: Tampered,
                                                           page: Any) -> None:
    sign_in(page, tampered.url, tampered.ds.government)
    page.goto(f"{tampered.url}/ui/records/plant-a-gw1/18?lang=en")
    got = step_states(page)
    assert [got[s][1] for s in STEPS] == ["passed", "passed", "passed", "failed",
                                          "not-applicable"]
    assert "does NOT verify" in page.inner_text("li[data-step=signature]")
    ok, text, _ = verdict(page)
    assert ok == "false" and text.startswith("✗ NOT verified: step 4 (signature) failed.")
    # the bundle is still given: checked offline, its signature fails there too
    assert page.get_attribute("[data-testid=bundle]", "href") == "/v1/records/plant-a-gw1/18/proof"


def test_record_signatures_are_checked_too(tampered: Tampered, page: Any) -> None:
    sign_in(page, tampered.url, tampered.ds.government)
    page.goto(f"{tampered.url}/ui/records/plant-b-gw1/1?lang=en")
    assert step_states(page)["record-signature"] == ("true", "passed")
    assert page.get_attribute("[data-testid=verdict]", "data-verified") == "true"
    page.goto(f"{tampered.url}/ui/records/plant-b-gw1/2?lang=en")
    assert step_states(page)["record-signature"] == ("false", "failed")
    assert page.get_attribute("[data-testid=verdict]", "data-verified") == "false"
    assert re.search(r"step 5 \(record signature\)", page.inner_text("[data-testid=verdict]"))


def test_every_message_the_pages_build_from_a_name_is_in_both_languages() -> None:
    """The keys the templates make from a name (``t("records.flag." + f.name)``) exist for
    every name that can come: each quality flag, step, step state, ingest state and
    comparison, each with English and Chinese text and the same fields."""
    import portal._ui_records  # noqa: F401  (registers the messages)
    from mrv_core import Quality
    from portal import _i18n
    from portal._proof_steps import DEPENDS

    cat = _i18n.catalogue()
    want = [f"records.flag.{q.name}" for q in Quality if q.value] + ["records.flag.RESERVED"]
    for step in DEPENDS:
        want += [f"records.step.{step}", f"records.step.{step}.how", f"records.short.{step}"]
    want += [f"records.state_word.{s}" for s in ("passed", "failed", "not-reached",
                                                 "not-applicable")]
    want += [f"records.state.{s}" for s in ("verified", "unanchored", "not-delivered",
                                            "quarantined")]
    want += [f"records.cmp.{c}" for c in ("leaf", "root", "range", "header_hash",
                                          "anchored_root", "ed25519", "valid", "invalid")]
    want += [f"records.fact.{f}" for f in ("message", "signature", "signing_key",
                                           "leaf_index", "proof_length")]
    want += [f"records.reading.kind.{k}" for k in ("reading", "derived", "audit")]
    missing = [k for k in want if k not in cat]
    assert not missing, missing
    assert all(re.search(r"[\u4e00-\u9fff]", cat[k][1]) for k in want), "Chinese text"


def test_the_pages_read_the_same_on_sqlite_and_postgresql(db_url: str) -> None:
    """The pages' data (the API's route functions and the stored leaves) on both databases:
    the proof holds for an untouched reading and fails at the leaf for a changed one."""
    from fastapi.testclient import TestClient

    from portal import create_app
    from portal._viewer import issue_token
    from tests.portal_data import addr

    ctx = make_context(db_url, clock=Clock())
    try:
        ds = load(ctx.engine)
        with ctx.engine.begin() as c:
            c.execute(sa.update(records).where(records.c.gateway_id == "plant-b-gw1",
                                               records.c.seq == 5)
                      .values(value=303.5, value_bits=signed_bits(303.5)))
            as_indexed(c)
        with TestClient(create_app(ctx, workers=[])) as client:
            client.cookies.set("mrv_session", issue_token(ctx, addr(ds.auditor))[0])

            def states(path: str) -> dict[str, str]:
                r = client.get(path)
                assert r.status_code == 200, r.text
                return dict(re.findall(r'data-step="([a-z-]+)" data-passed="[a-z]+" '
                                       r'data-state="([a-z-]+)"', r.text))

            assert states("/ui/records/plant-b-gw1/6?lang=en") == {
                "leaf": "passed", "merkle": "passed", "anchor": "passed",
                "signature": "passed", "record-signature": "not-applicable"}
            assert states("/ui/records/plant-b-gw1/5?lang=en") == {
                "leaf": "failed", "merkle": "failed", "anchor": "not-reached",
                "signature": "not-reached", "record-signature": "not-applicable"}
            page = client.get("/ui/batches/plant-b-gw1/2?lang=en&limit=3").text
            assert re.findall(r'<tr data-seq="(\d+)">', page) == ["5", "6", "7"]
            assert 'after=7"' in page.replace("&amp;", "&")
    finally:
        ctx.engine.dispose()


def test_the_page_rebuilds_every_kind_of_record_from_the_apis_answer() -> None:
    """``proof_case`` turns the API's ``RecordOut`` and ``BatchOut`` back into the record and
    header the gateway committed: a reading, a derived record and an audit record of one real
    batch pass every step; a derived record whose stored details are unreadable fails the
    leaf step with the reason."""
    import json as _json

    from ledger_client import Signer, build_header, gateway_key
    from mrv_core import AuditRecord, DerivedRecord, Quality, Reading
    from portal._routes_data import Anchoring, BatchOut, IngestState
    from portal._routes_records import RecordOut
    from portal._ui_records import proof_case

    signer = Signer(keccak256(b"kinds"))
    gw, t0 = "plant-k-gw1", 1_720_000_000 * 10**9
    recs = [
        Reading(gateway_id=gw, seq=1, point_id="stack.co2", ts_ns=t0, value=412.5,
                unit="mg/m3", quality=int(Quality.MANUAL), source="modbus:cems"),
        DerivedRecord(gateway_id=gw, seq=2, point_id="stack.co2", derivation="hour-mean",
                      period_start_ns=t0, period_end_ns=t0 + 3600 * 10**9, value=410.25,
                      unit="mg/m3", quality=int(Quality.INSUFFICIENT), from_seq=1, to_seq=1),
        AuditRecord(gateway_id=gw, seq=3, ts_ns=t0 + 5, category="config", subject="points",
                    payload='{"changed":["stack.co2"]}'),
    ]
    leaves = [record_leaf(r) for r in recs]
    h = build_header(gateway_id=gw, seq=1, prev_hash=bytes(32),
                     records=[(r.seq, t0, leaf) for r, leaf in zip(recs, leaves, strict=True)])
    b = BatchOut(gateway_id=gw, seq=1, gateway_key=hx(gateway_key(gw)), enterprise="0x" + "a" * 40,
                 header_hash=hx(h.hash()), root=hx(h.root), prev_hash=hx(h.prev_hash),
                 count=h.count, first_record_seq=1, last_record_seq=3, first_ts_ns=h.first_ts_ns,
                 last_ts_ns=h.last_ts_ns, co2e_scope1_g=0, co2e_scope2_g=0, co2e_scope3_g=0,
                 signature=hx(signer.sign(h.hash())),
                 anchored=Anchoring(block_number=7, tx_hash=hx(bytes(32)), period=1),
                 ingest=IngestState(state="verified"))

    def out(r: Any, **kw: Any) -> RecordOut:
        base: dict[str, Any] = dict(gateway_id=gw, seq=r.seq, batch_seq=1, enterprise=b.enterprise,
                                    point_id="", ts_ns=0, value=None, value_bits="0x" + "0" * 16,
                                    unit="", quality=0, flagged=False, source="", extra=None,
                                    leaf=hx(record_leaf(r)), record_signature=None)
        base.update(kw)
        return RecordOut(**base)

    def bits(v: float) -> str:
        return f"0x{signed_bits(v) & (2**64 - 1):016x}"

    d = recs[1]
    assert isinstance(d, DerivedRecord)
    outs = [
        out(recs[0], kind="reading", point_id="stack.co2", ts_ns=t0, value=412.5,
            value_bits=bits(412.5), unit="mg/m3", quality=int(Quality.MANUAL),
            source="modbus:cems"),
        out(d, kind="derived", point_id="stack.co2", value=410.25, value_bits=bits(410.25),
            unit="mg/m3", quality=int(Quality.INSUFFICIENT), extra=_json.dumps(
                {"derivation": "hour-mean", "period_start_ns": d.period_start_ns,
                 "period_end_ns": d.period_end_ns, "from_seq": 1, "to_seq": 1})),
        out(recs[2], kind="audit", ts_ns=t0 + 5, source="config", point_id="points",
            extra='{"changed":["stack.co2"]}'),
    ]
    for o in outs:
        steps = check_steps(proof_case(o, b, signer.public_key, [1, 2, 3], leaves))
        assert verified(steps), (o.kind, [(s.name, s.detail) for s in steps if not s.passed])
    broken = outs[1].model_copy(update={"extra": '{"derivation": "hour-mean"}'})
    steps = check_steps(proof_case(broken, b, signer.public_key, [1, 2, 3], leaves))
    assert steps[0].state == "failed" and "extra fields are not readable" in steps[0].detail
    # a batch the portal holds only part of: no proof, and the page says why
    steps = check_steps(proof_case(outs[0], b, signer.public_key, [1, 3], [leaves[0], leaves[2]]))
    assert steps[1].state == "failed" and "holds 2 of the batch's 3 records" in steps[1].detail
