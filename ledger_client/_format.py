"""Byte formats another party must reproduce: record leaves, the Merkle tree, the batch header.

Specified in ``docs/formats.md``; the test vectors in ``docs/vectors/formats.json`` are checked
by ``tests/test_format.py``. Everything here is pure.

The hot functions (`keccak256`, `leaf_of_body`, `merkle_root`, `commit_readings`) use the
compiled module ``ledger_client._leafc`` when it is built (docs/compiled-path.md); it gives the
same bytes. ``MRV_PURE_PYTHON=1`` in the environment (read once, at import) forces the pure path;
`COMPILED` tells which one runs.

- record body  = abi.encode(uint8 kind, string gatewayId, uint64 seq, ...kind's fields)
                 kind 1 reading: string pointId, int64 tsNs, uint64 valueBits, string unit,
                                 uint32 quality, string source
                 kind 2 derived: string pointId, string derivation, int64 periodStartNs,
                                 int64 periodEndNs, uint64 valueBits, string unit,
                                 uint32 quality, uint64 fromSeq, uint64 toSeq
                 kind 3 audit:   int64 tsNs, string category, string subject, string payload
- leaf         = keccak256(keccak256(body))                     (OpenZeppelin double hashing)
- tree         = sorted-pair keccak256, leaves in record-seq order, an odd node is promoted
- header hash  = keccak256(abi.encode(BATCH_TAG, gatewayKey, seq, prevHash, root, count,
                           firstRecordSeq, lastRecordSeq, firstTsNs, lastTsNs,
                           co2eScope1G, co2eScope2G, co2eScope3G))
- signature    = Ed25519(gateway signing key, header hash)
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import cast

try:  # safe-pysha3: a C Keccak, about 4x faster than pycryptodome's per call
    from sha3 import keccak_256 as _keccak_256
except ImportError:  # pragma: no cover - the dependency is declared; this is a fallback
    _keccak_256 = None
from Crypto.Hash import keccak as _keccak

from mrv_core import DerivedRecord, Reading, Record

_leafc: ModuleType | None = None
if os.environ.get("MRV_PURE_PYTHON", "") in ("", "0"):
    try:
        from ledger_client import _leafc
    except ImportError:  # not built (no C compiler at install): the pure path
        _leafc = None
#: True when the compiled hot path (ledger_client._leafc) is in use, False on the pure path.
COMPILED: bool = _leafc is not None

KIND_READING = 1
KIND_DERIVED = 2
KIND_AUDIT = 3
ZERO32 = b"\x00" * 32


def _keccak256_py(data: bytes) -> bytes:
    if _keccak_256 is not None:
        return bytes(_keccak_256(data).digest())
    return _keccak.new(digest_bits=256, data=data).digest()


#: Keccak-256 of bytes-like ``data`` (the compiled one when built).
keccak256: Callable[[bytes], bytes] = _keccak256_py if _leafc is None else _leafc.keccak256

BATCH_TAG = keccak256(b"mrv-gateway/batch/v1")
RECORD_SIG_TAG = keccak256(b"mrv-gateway/record/v1")


def record_signing_bytes(leaf: bytes) -> bytes:
    """What a record signature signs (docs/formats.md, "Record signatures"): the 32-byte tag
    followed by the record's leaf, so it can never pass for a batch header signature."""
    if len(leaf) != 32:
        raise ValueError(f"a leaf has 32 bytes, not {len(leaf)}")
    return RECORD_SIG_TAG + leaf

_U256_MOD = 1 << 256
_pack_f64 = struct.Struct(">d").pack


def gateway_key(gateway_id: str) -> bytes:
    """The 32-byte on-chain key of a gateway: keccak256 of its UTF-8 id."""
    return keccak256(gateway_id.encode())


_NAN_BITS = (0x7FF8000000000000).to_bytes(8, "big")
_ZERO_BITS = bytes(8)


def _value_bytes(value: float) -> bytes:
    """The 8 big-endian bytes of `value_bits`."""
    return _NAN_BITS if value != value else _ZERO_BITS if value == 0.0 else _pack_f64(value)


def value_bits(value: float) -> int:
    """IEEE-754 binary64 bit pattern of ``value``. Canonical: every NaN is encoded as
    0x7FF8000000000000 and negative zero as zero (SQLite, like many stores, keeps neither)."""
    return int.from_bytes(_value_bytes(value), "big")


