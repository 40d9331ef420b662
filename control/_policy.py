"""The command policy: a pure function over plain values (no I/O, no clock, no config objects).

Checks run in a fixed order and the first that fails names the verdict (``docs/control.md``
lists the codes). A verdict never changes the value: a command is carried out exactly as signed
or refused ("rejected, never clamped").

Two stages, because the second needs values read from the plant and those reads should only
happen for an authentic, timely, fresh command:

- `authenticate`: gateway, issuer, signature(s), time window, replay, issuer sequence;
- `authorize`: writable point, unit, range, representable, step, write rate, local rules,
  permissives, global switch.

`evaluate` runs both.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Container, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Literal

from control._envelope import Command, verify_signature

#: Every reason code, in check order. ``plant-unavailable`` can come from the step check (the
#: present value could not be read) or from a permissive (its signal could not be read).
REASONS: tuple[tuple[str, str], ...] = (
    ("malformed", "the payload is not a well-formed envelope (not JSON, missing or bad field)"),
    ("unsupported-version", "the envelope version is not one this gateway speaks"),
    ("wrong-gateway", "the command is addressed to another gateway"),
    ("unknown-issuer", "the issuer key id is not configured"),
    ("point-not-allowed", "the issuer may not command this point"),
    ("bad-signature", "the issuer's Ed25519 signature does not verify"),
    ("approval-required", "a two-person point lacks a valid second approver's signature"),
    ("bad-window", "not_before/expires_at are inconsistent or the lifetime is too long"),
    ("not-yet-valid", "not_before (or issued_at) is in the future beyond the allowed skew"),
    ("expired", "expires_at has passed (beyond the allowed skew)"),
    ("replayed", "this command id was seen before"),
    ("stale-sequence", "the issuer's sequence number did not increase"),
    ("point-not-writable", "the point is not declared writable"),
    ("unit-mismatch", "the command's unit is not the point's unit"),
    ("out-of-range", "the value is outside [min, max]"),
    ("not-representable", "the register cannot hold exactly the signed value (integer "
     "registers: not offset + a multiple of the scale; float registers: rounds to another "
     "value)"),
    ("plant-unavailable", "a value the policy needs could not be read from the plant"),
    ("step-too-large", "the change from the present value exceeds max_step"),
    ("rate-limited", "the point was written too often in its rate window"),
    ("local-rule-active", "a local safety rule holds the point (e.g. vents open for a leak)"),
    ("permissive-blocked", "a permissive read from the plant does not hold"),
    ("control-disabled", "the global control switch is off"),
    ("write-failed", "accepted, but the Modbus write failed (the value may not be applied)"),
    ("readback-mismatch", "accepted and written, but the read-back differs"),
    ("overloaded", "the command queue was full; the command was not evaluated"),
    ("internal-error", "the gateway failed before writing; nothing was written"),
)
REASON_CODES = frozenset(code for code, _ in REASONS)

#: Reasons decided before the replay check: such a command does not consume its id.
_BEFORE_REPLAY = frozenset({"malformed", "unsupported-version", "wrong-gateway",
                            "unknown-issuer", "point-not-allowed", "bad-signature",
                            "approval-required", "bad-window", "not-yet-valid", "expired",
                            "replayed"})


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: str | None  # None: accepted
    detail: str

    @property
    def ok(self) -> bool:
        return self.reason is None


ACCEPT = Verdict(None, "accepted")


def _no(reason: str, detail: str) -> Verdict:
    assert reason in REASON_CODES, reason
    return Verdict(reason, detail)


def consumes_id(v: Verdict) -> bool:
    """Whether this verdict uses up the command id (authentic, timely and fresh commands do,
    whatever comes after; forged or expired ones do not, so they cannot burn a real id)."""
    return v.reason not in _BEFORE_REPLAY


def advances_seq(v: Verdict) -> bool:
    return consumes_id(v) and v.reason != "stale-sequence"


@dataclass(frozen=True, slots=True)
class IssuerPolicy:
    public_key: bytes
    points: frozenset[str]  # "*" = every writable point

    def allows(self, point: str) -> bool:
        return "*" in self.points or point in self.points


@dataclass(frozen=True, slots=True)
class PermissivePolicy:
    signal: str
    min: float | None = None
    max: float | None = None
    equals: float | None = None
    when: Literal["always", "decrease", "increase"] = "always"

    def applies(self, direction: str) -> bool:
        return self.when == "always" or self.when == direction

    def holds(self, v: float) -> bool:
        if math.isnan(v):
            return False
        return ((self.min is None or v >= self.min) and (self.max is None or v <= self.max)
                and (self.equals is None or v == self.equals))

    def describe(self) -> str:
        parts = [f"{op} {x:g}" for op, x in ((">=", self.min), ("<=", self.max),
                                               ("==", self.equals)) if x is not None]
        return f"{self.signal} {' and '.join(parts)}"


@dataclass(frozen=True, slots=True)
class PointPolicy:
    unit: str
    min: float
    max: float
    max_step: float
    rate_max_writes: int
    rate_window_ms: int
    two_person: bool = False
    permissives: tuple[PermissivePolicy, ...] = ()
    resolution: float | None = None  # integer registers: value = offset + k * resolution
    offset: float = 0.0
    #: float registers ("float32", "float64"; None: not checked) and their scale: the value
    #: must come back from the register as the signed decimal (see `representable`)
    float_type: str | None = None
    scale: float = 1.0


@dataclass(frozen=True, slots=True)
class Override:
    """A local rule's hold on a point: commands moving it in ``forbid`` direction are refused."""

    rule: str
    forbid: Literal["decrease", "increase"]
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthContext:
    gateway_id: str
    issuers: Mapping[str, IssuerPolicy]
    two_person_points: AbstractSet[str]
    now_ms: int
    skew_ms: int
    max_lifetime_ms: int
    seen_ids: Container[str]
    last_seq: Mapping[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class PlantContext:
    points: Mapping[str, PointPolicy]
    now_ms: int
    current: float | None  # the point's present value, read from the plant (None: unreadable)
    signals: Mapping[str, float]  # permissive signals read from the plant (absent: unreadable)
    recent_writes_ms: Sequence[int]  # times of earlier remote writes to this point
    overrides: Mapping[str, Override]
    enabled: bool


def _dec(x: float) -> Decimal:
    """A config number as the decimal it was written as (the float's shortest repr)."""
    return Decimal(repr(float(x)))


def representable(value: str, p: PointPolicy) -> str | None:
    """None when the register holds exactly the signed decimal ``value``, else why not.

    Integer registers (``resolution``): ``value = offset + k * resolution`` for an integer k,
    in exact decimal arithmetic, and the write path's ``round((value - offset) / scale)``
    gives that same k (so a 17-digit value beyond a float's precision is refused too). Float
    registers (``float_type``): the value written, read back as a number, must round to
    ``value`` at ``value``'s own number of decimals, strictly closer to it than half a unit of
    its last decimal (``"46.0000001"`` is refused on a float32, whose nearest value is 46; so is
    ``"2000000.3"``, read back as 2000000.25, a tie). Nothing is ever rounded silently."""
    d = Decimal(value)
    if p.resolution is not None:
        with localcontext() as ctx:
            ctx.prec = 100
            k = (d - _dec(p.offset)) / _dec(p.resolution)
            exact = k == k.to_integral_value()
        if not exact or round((float(d) - p.offset) / p.resolution) != k:
            return (f"{value} is not {p.offset:g} + a whole multiple of {p.resolution:g} "
                    "(the register's resolution); it would not be written exactly")
        return None
    if p.float_type is None:
        return None
    raw = (float(d) - p.offset) / p.scale
    try:
        if p.float_type == "float32":
            raw = struct.unpack(">f", struct.pack(">f", raw))[0]
        written = raw * p.scale + p.offset
    except (OverflowError, struct.error):
        return f"{value} does not fit a {p.float_type} register"
    exponent = d.as_tuple().exponent
    places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    # (a read-back exactly half a unit of the last decimal away rounds either way: refused)
    if not math.isfinite(written) or abs(Decimal(written) - d) >= Decimal(5).scaleb(-places - 1):
        return (f"{value} is not representable in a {p.float_type} register: it would be "
                f"written as {written!r}")
    return None


def direction(value: float, current: float) -> str:
    return "decrease" if value < current else "increase" if value > current else "none"


def authenticate(cmd: Command, ctx: AuthContext) -> Verdict:
    if cmd.gateway != ctx.gateway_id:
        return _no("wrong-gateway", f"addressed to {cmd.gateway!r}, this is {ctx.gateway_id!r}")
    issuer = ctx.issuers.get(cmd.issuer)
    if issuer is None:
        return _no("unknown-issuer", f"issuer {cmd.issuer!r} is not configured")
    if not issuer.allows(cmd.point):
        return _no("point-not-allowed", f"issuer {cmd.issuer!r} may not command {cmd.point!r}")
    message = cmd.signing_bytes()
    if not verify_signature(issuer.public_key, message, cmd.signature):
        return _no("bad-signature", f"signature of {cmd.issuer!r} does not verify")
    if cmd.point in ctx.two_person_points:
        approved_by = None
        for a in cmd.approvals:
            other = ctx.issuers.get(a.key_id)
            if (a.key_id != cmd.issuer and other is not None
                    and other.public_key != issuer.public_key and other.allows(cmd.point)
                    and verify_signature(other.public_key, message, a.signature)):
                approved_by = a.key_id
                break
        if approved_by is None:
            return _no("approval-required", f"{cmd.point!r} needs a valid signature of a second "
                       "configured issuer allowed for it")
    if (cmd.expires_at_ms <= cmd.not_before_ms or cmd.issued_at_ms > cmd.expires_at_ms
            or cmd.expires_at_ms - cmd.not_before_ms > ctx.max_lifetime_ms):
        return _no("bad-window", f"window [{cmd.not_before_ms}, {cmd.expires_at_ms}) issued "
                   f"{cmd.issued_at_ms}: must be non-empty and at most {ctx.max_lifetime_ms} ms")
    if cmd.not_before_ms > ctx.now_ms + ctx.skew_ms or cmd.issued_at_ms > ctx.now_ms + ctx.skew_ms:
        return _no("not-yet-valid", f"valid from {cmd.not_before_ms} (issued {cmd.issued_at_ms}),"
                   f" now {ctx.now_ms}, skew {ctx.skew_ms} ms")
    if cmd.expires_at_ms <= ctx.now_ms - ctx.skew_ms:
        return _no("expired", f"expired at {cmd.expires_at_ms}, now {ctx.now_ms}, "
                   f"skew {ctx.skew_ms} ms")
    if cmd.id in ctx.seen_ids:
        return _no("replayed", f"command id {cmd.id!r} was seen before")
    last = ctx.last_seq.get(cmd.issuer)
    if last is not None and cmd.seq <= last:
        return _no("stale-sequence", f"seq {cmd.seq} <= last accepted {last} of {cmd.issuer!r}")
    return ACCEPT


def authorize(cmd: Command, ctx: PlantContext) -> Verdict:
    p = ctx.points.get(cmd.point)
    if p is None:
        return _no("point-not-writable", f"{cmd.point!r} is not a declared writable point")
    if cmd.unit != p.unit:
        return _no("unit-mismatch", f"unit {cmd.unit!r}, the point's unit is {p.unit!r}")
    value = cmd.number()
    if not (math.isfinite(value) and p.min <= value <= p.max):
        return _no("out-of-range", f"{cmd.value} is outside [{p.min:g}, {p.max:g}] {p.unit}")
    misfit = representable(cmd.value, p)
    if misfit is not None:
        return _no("not-representable", misfit)
    if ctx.current is None or math.isnan(ctx.current):
        return _no("plant-unavailable", f"the present value of {cmd.point!r} could not be read")
    current = ctx.current
    if abs(value - current) > p.max_step * (1 + 1e-9) + 1e-12:
        return _no("step-too-large", f"{current:g} -> {cmd.value} is a step of "
                   f"{abs(value - current):g}, max {p.max_step:g}")
    recent = sum(1 for t in ctx.recent_writes_ms if 0 <= ctx.now_ms - t < p.rate_window_ms)
    if recent >= p.rate_max_writes:
        return _no("rate-limited", f"{recent} write(s) in the last {p.rate_window_ms} ms, "
                   f"limit {p.rate_max_writes}")
    way = direction(value, current)
    hold = ctx.overrides.get(cmd.point)
    if hold is not None and way == hold.forbid:
        return _no("local-rule-active", f"rule {hold.rule} forbids a {way} of {cmd.point!r}: "
                   f"{hold.detail}")
    for perm in p.permissives:
        if not perm.applies(way):
            continue
        got = ctx.signals.get(perm.signal)
        if got is None:
            return _no("plant-unavailable", f"permissive signal {perm.signal!r} could not be "
                       "read")
        if not perm.holds(got):
            return _no("permissive-blocked", f"needs {perm.describe()}, read {got:g}")
    if not ctx.enabled:
        return _no("control-disabled", "the global control switch is off")
    return ACCEPT


def evaluate(cmd: Command, auth: AuthContext, plant: PlantContext) -> Verdict:
    v = authenticate(cmd, auth)
    return v if not v.ok else authorize(cmd, plant)
