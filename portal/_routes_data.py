"""The ledger's data as the API serves it: enterprises, carbon accounts, emissions over time
with data quality, batches with their anchoring and ingest state, the quarantine, reports,
findings, the market (offers, trades, prices) and the access log. Who sees what: ``_access``."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel

from mrv_core import INVALID
from portal._access import Kind, Resource
from portal._accounting import (
    DAY_NS,
    ComplianceName,
    bucket_start_ns,
    compliance,
    obligation,
    ratio,
    vwap,
)
from portal._api_common import (
    ADDRESS_RE,
    GATEWAY_ID_RE,
    I64,
    PROBLEMS,
    Access,
    AddressQ,
    CodeQ,
    DbRoute,
    GatewayQ,
    Page,
    Paging,
    PeriodQ,
    TimeQ,
    access,
    lower,
    paging,
)
from portal._api_tables import access_log
from portal._chain_tables import (
    accounts,
    balances,
    batches,
    emissions,
    enterprises,
    findings,
    gateways,
    offers,
    periods,
    reports,
    trades,
)
from portal._errors import ApiProblem
from portal._ingest_tables import ingest_batches, quarantine, records

router = APIRouter(prefix="/v1", responses=PROBLEMS, route_class=DbRoute)

AddressP = Annotated[str, Path(pattern=ADDRESS_RE, description="the enterprise's account")]
STATUS = {0: "none", 1: "active", 2: "suspended"}
FINDING_KIND = {0: "none", 1: "abnormal", 2: "falsified"}
FINDING_STATUS = {0: "none", 1: "filed", 2: "confirmed", 3: "rejected"}
OFFER_STATUS = {0: "none", 1: "open", 2: "filled", 3: "cancelled"}
ZERO_HASH = "0x" + "00" * 32


def _not_found(what: str) -> ApiProblem:
    return ApiProblem(404, "Not Found", what)


# -- enterprises ------------------------------------------------------------------------------

class Enterprise(BaseModel):
    account: str
    credit_code: str
    name: str
    industry_code: str
    region: str
    status: Literal["none", "active", "suspended"]
    certified_at: int


class Gateway(BaseModel):
    gateway_id: str
    gateway_key: str
    active: bool
    registered_at: int
    sender: str
    signing_key: str


class EnterpriseDetail(Enterprise):
    #: the enterprise's gateways (null when the viewer may not see its data)
    gateways: list[Gateway] | None


def _enterprise(r: sa.Row[tuple[object, ...]]) -> Enterprise:
    m = r._mapping
    return Enterprise(account=m["account"], credit_code=m["credit_code"], name=m["name"],
                      industry_code=m["industry_code"], region=m["region"],
                      status=STATUS.get(int(m["status"]), "none"),  # type: ignore[arg-type]
                      certified_at=int(m["certified_at"]))


@router.get("/enterprises", response_model=Page[Enterprise], tags=["enterprises"])
def list_enterprises(acc: Annotated[Access, Depends(access)],
                     pg: Annotated[Paging, Depends(paging)],
                     industry_code: CodeQ = None,
                     region: CodeQ = None,
                     status: Literal["active", "suspended"] | None = None) -> Page[Enterprise]:
    """The register of certified enterprises (public to anyone signed in)."""
    acc.require(Resource(Kind.PUBLIC))
    q = sa.select(enterprises).order_by(enterprises.c.account)
    if industry_code is not None:
        q = q.where(enterprises.c.industry_code == industry_code)
    if region is not None:
        q = q.where(enterprises.c.region == region)
    if status is not None:
        q = q.where(enterprises.c.status == (1 if status == "active" else 2))
    with acc.ctx.engine.connect() as c:
        rows = c.execute(pg.apply(q)).all()
    return pg.page([_enterprise(r) for r in rows])


@router.get("/enterprises/{address}", response_model=EnterpriseDetail, tags=["enterprises"])
def one_enterprise(address: AddressP,
                   acc: Annotated[Access, Depends(access)]) -> EnterpriseDetail:
    """One enterprise; its gateways only for a viewer who may see its data."""
    address = address.lower()
    with acc.ctx.engine.connect() as c:
        row = c.execute(sa.select(enterprises).where(enterprises.c.account == address)).first()
        if row is None:
            raise _not_found(f"no enterprise {address} on the ledger")
        gws: list[Gateway] | None = None
        d = acc.decide(Resource.of(address))
        if not d.allowed and acc.viewer.is_finance:
            acc.log(address, 200, f"the register entry only ({d.reason})")
        if d.allowed:
            acc.require(Resource.of(address))  # logs finance's access
            gws = [Gateway(gateway_id=g.gateway_id, gateway_key=g.gateway_key, active=g.active,
                           registered_at=int(g.registered_at), sender=g.sender,
                           signing_key=g.signing_key)
                   for g in c.execute(sa.select(gateways).where(gateways.c.enterprise == address)
                                      .order_by(gateways.c.gateway_id))]
    return EnterpriseDetail(**_enterprise(row).model_dump(), gateways=gws)


# -- carbon accounts ---------------------------------------------------------------------------

class Scopes(BaseModel):
    scope1_g: int
    scope2_g: int
    scope3_g: int
    total_g: int


class CarbonAccount(BaseModel):
    enterprise: str
    period: int
    period_start_ns: int | None
    period_end_ns: int | None
    period_closed: bool
    allocated_g: int
    #: the emissions the enterprise's gateways anchored (EmissionsLedger.emissionsOf)
    reported_g: Scopes
    batches: int
    #: the latest verification report's figure (null: no report yet)
    verified_g: int | None
    #: the latest confirmed finding's corrected figure (null: none confirmed)
    corrected_g: int | None
    #: the figure in force for compliance (the account's verified, after corrections)
    accounted_g: int | None
    penalty_g: int
    penalty_deducted_g: int
    traded_in_g: int
    traded_out_g: int
    surrendered_g: int
    balance_g: int
    obligation_g: int
    compliance: ComplianceName
    settled: bool


def _accounts_of(c: sa.Connection, ent: str, period: int | None) -> list[CarbonAccount]:
    def where(t: sa.Table, col: str = "enterprise") -> list[sa.ColumnElement[bool]]:
        conds = [t.c[col] == ent]
        if period is not None:
            conds.append(t.c.period == period)
        return conds

    em = {r.period: r for r in c.execute(sa.select(emissions).where(*where(emissions)))}
    ac = {r.period: r for r in c.execute(sa.select(accounts).where(*where(accounts)))}
    bal = {r.period: int(r.amount_g) for r in c.execute(
        sa.select(balances).where(*where(balances, "account")))}
    rep: dict[int, int] = {}
    for r in c.execute(sa.select(reports.c.period, reports.c.verified_g).where(*where(reports))
                       .order_by(reports.c.report_id)):
        rep[int(r.period)] = int(r.verified_g)
    cor: dict[int, int] = {}
    for r in c.execute(sa.select(findings.c.period, findings.c.corrected_g)
                       .where(*where(findings), findings.c.status == 2)
                       .order_by(findings.c.decided_at, findings.c.finding_id)):
        cor[int(r.period)] = int(r.corrected_g)
    tin: dict[int, int] = defaultdict(int)
    tout: dict[int, int] = defaultdict(int)
    for side, acc_ in ((trades.c.buyer, tin), (trades.c.seller, tout)):
        q = sa.select(trades.c.period, sa.func.sum(trades.c.amount_g)).where(side == ent)
        if period is not None:
            q = q.where(trades.c.period == period)
        for p, s in c.execute(q.group_by(trades.c.period)):
            acc_[int(p)] = int(s or 0)
    keys = set(em) | set(ac) | set(bal) | set(rep) | set(cor) | set(tin) | set(tout)
    if period is not None:
        keys.add(period)
    pers = {r.period_id: r for r in c.execute(sa.select(periods).where(
        periods.c.period_id.in_(sorted(keys))))}
    out = []
    for p in sorted(keys):
        e, a, per = em.get(p), ac.get(p), pers.get(p)
        s1, s2, s3 = ((int(e.scope1_g), int(e.scope2_g), int(e.scope3_g)) if e else (0, 0, 0))
        verified = int(a.verified_g) if a else 0
        has_v = bool(a.has_verified) if a else False
        pen = int(a.penalty_g) if a else 0
        ded = int(a.penalty_deducted_g) if a else 0
        sur = int(a.surrendered_g) if a else 0
        out.append(CarbonAccount(
            enterprise=ent, period=p,
            period_start_ns=int(per.start_ns) if per else None,
            period_end_ns=int(per.end_ns) if per else None,
            period_closed=bool(per.closed) if per else False,
            allocated_g=int(a.allocated_g) if a else 0,
            reported_g=Scopes(scope1_g=s1, scope2_g=s2, scope3_g=s3, total_g=s1 + s2 + s3),
            batches=int(e.batches) if e else 0,
            verified_g=rep.get(p), corrected_g=cor.get(p),
            accounted_g=verified if has_v else None,
            penalty_g=pen, penalty_deducted_g=ded, traded_in_g=tin.get(p, 0),
            traded_out_g=tout.get(p, 0), surrendered_g=sur, balance_g=bal.get(p, 0),
            obligation_g=obligation(verified_g=verified, penalty_g=pen, penalty_deducted_g=ded),
            compliance=compliance(
                closed=bool(per.closed) if per else False, has_verified=has_v,
                verified_g=verified, penalty_g=pen, penalty_deducted_g=ded, surrendered_g=sur,
                settled=bool(a.settled) if a else False,
                settled_status=int(a.settled_status) if a else 0),
            settled=bool(a.settled) if a else False))
    return out


def _known_enterprise(c: sa.Connection, ent: str) -> None:
    if c.execute(sa.select(enterprises.c.account)
                 .where(enterprises.c.account == ent)).first() is None:
        raise _not_found(f"no enterprise {ent} on the ledger")


@router.get("/enterprises/{address}/accounts", response_model=list[CarbonAccount],
            tags=["accounts"])
def enterprise_accounts(address: AddressP,
                        acc: Annotated[Access, Depends(access)]) -> list[CarbonAccount]:
    """The enterprise's carbon account in every period it has one."""
    ent = address.lower()
    acc.require(Resource.of(ent))

    def compute() -> list[CarbonAccount]:
        with acc.ctx.engine.connect() as c:
            _known_enterprise(c, ent)
            return _accounts_of(c, ent, None)

    return acc.cached("accounts", (ent, None), compute)


