"""A realistic, fixed data set for the portal's tables, inserted directly (the indexer and the
ingest fill them in production): four enterprises in two industries and two regions, two
periods, a gateway each with real batches (readings, leaves, Merkle roots, Ed25519
signatures), ingest states, the quarantine, accounts, balances, reports, findings, the market
and data-access grants.

``load(engine, now_ns)`` inserts it and returns a `Dataset` naming every account (each with
its private key, so tests can sign in as it). The numbers are chosen so the expected answers
can be computed by hand (the tests write them out).

Who is who (industry, region):
  A  Pearl River Power   D4411 (power)   440300 (Shenzhen)
  B  Lingnan Cement      C3011 (cement)  440600 (Foshan)
  C  Bay Cement          C3011 (cement)  440300 (Shenzhen)
  D  Foshan Thermal      D4411 (power)   440600 (Foshan)
Finance F holds grants: A until now + 1 day, B revoked (0), C expired (now - 1 h); none
from D.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from eth_account import Account
from eth_account.signers.local import LocalAccount

from ledger_client import ZERO32, BatchHeader, Signer, build_header, gateway_key, keccak256, record_leaf
from mrv_core import Quality, Reading
from portal._chain_tables import (
    accounts,
    balances,
    batches,
    data_access,
    emissions,
    enterprises,
    findings,
    gateways,
    offers,
    periods,
    reports,
    roles,
    trades,
)
from portal._ingest_tables import ingest_batches, quarantine, records

T = 1_000_000  # grams per tonne
ZERO_ADDR = "0x" + "00" * 20
ZERO_HASH = "0x" + "00" * 32


def ns(y: int, m: int, d: int, hh: int = 0) -> int:
    return int(dt.datetime(y, m, d, hh, tzinfo=dt.UTC).timestamp()) * 10**9


#: the data set's "now": 2025-03-01 00:00 UTC
NOW_NS = ns(2025, 3, 1)
NOW_S = NOW_NS // 10**9


def account(name: str) -> LocalAccount:
    acct: LocalAccount = Account.from_key(keccak256(f"portal-test:{name}".encode()))
    return acct


def addr(a: LocalAccount) -> str:
    return str(a.address).lower()


def hx(b: bytes) -> str:
    return "0x" + b.hex()


def signed_bits(v: float) -> int:
    return int(struct.unpack(">q", struct.pack(">d", v))[0])


@dataclass
class Gw:
    gateway_id: str
    enterprise: LocalAccount
    signer: Signer
    records: list[Reading] = field(default_factory=list)
    headers: list[BatchHeader] = field(default_factory=list)

    def batch(self, start_ns: int, values: list[tuple[float, int]],
              co2e_g: tuple[int, int, int]) -> BatchHeader:
        """A batch of readings one minute apart: ``values`` is (value, quality) each."""
        first = len(self.records) + 1
        recs = [Reading(point_id="stack.co2", ts_ns=start_ns + i * 60 * 10**9, value=v,
                        unit="mg/m3", source="modbus:cems", quality=q, seq=first + i,
                        gateway_id=self.gateway_id) for i, (v, q) in enumerate(values)]
        self.records.extend(recs)
        prev = self.headers[-1].hash() if self.headers else ZERO32
        h = build_header(gateway_id=self.gateway_id, seq=len(self.headers) + 1, prev_hash=prev,
                         records=[(r.seq, r.ts_ns, record_leaf(r)) for r in recs], co2e_g=co2e_g)
        self.headers.append(h)
        return h


@dataclass
class Dataset:
    regulator: LocalAccount
    government: LocalAccount
    auditor: LocalAccount
    finance: LocalAccount
    finance2: LocalAccount
    stranger: LocalAccount
    a: LocalAccount
    b: LocalAccount
    c: LocalAccount
    d: LocalAccount
    gws: dict[str, Gw]
    #: the batches inserted: (gateway_id, seq) -> ingest state ("not-delivered" when absent)
    states: dict[tuple[str, int], str]


NAN = math.nan
GOOD = 0
SPIKE = int(Quality.SPIKE)
COMM = int(Quality.COMM_FAULT)
MANUAL = int(Quality.MANUAL)  # informational: not an invalid bit


def build() -> Dataset:
    """The data set's accounts and gateways with their batches (nothing stored yet)."""
    ds = Dataset(
        regulator=account("regulator"), government=account("government"),
        auditor=account("auditor"), finance=account("finance"), finance2=account("finance2"),
        stranger=account("stranger"), a=account("A"), b=account("B"), c=account("C"),
        d=account("D"), gws={}, states={})
    for name, ent in (("a", ds.a), ("b", ds.b), ("c", ds.c), ("d", ds.d)):
        ds.gws[name] = Gw(f"plant-{name}-gw1", ent, Signer(keccak256(f"gw-{name}".encode())))
    ok6 = [(400.0, GOOD)] * 6
    # A: 3 batches in 2024 and one in 2025; B: 2 in 2024, one with a comm fault and a spike
    a, b, c, d = (ds.gws[k] for k in "abcd")
    a.batch(ns(2024, 3, 1), ok6, (180 * T, 20 * T, 0))
    a.batch(ns(2024, 3, 15), [(410.0, GOOD), (NAN, COMM), (420.0, GOOD), (430.0, SPIKE)],
            (90 * T, 10 * T, 0))
    a.batch(ns(2024, 6, 1), ok6, (270 * T, 30 * T, 0))
    a.batch(ns(2025, 1, 10), ok6, (50 * T, 5 * T, 0))
    b.batch(ns(2024, 3, 2), [(300.0, GOOD), (301.0, MANUAL), (NAN, COMM), (302.0, GOOD)],
            (100 * T, 0, 0))
    b.batch(ns(2024, 6, 2), [(303.0, GOOD), (900.0, SPIKE), (304.0, GOOD), (305.0, GOOD)],
            (180 * T, 0, 0))
    c.batch(ns(2024, 3, 3), ok6, (60 * T, 0, 0))
    c.batch(ns(2024, 6, 3), ok6, (40 * T, 0, 0))  # anchored, never delivered
    d.batch(ns(2024, 3, 4), ok6, (120 * T, 10 * T, 0))
    d.batch(ns(2024, 6, 4), ok6, (130 * T, 0, 0))  # quarantined
    ds.states = {("plant-a-gw1", 1): "verified", ("plant-a-gw1", 2): "verified",
                 ("plant-a-gw1", 3): "verified", ("plant-a-gw1", 4): "verified",
                 ("plant-b-gw1", 1): "verified", ("plant-b-gw1", 2): "verified",
                 ("plant-c-gw1", 1): "verified", ("plant-c-gw1", 2): "not-delivered",
                 ("plant-d-gw1", 1): "verified", ("plant-d-gw1", 2): "quarantined"}
    return ds


