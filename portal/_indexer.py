"""The chain indexer: every event of every contract of the address book into SQL tables.

One step reads the node's head, takes the next range of at most ``chain.step_blocks`` blocks
up to ``head - chain.confirmations``, fetches its logs (``eth_getLogs`` over all the contracts)
and the timestamps of the blocks that hold them (``eth_getBlockByNumber``), decodes each log by
the contracts' ABIs, and writes, in ONE database transaction: a row per log in its ``ev_*``
table, the updates of the model tables (``_chain_tables``), any anomaly, and the checkpoint
(the range's last block number and hash). Killed at any moment it leaves either the whole range
or none of it; a log already in its ``ev_*`` table is never applied twice, so re-applying a
range changes nothing.

Reorgs: before each step the checkpoint's block hash is compared with the node's block at that
height; a difference means a reorg deeper than the confirmation depth, an incident: the
indexer stops with `ReorgDetected` (docs/portal.md, "Indexer"). A node that is down, answers
nonsense or is behind the checkpoint raises `ChainUnavailable`; the worker waits with backoff.

Decoding and the model updates are pure functions of the logs (``decode_log`` and the
``_on_*`` handlers over a `Model` view of the tables); I/O is the `Rpc` client and `Indexer`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa
from eth_abi.abi import decode as abi_decode

from mrv_core import json_depth
from portal import _chain_tables as ct
from portal._context import PortalContext
from portal._errors import ChainUnavailable, PortalConfigError, PortalError
from portal._event_tables import CONTRACT_NAMES, EVENTS, EventSpec, abi_type, idx_anomalies

log = logging.getLogger("mrv.portal.indexer")

CHECKPOINT = "chain"
COMPONENT = "indexer"
ZERO_ADDRESS = "0x" + "00" * 20
ZERO32 = "0x" + "00" * 32
INT64 = (-(2**63), 2**63 - 1)
UINT128_MAX = 2**128 - 1

#: limits on what the node sends before it is parsed or stored
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
MAX_LOG_DATA_BYTES = 1024 * 1024
MAX_LOGS_PER_CALL = 200_000
#: block headers asked in one JSON-RPC batch
BLOCKS_PER_BATCH = 200

ROLE_NAMES: dict[str, str] = {
    "0x" + "00" * 32: "admin",
}


def _role_ids() -> dict[str, str]:
    from ledger_client import keccak256

    out = dict(ROLE_NAMES)
    for tag, name in (("GOVERNMENT_ROLE", "government"), ("AUDITOR_ROLE", "auditor"),
                      ("FINANCE_ROLE", "finance"), ("MARKET_CONTRACT_ROLE", "market_contract"),
                      ("VERIFICATION_CONTRACT_ROLE", "verification_contract")):
        out["0x" + keccak256(tag.encode()).hex()] = name
    return out


ROLES = _role_ids()


class ReorgDetected(PortalError):
    """The checkpoint's block is no longer in the node's chain: a reorg deeper than the
    confirmation depth. An incident: the indexer stops; see docs/portal.md ("Indexer")."""


class ChainBehind(ChainUnavailable):
    """The node's chain is shorter than the checkpoint (a node resyncing, or the wrong node)."""


class _ResponseTooLarge(ChainUnavailable):
    pass


# -- JSON-RPC ---------------------------------------------------------------------------------


