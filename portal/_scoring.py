"""Rankings and the green index: pure functions over plain values (docs/portal.md).

Nothing here reads the database or the clock: ``_scoring_queries.py`` gathers an
:class:`EnterprisePeriod` per enterprise, these functions rank and score them. All arithmetic is
exact (``fractions.Fraction`` and ``decimal.Decimal``); a figure is rounded only where the
method says so, so that anyone can recompute a rank or a score by hand from what the API shows.

Method version: ``ranking/v1`` and ``green-index/v1``. A change of any rule or constant here is
a new version (the API names the version with every answer).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Literal

RANKING_METHOD = "ranking/v1"
GREEN_INDEX_METHOD = "green-index/v1"

NS = 1_000_000_000
DAY_NS = 86_400 * NS
G_PER_TONNE = 1_000_000

# -- the prior-year period (year-on-year change, green-index trend) ----------------------------

#: a period's length may differ from the period a year later by at most this share (months of
#: 28..31 days, a leap year's February and its year)
YOY_LENGTH_TOLERANCE = Fraction(1, 10)
#: the prior period's start may be off the date one calendar year earlier by at most half the
#: period's length, and never more than this
YOY_MAX_START_OFFSET_NS = 16 * DAY_NS

# -- the green index: weights (percent; they sum to 100) -----------------------------------------

#: verified emissions against the prior-year period
W_TREND = 25
#: emissions intensity against the industry's benchmark
W_INTENSITY = 30
#: the readings' data quality (capture rate and flagged share)
W_QUALITY = 20
#: confirmed findings and penalties of the period
W_FINDINGS = 15
#: compliance of the enterprise's closed periods so far
W_COMPLIANCE = 10

#: sub-score of a component that cannot be computed for want of history or figures (trend,
#: intensity, compliance history): neither a reward nor a penalty
NEUTRAL = Fraction(50)
#: trend: sub-score points lost per percentage point of increase (gained per point of decrease);
#: 50 at no change, 100 at -20 %, 0 at +20 %
TREND_POINTS_PER_PCT = Fraction(5, 2)
#: intensity: the intensity/benchmark ratio at which the sub-score reaches 0 (100 at
#: ratio <= INTENSITY_ZERO_AT - 1, 50 at the benchmark)
INTENSITY_ZERO_AT = Fraction(3, 2)
#: findings: points lost per confirmed finding, by kind (1 abnormal data, 2 falsified data)
FINDING_POINTS_ABNORMAL = 25
FINDING_POINTS_FALSIFIED = 50
#: findings: points lost per unit of (penalty / emissions), capped at 1
PENALTY_POINTS = 100
#: compliance history: at most this many closed periods (the latest) count
COMPLIANCE_LOOKBACK = 8

assert W_TREND + W_INTENSITY + W_QUALITY + W_FINDINGS + W_COMPLIANCE == 100


class Compliance(enum.IntEnum):
    """``Allowances.Compliance``: the live status (the contract's ``compliance`` getter)."""

    OPEN = 0  # the period is not closed yet
    UNVERIFIED = 1  # closed without verified emissions
    COMPLIANT = 2
    NON_COMPLIANT = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class FindingKind(enum.IntEnum):
    ABNORMAL = 1
    FALSIFIED = 2


@dataclass(frozen=True, slots=True)
class PeriodInfo:
    period_id: int
    start_ns: int  # inclusive
    end_ns: int  # exclusive
    closed: bool

    @property
    def length_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass(frozen=True, slots=True)
class Account:
    """``Allowances.accountOf`` of one enterprise in one period (grams CO2e)."""

    allocated_g: int = 0
    surrendered_g: int = 0
    verified_g: int = 0
    penalty_g: int = 0
    penalty_deducted_g: int = 0
    has_verified: bool = False


@dataclass(frozen=True, slots=True)
class ReadingQuality:
    """Counts over the enterprise's readings (records of kind 1) with ``ts_ns`` in the period."""

    readings: int = 0
    with_value: int = 0  # value is a number (not NaN)
    flagged: int = 0  # quality & mrv_core.INVALID != 0

    @property
    def capture_rate(self) -> Fraction | None:
        return Fraction(self.with_value, self.readings) if self.readings else None

    @property
    def flagged_share(self) -> Fraction | None:
        return Fraction(self.flagged, self.readings) if self.readings else None


@dataclass(frozen=True, slots=True)
class EnterprisePeriod:
    """Everything ranking and scoring need of one enterprise in one period."""

    enterprise: str
    name: str
    industry_code: str
    region: str
    period: PeriodInfo
    #: scope 1 + 2 + 3 from the chain's ``emissionsOf`` (None: no batch in the period)
    reported_g: int | None = None
    account: Account | None = None
    #: output figure (MWh, t clinker, ...): the benchmark allocation's first, else portal.yaml
    output: Fraction | None = None
    output_source: Literal["chain", "config"] | None = None
    output_unit: str = ""
    #: the industry's benchmark for the period (grams CO2e per unit of output)
    benchmark_g_per_unit: int | None = None
    quality: ReadingQuality = ReadingQuality()
    reports_filed: int = 0
    findings_confirmed_abnormal: int = 0
    findings_confirmed_falsified: int = 0
    findings_pending: int = 0
    #: the prior-year period (:func:`prior_year_period`) and the enterprise's figures there
    prior_period: PeriodInfo | None = None
    prior_reported_g: int | None = None
    prior_account: Account | None = None
    #: compliance of the enterprise's closed periods ending no later than this one, any order
    compliance_history: tuple[tuple[int, Compliance], ...] = field(default=())

    @property
    def verified_g(self) -> int | None:
        return verified_of(self.account)

    @property
    def findings_confirmed(self) -> int:
        return self.findings_confirmed_abnormal + self.findings_confirmed_falsified


def verified_of(account: Account | None) -> int | None:
    return account.verified_g if account is not None and account.has_verified else None


def emissions_basis(reported_g: int | None, account: Account | None
                    ) -> tuple[int, Literal["verified", "reported"]] | None:
    """The emissions figure a ranking uses: verified when the period has verified emissions
    (an auditor's report or a confirmed finding), else reported (the chain's batch sums)."""
    v = verified_of(account)
    if v is not None:
        return v, "verified"
    if reported_g is not None:
        return reported_g, "reported"
    return None


def compliance_of(account: Account | None, closed: bool) -> Compliance:
    """``Allowances.compliance``: Open until the period closes; then Unverified without verified
    emissions, else Compliant when surrendered >= verified + penalty - penalty deducted."""
    if not closed:
        return Compliance.OPEN
    a = account or Account()
    if not a.has_verified:
        return Compliance.UNVERIFIED
    owed = a.verified_g + a.penalty_g - a.penalty_deducted_g
    return Compliance.COMPLIANT if a.surrendered_g >= owed else Compliance.NON_COMPLIANT


def verification_status(ep: EnterprisePeriod) -> Literal["corrected", "verified", "unverified"]:
    """``corrected``: a finding was confirmed (verified emissions set by government);
    ``verified``: an auditor's report holds the verified emissions; else ``unverified``."""
    if ep.findings_confirmed:
        return "corrected"
    if ep.reports_filed and ep.verified_g is not None:
        return "verified"
    return "unverified"


# -- the prior-year period --------------------------------------------------------------------


def one_year_earlier_ns(ts_ns: int) -> int:
    """The same UTC calendar date and time one year earlier (29 February becomes 28)."""
    secs, rem = divmod(ts_ns, NS)
    t = dt.datetime.fromtimestamp(secs, tz=dt.UTC)
    try:
        earlier = t.replace(year=t.year - 1)
    except ValueError:  # 29 February
        earlier = t.replace(year=t.year - 1, day=28)
    return int(earlier.timestamp()) * NS + rem


def prior_year_period(p: PeriodInfo, periods: Iterable[PeriodInfo]) -> PeriodInfo | None:
    """The period "of the same length that starts about a year earlier" than ``p``.

    Target start: ``p.start`` one calendar year earlier (:func:`one_year_earlier_ns`). A
    candidate ends no later than ``p`` starts, its length differs from ``p``'s by at most
    ``YOY_LENGTH_TOLERANCE`` of ``p``'s, and its start is within min(``p``'s length / 2,
    ``YOY_MAX_START_OFFSET_NS``) of the target. Of several, the one whose start is nearest the
    target; on a tie, the lower period id."""
    target = one_year_earlier_ns(p.start_ns)
    max_offset = min(Fraction(p.length_ns, 2), Fraction(YOY_MAX_START_OFFSET_NS))
    best: tuple[int, int, PeriodInfo] | None = None
    for q in periods:
        if q.period_id == p.period_id or q.end_ns > p.start_ns:
            continue
        if abs(q.length_ns - p.length_ns) > YOY_LENGTH_TOLERANCE * p.length_ns:
            continue
        off = abs(q.start_ns - target)
        if off > max_offset:
            continue
        key = (off, q.period_id, q)
        if best is None or key[:2] < best[:2]:
            best = key
    return best[2] if best else None


def change(now: int | None, before: int | None) -> Fraction | None:
    """(now - before) / before; None when either is missing or ``before`` is 0."""
    if now is None or before is None or before == 0:
        return None
    return Fraction(now - before, before)


# -- rankings ---------------------------------------------------------------------------------

RankBy = Literal["industry", "region"]


@dataclass(frozen=True, slots=True)
class RankEntry:
    ep: EnterprisePeriod
    rank: int | None  # None: unranked (``unranked_reason`` says why)
    unranked_reason: str | None
    emissions_g: int | None
    emissions_basis: Literal["verified", "reported"] | None
    #: grams CO2e per unit of output (t CO2e per unit = this / 1e6)
    intensity_g_per_unit: Fraction | None
    #: intensity / the industry's benchmark
    benchmark_ratio: Fraction | None
    yoy_change: Fraction | None
    prior_emissions_g: int | None
    compliance: Compliance
    verification: Literal["corrected", "verified", "unverified"]


def _unranked(ep: EnterprisePeriod, by: RankBy, basis: tuple[int, str] | None,
              intensity: Fraction | None, ratio: Fraction | None) -> str | None:
    if basis is None:
        return "no emissions data for the period"
    if ep.output is None or ep.output <= 0:
        return "no output figure for the period"
    if by == "region" and ratio is None:
        return "no benchmark of its industry for the period (regions compare intensity " \
               "against each industry's benchmark)"
    assert intensity is not None
    return None


def rank_key(e: RankEntry, by: RankBy) -> tuple[Fraction, Fraction, Fraction]:
    """The ordering (ascending: first is best): the intensity (``by=industry``) or the
    intensity/benchmark ratio (``by=region``); then the higher capture rate; then the lower
    flagged share. Missing data quality (no readings) counts as capture 0 and flagged 1."""
    primary = e.intensity_g_per_unit if by == "industry" else e.benchmark_ratio
    assert primary is not None
    q = e.ep.quality
    capture = q.capture_rate if q.capture_rate is not None else Fraction(0)
    flagged = q.flagged_share if q.flagged_share is not None else Fraction(1)
    return primary, -capture, flagged


def group_of(ep: EnterprisePeriod, by: RankBy) -> str:
    return ep.industry_code if by == "industry" else ep.region


def rank_group(eps: Sequence[EnterprisePeriod], by: RankBy) -> list[RankEntry]:
    """Rank the enterprises of one group (one industry or one region) in one period.

    Ranked entries come first, by :func:`rank_key`; entries equal on the whole key share a rank
    (competition ranking: 1, 2, 2, 4) and are listed by address. Unranked entries (no emissions
    data, no output figure, or, by region, no benchmark) follow by address with rank None."""
    entries: list[RankEntry] = []
    for ep in eps:
        basis = emissions_basis(ep.reported_g, ep.account)
        intensity = (Fraction(basis[0]) / ep.output
                     if basis is not None and ep.output is not None and ep.output > 0 else None)
        ratio = (intensity / ep.benchmark_g_per_unit
                 if intensity is not None and ep.benchmark_g_per_unit else None)
        prior = (emissions_basis(ep.prior_reported_g, ep.prior_account)
                 if ep.prior_period is not None else None)
        reason = _unranked(ep, by, basis, intensity, ratio)
        entries.append(RankEntry(
            ep=ep, rank=None, unranked_reason=reason,
            emissions_g=basis[0] if basis else None,
            emissions_basis=basis[1] if basis else None,
            intensity_g_per_unit=intensity, benchmark_ratio=ratio,
            yoy_change=change(basis[0] if basis else None, prior[0] if prior else None),
            prior_emissions_g=prior[0] if prior else None,
            compliance=compliance_of(ep.account, ep.period.closed),
            verification=verification_status(ep)))
    ranked = sorted((e for e in entries if e.unranked_reason is None),
                    key=lambda e: (rank_key(e, by), e.ep.enterprise))
    out: list[RankEntry] = []
    prev_key: tuple[Fraction, Fraction, Fraction] | None = None
    rank = 0
    for i, e in enumerate(ranked, start=1):
        k = rank_key(e, by)
        if k != prev_key:
            rank, prev_key = i, k
        out.append(_with_rank(e, rank))
    out.extend(sorted((e for e in entries if e.unranked_reason is not None),
                      key=lambda e: e.ep.enterprise))
    return out


def _with_rank(e: RankEntry, rank: int) -> RankEntry:
    return RankEntry(ep=e.ep, rank=rank, unranked_reason=None, emissions_g=e.emissions_g,
                     emissions_basis=e.emissions_basis,
                     intensity_g_per_unit=e.intensity_g_per_unit,
                     benchmark_ratio=e.benchmark_ratio, yoy_change=e.yoy_change,
                     prior_emissions_g=e.prior_emissions_g, compliance=e.compliance,
                     verification=e.verification)


def rankings(eps: Sequence[EnterprisePeriod], by: RankBy,
             group: str | None = None) -> dict[str, list[RankEntry]]:
    """Rankings of every group (or of ``group`` only), groups in code order."""
    groups: dict[str, list[EnterprisePeriod]] = {}
    for ep in eps:
        g = group_of(ep, by)
        if group is None or g == group:
            groups.setdefault(g, []).append(ep)
    if group is not None:
        groups.setdefault(group, [])
    return {g: rank_group(groups[g], by) for g in sorted(groups)}


# -- the green index ----------------------------------------------------------------------------

ComponentName = Literal["trend", "intensity", "data_quality", "findings", "compliance"]

_TWO = Decimal("0.01")
_ONE = Decimal("0.1")


def round2(x: Fraction) -> Decimal:
    """A sub-score as shown: two decimals, halves away from zero."""
    return _exact(x).quantize(_TWO, ROUND_HALF_UP)


def _exact(x: Fraction) -> Decimal:
    # Decimal division at 28 significant digits: exact when the denominator divides a power of
    # ten (so an exact half rounds as a half), otherwise far finer than any rounding applied
    return Decimal(x.numerator) / Decimal(x.denominator)


def clamp(x: Fraction, lo: int = 0, hi: int = 100) -> Fraction:
    return max(Fraction(lo), min(Fraction(hi), x))


@dataclass(frozen=True, slots=True)
class Component:
    name: ComponentName
    weight: int  # percent
    sub_score: Decimal  # 0..100, two decimals
    #: weight x sub_score / 100 (exact: at most four decimals)
    points: Decimal
    #: why the sub-score is what it is (which rule applied)
    rule: str
    inputs: dict[str, int | str | bool | Decimal | list[dict[str, int | str]] | None]


@dataclass(frozen=True, slots=True)
class GreenIndex:
    ep: EnterprisePeriod
    score: Decimal  # 0..100, one decimal: the sum of the components' points, rounded
    components: tuple[Component, ...]


def _dec(x: Fraction | None, places: int = 6) -> Decimal | None:
    """An input shown to the bank (rounded to ``places`` decimals; sub-scores are computed
    from the exact value)."""
    if x is None:
        return None
    return _exact(x).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)


