"""The benchmark entry point runs and reports sensible numbers."""

from __future__ import annotations

from cleaning._bench import bench


def test_bench_small() -> None:
    r = bench(20_000, repeat=1)
    assert r["n"] == 20_000
    for key in ("analog_readings_per_s", "counter_readings_per_s", "readings_per_s"):
        assert r[key] > 0
