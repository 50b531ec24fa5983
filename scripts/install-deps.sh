#!/usr/bin/env bash
# Installs everything Flock needs to build, test and run its demo on a fresh Debian 12 machine.
# Idempotent: skips apt when every package is already present.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  postgresql-15 postgresql-server-dev-15 postgresql-contrib libpq-dev postgresql-plpython3-15
  # scheduled monitoring and retention (pg_cron); PL/Proxy, measured for scoring on shards
  postgresql-15-cron postgresql-15-plproxy
  libonnx-dev libprotobuf-dev protobuf-compiler
  # OpenSSL's SHA-256 for data set content hashes (pg/src/train_hash.cpp)
  libssl-dev
  libxgboost-dev nlohmann-json3-dev libsimdjson-dev libfmt-dev libeigen3-dev libdnnl-dev
  # oneDNN's CMake config looks for OpenCL (its GPU runtime); only a recommends of libdnnl-dev
  ocl-icd-opencl-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  # Boost.Math (header-only): the chi-squared distribution for drift (core/src/monitor)
  libboost-dev
  # the sanitizer and fuzz build (make fuzz, make test): libFuzzer, ASan, UBSan; llvm-14: symbolizer
  clang-14 libclang-rt-14-dev llvm-14
  python3 python3-numpy python3-sklearn python3-xgboost python3-onnx python3-torch python3-psycopg2 python3-pytest
  python3-scipy  # the drift tests' oracle (tests/pg/test_monitor.py)
  libonnx-testdata
  # benchmark peers only: ONNX Runtime comes from the npm registry (bench/ort/install.sh)
  nodejs
  # flockctl report: its charts' library comes from the npm registry (tools/report/install-charts.sh);
  # its test opens the page in headless Chromium
  chromium
)
# npm: Debian's package, unless a Node.js that brings its own (nodesource's nodejs) is installed.
command -v npm >/dev/null || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (${missing[*]}); run as root" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
