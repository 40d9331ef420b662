"""The simulated plant (Modbus meters with plausible physics) and a local chain, for the demo
and the tests."""

# First, so no later import (eth_account here) leaves the recursion limit raised (see _deps).
import ledger_client  # noqa: F401  (first: py_ecc with its recursion-limit side effect undone)
from simulator._actuators import ActuatorModel, ActuatorPlant
from simulator._anvil import CHAIN_ID, DEV_KEYS, Anvil
from simulator._dlt645 import Dlt645Line, Dlt645SimMeter
from simulator._hj212 import Factor, Hj212Logger
from simulator._live import LiveMrv
from simulator._mosquitto import Mosquitto
from simulator._mqtt_sensors import MqttSensorGroup, SimSensor
from simulator._plant import (
    PATTERN_POINTS,
    ElectricityMeter,
    Faults,
    GasFlowMeter,
    ModbusPlant,
    PatternDevice,
    default_plant,
    free_port,
    wait_port,
)
from simulator._postgres import Postgres
from simulator._process import stop_process
from simulator._provision import Provisioned, plant_devices, provision
from simulator._rtu import RtuLine
from simulator._tls import SimPki

__all__ = [
    "CHAIN_ID",
    "DEV_KEYS",
    "PATTERN_POINTS",
    "ActuatorModel",
    "ActuatorPlant",
    "Anvil",
    "Dlt645Line",
    "Dlt645SimMeter",
    "ElectricityMeter",
    "Factor",
    "Faults",
    "GasFlowMeter",
    "Hj212Logger",
    "LiveMrv",
    "ModbusPlant",
    "Mosquitto",
    "MqttSensorGroup",
    "PatternDevice",
    "Postgres",
    "Provisioned",
    "RtuLine",
    "SimPki",
    "SimSensor",
    "default_plant",
    "free_port",
    "plant_devices",
    "provision",
    "stop_process",
    "wait_port",
]
