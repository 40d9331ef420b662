"""The policy as a pure function over plain values: each reason code, the check order, and
safety properties under hypothesis (an accepted command is always within every limit)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from control._envelope import Approval, Command, public_key_of, sign_command
from control._policy import (
    REASON_CODES,
    REASONS,
    AuthContext,
    IssuerPolicy,
    Override,
    PermissivePolicy,
    PlantContext,
    PointPolicy,
    advances_seq,
    authenticate,
    authorize,
    consumes_id,
    evaluate,
)

NOW = 1_767_225_600_000
EPB = bytes([1]) * 32
AUD = bytes([2]) * 32
MAL = bytes([3]) * 32
ISSUERS = {"epb": IssuerPolicy(public_key_of(EPB), frozenset({"vent"})),
           "aud": IssuerPolicy(public_key_of(AUD), frozenset({"*"}))}
VENT = PointPolicy(unit="%", min=0, max=100, max_step=10, rate_max_writes=3,
                   rate_window_ms=60_000, resolution=0.1)


def cmd(value: str = "40", *, seed: bytes = EPB, **kw: Any) -> Command:
    base: dict[str, Any] = dict(id="c1", gateway="gw", point="vent", value=value, unit="%",
                                issued_at_ms=NOW - 1000, not_before_ms=NOW - 1000,
                                expires_at_ms=NOW + 60_000, seq=5, issuer="epb")
    base.update(kw)
    return sign_command(Command(**base), seed)


def auth_ctx(**kw: Any) -> AuthContext:
    base: dict[str, Any] = dict(gateway_id="gw", issuers=ISSUERS, two_person_points=frozenset(),
                                now_ms=NOW, skew_ms=2000, max_lifetime_ms=3_600_000,
                                seen_ids=frozenset(), last_seq={"epb": 4})
    base.update(kw)
    return AuthContext(**base)


def plant_ctx(**kw: Any) -> PlantContext:
    base: dict[str, Any] = dict(points={"vent": VENT}, now_ms=NOW, current=39.0, signals={},
                                recent_writes_ms=(), overrides={}, enabled=True)
    base.update(kw)
    return PlantContext(**base)


def reason(c: Command, a: AuthContext | None = None, p: PlantContext | None = None) -> str | None:
    return evaluate(c, a or auth_ctx(), p or plant_ctx()).reason


def test_reason_table_is_complete_and_unique() -> None:
    codes = [c for c, _ in REASONS]
    assert len(codes) == len(set(codes)) == len(REASON_CODES)
    assert all(desc for _, desc in REASONS)


def test_accepts_a_good_command() -> None:
    v = evaluate(cmd(), auth_ctx(), plant_ctx())
    assert v.ok and v.reason is None
    assert consumes_id(v) and advances_seq(v)


@pytest.mark.parametrize(("name", "c", "a", "p"), [
    ("wrong-gateway", cmd(gateway="gw2"), None, None),
    ("unknown-issuer", cmd(issuer="mallory", seed=MAL), None, None),
    ("point-not-allowed", cmd(point="damper"), None, None),
    ("bad-signature", replace(cmd(), value="41"), None, None),
    ("bad-signature", cmd(seed=MAL), None, None),
    ("approval-required", cmd(), auth_ctx(two_person_points={"vent"}), None),
    ("bad-window", cmd(expires_at_ms=NOW - 1000), None, None),  # expires == not_before
    ("bad-window", cmd(expires_at_ms=NOW + 7_200_000), None, None),  # lifetime > 1 h
    ("bad-window", cmd(issued_at_ms=NOW + 70_000), None, None),  # issued after expiry
    ("not-yet-valid", cmd(not_before_ms=NOW + 2001, issued_at_ms=NOW), None, None),
    ("not-yet-valid", cmd(issued_at_ms=NOW + 5000, not_before_ms=NOW), None, None),
    ("expired", cmd(not_before_ms=NOW - 60_000, issued_at_ms=NOW - 60_000,
                    expires_at_ms=NOW - 2000), None, None),
    ("replayed", cmd(), auth_ctx(seen_ids={"c1"}), None),
    ("stale-sequence", cmd(seq=4), None, None),
    ("stale-sequence", cmd(seq=3), None, None),
    ("point-not-writable", cmd(point="damper", issuer="aud", seed=AUD), None, None),
    ("unit-mismatch", cmd(unit="m3/h"), None, None),
    ("out-of-range", cmd("100.1"), None, plant_ctx(current=100.0)),
    ("out-of-range", cmd("-0.1"), None, plant_ctx(current=0.0)),
    ("not-representable", cmd("40.05"), None, None),
    ("plant-unavailable", cmd(), None, plant_ctx(current=None)),
    ("plant-unavailable", cmd(), None, plant_ctx(current=math.nan)),
    ("step-too-large", cmd("50.1"), None, plant_ctx(current=40.0)),
    ("step-too-large", cmd("29.9"), None, plant_ctx(current=40.0)),
    ("rate-limited", cmd(), None, plant_ctx(recent_writes_ms=(NOW - 59_999, NOW - 10, NOW))),
    ("local-rule-active", cmd("35"), None, plant_ctx(
        current=40.0, overrides={"vent": Override("leak", "decrease", "gas")})),
    ("permissive-blocked", cmd("35"), None, plant_ctx(
        current=40.0, points={"vent": replace(VENT, permissives=(
            PermissivePolicy("leak_alarm", equals=0, when="decrease"),))},
        signals={"leak_alarm": 1.0})),
    ("plant-unavailable", cmd("35"), None, plant_ctx(
        current=40.0, points={"vent": replace(VENT, permissives=(
            PermissivePolicy("leak_alarm", equals=0),))}, signals={})),
    ("control-disabled", cmd(), None, plant_ctx(enabled=False)),
])
def test_each_reason(name: str, c: Command, a: AuthContext | None,
                     p: PlantContext | None) -> None:
    assert reason(c, a, p) == name


@pytest.mark.parametrize(("c", "a", "p"), [
    (cmd(), auth_ctx(now_ms=NOW - 1000 - 2000), None),  # not_before exactly at the skew edge
    (cmd(expires_at_ms=NOW + 1), auth_ctx(now_ms=NOW + 2000), None),  # expiry within skew
    (cmd(seq=5), auth_ctx(last_seq={}), None),  # first command of an issuer
    (cmd("50"), None, plant_ctx(current=40.0)),  # a step of exactly max_step
    (cmd("100"), None, plant_ctx(current=95.0)),  # exactly max
    (cmd(), None, plant_ctx(recent_writes_ms=(NOW - 60_000, NOW - 70_000, NOW - 10, NOW))),
    (cmd("45"), None, plant_ctx(current=40.0, overrides={"vent": Override("leak", "decrease",
                                                                          "gas")})),
    (cmd("45"), None, plant_ctx(current=40.0, points={"vent": replace(VENT, permissives=(
        PermissivePolicy("leak_alarm", equals=0, when="decrease"),))}, signals={})),
    (cmd(approvals=()), auth_ctx(two_person_points={"other"}), None),
])
def test_boundaries_accept(c: Command, a: AuthContext | None, p: PlantContext | None) -> None:
    assert reason(c, a, p) is None


def _approved(c: Command, kid: str, seed: bytes) -> Command:
    from control._envelope import sign_bytes

    return replace(c, approvals=(*c.approvals, Approval(kid, sign_bytes(seed,
                                                                        c.signing_bytes()))))


def test_two_person_rule() -> None:
    a = auth_ctx(two_person_points={"vent"})
    c = cmd()
    assert reason(c, a) == "approval-required"
    assert reason(_approved(c, "aud", AUD), a) is None
    assert reason(_approved(c, "epb", EPB), a) == "approval-required"  # the same person twice
    assert reason(_approved(c, "aud", MAL), a) == "approval-required"  # forged approval
    assert reason(_approved(c, "mallory", MAL), a) == "approval-required"  # unknown approver
    # an approver who may not command the point does not count
    narrow = {**ISSUERS, "aud": IssuerPolicy(public_key_of(AUD), frozenset({"other"}))}
    assert reason(_approved(c, "aud", AUD), auth_ctx(two_person_points={"vent"},
                                                      issuers=narrow)) == "approval-required"
    # one person under two key ids (same public key) is still one person
    twin = {**ISSUERS, "aud": IssuerPolicy(public_key_of(EPB), frozenset({"*"}))}
    assert reason(_approved(c, "aud", EPB), auth_ctx(two_person_points={"vent"},
                                                      issuers=twin)) == "approval-required"


def test_id_and_sequence_consumption() -> None:
    """Forged, stale-window or replayed commands do not burn a real id; authentic ones do,
    whatever comes after; a stale sequence does not advance the issuer's sequence."""
    for r, consumes, advances in [("bad-signature", False, False), ("expired", False, False),
                                  ("replayed", False, False), ("stale-sequence", True, False),
                                  ("step-too-large", True, True), ("control-disabled", True, True)]:
        v = dataclasses.replace(evaluate(cmd(), auth_ctx(), plant_ctx()), reason=r)
        assert consumes_id(v) is consumes, r
        assert advances_seq(v) is advances, r


