"""The web view's market area: rankings (with the method that computes them), the allowance
market (offers, trades, prices) and verification (reports, findings, penalties).

Every figure comes from the API's own route functions (``get_rankings``, ``list_offers``,
``list_trades``, ``prices``, ``list_reports``, ``list_findings``, ``list_enterprises``), called
with the viewer's ``Access``: a page shows exactly the rows the API gives that viewer, with the
same access log. The only SQL of this module reads what no route gives: the ledger's periods
(public, for the period selectors) and the gateway id of a gateway key that a finding the viewer
may already see names (for the link to the batch page)."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from portal import _i18n, _scoring
from portal._access import Kind, Resource
from portal._api_common import Access, Paging
from portal._chain_tables import gateways, periods
from portal._errors import ApiProblem
from portal._routes_data import (
    FindingOut,
    list_enterprises,
    list_findings,
    list_offers,
    list_reports,
    list_trades,
    prices,
)
from portal._routes_scores import RankingsOut, ScoringState, get_rankings, scoring_state
from portal._ui import lang_of, render, ui_access

router = APIRouter(prefix="/ui")

#: the ledger quotes prices and trade values in the currency's minor unit (fen for CNY:
#: docs/ledger.md "A trade's value", contracts/src/Market.sol); 100 fen are one yuan
MINOR_PER_YUAN = 100
#: rows a table shows (one page of the route; a note says when there are more)
ROWS = 500

# a filter form sends "" for "All": each filter takes the empty string as none
PeriodQ = Annotated[str | None, Query(pattern=r"^[0-9]{0,10}$", description="a period id")]
GroupQ = Annotated[str | None, Query(pattern=r"^[^\x00-\x1f\x7f]{0,64}$")]
OfferStatusQ = Annotated[str | None, Query(pattern=r"^(open|filled|cancelled)?$")]
StateQ = Annotated[str | None, Query(pattern=r"^(filed|confirmed|rejected)?$")]


def _period_id(v: str | None) -> int | None:
    """A period filter's value: none for "" (All); a 422 outside the ledger's id range."""
    if not v:
        return None
    n = int(v)
    if not 1 <= n <= 2**32 - 1:
        raise ApiProblem(422, "Unprocessable Content", f"period {n} is out of range")
    return n

_i18n.register({
    # -- shared -----------------------------------------------------------------------------
    "market.filter.apply": ("Show", "显示"),
    "market.filter.all": ("All", "全部"),
    "market.period": ("Period", "履约期"),
    "market.period.option": ("Period {id}: {start} – {end} ({state})",
                             "第 {id} 期：{start} 至 {end}（{state}）"),
    "market.period.closed": ("closed", "已关闭"),
    "market.period.open": ("open", "进行中"),
    "market.enterprise": ("Enterprise", "企业"),
    "market.more_rows": ("Only the first {n} rows are shown.", "仅显示前 {n} 行。"),
    "market.scope.all": ("You see every enterprise's rows.", "您可查看所有企业的数据。"),
    "market.scope.own": ("You see your own enterprise's rows only.", "您仅可查看本企业的数据。"),
    "market.scope.granted": (
        "You see the rows of enterprises that granted your institution access on the ledger "
        "(and whose grant still holds) only.",
        "您仅可查看在账本上授权贵机构访问且授权仍在有效期内的企业的数据。"),
    "market.anyone": ("anyone", "任何企业"),
    "market.none_yet": ("not recorded", "未记录"),
    "market.chart.table": ("The chart's figures as a table", "图表数据（表格）"),
    # -- rankings ---------------------------------------------------------------------------
    "market.rank.title": ("Rankings", "排名"),
    "market.rank.intro.industry": (
        "Enterprises of each industry ranked by emissions intensity (t CO₂e per unit of "
        "output) in the period: lower is better.",
        "按行业对本履约期内企业的排放强度（每单位产出的吨 CO₂e）排名：数值越低越好。"),
    "market.rank.intro.region": (
        "Enterprises of each region ranked by their emissions intensity divided by their "
        "industry's benchmark (1.0 = exactly the benchmark): lower is better.",
        "按地区对企业排名，依据为排放强度与所属行业基准值之比（1.0 即恰好等于基准）：数值越低越好。"),
    "market.rank.public": (
        "Rankings are published figures: every signed-in account sees the same rankings.",
        "排名为公开发布的数据：所有已登录账户看到的排名相同。"),
    "market.rank.method_link": ("How the ranking and the green index are computed",
                                "排名与绿色指数的计算方法"),
    "market.rank.by": ("Rank by", "排名方式"),
    "market.rank.by.industry": ("Industry", "按行业"),
    "market.rank.by.region": ("Region", "按地区"),
    "market.rank.group": ("Group", "组别"),
    "market.rank.group.industry": ("Industry {code}", "行业 {code}"),
    "market.rank.group.region": ("Region {code}", "地区 {code}"),
    "market.rank.group.count": ("{n} enterprises, {ranked} ranked",
                                "共 {n} 家企业，{ranked} 家参与排名"),
    "market.rank.no_periods": ("The ledger has no compliance period yet.", "账本上尚无履约期。"),
    "market.rank.no_groups": ("No enterprise is in this group.", "该组别中没有企业。"),
    "market.rank.none_ranked": ("No enterprise of this group could be ranked (see the reasons "
                                "in the table).",
                                "该组别中没有企业可参与排名（原因见下表）。"),
    "market.rank.caption": ("Ranking of {group}, period {period}",
                            "{group}排名，第 {period} 期"),
    "market.rank.col.rank": ("Rank", "名次"),
    "market.rank.col.intensity": ("Intensity", "排放强度"),
    "market.rank.col.ratio": ("Intensity / benchmark", "强度/基准"),
    "market.rank.col.emissions": ("Emissions (basis)", "排放量（依据）"),
    "market.rank.col.output": ("Output", "产出"),
    "market.rank.col.quality": ("Data quality", "数据质量"),
    "market.rank.col.verification": ("Verification", "核查状态"),
    "market.rank.unranked": ("unranked", "未排名"),
    "market.rank.per_unit": ("t CO₂e/{unit}", "吨 CO₂e/{unit}"),
    "market.rank.unit": ("unit", "单位产出"),
    "market.rank.basis.verified": ("verified", "核查值"),
    "market.rank.basis.reported": ("reported", "报告值"),
    "market.rank.capture": ("captured {pct}", "采集率 {pct}"),
    "market.rank.flagged": ("flagged {pct}", "异常 {pct}"),
    "market.rank.no_readings": ("no readings", "无读数"),
    "market.rank.ver.corrected": ("corrected by a finding", "经核查发现更正"),
    "market.rank.ver.verified": ("verified by a report", "经核查报告核证"),
    "market.rank.ver.unverified": ("not verified", "未核查"),
    "market.rank.why.no_emissions": ("no emissions data for the period", "本期无排放数据"),
    "market.rank.why.no_output": ("no output figure for the period", "本期无产出数据"),
    "market.rank.why.no_benchmark": ("no benchmark of its industry for the period",
                                     "本期所属行业无基准值"),
    "market.rank.chart_note": ("shorter is better; the table below holds the figures",
                               "越短越好；数值见下表"),
    "market.rank.chart": ("Bar chart: {what} of the ranked enterprises of {group}",
                          "柱状图：{group}参与排名企业的{what}"),
    # -- the method ---------------------------------------------------------------------------
    "market.method.title": ("How the ranking and the green index are computed",
                            "排名与绿色指数的计算方法"),
    "market.method.version": ("Method versions: {ranking} and {green}. A change of any rule "
                              "below is a new version.",
                              "方法版本：{ranking} 与 {green}。以下任何规则的变更均为新版本。"),
    "market.method.rank.title": ("The ranking", "排名"),
    "market.method.rank.what": (
        "Ranked: every certified enterprise (active or suspended) of the industry or region, "
        "in one compliance period.",
        "参与排名的对象：该行业或地区内所有经认证的企业（正常或暂停状态），按单个履约期计算。"),
    "market.method.rank.emissions": (
        "Emissions E: the verified emissions when there are any (an auditor's report or a "
        "confirmed finding), otherwise the emissions the enterprise's gateways reported on the "
        "ledger (scope 1 + 2 + 3). The table names the basis.",
        "排放量 E：若有核查值（核查机构报告或已确认的核查发现）则采用核查值，否则采用企业网关在账本上报告"
        "的排放量（范围一、二、三之和）。表中注明所用依据。"),
    "market.method.rank.intensity": (
        "Intensity I = E / Q, in t CO₂e per unit of output Q (the output of a benchmark "
        "allocation on the ledger, otherwise the figure the regulator configured).",
        "排放强度 I = E / Q，单位为每单位产出 Q 的吨 CO₂e（产出取账本上基准法配额分配的产出，"
        "否则取主管部门配置的数值）。"),
    "market.method.rank.key": (
        "By industry the key is the intensity I. By region, where industries measure output "
        "in different units, the key is the ratio r = I / B to the industry's benchmark B "
        "(1.0 = exactly the benchmark).",
        "按行业排名时以排放强度 I 为依据；按地区排名时，由于各行业产出单位不同，以强度与行业基准值 B 之比"
        " r = I / B 为依据（1.0 即恰好等于基准）。"),
    "market.method.rank.order": (
        "Order, best first: the key ascending; then the higher capture rate (readings with a "
        "value / all readings); then the lower flagged share (readings with an invalid quality "
        "flag / all readings). An enterprise without readings counts as capture rate 0 and "
        "flagged share 1 in these tie-breaks.",
        "排序（由优到劣）：依据值升序；相同时采集率（有数值的读数/全部读数）高者在前；"
        "再相同时异常比例（带无效质量标志的读数/全部读数）低者在前。没有读数的企业在上述比较中按采集率 0、"
        "异常比例 1 计。"),
    "market.method.rank.ties": (
        "Entries equal on all three share a rank (1, 2, 2, 4) and are listed by address.",
        "三项均相同的企业名次并列（如 1、2、2、4），按账户地址排列。"),
    "market.method.rank.excluded": (
        "Unranked (listed last, with the reason): no emissions data for the period; no output "
        "figure; by region, no benchmark for the enterprise's industry.",
        "不参与排名（列于最后并注明原因）：本期无排放数据；无产出数据；按地区排名时所属行业无基准值。"),
    "market.method.green.title": ("The green index", "绿色指数"),
    "market.method.green.intro": (
        "A score from 0 to 100 per enterprise and period for green credit: the weighted sum "
        "of five sub-scores, each 0..100 rounded to two decimals; the score is rounded to one "
        "decimal (halves up). Where a figure cannot exist yet, the sub-score is a neutral {n}.",
        "面向绿色信贷的企业单期评分（0 至 100）：五项分项得分的加权和，各分项取值 0 至 100 并保留两位小数；"
        "总分保留一位小数（四舍五入）。数据尚不存在时，该分项取中性值 {n}。"),
    "market.method.green.col.component": ("Component", "分项"),
    "market.method.green.col.weight": ("Weight", "权重"),
    "market.method.green.col.rule": ("Sub-score", "分项得分规则"),
    "market.method.green.trend": ("Trend", "趋势"),
    "market.method.green.trend.rule": (
        "c = (V − V′) / V′: verified emissions against the prior-year period; {n} − {k} × "
        "(100 c), so 100 at −20 %, {n} at no change, 0 at +20 %. Neutral {n} without the "
        "figures.",
        "c = (V − V′) / V′：本期核查排放量与上年同期相比；得分 {n} − {k} ×（100 c）"
        "，即下降 20% 得 100，不变得 {n}，上升 20% 得 0。缺少数据时取中性值 {n}。"),
    "market.method.green.intensity": ("Intensity", "排放强度"),
    "market.method.green.intensity.rule": (
        "r = (E / Q) / B: 100 × ({z} − r), so 100 at r ≤ 0.5, 50 at the benchmark, 0 at "
        "r ≥ {z}. Neutral {n} without E, Q or B.",
        "r = (E / Q) / B：得分 100 × ({z} − r)，即 r ≤ 0.5 得 100，"
        "等于基准得 50，r ≥ {z} 得 0。缺少 E、Q 或 B 时取中性值 {n}。"),
    "market.method.green.quality": ("Data quality", "数据质量"),
    "market.method.green.quality.rule": (
        "100 × capture rate × (1 − flagged share); 0 without readings (no data is not good "
        "data).",
        "100 × 采集率 ×（1 − 异常比例）；无读数得 0（没有数据不等于数据良好）。"),
    "market.method.green.findings": ("Findings", "核查发现"),
    "market.method.green.findings.rule": (
        "100 − {a} per confirmed abnormal-data finding − {f} per confirmed falsified-data "
        "finding − {p} × min(1, penalty / E), at least 0. Pending and rejected findings do not "
        "count.",
        "100 − 每项已确认的数据异常发现扣 {a} 分 − 每项已确认的数据造假发现扣 {f} 分 − {p} × min(1, 罚没量"
        " / E)，"
        "最低为 0。待定和已驳回的发现不计。"),
    "market.method.green.compliance": ("Compliance", "履约"),
    "market.method.green.compliance.rule": (
        "100 × compliant / counted, over the enterprise's closed periods up to this one (the "
        "last {k}); neutral {n} with none.",
        "100 × 履约期数 / 计入期数，计入截至本期已关闭的履约期（最近 {k} 期）；没有时取中性值 {n}。"),
    # -- the market -----------------------------------------------------------------------------
    "market.title": ("Allowance market", "配额交易市场"),
    "market.intro": (
        "Offers and trades of emission allowances on the ledger. Prices are per tonne of CO₂e; "
        "the ledger keeps them in fen (1 yuan = 100 fen).",
        "账本上的碳排放配额挂单与成交。价格以每吨 CO₂e 计；账本以分为单位记录（1 元 = 100 分）。"),
    "market.offers.public": ("Offers and price figures are public; trades as your role allows.",
                             "挂单与价格数据公开；成交记录按您的角色权限显示。"),
    "market.offers": ("Offers", "挂单"),
    "market.offers.status": ("Offer status", "挂单状态"),
    "market.offers.caption": ("Offers on the ledger", "账本上的挂单"),
    "market.offers.none": ("No offers.", "没有挂单。"),
    "market.col.id": ("No.", "编号"),
    "market.col.seller": ("Seller", "卖方"),
    "market.col.buyer": ("Buyer", "买方"),
    "market.col.status": ("Status", "状态"),
    "market.col.created": ("Offered", "挂单时间"),
    "market.col.amount": ("Amount", "数量"),
    "market.col.remaining": ("Remaining", "剩余"),
    "market.col.price": ("Price per tonne", "每吨价格"),
    "market.col.offer": ("Offer", "挂单"),
    "market.col.time": ("Traded", "成交时间"),
    "market.col.value": ("Value", "金额"),
    "market.col.payment": ("Payment", "付款"),
    "market.status.open": ("open", "挂单中"),
    "market.status.filled": ("filled", "已成交"),
    "market.status.cancelled": ("cancelled", "已撤销"),
    "market.status.none": ("none", "无"),
    "market.payment.recorded": ("recorded by {who}", "已由 {who} 记录"),
    "market.trades": ("Trades", "成交记录"),
    "market.trades.caption": ("Trades you may see", "您可查看的成交记录"),
    "market.trades.none": ("No trades you may see.", "没有您可查看的成交记录。"),
    "market.prices": ("Price history", "价格走势"),
    "market.prices.chart": ("Line chart: price per tonne of each trade over time, in yuan",
                            "折线图：各笔成交的每吨价格随时间变化（元）"),
    "market.prices.series": ("Trade price per tonne", "成交每吨价格"),
    "market.prices.caption": ("Prices per period (all trades on the ledger)",
                              "各履约期价格（账本上全部成交）"),
    "market.prices.trades": ("Trades", "成交笔数"),
    "market.prices.volume": ("Volume", "成交量"),
    "market.prices.vwap": ("Volume-weighted average", "成交量加权均价"),
    "market.prices.min": ("Lowest", "最低价"),
    "market.prices.max": ("Highest", "最高价"),
    "market.prices.none": ("No trades yet.", "尚无成交。"),
    "market.yuan_per_t": ("yuan per tonne", "元/吨"),
    # -- verification -----------------------------------------------------------------------------
    "market.ver.title": ("Verification", "核查"),
    "market.ver.intro": (
        "Auditors' verification reports and findings, and the government's decisions on "
        "them.",
        "核查机构的核查报告与核查发现，以及主管部门对发现的处理决定。"),
    "market.ver.state": ("Finding state", "发现状态"),
    "market.ver.reports": ("Verification reports", "核查报告"),
    "market.ver.reports.caption": ("Reports filed by auditors", "核查机构提交的报告"),
    "market.ver.reports.none": ("No reports.", "没有核查报告。"),
    "market.ver.col.auditor": ("Auditor", "核查机构"),
    "market.ver.col.verified": ("Verified", "核查排放量"),
    "market.ver.col.reported": ("Reported", "报告排放量"),
    "market.ver.col.difference": ("Difference", "差额"),
    "market.ver.col.filed": ("Filed", "提交时间"),
    "market.ver.col.report": ("Report", "报告"),
    "market.ver.open_report": ("report {id}", "报告 {id}"),
    "market.ver.no_link": ("(not a web address)", "（非网址）"),
    "market.ver.findings": ("Findings", "核查发现"),
    "market.ver.findings.caption": ("Findings filed by auditors", "核查机构提交的发现"),
    "market.ver.findings.none": ("No findings.", "没有核查发现。"),
    "market.ver.col.kind": ("Kind", "类型"),
    "market.ver.col.corrected": ("Corrected", "更正排放量"),
    "market.ver.col.previous": ("Previous", "原排放量"),
    "market.ver.col.penalty": ("Penalty", "罚没量"),
    "market.ver.col.decided": ("Decided", "决定"),
    "market.ver.col.evidence": ("Evidence", "证据"),
    "market.ver.col.record": ("Record", "记录"),
    "market.ver.kind.abnormal": ("abnormal data", "数据异常"),
    "market.ver.kind.falsified": ("falsified data", "数据造假"),
    "market.ver.kind.none": ("none", "无"),
    "market.ver.state.filed": ("pending", "待定"),
    "market.ver.state.confirmed": ("confirmed", "已确认"),
    "market.ver.state.rejected": ("rejected", "已驳回"),
    "market.ver.state.none": ("none", "无"),
    "market.ver.by": ("by", "决定方"),
    "market.ver.hash": ("hash", "哈希"),
    "market.ver.not_decided": ("not decided", "尚未决定"),
    "market.ver.batch": ("batch {seq} of {gateway}", "{gateway} 第 {seq} 批"),
    "market.ver.open_evidence": ("evidence {id}", "证据 {id}"),
    "market.ver.penalties": ("Penalties per enterprise", "各企业罚没量"),
    "market.ver.penalties.caption": ("Penalties of confirmed findings, per enterprise",
                                     "已确认发现的罚没量（按企业）"),
    "market.ver.penalties.none": ("No confirmed finding carries a penalty.",
                                  "没有带罚没量的已确认发现。"),
    "market.ver.col.confirmed": ("Confirmed findings", "已确认发现"),
    "market.ver.col.total": ("Penalty total", "罚没总量"),
})

#: the message of each value a page shows in words (a template writes ``t(labels.x[value])``)
LABELS: dict[str, dict[str, str]] = {
    "offer": {"open": "market.status.open", "filled": "market.status.filled",
              "cancelled": "market.status.cancelled", "none": "market.status.none"},
    "state": {"filed": "market.ver.state.filed", "confirmed": "market.ver.state.confirmed",
              "rejected": "market.ver.state.rejected", "none": "market.ver.state.none"},
    "kind": {"abnormal": "market.ver.kind.abnormal", "falsified": "market.ver.kind.falsified",
             "none": "market.ver.kind.none"},
    "intro": {"industry": "market.rank.intro.industry", "region": "market.rank.intro.region"},
    "group": {"industry": "market.rank.group.industry", "region": "market.rank.group.region"},
    "basis": {"verified": "market.rank.basis.verified", "reported": "market.rank.basis.reported"},
    "ver": {"corrected": "market.rank.ver.corrected", "verified": "market.rank.ver.verified",
            "unverified": "market.rank.ver.unverified"},
    "component": {"trend": "market.method.green.trend",
                  "intensity": "market.method.green.intensity",
                  "quality": "market.method.green.quality",
                  "findings": "market.method.green.findings",
                  "compliance": "market.method.green.compliance"},
    "rule": {"trend": "market.method.green.trend.rule",
             "intensity": "market.method.green.intensity.rule",
             "quality": "market.method.green.quality.rule",
             "findings": "market.method.green.findings.rule",
             "compliance": "market.method.green.compliance.rule"},
}

#: industry codes (GB/T 4754) of the sectors in the data the portal serves; others as codes
INDUSTRY_NAMES = {"D4411": ("thermal power", "火力发电"), "C3011": ("cement", "水泥制造")}
#: the unranked reasons of ``_scoring._unranked`` by their start, as message keys
_UNRANKED = (("no emissions data", "market.rank.why.no_emissions"),
             ("no output figure", "market.rank.why.no_output"),
             ("no benchmark", "market.rank.why.no_benchmark"))


def yuan(minor: int | float | None) -> Decimal | None:
    """A price or value of the ledger (fen) in yuan, exactly."""
    if minor is None:
        return None
    return Decimal(str(minor)) / MINOR_PER_YUAN


def web_link(uri: str | None) -> str | None:
    """``uri`` when a browser may follow it as a link (http or https with a host), else None:
    a URI from the chain is untrusted and is shown as text otherwise (``javascript:``,
    ``data:``, relative paths, over-long strings are never links)."""
    if not uri or len(uri) > 2000 or any(ord(ch) < 0x21 or ord(ch) == 0x7f for ch in uri):
        return None
    try:
        u = urlsplit(uri)
    except ValueError:
        return None
    return uri if u.scheme.lower() in ("http", "https") and u.netloc else None


def batch_path(gateway_id: str, seq: int) -> str:
    """The web view's page of one batch (``/ui/batches/{gateway_id}/{seq}``)."""
    return f"/ui/batches/{quote(gateway_id, safe='')}/{seq}"


