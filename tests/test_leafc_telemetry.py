"""The compiled telemetry message and writer's screen (ledger_client/_leafc.c:
``telemetry_json``, ``all_storable``; docs/compiled-path.md) give the same bytes and answers as
the pure functions (control/_telemetry.py::_telemetry_json_py, ledger_client._outbox.unstorable)
and leave everything outside their fast path to them."""

from __future__ import annotations

import gc
import json
import math
import os
import random
import struct
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ledger_client
from control import telemetry_json
from control._service import _canonical
from control._telemetry import _telemetry_json_py
from ledger_client import _leafc, all_storable, telemetry_json_compiled, unstorable
from mrv_core import DerivedRecord, Reading
from mrv_core._records import committed_reading
from tests.support import on_both_paths

ROOT = Path(__file__).resolve().parent.parent
PURE = os.environ.get("MRV_PURE_PYTHON", "") not in ("", "0")


def _r(seq: int = 1, **kw: Any) -> Reading:
    f: dict[str, Any] = {"point_id": f"p{seq}", "ts_ns": 1_767_225_600_000_000_000 + seq,
                         "value": 1.5 + seq, "unit": "kW", "source": "modbus_tcp:m1",
                         "quality": 0}
    f.update(kw)
    return committed_reading(Reading(**f), seq, "gw")


def _outcome(f: Any, *args: Any) -> tuple[str, Any]:
    """What a call gives: its result, or its exception's type and message."""
    try:
        return "ok", f(*args)
    except Exception as e:  # the comparison is the point
        return type(e).__name__, str(e)


def _same_message(gw: Any, readings: Any, sigs: Any = None) -> bytes | None:
    """The compiled message equals the pure one (or is None, the fallback); the public
    function gives the pure function's result or exception. Returns the compiled answer."""
    fast = _leafc.telemetry_json(gw, readings, sigs, Reading)
    pure = _outcome(_telemetry_json_py, gw, readings, sigs)
    if fast is not None:
        assert pure == ("ok", fast)
    assert _outcome(telemetry_json, gw, readings, sigs) == pure
    return fast


# ---------------------------------------------------------------- in use

def test_the_compiled_functions_are_in_use() -> None:
    rs = [_r(1), _r(2)]
    if PURE:
        assert telemetry_json_compiled("gw", rs) is None
        assert all_storable(rs) is False
    else:
        assert telemetry_json_compiled("gw", rs) == _telemetry_json_py("gw", rs)
        assert all_storable(rs) is True


def test_mrv_pure_python_forces_the_pure_path() -> None:
    code = ("import math; from control import telemetry_json; import ledger_client as l;"
            "from mrv_core._records import committed_reading; from mrv_core import Reading;"
            "r = committed_reading(Reading(point_id='p\"', ts_ns=-5, value=-math.inf, unit='u',"
            " source='s'), 3, 'gw');"
            "print(l.telemetry_json_compiled('gw', [r]) is None, l.all_storable([r]),"
            " telemetry_json('gw', [r, r], [b'ab', b'cd']).hex())")
    out = on_both_paths(code)
    assert out["1"][:2] == ["True", "False"]
    assert out["0"][:2] == ["False", "True"]
    assert out["1"][2:] == out["0"][2:]


