"""Property test of ``POST /v1/ingest/batches``: malformed JSON, wrong types, mutated fields,
deep nesting, huge bodies. Every answer is a problem or a store, never a 500, and with no anchor
in the portal's index nothing is ever stored as verified."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger_client import submission_json
from portal import create_app
from portal._ingest_tables import ingest_batches, records
from tests.ingest_support import build, portal_context, register, signer
from tests.ingest_support import records as make_records

GW = "plant-z-gw1"
LIMIT = 256 * 1024
_VALID = build(GW, 1, make_records(GW, 1, 9), signer(1), sign_records=True)
_BASE = submission_json(_VALID.header, _VALID.signature, _VALID.records)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=5),
    max_leaves=20)


def _paths(d: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(d, dict):
        for k, v in d.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(d, list):
        for i, v in enumerate(d[:3]):
            out += _paths(v, (*prefix, i))
    return out


_ALL_PATHS = _paths(_BASE)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """The valid submission with one to three fields replaced (or removed)."""
    d = json.loads(json.dumps(_BASE))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_ALL_PATHS))
        target: Any = d
        try:
            for p in path[:-1]:
                target = target[p]
            if draw(st.booleans()) and isinstance(target, dict):
                target.pop(path[-1], None)
            else:
                target[path[-1]] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue
    return json.dumps(d).encode()


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(1, 50_000))
    opener = draw(st.sampled_from([b"[", b'{"a":', b'{"records":[']))
    return opener * n


@st.composite
def cut(draw: st.DrawFn) -> bytes:
    """The valid body cut short, or with a byte flipped."""
    body = _VALID.body()
    i = draw(st.integers(0, len(body) - 1))
    if draw(st.booleans()):
        return body[:i]
    return body[:i] + bytes([draw(st.integers(0, 255))]) + body[i + 1:]


bodies = st.one_of(
    mutated(), cut(), deep(),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.integers(LIMIT - 10, LIMIT * 2).map(lambda n: b'{"records":["' + b"x" * n + b'"]}'),
)


def test_the_ingest_endpoint_never_fails_and_stores_nothing_unverified(db_url: str) -> None:
    with portal_context(db_url, max_body_bytes=LIMIT) as ctx, \
            TestClient(create_app(ctx), raise_server_exceptions=False) as client:
        register(ctx.engine, GW, signer(1))
        seen: set[int] = set()

        @settings(max_examples=250, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(body=bodies)
        def check(body: bytes) -> None:
            r = client.post("/v1/ingest/batches", content=body,
                            headers={"content-type": "application/json"})
            seen.add(r.status_code)
            # 503 is the API's answer when the database does not answer in time (a loaded
            # machine: PostgreSQL's connect timeout); never a 500
            if r.status_code == 503:
                assert "the database does not answer" in r.json()["detail"], r.text
                return
            assert r.status_code in (200, 201, 404, 409, 413, 422), (r.status_code, r.text)
            if r.status_code >= 400:
                assert r.headers["content-type"] == "application/problem+json"
                assert r.json()["status"] == r.status_code

        check()
        assert {413, 422} <= seen  # both limits and checks were reached
        with ctx.engine.connect() as c:
            states = c.execute(sa.select(ingest_batches.c.state)).scalars().all()
            stored = c.execute(sa.select(sa.func.count()).select_from(records)).scalar_one()
        assert "verified" not in states and stored == 0
        # and the untouched submission is still taken (nothing above broke the slot)
        r = client.post("/v1/ingest/batches", content=_VALID.body())
        assert r.status_code in (200, 201) and r.json()["state"] == "unanchored"


@settings(max_examples=3000, deadline=None, derandomize=True, database=None)
@given(data=st.lists(st.sampled_from([b"[", b"]", b"{", b"}", b'"', b"\\", b"a", b":", b","]),
                     max_size=60).map(b"".join),
       stop_at=st.none() | st.integers(0, 6))
def test_the_fast_depth_scan_counts_as_the_reference_scanner(data: bytes,
                                                             stop_at: int | None) -> None:
    """``mrv_core.json_depth`` (the limit every submission passes before it is parsed) cuts
    strings out in C; it gives the depth the one-step-per-byte scanner gave, escapes,
    unterminated strings and stray closing brackets included."""
    from mrv_core import json_depth
    from mrv_core._bounded import _json_depth_scan

    want = _json_depth_scan(data, stop_at)
    got = json_depth(data, stop_at)
    if stop_at is not None and want > stop_at:
        assert got > stop_at  # both stop counting once the limit is passed
    else:
        assert got == want
