"""The live telemetry message is canonical JSON, written out fast (control/_service.py)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control import telemetry_json, verify_telemetry
from control._service import _canonical
from gateway import Reading
from ledger_client._format import record_leaf, record_signing_bytes
from ledger_client._signing import Signer
from mrv_core._records import committed_reading

_readings = st.lists(st.builds(
    lambda p, ts, v, u, q, seq: committed_reading(
        Reading(point_id=p, ts_ns=ts, value=v, unit=u, source="s", quality=q), seq, "gw"),
    st.text(max_size=12), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=6),
    st.integers(0, 2**32 - 1), st.integers(1, 2**63 - 1)), max_size=20)


def _reference(gw: str, readings: list[Reading]) -> bytes:
    return _canonical({"gateway": gw, "readings": [
        {"seq": r.seq, "point": r.point_id, "ts_ns": r.ts_ns,
         "value": None if math.isnan(r.value) else r.value, "unit": r.unit,
         "quality": r.quality} for r in readings]}).encode()


@given(gw=st.text(min_size=1, max_size=10), readings=_readings)
def test_same_bytes_as_canonical_json(gw: str, readings: list[Reading]) -> None:
    assert telemetry_json(gw, readings) == _reference(gw, readings)


def test_a_message_parses_back() -> None:
    rs = [committed_reading(Reading(point_id='锅炉."flow"', ts_ns=5, value=v, unit="m³/h",
                                    source="s", quality=3), i + 1, "gw-1")
          for i, v in enumerate([1.5, math.nan, 0.1 + 0.2, -0.0, 1e300])]
    doc = json.loads(telemetry_json("gw-1", rs))
    assert doc["gateway"] == "gw-1"
    assert [r["value"] for r in doc["readings"]] == [1.5, None, 0.1 + 0.2, -0.0, 1e300]
    assert doc["readings"][0] == {"point": '锅炉."flow"', "quality": 3, "seq": 1, "ts_ns": 5,
                                  "unit": "m³/h", "value": 1.5}


def _signed(gw: str, readings: list[Reading]) -> tuple[Signer, list[bytes]]:
    signer = Signer(b"\x09" * 32)
    return signer, [signer.sign(record_signing_bytes(record_leaf(r))) for r in readings]


@given(gw=st.text(min_size=1, max_size=10), readings=_readings)
def test_signed_message_is_canonical_json_and_every_reading_verifies(
        gw: str, readings: list[Reading]) -> None:
    readings = [committed_reading(r, r.seq, gw) for r in readings]
    signer, sigs = _signed(gw, readings)
    msg = telemetry_json(gw, readings, sigs)
    assert msg == _canonical({"gateway": gw, "readings": [
        {"seq": r.seq, "point": r.point_id, "ts_ns": r.ts_ns,
         "value": None if math.isnan(r.value) else r.value, "unit": r.unit,
         "quality": r.quality, "source": r.source, "sig": "0x" + s.hex()}
        for r, s in zip(readings, sigs, strict=True)]}).encode()
    finite = all(not math.isinf(r.value) for r in readings)  # JSON has no infinities
    if finite:
        assert verify_telemetry(msg, signer.public_key) == [(r.seq, True) for r in readings]


def test_a_changed_field_a_missing_signature_or_another_key_fails() -> None:
    rs = [committed_reading(Reading(point_id=f"p{i}", ts_ns=5 + i, value=1.5 * i, unit="kW",
                                    source="modbus_tcp:m", quality=0), i + 1, "gw-1")
          for i in range(4)]
    signer, sigs = _signed("gw-1", rs)
    doc = json.loads(telemetry_json("gw-1", rs, sigs))
    doc["readings"][0]["value"] = 99.0          # a changed value
    doc["readings"][1]["source"] = "hj212:x"   # a changed source
    del doc["readings"][2]["sig"]               # no signature
    got = verify_telemetry(json.dumps(doc).encode(), signer.public_key)
    assert got == [(1, False), (2, False), (3, False), (4, True)]
    other = Signer(b"\x0a" * 32).public_key
    assert [ok for _, ok in verify_telemetry(telemetry_json("gw-1", rs, sigs), other)] == [
        False] * 4
    # unsigned telemetry (the default) has nothing to verify
    assert [ok for _, ok in verify_telemetry(telemetry_json("gw-1", rs), signer.public_key)] == [
        False] * 4
    with pytest.raises(ValueError, match="not a telemetry message"):
        verify_telemetry(b'{"readings": 3}', signer.public_key)
