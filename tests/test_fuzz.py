"""The short form of the fuzz campaign: every parser of untrusted input, a few thousand inputs
from a fixed seed (the long form is ``make fuzz``; see tests/fuzz/__init__.py)."""

from __future__ import annotations

import pytest

from tests.fuzz import Target, all_targets, mutate, run_target

TARGETS = all_targets()
SHORT_INPUTS = 3000


def test_every_area_lists_targets() -> None:
    assert len(TARGETS) >= 1


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_target_rejects_cleanly_or_accepts(target: Target) -> None:
    res = run_target(target, SHORT_INPUTS, seed=1)
    assert res.inputs == SHORT_INPUTS
    assert not res.findings, "\n\n".join(map(str, res.findings))
    # A fuzzer that only ever feeds rejects (or only accepts) explores nothing: both must occur.
    assert res.rejected > 0
    assert res.accepted > 0 or not target.seeds


def test_the_harness_reports_an_undeclared_error() -> None:
    def parser(data: bytes) -> None:
        if b"[" in data:
            raise KeyError("not a declared rejection")
        if not data:
            raise ValueError("empty")

    t = Target("selftest", parser, (ValueError,), (b"abc", b""))
    res = run_target(t, 500, seed=3)
    assert res.findings and "KeyError" in res.findings[0].error


def test_mutations_stay_within_the_length_and_vary() -> None:
    import random

    rng = random.Random(0)
    outs = {mutate(rng, [b"{\"a\": 1}"], 64) for _ in range(500)}
    assert all(len(o) <= 64 for o in outs)
    assert len(outs) > 100
