"""The own Solidity ABI codec (`ledger_client._abi`) against eth_abi and eth_utils: the same
bytes for every value of every type (nested tuples and arrays included), the same values
decoded, the same accept / refuse decision for malformed answers and unencodable values, and
EIP-55 checksums as eth_utils computes them. TxKey's fallback signer (eth_keys) against the
default (coincurve)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import eth_abi
import pytest
from eth_account import Account
from eth_utils.address import to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger_client import _signing
from ledger_client._abi import (
    address_bytes,
    checksum_address,
    decode,
    encode,
    parse_type,
)
from ledger_client._errors import AbiDecodeError, AbiEncodeError, AbiError, LedgerError
from ledger_client._signing import TxKey

Norm = Callable[[Any], Any]
#: (type string, strategy of its values, what eth_abi's decoded value becomes in ours)
Typed = tuple[str, st.SearchStrategy[Any], Norm]


def _same(v: Any) -> Any:
    return v


def _address_values() -> st.SearchStrategy[Any]:
    raw = st.binary(min_size=20, max_size=20)
    return st.one_of(raw, raw.map(lambda b: "0x" + b.hex()), raw.map(to_checksum_address),
                     raw.map(lambda b: b.hex().upper()))


_ELEMENTARY: st.SearchStrategy[Typed] = st.one_of(
    st.sampled_from(range(8, 257, 8)).map(
        lambda n: (f"uint{n}", st.integers(0, 2**n - 1), _same)),
    st.sampled_from(range(8, 257, 8)).map(
        lambda n: (f"int{n}", st.integers(-(2 ** (n - 1)), 2 ** (n - 1) - 1), _same)),
    st.just(("address", _address_values(), to_checksum_address)),
    st.just(("bool", st.booleans(), _same)),
    st.integers(1, 32).map(lambda n: (f"bytes{n}", st.binary(max_size=n), _same)),
    st.just(("bytes", st.binary(max_size=70), _same)),
    st.just(("string", st.text(max_size=40), _same)),
)


def _tuple_of(cs: list[Typed]) -> Typed:
    norms = [n for _, _, n in cs]
    return ("(" + ",".join(t for t, _, _ in cs) + ")", st.tuples(*[v for _, v, _ in cs]),
            lambda v: tuple(n(x) for n, x in zip(norms, v, strict=True)))


def _dynamic_array(c: Typed) -> Typed:
    t, vs, n = c
    return (t + "[]", st.lists(vs, max_size=3), lambda v: tuple(n(x) for x in v))


def _fixed_array(ck: tuple[Typed, int]) -> Typed:
    (t, vs, n), k = ck
    return (f"{t}[{k}]", st.lists(vs, min_size=k, max_size=k), lambda v: tuple(n(x) for x in v))


def _extend(children: st.SearchStrategy[Typed]) -> st.SearchStrategy[Typed]:
    return st.one_of(
        st.lists(children, min_size=1, max_size=4).map(_tuple_of),
        children.map(_dynamic_array),
        st.tuples(children, st.integers(1, 3)).map(_fixed_array),
    )


TYPED: st.SearchStrategy[Typed] = st.recursive(_ELEMENTARY, _extend, max_leaves=8)


@st.composite
def typed_values(draw: st.DrawFn) -> tuple[list[str], tuple[Any, ...], Norm]:
    """Random types (a list, as a function's inputs) and random values of them."""
    typed = draw(st.lists(TYPED, max_size=4))
    values = draw(st.tuples(*[v for _, v, _ in typed]))
    return [t for t, _, _ in typed], values, _tuple_of(typed)[2] if typed else _same


def _eth_abi_decode(types: list[str], data: bytes) -> tuple[bool, Any]:
    try:
        return True, eth_abi.decode(types, data)
    except Exception as e:  # eth_abi refuses with several types (DecodingError, Unicode, ...)
        return False, e


def _ours_decode(types: list[str], data: bytes) -> tuple[bool, Any]:
    try:
        return True, decode(types, data)
    except AbiDecodeError as e:
        return False, e


# -- the same bytes, the same values ------------------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tv=typed_values())
def test_encodes_as_eth_abi_and_decodes_what_eth_abi_decodes(
        tv: tuple[list[str], tuple[Any, ...], Norm]) -> None:
    types, values, norm = tv
    data = encode(types, values)
    assert data == eth_abi.encode(types, values)
    assert decode(types, data) == norm(eth_abi.decode(types, data))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tv=typed_values())
def test_decoding_inverts_encoding(tv: tuple[list[str], tuple[Any, ...], Norm]) -> None:
    types, values, _ = tv
    data = encode(types, values)
    again = decode(types, data)
    assert encode(types, again) == data  # bytesN come back padded, addresses checksummed


# -- untrusted answers: the same decision as eth_abi (strict) --------------------------------------


