"""Limits on the drivers' untrusted input (issue 11, items 1, 12, 13): bounded before it is
parsed, every bad input a typed, counted rejection, and the gateway goes on."""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import subprocess
import sys
import urllib.request
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config._schema import MqttPoint
from drivers.mqtt._payload import (
    MAX_JSON_DEPTH,
    TS_NS_MAX,
    PayloadError,
    compile_points,
    json_depth,
    readings_from,
    to_ts_ns,
    to_value,
)
from simulator import Anvil, Mosquitto, provision
from simulator._plant import free_port

from .conftest import ROOT, GatewayProcess
from .support import until

# --------------------------------------------------------------------------- the recursion limit


def test_no_import_of_ours_leaves_the_recursion_limit_raised() -> None:
    """py_ecc (under eth_account / web3) raises the limit to 100,000 when imported; with it a
    deep JSON payload overflows the C stack (SIGSEGV) instead of raising RecursionError."""
    code = (
        "import sys\n"
        "default = sys.getrecursionlimit()\n"
        "import gateway._cli, gateway._daemon, ledger_client._mrvctl, ledger_client, control, "
        "control._service, control._cli, drivers, config, cleaning, simulator\n"
        "import py_ecc, eth_account, web3\n"  # what the ledger client pulls in
        "print(default, sys.getrecursionlimit())\n"
        "import json\n"
        "try:\n"
        "    json.loads('[' * 65536)\n"
        "except RecursionError:\n"
        "    print('RecursionError')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]  # -11 is the SIGSEGV of the issue
    default, after = out.stdout.split()[:2]
    assert int(after) == int(default)
    assert out.stdout.split()[2] == "RecursionError"


# --------------------------------------------------------------------------- MQTT payloads


def _mappings(**kw: Any) -> list[Any]:
    return compile_points([MqttPoint(id="p", topic="t", value="v", unit="u", **kw)])


def _read(payload: bytes, max_bytes: int = 65536, **kw: Any) -> list[float]:
    rs, problems = readings_from("t", payload, _mappings(**kw), source="s", now_ns=1,
                                 max_bytes=max_bytes)
    if problems:
        raise PayloadError(problems[0])
    return [r.value for r in rs]


def _nested(depth: int) -> bytes:
    """An object whose value ``v`` is 1 and which also holds ``depth`` levels of nesting."""
    if depth < 1:
        raise ValueError(depth)
    inner = "[" * (depth - 1) + "]" * (depth - 1)
    return ('{"v": 1, "deep": ' + (inner or "0") + "}").encode()


def test_the_issue_payload_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(PayloadError, match=r"nested 65536 deep, expected at most 32"):
        _read(b"[" * 65536)
    with pytest.raises(PayloadError, match=r"nested 100000 deep"):
        _read(b'{"v":' * 100_000, max_bytes=1 << 20)


def test_depth_limit_is_exact_and_strings_do_not_count() -> None:
    assert json_depth(_nested(MAX_JSON_DEPTH)) == MAX_JSON_DEPTH
    assert _read(_nested(MAX_JSON_DEPTH)) == [1.0]
    with pytest.raises(PayloadError, match="nested 33 deep"):
        _read(_nested(MAX_JSON_DEPTH + 1))
    brackets_in_strings = json.dumps({"v": 2, "s": "[{" * 5000, "e": "\\\"[[[", "k": "]"}).encode()
    assert _read(brackets_in_strings) == [2.0]


def _depth(x: object) -> int:
    """Nesting depth of a decoded JSON value (independent of the byte scan)."""
    if isinstance(x, list):
        return 1 + max((_depth(i) for i in x), default=0)
    if isinstance(x, dict):
        return 1 + max((_depth(i) for i in x.values()), default=0)
    return 0


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=40)


@settings(max_examples=400, deadline=None)
@given(_json, st.booleans())
def test_depth_scan_agrees_with_the_decoded_document(doc: object, ascii_only: bool) -> None:
    data = json.dumps(doc, ensure_ascii=ascii_only).encode()
    assert json_depth(data) == _depth(doc)


