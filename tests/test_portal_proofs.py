"""A record's proof bundle from the portal, end to end: a real batch (a reading, a reading
without a value, a derived record, an audit record; each record signed) built with
ledger_client, anchored on anvil by its gateway, its rows stored as the ingest stores them, the
bundle fetched from the API and checked with ``ledger_client.verify_bundle`` against the chain
(what ``mrv-gateway verify --bundle`` runs)."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from eth_account import Account
from fastapi.testclient import TestClient

from ledger_client import (
    ZERO32,
    EvmChain,
    Mrv,
    Signer,
    build_header,
    deploy_system,
    fund,
    gateway_key,
    generate_account,
    header_tuple,
    keccak256,
    make_uscc,
    parse_bundle,
    record_leaf,
    record_signing_bytes,
    verify_bundle,
)
from mrv_core import AuditRecord, DerivedRecord, Quality, Reading, Record
from portal import create_app
from portal._chain_tables import batches, enterprises, roles
from portal._ingest_tables import records
from simulator import DEV_KEYS, Anvil
from tests.portal_data import bearer, hx, make_context, signed_bits


def _ns(y: int, m: int, d: int) -> int:
    return int(dt.datetime(y, m, d, tzinfo=dt.UTC).timestamp()) * 10**9


def _row(r: Record, batch_seq: int, enterprise: str, sig: bytes) -> dict[str, Any]:
    """A ``records`` row as the ingest stores each kind (portal/_proofs.py)."""
    base = {"gateway_id": r.gateway_id, "seq": r.seq, "batch_seq": batch_seq,
            "enterprise": enterprise, "leaf": hx(record_leaf(r)), "record_signature": hx(sig)}
    if isinstance(r, Reading):
        return {**base, "kind": 1, "point_id": r.point_id, "ts_ns": r.ts_ns,
                "value": None if math.isnan(r.value) else r.value,
                "value_bits": signed_bits(r.value), "unit": r.unit, "quality": r.quality,
                "source": r.source, "extra": None}
    if isinstance(r, DerivedRecord):
        return {**base, "kind": 2, "point_id": r.point_id, "ts_ns": r.period_end_ns,
                "value": r.value, "value_bits": signed_bits(r.value), "unit": r.unit,
                "quality": r.quality, "source": "derived",
                "extra": json.dumps({"derivation": r.derivation,
                                     "period_start_ns": r.period_start_ns,
                                     "period_end_ns": r.period_end_ns, "from_seq": r.from_seq,
                                     "to_seq": r.to_seq})}
    assert isinstance(r, AuditRecord)
    return {**base, "kind": 3, "point_id": r.subject, "ts_ns": r.ts_ns, "value": None,
            "value_bits": signed_bits(math.nan), "unit": "", "quality": 0,
            "source": r.category, "extra": r.payload}


async def test_the_portals_bundle_verifies_against_the_chain(anvil: Anvil,
                                                              tmp_path: Path) -> None:
    regulator = Account.from_key(DEV_KEYS[3])
    gov, ent, gw_acct = (generate_account(tmp_path / f"{n}.key") for n in ("gov", "ent", "gw"))
    signer = Signer(keccak256(b"portal proof test gateway"))
    chain = EvmChain(anvil.url)
    book = await deploy_system(chain, regulator)
    m = Mrv(chain, book["contracts"])
    ledger_addr = str(book["contracts"]["EmissionsLedger"])
    gw_id = "plant-p-gw1"
    try:
        for a in (gov, ent, gw_acct):
            await fund(chain, regulator, a.address, 10**19)
        await m.grant(regulator, "government", gov.address)
        await m.certify(gov, ent.address, credit_code=make_uscc(b"p"), name="Proof Power",
                        industry="D4411", region="440300")
        period = await m.define_period(gov, _ns(2024, 1, 1), _ns(2025, 1, 1))
        await m.reserve_gateway_id(gov, gw_id, ent.address)
        await m.register_gateway(ent, gw_id, gw_acct.address, signer.public_key)
        t0 = _ns(2024, 5, 1)
        recs: list[Record] = [
            Reading(point_id="stack.co2", ts_ns=t0, value=412.5, unit="mg/m3",
                    source="modbus:cems", seq=1, gateway_id=gw_id),
            Reading(point_id="stack.co2", ts_ns=t0 + 60 * 10**9, value=math.nan, unit="mg/m3",
                    source="modbus:cems", quality=int(Quality.COMM_FAULT), seq=2,
                    gateway_id=gw_id),
            DerivedRecord(point_id="stack.co2", derivation="hour-mean", period_start_ns=t0,
                          period_end_ns=t0 + 3600 * 10**9, value=412.5, unit="mg/m3",
                          from_seq=1, to_seq=2, quality=int(Quality.INSUFFICIENT), seq=3,
                          gateway_id=gw_id),
            AuditRecord(gateway_id=gw_id, seq=4, ts_ns=t0 + 2 * 60 * 10**9,
                        category="control", subject="valve.1", payload='{"verdict":"ok"}'),
            Reading(point_id="stack.flow", ts_ns=t0 + 3 * 60 * 10**9, value=-0.0, unit="m3/h",
                    source="modbus:cems", seq=5, gateway_id=gw_id),
        ]
        h = build_header(gateway_id=gw_id, seq=1, prev_hash=ZERO32,
                         records=[(r.seq, getattr(r, "ts_ns", t0), record_leaf(r))
                                  for r in recs], co2e_g=(5_000_000, 0, 0))
        sig = signer.sign(h.hash())
        receipt, _ = await m.send(gw_acct, m.ledger.functions.anchorBatch(header_tuple(h), sig))

        ctx = make_context(f"sqlite:///{tmp_path / 'p.db'}", chain_id=await chain.chain_id(),
                           contracts={"EmissionsLedger": ledger_addr.lower()})
        e = ent.address.lower()
        with ctx.engine.begin() as c:
            c.execute(sa.insert(roles).values(role="auditor", account=gov.address.lower()))
            c.execute(sa.insert(enterprises).values(
                account=e, credit_code=make_uscc(b"p"), name="Proof Power",
                industry_code="D4411", region="440300", status=1, certified_at=0))
            c.execute(sa.insert(batches).values(
                gateway_key=hx(gateway_key(gw_id)), seq=1, gateway_id=gw_id, enterprise=e,
                header_hash=hx(h.hash()), root=hx(h.root), count=h.count,
                first_record_seq=1, last_record_seq=5, first_ts_ns=h.first_ts_ns,
                last_ts_ns=h.last_ts_ns, co2e_scope1_g=h.co2e_scope1_g, co2e_scope2_g=0,
                co2e_scope3_g=0, prev_hash=hx(ZERO32), signature=hx(sig), period=period,
                block_number=receipt.block_number, tx_hash=hx(receipt.tx_hash)))
            c.execute(sa.insert(records), [
                _row(r, 1, e, signer.sign(record_signing_bytes(record_leaf(r)))) for r in recs])
        verifier = EvmChain(anvil.url, contract_address=ledger_addr)
        try:
            with TestClient(create_app(ctx)) as client:
                for r in recs:
                    resp = client.get(f"/v1/records/{gw_id}/{r.seq}/proof",
                                      headers=bearer(ctx, gov))
                    assert resp.status_code == 200, resp.text
                    b = parse_bundle(resp.content)
                    assert record_leaf(b.record) == record_leaf(r)
                    report = await verify_bundle(b, verifier)
                    assert report.ok, report.text()
                    assert [n for n, _, _ in report.checks] == [
                        "chain", "shown-values", "record-in-batch", "header-anchored",
                        "signature", "record-signature", "on-chain-proof"]
                # a bundle the portal would give for a changed stored value does not hold
                with ctx.engine.begin() as c:
                    c.execute(sa.update(records).where(records.c.seq == 1)
                              .values(value_bits=signed_bits(413.0), value=413.0))
                resp = client.get(f"/v1/records/{gw_id}/1/proof", headers=bearer(ctx, gov))
                assert resp.status_code == 409
                assert "do not rebuild its stored leaf" in resp.json()["detail"]
        finally:
            await verifier.close()
            ctx.engine.dispose()
    finally:
        await m.close()
