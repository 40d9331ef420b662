"""The government's overview (``/ui/``): the headline figures of a period, emissions over time
by enterprise, industry or region, every gateway's state, and the newest batches, updated live
as batches arrive and are verified. Government, the regulator's admin and auditors see it; the
other roles are sent to their own start page.

The emissions series, the register and the open findings come from the API's route
functions; what no route gives (counts, gateway states, lags, the newest submissions) is read
here with the same access rule (``acc.require``/``acc.scope``). The pure parts are in
``_overview.py``."""

from __future__ import annotations

import datetime as dt
import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from babel import dates as bdates
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response

from portal import _i18n
from portal._access import Kind, Resource
from portal._api_common import Access, Paging
from portal._cache import chain_version
from portal._chain_tables import (
    accounts,
    balances,
    batches,
    emissions,
    enterprises,
    gateways,
    periods,
)
from portal._context import PortalContext, context_of
from portal._errors import ApiProblem
from portal._ingest_tables import ingest_batches, quarantine
from portal._overview import (
    ALARM_WINDOW_NS,
    STATE_ORDER,
    GatewayState,
    RecentBatch,
    day_start_ns,
    gateway_state,
    last_seen,
    merge_recent,
    month_starts,
    percentile,
    pick_period,
    standing,
)
from portal._routes_data import emissions_over_time, list_enterprises, list_findings
from portal._ui import event_stream, lang_of, render, ui_access, ui_viewer
from portal._ui_tables import gateway_alarms, telemetry_live
from portal._viewer import Viewer

router = APIRouter(prefix="/ui")

GroupBy = Literal["enterprise", "industry", "region"]
PeriodQ = Annotated[int | None, Query(ge=0, le=2**32 - 1)]
#: the newest batches listed
RECENT = 20
#: gateways listed in the table (all are counted)
MOST_GATEWAYS = 500
#: the live page reloads at least this often (gateways turn silent as time passes)
TICK_NS = 60 * 10**9

