"""MQTT sensors (aiomqtt 2.5 over paho-mqtt 2): subscribe, map JSON payloads onto points.

* One persistent session per configured device: fixed client id, ``clean_session: false``,
  QoS 1 subscriptions, so the broker keeps the subscriptions and queues QoS 1 messages while the
  gateway is away.
* Reconnects with capped exponential backoff (a loop around ``async with client`` on
  `aiomqtt.MqttError`); the device state is ``ok`` while connected, ``failing`` while not.
* Acknowledgement point: paho's ``manual_ack`` is switched on, so a QoS 1 message is
  acknowledged (PUBACK) only after its readings are committed: when the sink is an
  acknowledging one (`drivers.Acknowledging`), from its ``on_commit`` callback; otherwise when
  the sink returns. PUBACKs go out in
  the order the messages came in. A message whose connection is gone before its readings are
  committed is not acknowledged; the broker sends it again on the next session (at least once:
  the duplicate carries the same payload and, with a timestamp field, the same time).
* Malformed payloads (too large, not UTF-8, nested too deep, not JSON, a missing or
  non-numeric field, a bad timestamp: the limits are in ``_payload``) are counted
  (``mqtt_malformed``) and logged (rate-limited), acknowledged, and skipped.
* Retained messages are skipped (``mqtt_retained_skipped``): they are a broker's copy of an old
  value, sent again on every subscribe, not a new acquisition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import aiomqtt

from drivers._polling import LogLimiter, PointInfo, StaleWatch
from drivers._source import AckSink, Quarantine, Sink, ack_sink_of
from drivers.mqtt._config import MqttDevice
from drivers.mqtt._paho import paho_client
from drivers.mqtt._payload import PayloadError, compile_points, readings_from
from mrv_core import Metrics, Reading, client_context, raise_if_cancelling

log = logging.getLogger("mrv.drivers.mqtt")

#: Dead letters kept for refused messages, per source: at once, then per second.
QUARANTINE_BURST = 60
QUARANTINE_PER_S = 1.0


class _Acks:
    """In-order PUBACKs for one connection: a message is acknowledged when it and every message
    received before it are done (MQTT 3.1.1 4.6: PUBACKs in the order of the PUBLISHes)."""

    def __init__(self, paho: Any) -> None:
        self.paho = paho
        self.alive = True
        self.slots: deque[list[Any]] = deque()  # [mid, qos, done]
        self.sent = 0

    def add(self, mid: int, qos: int) -> Callable[[], None]:
        slot: list[Any] = [mid, qos, False]
        self.slots.append(slot)

        def done() -> None:
            slot[2] = True
            self._flush()

        return done

    def _flush(self) -> None:
        while self.slots and self.slots[0][2]:
            mid, qos, _ = self.slots.popleft()
            if self.alive and qos > 0:
                self.paho.ack(mid, qos)
                self.sent += 1


class MqttSource:
    def __init__(self, dev: MqttDevice, sink: Sink, metrics: Metrics, *,
                 now_ns: Callable[[], int] = time.time_ns,
                 monotonic: Callable[[], float] = time.monotonic,
                 quarantine: Quarantine | None = None) -> None:
        self.dev = dev
        self.quarantine = quarantine
        self.monotonic = monotonic
        # dead letters kept for refused messages: a token bucket, so a flood of junk is counted
        # but cannot fill the outbox (QUARANTINE_BURST at once, QUARANTINE_PER_S after that)
        self._keep_tokens = float(QUARANTINE_BURST)
        self._keep_refill = monotonic()
        self.now_ns = now_ns  # a reading without its own timestamp gets the arrival time
        self.name = dev.name
        self.sink = sink
        self.metrics = metrics
        self.source = f"mqtt:{dev.name}"
        self.component = f"device:{dev.name}"
        self.mappings = compile_points(dev.points)
        self.filters = list(dict.fromkeys(p.topic for p in dev.points))
        #: an acknowledging sink (`Acknowledging`): PUBACK once the readings are committed
        self.ack_sink: AckSink | None = ack_sink_of(sink)
        self.noise = LogLimiter(log)
        self.watch = (StaleWatch([PointInfo(p.id, p.unit) for p in dev.points], dev.stale_after_s,
                                 self.source, sink, metrics, now_ns=now_ns)
                      if dev.stale_after_s else None)
        self.connects = 0
        self.messages = 0
        self.readings = 0
        self.acks: _Acks | None = None
        self.paused = False

    def pause(self) -> None:
        """Take no more messages (they stay unacknowledged: the broker keeps them), but stay
        connected, so the PUBACKs of what was handed over still go out as it is committed.
        The daemon's graceful stop calls this, drains the outbox writer, then cancels."""
        self.paused = True

    def _client(self) -> aiomqtt.Client:
        d = self.dev
        client = aiomqtt.Client(
            d.host, d.port, identifier=d.client_id, clean_session=d.clean_session,
            username=d.username, password=d.password, keepalive=d.keepalive_s, timeout=10,
            tls_context=client_context(d.tls) if d.tls is not None else None,
            logger=logging.getLogger("mrv.drivers.mqtt.paho"))
        if d.qos > 0:
            # Acknowledge after commit, not on arrival. aiomqtt 2.5 has no API for it; the paho
            # client it wraps does (Client.manual_ack_set / Client.ack).
            paho_client(client).manual_ack_set(True)
        return client

    async def run(self) -> None:
        client = self._client()
        backoff = self.dev.backoff_initial_s
        watch = (asyncio.create_task(self.watch.run(), name=f"{self.name}:stale")
                 if self.watch is not None else None)
        try:
            while True:
                raise_if_cancelling()
                try:
                    async with client:
                        self.connects += 1
                        acks = self.acks = _Acks(paho_client(client))
                        try:
                            await client.subscribe([(f, int(self.dev.qos)) for f in self.filters])
                            if self.metrics.set_state(self.component, "ok"):
                                log.info("%s: subscribed to %s on %s:%d", self.name,
                                         ", ".join(self.filters), self.dev.host, self.dev.port)
                            backoff = self.dev.backoff_initial_s
                            async for msg in client.messages:
                                await self._handle(msg, acks)
                        except asyncio.CancelledError:
                            if self.paused:
                                await self._settle(client)
                            raise
                        finally:
                            acks.alive = False
                except aiomqtt.MqttError as e:
                    self.metrics.inc("mqtt_disconnects")
                    if self.metrics.set_state(self.component, "failing", str(e)):
                        log.warning("%s: broker %s:%d: %s; reconnecting with backoff (logged "
                                    "once until it recovers)", self.name, self.dev.host,
                                    self.dev.port, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.dev.backoff_max_s)
        finally:
            if watch is not None:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch

    async def _settle(self, client: aiomqtt.Client) -> None:
        """Before a graceful stop disconnects: make sure the broker has read our PUBACKs. The
        broker handles a connection's packets in order, so its SUBACK to the same subscription
        again (which changes nothing) follows them. Without it, closing a socket that still has
        unread messages sends a TCP reset, and the broker may drop the PUBACKs it had not read
        yet, then send those messages again on the next start."""
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            await client.subscribe([(f, int(self.dev.qos)) for f in self.filters], timeout=2)

    async def _handle(self, msg: aiomqtt.Message, acks: _Acks) -> None:
        if self.paused:  # stopping: not taken, not acknowledged; the broker sends it again
            return
        self.messages += 1
        self.metrics.inc("mqtt_messages")
        ack = acks.add(msg.mid, msg.qos)
        if msg.retain:
            self.metrics.inc("mqtt_retained_skipped")
            ack()
            return
        payload = msg.payload
        if isinstance(payload, str):
            payload = payload.encode()
        elif not isinstance(payload, bytes | bytearray):
            payload = str(payload).encode()
        topic = msg.topic.value
        try:
            readings, problems = readings_from(topic, bytes(payload), self.mappings,
                                               source=self.source, now_ns=self.now_ns(),
                                               max_bytes=self.dev.max_payload_bytes)
        except PayloadError as e:
            readings, problems = [], [str(e)]
        except Exception as e:  # a payload must never stop the subscriber
            readings, problems = [], [f"{topic}: unusable payload ({type(e).__name__}: {e})"]
        if problems:
            self.metrics.inc("mqtt_malformed", len(problems))
            self.noise.warning("malformed", "%s: malformed message skipped: %s", self.name,
                               problems[0])
            await self._keep(topic, "; ".join(problems)[:1000], bytes(payload))
        if not readings:
            ack()
            return
        if self.watch is not None:
            for r in readings:
                self.watch.seen(r.point_id)
        self.readings += len(readings)
        await self._deliver(readings, ack)

    async def _keep(self, topic: str, reason: str, raw: bytes) -> None:
        """Quarantine a refused message with its raw bytes (the outbox bounds them), within
        the budget; beyond it, or when it cannot be stored, the refusal is only counted. The
        message is acknowledged either way: it would be refused again."""
        if self.quarantine is None:
            return
        now = self.monotonic()
        self._keep_tokens = min(float(QUARANTINE_BURST),
                                self._keep_tokens + (now - self._keep_refill) * QUARANTINE_PER_S)
        self._keep_refill = now
        if self._keep_tokens < 1.0:
            self.metrics.inc("mqtt_malformed_not_kept")
            return
        self._keep_tokens -= 1.0
        try:
            await self.quarantine(self.source, topic, reason, raw)
        except Exception as e:  # the outbox cannot store it now: counted, logged, not retried
            self.metrics.inc("mqtt_malformed_not_kept")
            self.noise.warning("keep", "%s: a refused message could not be kept as a dead"
                               " letter: %s", self.name, e)

    async def _deliver(self, readings: list[Reading], ack: Callable[[], None]) -> None:
        if self.ack_sink is not None:
            await self.ack_sink(readings, on_commit=ack)
        else:
            await self.sink(readings)
            ack()
