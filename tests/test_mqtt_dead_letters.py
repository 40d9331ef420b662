"""A message the MQTT source refuses is kept as a dead letter with its raw bytes, within a
budget per source (a flood of junk is counted, it cannot fill the outbox), and acknowledged."""

from __future__ import annotations

import asyncio

import aiomqtt

from drivers.mqtt._source import QUARANTINE_BURST, QUARANTINE_PER_S, MqttSource
from mrv_core._metrics import Metrics
from simulator import Mosquitto
from tests.support import Collector, until
from tests.test_drivers_mqtt import mqtt_device


class Kept:
    def __init__(self, fail: bool = False) -> None:
        self.items: list[tuple[str, str, str, bytes]] = []
        self.fail = fail

    async def __call__(self, source: str, where: str, reason: str, raw: bytes) -> None:
        if self.fail:
            raise OSError("disk full")
        self.items.append((source, where, reason, raw))


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


async def test_refused_messages_are_kept_within_the_budget() -> None:
    kept, clock, m = Kept(), Clock(), Metrics()
    src = MqttSource(mqtt_device(1883), Collector(), m, quarantine=kept, monotonic=clock)
    for i in range(QUARANTINE_BURST + 5):
        await src._keep("plant/x/cems", f"bad {i}", b"[" * i)
    assert len(kept.items) == QUARANTINE_BURST
    assert kept.items[3] == ("mqtt:stack-sensors", "plant/x/cems", "bad 3", b"[[[")
    assert m.counters["mqtt_malformed_not_kept"] == 5
    clock.t += 2 / QUARANTINE_PER_S  # the budget refills: two more are kept
    for i in range(3):
        await src._keep("plant/x/cems", f"later {i}", b"x")
    assert [k[2] for k in kept.items[QUARANTINE_BURST:]] == ["later 0", "later 1"]
    assert m.counters["mqtt_malformed_not_kept"] == 6


async def test_a_dead_letter_that_cannot_be_stored_is_counted_not_raised() -> None:
    m = Metrics()
    src = MqttSource(mqtt_device(1883), Collector(), m, quarantine=Kept(fail=True))
    await src._keep("plant/x/cems", "bad", b"{")
    assert m.counters["mqtt_malformed_not_kept"] == 1


async def test_a_refused_message_through_the_broker_is_kept_and_acknowledged(
        mosquitto: Mosquitto) -> None:
    kept, sink, m = Kept(), Collector(), Metrics()
    src = MqttSource(mqtt_device(mosquitto.port), sink, m, quarantine=kept)
    task = asyncio.create_task(src.run())
    try:
        await until(lambda: m.component("device:stack-sensors").state == "ok")
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="pub-junk") as c:
            await c.publish("plant/boiler/temp", b"[" * 60_000, qos=1)
            await c.publish("plant/boiler/temp", b'{"data": {"t": 181.5}}', qos=1)
        await until(lambda: len(sink.of("boiler.t")) == 1 and len(kept.items) == 1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    source, where, reason, raw = kept.items[0]
    assert (source, where, raw) == ("mqtt:stack-sensors", "plant/boiler/temp", b"[" * 60_000)
    assert "nested" in reason
    assert m.counters["mqtt_malformed"] == 1


async def test_without_a_quarantine_nothing_is_kept_or_counted_as_lost() -> None:
    m = Metrics()
    src = MqttSource(mqtt_device(1883), Collector(), m)
    await src._keep("plant/x/cems", "bad", b"{")
    assert m.counters["mqtt_malformed_not_kept"] == 0
