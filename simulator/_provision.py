"""Set up a gateway against a chain: keys, contract deployment, roles, funding, enterprise
certification, gateway registration, config.

What an integrator does once per plant, scripted for the demo and the tests.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from eth_account.signers.local import LocalAccount

from ledger_client import (
    EvmChain,
    Mrv,
    Signer,
    deploy_system,
    fund,
    generate_account,
    load_account,
    make_uscc,
    write_address_book,
)
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
                 "type": "uint32", "scale": 0.01, "unit": "kWh",
                 "emissions": {"scope": 2, "method": "electricity", "factor": "CN-GRID-ETS",
                               "register_max": 42949672.95, "resolution": 0.01}},
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
                 "type": "uint32", "scale": 0.1, "unit": "Nm3",
                 "emissions": {"scope": 1, "method": "fuel", "fuel": "natural_gas",
                               "register_max": 429496729.5, "resolution": 0.1}},
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
    government_key: Path | None = None
    enterprise_key: Path | None = None


def _role_key(path: Path) -> LocalAccount:
    return load_account(path) if path.exists() else generate_account(path)


def current_year_ns(now: dt.datetime | None = None) -> tuple[int, int]:
    """[1 January, next 1 January) of the current UTC year, in nanoseconds."""
    now = now or dt.datetime.now(dt.UTC)
    start = dt.datetime(now.year, 1, 1, tzinfo=dt.UTC)
    end = dt.datetime(now.year + 1, 1, 1, tzinfo=dt.UTC)
    return int(start.timestamp()) * 10**9, int(end.timestamp()) * 10**9


async def provision(work: Path, rpc_url: str, *, devices: list[dict[str, Any]],
                    gateway_id: str = "plant-a-gw1", batch_interval_s: float = 2.0,
                    max_records: int = 10_000, health_listen: str | None = None,
                    contract: str | None = None, admin_index: int = 0,
                    extra: dict[str, Any] | None = None) -> Provisioned:
    """What a deployment does once per plant, each step signed by its own role's key:
    the regulator (dev key ``admin_index``) deploys the contracts (or uses the ledger at
    ``contract``) and grants the government role; government defines the current year as a
    compliance period (when no period holds today), certifies the plant's enterprise and reserves
    the gateway id for it; the enterprise registers the gateway. Keys are written under ``work/keys``."""
    work.mkdir(parents=True, exist_ok=True)
    keys = work / "keys"
    admin_key = keys / "admin.key"
    if not admin_key.exists():
        keys.mkdir(parents=True, exist_ok=True)
        admin_key.write_text(DEV_KEYS[admin_index] + "\n")
        admin_key.chmod(0o600)
    regulator = load_account(admin_key)
    government = _role_key(keys / "government.key")
    enterprise = _role_key(keys / "enterprise.key")
    signer = Signer.generate(keys / "ed25519.key")
    gw_account = generate_account(keys / "evm.key")
    chain = EvmChain(rpc_url, contract_address=contract)
    book_path = work / "address-book.json"
    try:
        if contract is None:
            book = await deploy_system(chain, regulator)
            mrv = Mrv(chain, book["contracts"])
        else:
            mrv = await Mrv.attach(chain)
            book = {"chain_id": await chain.chain_id(), "rpc_url": rpc_url,
                    "admin": regulator.address, "contracts": dict(mrv.addresses)}
        write_address_book(book_path, book)
        # 10 ether each: thousands of anchoring transactions on anvil. (100 each ran the
        # regulator's 10,000 dev ether dry after about 33 provisions on one anvil: the suite)
        for acct in (government, enterprise, gw_account):
            await fund(chain, regulator, acct.address, 10**19)
        if not await mrv.has_role("government", government.address):
            await mrv.grant(regulator, "government", government.address)
        start_ns, end_ns = current_year_ns()
        if int(await mrv.call(mrv.registry.functions.periodAt(time.time_ns()))) == 0:
            await mrv.define_period(government, start_ns, end_ns)  # no period holds today
        status = await mrv.call(mrv.registry.functions.enterpriseStatus(enterprise.address))
        if int(status) == 0:
            await mrv.certify(government, enterprise.address,
                              credit_code=make_uscc(enterprise.address.encode()),
                              name=f"Operator of {gateway_id}", industry="D4411",
                              region="440300")
        await mrv.reserve_gateway_id(government, gateway_id, enterprise.address)
        await mrv.register_gateway(enterprise, gateway_id, gw_account.address,
                                   signer.public_key)
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
    return Provisioned(config, book_path, address, admin_key, gateway_id, rpc_url,
                       keys / "government.key", keys / "enterprise.key")

