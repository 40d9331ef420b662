"""Gateway configuration: YAML validated by pydantic models; errors name the YAML path and line."""

from config._loader import (
    ConfigError,
    ConfigIssue,
    contract_address,
    load_config,
    load_yaml_model,
    parse_config,
    parse_yaml_model,
)
from config._schema import Config, ModbusPoint, ModbusTcpDevice, Part75Substitution

__all__ = [
    "Config",
    "ConfigError",
    "ConfigIssue",
    "ModbusPoint",
    "ModbusTcpDevice",
    "Part75Substitution",
    "contract_address",
    "load_config",
    "load_yaml_model",
    "parse_config",
    "parse_yaml_model",
]
