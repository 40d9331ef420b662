"""The ``control:`` section of the gateway config (pydantic, unknown keys are errors).

Everything a governance body may do to the plant is declared here: who may sign commands for
which points (issuers), where each writable point lives (device, register, type, word order),
the limits the policy enforces (min, max, max step, write rate, two-person rule, permissives),
the setpoint lease and heartbeat, and the local rules (leak, combustion trim). A point that is
not listed here is never written.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.modbus import DataType, WordOrder, register_count
from mrv_core import TlsConfig

_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
#: Units travel inside signed envelopes: printable ASCII without space, '"' or '\'.
UNIT_PATTERN = r'^[!#-\[\]-~]{1,32}$'
#: MQTT topic prefix: one or more levels, no wildcards, no leading/trailing '/'.
_PREFIX = r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$"

Id = Annotated[str, Field(pattern=_ID)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerConfig(_Model):
    host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username: str | None = None
    password: str | None = None
    #: TLS to the broker: ``{ca_file, cert_file, key_file}`` (mrv_core/_tls.py)
    tls: TlsConfig | None = None
    client_id: Annotated[str | None, Field(min_length=1, max_length=128,
                                           description="default: mrv-<gateway id>-control")
                         ] = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    connect_timeout_s: Annotated[float, Field(gt=0, le=120,
                                              description="connect, subscribe, publish")] = 10.0
    reconnect_initial_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    reconnect_max_s: Annotated[float, Field(gt=0, le=600)] = 10.0


class HeartbeatConfig(_Model):
    """The gateway writes an incrementing counter here; the PLC's watchdog falls back to its
    own setpoints when the counter stops changing."""

    address: Annotated[int, Field(ge=0, le=65535)]
    interval_s: Annotated[float, Field(ge=0.05, le=3600)] = 1.0


class ActuatorDevice(_Model):
    """A device control writes to: over Modbus TCP (``host``, ``port``), or over Modbus RTU
    as a unit on a serial line that acquisition polls (``bus``: the name of a ``modbus_rtu``
    entry under ``devices``; the writes share that line's client and lock)."""

    id: Id
    host: Annotated[str, Field(min_length=1)] | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    bus: Id | None = None
    unit_id: Annotated[int, Field(ge=0, le=255)] = 1
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    heartbeat: HeartbeatConfig | None = None

    @model_validator(mode="after")
    def _one_transport(self) -> ActuatorDevice:
        if (self.host is None) == (self.bus is None):
            raise ValueError(f"device {self.id}: give host (Modbus TCP) or bus (Modbus RTU, a "
                             "modbus_rtu bus under devices), exactly one")
        if self.bus is not None and not 1 <= self.unit_id <= 247:
            raise ValueError(f"device {self.id}: a Modbus RTU unit_id is 1..247, not "
                             f"{self.unit_id}")
        return self


class IssuerConfig(_Model):
    key_id: Id
    public_key: Annotated[str, Field(pattern=r"^(0x)?[0-9a-fA-F]{64}$",
                                     description="Ed25519 public key, 32 bytes hex")]
    points: Annotated[list[str], Field(min_length=1,
                                       description="point ids this key may command; '*' = all")]
    description: str | None = None

    def key_bytes(self) -> bytes:
        return bytes.fromhex(self.public_key.removeprefix("0x"))


class RateLimit(_Model):
    max_writes: Annotated[int, Field(ge=1, le=10_000)]
    window_s: Annotated[float, Field(gt=0, le=86_400)]


class Permissive(_Model):
    """A condition on a plant signal, read just before writing; the write is refused when it
    does not hold. ``when`` limits it to commands that lower (``decrease``) or raise
    (``increase``) the point."""

    signal: Id
    min: float | None = None
    max: float | None = None
    equals: float | None = None
    when: Literal["always", "decrease", "increase"] = "always"
    description: str | None = None

    @model_validator(mode="after")
    def _some(self) -> Permissive:
        if self.min is None and self.max is None and self.equals is None:
            raise ValueError("a permissive needs at least one of min, max, equals")
        return self


class _Register(_Model):
    device: Id
    address: Annotated[int, Field(ge=0, le=65535)]
    type: DataType
    word_order: WordOrder = "ABCD"
    scale: float = 1.0
    offset: float = 0.0

    @model_validator(mode="after")
    def _fits(self) -> _Register:
        if self.type in ("bool", "bitfield"):
            raise ValueError(f"type {self.type} is not supported for control")
        if self.address + register_count(self.type) - 1 > 65535:
            raise ValueError(f"a {self.type} at address {self.address} runs past register 65535")
        if self.scale == 0 or not math.isfinite(self.scale) or not math.isfinite(self.offset):
            raise ValueError("scale must be finite and non-zero, offset finite")
        return self


class SignalConfig(_Register):
    """A plant value the policy reads before writing (for permissives)."""

    id: Id
    table: Literal["holding", "input"] = "holding"


class WritablePoint(_Register):
    id: Id
    unit: Annotated[str, Field(pattern=UNIT_PATTERN)]
    min: float
    max: float
    max_step: Annotated[float, Field(gt=0)]
    rate_limit: RateLimit
    two_person: bool = False
    permissives: list[Permissive] = []
    lease_s: Annotated[float, Field(gt=0, le=7 * 86_400)] | None = None
    fallback: float | None = None
    readback_delay_s: Annotated[float, Field(ge=0, le=5)] = 0.0

    @model_validator(mode="after")
    def _limits(self) -> WritablePoint:
        if not (math.isfinite(self.min) and math.isfinite(self.max)) or self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max}), both finite")
        if (self.lease_s is None) != (self.fallback is None):
            raise ValueError("lease_s and fallback go together: give both or neither")
        if self.fallback is not None and not self.min <= self.fallback <= self.max:
            raise ValueError(f"fallback {self.fallback} is outside [{self.min}, {self.max}]")
        from control._codec import to_registers

        for what, v in (("min", self.min), ("max", self.max)):
            try:
                to_registers(self, v)
            except ValueError as e:
                raise ValueError(f"{what} {v} does not fit a {self.type} register with scale "
                                 f"{self.scale} and offset {self.offset}: {e}") from None
        return self