_i18n.register({
    "overview.title": ("Overview", "总览"),
    "overview.intro": ("The ledger's emissions, the gateways and the portal's verification of "
                       "their batches, at a glance.",
                       "账本上的排放、网关以及平台对其批次的核验情况一览。"),
    "overview.choose": ("Show", "显示"),
    "overview.period": ("Period", "履约期"),
    "overview.period.option": ("Period {id} ({start} – {end})", "第 {id} 期（{start} – {end}）"),
    "overview.period.open": ("open", "进行中"),
    "overview.period.closed": ("closed", "已结束"),
    "overview.period.none": ("No period is on the ledger yet.", "账本上尚无履约期。"),
    "overview.group_by": ("Emissions by", "排放分组"),
    "overview.group.enterprise": ("enterprise", "企业"),
    "overview.group.industry": ("industry", "行业"),
    "overview.group.region": ("region", "地区"),
    "overview.apply": ("Apply", "应用"),
    "overview.headline": ("At a glance", "概况"),
    "overview.headline.period": ("Period {id}, {state}", "第 {id} 期，{state}"),
    "overview.card.emissions": ("Emissions anchored in the period", "本期已上链排放"),
    "overview.card.emissions_batches": ("batches anchored: {n}", "已上链批次：{n} 个"),
    "overview.card.enterprises": ("Enterprises", "企业"),
    "overview.card.active": ("active", "正常"),
    "overview.card.suspended": ("suspended", "暂停"),
    "overview.card.gateways": ("Gateways", "网关"),
    "overview.card.today": ("Batches today", "今日批次"),
    "overview.card.verified": ("verified", "已核验"),
    "overview.card.quarantined": ("quarantined", "已隔离"),
    "overview.card.lag": ("Lag, last reading to verified", "从最后读数到核验的延迟"),
    "overview.card.median": ("median:", "中位数："),
    "overview.card.p95": ("95th percentile:", "第95百分位："),
    "overview.card.lag_of": ("verified batches of the period: {n}",
                             "基于本期 {n} 个已核验批次"),
    "overview.card.quality": ("Readings flagged invalid", "被标记为无效的读数"),
    "overview.card.quality_of": ("of {n} readings this period", "本期共 {n} 个读数"),
    "overview.card.findings": ("Open findings", "待处理核查发现"),
    "overview.card.findings_help": ("filed by auditors, awaiting a decision",
                                    "核查机构已提交，等待决定"),
    "overview.card.compliance": ("Compliance this period", "本期履约情况"),
    "overview.standing.surplus": ("surplus", "盈余"),
    "overview.standing.deficit": ("deficit", "缺口"),
    "overview.standing.unverified": ("not yet verified", "尚未核证"),
    "overview.chart.title": ("Emissions by month", "月度排放"),
    "overview.chart.label": ("Emissions by month and {group}, in tonnes of CO₂e",
                             "按月份和{group}统计的排放量（吨 CO₂e）"),
    "overview.chart.caption": ("Emissions by month and {group} (t CO₂e)",
                               "按月份和{group}统计的排放（吨 CO₂e）"),
    "overview.chart.month": ("Month", "月份"),
    "overview.chart.total": ("Total", "合计"),
    "overview.chart.none": ("No batch of this period is anchored yet.", "本期尚无上链批次。"),
    "overview.gateways.title": ("Gateways", "网关"),
    "overview.gateways.caption": ("Every gateway on the ledger, those needing attention first",
                                  "账本上的全部网关，需关注者在前"),
    "overview.gateways.more": ("Showing {shown} of {total} gateways.",
                               "显示 {total} 个网关中的 {shown} 个。"),
    "overview.col.gateway": ("Gateway", "网关"),
    "overview.col.enterprise": ("Enterprise", "企业"),
    "overview.col.state": ("State", "状态"),
    "overview.col.last_batch": ("Last anchored batch", "最近上链批次"),
    "overview.col.last_verified": ("Last verified batch", "最近核验批次"),
    "overview.col.lag": ("Lag", "延迟"),
    "overview.col.heard": ("Last heard", "最近通信"),
    "overview.col.batch": ("Batch", "批次"),
    "overview.col.received": ("Received", "接收时间"),
    "overview.col.verified": ("Verified", "核验时间"),
    "overview.col.records": ("Records", "记录数"),
    "overview.state.online": ("online", "在线"),
    "overview.state.silent": ("silent", "静默"),
    "overview.state.alarmed": ("alarmed", "告警"),
    "overview.state.inactive": ("inactive", "已停用"),
    "overview.alarms": ("alarms raised: {n}", "{n} 个告警未解除"),
    "overview.quarantined_at": ("submission quarantined {at}", "提交于 {at} 被隔离"),
    "overview.never": ("never", "从未"),
    "overview.batch.seq": ("#{seq}", "第 {seq} 批"),
    "overview.recent.title": ("Recent batches", "最近批次"),
    "overview.recent.caption": ("The {n} newest batches delivered or refused, newest first",
                                "最新交付或被拒的 {n} 个批次，最新在前"),
    "overview.bstate.verified": ("verified", "已核验"),
    "overview.bstate.pending": ("pending: waiting for its anchor", "待定：等待上链锚定"),
    "overview.bstate.quarantined": ("quarantined", "已隔离"),
    "overview.recent.none": ("No batch has been delivered yet.", "尚无交付的批次。"),
})


#: the message of each state, standing and grouping (templates look them up here)
WORDS: dict[str, dict[str, str]] = {
    "state": {"online": "overview.state.online", "silent": "overview.state.silent",
              "alarmed": "overview.state.alarmed", "inactive": "overview.state.inactive"},
    "bstate": {"verified": "overview.bstate.verified", "pending": "overview.bstate.pending",
               "quarantined": "overview.bstate.quarantined"},
    "standing": {"surplus": "overview.standing.surplus", "deficit": "overview.standing.deficit",
                 "unverified": "overview.standing.unverified"},
    "group": {"enterprise": "overview.group.enterprise", "industry": "overview.group.industry",
              "region": "overview.group.region"},
}


# -- what the page shows ---------------------------------------------------------------------

@dataclass(frozen=True)
class PeriodInfo:
    period_id: int
    start_ns: int
    end_ns: int
    closed: bool


@dataclass(frozen=True)
class GatewayRow:
    gateway_id: str
    enterprise: str
    name: str | None
    state: GatewayState
    alarms: int
    quarantined_ns: int | None
    anchored_seq: int | None
    anchored_ts_ns: int | None
    verified_seq: int | None
    verified_ns: int | None
    lag_ns: int | None
    heard_ns: int | None