def test_importing_control_does_not_import_the_ledger_code() -> None:
    """`control` stays light for `config`: the compiled writer is bound on the first message."""
    code = ("import sys, control; print('ledger_client' in sys.modules);"
            "control.telemetry_json('gw', []); print('ledger_client' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["False", "True"]


# ---------------------------------------------------------------- telemetry_json

_text = st.text(max_size=12) | st.sampled_from(
    ["", "锅炉.flow", 'a"b', "a\\b", "\x00\x01\x1f\x7f\t\n\r\b\f", "m³/h", "🌡️", "\u2028\u2029",
     "x" * 300])
_int = st.integers() | st.sampled_from([0, -1, 2**63 - 1, -(2**63), 2**64, -(2**64), 10**40])
_float = st.floats() | st.sampled_from(
    [math.nan, -math.nan, math.inf, -math.inf, -0.0, 0.0, 1e16, 1e15, 5e-324, 2.2250738585072014e-308,
     1.7976931348623157e308, 0.1, 1 / 3, 123456789012345680.0, 1e22, 1e-7])
_readings = st.lists(st.builds(
    lambda p, ts, v, u, s, q, seq: committed_reading(
        Reading(point_id=p, ts_ns=ts, value=v, unit=u, source=s, quality=q), seq, "gw"),
    _text, _int, _float, _text, _text, _int, _int), max_size=25)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(gw=_text, readings=_readings, signed=st.booleans(), data=st.data())
def test_random_messages_are_the_pure_bytes(gw: str, readings: list[Reading], signed: bool,
                                            data: st.DataObject) -> None:
    sigs = [data.draw(st.binary(max_size=70)) for _ in readings] if signed else None
    fast = _same_message(gw, readings, sigs)
    assert fast is not None
    assert _same_message(gw, tuple(readings), None if sigs is None else tuple(sigs)) == fast
    if not signed:  # and it is canonical JSON (tests/test_telemetry_json.py)
        assert fast == _canonical({"gateway": gw, "readings": [
            {"seq": r.seq, "point": r.point_id, "ts_ns": r.ts_ns,
             "value": None if math.isnan(r.value) else r.value, "unit": r.unit,
             "quality": r.quality} for r in readings]}).encode()


@pytest.mark.parametrize("value", [math.nan, -math.nan, math.inf, -math.inf, -0.0, 0.0, 1e16,
                                   -1e16, 1e15, 5e-324, -5e-324, 1.7976931348623157e308, 0.1,
                                   100.0, 1e-5, 1e-4, 123.456])
def test_floats_as_python_writes_them(value: float) -> None:
    fast = _same_message("gw", [_r(1, value=value)])
    assert fast is not None
    if math.isfinite(value):
        assert fast.endswith(f'"value":{value!r}}}]}}'.encode())
    else:
        assert fast.endswith({"nan": b"null", "inf": b"Infinity", "-inf": b"-Infinity"}[
            repr(value)] + b"}]}")


def _values_of(msg: bytes) -> list[bytes]:
    return [p[:p.index(b"}")] for p in msg.split(b'"value":')[1:]]


@pytest.mark.parametrize("seed", range(4))
def test_many_floats_as_repr(seed: int) -> None:
    """The compiled writer's own conversion of values with few decimals (put_short_float) and
    the general one, against repr: decimals m / 10^k, values a meter's scale gives, random
    doubles of every magnitude, and the neighbours of the range limits (1e-4, 1e15)."""
    rnd = random.Random(seed)
    vals = [rnd.choice((1, -1)) * rnd.randrange(10**rnd.randint(1, 16)) / 10**rnd.randint(0, 12)
            for _ in range(20_000)]
    vals += [round(rnd.choice((1, -1)) * 10**rnd.uniform(-6, 17), rnd.randint(0, 10))
             for _ in range(20_000)]
    vals += [struct.unpack("<d", rnd.randbytes(8))[0] for _ in range(10_000)]
    vals += [rnd.uniform(-1, 1) * 10**rnd.uniform(-5, 16) for _ in range(10_000)]
    vals += [rnd.randrange(65536) * sc for sc in (0.1, 0.01, 0.001, 0.25, 1e-5) for _ in range(4000)]
    for x in (1e-4, 1e15, 1e16, 2.0**53, 0.1, 999999999999999.0, 99999999999999.9):
        y = z = x
        for _ in range(50):
            vals += [y, -y, z, -z]
            y, z = math.nextafter(y, math.inf), math.nextafter(z, 0)
    rs = [_r(1, value=v) for v in vals]
    fast = _leafc.telemetry_json("gw", rs, None, Reading)
    assert fast is not None
    want = [b"null" if v != v else repr(v).replace("inf", "Infinity").encode() for v in vals]
    assert _values_of(fast) == want


@pytest.mark.parametrize("n", [0, 2**31, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 + 7,
                               -(10**30), 10**100])
def test_big_and_negative_ints(n: int) -> None:
    fast = _same_message("gw", [_r(1, ts_ns=n, quality=n)])
    assert fast is not None and f'"quality":{n},'.encode() in fast
    assert _same_message("gw", [committed_reading(_r(1), n, "gw")]) is not None


@pytest.mark.parametrize("text", ['"', "\\", "\x00", "\x1f", "\x7f", "\b\f\n\r\t", "é", "锅炉",
                                  "😀", "\u2028", 'a"\\\n"b', "\x80\xff", "\U0010ffff"])
def test_json_escaping_as_json_dumps(text: str) -> None:
    rs = [_r(1, point_id=text, unit=text, source=text)]
    for sigs in (None, [b"\x01\xff"]):
        fast = _same_message(text, rs, sigs)
        assert fast is not None
        doc = json.loads(fast)
        assert doc["gateway"] == doc["readings"][0]["point"] == doc["readings"][0]["unit"] == text
        assert json.dumps(text, ensure_ascii=False).encode() in fast


def test_signatures_as_hex() -> None:
    sigs = [bytes(range(64)), b"", b"\xff" * 3]
    fast = _same_message("gw", [_r(1), _r(2), _r(3, source="锅\"")], sigs)
    assert fast is not None
    doc = json.loads(fast)
    assert [d["sig"] for d in doc["readings"]] == ["0x" + s.hex() for s in sigs]
    assert doc["readings"][2]["source"] == "锅\""


@pytest.mark.parametrize("where", ["gw", "point_id", "unit", "source"])
def test_a_lone_surrogate_raises_as_the_python_path(where: str) -> None:
    bad = "p\ud800"
    rs = [_r(1), _r(2, **({where: bad} if where != "gw" else {}))]
    gw = bad if where == "gw" else "gw"
    assert _leafc.telemetry_json(gw, rs, [b"s", b"s"], Reading) is None
    with pytest.raises(UnicodeEncodeError):
        telemetry_json(gw, rs, [b"s", b"s"])
    if where == "source":  # not in an unsigned message: both paths write it
        assert _same_message(gw, rs) is not None
    else:
        assert _leafc.telemetry_json(gw, rs, None, Reading) is None
        with pytest.raises(UnicodeEncodeError):
            telemetry_json(gw, rs)


class _SubReading(Reading):
    __slots__ = ()


class _Str(str):
    pass


class _Float(float):
    pass


def _unset() -> Reading:
    r: Reading = object.__new__(Reading)
    return r


@pytest.mark.parametrize(("readings", "sigs"), [
    ([_r(1), _r(2, value=3)], None),  # an int value
    ([_r(1, value=2**1100)], None),  # json.dumps of an int
    ([_r(1, value=True)], None),
    ([_r(1, value=_Float(1.5))], None),
    ([_r(1, quality=True)], None),
    ([_r(1, ts_ns=1.5)], None),
    ([_r(1, point_id=_Str("p"))], None),
    ([_r(1, unit=None)], None),
    ([_r(1, source=_Str("s"))], [b"s"]),
    ([_r(1, source=5)], [b"s"]),
    ([_r(1)], [bytearray(b"s")]),
    ([_r(1)], [memoryview(b"s")]),
    ([_r(1), _r(2)], [b"s"]),  # zip(strict=True): ValueError
    ([_r(1)], [b"s", b"t"]),
    ([_r(1)], deque([b"s"])),
    (deque([_r(1)]), None),
    ([_r(1), _SubReading(point_id="p", ts_ns=1, value=1.0, unit="u", source="s")], None),
    ([DerivedRecord(point_id="p", derivation="hour-mean", period_start_ns=0,
                    period_end_ns=1, value=1.0, unit="u", from_seq=1, to_seq=2, seq=3)], None),
    ([_unset()], None),
    ([_r(1), "not a reading"], None),
], ids=["int-value", "huge-int-value", "bool-value", "float-subclass-value", "bool-quality",
        "float-ts", "str-subclass-point", "none-unit", "str-subclass-source", "int-source",
        "bytearray-sig", "memoryview-sig", "fewer-sigs", "more-sigs", "deque-sigs",
        "deque-readings", "reading-subclass", "derived-record", "unset-fields", "not-a-reading"])
def test_the_fallback_is_the_python_path(readings: Any, sigs: Any) -> None:
    assert _same_message("gw", readings, sigs) is None


def test_a_gateway_id_that_is_not_a_plain_str_falls_back() -> None:
    assert _same_message(_Str("gw"), [_r(1)]) is None


def test_an_empty_message() -> None:
    assert _same_message("gw", []) == b'{"gateway":"gw","readings":[]}'
    assert _same_message("gw", [], []) == b'{"gateway":"gw","readings":[]}'


# ---------------------------------------------------------------- all_storable

def _exact(readings: Any) -> bool:
    return all(unstorable(r) is None for r in readings)


_any_text = st.text(max_size=6) | st.sampled_from(["p\ud800", "\udfff", "é\ud83d", "锅炉", ""])
_field_int = st.integers(-(2**64), 2**64) | st.sampled_from(
    [-(2**63), 2**63 - 1, 2**63, -(2**63) - 1, 2**32 - 1, 2**32, -1, 0])


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.builds(
    lambda p, ts, v, u, s, q: Reading(point_id=p, ts_ns=ts, value=v, unit=u, source=s,
                                      quality=q),
    _any_text, _field_int, st.floats(), _any_text, _any_text, _field_int), max_size=8))
