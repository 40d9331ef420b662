"""Verification at ingest: the pure checks with plain values, then ``POST /v1/ingest/batches``
on SQLite and PostgreSQL: verified, unanchored then anchored, replay, reorder, equivocation,
unknown gateway, bad and revoked keys, every kind of bad input, a database that is down."""

from __future__ import annotations

import dataclasses
import json
import math
import socket
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ledger_client import submission_json, value_bits
from portal import PortalContext, create_app, open_engine
from portal._ingest import (
    MAX_RECORDS,
    UNANCHORED,
    VERIFIED,
    Refused,
    anchor_state,
    check_submission,
    parse_submission,
    record_rows,
    value_of_bits,
)
from portal._ingest_store import verify_pending
from portal._ingest_tables import ingest_batches, quarantine, records
from tests.ingest_support import (
    ENTERPRISE,
    Built,
    anchor,
    build,
    portal_config,
    portal_context,
    register,
    signer,
)
from tests.ingest_support import (
    records as make_records,
)

GW = "plant-t-gw1"
ROOT = Path(__file__).resolve().parent.parent
MB = 32 * 1024 * 1024


def batch(seq: int = 1, first: int = 1, n: int = 12, key: int = 1, **kw: Any) -> Built:
    return build(GW, seq, make_records(GW, first, n), signer(key), **kw)


def refused(body: bytes | dict[str, Any], key: int = 1) -> Refused:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(Refused) as e:
        sub = parse_submission(data, max_bytes=MB)
        check_submission(sub, signer(key).public_key)
    return e.value


# -- the pure checks ---------------------------------------------------------------------------


def test_every_record_kind_round_trips_and_verifies() -> None:
    b = batch(n=14, sign_records=True)
    sub = parse_submission(b.body(), max_bytes=MB)
    assert sub.header == b.header and sub.header_hash == b.header.hash()
    assert [type(r).__name__ for r in sub.records[:7]] == [
        "Reading", "Reading", "Reading", "DerivedRecord", "Reading", "AuditRecord", "Reading"]
    for got, (want, _) in zip(sub.records, b.records, strict=True):
        if hasattr(want, "value"):  # NaN != NaN: values compared by their bits
            assert value_bits(got.value) == value_bits(want.value)  # type: ignore[union-attr]
            assert dataclasses.replace(got, value=0.0) == dataclasses.replace(want, value=0.0)
        else:
            assert got == want
    assert sub.record_signatures == [s for _, s in b.records]
    leaves = check_submission(sub, signer(1).public_key)
    assert anchor_state(sub, None) == UNANCHORED
    assert anchor_state(sub, (b.header.hash(), b.header.root)) == VERIFIED
    rows = record_rows(sub, leaves, ENTERPRISE)
    assert [r["kind"] for r in rows[:7]] == [1, 1, 1, 2, 1, 3, 1]
    nan_row = rows[2]
    assert nan_row["value"] is None and math.isnan(value_of_bits(nan_row["value_bits"]))
    neg = rows[1]  # -2.25: bits above 2^63, stored as a signed 64-bit integer
    assert neg["value_bits"] < 0 and value_of_bits(neg["value_bits"]) == -2.25
    assert all(r["record_signature"] and len(r["record_signature"]) == 130 for r in rows)


def test_the_test_vector_of_the_docs() -> None:
    """docs/vectors/portal-ingest.json: a submission of every record kind with its leaves,
    root and header hash, as the gateway's code makes it and the portal checks it."""
    from ledger_client import record_leaf

    vec = json.loads((ROOT / "docs/vectors/portal-ingest.json").read_text())
    key = signer(vec["signing_seed_byte"])
    recs = make_records(vec["gateway_id"], 1, vec["records"], t0=vec["t0_ns"])
    b = build(vec["gateway_id"], 1, recs, key, sign_records=True, co2e=(1200, 3400, 0))
    assert json.loads(b.body()) == vec["submission"]
    assert "0x" + b.header.hash().hex() == vec["header_hash"]
    assert "0x" + key.public_key.hex() == vec["signing_key"]
    sub = parse_submission(json.dumps(vec["submission"]).encode(), max_bytes=MB)
    leaves = check_submission(sub, bytes.fromhex(vec["signing_key"][2:]))
    assert ["0x" + x.hex() for x in leaves] == vec["leaves"]
    assert ["0x" + record_leaf(r).hex() for r in sub.records] == vec["leaves"]
    assert "0x" + sub.header.root.hex() == vec["root"]