def _component(name: ComponentName, weight: int, sub: Fraction, rule: str,
               **inputs: int | str | bool | Decimal | list[dict[str, int | str]] | None
               ) -> Component:
    s = round2(clamp(sub))
    return Component(name=name, weight=weight, sub_score=s, points=s * weight / 100,
                     rule=rule, inputs=dict(inputs))


def trend_component(ep: EnterprisePeriod) -> Component:
    """Verified emissions against the prior-year period's verified emissions:
    50 - 2.5 x (percent change), clamped to 0..100; neutral 50 without both figures."""
    v, vp = ep.verified_g, verified_of(ep.prior_account)
    c = change(v, vp) if ep.prior_period is not None else None
    prior_id = ep.prior_period.period_id if ep.prior_period else None
    if ep.prior_period is None:
        rule, sub = "no prior-year period: neutral", NEUTRAL
    elif v is None or vp is None:
        rule, sub = "verified emissions missing in this or the prior-year period: neutral", NEUTRAL
    elif c is None:
        rule, sub = "prior-year verified emissions are 0: neutral", NEUTRAL
    else:
        rule, sub = "50 - 2.5 x change in percent", NEUTRAL - TREND_POINTS_PER_PCT * c * 100
    return _component("trend", W_TREND, sub, rule, verified_g=v, prior_period=prior_id,
                      prior_verified_g=vp, change=_dec(c))


