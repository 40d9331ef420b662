"""The MQTT driver's config models: a point (topic filter and JSON paths), a broker session."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from cleaning import PointEmissions, SharedChecks, meter_range
from drivers._config import ID_PATTERN, MAX_POINTS, DeviceConfig, Host
from mrv_core import StrictModel, TlsConfig

_DOTTED = r"^(\$|[^.\s]+(\.[^.\s]+)*)$"


class MqttPoint(StrictModel):
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    #: Topic filter; ``+`` matches one level, ``#`` the rest. Every matching message feeds the point.
    topic: Annotated[str, Field(min_length=1, max_length=1024)]
    #: Dotted path to the value in the JSON payload (list items by index: ``values.0``); ``$`` is
    #: the payload itself (a bare number).
    value: Annotated[str, Field(pattern=_DOTTED)]
    #: Dotted path to the acquisition time; when left out, the time of arrival is used.
    timestamp: Annotated[str, Field(pattern=_DOTTED)] | None = None
    timestamp_unit: Literal["auto", "s", "ms", "us", "ns", "iso8601"] = "auto"
    unit: Annotated[str, Field(min_length=1, max_length=32)]
    checks: SharedChecks | None = None
    emissions: PointEmissions | None = None

    @field_validator("topic")
    @classmethod
    def _topic_filter(cls, v: str) -> str:
        levels = v.split("/")
        for i, level in enumerate(levels):
            if "#" in level and (level != "#" or i != len(levels) - 1):
                raise ValueError(f"topic filter {v!r}: expected '#' only as the whole last level")
            if "+" in level and level != "+":
                raise ValueError(f"topic filter {v!r}: expected '+' only as a whole level")
        if "\x00" in v:
            raise ValueError("topic filter must not contain NUL")
        return v

    @model_validator(mode="after")
    def _one_range(self) -> MqttPoint:
        checks, emissions = meter_range(self.checks, self.emissions, None, "an MQTT point")
        if checks is self.checks and emissions is self.emissions:
            return self
        return self.model_copy(update={"checks": checks, "emissions": emissions})


class MqttDevice(DeviceConfig):
    """A group of MQTT sensors on one broker: one persistent session, QoS 1 by default."""

    driver: Literal["mqtt"]
    name: Annotated[str, Field(pattern=ID_PATTERN)]
    host: Host
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    #: Fixed client id: the broker keeps the session (subscriptions, queued QoS 1 messages) under it.
    client_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
    username: Annotated[str, Field(max_length=1024)] | None = None
    password: Annotated[str, Field(max_length=1024)] | None = None
    #: TLS to the broker (port 8883 as a rule): ``{ca_file, cert_file, key_file}`` (mrv_core/_tls.py)
    tls: TlsConfig | None = None
    qos: Literal[0, 1] = 1
    clean_session: bool = False
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    backoff_initial_s: Annotated[float, Field(gt=0, le=3600)] = 0.5
    backoff_max_s: Annotated[float, Field(gt=0, le=86_400)] = 30.0
    #: Emit a COMM_FAULT gap reading for a point that got nothing for this long (off when unset).
    stale_after_s: Annotated[float, Field(gt=0, le=86_400)] | None = None
    max_payload_bytes: Annotated[int, Field(ge=16, le=16 * 1024 * 1024)] = 65_536
    points: Annotated[list[MqttPoint], Field(min_length=1, max_length=MAX_POINTS)]

    @model_validator(mode="after")
    def _backoff_order(self) -> MqttDevice:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(f"backoff_max_s ({self.backoff_max_s}) must be >= "
                             f"backoff_initial_s ({self.backoff_initial_s})")
        return self
