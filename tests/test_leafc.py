"""The compiled hot path (ledger_client/_leafc.c, docs/compiled-path.md) gives the same bytes,
objects and rows as the pure-Python path, falls back to it outside the fast path, and is built
and in use in this checkout."""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import random
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger_client import Outbox, _leafc
from ledger_client import _format as fmt
from ledger_client._outbox import _commit_rows, _commit_rows_py
from mrv_core import AuditRecord, DerivedRecord, Reading
from tests.support import on_both_paths

ROOT = Path(__file__).resolve().parent.parent
VECTORS = json.loads((ROOT / "docs/vectors/formats.json").read_text())


def _reading(i: int = 0, **kw: Any) -> Reading:
    f: dict[str, Any] = {"point_id": f"p{i}", "ts_ns": 1_767_225_600_000_000_000 + i,
                         "value": 1.5 + i, "unit": "kW", "source": "modbus_tcp:m1", "quality": 0}
    f.update(kw)
    return Reading(**f)


def _same(a: object, b: object) -> bool:
    """Equal, of the same type; floats by their bits (-0.0 is not 0.0; NaN is NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    return a == b


def _check_same_commit(records: list[Any], first: int, gw: str) -> None:
    fast = _leafc.commit_readings(records, first, gw, Reading)
    assert fast is not None
    committed, rows = fast
    p_committed, p_rows = _commit_rows_py(records, first, gw)
    assert len(committed) == len(p_committed) == len(rows) == len(p_rows) == len(records)
    for c, pc, r in zip(committed, p_committed, records, strict=True):
        assert type(c) is Reading and c is not r
        for f in dataclasses.fields(Reading):
            assert _same(getattr(c, f.name), getattr(pc, f.name)), f.name
        assert fmt.reading_leaf(c) == fmt.reading_leaf(pc)
    for row, prow in zip(rows, p_rows, strict=True):
        assert type(row) is tuple and len(row) == len(prow) == 10
        for x, y in zip(row, prow, strict=True):
            assert _same(x, y), (row, prow)


# ---------------------------------------------------------------- built and in use

def test_the_compiled_module_is_built_and_in_use() -> None:
    """A broken build fails here rather than leaving the slow path running unnoticed."""
    assert _leafc.__file__ is not None and not _leafc.__file__.endswith(".py")
    if os.environ.get("MRV_PURE_PYTHON", "") in ("", "0"):
        assert fmt.COMPILED is True
        assert fmt.keccak256 is _leafc.keccak256 and fmt.leaf_of_body is _leafc.leaf_of_body
        assert fmt.commit_readings([_reading()], 1, "gw") is not None
    else:
        assert fmt.COMPILED is False


def test_mrv_pure_python_forces_the_pure_path_with_the_same_leaves() -> None:
    code = ("import ledger_client._format as f, ledger_client._outbox as o; from mrv_core import Reading;"
            "r = Reading(point_id='p', ts_ns=-5, value=float('nan'), unit='u', source='s');"
            "c, rows = o._commit_rows([r, r], 7, 'gw');"
            "print(f.COMPILED, f.commit_readings([r], 1, 'gw') is None, rows[1][9].hex(),"
            " f.merkle_root([rows[0][9], rows[1][9]]).hex())")
    out = on_both_paths(code)
    assert out["1"][:2] == ["False", "True"]
    assert out["0"][:2] == ["True", "False"]
    assert out["1"][2:] == out["0"][2:]


# ---------------------------------------------------------------- keccak256, leaf, vectors

@pytest.mark.parametrize("n", [0, 1, 31, 32, 33, 63, 64, 65, 135, 136, 137, 271, 272, 273, 544,
                               1000, 4096])
def test_keccak256_and_leaf_match_the_pure_path(n: int) -> None:
    data = random.Random(n).randbytes(n)
    assert _leafc.keccak256(data) == fmt._keccak256_py(data)
    assert _leafc.keccak256(bytearray(data)) == fmt._keccak256_py(data)
    assert _leafc.keccak256(memoryview(data)) == fmt._keccak256_py(data)
    assert _leafc.leaf_of_body(data) == fmt._leaf_of_body_py(data)


def test_keccak256_known_answers() -> None:
    assert _leafc.keccak256(b"").hex() == (
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470")
    assert _leafc.keccak256(b"abc").hex() == (
        "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45")


def test_keccak256_refuses_what_is_not_bytes() -> None:
    with pytest.raises(TypeError):
        _leafc.keccak256("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _leafc.leaf_of_body(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("vec", [v for v in VECTORS["records"] if v["record"]["kind"] == "reading"],
                         ids=lambda v: f"reading-{v['record']['seq']}")
def test_reading_vectors_through_commit_readings(vec: dict[str, Any]) -> None:
    j = vec["record"]
    r = Reading(point_id=j["point_id"], ts_ns=j["ts_ns"],
                value=math.nan if j["value"] is None else float(j["value"]), unit=j["unit"],
                quality=j["quality"], source=j["source"])
    out = _leafc.commit_readings([r], j["seq"], j["gateway_id"], Reading)
    assert out is not None
    (c,), (row,) = out
    assert "0x" + row[9].hex() == vec["leaf"]
    assert "0x" + _leafc.leaf_of_body(bytes.fromhex(vec["body"][2:])).hex() == vec["leaf"]
    assert c.seq == j["seq"] and c.gateway_id == j["gateway_id"]
    _check_same_commit([r], j["seq"], j["gateway_id"])


@pytest.mark.parametrize("tree", VECTORS["merkle"], ids=lambda t: f"{len(t['leaves'])}-leaves")
def test_merkle_vectors(tree: dict[str, Any]) -> None:
    leaves = [bytes.fromhex(x[2:]) for x in tree["leaves"]]
    assert "0x" + _leafc.merkle_root(leaves).hex() == tree["root"]


# ---------------------------------------------------------------- random readings

_CJK = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)
_TEXT = st.one_of(
    st.text(max_size=60),  # any code point but lone surrogates
    st.text(alphabet=_CJK, max_size=60),  # 3 bytes each: beyond 136 bytes from 46 on
    st.sampled_from(["", "a", "x" * 31, "x" * 32, "x" * 33, "y" * 137, "锅炉.燃气流量", "é" * 70]),
)
_FLOAT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
    st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, -5e-324, 2.2250738585072014e-308,
                     1.7976931348623157e308]),
    st.integers(0, 2**64 - 1).map(lambda b: struct.unpack(">d", b.to_bytes(8, "big"))[0]),  # NaN payloads
)
_READING = st.builds(
    Reading, point_id=_TEXT, ts_ns=st.one_of(st.integers(-(2**63), 2**63 - 1),
                                             st.sampled_from([-(2**63), -1, 0, 2**63 - 1])),
    value=_FLOAT, unit=_TEXT, source=_TEXT,
    quality=st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 2**32 - 1])),
    seq=st.integers(0, 5), gateway_id=st.sampled_from(["", "old"]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(_READING, max_size=12),
       first=st.one_of(st.integers(1, 2**63), st.sampled_from([1, 2**63 - 1, 2**64 - 12])),
       gw=st.one_of(st.text(min_size=1, max_size=40), st.sampled_from(["gw", "网关-1", "g" * 140])))
def test_random_readings_commit_identically(records: list[Reading], first: int, gw: str) -> None:
    _check_same_commit(records, first, gw)


def test_committed_readings_behave_as_readings() -> None:
    r = _reading(3, value=-0.0)
    out = _leafc.commit_readings([r], 9, "gw", Reading)
    assert out is not None
    c = out[0][0]
    assert c == dataclasses.replace(r, seq=9, gateway_id="gw")
    assert hash(c) == hash(dataclasses.replace(r, seq=9, gateway_id="gw"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.seq = 1  # type: ignore[misc]
    assert repr(c).startswith("Reading(point_id='p3'")
    assert r.seq == 0 and r.gateway_id == ""  # the input is untouched
    # plain values only, so the cyclic GC is spared them, row too (mrv_core/_gc.py)
    assert not gc.is_tracked(c) and not gc.is_tracked(out[1][0])
    assert gc.is_tracked(r)  # the input keeps its own


def test_commit_rows_takes_the_fast_path_for_plain_readings() -> None:
    records = [_reading(i) for i in range(5)]
    committed, rows = _commit_rows(records, 11, "gw")
    fast = _leafc.commit_readings(records, 11, "gw", Reading)
    assert fast is not None and rows == fast[1] and committed == fast[0]


# ---------------------------------------------------------------- outside the fast path

class _Str(str):
    pass


class _Float(float):
    pass


def _derived() -> DerivedRecord:
    return DerivedRecord(point_id="p", derivation="hour-mean", period_start_ns=0, period_end_ns=1,
                         value=1.0, unit="kW", quality=0, from_seq=1, to_seq=2)


_NOT_FAST: list[tuple[str, list[Any], int, Any]] = [
    ("derived record", [_reading(), _derived()], 1, "gw"),
    ("audit record", [AuditRecord(ts_ns=1, category="c", subject="s", payload="{}")], 1, "gw"),
    ("int value", [_reading(value=5)], 1, "gw"),
    ("bool value", [_reading(value=True)], 1, "gw"),
    ("float subclass value", [_reading(value=_Float(1.5))], 1, "gw"),
    ("str value", [_reading(value="1.5")], 1, "gw"),
    ("float ts", [_reading(ts_ns=1.0)], 1, "gw"),
    ("bool ts", [_reading(ts_ns=True)], 1, "gw"),
    ("ts beyond int64", [_reading(ts_ns=2**63)], 1, "gw"),
    ("ts below int64", [_reading(ts_ns=-(2**63) - 1)], 1, "gw"),
    ("negative quality", [_reading(quality=-1)], 1, "gw"),
    ("quality beyond uint32", [_reading(quality=2**32)], 1, "gw"),
    ("huge quality", [_reading(quality=2**80)], 1, "gw"),
    ("bool quality", [_reading(quality=False)], 1, "gw"),
    ("str subclass point id", [_reading(point_id=_Str("p"))], 1, "gw"),
    ("str subclass unit", [_reading(unit=_Str("kW"))], 1, "gw"),
    ("str subclass source", [_reading(source=_Str("s"))], 1, "gw"),
    ("lone surrogate point id", [_reading(), _reading(point_id="p\ud800")], 1, "gw"),
    ("lone surrogate unit", [_reading(unit="\udfff")], 1, "gw"),
    ("lone surrogate source", [_reading(source="s\ud83d")], 1, "gw"),
    ("bytes point id", [_reading(point_id=b"p")], 1, "gw"),
    ("None unit", [_reading(unit=None)], 1, "gw"),
    ("lone surrogate gateway id", [_reading()], 1, "g\ud800"),
    ("str subclass gateway id", [_reading()], 1, _Str("gw")),
    ("empty gateway id", [_reading()], 1, ""),
    ("gateway id not str", [_reading()], 1, b"gw"),
    ("seq 0", [_reading()], 0, "gw"),
    ("negative seq", [_reading()], -1, "gw"),
    ("seq beyond uint64", [_reading()], 2**64, "gw"),
    ("last seq beyond uint64", [_reading(), _reading()], 2**64 - 1, "gw"),
    ("bool seq", [_reading()], True, "gw"),
    ("float seq", [_reading()], 1.0, "gw"),
]


@pytest.mark.parametrize(("records", "first", "gw"), [x[1:] for x in _NOT_FAST],
                         ids=[x[0] for x in _NOT_FAST])
def test_outside_the_fast_path_is_left_to_python(records: list[Any], first: Any, gw: Any) -> None:
    assert _leafc.commit_readings(records, first, gw, Reading) is None
    assert fmt.commit_readings(records, first, gw) is None or not fmt.COMPILED


def test_a_reading_subclass_or_an_unset_slot_is_left_to_python() -> None:
    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class Sub(Reading):
        pass

    sub = Sub(point_id="p", ts_ns=1, value=1.0, unit="u", source="s")
    assert _leafc.commit_readings([sub], 1, "gw", Reading) is None
    empty = object.__new__(Reading)
    assert _leafc.commit_readings([_reading(), empty], 1, "gw", Reading) is None


def test_a_type_of_another_shape_is_never_the_fast_path() -> None:
    for t in (DerivedRecord, AuditRecord, int, "Reading"):
        assert _leafc.commit_readings([_reading()], 1, "gw", t) is None  # type: ignore[arg-type]
    assert _leafc.commit_readings([_reading()], 1, "gw", Reading) is not None  # relearnt


def test_an_empty_chunk_and_any_sequence() -> None:
    assert _leafc.commit_readings([], 1, "gw", Reading) == ([], [])
    records = [_reading(i) for i in range(3)]
    a = _leafc.commit_readings(tuple(records), 4, "gw", Reading)
    b = _leafc.commit_readings(iter(records), 4, "gw", Reading)
    assert a is not None and a == b
    with pytest.raises(TypeError):
        _leafc.commit_readings(5, 1, "gw", Reading)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _leafc.commit_readings(records, 1, "gw")  # type: ignore[call-arg]


def test_the_pure_path_still_raises_for_what_it_refuses() -> None:
    """What the compiled path leaves alone fails in `_commit_rows` as it always did (these are
    the errors `append_quarantining` turns into dead letters)."""
    with pytest.raises(UnicodeEncodeError):
        _commit_rows([_reading(point_id="p\ud800")], 1, "gw")
    with pytest.raises(ValueError, match="only a committed record"):
        _commit_rows([_reading()], 1, "")
    with pytest.raises(OverflowError):
        _commit_rows([_reading(quality=-1)], 1, "gw")


async def test_quarantine_with_the_compiled_path(tmp_path: Path) -> None:
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    try:
        recs = [_reading(0), _reading(1, point_id="bad\ud800"), _reading(2, value=math.nan),
                _reading(3, ts_ns=-7, value=-0.0), _reading(4, point_id="锅炉")]
        committed, _, dead = await ob.append_quarantining(recs, now_ns=5)
        assert [c.seq for c in committed] == [1, 2, 3, 4] and len(dead) == 1
        assert "UnicodeEncodeError" in dead[0].reason
        back = await ob.records(1, 4)
        _, p_rows = _commit_rows_py([recs[0], *recs[2:]], 1, "gw")
        assert await ob.leaves(1, 4) == [row[9] for row in p_rows]
        for a, b in zip(committed, back, strict=True):
            assert fmt.reading_leaf(a) == fmt.reading_leaf(b)  # type: ignore[arg-type]
    finally:
        await ob.close()


# ---------------------------------------------------------------- merkle_root

def _leaves(n: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    return [rnd.randbytes(32) for _ in range(n)]


@pytest.mark.parametrize("n", range(71))
def test_merkle_root_matches_the_pure_path(n: int) -> None:
    leaves = _leaves(n, n)
    if n >= 4:
        leaves[1] = leaves[0]  # an equal pair
    assert _leafc.merkle_root(leaves) == fmt._merkle_root_py(leaves)
    assert _leafc.merkle_root(tuple(leaves)) == fmt._merkle_root_py(leaves)
    assert fmt.merkle_root(leaves) == fmt._merkle_root_py(leaves)


def test_merkle_root_of_a_large_batch() -> None:
    leaves = _leaves(10_007, 1)
    assert _leafc.merkle_root(leaves) == fmt._merkle_root_py(leaves)


def test_merkle_root_of_none_and_one() -> None:
    assert _leafc.merkle_root([]) == bytes(32)
    leaf = _leaves(1, 2)[0]
    assert _leafc.merkle_root([leaf]) is leaf


@pytest.mark.parametrize("leaves", [
    [b"\x01" * 31, b"\x02" * 32],
    [b"\x01" * 32, b"\x02" * 33],
    [b"short"],
    [bytearray(32), bytes(32)],
    [bytes(32), "x" * 32],
])
def test_merkle_root_of_odd_leaves_raises_and_the_wrapper_keeps_the_pure_answer(
        leaves: list[Any]) -> None:
    with pytest.raises((TypeError, ValueError)):
        _leafc.merkle_root(leaves)
    try:
        expected: Any = fmt._merkle_root_py(leaves)
    except TypeError as e:
        expected = type(e)
    try:
        got: Any = fmt.merkle_root(leaves)
    except TypeError as e:
        got = type(e)
    assert got == expected


def test_merkle_root_takes_a_list_or_tuple_only() -> None:
    leaves = _leaves(5, 3)
    with pytest.raises(TypeError):
        _leafc.merkle_root(iter(leaves))  # type: ignore[arg-type]
    assert fmt.merkle_root(iter(leaves)) == fmt._merkle_root_py(leaves)  # type: ignore[arg-type]


# ---------------------------------------------------------------- references and leaks

def test_no_reference_leaks_in_100k_calls() -> None:
    records = [_reading(i, value=math.nan if i % 2 else 1.0, point_id="锅炉" * i) for i in range(4)]
    big = [_reading(0, point_id="x" * 2000)]  # a body beyond the stack buffer
    leaves = _leaves(9, 4)
    bad = [_reading(), _reading(point_id="p\ud800")]
    pid = records[1].point_id
    rows = [(i, 1, pid, 5, 1.0, "kW", 0, "s", None, b"l" * 32) for i in range(7)]
    bad_rows = [*rows, (8, 2, pid, 5, 1.0, "kW", 0, "s", None, b"l" * 32)]

    def run(n: int) -> None:
        for i in range(n):
            _leafc.reading_insert_params(rows, 3)
            _leafc.reading_insert_params(bad_rows, 3)
            _leafc.commit_readings(records, 1 + i, "gw", Reading)
            _leafc.commit_readings(big, 1, "gw", Reading)
            _leafc.commit_readings(bad, 1, "gw", Reading)
            _leafc.merkle_root(leaves)
            _leafc.keccak256(b"abc")
            try:
                _leafc.merkle_root([b"x"])
            except ValueError:
                pass

    run(1000)
    gc.collect()
    refs, blocks = sys.getrefcount(pid), sys.getallocatedblocks()
    run(100_000)
    gc.collect()
    assert sys.getrefcount(pid) == refs
    assert sys.getallocatedblocks() - blocks < 200  # a leak of one object a call: >= 100,000


# ---------------------------------------------------------------- large chunks: hashed without the GIL

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(_READING, min_size=64, max_size=300),
       first=st.integers(1, 2**63), gw=st.sampled_from(["gw", "网关-1", "g" * 140]))
def test_large_chunks_hashed_without_the_gil_commit_identically(records: list[Reading], first: int,
                                                                gw: str) -> None:
    _check_same_commit(records, first, gw)


def test_a_large_chunk_outside_the_fast_path_releases_what_it_held() -> None:
    """The last record refuses the fast path after 299 records' fields were held."""
    records = [_reading(i, point_id=f"p{i % 7}") for i in range(299)] + [_reading(point_id="p\ud800")]
    pid = records[0].point_id
    for _ in range(100):
        assert _leafc.commit_readings(records, 1, "gw", Reading) is None
    gc.collect()
    refs = sys.getrefcount(pid)
    for _ in range(1000):
        assert _leafc.commit_readings(records, 1, "gw", Reading) is None
    gc.collect()
    assert sys.getrefcount(pid) == refs


