"""The health endpoint: a request line beyond its limit is answered 400 and counted; the
endpoint goes on serving."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway._health import REQUEST_LINE_MAX, serve_health
from ledger_client import Outbox
from mrv_core._metrics import Metrics
from simulator import free_port


async def _request(port: int, line: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(line)
    await writer.drain()
    try:
        return await reader.read()
    finally:
        writer.close()


async def test_an_oversized_request_line_is_a_counted_400(tmp_path: Path) -> None:
    ob = await Outbox.open(tmp_path / "o.sqlite", "gw")
    m = Metrics()
    port = free_port()
    server = asyncio.create_task(serve_health(f"127.0.0.1:{port}", m, ob))
    try:
        async def listening() -> None:
            while True:
                try:
                    await _request(port, b"GET /metrics HTTP/1.1\r\n\r\n")
                    return
                except OSError:
                    await asyncio.sleep(0.02)

        await asyncio.wait_for(listening(), 10)
        reply = await _request(port, b"GET /" + b"a" * (REQUEST_LINE_MAX * 8) + b" HTTP/1.1\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 400 Bad Request")
        assert m.counters["health_bad_requests"] == 1
        ok = await _request(port, b"GET /health HTTP/1.1\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 OK") and b'"status": "ok"' in ok
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        await ob.close()
