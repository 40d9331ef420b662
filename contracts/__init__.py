"""The EVM contracts: Solidity sources (``src/``) and their compiled artifacts (``artifacts/``,
written by ``node contracts/build.mjs``, checked in CI), shipped with the package so an installed
gateway finds the ABI and bytecode it needs without a checkout."""

from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

__all__ = ["ARTIFACTS"]
