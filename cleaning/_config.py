"""Configuration models for the cleaning checks, aggregation and substitution.

Every model is a frozen pydantic v2 model that forbids unknown keys, so a typo in the YAML is
an error and not a silently ignored option. Validation messages name the field and the reason;
the gateway's config loader prefixes them with the YAML path.

The YAML shape under each point is::

    checks:
      range: {min: 0, max: 500}
      rate_of_change: {max_per_s: 20}
      spike: {window: 21, k: 4.0, min_deviation: 0.5}
      flatline: {count: 30, duration_s: 600, tolerance: 0.0}
      sentinels: [65535, -32768]
      timestamps: {max_future_s: 5, max_age_s: 86400}
      duplicates: true
      counter: {register_max: 4294967295, resolution: 1, max_rate_per_s: 50}

Every key is optional; a missing key switches that check off (``duplicates`` is on by default).
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)

__all__ = [
    "AggregationConfig",
    "ChecksConfig",
    "CounterCheck",
    "ElectricityContract",
    "FlatlineCheck",
    "RangeCheck",
    "RateCheck",
    "SharedChecks",
    "SpikeCheck",
    "SubstitutionConfig",
    "SubstitutionTier",
    "TimestampCheck",
]

_MODEL_CONFIG = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
#: A duration in seconds: at most 100 years (a longer one is a mistake, and its nanoseconds
#: would not fit the int64 timestamps the checks compare).
_MAX_S = 3_155_760_000.0
Seconds = Annotated[float, Field(gt=0, le=_MAX_S)]
NonNegativeSeconds = Annotated[float, Field(ge=0, le=_MAX_S)]
#: Hours of history a substitution rule may ask for: at most 10 years.
_MAX_HOURS = 87_660


class RangeCheck(BaseModel):
    """Physical range: a value below ``min`` or above ``max`` gets ``Quality.RANGE``.

    Either bound may be left out for a one-sided check; at least one is required.
    """

    model_config = _MODEL_CONFIG

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> RangeCheck:
        if self.min is None and self.max is None:
            raise ValueError("range needs at least one of min or max")
        if self.min is not None and self.max is not None and not self.min < self.max:
            raise ValueError(f"range.min ({self.min}) must be less than range.max ({self.max})")
        return self


class RateCheck(BaseModel):
    """Rate of change: ``|Δvalue| / Δt`` above ``max_per_s`` (value units per second) gets
    ``Quality.RATE_OF_CHANGE``."""

    model_config = _MODEL_CONFIG

    max_per_s: PositiveFloat


class SpikeCheck(BaseModel):
    """Hampel filter on a trailing window of the previous ``window`` values.

    A value is a spike when ``|x - median| > max(k * 1.4826 * MAD, min_deviation)``.
    ``min_deviation`` (value units, default 0) keeps a quantised signal whose MAD is 0 from
    turning every step of one resolution unit into a spike.
    """

    model_config = _MODEL_CONFIG

    window: int = 21
    k: PositiveFloat = 4.0
    min_deviation: NonNegativeFloat = 0.0

    @field_validator("window")
    @classmethod
    def _window(cls, v: int) -> int:
        if v < 3:
            raise ValueError(f"spike.window must be at least 3 (got {v})")
        if v > 1000:
            raise ValueError(f"spike.window must be at most 1000 (got {v})")
        return v


class FlatlineCheck(BaseModel):
    """Stuck value: consecutive samples that each differ from the previous one by at most
    ``tolerance`` form a run; a sample is flagged once its run has ``count`` samples or has
    lasted ``duration_s`` seconds. At least one of ``count`` and ``duration_s`` is required."""

    model_config = _MODEL_CONFIG

    count: int | None = None
    duration_s: Seconds | None = None
    tolerance: NonNegativeFloat = 0.0

    @field_validator("count")
    @classmethod
    def _count(cls, v: int | None) -> int | None:
        if v is not None and v < 2:
            raise ValueError(f"flatline.count must be at least 2 (got {v})")
        return v

    @model_validator(mode="after")
    def _one_limit(self) -> FlatlineCheck:
        if self.count is None and self.duration_s is None:
            raise ValueError("flatline needs count, duration_s or both")
        return self


class TimestampCheck(BaseModel):
    """Timestamp checks. Duplicate and non-monotonic timestamps are always checked when this
    section is present; ``max_future_s`` is the allowed clock skew ahead of ``now``;
    ``max_age_s`` (optional) flags readings older than ``now - max_age_s``."""

    model_config = _MODEL_CONFIG

    max_future_s: NonNegativeSeconds = 5.0
    max_age_s: Seconds | None = None


class CounterCheck(BaseModel):
    """Cumulative counter (energy register) checks.

    ``register_max`` is the largest value the register shows before it wraps to 0 and
    ``resolution`` its step, both in engineering units (for a raw uint32 register scaled by
    0.01 kWh: ``register_max: 42949672.95``, ``resolution: 0.01``). An increase is plausible
    when it is at most ``max_step`` per sample or ``max_rate_per_s`` times the elapsed time
    (whichever allows more); at least one of the two is required.

    Under a point of the gateway's config both are taken from the point's register when it
    defines them (a Modbus unsigned integer with its scale, a DL/T 645 energy item), and must
    not contradict it; for other points ``register_max`` comes from here or from the point's
    ``emissions:`` block (config/_schema.py, `meter_range`). A `PointCleaner` needs it set.
    """

    model_config = _MODEL_CONFIG

    register_max: PositiveFloat | None = None
    resolution: PositiveFloat = 1.0
    max_step: PositiveFloat | None = None
    max_rate_per_s: PositiveFloat | None = None

    @model_validator(mode="after")
    def _limits(self) -> CounterCheck:
        if self.max_step is None and self.max_rate_per_s is None:
            raise ValueError("counter needs max_step, max_rate_per_s or both")
        if self.register_max is None:
            return self  # from the point's register (`config._schema.meter_range`)
        if self.resolution > self.register_max:
            raise ValueError(
                f"counter.resolution ({self.resolution}) must not exceed "
                f"counter.register_max ({self.register_max})"
            )
        if self.max_step is not None and self.max_step >= self.register_max:
            raise ValueError(
                f"counter.max_step ({self.max_step}) must be less than "
                f"counter.register_max ({self.register_max})"
            )
        return self


class ChecksConfig(BaseModel):
    """The ``checks:`` section of one point. Every check is optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    range: RangeCheck | None = None
    rate_of_change: RateCheck | None = None
    spike: SpikeCheck | None = None
    flatline: FlatlineCheck | None = None
    sentinels: Annotated[tuple[float, ...], Field(max_length=64)] = ()
    timestamps: TimestampCheck | None = None
    duplicates: bool = True
    counter: CounterCheck | None = None

    @field_validator("sentinels")
    @classmethod
    def _sentinels(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        for s in v:
            if math.isnan(s):
                raise ValueError("sentinels cannot contain NaN (a NaN reading is a comm fault)")
        if len(set(v)) != len(v):
            raise ValueError("sentinels contains the same value twice")
        return v


#: Distinct ``checks:`` blocks shared as one model each (`SharedChecks`); past this many, each
#: further block is a model of its own.
CHECKS_SHARED_MAX = 4096
_shared_checks: dict[str, ChecksConfig] = {}


def _share_checks(data: Any, handler: ValidatorFunctionWrapHandler,
                  info: ValidationInfo) -> ChecksConfig:
    """Identical blocks (the usual case: one block repeated on every point of a kind of meter)
    give one shared model: a model is about 1.7 KB, and a plant has tens of thousands of
    points. The model is frozen, so sharing it changes nothing else. The key is the block as
    JSON with sorted keys; a block that is not plain JSON is not shared. Within one
    validation that has a context (the config loader's), the same block object (a YAML
    alias, ``*meter_checks``) is recognised by identity, without the JSON."""
    if type(data) is not dict:
        return cast(ChecksConfig, handler(data))
    memo: dict[int, tuple[object, ChecksConfig]] | None = None
    if type(info.context) is dict:  # alive for this validation only; its input is not changed
        memo = info.context.setdefault("_cleaning_shared_checks", {})
        hit = memo.get(id(data))
        if hit is not None and hit[0] is data:
            return hit[1]
    try:
        key = json.dumps(data, sort_keys=True)
    except (TypeError, ValueError):  # not plain JSON (a tuple key, a set)
        return cast(ChecksConfig, handler(data))
    got = _shared_checks.get(key)
    if got is None:
        got = cast(ChecksConfig, handler(data))
        if len(_shared_checks) < CHECKS_SHARED_MAX:
            _shared_checks[key] = got
    if memo is not None:
        memo[id(data)] = (data, got)  # holds the block: its id is not reused meanwhile
    return got


#: The type of a point's ``checks:`` field in the drivers' configs: a `ChecksConfig`, shared
#: with every other point whose block is the same.
SharedChecks = Annotated[ChecksConfig, WrapValidator(_share_checks)]


class AggregationConfig(BaseModel):
    """Minute and hour aggregation of one point.

    ``expected_per_minute`` is the number of readings a minute should hold (60 for a 1 s poll).
    A minute is valid with at least ``min_minute_fraction`` of them valid; an hour is valid with
    at least ``min_valid_minutes`` valid minutes.
    """

    model_config = _MODEL_CONFIG

    expected_per_minute: float = Field(gt=0, le=60_000)
    min_minute_fraction: float = Field(default=0.75, gt=0, le=1)
    min_valid_minutes: int = Field(default=45, ge=1, le=60)


_METHOD_RE = re.compile(r"^(hb_ha_average|lookback_max|max_potential|p(\d{1,2}(\.\d+)?))$")

SubstitutionMethod = str  # "hb_ha_average" | "lookback_max" | "max_potential" | "p90" ...


class SubstitutionTier(BaseModel):
    """One row of a missing-data table: applies when the monitor data availability (percent) is
    at least ``min_availability`` and the gap is at most ``max_gap_hours`` long (``None``: any
    length). The substitute value is the greatest of the values of ``methods``:

    * ``hb_ha_average`` - average of the valid hour before and the valid hour after the gap
    * ``pNN`` - the NN-th percentile (nearest rank) of the lookback hours
    * ``lookback_max`` - the maximum of the lookback hours
    * ``max_potential`` - the configured maximum potential value
    """

    model_config = _MODEL_CONFIG

    min_availability: float = Field(ge=0, le=100)
    max_gap_hours: int | None = Field(default=None, ge=1, le=_MAX_HOURS)
    methods: tuple[SubstitutionMethod, ...] = Field(max_length=8)

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("a substitution tier needs at least one method")
        for m in v:
            match = _METHOD_RE.fullmatch(m)
            if match is None:
                raise ValueError(
                    f"unknown substitution method {m!r}: use hb_ha_average, lookback_max, "
                    "max_potential or pNN (a percentile, 1-99)"
                )
            if match.group(2) is not None and not 0 < float(match.group(2)) < 100:
                raise ValueError(f"percentile method {m!r} must be between p1 and p99")
        return v


class SubstitutionConfig(BaseModel):
    """A missing-data substitution policy: ordered tiers (the first that applies wins), the
    lookback length in quality-assured hours, the availability window in operating hours, and
    the maximum potential value for ``max_potential``."""

    model_config = _MODEL_CONFIG

    name: str = Field(default="custom", max_length=256)
    source: str = Field(default="", max_length=1024)
    tiers: tuple[SubstitutionTier, ...] = Field(max_length=32)
    lookback_hours: int = Field(default=720, ge=1, le=_MAX_HOURS)
    max_lookback_clock_hours: int | None = Field(default=26_280, ge=1, le=_MAX_HOURS)
    availability_hours: int = Field(default=8760, ge=1, le=_MAX_HOURS)
    max_potential: float | None = None

    @model_validator(mode="after")
    def _catch_all(self) -> SubstitutionConfig:
        if not self.tiers:
            raise ValueError("substitution needs at least one tier")
        last = self.tiers[-1]
        if last.min_availability != 0 or last.max_gap_hours is not None:
            raise ValueError(
                "the last substitution tier must apply to every hour "
                "(min_availability: 0 and no max_gap_hours)"
            )
        uses_mpc = any("max_potential" in t.methods for t in self.tiers)
        if uses_mpc and self.max_potential is None:
            raise ValueError("a tier uses max_potential, so max_potential must be set")
        return self


class ElectricityContract(BaseModel):
    """A contractual instrument for market-based scope 2 (GHG Protocol Scope 2 Guidance):
    ``mwh`` of electricity bought with an emission factor of ``kg_co2_per_kwh`` (0 for
    renewable certificates, green-power trades and renewable PPAs)."""

    model_config = _MODEL_CONFIG

    id: str = Field(min_length=1)
    instrument: Literal["green_certificate", "green_power_trade", "ppa", "supplier_specific"]
    mwh: NonNegativeFloat
    kg_co2_per_kwh: NonNegativeFloat = 0.0