def test_not_utf8_is_refused_before_the_scan() -> None:
    with pytest.raises(PayloadError, match="UTF-8"):
        _read(json.dumps({"v": 1}).encode("utf-16"))
    assert _read(b"\xef\xbb\xbf" + json.dumps({"v": 3}).encode()) == [3.0]  # a BOM is allowed


@pytest.mark.parametrize("raw", [10**309, -(10**400), "1e309", 1e308 * 10],
                         ids=["10**309", "-10**400", "str-1e309", "inf"])
def test_values_beyond_float64_are_payload_errors(raw: object) -> None:
    with pytest.raises(PayloadError, match="expected a"):
        to_value(raw, "v")


def test_huge_integer_in_the_payload_is_a_payload_error() -> None:
    with pytest.raises(PayloadError, match="float64"):
        _read(b'{"v": 1' + b"0" * 400 + b"}")
    with pytest.raises(PayloadError, match="JSON"):  # beyond Python's 4,300 digits
        _read(b'{"v": 1' + b"0" * 5000 + b"}")


_MAX_ISO = "2262-04-11T23:47:16Z"


@pytest.mark.parametrize(("raw", "unit"), [
    (TS_NS_MAX + 1, "ns"),
    (10**400, "ns"),
    (10**400, "s"),
    (10**12, "s"),  # year ~33658
    (9.2e18 / 1e9 * 1.01, "s"),
    (1e300, "s"),  # finite, but not once scaled to ns
    (253402300799, "s"),  # 9999-12-31T23:59:59Z
    ("9999-12-31T23:59:59Z", "iso8601"),
    ("9999-12-31T23:59:59+00:00", "auto"),
    ("2262-04-11T23:47:17Z", "iso8601"),
    ("0001-01-01T00:00:00+01:00", "iso8601"),
    ("1969-12-31T23:59:59Z", "auto"),
    (-1, "s"),
], ids=lambda x: str(x)[:24])
def test_timestamps_outside_the_record_format_are_payload_errors(raw: object, unit: str) -> None:
    with pytest.raises(PayloadError, match=r"out of range|outside|positive|too large"):
        to_ts_ns(raw, unit, "t")


def test_timestamp_range_edges_are_accepted() -> None:
    assert to_ts_ns(TS_NS_MAX, "ns", "t") == TS_NS_MAX
    assert to_ts_ns(1, "ns", "t") == 1
    iso = to_ts_ns(_MAX_ISO, "iso8601", "t")
    edge = datetime(2262, 4, 11, 23, 47, 16, tzinfo=UTC)
    assert iso == int(edge.timestamp()) * 10**9 <= TS_NS_MAX


def test_year_9999_message_is_refused_at_parse() -> None:
    payload = json.dumps({"v": 1, "ts": "9999-12-31T00:00:00Z"}).encode()
    with pytest.raises(PayloadError, match="outside"):
        _read(payload, timestamp="ts")


# --------------------------------------------------------------------------- a running gateway


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()
            out[name] = float(value)
    return out


