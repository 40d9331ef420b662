"""Config models: the YAML shape, and one test per validation error."""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from cleaning._config import (
    AggregationConfig,
    ChecksConfig,
    CounterCheck,
    ElectricityContract,
    FlatlineCheck,
    RangeCheck,
    RateCheck,
    SpikeCheck,
    SubstitutionConfig,
    SubstitutionTier,
    TimestampCheck,
)

EXAMPLE = """
checks:
  range: {min: 0, max: 500}
  rate_of_change: {max_per_s: 20}
  spike: {window: 21, k: 4.0, min_deviation: 0.5}
  flatline: {count: 30, duration_s: 600, tolerance: 0.0}
  sentinels: [65535, -32768]
  timestamps: {max_future_s: 5, max_age_s: 86400}
  duplicates: true
  counter: {register_max: 4294967295, resolution: 1, max_rate_per_s: 50}
"""


def test_yaml_example() -> None:
    cfg = ChecksConfig.model_validate(yaml.safe_load(EXAMPLE)["checks"])
    assert cfg.range == RangeCheck(min=0, max=500)
    assert cfg.spike == SpikeCheck(window=21, k=4.0, min_deviation=0.5)
    assert cfg.sentinels == (65535.0, -32768.0)
    assert cfg.counter is not None and cfg.counter.max_step is None
    # round trip through plain data
    assert ChecksConfig.model_validate(cfg.model_dump()) == cfg


def test_defaults() -> None:
    cfg = ChecksConfig()
    assert cfg.range is None and cfg.spike is None and cfg.counter is None
    assert cfg.duplicates is True and cfg.sentinels == ()
    assert SpikeCheck() == SpikeCheck(window=21, k=4.0, min_deviation=0.0)
    assert TimestampCheck().max_future_s == 5.0 and TimestampCheck().max_age_s is None


def test_models_are_frozen_and_hashable() -> None:
    cfg = ChecksConfig(range=RangeCheck(min=0, max=1), sentinels=(1.0,))
    with pytest.raises(ValidationError):
        cfg.__setattr__("duplicates", False)
    assert hash(cfg) == hash(ChecksConfig(range=RangeCheck(min=0, max=1), sentinels=(1.0,)))


def errors(model: type[BaseModel], data: Any) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ValidationError) as e:
        model.model_validate(data)
    return [(tuple(err["loc"]), err["msg"]) for err in e.value.errors()]


@pytest.mark.parametrize(
    ("data", "loc", "message"),
    [
        ({"range": {"min": 5, "max": 1}}, ("range",), "range.min (5.0) must be less than range.max"),
        ({"range": {"min": 1, "max": 1}}, ("range",), "must be less than"),
        ({"range": {}}, ("range",), "range needs at least one of min or max"),
        ({"range": {"min": "inf"}}, ("range", "min"), "finite number"),
        ({"rate_of_change": {"max_per_s": 0}}, ("rate_of_change", "max_per_s"), "greater than 0"),
        ({"rate_of_change": {}}, ("rate_of_change", "max_per_s"), "Field required"),
        ({"spike": {"window": 2}}, ("spike", "window"), "spike.window must be at least 3"),
        ({"spike": {"window": 5000}}, ("spike", "window"), "at most 1000"),
        ({"spike": {"k": -1}}, ("spike", "k"), "greater than 0"),
        ({"spike": {"min_deviation": -1}}, ("spike", "min_deviation"), "greater than or equal"),
        ({"flatline": {}}, ("flatline",), "flatline needs count, duration_s or both"),
        ({"flatline": {"count": 1}}, ("flatline", "count"), "flatline.count must be at least 2"),
        ({"flatline": {"count": 3, "tolerance": -0.1}}, ("flatline", "tolerance"), "greater than"),
        ({"flatline": {"duration_s": 0}}, ("flatline", "duration_s"), "greater than 0"),
        ({"sentinels": [1, "nan"]}, ("sentinels",), "sentinels cannot contain NaN"),
        ({"sentinels": [1, 1.0]}, ("sentinels",), "the same value twice"),
        ({"timestamps": {"max_future_s": -1}}, ("timestamps", "max_future_s"), "greater than"),
        ({"timestamps": {"max_age_s": 0}}, ("timestamps", "max_age_s"), "greater than 0"),
        ({"counter": {"register_max": 100}}, ("counter",), "counter needs max_step"),
        ({"counter": {"register_max": 0, "max_step": 1}}, ("counter", "register_max"),
         "greater than 0"),
        (
            {"counter": {"register_max": 100, "max_step": 100}},
            ("counter",),
            "counter.max_step (100.0) must be less than counter.register_max",
        ),
        (
            {"counter": {"register_max": 1, "resolution": 2, "max_step": 0.5}},
            ("counter",),
            "counter.resolution (2.0) must not exceed",
        ),
        ({"duplicates": "maybe"}, ("duplicates",), "valid boolean"),
        ({"spikes": {"window": 5}}, ("spikes",), "Extra inputs are not permitted"),
        ({"range": {"min": 0, "maximum": 5}}, ("range", "maximum"), "Extra inputs"),
    ],
)
def test_checks_validation_errors(data: dict[str, Any], loc: tuple[str, ...], message: str) -> None:
    errs = errors(ChecksConfig, data)
    assert any(err_loc == loc and message in msg for err_loc, msg in errs), errs