@router.get("/enterprises/{address}/accounts/{period}", response_model=CarbonAccount,
            tags=["accounts"])
def enterprise_account(address: AddressP,
                       period: Annotated[int, Path(ge=0, le=2**32 - 1)],
                       acc: Annotated[Access, Depends(access)]) -> CarbonAccount:
    """The enterprise's carbon account in one period."""
    ent = address.lower()
    acc.require(Resource.of(ent))

    def compute() -> list[CarbonAccount]:
        with acc.ctx.engine.connect() as c:
            _known_enterprise(c, ent)
            if period != 0 and c.execute(sa.select(periods.c.period_id)
                                         .where(periods.c.period_id == period)).first() is None:
                raise _not_found(f"no period {period} on the ledger")
            return _accounts_of(c, ent, period)

    # chain tables only: kept while the indexer's checkpoint stays where it is (_cache.py)
    return acc.cached("accounts", (ent, period), compute)[0]


# -- emissions over time ----------------------------------------------------------------------

class EmissionsPoint(BaseModel):
    start_ns: int
    co2e_scope1_g: int
    co2e_scope2_g: int
    co2e_scope3_g: int
    co2e_total_g: int
    batches: int
    #: readings stored (verified) in the bucket
    readings: int
    #: readings with a value / all readings (null: no readings)
    capture_rate: float | None
    #: readings with any invalid quality bit / all readings (null: no readings)
    flagged_share: float | None


