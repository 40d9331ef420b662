"""Acquisition drivers. Every source turns one kind of device or feed into `Reading` batches.

`make_sources` builds the sources for the configured devices; a source's ``run()`` polls or
listens forever and hands lists of readings to the sink. The daemon runs each source as one
supervised task, so one failing device, bus or broker never stalls the others:

* ``modbus_tcp``: one source per device (one connection).
* ``modbus_rtu`` / ``dlt645``: one source per serial port; its units/meters share one lock.
* ``mqtt``: one source per configured broker session.
* ``hj212``: one listener per ``listen`` address; devices sharing an address are told apart by
  their MN.

A sink may take a keyword argument ``on_commit``: a callable the sink calls once the readings
are committed (the MQTT source acknowledges its messages there). A sink without it is awaited,
and the readings count as handed over when it returns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from drivers._errors import DeviceUnreachable, DriverError, LinkDown
from mrv_core import Metrics, Reading

if TYPE_CHECKING:
    from drivers.modbus import ModbusLinks

Sink = Callable[[list[Reading]], Awaitable[None]]


class Source(Protocol):
    name: str

    async def run(self) -> None: ...


def make_sources(devices: Sequence[object], sink: Sink, metrics: Metrics,
                 links: ModbusLinks | None = None) -> list[Source]:
    """The sources for ``devices`` (each config's ``driver`` field picks the class).
    ``links``: the Modbus connections, shared with the control service (one per device)."""
    from config._schema import Dlt645Bus, Hj212Device, ModbusRtuBus, ModbusTcpDevice, MqttDevice
    from drivers.dlt645._io import Dlt645BusPoller
    from drivers.hj212._listener import Hj212Listener
    from drivers.modbus._io import ModbusRtuBusPoller, ModbusTcpPoller
    from drivers.mqtt._source import MqttSource

    out: list[Source] = []
    listeners: dict[str, list[Hj212Device]] = {}
    ports: dict[str, str] = {}
    for d in devices:
        if isinstance(d, ModbusRtuBus | Dlt645Bus):
            if d.port in ports:
                raise ValueError(f"serial port {d.port} is used by buses {ports[d.port]!r} and "
                                 f"{d.name!r}; expected one bus per port (put the units/meters "
                                 "of one line under one bus)")
            ports[d.port] = d.name
        if isinstance(d, ModbusTcpDevice):
            out.append(ModbusTcpPoller(d, sink, metrics, links))
        elif isinstance(d, ModbusRtuBus):
            out.append(ModbusRtuBusPoller(d, sink, metrics, links))
        elif isinstance(d, Dlt645Bus):
            out.append(Dlt645BusPoller(d, sink, metrics))
        elif isinstance(d, MqttDevice):
            out.append(MqttSource(d, sink, metrics))
        elif isinstance(d, Hj212Device):
            listeners.setdefault(d.listen, []).append(d)
        else:  # pragma: no cover - the config schema admits only known drivers
            raise TypeError(f"no source for device config {type(d).__name__}")
    for group in listeners.values():
        out.append(Hj212Listener(group, sink, metrics))
    return out


__all__ = ["DeviceUnreachable", "DriverError", "LinkDown", "Sink", "Source", "make_sources"]
