"""Acceptance: a whole simulated plant, every driver at once, faults injected on every kind of
device; healthy devices keep their poll rate, every fault is flagged, every device recovers.

The plant: 50 Modbus TCP meters (5 pymodbus servers x 10 unit ids), 3 Modbus RTU units on one
pty line, one DL/T 645 meter on another pty, an MQTT sensor group on a real Mosquitto and an
HJ 212 data logger connecting to the listener. All sources come from `make_sources` and run
under the daemon's supervisor, as in production.

Timeline: warm-up, then a fault window (FAULT_S) in which, at the same time: one Modbus server
goes down (10 devices), one unit stops answering, one answers with exceptions, one server keeps
dropping its connections, one RTU unit is silent, the DL/T 645 line carries noise, the MQTT
broker restarts, the HJ 212 logger sends garbage and damaged frames and loses its connection;
a last Modbus unit never answers at all. Then every fault ends and the devices must recover.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from config._schema import Device
from drivers import make_sources
from drivers.dlt645._io import Dlt645BusPoller
from drivers.hj212._listener import Hj212Listener
from drivers.modbus._io import ModbusRtuBusPoller, ModbusTcpPoller
from drivers.mqtt._source import MqttSource
from gateway import Quality, Reading
from gateway._daemon import supervise
from mrv_core._aio import cancel_and_wait
from mrv_core._metrics import Metrics
from simulator import (
    Dlt645Line,
    Dlt645SimMeter,
    ElectricityMeter,
    GasFlowMeter,
    Hj212Logger,
    ModbusPlant,
    Mosquitto,
    MqttSensorGroup,
    RtuLine,
    SimSensor,
)
from tests.support import LoopLag

INTERVAL = 0.5
WARMUP_S, FAULT_S, RECOVER_S = 3.0, 6.0, 6.0
B = Quality.COMM_FAULT
D = Quality.DEVICE_FAULT


class Sink:
    def __init__(self) -> None:
        self.by_point: dict[str, list[Reading]] = defaultdict(list)

    async def __call__(self, rs: list[Reading]) -> None:
        for r in rs:
            self.by_point[r.point_id].append(r)

    def between(self, point: str, t0: int, t1: int) -> list[Reading]:
        return [r for r in self.by_point[point] if t0 <= r.ts_ns < t1]


def meter_points(prefix: str, gas: bool) -> list[dict[str, Any]]:
    if gas:
        return [{"id": f"{prefix}.flow", "table": "input", "address": 0, "type": "float32",
                 "unit": "Nm3/h"},
                {"id": f"{prefix}.volume", "table": "input", "address": 2, "type": "uint32",
                 "scale": 0.1, "unit": "Nm3"}]
    return [{"id": f"{prefix}.energy", "address": 0, "type": "uint32", "scale": 0.01, "unit": "kWh"},
            {"id": f"{prefix}.power", "address": 2, "type": "float32", "unit": "kW"},
            {"id": f"{prefix}.voltage", "address": 4, "type": "uint16", "scale": 0.1, "unit": "V"}]


# Timeouts. The simulators run in the test's event loop, so on a loaded machine (CPU
# contention, a GC pause) a healthy device's reply can come hundreds of ms late: in CI a reply
# outran 0.25 s and then 0.45 s and was flagged. A device whose timeout is not what is tested
# gets a long one (a late reply then costs a tick, it is not flagged); the devices that time out
# on purpose keep short ones: the one that never answers (its probes must fit in a poll
# period), the silent RTU unit (it must not hold the line for long) and the silent TCP unit.
POLLING = {"interval_s": INTERVAL, "timeout_s": 2.0, "retries": 0, "breaker_failures": 3,
           "backoff_initial_s": 0.5, "backoff_max_s": 1.0}
SHORT_TIMEOUT = {"m1-5": 0.45, "m1-3": 1.0, "rtu1": 1.0, "rtu2": 0.15, "rtu3": 1.0}


async def until(cond: Callable[[], bool], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def now_ns() -> int:
    import time
    return time.time_ns()


async def test_plant_with_every_driver_and_every_fault(mosquitto: Mosquitto) -> None:
    # ---- the simulated plant
    plants = [ModbusPlant({u: (GasFlowMeter(seed=10 * s + u) if u % 2 == 0
                               else ElectricityMeter(seed=10 * s + u)) for u in range(1, 11)})
              for s in range(5)]
    for p in plants:
        await p.start()
    rtu = RtuLine({1: ElectricityMeter(seed=91), 2: ElectricityMeter(seed=92),
                   3: ElectricityMeter(seed=93)})
    dlt = Dlt645Line([Dlt645SimMeter(address="000000123456")])
    await rtu.start()
    await dlt.start()

    # ---- the gateway's configuration
    cfgs: list[dict[str, Any]] = []
    for s, plant in enumerate(plants):
        for u in range(1, 11):
            name = f"m{s}-{u}"
            cfgs.append({"driver": "modbus_tcp", "name": name, "host": "127.0.0.1",
                         "port": plant.port, "unit_id": u, **POLLING,
                         "timeout_s": SHORT_TIMEOUT.get(name, POLLING["timeout_s"]),
                         "points": meter_points(name, gas=u % 2 == 0)})
    cfgs.append({"driver": "modbus_rtu", "name": "rs485-1", "port": rtu.path, "baudrate": 19200,
                 "units": [{"name": f"rtu{u}", "unit_id": u, **POLLING,
                            "timeout_s": SHORT_TIMEOUT[f"rtu{u}"],
                            "points": meter_points(f"rtu{u}", gas=False)} for u in (1, 2, 3)]})
    cfgs.append({"driver": "dlt645", "name": "rs485-2", "port": dlt.path, "inter_frame_s": 0.005,
                 "meters": [{"name": "dlt", "address": "000000123456", **POLLING,
                             "timeout_s": 1.0,  # line noise: no frame, a timeout all the same
                             "points": [{"id": "dlt.energy", "di": "00000000"},
                                        {"id": "dlt.power", "di": "02030000"},
                                        {"id": "dlt.voltage", "di": "02010100"}]}]})
    cfgs.append({"driver": "mqtt", "name": "sensors", "host": "127.0.0.1", "port": mosquitto.port,
                 "client_id": "gw-plant-sensors", "backoff_initial_s": 0.2, "backoff_max_s": 1.0,
                 "stale_after_s": 1.0,
                 "points": [{"id": "stack.co2", "topic": "plant/+/cems", "value": "data.co2",
                             "timestamp": "ts", "unit": "%"},
                            {"id": "boiler.t", "topic": "plant/boiler/temp", "value": "data.t",
                             "unit": "degC"}]})
    cfgs.append({"driver": "hj212", "name": "cems", "listen": "127.0.0.1:0",
                 "mn": "88888880000001", "stale_after_s": 1.5,
                 "points": [{"id": "cems.dust", "code": "a34013", "unit": "mg/m3"},
                            {"id": "cems.so2", "code": "a21026", "unit": "mg/m3"}]})
    from pydantic import TypeAdapter
    devices = [TypeAdapter(Device).validate_python(c) for c in cfgs]

    sink, m = Sink(), Metrics()
    sources = make_sources(devices, sink, m)
    tcp = {s.name: s for s in sources if isinstance(s, ModbusTcpPoller)}
    (rtu_src,) = [s for s in sources if isinstance(s, ModbusRtuBusPoller)]
    (dlt_src,) = [s for s in sources if isinstance(s, Dlt645BusPoller)]
    (mqtt_src,) = [s for s in sources if isinstance(s, MqttSource)]
    (hj_src,) = [s for s in sources if isinstance(s, Hj212Listener)]
    assert len(tcp) == 50

    # a device that never answers, from the start
    plants[1].models[5].faults.silent = True
    tasks = [asyncio.create_task(supervise(f"source:{s.name}", s.run, m, initial_s=0.1))
             for s in sources]
    await asyncio.wait_for(hj_src.ready.wait(), 5)
    sensors = await MqttSensorGroup("127.0.0.1", mosquitto.port,
                                    [SimSensor("plant/stack1/cems", {"co2": (11.0, 0.1)}),
                                     SimSensor("plant/boiler/temp", {"t": (180.0, 0.5)})],
                                    interval_s=0.1).start()
    logger = await Hj212Logger("127.0.0.1", hj_src.port, interval_s=0.25, reconnect_s=0.2).start()
    r0 = 0  # the end of the faults (set below)

    def recovered(point: str) -> bool:  # its last three readings are good values
        tail = sink.between(point, r0, now_ns())[-3:]
        return len(tail) == 3 and all(r.quality == 0 and not math.isnan(r.value) for r in tail)

    def recovery_points() -> list[str]:
        return [src.points[0].id for n, src in tcp.items() if n != "m1-5"] + [
            "rtu2.energy", "dlt.energy", "dlt.power", "stack.co2", "boiler.t", "cems.dust",
            "cems.so2"]

    loop = asyncio.get_running_loop()
    lag = LoopLag()
    await lag.__aenter__()
    try:
        t_start = loop.time()
        # the sleeps below ARE the scenario: a plant running, faults lasting, recovery time
        await asyncio.sleep(WARMUP_S)

        # ---- the fault window
        f0 = now_ns()
        await plants[0].stop()  # ten devices lose their server
        plants[1].models[3].faults.silent = True  # timeouts
        plants[1].models[4].faults.exception = 4  # SERVER_DEVICE_FAILURE
        rtu.units[2].faults.silent = True
        dlt.meters["000000123456"].faults.garbage = True
        logger.garbage_next, logger.bad_crc_next = 3, 2
        await asyncio.to_thread(mosquitto.stop)
        for _ in range(int(FAULT_S / 2)):
            await asyncio.sleep(1.0)
            plants[2].drop_connections()  # a flaky network to the third server
            logger.drop() if _ == 0 else None
            await asyncio.sleep(1.0)
            if _ == 0:
                await asyncio.to_thread(mosquitto.start)  # the broker is back after ~2 s
        f1 = now_ns()

        # ---- every fault ends (but the device that never answers)
        await plants[0].start()
        plants[1].models[3].faults.silent = False
        plants[1].models[4].faults.exception = None
        rtu.units[2].faults.silent = False
        dlt.meters["000000123456"].faults.garbage = False
        r0 = now_ns()
        await asyncio.sleep(RECOVER_S)
        # recovered: waited for (a late reply on a busy machine can still flag a reading)
        try:
            await until(lambda: all(recovered(pid) for pid in recovery_points()), 20)
        except AssertionError:
            pass  # the asserts below say which device did not recover
        elapsed = loop.time() - t_start
    finally:
        await lag.__aexit__()
        await sensors.stop()
        await logger.stop()
        await cancel_and_wait(tasks)  # as the daemon stops its sources
        for p in plants:
            await p.stop()
        await rtu.stop()
        await dlt.stop()

    expected = elapsed / INTERVAL
    lost = lag.ticks_lost(INTERVAL)  # poll ticks a busy machine took away (see LoopLag)
    seen = f"{elapsed:.1f} s, {expected:.1f} ticks, {lost} lost to lag; {lag}"

    def counts(lp: Any) -> str:
        return (f"polls {lp.polls}, missed {lp.missed}, attempts {lp.attempts}, "
                f"failures {lp.failures}; {seen}")

    def bad(point: str) -> list[tuple[int, float, str]]:  # (ts, value, quality) not good
        return [(r.ts_ns, r.value, Quality(r.quality).name or str(r.quality))
                for r in sink.by_point[point] if r.quality != 0]

    faulted_tcp = {f"m0-{u}" for u in range(1, 11)} | {"m1-3", "m1-4", "m1-5"}

    # ---- healthy devices kept their rate and their quality, through all of it
    healthy = [n for n in tcp if n not in faulted_tcp and not n.startswith("m2-")]
    assert len(healthy) == 27
    for n in healthy:
        lp = tcp[n].loop
        assert lp.polls >= 0.8 * expected - lost, (n, counts(lp))
        # every ask was answered; the one ask cancelled in flight at shutdown is no poll
        assert lp.polls <= lp.attempts <= lp.polls + 1 and lp.failures == 0, (n, counts(lp))
        for pt in tcp[n].points:
            assert not bad(pt.id), (n, bad(pt.id), counts(lp))
    for n in ("rtu1", "rtu3"):
        lp = rtu_src.loop_of(n)
        assert lp.polls >= 0.8 * expected - lost, (n, counts(lp))
        assert lp.polls <= lp.attempts <= lp.polls + 1, (n, counts(lp))
        assert not bad(f"{n}.energy"), (n, bad(f"{n}.energy"), counts(lp))
    # flaky connections: reconnected, at most a few gaps, and the rate held
    for u in range(1, 11):
        lp = tcp[f"m2-{u}"].loop
        assert lp.polls >= 0.8 * expected - lost and not lp.breaker_open, (u, counts(lp))
        assert m.component(f"device:m2-{u}").state == "ok"

    # ---- every fault was flagged
    def flags(point: str) -> set[int]:
        return {r.quality for r in sink.between(point, f0, f1)}

    for u in range(1, 11):  # server down: COMM_FAULT gaps, at the poll rate, NaN
        pid = tcp[f"m0-{u}"].points[0].id
        gaps = [r for r in sink.between(pid, f0, f1) if r.quality == B]
        assert len(gaps) >= 0.8 * FAULT_S / INTERVAL * 0.8 - lost, (u, len(gaps), seen)
        assert all(math.isnan(r.value) for r in gaps)
    assert B in flags("m1-3.energy")
    assert flags("m1-4.volume") == {D}
    assert B in flags("rtu2.energy")
    assert B in flags("dlt.energy")
    assert m.counters["dlt645_garbage_bytes"] + m.counters["dlt645_bad_frames"] > 0
    assert m.counters["mqtt_disconnects"] >= 1 and m.counters["stale_gap_readings"] >= 1
    assert B in flags("boiler.t")
    assert m.counters["hj212_bad_frames"] >= 2 and m.counters["hj212_garbage_bytes"] >= 120
    assert logger.connects >= 2
    # the device that never answered: gaps at the poll rate all along, the breaker limits probes
    never = tcp["m1-5"].loop
    assert never.breaker_open and never.polls >= 0.8 * expected - lost, counts(never)
    # 3 failures, then one probe per backoff cap
    assert never.attempts <= 3 + elapsed / 1.0 + 1, counts(never)
    assert {r.quality for r in sink.by_point["m1-5.energy"]} == {B}
    assert m.component("device:m1-5").state == "failing"

    # ---- and every device recovered when its fault ended
    for pid in recovery_points():
        assert recovered(pid), (pid, [(r.ts_ns - r0, r.quality) for r in
                                      sink.between(pid, r0, now_ns())[-5:]], seen)
    for n in tcp:
        if n != "m1-5":
            assert m.component(f"device:{n}").state == "ok", n
    for comp in ("rtu2", "dlt", "sensors", "cems"):
        assert m.component(f"device:{comp}").state == "ok", comp
    assert not dlt_src.loop_of("dlt").breaker_open and not rtu_src.loop_of("rtu2").breaker_open
    assert mqtt_src.connects >= 2
    assert logger.replied >= 0.8 * (RECOVER_S / 0.25) * 0.8 - lag.ticks_lost(0.25), (
        logger.replied, seen)
    assert m.counters["task_restarts"] == 0  # nothing crashed: every fault was handled in place


def test_free_port_is_below_the_ephemeral_range_bindable_and_never_handed_out_twice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Outgoing connections take their local ports from the ephemeral range: a server port
    drawn from it could be taken between the probe and the server's bind."""
    import socket

    from simulator import _plant

    low, _ = _plant.ephemeral_range()
    ports = [_plant.free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(max(1024, low - 16384) <= p < low for p in ports)
    with socket.socket() as s:  # each is free: a server can bind it
        s.bind(("127.0.0.1", ports[0]))
    # a port something listens on is skipped, as is one handed out before
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        monkeypatch.setattr(_plant, "_handed_out", {ports[1]})
        picks = iter([taken, ports[1], ports[3]])
        monkeypatch.setattr(_plant.random, "randrange", lambda a, b: next(picks))
        assert _plant.free_port() == ports[3]
