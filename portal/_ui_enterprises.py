"""The web view's enterprises pages: the list of the enterprises a viewer may see
(``/ui/enterprises``) and one enterprise's page (``/ui/enterprises/{address}``: its carbon
account as a step table, its gateways' health, its batches, its meters' readings and its green
index).

Every figure comes from the API's route functions called as Python functions (the same access
rule and the same access log as the API); the gateways' health and the meter charts are small
queries of this module over the enterprise's own rows, read only after the route functions
allowed the viewer to see that enterprise."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from mrv_core import INVALID, Quality
from portal import _i18n
from portal._access import Resource
from portal._api_common import ADDRESS_RE, MAX_OFFSET, Access, Paging
from portal._cache import chain_version
from portal._chain_tables import batches, gateways, periods
from portal._db import snapshot
from portal._errors import ApiProblem
from portal._ingest_tables import ingest_batches, quarantine, records
from portal._routes_data import (
    CarbonAccount,
    Enterprise,
    enterprise_account,
    enterprise_accounts,
    list_batches,
    list_enterprises,
    one_enterprise,
)
from portal._routes_scores import ScoringState, get_green_index, scoring_state
from portal._ui import event_stream, lang_of, render, ui_access
from portal._ui_tables import gateway_alarms, telemetry_live

router = APIRouter(prefix="/ui")

#: enterprises shown on one page of the list
LIST_PAGE = 100
#: enterprises of the register read for the list at most (then the list says it is cut)
REGISTER_MOST = 10_000
#: batches shown on one page of an enterprise's page
BATCH_PAGE = 50
#: the enterprise's newest readings in the period read for its meter charts ...
READINGS_READ = 20_000
#: ... of which each point's chart shows at most this many (its newest)
READINGS_PER_POINT = 2_000
#: charts on one page at most
MAX_POINTS = 12
#: gateways whose health is shown at most
MAX_GATEWAYS = 50

#: the minus sign of a step that takes allowances away (U+2212, as typeset)
MINUS = "\u2212"
COMPLIANCE_CLASS = {"compliant": "ok", "non_compliant": "bad", "unverified": "warn",
                    "open": "muted"}

_i18n.register({
    "ent.list.title": ("Enterprises", "企业"),
    "ent.list.intro": ("The certified enterprises whose data you may see, with their carbon "
                       "account in period {period}.",
                       "您有权查看其数据的已认证企业，以及其在第 {period} 期的碳账户。"),
    "ent.list.filters": ("Filter the list", "筛选列表"),
    "ent.list.industry": ("Industry", "行业"),
    "ent.list.region": ("Region", "地区"),
    "ent.list.period": ("Period", "履约期"),
    "ent.list.all": ("All", "全部"),
    "ent.list.apply": ("Show", "显示"),
    "ent.list.caption": ("{n} enterprises", "共 {n} 家企业"),
    "ent.list.none": ("No enterprise matches.", "没有符合条件的企业。"),
    "ent.list.no_grants": (
        "No enterprise has granted you access to its data. An enterprise grants a bank access "
        "on the ledger (mrvctl grant-access); its data appears here while the grant holds.",
        "尚无企业授权您查看其数据。企业需在账本上向金融机构授权（mrvctl grant-access），"
        "授权有效期内其数据会显示在此处。"),
    "ent.list.cut": ("Only the first {n} enterprises of the register were read.",
                     "仅读取了登记册中的前 {n} 家企业。"),
    "ent.col.name": ("Name", "名称"),
    "ent.col.credit_code": ("Credit code", "统一社会信用代码"),
    "ent.col.industry": ("Industry", "行业"),
    "ent.col.region": ("Region", "地区"),
    "ent.col.status": ("Status", "状态"),
    "ent.col.emissions": ("Reported emissions", "报告排放量"),
    "ent.col.balance": ("Allowance balance", "配额余额"),
    "ent.col.compliance": ("Compliance", "履约状态"),
    "ent.status.active": ("active", "正常"),
    "ent.status.suspended": ("suspended", "已暂停"),
    "ent.status.none": ("not certified", "未认证"),
    "ent.compliance.open": ("open (period not closed)", "进行中（履约期未结束）"),
    "ent.compliance.unverified": ("unverified", "未核查"),
    "ent.compliance.compliant": ("compliant", "已履约"),
    "ent.compliance.non_compliant": ("non-compliant", "未履约"),
    "ent.pages": ("Pages", "分页"),
    "ent.prev": ("Previous", "上一页"),
    "ent.next": ("Next", "下一页"),
    "ent.page.info": ("Account {account} · credit code {code} · industry {industry} · "
                      "region {region}",
                      "账户 {account} · 统一社会信用代码 {code} · 行业 {industry} · 地区 {region}"),
    "ent.period.label": ("Period", "履约期"),
    "ent.period.name": ("Period {id}: {start} – {end}", "第 {id} 期：{start} 至 {end}"),
    "ent.period.closed": ("closed", "已结束"),
    "ent.period.open": ("open", "进行中"),
    "ent.period.none": ("The ledger has no compliance period yet.", "账本上尚无履约期。"),
    "ent.account.title": ("Carbon account", "碳账户"),
    "ent.account.caption": ("Carbon account, period {id}, in tonnes of CO₂-equivalent",
                            "碳账户（第 {id} 期，单位：吨二氧化碳当量）"),
    "ent.account.step": ("Step", "环节"),
    "ent.account.amount": ("Amount", "数量"),
    "ent.account.running": ("Allowances after the step", "该环节后的配额"),
    "ent.account.note": ("Where it comes from", "来源"),
    "ent.step.allocated": ("Allocated allowances", "分配的配额"),
    "ent.step.allocated.note": ("the government's allocation for the period",
                                "政府为本期分配的配额"),
    "ent.step.reported": ("Reported emissions", "报告排放量"),
    "ent.step.reported.note": ("anchored by the gateways: {batches} batches; scope 1 {s1}, "
                               "scope 2 {s2}, scope 3 {s3}",
                               "由网关上链：{batches} 个批次；范围一 {s1}，范围二 {s2}，范围三 {s3}"),
    "ent.step.verified": ("Verified emissions", "核查排放量"),
    "ent.step.verified.note": ("the auditor's latest verification report",
                               "核查机构最新的核查报告"),
    "ent.step.verified.none": ("no verification report yet", "尚无核查报告"),
    "ent.step.corrected": ("Corrected by findings", "经核查发现更正"),
    "ent.step.corrected.note": ("the latest confirmed finding's corrected figure; in force: "
                                "{accounted}",
                                "最新确认的核查发现更正后的数值；现行数值：{accounted}"),
    "ent.step.corrected.none": ("no finding confirmed", "无已确认的核查发现"),
    "ent.step.penalty": ("Penalties", "罚没量"),
    "ent.step.penalty.note": ("{deducted} of it deducted from the allowances",
                              "其中 {deducted} 已从配额中扣除"),
    "ent.step.obligation": ("To surrender", "应清缴量"),
    "ent.step.obligation.note": ("emissions in force plus penalties not yet deducted",
                                 "现行排放量加未扣除的罚没量"),
    "ent.step.traded_in": ("Bought on the market", "市场买入"),
    "ent.step.traded_out": ("Sold on the market", "市场卖出"),
    "ent.step.traded.note": ("the period's trades on the ledger", "账本上本期的成交"),
    "ent.step.surrendered": ("Surrendered", "已清缴"),
    "ent.step.surrendered.note": ("allowances handed in for compliance", "为履约上缴的配额"),
    "ent.step.balance": ("Balance", "余额"),
    "ent.step.balance.note": ("the ledger's balance of the period's allowances",
                              "账本上本期配额的余额"),
    "ent.step.balance.differs": (
        "the ledger's balance differs from the steps above by {diff} (other movements on the "
        "ledger)", "账本余额与上述环节相差 {diff}（账本上的其他变动）"),
    "ent.account.compliance": ("Compliance status", "履约状态"),
    "ent.account.settled": ("settled on the ledger", "已在账本上结算"),
    "ent.account.not_settled": ("not settled yet", "尚未结算"),
    "ent.gateways.title": ("Gateways", "网关"),
    "ent.gateways.caption": ("The enterprise's gateways and their health",
                             "企业的网关及其运行状况"),
    "ent.gw.id": ("Gateway", "网关"),
    "ent.gw.ledger": ("On the ledger", "账本状态"),
    "ent.gw.active": ("active", "启用"),
    "ent.gw.inactive": ("revoked", "已撤销"),
    "ent.gw.last_anchored": ("Last batch anchored", "最近上链批次"),
    "ent.gw.anchored_detail": ("batch {seq}, block {block}, readings until {until}",
                               "批次 {seq}，区块 {block}，读数截至 {until}"),
    "ent.gw.last_verified": ("Last verified by the portal", "平台最近核验"),
    "ent.gw.quarantined": ("Quarantined", "被隔离的提交"),
    "ent.gw.live": ("Last live reading", "最近实时读数"),
    "ent.gw.live_detail": ("{point} = {value} at {at}", "{point} = {value}，时间 {at}"),
    "ent.gw.live_verified": ("signature verified", "签名已验证"),
    "ent.gw.live_unsigned": ("signature not verified", "签名未验证"),
    "ent.gw.alarms": ("Raised alarms", "当前告警"),
    "ent.gw.never": ("never", "从未"),
    "ent.gw.live_on": ("Live: updates as the gateways report", "实时：网关上报后自动更新"),
    "ent.gw.none": ("The enterprise has no gateway on the ledger.", "该企业在账本上没有网关。"),
    "ent.gw.more": ("Only the first {n} gateways are shown.", "仅显示前 {n} 个网关。"),
    "ent.batches.title": ("Batches", "批次"),
    "ent.batches.caption": ("Anchored batches and the portal's verification of their records",
                            "已上链批次及平台对其记录的核验"),
    "ent.batch.batch": ("Batch", "批次"),
    "ent.batch.period": ("Period", "履约期"),
    "ent.batch.readings": ("Readings from", "读数起始"),
    "ent.batch.count": ("Records", "记录数"),
    "ent.batch.co2e": ("CO₂e (scope 1+2+3)", "CO₂e（范围一至三）"),
    "ent.batch.state": ("Verification", "核验状态"),
    "ent.batch.none": ("No batch anchored.", "尚无上链批次。"),
    "ent.state.verified": ("verified", "已核验"),
    "ent.state.quarantined": ("quarantined", "已隔离"),
    "ent.state.unanchored": ("waiting for its anchor", "等待上链"),
    "ent.state.not-delivered": ("not delivered to the portal", "未提交至平台"),
    "ent.meters.title": ("Meters", "计量点"),
    "ent.meters.intro": (
        "The readings the portal verified in period {period}, per measuring point: of the "
        "enterprise's newest {read} readings in the period, each chart shows a point's newest "
        "{most} at most. Flagged readings (an invalid quality bit) are a second series.",
        "平台在第 {period} 期核验的读数，按计量点显示：取企业本期最新的 {read} 条读数，"
        "每个图表最多显示该计量点最新的 {most} 条。被标记的读数（含无效质量位）作为第二条曲线显示。"),
    "ent.meters.none": ("No verified readings in this period.", "本期没有已核验的读数。"),
    "ent.meters.more": ("Only {n} points are shown.", "仅显示 {n} 个计量点。"),
    "ent.meter.heading": ("{point} ({unit}) on {gateway}", "{point}（{unit}），网关 {gateway}"),
    "ent.meter.summary": ("{n} readings shown, {flagged} flagged, {missing} without a value",
                          "显示 {n} 条读数，{flagged} 条被标记，{missing} 条无数值"),
    "ent.meter.chart": ("Readings of {point} over time in {unit}",
                        "{point} 的读数随时间变化（{unit}）"),
    "ent.meter.valid": ("Valid readings", "有效读数"),
    "ent.meter.flagged": ("Flagged readings", "被标记读数"),
    "ent.meter.table": ("The chart's data ({n} readings)", "图表数据（{n} 条读数）"),
    "ent.meter.time": ("Time", "时间"),
    "ent.meter.value": ("Value", "数值"),
    "ent.meter.quality": ("Quality", "质量"),
    "ent.meter.good": ("valid", "有效"),
    "ent.meter.no_value": ("no value", "无数值"),
    "ent.meter.flag": ("flagged", "已标记"),
    "ent.green.title": ("Green index", "绿色指数"),
    "ent.green.score": ("Score {score} of 100 (method {method})",
                        "得分 {score}（满分 100，方法 {method}）"),
    "ent.green.method": ("How the index is computed", "指数的计算方法"),
    "ent.green.caption": ("The index's components and their inputs", "指数的各项构成及其输入"),
    "ent.green.component": ("Component", "构成"),
    "ent.green.weight": ("Weight", "权重"),
    "ent.green.sub": ("Sub-score", "分项得分"),
    "ent.green.points": ("Points", "得分"),
    "ent.green.rule": ("Rule", "规则"),
    "ent.green.inputs": ("Inputs", "输入"),
    "ent.green.total": ("Total", "合计"),
    "ent.green.none": ("No green index for this period.", "本期没有绿色指数。"),
    "ent.green.verification": ("Verification: {v}", "核查：{v}"),
    "ent.green.c.trend": ("Trend against the prior year", "与上年相比的趋势"),
    "ent.green.c.intensity": ("Intensity against the benchmark", "强度与基准比较"),
    "ent.green.c.data_quality": ("Data quality", "数据质量"),
    "ent.green.c.findings": ("Findings and penalties", "核查发现与罚没"),
    "ent.green.c.compliance": ("Compliance record", "履约记录"),
    "ent.verif.verified": ("verified", "已核查"),
    "ent.verif.corrected": ("corrected by a finding", "经核查发现更正"),
    "ent.verif.unverified": ("unverified", "未核查"),
})


# -- helpers ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class PeriodRow:
    period_id: int
    start_ns: int
    end_ns: int
    closed: bool


def _periods(acc: Access) -> list[PeriodRow]:
    """The ledger's compliance periods (public: the contract's schedule)."""
    with acc.ctx.engine.connect() as c:
        return [PeriodRow(int(r.period_id), int(r.start_ns), int(r.end_ns), bool(r.closed))
                for r in c.execute(sa.select(periods).order_by(periods.c.period_id))]


def _choose_period(acc: Access, pers: list[PeriodRow], asked: int | None) -> PeriodRow | None:
    """The asked period (404 if the ledger has none such), else the one holding the portal's
    clock, else the latest."""
    if asked is not None:
        for p in pers:
            if p.period_id == asked:
                return p
        raise ApiProblem(404, "Not Found", f"no period {asked} on the ledger")
    now = acc.ctx.now_ns()
    for p in pers:
        if p.start_ns <= now < p.end_ns:
            return p
    return pers[-1] if pers else None


def _text_q(v: str | None, what: str) -> str | None:
    """A filter from a GET form: empty means none; no control characters."""
    if v is None or v == "":
        return None
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in v):
        raise ApiProblem(422, "Unprocessable Content", f"{what}: control characters")
    return v


FilterQ = Annotated[str | None, Query(max_length=64)]


# -- the list ----------------------------------------------------------------------------------

@router.get("/enterprises")
def enterprises_page(request: Request, acc: Annotated[Access, Depends(ui_access)],
                     industry: FilterQ = None, region: FilterQ = None,
                     period: Annotated[int | None, Query(ge=1, le=2**32 - 1)] = None,
                     offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> Response:
    industry_code = _text_q(industry, "industry")
    region_code = _text_q(region, "region")
    pers = _periods(acc)
    per = _choose_period(acc, pers, period)
    most = acc.ctx.config.api.max_page
    register: list[Enterprise] = []
    cut = False
    at = 0
    while True:  # the whole register (public): the filters' choices and the rows
        pg = list_enterprises(acc, Paging(most, at), industry_code=None, region=None,
                              status=None)
        register += pg.items
        if pg.next_offset is None:
            break
        if len(register) >= REGISTER_MOST:
            cut = True
            break
        at = pg.next_offset
    industries = sorted({e.industry_code for e in register})
    regions = sorted({e.region for e in register})
    # the rows: the enterprises whose data the viewer may see (their accounts are theirs)
    seen = [e for e in register if acc.decide(Resource.of(e.account)).allowed]
    matching = [e for e in seen
                if (industry_code is None or e.industry_code == industry_code)
                and (region_code is None or e.region == region_code)]
    matching.sort(key=lambda e: (e.name, e.account))
    shown = matching[offset:offset + LIST_PAGE]
    rows: list[tuple[Enterprise, CarbonAccount | None]] = []
    for e in shown:
        account = (enterprise_account(e.account, per.period_id, acc) if per is not None
                   else None)
        rows.append((e, account))
    params = {k: v for k, v in (("industry", industry_code), ("region", region_code),
                                ("period", str(period) if period is not None else None))
              if v is not None}

    def page_link(off: int) -> str:
        return "/ui/enterprises?" + urlencode({**params, "offset": off})

    return render(
        request, "enterprises/list.html", viewer=acc.viewer, title="ent.list.title",
        rows=rows, industries=industries, regions=regions, industry=industry_code,
        region=region_code, periods=pers, period=per, cut=cut, register_most=REGISTER_MOST,
        total=len(matching), no_grants=acc.viewer.is_finance and not acc.viewer.sees_all
        and not seen,
        prev_link=page_link(max(0, offset - LIST_PAGE)) if offset > 0 else None,
        next_link=page_link(offset + LIST_PAGE) if offset + LIST_PAGE < len(matching)
        else None,
        compliance_class=COMPLIANCE_CLASS)


# -- one enterprise ----------------------------------------------------------------------------

@dataclass
class Step:
    key: str
    amount_g: int | None
    #: "+" / MINUS when the step moves the allowances, "" when it is a figure of emissions
    sign: str
    running_g: int | None
    note: str

    @property
    def moves(self) -> bool:
        """The step adds allowances to the account or takes them away."""
        return self.sign in ("+", MINUS)


def account_steps(a: CarbonAccount, t: Any, fmt: _i18n.Fmt) -> tuple[list[Step], int]:
    """The carbon account as steps, in the order allowances and emissions meet: allocated,
    reported, verified, corrected, penalties, to surrender, traded in and out, surrendered,
    balance. Returns the steps and how far the ledger's balance is from the steps' sum."""
    r = a.reported_g
    run = a.allocated_g
    steps = [Step("allocated", a.allocated_g, "+", run, t("ent.step.allocated.note")),
             Step("reported", r.total_g, "", None, t(
                 "ent.step.reported.note", batches=fmt.num(a.batches),
                 s1=fmt.tonnes(r.scope1_g), s2=fmt.tonnes(r.scope2_g),
                 s3=fmt.tonnes(r.scope3_g))),
             Step("verified", a.verified_g, "", None,
                  t("ent.step.verified.note") if a.verified_g is not None
                  else t("ent.step.verified.none")),
             Step("corrected", a.corrected_g, "", None,
                  t("ent.step.corrected.note", accounted=fmt.tonnes(a.accounted_g))
                  if a.corrected_g is not None else t("ent.step.corrected.none"))]
    run -= a.penalty_deducted_g
    steps.append(Step("penalty", a.penalty_g, MINUS if a.penalty_deducted_g else "",
                      run if a.penalty_deducted_g else None,
                      t("ent.step.penalty.note", deducted=fmt.tonnes(a.penalty_deducted_g))))
    steps.append(Step("obligation", a.obligation_g, "", None, t("ent.step.obligation.note")))
    run += a.traded_in_g
    steps.append(Step("traded_in", a.traded_in_g, "+", run, t("ent.step.traded.note")))
    run -= a.traded_out_g
    steps.append(Step("traded_out", a.traded_out_g, MINUS, run, t("ent.step.traded.note")))
    run -= a.surrendered_g
    steps.append(Step("surrendered", a.surrendered_g, MINUS, run,
                      t("ent.step.surrendered.note")))
    diff = a.balance_g - run
    steps.append(Step("balance", a.balance_g, "=", a.balance_g,
                      t("ent.step.balance.note") if diff == 0 else
                      t("ent.step.balance.differs", diff=fmt.tonnes(diff))))
    return steps, diff


@dataclass
class GatewayHealth:
    gateway_id: str
    active: bool
    last_seq: int | None = None
    last_block: int | None = None
    last_ts_ns: int | None = None
    last_verified_ns: int | None = None
    quarantined: int = 0
    live: dict[str, Any] | None = None
    alarms: list[dict[str, Any]] = field(default_factory=list)


def _newest_verified(gateway_id: str) -> sa.Select[Any]:
    """The gateway's newest verified batch (by sequence number: the primary key's order)."""
    return (sa.select(ingest_batches.c.seq, ingest_batches.c.verified_ns)
            .where(ingest_batches.c.gateway_id == gateway_id,
                   ingest_batches.c.state == "verified")
            .order_by(ingest_batches.c.seq.desc()).limit(1))


def _gateway_health(acc: Access, gws: list[tuple[str, str, bool]]) -> list[GatewayHealth]:
    """Per gateway (id, key, active): its last anchored batch, the portal's last verification,
    its quarantined submissions, and the live telemetry's newest reading and raised alarms
    (when the telemetry worker keeps them); all read in one snapshot, so a reading and the
    alarm it raised, written together, show together."""
    out: list[GatewayHealth] = []
    with snapshot(acc.ctx.engine) as c:
        for gw_id, key, active in gws:
            h = GatewayHealth(gw_id, active)
            last = c.execute(sa.select(batches.c.seq, batches.c.block_number,
                                       batches.c.last_ts_ns)
                             .where(batches.c.gateway_key == key)
                             .order_by(batches.c.seq.desc()).limit(1)).first()
            if last is not None:
                h.last_seq, h.last_block, h.last_ts_ns = (int(last.seq), int(last.block_number),
                                                          int(last.last_ts_ns))
            v = c.execute(_newest_verified(gw_id)).first()
            h.last_verified_ns = None if v is None else int(v.verified_ns)
            h.quarantined = int(c.execute(sa.select(sa.func.count()).select_from(quarantine)
                                          .where(quarantine.c.gateway_id == gw_id)).scalar()
                                or 0)
            live = c.execute(sa.select(telemetry_live).where(
                telemetry_live.c.gateway_id == gw_id)
                .order_by(telemetry_live.c.id.desc()).limit(1)).first()
            if live is not None:
                h.live = dict(live._mapping)
            h.alarms = [dict(r._mapping) for r in c.execute(
                sa.select(gateway_alarms).where(gateway_alarms.c.gateway_id == gw_id,
                                                gateway_alarms.c.state == "raised")
                .order_by(gateway_alarms.c.rule, gateway_alarms.c.point).limit(20))]
            out.append(h)
    return out


@dataclass
class Meter:
    gateway_id: str
    point_id: str
    unit: str
    #: (ts_ns, value or None, quality), oldest first
    readings: list[tuple[int, float | None, int]]

    @property
    def flagged(self) -> int:
        return sum(1 for _, _, q in self.readings if q & INVALID)

    @property
    def missing(self) -> int:
        return sum(1 for _, v, _ in self.readings if v is None)

    def chart(self, valid_label: str, flagged_label: str, unit_label: str) -> dict[str, Any]:
        """The chart's data for app.js: valid readings and flagged ones as two series (a
        reading without a value is a gap in both)."""
        return {"kind": "line", "x": [ts // 1_000_000_000 for ts, _, _ in self.readings],
                "series": [
                    {"label": valid_label,
                     "values": [None if q & INVALID else v for _, v, q in self.readings]},
                    {"label": flagged_label, "points": True,
                     "values": [v if q & INVALID else None for _, v, q in self.readings]}],
                "unit": unit_label, "legend": True}


def quality_names(q: int) -> str:
    """The quality bits' names (``Quality``), for the chart's data table."""
    return ", ".join(f.name or "" for f in Quality if f.value and q & f.value and f.name)


def _meters(acc: Access, ent: str, per: PeriodRow) -> tuple[list[Meter], bool]:
    """The enterprise's newest ``READINGS_READ`` verified readings in the period, per (gateway,
    point, unit), at most ``READINGS_PER_POINT`` each, oldest first; and whether points were
    left out (more than ``MAX_POINTS``). The caller has checked the viewer may see ``ent``."""
    q = (sa.select(records.c.gateway_id, records.c.point_id, records.c.unit, records.c.ts_ns,
                   records.c.value, records.c.quality)
         .where(records.c.enterprise == ent, records.c.kind == 1,
                records.c.ts_ns >= per.start_ns, records.c.ts_ns < per.end_ns)
         .order_by(records.c.ts_ns.desc()).limit(READINGS_READ))
    by: dict[tuple[str, str, str], list[tuple[int, float | None, int]]] = {}
    with acc.ctx.engine.connect() as c:
        for gw, point, unit, ts, value, quality in c.execute(q):
            got = by.setdefault((gw, point, unit), [])
            if len(got) < READINGS_PER_POINT:
                v = None if value is None or not math.isfinite(value) else float(value)
                got.append((int(ts), v, int(quality)))
    keys = sorted(by)
    return ([Meter(gw, point, unit, sorted(by[(gw, point, unit)]))
             for gw, point, unit in keys[:MAX_POINTS]], len(keys) > MAX_POINTS)


def _green_index(acc: Access, st: ScoringState, ent: str, per: PeriodRow) -> Any:
    try:
        return get_green_index(acc.ctx, acc, st, ent, per.period_id)
    except ApiProblem as e:
        if e.status == 404:
            return None
        raise


def green_inputs(inputs: dict[str, Any], fmt: _i18n.Fmt) -> list[tuple[str, str]]:
    """A component's inputs as (name, text): grams as tonnes, shares as percentages."""
    out: list[tuple[str, str]] = []
    for k, v in inputs.items():
        if v is None:
            text = "–"
        elif k == "periods" and isinstance(v, list):
            text = ", ".join(f"{p['period']}: {p['status']}" for p in v) or "–"
        elif k.endswith("_g") and isinstance(v, int | float) and k != "intensity_g_per_unit" \
                and k != "benchmark_g_per_unit":
            text = fmt.tonnes(v)
        elif k in ("capture_rate", "flagged_share", "penalty_share", "change"):
            text = fmt.pct(float(v), 2)
        elif isinstance(v, bool | str):
            text = str(v) or "–"
        elif isinstance(v, int):
            text = fmt.num(v)
        elif isinstance(v, float):
            text = fmt.num(v, 0 if v.is_integer() else 4)
        else:
            text = str(v)
        out.append((k, text))
    return out