def _mutate(path: list[Any], value: Any) -> dict[str, Any]:
    d = submission_json(batch().header, batch().signature, batch().records)
    target: Any = d
    for p in path[:-1]:
        target = target[p]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return d


_DELETE = object()


@pytest.mark.parametrize("path, value, reason, words", [
    (["format"], "mrv-batch/v2", "malformed", "format"),
    (["extra"], 1, "malformed", "unknown key"),
    (["records"], _DELETE, "malformed", "missing key"),
    (["gateway_id"], "", "malformed", "gateway_id"),
    (["gateway_id"], "x" * 65, "malformed", "gateway_id"),
    (["batch", "seq"], "1", "malformed", "batch.seq"),
    (["batch", "seq"], 0, "malformed", "batch.seq"),
    (["batch", "seq"], 2**63, "malformed", "2^63"),
    (["batch", "count"], 2**32, "malformed", "batch.count"),
    (["batch", "root"], "0x12", "malformed", "batch.root"),
    (["batch", "co2e_g"], [1, 2], "malformed", "co2e_g"),
    (["batch", "co2e_g", 0], -1, "malformed", "co2e_g"),
    (["records"], [], "malformed", "non-empty"),
    (["records", 0, "kind"], "photo", "malformed", "record.kind"),
    (["records", 0, "ts_ns"], 2**63, "malformed", "ts_ns"),
    (["records", 0, "quality"], True, "malformed", "quality"),
    (["records", 0, "value_bits"], "0x1", "malformed", "value_bits"),
    (["records", 0, "unit"], "u" * 1025, "malformed", "unit of 1,025"),
    (["records", 5, "payload"], "p" * 65_537, "malformed", "payload"),
    (["records", 0, "unit"], "k\x00W", "malformed", "NUL"),
    (["records", 5, "payload"], "\x00", "malformed", "NUL"),
    (["records", 0, "point_id"], "\ud800", "malformed", "Unicode"),
    (["records", 0, "record_signature"], "0x00", "malformed", "record_signature"),
    (["records", 0], [1, 2], "malformed", "records[0]"),
    (["records", 0, "gateway_id"], "other-gw", "gateway-mismatch", "records[0]"),
    (["batch", "gateway_id"], "other-gw", "gateway-mismatch", "other-gw"),
    (["records", 0, "value_bits"], "0x4000000000000000", "header-mismatch", "root"),
    (["records", 1, "ts_ns"], 1, "header-mismatch", "first_ts_ns"),
    (["batch", "header_hash"], "0x" + "11" * 32, "header-mismatch", "header_hash"),
    (["batch", "signature"], "0x" + "00" * 64, "bad-signature", "does not verify"),
    (["batch", "count"], 11, "bad-signature", "does not verify"),
])
def test_each_bad_input_is_refused_with_its_reason(path: list[Any], value: Any, reason: str,
                                                  words: str) -> None:
    e = refused(_mutate(path, value))
    assert e.reason == reason and words in e.detail, e


def test_records_that_are_not_the_headers_are_refused() -> None:
    b = batch(n=6)
    d = submission_json(b.header, b.signature, b.records)
    d["records"] = d["records"][:5]
    assert "counts 6 records" in refused(d).detail
    d = submission_json(b.header, b.signature, b.records)
    d["records"][2], d["records"][3] = d["records"][3], d["records"][2]
    assert refused(d).reason == "header-mismatch"
    bs = batch(n=4, sign_records=True)
    d = submission_json(bs.header, bs.signature, bs.records)
    d["records"][1]["record_signature"] = d["records"][2]["record_signature"]
    assert refused(d).reason == "bad-record-signature"
    assert refused(batch().body(), key=2).reason == "bad-signature"  # another gateway's key


