"""Signing a browser in to the portal's web view: the one-time link ``mrvctl login`` prints,
an injected EIP-1193 wallet, signing out, and what the session cookie may and may not do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from ledger_client import PortalRefused, portal_login_link
from tests.portal_data import addr
from tests.ui_support import shoot, sign_in

BIN = Path(sys.executable).parent


def test_mrvctl_login_prints_a_link_that_signs_a_browser_in_once(
        ui_portal: Any, page: Any, tmp_path: Path) -> None:
    gov = ui_portal.ds.government
    key = tmp_path / "gov.key"
    key.write_text(gov.key.hex())
    r = subprocess.run([str(BIN / "mrvctl"), "--key", str(key), "login", "--portal",
                        ui_portal.url], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    link = r.stdout.splitlines()[0]
    assert link.startswith(f"{ui_portal.url}/ui/login/")
    assert addr(gov) in r.stdout.lower() and "government" in r.stdout
    page.goto(link)
    assert page.inner_text("[data-testid=link-address]").lower() == addr(gov)
    shoot(page, "login-link")
    with page.expect_navigation():
        page.click("#link-continue")
    assert "/ui/login" not in page.url
    assert addr(gov)[:6] in page.inner_text("form.who")
    # the link is used up: a second browser gets a refusal, not a session
    other = page.context.browser.new_context()
    try:
        p2 = other.new_page()
        resp = p2.goto(link)
        assert resp is not None and resp.status == 410
        assert "used already" in p2.inner_text("[data-testid=problem-detail]")
        assert not [c for c in other.cookies() if c["name"] == "mrv_session"]
    finally:
        other.close()


def test_an_expired_link_signs_nobody_in(ui_portal: Any, page: Any) -> None:
    got = portal_login_link(ui_portal.url, ui_portal.ds.auditor)
    ui_portal.clock.now += (ui_portal.ctx.config.ui.link_ttl_s + 1) * 10**9
    try:
        resp = page.goto(got["url"])
        assert resp is not None and resp.status == 410
        assert "expired" in page.inner_text("[data-testid=problem-detail]")
    finally:
        ui_portal.clock.now -= (ui_portal.ctx.config.ui.link_ttl_s + 1) * 10**9


def test_an_account_without_a_role_gets_no_link(ui_portal: Any) -> None:
    with pytest.raises(PortalRefused, match=r"403: .*holds no role"):
        portal_login_link(ui_portal.url, ui_portal.ds.stranger)


def test_a_browser_wallet_signs_in_with_eip_1193(ui_portal: Any, page: Any) -> None:
    """The page asks ``window.ethereum`` (here a provider backed by the account's key, as a
    wallet extension is) for the account and a personal_sign of the portal's challenge."""
    who = ui_portal.ds.auditor
    asked: list[str] = []

    def wallet(method: str, params: list[Any]) -> Any:
        asked.append(method)
        if method == "eth_requestAccounts":
            return [who.address]
        if method == "personal_sign":
            message, account = params
            assert account == who.address
            return "0x" + Account.sign_message(encode_defunct(text=message),
                                               who.key).signature.hex()
        raise ValueError(method)

    page.expose_function("walletRequest", wallet)
    page.add_init_script("window.ethereum = {request: ({method, params}) =>"
                         " window.walletRequest(method, params || [])};")
    page.goto(f"{ui_portal.url}/ui/login?next=/ui/verification")
    with page.expect_navigation(url=lambda u: u.endswith("/ui/verification")):
        page.click("#wallet-login")
    assert asked == ["eth_requestAccounts", "personal_sign"]
    assert addr(who)[:6] in page.inner_text("form.who")


def test_without_a_wallet_the_page_says_so(ui_portal: Any, page: Any) -> None:
    page.goto(f"{ui_portal.url}/ui/login?lang=en")
    page.click("#wallet-login")
    assert "No wallet" in page.inner_text("#wallet-status")


def test_a_page_sends_a_stranger_to_sign_in_and_back(ui_portal: Any, page: Any) -> None:
    page.goto(f"{ui_portal.url}/ui/?lang=en")
    assert "/ui/login?next=%2Fui%2F%3Flang%3Den" in page.url


def test_signing_out_ends_the_session(ui_portal: Any, page: Any) -> None:
    sign_in(page, ui_portal.url, ui_portal.ds.government)
    with page.expect_navigation(url="**/ui/login?signed_out=1"):
        page.click("form.who button")
    assert not [c for c in page.context.cookies() if c["name"] == "mrv_session"]
    page.goto(f"{ui_portal.url}/ui/?lang=en")
    assert "/ui/login" in page.url


def test_the_session_cookie_is_httponly_and_the_api_reads_it_on_get_only(
        ui_portal: Any, page: Any) -> None:
    sign_in(page, ui_portal.url, ui_portal.ds.government)
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "mrv_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert page.evaluate("() => document.cookie").find("mrv_session") < 0
    jar = {"mrv_session": cookie["value"]}
    with httpx.Client(base_url=ui_portal.url, cookies=jar) as c:
        assert c.get("/v1/auth/me").json()["roles"] == ["government"]
        # a POST is never authorised by the cookie (no cross-site request can use it)
        r = c.post("/ui/logout", headers={"Origin": "https://evil.example"})
        assert r.status_code == 403


def test_posts_from_another_site_are_refused(ui_portal: Any) -> None:
    with httpx.Client(base_url=ui_portal.url) as c:
        got = portal_login_link(ui_portal.url, ui_portal.ds.government)
        code = got["url"].rsplit("/", 1)[1]
        r = c.post(f"/ui/login/{code}", headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and "another site" in r.text
        r = c.post(f"/ui/login/{code}")
        assert r.status_code == 403 and "without an Origin" in r.text
        # refused attempts did not use the link up
        r = c.post(f"/ui/login/{code}", headers={"Origin": ui_portal.url})
        assert r.status_code == 303 and "mrv_session" in r.headers["set-cookie"]