def intensity_component(ep: EnterprisePeriod) -> Component:
    """Intensity (verified, else reported, emissions per unit of output) over the industry's
    benchmark, r: 100 x (1.5 - r), clamped to 0..100; neutral 50 without output, benchmark or
    emissions."""
    basis = emissions_basis(ep.reported_g, ep.account)
    out = ep.output if ep.output is not None and ep.output > 0 else None
    intensity = Fraction(basis[0]) / out if basis is not None and out is not None else None
    ratio = intensity / ep.benchmark_g_per_unit if intensity is not None and \
        ep.benchmark_g_per_unit else None
    if ratio is None:
        missing = ("emissions" if basis is None else "output figure" if out is None
                   else "industry benchmark")
        rule, sub = f"no {missing}: neutral", NEUTRAL
    else:
        rule, sub = "100 x (1.5 - intensity / benchmark)", (INTENSITY_ZERO_AT - ratio) * 100
    return _component("intensity", W_INTENSITY, sub, rule,
                      emissions_g=basis[0] if basis else None,
                      emissions_basis=basis[1] if basis else None,
                      output=_dec(out), output_source=ep.output_source,
                      output_unit=ep.output_unit,
                      intensity_g_per_unit=_dec(intensity),
                      benchmark_g_per_unit=ep.benchmark_g_per_unit, ratio=_dec(ratio))


