"""Config of the drivers: every mistake is named by YAML path and line, and says what was
expected; make_sources builds one source per bus / broker session / listener."""

from __future__ import annotations

import pytest

from config import ConfigError, parse_config
from drivers import make_sources
from mrv_core._metrics import Metrics

HEAD = """\
gateway: {id: gw1, signing_key: k}
chain: {rpc_url: "http://127.0.0.1:8545", chain_id: 1, account_key: k,
        contract: "0x5FbDB2315678afecb367f032d93F642f64180aa3"}
devices:
"""

RTU = """\
  - driver: modbus_rtu
    name: rs485-1
    port: /dev/ttyUSB0
    units:
      - name: u1
        unit_id: 1
        points:
          - {id: u1.energy, address: 0, type: uint32, unit: kWh}
"""
DLT = """\
  - driver: dlt645
    name: rs485-2
    port: /dev/ttyUSB1
    meters:
      - name: m1
        address: "000000123456"
        points:
          - {id: m1.energy, di: "00000000"}
"""
MQTT = """\
  - driver: mqtt
    name: sensors
    host: 127.0.0.1
    client_id: gw1-sensors
    points:
      - {id: s.co2, topic: "plant/+/co2", value: data.co2, unit: ppm}
"""
HJ = """\
  - driver: hj212
    name: cems
    listen: 0.0.0.0:7001
    mn: "88888880000001"
    points:
      - {id: cems.so2, code: a21026, unit: mg/m3}
"""
GOOD = HEAD + RTU + DLT + MQTT + HJ


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def test_all_drivers_in_one_config() -> None:
    cfg = parse_config(GOOD)
    assert [d.driver for d in cfg.devices] == ["modbus_rtu", "dlt645", "mqtt", "hj212"]
    assert [p.id for d in cfg.devices for p in d.points] == [
        "u1.energy", "m1.energy", "s.co2", "cems.so2"]
    rtu, dlt = cfg.devices[0], cfg.devices[1]
    assert rtu.driver == "modbus_rtu" and rtu.frame_pause_s() == pytest.approx(3.5 * 10 / 9600)
    assert dlt.driver == "dlt645" and (dlt.baudrate, dlt.parity) == (2400, "E")
    assert dlt.points[0].unit == "kWh"
    sources = make_sources(cfg.devices, _sink, Metrics())
    assert [s.name for s in sources] == ["rs485-1", "rs485-2", "sensors", "cems"]


async def _sink(rs: object) -> None: ...