def test_all_storable_is_the_screen_for_plain_readings(readings: list[Reading]) -> None:
    """Exact Readings with int, float and str fields: the compiled answer is exact."""
    assert _leafc.all_storable(readings, Reading) is _exact(readings)
    assert _leafc.all_storable(tuple(readings), Reading) is _exact(readings)


@pytest.mark.parametrize("r", [
    _r(1, ts_ns=2**63), _r(1, ts_ns=-(2**63) - 1), _r(1, ts_ns=True), _r(1, ts_ns=1.0),
    _r(1, quality=-1), _r(1, quality=2**32), _r(1, quality=False),
    _r(1, value="1.0"), _r(1, value=2**1100), _r(1, value=None),
    _r(1, point_id="p\ud800"), _r(1, unit="\udc80"), _r(1, source="锅\ud83d"),
    _r(1, point_id=b"p"), _r(1, unit=None),
], ids=lambda r: repr(r)[8:60])
def test_all_storable_false_for_what_the_screen_refuses(r: Reading) -> None:
    assert unstorable(r) is not None
    assert _leafc.all_storable([_r(2), r], Reading) is False
    assert all_storable([_r(2), r]) is False


@pytest.mark.parametrize("readings", [
    [_r(1, value=3)],  # an int value is storable: the screen decides it, in Python
    [_r(1, point_id=_Str("p"))],
    [_SubReading(point_id="p", ts_ns=1, value=1.0, unit="u", source="s")],
    deque([_r(1)]),
], ids=repr)
def test_all_storable_false_when_it_cannot_tell(readings: Any) -> None:
    assert _leafc.all_storable(readings, Reading) is False


