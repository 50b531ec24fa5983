// flock_bench_trees: tree-ensemble inference, flock core vs libxgboost, single thread, same run.
//
//   flock_bench_trees --data DIR [--rows N] [--rounds R] [--min-time S] [--batch B] [--quick] [--load-only]
//                     [--model FILE]... [--no-load]
//
// DIR is what make_data.py wrote: x.f32 / x_missing.f32 (rows x 28 float32) and XGBoost JSON
// models. For each model (500 trees depth 8, 100 trees depth 6, and 500 trees depth 8 on data
// with missing values) it
//   1. checks fidelity on every row (after the timing, against XGBoost's predictions from it):
//      XGBoost's own leaf choice (pred_leaf) summed the way the flock kernel sums (double, tree
//      order, then the base margin) must give flock's probability bit for bit (same leaf in every
//      tree), and flock's probability must be within 1e-5 of XGBoost's own prediction (which sums
//      in float);
//   2. times, alternately for --rounds rounds (best round kept; XGBoost's two routes both in the
//      first round, then only the faster of them):
//        xgboost inplace   XGBoosterPredictFromDense on the whole matrix (nthread=1)
//        xgboost dmatrix   XGBoosterPredictFromDMatrix on a DMatrix built outside the clock (a new
//                          one per round: XGBoost caches the predictions of a DMatrix)
//        flock             flock::Model::predict on batches of --batch rows (default 1024),
//                          building each FeatureBatch (a copy of its rows) inside the clock
//      and prints rows/s for both and flock / best-xgboost with PASS (>= 2.0) or FAIL;
//   3. prints the batch-size curve of flock (rows/s at batch 1, 16, 64, 256, 1024, 4096).
// Then it times flock::Model::load (parse + compile) of the 1000-tree depth-8 model and of the
// others: PASS when the best of 5 loads of the 1000-tree model is under 100 ms.
//
// Every time is taken twice: process CPU time and elapsed time. Rates, ratios and PASS/FAIL use
// CPU time, which on a shared machine does not count the time other processes hold the core;
// elapsed figures are printed in brackets. Best of --rounds for both.
//
// Exit status: 0 when everything ran and agreed (PASS/FAIL is a measurement, not an error), 1 on a
// fidelity mismatch or a flock/xgboost error, 2 on bad arguments or missing files.
#include <xgboost/c_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "flock/error.hpp"
#include "flock/model.hpp"

namespace {

using Clock = std::chrono::steady_clock;
constexpr int64_t kCols = 28;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Process CPU time in seconds: what a single-threaded run costs whatever else the machine runs
// (elapsed time on a shared machine also counts the time other processes hold the core).
double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Elapsed and CPU seconds of one measurement; Best keeps the minimum of each over rounds.
struct Span {
  double wall = 0, cpu = 0;
};

class Stopwatch {
 public:
  Stopwatch() : wall_(Clock::now()), cpu_(cpu_seconds()) {}
  Span stop() const { return {seconds_since(wall_), cpu_seconds() - cpu_}; }

 private:
  Clock::time_point wall_;
  double cpu_;
};

struct Best {
  double wall = 1e300, cpu = 1e300;
  void add(const Span& s) {
    wall = std::min(wall, s.wall);
    cpu = std::min(cpu, s.cpu);
  }
};

[[noreturn]] void die(int code, const std::string& msg) {
  std::fprintf(stderr, "flock_bench_trees: %s\n", msg.c_str());
  std::exit(code);
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) die(2, "cannot open " + path + " (run make_data.py first)");
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

std::vector<float> read_floats(const std::string& path) {
  auto b = read_bytes(path);
  std::vector<float> v(b.size() / sizeof(float));
  std::memcpy(v.data(), b.data(), v.size() * sizeof(float));
  return v;
}

void xgb_check(int rc, const char* what) {
  if (rc != 0) die(1, std::string(what) + ": " + XGBGetLastError());
}

// ---- XGBoost side

struct Xgb {
  BoosterHandle booster = nullptr;
  explicit Xgb(const std::vector<uint8_t>& model) {
    xgb_check(XGBoosterCreate(nullptr, 0, &booster), "XGBoosterCreate");
    xgb_check(XGBoosterLoadModelFromBuffer(booster, model.data(), model.size()), "XGBoosterLoadModelFromBuffer");
    xgb_check(XGBoosterSetParam(booster, "nthread", "1"), "XGBoosterSetParam(nthread)");
  }
  ~Xgb() { XGBoosterFree(booster); }
  Xgb(const Xgb&) = delete;
  Xgb& operator=(const Xgb&) = delete;