async def test_a_commit_of_many_readings_built_off_the_loop_has_the_same_leaves(tmp_path: Path) -> None:
    """At least COMMIT_IN_THREAD_MIN readings: built off the event loop, with the same leaves and
    gapless seqs as the pure path gives."""
    from ledger_client._outbox import COMMIT_IN_THREAD_MIN

    n = COMMIT_IN_THREAD_MIN + 7
    records = [_reading(i, value=math.nan if i % 5 == 0 else float(i)) for i in range(n)]
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    try:
        await ob.append(records[:3])  # a small one on the loop first
        committed = await ob.append(records[3:])
        assert [c.seq for c in committed] == list(range(4, n + 1))
        want = _commit_rows_py(records, 1, "gw")[1]
        assert await ob.leaves(1, n) == [row[9] for row in want]
        stored = await ob.records(1, n)
        assert [(r.seq, r.point_id) for r in stored] == [(row[0], row[2]) for row in want]
    finally:
        await ob.close()


@pytest.mark.parametrize("off_loop", [True, False, None])
async def test_the_caller_may_send_a_small_commit_off_the_loop_with_the_same_result(
        tmp_path: Path, off_loop: bool | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """``off_loop`` (the writer's last, partial transaction of a large group): built in a
    worker thread whatever its size; False or None (small): on the loop. Same rows either way."""
    import asyncio

    built_in_thread: list[str] = []
    to_thread = asyncio.to_thread

    async def spy(fn: Any, /, *a: Any, **k: Any) -> Any:
        built_in_thread.append(fn.__name__)
        return await to_thread(fn, *a, **k)

    monkeypatch.setattr(asyncio, "to_thread", spy)  # the outbox calls asyncio.to_thread
    records = [_reading(i, value=math.nan if i % 4 == 0 else float(i)) for i in range(9)]
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    try:
        committed, _, dead = await ob.append_quarantining(records, now_ns=1, off_loop=off_loop)
        assert dead == [] and [c.seq for c in committed] == list(range(1, 10))
        from ledger_client import COMPILED  # the pure path hashes with the GIL: on the loop

        assert built_in_thread == (["_commit_rows"] if off_loop and COMPILED else [])
        want = _commit_rows_py(records, 1, "gw")[1]
        assert await ob.leaves(1, 9) == [row[9] for row in want]
    finally:
        await ob.close()


def _reading_row(i: int, width: int) -> tuple[object, ...]:
    row: tuple[object, ...] = (i + 1, 1, f"p{i % 5}", 1_700_000_000_000_000_000 + i,
                               None if i % 7 == 0 else i / 3, "kW", i % 4, "modbus_tcp:m1", None,
                               bytes([i % 256]) * 32)
    return (*row, bytes([7]) * 64) if width == 11 else row


@pytest.mark.parametrize("width", [10, 11])
@pytest.mark.parametrize("n", [0, 1, 2, 49, 50, 51, 149])
@pytest.mark.parametrize("k", [1, 3, 50])
def test_reading_insert_params_match_the_reference(width: int, n: int, k: int) -> None:
    from ledger_client._outbox import _reading_insert_params_py

    rows = [_reading_row(i, width) for i in range(n)]
    got = _leafc.reading_insert_params(rows, k)
    want = _reading_insert_params_py(rows, k)
    assert got == want
    assert [[type(v) for v in g] for g in got] == [[type(v) for v in g] for g in want]
    assert [len(g) for g in got] == [(min(k, n - i)) * (width - 2) for i in range(0, n, k)]
    assert all(type(g) is list for g in got)


@pytest.mark.parametrize("width", [10, 11])
def test_reading_insert_params_give_the_blobs_as_bytearray(width: int) -> None:
    """sqlite3 binds a bytearray as it is; bytes it first looks up in its adapter registry
    (~0.5 us a row). Every other value is the row's own object."""
    from ledger_client._outbox import _reading_insert_params_py

    rows = [_reading_row(i, width) for i in range(7)]
    for got in (_leafc.reading_insert_params(rows, 3), _reading_insert_params_py(rows, 3)):
        flat = [v for g in got for v in g]
        w = width - 2
        for i, r in enumerate(rows):
            mine = flat[i * w:(i + 1) * w]
            assert [type(v) for v in mine[7:]] == [bytearray] * (width - 9)
            assert [bytes(v) for v in mine[7:]] == list(r[9:])
            assert all(a is b for a, b in zip(mine[:7], (r[0], *r[2:8]), strict=True))


@pytest.mark.parametrize("bad", [
    lambda r: (r[0], 2, *r[2:]),  # another kind
    lambda r: (r[0], True, *r[2:]),  # a bool is not the int 1
    lambda r: (r[0], 1.0, *r[2:]),  # nor is a float
    lambda r: (*r[:8], "{}", *r[9:]),  # extra set
    lambda r: list(r),  # not a tuple
    lambda r: r[:9],  # narrower
    lambda r: (*r, b"s" * 64),  # wider than the others
    lambda r: (r[0], 2 ** 70, *r[2:]),  # an int beyond a C long
])
@pytest.mark.parametrize("where", [0, 5])
def test_reading_insert_params_leave_other_rows_to_python(bad: Any, where: int) -> None:
    from ledger_client._outbox import _reading_insert_params_py

    rows: list[Any] = [_reading_row(i, 10) for i in range(6)]
    rows[where] = bad(rows[where])
    assert _leafc.reading_insert_params(rows, 4) is None
    assert _reading_insert_params_py(rows, 4) is None


def test_reading_insert_params_refuse_bad_arguments() -> None:
    with pytest.raises(TypeError):
        _leafc.reading_insert_params((_reading_row(0, 10),), 2)  # a tuple of rows
    with pytest.raises(ValueError):
        _leafc.reading_insert_params([_reading_row(0, 10)], 0)
    with pytest.raises(TypeError):
        _leafc.reading_insert_params([_reading_row(0, 10)])  # type: ignore[call-arg]


# ---------------------------------------------------------------- the Keccak kernels

KERNELS = ["scalar", "vector", "vector8", "avx2", "avx512", "avx512x8"]


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.fixture(params=KERNELS)
def kernel(request: pytest.FixtureRequest) -> Any:
    """Each kernel in turn (the one chosen at import restored after)."""
    before = _leafc.keccak_kernel()
    if not _leafc.use_keccak_kernel(request.param):
        flags = _cpu_flags()
        # what this CPU has must be built and used: only a kernel it lacks may be missing
        assert request.param not in ("scalar", "vector", "vector8"), \
            "the portable kernels are always built"
        assert not (request.param == "avx2" and "avx2" in flags)
        assert not (request.param in ("avx512", "avx512x8")
                    and {"avx2", "avx512f", "avx512vl"} <= flags)
        pytest.skip(f"this CPU has no {request.param}")
    try:
        yield request.param
    finally:
        assert _leafc.use_keccak_kernel(before)


def test_import_chooses_the_fastest_kernel_this_cpu_runs() -> None:
    code = ("from ledger_client import _leafc as L; first = L.keccak_kernel();"
            "best = next(k for k in ('avx512x8', 'avx2', 'scalar') if L.use_keccak_kernel(k));"
            "print(first, best)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       check=True, cwd=ROOT)
    first, best = p.stdout.split()
    assert first == best
    assert _leafc.use_keccak_kernel("no-such-kernel") is False


def _varied_readings(n: int, seed: int) -> list[Reading]:
    """Readings whose bodies span 3 to 40 Keccak blocks (a few past the grouped ones), so that
    groups of 8 and of 4, their remainders and the one-at-a-time path all occur."""
    rnd = random.Random(seed)
    return [_reading(i, point_id="p" * rnd.choice([1, 2, 100, 135, 136, 137, 700, 5000]),
                     unit="u" * rnd.randint(0, 40), source="s" * rnd.randint(0, 300),
                     ts_ns=rnd.randint(-2**63, 2**63 - 1), value=rnd.random() * 1e6,
                     quality=rnd.randint(0, 2**32 - 1)) for i in range(n)]


@pytest.mark.parametrize("n", [1, 3, 4, 5, 7, 8, 9, 63, 64, 65, 1001])
def test_each_kernel_commits_the_same_leaves_as_the_pure_path(kernel: str, n: int) -> None:
    records = _varied_readings(n, n)
    out = _leafc.commit_readings(records, 41, "gw-k", Reading)
    assert out is not None
    committed, rows = out
    pure = [fmt._leaf_of_body_py(fmt.encode_reading(c)) for c in committed]
    leaves = [cast(bytes, row[9]) for row in rows]
    assert leaves == pure
    assert _leafc.merkle_root(leaves) == fmt._merkle_root_py(pure)


def test_each_kernel_on_the_reading_vectors(kernel: str) -> None:
    vecs = [v for v in VECTORS["records"] if v["record"]["kind"] == "reading"]
    for v in vecs:
        j = v["record"]
        r = Reading(point_id=j["point_id"], ts_ns=j["ts_ns"],
                    value=math.nan if j["value"] is None else float(j["value"]), unit=j["unit"],
                    quality=j["quality"], source=j["source"])
        # 13 of one length: a group of 8 (8-state kernels), one of 4, one alone
        out = _leafc.commit_readings([r] * 13, j["seq"], j["gateway_id"], Reading)
        assert out is not None
        assert "0x" + cast(bytes, out[1][0][9]).hex() == v["leaf"]
        assert [row[9] for row in out[1]] == [
            fmt._leaf_of_body_py(fmt.encode_reading(c)) for c in out[0]]
    for tree in VECTORS["merkle"]:
        leaves = [bytes.fromhex(x[2:]) for x in tree["leaves"]]
        assert "0x" + _leafc.merkle_root(leaves).hex() == tree["root"]


@pytest.mark.parametrize("n", [*range(2, 21), 1000, 1023])
def test_each_kernel_builds_the_same_tree(kernel: str, n: int) -> None:
    leaves = _leaves(n, 100 + n)
    if n >= 6:
        leaves[5] = leaves[4]  # an equal pair inside a group of 4
    assert _leafc.merkle_root(leaves) == fmt._merkle_root_py(leaves)


# ---------------------------------------------------------------- a batch header's fields


def _keys(n: int, seed: int, first: int = 1) -> list[tuple[int, int, bytes]]:
    rnd = random.Random(seed)
    return [(first + i, rnd.randint(-2**63, 2**63 - 1), rnd.randbytes(32)) for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 16, 17, 1000, 10_001])
def test_header_fields_match_the_pure_path(n: int) -> None:
    keys = _keys(n, n, first=2**62 + n)
    got = _leafc.header_fields(keys)
    assert got == fmt._header_fields_py(keys)
    assert got is not None and got[0] == 2**62 + n and got[1] == 2**62 + 2 * n - 1


@given(st.lists(st.tuples(st.integers(-2**63, 2**63 - 1), st.binary(min_size=32, max_size=32)),
                min_size=1, max_size=40),
       st.integers(0, 2**63 - 41))
def test_header_fields_of_any_times_and_leaves(rows: list[tuple[int, bytes]], first: int) -> None:
    keys = [(first + i, ts, leaf) for i, (ts, leaf) in enumerate(rows)]
    assert _leafc.header_fields(keys) == fmt._header_fields_py(keys)


@pytest.mark.parametrize("keys", [
    [],                                                      # empty: the pure path raises
    [(1, 5, b"\x01" * 32), (3, 5, b"\x02" * 32)],            # a gap
    [(2, 5, b"\x01" * 32), (1, 5, b"\x02" * 32)],            # out of order
    [(1, 5, b"\x01" * 32), (1, 5, b"\x02" * 32)],            # a seq twice
    [(True, 5, b"\x01" * 32)],                               # a bool is not a seq
    [(1, 5, bytearray(32))],                                 # not bytes
    [(1, 5, b"\x01" * 31)],                                  # not 32 bytes
    [(1, 2**63, b"\x01" * 32)],                              # past 64 bits
    [(2**63 - 1, 5, b"\x01" * 32), (2**63, 5, b"\x02" * 32)],  # the seq past 64 bits
    [[1, 5, b"\x01" * 32]],                                  # not a tuple
    [(1, 5)],                                                # too short
    [(1, 5.0, b"\x01" * 32)],                                # a float time
], ids=lambda k: repr(k)[:40])
def test_header_fields_leave_anything_else_to_the_pure_path(keys: list[Any]) -> None:
    assert _leafc.header_fields(keys) is None
    assert _leafc.header_fields(tuple(keys)) is None  # not a list


def test_build_header_is_the_same_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = _keys(1001, 7, first=50)
    compiled = fmt.build_header(gateway_id="gw", seq=3, prev_hash=b"\x09" * 32, records=keys)
    monkeypatch.setattr(fmt, "_leafc", None)
    pure = fmt.build_header(gateway_id="gw", seq=3, prev_hash=b"\x09" * 32, records=keys)
    assert compiled == pure
    with pytest.raises(ValueError, match="contiguous"):
        fmt.build_header(gateway_id="gw", seq=3, prev_hash=b"\x09" * 32,
                         records=[keys[0], keys[2]])
