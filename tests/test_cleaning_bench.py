"""The benchmark entry point runs and reports sensible numbers."""

from __future__ import annotations

import pytest

from cleaning._bench import bench, bench_stream


def test_bench_small() -> None:
    r = bench(20_000, repeat=1)
    assert r["n"] == 20_000
    for key in ("analog_readings_per_s", "counter_readings_per_s", "readings_per_s"):
        assert r[key] > 0


def test_bench_stream_small() -> None:
    r = bench_stream(50, 22)
    assert (r["points"], r["chunks"]) == (50, 22)
    assert r["warmup_readings_per_s"] > 0 and r["steady_readings_per_s"] > 0
    with pytest.raises(ValueError):
        bench_stream(10, 20)
