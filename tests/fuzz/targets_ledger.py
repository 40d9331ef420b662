"""Fuzz targets of the ledger client: the proof bundle an auditor is handed (untrusted input).

``ledger.bundle``: the bundle file's bytes -> `parse_bundle` (size and nesting limited before
JSON parsing, every field's type and range checked) -> the pure steps of verification (the
record's leaf, the Merkle proof against the root, the header hash, what the bundle shows
against what it proves, the Ed25519 signatures). A clean rejection is a `BundleError`.
"""

from __future__ import annotations

import json
import math

from ledger_client._format import (
    ZERO32,
    build_header,
    merkle_proof,
    record_leaf,
    record_signing_bytes,
    verify_proof,
)
from ledger_client._signing import Signer, verify_signature
from ledger_client._verify import Bundle, BundleError, parse_bundle, shown_values_check
from mrv_core._records import AuditRecord, DerivedRecord, Reading, Record
from tests.fuzz import Target

_SIGNER = Signer(b"\x07" * 32)


def _seeds() -> tuple[bytes, ...]:
    gw = "plant-a-gw1"
    recs: list[Record] = [
        Reading(gateway_id=gw, seq=1, point_id="boiler.gas", ts_ns=1_767_225_600_000_000_000,
                value=98765.1, unit="Nm3", quality=0, source="modbus_tcp:boiler"),
        Reading(gateway_id=gw, seq=2, point_id="stack.co2", ts_ns=1_767_225_601_000_000_000,
                value=math.nan, unit="%", quality=1, source="mqtt:stack"),
        DerivedRecord(gateway_id=gw, seq=3, point_id="boiler.gas", derivation="hour-mean",
                      period_start_ns=0, period_end_ns=3_600_000_000_000, value=-0.5,
                      unit="Nm3", quality=0, from_seq=1, to_seq=2),
        AuditRecord(gateway_id=gw, seq=4, ts_ns=5, category="command", subject="cmd-1",
                    payload='{"verdict":"applied"}'),
    ]
    leaves = [record_leaf(r) for r in recs]
    header = build_header(gateway_id=gw, seq=1, prev_hash=ZERO32,
                          records=[(r.seq, 1, leaf) for r, leaf in zip(recs, leaves, strict=True)],
                          co2e_g=(160, 0, 3))
    out = []
    for i, r in enumerate(recs):
        b = Bundle(record=r, header=header, signature=_SIGNER.sign(header.hash()),
                   proof=merkle_proof(leaves, i), chain_id=31337,
                   contract="0x5FbDB2315678afecb367f032d93F642f64180aa3",
                   record_signature=(_SIGNER.sign(record_signing_bytes(leaves[i]))
                                     if i % 2 else None))
        out.append(json.dumps(b.to_json(), indent=1 if i % 2 else None).encode())
    return tuple(out)


def bundle(data: bytes) -> None:
    b = parse_bundle(data)
    leaf = record_leaf(b.record)
    verify_proof(leaf, b.proof, b.header.root)
    shown_values_check(b)
    verify_signature(_SIGNER.public_key, b.header.hash(), b.signature)
    if b.record_signature is not None:
        verify_signature(_SIGNER.public_key, record_signing_bytes(leaf), b.record_signature)


TARGETS: list[Target] = [
    Target("ledger.bundle", bundle, (BundleError,), _seeds(), max_len=8192,
           oversize=(1 << 20) + 1),
]
