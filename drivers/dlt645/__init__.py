"""The DL/T 645-2007 driver: frames, the bus poller, and its config models."""

from __future__ import annotations

from collections.abc import Sequence

from drivers._source import Driver, Source, SourceContext
from drivers.dlt645._config import Dlt645Bus, Dlt645Meter, Dlt645Point
from drivers.dlt645._frame import (
    BROADCAST_ADDRESS,
    CTRL_READ_ADDRESS,
    CTRL_READ_DATA,
    DATA_ITEMS,
    DI_ACTIVE_POWER_TOTAL,
    DI_COMBINED_ACTIVE_TOTAL,
    DI_FORWARD_ACTIVE_TOTAL,
    DI_FREQUENCY,
    DI_PHASE_A_CURRENT,
    DI_PHASE_A_VOLTAGE,
    DI_POWER_FACTOR_TOTAL,
    DI_REVERSE_ACTIVE_TOTAL,
    FrameError,
    UnexpectedFrameError,
    build_address_reply,
    build_error_reply,
    build_reply,
    parse_frame,
    parse_request,
)


def _source(buses: Sequence[Dlt645Bus], ctx: SourceContext) -> Source:
    from drivers.dlt645._io import Dlt645BusPoller

    (bus,) = buses
    return Dlt645BusPoller(bus, ctx.sink, ctx.metrics)


#: One source per serial port; its meters share one lock.
DRIVER = Driver("dlt645", Dlt645Bus, _source)

__all__ = [
    "BROADCAST_ADDRESS",
    "CTRL_READ_ADDRESS",
    "CTRL_READ_DATA",
    "DATA_ITEMS",
    "DI_ACTIVE_POWER_TOTAL",
    "DI_COMBINED_ACTIVE_TOTAL",
    "DI_FORWARD_ACTIVE_TOTAL",
    "DI_FREQUENCY",
    "DI_PHASE_A_CURRENT",
    "DI_PHASE_A_VOLTAGE",
    "DI_POWER_FACTOR_TOTAL",
    "DI_REVERSE_ACTIVE_TOTAL",
    "DRIVER",
    "Dlt645Bus",
    "Dlt645Meter",
    "Dlt645Point",
    "FrameError",
    "UnexpectedFrameError",
    "build_address_reply",
    "build_error_reply",
    "build_reply",
    "parse_frame",
    "parse_request",
]
