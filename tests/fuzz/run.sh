#!/usr/bin/env bash
# Runs the libFuzzer targets of the sanitizer build (tests/fuzz/CMakeLists.txt).
#
#   tests/fuzz/run.sh [--build-dir build-fuzz] [--seconds N] [--work-dir DIR] [--replay-only] [target...]
#
# Per target: first replays every crasher ever found (tests/fuzz/crashers/<target>/*), each must now
# load or fail with a clean error; then fuzzes for N seconds from the committed seed corpus
# (tests/fuzz/corpus/<target>), writing new inputs and any crash into the work directory (default
# <build-dir>/fuzz-work/<target>, never into the repository). A crash, a sanitizer report, a leak, an
# out-of-memory or a timeout fails the target and its input's path is printed. Closing line:
# "fuzz: N passed, M failed" (one check per crasher replayed and per fuzzing run).
set -uo pipefail
cd "$(dirname "$0")/../.."
build_dir=build-fuzz
seconds=60
work_dir=
replay_only=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build_dir=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --work-dir) work_dir=$2; shift 2 ;;
    --replay-only) replay_only=1; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(onnx_import xgboost_import model_input)
work_dir=${work_dir:-$build_dir/fuzz-work}

# Per-input limits: libonnx's shape inference has been seen to run for minutes on hostile models
# (a finding: the server must not wait for it), and a model's allocations past 2.5 GB are findings.
timeout_s=${FUZZ_TIMEOUT:-25}
rss_limit_mb=${FUZZ_RSS_LIMIT_MB:-2560}
symbolizer=$(command -v llvm-symbolizer-14 || command -v llvm-symbolizer || true)
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_stack_use_after_return=1:allocator_may_return_null=1}${symbolizer:+:external_symbolizer_path=$symbolizer}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

passed=0
failed=0
for target in "${targets[@]}"; do
  bin=$build_dir/fuzz_$target
  if [ ! -x "$bin" ]; then
    echo "fuzz: $bin not built (cmake --build $build_dir)"
    failed=$((failed + 1))
    continue
  fi
  # Crashers found earlier: regression tests, one run each.
  for crasher in tests/fuzz/crashers/"$target"/*; do
    [ -f "$crasher" ] || continue
    log=$(mktemp)
    if "$bin" -timeout="$timeout_s" -rss_limit_mb="$rss_limit_mb" "$crasher" >"$log" 2>&1; then
      passed=$((passed + 1))
    else
      failed=$((failed + 1))
      echo "fuzz: FAIL $target replay of $crasher"
      grep -E "ERROR|SUMMARY|runtime error|terminate called|what\(\)" "$log" | head -5 | sed 's/^/    /'
    fi
    rm -f "$log"
  done
  [ $replay_only -eq 1 ] && continue

  # Fuzzing: the first corpus directory receives the new inputs; the committed seeds stay as they are.
  mkdir -p "$work_dir/$target/corpus" "$work_dir/$target/artifacts"
  dict=tests/fuzz/$target.dict
  log=$work_dir/$target/fuzz.log
  stamp=$work_dir/$target/.started
  touch "$stamp"
  start=$(date +%s)
  "$bin" -max_total_time="$seconds" -timeout="$timeout_s" -rss_limit_mb="$rss_limit_mb" -print_final_stats=1 \
    -artifact_prefix="$work_dir/$target/artifacts/" ${FUZZ_EXTRA_ARGS:-} ${dict:+$( [ -f "$dict" ] && echo -dict="$dict")} \
    "$work_dir/$target/corpus" "tests/fuzz/corpus/$target" >"$log" 2>&1
  rc=$?
  elapsed=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1)
  if [ -z "$execs" ]; then  # fork mode prints "#runs: cov: N ft: N corp: N exec/s N ..." instead
    last=$(grep -E '^#[0-9]+: cov:' "$log" | tail -1)
    execs=$(echo "$last" | sed -n 's/^#\([0-9]*\):.*/\1/p')
    speed=$(echo "$last" | sed -n 's/.* exec\/s \([0-9]*\).*/\1/p')
    cov=$(echo "$last" | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+')
  fi
  # Findings of this run (fork mode, FUZZ_EXTRA_ARGS="-fork=1 -ignore_crashes=1", keeps going after one).
  found=$(find "$work_dir/$target/artifacts" -type f -newer "$stamp" \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | sort)
  [ -n "$found" ] && [ $rc -eq 0 ] && rc=1
  if [ $rc -eq 0 ]; then
    passed=$((passed + 1))
    echo "fuzz: ok   $target: ${elapsed}s, ${execs:-?} runs, ${speed:-?} exec/s, $cov"
  else
    failed=$((failed + 1))
    crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    [ -n "$crash" ] || crash=$(echo "$found" | head -1)
    echo "fuzz: FAIL $target after ${elapsed}s (exit $rc): ${crash:-no input saved}; log $log"
    grep -E "^==[0-9]+==ERROR|SUMMARY|runtime error|terminate called|what\(\)|ALARM|out-of-memory" "$log" | head -6 | sed 's/^/    /'
    [ -n "$crash" ] && echo "    reproduce: $bin $crash; minimize: $bin -minimize_crash=1 -runs=100000 $crash"
    for f in $found; do [ "$f" = "$crash" ] || echo "    also found: $f"; done
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ $failed -eq 0 ]