def _health(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            body: dict[str, Any] = json.loads(r.read())
            return body
    except OSError:
        return {}


def _committed(outbox: Path, point: str) -> list[float]:
    if not outbox.exists():
        return []
    with closing(sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT value FROM records WHERE point_id = ? ORDER BY seq",
                          (point,)).fetchall()
    return [math.nan if v is None else float(v) for (v,) in rows]


async def _started(gp: GatewayProcess, port: int) -> None:
    def subscribed() -> bool:
        assert gp.proc is not None and gp.proc.poll() is None, gp.log.read_text()[-3000:]
        comp = _health(port).get("components", {}).get("device:sensors", {})
        return bool(comp.get("state") == "ok")
    await until(subscribed, timeout=60, poll_s=0.2)


async def test_a_running_gateway_survives_the_issue_message_and_goes_on(
        tmp_path: Path, anvil: Anvil, mosquitto: Mosquitto,
        gateway_process: type[GatewayProcess]) -> None:
    """Item 1 end to end: 65,536 ``[`` (QoS 1) on a sensor topic, then a year-9999 timestamp
    (item 4 at the parser): both refused, counted and acknowledged (the broker does not send
    them again after a restart); the 30 valid messages after them are all committed."""
    health = free_port()
    dev = {"driver": "mqtt", "name": "sensors", "host": "127.0.0.1", "port": mosquitto.port,
           "client_id": "gw-limits", "points": [
               {"id": "stack.co2", "topic": "plant/stack/co2", "value": "v", "timestamp": "ts",
                "unit": "ppm"}]}
    p = await provision(tmp_path / "gw", anvil.url, devices=[dev], batch_interval_s=0.5,
                        health_listen=f"127.0.0.1:{health}")
    outbox = p.config.parent / "data" / "outbox.sqlite"
    gp = gateway_process(p.config, tmp_path / "gw.log").start()
    await _started(gp, health)
    now = datetime.now(UTC)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="pub") as c:
        await c.publish("plant/stack/co2", b"[" * 65536, qos=1)
        await c.publish("plant/stack/co2",
                        json.dumps({"v": -1, "ts": "9999-12-31T00:00:00Z"}).encode(), qos=1)
        for i in range(1, 31):
            await c.publish("plant/stack/co2",
                            json.dumps({"v": i, "ts": now.isoformat()}).encode(), qos=1)
    await until(lambda: len(_committed(outbox, "stack.co2")) >= 30, timeout=60, poll_s=0.2)
    assert _committed(outbox, "stack.co2") == [float(i) for i in range(1, 31)]
    assert gp.proc is not None and gp.proc.poll() is None
    m = _metrics(health)
    assert m["mrv_mqtt_malformed_total"] == 2
    assert m["mrv_mqtt_messages_total"] == 32
    assert _health(health)["components"]["device:sensors"]["state"] == "ok"
    assert gp.terminate() == 0

    # Acknowledged: a restarted gateway (same persistent session) is not sent them again.
    gp = gateway_process(p.config, tmp_path / "gw2.log").start()
    await _started(gp, health)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="pub") as c:
        await c.publish("plant/stack/co2", json.dumps({"v": 31, "ts": now.isoformat()}).encode(),
                        qos=1)
    await until(lambda: len(_committed(outbox, "stack.co2")) >= 31, timeout=60, poll_s=0.2)
    m = _metrics(health)
    assert m.get("mrv_mqtt_malformed_total", 0) == 0
    assert m["mrv_mqtt_messages_total"] == 1
    assert gp.terminate() == 0


# --------------------------------------------------------------------------- HJ 212

_HJ_MN = "88888880000001"
_HJ_OK = ("QN=20260101120000000;ST=22;CN=2011;PW=123456;MN=88888880000001;Flag=5;"
          "CP=&&DataTime=20260101120000;a34013-Rtd=12.5,a34013-Flag=N&&")


def test_hj212_integer_fields_are_bounded_before_int() -> None:
    from drivers.hj212._frame import PacketError, _int_field, parse_segment

    for text in ("9" * 5000, "0" * 5000, "1" * 4):
        with pytest.raises(PacketError, match="Flag"):
            _int_field({"Flag": text}, "Flag", 255)
    assert _int_field({"PNUM": "0009"}, "PNUM", 9999) == 9
    with pytest.raises(PacketError, match="longer than 64"):
        parse_segment(_HJ_OK.replace("Flag=5", "Flag=" + "9" * 5000))
    with pytest.raises(PacketError, match="longer than 64"):
        parse_segment(_HJ_OK.replace("QN=20260101120000000", "QN=" + "1" * 900))


def test_hj212_reply_that_cannot_be_framed_is_a_packet_error() -> None:
    from dataclasses import replace

    from drivers.hj212._frame import PacketError, build_data_reply, parse_segment

    p = parse_segment(_HJ_OK)
    assert build_data_reply(p).startswith(b"##")
    for huge in (replace(p, qn="1" * 1100), replace(p, mn="é"), replace(p, pw="1\r\n2")):
        with pytest.raises(PacketError, match="reply"):
            build_data_reply(huge)


@pytest.mark.parametrize("when", ["99991231235959", "19691231235959", "22620412080000"])
def test_hj212_data_time_outside_the_record_format_is_refused(when: str) -> None:
    from drivers.hj212._frame import PacketError, data_time_ns, parse_segment

    with pytest.raises(PacketError, match="outside"):
        data_time_ns(parse_segment(_HJ_OK.replace("20260101120000;", when + ";")))


