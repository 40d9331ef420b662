"""The gateway's configuration, as pydantic models. Unknown keys are errors everywhere.

Relative paths are resolved by the loader: ``gateway.data_dir`` and key files against the
config file's folder, ``outbox.path`` against ``data_dir``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from cleaning._config import ChecksConfig
from drivers.modbus._decode import DataType, WordOrder, register_count

_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Model):
    id: Annotated[str, Field(pattern=_ID, description="unique gateway id, e.g. plant-a-gw1")]
    data_dir: Path = Path("data")
    signing_key: Path = Field(description="Ed25519 key file (hex seed), from `mrv-gateway keygen`")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class OutboxSection(_Model):
    path: Path = Path("outbox.sqlite")
    synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"
    queue_batches: Annotated[int, Field(ge=1, le=100_000)] = 1_000
    shutdown_drain_s: Annotated[float, Field(ge=0, le=3600)] = 10.0


class BatchingSection(_Model):
    interval_s: Annotated[float, Field(gt=0, le=86_400)] = 10.0
    max_records: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000


class RetrySection(_Model):
    initial_s: Annotated[float, Field(gt=0)] = 0.5
    max_s: Annotated[float, Field(gt=0)] = 30.0

    @model_validator(mode="after")
    def _order(self) -> RetrySection:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s}) must be >= initial_s ({self.initial_s})")
        return self


class ChainSection(_Model):
    rpc_url: Annotated[str, Field(pattern=r"^https?://\S+$", description="JSON-RPC URL")]
    chain_id: Annotated[int, Field(ge=1)]
    contract: Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$")] | None = None
    address_book: Path | None = None
    account_key: Path
    confirmations: Annotated[int, Field(ge=1, le=1000)] = 1
    receipt_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    request_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    gas_margin: Annotated[float, Field(ge=1.0, le=10.0)] = 1.25
    gas_price_wei: Annotated[int, Field(ge=0)] | None = None
    retry: RetrySection = RetrySection()

    @model_validator(mode="after")
    def _one_address(self) -> ChainSection:
        if (self.contract is None) == (self.address_book is None):
            raise ValueError("give exactly one of 'contract' (an address) or 'address_book'")
        return self


class ModbusPoint(_Model):
    id: Annotated[str, Field(pattern=_ID)]
    table: Literal["holding", "input"] = "holding"
    address: Annotated[int, Field(ge=0, le=65535)]
    type: DataType
    word_order: WordOrder = "ABCD"
    scale: float = 1.0
    offset: float = 0.0
    unit: Annotated[str, Field(min_length=1, max_length=32)]
    checks: ChecksConfig | None = None

    @model_validator(mode="after")
    def _fits(self) -> ModbusPoint:
        if self.address + register_count(self.type) - 1 > 65535:
            raise ValueError(f"a {self.type} at address {self.address} runs past register 65535")
        if self.type in ("bool", "bitfield"):
            raise ValueError(f"type {self.type} is not supported by the modbus_tcp poller yet")
        return self


class ModbusTcpDevice(_Model):
    driver: Literal["modbus_tcp"]
    name: Annotated[str, Field(pattern=_ID)]
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    unit_id: Annotated[int, Field(ge=0, le=255)] = 1
    interval_s: Annotated[float, Field(ge=0.05, le=86_400)] = 1.0
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    retries: Annotated[int, Field(ge=0, le=10)] = 1
    max_registers: Annotated[int, Field(ge=1, le=125)] = 125
    max_gap: Annotated[int, Field(ge=0, le=124)] = 0
    points: Annotated[list[ModbusPoint], Field(min_length=1)]


Device = Annotated[ModbusTcpDevice, Field(discriminator="driver")]


class HealthSection(_Model):
    listen: Annotated[str, Field(pattern=r"^[0-9A-Za-z.:\[\]-]+:\d{1,5}$")] | None = None


class Config(_Model):
    gateway: GatewaySection
    outbox: OutboxSection = OutboxSection()
    batching: BatchingSection = BatchingSection()
    chain: ChainSection
    devices: Annotated[list[Device], Field(min_length=1)]
    health: HealthSection = HealthSection()

    @field_validator("devices")
    @classmethod
    def _unique(cls, devices: list[ModbusTcpDevice]) -> list[ModbusTcpDevice]:
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


def is_identifier(s: str) -> bool:
    return re.match(_ID, s) is not None