class EmissionsSeries(BaseModel):
    key: str
    enterprises: int
    points: list[EmissionsPoint]


class Withheld(BaseModel):
    key: str
    reason: str


class EmissionsOut(BaseModel):
    group_by: Literal["enterprise", "industry", "region"]
    bucket: Literal["day", "month"]
    series: list[EmissionsSeries]
    #: groups the viewer may not see, with the reason
    withheld: list[Withheld]


@router.get("/emissions", response_model=EmissionsOut, tags=["emissions"])
def emissions_over_time(
        acc: Annotated[Access, Depends(access)],
        group_by: Literal["enterprise", "industry", "region"] = "enterprise",
        bucket: Literal["day", "month"] = "month",
        from_ns: Annotated[int, Query(ge=0, le=I64)] = 0,
        to_ns: Annotated[int, Query(ge=0, le=I64)] = I64,
        enterprise: AddressQ = None,
        industry_code: CodeQ = None,
        region: CodeQ = None) -> EmissionsOut:
    """Anchored emissions (batches' CO2e by their first reading's UTC day) and the readings'
    data quality, per enterprise, industry or region, by day or month, over ``[from_ns,
    to_ns)``. Times before 1970 are not bucketed."""
    key_col = {"enterprise": enterprises.c.account, "industry": enterprises.c.industry_code,
               "region": enterprises.c.region}[group_by]
    ent = lower(enterprise)
    conds: list[sa.ColumnElement[bool]] = []
    if ent is not None:
        conds.append(enterprises.c.account == ent)
    if industry_code is not None:
        conds.append(enterprises.c.industry_code == industry_code)
    if region is not None:
        conds.append(enterprises.c.region == region)
    bday = (batches.c.first_ts_ns // DAY_NS).label("day")
    bq = (sa.select(key_col.label("key"), batches.c.enterprise, bday,
                    sa.func.sum(batches.c.co2e_scope1_g), sa.func.sum(batches.c.co2e_scope2_g),
                    sa.func.sum(batches.c.co2e_scope3_g), sa.func.count())
          .select_from(batches.join(enterprises, enterprises.c.account == batches.c.enterprise))
          .where(batches.c.first_ts_ns >= from_ns, batches.c.first_ts_ns < to_ns, *conds)
          .group_by(key_col, batches.c.enterprise, bday))
    rday = (records.c.ts_ns // DAY_NS).label("day")
    rq = (sa.select(key_col.label("key"), records.c.enterprise, rday, sa.func.count(),
                    sa.func.count(records.c.value),
                    sa.func.sum(sa.case((records.c.quality.op("&")(INVALID) != 0, 1), else_=0)))
          .select_from(records.join(enterprises, enterprises.c.account == records.c.enterprise))
          .where(records.c.kind == 1, records.c.ts_ns >= from_ns, records.c.ts_ns < to_ns,
                 *conds)
          .group_by(key_col, records.c.enterprise, rday))
    if ent is not None:
        acc.require(Resource.of(ent))
    # per (key, bucket start): s1, s2, s3, batches, readings, captured, flagged
    acc_pts: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0] * 7))
    members: dict[str, set[str]] = defaultdict(set)
    with acc.ctx.engine.connect() as c:
        for key, e, day, s1, s2, s3, n in c.execute(bq):
            members[key].add(e)
            p = acc_pts[key][bucket_start_ns(int(day), bucket)]
            p[0] += int(s1 or 0)
            p[1] += int(s2 or 0)
            p[2] += int(s3 or 0)
            p[3] += int(n)
        for key, e, day, n, captured, flagged in c.execute(rq):
            members[key].add(e)
            p = acc_pts[key][bucket_start_ns(int(day), bucket)]
            p[4] += int(n)
            p[5] += int(captured or 0)
            p[6] += int(flagged or 0)
    series: list[EmissionsSeries] = []
    withheld: list[Withheld] = []
    for key in sorted(acc_pts):
        res = (Resource.of(key) if group_by == "enterprise"
               else Resource.aggregate(members[key]))
        d = acc.decide(res)
        if not d.allowed:
            withheld.append(Withheld(key=key, reason=d.reason))
            continue
        pts = [EmissionsPoint(start_ns=t, co2e_scope1_g=v[0], co2e_scope2_g=v[1],
                              co2e_scope3_g=v[2], co2e_total_g=v[0] + v[1] + v[2], batches=v[3],
                              readings=v[4], capture_rate=ratio(v[5], v[4]),
                              flagged_share=ratio(v[6], v[4]))
               for t, v in sorted(acc_pts[key].items())]
        series.append(EmissionsSeries(key=key, enterprises=len(members[key]), points=pts))
    if acc.viewer.is_finance and not acc.viewer.sees_all and ent is None:
        acc.log(None, 200, f"emissions by {group_by}: {len(series)} series shown, "
                f"{len(withheld)} withheld")
    if ent is None and (industry_code is not None or region is not None) and withheld \
            and not series:
        # the one group asked for is withheld: a refusal, not an empty answer
        acc.require(Resource.aggregate(members[withheld[0].key]) if group_by != "enterprise"
                    else Resource.of(withheld[0].key))
    return EmissionsOut(group_by=group_by, bucket=bucket, series=series, withheld=withheld)