def record_rows(gw: Gw, h: BatchHeader, enterprise: str) -> list[dict[str, Any]]:
    """The ``records`` rows of one batch, as the ingest stores a verified batch."""
    out = []
    for r in gw.records[h.first_record_seq - 1: h.last_record_seq]:
        out.append({
            "gateway_id": r.gateway_id, "seq": r.seq, "batch_seq": h.seq,
            "enterprise": enterprise, "kind": 1, "point_id": r.point_id, "ts_ns": r.ts_ns,
            "value": None if math.isnan(r.value) else r.value,
            "value_bits": signed_bits(r.value), "unit": r.unit, "quality": r.quality,
            "source": r.source, "extra": None, "leaf": hx(record_leaf(r)),
            "record_signature": None})
    return out


def batch_row(gw: Gw, h: BatchHeader, enterprise: str, period: int, block: int) -> dict[str, Any]:
    return {
        "gateway_key": hx(gateway_key(gw.gateway_id)), "seq": h.seq,
        "gateway_id": gw.gateway_id, "enterprise": enterprise, "header_hash": hx(h.hash()),
        "root": hx(h.root), "count": h.count, "first_record_seq": h.first_record_seq,
        "last_record_seq": h.last_record_seq, "first_ts_ns": h.first_ts_ns,
        "last_ts_ns": h.last_ts_ns, "co2e_scope1_g": h.co2e_scope1_g,
        "co2e_scope2_g": h.co2e_scope2_g, "co2e_scope3_g": h.co2e_scope3_g,
        "prev_hash": hx(h.prev_hash), "signature": hx(gw.signer.sign(h.hash())),
        "period": period, "block_number": block, "tx_hash": hx(keccak256(f"tx{block}".encode()))}