@pytest.mark.parametrize("readings", [
    [], [_r(1)], [_r(1, value=_Float(2.0))], [_r(1, point_id="锅炉", unit="m³/h", source="😀")],
    [_r(1, ts_ns=-(2**63), quality=2**32 - 1, value=math.nan)], [_r(1, ts_ns=2**63 - 1)],
], ids=repr)
def test_all_storable_true(readings: list[Reading]) -> None:
    assert _exact(readings)
    assert _leafc.all_storable(readings, Reading) is True
    assert all_storable(readings) is (not PURE)


def test_an_unset_field_goes_to_the_screen() -> None:
    assert _leafc.all_storable([_unset()], Reading) is False
    with pytest.raises(AttributeError):
        unstorable(_unset())


def test_another_reading_type_is_never_the_fast_path() -> None:
    assert _leafc.all_storable([_r(1)], int) is False
    assert _leafc.telemetry_json("gw", [_r(1)], None, int) is None
    assert _leafc.all_storable([_r(1)], Reading) is True  # learned again


# ---------------------------------------------------------------- leaks

def test_no_reference_leaks_in_100k_calls() -> None:
    pid = "锅炉" + "x" * 40
    plain = [_r(i, point_id=pid, value=v, unit='m³"/h\n', source="s\x01",
                quality=2**70 if i == 2 else i)
             for i, v in enumerate([1.0, math.nan, -math.inf, 1e16])]
    sigs = [bytes(64)] * len(plain)
    big = [_r(1, point_id="x" * 5000)]  # beyond the first buffer
    bad = [_r(1), _r(2, point_id="p\ud800")]
    mixed = [_r(1), _r(2, value=3)]

    def run(n: int) -> None:
        for _ in range(n):
            _leafc.telemetry_json("gw", plain, None, Reading)
            _leafc.telemetry_json("gw", plain, sigs, Reading)
            _leafc.telemetry_json("gw", big, None, Reading)
            _leafc.telemetry_json("gw", bad, sigs, Reading)
            _leafc.telemetry_json("gw", mixed, None, Reading)
            _leafc.all_storable(plain, Reading)
            _leafc.all_storable(bad, Reading)
            _leafc.all_storable(mixed, Reading)

    run(1000)
    gc.collect()
    refs, blocks = sys.getrefcount(pid), sys.getallocatedblocks()
    run(100_000)
    gc.collect()
    assert sys.getrefcount(pid) == refs
    assert sys.getallocatedblocks() - blocks < 200  # a leak of one object a call: >= 100,000


