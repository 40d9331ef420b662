"""An open-loop HTTP load generator for loopback servers: requests are sent on a fixed
schedule (``rate`` per second) whatever the answers do, and each latency runs from the
request's scheduled time, so a slow server cannot hide its queueing (no coordinated omission).
Bounded in count and time; it only ever talks to the URL it is given (a loopback server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    def summary(self) -> dict[str, object]:
        return {"sent": self.sent, "ok": self.ok, "errors": self.errors,
                "achieved_rps": round(self.sent / self.wall_s, 1) if self.wall_s else 0,
                "p50_ms": round(self.pct(0.50), 2), "p90_ms": round(self.pct(0.90), 2),
                "p99_ms": round(self.pct(0.99), 2),
                "max_ms": round(max(self.latencies_ms), 2) if self.latencies_ms else None}


async def run_load(base_url: str, paths: Sequence[str], *, rate: float, seconds: float,
                   headers: dict[str, str] | None = None, timeout_s: float = 10.0,
                   verify: bool | str = True) -> LoadResult:
    """Send ``rate * seconds`` GETs of ``paths`` (round robin) to ``base_url``."""
    if not base_url.startswith(("http://127.", "https://127.", "http://localhost",
                                "https://localhost")):
        raise ValueError("the load generator only targets loopback servers")
    total = int(rate * seconds)
    res = LoadResult()
    # aiohttp: a fraction of httpx's CPU per request, so the generator does not become the
    # bottleneck on a machine it shares with the server (measured: httpx cost 7 ms per request)
    conn = aiohttp.TCPConnector(limit=256, ssl=verify if isinstance(verify, bool) else None)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(base_url=base_url, headers=headers, connector=conn,
                                     timeout=timeout) as client:
        loop = asyncio.get_running_loop()
        t0 = loop.time()

        async def one(i: int) -> None:
            due = t0 + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                async with client.get(paths[i % len(paths)]) as r:
                    await r.read()
                    status = r.status
                lat = (loop.time() - due) * 1000
                res.latencies_ms.append(lat)
                if status == 200:
                    res.ok += 1
                else:
                    key = str(status)
                    res.errors[key] = res.errors.get(key, 0) + 1
            except (aiohttp.ClientError, TimeoutError) as e:
                key = type(e).__name__
                res.errors[key] = res.errors.get(key, 0) + 1
            res.sent += 1

        w0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(total)))
        res.wall_s = time.perf_counter() - w0
    return res
