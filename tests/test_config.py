"""Config: examples parse; each kind of mistake gets a message naming the YAML path and line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "config" / "examples").glob("*.yaml"))

GOOD = """\
gateway:
  id: gw1
  signing_key: keys/ed25519.key
chain:
  rpc_url: http://127.0.0.1:8545
  chain_id: 31337
  contract: "0x5FbDB2315678afecb367f032d93F642f64180aa3"
  account_key: keys/evm.key
devices:
  - driver: modbus_tcp
    name: meter1
    host: 127.0.0.1
    points:
      - {id: m.energy, address: 0, type: uint32, scale: 0.01, unit: kWh}
      - {id: m.power, address: 2, type: float32, unit: kW}
"""


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_parse(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.devices and cfg.gateway.id


def test_good_config_and_path_resolution(tmp_path: Path) -> None:
    cfg = parse_config(GOOD, base_dir=tmp_path)
    assert cfg.gateway.signing_key == tmp_path / "keys/ed25519.key"
    assert cfg.outbox_path() == tmp_path / "data" / "outbox.sqlite"
    assert cfg.devices[0].points[1].word_order == "ABCD"
    assert cfg.batching.max_records == 10_000


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# (name, yaml text, expected path, expected message fragment, expected line)
BAD = [
    ("unknown-top-key", GOOD + "colour: blue\n", "colour", "unknown key (allowed: gateway", 16),
    ("unknown-point-key", _edit(GOOD, "unit: kW}", "unit: kW, scael: 2}"),
     "devices[0].points[1].scael", "unknown key", 15),
    ("missing-gateway-id", _edit(GOOD, "  id: gw1\n", ""), "gateway.id", "required key is missing", 1),
    ("bad-type", _edit(GOOD, "type: float32", "type: float"), "devices[0].points[1].type",
     "Input should be 'int16'", 15),
    ("bad-word-order", _edit(GOOD, "type: float32,", "type: float32, word_order: ABDC,"),
     "devices[0].points[1].word_order", "'CDAB'", 15),
    ("address-out-of-range", _edit(GOOD, "address: 2,", "address: 70000,"),
     "devices[0].points[1].address", "less than or equal to 65535", 15),
    ("port-not-a-number", _edit(GOOD, "    host: 127.0.0.1\n", "    host: 127.0.0.1\n    port: http\n"),
     "devices[0].port", "valid integer", 13),
    ("bad-rpc-url", _edit(GOOD, "http://127.0.0.1:8545", "127.0.0.1:8545"), "chain.rpc_url",
     "should match pattern", 5),
    ("both-contract-and-book", _edit(GOOD, "  account_key:", "  address_book: book.json\n  account_key:"),
     "chain", "exactly one of 'contract'", 4),
    ("bad-contract-address", _edit(GOOD, "0x5FbDB2315678afecb367f032d93F642f64180aa3", "0x5FbD"),
     "chain.contract", "should match pattern", 7),
    ("duplicate-point-id", _edit(GOOD, "id: m.power", "id: m.energy"), "devices",
     "point id 'm.energy' is used by devices 'meter1' and 'meter1'", 9),
    ("no-points", _edit(GOOD, GOOD[GOOD.index("    points:"):], "    points: []\n"),
     "devices[0].points", "at least 1 item", 13),
    ("unknown-driver", _edit(GOOD, "driver: modbus_tcp", "driver: opcua"), "devices[0]",
     "does not match any of the expected tags: 'modbus_tcp'", 10),
    ("bad-gateway-id", _edit(GOOD, "id: gw1", "id: 'gw 1/x'"), "gateway.id",
     "should match pattern", 2),
    ("sign-records-not-a-bool", _edit(GOOD, "id: gw1", "id: gw1\n  sign_records: sometimes"),
     "gateway.sign_records", "valid boolean", 3),
    ("zero-batch-interval", GOOD + "batching: {interval_s: 0}\n", "batching.interval_s",
     "greater than 0", 16),
    ("retry-order", _edit(GOOD, "  account_key: keys/evm.key\n",
                          "  account_key: keys/evm.key\n  retry: {initial_s: 5, max_s: 1}\n"),
     "chain.retry", "max_s (1.0) must be >= initial_s (5.0)", 9),
    ("range-check-inverted", _edit(GOOD, "unit: kW}", "unit: kW, checks: {range: {min: 5, max: 1}}}"),
     "devices[0].points[1].checks.range", "range.min (5.0) must be less than range.max", 15),
    ("duplicate-yaml-key", _edit(GOOD, "  chain_id: 31337\n", "  chain_id: 31337\n  chain_id: 1\n"),
     "chain.chain_id", "duplicate key (first at line 6)", 7),
    ("not-yaml", GOOD + "devices: [\n", "<document>", "not valid YAML", None),
    ("top-level-list", "- a\n- b\n", "<document>", "expected a mapping at the top level", 1),
]


@pytest.mark.parametrize(("name", "text", "path", "fragment", "line"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_messages(name: str, text: str, path: str, fragment: str,
                             line: int | None) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(text, source="bad.yaml")
    issues = ei.value.issues
    shown = "\n".join(map(str, issues))
    match = [i for i in issues if (i.path or "<document>") == path and fragment in i.message]
    assert match, f"expected {path!r} with {fragment!r}, got:\n{shown}"
    if line is not None:
        assert match[0].line == line, shown
    assert str(ei.value).startswith("bad.yaml: ")


def test_every_problem_is_reported_at_once() -> None:
    text = _edit(_edit(GOOD, "type: float32", "type: float"), "chain_id: 31337", "chain_id: -1")
    with pytest.raises(ConfigError) as ei:
        parse_config(text)
    paths = {i.path for i in ei.value.issues}
    assert {"devices[0].points[1].type", "chain.chain_id"} <= paths


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_check_config_cli(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    bad = tmp_path / "bad.yaml"
    bad.write_text(_edit(GOOD, "type: float32", "type: float"))
    exe = [sys.executable, "-m", "gateway._cli", "check-config"]
    ok = subprocess.run([*exe, str(good)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "OK: gateway gw1, 1 device(s), 2 point(s)" in ok.stdout
    ko = subprocess.run([*exe, str(good), str(bad)], capture_output=True, text=True, check=False)
    assert ko.returncode == 2
    assert "line 15: devices[0].points[1].type: Input should be" in ko.stderr


def test_example_yaml_is_plain_yaml() -> None:
    for p in EXAMPLES:
        assert isinstance(yaml.safe_load(p.read_text()), dict)
