"""The web view's live telemetry (``/ui/telemetry``), for government, the regulator and
auditors: per gateway its newest readings as the telemetry worker (``_telemetry.py``) keeps
them, each marked by whether its record signature verified with the gateway's registered key,
the alarms its local rules raised, and a small chart per point. Live: an event stream whose
version is the newest reading's id and the alarms' newest change."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from portal import _i18n
from portal._api_common import Access
from portal._chain_tables import enterprises, gateways
from portal._context import PortalContext, context_of
from portal._db import snapshot
from portal._errors import ApiProblem
from portal._ui import event_stream, lang_of, render, ui_access
from portal._ui_tables import gateway_alarms, telemetry_live

router = APIRouter(prefix="/ui")

#: what the page shows at most: gateways, readings read per gateway, table rows, charted
#: points per gateway and readings per chart
MAX_GATEWAYS = 100
RECENT = 600
TABLE_ROWS = 12
MAX_CHARTS = 6
CHART_READINGS = 60

_i18n.register({
    "telemetry.title": ("Live telemetry", "实时遥测"),
    "telemetry.intro": (
        "The gateways' live readings as they arrive over MQTT. Each reading's record signature "
        "is checked with the gateway's key as registered on the ledger: only a reading marked "
        "“signed and verified” is known to come unchanged from the gateway.",
        "各网关经 MQTT 实时上报的读数。每条读数的记录签名均用该网关在账本上登记的公钥核验："
        "只有标为“已签名且核验通过”的读数才可确认来自该网关且未被篡改。"),
    "telemetry.not_configured": (
        "Live telemetry is not configured on this portal (ui.telemetry).",
        "本平台未配置实时遥测（ui.telemetry）。"),
    "telemetry.live": ("Live: updates as readings arrive", "实时：读数到达即更新"),
    "telemetry.filter": ("Filter", "筛选"),
    "telemetry.gateway": ("Gateway", "网关"),
    "telemetry.all": ("All gateways", "全部网关"),
    "telemetry.show": ("Show", "显示"),
    "telemetry.none": ("No live readings have arrived yet.", "尚未收到实时读数。"),
    "telemetry.enterprise": ("Enterprise:", "企业："),
    "telemetry.not_verified_series": ("NOT verified or unsigned", "未核验通过或未签名"),
    "telemetry.unregistered": ("not registered", "未登记"),
    "telemetry.kept": ("Record signatures of the {n} readings kept",
                       "所保留的 {n} 条读数的记录签名"),
    "telemetry.verified": ("signed and verified", "已签名且核验通过"),
    "telemetry.unverified": ("signed, NOT verified", "已签名但核验未通过"),
    "telemetry.unsigned": ("unsigned", "未签名"),
    "telemetry.latest": ("Latest readings", "最新读数"),
    "telemetry.latest_caption": ("The newest {n} readings of {gw}", "{gw} 的最新 {n} 条读数"),
    "telemetry.point": ("Point", "监测点"),
    "telemetry.time": ("Time", "时间"),
    "telemetry.value": ("Value", "数值"),
    "telemetry.quality": ("Quality", "质量"),
    "telemetry.signature": ("Record signature", "记录签名"),
    "telemetry.good": ("good", "正常"),
    "telemetry.flagged": ("flagged ({code})", "异常标记（{code}）"),
    "telemetry.alarms": ("Raised alarms", "未解除的报警"),
    "telemetry.no_alarms": ("No alarm is raised.", "当前无报警。"),
    "telemetry.alarms_caption": ("Alarms raised by {gw}'s local rules",
                                 "{gw} 本地规则触发的报警"),
    "telemetry.rule": ("Rule", "规则"),
    "telemetry.level": ("Level", "级别"),
    "telemetry.since": ("Since", "起始时间"),
    "telemetry.cleared": ("{n} alarms cleared", "已解除报警 {n} 条"),
    "telemetry.alarms_unsigned": ("Alarms carry no signature: they are as trustworthy as the "
                                  "broker's access rules.",
                                  "报警消息不带签名，其可信度取决于消息代理的访问控制。"),
    "telemetry.charts": ("Recent values per point", "各监测点近期数值"),
    "telemetry.chart_label": ("{point}: the last {n} values ({unit}), verified ones apart",
                              "{point}：最近 {n} 个数值（{unit}），核验通过的单列"),
    "telemetry.chart_table": ("The values as a table", "以表格查看数值"),
    "telemetry.forbidden": ("Live telemetry is for government, the regulator and auditors.",
                            "实时遥测仅供政府、主管部门和核查机构查看。"),
})


def _require(acc: Access) -> None:
    if not acc.viewer.sees_all:
        acc.ctx.metrics.inc("portal_api_denied_total")
        raise ApiProblem(403, "Forbidden",
                         "live telemetry is for government, the regulator and auditors")


def _finite(v: float | None) -> float | None:
    """A chart's value: JSON has no infinity (a gateway may send one)."""
    return v if v is not None and math.isfinite(v) else None


def _status(signed: bool, verified: bool) -> str:
    return "verified" if verified else ("unverified" if signed else "unsigned")


