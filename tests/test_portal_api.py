"""The portal's API over a fixed data set (tests/portal_data.py) on SQLite and PostgreSQL:
every endpoint, every access rule (finance's consent, its expiry and revocation, the access
log), pagination and problem details; the access rules and the account's compliance as pure
functions; and a schemathesis run over the OpenAPI schema (no 500s)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from eth_account import Account
from fastapi.testclient import TestClient

from ledger_client import gateway_key, keccak256, merkle_proof, parse_bundle, record_leaf
from portal import create_app
from portal._access import MIN_GROUP, Decision, Kind, Resource, decide
from portal._accounting import bucket_start_ns, compliance
from portal._api_tables import access_log
from portal._chain_tables import data_access, roles
from portal._ingest_tables import ingest_batches, records
from portal._proofs import BatchProofs
from portal._viewer import Viewer
from tests.portal_data import Clock, Dataset, T, addr, as_indexed, bearer, load, make_context, ns

PROBLEM = "application/problem+json"


@dataclass
class Env:
    ctx: Any
    client: TestClient
    ds: Dataset
    clock: Clock

    def get(self, path: str, who: Any, **params: Any) -> Any:
        return self.client.get(path, headers=bearer(self.ctx, who), params=params)


@pytest.fixture
def env(db_url: str) -> Iterator[Env]:
    clock = Clock()
    ctx = make_context(db_url, clock=clock, max_page=50)
    ds = load(ctx.engine)
    with TestClient(create_app(ctx)) as client:
        yield Env(ctx, client, ds, clock)
    ctx.engine.dispose()


def _fold(leaf: bytes, proof: list[bytes]) -> bytes:
    h = leaf
    for p in proof:
        h = keccak256(h + p) if h < p else keccak256(p + h)
    return h


# -- pure: the access rules ------------------------------------------------------------------

GOV = Viewer("0x" + "01" * 20, frozenset({"government"}))
AUD = Viewer("0x" + "02" * 20, frozenset({"auditor"}))
FIN = Viewer("0x" + "03" * 20, frozenset({"finance"}))
ENT_A = Viewer("0x" + "0a" * 20, frozenset({"enterprise"}))
A, B, C, D = ("0x" + x * 20 for x in ("0a", "0b", "0c", "0d"))


def test_access_rules_as_a_pure_function() -> None:
    now = 1_000_000
    grants = {A: now + 1, B: 0, C: now}  # C's grant ends exactly now: expired
    own_a = Resource.of(A)
    assert decide(GOV, own_a, {}, now).allowed and decide(AUD, Resource.of(B), {}, now).allowed
    assert decide(ENT_A, own_a, {}, now) == Decision(True, "an enterprise sees its own data")
    d = decide(ENT_A, Resource.of(B), {}, now)
    assert not d.allowed and "published aggregates" in d.reason
    assert decide(FIN, own_a, grants, now).allowed
    assert not decide(FIN, own_a, grants, now + 1).allowed  # until_at must be later than now
    assert "revoked" in decide(FIN, Resource.of(B), grants, now).reason
    assert "expired at" in decide(FIN, Resource.of(C), grants, now).reason
    assert "has not granted" in decide(FIN, Resource.of(D), grants, now).reason
    # a finance account's grants do not make it an enterprise, nor the reverse
    assert not decide(ENT_A, Resource.of(B), {B: now + 10}, now).allowed
    # aggregates: every hidden member count but one is published
    assert MIN_GROUP == 2
    assert decide(ENT_A, Resource.aggregate([A, B, C]), {}, now).allowed  # hides B, C
    d = decide(ENT_A, Resource.aggregate([A, B]), {}, now)  # A minus itself = B
    assert not d.allowed and B in d.reason
    assert decide(ENT_A, Resource.aggregate([A]), {}, now).allowed  # only its own
    assert not decide(FIN, Resource.aggregate([A, D]), grants, now).allowed  # D alone hidden
    assert decide(FIN, Resource.aggregate([B, D]), grants, now).allowed
    # role-only resources
    assert decide(FIN, Resource(Kind.PUBLIC), {}, now).allowed
    assert decide(AUD, Resource(Kind.QUARANTINE), {}, now).allowed
    assert not decide(ENT_A, Resource(Kind.QUARANTINE), {}, now).allowed
    assert decide(GOV, Resource(Kind.ACCESS_LOG), {}, now).allowed
    assert not decide(AUD, Resource(Kind.ACCESS_LOG), {}, now).allowed
    assert decide(ENT_A, Resource(Kind.ACCESS_LOG, (A,)), {}, now).allowed
    assert not decide(ENT_A, Resource(Kind.ACCESS_LOG, (B,)), {}, now).allowed
    assert not decide(ENT_A, Resource(Kind.ACCESS_LOG), {}, now).allowed
    assert not decide(GOV, Resource(Kind.ENTERPRISE, (A, B)), {}, now).allowed


def test_compliance_as_the_contract_computes_it() -> None:
    base = dict(closed=True, has_verified=True, verified_g=100, penalty_g=10,
                penalty_deducted_g=0, surrendered_g=110, settled=False, settled_status=0)
    assert compliance(**base) == "compliant"  # type: ignore[arg-type]
    assert compliance(**{**base, "surrendered_g": 109}) == "non_compliant"  # type: ignore[arg-type]
    assert compliance(**{**base, "penalty_deducted_g": 1, "surrendered_g": 109}) == "compliant"  # type: ignore[arg-type]
    assert compliance(**{**base, "closed": False}) == "open"  # type: ignore[arg-type]
    assert compliance(**{**base, "has_verified": False}) == "unverified"  # type: ignore[arg-type]
    # once settled, the settled status stands (whatever changes after)
    assert compliance(**{**base, "surrendered_g": 0, "settled": True,  # type: ignore[arg-type]
                         "settled_status": 2}) == "compliant"


def test_buckets_are_utc_days_and_months() -> None:
    day = ns(2024, 3, 15, 13) // (86_400 * 10**9)
    assert bucket_start_ns(day, "day") == ns(2024, 3, 15)
    assert bucket_start_ns(day, "month") == ns(2024, 3, 1)
    assert bucket_start_ns(ns(2024, 12, 31, 23) // (86_400 * 10**9), "month") == ns(2024, 12, 1)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33])
def test_batch_proofs_equal_ledger_clients_merkle_proof(n: int) -> None:
    leaves = [keccak256(i.to_bytes(4, "big")) for i in range(n)]
    bp = BatchProofs(leaves)
    for i in range(n):
        assert bp.proof(i) == merkle_proof(leaves, i)
        assert _fold(leaves[i], bp.proof(i)) == bp.root
    with pytest.raises(IndexError):
        bp.proof(n)


# -- enterprises and accounts ----------------------------------------------------------------

def test_enterprises_public_register_paged_and_filtered(env: Env) -> None:
    ds = env.ds
    r = env.get("/v1/enterprises", ds.finance2)
    assert r.status_code == 200
    body = r.json()
    assert [e["name"] for e in body["items"]] == sorted(
        ["Pearl River Power", "Lingnan Cement", "Bay Cement", "Foshan Thermal"],
        key=lambda n: {"Pearl River Power": addr(ds.a), "Lingnan Cement": addr(ds.b),
                       "Bay Cement": addr(ds.c), "Foshan Thermal": addr(ds.d)}[n])
    assert body["next_offset"] is None
    p1 = env.get("/v1/enterprises", ds.b, limit=3).json()
    p2 = env.get("/v1/enterprises", ds.b, limit=3, offset=3).json()
    assert p1["next_offset"] == 3 and p2["next_offset"] is None
    assert len(p1["items"]) == 3 and len(p2["items"]) == 1
    cement = env.get("/v1/enterprises", ds.a, industry_code="C3011").json()["items"]
    assert {e["account"] for e in cement} == {addr(ds.b), addr(ds.c)}
    assert [e["name"] for e in env.get("/v1/enterprises", ds.a,
                                       status="suspended").json()["items"]] == ["Foshan Thermal"]
    r = env.get("/v1/enterprises", ds.a, limit=51)  # max_page is 50
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    assert "50" in r.json()["detail"]


def test_enterprise_detail_shows_gateways_only_to_who_may_see_its_data(env: Env) -> None:
    ds = env.ds
    own = env.get(f"/v1/enterprises/{addr(ds.a)}", ds.a).json()
    assert [g["gateway_id"] for g in own["gateways"]] == ["plant-a-gw1"]
    other = env.get(f"/v1/enterprises/{addr(ds.a)}", ds.b).json()
    assert other["name"] == "Pearl River Power" and other["gateways"] is None
    assert env.get(f"/v1/enterprises/{addr(ds.a)}", ds.finance).json()["gateways"] is not None
    assert env.get(f"/v1/enterprises/{addr(ds.d)}", ds.finance).json()["gateways"] is None
    assert [(x["enterprise"], x["status"]) for x in _log(env)] == [
        (addr(ds.a), 200), (addr(ds.d), 200)]
    assert "register entry only" in _log(env)[1]["reason"]
    r = env.get(f"/v1/enterprises/0x{'99' * 20}", ds.government)
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM


def test_carbon_accounts(env: Env) -> None:
    ds = env.ds
    a1 = env.get(f"/v1/enterprises/{addr(ds.a)}/accounts/1", ds.a).json()
    assert a1 == {
        "enterprise": addr(ds.a), "period": 1, "period_start_ns": ns(2024, 1, 1),
        "period_end_ns": ns(2025, 1, 1), "period_closed": True, "allocated_g": 800 * T,
        "reported_g": {"scope1_g": 540 * T, "scope2_g": 60 * T, "scope3_g": 0,
                       "total_g": 600 * T},
        "batches": 3, "verified_g": 600 * T, "corrected_g": None, "accounted_g": 600 * T,
        "penalty_g": 0, "penalty_deducted_g": 0, "traded_in_g": 0, "traded_out_g": 100 * T,
        "surrendered_g": 600 * T, "balance_g": 100 * T, "obligation_g": 600 * T,
        "compliance": "compliant", "settled": True}
    b1 = env.get(f"/v1/enterprises/{addr(ds.b)}/accounts/1", ds.government).json()
    # the auditor verified 280 t; a confirmed finding corrected it to 380 t with a 50 t penalty
    assert (b1["verified_g"], b1["corrected_g"], b1["accounted_g"]) == (280 * T, 380 * T, 380 * T)
    assert (b1["penalty_g"], b1["obligation_g"], b1["surrendered_g"]) == (50 * T, 430 * T, 350 * T)
    assert (b1["traded_in_g"], b1["traded_out_g"], b1["balance_g"]) == (100 * T, 0, 40 * T)
    assert b1["compliance"] == "non_compliant" and not b1["settled"]
    c1 = env.get(f"/v1/enterprises/{addr(ds.c)}/accounts/1", ds.auditor).json()
    assert c1["compliance"] == "unverified" and c1["verified_g"] is None
    assert c1["accounted_g"] is None and c1["traded_in_g"] == 10 * T
    d1 = env.get(f"/v1/enterprises/{addr(ds.d)}/accounts/1", ds.auditor).json()
    assert d1["compliance"] == "compliant" and d1["traded_out_g"] == 10 * T
    every = env.get(f"/v1/enterprises/{addr(ds.a)}/accounts", ds.a).json()
    assert [(x["period"], x["compliance"]) for x in every] == [(1, "compliant"), (2, "open")]
    assert every[1]["reported_g"]["total_g"] == 55 * T and every[1]["balance_g"] == 700 * T
    assert env.get(f"/v1/enterprises/{addr(ds.a)}/accounts/7", ds.a).status_code == 404
    r = env.get(f"/v1/enterprises/0x{'99' * 20}/accounts", ds.government)
    assert r.status_code == 404


def test_an_enterprise_sees_others_accounts_never(env: Env) -> None:
    ds = env.ds
    r = env.get(f"/v1/enterprises/{addr(ds.a)}/accounts/1", ds.b)
    assert r.status_code == 403 and r.headers["content-type"] == PROBLEM
    assert "published aggregates" in r.json()["detail"]
    assert r.json()["type"] == "/problems/access-denied"
    assert env.ctx.metrics.counters["portal_api_denied_total"] == 1


# -- finance: consent, expiry, revocation, the log ----------------------------------------

def _log(env: Env) -> list[dict[str, Any]]:
    with env.ctx.engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(sa.select(access_log)
                                                    .order_by(access_log.c.id))]


def test_finance_sees_an_enterprise_only_while_granted_and_every_access_is_logged(
        env: Env) -> None:
    ds, fin = env.ds, env.ds.finance
    path = f"/v1/enterprises/{addr(ds.a)}/accounts/1"
    assert env.get(path, fin).status_code == 200
    for who, why in ((ds.b, "revoked"), (ds.c, "expired at 2025-02-28T23:00:00Z"),
                     (ds.d, "has not granted")):
        r = env.get(f"/v1/enterprises/{addr(who)}/accounts/1", fin)
        assert r.status_code == 403 and why in r.json()["detail"], r.json()
    log = _log(env)
    assert [(x["enterprise"], x["status"]) for x in log] == [
        (addr(ds.a), 200), (addr(ds.b), 403), (addr(ds.c), 403), (addr(ds.d), 403)]
    assert all(x["viewer"] == addr(fin) and x["role"] == "finance" for x in log)
    assert log[0]["path"] == path and log[0]["at_ns"] == env.clock.now
    # the grant lapses on the portal's clock: A's ends one day after "now"
    env.clock.now += 86_400 * 10**9
    r = env.get(path, fin)
    assert r.status_code == 403 and "expired" in r.json()["detail"]
    # renewed, then revoked on-chain: the next request after the indexer's update is refused
    env.clock.now -= 86_400 * 10**9
    assert env.get(path, fin).status_code == 200
    with env.ctx.engine.begin() as c:
        c.execute(sa.update(data_access).where(data_access.c.enterprise == addr(ds.a))
                  .values(until_at=0))
        as_indexed(c)
    r = env.get(path, fin)
    assert r.status_code == 403 and "revoked" in r.json()["detail"]
    assert [x["status"] for x in _log(env)][-3:] == [403, 200, 403]


def test_finance_lists_are_scoped_to_its_grants_and_logged(env: Env) -> None:
    ds, fin = env.ds, env.ds.finance
    items = env.get("/v1/batches", fin).json()["items"]
    assert {b["enterprise"] for b in items} == {addr(ds.a)}
    trades = env.get("/v1/trades", fin).json()["items"]
    assert [t["trade_id"] for t in trades] == [1, 2]  # A sold to B twice
    assert env.get("/v1/batches", fin, enterprise=addr(ds.b)).status_code == 403
    # a finance account without grants sees no rows (not an error)
    assert env.get("/v1/reports", ds.finance2).json()["items"] == []
    log = _log(env)
    assert [(x["viewer"], x["enterprise"], x["status"]) for x in log[:3]] == [
        (addr(fin), None, 200), (addr(fin), None, 200), (addr(fin), addr(ds.b), 403)]
    assert addr(ds.a) in log[0]["reason"]


def test_the_access_log_is_for_the_government_and_an_enterprise_sees_its_own_rows(
        env: Env) -> None:
    ds = env.ds
    env.get(f"/v1/enterprises/{addr(ds.a)}/accounts/1", ds.finance)
    env.get(f"/v1/enterprises/{addr(ds.b)}/accounts/1", ds.finance)
    env.get(f"/v1/enterprises/{addr(ds.c)}/accounts/1", ds.a)  # refused: logged too
    rows = env.get("/v1/access-log", ds.government).json()["items"]
    assert [(r["viewer"], r["enterprise"], r["status"]) for r in rows] == [
        (addr(ds.finance), addr(ds.a), 200), (addr(ds.finance), addr(ds.b), 403),
        (addr(ds.a), addr(ds.c), 403)]
    only_fin = env.get("/v1/access-log", ds.government, viewer=addr(ds.finance)).json()
    assert len(only_fin["items"]) == 2
    mine = env.get("/v1/access-log", ds.a, enterprise=addr(ds.a)).json()["items"]
    assert [(r["viewer"], r["status"]) for r in mine] == [(addr(ds.finance), 200)]
    for who, kw in ((ds.a, {}), (ds.a, {"enterprise": addr(ds.b)}), (ds.finance, {}),
                    (ds.auditor, {})):
        r = env.get("/v1/access-log", who, **kw)
        assert r.status_code == 403 and "access log" in r.json()["detail"]


# -- emissions over time ---------------------------------------------------------------------

def _series(body: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {s["key"]: s["points"] for s in body["series"]}


def test_emissions_by_industry_with_data_quality(env: Env) -> None:
    ds = env.ds
    body = env.get("/v1/emissions", ds.government, group_by="industry", bucket="month",
                   from_ns=ns(2024, 1, 1), to_ns=ns(2025, 1, 1)).json()
    assert body["withheld"] == []
    cement = _series(body)["C3011"]
    assert [p["start_ns"] for p in cement] == [ns(2024, 3, 1), ns(2024, 6, 1)]
    # March: B 100 t (4 readings: one comm fault, one manual entry) + C 60 t (6 good readings)
    assert cement[0]["co2e_total_g"] == 160 * T and cement[0]["batches"] == 2
    assert (cement[0]["readings"], cement[0]["capture_rate"],
            cement[0]["flagged_share"]) == (10, 0.9, 0.1)
    # June: B 180 t (one spike in 4 readings) + C 40 t anchored but never delivered
    assert cement[1]["co2e_total_g"] == 220 * T and cement[1]["batches"] == 2
    assert (cement[1]["readings"], cement[1]["capture_rate"],
            cement[1]["flagged_share"]) == (4, 1.0, 0.25)
    power = _series(body)["D4411"]
    # March: A 200 t + 100 t, D 130 t; June: A 300 t, D 130 t (quarantined: no readings)
    assert [p["co2e_total_g"] for p in power] == [430 * T, 430 * T]
    # March: A 6 + 4 readings (a comm fault and a spike), D 6 readings
    assert [(p["readings"], p["capture_rate"], p["flagged_share"]) for p in power] == [
        (16, 15 / 16, 2 / 16), (6, 1.0, 0.0)]
    # scopes are kept apart
    assert (power[0]["co2e_scope1_g"], power[0]["co2e_scope2_g"]) == (390 * T, 40 * T)


def test_emissions_by_day_for_one_enterprise(env: Env) -> None:
    ds = env.ds
    body = env.get("/v1/emissions", ds.a, group_by="enterprise", bucket="day",
                   enterprise=addr(ds.a)).json()
    pts = _series(body)[addr(ds.a)]
    assert [(p["start_ns"], p["co2e_total_g"]) for p in pts] == [
        (ns(2024, 3, 1), 200 * T), (ns(2024, 3, 15), 100 * T), (ns(2024, 6, 1), 300 * T),
        (ns(2025, 1, 10), 55 * T)]
    assert (pts[1]["readings"], pts[1]["capture_rate"], pts[1]["flagged_share"]) == (4, 0.75, 0.5)


def test_others_emissions_only_as_aggregates_that_hide_no_single_enterprise(env: Env) -> None:
    ds = env.ds
    # B by enterprise: only its own series
    body = env.get("/v1/emissions", ds.b, group_by="enterprise").json()
    assert list(_series(body)) == [addr(ds.b)]
    assert {w["key"] for w in body["withheld"]} == {addr(ds.a), addr(ds.c), addr(ds.d)}
    # B by industry: power (A, D) is published; cement (B, C) would disclose C
    body = env.get("/v1/emissions", ds.b, group_by="industry").json()
    assert list(_series(body)) == ["D4411"]
    assert [w["key"] for w in body["withheld"]] == ["C3011"]
    assert addr(ds.c) in body["withheld"][0]["reason"]
    r = env.get("/v1/emissions", ds.b, group_by="industry", industry_code="C3011")
    assert r.status_code == 403 and addr(ds.c) in r.json()["detail"]
    # by region: Shenzhen (A, C) published to B, Foshan (B, D) withheld
    body = env.get("/v1/emissions", ds.b, group_by="region").json()
    assert list(_series(body)) == ["440300"]
    # finance granted by A: power (A, D) would disclose D
    body = env.get("/v1/emissions", ds.finance, group_by="industry").json()
    assert list(_series(body)) == ["C3011"]
    assert env.get("/v1/emissions", ds.b, enterprise=addr(ds.a)).status_code == 403


# -- batches, quarantine, reports, findings ---------------------------------------------

def test_batches_with_anchoring_and_ingest_state(env: Env) -> None:
    ds = env.ds
    items = env.get("/v1/batches", ds.government).json()["items"]
    assert {(b["gateway_id"], b["seq"]): b["ingest"]["state"] for b in items} == ds.states
    q = env.get("/v1/batches", ds.auditor, state="quarantined").json()["items"]
    assert [(b["gateway_id"], b["seq"], b["ingest"]["reason"]) for b in q] == [
        ("plant-d-gw1", 2, "record 3's leaf does not reach the anchored root")]
    nd = env.get("/v1/batches", ds.auditor, state="not-delivered").json()["items"]
    assert [(b["gateway_id"], b["seq"], b["ingest"]["received_ns"]) for b in nd] == [
        ("plant-c-gw1", 2, None)]
    own = env.get("/v1/batches", ds.b).json()["items"]
    assert [(b["gateway_id"], b["seq"]) for b in own] == [("plant-b-gw1", 1), ("plant-b-gw1", 2)]
    one = env.get("/v1/batches/plant-a-gw1/2", ds.a).json()
    h = ds.gws["a"].headers[1]
    assert one["header_hash"] == "0x" + h.hash().hex() and one["root"] == "0x" + h.root.hex()
    assert one["anchored"]["period"] == 1 and one["ingest"]["record_count"] == 4
    assert one["co2e_scope1_g"] == 90 * T
    assert env.get("/v1/batches/plant-a-gw1/2", ds.b).status_code == 403
    assert env.get("/v1/batches/plant-a-gw1/99", ds.a).status_code == 404
    in_2025 = env.get("/v1/batches", ds.government, from_ns=ns(2025, 1, 1)).json()["items"]
    assert [(b["gateway_id"], b["seq"]) for b in in_2025] == [("plant-a-gw1", 4)]
    assert len(env.get("/v1/batches", ds.government, period=2).json()["items"]) == 1
    pg = env.get("/v1/batches", ds.government, limit=4, offset=8).json()
    assert len(pg["items"]) == 2 and pg["next_offset"] is None


def test_submissions_as_the_ingest_holds_them(env: Env) -> None:
    ds = env.ds
    # a submission waiting for its anchor: no chain row yet
    with env.ctx.engine.begin() as c:
        c.execute(sa.insert(ingest_batches).values(
            gateway_id="plant-b-gw1", seq=3, gateway_key="0x" + gateway_key("plant-b-gw1").hex(),
            header_hash="0x" + "ab" * 32, state="unanchored", reason=None,
            received_ns=ns(2025, 2, 1), verified_ns=None, record_count=4, payload="{}"))
    rows = env.get("/v1/submissions", ds.government).json()["items"]
    assert len(rows) == 10  # 9 delivered and anchored + the waiting one
    assert rows[-1]["state"] == "unanchored" and rows[-1]["anchored"] is None
    assert rows[-1]["enterprise"] == addr(ds.b)
    own = env.get("/v1/submissions", ds.b, state="unanchored").json()["items"]
    assert [(x["gateway_id"], x["seq"]) for x in own] == [("plant-b-gw1", 3)]
    assert env.get("/v1/submissions", ds.a, state="unanchored").json()["items"] == []
    q = env.get("/v1/submissions", ds.auditor, state="quarantined").json()["items"]
    assert [(x["gateway_id"], x["anchored"]["period"]) for x in q] == [("plant-d-gw1", 1)]
    assert env.get("/v1/submissions", ds.a, enterprise=addr(ds.b)).status_code == 403


def test_quarantine_is_for_government_and_auditors(env: Env) -> None:
    ds = env.ds
    rows = env.get("/v1/quarantine", ds.government).json()["items"]
    assert [(r["gateway_id"], r["seq"]) for r in rows] == [("plant-d-gw1", 2), ("plant-b-gw1", 9)]
    assert len(env.get("/v1/quarantine", ds.auditor, gateway_id="plant-b-gw1").json()["items"]) == 1
    for who in (ds.c, ds.finance):
        r = env.get("/v1/quarantine", who)
        assert r.status_code == 403 and "government and auditors" in r.json()["detail"]


def test_reports_and_findings_with_their_outcome(env: Env) -> None:
    ds = env.ds
    assert [r["report_id"] for r in env.get("/v1/reports", ds.government).json()["items"]] == [1, 2, 3]
    assert [r["report_id"] for r in env.get("/v1/reports", ds.a).json()["items"]] == [1]
    assert env.get("/v1/reports", ds.a, enterprise=addr(ds.b)).status_code == 403
    f = env.get("/v1/findings", ds.b).json()["items"]
    assert len(f) == 1
    assert (f[0]["kind"], f[0]["outcome"], f[0]["penalty_g"], f[0]["previous_g"],
            f[0]["corrected_g"]) == ("falsified", "confirmed", 50 * T, 280 * T, 380 * T)
    assert f[0]["batch_seq"] == 2 and f[0]["decided_by"] == addr(ds.government)
    assert f[0]["record_leaf"] == "0x" + record_leaf(ds.gws["b"].records[5]).hex()
    allf = env.get("/v1/findings", ds.auditor).json()["items"]
    assert [(x["finding_id"], x["outcome"]) for x in allf] == [
        (1, "confirmed"), (2, "rejected"), (3, "filed")]
    assert allf[1]["decision_note"] == "meter recalibrated" and allf[1]["record_leaf"] is None
    assert allf[2]["decided_at"] is None and allf[2]["decided_by"] is None
    filed = env.get("/v1/findings", ds.government, outcome="filed").json()["items"]
    assert [x["enterprise"] for x in filed] == [addr(ds.c)]


# -- the market ------------------------------------------------------------------------------

def test_offers_trades_and_prices(env: Env) -> None:
    ds = env.ds
    offers = env.get("/v1/offers", ds.c).json()["items"]
    assert [(o["offer_id"], o["status"], o["buyer"]) for o in offers] == [
        (1, "filled", None), (2, "cancelled", addr(ds.c)), (3, "open", None)]
    assert [o["offer_id"] for o in env.get("/v1/offers", ds.c, status="open",
                                           period=2).json()["items"]] == [3]
    assert [t["trade_id"] for t in env.get("/v1/trades", ds.government).json()["items"]] == [1, 2, 3]
    assert [t["trade_id"] for t in env.get("/v1/trades", ds.b).json()["items"]] == [1, 2]
    assert [t["trade_id"] for t in env.get("/v1/trades", ds.c).json()["items"]] == [3]
    t = env.get("/v1/trades", ds.a, enterprise=addr(ds.a)).json()["items"]
    assert t[0]["payment_ref"] == "0x" + keccak256(b"bank transfer #1").hex()
    assert t[1]["payment_ref"] is None and t[1]["settled_by"] is None
    assert env.get("/v1/trades", ds.c, enterprise=addr(ds.d)).status_code == 403
    p = env.get("/v1/prices", ds.finance2).json()
    # (60 t x 9,000 + 40 t x 9,000 + 10 t x 9,500) / 110 t = 995,000 / 110
    assert p == [{"period": 1, "trades": 3, "volume_g": 110 * T,
                  "vwap_per_tonne": pytest.approx(995_000 / 110), "min_per_tonne": 9_000,
                  "max_per_tonne": 9_500}]
    assert env.get("/v1/prices", ds.a, period=2).json() == []


# -- records, proofs, export -----------------------------------------------------------------

def test_records_by_cursor(env: Env) -> None:
    ds = env.ds
    seen: list[tuple[str, int]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 5, "enterprise": addr(ds.a)}
        if cursor:
            params["cursor"] = cursor
        body = env.get("/v1/records", ds.auditor, **params).json()
        seen += [(r["gateway_id"], r["seq"]) for r in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [("plant-a-gw1", s) for s in range(1, 23)] and pages == 5
    comm = env.get("/v1/records/plant-a-gw1/8", ds.a).json()
    assert comm["value"] is None and comm["value_bits"] == "0x7ff8000000000000"
    assert comm["flagged"] and comm["quality"] == 1
    manual = env.get("/v1/records/plant-b-gw1/2", ds.b).json()
    assert manual["value"] == 301.0 and not manual["flagged"]
    assert env.get("/v1/records/plant-b-gw1/2", ds.a).status_code == 403
    assert env.get("/v1/records/plant-c-gw1/7", ds.c).status_code == 404  # never delivered
    spikes = env.get("/v1/records", ds.government, from_ns=ns(2024, 6, 2),
                     to_ns=ns(2024, 6, 3)).json()["items"]
    assert [r["value"] for r in spikes] == [303.0, 900.0, 304.0, 305.0]
    r = env.get("/v1/records", ds.government, cursor="not-a-cursor")
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    assert [x["gateway_id"] for x in env.get("/v1/records", ds.c).json()["items"]] == \
        ["plant-c-gw1"] * 6


def test_proof_bundle_from_the_stored_leaves(env: Env) -> None:
    ds = env.ds
    r = env.get("/v1/records/plant-a-gw1/8/proof", ds.auditor)
    assert r.status_code == 200
    b = parse_bundle(r.content)
    gw = ds.gws["a"]
    assert record_leaf(b.record) == record_leaf(gw.records[7]) and b.header == gw.headers[1]
    assert _fold(record_leaf(b.record), b.proof) == b.header.root
    assert b.chain_id == 31337 and b.contract == "0x" + "5f" * 20
    assert "record_signature" not in r.json()
    assert env.get("/v1/records/plant-a-gw1/8/proof", ds.b).status_code == 403
    # a batch the portal holds only in part has no proof: 409 with the reason
    with env.ctx.engine.begin() as c:
        c.execute(sa.delete(records).where(records.c.gateway_id == "plant-a-gw1",
                                           records.c.seq == 1))
    r = env.get("/v1/records/plant-a-gw1/2/proof", ds.auditor)
    assert r.status_code == 409 and "5 of the batch's 6 records" in r.json()["detail"]


def test_export_jsonl_and_csv_with_proofs(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from portal import _routes_records

    monkeypatch.setattr(_routes_records, "EXPORT_BATCHES_PER_QUERY", 1)  # page across batches
    ds = env.ds
    r = env.get("/v1/export/records", ds.auditor, format="jsonl")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/jsonl")
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert len(rows) == 22 + 8 + 6 + 6  # A, B, C's first batch, D's first batch
    for row in rows:
        proof = [bytes.fromhex(p[2:]) for p in row["proof"]]
        assert _fold(bytes.fromhex(row["leaf"][2:]), proof).hex() == row["batch_root"][2:]
        assert row["proof_error"] is None
    r = env.get("/v1/export/records", ds.auditor, format="csv", gateway_id="plant-b-gw1",
                from_ns=ns(2024, 6, 1))
    assert r.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert [(x["seq"], x["value"]) for x in table] == [
        ("5", "303.0"), ("6", "900.0"), ("7", "304.0"), ("8", "305.0")]
    leaf = bytes.fromhex(table[1]["leaf"][2:])
    proof = [bytes.fromhex(p[2:]) for p in table[1]["proof"].split(";")]
    assert "0x" + _fold(leaf, proof).hex() == table[1]["batch_root"]
    # an enterprise exports its own; others' are refused; finance only what it was granted
    own = env.get("/v1/export/records", ds.b).text.splitlines()
    assert len(own) == 8
    assert env.get("/v1/export/records", ds.b, enterprise=addr(ds.a)).status_code == 403
    fin = [json.loads(x) for x in env.get("/v1/export/records", ds.finance).text.splitlines()]
    assert {x["enterprise"] for x in fin} == {addr(ds.a)}


# -- authentication on every route ---------------------------------------------------------

def test_no_token_is_401_and_no_role_is_403(env: Env) -> None:
    r = env.client.get("/v1/enterprises")
    assert r.status_code == 401 and r.headers["content-type"] == PROBLEM
    assert "Bearer" in r.json()["detail"]
    r = env.get("/v1/enterprises", env.ds.stranger)
    assert r.status_code == 403 and "holds no role" in r.json()["detail"]
    # a role revoked on-chain (and indexed) takes effect at the next request
    assert env.get("/v1/quarantine", env.ds.auditor).status_code == 200
    with env.ctx.engine.begin() as c:
        c.execute(sa.delete(roles).where(roles.c.account == addr(env.ds.auditor)))
        as_indexed(c)
    assert env.get("/v1/quarantine", env.ds.auditor).status_code == 403


def test_a_database_that_does_not_answer_is_503(tmp_path: Any) -> None:
    """A PostgreSQL server nobody listens for: every route answers 503 problem details."""
    from pathlib import Path

    from portal import PortalContext, open_engine
    from portal._config import ChainSection, PortalConfig
    from simulator import free_port

    engine = open_engine(f"postgresql+psycopg://mrv@127.0.0.1:{free_port()}/none",
                         connect_timeout_s=1)
    ctx = PortalContext(config=PortalConfig(chain=ChainSection(address_book=Path("x.json"))),
                        engine=engine, now_ns=Clock(), token_secret=b"k" * 32, chain_id=1)
    with TestClient(create_app(ctx)) as client:
        h = bearer(ctx, Account.from_key(b"\x01" * 32))
        for path in ("/v1/enterprises", "/v1/auth/me", "/v1/records"):
            r = client.get(path, headers=h)
            assert r.status_code == 503 and r.headers["content-type"] == PROBLEM, r.text
            assert "the database does not answer" in r.json()["detail"]
        r = client.post("/v1/auth/challenge", json={"address": "0x" + "ab" * 20})
        assert r.status_code == 503
    assert ctx.metrics.counters["portal_api_database_errors_total"] == 4
    engine.dispose()


def test_the_openapi_schema_names_every_route_with_models(env: Env) -> None:
    schema = env.client.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {"/v1/auth/challenge", "/v1/auth/token", "/v1/enterprises",
            "/v1/enterprises/{address}/accounts/{period}", "/v1/emissions", "/v1/batches",
            "/v1/quarantine", "/v1/reports", "/v1/findings", "/v1/offers", "/v1/trades",
            "/v1/prices", "/v1/records", "/v1/records/{gateway_id}/{seq}/proof",
            "/v1/export/records", "/v1/access-log", "/v1/submissions"} <= paths
    ok = schema["paths"]["/v1/enterprises/{address}/accounts/{period}"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CarbonAccount"}
    refused = schema["paths"]["/v1/batches"]["get"]["responses"]["403"]
    assert refused["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Problem"}
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["paths"]["/v1/records"]["get"]["security"] == [{"bearer": []}]


def test_text_that_a_database_cannot_hold_is_422(env: Env) -> None:
    """Found by schemathesis on PostgreSQL: a NUL in a query parameter was a 500."""
    import base64

    for path, params in (("/v1/enterprises", {"industry_code": "\x00"}),
                         ("/v1/emissions", {"region": "44\x0003"}),
                         ("/v1/records", {"point_id": "a\x00"}),
                         ("/v1/records", {"cursor": base64.urlsafe_b64encode(
                             b'["a\\u0000", 1]').decode()})):
        r = env.get(path, env.ds.government, **params)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, (path, r.text)


# -- the schema, fuzzed: no 500s -------------------------------------------------------------

def test_schemathesis_finds_no_server_errors(db_url: str) -> None:
    """Every operation of the schema, with generated parameters and bodies (valid and not),
    as the government, a financial institution and an enterprise: never a 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    ctx = make_context(db_url, clock=Clock())
    ds = load(ctx.engine)
    app = create_app(ctx)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    calls = [0]
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) >= 18

    def check(op: Any, headers: dict[str, str], n: int) -> None:
        @given(case=op.as_strategy())
        @settings(max_examples=n, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            resp = case.call(headers=headers)
            calls[0] += 1
            if resp.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} "
                                f"{case.query}: {resp.status_code} {resp.text[:200]}")

        run()

    # the government (every query runs), then finance and an enterprise (the refusals)
    for who, n in ((ds.government, 25), (ds.finance, 8), (ds.b, 8)):
        headers = bearer(ctx, who)
        for op in ops:
            check(op, headers, n)
    ctx.engine.dispose()
    assert failures == []
    assert calls[0] >= 4 * len(ops)
