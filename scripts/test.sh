#!/usr/bin/env bash
# Runs every test suite and prints each runner's summary. Exits non-zero if any suite fails.
#   1. core unit tests (GoogleTest through ctest)
#   2. ONNX backend node tests against the core runtime (per-operator table)
#   3. model tooling tests (pytest: the sklearn→ONNX exporter)
#   4. SQL tests against a real private PostgreSQL cluster, and CLI tests (pytest)
set -uo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}
python=${PYTHON:-/usr/bin/python3}
export FLOCK_MODELS_DIR=${FLOCK_MODELS_DIR:-$PWD/$build_dir/models}
export FLOCK_CLI=${FLOCK_CLI:-$PWD/$build_dir/cli/flockctl}
failed=0

echo "== core unit tests (ctest)"
(cd "$build_dir" && ctest --output-on-failure -j "$(nproc)") || failed=1

echo "== ONNX backend node tests (libonnx-testdata)"
"$build_dir/tests/conformance/flock_onnx_conformance" || failed=1

echo "== model tooling tests (pytest)"
$python -m pytest -q -p no:cacheprovider tests/tools || failed=1

echo "== SQL and CLI tests against a private PostgreSQL cluster (pytest)"
$python -m pytest -q -p no:cacheprovider tests/pg tests/cli || failed=1

if [ $failed -ne 0 ]; then
  echo "test.sh: some suites failed"
  exit 1
fi
echo "test.sh: all suites passed"