# -- the order of the checks, under hypothesis ---------------------------------------------

ORDER = ["wrong-gateway", "unknown-issuer", "point-not-allowed", "bad-signature",
         "approval-required", "bad-window", "time", "replayed", "stale-sequence",
         "point-not-writable", "unit-mismatch", "out-of-range", "not-representable",
         "plant-unavailable", "step-too-large", "rate-limited", "local-rule-active",
         "permissive-blocked", "control-disabled"]


@settings(max_examples=400, deadline=None)
@given(st.sets(st.sampled_from(ORDER)), st.sampled_from(["not-yet-valid", "expired"]))
def test_first_failing_check_names_the_verdict(fail: set[str], time_fault: str) -> None:
    value = "150" if "out-of-range" in fail else "40"
    if "not-representable" in fail:
        value += ".05"
    kw: dict[str, Any] = {"value": value}
    if "wrong-gateway" in fail:
        kw["gateway"] = "gw2"
    if "unknown-issuer" in fail:
        kw["issuer"] = "mallory"
    if "time" in fail:
        if time_fault == "not-yet-valid":
            kw.update(not_before_ms=NOW + 600_000, issued_at_ms=NOW,
                      expires_at_ms=NOW + 1_200_000)
        else:
            kw.update(not_before_ms=NOW - 1_200_000, issued_at_ms=NOW - 1_200_000,
                      expires_at_ms=NOW - 600_000)
    if "unit-mismatch" in fail:
        kw["unit"] = "kPa"
    c = cmd(seed=MAL if "unknown-issuer" in fail else EPB, **kw)
    if "bad-signature" in fail:
        c = replace(c, signature=bytes(64))
    issuers = dict(ISSUERS)
    if "point-not-allowed" in fail:
        issuers["epb"] = IssuerPolicy(public_key_of(EPB), frozenset({"damper"}))
    a = auth_ctx(issuers=issuers,
                 two_person_points={"vent"} if "approval-required" in fail else frozenset(),
                 max_lifetime_ms=1 if "bad-window" in fail else 3_600_000,
                 seen_ids={"c1"} if "replayed" in fail else frozenset(),
                 last_seq={"epb": 5 if "stale-sequence" in fail else 4})
    current = float(value) - 1 if "step-too-large" not in fail else float(value) - 30
    point = replace(VENT, permissives=(
        PermissivePolicy("sig", max=1.0),))
    p = plant_ctx(
        points={} if "point-not-writable" in fail else {"vent": point},
        current=None if "plant-unavailable" in fail else current,
        recent_writes_ms=(NOW,) * 3 if "rate-limited" in fail else (),
        overrides={"vent": Override("leak", "increase", "x")} if "local-rule-active" in fail
        else {},
        signals={"sig": 5.0 if "permissive-blocked" in fail else 0.0},
        enabled="control-disabled" not in fail)
    first = next((f for f in ORDER if f in fail), None)
    expected = time_fault if first == "time" else first
    assert reason(c, a, p) == expected