def telemetry_view(conn: sa.Connection, gateway: str | None, lang: str = "en") -> dict[str, Any]:
    """What the page shows: per gateway (``gateway`` alone when given) its enterprise, the
    counts of each signature status over the readings kept, the newest readings, a chart per
    point (verified values and the others as two series, so a changed value never passes for
    a verified one) and the raised alarms."""
    fmt = _i18n.Fmt(lang)
    t, a = telemetry_live, gateway_alarms
    ids_q = sa.union(sa.select(t.c.gateway_id.label("g")).distinct(),
                     sa.select(a.c.gateway_id.label("g")).distinct()).subquery()
    q = sa.select(ids_q.c.g)
    if gateway is not None:
        q = q.where(ids_q.c.g == gateway)
    all_ids = sorted(str(g) for g in conn.execute(
        sa.select(ids_q.c.g).order_by(ids_q.c.g).limit(MAX_GATEWAYS)).scalars())
    ids = sorted(str(g) for g in conn.execute(q.order_by(ids_q.c.g).limit(MAX_GATEWAYS))
                 .scalars())
    owners: dict[str, tuple[str, str]] = {}
    if ids:
        for gid, ent, name in conn.execute(
                sa.select(gateways.c.gateway_id, gateways.c.enterprise, enterprises.c.name)
                .select_from(gateways.outerjoin(enterprises,
                                                enterprises.c.account == gateways.c.enterprise))
                .where(gateways.c.gateway_id.in_(ids))):
            owners[str(gid)] = (str(ent), str(name or ""))
    out: list[dict[str, Any]] = []
    for gid in ids:
        counts = {"verified": 0, "unverified": 0, "unsigned": 0}
        for signed, verified, n in conn.execute(
                sa.select(t.c.signed, t.c.verified, sa.func.count()).where(t.c.gateway_id == gid)
                .group_by(t.c.signed, t.c.verified)):
            counts[_status(bool(signed), bool(verified))] += int(n)
        recent = [dict(r._mapping) for r in conn.execute(
            sa.select(t).where(t.c.gateway_id == gid).order_by(t.c.id.desc()).limit(RECENT))]
        for r in recent:
            r["status"] = _status(bool(r["signed"]), bool(r["verified"]))
        by_point: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in recent:  # newest first; the points in the order they were last heard
            if len(by_point[r["point"]]) < CHART_READINGS:
                by_point[r["point"]].append(r)
        charts = []
        for i, (point, rs) in enumerate(list(by_point.items())[:MAX_CHARTS]):
            rs = sorted(rs, key=lambda r: (r["ts_ns"], r["id"]))
            series = [{"label": _i18n.gettext(lang, key),
                       "values": [_finite(r["value"]) if r["verified"] is want else None
                                  for r in rs]}
                      for key, want in (("telemetry.verified", True),
                                        ("telemetry.not_verified_series", False))
                      if any(r["verified"] is want for r in rs)]
            charts.append({
                "id": f"tl-{len(out)}-{i}", "point": point, "unit": rs[-1]["unit"],
                "readings": rs,
                "data": {"kind": "line", "x": [r["ts_ns"] / 1e9 for r in rs], "series": series,
                         "legend": True, "unit": fmt.unit(rs[-1]["unit"])}})
        alarms = [dict(r._mapping) for r in conn.execute(
            sa.select(a).where(a.c.gateway_id == gid, a.c.state == "raised")
            .order_by(a.c.ts_ms.desc(), a.c.rule, a.c.point))]
        cleared = int(conn.execute(sa.select(sa.func.count()).select_from(a).where(
            a.c.gateway_id == gid, a.c.state == "cleared")).scalar_one())
        ent, name = owners.get(gid, ("", ""))
        out.append({"id": gid, "enterprise": ent, "enterprise_name": name,
                    "counts": counts, "kept": sum(counts.values()),
                    "latest": recent[:TABLE_ROWS], "charts": charts, "alarms": alarms,
                    "cleared": cleared})
    return {"gateways": out, "gateway_ids": all_ids, "gateway": gateway}


def version(conn: sa.Connection) -> list[int]:
    """The live version: the newest reading's id, and the alarms' newest change and count."""
    newest = conn.execute(sa.select(sa.func.max(telemetry_live.c.id))).scalar()
    changed, n = conn.execute(sa.select(sa.func.max(gateway_alarms.c.received_ns),
                                        sa.func.count()).select_from(gateway_alarms)).one()
    return [int(newest or 0), int(changed or 0), int(n or 0)]


GatewayFilter = Annotated[str | None, Query(max_length=128, pattern=r"^[^\x00-\x1f]*$")]


def _data(request: Request, ctx: PortalContext, gateway: str | None) -> dict[str, Any]:
    with snapshot(ctx.engine) as conn:  # readings and the alarms they raised, as written
        data = telemetry_view(conn, gateway or None, lang_of(request, ctx))
    data["configured"] = ctx.config.ui.telemetry is not None
    return data


@router.get("/telemetry", response_class=HTMLResponse)
def telemetry_page(request: Request, acc: Annotated[Access, Depends(ui_access)],
                   gateway: GatewayFilter = None) -> HTMLResponse:
    _require(acc)
    return render(request, "telemetry/page.html", viewer=acc.viewer, title="telemetry.title",
                  **_data(request, acc.ctx, gateway))


@router.get("/fragments/telemetry", response_class=HTMLResponse)
def telemetry_fragment(request: Request, acc: Annotated[Access, Depends(ui_access)],
                       gateway: GatewayFilter = None) -> HTMLResponse:
    _require(acc)
    return render(request, "telemetry/_live.html", viewer=acc.viewer, **_data(request, acc.ctx, gateway))


@router.get("/events/telemetry")
def telemetry_events(request: Request, ctx: Annotated[PortalContext, Depends(context_of)],
                     acc: Annotated[Access, Depends(ui_access)]) -> StreamingResponse:
    _require(acc)

    def poll() -> list[int]:
        with ctx.engine.connect() as conn:
            return version(conn)

    return event_stream(request, ctx, poll)
