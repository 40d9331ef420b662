"""The gateway's configuration, as pydantic models. Unknown keys are errors everywhere.

Relative paths are resolved by the loader: ``gateway.data_dir`` and key files against the
config file's folder, ``outbox.path`` against ``data_dir``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

# The driver models are the drivers' own (drivers/<name>/_config.py); they are re-exported here
# for old callers. The ``devices`` union is built from the driver registry.
from cleaning import SubstitutionConfig, meter_range
from control import ControlConfig
from drivers import DRIVER_MODELS, DRIVERS, MAX_DEVICES, MAX_POINTS, DeviceConfig, Driver
from drivers.dlt645 import Dlt645Bus, Dlt645Meter, Dlt645Point
from drivers.hj212 import Hj212Device, Hj212Point
from drivers.modbus import ModbusPoint, ModbusRtuBus, ModbusRtuUnit, ModbusTcpDevice
from drivers.mqtt import MqttDevice, MqttPoint
from mrv_core import StrictModel, TlsConfig

_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
#: ``ledger_client.MAX_SUBMISSION_RECORDS`` and ``DEFAULT_MAX_BODY_BYTES`` (the same values,
#: tested): the config does not import ledger_client, whose dependencies (py_ecc) raise the
#: recursion limit the config loader's depth checks are tested at.
MAX_SUBMISSION_RECORDS = 20_000
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
#: EIP-2294: floor(MAX_UINT64 / 2) - 36
MAX_CHAIN_ID = (2**64 - 1) // 2 - 36

_Model = StrictModel

__all__ = [
    "DRIVER_MODELS",
    "MAX_CHAIN_ID",
    "MAX_DEVICES",
    "MAX_POINTS",
    "AggregatedPointConfig",
    "AggregationSection",
    "BatchingSection",
    "ChainSection",
    "Config",
    "Device",
    "Dlt645Bus",
    "Dlt645Meter",
    "Dlt645Point",
    "GatewaySection",
    "HealthSection",
    "Hj212Device",
    "Hj212Point",
    "ModbusPoint",
    "ModbusRtuBus",
    "ModbusRtuUnit",
    "ModbusTcpDevice",
    "MqttDevice",
    "MqttPoint",
    "OutboxSection",
    "Part75Substitution",
    "PortalSection",
    "RetrySection",
    "TlsConfig",
    "device_union",
    "meter_range",
]


class GatewaySection(_Model):
    id: Annotated[str, Field(pattern=_ID, description="unique gateway id, e.g. plant-a-gw1")]
    data_dir: Path = Path("data")
    signing_key: Path = Field(description="Ed25519 key file (hex seed), from `mrv-gateway keygen`")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: Ed25519-sign every record at commit, besides the batch headers (docs/formats.md,
    #: "Record signatures"): a record proves its origin before it is anchored. Costs about one
    #: signature (≈ 20 µs of CPU) per record.
    sign_records: bool = False


class OutboxSection(_Model):
    path: Path = Path("outbox.sqlite")
    synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"
    queue_batches: Annotated[int, Field(ge=1, le=100_000)] = 1_000
    shutdown_drain_s: Annotated[float, Field(ge=0, le=3600)] = 10.0
    #: Group commit: the writer commits at most once per this many seconds, taking everything
    #: the sources handed over meanwhile in one transaction (one fsync, one telemetry message,
    #: one pass of the checks). 0: commit each hand-over as soon as the previous commit ends.
    #: Adds at most this much to the time from a poll to its acknowledgement (docs/outbox.md).
    commit_interval_s: Annotated[float, Field(ge=0, le=1)] = 0.05
    #: Disk budget of the outbox (MB of used pages; None: no limit). See docs/design/003.
    disk_budget_mb: Annotated[float, Field(gt=0, le=1e9)] | None = None
    budget_alarm_fraction: Annotated[float, Field(gt=0, le=1)] = 0.8
    #: At the budget, delete records of anchored batches, oldest first (their proofs can then no
    #: longer be exported from this gateway: export or back up first). Never unanchored ones.
    prune_anchored: bool = False
    #: With prune_anchored: copy what is pruned into this archive first (an SQLite file of the
    #: outbox's schema, e.g. on a larger disk; relative to gateway.data_dir); proofs are then
    #: exported from it. Nothing is pruned while it cannot be written.
    archive_path: Path | None = None

    @model_validator(mode="after")
    def _archive_needs_pruning(self) -> OutboxSection:
        if self.archive_path is not None and not self.prune_anchored:
            raise ValueError("archive_path is used only with prune_anchored: true (nothing "
                             "is archived unless it is pruned)")
        return self


class BatchingSection(_Model):
    interval_s: Annotated[float, Field(gt=0, le=86_400)] = 10.0
    max_records: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000


class RetrySection(_Model):
    initial_s: Annotated[float, Field(gt=0, le=86_400)] = 0.5
    max_s: Annotated[float, Field(gt=0, le=86_400)] = 30.0

    @model_validator(mode="after")
    def _order(self) -> RetrySection:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s}) must be >= initial_s ({self.initial_s})")
        return self


class ChainSection(_Model):
    rpc_url: Annotated[str, Field(pattern=r"^https?://\S+$", description="JSON-RPC URL")]
    #: at most the largest chain id EIP-2294 allows
    chain_id: Annotated[int, Field(ge=1, le=MAX_CHAIN_ID)]
    contract: Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$")] | None = None
    address_book: Path | None = None
    account_key: Path
    confirmations: Annotated[int, Field(ge=1, le=1000)] = 1
    receipt_timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    request_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    gas_margin: Annotated[float, Field(ge=1.0, le=10.0)] = 1.25
    gas_price_wei: Annotated[int, Field(ge=0, le=2**256 - 1)] | None = None
    retry: RetrySection = RetrySection()

    @model_validator(mode="after")
    def _one_address(self) -> ChainSection:
        if (self.contract is None) == (self.address_book is None):
            raise ValueError("give exactly one of 'contract' (an address) or 'address_book'")
        return self


class PortalSection(_Model):
    """Delivery of every built batch to the portal (docs/portal.md, "Ingest"); absent: no
    delivery, the gateway works as before."""

    #: the portal's base URL; HTTPS, or plain HTTP to a loopback address only (a demo)
    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$", max_length=2048)]
    #: the portal's certificate is verified against ``ca_file`` (else the system's trust
    #: store); ``cert_file``/``key_file``: a client certificate for a portal that asks for one
    tls: TlsConfig | None = None
    #: seconds one submission may take (connect, send, answer)
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    #: backoff while the portal cannot take a batch
    retry: RetrySection = RetrySection(initial_s=0.5, max_s=60.0)
    #: the portal's request-size limit (its ``api.max_body_bytes``): a batch whose submission
    #: is larger is not sent but recorded as undeliverable (alarm)
    max_body_bytes: Annotated[int, Field(ge=1024, le=2**31)] = DEFAULT_MAX_BODY_BYTES

    @field_validator("url")
    @classmethod
    def _https(cls, v: str) -> str:
        if v.startswith("http://"):
            host = v.removeprefix("http://").split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
            if host not in ("127.0.0.1", "localhost", "::1"):
                raise ValueError("the portal is reached over https:// (plain http:// only to a "
                                 "loopback address)")
        return v


def device_union(drivers: Sequence[Driver[Any]]) -> Any:
    """The type of one item of ``devices``: the union of the drivers' models, told apart by
    their ``driver`` field."""
    return Annotated[Union[tuple(d.model for d in drivers)],  # noqa: UP007
                     Field(discriminator="driver")]


# One device of the ``devices`` list: built from the driver registry (drivers/_registry.py).
if TYPE_CHECKING:
    Device = DeviceConfig
else:
    Device = device_union(DRIVERS)


class HealthSection(_Model):
    listen: Annotated[str, Field(pattern=r"^[0-9A-Za-z.:\[\]-]+:\d{1,5}$")] | None = None

    @field_validator("listen")
    @classmethod
    def _port(cls, v: str | None) -> str | None:
        if v is not None and int(v.rsplit(":", 1)[1]) > 65535:
            raise ValueError(f"port of {v!r} is above 65535")
        return v


class Part75Substitution(_Model):
    """The 40 CFR 75.33 Table 1 tiers with this maximum potential value."""

    part75_max_potential: Annotated[float, Field(gt=0, le=1e15)]
    lookback_hours: Annotated[int, Field(ge=1, le=8760)] = 720


class AggregatedPointConfig(_Model):
    point: Annotated[str, Field(pattern=_ID)]
    expected_per_minute: Annotated[float, Field(gt=0, le=60_000)]
    min_minute_fraction: Annotated[float, Field(gt=0, le=1)] = 0.75
    min_valid_minutes: Annotated[int, Field(ge=1, le=60)] = 45
    substitution: Part75Substitution | SubstitutionConfig | None = None


class AggregationSection(_Model):
    """Hourly aggregates (and substitutes) as derived records; see gateway/_aggregator.py."""

    grace_s: Annotated[float, Field(ge=0, le=3600)] = 60.0
    points: Annotated[list[AggregatedPointConfig], Field(max_length=MAX_POINTS)] = []


class Config(_Model):
    gateway: GatewaySection
    outbox: OutboxSection = OutboxSection()
    batching: BatchingSection = BatchingSection()
    chain: ChainSection
    devices: Annotated[list[Device], Field(min_length=1, max_length=MAX_DEVICES)]
    health: HealthSection = HealthSection()
    control: ControlConfig | None = None
    aggregation: AggregationSection = AggregationSection()
    portal: PortalSection | None = None

    @model_validator(mode="after")
    def _submission_fits(self) -> Config:
        if self.portal is not None and self.batching.max_records > MAX_SUBMISSION_RECORDS:
            raise ValueError(f"batching.max_records: at most {MAX_SUBMISSION_RECORDS:,} when "
                             "batches are delivered to a portal (portal:), the most records "
                             "one submission may hold")
        return self

    @model_validator(mode="after")
    def _aggregated_points_exist(self) -> Config:
        known = {p.id for d in self.devices for p in d.points}
        for a in self.aggregation.points:
            if a.point not in known:
                raise ValueError(f"aggregation.points: point {a.point!r} is not configured"
                                 " under any device")
        return self

    @model_validator(mode="after")
    def _control_buses_exist(self) -> Config:
        buses = {d.name for d in self.devices if isinstance(d, ModbusRtuBus)}
        for a in self.control.devices if self.control is not None else []:
            if a.bus is not None and a.bus not in buses:
                raise ValueError(f"control.devices: device {a.id!r} names bus {a.bus!r}, which "
                                 "is not a modbus_rtu bus under devices")
        return self

    @field_validator("devices")
    @classmethod
    def _unique(cls, devices: list[Device]) -> list[Device]:
        seen_dev: set[str] = set()
        seen_pt: dict[str, str] = {}
        for d in devices:
            if d.name in seen_dev:
                raise ValueError(f"device name {d.name!r} is used twice")
            seen_dev.add(d.name)
            for p in d.points:
                if p.id in seen_pt:
                    raise ValueError(
                        f"point id {p.id!r} is used by devices {seen_pt[p.id]!r} and {d.name!r}")
                seen_pt[p.id] = d.name
        return devices

    def outbox_path(self) -> Path:
        return self.gateway.data_dir / self.outbox.path

    def archive_path(self) -> Path | None:
        a = self.outbox.archive_path
        return None if a is None else self.gateway.data_dir / a

    def points(self) -> list[Any]:
        """Every configured point of every device (each has ``id``, ``unit``, ``checks``,
        ``emissions``)."""
        return [p for d in self.devices for p in d.points]

