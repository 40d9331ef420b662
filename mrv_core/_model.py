"""The base config model: unknown keys are errors, models are frozen, numbers are finite."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Base of the configuration models. A NaN scale or an infinite timeout is a mistake, never
    a setting; a misspelt key is an error, not a silently ignored one."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
