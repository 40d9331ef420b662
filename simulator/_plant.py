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
pattern device (`PatternDevice`, for the driver tests): fixed values of every type and word
  order, bool/bitfield registers, sentinels, coils and discrete inputs; see `PATTERN_POINTS`.

Fault kinds (`Faults`, per device): silent, exception responses, late answers, garbage (serial
devices); `ModbusPlant.drop_connections` resets every client connection, `stop`/`start` take the
whole server away and back.
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

from drivers.modbus import encode
from mrv_core import cancel_and_wait

FC_READ_COILS, FC_READ_DISCRETE, FC_READ_HR, FC_READ_IR = 1, 2, 3, 4


@dataclass
class Faults:
    """Faults a test can switch on for one device."""

    silent: bool = False  # never answers (sleeps past any timeout)
    exception: int | None = None  # answer every request with this Modbus exception code
    delay_s: float = 0.0  # answer this late
    garbage: bool = False  # serial devices: answer with line noise instead of a frame


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

    def coils(self) -> list[bool]:
        return [False] * 16

    def discretes(self) -> list[bool]:
        return [False] * 16

    def register_count(self) -> int:
        """Registers in each of the holding and input tables (reads beyond are errors)."""
        return 8


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


def bits_to_words(bits: list[bool]) -> list[int]:
    """Pack bits into 16-bit words, bit 0 of word 0 first (Modbus coil order)."""
    words = [0] * ((len(bits) + 15) // 16)
    for i, b in enumerate(bits):
        if b:
            words[i // 16] |= 1 << (i % 16)
    return words


def _sim_device(unit: int, model: MeterModel) -> SimDevice:
    async def action(fc: int, start: int, address: int, count: int, registers: list[int],
                     set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        if model.faults.silent:
            await asyncio.sleep(3600)
        if model.faults.delay_s:
            await asyncio.sleep(model.faults.delay_s)
        if model.faults.exception is not None:
            return ExcCodes(model.faults.exception)
        model.reads += 1
        if fc == FC_READ_HR:
            regs = model.holding()
            registers[0:len(regs)] = regs
        elif fc == FC_READ_IR:
            regs = model.input()
            registers[0:len(regs)] = regs
        elif fc in (FC_READ_COILS, FC_READ_DISCRETE):
            words = bits_to_words(model.coils() if fc == FC_READ_COILS else model.discretes())
            registers[0:len(words)] = words
        return None

    return SimDevice(unit, simdata=sim_blocks(model.register_count()), action=action)


def sim_blocks(n_registers: int) -> tuple[list[SimData], list[SimData], list[SimData],
                                          list[SimData]]:
    """The four separate blocks of a simulated device: 16 coils, 16 discrete inputs and
    ``n_registers`` holding and input registers from address 0 (filled by its action hook)."""
    return (
        [SimData(0, count=16, values=False, datatype=DataType.BITS)],
        [SimData(0, count=16, values=False, datatype=DataType.BITS)],
        [SimData(0, count=n_registers, values=0, datatype=DataType.REGISTERS)],
        [SimData(0, count=n_registers, values=0, datatype=DataType.REGISTERS)],
    )


class SimServer:
    """One pymodbus TCP server serving `SimDevice`s in a task of the running loop."""

    def __init__(self, host: str, port: int, name: str) -> None:
        self.host = host
        self.port = port
        self.name = name
        self._server: ModbusTcpServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def serve(self, sims: list[SimDevice]) -> None:
        if self.port == 0:
            self.port = free_port()
        self._server = ModbusTcpServer(sims, address=(self.host, self.port))
        self._task = asyncio.create_task(self._server.serve_forever(),
                                         name=f"{self.name}:{self.port}")
        await wait_port(self.host, self.port)

    def drop_connections(self) -> int:
        """Reset every client connection (as a network blip would); the server keeps listening.
        Returns the number of connections dropped."""
        if self._server is None:
            return 0
        conns = list(self._server.active_connections.values())
        for c in conns:
            transport = c.transport
            if isinstance(transport, asyncio.Transport):
                transport.abort()
        return len(conns)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
        if self._task is not None:
            await cancel_and_wait([self._task])
        self._server = self._task = None


class ModbusPlant:
    """A Modbus TCP server holding several simulated devices (by unit id)."""

    def __init__(self, devices: dict[int, MeterModel], host: str = "127.0.0.1", port: int = 0):
        self.models = devices
        self.host = host
        self._sim = SimServer(host, port, "plant")

    @property
    def port(self) -> int:
        return self._sim.port

    async def start(self) -> None:
        await self._sim.serve([_sim_device(unit, m) for unit, m in sorted(self.models.items())])

    def drop_connections(self) -> int:
        """Reset every client connection (as a network blip would); the server keeps listening.
        Returns the number of connections dropped."""
        return self._sim.drop_connections()

    async def stop(self) -> None:
        await self._sim.stop()


def default_plant(port: int = 0) -> ModbusPlant:
    return ModbusPlant({1: ElectricityMeter(seed=1), 2: GasFlowMeter(seed=2)}, port=port)


#: Ports `free_port` has handed out in this process (never twice).
_handed_out: set[int] = set()


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range of ports for outgoing connections' local ports (Linux:
    ``/proc/sys/net/ipv4/ip_local_port_range``; elsewhere IANA's 49152-65535)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 49152, 65535


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on, for a server started next that must be
    told its port (Mosquitto, anvil, PostgreSQL, a health endpoint).

    Drawn at random below the kernel's ephemeral range, not from it: a port the kernel hands
    out for a bind to port 0 is, once the probe closes it, free for any outgoing connection's
    local port until the server binds it. With 2,000 simulated devices connecting, one
    benchmark run's connections took another's broker or chain port in about one run of four.
    Below the range only an explicit bind can take it. A port is never handed out twice by one
    process; when no port below the range is free, the kernel's choice is used."""
    import socket

    low, _ = ephemeral_range()
    first = max(1024, low - 16384)
    for _ in range(200) if low - first >= 1024 else ():
        port = random.randrange(first, low)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    _handed_out.add(port)
    return port


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


# --------------------------------------------------------------------------- the test pattern


@dataclass(frozen=True, slots=True)
class PatternPoint:
    """One value of `PatternDevice`: where it is, how it is coded, what it decodes to."""

    key: str
    table: str  # holding | input | coil | discrete
    address: int
    type: str
    word_order: str = "ABCD"
    bit: int | None = None
    expected: float = math.nan  # NaN: a "not implemented" sentinel
    sentinel: bool = False


_PATTERN_VALUES: tuple[tuple[str, int | float], ...] = (
    ("int16", -1234), ("uint16", 54321), ("int32", -123_456_789), ("uint32", 3_000_000_000),
    ("int64", -1_234_567_890_123), ("uint64", 12_345_678_901_234_567),
    ("float32", 1234.5), ("float64", -98_765.4321),
)


def _build_pattern() -> tuple[list[int], list[int], list[bool], list[bool], list[PatternPoint]]:
    from typing import cast

    from drivers.modbus import DataType, WordOrder

    holding: list[int] = []
    points: list[PatternPoint] = []
    orders: tuple[WordOrder, ...] = ("ABCD", "CDAB", "BADC", "DCBA")
    for dtype, value in _PATTERN_VALUES:
        for order in orders:
            t = cast(DataType, dtype)
            points.append(PatternPoint(f"{dtype}-{order}", "holding", len(holding), dtype, order,
                                       expected=float(value)))
            holding += encode(value, t, order)
    points.append(PatternPoint("bool", "holding", len(holding), "bool", expected=1.0))
    holding.append(1)
    word = 0b1000_0000_0000_0101
    for b in (0, 1, 2, 15):
        points.append(PatternPoint(f"bit{b}", "holding", len(holding), "bitfield", bit=b,
                                   expected=float((word >> b) & 1)))
    holding.append(word)
    for dtype, regs in (("int16", [0x8000]), ("uint16", [0xFFFF]), ("float32", [0x7FC0, 0]),
                        ("uint32", [0xFFFF, 0xFFFF])):
        points.append(PatternPoint(f"sentinel-{dtype}", "holding", len(holding), dtype,
                                   sentinel=True))
        holding += regs
    inputs = encode(4321, "uint16") + encode(-2.5, "float32", "CDAB")
    points.append(PatternPoint("input-uint16", "input", 0, "uint16", expected=4321.0))
    points.append(PatternPoint("input-float32-CDAB", "input", 1, "float32", "CDAB", expected=-2.5))
    coils = [i % 3 == 0 for i in range(16)]
    discretes = [i % 2 == 1 for i in range(16)]
    for i in (0, 1, 3, 14):
        points.append(PatternPoint(f"coil{i}", "coil", i, "bool", expected=float(coils[i])))
        points.append(PatternPoint(f"discrete{i}", "discrete", i, "bool",
                                   expected=float(discretes[i])))
    return holding, inputs, coils, discretes, points


_P_HOLDING, _P_INPUT, _P_COILS, _P_DISCRETES, PATTERN_POINTS = _build_pattern()


@dataclass
class PatternDevice(MeterModel):
    """A device with fixed, known contents: every data type in every word order, bool and
    bitfield registers, "not implemented" sentinels, coils and discrete inputs. `PATTERN_POINTS`
    says where each value is and what it must decode to."""

    def holding(self) -> list[int]:
        return list(_P_HOLDING)

    def input(self) -> list[int]:
        return list(_P_INPUT) + [0] * (len(_P_HOLDING) - len(_P_INPUT))

    def coils(self) -> list[bool]:
        return list(_P_COILS)

    def discretes(self) -> list[bool]:
        return list(_P_DISCRETES)

    def register_count(self) -> int:
        return len(_P_HOLDING)
