"""The simulated plant (Modbus meters with plausible physics) and a local chain, for the demo
and the tests."""

from simulator._anvil import CHAIN_ID, DEV_KEYS, Anvil
from simulator._mosquitto import Mosquitto
from simulator._plant import (
    ElectricityMeter,
    Faults,
    GasFlowMeter,
    ModbusPlant,
    default_plant,
    free_port,
)
from simulator._provision import Provisioned, plant_devices, provision

__all__ = [
    "CHAIN_ID",
    "DEV_KEYS",
    "Anvil",
    "ElectricityMeter",
    "Faults",
    "GasFlowMeter",
    "ModbusPlant",
    "Mosquitto",
    "Provisioned",
    "default_plant",
    "free_port",
    "plant_devices",
    "provision",
]