@pytest.mark.parametrize("body, status, words", [
    (b"", 422, "not JSON"),
    (b"{", 422, "not JSON"),
    (b"\xff\xfe", 422, "not JSON"),
    ('{"format": "mrv-batch/v1"}'.encode("utf-16"), 422, "UTF-8"),
    (b"[1]", 422, "JSON object"),
    (b'{"format": NaN}', 422, "not JSON"),
    (b"[" * 5 + b"]" * 5, 422, "deeper"),
    (b'{"a":' * 100_000, 422, "deeper"),
    (b"9" * 5000, 422, "not JSON"),
    (b" " * (MB + 1), 413, "exceeds"),
])
def test_malformed_bodies_are_refused_before_or_while_parsing(body: bytes, status: int,
                                                              words: str) -> None:
    with pytest.raises(Refused) as e:
        parse_submission(body, max_bytes=MB)
    assert e.value.status == status and words in e.value.detail


def test_the_record_cap_is_checked_before_any_record_is_parsed() -> None:
    d = submission_json(batch().header, batch().signature, batch().records)
    d["records"] = [0] * (MAX_RECORDS + 1)  # not records at all: never looked at
    assert f"{MAX_RECORDS + 1:,} records" in refused(d).detail


def test_an_anchor_of_another_header_is_a_conflict() -> None:
    b = batch()
    sub = parse_submission(b.body(), max_bytes=MB)
    with pytest.raises(Refused) as e:
        anchor_state(sub, (b"\x01" * 32, b.header.root))
    assert e.value.status == 409 and e.value.reason == "anchor-mismatch"


# -- the endpoint, on both databases ---------------------------------------------------------


def _post(client: TestClient, body: bytes) -> tuple[int, dict[str, Any]]:
    r = client.post("/v1/ingest/batches", content=body,
                    headers={"content-type": "application/json"})
    return r.status_code, r.json()


def _states(ctx: PortalContext) -> dict[int, tuple[str, str | None]]:
    with ctx.engine.connect() as c:
        return {int(r.seq): (r.state, r.reason) for r in c.execute(
            sa.select(ingest_batches.c.seq, ingest_batches.c.state, ingest_batches.c.reason))}


