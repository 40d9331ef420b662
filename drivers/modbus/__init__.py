"""The Modbus driver (TCP and RTU): read planning, decoding, pollers, shared connections, and
its config models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from drivers._link import ModbusClient, ModbusLink, ModbusLinks, own_links
from drivers._source import Driver, Source, SourceContext
from drivers.modbus._config import ModbusPoint, ModbusRtuBus, ModbusRtuUnit, ModbusTcpDevice
from drivers.modbus._decode import DataType, WordOrder, decode, encode, register_count
from drivers.modbus._io import ModbusTcpPoller
from drivers.modbus._lean import LeanTcpClient

if TYPE_CHECKING:
    from pymodbus.client import AsyncModbusSerialClient


def serial_client(bus: ModbusRtuBus) -> AsyncModbusSerialClient:
    """The client of one serial line (shared by its units and by control writes to them)."""
    from drivers.modbus._io import serial_client as make

    return make(bus)


def _tcp_source(devices: Sequence[ModbusTcpDevice], ctx: SourceContext) -> Source:
    from drivers.modbus._io import ModbusTcpPoller

    (device,) = devices
    return ModbusTcpPoller(device, ctx.sink, ctx.metrics, ctx.links)


def _rtu_source(buses: Sequence[ModbusRtuBus], ctx: SourceContext) -> Source:
    from drivers.modbus._io import ModbusRtuBusPoller

    (bus,) = buses
    return ModbusRtuBusPoller(bus, ctx.sink, ctx.metrics, ctx.links)


#: One source per device (one connection).
TCP_DRIVER = Driver("modbus_tcp", ModbusTcpDevice, _tcp_source)
#: One source per serial port; its units share one lock.
RTU_DRIVER = Driver("modbus_rtu", ModbusRtuBus, _rtu_source)

__all__ = [
    "RTU_DRIVER",
    "TCP_DRIVER",
    "DataType",
    "LeanTcpClient",
    "ModbusClient",
    "ModbusLink",
    "ModbusLinks",
    "ModbusPoint",
    "ModbusRtuBus",
    "ModbusRtuUnit",
    "ModbusTcpDevice",
    "ModbusTcpPoller",
    "WordOrder",
    "decode",
    "encode",
    "own_links",
    "register_count",
    "serial_client",
]
