"""Gathering the inputs of rankings and the green index from the database (SQLAlchemy Core).

A handful of aggregate queries per request, each bounded by a primary key or an index:
``emissions``, ``accounts``, ``reports``, ``findings`` by period (small tables: enterprises x
periods), and the readings' data quality by ``(enterprise, ts_ns)`` over
``ix_records_enterprise_ts`` — the only query that touches the large ``records`` table. Its
answer changes only when the ingest verifier stores a batch, so :class:`QualityCache` keeps it
per period until the set of verified batches changes (one cheap query decides).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import sqlalchemy as sa

from mrv_core import INVALID
from portal._chain_tables import (
    accounts,
    benchmarks,
    emissions,
    enterprises,
    findings,
    periods,
    reports,
)
from portal._config import OutputFigure
from portal._ingest_tables import ingest_batches, records
from portal._scoring import (
    Account,
    Compliance,
    EnterprisePeriod,
    FindingKind,
    PeriodInfo,
    ReadingQuality,
    compliance_of,
    prior_year_period,
)

READING = 1  # records.kind of a reading
FINDING_FILED, FINDING_CONFIRMED = 1, 2
#: enterprises per ``IN (...)`` list of one query
CHUNK = 500

OutputTable = dict[tuple[str, int], tuple[Fraction, str]]


def output_table(figures: Iterable[OutputFigure]) -> OutputTable:
    """portal.yaml's ``outputs:`` by (enterprise, period); a later entry replaces an earlier."""
    return {(f.enterprise.lower(), f.period): (Fraction(f.output), f.unit) for f in figures}


def _period(row: Sequence[Any]) -> PeriodInfo:
    return PeriodInfo(int(row[0]), int(row[1]), int(row[2]), bool(row[3]))


def all_periods(conn: sa.Connection) -> list[PeriodInfo]:
    q = sa.select(periods.c.period_id, periods.c.start_ns, periods.c.end_ns, periods.c.closed)
    return [_period(r) for r in conn.execute(q.order_by(periods.c.period_id))]


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


def reading_quality(conn: sa.Connection, period: PeriodInfo,
                    who: Sequence[str]) -> dict[str, ReadingQuality]:
    """Readings (kind 1) with ``ts_ns`` in ``[start, end)`` per enterprise: all, with a value
    (``value`` is NULL for NaN), and flagged (``quality & INVALID != 0``)."""
    r = records.c
    flagged = sa.func.sum(sa.case((r.quality.op("&")(INVALID) != 0, 1), else_=0))
    out: dict[str, ReadingQuality] = {}
    for chunk in _chunks(who):
        q = (sa.select(r.enterprise, sa.func.count(), sa.func.count(r.value), flagged)
             .where(r.enterprise.in_(chunk), r.ts_ns >= period.start_ns,
                    r.ts_ns < period.end_ns, r.kind == READING)
             .group_by(r.enterprise))
        for ent, n, with_value, n_flagged in conn.execute(q):
            out[ent] = ReadingQuality(int(n), int(with_value), int(n_flagged or 0))
    return out


def data_version(conn: sa.Connection) -> tuple[int, int]:
    """Changes whenever the stored readings do: the ingest verifier stores a batch's records in
    the transaction that marks it verified, so (verified batches, their last ``verified_ns``)
    moves with every change (one pass over ``ix_ingest_batches_state``)."""
    n, last = conn.execute(
        sa.select(sa.func.count(), sa.func.max(ingest_batches.c.verified_ns))
        .where(ingest_batches.c.state == "verified")).one()
    return int(n), int(last or 0)


@dataclass
class _Entry:
    version: tuple[int, int]
    quality: dict[str, ReadingQuality]
    covered: frozenset[str]


