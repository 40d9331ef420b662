"""Pure pieces of the government's overview (``_ui_overview.py``): a gateway's state, the lag
percentiles, an enterprise's standing in a period, the day and the months the page counts
over, which period it opens on, and the list of recent batches. Plain values in, plain values
out; the page module does the I/O."""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from portal._accounting import compliance

GatewayState = Literal["alarmed", "online", "silent", "inactive"]
Standing = Literal["surplus", "deficit", "unverified"]
BatchState = Literal["verified", "pending", "quarantined"]

#: a quarantined submission keeps its gateway "alarmed" this long
ALARM_WINDOW_NS = 24 * 3600 * 10**9
#: the order gateways are listed in (what needs attention first)
STATE_ORDER: dict[str, int] = {"alarmed": 0, "silent": 1, "online": 2, "inactive": 3}


def gateway_state(*, active: bool, last_seen_ns: int | None, alarms_raised: int,
                  last_quarantined_ns: int | None, now_ns: int, silent_after_ns: int,
                  alarm_window_ns: int = ALARM_WINDOW_NS) -> GatewayState:
    """What the overview says of a gateway at ``now_ns``:

    - ``alarmed``: one of its alarms is raised, or a submission of it was quarantined within
      ``alarm_window_ns`` (whatever else it does);
    - ``online``: it was last heard of (a batch received or verified, live telemetry) within
      ``silent_after_ns``;
    - ``silent``: active on the ledger but not online;
    - ``inactive``: deactivated on the ledger and not heard of."""
    if alarms_raised > 0 or (last_quarantined_ns is not None
                             and now_ns - last_quarantined_ns <= alarm_window_ns):
        return "alarmed"
    if last_seen_ns is not None and now_ns - last_seen_ns <= silent_after_ns:
        return "online"
    return "silent" if active else "inactive"


def last_seen(*times: int | None) -> int | None:
    """The latest of the moments a gateway was heard of (None: never)."""
    known = [t for t in times if t is not None]
    return max(known) if known else None


def percentile(values: Sequence[int], q: float) -> int | None:
    """The nearest-rank ``q``-th percentile (0 < q <= 100): the smallest value at least ``q``
    per cent of ``values`` are at most; always one of the values. None when there are none."""
    if not values:
        return None
    if not 0 < q <= 100:
        raise ValueError(f"a percentile is in (0, 100], not {q}")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def standing(*, closed: bool, has_verified: bool, verified_g: int, penalty_g: int,
             penalty_deducted_g: int, surrendered_g: int, balance_g: int, settled: bool,
             settled_status: int) -> Standing:
    """An enterprise's standing in a period: ``surplus`` when the allowances it surrendered
    and holds cover its obligation (verified emissions plus the penalty not yet deducted),
    ``deficit`` when not, ``unverified`` while it has no verified figure. A closed period
    follows ``Allowances.compliance`` (compliant: surplus; non-compliant: deficit); in an open
    one the allowances still held count too."""
    c = compliance(closed=closed, has_verified=has_verified, verified_g=verified_g,
                   penalty_g=penalty_g, penalty_deducted_g=penalty_deducted_g,
                   surrendered_g=surrendered_g, settled=settled, settled_status=settled_status)
    if c == "compliant":
        return "surplus"
    if c == "non_compliant":
        return "deficit"
    if not has_verified:
        return "unverified"
    owed = verified_g + penalty_g - penalty_deducted_g
    return "surplus" if surrendered_g + balance_g >= owed else "deficit"


def day_start_ns(now_ns: int, tz: str) -> int:
    """The start (ns) of the calendar day holding ``now_ns`` in time zone ``tz``."""
    zone = zoneinfo.ZoneInfo(tz)
    local = dt.datetime.fromtimestamp(now_ns // 10**9, tz=zone)
    midnight = dt.datetime(local.year, local.month, local.day, tzinfo=zone)
    return int(midnight.timestamp()) * 10**9


def month_starts(from_ns: int, to_ns: int, most: int = 240) -> list[int]:
    """The starts (ns) of the UTC months that overlap ``[from_ns, to_ns)`` (as the emissions
    series buckets them), at most ``most`` of them."""
    if to_ns <= from_ns or from_ns < 0:
        return []
    d = dt.datetime.fromtimestamp(from_ns // 10**9, tz=dt.UTC)
    y, m = d.year, d.month
    out: list[int] = []
    while len(out) < most:
        start = int(dt.datetime(y, m, 1, tzinfo=dt.UTC).timestamp()) * 10**9
        if start >= to_ns:
            break
        out.append(start)
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def pick_period(periods: Iterable[tuple[int, int, int]], now_ns: int) -> int | None:
    """The period the overview opens on: the one holding ``now_ns`` (``start <= now < end``),
    else the latest; ``periods`` are ``(period_id, start_ns, end_ns)``. None without any."""
    latest: int | None = None
    for pid, start, end in periods:
        if start <= now_ns < end:
            return pid
        latest = pid if latest is None else max(latest, pid)
    return latest


@dataclass(frozen=True)
class RecentBatch:
    gateway_id: str
    seq: int
    enterprise: str | None
    name: str | None
    state: BatchState
    reason: str | None
    received_ns: int
    verified_ns: int | None
    records: int | None
    #: the chain anchored this batch (it has a page of its own)
    anchored: bool
    #: from its last reading to its verification
    lag_ns: int | None

    @property
    def at_ns(self) -> int:
        """When it last changed: verified, else received."""
        return self.verified_ns if self.verified_ns is not None else self.received_ns


def merge_recent(submissions: Iterable[RecentBatch], refusals: Iterable[RecentBatch],
                 n: int) -> list[RecentBatch]:
    """The ``n`` newest of the submissions (as the ingest holds them) and the refusals (the
    quarantine rows no submission row already stands for), newest first."""
    items = [*submissions, *refusals]
    items.sort(key=lambda b: (-b.at_ns, b.gateway_id, -b.seq))
    return items[:n]
