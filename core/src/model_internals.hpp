// Internal to flock_core: what the optimizer (core/src/optimize/) sees of a compiled model — its
// steps in graph order with the value slots they read and write — and how it makes a model that
// runs the same graph with some kernels replaced (a specialized tree ensemble, say).
#pragma once

#include <cstddef>
#include <memory>
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
  static std::shared_ptr<const Model> with_kernels(
      const Model& model, const std::vector<std::pair<size_t, std::shared_ptr<const Kernel>>>& replacements);
};

}  // namespace flock