class QualityCache:
    """Data quality per period, valid while :func:`data_version` is unchanged (thread-safe;
    one per app). One computation per period at a time: concurrent requests for a period
    whose entry is stale wait for it rather than each scanning the records. At most
    ``max_periods`` periods are kept (the least recently computed go)."""

    def __init__(self, max_periods: int = 64) -> None:
        self._lock = threading.Lock()
        self._by_period: dict[int, _Entry] = {}
        self._computing: dict[int, threading.Lock] = {}
        self.max_periods = max_periods
        self.hits = 0
        self.misses = 0

    def _lookup(self, period_id: int, version: tuple[int, int],
                who: Sequence[str]) -> dict[str, ReadingQuality] | None:
        with self._lock:
            e = self._by_period.get(period_id)
            if e is not None and e.version == version and e.covered.issuperset(who):
                self.hits += 1
                return e.quality
            return None

    def get(self, conn: sa.Connection, period: PeriodInfo,
            who: Sequence[str]) -> dict[str, ReadingQuality]:
        pid = period.period_id
        version = data_version(conn)
        found = self._lookup(pid, version, who)
        if found is not None:
            return found
        with self._lock:
            flight = self._computing.setdefault(pid, threading.Lock())
        with flight:
            found = self._lookup(pid, version, who)  # computed while this one waited
            if found is not None:
                return found
            with self._lock:
                self.misses += 1
            quality = reading_quality(conn, period, who)
            with self._lock:
                e = self._by_period.get(pid)
                if e is not None and e.version == version:  # widen what this version covers
                    quality = {**e.quality, **quality}
                    covered = e.covered | frozenset(who)
                else:
                    covered = frozenset(who)
                self._by_period.pop(pid, None)
                self._by_period[pid] = _Entry(version, quality, covered)
                while len(self._by_period) > self.max_periods:
                    self._by_period.pop(next(iter(self._by_period)))
        return quality


def _accounts_of(conn: sa.Connection, period_ids: Sequence[int],
                 who: Sequence[str] | None) -> dict[tuple[str, int], Account]:
    a = accounts.c
    q = sa.select(a.enterprise, a.period, a.allocated_g, a.surrendered_g, a.verified_g,
                  a.penalty_g, a.penalty_deducted_g, a.has_verified, a.output,
                  a.benchmark_g_per_unit).where(a.period.in_(period_ids))
    if who is not None:
        q = q.where(a.enterprise.in_(who))
    return {(r[0], int(r[1])): Account(int(r[2]), int(r[3]), int(r[4]), int(r[5]), int(r[6]),
                                       bool(r[7]))
            for r in conn.execute(q)}


def _chain_outputs(conn: sa.Connection, period_id: int,
                   who: Sequence[str] | None) -> dict[str, tuple[int, int]]:
    a = accounts.c
    q = sa.select(a.enterprise, a.output, a.benchmark_g_per_unit).where(
        a.period == period_id, a.output > 0)
    if who is not None:
        q = q.where(a.enterprise.in_(who))
    return {r[0]: (int(r[1]), int(r[2])) for r in conn.execute(q)}


def _reported(conn: sa.Connection, period_ids: Sequence[int],
              who: Sequence[str] | None) -> dict[tuple[str, int], int]:
    e = emissions.c
    q = sa.select(e.enterprise, e.period, e.scope1_g + e.scope2_g + e.scope3_g).where(
        e.period.in_(period_ids))
    if who is not None:
        q = q.where(e.enterprise.in_(who))
    return {(r[0], int(r[1])): int(r[2]) for r in conn.execute(q)}


def compliance_history(conn: sa.Connection, enterprise: str, period: PeriodInfo
                       ) -> tuple[tuple[int, Compliance], ...]:
    """The live compliance of every closed period ending no later than ``period`` in which the
    enterprise has an account."""
    a, p = accounts.c, periods.c
    q = (sa.select(a.period, a.allocated_g, a.surrendered_g, a.verified_g, a.penalty_g,
                   a.penalty_deducted_g, a.has_verified)
         .join_from(accounts, periods, p.period_id == a.period)
         .where(a.enterprise == enterprise, p.closed.is_(True), p.end_ns <= period.end_ns)
         .order_by(a.period))
    return tuple((int(r[0]), compliance_of(Account(int(r[1]), int(r[2]), int(r[3]), int(r[4]),
                                                   int(r[5]), bool(r[6])), True))
                 for r in conn.execute(q))


@dataclass(frozen=True, slots=True)
class Scope:
    """Which enterprises to gather: one (``enterprise``), one group, or all certified."""

    enterprise: str | None = None
    industry_code: str | None = None
    region: str | None = None


