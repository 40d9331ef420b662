"""The DL/T 645-2007 driver: frames, the bus poller, and its config models."""

from __future__ import annotations

from collections.abc import Sequence

from drivers._source import Driver, Source, SourceContext
from drivers.dlt645._config import Dlt645Bus, Dlt645Meter, Dlt645Point
from drivers.dlt645._frame import DATA_ITEMS


def _source(buses: Sequence[Dlt645Bus], ctx: SourceContext) -> Source:
    from drivers.dlt645._io import Dlt645BusPoller

    (bus,) = buses
    return Dlt645BusPoller(bus, ctx.sink, ctx.metrics)


#: One source per serial port; its meters share one lock.
DRIVER = Driver("dlt645", Dlt645Bus, _source)

__all__ = ["DATA_ITEMS", "DRIVER", "Dlt645Bus", "Dlt645Meter", "Dlt645Point"]
