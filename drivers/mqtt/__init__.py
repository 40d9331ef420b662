"""The MQTT driver: one persistent broker session per device, JSON payloads onto points, and
its config models."""

from __future__ import annotations

from collections.abc import Sequence

from drivers._source import Driver, Source, SourceContext
from drivers.mqtt._config import MqttDevice, MqttPoint


def _source(devices: Sequence[MqttDevice], ctx: SourceContext) -> Source:
    from drivers.mqtt._source import MqttSource

    (device,) = devices
    return MqttSource(device, ctx.sink, ctx.metrics, quarantine=ctx.quarantine)


#: One source per configured broker session.
DRIVER = Driver("mqtt", MqttDevice, _source)

__all__ = ["DRIVER", "MqttDevice", "MqttPoint"]
