#!/usr/bin/env bash
# Set up everything the demo and the tests need, on a fresh machine; idempotent and quick when
# nothing changed. Python venv (.venv) with the package and its dev tools, the pinned npm tools
# (solc, anvil, OpenZeppelin, uPlot, axe-core) in node_modules/, and the system packages
# (Mosquitto, PostgreSQL, Chromium, a CJK font) when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "bootstrap: Python >= 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

# System packages: Mosquitto (the MQTT tests and the demo) and PostgreSQL (the portal's tests
# and benchmarks start a throw-away server of their own; nothing is installed as a service).
missing=()
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then missing+=(mosquitto); fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
# Chromium (the portal's browser tests drive it through Playwright; Playwright never downloads
# a browser of its own) and a CJK font, so the Chinese pages render as a person sees them.
if ! command -v chromium >/dev/null 2>&1; then missing+=(chromium); fi
# A C compiler for the compiled hot path (ledger_client/_leafc.c, mrv_core/_recordc.c,
# cleaning/_cleanc.c; docs/compiled-path.md); built
# by the pip install below when one is there (without one the pure-Python path runs).
if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then missing+=(gcc); fi
if ! ls /usr/share/fonts/opentype/noto/NotoSansCJK* >/dev/null 2>&1; then missing+=(fonts-noto-cjk); fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PY" -m venv .venv
fi
# (the C extensions' sources and setup.py count too: a change to any rebuilds them in place)
pystamp=".venv/.installed-$(cat pyproject.toml setup.py ledger_client/_leafc.c mrv_core/_recordc.c \
  cleaning/_cleanc.c mrv_core/_slots.h | sha256sum | cut -c1-16)"
if [ ! -f "$pystamp" ]; then
  echo "bootstrap: installing the package and its dev tools into .venv"
  # (grep drops this machine kind's notes about absent local package mirrors)
  { .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 \
      | grep -v "^WARNING: Location" || true; }
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 \
      | { grep -v -e "^WARNING: Location" || true; }
  rm -f .venv/.installed-*
  touch "$pystamp"
fi

npmstamp="node_modules/.installed-$(cat package-lock.json | sha256sum | cut -c1-16)"
if [ ! -f "$npmstamp" ]; then
  echo "bootstrap: installing pinned npm tools (solc, anvil, OpenZeppelin)"
  npm ci --no-audit --no-fund --loglevel=error
  touch "$npmstamp"
fi

