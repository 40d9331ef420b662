"""The simulated plant: meters with plausible physics, served as Modbus TCP devices.

All pymodbus server code lives here (pymodbus 3.16 SimDevice/SimData, the datastore that
replaces the deprecated ModbusServerContext in 4.0). Each device's registers are refreshed from
its model on every read, through the SimDevice ``action`` hook.

Register maps (0-based protocol addresses, ABCD order):

electricity meter (unit 1 by default)
  holding 0-1   uint32  cumulative active energy, 0.01 kWh
  holding 2-3   float32 active power, kW
  holding 4     uint16  phase A voltage, 0.1 V
gas flow meter (unit 2 by default)
  input   0-1   float32 flow, Nm3/h
  input   2-3   uint32  cumulative volume, 0.1 Nm3
  input   4     int16   gas temperature, 0.1 degC
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus._decode import encode

FC_READ_HR, FC_READ_IR = 3, 4


@dataclass
class Faults:
    """Faults a test can switch on for one device."""

    silent: bool = False  # never answers (sleeps past any timeout)
    exception: int | None = None  # answer every request with this Modbus exception code


@dataclass
class MeterModel:
    """A meter whose registers are a function of time. Subclasses fill `registers`."""

    seed: int = 1
    t0: float = field(default_factory=time.monotonic)
    faults: Faults = field(default_factory=Faults)
    reads: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._last = self.t0

    def _advance(self) -> float:
        now = time.monotonic()
        dt, self._last = max(0.0, now - self._last), now
        return dt

    def holding(self) -> list[int]:
        return [0] * 8

    def input(self) -> list[int]:
        return [0] * 8


@dataclass
class ElectricityMeter(MeterModel):
    """A plant feeder: power wanders around ``base_kw``; energy integrates it."""

    base_kw: float = 400.0
    energy_kwh: float = 123_456.0
    power_kw: float = 400.0

    def step(self) -> None:
        dt = self._advance()
        target = self.base_kw * (1 + 0.15 * math.sin(time.monotonic() / 60.0))
        self.power_kw += (target - self.power_kw) * min(1.0, dt) + self.rng.gauss(0, 2.0) * min(1, dt)
        self.power_kw = max(0.0, self.power_kw)
        self.energy_kwh += self.power_kw * dt / 3600.0

    def holding(self) -> list[int]:
        self.step()
        volts = 230.0 + self.rng.gauss(0, 0.8)
        return (encode(round(self.energy_kwh * 100), "uint32")
                + encode(self.power_kw, "float32")
                + encode(round(volts * 10), "uint16") + [0, 0, 0])


@dataclass
class GasFlowMeter(MeterModel):
    """A natural-gas line to a boiler: flow around ``base_nm3h``; volume integrates it."""

    base_nm3h: float = 120.0
    volume_nm3: float = 98_765.0
    flow_nm3h: float = 120.0

    def step(self) -> None:
        dt = self._advance()
        self.flow_nm3h += (self.base_nm3h - self.flow_nm3h) * min(1.0, dt * 0.5)
        self.flow_nm3h = max(0.0, self.flow_nm3h + self.rng.gauss(0, 1.5) * min(1, dt))
        self.volume_nm3 += self.flow_nm3h * dt / 3600.0

    def input(self) -> list[int]:
        self.step()
        temp = 18.0 + self.rng.gauss(0, 0.2)
        return (encode(self.flow_nm3h, "float32")
                + encode(round(self.volume_nm3 * 10), "uint32")
                + encode(round(temp * 10), "int16") + [0, 0, 0])


def _sim_device(unit: int, model: MeterModel) -> SimDevice:
    async def action(fc: int, start: int, address: int, count: int, registers: list[int],
                     set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        if model.faults.silent:
            await asyncio.sleep(3600)
        if model.faults.exception is not None:
            return ExcCodes(model.faults.exception)
        model.reads += 1
        if fc == FC_READ_HR:
            registers[0:8] = model.holding()
        elif fc == FC_READ_IR:
            registers[0:8] = model.input()
        return None

    blocks = (
        [SimData(0, count=16, values=False, datatype=DataType.BITS)],
        [SimData(0, count=16, values=False, datatype=DataType.BITS)],
        [SimData(0, count=8, values=0, datatype=DataType.REGISTERS)],
        [SimData(0, count=8, values=0, datatype=DataType.REGISTERS)],
    )
    return SimDevice(unit, simdata=blocks, action=action)


class ModbusPlant:
    """A Modbus TCP server holding several simulated devices (by unit id)."""

    def __init__(self, devices: dict[int, MeterModel], host: str = "127.0.0.1", port: int = 0):
        self.models = devices
        self.host = host
        self.port = port
        self._server: ModbusTcpServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.port == 0:
            self.port = free_port()
        sims = [_sim_device(unit, m) for unit, m in sorted(self.models.items())]
        self._server = ModbusTcpServer(sims, address=(self.host, self.port))
        self._task = asyncio.create_task(self._server.serve_forever(), name=f"plant:{self.port}")
        await wait_port(self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._server = self._task = None


def default_plant(port: int = 0) -> ModbusPlant:
    return ModbusPlant({1: ElectricityMeter(seed=1), 2: GasFlowMeter(seed=2)}, port=port)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_port(host: str, port: int, timeout_s: float = 10.0,
                    check: Callable[[], None] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _, w = await asyncio.open_connection(host, port)
            w.close()
            await w.wait_closed()
            return
        except OSError:
            if check is not None:
                check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s} s") from None
            await asyncio.sleep(0.05)
