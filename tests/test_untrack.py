"""mrv_core.untrack_atomic: frozen records of plain values are taken out of the cyclic GC's
work (mrv_core/_recordc.c), and nothing that could be part of a cycle is."""

from __future__ import annotations

import dataclasses
import gc
import os
import weakref
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger_client import Outbox
from mrv_core import UNTRACK_COMPILED, Reading, new_reading, untrack_atomic
from mrv_core import _gc as gcmod
from tests.support import on_both_paths

PURE = os.environ.get("MRV_PURE_PYTHON", "") not in ("", "0")


@dataclasses.dataclass(frozen=True, slots=True)
class Slotted:
    a: Any
    b: Any = None


@dataclasses.dataclass(frozen=True)
class WithDict:
    a: Any


class Weak:
    __slots__ = ("__weakref__", "x")

    def __init__(self, x: Any) -> None:
        self.x = x


def test_the_compiled_helper_is_built_and_in_use() -> None:
    """A broken build fails here rather than leaving the GC's extra work unnoticed."""
    from mrv_core import _recordc

    assert _recordc.__file__ is not None and not _recordc.__file__.endswith(".py")
    assert UNTRACK_COMPILED is (not PURE)
    assert (gcmod.untrack_atomic is _recordc.untrack_atomic) is (not PURE)


def test_mrv_pure_python_turns_it_off() -> None:
    code = ("import gc; from mrv_core import new_reading, untrack_atomic, UNTRACK_COMPILED;"
            "r = new_reading('p', 1, 2.0, 'u', 's');"
            "print(UNTRACK_COMPILED, untrack_atomic([r]), gc.is_tracked(r))")
    out = on_both_paths(code)
    assert out["1"] == ["False", "0", "True"]
    assert out["0"] == ["True", "1", "False"]


def test_a_reading_of_plain_values_is_untracked_and_unchanged() -> None:
    rs = [new_reading("p", 1, 2.5, "kWh", "m1"),
          Reading(point_id="q", ts_ns=-5, value=float("nan"), unit="", source="s", quality=3,
                  seq=7, gateway_id="gw")]
    before = [dataclasses.astuple(r) for r in rs]
    assert all(gc.is_tracked(r) for r in rs)
    assert untrack_atomic(rs) == (0 if PURE else 2)
    assert [gc.is_tracked(r) for r in rs] == [PURE, PURE]
    assert [dataclasses.astuple(r) for r in rs] == before
    assert rs[1].seq == 7 and rs[1].quality == 3
    assert untrack_atomic(rs) == 0  # already untracked: counted once


@pytest.mark.parametrize("obj", [
    Slotted([1]),                # a slot holding a list
    Slotted(1, {"k": 1}),        # ... a dict
    Slotted(Slotted(1)),         # ... another record (a container of its own)
    (1, [2]),                    # a tuple holding a list
    (1, (2, [3])),               # ... a tuple holding one
    WithDict(1),                 # an instance with a __dict__: may gain anything later
    [1, 2],                      # lists, dicts, sets are mutable: never
    {"a": []},
    {1, 2},
], ids=["slot-list", "slot-dict", "slot-record", "tuple-list", "tuple-tuple-list", "dict-class",
        "list", "dict", "set"])
def test_what_could_be_part_of_a_cycle_stays_tracked(obj: Any) -> None:
    assert gc.is_tracked(obj)
    assert untrack_atomic([obj]) == 0
    assert gc.is_tracked(obj)


def test_a_cycle_through_a_record_is_still_collected() -> None:
    box: list[Any] = []
    w = Weak(box)
    box.append(w)  # w -> box -> w
    ref = weakref.ref(w)
    assert untrack_atomic([w, box]) == 0
    del w, box
    gc.collect()
    assert ref() is None


def test_plain_tuples_and_a_mixed_list() -> None:
    t = (1, "a", b"b", 2.0, None, True, 10**30)
    t = tuple(list(t))  # built at run time: a constant would start untracked
    r = new_reading("p", 1, 2.5, "kWh", "m1")
    keep = Slotted([1])
    assert gc.is_tracked(t) and gc.is_tracked(r)
    assert untrack_atomic([t, keep, 5, "s", None, r]) == (0 if PURE else 2)
    assert [gc.is_tracked(t), gc.is_tracked(r), gc.is_tracked(keep)] == [PURE, PURE, True]


@pytest.mark.parametrize("bad", [(1, 2), "abc", None, iter([])])
def test_anything_but_a_list_is_refused(bad: Any) -> None:
    with pytest.raises(TypeError, match="a list is required"):
        untrack_atomic(bad)
    with pytest.raises(TypeError, match="a list is required"):
        gcmod._untrack_nothing(bad)


_plain = st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=5),
                   st.binary(max_size=5), st.none(), st.booleans())
_any: st.SearchStrategy[Any] = st.recursive(
    _plain, lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                                    st.builds(Slotted, inner, inner),
                                    st.dictionaries(st.text(max_size=3), inner, max_size=2)),
    max_leaves=6)


def _plain_only(o: Any) -> bool:
    return all(type(x) in (int, float, str, bytes, type(None), bool) for x in
               ((o.a, o.b) if isinstance(o, Slotted) else o))


@settings(max_examples=200, deadline=None)
@given(st.lists(_any, max_size=8))
def test_only_records_of_plain_values_are_untracked(objs: list[Any]) -> None:
    fresh = [tuple(list(o)) if type(o) is tuple else o for o in objs]  # not constants
    tracked = [gc.is_tracked(o) for o in fresh]
    n = untrack_atomic(fresh)
    expect = [t and not PURE and type(o) in (tuple, Slotted) and _plain_only(o)
              for o, t in zip(fresh, tracked, strict=True)]
    # each object once: the same object twice in the list is untracked at its first place
    assert n == len({id(o) for o, e in zip(fresh, expect, strict=True) if e})
    for o, e, t in zip(fresh, expect, tracked, strict=True):
        assert gc.is_tracked(o) is (t and not e)


async def test_committed_readings_rows_and_keys_leave_the_gc_alone(tmp_path: Any) -> None:
    """The outbox's commit: what it keeps (committed readings, the batching keys) is
    untracked on the compiled path; the records committed are the same either way."""
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    try:
        rs = [new_reading(f"p{i}", 1_000 + i, float(i), "kWh", "m1") for i in range(100)]
        committed = await ob.append(rs)
        assert [c.seq for c in committed] == list(range(1, 101))
        assert [c.point_id for c in committed] == [r.point_id for r in rs]
        keys = list(ob._keys or [])
        assert len(keys) == 100
        if PURE:
            assert all(gc.is_tracked(c) for c in committed)
        else:
            assert not any(gc.is_tracked(c) for c in committed)
            assert not any(gc.is_tracked(k) for k in keys)
    finally:
        await ob.close()

