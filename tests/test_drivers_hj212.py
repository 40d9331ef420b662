"""HJ 212 listener against a simulated CEMS data logger over real TCP: flags, replies, garbage,
dropped connections, unknown loggers, protocol version."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

from config._schema import Hj212Device
from drivers.hj212._frame import parse_frame
from drivers.hj212._listener import FLAG_QUALITY, Hj212Listener
from gateway import Quality
from mrv_core._metrics import Metrics
from simulator import Factor, Hj212Logger

from .support import Collector, until

MN = "88888880000001"




def device(**kw: Any) -> Hj212Device:
    cfg: dict[str, Any] = {
        "driver": "hj212", "name": "cems-1", "listen": "127.0.0.1:0", "mn": MN,
        "password": "123456",
        "points": [
            {"id": "stack.dust", "code": "a34013", "unit": "mg/m3"},
            {"id": "stack.so2", "code": "a21026", "unit": "mg/m3"},
            {"id": "stack.nox", "code": "a21002", "unit": "mg/m3"},
        ],
    }
    cfg.update(kw)
    return Hj212Device.model_validate(cfg)




@pytest.fixture
async def listener() -> AsyncIterator[tuple[Hj212Listener, Collector, Metrics]]:
    sink, m = Collector(), Metrics()
    lst = Hj212Listener([device()], sink, m)
    task = asyncio.create_task(lst.run())
    await asyncio.wait_for(lst.ready.wait(), 5)
    yield lst, sink, m
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_values_flags_and_replies(listener: tuple[Hj212Listener, Collector, Metrics]) -> None:
    lst, sink, m = listener
    lg = Hj212Logger("127.0.0.1", lst.port, mn=MN, interval_s=0.2,
                     factors={"a34013": Factor(12.5), "a21026": Factor(35.0, flag="D"),
                              "a21002": Factor(80.25, flag="M")})
    await lg.start()
    try:
        await until(lambda: lg.replied >= 3)
    finally:
        await lg.stop()
    dust, so2, nox = sink.of("stack.dust"), sink.of("stack.so2"), sink.of("stack.nox")
    assert dust and all(r.value == 12.5 and r.quality == 0 for r in dust)
    assert so2 and all(r.value == 35.0 and r.quality == Quality.DEVICE_FAULT for r in so2)
    assert nox and all(r.value == 80.25 and r.quality == Quality.MAINTENANCE for r in nox)
    assert all(r.unit == "mg/m3" and r.source == "hj212:cems-1" for r in sink.readings)
    # every packet that asked for an answer got the 9014 for its own QN
    assert lg.replied_qns == lg.sent_qns[:len(lg.replied_qns)]
    assert m.component("device:cems-1").state == "ok"
    # DataTime is local time (+8 h) at second resolution: readings sit within 2 s of now (UTC)
    import time
    assert abs(dust[-1].ts_ns - time.time_ns()) < 3e9


def test_every_hj212_flag_has_its_quality() -> None:
    assert FLAG_QUALITY == {
        "N": 0, "B": Quality.COMM_FAULT, "D": Quality.DEVICE_FAULT, "F": Quality.STOPPED,
        "M": Quality.MAINTENANCE, "S": Quality.MANUAL, "C": Quality.CALIBRATION,
        "T": Quality.DEVICE_OVER_RANGE}


@pytest.mark.parametrize("flag", ["B", "F", "S", "C", "T", "X"])
async def test_flags_reach_the_reading(listener: tuple[Hj212Listener, Collector, Metrics],
                                       flag: str) -> None:
    lst, sink, m = listener
    lg = Hj212Logger("127.0.0.1", lst.port, mn=MN, interval_s=0.2,
                     factors={"a34013": Factor(1.0, flag=flag)})
    await lg.start()
    try:
        await until(lambda: len(sink.of("stack.dust")) >= 1)
    finally:
        await lg.stop()
    expected = FLAG_QUALITY.get(flag, int(Quality.DEVICE_FAULT))
    assert {r.quality for r in sink.of("stack.dust")} == {expected}
    assert (m.counters["hj212_unknown_flag"] > 0) == (flag == "X")


async def test_garbage_and_bad_crc_are_counted_and_the_connection_stays_up(
        listener: tuple[Hj212Listener, Collector, Metrics], caplog: pytest.LogCaptureFixture) -> None:
    lst, sink, m = listener
    lg = Hj212Logger("127.0.0.1", lst.port, mn=MN, interval_s=0.1)
    await lg.start()
    try:
        await until(lambda: lg.replied >= 2)
        lg.garbage_next, lg.bad_crc_next = 3, 2
        await until(lambda: lg.bad_crc_sent == 2 and lg.replied >= 6)
    finally:
        await lg.stop()
    assert m.counters["hj212_bad_frames"] >= 2  # the two wrong CRCs
    assert m.counters["hj212_garbage_bytes"] >= 3 * 40
    assert lg.connects == 1 and lst.connections == 1  # never disconnected
    # the damaged frames were not read as data: at most one reading per good packet and point
    assert lg.replied <= len(sink.of("stack.dust")) <= lg.sent
    assert any("damaged frame" in r.getMessage() for r in caplog.records)


async def test_dropped_connection_reconnects(listener: tuple[Hj212Listener, Collector, Metrics]) -> None:
    lst, sink, m = listener
    lg = Hj212Logger("127.0.0.1", lst.port, mn=MN, interval_s=0.1, reconnect_s=0.1)
    await lg.start()
    try:
        await until(lambda: lg.replied >= 2)
        lg.drop()
        await until(lambda: lg.connects >= 2)
        before = lg.replied
        await until(lambda: lg.replied >= before + 3)
    finally:
        await lg.stop()
    assert lst.connections >= 2
    assert all(not math.isnan(r.value) for r in sink.readings)
    assert m.component("device:cems-1").state == "ok"


async def test_unknown_mn_and_wrong_password_are_ignored_unanswered(
        listener: tuple[Hj212Listener, Collector, Metrics]) -> None:
    lst, sink, m = listener
    stranger = Hj212Logger("127.0.0.1", lst.port, mn="99999990000009", interval_s=0.1,
                           reply_timeout_s=0.2)
    liar = Hj212Logger("127.0.0.1", lst.port, mn=MN, pw="000000", interval_s=0.1,
                       reply_timeout_s=0.2)
    await stranger.start()
    await liar.start()
    try:
        await until(lambda: stranger.sent >= 3 and liar.sent >= 3)
    finally:
        await stranger.stop()
        await liar.stop()
    assert sink.readings == []
    assert stranger.replied == 0 and liar.replied == 0
    assert m.counters["hj212_unknown_mn"] >= 3 and m.counters["hj212_bad_password"] >= 3


async def test_version_2025_reply_flag() -> None:
    sink, m = Collector(), Metrics()
    lst = Hj212Listener([device(version="2025")], sink, m)
    task = asyncio.create_task(lst.run())
    await asyncio.wait_for(lst.ready.wait(), 5)
    reader, writer = await asyncio.open_connection("127.0.0.1", lst.port)
    try:
        lg = Hj212Logger("127.0.0.1", lst.port, mn=MN, version="2025")
        from datetime import UTC, datetime
        qn, frame = lg.packet(datetime.now(UTC))
        writer.write(frame)
        await writer.drain()
        reply = await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
        pkt, _ = parse_frame(reply)
        assert pkt is not None and pkt.cn == "9014" and pkt.qn == qn
        assert pkt.flag == 8 and pkt.version_code == 2  # 2025, no answer requested
        assert len(sink.readings) == 3 and m.counters["hj212_version_mismatch"] == 0
    finally:
        writer.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_silent_logger_gets_gap_readings_and_recovers() -> None:
    sink, m = Collector(), Metrics()
    # a gap after 1 s of silence: a logger sending every 0.1 s stalled by a loaded machine
    # for less than that is not taken for silent after it recovered
    lst = Hj212Listener([device(stale_after_s=1.0)], sink, m)
    task = asyncio.create_task(lst.run())
    await asyncio.wait_for(lst.ready.wait(), 5)
    lg = Hj212Logger("127.0.0.1", lst.port, mn=MN, interval_s=0.1)
    try:
        await until(lambda: m.component("device:cems-1").state == "failing", 10)
        gaps = [r for r in sink.readings if r.quality == Quality.COMM_FAULT]
        assert len(gaps) >= 3 and all(math.isnan(r.value) for r in gaps)
        await lg.start()
        await until(lambda: m.component("device:cems-1").state == "ok", 5)
        await until(lambda: lg.replied >= 3)
        assert sink.readings[-1].quality == 0
    finally:
        await lg.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_two_devices_with_one_mn_on_one_listener_are_rejected() -> None:
    with pytest.raises(ValueError, match="same MN"):
        Hj212Listener([device(), device(name="cems-2")], Collector(), Metrics())
