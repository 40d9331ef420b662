"""Cleaning and emissions accounting: pure checks over numpy arrays, the streaming `Cleaner`
that flags readings (never changes a value), aggregation, substitution, and CO2e."""

from cleaning._aggregate import HOUR_NS, Aggregate, aggregate, aggregate_hours, aggregate_minutes
from cleaning._batch_emissions import BatchEmissions, EmissionPoint, PointEmissions
from cleaning._config import (
    AggregationConfig,
    ChecksConfig,
    SharedChecks,
    SubstitutionConfig,
)
from cleaning._emissions import (
    EmissionResult,
    electricity_location_based,
    electricity_market_based,
    fuel_combustion,
    fuel_combustion_default,
    load_factors,
    purchased_heat,
    to_grams,
)
from cleaning._meter_range import meter_range
from cleaning._stream import Cleaner, PointCleaner, ResumeHistory
from cleaning._substitute import Substitute, part75_table1, substitute

__all__ = [
    "HOUR_NS",
    "Aggregate",
    "AggregationConfig",
    "BatchEmissions",
    "ChecksConfig",
    "Cleaner",
    "EmissionPoint",
    "EmissionResult",
    "PointCleaner",
    "PointEmissions",
    "ResumeHistory",
    "SharedChecks",
    "Substitute",
    "SubstitutionConfig",
    "aggregate",
    "aggregate_hours",
    "aggregate_minutes",
    "electricity_location_based",
    "electricity_market_based",
    "fuel_combustion",
    "fuel_combustion_default",
    "load_factors",
    "meter_range",
    "part75_table1",
    "purchased_heat",
    "substitute",
    "to_grams",
]