def _acct(ent: str, period: int, **kw: int | bool) -> dict[str, Any]:
    row: dict[str, Any] = {"enterprise": ent, "period": period, "allocated_g": 0,
                           "surrendered_g": 0, "verified_g": 0, "penalty_g": 0,
                           "penalty_deducted_g": 0, "has_verified": False, "settled": False,
                           "settled_status": 0, "output": 0, "benchmark_g_per_unit": 0}
    row.update(kw)
    return row


def load(engine: sa.Engine, ds: Dataset | None = None) -> Dataset:
    """Insert the data set (into a migrated, empty database)."""
    ds = ds or build()
    A, B, C, D = addr(ds.a), addr(ds.b), addr(ds.c), addr(ds.d)
    ent_of = {"a": A, "b": B, "c": C, "d": D}
    gov, aud, fin = addr(ds.government), addr(ds.auditor), addr(ds.finance)
    with engine.begin() as c:
        c.execute(sa.insert(roles), [
            {"role": "admin", "account": addr(ds.regulator)},
            {"role": "government", "account": gov}, {"role": "auditor", "account": aud},
            {"role": "finance", "account": fin}, {"role": "finance", "account": addr(ds.finance2)}])
        c.execute(sa.insert(enterprises), [
            {"account": A, "credit_code": "91440300A00000000A", "name": "Pearl River Power",
             "industry_code": "D4411", "region": "440300", "status": 1, "certified_at": 1704067200},
            {"account": B, "credit_code": "91440600B00000000B", "name": "Lingnan Cement",
             "industry_code": "C3011", "region": "440600", "status": 1, "certified_at": 1704067201},
            {"account": C, "credit_code": "91440300C00000000C", "name": "Bay Cement",
             "industry_code": "C3011", "region": "440300", "status": 1, "certified_at": 1704067202},
            {"account": D, "credit_code": "91440600D00000000D", "name": "Foshan Thermal",
             "industry_code": "D4411", "region": "440600", "status": 2, "certified_at": 1704067203},
        ])
        c.execute(sa.insert(periods), [
            {"period_id": 1, "start_ns": ns(2024, 1, 1), "end_ns": ns(2025, 1, 1), "closed": True},
            {"period_id": 2, "start_ns": ns(2025, 1, 1), "end_ns": ns(2026, 1, 1), "closed": False}])
        c.execute(sa.insert(data_access), [
            {"enterprise": A, "finance": fin, "until_at": NOW_S + 86_400},
            {"enterprise": B, "finance": fin, "until_at": 0},
            {"enterprise": C, "finance": fin, "until_at": NOW_S - 3_600}])
        block = 100
        for name, gw in ds.gws.items():
            ent = ent_of[name]
            c.execute(sa.insert(gateways).values(
                gateway_key=hx(gateway_key(gw.gateway_id)), gateway_id=gw.gateway_id,
                enterprise=ent, active=True, registered_at=1704067300, sender=ent,
                signing_key=hx(gw.signer.public_key), reserved_for=ent))
            for h in gw.headers:
                period = 1 if h.first_ts_ns < ns(2025, 1, 1) else 2
                block += 1
                c.execute(sa.insert(batches).values(batch_row(gw, h, ent, period, block)))
                state = ds.states[(gw.gateway_id, h.seq)]
                if state == "not-delivered":
                    continue
                c.execute(sa.insert(ingest_batches).values(
                    gateway_id=gw.gateway_id, seq=h.seq,
                    gateway_key=hx(gateway_key(gw.gateway_id)), header_hash=hx(h.hash()),
                    state=state,
                    reason="record 3's leaf does not reach the anchored root"
                    if state == "quarantined" else None,
                    received_ns=h.last_ts_ns + 10**9,
                    verified_ns=h.last_ts_ns + 2 * 10**9 if state == "verified" else None,
                    record_count=h.count, payload=None))
                if state == "verified":
                    c.execute(sa.insert(records), record_rows(gw, h, ent))
                if state == "quarantined":
                    c.execute(sa.insert(quarantine).values(
                        gateway_id=gw.gateway_id, seq=h.seq, header_hash=hx(h.hash()),
                        reason="record 3's leaf does not reach the anchored root",
                        received_ns=h.last_ts_ns + 10**9, detail='{"record": 3}'))
        c.execute(sa.insert(quarantine).values(
            gateway_id="plant-b-gw1", seq=9, header_hash=None,
            reason="the batch signature does not verify with the registered key",
            received_ns=ns(2024, 7, 1), detail=None))
        # emissions per period (the sums of the batches above)
        c.execute(sa.insert(emissions), [
            {"enterprise": A, "period": 1, "scope1_g": 540 * T, "scope2_g": 60 * T,
             "scope3_g": 0, "batches": 3},
            {"enterprise": A, "period": 2, "scope1_g": 50 * T, "scope2_g": 5 * T,
             "scope3_g": 0, "batches": 1},
            {"enterprise": B, "period": 1, "scope1_g": 280 * T, "scope2_g": 0, "scope3_g": 0,
             "batches": 2},
            {"enterprise": C, "period": 1, "scope1_g": 100 * T, "scope2_g": 0, "scope3_g": 0,
             "batches": 2},
            {"enterprise": D, "period": 1, "scope1_g": 250 * T, "scope2_g": 10 * T,
             "scope3_g": 0, "batches": 2}])
        # accounts: period 1 closed and settled for A and B; C unverified; D open figures
        c.execute(sa.insert(accounts), [
            _acct(A, 1, allocated_g=800 * T, surrendered_g=600 * T, verified_g=600 * T,
                  has_verified=True, settled=True, settled_status=2, output=1000,
                  benchmark_g_per_unit=800_000),
            _acct(A, 2, allocated_g=700 * T),
            _acct(B, 1, allocated_g=300 * T, surrendered_g=350 * T, verified_g=380 * T,
                  penalty_g=50 * T, penalty_deducted_g=0, has_verified=True),
            _acct(C, 1, allocated_g=150 * T),
            _acct(D, 1, allocated_g=250 * T, surrendered_g=260 * T, verified_g=260 * T,
                  has_verified=True)])
        c.execute(sa.insert(balances), [
            {"period": 1, "account": A, "amount_g": 100 * T},
            {"period": 1, "account": B, "amount_g": 40 * T},
            {"period": 1, "account": C, "amount_g": 160 * T},
            {"period": 1, "account": D, "amount_g": 0},
            {"period": 2, "account": A, "amount_g": 700 * T}])
        c.execute(sa.insert(reports), [
            {"report_id": 1, "enterprise": A, "period": 1, "auditor": aud, "filed_at": 1736000000,
             "verified_g": 600 * T, "reported_g": 600 * T, "report_hash": hx(keccak256(b"rA")),
             "uri": "https://reports.example/A/2024.pdf"},
            {"report_id": 2, "enterprise": B, "period": 1, "auditor": aud, "filed_at": 1736000100,
             "verified_g": 280 * T, "reported_g": 280 * T, "report_hash": hx(keccak256(b"rB")),
             "uri": "https://reports.example/B/2024.pdf"},
            {"report_id": 3, "enterprise": D, "period": 1, "auditor": aud, "filed_at": 1736000200,
             "verified_g": 260 * T, "reported_g": 260 * T, "report_hash": hx(keccak256(b"rD")),
             "uri": "https://reports.example/D/2024.pdf"}])
        b_gw = ds.gws["b"]
        c.execute(sa.insert(findings), [
            {"finding_id": 1, "enterprise": B, "period": 1, "kind": 2, "status": 2,
             "auditor": aud, "filed_at": 1736100000, "corrected_g": 380 * T,
             "previous_g": 280 * T, "penalty_g": 50 * T, "decided_by": gov,
             "decided_at": 1736200000, "evidence_hash": hx(keccak256(b"evidence")),
             "gateway_key": hx(gateway_key(b_gw.gateway_id)), "batch_seq": 2,
             "record_leaf": hx(record_leaf(b_gw.records[5])),
             "evidence_uri": "https://evidence.example/B/1", "decision_note": ""},
            {"finding_id": 2, "enterprise": A, "period": 1, "kind": 1, "status": 3,
             "auditor": aud, "filed_at": 1736100100, "corrected_g": 650 * T, "previous_g": 0,
             "penalty_g": 0, "decided_by": gov, "decided_at": 1736200100,
             "evidence_hash": hx(keccak256(b"e2")), "gateway_key": ZERO_HASH, "batch_seq": 0,
             "record_leaf": ZERO_HASH, "evidence_uri": "", "decision_note": "meter recalibrated"},
            {"finding_id": 3, "enterprise": C, "period": 1, "kind": 1, "status": 1,
             "auditor": aud, "filed_at": 1736100200, "corrected_g": 120 * T, "previous_g": 0,
             "penalty_g": 0, "decided_by": ZERO_ADDR, "decided_at": 0,
             "evidence_hash": hx(keccak256(b"e3")), "gateway_key": ZERO_HASH, "batch_seq": 0,
             "record_leaf": ZERO_HASH, "evidence_uri": "", "decision_note": ""}])
        c.execute(sa.insert(offers), [
            {"offer_id": 1, "seller": A, "period": 1, "status": 2, "created_at": 1720000000,
             "buyer": ZERO_ADDR, "amount_g": 100 * T, "remaining_g": 0, "price_per_tonne": 9_000},
            {"offer_id": 2, "seller": D, "period": 1, "status": 3, "created_at": 1720000100,
             "buyer": C, "amount_g": 50 * T, "remaining_g": 40 * T, "price_per_tonne": 9_500},
            {"offer_id": 3, "seller": A, "period": 2, "status": 1, "created_at": 1738000000,
             "buyer": ZERO_ADDR, "amount_g": 20 * T, "remaining_g": 20 * T,
             "price_per_tonne": 10_000}])
        c.execute(sa.insert(trades), [
            {"trade_id": 1, "offer_id": 1, "seller": A, "period": 1, "traded_at": 1720000200,
             "buyer": B, "amount_g": 60 * T, "price_per_tonne": 9_000, "value": 540_000,
             "payment_ref": hx(keccak256(b"bank transfer #1")), "settled_by": fin},
            {"trade_id": 2, "offer_id": 1, "seller": A, "period": 1, "traded_at": 1720000300,
             "buyer": B, "amount_g": 40 * T, "price_per_tonne": 9_000, "value": 360_000,
             "payment_ref": ZERO_HASH, "settled_by": ZERO_ADDR},
            {"trade_id": 3, "offer_id": 2, "seller": D, "period": 1, "traded_at": 1720000400,
             "buyer": C, "amount_g": 10 * T, "price_per_tonne": 9_500, "value": 95_000,
             "payment_ref": ZERO_HASH, "settled_by": ZERO_ADDR}])
    return ds