@router.get("/enterprises/{address}")
def enterprise_page(request: Request,
                    address: Annotated[str, Path(pattern=ADDRESS_RE)],
                    acc: Annotated[Access, Depends(ui_access)],
                    st: Annotated[ScoringState, Depends(scoring_state)],
                    period: Annotated[int | None, Query(ge=1, le=2**32 - 1)] = None,
                    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> Response:
    ent = address.lower()
    # the carbon accounts first: a viewer who may not see the enterprise gets the API's 403
    # (with its access-log row) before anything else is read
    all_accounts = enterprise_accounts(ent, acc)
    detail = one_enterprise(ent, acc)
    pers = _periods(acc)
    per = _choose_period(acc, pers, period)
    account = None
    if per is not None:
        account = next((a for a in all_accounts if a.period == per.period_id), None)
        if account is None:  # no figures in that period: the route's zeros
            account = enterprise_account(ent, per.period_id, acc)
    lang = lang_of(request, acc.ctx)
    fmt = _i18n.Fmt(lang, acc.ctx.config.ui.timezone)

    def t(key: str, **kw: object) -> str:
        return _i18n.gettext(lang, key, **kw)

    steps, diff = account_steps(account, t, fmt) if account is not None else ([], 0)
    gws = [(g.gateway_id, g.gateway_key, g.active) for g in (detail.gateways or [])]
    health = _gateway_health(acc, gws[:MAX_GATEWAYS])
    bpage = list_batches(acc, Paging(BATCH_PAGE, offset), enterprise=ent, gateway_id=None,
                         period=None, state=None, from_ns=None, to_ns=None)
    meters, more_points = _meters(acc, ent, per) if per is not None else ([], False)
    charts = [m.chart(t("ent.meter.valid"), t("ent.meter.flagged"), fmt.unit(m.unit))
              for m in meters]
    green = _green_index(acc, st, ent, per) if per is not None else None
    base = f"/ui/enterprises/{ent}"

    def batch_link(off: int) -> str:
        q = {"offset": off} | ({"period": period} if period is not None else {})
        return base + "?" + urlencode(q)

    return render(
        request, "enterprises/page.html", viewer=acc.viewer, title="ent.list.title",
        e=detail, periods=pers, period=per, account=account, steps=steps, diff=diff,
        health=health, more_gateways=len(gws) > MAX_GATEWAYS, max_gateways=MAX_GATEWAYS,
        batches=bpage.items,
        prev_link=batch_link(max(0, offset - BATCH_PAGE)) if offset > 0 else None,
        next_link=batch_link(bpage.next_offset) if bpage.next_offset is not None else None,
        meters=list(zip(meters, charts, strict=True)), more_points=more_points,
        max_points=MAX_POINTS, readings_read=READINGS_READ, readings_per_point=READINGS_PER_POINT,
        green=green, green_inputs=green_inputs, quality_names=quality_names,
        is_flagged=lambda q: bool(q & INVALID),
        compliance_class=COMPLIANCE_CLASS, quote=lambda s: quote(str(s), safe=""))


# -- the gateways' health, live ----------------------------------------------------------------

def _gateways_of(acc: Access, ent: str) -> list[tuple[str, str, bool]]:
    """The enterprise's gateways on the ledger (id, key, active), for a viewer who may see
    its data (checked, and a bank's access logged, here)."""
    acc.require(Resource.of(ent))
    with acc.ctx.engine.connect() as c:
        return [(g.gateway_id, g.gateway_key, bool(g.active)) for g in c.execute(
            sa.select(gateways.c.gateway_id, gateways.c.gateway_key, gateways.c.active)
            .where(gateways.c.enterprise == ent).order_by(gateways.c.gateway_id))]


def gateways_version(c: sa.Connection, gateway_ids: list[str]) -> list[Any]:
    """What changes when the gateways' health may have: the indexer's checkpoint (anchors,
    gateways), the newest live reading and raised alarm, each gateway's newest delivered and
    newest verified batch (each an indexed look-up)."""
    live = c.execute(sa.select(sa.func.max(telemetry_live.c.id))
                     .where(telemetry_live.c.gateway_id.in_(gateway_ids))).scalar()
    alarm = c.execute(sa.select(sa.func.count(), sa.func.max(gateway_alarms.c.received_ns))
                      .where(gateway_alarms.c.gateway_id.in_(gateway_ids),
                             gateway_alarms.c.state == "raised")).first()
    delivered = []
    for gw in gateway_ids:
        newest = c.execute(sa.select(sa.func.max(ingest_batches.c.seq))
                           .where(ingest_batches.c.gateway_id == gw)).scalar()
        verified = c.execute(_newest_verified(gw)).first()
        delivered.append([newest, None if verified is None else int(verified.seq)])
    return [list(chain_version(c)), live, list(alarm) if alarm is not None else None,
            delivered]


@router.get("/events/enterprises/{address}")
def gateway_events(request: Request, address: Annotated[str, Path(pattern=ADDRESS_RE)],
                   acc: Annotated[Access, Depends(ui_access)]) -> Response:
    """Server-Sent Events: one each time the enterprise's gateways' health may have changed
    (the fragment that the page then fetches checks the viewer's access again)."""
    ent = address.lower()
    ids = [g[0] for g in _gateways_of(acc, ent)][:MAX_GATEWAYS]

    def poll() -> list[Any]:
        with acc.ctx.engine.connect() as c:
            return gateways_version(c, ids)

    return event_stream(request, acc.ctx, poll)


@router.get("/fragments/enterprises/{address}/gateways")
def gateways_fragment(request: Request, address: Annotated[str, Path(pattern=ADDRESS_RE)],
                      acc: Annotated[Access, Depends(ui_access)]) -> Response:
    gws = _gateways_of(acc, address.lower())
    return render(request, "enterprises/_gateways.html", viewer=acc.viewer,
                  health=_gateway_health(acc, gws[:MAX_GATEWAYS]),
                  more_gateways=len(gws) > MAX_GATEWAYS, max_gateways=MAX_GATEWAYS)
