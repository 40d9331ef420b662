"""Thin I/O to an EVM chain over JSON-RPC: raw signed transactions only.

Works with any node that serves ``eth_sendRawTransaction``, ``eth_call``, ``eth_estimateGas``,
``eth_getTransactionReceipt``, ``eth_getTransactionCount``, ``eth_gasPrice`` and
``eth_chainId``: anvil, Hyperledger Besu, FISCO BCOS >= 3.9 with ``[web3_rpc] enable=true``.
Every transport failure becomes `ChainUnavailable`; every revert becomes `ChainRevert` with the
contract's custom error decoded; any other JSON-RPC error becomes `ChainRejected`.

The JSON-RPC requests are plain HTTP POSTs (`ledger_client._http`: http.client, one keep-alive
connection) and the ABI is encoded and decoded with the own codec `ledger_client._abi`
(eth_abi's semantics, tested against it): the gateway daemon imports neither web3.py (about
20 MB and 5 % of its CPU) nor aiohttp nor eth_abi / eth_utils / eth_keys. web3 is
imported only when something asks for `EvmChain.w3` or `EvmChain.contract_at` (the
administration tools: `Mrv`, mrvctl, the portal's demo, tests), and `call_data`,
`EvmChain.transact` and `EvmChain.sign_call` take web3's bound contract functions as well as
this module's `ContractCall`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from collections.abc import Awaitable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from contracts import ARTIFACTS
from ledger_client._abi import checksum_address
from ledger_client._abi import decode as abi_decode
from ledger_client._abi import encode as abi_encode
from ledger_client._errors import AbiError, ChainRejected, ChainRevert, ChainUnavailable
from ledger_client._format import BatchHeader, gateway_key, keccak256
from ledger_client._http import HttpTransportError, JsonRpcHttp
from ledger_client._signing import TxKey
from mrv_core import InputLimitError, loads_bounded

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    #: What signs a transaction: the gateway's `TxKey`, or eth_account's account (tools, tests).
    EvmSigner = TxKey | LocalAccount

T = TypeVar("T")

#: Bounds on a node's answer (untrusted input): its size, and its JSON nesting (a receipt with
#: logs nests 4 levels; an ABI-encoded answer is one string).
MAX_RESPONSE_BYTES = 16 << 20
MAX_RESPONSE_DEPTH = 32


@cache
def load_artifact(name: str) -> dict[str, Any]:
    path = ARTIFACTS / f"{name}.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"contract artifact {name!r} not found at {path}: the package was installed without "
            "its contract artifacts (reinstall it, or run `node contracts/build.mjs` in a checkout)"
        ) from None
    data: dict[str, Any] = json.loads(text)
    return data


@cache
def all_errors_abi() -> list[dict[str, Any]]:
    """The custom errors of every compiled contract: a revert bubbling up from another
    contract of the system (the registry, allowances) decodes by name too."""
    items: dict[str, dict[str, Any]] = {}
    for path in sorted(ARTIFACTS.glob("*.json")):
        for item in load_artifact(path.stem)["abi"]:
            if item.get("type") == "error":
                sig = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
                items.setdefault(sig, item)
    return list(items.values())


def _type_str(param: dict[str, Any]) -> str:
    """The canonical ABI type of a parameter (tuples spelled out, for selectors)."""
    t = str(param["type"])
    if t.startswith("tuple"):
        return "(" + ",".join(_type_str(c) for c in param["components"]) + ")" + t[5:]
    return t


def _web3_form(param: dict[str, Any], value: Any) -> Any:
    """A decoded ABI value as web3 returns it: arrays as lists (the codec gives tuples; its
    addresses are already in EIP-55 checksum form)."""
    t = str(param["type"])
    if t.endswith("]"):
        inner = {**param, "type": t[: t.rindex("[")]}
        return [_web3_form(inner, v) for v in value]
    if t == "tuple":
        return tuple(_web3_form(c, v) for c, v in zip(param["components"], value, strict=True))
    return value


class ContractFunction:
    """One function of a contract's ABI: its selector, input and output types."""

    __slots__ = ("inputs", "name", "outputs", "selector", "types")

    def __init__(self, item: dict[str, Any]) -> None:
        self.name: str = item["name"]
        self.inputs: list[dict[str, Any]] = item["inputs"]
        self.outputs: list[dict[str, Any]] = item.get("outputs") or []
        self.types = [_type_str(p) for p in self.inputs]
        self.selector = keccak256(f"{self.name}({','.join(self.types)})".encode())[:4]

    def encode(self, args: tuple[Any, ...]) -> bytes:
        if len(args) != len(self.inputs):
            raise TypeError(f"{self.name} takes {len(self.inputs)} arguments, got {len(args)}")
        return self.selector + abi_encode(self.types, args)

    def decode(self, data: bytes) -> Any:
        """The return value as web3 gives it: one output alone, several as a list."""
        values = abi_decode([_type_str(p) for p in self.outputs], data)
        out = [_web3_form(p, v) for p, v in zip(self.outputs, values, strict=True)]
        return out[0] if len(out) == 1 else out


