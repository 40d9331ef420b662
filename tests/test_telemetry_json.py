"""The live telemetry message is canonical JSON, written out fast (control/_service.py)."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from control._service import _canonical, telemetry_json
from gateway import Reading
from gateway._records import committed_reading

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
