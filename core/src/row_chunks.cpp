// Row independence of a graph (row_chunks.hpp). Every value is either a batch value (its axis 0 is
// the batch's rows, row r computed from input row r alone; its rank is tracked) or a constant
// value (computed from constants only, the same in every chunk). A node reading a batch value must
// be one of the operators below, with the attributes and constant operands that keep rows apart;
// anything else (a reduction over axis 0, a Shape, a Reshape of the batch axis, ai.onnx.ml
// operators, ...) makes the graph run whole.
#include "row_chunks.hpp"

#include <set>

#include "flock/kernel.hpp"

namespace flock::detail {

namespace {

// Operators that map each element alone (the output has the input's shape).
const std::set<std::string>& elementwise_unary() {
  static const std::set<std::string> ops = {
      "Abs",   "Acos",     "Acosh",  "Asin",    "Asinh",       "Atan",  "Atanh",    "Cast",     "Ceil",
      "Celu",  "Cos",      "Cosh",   "Elu",     "Erf",         "Exp",   "Floor",    "HardSigmoid", "HardSwish",
      "Identity", "IsInf", "IsNaN",  "LeakyRelu", "Log",       "Mish",  "Neg",      "Not",      "Reciprocal",
      "Relu",  "Round",    "Selu",   "Sigmoid", "Sign",        "Sin",   "Sinh",     "Softplus", "Softsign",
      "Sqrt",  "Tan",      "Tanh",   "ThresholdedRelu"};
  return ops;
}

// Operators with numpy broadcasting over two or more operands.
const std::set<std::string>& broadcasting() {
  static const std::set<std::string> ops = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean",
                                            "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Equal",
                                            "And", "Or", "Xor", "Mod"};
  return ops;
}

int64_t normalized(int64_t axis, int rank) { return axis < 0 ? axis + rank : axis; }

}  // namespace