# -- batches and the quarantine --------------------------------------------------------------

class Anchoring(BaseModel):
    block_number: int
    tx_hash: str
    period: int


class IngestState(BaseModel):
    state: Literal["not-delivered", "unanchored", "verified", "quarantined"]
    reason: str | None = None
    received_ns: int | None = None
    verified_ns: int | None = None
    record_count: int | None = None


class BatchOut(BaseModel):
    gateway_id: str
    seq: int
    gateway_key: str
    enterprise: str
    header_hash: str
    root: str
    prev_hash: str
    count: int
    first_record_seq: int
    last_record_seq: int
    first_ts_ns: int
    last_ts_ns: int
    co2e_scope1_g: int
    co2e_scope2_g: int
    co2e_scope3_g: int
    signature: str
    anchored: Anchoring
    ingest: IngestState


_IB = ingest_batches.alias("ib")
_BATCH_COLS: list[Any] = [batches, _IB.c.state, _IB.c.reason, _IB.c.received_ns, _IB.c.verified_ns,
               _IB.c.record_count]
_BATCH_FROM = batches.outerjoin(_IB, sa.and_(_IB.c.gateway_id == batches.c.gateway_id,
                                             _IB.c.seq == batches.c.seq))


def _batch(r: sa.Row[tuple[object, ...]]) -> BatchOut:
    m = r._mapping
    ing = (IngestState(state="not-delivered") if m["state"] is None else IngestState(
        state=m["state"], reason=m["reason"], received_ns=m["received_ns"],
        verified_ns=m["verified_ns"], record_count=m["record_count"]))
    return BatchOut(
        **{k: m[k] for k in ("gateway_id", "seq", "gateway_key", "enterprise", "header_hash",
                             "root", "prev_hash", "count", "first_record_seq",
                             "last_record_seq", "first_ts_ns", "last_ts_ns", "co2e_scope1_g",
                             "co2e_scope2_g", "co2e_scope3_g", "signature")},
        anchored=Anchoring(block_number=m["block_number"], tx_hash=m["tx_hash"],
                           period=m["period"]),
        ingest=ing)