class ContractCall:
    """A contract function bound to its arguments, ``contract.functions.name(*args)``."""

    __slots__ = ("args", "contract", "fn")

    def __init__(self, contract: Contract, fn: ContractFunction, args: tuple[Any, ...]) -> None:
        self.contract = contract
        self.fn = fn
        self.args = args

    @property
    def name(self) -> str:
        return self.fn.name

    @property
    def address(self) -> str:
        return self.contract.address

    def data(self) -> bytes:
        """The call data: selector + ABI-encoded arguments."""
        return self.fn.encode(self.args)

    async def call(self, block: str | int = "latest") -> Any:
        """``eth_call`` at ``block``; a revert raises `ChainRevert`."""
        raw = await self.contract.chain.eth_call(
            {"to": self.address, "data": "0x" + self.data().hex()}, block)
        try:
            return self.fn.decode(raw)
        except AbiError as e:  # the answer is no strict encoding of the outputs
            raise ChainUnavailable(f"{self.contract.chain.rpc_url}: the answer to {self.name}"
                                   f" does not decode ({e})") from e


class _Functions:
    __slots__ = ("_contract",)

    def __init__(self, contract: Contract) -> None:
        self._contract = contract

    def __getattr__(self, name: str) -> Any:
        fn = self._contract.function(name)

        def bind(*args: Any) -> ContractCall:
            return ContractCall(self._contract, fn, args)
        return bind


class Contract:
    """A contract at an address on an `EvmChain`, known by its ABI: ``functions.name(*args)``
    gives a `ContractCall` (the part of web3's contract object the gateway uses)."""

    __slots__ = ("_fns", "abi", "address", "chain", "functions")

    def __init__(self, chain: EvmChain, address: str, abi: list[dict[str, Any]]) -> None:
        self.chain = chain
        self.address = checksum_address(address)
        self.abi = abi
        self._fns = _functions_of(id(abi), abi)
        self.functions = _Functions(self)

    def function(self, name: str) -> ContractFunction:
        try:
            return self._fns[name]
        except KeyError:
            raise AttributeError(f"the contract has no function {name!r}") from None


_FUNCTIONS: dict[int, tuple[object, dict[str, ContractFunction]]] = {}


def _functions_of(key: int, abi: list[dict[str, Any]]) -> dict[str, ContractFunction]:
    hit = _FUNCTIONS.get(key)
    if hit is not None and hit[0] is abi:  # the entry holds the ABI: its id stays its own
        return hit[1]
    fns = {i["name"]: ContractFunction(i) for i in abi if i.get("type") == "function"}
    if len(_FUNCTIONS) >= 64:  # ABIs are the artifacts' (cached): a handful, in practice
        _FUNCTIONS.clear()
    _FUNCTIONS[key] = (abi, fns)
    return fns


