"""One range per cumulative meter (issue 11, item 8): ``checks.counter`` and ``emissions`` of a
point get the same ``register_max`` and ``resolution``. Used by the drivers' point models."""

from __future__ import annotations

import math

from pydantic import ValidationError

from cleaning._batch_emissions import PointEmissions
from cleaning._config import ChecksConfig, CounterCheck


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)


def meter_range(checks: ChecksConfig | None, emissions: PointEmissions | None,
                register: tuple[float, float] | None, what: str
                ) -> tuple[ChecksConfig | None, PointEmissions | None]:
    """One range per cumulative meter: ``checks.counter`` and ``emissions`` of a point get the
    same ``register_max`` and ``resolution``. ``register`` is what the point's register
    defines (``what`` names it) or None; a value given that contradicts it is refused, as are
    two blocks that give different values; what is left out is filled in. Raises ValueError."""
    counter = None if checks is None else checks.counter
    if counter is None and emissions is None:
        return checks, emissions
    c_max = None if counter is None else counter.register_max
    e_max = None if emissions is None else emissions.register_max
    c_res = counter.resolution if counter and "resolution" in counter.model_fields_set else None
    e_res = (emissions.resolution if emissions and "resolution" in emissions.model_fields_set
             else None)
    rmax: float | None
    res: float | None
    if register is not None:
        r_max, r_res = register
        for name, got, want in (("checks.counter.register_max", c_max, r_max),
                                ("emissions.register_max", e_max, r_max),
                                ("checks.counter.resolution", c_res, r_res),
                                ("emissions.resolution", e_res, r_res)):
            if got is not None and not _close(got, want):
                raise ValueError(f"{name} ({got}) contradicts the register: {what} gives "
                                 f"{want}; leave it out (it is derived from the register)")
        rmax, res = r_max, r_res
    else:
        for name, a, b in (("register_max", c_max, e_max), ("resolution", c_res, e_res)):
            if a is not None and b is not None and not _close(a, b):
                raise ValueError(f"checks.counter.{name} ({a}) and emissions.{name} ({b}) "
                                 "differ: one meter has one range")
        rmax = c_max if c_max is not None else e_max
        if rmax is None and counter is not None:
            raise ValueError(f"checks.counter.register_max is required: {what} does not "
                             "define the range (give it here or as emissions.register_max)")
        res = (c_res if c_res is not None else e_res if e_res is not None
               else None if counter is None else counter.resolution)
    if counter is not None and checks is not None:
        data = counter.model_dump(exclude_unset=True) | {"register_max": rmax}
        if res is not None:
            data["resolution"] = res
        try:
            counter = CounterCheck.model_validate(data)
        except ValidationError as e:
            raise ValueError("; ".join(str(x["msg"]).removeprefix("Value error, ")
                                       for x in e.errors())) from None
        checks = checks.model_copy(update={"counter": counter})
    if emissions is not None and rmax is not None:
        upd: dict[str, float] = {"register_max": rmax}
        if res is not None:
            upd["resolution"] = res
        emissions = emissions.model_copy(update=upd)
    return checks, emissions
