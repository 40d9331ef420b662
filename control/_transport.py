"""MQTT transport of the control service (task ``control:mqtt``): two broker sessions.

* The **command session** (client id ``broker.client_id``, default ``mrv-<gw>-control``,
  persistent) subscribes to the command topic and publishes acks and alarms. Incoming
  payloads go to the ``admit`` callback (synchronous, bounded: admission decides there).
  Outgoing messages wait in a bounded queue (oldest dropped and counted beyond 10,000).
* The **telemetry session** (client id ``<command client id>-telemetry``, clean) publishes
  live telemetry only, from its own queue, bounded in readings (``telemetry.queue``). It is
  not opened when telemetry is off.

Two sessions so that an ack never waits behind telemetry: on one connection a command's ack
queued behind up to a commit's worth of telemetry messages (at 2,000 devices ~9 MB/s, in
messages of ~75 KB), in the gateway's socket and in the broker's reading of it (design 008,
"Fourth round"). Each session reconnects on its own with exponential backoff; ``ready`` is set
while the command session is subscribed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable

import aiomqtt

from control._config import ControlConfig
from control._envelope import Ack
from control._telemetry import telemetry_chunks, telemetry_json
from mrv_core import Metrics, Reading, client_context, raise_if_cancelling

log = logging.getLogger("mrv.control")

Sign = Callable[[bytes], bytes]
#: Commands and acks are small: send them at once (Nagle plus delayed ACKs adds ~40 ms a hop).
#: The broker needs the same (Mosquitto: ``set_tcp_nodelay true``).
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
MAX_OUTGOING = 10_000


class MqttTransport:
    def __init__(self, *, gateway_id: str, config: ControlConfig, metrics: Metrics,
                 admit: Callable[[bytes], None], sign: Sign | None = None,
                 before_connect: Callable[[], Awaitable[object]] | None = None) -> None:
        self.gw = gateway_id
        self.cfg = config
        self.metrics = metrics
        self.admit = admit
        self.sign = sign
        self.before_connect = before_connect
        self.t_cmd = config.topic(gateway_id, "cmd")
        self.t_ack = config.topic(gateway_id, "ack")
        self.t_telemetry = config.topic(gateway_id, "telemetry")
        self.t_alarm = config.topic(gateway_id, "alarm")
        self._outgoing: deque[tuple[str, bytes, int, bool]] = deque()
        self._telemetry: deque[tuple[list[Reading], list[bytes] | None]] = deque()
        self._telemetry_n = 0
        self._wake = asyncio.Event()  # acks or alarms to send
        self._telemetry_wake = asyncio.Event()
        self.ready = asyncio.Event()  # set while subscribed to the command topic

    # -- outgoing (never blocks) ----------------------------------------------------------

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        if len(self._outgoing) >= MAX_OUTGOING:
            self._outgoing.popleft()
            self.metrics.inc("control_outgoing_dropped")
        self._outgoing.append((topic, payload, qos, retain))
        self._wake.set()

    def send_ack(self, ack: Ack) -> None:
        self.publish(self.t_ack, ack.to_bytes(self.sign), qos=1)
        self.metrics.inc(f"control_ack_{ack.status}")
        if ack.reason:
            self.metrics.inc("control_rejected_" + ack.reason.replace("-", "_"))

    def alarm(self, payload: bytes) -> None:
        self.publish(self.t_alarm, payload, qos=1, retain=True)

    def telemetry(self, chunk: list[Reading], signatures: list[bytes] | None) -> None:
        """Queue committed readings for live telemetry; beyond the queue's size they are
        dropped and counted."""
        if self._telemetry_n + len(chunk) > self.cfg.telemetry.queue:
            self.metrics.inc("control_telemetry_dropped", len(chunk))
            return
        self._telemetry.append((chunk, signatures))
        self._telemetry_n += len(chunk)
        self._telemetry_wake.set()

    # -- the sessions ---------------------------------------------------------------------

    async def run(self) -> None:
        if self.before_connect is not None:
            await self.before_connect()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._session("control:mqtt", self._commands), name="control:commands")
            if self.cfg.telemetry.enabled:
                tg.create_task(self._session("control:telemetry", self._telemetry_session),
                               name="control:telemetry")

    def _client(self, telemetry: bool) -> aiomqtt.Client:
        b = self.cfg.broker
        ident = b.client_id or f"mrv-{self.gw}-control"
        return aiomqtt.Client(
            b.host, b.port, username=b.username, password=b.password,
            identifier=f"{ident}-telemetry" if telemetry else ident,
            clean_session=telemetry,  # commands need the persistent session, telemetry not
            keepalive=b.keepalive_s, timeout=b.connect_timeout_s,
            tls_context=client_context(b.tls) if b.tls is not None else None,
            socket_options=NODELAY)

    async def _session(self, component: str,
                       body: Callable[[Callable[[], None]], Awaitable[None]]) -> None:
        """Run ``body`` (one connection's life, which calls its argument once connected) again
        and again, with exponential backoff from the last connection; ``component``'s state
        says whether the session is up."""
        b = self.cfg.broker
        delay = b.reconnect_initial_s

        def connected() -> None:
            nonlocal delay
            delay = b.reconnect_initial_s

        while True:
            raise_if_cancelling()
            try:
                await body(connected)
            except aiomqtt.MqttError as e:
                self.metrics.inc("control_mqtt_failures")
                if self.metrics.set_state(component, "failing", str(e)):
                    log.warning("control: broker %s:%d (%s): %s (logged once until it recovers)",
                                b.host, b.port, component, e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, b.reconnect_max_s)

    async def _commands(self, connected: Callable[[], None]) -> None:
        b = self.cfg.broker
        try:
            async with self._client(telemetry=False) as client:
                await client.subscribe(self.t_cmd, qos=1)
                if self.metrics.set_state("control:mqtt", "ok"):
                    log.info("control: subscribed to %s on %s:%d", self.t_cmd, b.host, b.port)
                connected()
                self.ready.set()
                pub = asyncio.create_task(self._publisher(client), name="control:publisher")
                recv = asyncio.create_task(self._receiver(client), name="control:receiver")
                await _first_of(pub, recv)
        finally:
            self.ready.clear()

    async def _telemetry_session(self, connected: Callable[[], None]) -> None:
        b = self.cfg.broker
        async with self._client(telemetry=True) as client:
            if self.metrics.set_state("control:telemetry", "ok"):
                log.info("control: publishing telemetry to %s on %s:%d", self.t_telemetry,
                         b.host, b.port)
            connected()
            pub = asyncio.create_task(self._telemetry_publisher(client),
                                      name="control:telemetry-publisher")
            lost = asyncio.create_task(_until_disconnected(client),
                                       name="control:telemetry-connection")
            await _first_of(pub, lost)

    async def _receiver(self, client: aiomqtt.Client) -> None:
        async for msg in client.messages:
            payload = msg.payload
            if isinstance(payload, bytes | bytearray):
                data = bytes(payload)
            elif payload is None:
                data = b""
            else:
                data = str(payload).encode()
            try:
                self.admit(data)
            except Exception:  # a bug: the receiver goes on with the next message
                self.metrics.inc("control_internal_errors")
                log.exception("control: admitting a command payload failed")

    async def _publisher(self, client: aiomqtt.Client) -> None:
        """Acks and alarms, in order, each confirmed by the broker before the next."""
        while True:
            self._wake.clear()
            while self._outgoing:
                topic, payload, qos, retain = self._outgoing[0]
                await client.publish(topic, payload, qos=qos, retain=retain)
                self._outgoing.popleft()
            await self._wake.wait()

    async def _telemetry_publisher(self, client: aiomqtt.Client) -> None:
        maxn = self.cfg.telemetry.max_per_message
        while True:
            self._telemetry_wake.clear()
            while self._telemetry:
                chunk, sigs = self._telemetry.popleft()
                self._telemetry_n -= len(chunk)
                for part, part_sigs in telemetry_chunks(chunk, sigs, maxn):
                    await client.publish(self.t_telemetry, telemetry_json(self.gw, part, part_sigs),
                                         qos=0)
                    self.metrics.inc("control_telemetry_messages")
                    # a publish the socket takes at once does not suspend: without this, a
                    # commit's messages (~0.5 ms each at 500 readings) went out in one turn
                    await asyncio.sleep(0)
            await self._telemetry_wake.wait()


async def _until_disconnected(client: aiomqtt.Client) -> None:
    """Raise `aiomqtt.MqttError` when ``client``'s connection is lost. The telemetry session
    subscribes to nothing, so no message comes; without this it would notice a lost connection
    only at its next publish (that message lost, the broker's error never read)."""
    async for _ in client.messages:
        pass


async def _first_of(*tasks: asyncio.Task[None]) -> None:
    """Wait until one of ``tasks`` ends, cancel the others, raise what the first raised; a
    task that returns ends the connection too (`aiomqtt.MqttError`)."""
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in done:
        t.result()
    raise aiomqtt.MqttError("connection loop ended")
