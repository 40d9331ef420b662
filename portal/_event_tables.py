"""One table per contract event (``ev_<event>``), generated from the contracts' ABIs, and the
indexer's anomaly table.

Every ``ev_*`` table has ``block_number, log_index`` (the primary key), ``tx_hash``,
``contract`` (the address book's name) and ``block_at`` (the block's timestamp, seconds), then
the event's fields in ABI order, snake_case, a struct's fields flattened with its name as a
prefix (``BatchAnchored.header.co2eScope1G`` -> ``header_co2e_scope1_g``). Types: addresses and
32-byte values lowercase ``0x`` hex, ``bytes`` as ``0x`` hex text, strings as text, integers
BIGINT. An integer that can hold more than 2**63-1 (``uint64`` and wider) is nullable: a value
that does not fit is stored as NULL and recorded in ``idx_anomalies`` (never rounded).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ledger_client import keccak256, load_artifact
from portal._meta import address, hash32, metadata

#: the contracts the indexer follows (the address book's names)
CONTRACT_NAMES = ("MrvRegistry", "EmissionsLedger", "Allowances", "Verification", "Market")
META_COLUMNS = ("block_number", "log_index", "tx_hash", "contract", "block_at")


def snake(name: str) -> str:
    """``co2eScope1G`` -> ``co2e_scope1_g``; ``gatewayKey`` -> ``gateway_key``."""
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    return s.lower()


def abi_type(param: dict[str, Any]) -> str:
    """The canonical type of an ABI parameter (tuples spelled out), as eth_abi wants it."""
    t = str(param["type"])
    if t.startswith("tuple"):
        inner = ",".join(abi_type(c) for c in param["components"])
        return f"({inner}){t[len('tuple'):]}"
    return t


def int_bits(t: str) -> tuple[bool, int] | None:
    """(signed, bits) of an integer type, None for others."""
    m = re.fullmatch(r"(u?)int([0-9]*)", t)
    if not m:
        return None
    return (m.group(1) == "", int(m.group(2) or 256))


def int_fits_bigint(t: str) -> bool:
    """Whether every value of integer type ``t`` fits a signed 64-bit column."""
    sb = int_bits(t)
    assert sb is not None
    signed, bits = sb
    return bits <= 64 if signed else bits <= 63


@dataclass(frozen=True, slots=True)
class Field:
    """One column of an event table: where its value comes from in the decoded event."""

    column: str
    path: tuple[str, ...]  # ABI names from the event's top level down
    type: str  # the leaf's ABI type
    indexed: bool


@dataclass(frozen=True, slots=True)
class EventSpec:
    contract: str
    name: str
    signature: str
    topic0: bytes
    inputs: tuple[dict[str, Any], ...]
    fields: tuple[Field, ...]
    table: sa.Table


def _leaf_fields(param: dict[str, Any], prefix: tuple[str, ...], indexed: bool) -> list[Field]:
    t = str(param["type"])
    path = (*prefix, str(param["name"]))
    if t == "tuple" and not indexed:
        out: list[Field] = []
        for c in param["components"]:
            out.extend(_leaf_fields(c, path, False))
        return out
    return [Field("_".join(snake(p) for p in path), path, abi_type(param), indexed)]


def _column(f: Field) -> sa.Column[Any]:
    t = f.type
    if f.indexed and (t in ("string", "bytes") or t.startswith("(") or t.endswith("]")):
        return hash32(f.column, nullable=False)  # the topic holds the value's keccak256
    if t == "address":
        return address(f.column, nullable=False)
    if t == "bytes32":
        return hash32(f.column, nullable=False)
    if t == "bool":
        return sa.Column(f.column, sa.Boolean, nullable=False)
    if int_bits(t) is not None:
        return sa.Column(f.column, sa.BigInteger, nullable=not int_fits_bigint(t))
    # string, bytes, bytesN, arrays: text (nullable: a string PostgreSQL cannot hold is NULL)
    return sa.Column(f.column, sa.Text, nullable=True)


def table_name(event: str) -> str:
    return "ev_" + snake(event)


def _build() -> dict[str, EventSpec]:
    specs: dict[str, EventSpec] = {}
    for contract in CONTRACT_NAMES:
        for item in load_artifact(contract)["abi"]:
            if item.get("type") != "event" or item.get("anonymous"):
                continue
            name = str(item["name"])
            inputs = tuple(item["inputs"])
            sig = f"{name}({','.join(abi_type(i) for i in inputs)})"
            if name in specs:
                if specs[name].signature != sig:
                    raise RuntimeError(f"event {name} has two signatures: {sig},"
                                       f" {specs[name].signature}")
                continue  # the same event declared by two contracts (none today): one table
            fields: list[Field] = []
            for i in inputs:
                fields.extend(_leaf_fields(i, (), bool(i.get("indexed"))))
            cols = [f.column for f in fields]
            clash = set(cols) & set(META_COLUMNS) or {c for c in cols if cols.count(c) > 1}
            if clash:
                raise RuntimeError(f"event {name}: column names {sorted(clash)} clash")
            table = sa.Table(
                table_name(name), metadata,
                sa.Column("block_number", sa.BigInteger, primary_key=True, autoincrement=False),
                sa.Column("log_index", sa.BigInteger, primary_key=True, autoincrement=False),
                hash32("tx_hash", nullable=False),
                sa.Column("contract", sa.String(64), nullable=False),
                sa.Column("block_at", sa.BigInteger, nullable=False),
                *[_column(f) for f in fields],
            )
            specs[name] = EventSpec(contract, name, sig, keccak256(sig.encode()), inputs,
                                    tuple(fields), table)
    return specs


#: every event of the followed contracts, by name
EVENTS: dict[str, EventSpec] = _build()

#: values the indexer met that it could not store as they are (an integer beyond 2**63-1, a
#: string PostgreSQL cannot hold, a log it cannot decode): never rounded, never guessed.
#: ``field`` is the column (``*`` for the whole log); ``target`` the table not written.
idx_anomalies = sa.Table(
    "idx_anomalies", metadata,
    sa.Column("block_number", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("log_index", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("target", sa.String(64), primary_key=True),
    sa.Column("field", sa.String(128), primary_key=True),
    sa.Column("contract", sa.String(64), nullable=False),
    sa.Column("event", sa.String(128), nullable=False),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)
