"""Pure planning of Modbus read requests: coalesce points into few reads (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal, get_args

__all__ = ["BIT_TABLES", "TABLES", "PointRef", "ReadRequest", "Table", "plan_reads"]

Table = Literal["holding", "input", "coil", "discrete"]

#: Output order of the tables in :func:`plan_reads`.
TABLES: Final[tuple[Table, ...]] = get_args(Table)
BIT_TABLES: Final[frozenset[str]] = frozenset({"coil", "discrete"})
_TABLE_RANK: Final[dict[str, int]] = {t: i for i, t in enumerate(TABLES)}
_MAX_ADDRESS: Final = 0xFFFF


@dataclass(frozen=True, slots=True)
class PointRef:
    """What the planner needs to know about one point."""

    key: int  # caller's index of the point
    table: Table
    address: int  # 0-based protocol address
    count: int  # registers (or bits for coil/discrete; always 1 there)


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read of ``count`` registers/bits from ``address``."""

    table: Table
    address: int
    count: int
    members: tuple[tuple[int, int], ...]  # (point key, offset of the point within this request)


def _validate(p: PointRef) -> None:
    if p.table not in _TABLE_RANK:
        raise ValueError(f"point {p.key}: unknown table {p.table!r}; expected one of {TABLES}")
    if isinstance(p.address, bool) or not isinstance(p.address, int):
        raise ValueError(f"point {p.key}: address must be an int, got {p.address!r}")
    if isinstance(p.count, bool) or not isinstance(p.count, int):
        raise ValueError(f"point {p.key}: count must be an int, got {p.count!r}")
    if not 0 <= p.address <= _MAX_ADDRESS:
        raise ValueError(f"point {p.key}: address {p.address} outside 0..{_MAX_ADDRESS}")
    if p.count < 1:
        raise ValueError(f"point {p.key}: count must be >= 1, got {p.count}")
    if p.table in BIT_TABLES and p.count != 1:
        raise ValueError(f"point {p.key}: {p.table} points read exactly 1 bit, got {p.count}")
    if p.address + p.count - 1 > _MAX_ADDRESS:
        raise ValueError(
            f"point {p.key}: address {p.address} + count {p.count} runs past {_MAX_ADDRESS}"
        )


def plan_reads(
    points: Iterable[PointRef],
    *,
    max_registers: int = 125,
    max_bits: int = 2000,
    max_gap: int = 0,
) -> list[ReadRequest]:
    """Coalesce points into read requests.

    Points of one table are sorted by address and merged greedily while the
    request span stays within ``max_registers`` (``max_bits`` for coil/discrete)
    and at most ``max_gap`` unread addresses lie between a point and the end of
    the request so far. Overlapping points share a request when it fits. Every
    point lands in exactly one request. Output is ordered by table (holding,
    input, coil, discrete) then address; members by offset.

    Raises ValueError on an invalid point, a duplicate key, a point wider than
    the limit, or bad limits.
    """
    for name, limit in (("max_registers", max_registers), ("max_bits", max_bits)):
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"{name} must be an int >= 1, got {limit!r}")
    if isinstance(max_gap, bool) or not isinstance(max_gap, int) or max_gap < 0:
        raise ValueError(f"max_gap must be an int >= 0, got {max_gap!r}")

    seen: set[int] = set()
    pts: list[PointRef] = []
    for p in points:
        _validate(p)
        if p.key in seen:
            raise ValueError(f"duplicate point key {p.key}")
        seen.add(p.key)
        limit = max_bits if p.table in BIT_TABLES else max_registers
        if p.count > limit:
            raise ValueError(
                f"point {p.key}: {p.count} {'bits' if p.table in BIT_TABLES else 'registers'}"
                f" exceeds the per-request limit of {limit}"
            )
        pts.append(p)
    pts.sort(key=lambda p: (_TABLE_RANK[p.table], p.address, p.count, p.key))

    out: list[ReadRequest] = []
    table: Table | None = None
    start = end = 0  # current request covers [start, end)
    members: list[tuple[int, int]] = []

    def flush() -> None:
        if table is not None and members:
            out.append(ReadRequest(table, start, end - start, tuple(members)))

    for p in pts:
        limit = max_bits if p.table in BIT_TABLES else max_registers
        p_end = p.address + p.count
        new_end = max(end, p_end)
        if (
            p.table == table
            and p.address - end <= max_gap
            and new_end - start <= limit
        ):
            end = new_end
            members.append((p.key, p.address - start))
            continue
        flush()
        table, start, end = p.table, p.address, p_end
        members = [(p.key, 0)]
    flush()
    return out
