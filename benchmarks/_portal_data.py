"""A large portal database for the benchmarks, made inside PostgreSQL (``generate_series``):
enterprises in industries and regions, two yearly periods, their gateways, the chain's model
tables, and N verified readings spread over the gateways and the year.

Rows are plausible, not provable: leaves are stand-ins (the query benchmarks read them, nothing
verifies them here; the ingest benchmark verifies real batches of its own)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa

INDUSTRIES = ["D4411", "C3011", "C3110", "C2511", "C2614", "C3216"]
REGIONS = ["440300", "440600", "440100", "320500", "330100", "370200", "510100", "420100",
           "610100", "350200"]
YEAR_NS = 365 * 86_400 * 10**9
P2025 = (1_735_689_600 * 10**9, 1_767_225_600 * 10**9)  # 2025-01-01 .. 2026-01-01 UTC
P2026 = (1_767_225_600 * 10**9, 1_798_761_600 * 10**9)


def address_of(i: int) -> str:
    """The stand-in address of enterprise ``i`` (1-based)."""
    return "0x" + format(i, "040x")


@dataclass(frozen=True)
class Dataset:
    readings: int
    enterprises: int
    gateways: int
    fill_s: float


def fill(engine: sa.Engine, *, readings: int, enterprises: int = 300,
         gateways_per_enterprise: int = 2, batch_size: int = 5_000) -> Dataset:
    """Fill an empty, migrated PostgreSQL database."""
    if engine.dialect.name != "postgresql":
        raise ValueError("the benchmark data set is made inside PostgreSQL")
    t0 = time.perf_counter()
    gws = enterprises * gateways_per_enterprise
    per_gw = -(-readings // gws)
    step_ns = (P2026[1] - P2026[0] - 86_400 * 10**9) // max(per_gw, 1)
    ent_rows = [{
        "account": address_of(e), "credit_code": f"91440300MA{e:08d}",
        "name": f"Enterprise {e}", "industry_code": INDUSTRIES[e % len(INDUSTRIES)],
        "region": REGIONS[(e * 7) % len(REGIONS)], "status": 1, "certified_at": 1_735_689_600,
    } for e in range(1, enterprises + 1)]
    with engine.begin() as c:
        md = sa.MetaData()
        md.reflect(c, only=["enterprises", "periods", "gateways", "batches", "emissions",
                            "accounts", "records", "benchmarks", "reports", "findings"])
        t = md.tables
        c.execute(t["enterprises"].insert(), ent_rows)
        c.execute(t["periods"].insert(), [
            {"period_id": 1, "start_ns": P2025[0], "end_ns": P2025[1], "closed": True},
            {"period_id": 2, "start_ns": P2026[0], "end_ns": P2026[1], "closed": False}])
        c.execute(t["benchmarks"].insert(), [
            {"period": p, "industry_code": ind, "grams_per_unit": 700_000 + 50_000 * k}
            for p in (1, 2) for k, ind in enumerate(INDUSTRIES)])
        c.execute(t["gateways"].insert(), [{
            "gateway_key": "0x" + format(g, "064x"), "gateway_id": f"gw-{g}",
            "enterprise": address_of(g % enterprises + 1), "active": True,
            "registered_at": 1_735_689_600, "sender": "0x" + format(10**6 + g, "040x"),
            "signing_key": "0x" + format(g + 7, "064x"), "reserved_for": None,
        } for g in range(gws)])
        acc = []
        emi = []
        for e in range(1, enterprises + 1):
            for p in (1, 2):
                base = 50_000 + (e * 7919) % 400_000  # t
                grams = base * 10**6 * (100 - 3 * (p - 1) - e % 5) // 100
                emi.append({"enterprise": address_of(e), "period": p, "scope1_g": grams,
                            "scope2_g": grams // 10, "scope3_g": 0, "batches": 50})
                acc.append({"enterprise": address_of(e), "period": p,
                            "allocated_g": base * 10**6, "surrendered_g": grams if p == 1 else 0,
                            "verified_g": grams if p == 1 else 0, "penalty_g": 0,
                            "penalty_deducted_g": 0, "has_verified": p == 1,
                            "settled": p == 1, "settled_status": 2 if p == 1 else 0,
                            "output": 100_000 + e * 13, "benchmark_g_per_unit": 800_000})
        c.execute(t["emissions"].insert(), emi)
        c.execute(t["accounts"].insert(), acc)
        # the readings, made by the server; gateway g holds seqs 1..per_gw
        c.execute(sa.text("""
            INSERT INTO records (gateway_id, seq, batch_seq, enterprise, kind, point_id, ts_ns,
                                 value, value_bits, unit, quality, source, extra, leaf,
                                 record_signature)
            SELECT 'gw-' || g, s, (s - 1) / :bs + 1,
                   '0x' || lpad(to_hex(g % :ents + 1), 40, '0'), 1,
                   'gw-' || g || '.p' || (s % 20), :t0 + s * :step,
                   CASE WHEN s % 50 = 0 THEN NULL ELSE (s % 1000)::float8 END, 0, 'kW',
                   CASE WHEN s % 50 = 0 THEN 1 WHEN s % 20 = 0 THEN 256 ELSE 0 END,
                   'modbus_tcp:gw-' || g, NULL,
                   '0x' || md5(g::text || ':' || s::text) || md5(s::text), NULL
            FROM generate_series(0, :gws - 1) AS g, generate_series(1, :per) AS s
        """), {"bs": batch_size, "ents": enterprises, "t0": P2026[0], "step": step_ns,
               "gws": gws, "per": per_gw})
        c.execute(sa.text("""
            INSERT INTO batches (gateway_key, seq, gateway_id, enterprise, header_hash, root,
                                 count, first_record_seq, last_record_seq, first_ts_ns,
                                 last_ts_ns, co2e_scope1_g, co2e_scope2_g, co2e_scope3_g,
                                 prev_hash, signature, period, block_number, tx_hash)
            SELECT '0x' || lpad(to_hex(g), 64, '0'), b, 'gw-' || g,
                   '0x' || lpad(to_hex(g % :ents + 1), 40, '0'),
                   '0x' || md5('h' || g || ':' || b) || md5(b::text),
                   '0x' || md5('r' || g || ':' || b) || md5(b::text),
                   :bs, (b - 1) * :bs + 1, b * :bs, :t0 + ((b - 1) * :bs + 1) * :step,
                   :t0 + b * :bs * :step, 1000000, 100000, 0,
                   '0x' || lpad('', 64, '0'), '0x' || lpad('', 128, '0'), 2, b,
                   '0x' || md5('t' || g || ':' || b) || md5(b::text)
            FROM generate_series(0, :gws - 1) AS g, generate_series(1, :nb) AS b
        """), {"bs": batch_size, "ents": enterprises, "t0": P2026[0], "step": step_ns,
               "gws": gws, "nb": -(-per_gw // batch_size)})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(sa.text("ANALYZE"))
    return Dataset(readings=gws * per_gw, enterprises=enterprises, gateways=gws,
                   fill_s=time.perf_counter() - t0)
