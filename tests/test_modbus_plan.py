"""Tests for drivers.modbus._plan: read-request coalescing."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus._plan import TABLES, PointRef, ReadRequest, Table, plan_reads

HYP = settings(database=None, deadline=None, max_examples=300)


def pts(table: Table, *spans: tuple[int, int]) -> list[PointRef]:
    """Points with keys 0.. in the given order, each (address, count)."""
    return [PointRef(i, table, a, c) for i, (a, c) in enumerate(spans)]


def shape(reqs: list[ReadRequest]) -> list[tuple[str, int, int]]:
    return [(r.table, r.address, r.count) for r in reqs]


# ------------------------------------------------------------------- coalescing


def test_empty() -> None:
    assert plan_reads([]) == []


def test_single_point() -> None:
    assert plan_reads(pts("holding", (10, 2))) == [ReadRequest("holding", 10, 2, ((0, 0),))]


def test_adjacent_points_coalesce() -> None:
    reqs = plan_reads(pts("holding", (0, 2), (2, 2), (4, 1), (5, 4)))
    assert reqs == [ReadRequest("holding", 0, 9, ((0, 0), (1, 2), (2, 4), (3, 5)))]


def test_unsorted_input_is_sorted() -> None:
    reqs = plan_reads(pts("input", (5, 4), (0, 2), (4, 1), (2, 2)))
    assert reqs == [ReadRequest("input", 0, 9, ((1, 0), (3, 2), (2, 4), (0, 5)))]


def test_generator_input() -> None:
    reqs = plan_reads(p for p in pts("holding", (0, 1), (1, 1)))
    assert shape(reqs) == [("holding", 0, 2)]


def test_split_at_125() -> None:
    # 63 uint32 = 126 registers: first 62 points (124 regs) + the next would make 126.
    points = [PointRef(i, "holding", 2 * i, 2) for i in range(63)]
    reqs = plan_reads(points)
    assert shape(reqs) == [("holding", 0, 124), ("holding", 124, 2)]
    assert reqs[1].members == ((62, 0),)


def test_exactly_125_fits() -> None:
    points = [PointRef(i, "holding", i, 1) for i in range(125)]
    assert shape(plan_reads(points)) == [("holding", 0, 125)]
    points.append(PointRef(125, "holding", 125, 1))
    assert shape(plan_reads(points)) == [("holding", 0, 125), ("holding", 125, 1)]


def test_custom_max_registers() -> None:
    points = [PointRef(i, "holding", i, 1) for i in range(10)]
    assert shape(plan_reads(points, max_registers=4)) == [
        ("holding", 0, 4), ("holding", 4, 4), ("holding", 8, 2),
    ]


def test_gap_without_max_gap_splits() -> None:
    reqs = plan_reads(pts("holding", (0, 2), (3, 2)))
    assert shape(reqs) == [("holding", 0, 2), ("holding", 3, 2)]


def test_gap_within_max_gap_merges() -> None:
    reqs = plan_reads(pts("holding", (0, 2), (5, 2)), max_gap=3)
    assert reqs == [ReadRequest("holding", 0, 7, ((0, 0), (1, 5)))]


def test_gap_larger_than_max_gap_splits() -> None:
    reqs = plan_reads(pts("holding", (0, 2), (6, 2)), max_gap=3)
    assert shape(reqs) == [("holding", 0, 2), ("holding", 6, 2)]


def test_gap_merge_respects_limit() -> None:
    reqs = plan_reads(pts("holding", (0, 100), (110, 20)), max_gap=10)
    assert shape(reqs) == [("holding", 0, 100), ("holding", 110, 20)]
    reqs = plan_reads(pts("holding", (0, 100), (110, 15)), max_gap=10)
    assert shape(reqs) == [("holding", 0, 125)]


def test_overlap_shares_request() -> None:
    # a bitfield and a uint16 on register 7, and a uint32 starting there
    reqs = plan_reads(pts("holding", (7, 1), (7, 1), (7, 2), (8, 1)))
    assert len(reqs) == 1
    assert (reqs[0].address, reqs[0].count) == (7, 2)
    assert dict(reqs[0].members) == {0: 0, 1: 0, 2: 0, 3: 1}


def test_point_contained_in_previous() -> None:
    reqs = plan_reads(pts("holding", (0, 4), (1, 1), (4, 1)))
    assert reqs == [ReadRequest("holding", 0, 5, ((0, 0), (1, 1), (2, 4)))]


def test_overlap_that_does_not_fit_splits() -> None:
    reqs = plan_reads(pts("holding", (0, 125), (124, 2)))
    assert shape(reqs) == [("holding", 0, 125), ("holding", 124, 2)]


def test_tables_are_separate_and_ordered() -> None:
    points = [
        PointRef(0, "discrete", 0, 1),
        PointRef(1, "coil", 0, 1),
        PointRef(2, "input", 0, 1),
        PointRef(3, "holding", 1, 1),
        PointRef(4, "holding", 0, 1),
        PointRef(5, "input", 1, 1),
    ]
    reqs = plan_reads(points)
    assert shape(reqs) == [
        ("holding", 0, 2), ("input", 0, 2), ("coil", 0, 1), ("discrete", 0, 1),
    ]
    assert reqs[0].members == ((4, 0), (3, 1))


def test_bit_tables_use_max_bits() -> None:
    coils = [PointRef(i, "coil", i, 1) for i in range(2001)]
    assert shape(plan_reads(coils)) == [("coil", 0, 2000), ("coil", 2000, 1)]
    regs = [PointRef(i, "holding", i, 1) for i in range(200)]
    assert shape(plan_reads(regs + [PointRef(1000 + i, "discrete", i, 1) for i in range(200)])) == [
        ("holding", 0, 125), ("holding", 125, 75), ("discrete", 0, 200),
    ]
    assert shape(plan_reads(pts("coil", (0, 1), (1, 1), (2, 1)), max_bits=2)) == [
        ("coil", 0, 2), ("coil", 2, 1),
    ]


def test_bit_table_gap() -> None:
    assert shape(plan_reads(pts("discrete", (0, 1), (10, 1)))) == [
        ("discrete", 0, 1), ("discrete", 10, 1),
    ]
    assert shape(plan_reads(pts("discrete", (0, 1), (10, 1)), max_gap=9)) == [
        ("discrete", 0, 11),
    ]


def test_top_of_address_space() -> None:
    reqs = plan_reads(pts("holding", (65534, 2), (65533, 1)))
    assert reqs == [ReadRequest("holding", 65533, 3, ((1, 0), (0, 1)))]


def test_deterministic() -> None:
    points = pts("holding", (9, 1), (3, 2), (3, 2), (0, 1), (1, 4))
    first = plan_reads(points)
    assert plan_reads(reversed(points)) == first
    assert plan_reads(sorted(points, key=lambda p: -p.key)) == first


# ------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("point", "match"),
    [
        (PointRef(0, "holding", -1, 1), "outside"),
        (PointRef(0, "holding", 65536, 1), "outside"),
        (PointRef(0, "holding", 65535, 2), "runs past"),
        (PointRef(0, "holding", 0, 0), "count must be >= 1"),
        (PointRef(0, "input", 0, -3), "count must be >= 1"),
        (PointRef(0, "coil", 0, 2), "exactly 1 bit"),
        (PointRef(0, "discrete", 0, 16), "exactly 1 bit"),
        (PointRef(0, "register", 0, 1), "unknown table"),  # type: ignore[arg-type]
        (PointRef(0, "holding", 1.0, 1), "address must be an int"),  # type: ignore[arg-type]
        (PointRef(0, "holding", 0, 2.0), "count must be an int"),  # type: ignore[arg-type]
        (PointRef(0, "holding", 0, 126), "exceeds the per-request limit of 125"),
    ],
)
def test_invalid_point(point: PointRef, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan_reads([PointRef(99, "holding", 0, 1), point])


def test_top_address_single_register_is_valid() -> None:
    assert shape(plan_reads([PointRef(0, "holding", 65535, 1)])) == [("holding", 65535, 1)]


def test_point_wider_than_custom_limit() -> None:
    with pytest.raises(ValueError, match="limit of 4"):
        plan_reads(pts("holding", (0, 5)), max_registers=4)
    assert shape(plan_reads(pts("holding", (0, 4)), max_registers=4)) == [("holding", 0, 4)]


def test_duplicate_key() -> None:
    with pytest.raises(ValueError, match="duplicate point key 3"):
        plan_reads([PointRef(3, "holding", 0, 1), PointRef(3, "input", 0, 1)])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_registers": 0},
        {"max_bits": 0},
        {"max_gap": -1},
        {"max_registers": 1.5},
        {"max_gap": True},
    ],
)
def test_bad_limits(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be an int"):
        plan_reads(pts("holding", (0, 1)), **kwargs)


# -------------------------------------------------------------------- property


@st.composite
def point_sets(draw: st.DrawFn) -> tuple[list[PointRef], int, int, int]:
    max_registers = draw(st.integers(4, 125))
    max_bits = draw(st.integers(1, 2000))
    max_gap = draw(st.integers(0, 20))
    n = draw(st.integers(0, 60))
    points: list[PointRef] = []
    for key in range(n):
        table = draw(st.sampled_from(TABLES))
        if table in ("coil", "discrete"):
            count = 1
        else:
            count = draw(st.sampled_from([1, 1, 2, 2, 4, min(max_registers, 10)]))
        # cluster addresses so coalescing and overlap actually happen
        base = draw(st.sampled_from([0, 100, 65535 - 300]))
        address = min(base + draw(st.integers(0, 300)), 65536 - count)
        points.append(PointRef(key, table, address, count))
    return points, max_registers, max_bits, max_gap


@HYP
@given(point_sets())
def test_every_point_in_exactly_one_request(args: tuple[list[PointRef], int, int, int]) -> None:
    points, max_registers, max_bits, max_gap = args
    reqs = plan_reads(points, max_registers=max_registers, max_bits=max_bits, max_gap=max_gap)
    by_key = {p.key: p for p in points}
    seen: list[int] = []
    for r in reqs:
        limit = max_bits if r.table in ("coil", "discrete") else max_registers
        assert 1 <= r.count <= limit
        assert r.address >= 0 and r.address + r.count - 1 <= 65535
        assert r.members
        for key, offset in r.members:
            p = by_key[key]
            seen.append(key)
            assert p.table == r.table
            assert offset == p.address - r.address
            assert offset >= 0 and offset + p.count <= r.count  # all its registers inside
        # the request is tight: it starts at a point and ends at a point's end
        assert min(off for _, off in r.members) == 0
        assert max(off + by_key[k].count for k, off in r.members) == r.count
    assert sorted(seen) == sorted(by_key)  # each point exactly once
    # deterministic order: by table rank then address
    order = [(TABLES.index(r.table), r.address) for r in reqs]
    assert order == sorted(order)
    # coalescing is not lazy: the first point of a request could not have joined the
    # previous request of the same table (gap too wide or span over the limit)
    for a, b in itertools.pairwise(reqs):
        if a.table == b.table:
            limit = max_bits if a.table in ("coil", "discrete") else max_registers
            first = by_key[b.members[0][0]]
            a_end = a.address + a.count
            assert (
                first.address - a_end > max_gap
                or max(a_end, first.address + first.count) - a.address > limit
            )
