#!/usr/bin/env bash
# Runs every test suite and prints each runner's summary. Exits non-zero if any suite fails.
#   1. core unit tests (GoogleTest through ctest)
#   2. ONNX backend node tests against the core runtime (per-operator table)
#   3. model tooling tests (pytest: the sklearn→ONNX exporter)
#   4. SQL tests against a real private PostgreSQL cluster, and CLI tests (pytest)
#   5. core unit tests again, built with ASan+UBSan by clang (the fuzz build, $FUZZ_BUILD_DIR)
#   6. fuzz targets: every crasher ever found replayed, then each target fuzzed for
#      $FUZZ_SECONDS_TEST seconds (default 60)
set -uo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}
python=${PYTHON:-/usr/bin/python3}
export FLOCK_MODELS_DIR=${FLOCK_MODELS_DIR:-$PWD/$build_dir/models}
export FLOCK_CLI=${FLOCK_CLI:-$PWD/$build_dir/cli/flockctl}
fuzz_build_dir=${FUZZ_BUILD_DIR:-build-fuzz}
failed=0

echo "== core unit tests (ctest)"
(cd "$build_dir" && ctest --output-on-failure -j "$(nproc)") || failed=1

echo "== ONNX backend node tests (libonnx-testdata)"
"$build_dir/tests/conformance/flock_onnx_conformance" || failed=1

echo "== model tooling tests (pytest)"
$python -m pytest -q -p no:cacheprovider tests/tools || failed=1

echo "== SQL and CLI tests against a private PostgreSQL cluster (pytest)"
$python -m pytest -q -p no:cacheprovider tests/pg tests/cli || failed=1

echo "== core unit tests under ASan+UBSan (clang, $fuzz_build_dir)"
if [ ! -f "$fuzz_build_dir/Makefile" ]; then  # configured (a failed configure leaves only the cache)
  CC=clang-14 CXX=clang++-14 cmake -S tests/fuzz -B "$fuzz_build_dir" >/dev/null || failed=1
fi
if cmake --build "$fuzz_build_dir" -j "$(nproc)" >"$fuzz_build_dir/build.log" 2>&1; then
  (cd "$fuzz_build_dir" && ctest --output-on-failure -j "$(nproc)") || failed=1

  echo "== fuzz targets (libFuzzer, ASan+UBSan): crasher replay and ${FUZZ_SECONDS_TEST:-60} s per target"
  bash tests/fuzz/run.sh --build-dir "$fuzz_build_dir" --seconds "${FUZZ_SECONDS_TEST:-60}" || failed=1
else
  tail -30 "$fuzz_build_dir/build.log"
  echo "test.sh: the sanitizer build failed (log: $fuzz_build_dir/build.log)"
  failed=1
fi

if [ $failed -ne 0 ]; then
  echo "test.sh: some suites failed"
  exit 1
fi
echo "test.sh: all suites passed"
