"""mrv_core.block_readings (mrv_core/_recordc.c) makes a Modbus read's readings exactly as
the Python loop does (drivers/modbus/_io.py `block_readings_py`), and leaves every unusual
shape to that loop."""

from __future__ import annotations

import dataclasses
import gc
import os
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus._io import _SENTINEL, block_readings_py
from mrv_core import Reading, block_readings
from mrv_core import _gc as gcmod
from tests.support import on_both_paths

PURE = os.environ.get("MRV_PURE_PYTHON", "") not in ("", "0")
TS = 1_733_400_000_123_456_789


def _bits(x: Any) -> Any:
    return ("f", struct.pack("<d", x)) if type(x) is float else (type(x).__name__, x)


def _same(a: list[Reading], b: list[Reading]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert type(x) is type(y) is Reading
        for f in dataclasses.fields(Reading):
            assert _bits(getattr(x, f.name)) == _bits(getattr(y, f.name)), (f.name, x, y)


def _compiled(fast: tuple[Any, ...], values: tuple[Any, ...], ts: int = TS,
              source: str = "modbus:m1") -> list[Reading] | None:
    assert block_readings is not None
    out: list[Reading] = []
    done = block_readings(out, fast, values, ts, source, _SENTINEL, Reading)
    if not done:
        assert out == []  # nothing half done
        return None
    return out


def _python(fast: tuple[Any, ...], values: tuple[Any, ...], ts: int = TS,
            source: str = "modbus:m1") -> list[Reading]:
    out: list[Reading] = []
    block_readings_py(out, fast, values, ts, source)
    return out


def test_the_compiled_builder_is_in_use_unless_the_pure_path_is_forced() -> None:
    assert (gcmod.block_readings is not None) is (not PURE)


def test_the_pure_path_switch_gives_the_same_readings() -> None:
    code = ("import struct; from drivers.modbus import _io; from mrv_core import Reading,"
            " block_readings as b;"
            "fast = (('p', 'kW', 0.1, -2.0, 65535), ('q', '', 1.0, 0.0, None));"
            "out = [];"
            "done = b is not None and b(out, fast, (7, 2.5), 11, 's', _io._SENTINEL, Reading);"
            "done or _io.block_readings_py(out, fast, (7, 2.5), 11, 's');"
            "print(b is not None, *[struct.pack('<d', r.value).hex() for r in out])")
    out = on_both_paths(code)
    assert out["1"][0] == "False" and out["0"][0] == "True"
    assert out["1"][1:] == out["0"][1:] and len(out["0"]) == 3


_finite = st.floats(allow_nan=False, allow_infinity=False)
_value = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([0, 1, -1, 65535, 32767, -32768, 2**31 - 1, -(2**31), 2**32 - 1,
                     2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1]),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([-0.0, 5e-324, 1.7976931348623157e308, float("nan"),
                     struct.unpack("<d", bytes.fromhex("0100000000f8ff7f"))[0]]))
_member = st.tuples(
    st.text(min_size=1, max_size=30), st.text(max_size=8),
    st.one_of(_finite, st.sampled_from([0.1, 1.0, 0.001, -1.0, 0.0, 1e300, float("inf")])),
    st.one_of(_finite, st.sampled_from([0.0, -0.0, 273.15, -40.0, float("nan")])),
    st.one_of(st.none(), st.sampled_from([65535, 32767, -32768, 0, 2**32 - 1,
                                          2**64 - 1, -(2**63)])))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(_member, _value), max_size=40),
       st.integers(-(2**63), 2**63 - 1), st.text(max_size=20))
def test_random_reads_give_the_readings_of_the_python_loop(
        pairs: list[tuple[Any, Any]], ts: int, source: str) -> None:
    fast = tuple(m for m, _ in pairs)
    values = tuple(v for _, v in pairs)
    expect = _python(fast, values, ts, source)
    if PURE:
        assert block_readings is None
        return
    got = _compiled(fast, values, ts, source)
    assert got is not None  # every shape here is a usual one
    _same(got, expect)
    assert not any(gc.is_tracked(r) for r in got)  # plain values: untracked
    assert all(r.quality in (0, _SENTINEL) for r in got)


