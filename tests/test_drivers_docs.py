"""Every sample config in docs/drivers.md parses, so the docs cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from config import parse_config
from drivers import make_sources
from gateway._metrics import Metrics

DOC = Path(__file__).resolve().parent.parent / "docs" / "drivers.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
HEAD = """\
gateway: {id: gw1, signing_key: keys/ed25519.key}
chain: {rpc_url: "http://127.0.0.1:8545", chain_id: 31337, account_key: keys/evm.key,
        contract: "0x5FbDB2315678afecb367f032d93F642f64180aa3"}
"""


def _driver(block: str) -> str:
    m = re.search(r"driver: (\w+)", block)
    return m.group(1) if m else "?"


def test_there_is_a_sample_for_every_driver() -> None:
    assert {_driver(b) for b in BLOCKS} == {"dlt645", "hj212", "modbus_rtu", "modbus_tcp", "mqtt"}


@pytest.mark.parametrize("block", BLOCKS, ids=[_driver(b) for b in BLOCKS])
def test_sample_parses(block: str) -> None:
    assert isinstance(yaml.safe_load(block), dict)
    cfg = parse_config(HEAD + block, source="docs/drivers.md")
    assert cfg.devices
    for dev in cfg.devices:
        assert dev.driver == _driver(block)
        assert dev.points  # every sample maps at least one point
    sources = make_sources(cfg.devices, _sink, Metrics())
    assert len(sources) == len(cfg.devices)


async def _sink(readings: object) -> None: ...