async def test_hj212_listener_counts_bad_input_and_the_connection_goes_on() -> None:
    """Every kind of bad packet on one connection, then a good one: each is counted, no
    exception leaves the listener, the connection stays up and the good packet is answered."""
    from config._schema import Hj212Device
    from drivers.hj212._frame import build_frame, parse_frame
    from drivers.hj212._listener import Hj212Listener
    from mrv_core._metrics import Metrics

    from .support import Collector

    dev = Hj212Device.model_validate({
        "driver": "hj212", "name": "cems-1", "listen": "127.0.0.1:0", "mn": _HJ_MN,
        "max_frame_len": 9999,
        "points": [{"id": "stack.dust", "code": "a34013", "unit": "mg/m3"}]})
    sink, m = Collector(), Metrics()
    lst = Hj212Listener([dev], sink, m)
    task = asyncio.create_task(lst.run())
    try:
        await asyncio.wait_for(lst.ready.wait(), 5)
        reader, writer = await asyncio.open_connection("127.0.0.1", lst.port)
        bad = [
            _HJ_OK.replace("Flag=5", "Flag=" + "9" * 5000),  # item 12: > 4,300 digits
            _HJ_OK.replace("QN=20260101120000000", "QN=" + "7" * 1100),  # item 12: reply > 1 KiB
            _HJ_OK.replace("20260101120000;", "99991231235959;"),  # beyond int64 ns
            _HJ_OK.replace("Flag=5", "Flag=7;PNUM=" + "1" * 3000 + ";PNO=1"),
        ]
        # False starts, then "#" beyond one packet's length, then the good packet: one write.
        stream = b"".join(build_frame(s, max_len=9999) for s in bad) + b"##x" * 5000
        stream += b"#" * 10_050 + build_frame(_HJ_OK)
        writer.write(stream)
        await writer.drain()
        reply = await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)
        answer, _ = parse_frame(reply)
        assert answer is not None and answer.cn == "9014" and answer.qn == "20260101120000000"
        assert [r.value for r in sink.of("stack.dust")] == [12.5]
        assert m.counters["hj212_bad_packets"] == len(bad)
        assert lst.open_connections == 1
        writer.close()
        await writer.wait_closed()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# --------------------------------------------------------------------------- Modbus replies


