"""Rankings and the green index (docs/portal.md): the pure method on plain values, and
the routes over a fixed data set on SQLite and PostgreSQL, with hand-computed ranks and scores
and the access rules (government, auditor, the enterprise itself, finance with and without the
enterprise's on-chain grant)."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import struct
import threading
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from mrv_core import Quality
from portal import PortalContext, create_app, migrate, open_engine
from portal._api_tables import access_log
from portal._chain_tables import (
    accounts,
    benchmarks,
    data_access,
    emissions,
    enterprises,
    findings,
    periods,
    reports,
    roles,
)
from portal._config import ChainSection, OutputFigure, PortalConfig
from portal._ingest_tables import ingest_batches, records
from portal._scoring import (
    W_COMPLIANCE,
    W_FINDINGS,
    W_INTENSITY,
    W_QUALITY,
    W_TREND,
    Account,
    Compliance,
    EnterprisePeriod,
    PeriodInfo,
    ReadingQuality,
    compliance_of,
    green_index,
    one_year_earlier_ns,
    prior_year_period,
    rank_group,
    rankings,
)
from portal._scoring_queries import QualityCache
from portal._viewer import issue_token
from tests.portal_data import as_indexed

NS = 1_000_000_000
HOUR = 3600 * NS


def ts(y: int, m: int, d: int) -> int:
    return int(dt.datetime(y, m, d, tzinfo=dt.UTC).timestamp()) * NS


# -- the fixed data set ---------------------------------------------------------------------
#
# Periods (UTC, [start, end)): 1 = Jan 2025, 2 = Feb 2025, 3 = Jan 2026; all closed.
# Period 1 is period 3's prior-year period (2026-01-01 one calendar year earlier = 2025-01-01,
# both 31 days long).
#
# Enterprises (industry, region):
#   A cement/north: benchmark allocation in period 3 (output 1000 on the chain, benchmark
#     800,000 g/t; portal.yaml's 999 for it is ignored: the chain's figure comes first);
#     reported 760 t, verified 720 t (a report), surrendered 720 t; period 1 verified 800 t.
#   B cement/south: direct allocation; output 2000 t from portal.yaml; reported 1,700 t,
#     verified 1,800 t by a confirmed abnormal-data finding with a penalty of 90 t; a
#     falsified-data finding rejected; surrendered 1,500 t; period 1: reported 1,500 t, never
#     verified.
#   C cement/north: output 500 (portal.yaml), reported 360 t, nothing verified.
#   D power/north: output 100 MWh (portal.yaml), reported 40 t, no readings.
#   E cement/south: reported 100 t, no output figure anywhere.
#   F cement/north (suspended): nothing at all.
#   G cement/south: output 100 (portal.yaml), reported 72 t.
#   H cement/north, status 0 (not certified): never listed.
A, B, C, D, E, F, G, H = ("0x" + ch * 40 for ch in "abcdef98")
GOV, AUDITOR, FIN_OK, FIN_EXPIRED, FIN_NONE, NOBODY = ("0x" + f"{i:02x}" * 20
                                                       for i in range(1, 7))
T = 1_000_000  # grams per tonne
P1 = (1, ts(2025, 1, 1), ts(2025, 2, 1))
P2 = (2, ts(2025, 2, 1), ts(2025, 3, 1))
P3 = (3, ts(2026, 1, 1), ts(2026, 2, 1))
NOW_NS = ts(2026, 3, 1)
NOW_S = NOW_NS // NS

OUTPUTS = [
    OutputFigure(enterprise=A, period=3, output=999, unit="t clinker"),
    OutputFigure(enterprise=B, period=3, output=2000, unit="t clinker"),
    OutputFigure(enterprise=C, period=3, output=500, unit="t clinker"),
    OutputFigure(enterprise=D, period=3, output=100, unit="MWh"),
    OutputFigure(enterprise=G, period=3, output=100, unit="t clinker"),
]


def _bits(v: float | None) -> int:
    return struct.unpack("<q", struct.pack("<d", math.nan if v is None else v))[0]


def _readings(ent: str, pattern: list[tuple[float | None, int]], start: int,
              first_seq: int = 0, kind: int = 1) -> list[dict[str, Any]]:
    return [{"gateway_id": f"gw-{ent[2:4]}", "seq": first_seq + i, "batch_seq": 1,
             "enterprise": ent, "kind": kind, "point_id": "p1", "ts_ns": start + i * HOUR,
             "value": v, "value_bits": _bits(v), "unit": "t", "quality": q, "source": "s",
             "extra": None, "leaf": "0x" + "00" * 32, "record_signature": None}
            for i, (v, q) in enumerate(pattern)]


# A's and C's ten readings in period 3: one without a value (NaN, COMM_FAULT), one spike (a
# value, flagged), one counter rollover (informational: NOT an invalid bit).
# capture rate 9/10 = 0.9; flagged share 2/10 = 0.2
TEN = [(1.0, 0), (1.0, 0), (1.0, 0), (None, int(Quality.COMM_FAULT)), (1.0, 0),
       (1.0, int(Quality.SPIKE)), (1.0, 0), (2.0, int(Quality.COUNTER_ROLLOVER)), (1.0, 0),
       (1.0, 0)]


def seed(conn: sa.Connection) -> None:
    def ent(acc: str, industry: str, region: str, status: int = 1) -> dict[str, Any]:
        return {"account": acc, "credit_code": acc[-6:], "name": f"ent {acc[2]}",
                "industry_code": industry, "region": region, "status": status,
                "certified_at": 1}

    conn.execute(enterprises.insert(), [
        ent(A, "cement", "north"), ent(B, "cement", "south"), ent(C, "cement", "north"),
        ent(D, "power", "north"), ent(E, "cement", "south"), ent(F, "cement", "north", 2),
        ent(G, "cement", "south"), ent(H, "cement", "north", 0)])
    conn.execute(periods.insert(), [
        {"period_id": p, "start_ns": s, "end_ns": e, "closed": True} for p, s, e in (P1, P2, P3)])
    conn.execute(benchmarks.insert(), [
        {"period": 3, "industry_code": "cement", "grams_per_unit": 800_000},
        {"period": 3, "industry_code": "power", "grams_per_unit": 500_000},
        {"period": 1, "industry_code": "cement", "grams_per_unit": 700_000}])

    def acct(e: str, p: int, *, alloc: int = 0, surr: int = 0, ver: int = 0, pen: int = 0,
             has: bool = False, output: int = 0, bench: int = 0) -> dict[str, Any]:
        return {"enterprise": e, "period": p, "allocated_g": alloc, "surrendered_g": surr,
                "verified_g": ver, "penalty_g": pen, "penalty_deducted_g": 0,
                "has_verified": has, "settled": False, "settled_status": 0, "output": output,
                "benchmark_g_per_unit": bench}

    conn.execute(accounts.insert(), [
        acct(A, 1, alloc=800 * T, surr=800 * T, ver=800 * T, has=True),  # compliant
        acct(A, 2, alloc=100, surr=50, ver=100, has=True),  # non-compliant
        acct(A, 3, alloc=800 * T, surr=720 * T, ver=720 * T, has=True, output=1000,
             bench=800_000),  # compliant
        acct(B, 1, alloc=1000 * T),  # unverified
        acct(B, 3, alloc=1500 * T, surr=1500 * T, ver=1800 * T, pen=90 * T, has=True),
        # B: owed 1,800 + 90 t > 1,500 t surrendered: non-compliant
    ])

    def em(e: str, p: int, s1: int, s2: int = 0) -> dict[str, Any]:
        return {"enterprise": e, "period": p, "scope1_g": s1, "scope2_g": s2, "scope3_g": 0,
                "batches": 1}

    conn.execute(emissions.insert(), [
        em(A, 3, 700 * T, 60 * T), em(B, 3, 1600 * T, 100 * T), em(C, 3, 360 * T),
        em(D, 3, 40 * T), em(E, 3, 100 * T), em(G, 3, 72 * T),
        em(A, 1, 810 * T), em(B, 1, 1500 * T)])

    def rep(i: int, e: str, p: int, v: int) -> dict[str, Any]:
        return {"report_id": i, "enterprise": e, "period": p, "auditor": AUDITOR,
                "filed_at": 1, "verified_g": v, "reported_g": v,
                "report_hash": "0x" + "11" * 32, "uri": ""}

    conn.execute(reports.insert(), [rep(1, A, 3, 720 * T), rep(2, A, 1, 800 * T),
                                    rep(3, A, 2, 100)])

    def fnd(i: int, e: str, kind: int, status: int, pen: int = 0) -> dict[str, Any]:
        return {"finding_id": i, "enterprise": e, "period": 3, "kind": kind, "status": status,
                "auditor": AUDITOR, "filed_at": 1, "corrected_g": 0, "previous_g": 0,
                "penalty_g": pen, "decided_by": GOV, "decided_at": 2,
                "evidence_hash": "0x" + "22" * 32, "gateway_key": "0x" + "00" * 32,
                "batch_seq": 0, "record_leaf": "0x" + "00" * 32, "evidence_uri": "",
                "decision_note": ""}

    conn.execute(findings.insert(), [
        fnd(1, A, 1, 1),  # filed, pending: not counted
        fnd(2, B, 1, 2, 90 * T),  # confirmed abnormal data
        fnd(3, B, 2, 3)])  # rejected: not counted

    start = P3[1]
    rows = (_readings(A, TEN, start) + _readings(C, TEN, start)
            + _readings(B, [(1.0, 0)] * 4, start) + _readings(G, [(1.0, 0)] * 2, start)
            + _readings(E, [(1.0, 0)] * 3, start)
            # not counted: A's derived record, a reading at period 3's (exclusive) end, one in
            # period 2, and H's (not certified)
            + _readings(A, [(1.0, int(Quality.INSUFFICIENT))], start, 100, kind=2)
            + _readings(A, [(None, int(Quality.COMM_FAULT))], P3[2], 101)
            + _readings(A, [(None, int(Quality.COMM_FAULT))], P2[1], 102)
            + _readings(H, [(1.0, 0)], start))
    conn.execute(records.insert(), rows)

    conn.execute(roles.insert(), [
        {"role": "government", "account": GOV}, {"role": "auditor", "account": AUDITOR},
        {"role": "finance", "account": FIN_OK}, {"role": "finance", "account": FIN_EXPIRED},
        {"role": "finance", "account": FIN_NONE}])
    conn.execute(data_access.insert(), [
        {"enterprise": A, "finance": FIN_OK, "until_at": NOW_S + 3600},
        {"enterprise": A, "finance": FIN_EXPIRED, "until_at": NOW_S},  # ends now: expired
        {"enterprise": A, "finance": FIN_NONE, "until_at": 0},  # revoked
        {"enterprise": B, "finance": FIN_EXPIRED, "until_at": NOW_S + 10}])


@contextlib.contextmanager
def portal(db_url: str) -> Iterator[tuple[TestClient, PortalContext]]:
    cfg = PortalConfig(chain=ChainSection(address_book=Path("x.json")), outputs=OUTPUTS)
    engine = open_engine(db_url)
    migrate(engine)
    with engine.begin() as conn:
        seed(conn)
    ctx = PortalContext(config=cfg, engine=engine, now_ns=lambda: NOW_NS,
                        token_secret=b"k" * 32)
    try:
        with TestClient(create_app(ctx)) as client:
            yield client, ctx
    finally:
        engine.dispose()


def auth(ctx: PortalContext, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(ctx, who)[0]}"}


def ranks(group: dict[str, Any]) -> list[tuple[str, int | None]]:
    return [(e["enterprise"], e["rank"]) for e in group["entries"]]


# -- the fixed set through the API: hand-computed ranks ---------------------------------------


def test_rankings_of_the_fixed_set(db_url: str) -> None:
    with portal(db_url) as (client, ctx):
        r = client.get("/v1/rankings", params={"period": 3, "by": "industry"},
                       headers=auth(ctx, GOV))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["method"] == "ranking/v1" and body["ranked_on"] == "intensity"
        groups = {g["group"]: g for g in body["groups"]}
        assert list(groups) == ["cement", "power"]  # H (status 0) is nobody's
        # cement, intensity = emissions / output (g per unit; verified where there is):
        #   G  72 t / 100          = 720,000 g/t  capture 2/2 = 1.0, flagged 0
        #   A 720 t (verified) / 1000 (chain) = 720,000  capture 0.9, flagged 0.2
        #   C 360 t / 500          = 720,000      capture 0.9, flagged 0.2  -> ties A
        #   B 1,800 t (verified) / 2000 = 900,000
        #   E no output, F no emissions: unranked, by address
        # G first on the capture-rate tie-break; A and C equal on the whole key share rank 2;
        # B is 4th (competition ranking 1, 2, 2, 4)
        cement = groups["cement"]
        assert ranks(cement) == [(G, 1), (A, 2), (C, 2), (B, 4), (E, None), (F, None)]
        assert cement["enterprises"] == 6 and cement["ranked"] == 4
        e = {x["enterprise"]: x for x in cement["entries"]}
        assert e[A]["intensity_t_per_unit"] == 0.72 and e[A]["emissions_basis"] == "verified"
        assert e[A]["output"] == 1000 and e[A]["output_source"] == "chain"
        assert e[A]["emissions_g"] == 720 * T and e[A]["reported_g"] == 760 * T
        assert e[C]["emissions_basis"] == "reported" and e[C]["output_source"] == "config"
        assert e[B]["intensity_t_per_unit"] == 0.9 and e[B]["benchmark_ratio"] == 1.125
        # year on year against period 1: A (720 - 800) / 800 = -0.1;
        # B (1,800 verified - 1,500 reported) / 1,500 = +0.2; C, G have no period-1 figure
        assert e[A]["yoy_change"] == -0.1 and e[A]["prior_period"] == 1
        assert e[B]["yoy_change"] == 0.2 and e[B]["prior_emissions_g"] == 1500 * T
        assert e[C]["yoy_change"] is None and e[G]["yoy_change"] is None
        # data quality: the end-exclusive boundary, the other period, and derived records
        # are not counted; COUNTER_ROLLOVER is not an invalid bit
        assert (e[A]["readings"], e[A]["capture_rate"], e[A]["flagged_share"]) == (10, 0.9, 0.2)
        assert (e[F]["readings"], e[F]["capture_rate"]) == (0, None)
        assert e[E]["unranked_reason"] == "no output figure for the period"
        assert e[F]["unranked_reason"] == "no emissions data for the period"
        assert [e[x]["verification"] for x in (A, B, C)] == ["verified", "corrected",
                                                             "unverified"]
        assert [e[x]["compliance"] for x in (A, B, C)] == ["compliant", "non_compliant",
                                                           "unverified"]
        assert (e[A]["findings_pending"], e[B]["findings_confirmed"]) == (1, 1)
        # a single enterprise: power has D only (ranked although it has no readings)
        assert ranks(groups["power"]) == [(D, 1)]
        assert groups["power"]["entries"][0]["intensity_t_per_unit"] == 0.4

        # by region: intensity / the industry's benchmark (the units differ across industries)
        #   north: D 400,000 / 500,000 = 0.8; A, C 720,000 / 800,000 = 0.9 (tie); F unranked
        #   south: G 0.9; B 900,000 / 800,000 = 1.125; E unranked
        r = client.get("/v1/rankings", params={"period": 3, "by": "region"},
                       headers=auth(ctx, A))  # an enterprise sees published aggregates
        assert r.status_code == 200, r.text
        groups = {g["group"]: g for g in r.json()["groups"]}
        assert r.json()["ranked_on"] == "benchmark_ratio"
        assert ranks(groups["north"]) == [(D, 1), (A, 2), (C, 2), (F, None)]
        assert ranks(groups["south"]) == [(G, 1), (B, 2), (E, None)]

        # one group only; a group nobody is in is empty, not an error
        r = client.get("/v1/rankings", params={"period": 3, "by": "region", "group": "south"},
                       headers=auth(ctx, FIN_NONE))
        assert [g["group"] for g in r.json()["groups"]] == ["south"]
        assert ranks(r.json()["groups"][0]) == [(G, 1), (B, 2), (E, None)]
        r = client.get("/v1/rankings", params={"period": 3, "group": "steel"},
                       headers=auth(ctx, GOV))
        assert r.json()["groups"] == [{"group": "steel", "enterprises": 0, "ranked": 0,
                                       "entries": []}]
        # period 2: nobody has output: everyone is listed, nobody is ranked
        r = client.get("/v1/rankings", params={"period": 2}, headers=auth(ctx, GOV))
        assert all(x["rank"] is None for g in r.json()["groups"] for x in g["entries"])


def test_green_index_of_the_fixed_set(db_url: str) -> None:
    with portal(db_url) as (client, ctx):
        def gi(who: str) -> dict[str, Any]:
            r = client.get(f"/v1/enterprises/{who}/green-index", params={"period": 3},
                           headers=auth(ctx, GOV))
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            return body

        a = gi(A)
        c = a["components"]
        # trend: verified 720 t vs 800 t in period 1: change -0.1 = -10 %
        #        50 - 2.5 x (-10) = 75.00; x 25 % = 18.75
        assert (c["trend"]["sub_score"], c["trend"]["points"]) == (75.0, 18.75)
        assert c["trend"]["inputs"] == {"verified_g": 720 * T, "prior_period": 1,
                                        "prior_verified_g": 800 * T, "change": -0.1}
        # intensity: 720,000 g/t / 800,000 = 0.9; 100 x (1.5 - 0.9) = 60.00; x 30 % = 18.00
        assert (c["intensity"]["sub_score"], c["intensity"]["points"]) == (60.0, 18.0)
        assert c["intensity"]["inputs"]["ratio"] == 0.9
        assert c["intensity"]["inputs"]["output_source"] == "chain"
        # data quality: 100 x 0.9 x (1 - 0.2) = 72.00; x 20 % = 14.40
        assert (c["data_quality"]["sub_score"], c["data_quality"]["points"]) == (72.0, 14.4)
        # findings: the pending one does not count, no penalty: 100; x 15 % = 15.00
        assert (c["findings"]["sub_score"], c["findings"]["points"]) == (100.0, 15.0)
        assert c["findings"]["inputs"]["pending"] == 1
        # compliance: periods 1 compliant, 2 non-compliant, 3 compliant:
        #             100 x 2/3 = 66.666... -> 66.67; x 10 % = 6.667
        assert (c["compliance"]["sub_score"], c["compliance"]["points"]) == (66.67, 6.667)
        assert c["compliance"]["inputs"]["periods"] == [
            {"period": 1, "status": "compliant"}, {"period": 2, "status": "non_compliant"},
            {"period": 3, "status": "compliant"}]
        # 18.75 + 18.00 + 14.40 + 15.00 + 6.667 = 72.817 -> 72.8
        assert a["score"] == 72.8
        assert [c[k]["weight"] for k in c] == [25, 30, 20, 15, 10]

        b = gi(B)
        c = b["components"]
        # trend: period 1 never verified: neutral 50; x 25 % = 12.5
        # intensity: 1,800 t verified / 2000 = 900,000 / 800,000 = 1.125:
        #            100 x (1.5 - 1.125) = 37.5; x 30 % = 11.25
        # data quality: 4 of 4 with a value, none flagged: 100; x 20 % = 20
        # findings: one confirmed abnormal (-25), the rejected one not counted, penalty
        #           90 t / 1,800 t = 0.05 (-5): 70; x 15 % = 10.5
        # compliance: period 1 unverified, period 3 non-compliant: 0 of 2 = 0
        # 12.5 + 11.25 + 20 + 10.5 + 0 = 54.25 -> 54.3 (halves round up)
        assert [c[k]["sub_score"] for k in c] == [50.0, 37.5, 100.0, 70.0, 0.0]
        assert [c[k]["points"] for k in c] == [12.5, 11.25, 20.0, 10.5, 0.0]
        assert b["score"] == 54.3
        assert c["trend"]["rule"].startswith("verified emissions missing")
        assert c["findings"]["inputs"]["penalty_share"] == 0.05
        assert (b["verification"], b["compliance"]) == ("corrected", "non_compliant")

        d = gi(D)
        c = d["components"]
        # trend: no period-1 figure: 50 -> 12.5; intensity: 400,000 / 500,000 = 0.8
        # (reported): 100 x 0.7 = 70 -> 21; data quality: no readings: 0 -> 0; findings: 100
        # -> 15; compliance: no closed period with an account: 50 -> 5
        # 12.5 + 21 + 0 + 15 + 5 = 53.5
        assert [c[k]["sub_score"] for k in c] == [50.0, 70.0, 0.0, 100.0, 50.0]
        assert d["score"] == 53.5


def test_green_index_access_follows_the_ledger(db_url: str) -> None:
    url = f"/v1/enterprises/{A}/green-index"
    with portal(db_url) as (client, ctx):
        def get(who: str | None, path: str = url, period: int = 3) -> Any:
            return client.get(path, params={"period": period},
                              headers=auth(ctx, who) if who else {})

        for who in (GOV, AUDITOR, A, FIN_OK):
            r = get(who)
            assert r.status_code == 200, (who, r.text)
            assert r.json()["score"] == 72.8
        # the address is matched case-insensitively
        assert get(A, f"/v1/enterprises/{A.upper().replace('0X', '0x')}/green-index"
                   ).status_code == 200
        r = get(A, f"/v1/enterprises/{B}/green-index")
        assert r.status_code == 403 and "only as published aggregates" in r.json()["detail"]
        assert r.headers["content-type"] == "application/problem+json"
        r = get(FIN_EXPIRED)  # until_at == now: over
        assert r.status_code == 403 and "expired at" in r.json()["detail"]
        assert get(FIN_EXPIRED, f"/v1/enterprises/{B}/green-index").status_code == 200
        r = get(FIN_NONE)  # its row says until_at 0: revoked
        assert r.status_code == 403 and "has revoked" in r.json()["detail"]
        r = get(FIN_OK, f"/v1/enterprises/{B}/green-index")
        assert r.status_code == 403 and "has not granted" in r.json()["detail"]
        assert get(NOBODY).status_code == 403
        assert get(None).status_code == 401
        # revocation on the ledger (the indexer sets until_at to 0) holds at the next request
        with ctx.engine.begin() as conn:
            conn.execute(data_access.update().where(data_access.c.finance == FIN_OK)
                         .values(until_at=0))
            as_indexed(conn)
        r = get(FIN_OK)
        assert r.status_code == 403 and "has revoked" in r.json()["detail"]
        # counted and logged: A on B, the expired, the revoked, FIN_OK on B, FIN_OK after the
        # revocation; finance's reads logged too (FIN_OK on A, FIN_EXPIRED on B)
        assert ctx.metrics.counters["portal_api_denied_total"] == 5
        with ctx.engine.connect() as conn:
            logged = conn.execute(sa.select(access_log.c.viewer, access_log.c.status)).all()
        assert sorted(st for _, st in logged) == [200, 200, 403, 403, 403, 403, 403]

        assert get(GOV, period=9).status_code == 404
        assert get(GOV, f"/v1/enterprises/{H}/green-index").status_code == 404
        r = get(GOV, "/v1/enterprises/0x12/green-index")
        assert r.status_code == 422
        r = client.get("/v1/rankings", params={"period": 3, "by": "city"},
                       headers=auth(ctx, GOV))
        assert r.status_code == 422
        r = client.get("/v1/rankings", params={"period": 0}, headers=auth(ctx, GOV))
        assert r.status_code == 422
        r = client.get("/v1/rankings", params={"period": 3, "group": "x" * 65},
                       headers=auth(ctx, GOV))
        assert r.status_code == 422
        assert client.get("/v1/rankings", params={"period": 3}).status_code == 401
        assert client.get("/v1/rankings", params={"period": 7},
                          headers=auth(ctx, GOV)).status_code == 404
        assert ctx.metrics.counters["portal_scores_not_found"] == 3


def test_data_quality_is_recomputed_when_a_batch_is_verified(db_url: str) -> None:
    with portal(db_url) as (client, ctx):
        def g_entry() -> dict[str, Any]:
            r = client.get("/v1/rankings", params={"period": 3, "group": "cement"},
                           headers=auth(ctx, GOV))
            return next(x for x in r.json()["groups"][0]["entries"] if x["enterprise"] == G)

        assert g_entry()["readings"] == 2
        assert g_entry()["rank"] == 1  # a second request: the ranking served from its cache
        cache = client.app.state.scoring.quality  # type: ignore[attr-defined]
        assert (cache.misses, cache.hits) == (1, 0)
        assert (ctx.cache("rankings").misses, ctx.cache("rankings").hits) == (1, 1)
        # a verified batch brings G two readings without a value: capture 2/4 = 0.5, so A and
        # C (0.9) now come before it on the tie-break
        with ctx.engine.begin() as conn:
            conn.execute(records.insert(), _readings(G, [(None, 1), (None, 1)], P3[1] + HOUR,
                                                     first_seq=50))
            conn.execute(ingest_batches.insert().values(
                gateway_id="gw-99", seq=2, gateway_key="0x" + "00" * 32,
                header_hash="0x" + "33" * 32, state="verified", received_ns=1,
                verified_ns=2, record_count=2, payload=None))
        e = g_entry()
        assert (e["readings"], e["capture_rate"], e["flagged_share"], e["rank"]) == (
            4, 0.5, 0.5, 3)
        assert cache.misses == 2 and ctx.cache("rankings").misses == 2
        # A's green index: its quality is in the cached period already
        r = client.get(f"/v1/enterprises/{A}/green-index", params={"period": 3},
                       headers=auth(ctx, GOV))
        assert r.json()["components"]["data_quality"]["inputs"]["readings"] == 10
        assert cache.misses == 2


def test_concurrent_requests_on_a_cold_cache_scan_the_records_once(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'p.db'}")
    migrate(engine)
    with engine.begin() as conn:
        seed(conn)
    cache = QualityCache()
    p3 = PeriodInfo(*P3, closed=True)
    results: list[dict[str, ReadingQuality]] = []

    def one() -> None:
        with engine.connect() as conn:
            results.append(cache.get(conn, p3, [A, B, C]))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.dispose()
    assert cache.misses == 1 and cache.hits == 7
    assert all(r[A] == ReadingQuality(10, 9, 2) for r in results)


def test_the_openapi_schema_names_every_input() -> None:
    cfg = PortalConfig(chain=ChainSection(address_book=Path("x.json")))
    app = create_app(PortalContext(config=cfg, engine=sa.create_engine("sqlite://")))
    schema = app.openapi()
    ok = schema["paths"]["/v1/enterprises/{address}/green-index"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"]["$ref"].endswith("/GreenIndexOut")
    comps = schema["components"]["schemas"]
    assert set(comps["GreenComponentsOut"]["properties"]) == {
        "trend", "intensity", "data_quality", "findings", "compliance"}
    assert "penalty_share" in comps["FindingsInputs"]["properties"]
    assert "/v1/rankings" in schema["paths"]


# -- the pure method: edge cases on plain values -------------------------------------------


def period(pid: int, start: int, end: int, closed: bool = True) -> PeriodInfo:
    return PeriodInfo(pid, start, end, closed)


def test_the_prior_year_period_matching_rule() -> None:
    months = [period(i + 1, ts(2024 + (m // 12), m % 12 + 1, 1),
                     ts(2024 + ((m + 1) // 12), (m + 1) % 12 + 1, 1))
              for i, m in enumerate(range(0, 26))]  # Jan 2024 .. Feb 2026
    by_start = {p.start_ns: p for p in months}
    feb25, mar25, jan26 = by_start[ts(2025, 2, 1)], by_start[ts(2025, 3, 1)], \
        by_start[ts(2026, 1, 1)]
    # February 2025 (28 days) matches February 2024 (29 days: within 10 %)
    assert prior_year_period(feb25, months) == by_start[ts(2024, 2, 1)]
    assert prior_year_period(mar25, months) == by_start[ts(2024, 3, 1)]
    assert prior_year_period(jan26, months) == by_start[ts(2025, 1, 1)]
    assert prior_year_period(by_start[ts(2024, 5, 1)], months) is None  # nothing a year before
    # a quarter does not match a month; a quarter does match the quarter
    q = period(100, ts(2025, 4, 1), ts(2025, 7, 1))
    assert prior_year_period(q, months) is None
    q0 = period(99, ts(2024, 4, 1), ts(2024, 7, 1))
    assert prior_year_period(q, [*months, q0]) == q0
    # days: 2025-03-01 a year earlier is 2024-03-01, not 2024-02-29 (leap year)
    days = [period(1000 + i, ts(2024, 2, 28) + i * 86_400 * NS,
                   ts(2024, 2, 28) + (i + 1) * 86_400 * NS) for i in range(4)]
    d = period(2000, ts(2025, 3, 1), ts(2025, 3, 2))
    assert prior_year_period(d, days) == days[2]  # 28, 29 Feb, then 1 Mar 2024
    assert one_year_earlier_ns(ts(2024, 2, 29) + 5) == ts(2023, 2, 28) + 5
    # a period overlapping this one is never its prior year, even if it is nearest
    assert prior_year_period(jan26, [period(7, ts(2025, 12, 20), ts(2026, 1, 20))]) is None


def test_compliance_is_the_contracts_rule() -> None:
    assert compliance_of(None, closed=False) == Compliance.OPEN
    assert compliance_of(None, closed=True) == Compliance.UNVERIFIED
    a = Account(verified_g=100, penalty_g=30, penalty_deducted_g=10, surrendered_g=120,
                has_verified=True)
    assert compliance_of(a, closed=True) == Compliance.COMPLIANT  # 120 >= 100 + 30 - 10
    b = Account(verified_g=100, penalty_g=30, penalty_deducted_g=10, surrendered_g=119,
                has_verified=True)
    assert compliance_of(b, closed=True) == Compliance.NON_COMPLIANT
    assert compliance_of(b, closed=False) == Compliance.OPEN


P = period(3, ts(2026, 1, 1), ts(2026, 2, 1))
NO_READINGS = ReadingQuality()


def ep(name: str, *, reported: int | None = None, output: int | None = None,
       bench: int | None = None, quality: ReadingQuality = NO_READINGS,
       **kw: Any) -> EnterprisePeriod:
    return EnterprisePeriod(enterprise=name, name=name, industry_code="cement", region="r",
                            period=P, reported_g=reported,
                            output=Fraction(output) if output is not None else None,
                            benchmark_g_per_unit=bench, quality=quality, **kw)


def test_ranking_edge_cases() -> None:
    assert rank_group([], "industry") == []
    # a single enterprise without readings is ranked 1st
    [only] = rank_group([ep("0x01", reported=10, output=2)], "industry")
    assert (only.rank, only.intensity_g_per_unit) == (1, Fraction(5))
    # nobody with output: all listed, none ranked, by address
    out = rank_group([ep("0x02", reported=1), ep("0x01", reported=1)], "industry")
    assert [(e.ep.enterprise, e.rank) for e in out] == [("0x01", None), ("0x02", None)]
    # output 0 is no output; region rankings need a benchmark
    [z] = rank_group([ep("0x01", reported=1, output=0)], "industry")
    assert z.rank is None and z.unranked_reason == "no output figure for the period"
    [nb] = rank_group([ep("0x01", reported=1, output=1)], "region")
    assert nb.rank is None and "benchmark" in (nb.unranked_reason or "")
    # ties: exact intensity (1/3 vs 2/6), then capture, then flagged; full ties share a rank
    good = ReadingQuality(10, 10, 0)
    some_flags = ReadingQuality(10, 10, 1)
    out = rank_group([ep("0x04", reported=2, output=6, quality=good),
                      ep("0x03", reported=1, output=3, quality=good),
                      ep("0x02", reported=1, output=3, quality=some_flags),
                      ep("0x01", reported=1, output=3),  # no readings: last of its tie
                      ep("0x00", reported=0, output=3)], "industry")  # zero emissions: 1st
    assert [(e.ep.enterprise, e.rank) for e in out] == [
        ("0x00", 1), ("0x03", 2), ("0x04", 2), ("0x02", 4), ("0x01", 5)]
    # verified emissions are the basis where there are any, reported otherwise
    v = ep("0x01", reported=100, output=10,
           account=Account(verified_g=50, has_verified=True))
    [e] = rank_group([v], "industry")
    assert (e.emissions_g, e.emissions_basis, e.intensity_g_per_unit) == (50, "verified", 5)
    # groups: sorted, and a named group with nobody in it
    assert list(rankings([v], "industry", "power")) == ["power"]
    assert rankings([v], "industry", "power")["power"] == []


def test_green_index_edge_cases() -> None:
    assert W_TREND + W_INTENSITY + W_QUALITY + W_FINDINGS + W_COMPLIANCE == 100
    # nothing known at all: trend, intensity and compliance neutral (50), data quality 0,
    # findings 100: 25 x .5 + 30 x .5 + 0 + 15 + 10 x .5 = 12.5 + 15 + 15 + 5 = 47.5
    g = green_index(ep("0x01"))
    assert g.score == Decimal("47.5")
    assert [c.sub_score for c in g.components] == [50, 50, 0, 100, 50]
    # clamps: emissions +50 % (trend 50 - 125 -> 0); ratio 0.25 (150 - 25 = 125 -> 100);
    # a penalty with zero emissions counts in full; three falsified findings floor at 0
    prior = period(1, ts(2025, 1, 1), ts(2025, 2, 1))
    x = ep("0x01", reported=0, output=4, bench=1,
           account=Account(verified_g=150, has_verified=True, penalty_g=5),
           prior_period=prior, prior_account=Account(verified_g=100, has_verified=True),
           findings_confirmed_falsified=3, quality=ReadingQuality(3, 2, 1))
    g = green_index(x)
    subs = {c.name: c.sub_score for c in g.components}
    assert subs["trend"] == 0
    # intensity: 150 verified / 4 = 37.5 g/unit vs benchmark 1: ratio 37.5: 0
    assert subs["intensity"] == 0
    # data quality: 100 x 2/3 x (1 - 1/3) = 44.444... -> 44.44
    assert subs["data_quality"] == Decimal("44.44")
    assert subs["findings"] == 0  # 100 - 150 - 100 x (5/150) < 0
    y = ep("0x01", reported=1, output=4, bench=1, account=Account(penalty_g=5))
    [f] = [c for c in green_index(y).components if c.name == "findings"]
    assert f.inputs["penalty_share"] == Decimal(1)  # 5 g penalty on 1 g emissions: capped
    # intensity below half the benchmark is clamped at 100
    z = ep("0x01", reported=1, output=4, bench=1)  # 0.25 g/unit: 100 x 1.25 -> 100
    [i] = [c for c in green_index(z).components if c.name == "intensity"]
    assert i.sub_score == 100
    # compliance counts the last 8 closed periods only
    hist = tuple((n, Compliance.NON_COMPLIANT if n == 1 else Compliance.COMPLIANT)
                 for n in range(1, 11))
    [c] = [c for c in green_index(ep("0x01", compliance_history=hist)).components
           if c.name == "compliance"]
    assert (c.sub_score, c.inputs["counted"]) == (100, 8)


@pytest.mark.parametrize("captured, flagged, expected", [
    (10, 0, Decimal("100.00")), (9, 1, Decimal("81.00")), (0, 0, Decimal("0.00"))])
def test_data_quality_sub_score(captured: int, flagged: int, expected: Decimal) -> None:
    e = ep("0x01", quality=ReadingQuality(10, captured, flagged))
    [q] = [c for c in green_index(e).components if c.name == "data_quality"]
    assert q.sub_score == expected
