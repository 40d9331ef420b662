"""numpy is loaded on demand (design 008, decision 26): the daemon's import path and its
cleaning of ordinary polls never load it (~15 MB of the daemon's memory); the vectorised
cleaning, aggregation, substitution and `decode_array` load it when they run.

Each check runs in a fresh interpreter, where nothing else has loaded numpy yet."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cleaning import _rules
from drivers.modbus._decode import _is_bool

ROOT = Path(__file__).resolve().parent.parent

_CLEANER = """
import sys
from cleaning import ChecksConfig, Cleaner
from mrv_core import Reading
cfg = ChecksConfig.model_validate({"range": {"min": 0, "max": 100}, "duplicates": True,
                                   "timestamps": {"max_future_s": 5}})
c = Cleaner({f"p{i}": cfg for i in range(50)})
c._fast_max = FAST_MAX  # None: each point's own limit (polls: scalar and compiled paths)
chunk = [Reading(point_id=f"p{i % 50}", ts_ns=1_000_000_000 * (1 + i // 50), value=float(i % 200),
                 unit="kW", source="t") for i in range(500)]
out = c.clean(chunk, 2_000_000_000_000)
print(sum(1 for r in out if r.quality), "numpy" in sys.modules)
"""


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def test_the_daemons_import_path_does_not_load_numpy() -> None:
    code = ("import sys; import gateway._daemon, gateway._cli, gateway._aggregator, drivers,"
            " control, config, cleaning, ledger_client;"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'numpy'))")
    assert _run(code) == "[]"


@pytest.mark.parametrize(("fast_max", "loaded"), [("None", "False"), ("0", "True")])
def test_cleaning_loads_numpy_only_for_a_vectorised_chunk(fast_max: str, loaded: str) -> None:
    # the same chunk either way, so the same flags (values 101..199 are out of range: 198 of
    # the 500); only the vectorised path (fast_max 0) loads numpy
    assert _run(_CLEANER.replace("FAST_MAX", fast_max)) == f"198 {loaded}"


def test_aggregation_and_array_decoding_load_numpy_when_they_run() -> None:
    code = ("import sys; from cleaning import aggregate_minutes;"
            "from drivers.modbus._decode import decode_array;"
            "a = 'numpy' in sys.modules;"
            "m = aggregate_minutes('p', [60_000_000_000], [1.0], [0], expected_per_minute=1);"
            "d = decode_array([1, 2], [0, 1], 'int16');"
            "print(a, 'numpy' in sys.modules, m[0].mean, d.tolist())")
    assert _run(code) == "False True 1.0 [1, 2]"


def test_a_numpy_bool_is_still_a_bool_to_the_encoder() -> None:
    assert _is_bool(True) and _is_bool(np.bool_(False))
    assert not _is_bool(1) and not _is_bool(0.0) and not _is_bool(np.int8(1))


@pytest.mark.parametrize(("a", "b"), [(5, 0.0), (-5, 0.0), (3, 7), (2.5, 2), (math.nan, 1),
                                      (1, math.nan), (-(1 << 62), 0.0), ((1 << 60) + 1, 1.0)])
def test_the_rules_maximum_of_plain_numbers_is_numpys(a: float, b: float) -> None:
    # the scalar counter path passes int time differences: they take the plain path, not numpy
    got = _rules._maximum(a, b)
    want = np.maximum(a, b)
    assert type(got) is float
    assert (math.isnan(got) and math.isnan(want)) or got == want