def quality_component(ep: EnterprisePeriod) -> Component:
    """100 x capture rate x (1 - flagged share); 0 without readings."""
    q = ep.quality
    cr, fs = q.capture_rate, q.flagged_share
    if cr is None or fs is None:
        rule, sub = "no readings in the period: 0", Fraction(0)
    else:
        rule, sub = "100 x capture rate x (1 - flagged share)", 100 * cr * (1 - fs)
    return _component("data_quality", W_QUALITY, sub, rule, readings=q.readings,
                      with_value=q.with_value, flagged=q.flagged, capture_rate=_dec(cr),
                      flagged_share=_dec(fs))


def findings_component(ep: EnterprisePeriod) -> Component:
    """100 - 25 per confirmed abnormal-data finding - 50 per confirmed falsified-data finding
    - 100 x min(1, penalty / emissions), at least 0. Filed (undecided) and rejected findings
    do not count. Emissions: verified, else reported; a penalty with no emissions counts 1."""
    pen = ep.account.penalty_g if ep.account else 0
    basis = emissions_basis(ep.reported_g, ep.account)
    if pen == 0:
        share = Fraction(0)
    elif basis is None or basis[0] == 0:
        share = Fraction(1)
    else:
        share = min(Fraction(1), Fraction(pen, basis[0]))
    sub = (100 - FINDING_POINTS_ABNORMAL * ep.findings_confirmed_abnormal
           - FINDING_POINTS_FALSIFIED * ep.findings_confirmed_falsified - PENALTY_POINTS * share)
    return _component("findings", W_FINDINGS, sub,
                      "100 - 25 x abnormal - 50 x falsified - 100 x min(1, penalty / emissions)",
                      confirmed_abnormal=ep.findings_confirmed_abnormal,
                      confirmed_falsified=ep.findings_confirmed_falsified,
                      pending=ep.findings_pending, penalty_g=pen,
                      emissions_g=basis[0] if basis else None, penalty_share=_dec(share))