_WORD_VALUES = st.one_of(
    st.integers(0, 2**10).map(lambda i: i.to_bytes(32, "big")),  # small offsets / lengths
    st.integers(0, 16).map(lambda i: (32 * i).to_bytes(32, "big")),  # word-aligned offsets
    st.sampled_from([2**256 - 1, 2**255, 2**64, 2**32 - 32]).map(lambda i: i.to_bytes(32, "big")),
    st.binary(min_size=32, max_size=32),
    st.integers(0, 255).map(lambda b: bytes([b]) + bytes(31)),  # junk in the padding
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tv=typed_values(), data=st.data())
def test_malformed_answers_are_refused_exactly_when_eth_abi_refuses_them(
        tv: tuple[list[str], tuple[Any, ...], Norm], data: st.DataObject) -> None:
    types, values, norm = tv
    raw = bytearray(encode(types, values))
    for _ in range(data.draw(st.integers(1, 3))):
        how = data.draw(st.sampled_from(["word", "byte", "cut", "append"]))
        if how == "word" and len(raw) >= 32:
            i = data.draw(st.integers(0, len(raw) // 32 - 1)) * 32
            raw[i:i + 32] = data.draw(_WORD_VALUES)
        elif how == "byte" and raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        elif how == "cut" and raw:
            del raw[data.draw(st.integers(0, len(raw) - 1)):]
        else:
            raw += data.draw(st.binary(min_size=1, max_size=64))
    theirs_ok, theirs = _eth_abi_decode(types, bytes(raw))
    ours_ok, ours = _ours_decode(types, bytes(raw))
    assert ours_ok == theirs_ok, (types, raw.hex(), theirs, ours)
    if ours_ok:
        assert ours == norm(theirs)


def _w(i: int) -> bytes:
    return i.to_bytes(32, "big")


@pytest.mark.parametrize(("types", "data"), [
    (["uint256"], b"\x00" * 31),  # short
    (["uint8"], b"\x01" + bytes(31)),  # padding
    (["int8"], bytes(31) + b"\xff"),  # -1 without its sign extension
    (["int16"], b"\xff" * 30 + b"\x00\x01"),  # sign bits on a positive value
    (["bool"], _w(2)),
    (["address"], b"\x01" + bytes(31)),
    (["bytes4"], b"abcde" + bytes(27)),
    (["bytes"], _w(64)),  # the offset points past the data
    (["bytes"], _w(0) + _w(0)),  # the offset points into the head
    (["bytes"], _w(32) + _w(2**256 - 1)),  # a huge length
    (["bytes"], _w(32) + _w(33) + b"\x00" * 32),  # shorter than its length padded
    (["bytes"], _w(32) + _w(1) + b"a" + b"\x01" + bytes(30)),  # non-zero padding
    (["string"], _w(32) + _w(2) + b"\xc3\x28" + bytes(30)),  # not UTF-8
    (["uint256[]"], _w(32) + _w(2**255)),  # a huge array
    (["uint256[]"], _w(32) + _w(3) + _w(1) + _w(2)),  # one item short
    (["string[]"], _w(32) + _w(1) + _w(2**256 - 32)),  # an item's offset wraps nowhere
    (["(uint8,string)"], _w(32) + _w(1) + _w(0)),  # the inner offset points into the head
])
def test_malformed_answers_are_refused(types: list[str], data: bytes) -> None:
    assert not _eth_abi_decode(types, data)[0]
    with pytest.raises(AbiDecodeError) as e:
        decode(types, data)
    assert isinstance(e.value, ValueError) and isinstance(e.value, LedgerError)


def test_offsets_are_bounded_by_the_head_as_eth_abi_bounds_them() -> None:
    # eth_abi counts a static tuple in a head as one word when it bounds offsets: an offset
    # past it is accepted (by both) although it points into the head -- here at the offset
    # itself, read as the length of the bytes
    types = ["(uint256,uint256)", "bytes"]
    data = _w(7) + _w(5) + _w(64) + b"x" * 64
    assert eth_abi.decode(types, data) == ((7, 5), b"x" * 64) == decode(types, data)
    # trailing bytes are ignored by both
    assert decode(["uint8"], _w(1) + b"more") == (1,)


# -- unencodable values: the same decision as eth_abi ------------------------------------------


_WRONG_VALUES = st.one_of(
    st.integers(-(2**257), 2**257), st.booleans(), st.binary(max_size=40),
    st.text(alphabet="0123456789abcdefABCDEFxX", max_size=44), st.text(max_size=5),
    st.lists(st.integers(0, 3), max_size=4), st.none(), st.floats(allow_nan=False),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=st.one_of(_ELEMENTARY.map(lambda tvn: tvn[0]),
                   st.sampled_from(["(uint8,bool)", "uint8[]", "uint8[2]", "bytes32[]",
                                    "(address,string)[1]"])),
       value=_WRONG_VALUES)
def test_values_are_refused_exactly_when_eth_abi_refuses_them(t: str, value: Any) -> None:
    try:
        expected: bytes | None = eth_abi.encode([t], [value])
    except Exception:  # eth_abi's EncodingError tree, and TypeError/ValueError
        expected = None
    try:
        ours: bytes | None = encode([t], [value])
    except AbiEncodeError:
        ours = None
    assert ours == expected


def test_out_of_range_values_are_refused_with_a_clear_error() -> None:
    with pytest.raises(AbiEncodeError, match="does not fit uint8"):
        encode(["uint8"], [256])
    with pytest.raises(AbiEncodeError, match="does not fit int64"):
        encode(["int64"], [-(2**63) - 1])
    with pytest.raises(AbiEncodeError, match="5 bytes do not fit bytes4"):
        encode(["bytes4"], [b"abcde"])
    with pytest.raises(AbiEncodeError, match="has 2 items, got 3"):
        encode(["uint8[2]"], [[1, 2, 3]])
    with pytest.raises(ValueError, match="not an address"):
        encode(["address"], ["0x1234"])


@pytest.mark.parametrize("t", ["uint", "uint7", "uint264", "bytes0", "bytes33", "int08",
                               "fixed128x18", "()", "(uint8", "uint8[0]", "uint8[x]", "[]",
                               "function"])
def test_types_outside_the_supported_set_are_refused(t: str) -> None:
    with pytest.raises(AbiError):
        parse_type(t)


# -- EIP-55 --------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(min_size=20, max_size=20),
       form=st.sampled_from(["bytes", "lower", "upper", "bare", "0X", "checksum"]))
def test_checksum_addresses_as_eth_utils(raw: bytes, form: str) -> None:
    value: bytes | str = {
        "bytes": raw, "lower": "0x" + raw.hex(), "upper": "0x" + raw.hex().upper(),
        "bare": raw.hex(), "0X": "0X" + raw.hex(), "checksum": to_checksum_address(raw),
    }[form]
    assert checksum_address(value) == to_checksum_address(value)
    assert address_bytes(value) == raw


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.binary(max_size=25),
                       st.text(alphabet="0123456789abcdefABCDEFxXg", max_size=44)))