def test_the_public_names() -> None:
    assert ledger_client.all_storable is all_storable
    assert ledger_client.telemetry_json_compiled is telemetry_json_compiled


@pytest.mark.parametrize("extra", [
    {}, {"value": 3}, {"point_id": "锅炉"}, {"ts_ns": 2**63}, {"unit": "k\udc80W"}],
    ids=["plain", "int-value", "non-ascii", "ts-beyond-int64", "surrogate"])
async def test_the_writer_commits_what_the_screen_passes(tmp_path: Path,
                                                         extra: dict[str, Any]) -> None:
    """`Pipeline.commit` with the one-call screen: a plain chunk is committed whole; a chunk
    it cannot confirm is screened reading by reading, as before (an int value is storable)."""
    from cleaning import Cleaner
    from gateway._daemon import Pipeline
    from ledger_client import Outbox
    from mrv_core import Metrics

    rs = [Reading(point_id=f"p{i}", ts_ns=1000 + i, value=float(i), unit="kW", source="s")
          for i in range(3)]
    rs[1] = Reading(**{"point_id": "p1", "ts_ns": 1001, "value": 1.0, "unit": "kW",
                       "source": "s", **extra})
    storable = unstorable(rs[1]) is None
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    m = Metrics()
    pipe = Pipeline(ob, Cleaner({}), m, 4, lambda n: None)
    try:
        await pipe.commit(rs, [])
        assert m.counters["readings_accepted"] == (3 if storable else 2)
        assert m.counters.get("dead_letters", 0) == (0 if storable else 1)
        back = await ob.records(1, 10)
        assert [r.point_id for r in back] == [r.point_id for r in rs if unstorable(r) is None]
    finally:
        await ob.close()
