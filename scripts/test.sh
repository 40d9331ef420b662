#!/usr/bin/env bash
# The whole check: lint, types, contract artifacts, then the test suite (real anvil, real
# pymodbus servers, real SQLite). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
echo "== ruff";  .venv/bin/ruff check .
echo "== mypy";  .venv/bin/mypy
echo "== layers"; .venv/bin/lint-imports
echo "== contracts"; node contracts/build.mjs --check
echo "== pytest"; .venv/bin/python -m pytest -n "${MRV_TEST_WORKERS:-auto}" --dist loadfile "$@"