# -- safety properties ------------------------------------------------------------------

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=500, deadline=None)
@given(value=st.decimals(min_value=-200, max_value=200, places=2),
       current=st.one_of(st.none(), finite, st.just(math.nan)),
       lo=st.floats(-100, 100), span=st.floats(0, 100), step=st.floats(0.01, 100),
       writes=st.lists(st.integers(NOW - 120_000, NOW), max_size=6),
       limit=st.integers(1, 5), enabled=st.booleans(),
       signal=st.one_of(st.none(), finite), forbid=st.sampled_from([None, "decrease",
                                                                     "increase"]))
def test_an_accepted_command_is_within_every_limit(value: Any, current: float | None,
                                                   lo: float, span: float, step: float,
                                                   writes: list[int], limit: int, enabled: bool,
                                                   signal: float | None,
                                                   forbid: str | None) -> None:
    p = PointPolicy(unit="%", min=lo, max=lo + span, max_step=step, rate_max_writes=limit,
                    rate_window_ms=60_000,
                    permissives=(PermissivePolicy("s", min=0.0, when="decrease"),))
    c = cmd(str(value))
    overrides = {} if forbid is None else {"vent": Override("r", forbid, "")}  # type: ignore[arg-type]
    ctx = plant_ctx(points={"vent": p}, current=current, recent_writes_ms=writes,
                    enabled=enabled, signals={} if signal is None else {"s": signal},
                    overrides=overrides)
    v = authorize(c, ctx)
    assert v.reason in REASON_CODES or v.ok
    x = float(value)
    if v.ok:
        assert current is not None and not math.isnan(current)
        assert p.min <= x <= p.max
        assert abs(x - current) <= step * (1 + 1e-9) + 1e-12
        assert sum(1 for t in writes if NOW - t < 60_000) < limit
        assert enabled
        if x < current:
            assert signal is not None and signal >= 0
            assert forbid != "decrease"
        if x > current:
            assert forbid != "increase"
    if not (p.min <= x <= p.max):
        assert v.reason == "out-of-range"  # rejected, never clamped


