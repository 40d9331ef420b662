"""Fuzz target of the config loader: a config file's bytes -> a validated `Config` or a
`ConfigError` (limits before parsing, YAML errors, validation errors, all by path and line).

Slow per input (the YAML parser and pydantic: about 1-3 ms for the example config), so inputs
are kept to 8 KiB (the seeds are 1-3 KiB); oversize inputs (16 MiB + 1) test the size limit."""

from __future__ import annotations

from pathlib import Path

from config._loader import MAX_CONFIG_BYTES, ConfigError, parse_config_bytes
from tests.fuzz import Target

_ROOT = Path(__file__).resolve().parent.parent.parent

_SMALL = b"""\
gateway: {id: gw1, signing_key: k/ed.key}
chain: {rpc_url: "http://127.0.0.1:8545", chain_id: 31337, account_key: k/evm.key,
        contract: "0x5FbDB2315678afecb367f032d93F642f64180aa3"}
devices:
  - &m
    driver: modbus_tcp
    name: meter1
    host: 10.0.0.21
    points:
      - {id: m.energy, address: 0, type: uint32, scale: 0.01, unit: kWh,
         checks: {counter: {max_step: 100}, timestamps: {max_future_s: 5}},
         emissions: {scope: 2, method: electricity}}
  - <<: *m
    name: meter2
    points: [{id: m2.p, address: 2, type: float32, unit: kW, checks: {range: {min: 0}}}]
  - driver: mqtt
    name: sensors
    host: broker
    client_id: gw1-sensors
    points:
      - {id: s.t, topic: plant/+/t, value: data.0, timestamp: ts, unit: degC,
         checks: {spike: {window: 5, k: 3}, flatline: {count: 5}}}
  - driver: hj212
    name: logger
    listen: 0.0.0.0:7001
    mn: "88888880000001"
    points: [{id: h.so2, code: a21026, unit: mg/m3}]
  - driver: dlt645
    name: bus1
    port: /dev/ttyUSB0
    meters: [{name: m1, address: "000000123456", points: [{id: d.kwh, di: "00010000"}]}]
aggregation:
  points: [{point: h.so2, expected_per_minute: 60, substitution: {part75_max_potential: 500}}]
"""


def _run(data: bytes) -> object:
    return parse_config_bytes(data, source="fuzz.yaml")


TARGETS = [
    Target(
        name="config.yaml",
        run=_run,
        rejects=(ConfigError,),
        seeds=((_ROOT / "config" / "examples" / "plant-a.yaml").read_bytes(), _SMALL),
        max_len=8192,
        oversize=MAX_CONFIG_BYTES + 1,
    ),
]
