"""Throughput of the checks, for the benchmark suite: `bench` (the batch path, long streams)
and `bench_stream` (the streaming path, the gateway's shape: one reading of each of many
points per chunk)."""

from __future__ import annotations

import time

import numpy as np

from mrv_core import Reading

from ._config import (
    ChecksConfig,
    CounterCheck,
    FlatlineCheck,
    RangeCheck,
    RateCheck,
    SpikeCheck,
    TimestampCheck,
)
from ._stream import Cleaner, run_checks

__all__ = ["bench", "bench_stream"]

_T0 = 1_700_000_000 * 1_000_000_000

ANALOG_CONFIG = ChecksConfig(
    range=RangeCheck(min=0, max=200),
    rate_of_change=RateCheck(max_per_s=20),
    spike=SpikeCheck(window=21, k=4.0, min_deviation=0.5),
    flatline=FlatlineCheck(count=30, duration_s=600, tolerance=0.0),
    sentinels=(65535.0, -32768.0),
    timestamps=TimestampCheck(max_future_s=5, max_age_s=30 * 86400),
)
COUNTER_CONFIG = ChecksConfig(
    sentinels=(4294967295.0,),
    timestamps=TimestampCheck(max_future_s=5),
    counter=CounterCheck(register_max=1_000_000, max_rate_per_s=10.0),
)


def _streams(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = _T0 + np.arange(n, dtype=np.int64) * 1_000_000_000
    ts += rng.integers(0, 50_000_000, n)  # poll jitter
    analog = 80 + 10 * np.sin(np.arange(n) / 600) + rng.normal(0, 1, n)
    k = max(1, n // 1000)
    analog[rng.integers(0, n, k)] += 40  # spikes
    analog[rng.integers(0, n, k)] = np.nan  # comm faults
    analog[rng.integers(0, n, k)] = 65535.0  # sentinels
    counter = np.cumsum(rng.uniform(0, 5, n)) % 1_000_001  # wraps every ~400k samples
    counter[rng.integers(1, n, k)] += 5000  # glitches
    q = np.zeros(n, dtype=np.uint32)
    return ts, analog, counter, q


def bench(n: int, *, repeat: int = 3, seed: int = 0) -> dict[str, float]:
    """Time `run_checks` on ``n`` random readings of an analog point (range, rate, spike,
    flatline, sentinels, timestamps, duplicates) and ``n`` readings of a counter point
    (counter, sentinels, timestamps, duplicates); best of ``repeat`` runs. Returns readings
    per second for each and overall."""
    if n < 1:
        raise ValueError("n must be at least 1")
    ts, analog, counter, q = _streams(n, seed)
    now = int(ts[-1])
    best_a = best_c = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        run_checks(ts, analog, q, ANALOG_CONFIG, now)
        t1 = time.perf_counter()
        run_checks(ts, counter, q, COUNTER_CONFIG, now)
        t2 = time.perf_counter()
        best_a, best_c = min(best_a, t1 - t0), min(best_c, t2 - t1)
    return {
        "n": float(n),
        "analog_seconds": best_a,
        "counter_seconds": best_c,
        "analog_readings_per_s": n / best_a,
        "counter_readings_per_s": n / best_c,
        "readings_per_s": 2 * n / (best_a + best_c),
    }


def bench_stream(points: int = 1000, chunks: int = 60, *, seed: int = 1) -> dict[str, float]:
    """Time `Cleaner.clean` on ``chunks`` chunks of one reading of each of ``points`` points
    (three in four with `ANALOG_CONFIG`, one in four with `COUNTER_CONFIG`; each point takes
    the streaming path). CPU time, in readings per second: ``warmup`` over the first 20 chunks
    (spike windows not yet full: the cheap checks only), ``steady`` over the rest."""
    if points < 1 or chunks <= 20:
        raise ValueError("points must be at least 1 and chunks more than 20")
    rng = np.random.default_rng(seed)
    cleaner = Cleaner({f"p{i}": COUNTER_CONFIG if i % 4 == 0 else ANALOG_CONFIG for i in range(points)})
    totals = np.zeros(points)
    data = []
    for k in range(chunks):
        totals = (totals + rng.uniform(0, 5, points)) % 1_000_001
        noise = 80 + rng.normal(0, 1, points)
        ts = _T0 + k * 1_000_000_000 + rng.integers(0, 100_000_000, points)
        data.append([
            Reading(point_id=f"p{i}", ts_ns=int(ts[i]), value=float(totals[i] if i % 4 == 0 else noise[i]),
                    unit="kW", source="bench", quality=0)
            for i in range(points)
        ])
    now = [_T0 + (k + 1) * 1_000_000_000 for k in range(chunks)]
    t0 = time.process_time()
    for k in range(20):
        cleaner.clean(data[k], now[k])
    t1 = time.process_time()
    for k in range(20, chunks):
        cleaner.clean(data[k], now[k])
    t2 = time.process_time()
    return {
        "points": float(points),
        "chunks": float(chunks),
        "warmup_readings_per_s": points * 20 / max(t1 - t0, 1e-9),
        "steady_readings_per_s": points * (chunks - 20) / max(t2 - t1, 1e-9),
    }
