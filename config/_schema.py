"""The gateway's configuration, as pydantic models. Unknown keys are errors everywhere.

Relative paths are resolved by the loader: ``gateway.data_dir`` and key files against the
config file's folder, ``outbox.path`` against ``data_dir``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cleaning._batch_emissions import PointEmissions
from cleaning._config import ChecksConfig, CounterCheck, SubstitutionConfig
from control._config import ControlConfig
from drivers.dlt645._frame import DATA_ITEMS as DLT645_ITEMS
from drivers.modbus._decode import DataType, WordOrder, register_count
from mrv_core import TlsConfig

_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
#: EIP-2294: floor(MAX_UINT64 / 2) - 36
MAX_CHAIN_ID = (2**64 - 1) // 2 - 36
#: Most devices (buses) of one gateway, and points of one device or bus.
MAX_DEVICES = 10_000
MAX_POINTS = 100_000
#: A host name or address (DNS names are at most 253 characters).
_Host = Annotated[str, Field(min_length=1, max_length=253)]


class _Model(BaseModel):
    # numbers must be finite (a NaN scale or an infinite timeout is a mistake, never a setting)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# -- one range per meter (issue 11, item 8) -------------------------------------------------

_UNSIGNED_BITS = {"uint16": 16, "uint32": 32, "uint64": 64}


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)


def meter_range(checks: ChecksConfig | None, emissions: PointEmissions | None,
                register: tuple[float, float] | None, what: str
                ) -> tuple[ChecksConfig | None, PointEmissions | None]:
    """One range per cumulative meter: ``checks.counter`` and ``emissions`` of a point get the
    same ``register_max`` and ``resolution``. ``register`` is what the point's register
    defines (``what`` names it) or None; a value given that contradicts it is refused, as are
    two blocks that give different values; what is left out is filled in. Raises ValueError."""
    counter = None if checks is None else checks.counter
    if counter is None and emissions is None:
        return checks, emissions
    c_max = None if counter is None else counter.register_max
    e_max = None if emissions is None else emissions.register_max
    c_res = counter.resolution if counter and "resolution" in counter.model_fields_set else None
    e_res = (emissions.resolution if emissions and "resolution" in emissions.model_fields_set
             else None)
    rmax: float | None
    res: float | None
    if register is not None:
        r_max, r_res = register
        for name, got, want in (("checks.counter.register_max", c_max, r_max),
                                ("emissions.register_max", e_max, r_max),
                                ("checks.counter.resolution", c_res, r_res),
                                ("emissions.resolution", e_res, r_res)):
            if got is not None and not _close(got, want):
                raise ValueError(f"{name} ({got}) contradicts the register: {what} gives "
                                 f"{want}; leave it out (it is derived from the register)")
        rmax, res = r_max, r_res
    else:
        for name, a, b in (("register_max", c_max, e_max), ("resolution", c_res, e_res)):
            if a is not None and b is not None and not _close(a, b):
                raise ValueError(f"checks.counter.{name} ({a}) and emissions.{name} ({b}) "
                                 "differ: one meter has one range")
        rmax = c_max if c_max is not None else e_max
        if rmax is None and counter is not None:
            raise ValueError(f"checks.counter.register_max is required: {what} does not "
                             "define the range (give it here or as emissions.register_max)")
        res = (c_res if c_res is not None else e_res if e_res is not None
               else None if counter is None else counter.resolution)
    if counter is not None and checks is not None:
        data = counter.model_dump(exclude_unset=True) | {"register_max": rmax}
        if res is not None:
            data["resolution"] = res
        try:
            counter = CounterCheck.model_validate(data)
        except ValidationError as e:
            raise ValueError("; ".join(str(x["msg"]).removeprefix("Value error, ")
                                       for x in e.errors())) from None
        checks = checks.model_copy(update={"counter": counter})
    if emissions is not None and rmax is not None:
        upd: dict[str, float] = {"register_max": rmax}
        if res is not None:
            upd["resolution"] = res
        emissions = emissions.model_copy(update=upd)
    return checks, emissions


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


Table = Literal["holding", "input", "coil", "discrete"]


class ModbusPoint(_Model):
    id: Annotated[str, Field(pattern=_ID)]
    table: Table = "holding"
    address: Annotated[int, Field(ge=0, le=65535)]
    type: DataType
    word_order: WordOrder = "ABCD"
    bit: Annotated[int, Field(ge=0, le=15, description="bit of the register, for bitfield")] | None = None
    scale: float = 1.0
    offset: float = 0.0
    unit: Annotated[str, Field(min_length=1, max_length=32)]
    checks: ChecksConfig | None = None
    emissions: PointEmissions | None = None

    @model_validator(mode="after")
    def _fits(self) -> ModbusPoint:
        if self.address + register_count(self.type) - 1 > 65535:
            raise ValueError(f"a {self.type} at address {self.address} runs past register 65535")
        if self.table in ("coil", "discrete") and self.type != "bool":
            raise ValueError(f"a {self.table} point is a single bit: expected type bool, got {self.type}")
        if self.type == "bitfield" and self.bit is None:
            raise ValueError("type bitfield needs 'bit': expected the bit number 0..15 in the register")
        if self.type != "bitfield" and self.bit is not None:
            raise ValueError(f"'bit' is only valid with type bitfield, not with {self.type}")
        return self

    @model_validator(mode="after")
    def _one_range(self) -> ModbusPoint:
        cumulative = self.emissions is not None or (self.checks and self.checks.counter)
        bits = _UNSIGNED_BITS.get(self.type)
        register = None
        what = f"a {self.type} register"
        if cumulative and bits is not None:
            if self.scale <= 0 or self.offset != 0:
                raise ValueError(f"a cumulative {self.type} register (checks.counter or "
                                 "emissions) needs scale > 0 and offset 0: it wraps to 0")
            register = ((2**bits - 1) * self.scale, self.scale)
            what = f"a {self.type} register scaled by {self.scale}"
        checks, emissions = meter_range(self.checks, self.emissions, register, what)
        if checks is self.checks and emissions is self.emissions:
            return self
        return self.model_copy(update={"checks": checks, "emissions": emissions})


class _Polling(_Model):
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
    def _backoff_order(self) -> _Polling:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(f"backoff_max_s ({self.backoff_max_s}) must be >= "
                             f"backoff_initial_s ({self.backoff_initial_s})")
        return self


class ModbusTcpDevice(_Polling):
    driver: Literal["modbus_tcp"]
    name: Annotated[str, Field(pattern=_ID)]
    host: _Host
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    unit_id: Annotated[int, Field(ge=0, le=255)] = 1
    max_registers: Annotated[int, Field(ge=1, le=125)] = 125
    max_gap: Annotated[int, Field(ge=0, le=124)] = 0
    points: Annotated[list[ModbusPoint], Field(min_length=1, max_length=MAX_POINTS)]


class _Serial(_Model):
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


class ModbusRtuUnit(_Polling):
    name: Annotated[str, Field(pattern=_ID)]
    unit_id: Annotated[int, Field(ge=1, le=247)]
    max_registers: Annotated[int, Field(ge=1, le=125)] = 125
    max_gap: Annotated[int, Field(ge=0, le=124)] = 0
    points: Annotated[list[ModbusPoint], Field(min_length=1, max_length=MAX_POINTS)]


class ModbusRtuBus(_Serial):
    """One RS-485 port with its Modbus RTU units: one task and one lock for the whole line."""

    driver: Literal["modbus_rtu"]
    name: Annotated[str, Field(pattern=_ID)]
    units: Annotated[list[ModbusRtuUnit], Field(min_length=1, max_length=247)]

    @model_validator(mode="after")
    def _distinct_units(self) -> ModbusRtuBus:
        _distinct("unit name", [u.name for u in self.units])
        _distinct("unit_id", [u.unit_id for u in self.units])
        return self

    @property
    def points(self) -> list[ModbusPoint]:
        return [p for u in self.units for p in u.points]


def _distinct(what: str, values: list[object]) -> None:
    seen: set[object] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{what} {v!r} is used twice on this bus; expected each once")
        seen.add(v)


class Dlt645Point(_Model):
    id: Annotated[str, Field(pattern=_ID)]
    #: Data identifier DI3..DI0 as 8 hex digits; the unit and decimals come from DL/T 645-2007.
    di: str
    checks: ChecksConfig | None = None
    emissions: PointEmissions | None = None

    @field_validator("di", mode="before")
    @classmethod
    def _known_di(cls, v: object) -> object:
        known = ", ".join(f"{k:08X} ({it.name})" for k, it in DLT645_ITEMS.items())
        if not isinstance(v, str):
            raise ValueError("expected the data identifier as a quoted string of 8 hex digits, "
                             f"e.g. '00000000'; supported: {known}")
        if re.fullmatch(r"[0-9A-Fa-f]{8}", v) is None or int(v, 16) not in DLT645_ITEMS:
            raise ValueError(f"data identifier {v!r} is not supported; expected one of: {known}")
        return v.upper()

    @property
    def unit(self) -> str:
        return DLT645_ITEMS[int(self.di, 16)].unit or "1"

    @model_validator(mode="after")
    def _one_range(self) -> Dlt645Point:
        item = DLT645_ITEMS[int(self.di, 16)]
        register = None
        if not item.signed:  # BCD digits with fixed decimals: 999999.99 kWh wraps to 0
            register = (float(item.max_magnitude), 10.0 ** -item.decimals)
        checks, emissions = meter_range(self.checks, self.emissions, register,
                                        f"DL/T 645 item {self.di} ({item.name})")
        if checks is self.checks and emissions is self.emissions:
            return self
        return self.model_copy(update={"checks": checks, "emissions": emissions})


class Dlt645Meter(_Polling):
    name: Annotated[str, Field(pattern=_ID)]
    #: 12 decimal digits, as printed on the meter (quote it in YAML).
    address: str
    points: Annotated[list[Dlt645Point], Field(min_length=1, max_length=MAX_POINTS)]

    @field_validator("address", mode="before")
    @classmethod
    def _address(cls, v: object) -> object:
        if not isinstance(v, str) or re.fullmatch(r"[0-9]{12}", v) is None:
            raise ValueError("expected the meter address as a quoted string of 12 decimal digits, "
                             "e.g. '000000123456'")
        return v


class Dlt645Bus(_Serial):
    """One RS-485 port with DL/T 645-2007 meters (2400 baud 8E1 is the usual default)."""

    driver: Literal["dlt645"]
    name: Annotated[str, Field(pattern=_ID)]
    baudrate: Annotated[int, Field(ge=300, le=921_600)] = 2400
    parity: Literal["N", "E", "O"] = "E"
    #: Send the FE FE FE FE wake-up preamble before each request.
    wakeup: bool = True
    meters: Annotated[list[Dlt645Meter], Field(min_length=1, max_length=MAX_DEVICES)]

    @model_validator(mode="after")
    def _distinct_meters(self) -> Dlt645Bus:
        _distinct("meter name", [m.name for m in self.meters])
        _distinct("meter address", [m.address for m in self.meters])
        return self

    @property
    def points(self) -> list[Dlt645Point]:
        return [p for m in self.meters for p in m.points]


_DOTTED = r"^(\$|[^.\s]+(\.[^.\s]+)*)$"


class MqttPoint(_Model):
    id: Annotated[str, Field(pattern=_ID)]
    #: Topic filter; ``+`` matches one level, ``#`` the rest. Every matching message feeds the point.
    topic: Annotated[str, Field(min_length=1, max_length=1024)]
    #: Dotted path to the value in the JSON payload (list items by index: ``values.0``); ``$`` is
    #: the payload itself (a bare number).
    value: Annotated[str, Field(pattern=_DOTTED)]
    #: Dotted path to the acquisition time; when left out, the time of arrival is used.
    timestamp: Annotated[str, Field(pattern=_DOTTED)] | None = None
    timestamp_unit: Literal["auto", "s", "ms", "us", "ns", "iso8601"] = "auto"
    unit: Annotated[str, Field(min_length=1, max_length=32)]
    checks: ChecksConfig | None = None
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


class MqttDevice(_Model):
    """A group of MQTT sensors on one broker: one persistent session, QoS 1 by default."""

    driver: Literal["mqtt"]
    name: Annotated[str, Field(pattern=_ID)]
    host: _Host
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


class Hj212Point(_Model):
    id: Annotated[str, Field(pattern=_ID)]
    #: Pollutant / parameter code as sent in CP, e.g. a34013 (smoke dust), a21026 (SO2).
    code: Annotated[str, Field(pattern=r"^[A-Za-z0-9]{1,16}$")]
    #: Field of the code: Rtd (real-time), Avg, Min, Max, Cou ...
    field: Annotated[str, Field(pattern=r"^[A-Za-z]{1,16}$")] = "Rtd"
    #: Command number of the packets that carry it: 2011 real-time, 2051 minute, 2061 hour, 2031 day.
    cn: Literal["2011", "2051", "2061", "2031"] = "2011"
    unit: Annotated[str, Field(min_length=1, max_length=32)]
    checks: ChecksConfig | None = None
    emissions: PointEmissions | None = None

    @model_validator(mode="after")
    def _one_range(self) -> Hj212Point:
        checks, emissions = meter_range(self.checks, self.emissions, None, "an HJ 212 point")
        if checks is self.checks and emissions is self.emissions:
            return self
        return self.model_copy(update={"checks": checks, "emissions": emissions})


class Hj212Device(_Model):
    """One HJ 212 data logger (by MN) connecting to a listener of the gateway.

    Several loggers may share one ``listen`` address; packets are told apart by MN."""

    driver: Literal["hj212"]
    name: Annotated[str, Field(pattern=_ID)]
    #: host:port the listener binds, e.g. 0.0.0.0:7001 (port 0: any free port, for tests).
    listen: str
    mn: Annotated[str, Field(pattern=r"^[A-Za-z0-9]{1,24}$", description="the logger's MN")]
    #: When set, packets with another PW are counted and ignored.
    password: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    version: Literal["2017", "2025"] = "2017"
    #: Offset of the logger's DataTime (plant local time) from UTC, hours.
    tz_offset_h: Annotated[float, Field(ge=-12, le=14)] = 8.0
    idle_timeout_s: Annotated[float, Field(ge=1, le=86_400)] = 600.0
    stale_after_s: Annotated[float, Field(gt=0, le=86_400)] | None = None
    max_frame_len: Annotated[int, Field(ge=64, le=9999)] = 1024
    points: Annotated[list[Hj212Point], Field(min_length=1, max_length=MAX_POINTS)]

    @field_validator("listen", mode="before")
    @classmethod
    def _listen(cls, v: object) -> object:
        m = re.fullmatch(r"([0-9A-Za-z.:\[\]-]+):(\d{1,5})", v) if isinstance(v, str) else None
        if m is None or int(m.group(2)) > 65535:
            raise ValueError("expected host:port, e.g. 0.0.0.0:7001")
        return v

    @model_validator(mode="after")
    def _distinct_fields(self) -> Hj212Device:
        _distinct_on("code/field/cn", [(p.code, p.field, p.cn) for p in self.points])
        return self


def _distinct_on(what: str, values: list[tuple[str, ...]]) -> None:
    seen: set[tuple[str, ...]] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{what} {'/'.join(v)} is mapped to two points; expected each once")
        seen.add(v)


#: The ``driver`` value of each device model (pydantic puts it into error locations).
DRIVER_MODELS: dict[str, type[BaseModel]] = {
    "modbus_tcp": ModbusTcpDevice,
    "modbus_rtu": ModbusRtuBus,
    "dlt645": Dlt645Bus,
    "mqtt": MqttDevice,
    "hj212": Hj212Device,
}

Device = Annotated[ModbusTcpDevice | ModbusRtuBus | Dlt645Bus | MqttDevice | Hj212Device,
                   Field(discriminator="driver")]


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

    def archive_path(self) -> Path | None:
        a = self.outbox.archive_path
        return None if a is None else self.gateway.data_dir / a

    def points(self) -> list[Any]:
        """Every configured point of every device (each has ``id``, ``unit``, ``checks``,
        ``emissions``)."""
        return [p for d in self.devices for p in d.points]

