// Operator kernels. A kernel is built once per model node ("compile": validate every attribute and
// throw flock::Error with a precise message) and run many times ("run": const, no validation of
// attributes, only of the shapes of what arrives).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "flock/error.hpp"
#include "flock/onnx.hpp"
#include "flock/tensor.hpp"

namespace flock {

class Kernel {
 public:
  virtual ~Kernel() = default;
  // `in[k]` is nullptr for an omitted optional input. `out` has one tensor per node output, to be
  // overwritten.
  virtual void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const = 0;
  // As run(), when the caller gives up some inputs: `donated[k]`, when not nullptr, is the tensor
  // in[k] points to, read for the last time by this node (the plan frees it afterwards). The
  // kernel may take its storage, e.g. to compute an elementwise result in place, and leave it in
  // any valid state. `donated` is empty or has one entry per input. The default ignores the offer.
  virtual void run_donated(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& donated,
                           std::vector<Tensor>& out) const {
    (void)donated;
    run(in, out);
  }
  // Bytes of what the kernel keeps between runs beyond its object (e.g. compiled tree nodes), for
  // a model's memory estimate.
  virtual size_t memory_bytes() const { return 0; }
  // Asked at compile time when a Relu is the only reader of the kernel's only output: true if the
  // kernel now writes Relu of its output itself (x < 0 ? 0 : x, NaN passing through), so the plan
  // drops the Relu node. The default declines.
  virtual bool fold_relu() { return false; }
};

// Typed, checked access to a node's attributes.
class Attrs {
 public:
  explicit Attrs(const onnx::NodeProto& node);

  bool has(const std::string& name) const;
  int64_t get_int(const std::string& name) const;  // throws if absent
  int64_t get_int(const std::string& name, int64_t dflt) const;
  float get_float(const std::string& name) const;
  float get_float(const std::string& name, float dflt) const;
  std::string get_string(const std::string& name) const;
  std::string get_string(const std::string& name, const std::string& dflt) const;
  std::vector<int64_t> get_ints(const std::string& name) const;      // empty if absent
  std::vector<float> get_floats(const std::string& name) const;      // empty if absent
  std::vector<std::string> get_strings(const std::string& name) const;  // empty if absent
  // A TENSOR attribute converted to a flock::Tensor (throws if absent).
  Tensor get_tensor(const std::string& name) const;
  // Doubles from `<name>_as_tensor` (ai.onnx.ml opset 3) if present, else floats from `<name>`.
  std::vector<double> get_doubles_or_floats(const std::string& name) const;

  const onnx::NodeProto& node() const { return node_; }
  // "OpType 'name'" for error messages.
  std::string where() const;

 private:
  const onnx::AttributeProto* find(const std::string& name) const;
  const onnx::NodeProto& node_;
};

// What a kernel factory gets: the node, its attributes and the opset in force for its domain.
struct KernelContext {
  const onnx::NodeProto& node;
  const Attrs& attrs;
  int64_t opset;
};

using KernelFactory = std::function<std::unique_ptr<Kernel>(const KernelContext&)>;

// Registry keyed by (domain, op_type); domain "" is the default ONNX domain, "ai.onnx.ml" the ML one.
class KernelRegistry {
 public:
  static KernelRegistry& instance();
  void add(const std::string& domain, const std::string& op_type, KernelFactory factory);
  const KernelFactory* find(const std::string& domain, const std::string& op_type) const;
  std::vector<std::string> supported() const;  // "domain:Op" for listing

 private:
  std::map<std::pair<std::string, std::string>, KernelFactory> factories_;
};

// Each kernels/*.cpp defines one of these; model.cpp calls them all once (no static-init order games).
void register_ml_linear_kernels(KernelRegistry& r);
void register_ml_tree_kernels(KernelRegistry& r);
void register_ml_preprocess_kernels(KernelRegistry& r);
void register_standard_kernels(KernelRegistry& r);
void register_elementwise_kernels(KernelRegistry& r);  // math, comparison, logic, activations
void register_tensor_kernels(KernelRegistry& r);       // shape/index ops, reductions, TopK
void register_nn_kernels(KernelRegistry& r);           // Conv, pooling, normalization

// Converts an ONNX TensorProto (raw_data or typed fields) to a flock::Tensor.
Tensor tensor_from_proto(const onnx::TensorProto& proto);

}  // namespace flock