def test_a_sentinel_and_nan_are_flagged_and_the_rest_scaled() -> None:
    fast = (("a", "kW", 0.1, 1.0, 65535), ("b", "kW", 2.0, 0.0, 65535), ("c", "", 1.0, 0.5, None),
            ("d", "", 1.0, 0.0, 7))
    values = (123, 65535, float("nan"), 7.0)  # 7.0 == 7: Python's float/int equality
    expect = _python(fast, values)
    assert [r.quality for r in expect] == [0, _SENTINEL, _SENTINEL, _SENTINEL]
    assert expect[0].value == 123 * 0.1 + 1.0
    if not PURE:
        got = _compiled(fast, values)
        assert got is not None
        _same(got, expect)


@pytest.mark.parametrize("fast, values, why", [
    ((("a", "u", 1, 0.0, None),), (1,), "an int scale"),
    ((("a", "u", 1.0, 0, None),), (1,), "an int offset"),
    ((("a", "u", 1.0, 0.0, 1.5),), (1,), "a float sentinel"),
    ((("a", "u", 1.0, 0.0, None),), (True,), "a bool value"),
    ((("a", "u", 1.0, 0.0, None),), ("1",), "a str value"),
    ((("a", "u", 1.0, 0.0, None),), (2**64,), "an int beyond 64 bits"),
    ((("a", "u", 1.0, 0.0, None),), (-(2**63) - 1,), "an int below int64"),
    ((("a", "u", 1.0, 0.0, None),), (1, 2), "more values than members"),
    ((("a", "u", 1.0, 0.0, None), ("b", "u", 1.0, 0.0, None)), (1,), "fewer values"),
    ((("a", "u", 1.0, 0.0),), (1,), "a member of four"),
    (((b"a", "u", 1.0, 0.0, None),), (1,), "a bytes id"),
    ((["a", "u", 1.0, 0.0, None],), (1,), "a list member"),
], ids=lambda x: x if isinstance(x, str) else "")
def test_unusual_shapes_are_left_to_the_python_loop(fast: Any, values: Any, why: str) -> None:
    if PURE:
        assert block_readings is None
        return
    assert _compiled(fast, values) is None, why
    try:
        _python(fast, values)  # the loop decides: a result or its own error
    except (ValueError, TypeError):
        pass


@pytest.mark.parametrize("args, why", [
    (([], (), (), 1.5, "s", 4, Reading), "a float ts"),
    (([], (), (), 1, b"s", 4, Reading), "a bytes source"),
    ((None, (), (), 1, "s", 4, Reading), "no list to append to"),
    (([], [], (), 1, "s", 4, Reading), "members in a list"),
    (([], (), [], 1, "s", 4, Reading), "values in a list"),
    (([], (), (), 1, "s", 4, dict), "another type"),
])
def test_unusual_arguments_are_refused_without_a_change(args: tuple[Any, ...], why: str) -> None:
    if PURE:
        assert block_readings is None
        return
    assert block_readings is not None
    assert block_readings(*args) is False, why


def test_the_readings_are_appended_after_what_the_list_holds() -> None:
    if PURE:
        assert block_readings is None
        return
    first = Reading(point_id="x", ts_ns=1, value=1.0, unit="", source="s")
    out = [first]
    assert block_readings is not None
    assert block_readings(out, (("a", "u", 1.0, 0.0, None),), (3,), TS, "s", 4, Reading)
    assert out[0] is first and out[1].point_id == "a" and out[1].value == 3.0
    assert out[1] == Reading(point_id="a", ts_ns=TS, value=3.0, unit="u", source="s")
    assert hash(out[1]) == hash(Reading(point_id="a", ts_ns=TS, value=3.0, unit="u", source="s"))
