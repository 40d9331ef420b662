"""The ``control:`` config section: the sample in docs/control.md parses; mistakes are named by
YAML path and line; the docs list exactly the reason codes the code has."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from config import ConfigError, parse_config
from control._policy import REASON_CODES

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "control.md").read_text()

BASE = """\
gateway:
  id: plant-a-gw1
  signing_key: keys/ed25519.key
chain:
  rpc_url: http://127.0.0.1:8545
  chain_id: 31337
  contract: "0x5FbDB2315678afecb367f032d93F642f64180aa3"
  account_key: keys/evm.key
devices:
  - driver: modbus_tcp
    name: boiler-room-plc
    host: 192.168.10.30
    points:
      - {id: room.gas_lel, table: input, address: 0, type: float32, unit: "%LEL"}
      - {id: boiler.flue_o2, table: input, address: 2, type: float32, unit: "%"}
"""


def doc_sample() -> str:
    section = DOC[DOC.index("## Configuration"):]
    m = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert m is not None
    return m.group(1)


def test_docs_sample_parses(tmp_path: Path) -> None:
    cfg = parse_config(BASE + doc_sample(), base_dir=tmp_path)
    c = cfg.control
    assert c is not None and c.enabled
    assert c.topic(cfg.gateway.id, "cmd") == "mrv/plant-a-gw1/cmd"
    vent = c.point("vent.opening")
    damper = c.point("burner.air_damper")
    assert vent is not None and damper is not None
    assert (vent.type, vent.scale, vent.min, vent.max, vent.max_step) == ("uint16", 0.1, 0, 100,
                                                                          50)
    assert vent.permissives[0].when == "decrease"
    assert (damper.word_order, damper.two_person) == ("CDAB", True)
    assert c.rules.leak is not None and c.rules.leak.safe_opening == 100
    assert c.rules.combustion is not None and c.rules.combustion.interval_s == 30
    assert c.devices[0].heartbeat is not None
    # the docs' keys are the test vectors' public keys (never configure them for real)
    vectors = json.loads((ROOT / "docs" / "vectors" / "command.json").read_text())
    pubs = {k["public_key"] for k in vectors["keys"]}
    assert {i.public_key for i in c.issuers} <= pubs


def test_config_without_control_has_none(tmp_path: Path) -> None:
    assert parse_config(BASE, base_dir=tmp_path).control is None


def test_docs_list_exactly_the_reason_codes() -> None:
    tables = DOC[DOC.index("## Checks, in order"):DOC.index("### The control journal")]
    documented = set(re.findall(r"^\|(?:[^|`]*\|)?\s*`([a-z-]+)`", tables, re.M))
    assert documented == set(REASON_CODES)


def test_docs_show_the_first_vectors_canonical_bytes() -> None:
    vectors = json.loads((ROOT / "docs" / "vectors" / "command.json").read_text())
    first = vectors["commands"][0]["canonical_bytes_utf8"]
    assert first in DOC


def _with(sample_edit: tuple[str, str]) -> str:
    text = doc_sample()
    old, new = sample_edit
    assert old in text, old
    return BASE + text.replace(old, new, 1)


def _line_of(text: str, needle: str) -> int:
    return text[:text.index(needle)].count("\n") + 1


BAD = [
    ("unknown-key", ("      max_step: 50\n", "      max_step: 50\n      colour: red\n"),
     "control.points[0].colour", "unknown key", "colour: red"),
    ("undeclared-point", ("points: [vent.opening, burner.air_damper]",
                          "points: [vent.opening, boiler.main_valve]"),
     "control", "names point 'boiler.main_valve', which is not a writable point", None),
    ("missing-signal", ("{signal: plc.leak_alarm, equals: 0", "{signal: plc.gas, equals: 0"),
     "control", "permissive signal 'plc.gas' is not declared", None),
    ("min-above-max", ("      min: 0\n      max: 100\n", "      min: 100\n      max: 0\n"),
     "control.points[0]", "min (100.0) must be <= max (0.0)", "- id: vent.opening"),
    ("lease-without-fallback", ("      fallback: 20\n", ""), "control.points[0]",
     "lease_s and fallback go together", "- id: vent.opening"),
    ("fallback-out-of-range", ("      fallback: 20\n", "      fallback: 120\n"),
     "control.points[0]", "fallback 120.0 is outside", "- id: vent.opening"),
    ("does-not-fit-register", ("      max: 100\n      max_step: 50", "      max: 7000\n"
                               "      max_step: 50"),
     "control.points[0]", "max 7000.0 does not fit a uint16", "- id: vent.opening"),
    ("bad-public-key", ('"0x03a107bff3ce', '"0x03a1'), "control.issuers[0].public_key",
     "should match pattern", "public_key: \"0x03a1"),
    ("two-person-alone", ("      points: [\"*\"]\n", "      points: [vent.opening]\n"),
     "control", "needs two people but only 1 issuer(s)", None),
    ("safe-opening-outside", ("safe_opening: 100", "safe_opening: 150"), "control",
     "safe_opening 150.0 is outside the vent's [0.0, 100.0]", None),
    ("trim-outside-damper", ("      min: 30\n      max: 70\n", "      min: 10\n      max: 70\n"),
     "control", "rules.combustion [10.0, 70.0] is outside the damper's [20.0, 80.0]", None),
    ("duplicate-point", ("    - id: burner.air_damper", "    - id: vent.opening"), "control",
     "point id 'vent.opening' is used twice", None),
    ("bad-unit", ('      unit: "%"\n      min: 0', '      unit: "per cent"\n      min: 0'),
     "control.points[0].unit", "should match pattern", 'unit: "per cent"'),
    ("bad-prefix", ("topic_prefix: mrv", "topic_prefix: mrv/#"), "control.topic_prefix",
     "should match pattern", "topic_prefix: mrv/#"),
    # item 15: one owner per register
    ("heartbeat-on-a-point", ("heartbeat: {address: 4,", "heartbeat: {address: 3,"), "control",
     "writable point 'burner.air_damper' and the heartbeat of device 'boiler-room-plc' share "
     "register 3 of device 'boiler-room-plc'", None),
    ("heartbeat-on-first-register", ("heartbeat: {address: 4,", "heartbeat: {address: 0,"),
     "control", "writable point 'vent.opening' and the heartbeat of device", None),
    ("two-points-one-register", ("      address: 2\n      type: float32",
                                 "      address: 0\n      type: float32"), "control",
     "writable point 'burner.air_damper' and writable point 'vent.opening' share register 0",
     None),
    ("overlapping-multi-register", ("      address: 0\n      type: uint16",
                                    "      address: 1\n      type: float32"), "control",
     "writable point 'burner.air_damper' and writable point 'vent.opening' share register 2",
     None),
    ("unknown-device", ("      device: boiler-room-plc\n      address: 2",
                        "      device: burner-plc\n      address: 2"), "control",
     "'burner.air_damper' names device 'burner-plc', which is not declared", None),
]


@pytest.mark.parametrize(("name", "edit", "path", "fragment", "line_needle"), BAD,
                         ids=[b[0] for b in BAD])
def test_mistakes_are_named(tmp_path: Path, name: str, edit: tuple[str, str], path: str,
                            fragment: str, line_needle: str | None) -> None:
    text = _with(edit)
    with pytest.raises(ConfigError) as e:
        parse_config(text, base_dir=tmp_path)
    issues = e.value.issues
    assert len(issues) == 1, issues
    issue = issues[0]
    assert issue.path == path, issue
    assert fragment in issue.message, issue
    expected_line = _line_of(text, line_needle) if line_needle else _line_of(text, "control:")
    assert issue.line == expected_line, (issue, expected_line)


def test_sample_is_valid_yaml_on_its_own() -> None:
    data = yaml.safe_load(doc_sample())
    assert set(data) == {"control"}


def test_an_actuator_device_names_a_transport_and_an_existing_bus(tmp_path: Path) -> None:
    """A control device is Modbus TCP (host) or a unit on a configured modbus_rtu bus (bus)."""
    sample = doc_sample()
    host_line = re.search(r"^      host: 192\.168\.10\.30.*\n", sample, re.M)
    assert host_line is not None

    def devices_with(line: str) -> str:
        return sample.replace(host_line.group(0), line, 1)

    with pytest.raises(ConfigError) as e:
        parse_config(BASE + devices_with(""), base_dir=tmp_path)
    assert any("exactly one" in i.message for i in e.value.issues), e.value.issues
    with pytest.raises(ConfigError) as e:
        parse_config(BASE + devices_with("      bus: rs485-9\n"), base_dir=tmp_path)
    assert any("names bus 'rs485-9', which is not a modbus_rtu bus" in i.message
               for i in e.value.issues), e.value.issues
    rtu = BASE.replace("devices:\n", "devices:\n  - driver: modbus_rtu\n    name: rs485-9\n"
                       "    port: /dev/ttyUSB0\n    units:\n      - name: m1\n        unit_id: 3\n"
                       "        points: [{id: m1.p, address: 0, type: uint16, unit: '1'}]\n", 1)
    cfg = parse_config(rtu + devices_with("      bus: rs485-9\n"), base_dir=tmp_path)
    assert cfg.control is not None
    dev = cfg.control.devices[0]
    assert (dev.bus, dev.host) == ("rs485-9", None)