def test_direct_construction_validates_too() -> None:
    with pytest.raises(ValidationError, match="must be less than"):
        RangeCheck(min=2, max=1)
    with pytest.raises(ValidationError):
        RateCheck(max_per_s=-1)
    with pytest.raises(ValidationError, match="count, duration_s"):
        FlatlineCheck()
    with pytest.raises(ValidationError, match="max_rate_per_s"):
        CounterCheck(register_max=10)
    assert RangeCheck(min=0).max is None and RangeCheck(max=0).min is None


def test_a_counter_without_its_range_cannot_run() -> None:
    """``counter.register_max`` may be left to the point's register (config/_schema.py); a
    cleaner never runs without it."""
    from cleaning._stream import PointCleaner

    cfg = ChecksConfig.model_validate({"counter": {"max_step": 1}})
    assert cfg.counter is not None and cfg.counter.register_max is None
    with pytest.raises(ValueError, match=r"counter.register_max is not set"):
        PointCleaner(cfg)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "Field required"),
        ({"expected_per_minute": 0}, "greater than 0"),
        ({"expected_per_minute": 60, "min_minute_fraction": 0}, "greater than 0"),
        ({"expected_per_minute": 60, "min_minute_fraction": 1.5}, "less than or equal to 1"),
        ({"expected_per_minute": 60, "min_valid_minutes": 61}, "less than or equal to 60"),
        ({"expected_per_minute": 60, "min_valid_minutes": 0}, "greater than or equal to 1"),
    ],
)
def test_aggregation_validation_errors(data: dict[str, Any], message: str) -> None:
    assert any(message in msg for _, msg in errors(AggregationConfig, data))


def test_aggregation_defaults() -> None:
    a = AggregationConfig(expected_per_minute=60)
    assert (a.min_minute_fraction, a.min_valid_minutes) == (0.75, 45)


CATCH_ALL = {"min_availability": 0, "methods": ["lookback_max"]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tiers": []}, "at least one tier"),
        ({"tiers": [{"min_availability": 0, "methods": ["mean"]}]}, "unknown substitution method"),
        ({"tiers": [{"min_availability": 0, "methods": ["p0"]}]}, "between p1 and p99"),
        ({"tiers": [{"min_availability": 0, "methods": ["p100"]}]}, "unknown substitution"),
        ({"tiers": [{"min_availability": 0, "methods": ["p90\n"]}]}, "unknown substitution"),
        ({"tiers": [{"min_availability": 0, "methods": []}]}, "at least one method"),
        ({"tiers": [{"min_availability": 101, "methods": ["p90"]}]}, "less than or equal to 100"),
        (
            {"tiers": [{"min_availability": 0, "max_gap_hours": 0, "methods": ["p90"]}]},
            "greater than or equal to 1",
        ),
        ({"tiers": [{"min_availability": 90, "methods": ["p90"]}]}, "must apply to every hour"),
        (
            {"tiers": [{"min_availability": 0, "max_gap_hours": 5, "methods": ["p90"]}]},
            "must apply to every hour",
        ),
        ({"tiers": [{"min_availability": 0, "methods": ["max_potential"]}]}, "max_potential must"),
        ({"tiers": [CATCH_ALL], "lookback_hours": 0}, "greater than or equal to 1"),
    ],
)
def test_substitution_validation_errors(data: dict[str, Any], message: str) -> None:
    assert any(message in msg for _, msg in errors(SubstitutionConfig, data))


def test_substitution_methods_accepted() -> None:
    tier = SubstitutionTier(min_availability=0, methods=("hb_ha_average", "p90", "p99.5", "lookback_max"))
    assert SubstitutionConfig(tiers=(tier,)).tiers[0].methods[2] == "p99.5"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"id": "", "instrument": "ppa", "mwh": 1}, "at least 1 character"),
        ({"id": "a", "instrument": "rec", "mwh": 1}, "Input should be"),
        ({"id": "a", "instrument": "ppa", "mwh": -1}, "greater than or equal to 0"),
        ({"id": "a", "instrument": "ppa", "mwh": 1, "kg_co2_per_kwh": math.nan}, "finite"),
    ],
)
def test_contract_validation_errors(data: dict[str, Any], message: str) -> None:
    assert any(message in msg for _, msg in errors(ElectricityContract, data))