def call_data(fn: Any) -> str:
    """The ABI-encoded call data (``0x`` + selector + arguments) of a bound contract function:
    a `ContractCall` (encoded with `ledger_client._abi` here) or web3's ``contract.functions.name(*args)``
    (through web3's public ``Contract.encode_abi``). tests/test_third_party_api.py checks both
    against an independent encoding."""
    if isinstance(fn, ContractCall):
        return "0x" + fn.data().hex()
    contract = _abi_contract(fn.w3, fn.contract_abi)
    return str(contract.encode_abi(fn.abi_element_identifier, args=fn.args, kwargs=fn.kwargs))


# (w3, abi) -> an address-less web3 contract for encoding; building one parses the whole ABI
_ABI_CONTRACTS: dict[tuple[int, int], tuple[object, object, Any]] = {}


def _abi_contract(w3: Any, abi: Any) -> Any:
    key = (id(w3), id(abi))
    hit = _ABI_CONTRACTS.get(key)
    if hit is not None and hit[0] is w3 and hit[1] is abi:  # the entry holds both: ids stay theirs
        return hit[2]
    if len(_ABI_CONTRACTS) >= 64:
        _ABI_CONTRACTS.clear()
    contract = w3.eth.contract(abi=abi)
    _ABI_CONTRACTS[key] = (w3, abi, contract)
    return contract


def _error_table(abi: list[dict[str, Any]]) -> dict[bytes, tuple[str, list[str]]]:
    table: dict[bytes, tuple[str, list[str]]] = {}
    for item in abi:
        if item.get("type") != "error":
            continue
        types = [_type_str(i) for i in item["inputs"]]
        sel = keccak256(f"{item['name']}({','.join(types)})".encode())[:4]
        table[sel] = (item["name"], types)
    # Solidity's built-in Error(string) and Panic(uint256)
    table[bytes.fromhex("08c379a0")] = ("Error", ["string"])
    table[bytes.fromhex("4e487b71")] = ("Panic", ["uint256"])
    return table


def decode_revert(abi: list[dict[str, Any]], data: str | bytes | None) -> ChainRevert:
    if isinstance(data, str):
        try:
            raw = bytes.fromhex(data.removeprefix("0x")) if data.startswith("0x") else b""
        except ValueError:
            raw = b""
    else:
        raw = data or b""
    if len(raw) < 4:
        return ChainRevert("unknown", (), "0x" + raw.hex())
    entry = _error_table(abi).get(raw[:4])
    if entry is None:
        return ChainRevert("unknown", (), "0x" + raw.hex())
    name, types = entry
    try:
        args = abi_decode(types, raw[4:])  # addresses in checksum form
    except AbiError:  # malformed revert data: keep the raw bytes
        args = ()
    return ChainRevert(name, args, "0x" + raw.hex())


def _revert_data(error: dict[str, Any]) -> str | bool | None:
    """The revert data of a JSON-RPC error object to ``eth_call`` / ``eth_estimateGas``: a hex
    string, None for a revert without data, False when the error is no revert. The rules of
    web3.py's ``raise_contract_logic_error_on_revert``, plus the data some nodes nest in an
    object (``{"data": {"data": "0x..."}}``)."""
    message = error.get("message")
    has_message = isinstance(message, str) and message != ""
    data = error.get("data")
    if "data" in error and data is None:
        return None
    if isinstance(data, str):
        return data
    if isinstance(data, dict):
        if isinstance(data.get("data"), str):
            return str(data["data"])
        if has_message:
            return None
    if has_message and (error.get("code") == 3 or "execution reverted" in str(message)):
        return None
    return False


def _quantity(v: Any, what: str) -> int:
    if isinstance(v, str) and v.startswith("0x") and 2 < len(v) <= 66:
        try:
            return int(v, 16)
        except ValueError:
            pass
    raise ValueError(f"{what}: not a hex quantity: {str(v)[:80]!r}")


def _bytes(v: Any, what: str) -> bytes:
    if isinstance(v, str) and v.startswith("0x"):
        try:
            return bytes.fromhex(v[2:])
        except ValueError:
            pass
    raise ValueError(f"{what}: not hex data: {str(v)[:80]!r}")


