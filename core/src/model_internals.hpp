// Internal to flock_core: what the optimizer (core/src/optimize/) sees of a compiled model — its
// steps in graph order with the value slots they read and write — and how it makes a model that
// runs the same graph with some kernels replaced (a specialized tree ensemble, say).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "flock/kernel.hpp"
#include "flock/model.hpp"

namespace flock {

class ModelInternals {
 public:
  struct StepView {
    const Kernel* kernel = nullptr;
    std::vector<int> inputs;   // slot per input, -1 for an omitted optional input
    std::vector<int> outputs;  // slot per output, -1 for an unused output
    std::string where;         // "OpType 'name'"
    std::vector<std::string> input_names;   // the graph's value names, per input / output
    std::vector<std::string> output_names;
  };
  struct GraphView {
    std::vector<int> input_slots;   // per model input (Signature::inputs order)
    std::vector<int> output_slots;  // per model output
    std::vector<int> constant_slots;
    std::vector<StepView> steps;
  };

  static GraphView graph(const Model& model);
  // Index into the model's outputs of its label output (classifiers), else -1.
  static int label_output(const Model& model);

  // A model with the same signature and graph whose step `index` runs `kernel` instead, for each
  // pair given (the other kernels are shared with `model`). The replacement must take and give the
  // same inputs and outputs as the kernel it replaces. Throws flock::Error(Internal) for a step
  // index out of range or a null kernel.
  // Runs the model's own plan on `batch` (as Model::run does, checked the same way), calling
  // `observe(step index, its inputs, its outputs)` after each step; returns the graph's outputs.
  using StepObserver =
      std::function<void(size_t step, const std::vector<const Tensor*>& in, const std::vector<Tensor>& out)>;
  static std::vector<Tensor> run_observed(const Model& model, const FeatureBatch& batch, const StepObserver& observe);
  // What Model::predict returns for those outputs (the same code).
  static Prediction prediction_of(const Model& model, const std::vector<Tensor>& outputs, const FeatureBatch& batch,
                                  unsigned parts);

  static std::shared_ptr<const Model> with_kernels(
      const Model& model, const std::vector<std::pair<size_t, std::shared_ptr<const Kernel>>>& replacements);
};

}  // namespace flock
