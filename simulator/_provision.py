"""Set up a gateway against a chain: keys, ledger deployment, funding, registration, config.

What an integrator does once per plant, scripted for the demo and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ledger_client import EvmChain, Signer, load_account
from ledger_client._admin import deploy_ledger, fund, register_gateway, write_address_book
from ledger_client._signing import generate_account
from simulator._anvil import CHAIN_ID, DEV_KEYS


def plant_devices(port: int, *, interval_s: float = 1.0, host: str = "127.0.0.1",
                  count: int = 1) -> list[dict[str, Any]]:
    """Device config for `simulator.default_plant` (units 1 and 2), repeated ``count`` times."""
    devs: list[dict[str, Any]] = []
    for i in range(count):
        sfx = "" if count == 1 else f"-{i + 1}"
        devs.append({
            "driver": "modbus_tcp", "name": f"feeder-meter{sfx}", "host": host, "port": port,
            "unit_id": 1, "interval_s": interval_s, "timeout_s": 0.5, "retries": 0,
            "points": [
                {"id": f"feeder{sfx}.energy", "table": "holding", "address": 0,
                 "type": "uint32", "scale": 0.01, "unit": "kWh"},
                {"id": f"feeder{sfx}.power", "table": "holding", "address": 2,
                 "type": "float32", "unit": "kW", "checks": {"range": {"min": 0, "max": 2000}}},
                {"id": f"feeder{sfx}.voltage_a", "table": "holding", "address": 4,
                 "type": "uint16", "scale": 0.1, "unit": "V",
                 "checks": {"range": {"min": 180, "max": 260}}},
            ],
        })
        devs.append({
            "driver": "modbus_tcp", "name": f"boiler-gas{sfx}", "host": host, "port": port,
            "unit_id": 2, "interval_s": interval_s, "timeout_s": 0.5, "retries": 0,
            "points": [
                {"id": f"boiler{sfx}.gas_flow", "table": "input", "address": 0,
                 "type": "float32", "unit": "Nm3/h",
                 "checks": {"range": {"min": 0, "max": 1000}}},
                {"id": f"boiler{sfx}.gas_volume", "table": "input", "address": 2,
                 "type": "uint32", "scale": 0.1, "unit": "Nm3"},
                {"id": f"boiler{sfx}.gas_temp", "table": "input", "address": 4,
                 "type": "int16", "scale": 0.1, "unit": "degC"},
            ],
        })
    return devs


@dataclass(frozen=True, slots=True)
class Provisioned:
    config: Path
    address_book: Path
    contract: str
    admin_key: Path
    gateway_id: str
    rpc_url: str


async def provision(work: Path, rpc_url: str, *, devices: list[dict[str, Any]],
                    gateway_id: str = "plant-a-gw1", batch_interval_s: float = 2.0,
                    max_records: int = 10_000, health_listen: str | None = None,
                    contract: str | None = None, admin_index: int = 0,
                    extra: dict[str, Any] | None = None) -> Provisioned:
    work.mkdir(parents=True, exist_ok=True)
    keys = work / "keys"
    admin_key = keys / "admin.key"
    if not admin_key.exists():
        keys.mkdir(parents=True, exist_ok=True)
        admin_key.write_text(DEV_KEYS[admin_index] + "\n")
        admin_key.chmod(0o600)
    admin = load_account(admin_key)
    signer = Signer.generate(keys / "ed25519.key")
    gw_account = generate_account(keys / "evm.key")
    chain = EvmChain(rpc_url, contract_address=contract)
    book_path = work / "address-book.json"
    try:
        if contract is None:
            book = await deploy_ledger(chain, admin)
        else:
            book = {"chain_id": CHAIN_ID, "rpc_url": rpc_url, "admin": admin.address,
                    "contracts": {"EmissionsLedger": contract}}
        write_address_book(book_path, book)
        await fund(chain, admin, gw_account.address, 10**20)
        await register_gateway(chain, admin, gateway_id, gw_account.address, signer.public_key)
        address = str(book["contracts"]["EmissionsLedger"])
    finally:
        await chain.close()
    cfg: dict[str, Any] = {
        "gateway": {"id": gateway_id, "data_dir": "data", "signing_key": "keys/ed25519.key"},
        "batching": {"interval_s": batch_interval_s, "max_records": max_records},
        "chain": {"rpc_url": rpc_url, "chain_id": CHAIN_ID, "address_book": "address-book.json",
                  "account_key": "keys/evm.key", "confirmations": 1,
                  "retry": {"initial_s": 0.2, "max_s": 2.0}},
        "devices": devices,
    }
    if health_listen:
        cfg["health"] = {"listen": health_listen}
    for section, values in (extra or {}).items():
        cfg.setdefault(section, {}).update(values)
    config = work / "gateway.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return Provisioned(config, book_path, address, admin_key, gateway_id, rpc_url)

