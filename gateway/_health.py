"""A tiny HTTP endpoint for supervisors and monitoring, on loopback by default.

GET /health  -> JSON: component states, counters, outbox figures. ``status``: "alarm" (HTTP 503)
                when any component is in alarm, else "degraded" (HTTP 200) when any is degraded
                (e.g. dead letters no operator has reviewed), else "ok" (HTTP 200).
                docs/outbox.md lists every field.
GET /metrics -> the counters in Prometheus text format
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Protocol

from mrv_core import Metrics

log = logging.getLogger("mrv.health")
#: Longest request line read (bytes); a longer one is answered 400 and counted.
REQUEST_LINE_MAX = 8192


class _HasStats(Protocol):
    async def stats(self) -> object: ...


def prometheus_text(metrics: Metrics) -> str:
    lines = []
    for name, value in sorted(metrics.counters.items()):
        lines.append(f"# TYPE mrv_{name} counter")
        lines.append(f"mrv_{name}_total {value}")
    for name, level in sorted(metrics.gauges.items()):
        lines.append(f"# TYPE mrv_{name} gauge")
        lines.append(f"mrv_{name} {level:g}")
    for comp, st in sorted(metrics.components.items()):
        up = 1 if st.state == "ok" else 0
        lines.append(f'mrv_component_up{{component="{comp}"}} {up}')
    return "\n".join(lines) + "\n"


async def health_body(metrics: Metrics, outbox: _HasStats) -> tuple[int, dict[str, object]]:
    snap = metrics.snapshot()
    st = await outbox.stats()
    snap["outbox"] = {k: getattr(st, k) for k in getattr(st, "__slots__", ())}
    dl = metrics.components.get("dead_letters")
    if dl is not None and dl.state == "degraded" and getattr(st, "dead_letters_unreviewed", 1) == 0:
        metrics.set_state("dead_letters", "ok", "every dead letter has been reviewed")
    alarm = any(c.state == "alarm" for c in metrics.components.values())
    degraded = sorted(k for k, c in metrics.components.items() if c.state == "degraded")
    snap["status"] = "alarm" if alarm else "degraded" if degraded else "ok"
    snap["degraded"] = degraded
    return (503 if alarm else 200), snap


async def serve_health(listen: str, metrics: Metrics, outbox: _HasStats) -> None:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(5):
                    request = await reader.readline()
            except ValueError:  # a request line longer than the reader's limit (8 KiB)
                metrics.inc("health_bad_requests")
                request = b""
                path = ""
            else:
                parts = request.decode("latin-1").split()
                path = parts[1] if len(parts) >= 2 else "/"
            if not request:
                code, body, ctype = 400, "bad request\n", "text/plain"
            elif path == "/metrics":
                code, body, ctype = 200, prometheus_text(metrics), "text/plain; version=0.0.4"
            elif path == "/health":
                code, data = await health_body(metrics, outbox)
                body, ctype = json.dumps(data, indent=1), "application/json"
            else:
                code, body, ctype = 404, "not found\n", "text/plain"
            payload = body.encode()
            reason = {200: "OK", 400: "Bad Request", 404: "Not Found",
                      503: "Service Unavailable"}[code]
            writer.write(
                f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, int(port), limit=REQUEST_LINE_MAX)
    log.info("health endpoint on http://%s/health", listen)
    async with server:
        await server.serve_forever()
