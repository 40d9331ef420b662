"""The HJ 212 driver: a TCP listener for data loggers, frames and packets, and its config
models."""

from __future__ import annotations

from collections.abc import Sequence

from drivers._source import Driver, Source, SourceContext
from drivers.hj212._config import Hj212Device, Hj212Point
from drivers.hj212._frame import (
    CN_DATA_RESPONSE,
    CN_REALTIME_DATA,
    FLAG_ANSWER,
    VERSION_CODES,
    Hj212Error,
    build_frame,
    parse_frame,
)


def _source(devices: Sequence[Hj212Device], ctx: SourceContext) -> Source:
    from drivers.hj212._listener import Hj212Listener

    return Hj212Listener(list(devices), ctx.sink, ctx.metrics)


def _listen(device: Hj212Device) -> str:
    return device.listen


#: One listener per ``listen`` address; loggers sharing one are told apart by their MN.
DRIVER = Driver("hj212", Hj212Device, _source, group=_listen)

__all__ = [
    "CN_DATA_RESPONSE",
    "CN_REALTIME_DATA",
    "DRIVER",
    "FLAG_ANSWER",
    "VERSION_CODES",
    "Hj212Device",
    "Hj212Error",
    "Hj212Point",
    "build_frame",
    "parse_frame",
]