@dataclass
class Headline:
    emissions_g: int = 0
    anchored: int = 0
    active: int = 0
    suspended: int = 0
    gateways: dict[str, int] = field(default_factory=dict)
    verified_today: int = 0
    quarantined_today: int = 0
    lag_median_ns: int | None = None
    lag_p95_ns: int | None = None
    lag_n: int = 0
    readings: int = 0
    flagged: int = 0
    findings_open: int = 0
    findings_more: bool = False
    standing: dict[str, int] = field(default_factory=dict)

    @property
    def flagged_share(self) -> float | None:
        return None if self.readings <= 0 else self.flagged / self.readings


def _periods(acc: Access) -> list[PeriodInfo]:
    def compute() -> list[PeriodInfo]:
        with acc.ctx.engine.connect() as c:
            return [PeriodInfo(int(r.period_id), int(r.start_ns), int(r.end_ns), bool(r.closed))
                    for r in c.execute(sa.select(periods).order_by(periods.c.period_id))]

    return acc.cached("ui-overview-periods", None, compute)


def _register_counts(acc: Access) -> tuple[int, int]:
    """The enterprises on the register: active, suspended (kept per chain version)."""
    acc.require(Resource(Kind.PUBLIC))

    def compute() -> tuple[int, int]:
        with acc.ctx.engine.connect() as c:
            status: dict[int, int] = {int(k): int(n) for k, n in c.execute(
                sa.select(enterprises.c.status, sa.func.count())
                .group_by(enterprises.c.status))}
        return status.get(1, 0), status.get(2, 0)

    return acc.cached("ui-overview-register", None, compute)


def _chain_figures(acc: Access, period: int) -> tuple[int, int, dict[str, int]]:
    """From the chain tables (kept per chain version): the period's emissions (g) and
    anchored batches, and how many enterprises stand in surplus, deficit or unverified."""

    def compute() -> tuple[int, int, dict[str, int]]:
        with acc.ctx.engine.connect() as c:
            em = c.execute(sa.select(
                sa.func.sum(emissions.c.scope1_g + emissions.c.scope2_g + emissions.c.scope3_g),
                sa.func.sum(emissions.c.batches)).where(emissions.c.period == period)).first()
            closed = bool(c.execute(sa.select(periods.c.closed)
                                    .where(periods.c.period_id == period)).scalar())
            bal = {r.account: int(r.amount_g) for r in c.execute(
                sa.select(balances.c.account, balances.c.amount_g)
                .where(balances.c.period == period))}
            counts: Counter[str] = Counter({"surplus": 0, "deficit": 0, "unverified": 0})
            for a in c.execute(sa.select(accounts).where(accounts.c.period == period)):
                counts[standing(
                    closed=closed, has_verified=bool(a.has_verified),
                    verified_g=int(a.verified_g), penalty_g=int(a.penalty_g),
                    penalty_deducted_g=int(a.penalty_deducted_g),
                    surrendered_g=int(a.surrendered_g), balance_g=bal.get(a.enterprise, 0),
                    settled=bool(a.settled), settled_status=int(a.settled_status))] += 1
        total = int(em[0] or 0) if em else 0
        n = int(em[1] or 0) if em else 0
        return total, n, dict(counts)

    return acc.cached("ui-overview-chain", period, compute)


