"""A small Solidity ABI codec (``abi.encode`` / ``abi.decode``) and EIP-55 checksum addresses.

What the gateway's chain client needs without eth_abi / eth_utils (whose import costs the
daemon ~13 MB): `encode` and `decode` of the types ``uintN``, ``intN``, ``address``, ``bool``,
``bytesN``, ``bytes``, ``string``, tuples ``(T1,T2,...)``, dynamic arrays ``T[]`` and fixed
arrays ``T[k]``, nested freely. The semantics are eth_abi's (6.x, ``strict=True``), checked
byte for byte and decision for decision by tests/test_abi.py:

- encode refuses a value of the wrong Python type or out of its type's range (`AbiEncodeError`):
  ints (not bools) in range, bools, ``bytes``/``bytearray`` (``bytesN``: at most N bytes,
  right-padded), ``str`` for ``string``, addresses as 20 bytes or 40 hex digits (``0x``
  optional, any case), tuples and arrays as sequences of the right length (not str/bytes);
- decode is strict (`AbiDecodeError`): every word present, the padding of every static value
  zero (sign bits for ``intN``; bools 0 or 1), ``bytes``/``string`` padded to 32 with zeros,
  strings valid UTF-8, every offset pointing past its container's head and inside the data.
  Like eth_abi it ignores trailing bytes, and counts a static tuple in a head as one word and a
  static ``T[k]`` as k words when it bounds offsets (so it accepts what eth_abi accepts). One
  refusal is its own: values adding up to more than twice the data's size (offsets pointing at
  one long value many times: a few kB of answer would decode to gigabytes), which eth_abi
  decodes and no honest encoder produces.
  Lengths are untrusted: a length is checked against the bytes left before anything is read or
  allocated by it. Addresses decode to EIP-55 checksum strings (eth_abi gives lowercase; web3
  and the gateway want the checksum form), ``bytes``/``bytesN`` to bytes, tuples and arrays to
  tuples.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from ledger_client._errors import AbiDecodeError, AbiEncodeError, AbiError
from ledger_client._format import keccak256

_HEX_ADDRESS = re.compile(r"(0x)?[0-9a-f]{40}", re.IGNORECASE | re.ASCII)
_ZERO32 = bytes(32)
_FF32 = b"\xff" * 32


# -- EIP-55 ------------------------------------------------------------------------------------


def address_bytes(value: object) -> bytes:
    """The 20 bytes of an address given as 20 bytes or as 40 hex digits (``0x`` optional,
    any case; the checksum of a mixed-case address is not checked, as in eth_utils 6)."""
    if isinstance(value, bytes | bytearray):
        if len(value) == 20:
            return bytes(value)
    elif isinstance(value, str) and _HEX_ADDRESS.fullmatch(value):
        return bytes.fromhex(value[-40:])
    raise AbiEncodeError(f"not an address (20 bytes or 40 hex digits): {str(value)[:80]!r}")


def checksum_address(value: object) -> str:
    """The EIP-55 checksum form (``0x`` + mixed-case hex) of an address given as 20 bytes or
    40 hex digits: what eth_utils' ``to_checksum_address`` returns (tested)."""
    return _checksum(address_bytes(value))


def _checksum(raw: bytes) -> str:
    low = raw.hex()
    digest = keccak256(low.encode()).hex()
    return "0x" + "".join(c.upper() if int(h, 16) > 7 else c
                          for c, h in zip(low, digest, strict=False))


# -- types -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Type:
    """A parsed ABI type. ``kind``: uint, int, address, bool, fixed (bytesN), bytes, string,
    tuple, array. ``size``: bits of an integer, N of bytesN, k of ``T[k]`` (-1 for ``T[]``)."""

    kind: str
    size: int = 0
    items: tuple[_Type, ...] = ()  # a tuple's components; an array's item type (one)
    dynamic: bool = False
    head: int = 32  # bytes in its container's head: 32 for a dynamic type (its offset)
    heads_counted: int = 1  # what eth_abi counts for it when it bounds offsets (see above)


_ELEMENTARY = re.compile(r"(uint|int|bytes)(\d*)|address|bool|string", re.ASCII)


