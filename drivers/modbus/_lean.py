"""A lean Modbus TCP client: pymodbus's PDU classes on a plain asyncio `Protocol`.

`LeanTcpClient` offers the part of pymodbus's async client API the gateway uses (``connected``,
``connect``, ``close`` and every read/write method of pymodbus's `ModbusClientMixin`, which
builds the request PDU and calls `execute`), with pymodbus's results and errors:

* requests are pymodbus request PDUs, encoded by their own ``encode``; replies are pymodbus
  response PDUs. Register reads (function codes 3 and 4) of the exact expected shape are built
  directly (`decode_response`); everything else goes through pymodbus's `DecodePDU`, and the
  tests check that both give the same PDU for any bytes;
* one request in flight at a time is the caller's business (the `ModbusLink` lock): the client
  takes no lock of its own;
* timeouts without a timer per request: one lazily rescheduled sweep per client, on the
  pollers' shared ticker (`drivers._polling.Ticker`: the sweeps of one slot share a timer, at
  most a twentieth of the timeout late), fails the request whose deadline has passed
  (`ModbusIOException`, as pymodbus raises after its retries); ``retries`` re-sends the
  same frame (same transaction id) like pymodbus;
* the network is untrusted input: a frame with an unknown transaction id is dropped; a frame
  whose unit id differs from the request's, or whose PDU cannot be decoded, fails the request
  with `ModbusIOException`; a non-zero protocol id or a length field outside 2..254 (an ADU
  beyond 260 bytes) means the stream cannot be re-synchronised: the pending request fails
  with `ModbusIOException` and the connection is closed. Every refusal is counted in
  ``refused`` (and the reason kept in ``last_refusal``); nothing the peer sends raises
  anything else;
* a lost connection fails the pending request with `ConnectionException`.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable
from typing import Any

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu import DecodePDU, ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
)

from drivers._polling import TICK_SLOT_S, Ticker, ticker

log = logging.getLogger("mrv.drivers.modbus")

_MBAP = struct.Struct(">HHHB")
#: the length field counts the unit id and the PDU: 1 + (1..253)
_MIN_LEN = 2
_MAX_LEN = 254
_REG_RESPONSES: dict[int, type[ModbusPDU]] = {
    3: ReadHoldingRegistersResponse, 4: ReadInputRegistersResponse}
_REG_STRUCTS = [struct.Struct(f">{n}H") for n in range(126)]
_DECODER = DecodePDU(False)
#: a request this close to its deadline when the sweep runs has timed out (no re-arm for 1 ms)
_SWEEP_SLACK = 0.001


class FrameError(Exception):
    """The byte stream is not Modbus TCP (protocol id, length): it cannot be re-synchronised."""


def split_frames(buf: bytes) -> tuple[list[tuple[int, int, bytes]], int]:
    """The complete ADUs at the start of ``buf`` as (tid, unit id, PDU), and the bytes used.

    Raises `FrameError` on a protocol id other than 0 or a length field outside 2..254 (pure)."""
    frames: list[tuple[int, int, bytes]] = []
    pos, end = 0, len(buf)
    while end - pos >= 7:
        tid, pid, length, uid = _MBAP.unpack_from(buf, pos)
        if pid != 0:
            raise FrameError(f"protocol id {pid}")
        if not _MIN_LEN <= length <= _MAX_LEN:
            raise FrameError(f"length field {length}")
        stop = pos + 6 + length
        if stop > end:
            break
        frames.append((tid, uid, buf[pos + 7:stop]))
        pos = stop
    return frames, pos


def decode_response(pdu: bytes) -> ModbusPDU | None:
    """A response PDU as pymodbus decodes it (None: undecodable), fast for register reads."""
    fc = pdu[0] if pdu else 0
    cls = _REG_RESPONSES.get(fc)
    if cls is not None and len(pdu) >= 2:
        n = pdu[1]
        if n == len(pdu) - 2 and not n & 1 and n <= 250:
            r = cls(registers=list(_REG_STRUCTS[n >> 1].unpack_from(pdu, 2)))
            r.count = 0  # as pymodbus's decode leaves it
            return r
    return _DECODER.decode(pdu)


class _Pending:
    __slots__ = ("deadline", "dev_id", "fc", "future", "tid")

    def __init__(self, tid: int, dev_id: int, fc: int, future: asyncio.Future[ModbusPDU],
                 deadline: float) -> None:
        self.tid = tid
        self.dev_id = dev_id
        self.fc = fc
        self.future = future
        self.deadline = deadline


class _Connection(asyncio.Protocol):
    """One TCP connection of a client: forwards to the client while it is the current one (a
    closed connection's late callbacks never touch its successor)."""

    def __init__(self, client: LeanTcpClient) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        if self.client._conn is self:
            self.client.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client._conn is self:
            self.client._lost(exc)


class LeanTcpClient(ModbusClientMixin[Awaitable[ModbusPDU]]):
    """A Modbus TCP client with pymodbus's async API subset (see the module docstring)."""

    def __init__(self, host: str, *, port: int = 502, timeout: float = 3.0, retries: int = 3,
                 name: str = "") -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.retries = retries
        self.name = name
        self.refused = 0
        self.last_refusal = ""
        self._conn: _Connection | None = None
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._tid = 0
        self._pending: _Pending | None = None
        self._sweep_armed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker: Ticker | None = None  # `_loop`'s, looked up once per connection

    def __str__(self) -> str:
        return f"LeanTcpClient {self.host}:{self.port}"

    # -- connection ------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        t = self._transport
        return t is not None and not t.is_closing()

    async def connect(self) -> bool:
        """Open the connection (within ``timeout``); False if it cannot be opened."""
        if self.connected:
            return True
        self.close()
        loop = self._loop = asyncio.get_running_loop()
        self._ticker = ticker(loop)
        conn = _Connection(self)
        try:
            async with asyncio.timeout(self.timeout):
                transport, _ = await loop.create_connection(lambda: conn, self.host, self.port)
        except (OSError, TimeoutError) as e:
            log.debug("%s: cannot connect to %s:%d: %s", self.name, self.host, self.port, e)
            return False
        self._conn, self._transport = conn, transport
        self._buf = b""
        self._tid = 0
        return True

    def close(self) -> None:
        """Close the connection; a pending request fails with `ConnectionException`."""
        t, self._transport, self._conn = self._transport, None, None
        self._fail(ConnectionException(f"connection closed[{self!s}]"))
        self._buf = b""
        if t is not None:
            t.close()

    def _lost(self, exc: Exception | None) -> None:
        self._transport = self._conn = None
        self._buf = b""
        self._fail(ConnectionException(f"connection lost[{self!s}]: {exc or 'closed by peer'}"))

    # -- requests --------------------------------------------------------------------------
    def _fail(self, exc: Exception) -> None:
        p, self._pending = self._pending, None
        if p is not None and not p.future.done():
            p.future.set_exception(exc)
            p.future.exception()  # retrieved: no "never retrieved" warning if no one awaits

    async def execute(self, no_response_expected: bool, request: ModbusPDU) -> ModbusPDU:
        """Send ``request`` and return the response PDU (None if none is expected)."""
        t = self._transport
        if t is None or t.is_closing():
            raise ConnectionException(f"Not connected[{self!s}]")
        tid = self._tid = 1 if self._tid >= 65000 else self._tid + 1
        request.transaction_id = tid
        fc = request.function_code
        pdu = bytes((fc,)) + request.encode()
        frame = _MBAP.pack(tid, 0, len(pdu) + 1, request.dev_id) + pdu
        loop = self._loop or asyncio.get_running_loop()
        for attempt in range(self.retries + 1):
            t = self._transport
            if t is None:
                raise ConnectionException(f"Not connected[{self!s}]")
            fut: asyncio.Future[ModbusPDU] = loop.create_future()
            deadline = loop.time() + self.timeout
            self._pending = _Pending(tid, request.dev_id, fc, fut, deadline)
            if not self._sweep_armed:
                self._arm_sweep(loop, deadline)
            t.write(frame)
            if no_response_expected:
                self._pending = None
                return None  # type: ignore[return-value]
            try:
                response = await fut
            except TimeoutError:
                continue
            response.retries = attempt
            return response
        raise ModbusIOException(
            f"No response received after {self.retries} retries, continue with next request",
            function_code=fc, transaction_id=tid, dev_id=request.dev_id)

    def _arm_sweep(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """The sweep at ``when``, on the pollers' shared ticker: the clients whose deadlines
        fall in one slot share one timer (at most a twentieth of the timeout late)."""
        self._sweep_armed = True
        t = self._ticker if loop is self._loop else None
        if t is None:
            t = ticker(loop)
        t.call(when, min(TICK_SLOT_S, self.timeout / 20), self._on_sweep)

    def _on_sweep(self) -> None:
        """Fail the pending request if its deadline has passed; re-arm for a later one."""
        self._sweep_armed = False
        p = self._pending
        if p is None:
            return
        assert self._loop is not None
        if self._loop.time() + _SWEEP_SLACK >= p.deadline:  # a timer may fire a hair early
            self._pending = None
            if not p.future.done():
                p.future.set_exception(TimeoutError())
        else:
            self._arm_sweep(self._loop, p.deadline)

    # -- replies ---------------------------------------------------------------------------
    def _refuse(self, why: str) -> None:
        self.refused += 1
        self.last_refusal = why
        log.debug("%s: reply refused: %s", self.name, why)

    def feed(self, data: bytes) -> None:
        """Bytes received on the connection (from its protocol; tests may call it)."""
        buf = self._buf + data if self._buf else data
        try:
            frames, used = split_frames(buf)
        except FrameError as e:
            self._refuse(f"not Modbus TCP ({e})")
            self._fail(ModbusIOException(f"reply refused: not Modbus TCP ({e})"))
            self.close()
            return
        self._buf = buf[used:] if used < len(buf) else b""
        for tid, uid, pdu in frames:
            self._frame(tid, uid, pdu)

    def _frame(self, tid: int, uid: int, pdu: bytes) -> None:
        p = self._pending
        if p is not None and p.future.done():  # the caller gave up (cancelled)
            p = self._pending = None
        if p is None or tid != p.tid:
            self._refuse(f"transaction id {tid} (expected "
                         f"{'none' if p is None else p.tid})")
            return
        self._pending = None
        if p.dev_id and uid != p.dev_id:
            self._refuse(f"unit id {uid} in the reply to unit {p.dev_id}")
            p.future.set_exception(ModbusIOException(
                f"ERROR: request uses device id={p.dev_id} but received {uid}.",
                function_code=p.fc, transaction_id=tid, dev_id=p.dev_id))
            return
        response = decode_response(pdu)
        if response is None:
            self._refuse(f"undecodable PDU {pdu[:16].hex()}")
            p.future.set_exception(ModbusIOException(
                "Unable to decode response", function_code=p.fc, transaction_id=tid,
                dev_id=p.dev_id))
            return
        response.dev_id = uid
        response.transaction_id = tid
        p.future.set_result(response)


def lean_tcp_client(host: str, *, port: int, timeout: float, retries: int,
                    name: str) -> Any:
    """The TCP client the pollers and control use (one place to switch for an A/B)."""
    return LeanTcpClient(host, port=port, timeout=timeout, retries=retries, name=name)
