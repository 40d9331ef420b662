"""Delivery of built batches to the portal: the off-chain half of each batch (its records, the
header, the batch signature and the record signatures) over HTTPS, exactly once per batch.

The outbox's ``deliveries`` table (schema 3) holds the portal's final answer per batch seq.
The loop takes the oldest batch without one, POSTs it as ``mrv-batch/v1`` (docs/portal.md,
"Ingest") and records the answer *after* it has it, so a crash between the two re-sends the
same bytes; the portal answers a replay ``200``. So the gateway delivers at least once and the
portal stores at most once: exactly once per ``(gateway, batch seq)``.

- ``2xx``: delivered;
- ``409`` (another header for that seq) and ``422`` (refused): delivered but refused, recorded
  with the portal's detail, counted and logged once, never retried;
- anything else (the portal down, ``404`` while its index has not seen the gateway yet, ``413``,
  ``5xx``, a timeout, TLS failure): retried, oldest batch first, with capped backoff.

It runs as its own supervised task: acquisition and anchoring never wait for it, and its
backlog is only what the outbox holds anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ledger_client._format import BatchHeader
from ledger_client._outbox import DELIVERED, REFUSED, UNAVAILABLE, Outbox
from ledger_client._verify import batch_to_json, record_to_json
from mrv_core import Metrics, Record, failpoint, raise_if_cancelling

if TYPE_CHECKING:  # imported when a delivery starts: a gateway without a portal never loads it
    import httpx

log = logging.getLogger("mrv.delivery")

FORMAT = "mrv-batch/v1"
#: The portal's ingest endpoint, below its base URL.
INGEST_PATH = "/v1/ingest/batches"
#: The portal's default request-size limit (``api.max_body_bytes``): a submission is never
#: larger (docs/portal.md, "Large batches").
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
#: Most records in one submission (the portal refuses more): a gateway that delivers to a
#: portal cuts batches of at most this many records (``batching.max_records``, checked by the
#: config). 20,000 readings are about 4 MB of JSON (7 MB with record signatures).
MAX_SUBMISSION_RECORDS = 20_000
#: Answers that mean "the portal has it and will never take it": recorded, never retried.
REFUSED_STATUSES = (409, 422)


def submission_json(header: BatchHeader, signature: bytes,
                    records: Sequence[tuple[Record, bytes | None]]) -> dict[str, Any]:
    """The ``mrv-batch/v1`` submission of one batch: the proof bundle's ``batch`` object and
    its ``record`` objects, each with ``record_signature`` when it was signed."""
    out: list[dict[str, object]] = []
    for r, sig in records:
        d = record_to_json(r)
        if sig is not None:
            d["record_signature"] = "0x" + sig.hex()
        out.append(d)
    return {"format": FORMAT, "gateway_id": header.gateway_id,
            "batch": batch_to_json(header, signature), "records": out}


def submission_bytes(header: BatchHeader, signature: bytes,
                     records: Sequence[tuple[Record, bytes | None]]) -> bytes:
    """`submission_json` as compact UTF-8 JSON (no NaN: a missing value is ``null``)."""
    return json.dumps(submission_json(header, signature, records), separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False).encode()


def _answer_detail(r: httpx.Response) -> str:
    """The portal's problem detail (title: detail), or the start of its body."""
    try:
        d = r.json()
        if isinstance(d, dict):
            return f"{r.status_code} {d.get('title', '')}: {d.get('detail', '')}"[:1000]
    except ValueError:
        pass
    return f"{r.status_code}: {r.text[:500]}"


