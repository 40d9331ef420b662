"""`LeanTcpClient` against real pymodbus servers (same PDUs as pymodbus's client) and against
hostile raw servers (garbage, wrong ids, huge lengths, split and merged frames), plus a fuzz of
its frame parser and response decoder."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu import DecodePDU, ModbusPDU
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus._lean import FrameError, LeanTcpClient, decode_response, split_frames
from simulator import ModbusPlant
from simulator._plant import SimServer

from .support import until

_COILS = [bool(i % 3 == 0) for i in range(32)]
_DISCRETES = [bool(i % 2) for i in range(32)]
_HOLDING = [(7919 * i) & 0xFFFF for i in range(40)]
_INPUT = [(104729 * i + 5) & 0xFFFF for i in range(40)]


@pytest.fixture
async def static_server() -> AsyncIterator[SimServer]:
    """A real pymodbus server with fixed values in all four tables (unit 1), writable."""
    sim = SimServer("127.0.0.1", 0, "static")
    blocks = ([SimData(0, count=32, values=_COILS, datatype=DataType.BITS)],
              [SimData(0, count=32, values=_DISCRETES, datatype=DataType.BITS)],
              [SimData(0, count=40, values=_HOLDING, datatype=DataType.REGISTERS)],
              [SimData(0, count=40, values=_INPUT, datatype=DataType.REGISTERS)])
    await sim.serve([SimDevice(1, simdata=blocks)])
    yield sim
    await sim.stop()


def _shape(pdu: ModbusPDU) -> tuple[Any, ...]:
    return (type(pdu), pdu.function_code, pdu.isError(), list(pdu.registers), list(pdu.bits),
            pdu.exception_code, pdu.dev_id, pdu.address, pdu.count, pdu.status)


_CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("read_holding_registers", (0,), {"count": 40}),
    ("read_holding_registers", (7,), {"count": 3}),
    ("read_input_registers", (0,), {"count": 40}),
    ("read_input_registers", (11,), {"count": 1}),
    ("read_coils", (0,), {"count": 13}),
    ("read_coils", (3,), {"count": 16}),
    ("read_discrete_inputs", (0,), {"count": 32}),
    ("read_discrete_inputs", (5,), {"count": 3}),
    ("write_register", (3, 777), {}),
    ("write_registers", (4, [1, 2, 65535]), {}),
    ("write_coil", (2, True), {}),
    ("write_coils", (5, [True, False, True, True]), {}),
    ("read_holding_registers", (0,), {"count": 10}),  # the writes read back
    ("read_coils", (0,), {"count": 10}),
]


async def test_every_read_and_write_equals_pymodbus(static_server: SimServer) -> None:
    lean = LeanTcpClient("127.0.0.1", port=static_server.port, timeout=5, retries=0)
    ref = AsyncModbusTcpClient("127.0.0.1", port=static_server.port, timeout=5, retries=0)
    assert not lean.connected
    assert await lean.connect() and await ref.connect()
    assert lean.connected
    try:
        for name, args, kw in _CALLS:
            got = await getattr(lean, name)(*args, device_id=1, **kw)
            want = await getattr(ref, name)(*args, device_id=1, **kw)
            assert _shape(got) == _shape(want), name
            assert not got.isError()
    finally:
        lean.close()
        ref.close()
    assert not lean.connected
    assert lean.refused == 0


async def test_exception_responses_equal_pymodbus(plant: ModbusPlant) -> None:
    lean = LeanTcpClient("127.0.0.1", port=plant.port, timeout=5, retries=0)
    ref = AsyncModbusTcpClient("127.0.0.1", port=plant.port, timeout=5, retries=0)
    assert await lean.connect() and await ref.connect()
    try:
        for code in (1, 2, 4, 11):
            plant.models[1].faults.exception = code
            for name in ("read_holding_registers", "read_input_registers", "read_coils"):
                got = await getattr(lean, name)(0, count=2, device_id=1)
                want = await getattr(ref, name)(0, count=2, device_id=1)
                assert got.isError() and got.exception_code == code
                assert _shape(got) == _shape(want)
    finally:
        lean.close()
        ref.close()


async def test_silent_server_times_out_then_works_after_reconnect(plant: ModbusPlant) -> None:
    c = LeanTcpClient("127.0.0.1", port=plant.port, timeout=0.2, retries=1)
    assert await c.connect()
    assert not (await c.read_holding_registers(0, count=2, device_id=1)).isError()
    plant.models[1].faults.silent = True
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(ModbusIOException, match="after 1 retries"):
        await c.read_holding_registers(0, count=2, device_id=1)
    assert loop.time() - t0 >= 0.4  # two tries of 0.2 s each
    c.close()  # as the poller does on DeviceUnreachable
    plant.models[1].faults.silent = False
    assert await c.connect()
    rr = await c.read_holding_registers(0, count=2, device_id=1)
    assert not rr.isError() and len(rr.registers) == 2
    c.close()


async def test_server_that_closes(plant: ModbusPlant) -> None:
    c = LeanTcpClient("127.0.0.1", port=plant.port, timeout=2, retries=0)
    assert await c.connect()
    assert not (await c.read_input_registers(0, count=2, device_id=2)).isError()
    assert plant.drop_connections() == 1
    await until(lambda: not c.connected)
    with pytest.raises(ConnectionException):
        await c.read_input_registers(0, count=2, device_id=2)
    assert await c.connect()
    assert not (await c.read_input_registers(0, count=2, device_id=2)).isError()
    c.close()  # closed and reopened at once: the old connection's end must not touch the new
    assert await c.connect()
    for _ in range(3):
        assert not (await c.read_input_registers(0, count=2, device_id=2)).isError()
    assert c.connected
    c.close()
    await plant.stop()
    assert not await c.connect()  # refused: False, as pymodbus's connect


# ---------------------------------------------------------------- hostile raw servers

Reply = Callable[[int, int, bytes, asyncio.StreamWriter], Awaitable[None]]


class Hostile:
    """A raw TCP server: for each request ADU, ``reply(tid, unit, pdu, writer)``."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await r.readexactly(7)
                tid, _, length, unit = struct.unpack(">HHHB", head)
                pdu = await r.readexactly(length - 1)
                self.requests += 1
                await self.reply(tid, unit, pdu, w)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def _adu(tid: int, unit: int, pdu: bytes, pid: int = 0) -> bytes:
    return struct.pack(">HHHB", tid, pid, len(pdu) + 1, unit) + pdu


