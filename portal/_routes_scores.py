"""``GET /v1/rankings`` and ``GET /v1/enterprises/{address}/green-index``
(docs/portal.md).

Rankings are published aggregates: any signed-in viewer gets them. A green index is an
enterprise's own data: government and auditors see any, an enterprise its own, a financial
institution only while the enterprise's on-chain grant (``grantDataAccess``) holds."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from portal._access import Resource
from portal._api_common import Access, access
from portal._context import PortalContext, context_of
from portal._errors import ApiProblem
from portal._scoring import (
    G_PER_TONNE,
    GREEN_INDEX_METHOD,
    RANKING_METHOD,
    Component,
    PeriodInfo,
    RankEntry,
    compliance_of,
    green_index,
    rankings,
    verification_status,
)
from portal._scoring_queries import (
    OutputTable,
    QualityCache,
    Scope,
    data_version,
    gather,
    output_table,
    period_by_id,
)
from portal._viewer import Viewer, current_viewer

log = logging.getLogger("mrv.portal.scores")

router = APIRouter(tags=["scores"])

ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
PeriodId = Annotated[int, Query(ge=1, le=2**32 - 1, description="the compliance period's id")]
ComplianceLabel = Literal["open", "unverified", "compliant", "non_compliant"]
VerificationLabel = Literal["corrected", "verified", "unverified"]

_state_lock = threading.Lock()


@dataclass
class ScoringState:
    """What the scoring routes keep per app: portal.yaml's output figures by (enterprise,
    period), and the data-quality cache."""

    outputs: OutputTable
    quality: QualityCache


async def scoring_state(request: Request) -> ScoringState:
    """The app's scoring state (created on first use; a FastAPI dependency)."""
    with _state_lock:
        st: ScoringState | None = getattr(request.app.state, "scoring", None)
        if st is None:
            ctx: PortalContext = request.app.state.ctx
            st = ScoringState(output_table(ctx.config.outputs), QualityCache())
            request.app.state.scoring = st
        return st


def _f(x: Fraction | None) -> float | None:
    return float(x) if x is not None else None


class PeriodOut(BaseModel):
    period_id: int
    start_ns: int = Field(description="inclusive, ns since the Unix epoch (UTC)")
    end_ns: int = Field(description="exclusive")
    closed: bool

    @classmethod
    def of(cls, p: PeriodInfo) -> PeriodOut:
        return cls(period_id=p.period_id, start_ns=p.start_ns, end_ns=p.end_ns, closed=p.closed)


class RankingEntryOut(BaseModel):
    rank: int | None = Field(description="1 is best; equal keys share a rank; null: unranked")
    unranked_reason: str | None
    enterprise: str
    name: str
    industry_code: str
    region: str
    emissions_g: int | None = Field(description="the emissions the intensity uses")
    emissions_basis: Literal["verified", "reported"] | None
    reported_g: int | None = Field(description="the chain's emissionsOf, scope 1+2+3")
    verified_g: int | None
    output: float | None
    output_unit: str
    output_source: Literal["chain", "config"] | None
    intensity_t_per_unit: float | None = Field(description="t CO2e per unit of output")
    benchmark_t_per_unit: float | None
    benchmark_ratio: float | None = Field(description="intensity / the industry's benchmark")
    yoy_change: float | None = Field(
        description="(emissions - prior-year emissions) / prior-year emissions; -0.1 is -10 %")
    prior_period: int | None
    prior_emissions_g: int | None
    readings: int
    capture_rate: float | None = Field(description="readings with a value / all readings")
    flagged_share: float | None = Field(description="readings with an invalid quality bit / all")
    verification: VerificationLabel
    reports_filed: int
    findings_confirmed: int
    findings_pending: int
    compliance: ComplianceLabel

    @classmethod
    def of(cls, e: RankEntry) -> RankingEntryOut:
        ep = e.ep
        q = ep.quality
        return cls(
            rank=e.rank, unranked_reason=e.unranked_reason, enterprise=ep.enterprise,
            name=ep.name, industry_code=ep.industry_code, region=ep.region,
            emissions_g=e.emissions_g, emissions_basis=e.emissions_basis,
            reported_g=ep.reported_g, verified_g=ep.verified_g, output=_f(ep.output),
            output_unit=ep.output_unit, output_source=ep.output_source,
            intensity_t_per_unit=_f(e.intensity_g_per_unit / G_PER_TONNE
                                    if e.intensity_g_per_unit is not None else None),
            benchmark_t_per_unit=(ep.benchmark_g_per_unit / G_PER_TONNE
                                  if ep.benchmark_g_per_unit else None),
            benchmark_ratio=_f(e.benchmark_ratio), yoy_change=_f(e.yoy_change),
            prior_period=ep.prior_period.period_id if ep.prior_period else None,
            prior_emissions_g=e.prior_emissions_g, readings=q.readings,
            capture_rate=_f(q.capture_rate), flagged_share=_f(q.flagged_share),
            verification=e.verification, reports_filed=ep.reports_filed,
            findings_confirmed=ep.findings_confirmed, findings_pending=ep.findings_pending,
            compliance=e.compliance.label)  # type: ignore[arg-type]


