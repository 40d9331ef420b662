"""What every page of the web view relies on: the message catalogue (both languages, every key a
template or module uses), the locale's formatting, the language choice, the config section, the
vendored chart library, and the rules that keep pages self-contained (no inline script, no
asset from another origin, the security headers)."""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from portal import _i18n
from portal._config import UiSection
from portal._i18n import Fmt, pick_lang

ROOT = Path(__file__).resolve().parent.parent
PORTAL = ROOT / "portal"
TEMPLATES = PORTAL / "templates"


def _all_messages() -> dict[str, tuple[str, str]]:
    import portal._ui_app  # noqa: F401  (imports every page module: they register messages)

    return _i18n.catalogue()


def _fields(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f}


def test_every_message_has_both_languages_with_the_same_fields() -> None:
    cat = _all_messages()
    assert len(cat) > 50
    for key, (en, zh) in cat.items():
        assert en.strip() and zh.strip(), key
        assert _fields(en) == _fields(zh), f"{key}: {en!r} vs {zh!r}"


# a whole key: t("a.b") or t("a.b", x=...); t('role.' + r) builds keys at run time
_KEY_IN_TEMPLATE = re.compile(r"""\bt\(\s*["']([a-z0-9_.\-]+)["']\s*[,)]""")
_KEY_IN_CODE = re.compile(
    r"""(?:gettext\(\s*\w+\s*,\s*|\bt\(\s*|title=)["']([a-z0-9_]+\.[a-z0-9_.\-]+)["']""")


def test_every_key_a_template_or_page_module_uses_is_in_the_catalogue() -> None:
    cat = _all_messages()
    used: dict[str, str] = {}
    for p in TEMPLATES.rglob("*.html"):
        for k in _KEY_IN_TEMPLATE.findall(p.read_text()):
            used[k] = str(p.relative_to(ROOT))
    for p in PORTAL.glob("_ui*.py"):
        for k in _KEY_IN_CODE.findall(p.read_text()):
            used[k] = str(p.relative_to(ROOT))
    assert len(used) > 30
    missing = {k: where for k, where in used.items() if k not in cat}
    assert not missing, missing


def test_a_message_registered_twice_with_other_text_is_refused() -> None:
    _i18n.register({"test.same": ("Same", "相同")})
    _i18n.register({"test.same": ("Same", "相同")})  # the same text again is fine
    with pytest.raises(ValueError, match="twice"):
        _i18n.register({"test.same": ("Other", "其他")})
    with pytest.raises(ValueError, match="expected"):
        _i18n.register({"test.empty": ("", "空")})


@pytest.mark.parametrize(("query", "cookie", "accept", "want"), [
    ("zh", "en", "en-GB", "zh"),
    (None, "zh", "en-GB", "zh"),
    ("xx", None, "zh-CN,zh;q=0.9,en;q=0.8", "zh"),
    (None, None, "fr-FR, en-US;q=0.8", "en"),
    (None, None, "zh-Hant-TW", "zh"),
    (None, None, "fr", "en"),
    (None, None, None, "en"),
    (None, "de", "de-DE," * 300, "en"),  # a long header is cut, not parsed whole
])
def test_the_language_is_the_query_then_the_cookie_then_the_browser(
        query: str | None, cookie: str | None, accept: str | None, want: str) -> None:
    assert pick_lang(query, cookie, accept, "en") == want


def test_numbers_dates_and_units_follow_the_locale() -> None:
    en, zh = Fmt("en", "Asia/Shanghai"), Fmt("zh", "Asia/Shanghai")
    assert en.num(1234567.891, 2) == "1,234,567.89"
    assert zh.num(1234567.891, 2) == "1,234,567.89"
    assert en.tonnes(1_234_500_000) == "1,234.5\u00a0t CO₂e"
    assert zh.tonnes(1_234_500_000) == "1,234.5\u00a0吨 CO₂e"
    assert en.qty(12.5, "Nm3") == "12.5\u00a0Nm³"
    assert en.qty(12.5, "kWh", 0) == "12\u00a0kWh"  # CLDR rounds half to even
    assert en.qty(13.5, "kWh", 0) == "14\u00a0kWh"
    assert en.pct(0.125) == "12.5%"
    assert en.num(float("nan")) == en.num(None) == "–"
    # 2024-03-01 00:00 UTC is 08:00 in Shanghai
    s = 1709251200
    assert en.datetime_s(s) == "1 Mar 2024, 08:00:00"
    assert zh.datetime_s(s) == "2024年3月1日 08:00:00"
    assert zh.date_s(s) == "2024年3月1日"
    assert Fmt("en", "UTC").datetime_s(s) == "1 Mar 2024, 00:00:00"
    assert en.iso_ns(s * 10**9) == "2024-03-01T00:00:00Z"
    assert en.duration_s(180) == "3 minutes" and zh.duration_s(180) == "3分钟"
    assert "¥" in zh.money(9000) and "9,000" in zh.money(9000)
    assert en.short("0x" + "ab" * 20) == "0xabab…abab"


