// flock_bench_xgb: times libxgboost's own prediction (C API) on features already in memory.
//
//   flock_bench_xgb MODEL.json FEATURES.f32 --rows N --cols C [--nthread T] [--repeat K]
//                   [--dump-output FILE]
//
// FEATURES.f32 is raw little-endian float32, row-major, N x C (written by bench/indb/run.py from
// the same array it loads into PostgreSQL). The file is read and the model loaded before any clock
// starts; one untimed warm-up call scores the first min(N, 1000) rows. Each timed call is one
// XGBoosterPredictFromDense over all N rows ("inplace" prediction: no DMatrix copy, no prediction
// cache, exactly what xgboost's Python inplace_predict does), output_margin false, so the result is
// the probability for binary:logistic. The call runs with `nthread` OpenMP threads.
//
// Prints one JSON object on stdout:
//   {"rows":N, "cols":C, "nthread":T, "seconds":[...], "cpu_seconds":[...], "rows_per_second_median":...,
//    "sum":..., "positives":...}
// `seconds` is the wall time of each timed call, `cpu_seconds` the process's CPU time during it (all
// threads; OpenMP threads that spin while waiting count too).
// where `sum` is the sum of the predictions of the last call and `positives` how many exceed 0.5 (the
// predicted label 1: a cross-check against the database's sum(flock.predict(...))).
// Exit status: 0 on success, 1 on an xgboost error (message on stderr), 2 on bad arguments or I/O.

#include <xgboost/c_api.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <string>
#include <vector>

namespace {

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "flock_bench_xgb: %s\n", msg.c_str());
  std::fprintf(stderr,
               "usage: flock_bench_xgb MODEL.json FEATURES.f32 --rows N --cols C [--nthread T] [--repeat K]\n"
               "                       [--dump-output FILE]\n");
  std::exit(2);
}

void check(int rc, const char* what) {
  if (rc != 0) {
    std::fprintf(stderr, "flock_bench_xgb: %s failed: %s\n", what, XGBGetLastError());
    std::exit(1);
  }
}

std::string array_interface(const float* data, uint64_t rows, uint64_t cols) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "{\"data\": [%llu, true], \"shape\": [%llu, %llu], \"typestr\": \"<f4\", \"version\": 3}",
                static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(data)),
                static_cast<unsigned long long>(rows), static_cast<unsigned long long>(cols));
  return buf;
}

double cpu_now() {  // CPU time of the whole process (every OpenMP thread)
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, data_path, dump_path;
  long long rows = -1, cols = -1;
  int nthread = 1, repeat = 1;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--rows") rows = std::atoll(value().c_str());
    else if (a == "--cols") cols = std::atoll(value().c_str());
    else if (a == "--nthread") nthread = std::atoi(value().c_str());
    else if (a == "--repeat") repeat = std::atoi(value().c_str());
    else if (a == "--dump-output") dump_path = value();
    else if (a.rfind("--", 0) == 0) usage_error("unknown option " + a);
    else positional.push_back(a);
  }
  if (positional.size() != 2) usage_error("expected MODEL.json and FEATURES.f32");
  if (rows <= 0 || cols <= 0 || nthread <= 0 || repeat <= 0) usage_error("--rows, --cols, --nthread, --repeat must be positive");
  model_path = positional[0];
  data_path = positional[1];

  std::vector<float> x(static_cast<size_t>(rows * cols));
  {
    std::ifstream f(data_path, std::ios::binary);
    if (!f) usage_error("cannot open " + data_path);
    f.read(reinterpret_cast<char*>(x.data()), static_cast<std::streamsize>(x.size() * sizeof(float)));
    if (f.gcount() != static_cast<std::streamsize>(x.size() * sizeof(float)))
      usage_error(data_path + " is shorter than rows x cols float32 values");
  }

  BoosterHandle booster;
  check(XGBoosterCreate(nullptr, 0, &booster), "XGBoosterCreate");
  check(XGBoosterLoadModel(booster, model_path.c_str()), "XGBoosterLoadModel");
  check(XGBoosterSetParam(booster, "nthread", std::to_string(nthread).c_str()), "XGBoosterSetParam(nthread)");

  // type 0: normal prediction (transformed by the objective); iteration range 0..0: all trees.
  const char* config =
      "{\"type\": 0, \"training\": false, \"iteration_begin\": 0, \"iteration_end\": 0, \"strict_shape\": false, "
      "\"missing\": NaN, \"cache_id\": 0}";
  const bst_ulong* shape = nullptr;
  bst_ulong dim = 0;
  const float* out = nullptr;

  long long warm = std::min<long long>(rows, 1000);
  std::string warm_iface = array_interface(x.data(), static_cast<uint64_t>(warm), static_cast<uint64_t>(cols));
  check(XGBoosterPredictFromDense(booster, warm_iface.c_str(), config, nullptr, &shape, &dim, &out),
        "XGBoosterPredictFromDense (warm-up)");

  std::string iface = array_interface(x.data(), static_cast<uint64_t>(rows), static_cast<uint64_t>(cols));
  std::vector<double> seconds, cpu_seconds;
  double sum = 0;
  uint64_t nout = 0, positives = 0;
  for (int k = 0; k < repeat; ++k) {
    double c0 = cpu_now();
    auto t0 = std::chrono::steady_clock::now();
    check(XGBoosterPredictFromDense(booster, iface.c_str(), config, nullptr, &shape, &dim, &out),
          "XGBoosterPredictFromDense");
    auto t1 = std::chrono::steady_clock::now();
    cpu_seconds.push_back(cpu_now() - c0);
    seconds.push_back(std::chrono::duration<double>(t1 - t0).count());
    nout = 1;
    for (bst_ulong d = 0; d < dim; ++d) nout *= shape[d];
    sum = 0;
    positives = 0;
    for (uint64_t i = 0; i < nout; ++i) {
      sum += out[i];
      positives += out[i] > 0.5f;
    }
  }
  if (!dump_path.empty()) {
    std::ofstream f(dump_path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(out), static_cast<std::streamsize>(nout * sizeof(float)));
  }
  std::vector<double> sorted = seconds;
  std::sort(sorted.begin(), sorted.end());
  double median = sorted[sorted.size() / 2];
  if (sorted.size() % 2 == 0) median = 0.5 * (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]);

  std::printf("{\"rows\": %lld, \"cols\": %lld, \"nthread\": %d, \"outputs\": %llu, \"seconds\": [", rows, cols,
              nthread, static_cast<unsigned long long>(nout));
  for (size_t k = 0; k < seconds.size(); ++k) std::printf("%s%.6f", k ? ", " : "", seconds[k]);
  std::printf("], \"cpu_seconds\": [");
  for (size_t k = 0; k < cpu_seconds.size(); ++k) std::printf("%s%.6f", k ? ", " : "", cpu_seconds[k]);
  std::printf("], \"rows_per_second_median\": %.1f, \"sum\": %.6f, \"positives\": %llu}\n",
              static_cast<double>(rows) / median, sum, static_cast<unsigned long long>(positives));
  XGBoosterFree(booster);
  return 0;
}