  // type 0: prediction, 1: margin, 6: leaf. Copies the result.
  std::vector<float> predict_dense(const float* x, int64_t rows, int type) const {
    char iface[256];
    std::snprintf(iface, sizeof iface,
                  "{\"data\": [%llu, true], \"shape\": [%lld, %lld], \"typestr\": \"<f4\", \"version\": 3}",
                  static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(x)), static_cast<long long>(rows),
                  static_cast<long long>(kCols));
    char config[256];
    std::snprintf(config, sizeof config,
                  "{\"type\": %d, \"training\": false, \"iteration_begin\": 0, \"iteration_end\": 0, "
                  "\"strict_shape\": false, \"missing\": NaN, \"cache_id\": 0}",
                  type);
    const bst_ulong* shape = nullptr;
    bst_ulong dim = 0;
    const float* out = nullptr;
    xgb_check(XGBoosterPredictFromDense(booster, iface, config, nullptr, &shape, &dim, &out),
              "XGBoosterPredictFromDense");
    bst_ulong n = 1;
    for (bst_ulong k = 0; k < dim; ++k) n *= shape[k];
    return std::vector<float>(out, out + n);
  }

  // Prediction from a DMatrix built beforehand; returns a pointer into XGBoost's buffer.
  const float* predict_dmatrix(DMatrixHandle d, bst_ulong* n, int type = 0) const {
    char config[200];
    std::snprintf(config, sizeof config,
                  "{\"type\": %d, \"training\": false, \"iteration_begin\": 0, \"iteration_end\": 0, "
                  "\"strict_shape\": false}",
                  type);
    const bst_ulong* shape = nullptr;
    bst_ulong dim = 0;
    const float* out = nullptr;
    xgb_check(XGBoosterPredictFromDMatrix(booster, d, config, &shape, &dim, &out), "XGBoosterPredictFromDMatrix");
    *n = 1;
    for (bst_ulong k = 0; k < dim; ++k) *n *= shape[k];
    return out;
  }
};

// ---- flock side

flock::FeatureBatch make_batch(const float* x, int64_t rows) {
  flock::FeatureBatch b;
  b.rows = rows;
  b.inputs.push_back(flock::Tensor::floats({rows, kCols}, std::vector<float>(x, x + rows * kCols)));
  return b;
}

// Probability of class 1 for every row, in batches of `batch`.
std::vector<double> flock_proba(const flock::Model& m, const float* x, int64_t rows, int64_t batch) {
  std::vector<double> p(static_cast<size_t>(rows));
  for (int64_t r0 = 0; r0 < rows; r0 += batch) {
    const int64_t n = std::min(batch, rows - r0);
    flock::Prediction pr = m.predict(make_batch(x + r0 * kCols, n));
    for (int64_t r = 0; r < n; ++r) p[static_cast<size_t>(r0 + r)] = pr.proba[static_cast<size_t>(2 * r + 1)];
  }
  return p;
}

// Scores `rows` rows in batches of `batch`. Keeps a checksum so nothing is elided.
Span time_flock(const flock::Model& m, const float* x, int64_t rows, int64_t batch, double* checksum) {
  const Stopwatch sw;
  double sum = 0;
  for (int64_t r0 = 0; r0 < rows; r0 += batch) {
    const int64_t n = std::min(batch, rows - r0);
    flock::Prediction pr = m.predict(make_batch(x + r0 * kCols, n));
    sum += pr.proba[1];
  }
  const Span s = sw.stop();
  *checksum += sum;
  return s;
}

// ORT's logistic in float, as the flock kernel computes it.
float compute_logistic(float val) {
  float v = 1 / (1 + std::exp(-std::abs(val)));
  return (val < 0) ? (1 - v) : v;
}

struct Forest {
  std::vector<std::vector<float>> leaf;  // per tree: split_conditions (a leaf's value at leaf ids)
  float base_margin = 0;
};

Forest read_forest(const std::vector<uint8_t>& bytes) {
  auto j = nlohmann::json::parse(bytes.begin(), bytes.end());
  Forest f;
  for (const auto& t : j["learner"]["gradient_booster"]["model"]["trees"])
    f.leaf.push_back(t["split_conditions"].get<std::vector<float>>());
  const float p = std::stof(j["learner"]["learner_model_param"]["base_score"].get<std::string>());
  f.base_margin = -std::log(1.0f / p - 1.0f);
  return f;
}