def _mbap_reply(kind: str, tid: int, uid: int, fc: int, count: int) -> bytes:
    import struct

    data = b"\x00\x01" * count
    if fc in (1, 2):  # coils / discrete inputs: bits packed 8 to a byte
        data = b"\x01" * ((count + 7) // 8 + (3 if kind == "more" else 0))
    elif kind == "more":  # a byte count of more registers than were asked for
        data = b"\x00\x01" * (count + 5)
    if kind == "wrong-fc":  # a reply for another table (input registers / discrete inputs)
        fc = {3: 4, 1: 2}[fc]
    return struct.pack(">HHHBBB", tid, 0, 3 + len(data), uid, fc, len(data)) + data


@pytest.mark.parametrize(("kind", "table"), [("more", "holding"), ("wrong-fc", "holding"),
                                             ("more", "coil"), ("wrong-fc", "coil")])
async def test_modbus_reply_that_does_not_answer_the_request_is_refused(kind: str,
                                                                        table: str) -> None:
    """pymodbus pairs a reply with its request by transaction id only: a reply with another
    function code or more registers than asked is flagged DEVICE_FAULT and counted, not read."""
    import struct

    from config._schema import ModbusTcpDevice
    from drivers.modbus._io import ModbusTcpPoller
    from gateway import Quality
    from mrv_core._metrics import Metrics

    closed = asyncio.Event()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        served = 0
        try:
            while True:
                tid, _, length, uid = struct.unpack(">HHHB", await r.readexactly(7))
                pdu = await r.readexactly(length - 1)
                count = struct.unpack(">H", pdu[3:5])[0]
                w.write(_mbap_reply(kind if served == 0 else "good", tid, uid, pdu[0], count))
                served += 1
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()
            closed.set()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    dev = ModbusTcpDevice.model_validate({
        "driver": "modbus_tcp", "name": "d", "host": "127.0.0.1", "port": port, "unit_id": 1,
        "timeout_s": 2, "retries": 0,
        "points": [{"id": "a", "table": table, "address": 0,
                    "type": "uint32" if table == "holding" else "bool", "unit": "x"}]})
    m = Metrics()

    async def sink(rs: list[Any]) -> None:
        raise AssertionError("not used")

    poller = ModbusTcpPoller(dev, sink, m)
    client = poller._client()
    try:
        assert await client.connect()
        first = await poller.poll_once(client)
        assert [(math.isnan(r.value), r.quality) for r in first] == [(True, Quality.DEVICE_FAULT)]
        assert m.counters["modbus_bad_responses"] == 1
        second = await poller.poll_once(client)  # the connection goes on
        good = 0x00010001 if table == "holding" else 1.0
        assert [(r.value, r.quality) for r in second] == [(good, 0)]
    finally:
        client.close()
        await asyncio.wait_for(closed.wait(), 10)
        srv.close()
        await srv.wait_closed()


async def test_hj212_listener_bounds_its_open_connections() -> None:
    from config._schema import Hj212Device
    from drivers.hj212._frame import build_frame, parse_frame
    from drivers.hj212._listener import MAX_CONNECTIONS, Hj212Listener
    from mrv_core._metrics import Metrics

    from .support import Collector

    assert MAX_CONNECTIONS == 64
    dev = Hj212Device.model_validate({
        "driver": "hj212", "name": "cems-1", "listen": "127.0.0.1:0", "mn": _HJ_MN,
        "points": [{"id": "stack.dust", "code": "a34013", "unit": "mg/m3"}]})
    sink, m = Collector(), Metrics()
    lst = Hj212Listener([dev], sink, m)
    lst.max_connections = 3
    task = asyncio.create_task(lst.run())
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        await asyncio.wait_for(lst.ready.wait(), 5)
        for _ in range(3):
            conns.append(await asyncio.open_connection("127.0.0.1", lst.port))
        await until(lambda: lst.open_connections == 3)
        extra_r, extra_w = await asyncio.open_connection("127.0.0.1", lst.port)
        assert await asyncio.wait_for(extra_r.read(), 10) == b""  # closed by the listener
        extra_w.close()
        assert m.counters["hj212_refused_connections"] == 1
        r, w = conns[0]  # the ones it kept work
        w.write(build_frame(_HJ_OK))
        answer, _ = parse_frame(await asyncio.wait_for(r.readuntil(b"\r\n"), 10))
        assert answer is not None and answer.cn == "9014"
    finally:
        for _, w in conns:
            w.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# --------------------------------------------------------------------------- properties


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=-(2**70), max_value=2**70))
def test_epoch_ns_is_accepted_exactly_within_the_range(n: int) -> None:
    if 1 <= n <= 2**63 - 1:
        assert to_ts_ns(n, "ns", "t") == n
    else:
        with pytest.raises(PayloadError):
            to_ts_ns(n, "ns", "t")


@settings(max_examples=500, deadline=None)
@given(st.datetimes(min_value=datetime(1970, 1, 1, 0, 0, 1), max_value=datetime(9999, 12, 31),
                    timezones=st.just(UTC)))
def test_iso_times_are_accepted_exactly_within_the_range(t: datetime) -> None:
    import calendar

    ns = calendar.timegm(t.utctimetuple()) * 10**9 + t.microsecond * 1000  # independent of ours
    text = t.isoformat()
    if ns <= 2**63 - 1:
        assert to_ts_ns(text, "iso8601", "t") == ns
    else:
        with pytest.raises(PayloadError, match="outside"):
            to_ts_ns(text, "iso8601", "t")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789", min_size=1, max_size=6000), st.sampled_from([255, 9999]))
def test_hj212_integer_fields_are_ints_in_range_or_packet_errors(text: str, limit: int) -> None:
    from drivers.hj212._frame import PacketError, _int_field

    if len(text) <= len(str(limit)) and int(text) <= limit:
        assert _int_field({"F": text}, "F", limit) == int(text)
    else:
        with pytest.raises(PacketError):
            _int_field({"F": text}, "F", limit)
