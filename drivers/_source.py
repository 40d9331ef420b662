"""The types a driver plugs in with: a `Source`, the sinks it feeds, and its `Driver` entry
(config model -> source factory) for the registry (``drivers/_registry.py``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from drivers._config import DeviceConfig
from drivers._link import ModbusLinks
from mrv_core import Metrics, Reading

#: Where a source hands its readings; the readings count as handed over when it returns.
Sink = Callable[[list[Reading]], Awaitable[None]]
#: Keeps a message a source cannot turn into readings as a dead letter:
#: ``(source, where, reason, raw bytes)``; returns once it is stored.
Quarantine = Callable[[str, str, str, bytes], Awaitable[None]]


class Source(Protocol):
    name: str

    async def run(self) -> None: ...


class AckSink(Protocol):
    """A sink that acknowledges: it calls ``on_commit`` once the readings are committed (the
    daemon's pipeline). A source that holds its input until then (MQTT PUBACKs) uses it."""

    def __call__(self, readings: list[Reading], on_commit: Callable[[], None] | None = None
                 ) -> Awaitable[None]: ...


@dataclass(frozen=True)
class Acknowledging:
    """An `AckSink` handed to the sources as a plain `Sink` (every source can use it); the
    sources that acknowledge find the `AckSink` in it (`ack_sink_of`) and pass ``on_commit``."""

    sink: AckSink

    async def __call__(self, readings: list[Reading]) -> None:
        await self.sink(readings)


def ack_sink_of(sink: Sink) -> AckSink | None:
    """The acknowledging sink inside ``sink``, or None when it is a plain `Sink`."""
    return sink.sink if isinstance(sink, Acknowledging) else None


@dataclass(frozen=True)
class SourceContext:
    """What every source factory gets besides its configs."""

    sink: Sink
    metrics: Metrics
    #: The Modbus connections, shared with the control service (one per device).
    links: ModbusLinks | None = None
    #: Where message sources keep the messages they refuse (dead letters); None: only counted.
    quarantine: Quarantine | None = None


C = TypeVar("C", bound=DeviceConfig)


@dataclass(frozen=True)
class Driver(Generic[C]):
    """One driver's registry entry: the ``driver`` value of the YAML, its config model, and the
    factory that builds one source. ``build`` gets one config, or, with ``group``, every config
    of one group (e.g. the HJ 212 loggers sharing one listen address)."""

    name: str
    model: type[C]
    build: Callable[[Sequence[C], SourceContext], Source]
    #: The key of the configs that share one source; None: one source per config.
    group: Callable[[C], str] | None = None


AnyDriver = Driver[Any]