class RankingGroupOut(BaseModel):
    group: str = Field(description="the industry code or the region")
    enterprises: int
    ranked: int
    entries: list[RankingEntryOut]


class RankingsOut(BaseModel):
    method: str = Field(description="the method's version (docs/portal.md)")
    period: PeriodOut
    by: Literal["industry", "region"]
    ranked_on: Literal["intensity", "benchmark_ratio"]
    groups: list[RankingGroupOut]


@router.get("/v1/rankings", response_model=RankingsOut,
            summary="Rankings per industry or region in a period (published aggregates)")
def get_rankings(
    request: Request,
    ctx: Annotated[PortalContext, Depends(context_of)],
    viewer: Annotated[Viewer, Depends(current_viewer)],
    st: Annotated[ScoringState, Depends(scoring_state)],
    period: PeriodId,
    by: Annotated[Literal["industry", "region"], Query()] = "industry",
    group: Annotated[str | None, Query(min_length=1, max_length=64,
                                       description="one industry code or region")] = None,
) -> RankingsOut:
    # kept while neither the chain tables (the checkpoint) nor the stored readings (the
    # verified batches) change: rankings are the same for every viewer (_cache.py)
    def compute() -> RankingsOut:
        with ctx.engine.connect() as conn:
            p = period_by_id(conn, period)
            if p is None:
                ctx.metrics.inc("portal_scores_not_found")
                raise ApiProblem(404, "Not Found", f"no period {period} on the ledger")
            scope = (Scope(industry_code=group) if by == "industry" and group is not None
                     else Scope(region=group) if group is not None else Scope())
            eps = gather(conn, p, st.outputs, scope, quality=st.quality)
        ranked = rankings(eps, by, group)
        return RankingsOut(
            method=RANKING_METHOD, period=PeriodOut.of(p), by=by,
            ranked_on="intensity" if by == "industry" else "benchmark_ratio",
            groups=[RankingGroupOut(group=g, enterprises=len(es),
                                    ranked=sum(1 for e in es if e.rank is not None),
                                    entries=[RankingEntryOut.of(e) for e in es])
                    for g, es in ranked.items()])

    with ctx.engine.connect() as conn:
        version = (getattr(request.state, "chain_version", None), data_version(conn))
    out: RankingsOut = ctx.cache("rankings").get((period, by, group), version, compute)
    ctx.metrics.inc("portal_rankings_served")
    return out


# -- the green index ---------------------------------------------------------------------------

Num = float | None


class _ComponentOut(BaseModel):
    weight: int = Field(description="percent of the score")
    sub_score: float = Field(description="0..100, two decimals")
    points: float = Field(description="weight x sub_score / 100")
    rule: str = Field(description="the rule that gave the sub-score")


class TrendInputs(BaseModel):
    verified_g: int | None
    prior_period: int | None
    prior_verified_g: int | None
    change: Num = Field(description="(verified - prior) / prior, six decimals")