struct Options {
  std::string data;
  int64_t rows = -1;
  int rounds = 3;
  double min_time = 0.5;
  int64_t batch = 1024;
  bool quick = false;
  bool load_only = false;  // only the Model::load timings: no data files, no scoring
  std::vector<std::string> models;  // --model: score only these model files (default: all three)
  bool no_load = false;             // --no-load: skip the Model::load timings
};

// rows/s from elapsed and from CPU time
struct Rate {
  double wall = 0, cpu = 0;
  static Rate of(int64_t rows, const Best& b) {
    return {static_cast<double>(rows) / b.wall, static_cast<double>(rows) / b.cpu};
  }
};

struct Result {
  std::string name;
  Rate xgb_inplace, xgb_dmatrix, flock;
  std::vector<std::pair<int64_t, Rate>> curve;
  Rate xgb() const {
    return {std::max(xgb_inplace.wall, xgb_dmatrix.wall), std::max(xgb_inplace.cpu, xgb_dmatrix.cpu)};
  }
};

// Every row, in chunks (pred_leaf holds rows x trees floats).
// `want`: XGBoost's own predictions for every row (those of the first timed inplace run).
bool check_fidelity(const std::string& name, const flock::Model& m, const Xgb& xgb, const Forest& forest,
                    const float* x, int64_t rows, const std::vector<float>& want_all) {
  const size_t n_trees = forest.leaf.size();
  int64_t bit_mismatch = 0, first_bad = -1;
  double max_diff = 0;
  constexpr int64_t kChunk = 32768;
  for (int64_t c0 = 0; c0 < rows; c0 += kChunk) {
    const int64_t n = std::min(kChunk, rows - c0);
    const float* xc = x + c0 * kCols;
    const float* want = want_all.data() + c0;
    std::vector<float> leaves;
    {  // pred_leaf is not available for inplace prediction
      DMatrixHandle dm = nullptr;
      xgb_check(XGDMatrixCreateFromMat(xc, static_cast<bst_ulong>(n), kCols,
                                       std::numeric_limits<float>::quiet_NaN(), &dm),
                "XGDMatrixCreateFromMat");
      bst_ulong count = 0;
      const float* p = xgb.predict_dmatrix(dm, &count, 6);
      leaves.assign(p, p + count);
      XGDMatrixFree(dm);
    }
    if (leaves.size() != static_cast<size_t>(n) * n_trees) die(1, "unexpected pred_leaf shape");
    const auto got = flock_proba(m, xc, n, 1024);
    for (int64_t r = 0; r < n; ++r) {
      // XGBoost's leaves, summed as the flock kernel sums: double, tree order, then the base margin.
      double s = 0;
      for (size_t t = 0; t < n_trees; ++t) {
        const auto node = static_cast<size_t>(leaves[static_cast<size_t>(r) * n_trees + t]);
        s += static_cast<double>(forest.leaf[t][node]);
      }
      s += static_cast<double>(forest.base_margin);
      const float expect = compute_logistic(static_cast<float>(s));
      const double g = got[static_cast<size_t>(r)];
      if (static_cast<float>(g) != expect) {
        ++bit_mismatch;
        if (first_bad < 0) first_bad = c0 + r;
      }
      max_diff = std::max(max_diff, std::abs(g - static_cast<double>(want[static_cast<size_t>(r)])));
    }
  }
  std::printf("  fidelity %-26s rows %lld: leaf-choice mismatches %lld, max |flock - xgboost| = %.3g\n",
              name.c_str(), static_cast<long long>(rows), static_cast<long long>(bit_mismatch), max_diff);
  if (bit_mismatch) std::printf("    first mismatch at row %lld\n", static_cast<long long>(first_bad));
  // XGBoost sums in float, flock in double: the probabilities differ in the last bits only (a
  // wrong leaf moves them by ~1e-3).
  return bit_mismatch == 0 && max_diff <= 1e-5;
}

