"""The live telemetry message (``<prefix>/<gw>/telemetry``, docs/control.md "Telemetry"): how
the gateway writes it, and how a governance body checks the record signatures it carries when
the gateway signs records (``gateway.sign_records``).

Kept light: imported by `control` (which ``config`` imports), so the ledger code it needs to
verify is imported when `verify_telemetry` is called.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from mrv_core import Reading, loads_bounded

#: A telemetry message is at most ``telemetry.max_per_message`` (10,000) readings of a few
#: hundred bytes; anything larger or deeper than {"readings": [{...}]} is refused unparsed.
MAX_TELEMETRY_BYTES = 8 * 1024 * 1024
MAX_TELEMETRY_DEPTH = 4

_json_strs: dict[str, str] = {}


def _json_str(s: str) -> str:
    j = _json_strs.get(s)
    if j is None:
        if len(_json_strs) >= 65_536:
            _json_strs.clear()
        j = _json_strs[s] = json.dumps(s, ensure_ascii=False)
    return j


_fragments: dict[str, str] = {}


def _fragment(point_id: str) -> str:
    """``{"point":<id>,"quality":`` of one point, cached (it starts every reading's object)."""
    if len(_fragments) >= 65_536:
        _fragments.clear()
    f = _fragments[point_id] = f'{{"point":{_json_str(point_id)},"quality":'
    return f


def _json_value(v: float) -> str:
    if type(v) is float:
        if v - v == 0.0:  # finite (inf - inf and NaN - NaN are NaN)
            return float.__repr__(v)
        if v != v:
            return "null"
        return "Infinity" if v > 0 else "-Infinity"
    return json.dumps(v)


_Compiled = Callable[[str, Sequence[Reading], "Sequence[bytes] | None"], "bytes | None"]
_compiled: _Compiled | None = None


def _bind_compiled() -> _Compiled:
    """``ledger_client.telemetry_json_compiled``, imported on the first message (not at
    import: `control` stays light for `config`)."""
    global _compiled
    from ledger_client import telemetry_json_compiled

    _compiled = telemetry_json_compiled
    return telemetry_json_compiled


def telemetry_json(gateway_id: str, readings: Sequence[Reading],
                   signatures: Sequence[bytes] | None = None) -> bytes:
    """The telemetry message: the same bytes as canonical JSON (sorted keys, no spaces) of
    ``{"gateway", "readings": [{"point", "quality", "seq", "ts_ns", "unit", "value"}]}``
    (tested). This runs for every reading the gateway commits, so plain readings are written
    by the compiled module (docs/compiled-path.md), the others by `_telemetry_json_py`, with
    the same bytes. With ``signatures`` (one per reading, the outbox's record signatures) each
    reading also carries ``"sig"`` and its ``"source"``, all a reader needs to rebuild the
    record's leaf and check the signature."""
    msg = (_compiled or _bind_compiled())(gateway_id, readings, signatures)
    if msg is not None:
        return msg
    return _telemetry_json_py(gateway_id, readings, signatures)


def _telemetry_json_py(gateway_id: str, readings: Sequence[Reading],
                       signatures: Sequence[bytes] | None = None) -> bytes:
    """`telemetry_json` in Python (the pure path and the reference), written out per reading
    with the point's and unit's JSON cached."""
    q = _json_str
    if signatures is None:
        frag = _fragments
        body = ",".join([
            f'{(frag.get(r.point_id) or _fragment(r.point_id))}{r.quality},"seq":{r.seq},'
            f'"ts_ns":{r.ts_ns},"unit":{q(r.unit)},"value":{_json_value(r.value)}}}'
            for r in readings])
    else:
        body = ",".join([
            f'{{"point":{q(r.point_id)},"quality":{r.quality},"seq":{r.seq},"sig":"0x{s.hex()}",'
            f'"source":{q(r.source)},"ts_ns":{r.ts_ns},"unit":{q(r.unit)},'
            f'"value":{_json_value(r.value)}}}'
            for r, s in zip(readings, signatures, strict=True)])
    return f'{{"gateway":{q(gateway_id)},"readings":[{body}]}}'.encode()


def verify_telemetry(message: bytes, public_key: bytes) -> list[tuple[int, bool]]:
    """Check the record signatures of a telemetry message with the gateway's Ed25519 public
    key (the one registered on the ledger): ``(seq, verified)`` per reading. A reading without
    a signature, or one whose fields were changed, is ``False``. Raises ``ValueError`` when
    the message is not a telemetry message."""
    from ledger_client import record_leaf, record_signing_bytes, verify_signature

    try:
        doc: Any = loads_bounded(message, max_bytes=MAX_TELEMETRY_BYTES,
                                 max_depth=MAX_TELEMETRY_DEPTH, what="telemetry message")
        gateway_id = doc["gateway"]
        items = doc["readings"]
        if not isinstance(gateway_id, str) or not isinstance(items, list):
            raise TypeError("expected {\"gateway\": string, \"readings\": list}")
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"not a telemetry message: {type(e).__name__}: {e}") from None
    out: list[tuple[int, bool]] = []
    for it in items:
        try:
            seq = it["seq"]
            if isinstance(seq, bool) or not isinstance(seq, int):
                raise TypeError("seq is not an integer")
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"not a telemetry reading: {repr(it)[:200]}") from None
        try:
            value = math.nan if it["value"] is None else float(it["value"])
            r = Reading(gateway_id=gateway_id, seq=seq, point_id=str(it["point"]),
                        ts_ns=int(it["ts_ns"]), value=value, unit=str(it["unit"]),
                        quality=int(it["quality"]), source=str(it["source"]))
            sig = bytes.fromhex(str(it["sig"]).removeprefix("0x"))
            ok = verify_signature(public_key, record_signing_bytes(record_leaf(r)), sig)
        except (KeyError, TypeError, ValueError, ArithmeticError):  # ArithmeticError: 1e999
            ok = False
        out.append((seq, ok))
    return out


def telemetry_chunks(readings: list[Reading], signatures: list[bytes] | None,
                     n: int) -> Iterable[tuple[list[Reading], list[bytes] | None]]:
    """``readings`` (and their signatures) in messages of at most ``n`` readings."""
    for i in range(0, len(readings), n):
        yield readings[i:i + n], None if signatures is None else signatures[i:i + n]
