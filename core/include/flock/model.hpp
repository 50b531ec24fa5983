// A loaded, validated, compiled model: the one object the PostgreSQL glue and the CLI talk to.
//
// Every format is imported into an ONNX ModelProto (XGBoost JSON becomes a TreeEnsemble node), then
// compiled into a plan of kernels. Loading validates everything and throws flock::Error; predicting
// is const and safe to share between callers.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "flock/error.hpp"
#include "flock/tensor.hpp"

namespace flock {

enum class ModelFormat { Auto, Onnx, XGBoostJson };

ModelFormat parse_format(const std::string& name);  // "auto", "onnx", "xgboost" (throws otherwise)
const char* to_string(ModelFormat f);               // "onnx", "xgboost"
// Sniffs the bytes: '{' (after white space) is XGBoost JSON, otherwise ONNX protobuf.
ModelFormat detect_format(std::span<const uint8_t> bytes);

enum class Task { Regression, Classification };

struct InputSpec {
  std::string name;
  ElemType type = ElemType::Float;
  std::vector<int64_t> shape;  // -1 for a dynamic dimension (the batch)
  int64_t width = 1;           // values per row: product of the non-batch dimensions (-1: symbolic)
};

struct OutputSpec {
  std::string name;
  std::string kind;  // "tensor(float)", "seq(map(int64,tensor(float)))", ...
};

struct Signature {
  std::vector<InputSpec> inputs;
  std::vector<OutputSpec> outputs;
  // Names of the model's features. For a model with one vector input: one name per column of that
  // input (empty when the model carries none). For a model with several inputs: the input names.
  std::vector<std::string> feature_names;
  Task task = Task::Regression;
  std::vector<std::string> class_labels;  // classifiers: labels in probability order, as text
  bool numeric_labels = true;             // classifiers: labels are integers
  std::vector<std::string> operators;     // distinct "domain:Op" (domain omitted for ai.onnx)
  std::vector<bool> input_accepts_missing;  // per input: a NaN reaches no output unhandled
  int64_t opset = 0;
  int64_t ml_opset = 0;
  std::string producer;
};

// One batch of feature values, laid out per model input: inputs[k] has shape [rows, width_k] and
// the element type of model input k (Float/Double/Int64/String).
struct FeatureBatch {
  int64_t rows = 0;
  std::vector<Tensor> inputs;
};

struct Prediction {
  int64_t rows = 0;
  // Regression: the value. Classification with numeric labels: the label. Else empty.
  std::vector<double> values;
  // Classification: the label as text, per row.
  std::vector<std::string> labels;
  // Classification: rows x n_classes probabilities (scores if the model emits no probabilities).
  std::vector<double> proba;
  int64_t n_classes = 0;
};

// What Model::predict fills in (a set of these bits): a caller that needs only some of it spares
// building the rest (e.g. a text label per row). Regressors always give their values.
enum PredictParts : unsigned {
  kPredictValues = 1,  // values
  kPredictLabels = 2,  // labels
  kPredictProba = 4,   // proba (n_classes is always set)
  kPredictAll = 7,
};

// Default of Limits::max_tensor_elements, and of the extension's flock.max_tensor_elements (an int).
constexpr int32_t kDefaultMaxTensorElements = int32_t(1) << 28;

struct Limits {
  int64_t max_model_bytes = int64_t(1) << 30;    // 1 GiB
  int64_t max_tensor_elements = kDefaultMaxTensorElements;  // per tensor, guards huge shapes
};

class Plan;            // compiled kernels, defined in model.cpp
class ModelInternals;  // the optimizer's view of a compiled model (core/src/model_internals.hpp)

class Model {
 public:
  // Parses, validates and compiles. Throws flock::Error naming what is wrong. Every entry point
  // below throws only flock::Error or std::bad_alloc (see model.cpp's guarded()).
  static std::shared_ptr<const Model> load(std::span<const uint8_t> bytes,
                                           ModelFormat format = ModelFormat::Auto,
                                           const Limits& limits = {});
  ~Model();

  ModelFormat format() const { return format_; }
  const Signature& signature() const { return signature_; }
  size_t size_bytes() const { return size_bytes_; }
  // Bytes the compiled model holds in memory now: its weights (constant tensors, tree nodes) and
  // the buffers it keeps for its next run. An estimate, for a cache's byte budget.
  size_t memory_bytes() const;
  // Bytes one row of a batch takes during a run (inputs, intermediates, outputs), measured at load
  // on one row: an upper estimate, for sizing batches to a byte budget.
  size_t bytes_per_row() const { return bytes_per_row_; }

  // Runs the model on a batch. Throws flock::Error for inputs that do not fit. `parts`: which of
  // the Prediction's fields to fill (PredictParts bits); the others stay empty.
  Prediction predict(const FeatureBatch& batch, unsigned parts = kPredictAll) const;
  // Raw outputs of the graph, in graph output order.
  std::vector<Tensor> run(const FeatureBatch& batch) const;
  // Runs the graph on whole tensors, one per model input, with their own shapes (checked against
  // the declared fixed dimensions). For models whose inputs are not rows of features.
  std::vector<Tensor> run_tensors(std::vector<Tensor> inputs) const;

  // Signature as JSON text (inputs, outputs, features, task, labels, operators, opsets).
  std::string signature_json() const;

 private:
  friend class ModelInternals;
  Model() = default;
  // The entry points' bodies; the public ones turn their stray library exceptions into flock::Error.
  static std::shared_ptr<const Model> load_unguarded(std::span<const uint8_t> bytes, ModelFormat format,
                                                     const Limits& limits);
  Prediction predict_unguarded(const FeatureBatch& batch, unsigned parts) const;
  // What predict returns for the graph's `outputs` on `batch` (also flock.trace's prediction).
  Prediction prediction_of(const std::vector<Tensor>& outputs, const FeatureBatch& batch, unsigned parts) const;
  std::vector<Tensor> run_unguarded(const FeatureBatch& batch) const;
  std::vector<Tensor> run_tensors_unguarded(std::vector<Tensor> inputs) const;
  std::string signature_json_unguarded() const;
  size_t trial_run() const;
  std::vector<Tensor> feed_for(const FeatureBatch& batch) const;  // checked inputs, shaped for the plan
  ModelFormat format_ = ModelFormat::Auto;
  Signature signature_;
  size_t size_bytes_ = 0;
  size_t bytes_per_row_ = 0;
  std::unique_ptr<Plan> plan_;
  int label_output_ = -1;  // index of the label output (classifiers)
  int score_output_ = -1;  // index of the probability / value output
};

// Returns the model bytes with the given feature names embedded (ONNX metadata_props
// "feature_names" as a JSON array; XGBoost learner.feature_names). Validates the count against the
// model's inputs.
std::vector<uint8_t> with_feature_names(std::span<const uint8_t> bytes, ModelFormat format,
                                        const std::vector<std::string>& names);

}  // namespace flock