@router.get("/batches", response_model=Page[BatchOut], tags=["batches"])
def list_batches(acc: Annotated[Access, Depends(access)], pg: Annotated[Paging, Depends(paging)],
                 enterprise: AddressQ = None, gateway_id: GatewayQ = None,
                 period: PeriodQ = None,
                 state: Literal["not-delivered", "unanchored", "verified",
                                "quarantined"] | None = None,
                 from_ns: TimeQ = None, to_ns: TimeQ = None) -> Page[BatchOut]:
    """Anchored batches with their ingest state (the portal's verification of the records)."""
    ent = lower(enterprise)
    q = sa.select(*_BATCH_COLS).select_from(_BATCH_FROM)
    scope = acc.scope(batches.c.enterprise, ent)
    if scope is not None:
        q = q.where(scope)
    if ent is not None:
        q = q.where(batches.c.enterprise == ent)
    if gateway_id is not None:
        q = q.where(batches.c.gateway_id == gateway_id)
    if period is not None:
        q = q.where(batches.c.period == period)
    if state == "not-delivered":
        q = q.where(_IB.c.state.is_(None))
    elif state is not None:
        q = q.where(_IB.c.state == state)
    if from_ns is not None:
        q = q.where(batches.c.last_ts_ns >= from_ns)
    if to_ns is not None:
        q = q.where(batches.c.first_ts_ns < to_ns)
    q = q.order_by(batches.c.gateway_id, batches.c.seq)
    with acc.ctx.engine.connect() as c:
        rows = c.execute(pg.apply(q)).all()
    return pg.page([_batch(r) for r in rows])


@router.get("/batches/{gateway_id}/{seq}", response_model=BatchOut, tags=["batches"])
def one_batch(gateway_id: Annotated[str, Path(pattern=GATEWAY_ID_RE)],
              seq: Annotated[int, Path(ge=1, le=I64)],
              acc: Annotated[Access, Depends(access)]) -> BatchOut:
    with acc.ctx.engine.connect() as c:
        row = c.execute(sa.select(*_BATCH_COLS).select_from(_BATCH_FROM).where(
            batches.c.gateway_id == gateway_id, batches.c.seq == seq)).first()
    if row is None:
        raise _not_found(f"no batch {seq} of gateway {gateway_id} anchored")
    acc.require(Resource.of(row.enterprise))
    return _batch(row)


class SubmissionOut(BaseModel):
    gateway_id: str
    seq: int
    gateway_key: str
    #: the gateway's enterprise (null: a gateway the index does not know)
    enterprise: str | None
    header_hash: str
    state: Literal["unanchored", "verified", "quarantined"]
    reason: str | None
    received_ns: int
    verified_ns: int | None
    record_count: int
    #: the chain's anchor of this batch, when the index has it
    anchored: Anchoring | None