def test_identical_checks_blocks_share_one_model() -> None:
    """A plant repeats one ``checks:`` block on thousands of points: one model for them all
    (about 1.7 KB each otherwise), equal to what validating each one gives."""
    from pydantic import TypeAdapter

    import cleaning._config as mod
    from cleaning import SharedChecks

    shared = TypeAdapter(SharedChecks)
    block = {"range": {"min": 0, "max": 500}, "timestamps": {"max_future_s": 5},
             "sentinels": [65535]}
    same = {"sentinels": [65535], "timestamps": {"max_future_s": 5},
            "range": {"max": 500, "min": 0}}  # the same keys in another order
    a, b = shared.validate_python(block), shared.validate_python(same)
    assert a is b and a == ChecksConfig.model_validate(block)
    assert a is not ChecksConfig.model_validate(block)  # a model validated alone is its own
    other = shared.validate_python({**block, "range": {"min": 0, "max": 501}})
    assert other is not a and other.range is not None and other.range.max == 501
    # a bad block is refused every time, never remembered
    for _ in range(2):
        with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
            shared.validate_python({**block, "rnage": {}})
    # bounded: past the cap, further blocks are models of their own
    saved = dict(mod._shared_checks)
    try:
        mod._shared_checks.clear()
        mod._shared_checks.update({str(i): a for i in range(mod.CHECKS_SHARED_MAX)})
        c1 = shared.validate_python({"range": {"min": -7}})
        c2 = shared.validate_python({"range": {"min": -7}})
        assert c1 == c2 and c1 is not c2 and len(mod._shared_checks) == mod.CHECKS_SHARED_MAX
    finally:
        mod._shared_checks.clear()
        mod._shared_checks.update(saved)


def test_a_block_object_is_known_by_identity_within_one_validation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same block object (a YAML alias) within one validation with a context is not
    serialised again; a block changed between two validations gives its new model."""
    from pydantic import TypeAdapter

    import cleaning._config as mod
    from cleaning import SharedChecks

    many = TypeAdapter(list[SharedChecks])
    dumps = mod.json.dumps
    calls: list[object] = []

    def counted(obj: object, **kw: Any) -> str:
        calls.append(obj)
        return dumps(obj, **kw)

    monkeypatch.setattr(mod.json, "dumps", counted)
    block: dict[str, Any] = {"range": {"min": 1, "max": 2}}
    got = many.validate_python([block] * 50, context={})
    assert len(calls) == 1 and all(g is got[0] for g in got)
    block["range"] = {"min": 1, "max": 3}  # changed: the next validation sees it
    again = many.validate_python([block] * 3, context={})
    assert again[0].range is not None and again[0].range.max == 3 and len(calls) == 2
    many.validate_python([block] * 3)  # no context: by content each time
    assert len(calls) == 5


def test_a_gateway_config_shares_its_points_checks(tmp_path: Any) -> None:
    """Through the gateway's config loader: 200 points with the same block, one model."""
    from config import parse_config

    block = {"range": {"min": 0, "max": 40_000}, "timestamps": {"max_future_s": 5}}
    text = yaml.safe_dump({
        "gateway": {"id": "gw1", "signing_key": "keys/ed25519.key"},
        "chain": {"rpc_url": "http://127.0.0.1:8545", "chain_id": 31337,
                  "contract": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
                  "account_key": "keys/evm.key"},
        "devices": [{"driver": "modbus_tcp", "name": f"dev{i}", "host": "127.0.0.1",
                     "points": [{"id": f"d{i}.r{j}", "address": j, "type": "uint16", "unit": "kW",
                                 "checks": block} for j in range(20)]} for i in range(10)],
    })
    cfg = parse_config(text, base_dir=tmp_path)
    checks = [p.checks for p in cfg.points()]
    assert len(checks) == 200 and all(c is checks[0] for c in checks)
    # the same written out without YAML anchors: 200 blocks of the same text, one model
    unaliased = text.replace("&id001", "").replace("*id001", yaml.safe_dump(block,
                                                        default_flow_style=True).strip())
    assert "*id001" in text and "*id001" not in unaliased
    cfg2 = parse_config(unaliased, base_dir=tmp_path)
    assert all(p.checks is checks[0] for p in cfg2.points())