@cache
def parse_type(text: str) -> _Type:
    """The `_Type` of an ABI type string; `AbiError` for what is none (or is not supported:
    ``fixed``/``ufixed``, ``function``, the empty tuple, unsized ``uint``/``int``)."""
    if text.endswith("]"):
        i = text.rfind("[")
        if i <= 0:
            raise AbiError(f"not an ABI type: {text!r}")
        item = parse_type(text[:i])
        dim = text[i + 1:-1]
        if dim == "":
            return _Type("array", -1, (item,), True)
        if not dim.isdecimal() or dim.startswith("0"):
            raise AbiError(f"not an array size in {text!r}")
        k = int(dim)
        if item.dynamic:
            return _Type("array", k, (item,), True)
        return _Type("array", k, (item,), False, item.head * k, k)
    if text.startswith("("):
        if not text.endswith(")"):
            raise AbiError(f"not an ABI type: {text!r}")
        parts = _split(text[1:-1], text)
        comps = tuple(parse_type(p) for p in parts)
        if any(c.dynamic for c in comps):
            return _Type("tuple", 0, comps, True)
        return _Type("tuple", 0, comps, False, sum(c.head for c in comps))
    m = _ELEMENTARY.fullmatch(text)
    if m is None:
        raise AbiError(f"not a supported ABI type: {text!r}")
    base, digits = m.group(1), m.group(2)
    if base is None:
        return _Type(text, 0, (), text == "string")
    if base == "bytes":
        if digits == "":
            return _Type("bytes", 0, (), True)
        n = int(digits)
        if not 1 <= n <= 32 or digits != str(n):
            raise AbiError(f"not an ABI type: {text!r} (bytes1 to bytes32)")
        return _Type("fixed", n)
    bits = int(digits) if digits else 0
    if not 8 <= bits <= 256 or bits % 8 or digits != str(bits):
        raise AbiError(f"not an ABI type: {text!r} ({base}8 to {base}256, multiples of 8)")
    return _Type(base, bits)


def _split(inner: str, text: str) -> list[str]:
    """The components of a tuple type's inside, split at its top-level commas."""
    if inner == "":
        raise AbiError(f"the empty tuple is not supported: {text!r}")
    parts: list[str] = []
    depth = 0
    start = 0
    for i, c in enumerate(inner):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise AbiError(f"unbalanced parentheses in {text!r}")
        elif c == "," and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
    if depth != 0:
        raise AbiError(f"unbalanced parentheses in {text!r}")
    parts.append(inner[start:])
    return parts


def _tuple_of(types: Sequence[str]) -> _Type:
    if isinstance(types, str) or not isinstance(types, list | tuple):
        raise TypeError(f"types must be a list or tuple of type strings, got {type(types)}")
    return parse_type("(" + ",".join(types) + ")") if types else _Type("tuple")


# -- encoding ----------------------------------------------------------------------------------


def encode(types: Sequence[str], values: Sequence[Any]) -> bytes:
    """``abi.encode(values...)`` as Solidity and eth_abi's ``encode(types, values)`` do."""
    if not isinstance(values, list | tuple):
        raise TypeError(f"values must be a list or tuple, got {type(values)}")
    return _encode(_tuple_of(types), values)


def _seq(t: _Type, value: object) -> Sequence[Any]:
    if isinstance(value, str | bytes | bytearray) or not isinstance(value, Sequence):
        raise AbiEncodeError(f"a {t.kind} takes a list or tuple, got {type(value).__name__}")
    return value


