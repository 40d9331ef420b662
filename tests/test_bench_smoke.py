"""Smoke runs of the benchmarks: they run, and their JSON has the fields the report reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_acquisition_smoke(tmp_path: Path) -> None:
    out = tmp_path / "acq.json"
    p = subprocess.run([sys.executable, "-m", "benchmarks.acquisition", "--devices", "5",
                        "--seconds", "3", "--warmup", "1", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    d = json.loads(out.read_text())
    assert d["scenario"] == "acquisition" and d["devices"] == 5
    assert d["registers_per_device"] == 30 and d["tags_per_s_target"] == 150
    assert d["failed_polls"] == 0
    assert d["polls"] >= 0.8 * d["expected_polls"] and d["expected_polls"] >= 14
    assert isinstance(d["missed_polls"], int) and d["missed_polls"] <= 1
    assert d["readings_per_s"] >= 0.8 * 150
    assert 0 < d["cpu_share"] < 1 and 0 <= d["simulator_cpu_share"] < 1
    lat = d["poll_latency_ms"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"] and lat["samples"] == d["polls"]
    assert 20 < d["peak_rss_mb"] < 1000
