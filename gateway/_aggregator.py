"""Hourly aggregation and substitution, as derived records next to the raw readings.

At each hour's close (plus ``grace_s``, so late readings are in) the aggregator reads that hour's
readings of each configured point back from the outbox, aggregates them by the point's validity
rule (`cleaning.aggregate`), and commits one ``hour-mean`` derived record per point naming the
raw readings by seq range. An hour without enough valid minutes gets the INSUFFICIENT bit. When
a gap of invalid hours closes (a valid hour follows), substitutes are computed by the point's
substitution policy (`cleaning.substitute`, e.g. the 40 CFR 75.33 tiers) and committed as
``substitute:<tier>:<method>`` derived records, one per replaced hour, each naming the
``hour-mean`` record it stands in for. Raw readings are never changed.

Limits: the hour history used for lookback and availability is kept in memory from the start of
the process; after a restart it starts empty (the records already written stay).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from cleaning import Aggregate, AggregationConfig, SubstitutionConfig, aggregate, substitute
from cleaning._aggregate import HOUR_NS
from gateway._metrics import Metrics
from gateway._records import DerivedRecord, Quality
from ledger_client._outbox import Outbox

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
            seq, ts, val, q = await self.outbox.point_series(p.point_id, hour_start_ns, end)
            _, hours = aggregate(p.point_id, ts, val, q, p.rule, seq=seq, unit=p.unit,
                                 start_ns=hour_start_ns, end_ns=end)
            hour = hours[0]
            [rec] = await self.outbox.append([hour_record(hour)])
            out.append(rec)
            h = self.history[p.point_id]
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

    async def run(self) -> None:
        """Close each hour ``grace_s`` after it ends, starting with the current hour."""
        now = time.time_ns()
        self.done_until_ns = self.done_until_ns or (now // HOUR_NS) * HOUR_NS
        while True:
            next_end = self.done_until_ns + HOUR_NS
            wait_s = (next_end + self.grace_ns - time.time_ns()) / 1e9
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            recs = await self.close_hour(self.done_until_ns)
            self.done_until_ns = next_end
            log.info("hour %s closed: %d derived record(s)",
                     time.strftime("%Y-%m-%d %H:00Z", time.gmtime(next_end / 1e9 - 3600)),
                     len(recs))

