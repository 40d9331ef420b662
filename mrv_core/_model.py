"""The base config model: unknown keys are errors, models are frozen, numbers are finite."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, model_validator

#: Distinct sets of field names shared by `StrictModel._shared_fields_set`; past this many,
#: a model keeps its own.
FIELDS_SETS_SHARED_MAX = 1024
_fields_sets: dict[frozenset[str], set[str]] = {}


class StrictModel(BaseModel):
    """Base of the configuration models. A NaN scale or an infinite timeout is a mistake, never
    a setting; a misspelt key is an error, not a silently ignored one."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def _shared_fields_set(self) -> Self:
        """Models that were given the same fields share one set of their names (pydantic's
        ``model_fields_set``). Pydantic builds it a name at a time, and from the fifth name
        on Python's set outgrows its inline table: 512 B more for each of a plant's tens of
        thousands of point models. A frozen model never changes the set; pydantic's copies
        (`model_copy`, `copy`, `deepcopy`) make their own before they change it."""
        if not self.model_config.get("frozen"):
            return self
        names = self.__pydantic_fields_set__
        key = frozenset(names)
        shared = _fields_sets.get(key)
        if shared is None:
            if len(_fields_sets) >= FIELDS_SETS_SHARED_MAX:
                return self
            shared = _fields_sets[key] = set(key)
        object.__setattr__(self, "__pydantic_fields_set__", shared)
        return self