# -- a portal over the data set -----------------------------------------------------------------

class Clock:
    """The portal's injected clock (ns); tests move it."""

    def __init__(self, now_ns: int = NOW_NS) -> None:
        self.now = now_ns

    def __call__(self) -> int:
        return self.now


def make_context(db_url: str, *, chain_id: int = 31337,
                 contracts: dict[str, str] | None = None, clock: Clock | None = None,
                 **api: Any) -> Any:
    """A migrated portal context over ``db_url`` (the caller disposes ``ctx.engine``)."""
    from pathlib import Path

    from portal import PortalContext, migrate, open_engine
    from portal._config import ApiSection, AuthSection, ChainSection, PortalConfig

    cfg = PortalConfig(chain=ChainSection(address_book=Path("unused.json")),
                       api=ApiSection(**api),
                       auth=AuthSection(domain="portal.example", uri="https://portal.example/"))
    engine = open_engine(db_url)
    migrate(engine)
    return PortalContext(config=cfg, engine=engine, now_ns=clock or Clock(),
                         contracts=contracts or {"EmissionsLedger": "0x" + "5f" * 20},
                         chain_id=chain_id, token_secret=b"k" * 32)


def bearer(ctx: Any, who: LocalAccount) -> dict[str, str]:
    """The Authorization header of a token for ``who`` (as the sign-in would issue)."""
    from portal._viewer import issue_token

    token, _ = issue_token(ctx, addr(who))
    return {"Authorization": f"Bearer {token}"}


def as_indexed(conn: sa.Connection) -> None:
    """What the indexer does in the transaction of every change to the chain tables: move its
    checkpoint. The API keeps answers per checkpoint (portal/_cache.py), so a test that edits
    chain tables by hand, as the indexer would, moves it too."""
    from portal._chain_tables import idx_checkpoint

    cur = conn.execute(sa.select(idx_checkpoint.c.block_number)
                       .where(idx_checkpoint.c.name == "chain")).scalar()
    row = {"block_number": (cur or 0) + 1, "block_hash": "0x" + os.urandom(32).hex(),
           "updated_ns": 0}
    if cur is None:
        conn.execute(sa.insert(idx_checkpoint).values(name="chain", **row))
    else:
        conn.execute(sa.update(idx_checkpoint).where(idx_checkpoint.c.name == "chain")
                     .values(**row))
