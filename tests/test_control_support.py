"""Helpers for the control tests: keys, a control config for the simulated PLC, command
builders, and a harness running the service against real Mosquitto and the actuator plant."""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt

from control._clock import SYSTEM_CLOCK, Clock
from control._config import ControlConfig
from control._envelope import Command, approve_command, public_key_of, sign_command
from control._service import ControlService
from ledger_client import Outbox
from mrv_core._metrics import Metrics
from simulator import ActuatorModel, ActuatorPlant

GW = "plant-a-gw1"
EPB = bytes([1]) * 32  # environmental protection bureau: vent and damper
AUDITOR = bytes([2]) * 32  # second person for two-person points: every point
MALLORY = bytes([3]) * 32  # not configured
GATEWAY_SEED = bytes([9]) * 32


def pk(seed: bytes) -> str:
    return "0x" + public_key_of(seed).hex()


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def control_dict(actuator_port: int, broker_port: int, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "broker": {"host": "127.0.0.1", "port": broker_port, "reconnect_initial_s": 0.1,
                   "reconnect_max_s": 0.5},
        "topic_prefix": "mrv",
        "clock_skew_s": 2,
        "max_lifetime_s": 600,
        "issuers": [
            {"key_id": "epb", "public_key": pk(EPB),
             "points": ["vent.opening", "burner.air_damper"]},
            {"key_id": "auditor", "public_key": pk(AUDITOR), "points": ["*"]},
        ],
        "devices": [{"id": "boiler-room-plc", "host": "127.0.0.1", "port": actuator_port,
                     "unit_id": 1, "timeout_s": 1.0,
                     "heartbeat": {"address": 4, "interval_s": 0.2}}],
        "signals": [{"id": "plc.leak_alarm", "device": "boiler-room-plc", "table": "input",
                     "address": 4, "type": "uint16"}],
        "points": [
            {"id": "vent.opening", "device": "boiler-room-plc", "address": 0, "type": "uint16",
             "scale": 0.1, "unit": "%", "min": 0, "max": 100, "max_step": 50,
             "rate_limit": {"max_writes": 20, "window_s": 60},
             "permissives": [{"signal": "plc.leak_alarm", "equals": 0, "when": "decrease",
                              "description": "no closing the vent while the PLC sees gas"}]},
            {"id": "burner.air_damper", "device": "boiler-room-plc", "address": 2,
             "type": "float32", "word_order": "CDAB", "unit": "%", "min": 20, "max": 80,
             "max_step": 10, "rate_limit": {"max_writes": 20, "window_s": 60},
             "two_person": True},
        ],
    }
    return deep_merge(base, extra)


def make_command(value: str, *, point: str = "vent.opening", unit: str = "%",
                 issuer: str = "epb", seed: bytes = EPB, seq: int | None = None,
                 cid: str | None = None, gateway: str = GW, not_before_ms: int | None = None,
                 expires_at_ms: int | None = None, issued_at_ms: int | None = None,
                 approvers: tuple[tuple[str, bytes], ...] = ()) -> Command:
    now = time.time_ns() // 1_000_000
    nb = now - 1000 if not_before_ms is None else not_before_ms
    cmd = Command(id=cid or uuid.uuid4().hex, gateway=gateway, point=point, value=value,
                  unit=unit, issued_at_ms=min(nb, now) if issued_at_ms is None else issued_at_ms,
                  not_before_ms=nb,
                  expires_at_ms=now + 60_000 if expires_at_ms is None else expires_at_ms,
                  seq=time.time_ns() // 1000 if seq is None else seq, issuer=issuer)
    cmd = sign_command(cmd, seed)
    for kid, s in approvers:
        cmd = approve_command(cmd, kid, s)
    return cmd


class Harness:
    def __init__(self, service: ControlService, plant: ActuatorPlant, outbox: Outbox,
                 client: aiomqtt.Client, metrics: Metrics) -> None:
        self.service = service
        self.plant = plant
        self.outbox = outbox
        self.client = client
        self.metrics = metrics
        self.acks: dict[str, dict[str, Any]] = {}
        self.anon_acks: list[dict[str, Any]] = []
        self.ack_counts: dict[str, int] = {}  # acks received per command id
        self.alarms: list[dict[str, Any]] = []
        self.telemetry: list[dict[str, Any]] = []
        self._got = asyncio.Event()

    @property
    def model(self) -> ActuatorModel:
        return self.plant.model

    async def _listen(self) -> None:
        async for m in self.client.messages:
            topic = str(m.topic)
            if topic.endswith("/cmd"):
                continue
            body = json.loads(bytes(m.payload))
            if topic.endswith("/ack"):
                if body["id"] is None:
                    self.anon_acks.append(body)
                else:
                    self.acks[body["id"]] = body
                    self.ack_counts[body["id"]] = self.ack_counts.get(body["id"], 0) + 1
            elif topic.endswith("/alarm"):
                self.alarms.append(body)
            elif topic.endswith("/telemetry"):
                self.telemetry.append(body)
            self._got.set()

    async def wait_for(self, pred: Any, timeout: float = 15.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not pred():
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError("condition not met")
            self._got.clear()
            try:
                await asyncio.wait_for(self._got.wait(), min(left, 0.1))
            except TimeoutError:
                pass

    async def send_raw(self, payload: bytes | str) -> None:
        await self.client.publish(f"mrv/{GW}/cmd", payload, qos=1)

    async def send(self, cmd: Command, timeout: float = 15.0) -> dict[str, Any]:
        self.acks.pop(cmd.id, None)  # a replay's ack replaces the first one
        await self.send_raw(cmd.to_bytes())
        await self.wait_for(lambda: cmd.id in self.acks, timeout)
        return self.acks[cmd.id]

    async def audit(self) -> list[Any]:
        await self.service.flush()
        st = await self.outbox.stats()
        return [r for r in await self.outbox.records(1, st.records)
                if getattr(r, "category", None) is not None]


@asynccontextmanager
async def harness(tmp: Path, broker_port: int, *, model: ActuatorModel | None = None,
                  extra: dict[str, Any] | None = None,
                  reading_points: list[str] | None = None,
                  clock: Clock = SYSTEM_CLOCK) -> AsyncIterator[Harness]:
    plant = await ActuatorPlant(model or ActuatorModel()).start()
    cfg = ControlConfig.model_validate(control_dict(plant.port, broker_port, **(extra or {})))
    outbox = await Outbox.open(tmp / "outbox.sqlite", GW)
    metrics = Metrics()
    from control._envelope import sign_bytes

    service = ControlService(gateway_id=GW, config=cfg, data_dir=tmp, outbox=outbox,
                             metrics=metrics, sign=lambda m: sign_bytes(GATEWAY_SEED, m),
                             reading_points=reading_points, clock=clock)
    run = asyncio.create_task(service.run())
    client = aiomqtt.Client("127.0.0.1", broker_port)
    listener: asyncio.Task[None] | None = None
    try:
        async with client:
            await client.subscribe(f"mrv/{GW}/#", qos=1)
            h = Harness(service, plant, outbox, client, metrics)
            listener = asyncio.create_task(h._listen())
            await asyncio.wait_for(service.ready.wait(), 15)
            yield h
            assert metrics.counters["task_restarts"] == 0, metrics.snapshot()
    finally:
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await service.aclose()
        await outbox.close()
        await plant.stop()


def test_support_builds_a_valid_config() -> None:
    cfg = ControlConfig.model_validate(control_dict(502, 1883))
    assert {p.id for p in cfg.points} == {"vent.opening", "burner.air_damper"}
    assert make_command("40").signature
