"""Browser tests of the portal's web view: Playwright driving the system's Chromium (installed
by ``make setup`` from the system's packages; Playwright never downloads a browser here), a
portal served over HTTP on a loopback port, sign-in as a person does it (``mrvctl login``'s
one-time link), screenshots for CI's log folder, and the accessibility checks (axe-core from
npm, run inside the page).

Screenshots go to ``$MRV_SCREENSHOTS`` or ``artifacts/screenshots`` in the checkout (``.ci/run``
prints where they are)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from eth_account.signers.local import LocalAccount

from ledger_client import portal_login_link  # the code mrvctl login runs

ROOT = Path(__file__).resolve().parent.parent
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
#: the viewports the pages must fit: a 1366×768 laptop, a tablet upright
LAPTOP = {"width": 1366, "height": 768}
TABLET = {"width": 768, "height": 1024}


def chromium_path() -> str:
    """The system's Chromium (Debian: /usr/bin/chromium)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError("Chromium is not installed: run make setup (it installs the system's "
                         "chromium package)")


def screenshot_dir() -> Path:
    d = Path(os.environ.get("MRV_SCREENSHOTS", str(ROOT / "artifacts" / "screenshots")))
    d.mkdir(parents=True, exist_ok=True)
    return d


def shoot(page: Any, name: str, *, full_page: bool = True) -> Path:
    """A screenshot of ``page`` as ``<name>.png`` in the screenshot folder."""
    path = screenshot_dir() / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


class HttpPortal:
    """The portal app over ``ctx`` served by uvicorn on a loopback port of its own (plain
    HTTP), in a thread; ``workers`` as ``create_app`` takes them."""

    def __init__(self, ctx: Any, workers: list[Any] | None = None) -> None:
        from portal import create_app

        self.ctx = ctx
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = uvicorn.Config(create_app(ctx, workers=workers or []), log_level="warning",
                             lifespan="on")
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self) -> HttpPortal:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise AssertionError("the portal did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


def sign_in(page: Any, portal_url: str, who: LocalAccount, *,
            ca_file: str | None = None) -> None:
    """Sign ``page``'s browser in as ``who`` the way a person does: ``mrvctl login``'s code
    signs the challenge and gets a one-time link; the browser opens it and continues."""
    link = portal_login_link(portal_url, who, ca_file=ca_file)
    page.goto(link["url"])
    with page.expect_navigation():
        page.click("#link-continue")
    assert "/ui/login" not in page.url, f"sign-in as {who.address} did not take: {page.url}"


def axe_violations(page: Any, *, impacts: tuple[str, ...] = ("serious", "critical")
                   ) -> list[dict[str, Any]]:
    """axe-core's WCAG 2 A/AA violations on the page as it is, of the given impacts. axe is
    evaluated through the browser's devtools protocol: the pages' CSP (script-src 'self')
    refuses the inline script tag ``page.add_script_tag`` would add, and the tests keep the
    CSP on."""
    page.evaluate(AXE.read_text() + "\n;0")
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {runOnly: {type: 'tag',
            values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))}));
    }""")
    return [v for v in result if v["impact"] in impacts]


def assert_accessible(page: Any) -> None:
    found = axe_violations(page)
    assert not found, "accessibility violations:\n" + json.dumps(found, indent=1,
                                                                 ensure_ascii=False)


def horizontal_overflow(page: Any) -> int:
    """How many CSS pixels the page is wider than the viewport (0: it fits)."""
    return int(page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"))


def browser_contexts(browser: Any, **kw: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport=LAPTOP, ignore_https_errors=True, **kw)
    try:
        yield ctx
    finally:
        ctx.close()