def compliance_component(ep: EnterprisePeriod) -> Component:
    """Share of compliant periods among the last ``COMPLIANCE_LOOKBACK`` closed periods (by
    period id) in which the enterprise has an account, ending no later than this period,
    x 100; neutral 50 with none."""
    hist = sorted(ep.compliance_history)[-COMPLIANCE_LOOKBACK:]
    shown: list[dict[str, int | str]] = [{"period": p, "status": c.label} for p, c in hist]
    if not hist:
        return _component("compliance", W_COMPLIANCE, NEUTRAL,
                          "no closed period with an account yet: neutral", periods=shown,
                          compliant=0, counted=0)
    ok = sum(1 for _, c in hist if c == Compliance.COMPLIANT)
    return _component("compliance", W_COMPLIANCE, Fraction(100 * ok, len(hist)),
                      "100 x compliant periods / closed periods", periods=shown,
                      compliant=ok, counted=len(hist))


def green_index(ep: EnterprisePeriod) -> GreenIndex:
    """The green index of one enterprise in one period: the weighted sum of five sub-scores
    (each 0..100, shown to two decimals), rounded to one decimal (halves up)."""
    comps = (trend_component(ep), intensity_component(ep), quality_component(ep),
             findings_component(ep), compliance_component(ep))
    total = sum((c.points for c in comps), Decimal(0))
    return GreenIndex(ep=ep, score=total.quantize(_ONE, ROUND_HALF_UP), components=comps)