def _word(n: int) -> bytes:
    return (n % _U256_MOD).to_bytes(32, "big")


def _tail(b: bytes) -> bytes:
    return len(b).to_bytes(32, "big") + b + b"\x00" * ((-len(b)) % 32)


def abi_encode(types: Sequence[str], values: Sequence[object]) -> bytes:
    """Solidity ``abi.encode`` for the static types we use (uintN, intN, bytes32) and the
    dynamic ``string`` and ``bytes``. Checked against eth_abi by the tests."""
    heads: list[bytes | None] = []
    tails: list[bytes] = []
    for t, v in zip(types, values, strict=True):
        if t == "string":
            heads.append(None)
            tails.append(_tail(str(v).encode()))
        elif t == "bytes":
            heads.append(None)
            tails.append(_tail(bytes(v)))  # type: ignore[call-overload]
        elif t == "bytes32":
            b = bytes(v)  # type: ignore[call-overload]
            if len(b) != 32:
                raise ValueError(f"bytes32 value has {len(b)} bytes")
            heads.append(b)
        else:
            heads.append(_word(int(v)))  # type: ignore[call-overload]
    offset = 32 * len(types)
    out: list[bytes] = []
    ti = 0
    for h in heads:
        if h is None:
            out.append(_word(offset))
            offset += len(tails[ti])
            ti += 1
        else:
            out.append(h)
    return b"".join(out) + b"".join(tails)


_READING_TYPES = ("uint8", "string", "uint64", "string", "int64", "uint64", "string", "uint32",
                  "string")
_DERIVED_TYPES = ("uint8", "string", "uint64", "string", "string", "int64", "int64", "uint64",
                  "string", "uint32", "uint64", "uint64")
_AUDIT_TYPES = ("uint8", "string", "uint64", "int64", "string", "string", "string")


def _committed(r: Record) -> None:
    if r.seq <= 0 or not r.gateway_id:
        raise ValueError("only a committed record (seq > 0, gateway_id set) has a record body")


_string_tails: dict[str, bytes] = {}
_W_READING = _word(KIND_READING)


def _string_tail(s: str) -> bytes:
    """The ABI tail of a string (length word + padded UTF-8), cached: ids, units and sources
    repeat in every poll."""
    t = _string_tails.get(s)
    if t is None:
        if len(_string_tails) >= 65_536:
            _string_tails.clear()
        t = _string_tails[s] = _tail(s.encode())
    return t


_point_tails: dict[tuple[str, str, str], tuple[bytes, int, int]] = {}


def _point_tail(point_id: str, unit: str, source: str) -> tuple[bytes, int, int]:
    """The ABI tails of a reading's point id, unit and source, joined, with the lengths of the
    first one and the first two: one cached lookup per reading instead of three."""
    key = (point_id, unit, source)
    t = _point_tails.get(key)
    if t is None:
        if len(_point_tails) >= 65_536:
            _point_tails.clear()
        p = _tail(point_id.encode())  # ids are many and each is used here only: not cached apart
        u, s = _string_tail(unit), _string_tail(source)
        t = _point_tails[key] = (p + u + s, len(p), len(p) + len(u))
    return t


# words 2..8 of a reading's head (seq, offset, ts, value bits, offset, quality, offset), each a
# 32-byte big-endian word whose value fits in its last 8 bytes: one pack instead of seven.
_pack_head = struct.Struct(">24xQ24xQ24xQ24x8s24xQ24xQ24xQ").pack
_READING_PREFIX = _W_READING + _word(288)  # kind, offset of gatewayId (9 head words = 288)
def encode_reading(r: Reading) -> bytes:
    """The record body of a committed reading: ``abi.encode(_READING_TYPES...)``, written out
    by hand for speed (the hot path); `abi_encode` and eth_abi give the same bytes (tested)."""
    if r.seq <= 0 or not r.gateway_id:
        _committed(r)
    g = _string_tail(r.gateway_id)
    pus, len_p, len_pu = _point_tail(r.point_id, r.unit, r.source)
    off_p = 288 + len(g)
    off_u = off_p + len_p
    off_s = off_p + len_pu
    v = r.value
    try:
        head = _pack_head(r.seq, off_p, r.ts_ns, _value_bytes(v), off_u, r.quality, off_s)
    except struct.error:  # a timestamp before 1970 or a value beyond 64 bits: the long way
        return b"".join((
            _READING_PREFIX, r.seq.to_bytes(32, "big"), off_p.to_bytes(32, "big"),
            (r.ts_ns % _U256_MOD).to_bytes(32, "big"), value_bits(v).to_bytes(32, "big"),
            off_u.to_bytes(32, "big"), r.quality.to_bytes(32, "big"),
            off_s.to_bytes(32, "big"), g, pus))
    return b"".join((_READING_PREFIX, head, g, pus))