def gather(conn: sa.Connection, period: PeriodInfo, outputs: OutputTable, scope: Scope, *,
           quality: QualityCache | None = None,
           with_history: bool = False) -> list[EnterprisePeriod]:
    """The inputs of every certified enterprise (status active or suspended) in ``scope`` for
    ``period``: about ten queries whatever the number of enterprises."""
    ent = enterprises.c
    q = sa.select(ent.account, ent.name, ent.industry_code, ent.region).where(ent.status >= 1)
    if scope.enterprise is not None:
        q = q.where(ent.account == scope.enterprise)
    if scope.industry_code is not None:
        q = q.where(ent.industry_code == scope.industry_code)
    if scope.region is not None:
        q = q.where(ent.region == scope.region)
    rows = conn.execute(q.order_by(ent.account)).all()
    if not rows:
        return []
    who: list[str] | None = [r[0] for r in rows] if scope != Scope() else None
    listed = [r[0] for r in rows]

    prior = prior_year_period(period, all_periods(conn))
    pids = [period.period_id] + ([prior.period_id] if prior else [])
    accts = _accounts_of(conn, pids, who)
    chain_out = _chain_outputs(conn, period.period_id, who)
    reported = _reported(conn, pids, who)
    bench = {r[0]: int(r[1]) for r in conn.execute(
        sa.select(benchmarks.c.industry_code, benchmarks.c.grams_per_unit)
        .where(benchmarks.c.period == period.period_id, benchmarks.c.grams_per_unit > 0))}

    rp = reports.c
    rq = (sa.select(rp.enterprise, sa.func.count()).where(rp.period == period.period_id)
          .group_by(rp.enterprise))
    fd = findings.c
    fq = (sa.select(fd.enterprise, fd.kind, fd.status, sa.func.count())
          .where(fd.period == period.period_id).group_by(fd.enterprise, fd.kind, fd.status))
    if who is not None:
        rq = rq.where(rp.enterprise.in_(who))
        fq = fq.where(fd.enterprise.in_(who))
    n_reports = {r[0]: int(r[1]) for r in conn.execute(rq)}
    found: dict[tuple[str, int, int], int] = {}
    pending: dict[str, int] = {}
    for e, kind, status, n in conn.execute(fq):
        found[(e, int(kind), int(status))] = int(n)
        if int(status) == FINDING_FILED:
            pending[e] = pending.get(e, 0) + int(n)

    qual = (quality.get(conn, period, listed) if quality is not None
            else reading_quality(conn, period, listed))

    out: list[EnterprisePeriod] = []
    for account, name, industry, region in rows:
        pid = period.period_id
        output: Fraction | None = None
        source: str | None = None
        unit = ""
        cfg = outputs.get((account, pid))
        bench_g = bench.get(industry)
        if account in chain_out:
            output, source = Fraction(chain_out[account][0]), "chain"
            # the benchmark the allocation used is the one in force for it
            bench_g = chain_out[account][1] or bench_g
            unit = cfg[1] if cfg else ""
        elif cfg is not None:
            output, source, unit = cfg[0], "config", cfg[1]
        ep = EnterprisePeriod(
            enterprise=account, name=name, industry_code=industry, region=region,
            period=period, reported_g=reported.get((account, pid)),
            account=accts.get((account, pid)), output=output,
            output_source="chain" if source == "chain" else "config" if source else None,
            output_unit=unit, benchmark_g_per_unit=bench_g,
            quality=qual.get(account, ReadingQuality()), reports_filed=n_reports.get(account, 0),
            findings_confirmed_abnormal=found.get(
                (account, FindingKind.ABNORMAL, FINDING_CONFIRMED), 0),
            findings_confirmed_falsified=found.get(
                (account, FindingKind.FALSIFIED, FINDING_CONFIRMED), 0),
            findings_pending=pending.get(account, 0),
            prior_period=prior,
            prior_reported_g=reported.get((account, prior.period_id)) if prior else None,
            prior_account=accts.get((account, prior.period_id)) if prior else None)
        if with_history:
            ep = replace(ep, compliance_history=compliance_history(conn, account, period))
        out.append(ep)
    return out


def period_by_id(conn: sa.Connection, period_id: int) -> PeriodInfo | None:
    row = conn.execute(
        sa.select(periods.c.period_id, periods.c.start_ns, periods.c.end_ns, periods.c.closed)
        .where(periods.c.period_id == period_id)).first()
    return _period(row) if row is not None else None
