"""The chain client's HTTP transport (`ledger_client._http`): one keep-alive connection, answers
bounded in size and in time, a clean connection after any failure. Real sockets: a raw asyncio
server in the test's loop plays the node."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from ledger_client._http import HttpTransportError, JsonRpcHttp

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _answer(body: bytes, *, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


async def _read_request(r: asyncio.StreamReader) -> bytes:
    head = await r.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return await r.readexactly(length)


class Node:
    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.mode = "ok"

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                body = await _read_request(r)
                self.requests += 1
                rid = json.loads(body)["id"]
                ok = json.dumps({"jsonrpc": "2.0", "id": rid, "result": "0x1"}).encode()
                if self.mode == "ok":
                    w.write(_answer(ok))
                elif self.mode == "close-after":
                    w.write(_answer(ok, extra=b"Connection: close\r\n"))
                    await w.drain()
                    return
                elif self.mode == "large":
                    w.write(_answer(b" " * 5000 + ok))
                elif self.mode == "trickle":  # a byte at a time, forever
                    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                    while True:
                        w.write(b" ")
                        await w.drain()
                        await asyncio.sleep(0.05)
                elif self.mode == "chunked":
                    w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                            + f"{len(ok):x}\r\n".encode() + ok + b"\r\n0\r\n\r\n")
                elif self.mode == "bad-chunk":
                    w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
                    await w.drain()
                    return
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()


@pytest.fixture
async def node() -> AsyncIterator[tuple[Node, str]]:
    n = Node()
    server = await asyncio.start_server(n.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield n, f"http://127.0.0.1:{port}/rpc"
    finally:
        server.close()


def _body(i: int) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": i, "method": "eth_chainId", "params": []}).encode()


async def test_requests_share_one_keep_alive_connection(node: tuple[Node, str]) -> None:
    n, url = node
    t = JsonRpcHttp(url, timeout_s=5, max_bytes=1 << 20)
    for i in range(5):
        status, _, data = await asyncio.to_thread(t.post, _body(i))
        assert status == 200 and json.loads(data)["id"] == i
    assert n.requests == 5 and n.connections == 1
    t.close()
    assert t._conn is None


async def test_a_node_that_closes_after_each_answer_gets_a_new_connection(
        node: tuple[Node, str]) -> None:
    n, url = node
    n.mode = "close-after"
    t = JsonRpcHttp(url, timeout_s=5, max_bytes=1 << 20)
    for i in range(3):
        assert (await asyncio.to_thread(t.post, _body(i)))[0] == 200
    assert n.requests == 3 and n.connections == 3
    t.close()


async def test_a_chunked_answer_is_read(node: tuple[Node, str]) -> None:
    n, url = node
    n.mode = "chunked"
    t = JsonRpcHttp(url, timeout_s=5, max_bytes=1 << 20)
    for i in range(2):
        assert json.loads((await asyncio.to_thread(t.post, _body(i)))[2])["id"] == i
    assert n.connections == 1
    t.close()


@pytest.mark.parametrize(("mode", "message"), [("large", "larger than 1000 bytes"),
                                               ("trickle", "timed out|within 0.5 s"),
                                               ("bad-chunk", "ValueError|IncompleteRead")])
async def test_a_bad_answer_fails_and_the_next_request_starts_clean(
        node: tuple[Node, str], mode: str, message: str) -> None:
    n, url = node
    n.mode = mode
    t = JsonRpcHttp(url, timeout_s=0.5, max_bytes=1000)
    with pytest.raises(HttpTransportError, match=message):
        await asyncio.to_thread(t.post, _body(1))
    n.mode = "ok"
    assert (await asyncio.to_thread(t.post, _body(2)))[0] == 200
    assert n.connections == 2  # the broken connection was not reused
    t.close()


async def test_nothing_listening_fails_fast() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    t = JsonRpcHttp(f"http://127.0.0.1:{port}", timeout_s=5, max_bytes=1000)
    with pytest.raises(HttpTransportError, match="ConnectionRefused"):
        await asyncio.to_thread(t.post, _body(1))


def test_only_http_urls() -> None:
    with pytest.raises(ValueError, match="not an http"):
        JsonRpcHttp("ftp://x", timeout_s=1, max_bytes=1)
