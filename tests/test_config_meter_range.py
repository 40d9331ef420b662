"""Issue 11, item 8: one range per meter. A counter wrap in a batch was under-reported (the
``emissions:`` block lacked ``register_max`` while ``checks.counter`` had it) and check-config
accepted the config. The wrap range now comes from the point's register where it defines one
(Modbus unsigned integers with their scale, DL/T 645 energy items); a block that contradicts it,
or two blocks that disagree, are refused."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from cleaning import BatchEmissions, EmissionPoint
from cleaning._batch_emissions import emission
from cleaning._emissions import to_grams
from cleaning._stream import PointCleaner
from config import ConfigError, parse_config
from mrv_core._records import Quality, Reading
from tests.test_config import GOOD

HEAD = GOOD[:GOOD.index("devices:")]


def _config(device: dict[str, Any]) -> str:
    import json

    return HEAD + "devices:\n  - " + json.dumps(device) + "\n"


def _modbus(point: dict[str, Any]) -> dict[str, Any]:
    return {"driver": "modbus_tcp", "name": "m", "host": "127.0.0.1",
            "points": [{"id": "e", "address": 0, "unit": "kWh", **point}]}


def _mqtt(point: dict[str, Any]) -> dict[str, Any]:
    return {"driver": "mqtt", "name": "m", "host": "127.0.0.1", "client_id": "gw",
            "points": [{"id": "e", "topic": "t/e", "value": "v", "unit": "kWh", **point}]}


def _dlt645(point: dict[str, Any]) -> dict[str, Any]:
    return {"driver": "dlt645", "name": "bus", "port": "/dev/ttyUSB0",
            "meters": [{"name": "m", "address": "000000123456",
                        "points": [{"id": "e", **point}]}]}


POWER = {"scope": 2, "method": "electricity", "factor": "CN-GRID-ETS"}
COUNTER = {"counter": {"register_max": 6553.5, "resolution": 0.1, "max_step": 50}}


def _point(text: str) -> Any:
    [p] = parse_config(text).points()
    return p


def test_a_wrap_in_a_batch_counts_what_the_register_counted() -> None:
    """The item's config: a uint16 register of 0.1 kWh, the counter check with its range, the
    emissions block without. The batch header's CO2e is that of the energy the raw register
    counted (increments modulo 2^16, computed here without the gateway's code)."""
    p = _point(_config(_modbus({"type": "uint16", "scale": 0.1, "checks": COUNTER,
                                "emissions": POWER})))
    raw = [65000, 65300, 65535, 120, 400, 900]
    counted_kwh = sum((b - a) % 65536 for a, b in itertools.pairwise(raw)) * 0.1
    want = to_grams(emission(counted_kwh, "kWh", p.emissions).kg_co2)
    assert counted_kwh == pytest.approx(143.6)
    em = BatchEmissions([EmissionPoint(p.id, p.unit, p.emissions)])
    values = [r * 0.1 for r in raw]
    # the cleaner (with the same range) flags the wrap as a rollover, a valid reading
    flags = PointCleaner(p.checks).apply(np.array([i * 10**9 for i in range(len(raw))]),
                                         np.array(values), np.zeros(len(raw), np.uint32), 0)
    assert flags.tolist() == [0, 0, 0, int(Quality.COUNTER_ROLLOVER), 0, 0]
    records = [Reading(point_id="e", ts_ns=i, value=v, unit="kWh", source="t", quality=int(q))
               for i, (v, q) in enumerate(zip(values, flags.tolist(), strict=True))]
    got = em.stage(records)
    assert got[1] == pytest.approx(want, abs=1) and got[0] == got[2] == 0
    assert want > 80_000  # 143.6 kWh at 0.5703 kg/kWh: about 82 kg


@pytest.mark.parametrize(("device", "rmax", "res"), [
    (_modbus({"type": "uint16", "scale": 0.1, "emissions": POWER}), 6553.5, 0.1),
    (_modbus({"type": "uint32", "scale": 0.01, "emissions": POWER,
              "checks": {"counter": {"max_step": 100}}}), 42949672.95, 0.01),
    (_modbus({"type": "uint64", "emissions": POWER}), 2.0**64 - 1, 1.0),
    (_dlt645({"di": "00010000", "emissions": POWER, "checks": {"counter": {"max_step": 5}}}),
     999999.99, 0.01),  # XXXXXX.XX kWh in BCD
    (_mqtt({"emissions": POWER, "checks": {"counter": {"register_max": 9999.9,
                                                        "resolution": 0.1, "max_step": 5}}}),
     9999.9, 0.1),
    (_mqtt({"emissions": {**POWER, "register_max": 99999.0, "resolution": 1},
            "checks": {"counter": {"max_step": 5}}}), 99999.0, 1.0),
])
def test_the_range_is_derived_or_shared(device: dict[str, Any], rmax: float, res: float) -> None:
    p = _point(_config(device))
    assert p.emissions.register_max == pytest.approx(rmax, rel=1e-12)
    assert p.emissions.resolution == pytest.approx(res, rel=1e-12)
    if p.checks is not None:
        assert p.checks.counter.register_max == p.emissions.register_max
        assert p.checks.counter.resolution == p.emissions.resolution


@pytest.mark.parametrize(("device", "fragment"), [
    # the raw maximum where the scaled one is meant: the item's kind of mistake
    (_modbus({"type": "uint32", "scale": 0.01, "emissions": {**POWER, "register_max": 4294967295}}),
     "emissions.register_max (4294967295.0) contradicts the register: a uint32 register scaled "
     "by 0.01 gives 42949672.95"),
    (_modbus({"type": "uint16", "scale": 0.1, "checks": {"counter": {"register_max": 65535,
                                                                    "max_step": 5}}}),
     "checks.counter.register_max (65535.0) contradicts the register"),
    (_modbus({"type": "uint16", "scale": 0.1, "emissions": {**POWER, "resolution": 1}}),
     "emissions.resolution (1.0) contradicts the register"),
    (_modbus({"type": "uint16", "scale": 0.1, "offset": 5, "emissions": POWER}),
     "needs scale > 0 and offset 0"),
    (_dlt645({"di": "00010000", "emissions": {**POWER, "register_max": 1e6}}),
     "contradicts the register: DL/T 645 item 00010000"),
    (_mqtt({"emissions": {**POWER, "register_max": 1000},
            "checks": {"counter": {"register_max": 999, "max_step": 5}}}),
     "checks.counter.register_max (999.0) and emissions.register_max (1000.0) differ"),
    (_mqtt({"checks": {"counter": {"max_step": 5}}}),
     "checks.counter.register_max is required: an MQTT point does not define the range"),
    (_modbus({"type": "float32", "checks": {"counter": {"max_step": 5}}}),
     "checks.counter.register_max is required: a float32 register"),
    (_modbus({"type": "uint16", "checks": {"counter": {"max_step": 70000}}}),
     "counter.max_step (70000.0) must be less than counter.register_max (65535.0)"),
])
def test_contradictions_are_refused(device: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(_config(device), source="bad.yaml")
    [issue] = ei.value.issues
    assert fragment in issue.message, issue
    assert issue.path.startswith("devices[0]") and issue.line == 10, issue  # the device's line


def test_points_without_a_range_keep_theirs() -> None:
    """Emissions alone on a point whose register defines no range (float, MQTT): no
    register_max, a decrease counts 0 as documented."""
    p = _point(_config(_mqtt({"emissions": POWER})))
    assert p.emissions.register_max is None and p.checks is None
    q = _point(_config(_modbus({"type": "uint16", "scale": 0.1})))
    assert q.emissions is None and q.checks is None