class LeakRule(_Model):
    """Combustible gas above ``threshold`` for ``samples`` readings in a row raises the alarm:
    the vent goes to ``safe_opening`` and remote commands that would close it are refused until
    the gas stays below ``clear_below`` for ``clear_samples`` readings."""

    gas_point: Id
    threshold: float
    samples: Annotated[int, Field(ge=1, le=1000)] = 3
    clear_below: float | None = None
    clear_samples: Annotated[int, Field(ge=1, le=1000)] = 3
    vent_point: Id
    safe_opening: float

    @model_validator(mode="after")
    def _hysteresis(self) -> LeakRule:
        if self.clear_below is not None and self.clear_below > self.threshold:
            raise ValueError(f"clear_below ({self.clear_below}) must be <= threshold "
                             f"({self.threshold})")
        return self

    @property
    def clear_level(self) -> float:
        return self.threshold if self.clear_below is None else self.clear_below


class CombustionRule(_Model):
    """Flue O2 outside [low, high] moves the air damper one ``step`` (more air when O2 is low,
    less when high) within [min, max], at most once per ``interval_s``."""

    o2_point: Id
    low: float
    high: float
    damper_point: Id
    step: Annotated[float, Field(gt=0)]
    min: float
    max: float
    interval_s: Annotated[float, Field(gt=0, le=3600)] = 10.0

    @model_validator(mode="after")
    def _order(self) -> CombustionRule:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self


class RulesConfig(_Model):
    leak: LeakRule | None = None
    combustion: CombustionRule | None = None


class TelemetryConfig(_Model):
    enabled: bool = True
    queue: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    max_per_message: Annotated[int, Field(ge=1, le=10_000)] = 500