@settings(max_examples=200, deadline=None)
@given(now=st.integers(NOW - 10**7, NOW + 10**7), nb=st.integers(NOW - 10**7, NOW + 10**7),
       life=st.integers(-10, 10**7), skew=st.integers(0, 10_000))
def test_time_window_property(now: int, nb: int, life: int, skew: int) -> None:
    c = cmd(not_before_ms=nb, issued_at_ms=nb, expires_at_ms=nb + life)
    v = authenticate(c, auth_ctx(now_ms=now, skew_ms=skew))
    if v.ok:
        assert nb - skew <= now < nb + life + skew
        assert 0 < life <= 3_600_000
    elif v.reason in ("not-yet-valid", "expired", "bad-window"):
        assert not (nb - skew <= now < nb + life + skew) or not 0 < life <= 3_600_000
    else:
        pytest.fail(f"unexpected {v.reason}")


# -- representability: exactly the signed value, or a nack (issue 11, item 6) -------------

_SCALES = ["1", "0.1", "0.01", "0.5", "0.25", "2", "10", "-0.1", "0.001"]
_OFFSETS = ["0", "-40", "1.5", "273.15"]


def _int_point(scale: str, offset: str) -> PointPolicy:
    return PointPolicy(unit="%", min=-1e12, max=1e12, max_step=1e12, rate_max_writes=10,
                       rate_window_ms=60_000, resolution=abs(float(scale)),
                       offset=float(offset), scale=float(scale))


