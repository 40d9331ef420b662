"""The driver registry: each driver's config model and source factory, in one list.

Adding a driver is one folder (``drivers/<name>/`` with its config model, its source and a
`Driver` entry in its ``__init__``) and one line here (``docs/drivers.md``, "Adding a driver").
``config/`` builds the ``devices`` union from this list; `make_sources` builds the sources.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from drivers import dlt645, hj212, modbus, mqtt
from drivers._config import DeviceConfig, SerialLine
from drivers._source import AnyDriver, Quarantine, Sink, Source, SourceContext
from drivers.modbus import ModbusLinks
from mrv_core import Metrics

#: Every driver, in the order its sources are built.
DRIVERS: tuple[AnyDriver, ...] = (
    modbus.TCP_DRIVER,
    modbus.RTU_DRIVER,
    dlt645.DRIVER,
    mqtt.DRIVER,
    hj212.DRIVER,
)

_BY_NAME: Mapping[str, AnyDriver] = MappingProxyType({d.name: d for d in DRIVERS})
#: The ``driver`` value of each device model.
DRIVER_MODELS: Mapping[str, type[DeviceConfig]] = MappingProxyType(
    {d.name: d.model for d in DRIVERS})


def make_sources(devices: Sequence[DeviceConfig], sink: Sink, metrics: Metrics,
                 links: ModbusLinks | None = None, *,
                 drivers: Sequence[AnyDriver] = DRIVERS,
                 quarantine: Quarantine | None = None) -> list[Source]:
    """The sources for ``devices`` (each config's ``driver`` field picks the factory among
    ``drivers``). ``links``: the Modbus connections, shared with the control service (one per
    device). ``quarantine``: where message sources keep what they refuse (dead letters).
    Sources come in the order of their devices, the grouped ones (listeners) last.
    Raises ValueError when two buses use one serial port, TypeError for an unknown model."""
    by_name = _BY_NAME if drivers is DRIVERS else {d.name: d for d in drivers}
    ports: dict[str, str] = {}
    ctx = SourceContext(sink, metrics, links, quarantine)
    out: list[Source] = []
    groups: dict[tuple[str, str], tuple[AnyDriver, list[DeviceConfig]]] = {}
    for dev in devices:
        if isinstance(dev, SerialLine):
            if dev.port in ports:
                raise ValueError(f"serial port {dev.port} is used by buses {ports[dev.port]!r} and "
                                 f"{dev.name!r}; expected one bus per port (put the units/meters "
                                 "of one line under one bus)")
            ports[dev.port] = dev.name
        drv = by_name.get(dev.driver)
        if drv is None or not isinstance(dev, drv.model):
            raise TypeError(f"no source for device config {type(dev).__name__}")
        if drv.group is None:
            out.append(drv.build([dev], ctx))
        else:
            groups.setdefault((drv.name, drv.group(dev)), (drv, []))[1].append(dev)
    # grouped sources (listeners) after the others, in the order of their first device
    out.extend(drv.build(group, ctx) for drv, group in groups.values())
    return out