_REGS = bytes([3, 4, 0x12, 0x34, 0xAB, 0xCD])  # a reply to a read of 2 holding registers


async def _client(port: int, timeout: float = 0.3) -> LeanTcpClient:
    c = LeanTcpClient("127.0.0.1", port=port, timeout=timeout, retries=0)
    assert await c.connect()
    return c


async def test_garbage_is_refused_and_the_connection_closed() -> None:
    async def reply(tid: int, unit: int, pdu: bytes, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    async with Hostile(reply) as port:
        c = await _client(port)
        with pytest.raises(ModbusIOException, match="not Modbus TCP"):
            await c.read_holding_registers(0, count=2, device_id=1)
        assert c.refused == 1 and not c.connected


async def test_wrong_protocol_id_and_huge_length_are_refused() -> None:
    for bad in (_adu(1, 1, _REGS, pid=1),
                struct.pack(">HHHB", 1, 0, 0xFFFF, 1) + bytes(300),
                struct.pack(">HHHB", 1, 0, 255, 1) + bytes(254),  # ADU of 261 bytes
                struct.pack(">HHHB", 1, 0, 1, 1) + bytes(8)):  # no function code
        async def reply(tid: int, unit: int, pdu: bytes, w: asyncio.StreamWriter,
                        bad: bytes = bad) -> None:
            w.write(bad)

        async with Hostile(reply) as port:
            c = await _client(port)
            with pytest.raises(ModbusIOException, match="not Modbus TCP"):
                await c.read_holding_registers(0, count=2, device_id=1)
            assert c.refused == 1 and not c.connected


async def test_wrong_transaction_id_is_dropped_then_times_out() -> None:
    async def reply(tid: int, unit: int, pdu: bytes, w: asyncio.StreamWriter) -> None:
        w.write(_adu(tid + 1, unit, _REGS))

    async with Hostile(reply) as port:
        c = await _client(port)
        with pytest.raises(ModbusIOException, match="No response"):
            await c.read_holding_registers(0, count=2, device_id=1)
        assert c.refused == 1 and "transaction id 2" in c.last_refusal
        c.close()


async def test_wrong_unit_id_fails_the_request() -> None:
    async def reply(tid: int, unit: int, pdu: bytes, w: asyncio.StreamWriter) -> None:
        w.write(_adu(tid, unit + 1, _REGS))

    async with Hostile(reply) as port:
        c = await _client(port)
        with pytest.raises(ModbusIOException, match="device id=1 but received 2"):
            await c.read_holding_registers(0, count=2, device_id=1)
        assert c.refused == 1 and c.connected  # the stream is still in step
        c.close()


async def test_undecodable_pdu_fails_the_request() -> None:
    async def reply(tid: int, unit: int, pdu: bytes, w: asyncio.StreamWriter) -> None:
        w.write(_adu(tid, unit, bytes([0x41, 1, 2])))  # a function code pymodbus does not know

    async with Hostile(reply) as port:
        c = await _client(port)
        with pytest.raises(ModbusIOException, match="Unable to decode"):
            await c.read_holding_registers(0, count=2, device_id=1)
        assert c.refused == 1
        c.close()


async def test_half_a_frame_then_nothing_times_out() -> None:
    async def reply(tid: int, unit: int, pdu: bytes, w: asyncio.StreamWriter) -> None:
        w.write(_adu(tid, unit, _REGS)[:9])

    async with Hostile(reply) as port:
        c = await _client(port, timeout=0.2)
        with pytest.raises(ModbusIOException, match="No response"):
            await c.read_holding_registers(0, count=2, device_id=1)
        c.close()


async def test_two_frames_in_one_segment_and_one_frame_in_many() -> None:
    async def reply(tid: int, unit: int, pdu: bytes, w: asyncio.StreamWriter) -> None:
        if tid == 1:  # a stale reply and the right one, in one write
            w.write(_adu(60000, unit, _REGS) + _adu(tid, unit, _REGS))
            return
        for b in _adu(tid, unit, _REGS):  # byte by byte, each sent on its own
            w.write(bytes([b]))
            await w.drain()
            await asyncio.sleep(0.005)

    async with Hostile(reply) as port:
        c = await _client(port, timeout=5)
        for _ in range(3):
            rr = await c.read_holding_registers(0, count=2, device_id=1)
            assert rr.registers == [0x1234, 0xABCD] and rr.function_code == 3
        assert c.refused == 1  # the stale frame only
        c.close()


async def test_peer_closing_mid_request_raises_connection_exception() -> None:
    async def reply(tid: int, unit: int, pdu: bytes, w: asyncio.StreamWriter) -> None:
        w.write(_adu(tid, unit, _REGS)[:5])
        w.close()

    async with Hostile(reply) as port:
        c = await _client(port, timeout=5)
        with pytest.raises(ConnectionException):
            await c.read_holding_registers(0, count=2, device_id=1)
        assert not c.connected


async def test_a_reply_after_the_caller_gave_up_is_refused() -> None:
    go = asyncio.Event()

    async def reply(tid: int, unit: int, pdu: bytes, w: asyncio.StreamWriter) -> None:
        if tid == 1:
            await go.wait()
        w.write(_adu(tid, unit, _REGS))

    async with Hostile(reply) as port:
        c = await _client(port, timeout=5)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):  # the caller's own timeout (as RTU does)
                await c.read_holding_registers(0, count=2, device_id=1)
        go.set()
        await until(lambda: c.refused == 1)  # the late reply to tid 1
        rr = await c.read_holding_registers(0, count=2, device_id=1)
        assert rr.registers == [0x1234, 0xABCD]
        c.close()