class Rpc:
    """A sync JSON-RPC client over ``httpx`` with a response size limit. Every failure (no
    answer, an HTTP error, a JSON-RPC error, a malformed answer) is `ChainUnavailable`."""

    def __init__(self, url: str, timeout_s: float, *,
                 max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self.url = url
        self.max_response_bytes = max_response_bytes
        self._client = httpx.Client(timeout=timeout_s)
        self._id = 0

    def close(self) -> None:
        self._client.close()

    def _post(self, body: object) -> Any:
        try:
            with self._client.stream("POST", self.url, json=body) as r:
                if r.status_code != 200:
                    raise ChainUnavailable(f"{self.url}: HTTP {r.status_code}")
                chunks: list[bytes] = []
                size = 0
                for chunk in r.iter_bytes():
                    size += len(chunk)
                    if size > self.max_response_bytes:
                        raise _ResponseTooLarge(
                            f"{self.url}: answer larger than {self.max_response_bytes} bytes")
                    chunks.append(chunk)
        except httpx.HTTPError as e:
            raise ChainUnavailable(f"{self.url}: {type(e).__name__}: {e}") from None
        return parse_answer(b"".join(chunks), self.url)

    def _request(self, method: str, params: list[Any]) -> dict[str, Any]:
        self._id += 1
        return {"jsonrpc": "2.0", "id": self._id, "method": method, "params": params}

    @staticmethod
    def _result(method: str, answer: Any) -> Any:
        if not isinstance(answer, dict):
            raise ChainUnavailable(f"{method}: the answer is not a JSON-RPC object")
        if "error" in answer:
            err = answer["error"]
            code = err.get("code") if isinstance(err, dict) else None
            msg = str(err.get("message", ""))[:300] if isinstance(err, dict) else str(err)[:300]
            raise RpcError(method, code if isinstance(code, int) else None, msg)
        if "result" not in answer:
            raise ChainUnavailable(f"{method}: the answer has no result")
        return answer["result"]

    def call(self, method: str, params: list[Any]) -> Any:
        return self._result(method, self._post(self._request(method, params)))

    def batch(self, method: str, params: Sequence[list[Any]]) -> list[Any]:
        """The same method with each of ``params``, in one HTTP request; results in order."""
        if not params:
            return []
        reqs = [self._request(method, p) for p in params]
        answer = self._post(reqs)
        if not isinstance(answer, list) or len(answer) != len(reqs):
            raise ChainUnavailable(f"{method}: a batch answer of the wrong shape")
        by_id = {a.get("id"): a for a in answer if isinstance(a, dict)}
        out = []
        for r in reqs:
            if r["id"] not in by_id:
                raise ChainUnavailable(f"{method}: the batch answer lacks id {r['id']}")
            out.append(self._result(method, by_id[r["id"]]))
        return out


class RpcError(ChainUnavailable):
    """The node answered with a JSON-RPC error."""

    def __init__(self, method: str, code: int | None, message: str) -> None:
        super().__init__(f"{method}: JSON-RPC error {code}: {message}")
        self.code = code
        self.message = message

    @property
    def range_too_wide(self) -> bool:
        m = self.message.lower()
        return self.code == -32005 or any(w in m for w in (
            "more than", "too many", "range", "limit exceeded", "too large"))


# -- parsing what the node sends (untrusted: shapes and sizes checked first) -----------------

#: JSON nesting an answer may have (a log is 3 levels deep in an eth_getLogs answer)
MAX_ANSWER_DEPTH = 16


def parse_answer(raw: bytes, source: str = "the node") -> Any:
    """A JSON-RPC answer's JSON, at most `MAX_ANSWER_DEPTH` levels deep (checked before
    parsing, so deep nesting never reaches the recursive parser); `ChainUnavailable` if not."""
    if json_depth(raw, MAX_ANSWER_DEPTH) > MAX_ANSWER_DEPTH:
        raise ChainUnavailable(f"{source}: the answer is nested deeper than"
                               f" {MAX_ANSWER_DEPTH} levels")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ChainUnavailable(f"{source}: the answer is not JSON") from None



def _hex_int(v: Any, what: str) -> int:
    if not isinstance(v, str) or not v.startswith("0x") or not 2 < len(v) <= 66:
        raise ChainUnavailable(f"{what}: expected a hex quantity, got {str(v)[:80]!r}")
    try:
        return int(v, 16)
    except ValueError:
        raise ChainUnavailable(f"{what}: expected a hex quantity, got {v[:80]!r}") from None


def _hex_bytes(v: Any, what: str, *, size: int | None = None, limit: int = 32) -> bytes:
    if not isinstance(v, str) or not v.startswith("0x") or len(v) > 2 + 2 * limit:
        raise ChainUnavailable(f"{what}: expected hex data, got {str(v)[:80]!r}")
    try:
        b = bytes.fromhex(v[2:])
    except ValueError:
        raise ChainUnavailable(f"{what}: expected hex data, got {v[:80]!r}") from None
    if size is not None and len(b) != size:
        raise ChainUnavailable(f"{what}: expected {size} bytes, got {len(b)}")
    return b


@dataclass(frozen=True, slots=True)
class RawLog:
    address: str
    block_number: int
    block_hash: str
    log_index: int
    tx_hash: str
    topics: tuple[bytes, ...]
    data: bytes


def parse_log(obj: Any) -> RawLog:
    """One log of an ``eth_getLogs`` answer, its shape checked (`ChainUnavailable` if not)."""
    if not isinstance(obj, dict):
        raise ChainUnavailable("eth_getLogs: a log is not an object")
    if obj.get("removed"):
        raise ChainUnavailable("eth_getLogs: a removed log (the chain is reorganising)")
    topics = obj.get("topics")
    if not isinstance(topics, list) or len(topics) > 4:
        raise ChainUnavailable("eth_getLogs: a log's topics are not a list of at most 4")
    return RawLog(
        address="0x" + _hex_bytes(obj.get("address"), "log address", size=20).hex(),
        block_number=_hex_int(obj.get("blockNumber"), "log blockNumber"),
        block_hash="0x" + _hex_bytes(obj.get("blockHash"), "log blockHash", size=32).hex(),
        log_index=_hex_int(obj.get("logIndex"), "log logIndex"),
        tx_hash="0x" + _hex_bytes(obj.get("transactionHash"), "log transactionHash",
                                  size=32).hex(),
        topics=tuple(_hex_bytes(t, "log topic", size=32) for t in topics),
        data=_hex_bytes(obj.get("data"), "log data", limit=MAX_LOG_DATA_BYTES),
    )


@dataclass(frozen=True, slots=True)
class BlockInfo:
    number: int
    hash: str
    timestamp: int


def parse_block(obj: Any, number: int) -> BlockInfo | None:
    """An ``eth_getBlockByNumber`` answer; None when the node has no such block."""
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ChainUnavailable(f"block {number}: not an object")
    n = _hex_int(obj.get("number"), "block number")
    if n != number:
        raise ChainUnavailable(f"asked for block {number}, got {n}")
    return BlockInfo(n, "0x" + _hex_bytes(obj.get("hash"), "block hash", size=32).hex(),
                     _hex_int(obj.get("timestamp"), "block timestamp"))


# -- decoding (pure) ----------------------------------------------------------------------------


class DecodeFailure(Exception):
    """A log of a followed contract that its ABI cannot decode."""


@dataclass(frozen=True, slots=True)
class Decoded:
    spec: EventSpec
    #: column -> value: addresses and 32-byte values lowercase 0x hex, bytes 0x hex, ints int
    values: dict[str, Any]


def _plain(t: str, v: Any) -> Any:
    if t == "address":
        return str(v).lower()
    if isinstance(v, bytes):
        return "0x" + v.hex()
    if isinstance(v, (list, tuple)):
        return json.dumps([_plain(t.rsplit("[", 1)[0], x) for x in v])
    return v


def _flatten(params: Iterable[dict[str, Any]], values: Sequence[Any],
             prefix: tuple[str, ...], out: dict[tuple[str, ...], Any]) -> None:
    for p, v in zip(params, values, strict=True):
        path = (*prefix, str(p["name"]))
        if str(p["type"]) == "tuple":
            _flatten(p["components"], v, path, out)
        else:
            out[path] = v


def decode_log(spec: EventSpec, topics: Sequence[bytes], data: bytes) -> Decoded:
    """The fields of one log of ``spec``'s event (``DecodeFailure`` when they do not decode)."""
    indexed = [i for i in spec.inputs if i.get("indexed")]
    plain = [i for i in spec.inputs if not i.get("indexed")]
    if len(topics) != 1 + len(indexed) or topics[0] != spec.topic0:
        raise DecodeFailure(f"{spec.name}: {len(topics)} topics, expected {1 + len(indexed)}")
    try:
        decoded = abi_decode([abi_type(i) for i in plain], data)
    except Exception as e:  # eth_abi raises several types, all meaning "does not decode"
        raise DecodeFailure(f"{spec.name}: {type(e).__name__}: {e}") from None
    by_path: dict[tuple[str, ...], Any] = {}
    _flatten(plain, decoded, (), by_path)
    for i, topic in zip(indexed, topics[1:], strict=True):
        t = abi_type(i)
        if t in ("string", "bytes") or t.startswith("(") or t.endswith("]"):
            by_path[(str(i["name"]),)] = topic  # the keccak256 of the value
            continue
        try:
            by_path[(str(i["name"]),)] = abi_decode([t], topic)[0]
        except Exception as e:
            raise DecodeFailure(f"{spec.name}.{i['name']}: {type(e).__name__}: {e}") from None
    values: dict[str, Any] = {}
    for f in spec.fields:
        t = "bytes32" if f.indexed and f.type in ("string", "bytes") else f.type
        values[f.column] = _plain(t, by_path[f.path])
    return Decoded(spec, values)


class Unfit(Exception):
    """A value a column cannot hold as it is (recorded as an anomaly, never rounded)."""

    def __init__(self, table: str, column: str, value: Any, reason: str) -> None:
        super().__init__(f"{table}.{column}: {reason}")
        self.table, self.column, self.value, self.reason = table, column, value, reason


def check_value(table: sa.Table, column: str, value: Any) -> None:
    """Raise `Unfit` when ``value`` cannot be stored in ``table.column`` exactly."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise Unfit(table.name, column, value, "beyond a signed 64-bit integer")
        return
    if isinstance(value, str):
        if "\x00" in value:
            raise Unfit(table.name, column, value, "a NUL character (PostgreSQL text cannot hold it)")
        length = getattr(table.c[column].type, "length", None)
        if length is not None and len(value) > length:
            raise Unfit(table.name, column, value, f"longer than {length} characters")


def ev_row(d: Decoded) -> tuple[dict[str, Any], list[Unfit]]:
    """The event table's fields of ``d``: a value a column cannot hold is None (nullable
    columns) with an `Unfit` for the anomaly table."""
    row: dict[str, Any] = {}
    unfit: list[Unfit] = []
    for f in d.spec.fields:
        v = d.values[f.column]
        try:
            check_value(d.spec.table, f.column, v)
        except Unfit as u:
            if not d.spec.table.c[f.column].nullable:
                raise DecodeFailure(f"{d.spec.name}.{f.column}: {u.reason}") from None
            unfit.append(u)
            v = None
        row[f.column] = v
    return row, unfit


# -- the model tables: a view with buffered writes, and the handlers (pure over the view) ----


@dataclass(frozen=True, slots=True)
class LogMeta:
    block_number: int
    log_index: int
    tx_hash: str
    block_at: int


class Model:
    """Reads of the model tables through one connection; writes are buffered (and checked)
    and flushed together, so an event whose values do not fit leaves every table as it was."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self.pending: dict[tuple[str, tuple[Any, ...]], tuple[sa.Table, dict[str, Any] | None]] = {}

    @staticmethod
    def _key(table: sa.Table, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[c.name] for c in table.primary_key.columns)

    def get(self, table: sa.Table, **key: Any) -> dict[str, Any] | None:
        k = self._key(table, key)
        if (table.name, k) in self.pending:
            row = self.pending[(table.name, k)][1]
            return None if row is None else dict(row)
        r = self.conn.execute(_by_key(table).select, _key_params(table, k)).mappings().first()
        return None if r is None else dict(r)

    def put(self, table: sa.Table, row: dict[str, Any]) -> None:
        """Insert or replace the whole row ``row`` (every column given)."""
        missing = {c.name for c in table.columns} - set(row)
        if missing:
            raise AssertionError(f"{table.name}: put without {sorted(missing)}")
        for col, v in row.items():
            check_value(table, col, v)
        self.pending[(table.name, self._key(table, row))] = (table, dict(row))

    def delete(self, table: sa.Table, **key: Any) -> None:
        self.pending[(table.name, self._key(table, key))] = (table, None)

    def flush(self) -> None:
        for (_, key), (table, row) in self.pending.items():
            st = _by_key(table)
            keys = _key_params(table, key)
            if row is None:
                self.conn.execute(st.delete, keys)
                continue
            res = self.conn.execute(st.update, {**row, **keys})
            if res.rowcount == 0:
                self.conn.execute(st.insert, row)
        self.pending.clear()


