"""A whole read decoded by one struct (`compile_block`) gives exactly what decoding member by
member (`compile_decoder`) gives, and reads that do not fit one struct are left to it."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus._decode import (
    DATA_TYPES,
    compile_block,
    compile_decoder,
    register_count,
    sentinel_of,
)

NUMERIC = [t for t in DATA_TYPES if t not in ("bool", "bitfield")]


@st.composite
def reads(draw: st.DrawFn) -> tuple[int, list[tuple[int, str, str]], list[int]]:
    """A read of big-endian numeric members at increasing offsets, gaps between them."""
    members: list[tuple[int, str, str]] = []
    pos = 0
    for _ in range(draw(st.integers(1, 12))):
        pos += draw(st.integers(0, 3))
        t = draw(st.sampled_from(NUMERIC))
        order = "ABCD" if register_count(t) > 1 else draw(st.sampled_from(["ABCD", "CDAB"]))
        members.append((pos, t, order))
        pos += register_count(t)
    count = pos + draw(st.integers(0, 3))
    regs = draw(st.lists(st.one_of(st.integers(0, 0xFFFF), st.sampled_from([0, 0x7FFF, 0x8000,
                                                                          0xFFFF, 0x7FC0, 0x7F80])),
                         min_size=count, max_size=count))
    return count, members, regs


@settings(max_examples=400, deadline=None)
@given(reads())
def test_one_struct_equals_member_by_member(read: tuple[int, list[tuple[int, str, str]],
                                                         list[int]]) -> None:
    count, members, regs = read
    block = compile_block(count, members)  # type: ignore[arg-type]
    assert block is not None
    values = block(regs)
    assert len(values) == len(members)
    for (off, t, order), v in zip(members, values, strict=True):
        n = register_count(t)  # type: ignore[arg-type]
        want, want_sentinel = compile_decoder(t, order)(regs[off:off + n])
        sent = sentinel_of(t)  # type: ignore[arg-type]
        got_sentinel = v != v or v == sent
        assert got_sentinel == want_sentinel
        if not want_sentinel:
            assert float(v) == want or (math.isnan(want) and math.isnan(v))
            assert struct.pack(">d", float(v) * 0.1 + 3) == struct.pack(">d", want * 0.1 + 3)


@pytest.mark.parametrize("members", [
    [(0, "bool", "ABCD")],  # bool: 1.0/0.0 by the member decoder
    [(0, "bitfield", "ABCD")],
    [(0, "uint16", "BADC")],  # byte-swapped
    [(0, "float32", "CDAB")],  # word-swapped multi-register
    [(0, "int32", "DCBA")],
    [(2, "uint16", "ABCD"), (0, "uint16", "ABCD")],  # out of offset order
    [(0, "uint32", "ABCD"), (1, "uint16", "ABCD")],  # overlapping
    [(0, "uint32", "ABCD")],  # runs past a read of 1 register (count below)
])
def test_reads_that_do_not_fit_one_struct_go_member_by_member(
        members: list[tuple[int, str, str]]) -> None:
    assert compile_block(1 if members == [(0, "uint32", "ABCD")] else 4, members) is None  # type: ignore[arg-type]


def test_bad_registers_are_refused_as_by_the_member_decoders() -> None:
    block = compile_block(2, [(0, "uint16", "ABCD"), (1, "int16", "ABCD")])
    assert block is not None
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        block([1, 70_000])
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        block([1])  # a short reply never gets here (the poller checks lengths), but is refused