@router.get("/submissions", response_model=Page[SubmissionOut], tags=["batches"])
def list_submissions(acc: Annotated[Access, Depends(access)],
                     pg: Annotated[Paging, Depends(paging)], enterprise: AddressQ = None,
                     gateway_id: GatewayQ = None,
                     state: Literal["unanchored", "verified", "quarantined"] | None = None,
                     from_ns: TimeQ = None, to_ns: TimeQ = None) -> Page[SubmissionOut]:
    """The batches gateways delivered, as the ingest holds them (also those still waiting for
    their anchor), by ``received_ns``."""
    ent = lower(enterprise)
    q = (sa.select(ingest_batches, gateways.c.enterprise, batches.c.block_number,
                   batches.c.tx_hash, batches.c.period)
         .select_from(ingest_batches
                      .outerjoin(gateways, gateways.c.gateway_key == ingest_batches.c.gateway_key)
                      .outerjoin(batches, sa.and_(
                          batches.c.gateway_id == ingest_batches.c.gateway_id,
                          batches.c.seq == ingest_batches.c.seq)))
         .order_by(ingest_batches.c.received_ns, ingest_batches.c.gateway_id,
                   ingest_batches.c.seq))
    scope = acc.scope(gateways.c.enterprise, ent)
    if scope is not None:
        q = q.where(scope)
    if ent is not None:
        q = q.where(gateways.c.enterprise == ent)
    if gateway_id is not None:
        q = q.where(ingest_batches.c.gateway_id == gateway_id)
    if state is not None:
        q = q.where(ingest_batches.c.state == state)
    if from_ns is not None:
        q = q.where(ingest_batches.c.received_ns >= from_ns)
    if to_ns is not None:
        q = q.where(ingest_batches.c.received_ns < to_ns)
    with acc.ctx.engine.connect() as c:
        rows = c.execute(pg.apply(q)).all()
    return pg.page([SubmissionOut(
        gateway_id=r.gateway_id, seq=r.seq, gateway_key=r.gateway_key, enterprise=r.enterprise,
        header_hash=r.header_hash, state=r.state, reason=r.reason, received_ns=r.received_ns,
        verified_ns=r.verified_ns, record_count=r.record_count,
        anchored=None if r.block_number is None else Anchoring(
            block_number=r.block_number, tx_hash=r.tx_hash, period=r.period)) for r in rows])


class QuarantineOut(BaseModel):
    id: int
    gateway_id: str
    seq: int
    header_hash: str | None
    reason: str
    received_ns: int
    detail: str | None


@router.get("/quarantine", response_model=Page[QuarantineOut], tags=["batches"])
def list_quarantine(acc: Annotated[Access, Depends(access)],
                    pg: Annotated[Paging, Depends(paging)], gateway_id: GatewayQ = None,
                    from_ns: TimeQ = None, to_ns: TimeQ = None) -> Page[QuarantineOut]:
    """Refused submissions with the reason (government and auditors)."""
    acc.require(Resource(Kind.QUARANTINE))
    q = sa.select(quarantine).order_by(quarantine.c.id)
    if gateway_id is not None:
        q = q.where(quarantine.c.gateway_id == gateway_id)
    if from_ns is not None:
        q = q.where(quarantine.c.received_ns >= from_ns)
    if to_ns is not None:
        q = q.where(quarantine.c.received_ns < to_ns)
    with acc.ctx.engine.connect() as c:
        rows = c.execute(pg.apply(q)).all()
    return pg.page([QuarantineOut(**r._mapping) for r in rows])


# -- verification: reports and findings ------------------------------------------------------

class ReportOut(BaseModel):
    report_id: int
    enterprise: str
    period: int
    auditor: str
    filed_at: int
    verified_g: int
    reported_g: int
    report_hash: str
    uri: str


@router.get("/reports", response_model=Page[ReportOut], tags=["verification"])
def list_reports(acc: Annotated[Access, Depends(access)], pg: Annotated[Paging, Depends(paging)],
                 enterprise: AddressQ = None, period: PeriodQ = None,
                 auditor: AddressQ = None) -> Page[ReportOut]:
    ent = lower(enterprise)
    q = sa.select(reports).order_by(reports.c.report_id)
    scope = acc.scope(reports.c.enterprise, ent)
    if scope is not None:
        q = q.where(scope)
    if ent is not None:
        q = q.where(reports.c.enterprise == ent)
    if period is not None:
        q = q.where(reports.c.period == period)
    if auditor is not None:
        q = q.where(reports.c.auditor == auditor.lower())
    with acc.ctx.engine.connect() as c:
        rows = c.execute(pg.apply(q)).all()
    return pg.page([ReportOut(**r._mapping) for r in rows])