Result bench_model(const Options& o, const std::string& file, const std::string& label,
                   const std::vector<float>& data, int64_t rows, bool* ok) {
  const auto bytes = read_bytes(o.data + "/" + file);
  Result res;
  res.name = label;
  Xgb xgb(bytes);
  std::shared_ptr<const flock::Model> model;
  try {
    model = flock::Model::load(bytes);
  } catch (const flock::Error& e) {
    die(1, file + ": flock could not load it: " + e.what());
  }
  const float* x = data.data();

  double checksum = 0;
  Best inplace, dmatrix, fl;
  std::vector<float> xgb_pred;  // XGBoost's predictions, for the fidelity check
  // Round 0 times both XGBoost routes; later rounds only the faster one (the one that counts),
  // which keeps a full run within a few minutes: XGBoost is most of its time.
  bool run_inplace = true, run_dmatrix = true;
  for (int round = 0; round < o.rounds; ++round) {
    if (round == 1) {
      run_inplace = inplace.cpu <= dmatrix.cpu;
      run_dmatrix = !run_inplace;
    }
    if (run_inplace) {
      const Stopwatch sw;
      auto p = xgb.predict_dense(x, rows, 0);
      inplace.add(sw.stop());
      checksum += p[0];
      if (round == 0) xgb_pred = std::move(p);
    }
    if (run_dmatrix) {
      // A new DMatrix per round (built outside the clock): XGBoost caches the predictions of a DMatrix.
      DMatrixHandle dm = nullptr;
      xgb_check(XGDMatrixCreateFromMat(x, static_cast<bst_ulong>(rows), kCols,
                                       std::numeric_limits<float>::quiet_NaN(), &dm),
                "XGDMatrixCreateFromMat");
      const Stopwatch sw;
      bst_ulong n = 0;
      const float* q = xgb.predict_dmatrix(dm, &n);
      dmatrix.add(sw.stop());
      checksum += q[0];
      XGDMatrixFree(dm);
    }
    fl.add(time_flock(*model, x, rows, o.batch, &checksum));
  }
  *ok = check_fidelity(label, *model, xgb, read_forest(bytes), x, rows, xgb_pred) && *ok;
  res.xgb_inplace = Rate::of(rows, inplace);
  res.xgb_dmatrix = Rate::of(rows, dmatrix);
  res.flock = Rate::of(rows, fl);

  if (!o.quick) {
    for (int64_t b : {1, 16, 64, 256, 1024, 4096}) {
      // Enough rows for about min_time seconds (estimated from the batch-1024 speed), at least 4 batches.
      const double est = res.flock.cpu * o.min_time * (b < 64 ? 0.25 : 1.0);
      int64_t n = std::clamp<int64_t>(static_cast<int64_t>(est), 4 * b, rows);
      n = std::max<int64_t>(b, n / b * b);
      Best best;
      for (int round = 0; round < o.rounds; ++round) best.add(time_flock(*model, x, n, b, &checksum));
      res.curve.emplace_back(b, Rate::of(n, best));
    }
  }
  if (checksum == 42.4242) std::printf(" ");
  return res;
}

void print_load_times(const Options& o) {
  std::printf("\nModel::load (parse + compile) of XGBoost JSON, 5 loads (CPU ms; elapsed ms in brackets):\n");
  std::printf("  %-24s %7s %18s %18s %18s\n", "model", "MB", "flock best", "flock median", "xgboost best");
  for (const char* file : {"trees1000_d8.json", "trees500_d8.json", "trees100_d6.json"}) {
    const auto bytes = read_bytes(o.data + "/" + file);
    std::vector<Span> loads;
    for (int k = 0; k < 5; ++k) {
      const Stopwatch sw;
      try {
        auto m = flock::Model::load(bytes);
      } catch (const flock::Error& e) {
        die(1, std::string(file) + ": " + e.what());
      }
      loads.push_back(sw.stop());
    }
    std::sort(loads.begin(), loads.end(), [](const Span& a, const Span& b) { return a.cpu < b.cpu; });
    Best xgb_best;
    for (int k = 0; k < 3; ++k) {
      const Stopwatch sw;
      Xgb xgb(bytes);
      xgb_best.add(sw.stop());
    }
    Best flock_best;
    for (const auto& l : loads) flock_best.add(l);
    auto cell = [](double cpu, double wall) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.1f (%.1f)", cpu * 1e3, wall * 1e3);
      return std::string(buf);
    };
    std::printf("  %-24s %7.1f %18s %18s %18s", file, static_cast<double>(bytes.size()) / 1e6,
                cell(flock_best.cpu, flock_best.wall).c_str(), cell(loads[2].cpu, loads[2].wall).c_str(),
                cell(xgb_best.cpu, xgb_best.wall).c_str());
    if (std::string(file) == "trees1000_d8.json")
      std::printf("   goal < 100 ms: %s (CPU), %s (elapsed)", flock_best.cpu < 0.1 ? "PASS" : "FAIL",
                  flock_best.wall < 0.1 ? "PASS" : "FAIL");
    std::printf("\n");
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int k = 1; k < argc; ++k) {
    std::string a = argv[k];
    auto next = [&]() -> std::string {
      if (k + 1 >= argc) die(2, "missing value after " + a);
      return argv[++k];
    };
    if (a == "--data") o.data = next();
    else if (a == "--rows") o.rows = std::stoll(next());
    else if (a == "--rounds") o.rounds = std::stoi(next());
    else if (a == "--min-time") o.min_time = std::stod(next());
    else if (a == "--batch") o.batch = std::stoll(next());
    else if (a == "--quick") o.quick = true;
    else if (a == "--load-only") o.load_only = true;
    else if (a == "--model") o.models.push_back(next());
    else if (a == "--no-load") o.no_load = true;
    else die(2, "unknown argument " + a + "\nusage: flock_bench_trees --data DIR [--rows N] [--rounds R] "
                                         "[--min-time S] [--batch B] [--quick] [--load-only] [--model FILE]... [--no-load]");
  }
  if (o.data.empty()) die(2, "--data DIR is required");
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows up line by line under make / cmake
  XGBSetGlobalConfig("{\"nthread\": 1, \"verbosity\": 1}");
  if (o.load_only) {
    print_load_times(o);
    return 0;
  }

  const auto x = read_floats(o.data + "/x.f32");
  const auto xm = read_floats(o.data + "/x_missing.f32");
  int64_t rows = static_cast<int64_t>(x.size()) / kCols;
  if (o.rows > 0) rows = std::min(rows, o.rows);