class Delivery:
    """Pushes every batch of ``outbox`` to the portal at ``url`` (its base URL)."""

    def __init__(
        self,
        outbox: Outbox,
        url: str,
        *,
        metrics: Metrics,
        verify: ssl.SSLContext | bool = True,
        timeout_s: float = 30.0,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 60.0,
        idle_poll_s: float = 5.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        wake: asyncio.Event | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.outbox = outbox
        self.endpoint = url.rstrip("/") + INGEST_PATH
        self.metrics = metrics
        self.verify = verify
        self.timeout_s = timeout_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.idle_poll_s = idle_poll_s
        self.max_body_bytes = max_body_bytes
        self.wake = wake or asyncio.Event()
        self.transport = transport

    def client(self) -> httpx.AsyncClient:
        import httpx

        return httpx.AsyncClient(verify=self.verify, timeout=self.timeout_s,
                                 transport=self.transport, follow_redirects=False,
                                 headers={"content-type": "application/json"})

    async def run(self) -> None:
        """Deliver forever: the oldest undelivered batch first; back off while the portal
        cannot take it."""
        import httpx

        delay = self.retry_initial_s
        async with self.client() as client:
            await self.update_backlog()
            while True:
                raise_if_cancelling()
                try:
                    progressed = await self.step(client)
                except (httpx.HTTPError, ssl.SSLError, OSError, _Retry) as e:
                    self.metrics.inc("delivery_failures")
                    if self.metrics.set_state("delivery", "failing", str(e)[:300]):
                        log.warning("portal unavailable, batches wait in the outbox: %s", e)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.retry_max_s)
                    continue
                if self.metrics.set_state("delivery", "ok", f"delivering to {self.endpoint}"):
                    log.info("portal reachable, delivering batches to %s", self.endpoint)
                delay = self.retry_initial_s
                if not progressed:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.idle_poll_s):
                            await self.wake.wait()
                    self.wake.clear()

    async def update_backlog(self) -> int:
        st = await self.outbox.delivery_stats()
        self.metrics.set_gauge("delivery_backlog", st.backlog)
        return st.backlog

    async def step(self, client: httpx.AsyncClient) -> bool:
        """Deliver the oldest batch the portal has not answered; False when there is none.
        Raises on an answer or a failure that means "try again later"."""
        seqs = await self.outbox.undelivered(1)
        backlog = await self.update_backlog()  # before the POST: right while it fails too
        if not seqs:
            return False
        await self.deliver(client, seqs[0])
        self.metrics.set_gauge("delivery_backlog", max(0, backlog - 1))
        return True

    async def deliver(self, client: httpx.AsyncClient, seq: int) -> str:
        """POST batch ``seq`` and record the final answer; returns the status recorded."""
        b = await self.outbox.batch(seq)
        if b is None:
            raise ValueError(f"batch {seq} is not in the outbox")
        h = b.header
        records = await self.outbox.records_signed(h.first_record_seq, h.last_record_seq)
        if len(records) != h.count:  # pruned before it was delivered (or the archive has them)
            why = (f"batch {seq}: {len(records)} of its {h.count} records are in the outbox "
                   "(pruned before delivery): it cannot be sent")
            return await self._final(seq, UNAVAILABLE, why)
        body = submission_bytes(h, b.signature, records)
        if len(body) > self.max_body_bytes:
            why = (f"batch {seq}: its submission has {len(body):,} bytes, more than the "
                   f"portal's limit of {self.max_body_bytes:,} (portal.max_body_bytes)")
            return await self._final(seq, UNAVAILABLE, why)
        r = await client.post(self.endpoint, content=body)
        failpoint("delivery.after_post")
        if 200 <= r.status_code < 300:
            return await self._final(seq, DELIVERED, None, records=h.count)
        if r.status_code in REFUSED_STATUSES:
            return await self._final(seq, REFUSED, _answer_detail(r))
        raise _Retry(f"batch {seq}: the portal answered {_answer_detail(r)}")

    async def _final(self, seq: int, status: str, detail: str | None, records: int = 0) -> str:
        if not await self.outbox.mark_delivered(seq, status, detail):
            return status  # recorded already (never expected: one delivery task per outbox)
        if status == DELIVERED:
            self.metrics.inc("batches_delivered")
            self.metrics.inc("records_delivered", records)
            log.info("batch %d delivered to the portal (%d records)", seq, records)
        elif status == REFUSED:
            self.metrics.inc("batches_refused")
            log.error("batch %d refused by the portal (not retried): %s", seq, detail)
        else:
            self.metrics.inc("batches_undeliverable")
            log.error("%s", detail)
        return status


class _Retry(Exception):
    """The portal answered "not now" (anything but 2xx, 409, 422)."""
