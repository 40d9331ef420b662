"""The whole platform live on one machine, for the demo and the browser's end-to-end test: the
ledger scenario on a local chain, the portal (``mrv-portal run``, HTTPS) following it with the
web view's live telemetry, a Mosquitto broker, the simulated plant (meters and the boiler-room
PLC), and a provisioned gateway process that signs its records, publishes live telemetry,
anchors its batches and delivers them to the portal."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from ledger_client import Signer, load_account
from simulator._actuators import ActuatorModel, ActuatorPlant
from simulator._mosquitto import Mosquitto
from simulator._plant import ModbusPlant, default_plant, free_port
from simulator._portal_demo import PortalDemo
from simulator._provision import Provisioned, plant_devices, provision
from simulator._scenario import REGULATOR_KEY_INDEX, ledger_scenario

BIN = Path(sys.executable).parent
#: the gateway the live plant runs (the scenario's own gateways are plant-a/-b)
GATEWAY_ID = "plant-c-gw1"


def plc_device(port: int, interval_s: float) -> dict[str, Any]:
    """The boiler-room PLC's measurements, acquired like any meter."""
    return {"driver": "modbus_tcp", "name": "boiler-room-plc", "host": "127.0.0.1",
            "port": port, "unit_id": 1, "interval_s": interval_s, "timeout_s": 1.0,
            "retries": 0,
            "points": [
                {"id": "room.gas_lel", "table": "input", "address": 0, "type": "float32",
                 "unit": "%LEL"},
                {"id": "boiler.flue_o2", "table": "input", "address": 2, "type": "float32",
                 "unit": "%"},
                {"id": "vent.position", "table": "input", "address": 5, "type": "uint16",
                 "scale": 0.1, "unit": "%"}]}


def control_section(plc_port: int, broker_port: int, issuer_public_key: str) -> dict[str, Any]:
    """The gateway's control service: the broker (live telemetry goes there too), one
    governance issuer, the PLC's vent as the one writable point."""
    return {
        "broker": {"host": "127.0.0.1", "port": broker_port, "reconnect_initial_s": 0.2,
                   "reconnect_max_s": 2.0},
        "topic_prefix": "mrv",
        "issuers": [{"key_id": "epb", "public_key": issuer_public_key,
                     "points": ["vent.opening"]}],
        "devices": [{"id": "boiler-room-plc", "host": "127.0.0.1", "port": plc_port,
                     "unit_id": 1, "timeout_s": 1.0}],
        "points": [{"id": "vent.opening", "device": "boiler-room-plc", "address": 0,
                    "type": "uint16", "scale": 0.1, "unit": "%", "min": 0, "max": 100,
                    "max_step": 50, "rate_limit": {"max_writes": 20, "window_s": 60}}],
        "telemetry": {"max_per_message": 200},
    }


@dataclass
class LiveMrv:
    """Start with ``await start()``, stop with ``await stop()`` (idempotent)."""

    work: Path
    rpc_url: str
    batch_interval_s: float = 5.0
    poll_interval_s: float = 1.0
    scenario_lines: list[str] = field(default_factory=list)
    portal: PortalDemo | None = None
    broker: Mosquitto | None = None
    plant: ModbusPlant | None = None
    plc: ActuatorPlant | None = None
    prov: Provisioned | None = None
    gateway: subprocess.Popen[bytes] | None = None
    health_listen: str = ""

    @property
    def scenario(self) -> Path:
        return self.work / "scenario"

    def key(self, name: str) -> LocalAccount:
        """A scenario account: government, auditor, finance, enterprise-a, enterprise-b."""
        return load_account(self.scenario / "keys" / f"{name}.key")

    def key_file(self, name: str) -> Path:
        return self.scenario / "keys" / f"{name}.key"

    @property
    def plant_enterprise(self) -> LocalAccount:
        """The enterprise of the live gateway (certified by ``provision``)."""
        return load_account(self.key_file_of_plant())

    def key_file_of_plant(self) -> Path:
        """The key file of the live gateway's enterprise."""
        return self.work / "gateway" / "keys" / "enterprise.key"

    async def start(self) -> LiveMrv:
        self.work.mkdir(parents=True, exist_ok=True)
        self.scenario_lines = await ledger_scenario(self.rpc_url, self.scenario)
        self.broker = Mosquitto().start()
        self.portal = PortalDemo(self.work / "portal", self.rpc_url, self.scenario,
                                 telemetry_broker=f"127.0.0.1:{self.broker.port}")
        await asyncio.to_thread(self.portal.start)
        self.plant = default_plant()
        await self.plant.start()
        self.plc = await ActuatorPlant(ActuatorModel()).start()
        issuer = Signer.generate(self.work / "epb-ed25519.key")
        self.health_listen = f"127.0.0.1:{free_port()}"
        self.prov = await provision(
            self.work / "gateway", self.rpc_url,
            devices=[*plant_devices(self.plant.port, interval_s=self.poll_interval_s),
                     plc_device(self.plc.port, self.poll_interval_s)],
            gateway_id=GATEWAY_ID, batch_interval_s=self.batch_interval_s,
            health_listen=self.health_listen, contract=self.portal.ledger_address,
            admin_index=REGULATOR_KEY_INDEX,
            extra={"portal": self.portal.gateway_section(),
                   "gateway": {"sign_records": True},
                   "control": control_section(self.plc.port, self.broker.port,
                                              "0x" + issuer.public_key.hex())})
        self.gateway = self._spawn_gateway(self.prov.config)
        return self

    def _spawn_gateway(self, config: Path) -> subprocess.Popen[bytes]:
        with open(self.work / "gateway.log", "ab") as out:
            return subprocess.Popen([str(BIN / "mrv-gateway"), "run", str(config)],
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def gateway_alive(self) -> bool:
        return self.gateway is not None and self.gateway.poll() is None

    async def stop_gateway(self) -> int | None:
        """Stop the gateway cleanly (SIGTERM: it drains what it can); its exit code."""
        gw, self.gateway = self.gateway, None
        if gw is None:
            return None
        if gw.poll() is None:
            os.killpg(gw.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(gw.wait, 60)
            except subprocess.TimeoutExpired:
                os.killpg(gw.pid, signal.SIGKILL)
                await asyncio.to_thread(gw.wait)
        return gw.returncode

    async def stop(self) -> None:
        await self.stop_gateway()
        if self.plc is not None:
            await self.plc.stop()
            self.plc = None
        if self.plant is not None:
            await self.plant.stop()
            self.plant = None
        if self.portal is not None:
            await asyncio.to_thread(self.portal.stop)
            self.portal = None
        if self.broker is not None:
            self.broker.close()
            self.broker = None
