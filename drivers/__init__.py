"""Acquisition drivers. Every source turns one kind of device or feed into `Reading` batches.

`make_sources` builds one source per configured device (one task each, named by the daemon);
a source's ``run()`` polls or listens forever and hands lists of readings to the sink.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from drivers._errors import DeviceUnreachable, DriverError
from gateway._metrics import Metrics
from gateway._records import Reading

Sink = Callable[[list[Reading]], Awaitable[None]]


class Source(Protocol):
    name: str

    async def run(self) -> None: ...


def make_sources(devices: Sequence[object], sink: Sink, metrics: Metrics) -> list[Source]:
    """One source per device config (the config's ``driver`` field picks the class)."""
    from config._schema import ModbusTcpDevice
    from drivers.modbus._io import ModbusTcpPoller

    out: list[Source] = []
    for d in devices:
        if isinstance(d, ModbusTcpDevice):
            out.append(ModbusTcpPoller(d, sink, metrics))
        else:  # pragma: no cover - the config schema admits only known drivers
            raise TypeError(f"no source for device config {type(d).__name__}")
    return out


__all__ = ["DeviceUnreachable", "DriverError", "Sink", "Source", "make_sources"]
