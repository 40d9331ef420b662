"""The Modbus driver (TCP and RTU): read planning, decoding, pollers, shared connections."""

from drivers.modbus._link import ModbusLink, ModbusLinks, own_links

__all__ = ["ModbusLink", "ModbusLinks", "own_links"]