class FindingOut(BaseModel):
    finding_id: int
    enterprise: str
    period: int
    kind: Literal["none", "abnormal", "falsified"]
    #: filed (pending), confirmed or rejected by the government
    outcome: Literal["none", "filed", "confirmed", "rejected"]
    auditor: str
    filed_at: int
    corrected_g: int
    previous_g: int
    penalty_g: int
    decided_by: str | None
    decided_at: int | None
    decision_note: str
    evidence_hash: str
    evidence_uri: str
    gateway_key: str | None
    batch_seq: int | None
    record_leaf: str | None


def _finding(r: sa.Row[tuple[object, ...]]) -> FindingOut:
    m = r._mapping
    decided = int(m["decided_at"]) != 0
    names_record = m["record_leaf"] != ZERO_HASH
    return FindingOut(
        finding_id=m["finding_id"], enterprise=m["enterprise"], period=m["period"],
        kind=FINDING_KIND.get(int(m["kind"]), "none"),  # type: ignore[arg-type]
        outcome=FINDING_STATUS.get(int(m["status"]), "none"),  # type: ignore[arg-type]
        auditor=m["auditor"], filed_at=m["filed_at"], corrected_g=m["corrected_g"],
        previous_g=m["previous_g"], penalty_g=m["penalty_g"],
        decided_by=m["decided_by"] if decided else None,
        decided_at=m["decided_at"] if decided else None, decision_note=m["decision_note"],
        evidence_hash=m["evidence_hash"], evidence_uri=m["evidence_uri"],
        gateway_key=m["gateway_key"] if names_record else None,
        batch_seq=m["batch_seq"] if names_record else None,
        record_leaf=m["record_leaf"] if names_record else None)


@router.get("/findings", response_model=Page[FindingOut], tags=["verification"])
def list_findings(acc: Annotated[Access, Depends(access)], pg: Annotated[Paging, Depends(paging)],
                  enterprise: AddressQ = None, period: PeriodQ = None,
                  outcome: Literal["filed", "confirmed", "rejected"] | None = None
                  ) -> Page[FindingOut]:
    ent = lower(enterprise)
    q = sa.select(findings).order_by(findings.c.finding_id)
    scope = acc.scope(findings.c.enterprise, ent)
    if scope is not None:
        q = q.where(scope)
    if ent is not None:
        q = q.where(findings.c.enterprise == ent)
    if period is not None:
        q = q.where(findings.c.period == period)
    if outcome is not None:
        q = q.where(findings.c.status == {"filed": 1, "confirmed": 2, "rejected": 3}[outcome])
    with acc.ctx.engine.connect() as c:
        rows = c.execute(pg.apply(q)).all()
    return pg.page([_finding(r) for r in rows])


# -- the market ----------------------------------------------------------------------------

class OfferOut(BaseModel):
    offer_id: int
    seller: str
    period: int
    status: Literal["none", "open", "filled", "cancelled"]
    created_at: int
    #: null: anyone may buy
    buyer: str | None
    amount_g: int
    remaining_g: int
    price_per_tonne: int


ZERO_ADDRESS = "0x" + "00" * 20


@router.get("/offers", response_model=Page[OfferOut], tags=["market"])
def list_offers(acc: Annotated[Access, Depends(access)], pg: Annotated[Paging, Depends(paging)],
                period: PeriodQ = None,
                status: Literal["open", "filled", "cancelled"] | None = None,
                seller: AddressQ = None) -> Page[OfferOut]:
    """The market's offers (public to anyone signed in, as on-chain)."""
    acc.require(Resource(Kind.PUBLIC))
    q = sa.select(offers).order_by(offers.c.offer_id)
    if period is not None:
        q = q.where(offers.c.period == period)
    if status is not None:
        q = q.where(offers.c.status == {"open": 1, "filled": 2, "cancelled": 3}[status])
    if seller is not None:
        q = q.where(offers.c.seller == seller.lower())
    with acc.ctx.engine.connect() as c:
        rows = c.execute(pg.apply(q)).all()
    return pg.page([OfferOut(
        offer_id=r.offer_id, seller=r.seller, period=r.period,
        status=OFFER_STATUS.get(int(r.status), "none"),  # type: ignore[arg-type]
        created_at=r.created_at, buyer=None if r.buyer == ZERO_ADDRESS else r.buyer,
        amount_g=r.amount_g, remaining_g=r.remaining_g, price_per_tonne=r.price_per_tonne)
        for r in rows])


