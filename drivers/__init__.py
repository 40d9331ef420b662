"""Acquisition drivers. Every source turns one kind of device or feed into `Reading` batches.

Each driver is one folder (``modbus``, ``dlt645``, ``mqtt``, ``hj212``) that owns its config
model and registers itself (config model -> source factory) in ``drivers/_registry.py``;
``config`` builds the ``devices`` list from that registry. `make_sources` builds the sources for
the configured devices; a source's ``run()`` polls or listens forever and hands lists of
readings to the sink. The daemon runs each source as one supervised task, so one failing device,
bus or broker never stalls the others:

* ``modbus_tcp``: one source per device (one connection).
* ``modbus_rtu`` / ``dlt645``: one source per serial port; its units/meters share one lock.
* ``mqtt``: one source per configured broker session.
* ``hj212``: one listener per ``listen`` address; devices sharing an address are told apart by
  their MN.

A sink is awaited, and the readings count as handed over when it returns. A sink wrapped in
`Acknowledging` is an `AckSink` as well: it takes ``on_commit``, a callable it calls once the
readings are committed; the MQTT source acknowledges its messages there.
"""

from drivers._config import MAX_DEVICES, MAX_POINTS, DeviceConfig, Polling, SerialLine
from drivers._errors import DeviceUnreachable, DriverError, LinkDown
from drivers._registry import DRIVER_MODELS, DRIVERS, make_sources
from drivers._source import (
    Acknowledging,
    AckSink,
    Driver,
    Quarantine,
    Sink,
    Source,
    SourceContext,
    ack_sink_of,
)

__all__ = [
    "DRIVERS",
    "DRIVER_MODELS",
    "MAX_DEVICES",
    "MAX_POINTS",
    "AckSink",
    "Acknowledging",
    "DeviceConfig",
    "DeviceUnreachable",
    "Driver",
    "DriverError",
    "LinkDown",
    "Polling",
    "Quarantine",
    "SerialLine",
    "Sink",
    "Source",
    "SourceContext",
    "ack_sink_of",
    "make_sources",
]