class ControlConfig(_Model):
    enabled: bool = Field(True, description="global switch: false refuses every remote command")
    broker: BrokerConfig = BrokerConfig()
    topic_prefix: Annotated[str, Field(pattern=_PREFIX)] = "mrv"
    clock_skew_s: Annotated[float, Field(ge=0, le=600)] = 5.0
    max_lifetime_s: Annotated[float, Field(gt=0, le=7 * 86_400)] = 3600.0
    command_queue: Annotated[int, Field(ge=1, le=10_000)] = 100
    journal_synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL", description="control.sqlite: FULL survives power loss, NORMAL a process crash")
    audit_rejects_per_min: Annotated[int, Field(ge=0, le=100_000)] = 120
    reject_acks_per_s: Annotated[float, Field(
        ge=0, le=100_000, description="nacks for payloads refused before the queue "
        "(malformed, forged, expired, replayed...) per second; the rest are counted")] = 50.0
    issuers: Annotated[list[IssuerConfig], Field(min_length=1)]
    devices: Annotated[list[ActuatorDevice], Field(min_length=1)]
    points: Annotated[list[WritablePoint], Field(min_length=1)]
    signals: list[SignalConfig] = []
    rules: RulesConfig = RulesConfig()
    telemetry: TelemetryConfig = TelemetryConfig()

    @model_validator(mode="after")
    def _references(self) -> ControlConfig:
        def unique(kind: str, ids: list[str]) -> set[str]:
            seen: set[str] = set()
            for i in ids:
                if i in seen:
                    raise ValueError(f"{kind} id {i!r} is used twice")
                seen.add(i)
            return seen

        devices = unique("device", [d.id for d in self.devices])
        points = unique("point", [p.id for p in self.points])
        signals = unique("signal", [s.id for s in self.signals])
        unique("issuer key", [i.key_id for i in self.issuers])
        keys: dict[str, str] = {}
        for i in self.issuers:
            k = i.public_key.removeprefix("0x").lower()
            if k in keys:
                raise ValueError(f"issuers {keys[k]!r} and {i.key_id!r} share one public key")
            keys[k] = i.key_id
            for pid in i.points:
                if pid != "*" and pid not in points:
                    raise ValueError(f"issuer {i.key_id!r} names point {pid!r}, which is not a "
                                     "writable point")
        regs: list[WritablePoint | SignalConfig] = [*self.points, *self.signals]
        for reg in regs:
            if reg.device not in devices:
                raise ValueError(f"{reg.id!r} names device {reg.device!r}, which is not declared")
        # one owner per register: two writable points (or a point and a heartbeat) on one
        # register would write each other's values
        owner: dict[tuple[str, int], str] = {}
        for d in self.devices:
            if d.heartbeat is not None:
                owner[(d.id, d.heartbeat.address)] = f"the heartbeat of device {d.id!r}"
        for p in self.points:
            for addr in range(p.address, p.address + register_count(p.type)):
                other = owner.get((p.device, addr))
                if other is not None:
                    raise ValueError(f"writable point {p.id!r} and {other} share register "
                                     f"{addr} of device {p.device!r}")
            for addr in range(p.address, p.address + register_count(p.type)):
                owner[(p.device, addr)] = f"writable point {p.id!r}"
        by_id = {p.id: p for p in self.points}
        for p in self.points:
            for perm in p.permissives:
                if perm.signal not in signals:
                    raise ValueError(f"point {p.id!r}: permissive signal {perm.signal!r} is "
                                     "not declared under signals")
            if p.two_person:
                n = sum(1 for i in self.issuers if "*" in i.points or p.id in i.points)
                if n < 2:
                    raise ValueError(f"point {p.id!r} needs two people but only {n} issuer(s) "
                                     "may command it")
        leak = self.rules.leak
        if leak is not None:
            vent = by_id.get(leak.vent_point)
            if vent is None:
                raise ValueError(f"rules.leak.vent_point {leak.vent_point!r} is not a writable "
                                 "point")
            if not vent.min <= leak.safe_opening <= vent.max:
                raise ValueError(f"rules.leak.safe_opening {leak.safe_opening} is outside the "
                                 f"vent's [{vent.min}, {vent.max}]")
        trim = self.rules.combustion
        if trim is not None:
            damper = by_id.get(trim.damper_point)
            if damper is None:
                raise ValueError(f"rules.combustion.damper_point {trim.damper_point!r} is not "
                                 "a writable point")
            if trim.min < damper.min or trim.max > damper.max:
                raise ValueError(f"rules.combustion [{trim.min}, {trim.max}] is outside the "
                                 f"damper's [{damper.min}, {damper.max}]")
        if leak is not None and trim is not None and leak.vent_point == trim.damper_point:
            raise ValueError("the leak rule and the combustion trim cannot drive the same point")
        return self

    def topic(self, gateway_id: str, leaf: str) -> str:
        return f"{self.topic_prefix}/{gateway_id}/{leaf}"

    def point(self, point_id: str) -> WritablePoint | None:
        for p in self.points:
            if p.id == point_id:
                return p
        return None