def _gateway_rows(acc: Access, now_ns: int) -> list[GatewayRow]:
    """Every gateway the viewer may see, with its state (``_overview.gateway_state``)."""
    g, ib, tl, ga, qt = gateways, ingest_batches, telemetry_live, gateway_alarms, quarantine
    since = now_ns - ALARM_WINDOW_NS
    gid = g.c.gateway_id

    def sub(col: Any, *where: sa.ColumnElement[bool]) -> Any:
        return sa.select(col).where(*where).scalar_subquery()

    q = (sa.select(
        gid, g.c.gateway_key, g.c.enterprise, g.c.active, enterprises.c.name,
        sub(sa.func.max(batches.c.seq), batches.c.gateway_key == g.c.gateway_key)
        .label("anchored_seq"),
        sub(sa.func.max(ib.c.seq), ib.c.gateway_id == gid).label("sub_seq"),
        sub(sa.func.max(ib.c.seq), ib.c.gateway_id == gid, ib.c.state == "verified")
        .label("ver_seq"),
        sub(sa.func.max(tl.c.id), tl.c.gateway_id == gid).label("tel_id"),
        sub(sa.func.count(), ga.c.gateway_id == gid, ga.c.state == "raised").label("alarms"),
        sub(sa.func.max(qt.c.received_ns), qt.c.gateway_id == gid, qt.c.received_ns >= since)
        .label("quarantined_ns"))
        .select_from(g.outerjoin(enterprises, enterprises.c.account == g.c.enterprise))
        .order_by(gid))
    scope = acc.scope(g.c.enterprise, None)
    if scope is not None:
        q = q.where(scope)
    with acc.ctx.engine.connect() as c:
        base = c.execute(q).all()
        pairs = {(r.gateway_id, int(s)) for r in base for s in (r.sub_seq, r.ver_seq)
                 if s is not None}
        subs: dict[tuple[str, int], Any] = {}
        if pairs:
            subs = {(r.gateway_id, int(r.seq)): r for r in c.execute(
                sa.select(ib.c.gateway_id, ib.c.seq, ib.c.received_ns, ib.c.verified_ns)
                .where(sa.tuple_(ib.c.gateway_id, ib.c.seq).in_(sorted(pairs))))}
        keys = {(r.gateway_key, int(s)) for r in base for s in (r.anchored_seq, r.ver_seq)
                if s is not None}
        anchored: dict[tuple[str, int], Any] = {}
        if keys:
            anchored = {(r.gateway_key, int(r.seq)): r for r in c.execute(
                sa.select(batches.c.gateway_key, batches.c.seq, batches.c.last_ts_ns)
                .where(sa.tuple_(batches.c.gateway_key, batches.c.seq).in_(sorted(keys))))}
        tel_ids = sorted({int(r.tel_id) for r in base if r.tel_id is not None})
        tel: dict[int, int] = {}
        if tel_ids:
            tel = {int(i): int(t) for i, t in c.execute(
                sa.select(tl.c.id, tl.c.received_ns).where(tl.c.id.in_(tel_ids)))}
    silent_after_ns = acc.ctx.config.ui.silent_after_s * 10**9
    out: list[GatewayRow] = []
    for r in base:
        last_sub = subs.get((r.gateway_id, int(r.sub_seq))) if r.sub_seq is not None else None
        ver = subs.get((r.gateway_id, int(r.ver_seq))) if r.ver_seq is not None else None
        ver_b = (anchored.get((r.gateway_key, int(r.ver_seq)))
                 if r.ver_seq is not None else None)
        anc = (anchored.get((r.gateway_key, int(r.anchored_seq)))
               if r.anchored_seq is not None else None)
        ver_ns = int(ver.verified_ns) if ver is not None and ver.verified_ns is not None else None
        heard = last_seen(int(last_sub.received_ns) if last_sub is not None else None, ver_ns,
                          tel.get(int(r.tel_id)) if r.tel_id is not None else None)
        qns = int(r.quarantined_ns) if r.quarantined_ns is not None else None
        state = gateway_state(active=bool(r.active), last_seen_ns=heard,
                              alarms_raised=int(r.alarms or 0), last_quarantined_ns=qns,
                              now_ns=now_ns, silent_after_ns=silent_after_ns)
        out.append(GatewayRow(
            gateway_id=r.gateway_id, enterprise=r.enterprise, name=r.name, state=state,
            alarms=int(r.alarms or 0), quarantined_ns=qns,
            anchored_seq=int(r.anchored_seq) if r.anchored_seq is not None else None,
            anchored_ts_ns=int(anc.last_ts_ns) if anc is not None else None,
            verified_seq=int(r.ver_seq) if r.ver_seq is not None else None,
            verified_ns=ver_ns,
            lag_ns=(ver_ns - int(ver_b.last_ts_ns)
                    if ver_ns is not None and ver_b is not None else None),
            heard_ns=heard))
    out.sort(key=lambda x: (STATE_ORDER[x.state], x.gateway_id))
    return out


