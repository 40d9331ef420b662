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
# Two workers per core: the tests mostly wait on real servers (anvil, Mosquitto, pymodbus), so
# a core is idle half the time with one (2 cores: 5 min with 2 workers, under 3 with 4).
# The browser tests write a screenshot of every page of the portal's web view here (listed at
# the end of pytest's report; CI keeps the folder with its log).
export MRV_SCREENSHOTS="${MRV_SCREENSHOTS:-$PWD/artifacts/screenshots}"
rm -rf "$MRV_SCREENSHOTS" && mkdir -p "$MRV_SCREENSHOTS"
echo "== pytest"; .venv/bin/python -m pytest -n "${MRV_TEST_WORKERS:-$(( $(nproc) * 2 ))}" \
  --dist loadfile "$@"