@dataclass(frozen=True)
class _KeyStatements:
    """A table's statements by primary key, built once: SQLAlchemy compiles a statement object
    once and reuses it, where a statement built per row costs its construction and cache key
    every time (most of the indexer's CPU before)."""

    select: sa.Select[Any]
    update: sa.Update
    delete: sa.Delete
    insert: sa.Insert


_KEY_STATEMENTS: dict[str, _KeyStatements] = {}


def _key_params(table: sa.Table, key: tuple[Any, ...]) -> dict[str, Any]:
    return {f"_pk_{c.name}": v for c, v in zip(table.primary_key.columns, key, strict=True)}


def _by_key(table: sa.Table) -> _KeyStatements:
    st = _KEY_STATEMENTS.get(table.name)
    if st is None:
        cond = [c == sa.bindparam(f"_pk_{c.name}") for c in table.primary_key.columns]
        st = _KEY_STATEMENTS[table.name] = _KeyStatements(
            select=sa.select(table).where(*cond), update=sa.update(table).where(*cond),
            delete=sa.delete(table).where(*cond), insert=sa.insert(table))
    return st


Handler = Callable[[Model, dict[str, Any], LogMeta], None]
HANDLERS: dict[str, Handler] = {}


def on(name: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        if name not in EVENTS:
            raise RuntimeError(f"handler for an unknown event {name}")
        HANDLERS[name] = fn
        return fn
    return deco


# registry


@on("RoleGranted")
def _on_role_granted(m: Model, v: dict[str, Any], _: LogMeta) -> None:
    role = ROLES.get(v["role"])
    if role is None:
        raise Unfit("roles", "role", v["role"], "a role id the registry does not define")
    m.put(ct.roles, {"role": role, "account": v["account"]})


@on("RoleRevoked")
def _on_role_revoked(m: Model, v: dict[str, Any], _: LogMeta) -> None:
    role = ROLES.get(v["role"])
    if role is None:
        raise Unfit("roles", "role", v["role"], "a role id the registry does not define")
    m.delete(ct.roles, role=role, account=v["account"])


@on("EnterpriseCertified")
def _on_certified(m: Model, v: dict[str, Any], meta: LogMeta) -> None:
    m.put(ct.enterprises, {
        "account": v["account"], "credit_code": v["info_credit_code"], "name": v["info_name"],
        "industry_code": v["info_industry_code"], "region": v["info_region"], "status": 1,
        "certified_at": meta.block_at})


def _set_status(m: Model, account: str, status: int) -> None:
    e = m.get(ct.enterprises, account=account)
    if e is None:
        raise Unfit("enterprises", "account", account, "status change of an unknown enterprise")
    m.put(ct.enterprises, {**e, "status": status})


@on("EnterpriseSuspended")
def _on_suspended(m: Model, v: dict[str, Any], _: LogMeta) -> None:
    _set_status(m, v["account"], 2)


@on("EnterpriseReinstated")
def _on_reinstated(m: Model, v: dict[str, Any], _: LogMeta) -> None:
    _set_status(m, v["account"], 1)


@on("GatewayIdReserved")
def _on_reserved(m: Model, v: dict[str, Any], _: LogMeta) -> None:
    m.put(ct.gateway_reservations, {"gateway_key": v["gateway_key"],
                                    "gateway_id": v["gateway_id"],
                                    "reserved_for": v["enterprise"]})


@on("GatewayRegistered")
def _on_registered(m: Model, v: dict[str, Any], meta: LogMeta) -> None:
    r = m.get(ct.gateway_reservations, gateway_key=v["gateway_key"])
    m.put(ct.gateways, {
        "gateway_key": v["gateway_key"], "gateway_id": v["gateway_id"],
        "enterprise": v["enterprise"], "active": True, "registered_at": meta.block_at,
        "sender": v["sender"], "signing_key": v["signing_key"],
        "reserved_for": r["reserved_for"] if r else None})


@on("GatewayRevoked")
def _on_gateway_revoked(m: Model, v: dict[str, Any], _: LogMeta) -> None:
    g = m.get(ct.gateways, gateway_key=v["gateway_key"])
    if g is None:
        raise Unfit("gateways", "gateway_key", v["gateway_key"], "revocation of an unknown gateway")
    m.put(ct.gateways, {**g, "active": False})


@on("PeriodDefined")
def _on_period_defined(m: Model, v: dict[str, Any], _: LogMeta) -> None:
    m.put(ct.periods, {"period_id": v["period"], "start_ns": v["start_ns"],
                       "end_ns": v["end_ns"], "closed": False})


@on("PeriodClosed")
def _on_period_closed(m: Model, v: dict[str, Any], _: LogMeta) -> None:
    p = m.get(ct.periods, period_id=v["period"])
    if p is None:
        raise Unfit("periods", "period_id", v["period"], "closing an unknown period")
    m.put(ct.periods, {**p, "closed": True})


@on("DataAccessGranted")
def _on_access_granted(m: Model, v: dict[str, Any], _: LogMeta) -> None:
    m.put(ct.data_access, {"enterprise": v["enterprise"], "finance": v["finance"],
                           "until_at": v["until"]})


@on("DataAccessRevoked")
def _on_access_revoked(m: Model, v: dict[str, Any], _: LogMeta) -> None:
    m.put(ct.data_access, {"enterprise": v["enterprise"], "finance": v["finance"],
                           "until_at": 0})


# emissions ledger


@on("BatchAnchored")
def _on_batch(m: Model, v: dict[str, Any], meta: LogMeta) -> None:
    g = m.get(ct.gateways, gateway_key=v["gateway_key"])
    m.put(ct.batches, {
        "gateway_key": v["gateway_key"], "seq": v["seq"],
        "gateway_id": g["gateway_id"] if g else "",
        "enterprise": g["enterprise"] if g else ZERO_ADDRESS,
        "header_hash": v["header_hash"], "root": v["header_root"], "count": v["header_count"],
        "first_record_seq": v["header_first_record_seq"],
        "last_record_seq": v["header_last_record_seq"],
        "first_ts_ns": v["header_first_ts_ns"], "last_ts_ns": v["header_last_ts_ns"],
        "co2e_scope1_g": v["header_co2e_scope1_g"], "co2e_scope2_g": v["header_co2e_scope2_g"],
        "co2e_scope3_g": v["header_co2e_scope3_g"], "prev_hash": v["header_prev_hash"],
        "signature": v["signature"], "period": 0, "block_number": meta.block_number,
        "tx_hash": meta.tx_hash})


@on("EmissionsAccrued")
def _on_accrued(m: Model, v: dict[str, Any], _: LogMeta) -> None:
    key = {"enterprise": v["enterprise"], "period": v["period"]}
    e = m.get(ct.emissions, **key) or {**key, "scope1_g": 0, "scope2_g": 0, "scope3_g": 0,
                                        "batches": 0}
    m.put(ct.emissions, {**e, "scope1_g": e["scope1_g"] + v["co2e_scope1_g"],
                         "scope2_g": e["scope2_g"] + v["co2e_scope2_g"],
                         "scope3_g": e["scope3_g"] + v["co2e_scope3_g"],
                         "batches": e["batches"] + 1})
    b = m.get(ct.batches, gateway_key=v["gateway_key"], seq=v["seq"])
    if b is not None:  # emitted right after its BatchAnchored, in the same transaction
        m.put(ct.batches, {**b, "period": v["period"], "enterprise": v["enterprise"]})


# allowances


def _account(m: Model, enterprise: str, period: int) -> dict[str, Any]:
    key = {"enterprise": enterprise, "period": period}
    return m.get(ct.accounts, **key) or {
        **key, "allocated_g": 0, "surrendered_g": 0, "verified_g": 0, "penalty_g": 0,
        "penalty_deducted_g": 0, "has_verified": False, "settled": False, "settled_status": 0,
        "output": 0, "benchmark_g_per_unit": 0}


def _add_balance(m: Model, period: int, account: str, delta: int) -> None:
    b = m.get(ct.balances, period=period, account=account)
    amount = (b["amount_g"] if b else 0) + delta
    if amount < 0:
        raise Unfit("balances", "amount_g", amount, "a balance below zero (events out of order?)")
    m.put(ct.balances, {"period": period, "account": account, "amount_g": amount})


@on("BenchmarkSet")
def _on_benchmark(m: Model, v: dict[str, Any], _: LogMeta) -> None:
    m.put(ct.benchmarks, {"period": v["period"], "industry_code": v["industry_code"],
                          "grams_per_unit": v["grams_per_unit"]})


@on("Allocated")
def _on_allocated(m: Model, v: dict[str, Any], _: LogMeta) -> None:
    a = _account(m, v["enterprise"], v["period"])
    m.put(ct.accounts, {**a, "allocated_g": a["allocated_g"] + v["amount_g"],
                        "output": v["output"],
                        "benchmark_g_per_unit": v["benchmark_grams_per_unit"]})
    _add_balance(m, v["period"], v["enterprise"], v["amount_g"])


@on("Transferred")
def _on_transferred(m: Model, v: dict[str, Any], _: LogMeta) -> None:
    _add_balance(m, v["period"], v["from"], -v["amount_g"])
    _add_balance(m, v["period"], v["to"], v["amount_g"])


@on("Surrendered")
def _on_surrendered(m: Model, v: dict[str, Any], _: LogMeta) -> None:
    a = _account(m, v["enterprise"], v["period"])
    m.put(ct.accounts, {**a, "surrendered_g": v["total_surrendered_g"]})
    _add_balance(m, v["period"], v["enterprise"], -v["amount_g"])


@on("VerifiedEmissionsSet")
def _on_verified(m: Model, v: dict[str, Any], _: LogMeta) -> None:
    a = _account(m, v["enterprise"], v["period"])
    m.put(ct.accounts, {**a, "verified_g": v["verified_g"], "has_verified": True})


@on("PenaltyApplied")
def _on_penalty(m: Model, v: dict[str, Any], _: LogMeta) -> None:
    a = _account(m, v["enterprise"], v["period"])
    m.put(ct.accounts, {**a, "penalty_g": a["penalty_g"] + v["penalty_g"],
                        "penalty_deducted_g": a["penalty_deducted_g"] + v["deducted_g"]})
    _add_balance(m, v["period"], v["enterprise"], -v["deducted_g"])


@on("ComplianceSettled")
def _on_settled(m: Model, v: dict[str, Any], _: LogMeta) -> None:
    a = _account(m, v["enterprise"], v["period"])
    m.put(ct.accounts, {**a, "settled": True, "settled_status": v["status"]})


# verification


@on("ReportFiled")
def _on_report(m: Model, v: dict[str, Any], meta: LogMeta) -> None:
    m.put(ct.reports, {
        "report_id": v["report_id"], "enterprise": v["enterprise"], "period": v["period"],
        "auditor": v["auditor"], "filed_at": meta.block_at, "verified_g": v["verified_g"],
        "reported_g": v["reported_g"], "report_hash": v["report_hash"], "uri": v["uri"]})


@on("FindingFiled")
def _on_finding(m: Model, v: dict[str, Any], meta: LogMeta) -> None:
    m.put(ct.findings, {
        "finding_id": v["finding_id"], "enterprise": v["enterprise"], "period": v["period"],
        "kind": v["kind"], "status": 1, "auditor": v["auditor"], "filed_at": meta.block_at,
        "corrected_g": v["corrected_g"], "previous_g": 0, "penalty_g": 0,
        "decided_by": ZERO_ADDRESS, "decided_at": 0, "evidence_hash": v["evidence_hash"],
        "gateway_key": v["gateway_key"], "batch_seq": v["batch_seq"],
        "record_leaf": v["record_leaf"], "evidence_uri": v["evidence_uri"],
        "decision_note": ""})


def _finding(m: Model, finding_id: int) -> dict[str, Any]:
    f = m.get(ct.findings, finding_id=finding_id)
    if f is None:
        raise Unfit("findings", "finding_id", finding_id, "a decision on an unknown finding")
    return f


@on("FindingConfirmed")
def _on_confirmed(m: Model, v: dict[str, Any], meta: LogMeta) -> None:
    f = _finding(m, v["finding_id"])
    m.put(ct.findings, {**f, "status": 2, "previous_g": min(v["previous_g"], UINT128_MAX),
                        "penalty_g": v["penalty_g"], "decided_by": v["by"],
                        "decided_at": meta.block_at})


@on("FindingRejected")
def _on_rejected(m: Model, v: dict[str, Any], meta: LogMeta) -> None:
    f = _finding(m, v["finding_id"])
    m.put(ct.findings, {**f, "status": 3, "decided_by": v["by"], "decided_at": meta.block_at,
                        "decision_note": v["reason"]})


@on("PenaltyRateSet")
def _on_rate(m: Model, v: dict[str, Any], _: LogMeta) -> None:
    m.put(ct.penalty_rates, {"kind": v["kind"], "bps": v["bps"]})


# market


@on("OfferMade")
def _on_offer(m: Model, v: dict[str, Any], meta: LogMeta) -> None:
    m.put(ct.offers, {
        "offer_id": v["offer_id"], "seller": v["seller"], "period": v["period"], "status": 1,
        "created_at": meta.block_at, "buyer": v["buyer"], "amount_g": v["amount_g"],
        "remaining_g": v["amount_g"], "price_per_tonne": v["price_per_tonne"]})


def _offer(m: Model, offer_id: int) -> dict[str, Any]:
    o = m.get(ct.offers, offer_id=offer_id)
    if o is None:
        raise Unfit("offers", "offer_id", offer_id, "an unknown offer")
    return o


@on("Traded")
def _on_traded(m: Model, v: dict[str, Any], meta: LogMeta) -> None:
    o = _offer(m, v["offer_id"])
    rest = o["remaining_g"] - v["amount_g"]
    if rest < 0:
        raise Unfit("offers", "remaining_g", rest, "more traded than offered")
    m.put(ct.offers, {**o, "remaining_g": rest, "status": 2 if rest == 0 else o["status"]})
    m.put(ct.trades, {
        "trade_id": v["trade_id"], "offer_id": v["offer_id"], "seller": v["seller"],
        "period": v["period"], "traded_at": meta.block_at, "buyer": v["buyer"],
        "amount_g": v["amount_g"], "price_per_tonne": v["price_per_tonne"], "value": v["value"],
        "payment_ref": ZERO32, "settled_by": ZERO_ADDRESS})


@on("OfferCancelled")
def _on_cancelled(m: Model, v: dict[str, Any], _: LogMeta) -> None:
    o = _offer(m, v["offer_id"])
    m.put(ct.offers, {**o, "remaining_g": 0, "status": 3})


@on("SettlementConfirmed")
def _on_settlement(m: Model, v: dict[str, Any], _: LogMeta) -> None:
    t = m.get(ct.trades, trade_id=v["trade_id"])
    if t is None:
        raise Unfit("trades", "trade_id", v["trade_id"], "settlement of an unknown trade")
    m.put(ct.trades, {**t, "payment_ref": v["payment_ref"], "settled_by": v["by"]})


# -- applying logs ------------------------------------------------------------------------------


@dataclass
class Applied:
    logs: int = 0
    skipped: int = 0  # already applied (a re-applied range)
    anomalies: int = 0


def _anomaly(conn: sa.Connection, meta: LogMeta, contract: str, event: str, target: str,
             field: str, value: Any, reason: str) -> None:
    key = {"block_number": meta.block_number, "log_index": meta.log_index, "target": target,
           "field": field}
    exists = conn.execute(sa.select(idx_anomalies.c.block_number).where(
        *[idx_anomalies.c[k] == x for k, x in key.items()])).first()
    if exists is None:
        text = str(value).replace("\x00", "\\x00")[:500]
        conn.execute(sa.insert(idx_anomalies).values(
            **key, contract=contract, event=event, value=text, reason=reason[:500]))
    log.warning("indexer anomaly at block %d log %d (%s.%s): %s.%s %s", meta.block_number,
                meta.log_index, contract, event, target, field, reason)


def apply_log(conn: sa.Connection, topics: dict[bytes, EventSpec], contract: str,
              raw: RawLog, block_at: int, out: Applied) -> None:
    """Write one log: its ``ev_*`` row and its model updates (or anomalies). A log whose
    ``ev_*`` row (or whole-log anomaly) is already there is skipped: idempotent."""
    meta = LogMeta(raw.block_number, raw.log_index, raw.tx_hash, block_at)
    spec = topics.get(raw.topics[0]) if raw.topics else None
    if spec is not None:
        t = spec.table
        if conn.execute(sa.select(t.c.block_number).where(
                t.c.block_number == meta.block_number, t.c.log_index == meta.log_index)).first():
            out.skipped += 1
            return
    if conn.execute(sa.select(idx_anomalies.c.block_number).where(
            idx_anomalies.c.block_number == meta.block_number,
            idx_anomalies.c.log_index == meta.log_index,
            idx_anomalies.c.target == "*")).first():
        out.skipped += 1
        return
    out.logs += 1
    if spec is None:
        topic = "0x" + raw.topics[0].hex() if raw.topics else "(none)"
        _anomaly(conn, meta, contract, "?", "*", "topic0", topic, "an event not in the ABI")
        out.anomalies += 1
        return
    try:
        d = decode_log(spec, raw.topics, raw.data)
        row, unfit = ev_row(d)
    except DecodeFailure as e:
        _anomaly(conn, meta, contract, spec.name, "*", "*", "0x" + raw.data[:200].hex(), str(e))
        out.anomalies += 1
        return
    conn.execute(_by_key(spec.table).insert, {
        "block_number": meta.block_number, "log_index": meta.log_index, "tx_hash": meta.tx_hash,
        "contract": contract, "block_at": block_at, **row})
    for u in unfit:
        _anomaly(conn, meta, contract, spec.name, u.table, u.column, u.value, u.reason)
        out.anomalies += 1
    handler = HANDLERS.get(spec.name)
    if handler is None:
        return
    model = Model(conn)
    try:
        handler(model, d.values, meta)
    except Unfit as u:
        _anomaly(conn, meta, contract, spec.name, u.table, u.column, u.value,
                 f"{u.reason}; the model tables were not updated for this log")
        out.anomalies += 1
        return
    model.flush()


# -- the indexer --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    block_number: int
    block_hash: str


def read_checkpoint(conn: sa.Connection, name: str = CHECKPOINT) -> Checkpoint | None:
    r = conn.execute(sa.select(ct.idx_checkpoint).where(
        ct.idx_checkpoint.c.name == name)).mappings().first()
    return None if r is None else Checkpoint(int(r["block_number"]), str(r["block_hash"]))


class Indexer:
    """Follows the chain into the database, one range per `step`."""

    def __init__(self, ctx: PortalContext, rpc: Rpc | None = None) -> None:
        self.ctx = ctx
        cfg = ctx.config.chain
        self.cfg = cfg
        self.rpc = rpc or Rpc(cfg.rpc_url, cfg.timeout_s)
        self.contracts = {a.lower(): n for n, a in ctx.contracts.items() if n in CONTRACT_NAMES}
        if not self.contracts:
            raise PortalConfigError("the address book names none of the contracts the indexer"
                                    f" follows ({', '.join(CONTRACT_NAMES)})")
        self.topics = {n: events_of(n) for n in set(self.contracts.values())}

    def close(self) -> None:
        self.rpc.close()

    # chain reads

    def head(self) -> int:
        return _hex_int(self.rpc.call("eth_blockNumber", []), "eth_blockNumber")

    def blocks(self, numbers: Sequence[int]) -> dict[int, BlockInfo]:
        """The headers of ``numbers`` (JSON-RPC batches; one too large is split in halves)."""
        out: dict[int, BlockInfo] = {}
        for i in range(0, len(numbers), BLOCKS_PER_BATCH):
            self._blocks(numbers[i:i + BLOCKS_PER_BATCH], out)
        return out

    def _blocks(self, chunk: Sequence[int], out: dict[int, BlockInfo]) -> None:
        try:
            answers = self.rpc.batch("eth_getBlockByNumber", [[hex(n), False] for n in chunk])
        except _ResponseTooLarge:
            if len(chunk) == 1:
                raise
            half = len(chunk) // 2
            self._blocks(chunk[:half], out)
            self._blocks(chunk[half:], out)
            return
        for n, a in zip(chunk, answers, strict=True):
            b = parse_block(a, n)
            if b is None:
                raise ChainBehind(f"the node has no block {n} (behind, or resyncing)")
            out[n] = b

    def logs(self, start: int, end: int) -> list[RawLog]:
        """Every log of the followed contracts in [start, end], in chain order; a range the
        node (or our size limit) finds too wide is split in halves."""
        try:
            got = self.rpc.call("eth_getLogs", [{
                "fromBlock": hex(start), "toBlock": hex(end),
                "address": sorted(self.contracts)}])
        except (_ResponseTooLarge, RpcError) as e:
            if end > start and (isinstance(e, _ResponseTooLarge) or e.range_too_wide):
                mid = (start + end) // 2
                return self.logs(start, mid) + self.logs(mid + 1, end)
            raise
        if not isinstance(got, list) or len(got) > MAX_LOGS_PER_CALL:
            raise ChainUnavailable("eth_getLogs: not a list, or more logs than the limit")
        out = [parse_log(x) for x in got]
        for lg in out:
            if not start <= lg.block_number <= end or lg.address not in self.contracts:
                raise ChainUnavailable("eth_getLogs: a log outside the range or the contracts"
                                       " asked for")
        out.sort(key=lambda lg: (lg.block_number, lg.log_index))
        return out

    # one step

    def step(self) -> int:
        """Apply the next range of confirmed blocks; the number of blocks applied (0: caught
        up). Raises `ChainUnavailable` (retry later) or `ReorgDetected` (stop)."""
        head = self.head()
        with self.ctx.engine.connect() as conn:
            cp = read_checkpoint(conn)
        if cp is not None:
            self._check_checkpoint(cp, head)
            start = cp.block_number + 1
        else:
            start = self.cfg.start_block
        end = min(start + self.cfg.step_blocks - 1, head - self.cfg.confirmations)
        if end < start:
            return 0
        return self.apply_range(start, end)

    def _check_checkpoint(self, cp: Checkpoint, head: int) -> None:
        if head < cp.block_number:
            raise ChainBehind(f"the node's head {head} is below the checkpoint"
                              f" {cp.block_number} (behind, or resyncing)")
        now = self.blocks([cp.block_number])[cp.block_number]
        if now.hash != cp.block_hash:
            raise ReorgDetected(
                f"block {cp.block_number} is {now.hash} on the node, {cp.block_hash} in the"
                f" index: a reorg deeper than chain.confirmations ({self.cfg.confirmations})."
                " The indexer stops; see docs/portal.md (Indexer, reorgs)")

    def apply_range(self, start: int, end: int) -> int:
        """Fetch and apply [start, end] in one transaction, the checkpoint moved to ``end``
        (never backwards: re-applying an old range writes nothing and keeps the checkpoint)."""
        logs = self.logs(start, end)
        wanted = sorted({lg.block_number for lg in logs} | {end})
        info = self.blocks(wanted)
        for lg in logs:
            if info[lg.block_number].hash != lg.block_hash:
                raise ChainUnavailable(f"block {lg.block_number} changed during the step"
                                       " (the chain is reorganising near its head)")
        applied = Applied()
        with self.ctx.engine.begin() as conn:
            cp = read_checkpoint(conn)  # again: another indexer may have moved it (rows skip)
            for lg in logs:
                apply_log(conn, self.topics[self.contracts[lg.address]],
                          self.contracts[lg.address], lg, info[lg.block_number].timestamp,
                          applied)
            if cp is None or end > cp.block_number:
                row = {"block_number": end, "block_hash": info[end].hash,
                       "updated_ns": self.ctx.now_ns()}
                res = conn.execute(sa.update(ct.idx_checkpoint).where(
                    ct.idx_checkpoint.c.name == CHECKPOINT).values(**row))
                if res.rowcount == 0:
                    conn.execute(sa.insert(ct.idx_checkpoint).values(name=CHECKPOINT, **row))
        m = self.ctx.metrics
        m.inc("indexer_blocks", end - start + 1)
        m.inc("indexer_logs", applied.logs)
        if applied.anomalies:
            m.inc("indexer_anomalies", applied.anomalies)
        if applied.skipped:
            m.inc("indexer_logs_skipped", applied.skipped)
        m.component(COMPONENT).detail = f"block {end}"
        return end - start + 1

    def catch_up(self, stop: threading.Event | None = None) -> int:
        """Step until caught up (or ``stop``); the blocks applied."""
        total = 0
        while stop is None or not stop.is_set():
            n = self.step()
            if n == 0:
                break
            total += n
        return total


def events_of(contract: str) -> dict[bytes, EventSpec]:
    """The events ``contract``'s ABI declares, by topic0."""
    from ledger_client import load_artifact

    names = {str(i["name"]) for i in load_artifact(contract)["abi"] if i.get("type") == "event"}
    return {s.topic0: s for s in EVENTS.values() if s.name in names}


# -- the worker ---------------------------------------------------------------------------------

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0


def indexer_worker(ctx: PortalContext, stop: threading.Event) -> None:
    """Follow the chain until ``stop``: a step, then the next, ``chain.poll_s`` apart once
    caught up. A node down or behind, or a database down: wait with backoff (doubling from
    0.5 s to 30 s), logged once when it starts failing and once when it recovers, counted in
    ``indexer_chain_failures`` / ``indexer_db_failures``. A reorg deeper than the confirmations
    stops the worker (state ``alarm``)."""
    m = ctx.metrics
    try:
        ix = Indexer(ctx)
    except PortalConfigError as e:
        m.set_state(COMPONENT, "alarm", str(e))
        log.error("indexer not started: %s", e)
        return
    delay = 0.0
    failing = False
    try:
        while not stop.is_set():
            try:
                n = ix.step()
            except ReorgDetected as e:
                m.set_state(COMPONENT, "alarm", str(e))
                m.inc("indexer_reorgs")
                log.error("indexer stopped: %s", e)
                return
            except sa.exc.IntegrityError as e:
                # another indexer wrote the same range first (one per database is the rule)
                m.inc("indexer_conflicts")
                log.warning("indexer: a range was written by another writer; again in %s s:"
                            " %s", ctx.config.chain.poll_s, str(e).splitlines()[0][:200])
                stop.wait(ctx.config.chain.poll_s)
                continue
            except (ChainUnavailable, sa.exc.OperationalError, sa.exc.InterfaceError) as e:
                what = "chain" if isinstance(e, ChainUnavailable) else "db"
                m.inc(f"indexer_{what}_failures")
                detail = str(e).splitlines()[0][:300]
                if m.set_state(COMPONENT, "failing", detail) or not failing:
                    log.warning("indexer waiting: %s", detail)
                failing = True
                delay = min(max(delay * 2, BACKOFF_FIRST_S), BACKOFF_MAX_S)
                stop.wait(delay)
                continue
            delay = 0.0
            if m.set_state(COMPONENT, "ok", m.component(COMPONENT).detail) and failing:
                log.info("indexer recovered: %s", m.component(COMPONENT).detail)
            failing = False
            if n == 0:
                stop.wait(ctx.config.chain.poll_s)
    finally:
        ix.close()
        if m.component(COMPONENT).state != "alarm":
            m.set_state(COMPONENT, "stopped")


# -- rebuilding ------------------------------------------------------------------------------------


def owned_tables() -> list[sa.Table]:
    """Every table the indexer writes: the checkpoint, the model tables, ``ev_*``, anomalies."""
    model = [t for t in vars(ct).values() if isinstance(t, sa.Table)]
    return [*model, *(s.table for s in EVENTS.values()), idx_anomalies]


def reset_index(engine: sa.Engine) -> None:
    """Empty every table the indexer writes (one transaction): the next step starts again at
    ``chain.start_block``. What to do after a reorg deeper than the confirmations."""
    with engine.begin() as conn:
        for t in owned_tables():
            conn.execute(sa.delete(t))
