"""Fuzz targets: what the portal's indexer takes from a chain node — a JSON-RPC answer of
``eth_getLogs`` (parsed with its depth checked first, each log's shape and sizes checked), and
a log's data decoded by its event's ABI into an ``ev_*`` row. The clean rejections are
`ChainUnavailable` (the node answered nonsense: retried later) and `DecodeFailure` (a log that
does not decode: an anomaly)."""

from __future__ import annotations

import json

from eth_abi.abi import encode as abi_encode

from portal._errors import ChainUnavailable
from portal._event_tables import EVENTS
from portal._indexer import DecodeFailure, decode_log, ev_row, parse_answer, parse_log

from . import Target

_SPECS = sorted(EVENTS.values(), key=lambda s: s.name)


def _answer(data: bytes) -> None:
    got = parse_answer(data)
    if not isinstance(got, dict) or not isinstance(got.get("result"), list):
        raise ChainUnavailable("not an eth_getLogs answer")
    for obj in got["result"]:
        lg = parse_log(obj)
        assert len(lg.address) == 42 and len(lg.topics) <= 4


def _event(data: bytes) -> None:
    """First byte: which event; the rest: the log's data (the topics are zeros)."""
    if not data:
        raise DecodeFailure("empty")
    spec = _SPECS[data[0] % len(_SPECS)]
    n_indexed = sum(1 for i in spec.inputs if i.get("indexed"))
    d = decode_log(spec, (spec.topic0, *([bytes(32)] * n_indexed)), data[1:])
    row, _unfit = ev_row(d)
    assert set(row) == {f.column for f in spec.fields}


def _seed(name: str, types: list[str], values: list[object]) -> bytes:
    i = next(k for k, s in enumerate(_SPECS) if s.name == name)
    return bytes([i]) + abi_encode(types, values)


_LOG = {"address": "0x" + "11" * 20, "blockNumber": "0x10", "blockHash": "0x" + "22" * 32,
        "logIndex": "0x0", "transactionHash": "0x" + "33" * 32, "removed": False,
        "topics": ["0x" + "44" * 32, "0x" + "00" * 32], "data": "0x" + "00" * 64}

TARGETS: list[Target] = [
    Target("portal_indexer.get_logs_answer", _answer, (ChainUnavailable,),
           (json.dumps({"jsonrpc": "2.0", "id": 1, "result": [_LOG, _LOG]}).encode(),
            b'{"jsonrpc":"2.0","id":1,"result":[]}')),
    Target("portal_indexer.event_data", _event, (DecodeFailure,),
           (_seed("Allocated", ["uint256", "uint256", "uint128"], [5, 0, 2**64]),
            _seed("ReportFiled", ["address", "uint256", "uint256", "bytes32", "string"],
                  ["0x" + "aa" * 20, 1, 2, b"\x01" * 32, "https://r/\u00e9"]),
            _seed("EnterpriseCertified", ["(string,string,string,string)"],
                  [("91440300MA5FXXXX1X", "Acme", "C3011", "440300")]),
            _seed("BatchAnchored", ["bytes32", "(bytes32,uint64,bytes32,bytes32,uint32,uint64,"
                                    "uint64,int64,int64,uint64,uint64,uint64)", "bytes"],
                  [b"\x02" * 32, (b"\x03" * 32, 1, bytes(32), b"\x04" * 32, 3, 1, 3, -5, 7,
                                  2**64 - 1, 0, 0), b"\x05" * 64]))),
]
