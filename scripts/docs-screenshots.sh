#!/usr/bin/env bash
# Refresh the screenshots docs/portal.md shows from the browser tests' latest run
# (artifacts/screenshots, written by `make test`): each one the docs name is copied again.
set -euo pipefail
cd "$(dirname "$0")/.."
src="${MRV_SCREENSHOTS:-artifacts/screenshots}"
for name in $(grep -o 'screenshots/[a-z0-9-]*\.png' docs/portal.md | sort -u); do
  cp "$src/${name#screenshots/}" "docs/$name"
done
echo "docs/screenshots: $(ls docs/screenshots | wc -l) files from $src"
