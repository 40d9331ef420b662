"""The whole daemon with control: real anvil chain, real pymodbus meters and PLC, real
Mosquitto. A command's audit trail is anchored and provable; a simulated leak opens the vent
without any remote command and a remote close is refused; control failing never stops
acquisition or anchoring."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt

from config import contract_address, load_config
from gateway._daemon import run_daemon
from ledger_client import EvmChain, Outbox, bundle_from_outbox, verify_bundle
from mrv_core._metrics import Metrics
from mrv_core._records import AuditRecord
from simulator import (
    ActuatorModel,
    ActuatorPlant,
    Anvil,
    ModbusPlant,
    Mosquitto,
    free_port,
    plant_devices,
    provision,
)
from tests.test_control_support import GW, control_dict, make_command

LEAK = {"gas_point": "room.gas_lel", "threshold": 20, "samples": 3, "clear_below": 10,
        "clear_samples": 2, "vent_point": "vent.opening", "safe_opening": 100}


def plc_device(port: int) -> dict[str, Any]:
    """The PLC's measurements, acquired like any meter (the rules read them via a tap)."""
    return {"driver": "modbus_tcp", "name": "boiler-room-plc", "host": "127.0.0.1",
            "port": port, "unit_id": 1, "interval_s": 0.2, "timeout_s": 0.5, "retries": 0,
            "points": [
                {"id": "room.gas_lel", "table": "input", "address": 0, "type": "float32",
                 "unit": "%LEL"},
                {"id": "boiler.flue_o2", "table": "input", "address": 2, "type": "float32",
                 "unit": "%"},
                {"id": "vent.position", "table": "input", "address": 5, "type": "uint16",
                 "scale": 0.1, "unit": "%"}]}


class Listener:
    def __init__(self) -> None:
        self.acks: dict[str, dict[str, Any]] = {}
        self.alarms: list[dict[str, Any]] = []
        self.telemetry = 0

    async def run(self, c: aiomqtt.Client) -> None:
        async for m in c.messages:
            t = str(m.topic)
            if t.endswith("/cmd"):
                continue
            body = json.loads(bytes(m.payload))  # type: ignore[arg-type]
            if t.endswith("/ack"):
                self.acks[body["id"]] = body
            elif t.endswith("/alarm"):
                self.alarms.append(body)
            elif t.endswith("/telemetry"):
                self.telemetry += len(body["readings"])


async def _until(pred: Any, timeout: float = 30, why: Any = None) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, f"timed out: {why() if why else ''}"
        await asyncio.sleep(0.05)


