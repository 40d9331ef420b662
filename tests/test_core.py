"""The bottom layer (mrv_core): the supervisor stops a task on a `FatalError` and restarts it on
any other error; the ledger's anchoring alarms are fatal; the base config model is strict."""

from __future__ import annotations

import asyncio
import contextlib
import math

import pytest
from pydantic import ValidationError

import mrv_core
from ledger_client import (
    AnchorConflict,
    AnchorGap,
    ChainRejected,
    ChainRevert,
    ChainUnavailable,
    GatewayMismatch,
    KeyFileError,
    LedgerError,
    OutboxError,
)
from mrv_core import FatalError, Metrics, StrictModel, supervise


class Stop(FatalError):
    pass


async def test_supervise_restarts_after_an_error_and_stops_on_a_fatal_one() -> None:
    calls = 0

    async def task() -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ConnectionError(f"flaky {calls}")
        raise Stop("needs an operator")

    m = Metrics()
    await supervise("probe", task, m, initial_s=0.001, max_s=0.001)
    assert calls == 3
    assert m.counters["task_restarts"] == 2
    state = m.components["probe"]
    assert (state.state, state.detail) == ("alarm", "needs an operator")


async def test_a_task_that_keeps_failing_is_failing_in_the_health_view() -> None:
    """Restarted after each error and logged, and seen: its component is ``failing`` with the
    error while it keeps failing (a batcher that can build no batch)."""
    failures = asyncio.Event()
    calls = 0

    async def task() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            failures.set()
            await asyncio.Event().wait()  # the third run hangs: still failing from the second
        raise AttributeError("no header_fields")

    m = Metrics()
    t = asyncio.create_task(supervise("batcher", task, m, initial_s=0.001, max_s=0.001,
                                      healthy_s=3600))
    await asyncio.wait_for(failures.wait(), 5)
    state = m.components["batcher"]
    assert state.state == "failing"
    assert state.detail == "restarted after AttributeError: no header_fields"
    assert state.consecutive_failures == 2 and m.counters["task_restarts"] == 2
    t.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await t


async def test_a_restarted_task_is_ok_again_once_it_has_run_long_enough() -> None:
    recovered = asyncio.Event()
    calls = 0

    async def task() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("flaky")
        await recovered.wait()

    m = Metrics()
    original = m.set_state

    def spy(name: str, state: str, detail: str = "") -> bool:
        changed = original(name, state, detail)
        if state == "ok":
            recovered.set()
        return changed

    m.set_state = spy  # type: ignore[method-assign]
    await asyncio.wait_for(supervise("probe", task, m, initial_s=0.001, healthy_s=0.01), 5)
    assert m.components["probe"].state == "ok" and m.counters["task_restarts"] == 1


async def test_a_task_that_reports_its_own_state_keeps_it() -> None:
    """The uplink reports under its own name: what it set after a restart is not overwritten
    by the supervisor's ``ok``."""
    done = asyncio.Event()
    calls = 0

    async def task() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("flaky")
        m.set_state("uplink", "failing", "chain unavailable")
        await asyncio.sleep(0.05)  # past healthy_s: the supervisor's timer has fired
        done.set()

    m = Metrics()
    await asyncio.wait_for(supervise("uplink", task, m, initial_s=0.001, healthy_s=0.01), 5)
    assert done.is_set()
    assert (m.components["uplink"].state, m.components["uplink"].detail) == (
        "failing", "chain unavailable")


async def test_supervise_returns_when_the_task_finishes() -> None:
    m = Metrics()
    await supervise("done", _nothing, m)
    assert m.counters["task_restarts"] == 0 and "done" not in m.components


async def _nothing() -> None:
    return None


def test_the_anchoring_alarms_are_fatal_and_the_rest_are_not() -> None:
    fatal = {AnchorConflict, AnchorGap, ChainRevert, GatewayMismatch}
    for cls in (*fatal, ChainRejected, ChainUnavailable, KeyFileError, OutboxError):
        assert issubclass(cls, LedgerError)
        assert issubclass(cls, FatalError) == (cls in fatal), cls


class _Probe(StrictModel):
    x: float = 1.0


@pytest.mark.parametrize("data", [{"x": math.nan}, {"x": math.inf}, {"y": 1}])
def test_the_base_config_model_refuses_non_finite_numbers_and_unknown_keys(
        data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        _Probe.model_validate(data)
    p = _Probe.model_validate({"x": 2.5})
    with pytest.raises(ValidationError):
        p.x = 3.0  # type: ignore[misc]  # frozen


def test_the_bottom_layer_exports_what_it_declares() -> None:
    for name in mrv_core.__all__:
        assert getattr(mrv_core, name) is not None, name


class _Point(StrictModel):
    a: int = 0
    b: int = 0
    c: int = 0
    d: int = 0
    e: int = 0
    f: int = 0


def test_models_given_the_same_fields_share_the_set_of_their_names() -> None:
    """Pydantic's set of the fields given outgrows Python's inline table at five names (512 B a
    model): models given the same names share one. A copy that changes fields has its own."""
    import copy
    import sys

    full = {k: 1 for k in "abcde"}
    ps = [_Point.model_validate({**full, "f": i}) for i in range(3)]
    assert ps[0].model_fields_set is ps[1].model_fields_set is ps[2].model_fields_set
    assert ps[0].model_fields_set == set("abcdef")
    assert sys.getsizeof(ps[0].model_fields_set) > sys.getsizeof({1, 2, 3, 4})  # the big one
    other = _Point.model_validate({"a": 1})
    assert other.model_fields_set == {"a"} and other.model_fields_set is not ps[0].model_fields_set
    # pydantic's copies never change the shared set
    c1 = other.model_copy(update={"b": 2})
    c2, c3 = copy.copy(other), copy.deepcopy(other)
    assert c1.model_fields_set == {"a", "b"} and other.model_fields_set == {"a"}
    assert c2.model_fields_set == c3.model_fields_set == {"a"}
    assert _Point.model_validate({"a": 5}).model_fields_set == {"a"}
    # a model that is not frozen keeps its own set (it may add names to it)

    class Loose(_Point):
        model_config = {**_Point.model_config, "frozen": False}

    lo = [Loose.model_validate({"a": 1}) for _ in range(2)]
    assert lo[0].model_fields_set is not lo[1].model_fields_set
    lo[0].b = 3
    assert lo[0].model_fields_set == {"a", "b"} and lo[1].model_fields_set == {"a"}
