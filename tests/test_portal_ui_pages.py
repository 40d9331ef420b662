"""Every page of the web view, for every role, on SQLite and on PostgreSQL: the status each role
gets (200, or the 403 page; never a 500) and the pages' own SQL on both databases. The browser
tests check what the pages show; this one checks that each renders everywhere."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from portal import create_app
from portal._viewer import issue_token
from tests.portal_data import addr, as_indexed, load, make_context


@pytest.fixture
def served(db_url: str) -> Iterator[tuple[Any, Any, TestClient]]:
    ctx = make_context(db_url)
    ds = load(ctx.engine)
    with ctx.engine.begin() as c:
        as_indexed(c)
    try:
        with TestClient(create_app(ctx)) as client:
            yield ctx, ds, client
    finally:
        ctx.engine.dispose()


def _pages(ds: Any) -> list[str]:
    a, b = addr(ds.a), addr(ds.b)
    return ["/ui/", "/ui/?period=2&group_by=industry", "/ui/?group_by=region",
            "/ui/enterprises", "/ui/enterprises?industry=C3011",
            f"/ui/enterprises/{a}", f"/ui/enterprises/{a}?period=2", f"/ui/enterprises/{b}",
            "/ui/batches/plant-a-gw1/2", "/ui/records/plant-a-gw1/8",
            "/ui/batches/plant-b-gw1/1", "/ui/records/plant-b-gw1/3",
            "/ui/rankings", "/ui/rankings?by=region", "/ui/market", "/ui/verification",
            "/ui/telemetry", "/ui/fragments/overview", f"/ui/fragments/enterprises/{a}/gateways",
            "/ui/fragments/telemetry"]


#: who gets 403 on which page (everything else answers 200)
def _refused(role: str, page: str, ds: Any) -> bool:
    government_only = ("/ui/fragments/overview", "/ui/telemetry", "/ui/fragments/telemetry")
    if role in ("government", "auditor", "regulator"):
        return False
    if page.startswith(government_only):
        return True
    owner_b = addr(ds.b) in page or "plant-b-gw1" in page
    if role == "a":
        return owner_b
    if role == "finance":  # A granted it access; B revoked it
        return owner_b
    raise AssertionError(role)


@pytest.mark.parametrize("role", ["government", "auditor", "regulator", "a", "finance"])
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_page_renders_for_every_role(served: tuple[Any, Any, TestClient], role: str,
                                           lang: str) -> None:
    ctx, ds, client = served
    who = getattr(ds, role)
    token, _ = issue_token(ctx, addr(who), ttl_s=3600)
    client.cookies.set("mrv_session", token)
    for page in _pages(ds):
        url = page + ("&" if "?" in page else "?") + f"lang={lang}"
        r = client.get(url, follow_redirects=False)
        if (page == "/ui/" or page.startswith("/ui/?")) and role in ("a", "finance"):
            # an enterprise goes to its own page, a bank to the register
            assert r.status_code == 303, (role, page, r.status_code)
            continue
        want = 403 if _refused(role, page, ds) else 200
        assert r.status_code == want, (role, url, r.status_code, r.text[-600:])
        assert r.headers["content-type"].startswith("text/html")
        if lang == "zh" and want == 200 and not page.startswith("/ui/fragments"):
            assert '<html lang="zh-Hans">' in r.text