def encode_record(r: Record) -> bytes:
    """The record body of any committed record kind (docs/formats.md)."""
    if isinstance(r, Reading):
        return encode_reading(r)
    _committed(r)
    if isinstance(r, DerivedRecord):
        return abi_encode(_DERIVED_TYPES, (
            KIND_DERIVED, r.gateway_id, r.seq, r.point_id, r.derivation, r.period_start_ns,
            r.period_end_ns, value_bits(r.value), r.unit, r.quality, r.from_seq, r.to_seq))
    return abi_encode(_AUDIT_TYPES, (
        KIND_AUDIT, r.gateway_id, r.seq, r.ts_ns, r.category, r.subject, r.payload))


def record_leaf(r: Record) -> bytes:
    return leaf_of_body(encode_record(r))


def _leaf_of_body_py(body: bytes) -> bytes:
    if _keccak_256 is not None:
        return _keccak_256(_keccak_256(body).digest()).digest()  # type: ignore[no-any-return]
    return keccak256(keccak256(body))


#: A record's leaf from its body: keccak256(keccak256(body)) (the compiled one when built).
leaf_of_body: Callable[[bytes], bytes] = _leaf_of_body_py if _leafc is None else _leafc.leaf_of_body


def commit_readings(records: Sequence[object], first_seq: int, gateway_id: str
                    ) -> tuple[list[Reading], list[tuple[object, ...]]] | None:
    """The compiled commit of a chunk of readings (`_outbox._commit_rows`' fast path): the
    committed readings and their rows, or None when the path is not compiled or a record is not
    a plain `Reading` with the usual field types (then the caller does it all in Python)."""
    if _leafc is None:
        return None
    return cast("tuple[list[Reading], list[tuple[object, ...]]] | None",
                _leafc.commit_readings(records, first_seq, gateway_id, Reading))


def reading_leaf(r: Reading) -> bytes:
    return leaf_of_body(encode_reading(r))


