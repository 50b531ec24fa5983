// XGBoost training through libxgboost's C API, round by round, as XGBoost's Python xgboost.train
// does it: the same parameters by the same names, num_boost_round rounds, early stopping on the
// held-out rows as its EarlyStopping callback decides (the last metric of the evaluation, maximized
// for auc / aucpr / map / ndcg, improved only when strictly better). The model kept is the one of
// the best round (the booster sliced to best_iteration + 1 rounds), saved as XGBoost JSON.
#include <pthread.h>
#include <xgboost/c_api.h>

#include <csignal>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <string>

#include "flock/error.hpp"
#include "flock/interrupt.hpp"
#include "flock/train.hpp"
#include "train_internal.hpp"

namespace flock::train {

namespace {

constexpr int kDefaultRounds = 10;  // xgboost.train's num_boost_round default
constexpr int kMaxRounds = 1000000;

// libxgboost runs OpenMP threads in the calling process (a PostgreSQL backend), and a thread
// starts with the signal mask of the thread that creates it. Every call that may start or use those
// threads runs with all signals blocked, so they never take a signal meant for the process (a query
// cancel, a latch wakeup): such a signal waits for the call to return and is handled between
// rounds, where training polls for interrupts.
template <class Call>
int signals_blocked(Call&& call) {
  sigset_t all, saved;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &saved);
  const int rc = call();
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  return rc;
}

// XGBoost reports unused parameters as a warning through its log; training collects them.
std::mutex log_mutex;
std::string* log_sink = nullptr;
void collect_log(const char* message) {
  std::lock_guard<std::mutex> lock(log_mutex);
  if (log_sink) {
    log_sink->append(message);
    log_sink->push_back('\n');
  }
}

void check(int rc, const std::string& what) {
  if (rc == 0) return;
  std::string message = XGBGetLastError();
  // XGBoost's messages start with "[time] /path/file.cc:line: "; keep the sentence.
  if (auto pos = message.find(": "); message.rfind("[", 0) == 0 && pos != std::string::npos)
    message = message.substr(pos + 2);
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
  fail(ErrorCode::InvalidInput, "XGBoost " + what + ": " + message,
       "Parameters are XGBoost's own (https://xgboost.readthedocs.io/en/release_1.7.0/parameter.html), "
       "plus num_boost_round and early_stopping_rounds.");
}

struct Matrix {
  DMatrixHandle handle = nullptr;
  Matrix() = default;
  Matrix(const Matrix&) = delete;
  Matrix& operator=(const Matrix&) = delete;
  ~Matrix() {
    if (handle) XGDMatrixFree(handle);
  }
};

struct Booster {
  BoosterHandle handle = nullptr;
  Booster() = default;
  Booster(const Booster&) = delete;
  Booster& operator=(const Booster&) = delete;
  ~Booster() {
    if (handle) XGBoosterFree(handle);
  }
};

void build_matrix(const TrainingData& data, const std::vector<std::int64_t>& rows, int threads, Matrix& out) {
  std::vector<float> x(rows.size() * static_cast<std::size_t>(data.cols));
  std::vector<float> y(rows.size());
  const std::size_t cols = static_cast<std::size_t>(data.cols);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const std::size_t r = static_cast<std::size_t>(rows[i]);
    std::copy_n(&data.features[r * cols], cols, &x[i * cols]);
    y[i] = data.target[r];
  }
  check(signals_blocked([&] {
          return XGDMatrixCreateFromMat_omp(x.data(), rows.size(), cols, std::numeric_limits<float>::quiet_NaN(),
                                            &out.handle, threads);
        }),
        "could not take the data");
  check(XGDMatrixSetFloatInfo(out.handle, "label", y.data(), y.size()), "could not take the target");
  std::vector<const char*> names;
  for (const auto& name : data.feature_names) names.push_back(name.c_str());
  check(XGDMatrixSetStrFeatureInfo(out.handle, "feature_name", names.data(), names.size()),
        "could not take the feature names");
}

// A parameter value as XGBoost's Python package passes it (str(value)); booleans as 1 / 0.
std::string param_text(const std::string& name, const nlohmann::json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_boolean()) return value.get<bool>() ? "1" : "0";
  if (value.is_number_integer() || value.is_number_unsigned()) return value.dump();
  if (value.is_number_float()) {
    // Python's repr of a float: the shortest text that reads back to the same double.
    char buf[64];
    for (int precision = 1; precision <= 17; ++precision) {
      std::snprintf(buf, sizeof buf, "%.*g", precision, value.get<double>());
      if (std::strtod(buf, nullptr) == value.get<double>()) break;
    }
    return buf;
  }
  fail(ErrorCode::InvalidInput, "XGBoost parameter \"" + name + "\" must be a string, number or boolean",
       "Give a list only for parameters XGBoost takes several times, such as eval_metric.");
}

