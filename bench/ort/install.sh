#!/usr/bin/env bash
# Installs ONNX Runtime's Node.js package (a benchmark peer only: not in Debian, never used by Flock
# itself) into DIR/node_modules from the npm registry. --ignore-scripts: the package ships its native
# library (libonnxruntime.so) and needs no install script. Idempotent.
#   bench/ort/install.sh [DIR]     (default: build/bench-ort)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$here/../../build/bench-ort}
version=$(sed -n 's/.*"onnxruntime-node": *"\([^"]*\)".*/\1/p' "$here/package.json")
mkdir -p "$dir"
if [ -f "$dir/node_modules/onnxruntime-node/package.json" ] &&
   grep -q "\"version\": \"$version\"" "$dir/node_modules/onnxruntime-node/package.json"; then
  exit 0
fi
command -v npm >/dev/null || { echo "bench/ort/install.sh: npm not found (apt-get install npm)" >&2; exit 1; }
cp "$here/package.json" "$dir/package.json"
cp "$here/package-lock.json" "$dir/package-lock.json"
(cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
echo "onnxruntime-node $version installed in $dir"