def _recent(acc: Access) -> list[RecentBatch]:
    """The newest submissions and refusals (``_overview.merge_recent``)."""
    acc.require(Resource(Kind.QUARANTINE))  # the refusals are in the list
    ib = ingest_batches
    at = sa.func.coalesce(ib.c.verified_ns, ib.c.received_ns)
    sq = (sa.select(ib.c.gateway_id, ib.c.seq, ib.c.state, ib.c.reason, ib.c.received_ns,
                    ib.c.verified_ns, ib.c.record_count, gateways.c.enterprise,
                    enterprises.c.name, batches.c.last_ts_ns)
          .select_from(ib.outerjoin(gateways, gateways.c.gateway_key == ib.c.gateway_key)
                       .outerjoin(enterprises, enterprises.c.account == gateways.c.enterprise)
                       .outerjoin(batches, sa.and_(batches.c.gateway_key == ib.c.gateway_key,
                                                   batches.c.seq == ib.c.seq)))
          .order_by(at.desc(), ib.c.gateway_id, ib.c.seq.desc()).limit(RECENT))
    scope = acc.scope(gateways.c.enterprise, None)
    if scope is not None:
        sq = sq.where(scope)
    same = sa.exists().where(ib.c.gateway_id == quarantine.c.gateway_id,
                             ib.c.seq == quarantine.c.seq, ib.c.state == "quarantined",
                             ib.c.header_hash == quarantine.c.header_hash)
    qq = (sa.select(quarantine.c.gateway_id, quarantine.c.seq, quarantine.c.reason,
                    quarantine.c.received_ns, gateways.c.enterprise, enterprises.c.name,
                    batches.c.last_ts_ns)
          .select_from(quarantine
                       .outerjoin(gateways, gateways.c.gateway_id == quarantine.c.gateway_id)
                       .outerjoin(enterprises, enterprises.c.account == gateways.c.enterprise)
                       .outerjoin(batches, sa.and_(batches.c.gateway_key == gateways.c.gateway_key,
                                                   batches.c.seq == quarantine.c.seq)))
          .where(~same).order_by(quarantine.c.id.desc()).limit(RECENT))
    with acc.ctx.engine.connect() as c:
        subs = [RecentBatch(
            gateway_id=r.gateway_id, seq=int(r.seq), enterprise=r.enterprise, name=r.name,
            state="pending" if r.state == "unanchored" else r.state,
            reason=r.reason, received_ns=int(r.received_ns),
            verified_ns=int(r.verified_ns) if r.verified_ns is not None else None,
            records=int(r.record_count), anchored=r.last_ts_ns is not None,
            lag_ns=(int(r.verified_ns) - int(r.last_ts_ns)
                    if r.verified_ns is not None and r.last_ts_ns is not None else None))
            for r in c.execute(sq)]
        refused = [RecentBatch(
            gateway_id=r.gateway_id, seq=int(r.seq), enterprise=r.enterprise, name=r.name,
            state="quarantined", reason=r.reason, received_ns=int(r.received_ns),
            verified_ns=None, records=None, anchored=r.last_ts_ns is not None, lag_ns=None)
            for r in c.execute(qq)]
    return merge_recent(subs, refused, RECENT)


def _lags(acc: Access, period: int) -> list[int]:
    """From last reading to verification, ns, of every verified batch of ``period``."""
    ib = ingest_batches
    q = (sa.select(ib.c.verified_ns - batches.c.last_ts_ns)
         .select_from(batches.join(ib, sa.and_(ib.c.gateway_key == batches.c.gateway_key,
                                               ib.c.seq == batches.c.seq)))
         .where(batches.c.period == period, ib.c.state == "verified",
                ib.c.verified_ns.is_not(None)))
    scope = acc.scope(batches.c.enterprise, None)
    if scope is not None:
        q = q.where(scope)
    with acc.ctx.engine.connect() as c:
        return [int(v) for (v,) in c.execute(q)]


def _today(acc: Access, now_ns: int) -> tuple[int, int]:
    """Batches verified and submissions quarantined today (the portal's time zone)."""
    acc.require(Resource(Kind.QUARANTINE))
    start = day_start_ns(now_ns, acc.ctx.config.ui.timezone)
    end = start + 86_400 * 10**9 + 3600 * 10**9  # a day of 25 hours (daylight saving)
    end = day_start_ns(end, acc.ctx.config.ui.timezone)
    ib = ingest_batches
    with acc.ctx.engine.connect() as c:
        ver = c.execute(sa.select(sa.func.count()).select_from(ib).where(
            ib.c.state == "verified", ib.c.verified_ns >= start, ib.c.verified_ns < end)).scalar()
        qua = c.execute(sa.select(sa.func.count()).select_from(quarantine).where(
            quarantine.c.received_ns >= start, quarantine.c.received_ns < end)).scalar()
    return int(ver or 0), int(qua or 0)