int int_param(const nlohmann::json& params, const char* name, int fallback, int low) {
  if (!params.contains(name)) return fallback;
  const auto& v = params[name];
  if (!v.is_number_integer() || v.get<long long>() < low || v.get<long long>() > kMaxRounds)
    fail(ErrorCode::InvalidInput, std::string(name) + " must be an integer from " + std::to_string(low) +
                                      " to " + std::to_string(kMaxRounds));
  return v.get<int>();
}

bool maximized(const std::string& metric) {
  for (const char* prefix : {"auc", "aucpr", "map", "ndcg"})
    if (metric.rfind(prefix, 0) == 0) return true;
  return false;
}

// "[3]\ttest-rmse:0.5\ttest-mae:0.4" -> the last metric's name and value.
std::pair<std::string, double> last_metric(const std::string& evaluation) {
  const auto tab = evaluation.rfind('\t');
  const std::string item = evaluation.substr(tab == std::string::npos ? 0 : tab + 1);
  const auto colon = item.rfind(':');
  if (colon == std::string::npos) fail(ErrorCode::Internal, "unexpected XGBoost evaluation: " + evaluation);
  std::string name = item.substr(0, colon);
  if (name.rfind("test-", 0) == 0) name = name.substr(5);
  return {name, std::strtod(item.c_str() + colon + 1, nullptr)};
}

std::string task_of(const std::string& objective) {
  if (objective == "binary:logistic") return "binary";
  if (objective == "multi:softprob") return "multiclass";
  if (objective == "multi:softmax") return "multiclass_labels";
  if (objective.rfind("binary:", 0) == 0 || objective.rfind("rank:", 0) == 0) return "other";
  return "regression";
}

}  // namespace