def test_the_reported_sub_resolution_values_are_refused() -> None:
    """A signed "46.0000001" on a uint16 register was written as 46 (item 6)."""
    uint16 = _int_point("1", "0")
    for value in ("46.0000001", "46.000000001", "45.999999999"):
        v = authorize(cmd(value), plant_ctx(points={"vent": uint16}, current=46.0))
        assert v.reason == "not-representable", (value, v)
    assert authorize(cmd("46"), plant_ctx(points={"vent": uint16}, current=46.0)).ok
    v = authorize(cmd("40.00000001"), plant_ctx())  # VENT: 0.1 % resolution
    assert v.reason == "not-representable", v
    # beyond a float's 53 bits: the write path would round 2**53 + 1 to 2**53
    big = PointPolicy(unit="%", min=0, max=2.0**64, max_step=2.0**64, rate_max_writes=10,
                      rate_window_ms=60_000, resolution=1.0)
    v = authorize(cmd(str(2**53 + 1)), plant_ctx(points={"vent": big}, current=2.0**53))
    assert v.reason == "not-representable", v
    assert authorize(cmd(str(2**53)), plant_ctx(points={"vent": big}, current=2.0**53)).ok


@settings(max_examples=400, deadline=None)
@given(scale=st.sampled_from(_SCALES), offset=st.sampled_from(_OFFSETS),
       k=st.integers(-10**6, 10**6), nudge=st.integers(-999, 999),
       places=st.integers(1, 9))
def test_integer_registers_take_exact_multiples_only(scale: str, offset: str, k: int,
                                                     nudge: int, places: int) -> None:
    """Oracle: exact rational arithmetic (Fraction), and the codec's own encoding."""
    from fractions import Fraction

    from control._codec import to_registers
    from drivers.modbus._decode import encode

    exact = Fraction(offset) + k * Fraction(scale)
    value = exact + Fraction(nudge, 10**places)
    text = f"{float(value):.9f}".rstrip("0").rstrip(".")
    if Fraction(text) != value:  # not writable with 9 decimals: not a case
        return
    ratio = (Fraction(text) - Fraction(offset)) / Fraction(scale)
    p = _int_point(scale, offset)
    v = authorize(cmd(text), plant_ctx(points={"vent": p}, current=float(text)))
    if ratio.denominator == 1:
        assert v.ok, (text, scale, offset, v)
        spec = dataclasses.make_dataclass("Spec", ["type", "word_order", "scale", "offset"])(
            "int32", "ABCD", float(scale), float(offset))
        assert to_registers(spec, float(text)) == encode(int(ratio), "int32", "ABCD")
    else:
        assert v.reason == "not-representable", (text, scale, offset, v)


@settings(max_examples=400, deadline=None)
@given(text=st.from_regex(r"-?(0|[1-9][0-9]{0,7})(\.[0-9]{1,9})?", fullmatch=True),
       dtype=st.sampled_from(["float32", "float64"]))
@example(text="2000000.3", dtype="float32")  # read back 2000000.25: a tie, refused
@example(text="2000000.25", dtype="float32")  # exact
def test_float_registers_read_back_as_the_signed_decimal(text: str, dtype: str) -> None:
    """Accepted iff the registers the codec writes decode to a number that rounds to the
    signed decimal at its own number of decimals."""
    from decimal import Decimal

    from control._codec import from_registers, to_registers

    spec = dataclasses.make_dataclass("Spec", ["type", "word_order", "scale", "offset"])(
        dtype, "CDAB", 1.0, 0.0)
    p = PointPolicy(unit="%", min=-1e12, max=1e12, max_step=1e12, rate_max_writes=10,
                    rate_window_ms=60_000, float_type=dtype)
    v = authorize(cmd(text), plant_ctx(points={"vent": p}, current=float(text)))
    back = Decimal(from_registers(spec, to_registers(spec, float(text))))
    quantum = Decimal(1).scaleb(Decimal(text).as_tuple().exponent)  # type: ignore[arg-type]
    same = abs(back - Decimal(text)) * 2 < quantum  # a tie rounds either way: not the same
    assert v.ok == same, (text, dtype, back, v)
    if dtype == "float32" and text in ("46.0000001", "16777217"):
        assert not v.ok