#ifdef NDEBUG
  const char* build = "optimized (NDEBUG)";
#else
  const char* build = "NOT optimized (assertions on): do not quote these numbers";
#endif
  int major = 0, minor = 0, patch = 0;
  XGBoostVersion(&major, &minor, &patch);
  std::printf("tree-ensemble inference, single thread: flock core vs libxgboost %d.%d.%d; %lld rows x %lld "
              "features; flock batch %lld; best of %d rounds; build %s\n\n",
              major, minor, patch, static_cast<long long>(rows), static_cast<long long>(kCols),
              static_cast<long long>(o.batch), o.rounds, build);

  bool ok = true;
  std::vector<Result> results;
  auto wanted = [&](const char* file) {
    return o.models.empty() || std::find(o.models.begin(), o.models.end(), file) != o.models.end();
  };
  if (wanted("trees500_d8.json")) results.push_back(bench_model(o, "trees500_d8.json", "500 trees depth 8", x, rows, &ok));
  if (wanted("trees100_d6.json")) results.push_back(bench_model(o, "trees100_d6.json", "100 trees depth 6", x, rows, &ok));
  if (wanted("trees500_d8_missing.json"))
    results.push_back(bench_model(o, "trees500_d8_missing.json", "500x8, 5% missing values", xm, rows, &ok));
  if (results.empty()) die(2, "--model: no such model (trees500_d8.json, trees100_d6.json, trees500_d8_missing.json)");

  std::printf("\nthroughput, rows/s, single thread (CPU: per second of process CPU time; elapsed in brackets)\n");
  std::printf("  xgboost = the faster of inplace (XGBoosterPredictFromDense) and DMatrix prediction\n");
  std::printf("  %-26s %22s %22s %22s %22s %16s  %s\n", "model", "xgb inplace", "xgb dmatrix", "xgboost",
              "flock", "flock / xgboost", "goal >= 2.0x");
  auto cell = [](const Rate& r) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.0f (%.0f)", r.cpu, r.wall);
    return std::string(buf);
  };
  for (const auto& r : results) {
    const Rate xb = r.xgb();
    const double ratio = r.flock.cpu / xb.cpu, ratio_wall = r.flock.wall / xb.wall;
    char rb[64];
    std::snprintf(rb, sizeof rb, "%.2fx (%.2fx)", ratio, ratio_wall);
    std::printf("  %-26s %22s %22s %22s %22s %16s  %s\n", r.name.c_str(), cell(r.xgb_inplace).c_str(),
                cell(r.xgb_dmatrix).c_str(), cell(xb).c_str(), cell(r.flock).c_str(), rb,
                ratio >= 2.0 ? "PASS" : "FAIL");
  }
  if (!o.quick) {
    std::printf("\nflock batch-size curve, rows/s per CPU second (Model::predict per batch, FeatureBatch built "
                "each call):\n  %-26s", "model");
    for (const auto& [b, v] : results[0].curve) std::printf(" %10lld", static_cast<long long>(b));
    std::printf("\n");
    for (const auto& r : results) {
      std::printf("  %-26s", r.name.c_str());
      for (const auto& [b, v] : r.curve) std::printf(" %10.0f", v.cpu);
      std::printf("\n");
    }
  }
  if (!o.no_load) print_load_times(o);
  std::printf("\n%s\n", ok ? "all outputs agree" : "FIDELITY FAILURE");
  return ok ? 0 : 1;
}