bool rows_independent(const onnx::GraphProto& graph, const std::map<std::string, int64_t>& opsets,
                      const std::function<const Tensor*(const std::string&)>& constant,
                      const std::map<std::string, int>& input_ranks) {
  std::map<std::string, int> batch;  // batch values and their ranks
  for (const auto& [name, rank] : input_ranks) {
    if (rank < 1) return false;
    batch[name] = rank;
  }
  if (batch.empty()) return false;
  auto opset_of = [&](const std::string& domain) {
    auto it = opsets.find(domain);
    return it == opsets.end() ? int64_t(0) : it->second;
  };
  for (const auto& node : graph.node()) {
    const std::string domain = node.domain() == "ai.onnx" ? "" : node.domain();
    std::vector<int> ranks;  // of the inputs, -1 for a constant value or an omitted input
    bool reads_batch = false;
    for (const auto& in : node.input()) {
      auto it = in.empty() ? batch.end() : batch.find(in);
      ranks.push_back(it == batch.end() ? -1 : it->second);
      reads_batch = reads_batch || it != batch.end();
    }
    // A subgraph (If, Loop, Scan) may read the rows from the outer scope without naming them.
    for (const auto& a : node.attribute())
      if (a.type() == onnx::AttributeProto::GRAPH || a.type() == onnx::AttributeProto::GRAPHS) return false;
    if (!reads_batch) continue;  // a constant value: the same in every chunk
    if (!domain.empty()) return false;
    const std::string& op = node.op_type();
    Attrs attrs(node);
    const int r0 = ranks[0];
    auto only_first_batch = [&] {
      for (size_t k = 1; k < ranks.size(); ++k)
        if (ranks[k] >= 0) return false;
      return r0 >= 1;
    };
    auto constant_input = [&](int k) -> const Tensor* {
      return k < node.input_size() && !node.input(k).empty() ? constant(node.input(k)) : nullptr;
    };
    auto constants_or_absent_from = [&](int first) {
      for (int k = first; k < node.input_size(); ++k)
        if (!node.input(k).empty() && !constant(node.input(k))) return false;
      return true;
    };
    int out_rank = -1;
    size_t batch_outputs = 1;  // the first output only, unless set otherwise
    if (elementwise_unary().count(op) || op == "Dropout") {
      if (!only_first_batch()) return false;
      out_rank = r0;
    } else if (op == "Clip") {
      if (!only_first_batch() || !constants_or_absent_from(1)) return false;
      out_rank = r0;
    } else if (broadcasting().count(op)) {
      // Every batch operand has the same rank (axis 0 aligned); a constant operand broadcasts
      // within a row: fewer dimensions, or a first dimension of 1.
      int rank = -1;
      for (int k = 0; k < node.input_size(); ++k) {
        if (ranks[static_cast<size_t>(k)] < 0) continue;
        if (rank >= 0 && ranks[static_cast<size_t>(k)] != rank) return false;
        rank = ranks[static_cast<size_t>(k)];
      }
      for (int k = 0; k < node.input_size(); ++k) {
        if (ranks[static_cast<size_t>(k)] >= 0) continue;
        const Tensor* c = constant_input(k);
        if (!c) return false;
        const int cr = static_cast<int>(c->shape.size());
        if (cr > rank || (cr == rank && c->shape[0] != 1)) return false;
      }
      out_rank = rank;
    } else if (op == "Conv" || op == "AveragePool" || op == "LpPool" || op == "LRN" ||
               op == "GlobalAveragePool" || op == "GlobalMaxPool" || op == "GlobalLpPool") {
      if (!only_first_batch() || !constants_or_absent_from(1) || r0 < 3) return false;
      out_rank = r0;
    } else if (op == "MaxPool") {
      // Its Indices output counts elements over the whole tensor, rows included.
      if (!only_first_batch() || r0 < 3 || (node.output_size() > 1 && !node.output(1).empty())) return false;
      out_rank = r0;
    } else if (op == "BatchNormalization" || op == "InstanceNormalization") {
      if (!only_first_batch() || !constants_or_absent_from(1) || r0 < 2) return false;
      if (op == "BatchNormalization" && attrs.get_int("training_mode", 0) != 0) return false;
      out_rank = r0;
    } else if (op == "Flatten") {
      if (!only_first_batch() || normalized(attrs.get_int("axis", 1), r0) < 1) return false;
      out_rank = 2;
    } else if (op == "Gemm") {
      if (!only_first_batch() || r0 != 2 || attrs.get_int("transA", 0) != 0 || !constant_input(1)) return false;
      if (node.input_size() > 2 && !node.input(2).empty()) {
        const Tensor* c = constant_input(2);
        if (!c || (c->shape.size() == 2 && c->shape[0] != 1) || c->shape.size() > 2) return false;
      }
      out_rank = 2;
    } else if (op == "MatMul") {
      const Tensor* b = constant_input(1);
      if (!only_first_batch() || r0 < 2 || !b || b->shape.size() != 2) return false;
      out_rank = r0;
    } else if (op == "Softmax" || op == "LogSoftmax" || op == "Hardmax") {
      const bool legacy = opset_of("") < 13;
      if (!only_first_batch() || normalized(attrs.get_int("axis", legacy ? 1 : -1), r0) < 1) return false;
      out_rank = r0;
    } else if (op == "ArgMax" || op == "ArgMin") {
      if (!only_first_batch() || normalized(attrs.get_int("axis", 0), r0) < 1) return false;
      out_rank = attrs.get_int("keepdims", 1) != 0 ? r0 : r0 - 1;
    } else if (op == "Transpose") {
      const std::vector<int64_t> perm = attrs.get_ints("perm");
      if (!only_first_batch() || perm.empty() || perm[0] != 0) return false;
      out_rank = r0;
    } else if (op == "Concat") {
      for (int k = 0; k < node.input_size(); ++k)
        if (ranks[static_cast<size_t>(k)] != r0) return false;  // every operand a batch value
      if (normalized(attrs.get_int("axis", 0), r0) < 1) return false;
      out_rank = r0;
    } else if (op == "Unsqueeze" || op == "Squeeze") {
      std::vector<int64_t> axes;
      if (opset_of("") >= 13) {
        const Tensor* a = constant_input(1);
        if (!a || a->type != ElemType::Int64) return false;
        axes = a->i;
      } else {
        axes = attrs.get_ints("axes");
      }
      if (!only_first_batch() || axes.empty()) return false;  // Squeeze without axes may drop the rows' axis
      out_rank = op == "Unsqueeze" ? r0 + static_cast<int>(axes.size()) : r0 - static_cast<int>(axes.size());
      for (int64_t a : axes)
        if (normalized(a, op == "Unsqueeze" ? out_rank : r0) == 0) return false;
      if (out_rank < 1) return false;
    } else if (op == "Reshape") {
      // The rows' axis copied (0 in the new shape, allowzero off), the rest from the row alone.
      const Tensor* s = constant_input(1);
      if (!only_first_batch() || !s || s->type != ElemType::Int64 || s->i.empty() || s->i[0] != 0 ||
          attrs.get_int("allowzero", 0) != 0)
        return false;
      out_rank = static_cast<int>(s->i.size());
    } else {
      return false;
    }
    for (int k = 0; k < node.output_size(); ++k) {
      if (node.output(k).empty()) continue;
      if (static_cast<size_t>(k) >= batch_outputs) return false;  // e.g. Dropout's mask
      batch[node.output(k)] = out_rank;
    }
  }
  for (const auto& out : graph.output())
    if (!batch.count(out.name())) return false;
  return true;
}

}  // namespace flock::detail