Result train_xgboost(const TrainingData& data, const Request& request) {
  const nlohmann::json& params = request.params;
  const int rounds = int_param(params, "num_boost_round", kDefaultRounds, 1);
  const int early_stopping = int_param(params, "early_stopping_rounds", 0, 1);
  const Split split = split_rows(data, request.test_fraction, request.seed);
  if (split.train.empty())
    fail(ErrorCode::InvalidInput, "no rows are left for training after holding out the test rows",
         "Lower test_fraction or train on more rows.");
  if (early_stopping > 0 && split.test.empty())
    fail(ErrorCode::InvalidInput, "early_stopping_rounds needs held-out rows, and none were drawn",
         "Raise test_fraction above 0 or drop early_stopping_rounds.");

  const int threads =
      params.contains("nthread") && params["nthread"].is_number_integer() && params["nthread"].get<int>() > 0
          ? params["nthread"].get<int>()
          : request.default_threads;
  Matrix train_matrix, test_matrix;
  build_matrix(data, split.train, threads, train_matrix);
  if (!split.test.empty()) build_matrix(data, split.test, threads, test_matrix);
  poll_interrupt();

  Booster booster;
  check(XGBoosterCreate(&train_matrix.handle, 1, &booster.handle), "could not start");
  nlohmann::json used = nlohmann::json::object();
  if (!params.contains("nthread")) {
    check(XGBoosterSetParam(booster.handle, "nthread", std::to_string(request.default_threads).c_str()),
          "nthread");
    used["nthread"] = request.default_threads;
  }
  if (!params.contains("validate_parameters"))
    check(XGBoosterSetParam(booster.handle, "validate_parameters", "1"), "");
  for (const auto& [name, value] : params.items()) {
    used[name] = value;
    if (name == "num_boost_round" || name == "early_stopping_rounds") continue;
    if (value.is_array()) {
      for (const auto& item : value) {
        check(XGBoosterSetParam(booster.handle, name.c_str(), param_text(name, item).c_str()),
              "parameter " + name);
      }
      continue;
    }
    check(XGBoosterSetParam(booster.handle, name.c_str(), param_text(name, value).c_str()),
          "parameter " + name);
  }
  used["num_boost_round"] = rounds;

  std::string log;
  {
    std::lock_guard<std::mutex> lock(log_mutex);
    log_sink = &log;
  }
  struct StopCollecting {
    ~StopCollecting() {
      std::lock_guard<std::mutex> lock(log_mutex);
      log_sink = nullptr;
    }
  } stop_collecting;
  XGBRegisterLogCallback(collect_log);

  int best_iteration = -1;
  double best_score = 0;
  int rounds_done = 0;
  std::string metric_name;
  for (int round = 0; round < rounds; ++round) {
    poll_interrupt();
    check(signals_blocked([&] { return XGBoosterUpdateOneIter(booster.handle, round, train_matrix.handle); }),
          "training failed");
    ++rounds_done;
    if (round == 0) {
      std::lock_guard<std::mutex> lock(log_mutex);
      if (auto pos = log.find("Parameters: {"); pos != std::string::npos) {
        const auto end = log.find('}', pos);
        fail(ErrorCode::InvalidInput,
             "unknown XGBoost parameter " +
                 log.substr(pos + 12, end == std::string::npos ? end : end - pos - 11),
             "XGBoost does not use it with these settings; see "
             "https://xgboost.readthedocs.io/en/release_1.7.0/parameter.html for the names.");
      }
    }
    Progress progress{round + 1, rounds, std::nan(""), {}};
    bool stop = false;
    if (early_stopping > 0) {
      const char* names[] = {"test"};
      const char* evaluation = nullptr;
      check(signals_blocked([&] {
              return XGBoosterEvalOneIter(booster.handle, round, &test_matrix.handle, names, 1, &evaluation);
            }),
            "evaluation");
      auto [name, score] = last_metric(evaluation);
      metric_name = name;
      progress.metric = score;
      progress.metric_name = name;
      const bool improved = best_iteration < 0 || (maximized(name) ? score > best_score : score < best_score);
      if (improved) {
        best_iteration = round;
        best_score = score;
      } else if (round - best_iteration >= early_stopping) {
        stop = true;
        progress.best_round = best_iteration + 1;
      }
    }
    if (request.on_progress) request.on_progress(progress);
    if (stop) break;
  }

  Booster sliced;
  BoosterHandle final_booster = booster.handle;
  if (early_stopping > 0 && best_iteration + 1 < rounds_done) {
    check(XGBoosterSlice(booster.handle, 0, best_iteration + 1, 1, &sliced.handle),
          "could not keep the best round");
    final_booster = sliced.handle;
  }
  bst_ulong length = 0;
  const char* bytes = nullptr;
  check(XGBoosterSaveModelToBuffer(final_booster, R"({"format": "json"})", &length, &bytes),
        "could not save");
  Result result;
  result.model.assign(bytes, length);
  result.format = "xgboost";
  result.params = used;

  const std::string objective = params.contains("objective") && params["objective"].is_string()
                                    ? params["objective"].get<std::string>()
                                    : "reg:squarederror";
  const std::string task = task_of(objective);
  if (!split.test.empty() && task != "other") {
    const char* config =
        R"({"type": 0, "training": false, "iteration_begin": 0, "iteration_end": 0, "strict_shape": false})";
    const bst_ulong* shape = nullptr;
    bst_ulong dims = 0;
    const float* out = nullptr;
    check(signals_blocked([&] {
            return XGBoosterPredictFromDMatrix(final_booster, test_matrix.handle, config, &shape, &dims, &out);
          }),
          "prediction");
    std::size_t count = 1;
    for (bst_ulong d = 0; d < dims; ++d) count *= shape[d];
    std::vector<double> predicted(out, out + count);
    std::vector<float> truth;
    for (auto r : split.test) truth.push_back(data.target[static_cast<std::size_t>(r)]);
    const int classes = task == "multiclass" ? static_cast<int>(count / split.test.size()) : 0;
    result.metrics = evaluate(task, truth, predicted, classes);
  } else {
    result.metrics = {{"test_rows", split.test.size()}};
  }
  result.metrics["train_rows"] = split.train.size();
  result.metrics["rounds"] = rounds_done;
  if (early_stopping > 0) {
    result.metrics["best_iteration"] = best_iteration;
    result.metrics["best_score"] = best_score;
    result.metrics["early_stopping_metric"] = metric_name;
  }
  int major = 0, minor = 0, patch = 0;
  XGBoostVersion(&major, &minor, &patch);
  result.environment = {
      {"xgboost", std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch)}};
  return result;
}

}  // namespace flock::train
