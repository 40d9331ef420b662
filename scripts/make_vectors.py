"""Regenerate docs/vectors/formats.json (record leaves, Merkle trees, batch header, signatures).

The tests check the file against the code, against eth_abi (an independent ABI encoder) and
against the ledger contract running on anvil; regenerate only when the format version changes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from gateway import AuditRecord, DerivedRecord, Quality, Reading, Record
from ledger_client._format import (
    BatchHeader,
    encode_record,
    gateway_key,
    keccak256,
    merkle_proof,
    merkle_root,
    record_leaf,
    record_signing_bytes,
)
from ledger_client._signing import Signer

OUT = Path(__file__).resolve().parent.parent / "docs" / "vectors" / "formats.json"

READINGS = [
    Reading(gateway_id="plant-a-gw1", seq=1, point_id="feeder.energy", ts_ns=1_767_225_600_000_000_000,
            value=123456.78, unit="kWh", quality=0, source="modbus_tcp:feeder-meter"),
    Reading(gateway_id="plant-a-gw1", seq=2, point_id="feeder.power", ts_ns=1_767_225_601_000_000_000,
            value=math.nan, unit="kW", quality=int(Quality.COMM_FAULT),
            source="modbus_tcp:feeder-meter"),
    Reading(gateway_id="plant-a-gw1", seq=3, point_id="锅炉.燃气流量", ts_ns=-1,
            value=-0.0, unit="Nm3/h", quality=int(Quality.RANGE | Quality.SPIKE),
            source="hj212:MN88888880000001"),
]


OTHERS: list[Record] = [
    DerivedRecord(gateway_id="plant-a-gw1", seq=4, point_id="boiler.gas_flow",
                  derivation="hour-mean", period_start_ns=1_767_225_600_000_000_000,
                  period_end_ns=1_767_229_200_000_000_000, value=118.25, unit="Nm3/h",
                  quality=0, from_seq=1, to_seq=3),
    AuditRecord(gateway_id="plant-a-gw1", seq=5, ts_ns=1_767_225_602_000_000_000,
                category="command", subject="cmd-0001",
                payload='{"point":"vent1.opening","value":80,"verdict":"applied"}'),
]


def record_json(r: Record) -> dict[str, object]:
    from ledger_client._verify import record_to_json

    return record_to_json(r)


def main() -> None:
    records = [{"record": record_json(r), "body": "0x" + encode_record(r).hex(),
                "leaf": "0x" + record_leaf(r).hex()} for r in [*READINGS, *OTHERS]]
    trees = []
    for n in (1, 2, 3, 5, 8):
        leaves = [keccak256(f"leaf-{i}".encode()) for i in range(n)]
        trees.append({
            "leaves": ["0x" + x.hex() for x in leaves],
            "root": "0x" + merkle_root(leaves).hex(),
            "proofs": [["0x" + p.hex() for p in merkle_proof(leaves, i)] for i in range(n)],
        })
    leaves = [record_leaf(r) for r in READINGS]
    header = BatchHeader(
        gateway_id="plant-a-gw1", seq=1, prev_hash=b"\x00" * 32, root=merkle_root(leaves),
        count=3, first_record_seq=1, last_record_seq=3, first_ts_ns=-1,
        last_ts_ns=1_767_225_601_000_000_000, co2e_scope1_g=21_633_000, co2e_scope2_g=570_300,
        co2e_scope3_g=0)
    seed = bytes(range(32))
    signer = Signer(seed)
    hh = header.hash()
    out = {
        "format_version": 1,
        "records": records,
        "merkle": trees,
        "header": {
            "fields": {
                "gateway_id": header.gateway_id, "gateway_key": "0x" + gateway_key(header.gateway_id).hex(),
                "seq": header.seq, "prev_hash": "0x" + header.prev_hash.hex(),
                "root": "0x" + header.root.hex(), "count": header.count,
                "first_record_seq": header.first_record_seq,
                "last_record_seq": header.last_record_seq, "first_ts_ns": header.first_ts_ns,
                "last_ts_ns": header.last_ts_ns,
                "co2e_g": [header.co2e_scope1_g, header.co2e_scope2_g, header.co2e_scope3_g],
            },
            "encoded": "0x" + header.encode().hex(),
            "header_hash": "0x" + hh.hex(),
            "ed25519_seed": "0x" + seed.hex(),
            "ed25519_public_key": "0x" + signer.public_key.hex(),
            "signature": "0x" + signer.sign(hh).hex(),
        },
        # gateway.sign_records: the same key signs each record (tag ‖ leaf)
        "record_signatures": [{
            "seq": r.seq, "leaf": "0x" + record_leaf(r).hex(),
            "signed_bytes": "0x" + record_signing_bytes(record_leaf(r)).hex(),
            "signature": "0x" + signer.sign(record_signing_bytes(record_leaf(r))).hex(),
        } for r in [*READINGS, *OTHERS]],
    }
    OUT.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
