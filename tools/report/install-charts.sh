#!/usr/bin/env bash
# Installs the charting library `flockctl report` inlines into its pages — Vega-Lite, Vega and
# vega-embed — from the npm registry at the exact versions tools/report/package-lock.json pins
# (integrity hashes included), and copies their browser builds into OUT_DIR (default
# build/report-js), where the CLI finds them (cli/CMakeLists.txt also installs them).
# Idempotent: does nothing when OUT_DIR already holds the builds of the pinned lock file.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-build/report-js}
lock_sum=$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)
files=(vega/build/vega.min.js vega-lite/build/vega-lite.min.js vega-embed/build/vega-embed.min.js)

if [ -f "$out/LOCK_SHA256" ] && [ "$(cat "$out/LOCK_SHA256")" = "$lock_sum" ]; then
  echo "install-charts: $out is up to date"
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "install-charts: npm is missing (Debian: apt-get install npm)" >&2
  exit 1
fi
# npm ci installs exactly the lock file; no install scripts run (the browser builds are prebuilt).
npm ci --prefix "$here" --no-audit --no-fund --ignore-scripts --loglevel=error
mkdir -p "$out"
for f in "${files[@]}"; do
  cp "$here/node_modules/$f" "$out/"
done
for p in vega vega-lite vega-embed; do
  node -e "process.stdout.write(require('$here/node_modules/$p/package.json').version)" > "$out/$p.version"
done
echo "$lock_sum" > "$out/LOCK_SHA256"
echo "install-charts: $(cd "$out" && ls *.min.js | tr '\n' ' ')in $out"