class TradeOut(BaseModel):
    trade_id: int
    offer_id: int
    seller: str
    buyer: str
    period: int
    traded_at: int
    amount_g: int
    price_per_tonne: int
    value: int
    #: null until a financial institution records the payment
    payment_ref: str | None
    settled_by: str | None


@router.get("/trades", response_model=Page[TradeOut], tags=["market"])
def list_trades(acc: Annotated[Access, Depends(access)], pg: Annotated[Paging, Depends(paging)],
                period: PeriodQ = None, enterprise: AddressQ = None) -> Page[TradeOut]:
    """Trades; an enterprise sees its own (as buyer or seller), finance those of enterprises
    that granted it access. ``enterprise``: trades it bought or sold."""
    ent = lower(enterprise)
    q = sa.select(trades).order_by(trades.c.trade_id)
    scope = acc.scope(trades.c.seller, ent, trades.c.buyer)
    if scope is not None:
        q = q.where(scope)
    if ent is not None:
        q = q.where(sa.or_(trades.c.seller == ent, trades.c.buyer == ent))
    if period is not None:
        q = q.where(trades.c.period == period)
    with acc.ctx.engine.connect() as c:
        rows = c.execute(pg.apply(q)).all()
    return pg.page([TradeOut(
        trade_id=r.trade_id, offer_id=r.offer_id, seller=r.seller, buyer=r.buyer,
        period=r.period, traded_at=r.traded_at, amount_g=r.amount_g,
        price_per_tonne=r.price_per_tonne, value=r.value,
        payment_ref=None if r.payment_ref == ZERO_HASH else r.payment_ref,
        settled_by=None if r.settled_by == ZERO_ADDRESS else r.settled_by) for r in rows])


class PriceOut(BaseModel):
    period: int
    trades: int
    volume_g: int
    #: volume-weighted average price per tonne (the market's currency unit, e.g. fen)
    vwap_per_tonne: float | None
    min_per_tonne: int
    max_per_tonne: int


@router.get("/prices", response_model=list[PriceOut], tags=["market"])
def prices(acc: Annotated[Access, Depends(access)], period: PeriodQ = None) -> list[PriceOut]:
    """Per period: trades, volume, VWAP, lowest and highest price (published aggregates)."""
    acc.require(Resource(Kind.PUBLIC))
    q = (sa.select(trades.c.period, sa.func.count(), sa.func.sum(trades.c.amount_g),
                   sa.func.sum(sa.cast(trades.c.amount_g, sa.Numeric(38, 0))
                               * trades.c.price_per_tonne),
                   sa.func.min(trades.c.price_per_tonne), sa.func.max(trades.c.price_per_tonne))
         .group_by(trades.c.period).order_by(trades.c.period))
    if period is not None:
        q = q.where(trades.c.period == period)
    with acc.ctx.engine.connect() as c:
        rows = c.execute(q).all()
    return [PriceOut(period=p, trades=n, volume_g=int(v or 0),
                     vwap_per_tonne=vwap(int(v or 0), int(pv or 0)), min_per_tonne=lo,
                     max_per_tonne=hi) for p, n, v, pv, lo, hi in rows]


# -- the access log ----------------------------------------------------------------------------

class AccessLogOut(BaseModel):
    id: int
    at_ns: int
    viewer: str
    role: str
    enterprise: str | None
    path: str
    status: int
    reason: str | None


@router.get("/access-log", response_model=Page[AccessLogOut], tags=["access"])
def list_access_log(acc: Annotated[Access, Depends(access)],
                    pg: Annotated[Paging, Depends(paging)], enterprise: AddressQ = None,
                    viewer: AddressQ = None, from_ns: TimeQ = None,
                    to_ns: TimeQ = None) -> Page[AccessLogOut]:
    """Who accessed what: every access by a financial institution, every refusal (the
    government; an enterprise the rows about itself)."""
    ent = lower(enterprise)
    acc.require(Resource(Kind.ACCESS_LOG, (ent,) if ent else ()))
    q = sa.select(access_log).order_by(access_log.c.id)
    if ent is not None:
        q = q.where(access_log.c.enterprise == ent)
    if viewer is not None:
        q = q.where(access_log.c.viewer == viewer.lower())
    if from_ns is not None:
        q = q.where(access_log.c.at_ns >= from_ns)
    if to_ns is not None:
        q = q.where(access_log.c.at_ns < to_ns)
    with acc.ctx.engine.connect() as c:
        rows = c.execute(pg.apply(q)).all()
    return pg.page([AccessLogOut(**r._mapping) for r in rows])
