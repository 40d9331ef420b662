"""Simulated MQTT sensors: JSON telemetry published with QoS 1 at a fixed rate.

Each `SimSensor` publishes ``{"ts": <epoch ms>, "data": {<field>: <value>, ...}}`` on its topic.
With ``malformed_every=N`` every N-th message is broken instead (alternately: not JSON, a field
that is a string of letters, the value field missing). The group reconnects when the broker goes
away and counts what it could publish.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field

import aiomqtt

from mrv_core import cancel_and_wait


@dataclass
class SimSensor:
    topic: str
    fields: dict[str, tuple[float, float]]  # name -> (base, noise)


@dataclass
class MqttSensorGroup:
    host: str
    port: int
    sensors: list[SimSensor]
    interval_s: float = 0.2
    client_id: str = "sim-sensors"
    malformed_every: int = 0
    seed: int = 9
    published: int = 0
    malformed_sent: int = 0
    failures: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)
    malformed_per_topic: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._task: asyncio.Task[None] | None = None
        self._n = 0

    async def start(self) -> MqttSensorGroup:
        self._task = asyncio.create_task(self._run(), name=f"mqtt-sensors:{self.client_id}")
        return self

    async def stop(self) -> None:
        if self._task is not None:  # re-cancelled if aiomqtt's wait_for loses the cancel
            await cancel_and_wait([self._task])
        self._task = None

    def payload(self, s: SimSensor) -> tuple[bytes, bool]:
        self._n += 1
        data = {k: round(base + self.rng.gauss(0, noise), 4) for k, (base, noise) in s.fields.items()}
        doc = {"ts": time.time_ns() // 1_000_000, "data": data}
        if self.malformed_every and self._n % self.malformed_every == 0:
            kind = (self._n // self.malformed_every) % 3
            if kind == 0:
                return b'{"ts": 1, "data": {', True
            if kind == 1:
                doc["data"] = {k: "n/a" for k in data}
            else:
                doc["data"] = {}
            return json.dumps(doc).encode(), True
        return json.dumps(doc).encode(), False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with aiomqtt.Client(self.host, self.port, identifier=self.client_id,
                                          timeout=5) as client:
                    # reads the broker's error when the connection goes (else aiomqtt leaves it
                    # unread, and asyncio logs it when the group is stopped before a publish)
                    lost = asyncio.create_task(_until_disconnected(client))
                    try:
                        next_t = loop.time()
                        while not lost.done():
                            for s in self.sensors:
                                body, bad = self.payload(s)
                                await client.publish(s.topic, body, qos=1)
                                self.published += 1
                                self.malformed_sent += bad
                                self.per_topic[s.topic] = self.per_topic.get(s.topic, 0) + 1
                                if bad:
                                    self.malformed_per_topic[s.topic] = (
                                        self.malformed_per_topic.get(s.topic, 0) + 1)
                            next_t += self.interval_s
                            await asyncio.wait([lost], timeout=max(0.0, next_t - loop.time()))
                        lost.result()  # raises the lost connection's error
                    finally:
                        lost.cancel()
                        await asyncio.gather(lost, return_exceptions=True)  # its error read
            except aiomqtt.MqttError:
                self.failures += 1
                await asyncio.sleep(0.2)


async def _until_disconnected(client: aiomqtt.Client) -> None:
    """Raise `aiomqtt.MqttError` when ``client``'s connection is lost (the group subscribes to
    nothing, so no message comes)."""
    async for _ in client.messages:
        pass
