"""A simulated boiler-room PLC with a vent and a burner air damper, served over Modbus TCP.

Physics (evaluated lazily on every request, from the time since the last one):

- combustible gas (%LEL): ``dc/dt = leak_rate - (base_exchange + vent_k * vent/100) * c``, so
  the concentration falls as the vent opens;
- flue O2 (%): first-order lag (``o2_tau_s``) towards ``o2_per_damper * damper + o2_at_zero``
  (more air, more O2), kept within 0.5..20.9;
- heartbeat watchdog: when ``watchdog_s`` is set and the heartbeat register has not changed for
  that long, the PLC drops to local mode: vent and damper go back to its own setpoints and
  remote writes to them are ignored (the register keeps the local value) until heartbeats
  resume.
- the PLC's own leak alarm (input 4) is on while gas >= ``plc_alarm_lel``.

Every write (other than to the heartbeat register) goes into ``writes`` so tests can check
that a refused command wrote nothing.

Register map (unit ``unit``, 0-based protocol addresses):

  holding 0     uint16  vent opening setpoint, 0.1 %   (0..1000; above ``vent_limit`` the
                        PLC clamps: a read-back mismatch)
  holding 1     uint16  mode: 1 remote (heartbeat alive or no watchdog), 0 local
  holding 2-3   float32 CDAB  air damper setpoint, %
  holding 4     uint16  heartbeat counter (written by the gateway)
  input   0-1   float32 ABCD  combustible gas, %LEL
  input   2-3   float32 ABCD  flue O2, %
  input   4     uint16  PLC leak alarm (0/1)
  input   5     uint16  vent opening, 0.1 %
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.simulator import SimDevice

from drivers.modbus import decode, encode
from simulator._plant import SimServer, sim_blocks

FC_READ_HR, FC_READ_IR = 3, 4
FC_WRITE_ONE, FC_WRITE_MANY = 6, 16
HR_VENT, HR_MODE, HR_DAMPER, HR_HEARTBEAT = 0, 1, 2, 4
IR_GAS, IR_O2, IR_ALARM, IR_VENT = 0, 2, 4, 5
N_REGS = 8


@dataclass(frozen=True, slots=True)
class Write:
    t: float  # time.monotonic()
    unit: int
    address: int
    values: tuple[int, ...]


@dataclass
class ActuatorModel:
    leak_rate: float = 0.0  # %LEL per second (a test switches the leak on)
    vent_k: float = 1.0  # 1/s air exchange at 100 % opening
    base_exchange: float = 0.05  # 1/s with the vent closed
    o2_per_damper: float = 0.12
    o2_at_zero: float = -2.2
    o2_tau_s: float = 0.5
    watchdog_s: float | None = None
    local_vent: float = 20.0  # the PLC's own setpoints (%)
    local_damper: float = 45.0
    plc_alarm_lel: float = 25.0
    vent_limit: float = 100.0  # the PLC clamps vent setpoints above this
    gas_lel: float = 0.0
    vent: float = field(default=-1.0)
    damper: float = field(default=-1.0)
    o2: float = field(default=-1.0)
    heartbeat: int = 0
    remote: bool = True
    writes: list[Write] = field(default_factory=list)
    heartbeats: int = 0
    fallbacks: int = 0  # times the watchdog dropped to local mode

    def __post_init__(self) -> None:
        if self.vent < 0:
            self.vent = self.local_vent
        if self.damper < 0:
            self.damper = self.local_damper
        if self.o2 < 0:
            self.o2 = self.o2_target()
        self._last = self._hb_changed = time.monotonic()

    def o2_target(self) -> float:
        return min(20.9, max(0.5, self.o2_per_damper * self.damper + self.o2_at_zero))

    def step(self) -> None:
        now = time.monotonic()
        dt, self._last = max(0.0, now - self._last), now
        exchange = self.base_exchange + self.vent_k * self.vent / 100.0
        steady = self.leak_rate / exchange
        self.gas_lel = steady + (self.gas_lel - steady) * math.exp(-exchange * dt)
        target = self.o2_target()
        self.o2 = target + (self.o2 - target) * math.exp(-dt / self.o2_tau_s)
        if (self.watchdog_s is not None and self.remote
                and now - self._hb_changed > self.watchdog_s):
            self.remote = False
            self.fallbacks += 1
            self.vent, self.damper = self.local_vent, self.local_damper

    def holding(self) -> list[int]:
        return [round(self.vent * 10), int(self.remote), *encode(self.damper, "float32", "CDAB"),
                self.heartbeat & 0xFFFF, 0, 0, 0]

    def input(self) -> list[int]:
        return (encode(self.gas_lel, "float32") + encode(self.o2, "float32")
                + [int(self.gas_lel >= self.plc_alarm_lel), round(self.vent * 10), 0, 0])

    def apply_write(self, address: int, values: list[int]) -> list[int]:
        """Take a write into the model; returns what the registers end up holding."""
        regs = self.holding()
        regs[address:address + len(values)] = values
        if address <= HR_HEARTBEAT < address + len(values):
            if regs[HR_HEARTBEAT] != self.heartbeat:
                self.heartbeat = regs[HR_HEARTBEAT]
                self._hb_changed = time.monotonic()
                if not self.remote:
                    self.remote = True
            self.heartbeats += 1
        if self.remote:
            self.vent = min(self.vent_limit, regs[HR_VENT] / 10.0)
            self.damper = float(decode(regs[HR_DAMPER:HR_DAMPER + 2], "float32", "CDAB"))
        out = self.holding()
        return out[address:address + len(values)]

    def writes_to(self, address: int) -> list[Write]:
        return [w for w in self.writes if w.address == address]


def actuator_device(unit: int, model: ActuatorModel) -> SimDevice:
    async def action(fc: int, start: int, address: int, count: int, registers: list[int],
                     set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        model.step()
        if fc in (FC_WRITE_ONE, FC_WRITE_MANY) and set_values is not None:
            vals = [int(v) for v in set_values]
            if address != HR_HEARTBEAT or len(vals) != 1:
                model.writes.append(Write(time.monotonic(), unit, address, tuple(vals)))
            if address == HR_VENT and len(vals) >= 1 and vals[0] > 1000:
                return ExcCodes.ILLEGAL_VALUE
            applied = model.apply_write(address, vals)
            set_values[:] = applied  # type: ignore[assignment]
            registers[0:N_REGS] = model.holding()
            registers[address:address + len(applied)] = applied
        elif fc == FC_READ_HR:
            registers[0:N_REGS] = model.holding()
        elif fc == FC_READ_IR:
            registers[0:N_REGS] = model.input()
        return None

    return SimDevice(unit, simdata=sim_blocks(N_REGS), action=action)


class ActuatorPlant:
    """A Modbus TCP server with one `ActuatorModel` PLC (unit ``unit``)."""

    def __init__(self, model: ActuatorModel | None = None, *, unit: int = 1,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.model = model or ActuatorModel()
        self.unit = unit
        self.host = host
        self._sim = SimServer(host, port, "actuators")

    @property
    def port(self) -> int:
        return self._sim.port

    @property
    def writes(self) -> list[Write]:
        """Writes to the plant other than heartbeats."""
        return self.model.writes

    async def start(self) -> ActuatorPlant:
        await self._sim.serve([actuator_device(self.unit, self.model)])
        return self

    async def stop(self) -> None:
        await self._sim.stop()
