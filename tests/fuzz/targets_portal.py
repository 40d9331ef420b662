"""Fuzz targets of the portal: a gateway's submission (untrusted input).

``portal.ingest``: a request body -> `parse_submission` (size and nesting limited before JSON
parsing, records capped before any is parsed, every field's type, range and length checked) ->
`check_submission` (leaves, Merkle root, header hash, signatures against the registered key).
A clean rejection is a `Refused`.
"""

from __future__ import annotations

from portal._ingest import Refused, check_submission, parse_submission
from tests.fuzz import Target
from tests.ingest_support import build, records, signer

_KEY = signer(7)
MAX_BYTES = 1 << 20


def _seeds() -> tuple[bytes, ...]:
    gw = "plant-f-gw1"
    return (build(gw, 1, records(gw, 1, 7), _KEY).body(),
            build(gw, 3, records(gw, 20, 3, mixed=False), _KEY, sign_records=True).body())


def ingest(data: bytes) -> None:
    sub = parse_submission(data, max_bytes=MAX_BYTES)
    check_submission(sub, _KEY.public_key)


TARGETS = [Target("portal.ingest", ingest, (Refused,), _seeds())]