def _hash_pair(a: bytes, b: bytes) -> bytes:
    return keccak256(a + b) if a < b else keccak256(b + a)


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Root of the sorted-pair tree; the root of one leaf is the leaf; of none, 32 zero bytes."""
    if _leafc is not None and type(leaves) in (list, tuple):
        try:
            return cast(bytes, _leafc.merkle_root(leaves))
        except (TypeError, ValueError):  # a leaf not of 32 bytes: the pure path decides
            pass
    return _merkle_root_py(leaves)


def _merkle_root_py(leaves: Sequence[bytes]) -> bytes:
    if not leaves:
        return ZERO32
    level = list(leaves)
    k = _keccak_256
    while len(level) > 1:
        if k is not None:  # the hot path: 10,000 leaves a batch
            nxt = [k(a + b).digest() if a < b else k(b + a).digest()
                   for a, b in zip(level[0::2], level[1::2], strict=False)]
        else:  # pragma: no cover
            nxt = [_hash_pair(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def merkle_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Sibling hashes from leaf ``index`` up to the root (OpenZeppelin ``MerkleProof`` order)."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf index {index} outside 0..{len(leaves) - 1}")
    proof: list[bytes] = []
    level = list(leaves)
    i = index
    while len(level) > 1:
        sib = i ^ 1
        if sib < len(level):
            proof.append(level[sib])
        nxt = [_hash_pair(level[k], level[k + 1]) for k in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        i //= 2
    return proof


def verify_proof(leaf: bytes, proof: Sequence[bytes], root: bytes) -> bool:
    h = leaf
    for p in proof:
        h = _hash_pair(h, p)
    return h == root


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchHeader:
    gateway_id: str
    seq: int
    prev_hash: bytes
    root: bytes
    count: int
    first_record_seq: int
    last_record_seq: int
    first_ts_ns: int
    last_ts_ns: int
    co2e_scope1_g: int = 0
    co2e_scope2_g: int = 0
    co2e_scope3_g: int = 0

    def encode(self) -> bytes:
        return b"".join((
            BATCH_TAG,
            gateway_key(self.gateway_id),
            _word(self.seq),
            self.prev_hash,
            self.root,
            _word(self.count),
            _word(self.first_record_seq),
            _word(self.last_record_seq),
            _word(self.first_ts_ns),
            _word(self.last_ts_ns),
            _word(self.co2e_scope1_g),
            _word(self.co2e_scope2_g),
            _word(self.co2e_scope3_g),
        ))

    def hash(self) -> bytes:
        return keccak256(self.encode())


def build_header(
    *,
    gateway_id: str,
    seq: int,
    prev_hash: bytes,
    records: Sequence[tuple[int, int, bytes]],
    co2e_g: tuple[int, int, int] = (0, 0, 0),
) -> BatchHeader:
    """Header over ``records`` given as ``(record_seq, ts_ns, leaf)`` in record-seq order."""
    fields = _leafc.header_fields(records) if _leafc is not None and type(records) is list \
        else None
    first, last, first_ts, last_ts, root = fields if fields is not None else \
        _header_fields_py(records)
    return BatchHeader(
        gateway_id=gateway_id,
        seq=seq,
        prev_hash=prev_hash,
        root=root,
        count=len(records),
        first_record_seq=first,
        last_record_seq=last,
        first_ts_ns=first_ts,
        last_ts_ns=last_ts,
        co2e_scope1_g=co2e_g[0],
        co2e_scope2_g=co2e_g[1],
        co2e_scope3_g=co2e_g[2],
    )


def _header_fields_py(records: Sequence[tuple[int, int, bytes]]
                      ) -> tuple[int, int, int, int, bytes]:
    """``(first_seq, last_seq, min_ts, max_ts, root)`` of a batch's keys: the reference for
    the compiled `_leafc.header_fields`, which gives the same for plain keys (tested) and
    leaves anything else here."""
    if not records:
        raise ValueError("a batch holds at least one record")
    seqs = [r[0] for r in records]
    if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
        raise ValueError("a batch holds a contiguous run of record seqs")
    ts = [r[1] for r in records]
    return seqs[0], seqs[-1], min(ts), max(ts), merkle_root([r[2] for r in records])


def reading_insert_params(rows: list[tuple[object, ...]], k: int) -> list[list[object]] | None:
    """The outbox's insert parameters of reading rows, ``k`` rows to a list (the last may hold
    fewer), without the two constant columns (kind 1, extra None), built by the compiled
    module; None when the path is not compiled or a row is not a reading row (then the
    caller binds every column). ``_outbox._reading_insert_params_py`` is the reference."""
    if _leafc is None:
        return None
    return cast("list[list[object]] | None", _leafc.reading_insert_params(rows, k))


def all_storable(readings: Sequence[object]) -> bool:
    """True when every reading is a plain `Reading` that `unstorable` passes (``ts_ns`` an
    int64, ``quality`` a uint32, ``value`` a float, text that encodes as UTF-8), checked in one
    compiled call. False when one is not, and whenever the compiled check cannot tell (the pure
    path, a list that is not a list or tuple, another record type, an ``int`` value): then the
    caller screens each reading with `unstorable`, as before."""
    return _leafc is not None and bool(_leafc.all_storable(readings, Reading))


def telemetry_json_compiled(gateway_id: str, readings: Sequence[object],
                            signatures: Sequence[bytes] | None = None) -> bytes | None:
    """``control.telemetry_json``'s bytes, written by the compiled module, or None when the
    path is not compiled or the message is not plain: readings (and signatures) not in a list or
    tuple, a record not exactly a `Reading` with exact-type fields (``str`` text, ``int``
    numbers, ``float`` value, ``bytes`` signatures), text that does not encode as UTF-8, or
    not one signature per reading. Then the caller writes it in Python."""
    if _leafc is None:
        return None
    return cast("bytes | None", _leafc.telemetry_json(gateway_id, readings, signatures, Reading))
