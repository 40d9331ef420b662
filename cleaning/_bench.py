"""Throughput of the vectorised checks, for the benchmark suite."""

from __future__ import annotations

import time

import numpy as np

from ._config import (
    ChecksConfig,
    CounterCheck,
    FlatlineCheck,
    RangeCheck,
    RateCheck,
    SpikeCheck,
    TimestampCheck,
)
from ._stream import run_checks

__all__ = ["bench"]

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
