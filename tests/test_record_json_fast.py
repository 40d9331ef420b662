"""The one-pass reading parser (`_reading_fast`, what the portal uses for thousands of readings
per batch) accepts exactly what the full checks accept, and gives the same record."""

from __future__ import annotations

import math
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger_client._verify import BundleError, _reading_fast, _record_from_json_full

_text = st.one_of(st.text(max_size=8), st.just(""), st.just("\ud800"), st.integers(), st.none())
_int = st.one_of(st.integers(min_value=-(2**65), max_value=2**65), st.booleans(),
                 st.floats(allow_nan=False), st.text(max_size=3))
_bits = st.one_of(
    st.binary(min_size=8, max_size=8).map(lambda b: "0x" + b.hex()),
    st.binary(min_size=0, max_size=10).map(lambda b: "0x" + b.hex()),
    st.text(alphabet="0123456789abcdefx _-+", max_size=20), st.integers(),
    st.just("0x00 00 00 00 00 00 00 00"), st.just("0x7ff8000000000000"))


@settings(max_examples=3000, deadline=None)
@given(st.fixed_dictionaries({
    "gateway_id": _text, "seq": _int, "point_id": _text, "ts_ns": _int, "value_bits": _bits,
    "unit": _text, "quality": _int, "source": _text}, optional={"value": st.floats()}),
    st.sets(st.sampled_from(["gateway_id", "seq", "point_id", "ts_ns", "value_bits", "unit",
                             "quality", "source"]), max_size=2))
def test_the_fast_path_agrees_with_the_full_checks(d: dict[str, Any], drop: set[str]) -> None:
    d = {"kind": "reading", **{k: v for k, v in d.items() if k not in drop}}
    fast = _reading_fast(d)
    try:
        full = _record_from_json_full(d)
    except (BundleError, KeyError):
        full = None
    if fast is None:
        return  # the full checks decide (and name the field)
    assert full is not None, d
    pack = struct.Struct(">d").pack
    assert pack(fast.value) == pack(full.value) or (math.isnan(fast.value)
                                                    and math.isnan(full.value))
    assert (fast.gateway_id, fast.seq, fast.point_id, fast.ts_ns, fast.unit, fast.quality,
            fast.source) == (full.gateway_id, full.seq, full.point_id, full.ts_ns,  # type: ignore[union-attr]
                             full.unit, full.quality, full.source)  # type: ignore[union-attr]


def test_a_good_reading_takes_the_fast_path() -> None:
    d = {"kind": "reading", "gateway_id": "gw", "seq": 1, "point_id": "p", "ts_ns": 5,
         "value_bits": "0x4059000000000000", "unit": "kW", "quality": 0, "source": "s"}
    r = _reading_fast(d)
    assert r is not None and r.value == 100.0 and r.seq == 1
    assert _reading_fast({**d, "seq": True}) is None
    assert _reading_fast({**d, "value_bits": "0x40590000000000"}) is None
