"""The web view's two languages, Simplified Chinese and English: the message catalogue and the
locale's conventions for numbers, dates and units (Babel's CLDR data).

Each page module registers its own messages (``register``) as ``key: (English, 中文)``; a
template writes ``t("key")``. ``tests/test_portal_ui_i18n.py`` checks that every key a template
or module uses is in the catalogue in both languages. Formatting is pure: a ``Fmt`` is made
per request from the language and the portal's time zone."""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from babel import dates as bdates
from babel import numbers as bnumbers

Lang = Literal["en", "zh"]
LANGS: tuple[Lang, ...] = ("en", "zh")
#: Babel's locale of each language
LOCALE: dict[str, str] = {"en": "en_GB", "zh": "zh_Hans_CN"}

_CATALOGUE: dict[str, tuple[str, str]] = {}


def register(messages: Mapping[str, tuple[str, str]]) -> None:
    """Add ``messages`` (key → (English, Chinese)); a key registered twice with other text
    is a programming error."""
    for k, v in messages.items():
        old = _CATALOGUE.get(k)
        if old is not None and old != v:
            raise ValueError(f"message {k!r} registered twice with different text")
        if len(v) != 2 or not all(isinstance(x, str) and x for x in v):
            raise ValueError(f"message {k!r}: expected (English, Chinese), got {v!r}")
        _CATALOGUE[k] = v


def catalogue() -> dict[str, tuple[str, str]]:
    return dict(_CATALOGUE)


def gettext(lang: str, key: str, **kw: object) -> str:
    """The message ``key`` in ``lang``, with ``{name}`` fields filled from ``kw``. An unknown
    key comes back as itself (a test keeps that from happening)."""
    pair = _CATALOGUE.get(key)
    text = key if pair is None else pair[1 if lang == "zh" else 0]
    return text.format(**kw) if kw else text


def pick_lang(query: str | None, cookie: str | None, accept: str | None,
              default: Lang) -> Lang:
    """The page's language: ``?lang=`` first, then the language cookie, then the browser's
    Accept-Language (its first ``zh`` or ``en``), then ``default``."""
    for v in (query, cookie):
        if v in LANGS:
            return v
    for part in (accept or "")[:512].split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en"):
            return "en"
    return default


#: units as they are shown (superscripts, the subscript of CO₂)
_UNITS = {"m3": "m³", "Nm3": "Nm³", "mg/m3": "mg/m³", "mg/Nm3": "mg/Nm³", "m3/h": "m³/h",
          "Nm3/h": "Nm³/h", "tCO2e": "t CO₂e", "CO2": "CO₂", "degC": "°C", "C": "°C"}


@dataclass(frozen=True)
class Fmt:
    """Numbers, quantities and dates in the conventions of ``lang`` (a template's ``fmt``)."""

    lang: str
    tz: str = "Asia/Shanghai"

    @property
    def locale(self) -> str:
        return LOCALE.get(self.lang, "en_GB")

    def num(self, x: float | int | None, digits: int = 0) -> str:
        """A number with the locale's grouping and decimal sign; "–" for none or NaN."""
        if x is None or (isinstance(x, float) and not math.isfinite(x)):
            return "–"
        pattern = "#,##0" + ("." + "0" * digits if digits > 0 else "")
        return bnumbers.format_decimal(x, format=pattern, locale=self.locale)

    def pct(self, x: float | None, digits: int = 1) -> str:
        """A fraction (0.25) as a percentage (25.0 %)."""
        if x is None or not math.isfinite(x):
            return "–"
        pattern = "#,##0" + ("." + "0" * digits if digits > 0 else "") + "%"
        return bnumbers.format_percent(x, format=pattern, locale=self.locale)

    def unit(self, u: str) -> str:
        return _UNITS.get(u, u)

    def qty(self, x: float | int | None, unit: str, digits: int = 1) -> str:
        """A quantity with its unit: "1,234.5 kWh"."""
        if x is None:
            return "–"
        return f"{self.num(x, digits)}\u00a0{self.unit(unit)}" if unit else self.num(x, digits)

    def tonnes(self, grams: int | float | None, digits: int = 1) -> str:
        """A mass of CO₂-equivalent held in grams, in tonnes: "1,234.5 t CO₂e"."""
        if grams is None:
            return "–"
        unit = "吨 CO₂e" if self.lang == "zh" else "t CO₂e"
        return f"{self.num(grams / 1_000_000, digits)}\u00a0{unit}"

    def money(self, x: int | float | None) -> str:
        """An amount of money in yuan, as the locale writes CNY ("¥90.00"). The ledger keeps
        prices and trade values in fen: divide them by 100 first."""
        if x is None:
            return "–"
        return bnumbers.format_currency(x, "CNY", locale=self.locale)

    def _dt(self, seconds: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(seconds, tz=zoneinfo.ZoneInfo(self.tz))

    def datetime_s(self, seconds: int | float | None) -> str:
        """A moment (Unix seconds) in the portal's time zone, as the locale writes it."""
        if seconds is None or seconds <= 0:
            return "–"
        return bdates.format_datetime(self._dt(seconds), format="medium", locale=self.locale)

    def datetime_ns(self, ns: int | None) -> str:
        return "–" if ns is None else self.datetime_s(ns / 1e9)

    def date_s(self, seconds: int | float | None) -> str:
        if seconds is None or seconds <= 0:
            return "–"
        return bdates.format_date(self._dt(seconds).date(), format="medium", locale=self.locale)

    def iso_ns(self, ns: int | None) -> str:
        """The machine-readable form of a moment (a ``<time datetime>`` attribute)."""
        if ns is None:
            return ""
        return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).isoformat().replace("+00:00", "Z")

    def duration_s(self, seconds: float | None) -> str:
        """A span of time: "3 minutes", "3分钟"."""
        if seconds is None or not math.isfinite(seconds):
            return "–"
        return bdates.format_timedelta(dt.timedelta(seconds=seconds), threshold=1.5,
                                       locale=self.locale)

    def short(self, address: str | None) -> str:
        """An address shortened for a table: 0x1234…abcd."""
        if not address:
            return "–"
        return f"{address[:6]}…{address[-4:]}" if len(address) > 12 else address