def _log(entry: Any) -> dict[str, Any]:
    """A receipt's log in the form web3's event decoding takes (bytes, ints, a checksum address)."""
    return {
        "address": checksum_address(entry["address"]),
        "topics": [_bytes(t, "log topic") for t in entry["topics"]],
        "data": _bytes(entry["data"], "log data"),
        "blockNumber": _quantity(entry["blockNumber"], "log blockNumber"),
        "blockHash": _bytes(entry["blockHash"], "log blockHash"),
        "transactionHash": _bytes(entry["transactionHash"], "log transactionHash"),
        "transactionIndex": _quantity(entry["transactionIndex"], "log transactionIndex"),
        "logIndex": _quantity(entry["logIndex"], "log logIndex"),
    }


@dataclass(frozen=True, slots=True)
class OnChainBatch:
    header_hash: bytes
    root: bytes
    count: int
    first_record_seq: int
    last_record_seq: int
    block_number: int
    period: int = 0


@dataclass(frozen=True, slots=True)
class OnChainGateway:
    gateway_id: str
    sender: str
    signing_key: bytes
    active: bool
    last_seq: int
    last_record_seq: int
    last_header_hash: bytes


@dataclass(frozen=True, slots=True)
class Receipt:
    tx_hash: bytes
    status: int
    block_number: int
    gas_used: int
    contract_address: str | None
    logs: tuple[Any, ...] = ()


def header_tuple(h: BatchHeader) -> tuple[object, ...]:
    return (
        gateway_key(h.gateway_id), h.seq, h.prev_hash, h.root, h.count, h.first_record_seq,
        h.last_record_seq, h.first_ts_ns, h.last_ts_ns, h.co2e_scope1_g, h.co2e_scope2_g,
        h.co2e_scope3_g,
    )


def _block(block: str | int) -> str:
    return hex(block) if isinstance(block, int) else block