def _encode(t: _Type, value: Any) -> bytes:
    kind = t.kind
    if kind == "uint":
        if not isinstance(value, int) or isinstance(value, bool):
            raise AbiEncodeError(f"uint{t.size} takes an int, got {type(value).__name__}")
        if not 0 <= value < 1 << t.size:
            raise AbiEncodeError(f"{value} does not fit uint{t.size}")
        return value.to_bytes(32, "big")
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise AbiEncodeError(f"int{t.size} takes an int, got {type(value).__name__}")
        if not -(1 << (t.size - 1)) <= value < 1 << (t.size - 1):
            raise AbiEncodeError(f"{value} does not fit int{t.size}")
        return value.to_bytes(32, "big", signed=True)
    if kind == "address":
        return bytes(12) + address_bytes(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise AbiEncodeError(f"bool takes a bool, got {type(value).__name__}")
        return (1 if value else 0).to_bytes(32, "big")
    if kind == "fixed":
        if not isinstance(value, bytes | bytearray):
            raise AbiEncodeError(f"bytes{t.size} takes bytes, got {type(value).__name__}")
        if len(value) > t.size:
            raise AbiEncodeError(f"{len(value)} bytes do not fit bytes{t.size}")
        return bytes(value).ljust(32, b"\x00")
    if kind == "bytes" or kind == "string":
        if kind == "bytes":
            if not isinstance(value, bytes | bytearray):
                raise AbiEncodeError(f"bytes takes bytes, got {type(value).__name__}")
            raw = bytes(value)
        else:
            if not isinstance(value, str):
                raise AbiEncodeError(f"string takes a str, got {type(value).__name__}")
            try:
                raw = value.encode()
            except UnicodeEncodeError as e:
                raise AbiEncodeError(f"the string is not encodable as UTF-8: {e}") from None
        pad = -len(raw) % 32
        return len(raw).to_bytes(32, "big") + raw + bytes(pad)
    if kind == "tuple":
        seq = _seq(t, value)
        if len(seq) != len(t.items):
            raise AbiEncodeError(f"the tuple has {len(t.items)} items, got {len(seq)}")
        return _encode_items(t.items, seq)
    # array
    seq = _seq(t, value)
    item = t.items[0]
    if t.size >= 0 and len(seq) != t.size:
        raise AbiEncodeError(f"the array has {t.size} items, got {len(seq)}")
    body = _encode_items((item,) * len(seq), seq)
    return body if t.size >= 0 else len(seq).to_bytes(32, "big") + body


def _encode_items(types: Sequence[_Type], values: Sequence[Any]) -> bytes:
    """Head (static values, offsets of dynamic ones) then tails."""
    encoded = [_encode(t, v) for t, v in zip(types, values, strict=True)]
    offset = sum(t.head for t in types)
    heads: list[bytes] = []
    tails: list[bytes] = []
    for t, enc in zip(types, encoded, strict=True):
        if t.dynamic:
            heads.append(offset.to_bytes(32, "big"))
            tails.append(enc)
            offset += len(enc)
        else:
            heads.append(enc)
    return b"".join(heads) + b"".join(tails)


# -- decoding ----------------------------------------------------------------------------------


def decode(types: Sequence[str], data: bytes) -> tuple[Any, ...]:
    """The values ABI-encoded in ``data`` (eth_abi's ``decode(types, data)``, strict, with
    addresses in checksum form); `AbiDecodeError` for data that is no such encoding."""
    if not isinstance(data, bytes | bytearray):
        raise TypeError(f"data must be bytes, got {type(data)}")
    value = _Reader(bytes(data)).tuple_at(_tuple_of(types), 0)
    return value


class _Reader:
    __slots__ = ("budget", "data", "end")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.end = len(data)
        # what the values may add up to (32 a word, n a bytes/string of n): an honest encoding
        # adds up to at most its own size; offsets aliasing one long value could multiply it
        self.budget = 2 * len(data) + 4096

    def charge(self, n: int, pos: int) -> None:
        self.budget -= n
        if self.budget < 0:
            raise AbiDecodeError(f"at byte {pos}: the values add up to more than twice the"
                                 " data (offsets pointing at one value many times)")

    def word(self, pos: int) -> bytes:
        if pos + 32 > self.end:
            raise AbiDecodeError(f"the data ends at byte {self.end}: no 32-byte word at {pos}")
        return self.data[pos:pos + 32]

    def uint256(self, pos: int) -> int:
        return int.from_bytes(self.word(pos), "big")

    def pointer(self, base: int, pos: int, end_of_heads: int) -> int:
        """The absolute position an offset at ``pos`` (relative to ``base``) points to: past
        the container's head and inside the data, as eth_abi requires."""
        target = base + self.uint256(pos)
        if target < end_of_heads or target >= self.end:
            raise AbiDecodeError(f"the offset at byte {pos} points outside the data")
        return target

    def static(self, t: _Type, pos: int) -> Any:
        kind = t.kind
        if kind == "tuple":
            return self.tuple_at(t, pos)
        if kind == "array":
            return self.items(t.items[0], t.size, pos)
        w = self.word(pos)
        self.charge(32, pos)
        if kind == "uint":
            pad = 32 - t.size // 8
            if w[:pad] != _ZERO32[:pad]:
                raise AbiDecodeError(f"uint{t.size} at byte {pos}: non-zero padding")
            return int.from_bytes(w, "big")
        if kind == "int":
            pad = 32 - t.size // 8
            v = int.from_bytes(w[pad:], "big", signed=True)
            if w[:pad] != (_ZERO32 if v >= 0 else _FF32)[:pad]:
                raise AbiDecodeError(f"int{t.size} at byte {pos}: padding is no sign extension")
            return v
        if kind == "address":
            if w[:12] != _ZERO32[:12]:
                raise AbiDecodeError(f"address at byte {pos}: non-zero padding")
            return _checksum(w[12:])
        if kind == "bool":
            if w[:31] != _ZERO32[:31] or w[31] > 1:
                raise AbiDecodeError(f"bool at byte {pos}: neither 0 nor 1")
            return w[31] == 1
        # fixed: bytesN
        if w[t.size:] != _ZERO32[t.size:]:
            raise AbiDecodeError(f"bytes{t.size} at byte {pos}: non-zero padding")
        return w[:t.size]

    def dynamic(self, t: _Type, pos: int) -> Any:
        """A dynamic value starting at ``pos`` (where an offset pointed)."""
        kind = t.kind
        if kind == "tuple":
            return self.tuple_at(t, pos)
        if kind == "array":
            if t.size >= 0:
                return self.items(t.items[0], t.size, pos)
            n = self.uint256(pos)
            self.charge(32, pos)
            item = t.items[0]
            if n * item.head > self.end - pos - 32:  # checked before anything is read for it
                raise AbiDecodeError(f"the array at byte {pos} claims {n} items: more than the"
                                     " data holds")
            return self.items(item, n, pos + 32)
        n = self.uint256(pos)
        padded = n + (-n % 32)
        if padded > self.end - pos - 32:
            raise AbiDecodeError(f"the {kind} at byte {pos} claims {n} bytes: more than the"
                                 " data holds")
        self.charge(32 + n, pos)
        start = pos + 32
        if self.data[start + n:start + padded] != _ZERO32[:padded - n]:
            raise AbiDecodeError(f"the {kind} at byte {pos}: non-zero padding")
        raw = self.data[start:start + n]
        if kind == "bytes":
            return raw
        try:
            return raw.decode()
        except UnicodeDecodeError as e:
            raise AbiDecodeError(f"the string at byte {pos} is not UTF-8: {e}") from None

    def items(self, item: _Type, n: int, base: int) -> tuple[Any, ...]:
        """``n`` values of one type, their head at ``base`` (a fixed or a dynamic array's)."""
        if not item.dynamic:
            return tuple(self.static(item, base + i * item.head) for i in range(n))
        end_of_heads = base + 32 * n
        targets = [self.pointer(base, base + 32 * i, end_of_heads) for i in range(n)]
        return tuple(self.dynamic(item, p) for p in targets)

    def tuple_at(self, t: _Type, base: int) -> tuple[Any, ...]:
        # eth_abi's lower bound for offsets: a static tuple counts as one word (see the top)
        end_of_heads = base + 32 * sum(c.heads_counted for c in t.items)
        pos = base
        out: list[Any] = []
        pointers: list[tuple[int, int]] = []
        for i, c in enumerate(t.items):
            if c.dynamic:
                pointers.append((i, self.pointer(base, pos, end_of_heads)))
                out.append(None)
            else:
                out.append(self.static(c, pos))
            pos += c.head
        for i, p in pointers:
            out[i] = self.dynamic(t.items[i], p)
        return tuple(out)