class TrendOut(_ComponentOut):
    inputs: TrendInputs


class IntensityInputs(BaseModel):
    emissions_g: int | None
    emissions_basis: Literal["verified", "reported"] | None
    output: Num
    output_source: Literal["chain", "config"] | None
    output_unit: str
    intensity_g_per_unit: Num
    benchmark_g_per_unit: int | None
    ratio: Num = Field(description="intensity / benchmark, six decimals")


class IntensityOut(_ComponentOut):
    inputs: IntensityInputs


class QualityInputs(BaseModel):
    readings: int
    with_value: int
    flagged: int
    capture_rate: Num
    flagged_share: Num


class QualityOut(_ComponentOut):
    inputs: QualityInputs


class FindingsInputs(BaseModel):
    confirmed_abnormal: int
    confirmed_falsified: int
    pending: int = Field(description="filed, not decided: not counted")
    penalty_g: int
    emissions_g: int | None
    penalty_share: Num = Field(description="min(1, penalty / emissions)")


class FindingsOut(_ComponentOut):
    inputs: FindingsInputs


class PeriodCompliance(BaseModel):
    period: int
    status: ComplianceLabel


class ComplianceInputs(BaseModel):
    periods: list[PeriodCompliance]
    compliant: int
    counted: int


class ComplianceOut(_ComponentOut):
    inputs: ComplianceInputs


class GreenComponentsOut(BaseModel):
    trend: TrendOut
    intensity: IntensityOut
    data_quality: QualityOut
    findings: FindingsOut
    compliance: ComplianceOut


class GreenIndexOut(BaseModel):
    method: str
    enterprise: str
    name: str
    industry_code: str
    region: str
    period: PeriodOut
    score: float = Field(description="0..100, one decimal: the sum of the components' points")
    verification: VerificationLabel
    compliance: ComplianceLabel
    components: GreenComponentsOut


def _inputs(c: Component) -> dict[str, object]:
    return {k: float(v) if isinstance(v, Decimal) else v for k, v in c.inputs.items()}


def _component_out(c: Component) -> dict[str, object]:
    return {"weight": c.weight, "sub_score": float(c.sub_score), "points": float(c.points),
            "rule": c.rule, "inputs": _inputs(c)}


@router.get("/v1/enterprises/{address}/green-index", response_model=GreenIndexOut,
            summary="The green index of an enterprise in a period, with every input")
def get_green_index(
    ctx: Annotated[PortalContext, Depends(context_of)],
    acc: Annotated[Access, Depends(access)],
    st: Annotated[ScoringState, Depends(scoring_state)],
    address: Annotated[str, Path(pattern=ADDRESS_PATTERN, description="the enterprise")],
    period: PeriodId,
) -> GreenIndexOut:
    enterprise = address.lower()
    # government and auditors: any; an enterprise: its own; finance: while the enterprise's
    # on-chain grant holds (logged); every refusal a 403 with the reason (and logged)
    acc.require(Resource.of(enterprise))
    with ctx.engine.connect() as conn:
        p = period_by_id(conn, period)
        if p is None:
            ctx.metrics.inc("portal_scores_not_found")
            raise ApiProblem(404, "Not Found", f"no period {period} on the ledger")
        eps = gather(conn, p, st.outputs, Scope(enterprise=enterprise), quality=st.quality,
                     with_history=True)
    if not eps:
        ctx.metrics.inc("portal_scores_not_found")
        raise ApiProblem(404, "Not Found", f"{enterprise} is not a certified enterprise")
    ep = eps[0]
    gi = green_index(ep)
    by_name = {c.name: _component_out(c) for c in gi.components}
    return GreenIndexOut.model_validate({
        "method": GREEN_INDEX_METHOD, "enterprise": ep.enterprise, "name": ep.name,
        "industry_code": ep.industry_code, "region": ep.region,
        "period": PeriodOut.of(p).model_dump(), "score": float(gi.score),
        "verification": verification_status(ep),
        "compliance": compliance_of(ep.account, p.closed).label,
        "components": by_name})