def test_the_ui_section_refuses_an_unknown_time_zone_and_bounds_its_numbers() -> None:
    assert UiSection(timezone="UTC").timezone == "UTC"
    with pytest.raises(ValidationError, match="unknown time zone"):
        UiSection(timezone="Mars/Olympus_Mons")
    with pytest.raises(ValidationError):
        UiSection(live_poll_s=0)
    with pytest.raises(ValidationError):
        UiSection(link_ttl_s=86_400)
    with pytest.raises(ValidationError):
        UiSection(default_lang="fr")  # type: ignore[arg-type]


def test_the_vendored_chart_library_is_the_pinned_npm_package() -> None:
    pkg = json.loads((ROOT / "package.json").read_text())
    installed = json.loads((ROOT / "node_modules" / "uplot" / "package.json").read_text())
    assert pkg["dependencies"]["uplot"] == installed["version"]
    for name in ("uPlot.iife.min.js", "uPlot.min.css"):
        vendored = (PORTAL / "static" / "vendor" / name).read_bytes()
        assert vendored == (ROOT / "node_modules" / "uplot" / "dist" / name).read_bytes(), (
            f"portal/static/vendor/{name} differs from npm's uplot {installed['version']}: "
            "copy it again from node_modules/uplot/dist/")


_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>",
                            re.I)
_HANDLER = re.compile(r"\son[a-z]+\s*=", re.I)
_STYLE_ATTR = re.compile(r"\sstyle\s*=", re.I)
_EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", re.I)


def test_templates_hold_no_inline_script_style_or_foreign_asset() -> None:
    """What the Content-Security-Policy would block anyway: caught here, before a browser."""
    pages = list(TEMPLATES.rglob("*.html"))
    assert len(pages) >= 5
    for p in pages:
        text = p.read_text()
        where = str(p.relative_to(ROOT))
        assert not _INLINE_SCRIPT.search(text), f"{where}: inline <script>"
        assert not _HANDLER.search(text), f"{where}: an on...= handler"
        assert not _STYLE_ATTR.search(text), f"{where}: a style= attribute"
        assert not _EXTERNAL.search(text), f"{where}: an asset from another origin"


def test_pages_carry_the_security_headers_and_assets_are_served(ui_portal: Any) -> None:
    import httpx

    with httpx.Client(base_url=ui_portal.url) as c:
        r = c.get("/ui/login")
        assert r.status_code == 200
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "same-origin"
        for asset in re.findall(r"""(?:src|href)="(/ui/static/[^"]+)\"""", r.text):
            got = c.get(asset)
            assert got.status_code == 200 and len(got.content) > 100, asset
        # the API keeps its own headers (no CSP meant for pages)
        assert "content-security-policy" not in c.get("/v1/health").headers
        assert c.get("/", follow_redirects=False).headers["location"] == "/ui/"
        # an unknown page is a page, not JSON
        r = c.get("/ui/no-such-page?lang=zh")
        assert r.status_code == 404 and "错误 404" in r.text


def test_the_sample_portal_yaml_in_the_docs_is_valid() -> None:
    """docs/portal.md's portal.yaml (every key with its default) is a config the portal takes,
    the web view's section included."""
    import yaml

    from portal import PortalConfig

    doc = (ROOT / "docs" / "portal.md").read_text()
    start = doc.index("`portal.yaml` (every key")
    block = doc[doc.index("```yaml\n", start) + 8: doc.index("```", doc.index("```yaml\n", start) + 8)]
    cfg = PortalConfig.model_validate(yaml.safe_load(block))
    assert cfg.ui.telemetry is not None and cfg.ui.telemetry.broker == "mqtt.internal:1883"
    assert cfg.ui.timezone == "Asia/Shanghai" and cfg.ui.link_ttl_s == 300


def test_every_screenshot_the_docs_show_exists_and_a_browser_test_writes_it() -> None:
    """docs/portal.md shows a screenshot of each page (refreshed from a test run by
    scripts/docs-screenshots.sh); each is a PNG in docs/screenshots that a browser test
    writes, so none is a picture of a page that no longer exists."""
    doc = (ROOT / "docs" / "portal.md").read_text()
    names = sorted(set(re.findall(r"\(screenshots/([a-z0-9-]+)\.png\)", doc)))
    pages = {"overview", "enterprises", "enterprise", "records-batch",
             "records-reading-verified", "records-reading-tampered", "rankings", "market",
             "verification", "telemetry", "login-link"}
    assert pages <= set(names), pages - set(names)
    tests_text = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_portal_ui_*.py"))
    for name in names:
        png = ROOT / "docs" / "screenshots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f'"{name}"' in tests_text, f"no browser test writes {name}.png"