async def test_daemon_command_leak_and_anchored_audit_trail(
        tmp_path: Path, anvil: Anvil, plant: ModbusPlant, mosquitto: Mosquitto) -> None:
    model = ActuatorModel(watchdog_s=3.0)
    plc = await ActuatorPlant(model).start()
    stop = asyncio.Event()
    daemon: asyncio.Task[None] | None = None
    try:
        control = control_dict(plc.port, mosquitto.port, rules={"leak": LEAK})
        prov = await provision(tmp_path / "gw", anvil.url,
                               devices=[*plant_devices(plant.port, interval_s=0.2),
                                        plc_device(plc.port)],
                               batch_interval_s=0.5, max_records=200,
                               extra={"control": control, "outbox": {"shutdown_drain_s": 20}})
        cfg = load_config(prov.config)
        assert cfg.control is not None
        metrics = Metrics()
        daemon = asyncio.create_task(run_daemon(cfg, stop=stop, metrics=metrics))
        lis = Listener()
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
            await c.subscribe(f"mrv/{GW}/#", qos=1)
            listen = asyncio.create_task(lis.run(c))
            await _until(lambda: metrics.components.get("control:mqtt") is not None
                         and metrics.components["control:mqtt"].state == "ok")

            async def send(value: str) -> dict[str, Any]:
                cmd = make_command(value)
                await c.publish(f"mrv/{GW}/cmd", cmd.to_bytes(), qos=1)
                await _until(lambda: cmd.id in lis.acks)
                return lis.acks[cmd.id]

            ack = await send("40")
            assert ack["status"] == "applied", ack
            assert model.vent == 40.0
            # a leak: no remote command, the gateway opens the vent from the live readings
            writes_before = len(plc.writes)
            model.leak_rate = 15.0  # %LEL/s: steady 60 %LEL at 40 % open, ~14 at 100 %
            await _until(lambda: any(a["state"] == "raised" for a in lis.alarms))
            await _until(lambda: model.vent == 100.0)
            assert len(plc.writes) == writes_before + 1  # the rule's one write
            closing = await send("60")
            assert (closing["status"], closing["reason"]) == ("rejected", "local-rule-active")
            assert len(plc.writes) == writes_before + 1
            model.leak_rate = 0.0
            await _until(lambda: any(a["state"] == "cleared" for a in lis.alarms))
            assert (await send("60"))["status"] == "applied"
            await _until(lambda: lis.telemetry > 20)  # live cleaned readings went out too
            model.step()
            assert model.remote and model.fallbacks == 0  # the heartbeat kept the PLC remote
            stop.set()
            await asyncio.wait_for(daemon, 60)
            listen.cancel()
            await asyncio.gather(listen, return_exceptions=True)
        assert metrics.counters["task_restarts"] == 0, metrics.snapshot()
        assert metrics.counters["polls"] > 0

        # every command, verdict, write and rule action is in the outbox, anchored, provable
        outbox = await Outbox.open(cfg.outbox_path(), cfg.gateway.id)
        chain = EvmChain(prov.rpc_url, contract_address=contract_address(cfg))
        try:
            st = await outbox.stats()
            assert st.pending == 0
            assert st.batches_by_state == {"built": 0, "submitted": 0, "confirmed": st.batches}
            audits = [r for r in await outbox.records(1, st.records)
                      if isinstance(r, AuditRecord)]
            kinds = [(r.category, r.subject) for r in audits]
            assert kinds.count(("command", ack["id"])) == 1
            assert ("write", "vent.opening") in kinds
            rule = [json.loads(r.payload) for r in audits if r.category == "local-rule"]
            assert [a["event"] for a in rule] == ["leak-raised", "leak-cleared"]
            assert rule[0]["value"] == 100.0 and rule[0]["previous"] == 40.0
            refused = [json.loads(r.payload) for r in audits if r.category == "command"
                       and r.subject == closing["id"]]
            assert refused[0]["reason"] == "local-rule-active"
            for r in audits:
                bundle = await bundle_from_outbox(outbox, r.seq, chain_id=cfg.chain.chain_id,
                                                  contract=prov.contract)
                report = await verify_bundle(bundle, chain)
                assert report.ok, report.text()
        finally:
            await chain.close()
            await outbox.close()
    finally:
        if daemon is not None and not daemon.done():  # a failed step: still stop it cleanly
            stop.set()
            await asyncio.wait_for(daemon, 60)
        await plc.stop()


async def test_control_failing_never_stops_acquisition_or_anchoring(
        tmp_path: Path, anvil: Anvil, plant: ModbusPlant) -> None:
    dead_broker, dead_plc = free_port(), free_port()
    control = control_dict(dead_plc, dead_broker)
    control["broker"]["connect_timeout_s"] = 1.0  # failures come fast even where SYNs vanish
    prov = await provision(tmp_path / "gw", anvil.url,
                           devices=plant_devices(plant.port, interval_s=0.2),
                           batch_interval_s=0.5, max_records=50,
                           extra={"control": control, "outbox": {"shutdown_drain_s": 20}})
    cfg = load_config(prov.config)
    metrics = Metrics()
    stop = asyncio.Event()
    daemon = asyncio.create_task(run_daemon(cfg, stop=stop, metrics=metrics))
    try:
        await _until(lambda: metrics.counters["polls"] >= 20
                     and metrics.counters["control_mqtt_failures"] >= 2
                     and metrics.counters["control_heartbeat_failures"] >= 2,
                     timeout=60, why=metrics.snapshot)
    finally:
        stop.set()
        await asyncio.wait_for(daemon, 60)
    assert metrics.components["control:mqtt"].state == "failing"
    assert metrics.components["control:device:boiler-room-plc"].state == "failing"
    outbox = await Outbox.open(cfg.outbox_path(), cfg.gateway.id)
    try:
        st = await outbox.stats()
        assert st.records >= 20 * 3 and st.pending == 0, st
        assert st.batches_by_state["confirmed"] == st.batches >= 1, st
    finally:
        await outbox.close()