def _count(ctx: PortalContext, table: sa.Table) -> int:
    with ctx.engine.connect() as c:
        return int(c.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _quarantined(ctx: PortalContext) -> list[tuple[int, str]]:
    with ctx.engine.connect() as c:
        return [(int(r.seq), r.reason) for r in c.execute(
            sa.select(quarantine.c.seq, quarantine.c.reason).order_by(quarantine.c.id))]


def test_anchored_batch_is_verified_and_its_records_stored(db_url: str) -> None:
    with portal_context(db_url) as ctx, TestClient(create_app(ctx)) as client:
        register(ctx.engine, GW, signer(1))
        b = batch(n=30, sign_records=True)
        anchor(ctx.engine, b.header, b.signature)
        status, body = _post(client, b.body())
        assert (status, body["state"], body["records"]) == (201, "verified", 30)
        with ctx.engine.connect() as c:
            rows = c.execute(sa.select(records).order_by(records.c.seq)).all()
        assert [r.seq for r in rows] == list(range(1, 31))
        want = {r.seq: r for r, _ in b.records}
        for row in rows:
            rec = want[row.seq]
            assert row.enterprise == ENTERPRISE and row.batch_seq == 1
            if hasattr(rec, "value"):
                assert value_of_bits(row.value_bits) == rec.value or math.isnan(rec.value)
        assert sum(1 for r in rows if r.kind == 3) == 4  # audit records kept too
        # a replay of exactly this batch: 200, nothing stored twice
        status, body = _post(client, b.body())
        assert (status, body["replay"], body["state"]) == (200, True, "verified")
        assert _count(ctx, records) == 30
    m = ctx.metrics.counters
    assert (m["ingest_verified"], m["ingest_replays"], m["ingest_records_verified"]) == (1, 1, 30)


def test_unanchored_waits_then_is_verified_when_the_anchor_is_indexed(db_url: str) -> None:
    with portal_context(db_url) as ctx, TestClient(create_app(ctx)) as client:
        register(ctx.engine, GW, signer(1))
        b1, b2 = batch(1, 1, 10), batch(2, 11, 10)
        b2 = build(GW, 2, make_records(GW, 11, 10), signer(1), prev=b1.header.hash())
        assert _post(client, b2.body())[1]["state"] == "unanchored"  # reordered: 2 before 1
        assert _post(client, b1.body())[1]["state"] == "unanchored"
        assert _count(ctx, records) == 0 and verify_pending(ctx) == 0
        anchor(ctx.engine, b1.header, b1.signature)
        assert verify_pending(ctx) == 1
        assert _states(ctx) == {1: ("verified", None), 2: ("unanchored", None)}
        anchor(ctx.engine, b2.header, b2.signature, header_hash=b"\x07" * 32)  # not this one
        assert verify_pending(ctx) == 1 and verify_pending(ctx) == 0
        assert _states(ctx)[2] == ("quarantined", "anchor-mismatch")
        assert _count(ctx, records) == 10
        assert _quarantined(ctx) == [(2, "anchor-mismatch")]
        with ctx.engine.connect() as c:  # payloads are not kept once decided
            assert c.execute(sa.select(ingest_batches.c.payload)).scalars().all() == [None, None]


def test_the_verifier_worker_settles_what_waits(db_url: str) -> None:
    import threading

    from portal._ingest_store import ingest_verifier

    with portal_context(db_url) as ctx, TestClient(create_app(ctx, workers=[ingest_verifier])) \
            as client:
        register(ctx.engine, GW, signer(1))
        b = batch()
        assert _post(client, b.body())[0] == 201
        anchor(ctx.engine, b.header, b.signature)
        done = threading.Event()
        for _ in range(400):  # the worker polls every 0.05 s
            if _states(ctx)[1][0] == "verified":
                done.set()
                break
            done.wait(0.05)
        assert done.is_set()


def test_equivocation_is_409_and_quarantined(db_url: str) -> None:
    with portal_context(db_url) as ctx, TestClient(create_app(ctx)) as client:
        register(ctx.engine, GW, signer(1))
        good = batch(n=8)
        anchor(ctx.engine, good.header, good.signature)
        assert _post(client, good.body())[0] == 201
        other = build(GW, 1, make_records(GW, 1, 8, t0=5), signer(1))  # signed, other header
        status, body = _post(client, other.body())
        assert status == 409 and body["reason"] == "equivocation"
        assert body["type"] == "about:blank" and body["seq"] == 1
        assert _states(ctx) == {1: ("verified", None)} and _count(ctx, records) == 8
        # unanchored yet, and the chain then holds another: equivocation against the chain
        late = build(GW, 2, make_records(GW, 9, 4), signer(1), prev=good.header.hash())
        forged = build(GW, 2, make_records(GW, 9, 4, t0=7), signer(1), prev=good.header.hash())
        anchor(ctx.engine, forged.header, forged.signature)
        status, body = _post(client, late.body())
        assert status == 409 and body["reason"] == "anchor-mismatch"
        assert _quarantined(ctx) == [(1, "equivocation"), (2, "anchor-mismatch")]
        assert _count(ctx, records) == 8


def test_unknown_gateway_bad_and_revoked_keys(db_url: str) -> None:
    with portal_context(db_url) as ctx, TestClient(create_app(ctx)) as client:
        b = batch()
        status, body = _post(client, b.body())
        assert status == 404 and body["reason"] == "unknown-gateway"
        assert _count(ctx, quarantine) == 0 and _count(ctx, ingest_batches) == 0
        register(ctx.engine, GW, signer(2))  # the ledger holds another key
        status, body = _post(client, b.body())
        assert status == 422 and body["reason"] == "bad-signature"
        assert _states(ctx) == {}  # a bad signature never takes the slot
        register(ctx.engine, GW, signer(1))
        assert _post(client, b.body())[1]["state"] == "unanchored"
        # revoked: what is not anchored never will be; what was anchored before still counts
        register(ctx.engine, GW, signer(1), active=False)
        b2 = batch(2, 13, 5)
        status, body = _post(client, b2.body())
        assert status == 422 and body["reason"] == "gateway-revoked"
        b3 = batch(3, 18, 5)
        anchor(ctx.engine, b3.header, b3.signature)
        assert _post(client, b3.body())[1]["state"] == "verified"
        assert _quarantined(ctx) == [(1, "bad-signature"), (2, "gateway-revoked")]
    m = ctx.metrics.counters
    assert m["ingest_unknown_gateway"] == 1 and m["ingest_refused_bad-signature"] == 1


def test_bad_inputs_over_http_are_problems_never_500(db_url: str) -> None:
    with portal_context(db_url, max_body_bytes=64 * 1024) as ctx, \
            TestClient(create_app(ctx)) as client:
        register(ctx.engine, GW, signer(1))
        for body, status in [(b"nonsense", 422), (b"[" * 100, 422), (b"{}", 422),
                             (json.dumps(_mutate(["batch", "seq"], -1)).encode(), 422),
                             (b"x" * (64 * 1024 + 1), 413),
                             (batch(n=400).body(), 413)]:
            r = client.post("/v1/ingest/batches", content=body)
            assert r.status_code == status, (body[:40], r.text)
            assert r.headers["content-type"] == "application/problem+json"
        # correctly signed and anchored, but with text no database can hold: refused, not 500
        nul = build(GW, 9, [dataclasses.replace(r, unit="k\x00W") if i == 0 else r
                            for i, r in enumerate(make_records(GW, 200, 3, mixed=False))],
                    signer(1))
        anchor(ctx.engine, nul.header, nul.signature)
        status, body = _post(client, nul.body())
        assert status == 422 and "NUL" in body["detail"]
        # a malformed batch of a known gateway is quarantined (seq 0: its seq unreadable)
        status, body = _post(client, json.dumps(_mutate(["records", 0, "kind"], 7)).encode())
        assert status == 422
        assert _quarantined(ctx) == [(0, "malformed"), (9, "malformed"), (1, "malformed")]
        assert _count(ctx, ingest_batches) == 0 and _count(ctx, records) == 0


def test_a_database_that_is_down_is_503(tmp_path: Path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    port = s.getsockname()[1]
    engine = open_engine(f"postgresql+psycopg://u@127.0.0.1:{port}/x", connect_timeout_s=1)
    ctx = PortalContext(config=portal_config(), engine=engine)
    try:
        with TestClient(create_app(ctx)) as client:
            status, body = _post(client, batch().body())
        assert status == 503 and "database" in body["detail"]
        assert ctx.metrics.counters["ingest_db_unavailable"] == 1
    finally:
        engine.dispose()
        s.close()


def test_concurrent_deliveries_of_one_slot_store_it_once(db_url: str) -> None:
    """The same batch sent by several requests at once (a gateway's retry racing its first
    try): one stores it, the others are replays; two signed headers at once: one wins, the
    other is equivocation."""
    from concurrent.futures import ThreadPoolExecutor

    from portal._errors import ApiProblem
    from portal._ingest_store import ingest

    def send(ctx: PortalContext, body: bytes) -> int:
        try:
            return ingest(ctx, body).status
        except ApiProblem as e:
            return e.status

    with portal_context(db_url) as ctx:
        register(ctx.engine, GW, signer(1))
        b = batch(n=50)
        anchor(ctx.engine, b.header, b.signature)
        with ThreadPoolExecutor(6) as pool:
            got = sorted(pool.map(lambda _: send(ctx, b.body()), range(6)))
        assert got == [200] * 5 + [201]
        assert _count(ctx, records) == 50 and _states(ctx) == {1: ("verified", None)}
        one = build(GW, 2, make_records(GW, 51, 5), signer(1), prev=b.header.hash())
        two = build(GW, 2, make_records(GW, 51, 5, t0=3), signer(1), prev=b.header.hash())
        with ThreadPoolExecutor(2) as pool:
            got = sorted(pool.map(lambda x: send(ctx, x.body()), [one, two]))
        assert got == [201, 409]
        assert _quarantined(ctx) == [(2, "equivocation")]