BAD = [
    ("unit-unknown-key", _edit(GOOD, "unit_id: 1\n", "unit_id: 1\n        colour: red\n"),
     "devices[0].units[0].colour", "unknown key (allowed: interval_s", 11),
    ("unit-id-twice", _edit(GOOD, "          - {id: u1.energy, address: 0, type: uint32, unit: kWh}\n",
                            "          - {id: u1.energy, address: 0, type: uint32, unit: kWh}\n"
                            "      - {name: u2, unit_id: 1, points: [{id: u2.e, address: 0, "
                            "type: uint16, unit: kWh}]}\n"),
     "devices[0]", "unit_id 1 is used twice on this bus", 5),
    ("coil-not-bool", _edit(GOOD, "address: 0, type: uint32", "table: coil, address: 0, type: uint32"),
     "devices[0].units[0].points[0]", "expected type bool, got uint32", 12),
    ("bitfield-without-bit", _edit(GOOD, "type: uint32", "type: bitfield"),
     "devices[0].units[0].points[0]", "expected the bit number 0..15", 12),
    ("parity", _edit(GOOD, "    port: /dev/ttyUSB0\n", "    port: /dev/ttyUSB0\n    parity: X\n"),
     "devices[0].parity", "'N', 'E' or 'O'", 8),
    ("di-unquoted", _edit(GOOD, 'di: "00000000"', "di: 00000000"),
     "devices[1].meters[0].points[0].di", "quoted string of 8 hex digits", 20),
    ("di-unknown", _edit(GOOD, 'di: "00000000"', 'di: "04000401"'),
     "devices[1].meters[0].points[0].di", "expected one of: 00000000 (combined active energy", 20),
    ("meter-address", _edit(GOOD, '"000000123456"', '"12345"'),
     "devices[1].meters[0].address", "quoted string of 12 decimal digits", 18),
    ("topic-hash", _edit(GOOD, '"plant/+/co2"', '"plant/#/co2"'),
     "devices[2].points[0].topic", "expected '#' only as the whole last level", 26),
    ("topic-plus", _edit(GOOD, '"plant/+/co2"', '"plant/a+/co2"'),
     "devices[2].points[0].topic", "expected '+' only as a whole level", 26),
    ("no-client-id", _edit(GOOD, "    client_id: gw1-sensors\n", ""),
     "devices[2].client_id", "required key is missing", 21),
    ("qos-2", _edit(GOOD, "    client_id: gw1-sensors\n", "    client_id: gw1-sensors\n    qos: 2\n"),
     "devices[2].qos", "Input should be 0 or 1", 25),
    ("mqtt-backoff", _edit(GOOD, "    client_id: gw1-sensors\n",
                           "    client_id: gw1-sensors\n    backoff_initial_s: 5\n    backoff_max_s: 1\n"),
     "devices[2]", "backoff_max_s (1.0) must be >= backoff_initial_s (5.0)", 21),
    ("hj-listen", _edit(GOOD, "listen: 0.0.0.0:7001", "listen: 7001"),
     "devices[3].listen", "expected host:port, e.g. 0.0.0.0:7001", 29),
    ("hj-version", _edit(GOOD, "    listen: 0.0.0.0:7001\n", "    listen: 0.0.0.0:7001\n    version: 2005\n"),
     "devices[3].version", "Input should be '2017' or '2025'", 30),
    ("hj-cn", _edit(GOOD, "code: a21026,", "code: a21026, cn: '9999',"),
     "devices[3].points[0].cn", "Input should be '2011', '2051', '2061' or '2031'", 32),
    ("hj-twice", _edit(GOOD, "      - {id: cems.so2, code: a21026, unit: mg/m3}\n",
                       "      - {id: cems.so2, code: a21026, unit: mg/m3}\n"
                       "      - {id: cems.so2b, code: a21026, unit: mg/m3}\n"),
     "devices[3]", "code/field/cn a21026/Rtd/2011 is mapped to two points", 27),
    ("point-id-across-drivers", _edit(GOOD, "id: s.co2", "id: u1.energy"), "devices",
     "point id 'u1.energy' is used by devices 'rs485-1' and 'sensors'", 4),
    ("polling-backoff", _edit(GOOD, "unit_id: 1\n", "unit_id: 1\n        backoff_max_s: 0.1\n"),
     "devices[0].units[0]", "backoff_max_s (0.1) must be >= backoff_initial_s (1.0)", 9),
    ("unknown-driver", _edit(GOOD, "driver: mqtt", "driver: amqp"), "devices[2]",
     "expected tags: 'modbus_tcp', 'modbus_rtu', 'dlt645', 'mqtt', 'hj212'", 21),
]


@pytest.mark.parametrize(("name", "text", "path", "fragment", "line"), BAD, ids=[b[0] for b in BAD])
def test_bad_driver_config_messages(name: str, text: str, path: str, fragment: str,
                                    line: int) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(text, source="bad.yaml")
    shown = "\n".join(map(str, ei.value.issues))
    match = [i for i in ei.value.issues if i.path == path and fragment in i.message]
    assert match, f"expected {path!r} with {fragment!r}, got:\n{shown}"
    assert match[0].line == line, shown
    # pydantic's discriminator tags never leak into the path
    assert not any(t in i.path.split(".") for i in ei.value.issues
                   for t in ("modbus_rtu", "dlt645", "mqtt", "hj212"))


def test_two_buses_on_one_port_are_refused() -> None:
    cfg = parse_config(_edit(GOOD, "/dev/ttyUSB1", "/dev/ttyUSB0"))
    with pytest.raises(ValueError, match="serial port /dev/ttyUSB0 is used by buses 'rs485-1' and "
                                         "'rs485-2'; expected one bus per port"):
        make_sources(cfg.devices, _sink, Metrics())


def test_hj212_devices_share_a_listener() -> None:
    second = (HJ.replace("name: cems", "name: cems-2").replace("88888880000001", "88888880000002")
              .replace("id: cems.so2", "id: cems2.so2"))
    cfg = parse_config(GOOD + second)
    sources = make_sources(cfg.devices, _sink, Metrics())
    assert [s.name for s in sources] == ["rs485-1", "rs485-2", "sensors", "hj212@0.0.0.0:7001"]