class EvmChain:
    """A JSON-RPC endpoint plus one contract (by artifact name) at one address."""

    def __init__(
        self,
        rpc_url: str,
        *,
        contract_address: str | None = None,
        artifact: str = "EmissionsLedger",
        request_timeout_s: float = 10.0,
        gas_margin: float = 1.25,
        gas_price_wei: int | None = None,
    ) -> None:
        self.rpc_url = rpc_url
        self.request_timeout_s = request_timeout_s
        art = load_artifact(artifact)
        self.artifact = artifact
        self.abi: list[dict[str, Any]] = art["abi"]
        self._errors_abi = [*self.abi, *all_errors_abi()]
        self.bytecode: str = art["bytecode"]
        self.address = checksum_address(contract_address) if contract_address else None
        self.gas_margin = gas_margin
        self.gas_price_wei = gas_price_wei
        self._chain_id: int | None = None
        self._contract: Contract | None = None
        self._transport: JsonRpcHttp | None = None
        self._ids = itertools.count(1)
        self._w3: Any = None
        self._tx_keys: dict[str, tuple[bytes, TxKey]] = {}

    # -- JSON-RPC ---------------------------------------------------------------------------

    def _http(self) -> JsonRpcHttp:
        """One keep-alive HTTP connection to the node (`ledger_client._http`)."""
        t = self._transport
        if t is None:
            t = self._transport = JsonRpcHttp(self.rpc_url, timeout_s=self.request_timeout_s,
                                              max_bytes=MAX_RESPONSE_BYTES)
        return t

    async def request(self, method: str, params: list[Any], *, may_revert: bool = False) -> Any:
        """One JSON-RPC call; its ``result``. Transport failures, HTTP errors and answers that
        are not JSON-RPC (larger than `MAX_RESPONSE_BYTES`, deeper than `MAX_RESPONSE_DEPTH`,
        not JSON, another id) raise `ChainUnavailable`; an ``error`` raises `ChainRevert` when
        ``may_revert`` and it is a revert, `ChainRejected` otherwise."""
        rid = next(self._ids)
        body = json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        try:
            status, reason, raw = await asyncio.to_thread(self._http().post, body.encode())
        except HttpTransportError as e:
            raise ChainUnavailable(f"{self.rpc_url}: {method}: {e}") from e
        if status != 200:
            raise ChainUnavailable(f"{self.rpc_url}: HTTP {status} {reason} to {method}")
        try:
            msg = loads_bounded(bytes(raw), max_bytes=MAX_RESPONSE_BYTES,
                                max_depth=MAX_RESPONSE_DEPTH, what=f"answer to {method}")
        except (InputLimitError, ValueError, RecursionError) as e:
            raise ChainUnavailable(f"{self.rpc_url}: the answer to {method} is not JSON: {e}"
                                   ) from None
        if not isinstance(msg, dict) or msg.get("id") != rid:
            raise ChainUnavailable(f"{self.rpc_url}: the answer to {method} is not a JSON-RPC"
                                   " response to it")
        error = msg.get("error")
        if error is not None:
            if not isinstance(error, dict):
                raise ChainRejected(f"{self.rpc_url}: {method}: {str(error)[:200]}")
            if may_revert:
                data = _revert_data(error)
                if data is not False:
                    raise decode_revert(self._errors_abi, data if isinstance(data, str) else None)
            raise ChainRejected(f"{self.rpc_url}: {method}: {str(error.get('message'))[:500]}"
                                f" (code {error.get('code')})")
        if "result" not in msg:
            raise ChainUnavailable(f"{self.rpc_url}: the answer to {method} has no result")
        return msg["result"]

    async def _value(self, method: str, params: list[Any], parse: Any,
                     may_revert: bool = False) -> Any:
        result = await self.request(method, params, may_revert=may_revert)
        try:
            return parse(result, method)
        except (ValueError, TypeError, KeyError) as e:
            raise ChainUnavailable(f"{self.rpc_url}: {e}") from None

    async def eth_call(self, tx: dict[str, Any], block: str | int = "latest") -> bytes:
        out: bytes = await self._value("eth_call", [tx, _block(block)], _bytes, may_revert=True)
        return out

    async def _rpc(self, aw: Awaitable[T]) -> T:
        """Awaits ``aw``, translating the errors of web3's awaitables (`Mrv` and tests use web3
        contract objects); this module's own calls raise the ledger errors already."""
        try:
            return await aw
        except (OSError, TimeoutError) as e:
            raise ChainUnavailable(f"{self.rpc_url}: {e}") from e
        except Exception as e:
            aiohttp = sys.modules.get("aiohttp")  # web3's transport (imported with web3)
            if aiohttp is not None and isinstance(e, aiohttp.ClientError):
                raise ChainUnavailable(f"{self.rpc_url}: {e}") from e
            if "web3" not in sys.modules:
                raise
            from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError
            if isinstance(e, TransactionNotFound):
                raise
            if isinstance(e, ContractLogicError):
                raise decode_revert(self._errors_abi,
                                    e.data if isinstance(e.data, str) else None) from e
            if isinstance(e, Web3RPCError):
                raise ChainRejected(f"{self.rpc_url}: {e}") from e
            raise

    @property
    def w3(self) -> Any:
        """A web3.py ``AsyncWeb3`` on the same endpoint, made (and web3 imported) on first use:
        for administration tools and tests, never on the gateway's anchoring path."""
        if self._w3 is None:
            from web3 import AsyncHTTPProvider, AsyncWeb3
            from web3.types import RPCEndpoint
            self._w3 = AsyncWeb3(AsyncHTTPProvider(
                self.rpc_url, request_kwargs={"timeout": self.request_timeout_s},
                cache_allowed_requests=True, cacheable_requests={RPCEndpoint("eth_chainId")}))
        return self._w3

    async def close(self) -> None:
        if self._transport is not None:
            await asyncio.to_thread(self._transport.close)  # (after a request in flight)
            self._transport = None
        if self._w3 is not None:
            disconnect = getattr(self._w3.provider, "disconnect", None)
            if disconnect is not None:
                await disconnect()

    @property
    def contract(self) -> Contract:
        """The contract at ``address``, built once per address."""
        if self.address is None:
            raise ValueError("no contract address configured")
        cached = self._contract
        if cached is None or cached.address != self.address:
            cached = self._contract = Contract(self, self.address, self.abi)
        return cached

    def contract_at(self, artifact: str, address: str) -> Any:
        """Another contract of the system on the same endpoint, as a web3 contract object (its
        events decode with web3): for `Mrv` and the administration tools."""
        return self.w3.eth.contract(address=checksum_address(address),
                                    abi=load_artifact(artifact)["abi"])

    async def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(await self._value("eth_chainId", [], _quantity))
        return self._chain_id

    async def block_number(self) -> int:
        return int(await self._value("eth_blockNumber", [], _quantity))

    async def nonce(self, address: str) -> int:
        return int(await self._value("eth_getTransactionCount",
                                     [checksum_address(address), "pending"], _quantity))

    async def gas_price(self) -> int:
        if self.gas_price_wei is not None:
            return self.gas_price_wei
        return int(await self._value("eth_gasPrice", [], _quantity))

    async def balance(self, address: str) -> int:
        return int(await self._value("eth_getBalance", [checksum_address(address), "latest"],
                                     _quantity))

    # -- views ------------------------------------------------------------------------------

    async def last_seq(self, gateway_id: str) -> int:
        return int(await self.contract.functions.lastSeq(gateway_key(gateway_id)).call())

    async def batch(self, gateway_id: str, seq: int) -> OnChainBatch:
        b = await self.contract.functions.batch(gateway_key(gateway_id), seq).call()
        return OnChainBatch(bytes(b[0]), bytes(b[1]), int(b[2]), int(b[3]), int(b[4]), int(b[5]),
                            int(b[6]) if len(b) > 6 else 0)

    async def gateway(self, gateway_id: str) -> OnChainGateway:
        g = await self.contract.functions.gateway(gateway_key(gateway_id)).call()
        return OnChainGateway(str(g[0]), str(g[1]), bytes(g[2]), bool(g[3]), int(g[4]),
                              int(g[5]), bytes(g[6]))

    async def verify_record(self, gateway_id: str, batch_seq: int, leaf: bytes,
                            proof: list[bytes]) -> bool:
        fn = self.contract.functions.verifyRecord(gateway_key(gateway_id), batch_seq, leaf, proof)
        return bool(await fn.call())

    async def header_hash_on_chain(self, header: BatchHeader) -> bytes:
        fn = self.contract.functions.headerHash(header_tuple(header))
        return bytes(await fn.call())

    # -- transactions -----------------------------------------------------------------------

    def _tx_key(self, account: EvmSigner) -> TxKey:
        """The account's signing key, made once per account (not once per transaction)."""
        if isinstance(account, TxKey):
            return account
        key = bytes(account.key)
        hit = self._tx_keys.get(account.address)
        if hit is None or hit[0] != key:
            hit = self._tx_keys[account.address] = (key, TxKey(key))
        return hit[1]

    async def sign_call(self, account: EvmSigner, fn: Any, *, nonce: int | None = None,
                        to: str | None = None, data: str | None = None,
                        value: int = 0) -> tuple[bytes, bytes, int]:
        """Estimate gas (a revert raises `ChainRevert` here), sign locally; returns
        ``(raw_tx, tx_hash, nonce)``. Nothing is sent."""
        if fn is not None:
            data = call_data(fn)
            to = getattr(fn, "address", None) or self.address
        tx: dict[str, Any] = {"from": account.address, "data": data or "0x", "value": hex(value)}
        if to:
            tx["to"] = checksum_address(to)
        gas = await self._value("eth_estimateGas", [tx], _quantity, may_revert=True)
        if nonce is None:
            nonce = await self.nonce(account.address)
        raw, tx_hash = self._tx_key(account).sign_legacy(
            nonce=nonce, gas_price=await self.gas_price(),
            gas=int(gas * self.gas_margin) + 10_000,
            to=bytes.fromhex(tx["to"][2:]) if to else b"", value=value,
            data=bytes.fromhex(tx["data"][2:]), chain_id=await self.chain_id())
        return raw, tx_hash, nonce

    async def send_raw(self, raw_tx: bytes) -> bytes:
        out: bytes = await self._value("eth_sendRawTransaction", ["0x" + raw_tx.hex()], _bytes)
        return out

    async def receipt(self, tx_hash: bytes) -> Receipt | None:
        r = await self.request("eth_getTransactionReceipt", ["0x" + tx_hash.hex()])
        if r is None:
            return None
        try:
            addr = r.get("contractAddress")
            return Receipt(_bytes(r["transactionHash"], "transactionHash"),
                           _quantity(r["status"], "status"),
                           _quantity(r["blockNumber"], "blockNumber"),
                           _quantity(r["gasUsed"], "gasUsed"),
                           checksum_address(addr) if addr else None,
                           tuple(_log(lg) for lg in r.get("logs") or ()))
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ChainUnavailable(f"{self.rpc_url}: malformed receipt: {e}") from None

    async def wait_receipt(self, tx_hash: bytes, timeout_s: float, poll_s: float = 0.05) -> Receipt:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            r = await self.receipt(tx_hash)
            if r is not None:
                return r
            if loop.time() > deadline:
                raise ChainUnavailable(f"no receipt for 0x{tx_hash.hex()} within {timeout_s:g} s")
            await asyncio.sleep(poll_s)
            poll_s = min(poll_s * 1.5, 1.0)

    async def replay_revert(self, account_address: str, raw_call_data: str, block: int,
                            to: str | None = None) -> ChainRevert:
        """Re-run a reverted transaction as ``eth_call`` at its block to learn why."""
        try:
            await self.eth_call({"from": account_address, "to": to or self.address,
                                 "data": raw_call_data}, block)
        except ChainRevert as e:
            return e
        return ChainRevert("unknown", ())

    async def transact(self, account: EvmSigner, fn: Any, timeout_s: float = 60.0) -> Receipt:
        """Sign, send and wait: for admin tools and tests, not the anchoring path."""
        raw, txh, _ = await self.sign_call(account, fn)
        await self.send_raw(raw)
        r = await self.wait_receipt(txh, timeout_s)
        if r.status != 1:
            raise await self.replay_revert(account.address, call_data(fn),
                                           r.block_number, getattr(fn, "address", None))
        return r

    async def deploy(self, account: EvmSigner, timeout_s: float = 60.0) -> str:
        """Deploy this chain's own artifact (no constructor arguments) and point at it."""
        address = await self.deploy_artifact(account, self.artifact, (), timeout_s)
        self.address = checksum_address(address)
        return address

    async def deploy_artifact(self, account: EvmSigner, artifact: str,
                              args: tuple[object, ...] = (), timeout_s: float = 60.0) -> str:
        """Deploy any compiled contract with constructor ``args``; returns its address (taken
        from the receipt, as FISCO BCOS before 3.12 does not follow the Ethereum rule)."""
        art = load_artifact(artifact)
        ctor = [i for i in art["abi"] if i.get("type") == "constructor"]
        types = [_type_str(p) for p in ctor[0]["inputs"]] if ctor else []
        if len(args) != len(types):
            raise TypeError(f"{artifact}'s constructor takes {len(types)} arguments,"
                            f" got {len(args)}")
        data = str(art["bytecode"]) + abi_encode(types, args).hex()
        raw, txh, _ = await self.sign_call(account, None, data=data)
        await self.send_raw(raw)
        r = await self.wait_receipt(txh, timeout_s)
        if r.status != 1 or not r.contract_address:
            raise ChainRevert("DeploymentFailed", (artifact,))
        return str(checksum_address(r.contract_address))