def test_not_addresses_are_refused_as_eth_utils_refuses_them(value: bytes | str) -> None:
    try:
        expected: str | None = to_checksum_address(value)
    except (ValueError, TypeError):
        expected = None
    try:
        ours: str | None = checksum_address(value)
    except AbiEncodeError:
        ours = None
    assert ours == expected


# -- TxKey without coincurve: eth_keys signs the same bytes --------------------------------------


@settings(max_examples=20, deadline=None)
@given(key=st.binary(min_size=32, max_size=32).filter(
           lambda k: 0 < int.from_bytes(k, "big") < 2**256 - 2**129),
       nonce=st.integers(0, 2**64 - 1), data=st.binary(max_size=100),
       chain_id=st.integers(1, 2**32))
def test_the_eth_keys_fallback_signs_the_same_bytes(key: bytes, nonce: int, data: bytes,
                                                     chain_id: int) -> None:
    fast = TxKey(key)
    saved = _signing._coincurve
    _signing._coincurve = None
    try:
        slow = TxKey(key)
    finally:
        _signing._coincurve = saved
    assert type(slow._key).__module__.startswith("eth_keys")  # the fallback did sign
    assert slow.address == fast.address == Account.from_key(key).address
    for signer in (slow, fast):
        assert signer.sign_legacy(nonce=nonce, gas_price=10**9, gas=100_000, to=b"\x11" * 20,
                                  value=5, data=data, chain_id=chain_id) == \
            fast.sign_legacy(nonce=nonce, gas_price=10**9, gas=100_000, to=b"\x11" * 20,
                             value=5, data=data, chain_id=chain_id)


def test_offsets_aliasing_one_long_value_are_refused() -> None:
    # 2,000 offsets to one 4 kB string: 4 kB + 64 kB of answer would decode to 8 MB (eth_abi
    # decodes it; an honest encoder never aliases): refused before the values pile up
    n, text = 2000, b"x" * 4096
    head = _w(32) + _w(n)
    target = 32 * n  # relative to the array's items
    data = head + b"".join(_w(target) for _ in range(n)) + _w(len(text)) + text
    assert eth_abi.decode(["string[]"], data) == (("x" * 4096,) * n,)
    with pytest.raises(AbiDecodeError, match="more than twice"):
        decode(["string[]"], data)
    assert decode(["string[]"], data[:32] + _w(2) + _w(64) + _w(64) + _w(1) + b"y" + bytes(31)) \
        == (("y", "y"),)  # a little aliasing is decoded, as eth_abi does
