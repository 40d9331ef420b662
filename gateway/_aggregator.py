"""Hourly aggregation and substitution, as derived records next to the raw readings.

At each hour's close (plus ``grace_s``, so late readings are in) the aggregator reads that hour's
readings of each configured point back from the outbox, aggregates them by the point's validity
rule (`cleaning.aggregate`), and commits one ``hour-mean`` derived record per point naming the
raw readings by seq range. An hour without enough valid minutes gets the INSUFFICIENT bit. When
a gap of invalid hours closes (a valid hour follows), substitutes are computed by the point's
substitution policy (`cleaning.substitute`, e.g. the 40 CFR 75.33 tiers) and committed as
``substitute:<tier>:<method>`` derived records, one per replaced hour, each naming the
``hour-mean`` record it stands in for. Raw readings are never changed.

After a restart the aggregator rebuilds its hour history (for lookback and availability) and
the set of substituted hours from the derived records already in the outbox, and closes every
hour it missed while the gateway was down (up to ``max_history_hours`` back): an hour without
readings becomes an invalid hour-mean, and the gap is substituted like any other.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from cleaning import HOUR_NS, Aggregate, AggregationConfig, SubstitutionConfig, aggregate, substitute
from ledger_client import Outbox
from mrv_core import DerivedRecord, Metrics, Quality

log = logging.getLogger("mrv.aggregator")


@dataclass(frozen=True, slots=True)
class AggregatedPoint:
    point_id: str
    unit: str
    rule: AggregationConfig
    substitution: SubstitutionConfig | None = None


@dataclass(slots=True)
class _History:
    hours: list[Aggregate] = field(default_factory=list)
    mean_seq: dict[int, int] = field(default_factory=dict)  # hour start -> hour-mean record seq
    substituted: set[int] = field(default_factory=set)


def _hour_from_record(rec: DerivedRecord) -> Aggregate:
    """The parts of an hour aggregate that substitution uses, from its hour-mean record."""
    return Aggregate(point_id=rec.point_id, period_s=3600, start_ns=rec.period_start_ns,
                     count=0, valid_count=0, mean=rec.value, min=math.nan, max=math.nan,
                     expected=0, valid_minutes=0, capture_rate=math.nan,
                     valid=not rec.quality & Quality.INSUFFICIENT, first_seq=rec.from_seq,
                     last_seq=rec.to_seq, unit=rec.unit)


def hour_record(a: Aggregate) -> DerivedRecord:
    return DerivedRecord(
        point_id=a.point_id, derivation="hour-mean", period_start_ns=a.start_ns,
        period_end_ns=a.end_ns, value=a.mean, unit=a.unit, from_seq=a.first_seq,
        to_seq=a.last_seq, quality=0 if a.valid else int(Quality.INSUFFICIENT))


class Aggregator:
    def __init__(self, outbox: Outbox, points: Sequence[AggregatedPoint], metrics: Metrics,
                 *, grace_s: float = 60.0, max_history_hours: int = 24 * 90) -> None:
        self.outbox = outbox
        self.points = list(points)
        self.metrics = metrics
        self.grace_ns = int(grace_s * 1e9)
        self.max_history = max_history_hours
        self.history = {p.point_id: _History() for p in self.points}
        self.done_until_ns = 0  # hours ending at or before this are aggregated

    async def close_hour(self, hour_start_ns: int) -> list[DerivedRecord]:
        """Aggregate the hour starting at ``hour_start_ns`` for every point; commit and return
        the derived records (hour means, then any substitutes that hour's arrival allows)."""
        out: list[DerivedRecord] = []
        end = hour_start_ns + HOUR_NS
        for p in self.points:
            h = self.history[p.point_id]
            if h.hours and h.hours[-1].start_ns >= hour_start_ns:
                continue  # closed already (a restart after a stop in the middle of this loop)
            seq, ts, val, q = await self.outbox.point_series(p.point_id, hour_start_ns, end)
            _, hours = aggregate(p.point_id, ts, val, q, p.rule, seq=seq, unit=p.unit,
                                 start_ns=hour_start_ns, end_ns=end)
            hour = hours[0]
            [rec] = await self.outbox.append([hour_record(hour)])
            out.append(rec)
            h.hours.append(hour)
            h.mean_seq[hour.start_ns] = rec.seq
            del h.hours[:-self.max_history]
            if p.substitution is not None:
                out += await self._substitute(p, h)
        self.metrics.inc("derived_records", len(out))
        return out

    async def _substitute(self, p: AggregatedPoint, h: _History) -> list[DerivedRecord]:
        assert p.substitution is not None
        recs: list[DerivedRecord] = []
        for sub in substitute(h.hours, p.substitution):
            for hs in sub.hours:
                if hs in h.substituted:
                    continue
                h.substituted.add(hs)
                mean_seq = h.mean_seq.get(hs, 0)
                recs.append(DerivedRecord(
                    point_id=p.point_id,
                    derivation=f"substitute:{sub.policy}:tier-{sub.tier + 1}:{sub.method}",
                    period_start_ns=hs, period_end_ns=hs + HOUR_NS, value=sub.value,
                    unit=p.unit, from_seq=mean_seq, to_seq=mean_seq,
                    quality=int(Quality.SUBSTITUTED)))
        return list(await self.outbox.append(recs)) if recs else []

    async def restore(self, now_ns: int) -> int:
        """Rebuild the hour history from the outbox's derived records (at most
        ``max_history_hours`` back) and set where aggregation resumes: the earliest hour some
        point has not closed (points without any hour-mean yet, e.g. newly configured ones, do
        not hold it back), or the current hour when no point has one. Returns the number of
        hours restored."""
        since = (now_ns // HOUR_NS - self.max_history) * HOUR_NS
        ends: list[int] = []
        restored = 0
        for p in self.points:
            h = self.history[p.point_id] = _History()
            for rec in await self.outbox.derived_of_point(p.point_id, since):
                start = rec.period_start_ns
                if rec.derivation == "hour-mean":
                    if h.hours and h.hours[-1].start_ns >= start:
                        continue  # one hour-mean per hour; the first one stands
                    h.hours.append(_hour_from_record(rec))
                    h.mean_seq[start] = rec.seq
                    restored += 1
                elif rec.derivation.startswith("substitute:"):
                    h.substituted.add(start)
            del h.hours[:-self.max_history]
            if h.hours:
                ends.append(h.hours[-1].end_ns)
        self.done_until_ns = min(ends) if ends else (now_ns // HOUR_NS) * HOUR_NS
        return restored

    async def run(self) -> None:
        """Close each hour ``grace_s`` after it ends: first the hours missed while the gateway
        was down, then each new one."""
        n = await self.restore(time.time_ns())
        if n:
            log.info("aggregation resumes at %s (%d hour(s) of history restored)",
                     time.strftime("%Y-%m-%d %H:00Z", time.gmtime(self.done_until_ns / 1e9)), n)
        while True:
            await self.catch_up(time.time_ns())
            wait_s = (self.done_until_ns + HOUR_NS + self.grace_ns - time.time_ns()) / 1e9
            if wait_s > 0:
                await asyncio.sleep(wait_s)

    async def catch_up(self, now_ns: int) -> list[DerivedRecord]:
        """Close, in order, every hour that ended at least ``grace_s`` before ``now_ns``."""
        out: list[DerivedRecord] = []
        while self.done_until_ns + HOUR_NS + self.grace_ns <= now_ns:
            recs = await self.close_hour(self.done_until_ns)
            log.info("hour %s closed: %d derived record(s)",
                     time.strftime("%Y-%m-%d %H:00Z", time.gmtime(self.done_until_ns / 1e9)),
                     len(recs))
            self.done_until_ns += HOUR_NS
            out += recs
        return out
