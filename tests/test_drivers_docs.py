"""Every sample config in docs/drivers.md parses, so the docs cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from config import parse_config
from drivers import make_sources
from mrv_core._metrics import Metrics

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


_ORDER_ROW = re.compile(r"^\s*\| `(\w+)`(?:, `bit: (\d+)`)? \| `(\w{4})` \| `([0-9A-Fx ]+)` \| "
                        r"`([-\w.]+)` \|$", flags=re.M)


def test_word_order_examples_are_what_the_decoder_does() -> None:
    """The word_order table (one-register types swap bytes too) against drivers.modbus."""
    from drivers.modbus._decode import decode

    rows = _ORDER_ROW.findall(DOC.read_text(encoding="utf-8"))
    assert len(rows) >= 12
    assert {r[0] for r in rows} >= {"uint16", "int16", "int32", "float32", "bitfield"}
    for dtype, bit, order, regs, value in rows:
        got = decode([int(r, 16) for r in regs.split()], dtype, order,
                     bit=int(bit) if bit else None)
        expected = {"true": True, "false": False}.get(value)
        assert got == (expected if expected is not None else float(value)), (dtype, order, regs)


def test_mqtt_tls_is_not_called_unwired() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert "tls:" in text and "not wired" not in text