async def test_not_connected_raises_connection_exception() -> None:
    c = LeanTcpClient("127.0.0.1", port=1, timeout=1, retries=0)
    with pytest.raises(ConnectionException):
        await c.read_coils(0, count=1, device_id=1)


# ---------------------------------------------------------------- parser fuzz


_REF = DecodePDU(False)


def _same(a: ModbusPDU | None, b: ModbusPDU | None) -> bool:
    if a is None or b is None:
        return a is b
    return _shape(a) == _shape(b)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=260))
def test_decode_response_is_pymodbus_decode_for_any_bytes(pdu: bytes) -> None:
    assert _same(decode_response(pdu), _REF.decode(pdu))


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from([1, 2, 3, 4, 5, 6, 15, 16, 0x83, 0x84]),
       st.integers(0, 255), st.binary(max_size=252))
def test_decode_response_near_valid_frames(fc: int, n: int, body: bytes) -> None:
    pdu = bytes([fc, n]) + body
    assert _same(decode_response(pdu), _REF.decode(pdu))


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([3, 4]), st.lists(st.integers(0, 0xFFFF), max_size=125),
       st.sampled_from([0, 0, 1, -1, 2, -2]))
def test_decode_response_register_replies(fc: int, regs: list[int], skew: int) -> None:
    body = b"".join(r.to_bytes(2, "big") for r in regs)
    pdu = bytes([fc, max(0, min(255, 2 * len(regs) + skew))]) + body
    got = decode_response(pdu)
    assert _same(got, _REF.decode(pdu))
    if skew == 0:
        assert got is not None and list(got.registers) == regs


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=600))
def test_split_frames_on_any_bytes(buf: bytes) -> None:
    try:
        frames, used = split_frames(buf)
    except FrameError:
        return
    assert 0 <= used <= len(buf)
    assert used == sum(7 + len(p) for _, _, p in frames)
    assert all(1 <= len(p) <= 253 for _, _, p in frames)
    assert len(buf) - used < 7 or used + 6 + int.from_bytes(buf[used + 4:used + 6]) > len(buf)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=8))
def test_any_stream_into_the_protocol_never_raises(chunks: list[bytes]) -> None:
    c = LeanTcpClient("127.0.0.1", port=1)
    for chunk in chunks:
        c.feed(chunk)  # no request pending: every frame refused, none raises
    assert c.refused <= len(chunks) * 12