def unranked_key(reason: str | None) -> str | None:
    if reason is None:
        return None
    for start, key in _UNRANKED:
        if reason.startswith(start):
            return key
    return None


def penalties_by_enterprise(found: Iterable[FindingOut]) -> list[tuple[str, int, int]]:
    """(enterprise, confirmed findings, penalty total in grams) per enterprise with a confirmed
    finding, the largest penalty first (then by address)."""
    totals: dict[str, list[int]] = {}
    for f in found:
        if f.outcome != "confirmed":
            continue
        t = totals.setdefault(f.enterprise, [0, 0])
        t[0] += 1
        t[1] += f.penalty_g
    return sorted(((e, n, g) for e, (n, g) in totals.items()), key=lambda x: (-x[2], x[0]))


def _periods(request: Request, acc: Access) -> list[dict[str, Any]]:
    """The ledger's compliance periods, newest first (public, as on-chain), each with its
    first and last day as the ledger defines them (UTC; the end is exclusive)."""
    acc.require(Resource(Kind.PUBLIC))
    with acc.ctx.engine.connect() as c:
        rows = c.execute(sa.select(periods).order_by(periods.c.period_id.desc())).all()
    utc = _i18n.Fmt(lang_of(request, acc.ctx), "UTC")
    return [{"id": int(r.period_id), "first": utc.date_s(r.start_ns // 10**9),
             "last": utc.date_s((r.end_ns - 1) // 10**9), "closed": bool(r.closed)}
            for r in rows]


def _names(acc: Access) -> dict[str, dict[str, str]]:
    """The register (public): address -> name, industry, region."""
    page = list_enterprises(acc, Paging(acc.ctx.config.api.max_page, 0), industry_code=None,
                            region=None, status=None)
    return {e.account: {"name": e.name, "industry": e.industry_code, "region": e.region}
            for e in page.items}


def _paging(acc: Access) -> Paging:
    return Paging(min(ROWS, acc.ctx.config.api.max_page), 0)


def _scope_note(acc: Access) -> str:
    v = acc.viewer
    if v.sees_all:
        return "market.scope.all"
    if v.is_enterprise and not v.is_finance:
        return "market.scope.own"
    return "market.scope.granted"


# -- rankings ------------------------------------------------------------------------------------

#: the ranking's bar chart (server-drawn SVG: no script, scales with the page)
CHART_W, LABEL_W, VALUE_W, ROW_H = 800, 260, 90, 30


def rank_chart(r: RankingsOut, idx: int) -> dict[str, Any] | None:
    """The bar chart of one group: one horizontal bar per ranked entry, best first, its
    length the key (intensity or ratio) against the group's largest; None when nobody is
    ranked."""
    g = r.groups[idx]
    region = r.by == "region"
    ranked = [(e, (e.benchmark_ratio if region else e.intensity_t_per_unit) or 0.0)
              for e in g.entries if e.rank is not None]
    if not ranked:
        return None
    top = max(v for _, v in ranked) or 1.0
    span = CHART_W - LABEL_W - VALUE_W
    bars = [{"rank": e.rank, "name": e.name, "value": v, "y": 10 + i * ROW_H,
             "w": max(1.0, round(span * v / top, 1))} for i, (e, v) in enumerate(ranked)]
    return {"bars": bars, "width": CHART_W, "height": 20 + len(bars) * ROW_H,
            "label_w": LABEL_W, "bar_h": ROW_H - 10}


@router.get("/rankings")
def rankings_page(request: Request, acc: Annotated[Access, Depends(ui_access)],
                  st: Annotated[ScoringState, Depends(scoring_state)],
                  period_q: Annotated[PeriodQ, Query(alias="period")] = None,
                  by: Literal["industry", "region"] = "industry",
                  group_q: Annotated[GroupQ, Query(alias="group")] = None) -> Response:
    period, group = _period_id(period_q), group_q or None
    pers = _periods(request, acc)
    names = _names(acc)
    groups = sorted({n["industry" if by == "industry" else "region"] for n in names.values()})
    chosen = period
    if chosen is None and pers:
        closed = [p for p in pers if p["closed"]]
        chosen = (closed or pers)[0]["id"]
    result: RankingsOut | None = None
    charts: list[dict[str, Any] | None] = []
    if chosen is not None:
        result = get_rankings(request, acc.ctx, acc.viewer, st, period=chosen, by=by,
                              group=group)
        charts = [rank_chart(result, i) for i in range(len(result.groups))]
    return render(request, "market/rankings.html", viewer=acc.viewer, title="market.rank.title",
                  labels=LABELS,
                  periods=pers, period=chosen, by=by, group=group, groups=groups,
                  result=result, charts=charts, industry_names=INDUSTRY_NAMES,
                  unranked_key=unranked_key, method=_method())


def _method() -> dict[str, Any]:
    """The constants the method section states, from the code that applies them."""
    s = _scoring
    return {"ranking": s.RANKING_METHOD, "green": s.GREEN_INDEX_METHOD,
            "neutral": int(s.NEUTRAL), "trend_k": float(s.TREND_POINTS_PER_PCT),
            "zero_at": float(s.INTENSITY_ZERO_AT), "abnormal": s.FINDING_POINTS_ABNORMAL,
            "falsified": s.FINDING_POINTS_FALSIFIED, "penalty": s.PENALTY_POINTS,
            "lookback": s.COMPLIANCE_LOOKBACK,
            "weights": [("trend", s.W_TREND), ("intensity", s.W_INTENSITY),
                        ("quality", s.W_QUALITY), ("findings", s.W_FINDINGS),
                        ("compliance", s.W_COMPLIANCE)]}


# -- the market ----------------------------------------------------------------------------------

@router.get("/market")
def market_page(request: Request, acc: Annotated[Access, Depends(ui_access)],
                period_q: Annotated[PeriodQ, Query(alias="period")] = None,
                status_q: Annotated[OfferStatusQ, Query(alias="status")] = None) -> Response:
    period = _period_id(period_q)
    status: Literal["open", "filled", "cancelled"] | None = (
        status_q if status_q in ("open", "filled", "cancelled") else None)  # type: ignore[assignment]
    pg = _paging(acc)
    offer_page = list_offers(acc, pg, period=period, status=status, seller=None)
    trade_page = list_trades(acc, pg, period=period, enterprise=None)
    price_rows = prices(acc, period=period)
    trades_by_time = sorted(trade_page.items, key=lambda t: (t.traded_at, t.trade_id))
    chart = {"kind": "line", "x": [t.traded_at for t in trades_by_time],
             "series": [{"label": _i18n.gettext(lang_of(request, acc.ctx), "market.prices.series"),
                         "values": [float(yuan(t.price_per_tonne) or 0)
                                    for t in trades_by_time]}],
             "unit": _i18n.gettext(lang_of(request, acc.ctx), "market.yuan_per_t")}
    return render(request, "market/market.html", viewer=acc.viewer, title="market.title",
                  labels=LABELS,
                  periods=_periods(request, acc), period=period, offer_status=status,
                  offers=offer_page, trades=trade_page, trades_by_time=trades_by_time,
                  prices=price_rows, chart=chart, names=_names(acc), yuan=yuan,
                  scope_note=_scope_note(acc), rows=pg.limit)


# -- verification --------------------------------------------------------------------------------

def _gateway_ids(acc: Access, keys: set[str]) -> dict[str, str]:
    """The gateway id of each key that a finding the viewer sees names (the chain's
    ``GatewayRegistered``; the finding is visible already, so is its gateway)."""
    if not keys:
        return {}
    with acc.ctx.engine.connect() as c:
        return {r.gateway_key: r.gateway_id for r in c.execute(
            sa.select(gateways.c.gateway_key, gateways.c.gateway_id)
            .where(gateways.c.gateway_key.in_(sorted(keys))))}


@router.get("/verification")
def verification_page(request: Request, acc: Annotated[Access, Depends(ui_access)],
                      period_q: Annotated[PeriodQ, Query(alias="period")] = None,
                      state_q: Annotated[StateQ, Query(alias="state")] = None) -> Response:
    period = _period_id(period_q)
    state: Literal["filed", "confirmed", "rejected"] | None = (
        state_q if state_q in ("filed", "confirmed", "rejected") else None)  # type: ignore[assignment]
    pg = _paging(acc)
    report_page = list_reports(acc, pg, enterprise=None, period=period, auditor=None)
    finding_page = list_findings(acc, pg, enterprise=None, period=period, outcome=state)
    # the penalties table counts every confirmed finding of the period filter, whatever the
    # state filter shows (read again only when the page does not hold them all)
    confirmed = (finding_page.items
                 if state in (None, "confirmed") and finding_page.next_offset is None else
                 list_findings(acc, pg, enterprise=None, period=period,
                               outcome="confirmed").items)
    gw = _gateway_ids(acc, {f.gateway_key for f in finding_page.items if f.gateway_key})
    records = {f.finding_id: (gw[f.gateway_key], f.batch_seq,
                              batch_path(gw[f.gateway_key], f.batch_seq))
               for f in finding_page.items
               if f.gateway_key and f.batch_seq and f.gateway_key in gw}
    return render(request, "market/verification.html", viewer=acc.viewer, labels=LABELS,
                  title="market.ver.title", periods=_periods(request, acc), period=period, state=state,
                  reports=report_page, findings=finding_page, records=records,
                  penalties=penalties_by_enterprise(confirmed), names=_names(acc),
                  web_link=web_link, scope_note=_scope_note(acc), rows=pg.limit)
