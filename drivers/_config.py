"""What the drivers' config models share: ids, hosts, limits, the polling schedule, the serial
line, and the base of every device model (``driver`` and ``name``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, model_validator

from mrv_core import StrictModel

#: A device, bus, unit, meter or point id.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
#: Most devices (buses) of one gateway, and points of one device or bus.
MAX_DEVICES = 10_000
MAX_POINTS = 100_000
#: A host name or address (DNS names are at most 253 characters).
Host = Annotated[str, Field(min_length=1, max_length=253)]


class DeviceConfig(StrictModel):
    """Base of a driver's device model: a ``driver: Literal[...]`` field (the discriminator in
    the config's ``devices`` list), a ``name`` and ``points`` (a field or a property)."""

    if TYPE_CHECKING:
        driver: str
        name: str

        @property
        def points(self) -> Sequence[Any]: ...


class Polling(StrictModel):
    """Schedule and failure handling of one polled device (Modbus TCP/RTU unit, DL/T 645 meter)."""

    interval_s: Annotated[float, Field(ge=0.05, le=86_400)] = 1.0
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    retries: Annotated[int, Field(ge=0, le=10)] = 1
    #: Consecutive failed polls that open the circuit breaker.
    breaker_failures: Annotated[int, Field(ge=1, le=1000)] = 3
    #: While the breaker is open the device is probed after this delay, doubling up to the cap.
    backoff_initial_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    backoff_max_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0

    @model_validator(mode="after")
    def _backoff_order(self) -> Polling:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(f"backoff_max_s ({self.backoff_max_s}) must be >= "
                             f"backoff_initial_s ({self.backoff_initial_s})")
        return self


class SerialLine(StrictModel):
    """A serial line (RS-485/RS-232) and its framing."""

    port: Annotated[str, Field(min_length=1, description="serial device, e.g. /dev/ttyUSB0")]
    baudrate: Annotated[int, Field(ge=300, le=921_600)] = 9600
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    #: Silence kept on the line after each exchange; default 3.5 character times (>= 1.75 ms).
    inter_frame_s: Annotated[float, Field(ge=0, le=1)] | None = None

    def frame_pause_s(self) -> float:
        if self.inter_frame_s is not None:
            return self.inter_frame_s
        bits = 1 + self.bytesize + (self.parity != "N") + self.stopbits
        return max(3.5 * bits / self.baudrate, 0.00175)


def distinct(what: str, values: list[object]) -> None:
    seen: set[object] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{what} {v!r} is used twice on this bus; expected each once")
        seen.add(v)