def _names(acc: Access) -> dict[str, str]:
    pg = Paging(acc.ctx.config.api.max_page, 0)
    page = list_enterprises(acc, pg, industry_code=None, region=None, status=None)
    return {e.account: e.name for e in page.items}


@dataclass
class Chart:
    keys: list[str]
    labels: list[str]
    months: list[int]
    #: per month, per key: grams
    cells: list[list[int]]

    @property
    def totals(self) -> list[int]:
        return [sum(row) for row in self.cells]

    def data(self, unit: str, month: Callable[..., str]) -> dict[str, Any]:
        """The chart's JSON for app.js: one point per month (labelled in the page's
        language, the year on the first month and on each January), a line per group, in
        tonnes."""
        def january(m: int) -> bool:
            return dt.datetime.fromtimestamp(m // 10**9, tz=dt.UTC).month == 1

        labels = [month(m, short=i > 0 and not january(m)) for i, m in enumerate(self.months)]
        return {"kind": "line", "x": list(range(len(self.months))),
                "categories": labels, "unit": unit, "legend": True,
                "series": [{"label": lab, "values": [row[i] / 1_000_000 for row in self.cells]}
                           for i, lab in enumerate(self.labels)]}


def _chart(acc: Access, p: PeriodInfo, group_by: GroupBy, now_ns: int,
           names: dict[str, str]) -> tuple[Chart, int, int]:
    """The period's emissions by month and group (``GET /v1/emissions``), and its readings
    and the flagged ones (the route's data quality)."""
    out = emissions_over_time(acc, group_by=group_by, bucket="month", from_ns=p.start_ns,
                              to_ns=p.end_ns, enterprise=None, industry_code=None, region=None)
    seen = [pt.start_ns for s in out.series for pt in s.points]
    upto = min(p.end_ns, max([now_ns + 1, *(t + 1 for t in seen)]))
    months = sorted(set(month_starts(p.start_ns, upto)) | set(seen))
    index = {m: i for i, m in enumerate(months)}
    cells = [[0] * len(out.series) for _ in months]
    readings = flagged = 0
    for j, s in enumerate(out.series):
        for pt in s.points:
            cells[index[pt.start_ns]][j] += pt.co2e_total_g
            readings += pt.readings
            if pt.flagged_share is not None:
                flagged += round(pt.flagged_share * pt.readings)
    keys = [s.key for s in out.series]
    labels = [names.get(k, k) if group_by == "enterprise" else k for k in keys]
    return Chart(keys, labels, months, cells), readings, flagged


def _data(acc: Access, period: int | None, group_by: GroupBy) -> dict[str, Any]:
    """Everything the live section shows (government and auditors only: it names every
    enterprise's figures)."""
    _only_government(acc)
    now_ns = acc.ctx.now_ns()
    pers = _periods(acc)
    chosen = period if period is not None else pick_period(
        ((p.period_id, p.start_ns, p.end_ns) for p in pers), now_ns)
    info = next((p for p in pers if p.period_id == chosen), None)
    if period is not None and info is None:
        raise ApiProblem(404, "Not Found", f"no period {period} on the ledger")
    head = Headline()
    names = _names(acc)
    gws = _gateway_rows(acc, now_ns)
    head.gateways = {s: sum(1 for g in gws if g.state == s) for s in STATE_ORDER}
    head.verified_today, head.quarantined_today = _today(acc, now_ns)
    findings = list_findings(acc, Paging(acc.ctx.config.api.max_page, 0), enterprise=None,
                             period=None, outcome="filed")
    head.findings_open = len(findings.items)
    head.findings_more = findings.next_offset is not None
    chart: Chart | None = None
    if info is not None:
        head.emissions_g, head.anchored, head.standing = _chain_figures(acc, info.period_id)
        lags = _lags(acc, info.period_id)
        head.lag_n = len(lags)
        head.lag_median_ns = percentile(lags, 50)
        head.lag_p95_ns = percentile(lags, 95)
        chart, head.readings, head.flagged = _chart(acc, info, group_by, now_ns, names)
    head.active, head.suspended = _register_counts(acc)
    return {"periods": pers, "period": info, "group_by": group_by, "head": head,
            "chart": chart, "gateways": gws[:MOST_GATEWAYS], "gateways_total": len(gws),
            "recent": _recent(acc), "names": names, "now_ns": now_ns}


def month_label(lang: str, start_ns: int, *, short: bool = False) -> str:
    """A UTC month (its start, ns) as the language writes it: "Mar 2024", "2024年3月";
    ``short``: without the year ("Mar", "3月")."""
    day = dt.datetime.fromtimestamp(start_ns // 10**9, tz=dt.UTC).date()
    return str(bdates.format_skeleton("MMM" if short else "yMMM", day,
                                      locale=_i18n.LOCALE.get(lang, "en_GB")))


def _page(request: Request, ctx: PortalContext, template: str, viewer: Viewer,
          **data: Any) -> Response:
    return render(request, template, viewer=viewer, words=WORDS,
                  month=functools.partial(month_label, lang_of(request, ctx)), **data)


def _only_government(acc: Access) -> None:
    if not acc.viewer.sees_all:
        raise ApiProblem(403, "Forbidden", "the overview is for the government and auditors")


def _fragment_url(request: Request, ctx: PortalContext, period: int | None,
                  group_by: GroupBy) -> str:
    q = [f"group_by={group_by}", f"lang={lang_of(request, ctx)}"]
    if period is not None:
        q.insert(0, f"period={period}")
    return "/ui/fragments/overview?" + "&".join(q)


# -- routes ------------------------------------------------------------------------------------

@router.get("/")
def start(request: Request, viewer: Annotated[Viewer, Depends(ui_viewer)],
          ctx: Annotated[PortalContext, Depends(context_of)],
          period: PeriodQ = None, group_by: GroupBy = "enterprise") -> Response:
    """The overview for government and auditors; the others go to their own start page."""
    if not viewer.sees_all:
        if viewer.is_enterprise:
            return RedirectResponse(f"/ui/enterprises/{viewer.address}", status_code=303)
        return RedirectResponse("/ui/enterprises", status_code=303)
    acc = ui_access(request, ctx, viewer)
    data = _data(acc, period, group_by)
    shown = data["period"].period_id if data["period"] is not None else None
    return _page(request, ctx, "overview/page.html", viewer, title="overview.title",
                 fragment_url=_fragment_url(request, ctx, shown, group_by), **data)


@router.get("/fragments/overview")
def fragment(request: Request, acc: Annotated[Access, Depends(ui_access)],
             ctx: Annotated[PortalContext, Depends(context_of)],
             period: PeriodQ = None, group_by: GroupBy = "enterprise") -> Response:
    """The overview's live section alone (what the page swaps in on each event)."""
    _only_government(acc)
    return _page(request, ctx, "overview/live.html", acc.viewer, **_data(acc, period, group_by))


def overview_version(conn: sa.Connection, now_ns: int) -> list[Any]:
    """A cheap value that changes whenever the overview would: submissions per state (a
    batch arrives, is verified or quarantined), the quarantine's newest row, the alarms, the
    chain's checkpoint, and the minute (gateways fall silent as time passes)."""
    ib = ingest_batches
    states = sorted((str(s), int(n)) for s, n in conn.execute(
        sa.select(ib.c.state, sa.func.count()).group_by(ib.c.state)))
    newest_refusal = conn.execute(sa.select(sa.func.max(quarantine.c.id))).scalar()
    alarms = conn.execute(sa.select(sa.func.count(), sa.func.max(gateway_alarms.c.received_ns))
                          .where(gateway_alarms.c.state == "raised")).first()
    return [states, newest_refusal, list(alarms) if alarms is not None else None,
            list(chain_version(conn)), now_ns // TICK_NS]


@router.get("/events/overview")
def events(request: Request, acc: Annotated[Access, Depends(ui_access)],
           ctx: Annotated[PortalContext, Depends(context_of)]) -> Response:
    """Server-Sent Events: one each time the overview's data changes."""
    _only_government(acc)

    def poll() -> list[Any]:
        with ctx.engine.connect() as c:
            return overview_version(c, ctx.now_ns())

    return event_stream(request, ctx, poll)
