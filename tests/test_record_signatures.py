"""Record signatures (``gateway.sign_records``, docs/formats.md "Record signatures"): each
committed record carries the gateway's Ed25519 signature over tag ‖ leaf."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from config import load_config
from control import verify_telemetry
from gateway import AuditRecord, DerivedRecord, Reading
from gateway._daemon import run_daemon
from ledger_client import Bundle, Outbox
from ledger_client._format import (
    RECORD_SIG_TAG,
    keccak256,
    record_leaf,
    record_signing_bytes,
)
from ledger_client._signing import Signer, verify_signature
from mrv_core._metrics import Metrics
from simulator import Anvil, ModbusPlant, Mosquitto, Provisioned, free_port, plant_devices, provision
from tests.support import proof_bundle, until, verify_checks
from tests.test_control_support import control_dict

VECTORS = json.loads((Path(__file__).parent.parent / "docs/vectors/formats.json").read_text())


def _b(h: str) -> bytes:
    return bytes.fromhex(h.removeprefix("0x"))


def test_tag_is_the_documented_hash() -> None:
    assert keccak256(b"mrv-gateway/record/v1") == RECORD_SIG_TAG
    assert RECORD_SIG_TAG.hex() == (
        VECTORS["record_signatures"][0]["signed_bytes"][2:66])


@pytest.mark.parametrize("vec", VECTORS["record_signatures"], ids=lambda v: f"seq-{v['seq']}")
def test_record_signature_vectors(vec: dict[str, Any]) -> None:
    leaf = _b(vec["leaf"])
    by_seq = {r["record"]["seq"]: r for r in VECTORS["records"]}
    assert by_seq[vec["seq"]]["leaf"] == vec["leaf"]  # the leaf of the records vector
    assert record_signing_bytes(leaf) == _b(vec["signed_bytes"])
    signer = Signer(_b(VECTORS["header"]["ed25519_seed"]))
    sig = _b(vec["signature"])
    assert signer.sign(record_signing_bytes(leaf)) == sig
    assert verify_signature(signer.public_key, record_signing_bytes(leaf), sig)
    # a record signature is not a signature of the bare leaf, nor of a header hash
    assert not verify_signature(signer.public_key, leaf, sig)


def test_signing_bytes_need_a_leaf() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        record_signing_bytes(b"\x01" * 31)


def _records() -> list[Any]:
    return [
        Reading(point_id="m.energy", ts_ns=1_767_225_600_000_000_000, value=12.5, unit="kWh",
                source="modbus_tcp:m"),
        Reading(point_id="m.power", ts_ns=1_767_225_600_000_000_000, value=math.nan, unit="kW",
                source="modbus_tcp:m", quality=1),
        DerivedRecord(point_id="m.power", derivation="hour-mean", period_start_ns=0,
                      period_end_ns=3_600_000_000_000, value=3.0, unit="kW", quality=0,
                      from_seq=1, to_seq=2),
        AuditRecord(ts_ns=5, category="command", subject="cmd-1", payload='{"a":1}'),
    ]


async def test_outbox_signs_every_kind_it_commits(tmp_path: Path) -> None:
    signer = Signer(b"\x07" * 32)
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw", sign_records=signer.sign)
    try:
        committed = await ob.append(_records())
        for r in committed:
            sig = await ob.record_signature(r.seq)
            assert sig is not None and len(sig) == 64
            assert verify_signature(signer.public_key, record_signing_bytes(record_leaf(r)), sig)
            # and the record read back is the one that was signed
            back = await ob.record(r.seq)
            assert back is not None
            assert verify_signature(signer.public_key,
                                    record_signing_bytes(record_leaf(back)), sig)
        assert await ob.record_signature(99) is None
    finally:
        await ob.close()


async def test_large_commits_are_signed_off_the_event_loop(tmp_path: Path) -> None:
    """Up to SIGN_ON_LOOP_MAX records are signed on the loop; a larger commit in a worker
    thread (so the loop can poll and take commands meanwhile); every signature verifies."""
    import threading

    from ledger_client._outbox import SIGN_ON_LOOP_MAX

    signer = Signer(b"\x07" * 32)
    threads: list[int] = []

    def sign(msg: bytes) -> bytes:
        threads.append(threading.get_ident())
        return signer.sign(msg)

    loop_thread = threading.get_ident()
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw", sign_records=sign)
    try:
        small = await ob.append(_records() * (SIGN_ON_LOOP_MAX // 4))
        assert len(small) == SIGN_ON_LOOP_MAX and set(threads) == {loop_thread}
        threads.clear()
        big = [Reading(point_id=f"p{i}", ts_ns=i, value=float(i), unit="kW", source="s")
               for i in range(3000)]
        committed, sigs = await ob.append_signed(big)
        assert loop_thread not in set(threads) and len(threads) == 3000
        assert sigs is not None
        for r, sig in zip(committed[::500], sigs[::500], strict=True):
            assert await ob.record_signature(r.seq) == sig
            assert verify_signature(signer.public_key, record_signing_bytes(record_leaf(r)), sig)
    finally:
        await ob.close()


async def test_outbox_without_a_signer_stores_none(tmp_path: Path) -> None:
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    try:
        committed = await ob.append(_records()[:1])
        assert await ob.record_signature(committed[0].seq) is None
    finally:
        await ob.close()


async def test_an_outbox_from_before_record_signatures_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    ob = await Outbox.open(path, "gw")
    old = await ob.append(_records()[:2])
    await ob.close()
    db = sqlite3.connect(path)  # the schema as it was: no sig column
    db.execute("ALTER TABLE records DROP COLUMN sig")
    db.close()
    signer = Signer(b"\x08" * 32)
    ob = await Outbox.open(path, "gw", sign_records=signer.sign)
    try:
        new = await ob.append(_records()[2:])
        assert [r.seq for r in new] == [3, 4]
        assert [await ob.record_signature(r.seq) for r in old] == [None, None]
        for r in new:
            sig = await ob.record_signature(r.seq)
            assert sig is not None
            assert verify_signature(signer.public_key, record_signing_bytes(record_leaf(r)), sig)
        batch = await ob.make_batch(10, signer.sign)
        assert batch is not None and batch.header.count == 4
    finally:
        await ob.close()


@pytest.fixture
async def signing_gateway(tmp_path: Path, anvil: Anvil, plant: ModbusPlant) -> Provisioned:
    """A gateway with ``gateway.sign_records: true`` that ran a few polls, all anchored."""
    prov = await provision(tmp_path / "gw", anvil.url,
                           devices=plant_devices(plant.port, interval_s=0.2),
                           batch_interval_s=0.5, max_records=50,
                           extra={"gateway": {"sign_records": True},
                                  "outbox": {"shutdown_drain_s": 20}})
    cfg = load_config(prov.config)
    assert cfg.gateway.sign_records
    stop, metrics = asyncio.Event(), Metrics()
    task = asyncio.create_task(run_daemon(cfg, stop=stop, metrics=metrics))
    try:
        while metrics.counters["polls"] < 10 and not task.done():
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    return prov


async def test_a_signed_reading_verifies_with_its_own_signature(
        signing_gateway: Provisioned) -> None:
    b = await proof_bundle(signing_gateway, 5)
    assert b.record_signature is not None
    assert await verify_checks(signing_gateway, b) == {
        "chain": True, "shown-values": True, "record-in-batch": True, "header-anchored": True,
        "signature": True, "record-signature": True, "on-chain-proof": True}
    again = Bundle.from_json(json.loads(json.dumps(b.to_json())))
    assert again == b


async def test_a_forged_record_signature_is_caught(signing_gateway: Provisioned) -> None:
    b = await proof_bundle(signing_gateway, 5)
    assert b.record_signature is not None
    forged = dataclasses.replace(
        b, record_signature=bytes([b.record_signature[0] ^ 1]) + b.record_signature[1:])
    checks = await verify_checks(signing_gateway, forged)
    assert checks["record-signature"] is False
    assert checks["record-in-batch"] and checks["signature"]
    # another record's signature does not verify this record
    other = await proof_bundle(signing_gateway, 6)
    checks = await verify_checks(signing_gateway,
                           dataclasses.replace(b, record_signature=other.record_signature))
    assert checks["record-signature"] is False


async def test_live_telemetry_carries_record_signatures_a_reader_can_check(
        tmp_path: Path, anvil: Anvil, plant: ModbusPlant, mosquitto: Mosquitto) -> None:
    prov = await provision(tmp_path / "gw", anvil.url,
                           devices=plant_devices(plant.port, interval_s=0.2),
                           batch_interval_s=0.5, max_records=50,
                           extra={"gateway": {"sign_records": True},
                                  "control": control_dict(free_port(), mosquitto.port),
                                  "outbox": {"shutdown_drain_s": 20}})
    cfg = load_config(prov.config)
    public_key = Signer.load(cfg.gateway.signing_key).public_key
    messages: list[bytes] = []
    stop, metrics = asyncio.Event(), Metrics()
    daemon = asyncio.create_task(run_daemon(cfg, stop=stop, metrics=metrics))
    try:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
            await c.subscribe(f"mrv/{cfg.gateway.id}/telemetry")

            async def listen() -> None:
                async for m in c.messages:
                    messages.append(bytes(m.payload))  # type: ignore[arg-type]

            listener = asyncio.create_task(listen())
            try:
                await until(lambda: sum(len(json.loads(m)["readings"]) for m in messages) >= 20,
                            timeout=60)
            finally:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
    finally:
        stop.set()
        await asyncio.wait_for(daemon, 60)
    checked = [r for m in messages for r in verify_telemetry(m, public_key)]
    assert len(checked) >= 20 and all(ok for _, ok in checked), checked
    first = json.loads(messages[0])["readings"][0]
    ob = await Outbox.open(cfg.outbox_path(), cfg.gateway.id)
    try:  # the signature on the wire is the one the outbox keeps for the record
        stored = await ob.record_signature(first["seq"])
        assert stored is not None and "0x" + stored.hex() == first["sig"]
    finally:
        await ob.close()
    doc = json.loads(messages[0])
    doc["readings"][0]["value"] = 1e9  # what a tampering broker or bridge would do
    assert verify_telemetry(json.dumps(doc).encode(), public_key)[0] == (first["seq"], False)
