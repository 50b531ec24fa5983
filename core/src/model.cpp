#include "flock/model.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>
#include <unordered_map>

#include "flock/checked.hpp"
#include "flock/importers.hpp"
#include "flock/interrupt.hpp"
#include "flock/kernel.hpp"
#include "flock/utf8.hpp"
#include "kernels/dense_layer.hpp"
#include "model_internals.hpp"
#include "row_chunks.hpp"
#include "xgboost_import.hpp"

namespace flock {

ModelFormat parse_format(const std::string& name) {
  if (name == "auto") return ModelFormat::Auto;
  if (name == "onnx") return ModelFormat::Onnx;
  if (name == "xgboost" || name == "xgboost-json") return ModelFormat::XGBoostJson;
  fail(ErrorCode::InvalidInput, fmt::format("unknown model format '{}'", name),
       "Use 'auto', 'onnx' or 'xgboost'.");
}

const char* to_string(ModelFormat f) {
  switch (f) {
    case ModelFormat::Auto: return "auto";
    case ModelFormat::Onnx: return "onnx";
    case ModelFormat::XGBoostJson: return "xgboost";
  }
  return "?";
}

ModelFormat detect_format(std::span<const uint8_t> bytes) {
  for (uint8_t c : bytes) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
    return c == '{' ? ModelFormat::XGBoostJson : ModelFormat::Onnx;
  }
  fail(ErrorCode::InvalidModel, "model is empty (0 bytes)");
}

namespace {

std::optional<ElemType> elem_type_of(int32_t onnx_type) {
  using TP = onnx::TensorProto;
  switch (onnx_type) {
    case TP::FLOAT: return ElemType::Float;
    case TP::DOUBLE: return ElemType::Double;
    case TP::INT64: case TP::INT32: return ElemType::Int64;
    case TP::STRING: return ElemType::String;
    case TP::BOOL: return ElemType::Bool;
    default: return std::nullopt;
  }
}

std::string type_text(const onnx::TypeProto& t) {
  using TP = onnx::TensorProto;
  auto elem = [](int32_t e) {
    std::string n = TP::DataType_Name(static_cast<TP::DataType>(e));
    for (auto& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return n;
  };
  if (t.has_tensor_type()) return fmt::format("tensor({})", elem(t.tensor_type().elem_type()));
  if (t.has_sequence_type()) return fmt::format("seq({})", type_text(t.sequence_type().elem_type()));
  if (t.has_map_type())
    return fmt::format("map({},{})", elem(t.map_type().key_type()), type_text(t.map_type().value_type()));
  return "unknown";
}

// The tensor a Constant node holds, in any of its attribute forms.
Tensor constant_value(const Attrs& attrs) {
  if (attrs.has("value")) return attrs.get_tensor("value");
  if (attrs.has("value_float")) return Tensor::floats({}, {attrs.get_float("value_float")});
  if (attrs.has("value_int")) return Tensor::int64s({}, {attrs.get_int("value_int")});
  if (attrs.has("value_string")) return Tensor::strings({}, {attrs.get_string("value_string")});
  if (attrs.has("value_floats")) {
    auto v = attrs.get_floats("value_floats");
    int64_t n = static_cast<int64_t>(v.size());
    return Tensor::floats({n}, std::move(v));
  }
  if (attrs.has("value_ints")) {
    auto v = attrs.get_ints("value_ints");
    int64_t n = static_cast<int64_t>(v.size());
    return Tensor::int64s({n}, std::move(v));
  }
  if (attrs.has("value_strings")) {
    auto v = attrs.get_strings("value_strings");
    int64_t n = static_cast<int64_t>(v.size());
    return Tensor::strings({n}, std::move(v));
  }
  fail(ErrorCode::UnsupportedOperator,
       fmt::format("{}: Constant without a value (sparse_value is not supported)", attrs.where()));
}

// Ops after which a NaN that came from a missing input is resolved rather than propagated.
bool resolves_missing(const onnx::NodeProto& node) {
  const std::string& op = node.op_type();
  if (op == "TreeEnsembleRegressor" || op == "TreeEnsembleClassifier" || op == "TreeEnsemble") return true;
  if (op == "Imputer") {
    Attrs attrs(node);
    if (attrs.has("replaced_value_int64")) return false;
    return std::isnan(attrs.get_float("replaced_value_float", 0.0f));
  }
  return false;
}

// Bytes a tensor's storage takes (an estimate for strings: the objects and their characters).
size_t tensor_bytes(const Tensor& t) {
  size_t total = t.f.size() * sizeof(float) + t.d.size() * sizeof(double) + t.i.size() * sizeof(int64_t) +
                 t.b.size() + t.s.size() * sizeof(std::string) + t.shape.size() * sizeof(int64_t);
  for (const auto& str : t.s) total += str.size() > 15 ? str.capacity() : 0;  // past the small-string buffer
  return total;
}

}  // namespace

// The compiled graph: value slots, constant tensors and one kernel per node, in graph order.
// Rows per chunk of a large batch (Plan::row_chunk): a CNN's activations for 256 rows fit in L2.
constexpr int64_t kRowChunk = 256;

class Plan {
 public:
  struct Step {
    std::shared_ptr<const Kernel> kernel;  // shared with the plans copied from this one (with_kernels)
    std::vector<int> inputs;   // slot per input, -1 for an omitted optional input
    std::vector<int> outputs;  // slot per output, -1 for an unused output name
    std::string where;
    int64_t opset = 0;
    std::vector<std::string> input_names;   // the graph's names of the values read ("" omitted)
    std::vector<std::string> output_names;  // and written
  };

  int n_slots = 0;
  std::vector<int> input_slots;
  std::vector<int> output_slots;
  std::unordered_map<int, Tensor> constants;  // initializers and Constant nodes
  std::vector<Step> steps;
  Limits limits;
  // Per step: the slots to free once it has run (values it read for the last time, outputs nobody
  // reads). Graph outputs and constants are never freed. Keeps peak memory at the live values, so
  // large intermediates (a batch of activations) are recycled within a run instead of piling up.
  std::vector<std::vector<int>> release_after;
  // Per step and input: whether the step may take that input's storage (run_donated): the value
  // is neither a constant nor a graph output, this step reads it last, and reads it only once.
  std::vector<std::vector<bool>> donatable;

  // The largest total of float buffers a plan keeps between runs (see TensorArena).
  static constexpr size_t kArenaMaxBytes = size_t(256) << 20;

  // Fills release_after and donatable; call once the steps and the output slots are known.
  void plan_releases() {
    constexpr int kNever = -2;
    std::vector<int> last(n_slots, -1);  // -1: never read
    for (size_t k = 0; k < steps.size(); ++k)
      for (int s : steps[k].inputs)
        if (s >= 0) last[s] = static_cast<int>(k);
    for (int s : output_slots) last[s] = kNever;
    for (const auto& [slot, t] : constants) last[slot] = kNever;
    donatable.assign(steps.size(), {});
    for (size_t k = 0; k < steps.size(); ++k) {
      const std::vector<int>& ins = steps[k].inputs;
      donatable[k].assign(ins.size(), false);
      for (size_t j = 0; j < ins.size(); ++j) {
        const int s = ins[j];
        if (s < 0 || last[s] != static_cast<int>(k)) continue;
        donatable[k][j] = std::count(ins.begin(), ins.end(), s) == 1;
      }
    }
    release_after.assign(steps.size(), {});
    for (size_t k = 0; k < steps.size(); ++k)
      for (int s : steps[k].outputs)
        if (s >= 0 && last[s] == -1) last[s] = static_cast<int>(k);  // produced, never read
    for (int s = 0; s < n_slots; ++s)
      if (last[s] >= 0) release_after[last[s]].push_back(s);
  }

  // For the tests: buffers and bytes the plan keeps for its next run.
  std::pair<size_t, size_t> arena_size() const {
    std::lock_guard<std::mutex> lock(arena_mu_);
    return arena_ ? std::make_pair(arena_->buffers(), arena_->bytes()) : std::make_pair(size_t(0), size_t(0));
  }

  // Bytes of the compiled plan itself: constant tensors and what kernels keep (tree nodes...).
  size_t weight_bytes() const {
    size_t total = 0;
    for (const auto& [slot, t] : constants) total += tensor_bytes(t);
    for (const auto& step : steps) total += step.kernel->memory_bytes() + sizeof(Step);
    return total;
  }

  // A plan running the same graph with the same kernels (shared, they are immutable) and constants,
  // with an arena of its own. For the optimizer's specialized models (ModelInternals::with_kernels).
  std::unique_ptr<Plan> copy() const {
    auto p = std::make_unique<Plan>();
    p->n_slots = n_slots;
    p->input_slots = input_slots;
    p->output_slots = output_slots;
    p->constants = constants;
    p->steps.reserve(steps.size());
    for (const Step& s : steps) p->steps.push_back(s);
    p->limits = limits;
    p->release_after = release_after;
    p->donatable = donatable;
    return p;
  }

  // `peak_bytes`, when given, receives the largest total of live values (inputs, intermediates,
  // outputs; constants excluded) at any point of the run. `observe`, when given, sees each step's
  // inputs and outputs right after it ran (flock.trace); no input is donated then, so what it sees
  // is what the step read.
  // Rows per chunk when a large batch runs as chunks of rows (0: the graph runs whole; see
  // row_chunks.hpp). Each chunk's activations stay in cache from one node to the next.
  int64_t row_chunk = 0;

  std::vector<Tensor> run(std::vector<Tensor> inputs, size_t* peak_bytes = nullptr,
                          const ModelInternals::StepObserver* observe = nullptr) const {
    if (row_chunk > 0 && !observe && chunkable(inputs)) return run_chunks(std::move(inputs), peak_bytes);
    return run_whole(std::move(inputs), peak_bytes, observe);
  }

 private:
  static bool chunkable_type(ElemType t) {
    return t == ElemType::Float || t == ElemType::Double || t == ElemType::Int64 || t == ElemType::Bool;
  }

  // Every input has the same number of rows, at least two chunks' worth, and a type sliced by rows.
  bool chunkable(const std::vector<Tensor>& inputs) const {
    if (inputs.empty() || inputs[0].shape.empty()) return false;
    const int64_t rows = inputs[0].shape[0];
    if (rows < 2 * row_chunk) return false;
    for (const Tensor& t : inputs)
      if (t.shape.empty() || t.shape[0] != rows || !chunkable_type(t.type) ||
          static_cast<int64_t>(t.size()) != t.numel())
        return false;
    return true;
  }

  // Rows r0..r0+rows-1 of t (whose axis 0 holds at least r0 + rows rows).
  static Tensor slice_rows(const Tensor& t, int64_t r0, int64_t rows) {
    std::vector<int64_t> shape = t.shape;
    const int64_t width = t.shape[0] > 0 ? t.numel() / t.shape[0] : 0;
    shape[0] = rows;
    Tensor out = Tensor::uninitialized(t.type, std::move(shape));
    const size_t from = static_cast<size_t>(r0 * width), n = static_cast<size_t>(rows * width);
    switch (t.type) {
      case ElemType::Float: std::copy_n(t.f.begin() + from, n, out.f.begin()); break;
      case ElemType::Double: std::copy_n(t.d.begin() + from, n, out.d.begin()); break;
      case ElemType::Int64: std::copy_n(t.i.begin() + from, n, out.i.begin()); break;
      case ElemType::Bool: std::copy_n(t.b.begin() + from, n, out.b.begin()); break;
      case ElemType::String: std::copy_n(t.s.begin() + from, n, out.s.begin()); break;
    }
    return out;
  }

  // The batch as chunks of row_chunk rows, the outputs joined along axis 0. Should an output not
  // come out as rows of the chunk (which row_chunks.cpp rules out), the batch runs whole instead.
  std::vector<Tensor> run_chunks(std::vector<Tensor> inputs, size_t* peak_bytes) const {
    const int64_t rows = inputs[0].shape[0];
    std::vector<std::vector<Tensor>> parts;
    size_t peak = 0;
    for (int64_t r0 = 0; r0 < rows; r0 += row_chunk) {
      const int64_t n = std::min(row_chunk, rows - r0);
      std::vector<Tensor> chunk;
      chunk.reserve(inputs.size());
      for (const Tensor& t : inputs) chunk.push_back(slice_rows(t, r0, n));
      size_t chunk_peak = 0;
      parts.push_back(run_whole(std::move(chunk), peak_bytes ? &chunk_peak : nullptr, nullptr));
      peak = std::max(peak, chunk_peak);
    }
    std::vector<Tensor> result;
    for (size_t k = 0; k < output_slots.size(); ++k) {
      const Tensor& first = parts[0][k];
      if (first.shape.empty() || !chunkable_type(first.type)) return run_whole(std::move(inputs), peak_bytes, nullptr);
      std::vector<int64_t> shape = first.shape;
      shape[0] = rows;
      int64_t at = 0;
      for (size_t c = 0; c < parts.size(); ++c) {
        const Tensor& part = parts[c][k];
        const int64_t n = std::min(row_chunk, rows - static_cast<int64_t>(c) * row_chunk);
        if (part.type != first.type || part.shape.size() != shape.size() || part.shape[0] != n ||
            !std::equal(part.shape.begin() + 1, part.shape.end(), shape.begin() + 1))
          return run_whole(std::move(inputs), peak_bytes, nullptr);
      }
      Tensor joined(first.type, shape);
      for (auto& part : parts) {
        const size_t n = part[k].size();
        switch (first.type) {
          case ElemType::Float: std::copy_n(part[k].f.begin(), n, joined.f.begin() + at); break;
          case ElemType::Double: std::copy_n(part[k].d.begin(), n, joined.d.begin() + at); break;
          case ElemType::Int64: std::copy_n(part[k].i.begin(), n, joined.i.begin() + at); break;
          case ElemType::Bool: std::copy_n(part[k].b.begin(), n, joined.b.begin() + at); break;
          case ElemType::String: break;
        }
        at += static_cast<int64_t>(n);
      }
      result.push_back(std::move(joined));
    }
    if (peak_bytes) *peak_bytes = peak;
    return result;
  }

 public:
  std::vector<Tensor> run_whole(std::vector<Tensor> inputs, size_t* peak_bytes,
                                const ModelInternals::StepObserver* observe) const {
    poll_interrupt();
    // The buffers of the previous run, unless another thread runs this plan now (then a fresh arena).
    ArenaLease lease(*this);
    TensorArena& arena = *lease.arena;
    TensorArena::Scope scope(&arena);
    TensorLimitScope tensor_limit(limits.max_tensor_elements);
    std::vector<Tensor> owned(n_slots);
    std::vector<const Tensor*> value(n_slots, nullptr);
    for (const auto& [slot, t] : constants) value[slot] = &t;
    size_t live = 0, peak = 0;
    for (size_t k = 0; k < input_slots.size(); ++k) {
      owned[input_slots[k]] = std::move(inputs[k]);
      value[input_slots[k]] = &owned[input_slots[k]];
      if (peak_bytes) live += tensor_bytes(owned[input_slots[k]]);
    }
    std::vector<const Tensor*> in;
    std::vector<Tensor*> donated;
    std::vector<Tensor> out;
    for (const auto& step : steps) {
      const size_t index = static_cast<size_t>(&step - steps.data());
      if (index > 0) poll_interrupt();  // between kernels; long kernels also poll inside
      in.clear();
      donated.clear();
      bool donating = false;
      for (size_t j = 0; j < step.inputs.size(); ++j) {
        const int s = step.inputs[j];
        in.push_back(s < 0 ? nullptr : value[s]);
        Tensor* d = s >= 0 && donatable[index][j] && value[s] == &owned[s] ? &owned[s] : nullptr;
        donated.push_back(d);
        donating = donating || d;
      }
      if (!donating || observe) donated.clear();
      out.assign(step.outputs.size(), Tensor());
      try {
        step.kernel->run_donated(in, donated, out);
      } catch (const Error& e) {
        if (e.code() == ErrorCode::Cancelled) throw;
        // Name the node: a kernel knows its op, not where it sits in the graph.
        throw Error(e.code(), fmt::format("{} (opset {}): {}", step.where, step.opset, e.what()), e.hint());
      }
      if (observe) (*observe)(index, in, out);
      for (size_t k = 0; k < step.outputs.size(); ++k) {
        int s = step.outputs[k];
        if (s < 0) {
          arena.give(std::move(out[k]));
          continue;
        }
        if (out[k].numel() > limits.max_tensor_elements)
          fail(ErrorCode::LimitExceeded,
               fmt::format("{} produced a tensor of {} elements, over the limit of {}", step.where,
                           out[k].numel(), limits.max_tensor_elements));
        owned[s] = std::move(out[k]);
        value[s] = &owned[s];
        if (peak_bytes) live += tensor_bytes(owned[s]);
      }
      peak = std::max(peak, live);
      for (int s : release_after[index]) {
        if (peak_bytes) live -= std::min(live, tensor_bytes(owned[s]));
        arena.give(std::move(owned[s]));
        value[s] = nullptr;
      }
    }
    if (peak_bytes) *peak_bytes = std::max(peak, live);
    std::vector<Tensor> result;
    result.reserve(output_slots.size());
    for (int s : output_slots) {
      if (!value[s]) fail(ErrorCode::InvalidModel, "a model output was not produced by any node");
      // An output may be a graph input or a constant passed through: copy those, move the rest.
      result.push_back(value[s] == &owned[s] ? std::move(owned[s]) : *value[s]);
    }
    return result;
  }

 private:
  // The arena kept between runs; a run borrows it (ArenaLease) and returns it.
  mutable std::mutex arena_mu_;
  mutable std::unique_ptr<TensorArena> arena_;

  struct ArenaLease {
    const Plan& plan;
    std::unique_ptr<TensorArena> arena;
    explicit ArenaLease(const Plan& p) : plan(p) {
      {
        std::lock_guard<std::mutex> lock(plan.arena_mu_);
        arena = std::move(plan.arena_);
      }
      if (!arena) arena = std::make_unique<TensorArena>();
    }
    ~ArenaLease() {
      arena->end_run(kArenaMaxBytes);
      std::lock_guard<std::mutex> lock(plan.arena_mu_);
      if (!plan.arena_) plan.arena_ = std::move(arena);
    }
    ArenaLease(const ArenaLease&) = delete;
    ArenaLease& operator=(const ArenaLease&) = delete;
  };
};

Model::~Model() = default;

std::shared_ptr<const Model> Model::load_unguarded(std::span<const uint8_t> bytes, ModelFormat format,
                                                   const Limits& limits) {
  if (static_cast<int64_t>(bytes.size()) > limits.max_model_bytes)
    fail(ErrorCode::LimitExceeded,
         fmt::format("model is {} bytes, over the limit of {} bytes", bytes.size(), limits.max_model_bytes));
  if (format == ModelFormat::Auto) format = detect_format(bytes);
  // XGBoost: the importer hands the tree ensemble to its kernel directly (imported.kernels); the
  // graph it returns carries every node with its small attributes only.
  CompiledImport imported;
  if (format == ModelFormat::XGBoostJson) imported = import_xgboost_compiled(bytes);
  else imported.model = import_onnx(bytes);
  const onnx::ModelProto& proto = imported.model;
  // ONNX bytes were checked before the onnx library saw them (import_onnx); the XGBoost importer's
  // names and labels are checked here.
  if (format == ModelFormat::XGBoostJson) require_utf8_text(proto);
  poll_interrupt();

  std::shared_ptr<Model> model(new Model());
  model->format_ = format;
  model->size_bytes_ = bytes.size();
  model->plan_ = std::make_unique<Plan>();
  Plan& plan = *model->plan_;
  plan.limits = limits;
  Signature& sig = model->signature_;
  sig.producer = proto.producer_name();

  std::map<std::string, int64_t> opsets;
  for (const auto& op : proto.opset_import()) {
    std::string domain = op.domain() == "ai.onnx" ? "" : op.domain();
    opsets[domain] = op.version();
  }
  for (const auto& [domain, version] : opsets) {
    if (domain.empty() && (version < kMinOnnxOpset || version > kMaxOnnxOpset))
      fail(ErrorCode::UnsupportedOperator,
           fmt::format("model imports ai.onnx opset {}; Flock runs ai.onnx opsets {} to {}", version, kMinOnnxOpset,
                       kMaxOnnxOpset),
           fmt::format("Re-export the model with an opset in that range (e.g. torch.onnx.export(..., "
                       "opset_version={})).",
                       kMaxOnnxOpset));
    if (domain == "ai.onnx.ml" && (version < 1 || version > kMaxMlOpset))
      fail(ErrorCode::UnsupportedOperator,
           fmt::format("model imports ai.onnx.ml opset {}; Flock runs ai.onnx.ml opsets 1 to {}", version,
                       kMaxMlOpset),
           fmt::format("Re-export the model with ai.onnx.ml opset {} or lower.", kMaxMlOpset));
    if (!domain.empty() && domain != "ai.onnx.ml")
      fail(ErrorCode::UnsupportedOperator, fmt::format("model imports operator domain '{}'", domain),
           "Flock runs the ai.onnx and ai.onnx.ml domains; custom operators are not supported.");
  }
  sig.opset = opsets.count("") ? opsets[""] : 0;
  sig.ml_opset = opsets.count("ai.onnx.ml") ? opsets["ai.onnx.ml"] : 0;

  const onnx::GraphProto& graph = proto.graph();
  std::unordered_map<std::string, int> slot_of;
  auto new_slot = [&](const std::string& name) {
    int s = plan.n_slots++;
    slot_of[name] = s;
    return s;
  };

  std::set<std::string> initializer_names;
  for (const auto& init : graph.initializer()) {
    initializer_names.insert(init.name());
    int s = new_slot(init.name());
    plan.constants.emplace(s, tensor_from_proto(init));
  }

  for (const auto& vi : graph.input()) {
    if (initializer_names.count(vi.name())) continue;  // an input with a default value: a constant
    if (!vi.type().has_tensor_type())
      fail(ErrorCode::UnsupportedOperator,
           fmt::format("model input '{}' has type {}; Flock binds tensor inputs only", vi.name(), type_text(vi.type())));
    auto elem = elem_type_of(vi.type().tensor_type().elem_type());
    if (!elem)
      fail(ErrorCode::UnsupportedOperator,
           fmt::format("model input '{}' has type {}; Flock runs float, double, int64, bool and string inputs",
                       vi.name(), type_text(vi.type())));
    InputSpec in;
    in.name = vi.name();
    in.type = *elem;
    const auto& dims = vi.type().tensor_type().shape().dim();
    for (const auto& d : dims) in.shape.push_back(d.has_dim_value() ? d.dim_value() : -1);
    // Values per row; -1 when a dimension past the batch is symbolic: such an input runs with
    // explicit tensors (run_tensors) but cannot bind to a row of features.
    in.width = 1;
    for (size_t k = 1; k < in.shape.size(); ++k) {
      if (in.shape[k] < 0) {
        in.width = -1;
        break;
      }
      in.width = checked_mul(in.width, in.shape[k], fmt::format("width of model input '{}'", vi.name()),
                             ErrorCode::InvalidModel);
    }
    if (in.width > limits.max_tensor_elements)
      fail(ErrorCode::LimitExceeded,
           fmt::format("model input '{}' takes {} values per row, over the limit of {} values per tensor", vi.name(),
                       in.width, limits.max_tensor_elements),
           "Raise flock.max_tensor_elements if the model is meant to take inputs this large.");
    if (in.shape.empty()) in.shape = {-1};
    sig.inputs.push_back(in);
    plan.input_slots.push_back(new_slot(vi.name()));
  }

  // Missing-value analysis: which graph inputs can carry NaN to an output unresolved.
  std::vector<std::set<std::string>> tainted(sig.inputs.size());
  for (size_t k = 0; k < sig.inputs.size(); ++k) tainted[k].insert(sig.inputs[k].name);

  // Fully connected layers (Gemm on constant weights, and a Relu that alone reads its result) run
  // as one oneDNN primitive (kernels/dense_layer.hpp); the Relu node is then folded away.
  std::map<std::string, int> readers, reader_node;
  for (int j = 0; j < graph.node_size(); ++j)
    for (const auto& in : graph.node(j).input())
      if (!in.empty()) {
        ++readers[in];
        reader_node[in] = j;
      }
  std::set<std::string> graph_outputs;
  for (const auto& out : graph.output()) graph_outputs.insert(out.name());
  std::set<int> folded_nodes;

  std::set<std::string> ops;
  const KernelRegistry& registry = KernelRegistry::instance();
  int node_index = -1;
  for (const auto& node : graph.node()) {
    ++node_index;
    poll_interrupt();  // compiling a large graph (or ensemble) takes a while
    std::string domain = node.domain() == "ai.onnx" ? "" : node.domain();
    int64_t opset = opsets.count(domain) ? opsets[domain] : 0;
    ops.insert(domain.empty() ? node.op_type() : domain + ":" + node.op_type());
    Attrs attrs(node);

    for (size_t k = 0; k < tainted.size(); ++k) {
      bool hit = false;
      for (const auto& in : node.input()) hit = hit || tainted[k].count(in);
      if (hit && !resolves_missing(node))
        for (const auto& out : node.output()) tainted[k].insert(out);
    }

    if (domain.empty() && node.op_type() == "Constant") {
      plan.constants.emplace(new_slot(node.output(0)), constant_value(attrs));
      continue;
    }
    if (folded_nodes.count(node_index)) continue;  // a Relu run by the dense layer before it
    const KernelFactory* factory = registry.find(domain, node.op_type());
    if (!factory)
      fail(ErrorCode::UnsupportedOperator,
           fmt::format("operator {}{} (opset {}) is not supported", domain.empty() ? "" : domain + ":",
                       node.op_type(), opset),
           fmt::format("Flock runs these operators: {}.", fmt::join(registry.supported(), ", ")));
    Plan::Step step;
    step.where = attrs.where();
    step.opset = opset;
    step.input_names.assign(node.input().begin(), node.input().end());
    step.output_names.assign(node.output().begin(), node.output().end());
    for (const auto& in : node.input()) {
      if (in.empty()) {
        step.inputs.push_back(-1);
        continue;
      }
      auto it = slot_of.find(in);
      if (it == slot_of.end())
        fail(ErrorCode::InvalidModel, fmt::format("{} reads '{}', which no earlier node produces", step.where, in));
      step.inputs.push_back(it->second);
    }
    KernelContext ctx{node, attrs, opset};
    auto prebuilt = imported.kernels.find(node_index);
    std::unique_ptr<Kernel> kernel = prebuilt != imported.kernels.end() ? prebuilt->second(ctx) : (*factory)(ctx);
    // The Relu that alone reads this node's only output, after it in the graph.
    auto relu_reader = [&]() -> std::pair<const onnx::NodeProto*, int> {
      if (node.output_size() != 1) return {nullptr, -1};
      const std::string& y = node.output(0);
      auto reader = reader_node.find(y);
      if (y.empty() || graph_outputs.count(y) || readers[y] != 1 || reader == reader_node.end()) return {nullptr, -1};
      const onnx::NodeProto& next = graph.node(reader->second);
      const std::string next_domain = next.domain() == "ai.onnx" ? "" : next.domain();
      if (next_domain.empty() && next.op_type() == "Relu" && next.output_size() == 1 && !next.output(0).empty() &&
          reader->second > node_index)
        return {&next, reader->second};
      return {nullptr, -1};
    };
    const onnx::NodeProto* folded_relu = nullptr;
    if (domain.empty() && node.op_type() == "Conv") {
      auto [relu, relu_index] = relu_reader();
      if (relu && kernel->fold_relu()) {
        folded_relu = relu;
        folded_nodes.insert(relu_index);
      }
    }
    step.kernel = std::move(kernel);
    if (domain.empty() && node.op_type() == "Gemm" && node.input_size() >= 2 && node.output_size() == 1) {
      auto constant = [&](int k) -> const Tensor* {
        if (k >= node.input_size() || node.input(k).empty()) return nullptr;
        auto it = plan.constants.find(slot_of.at(node.input(k)));
        return it == plan.constants.end() ? nullptr : &it->second;
      };
      const Tensor* b = constant(1);
      const Tensor* c = constant(2);
      const bool c_ok = c || node.input_size() < 3 || node.input(2).empty();
      if (b && c_ok && kernels::dense_layer_fusable(attrs, *b, c)) {
        auto [relu, relu_index] = relu_reader();
        if (auto dense = kernels::make_dense_layer(attrs, *b, c, step.kernel, relu != nullptr)) {
          step.kernel = std::move(dense);
          if (relu) {
            folded_relu = relu;
            folded_nodes.insert(relu_index);
          }
        }
      }
    }
    if (folded_relu) {
      // One step for both nodes: it writes the Relu's value, and says so in errors and traces.
      step.outputs.push_back(new_slot(folded_relu->output(0)));
      step.output_names = {folded_relu->output(0)};
      step.where += " + " + Attrs(*folded_relu).where();
    } else
      for (const auto& out : node.output()) step.outputs.push_back(out.empty() ? -1 : new_slot(out));
    plan.steps.push_back(std::move(step));

    for (const char* key : {"classlabels_int64s", "classlabels_strings", "classlabels_ints"}) {
      if (sig.class_labels.empty() && attrs.has(key) && node.op_type() != "LabelEncoder") {
        if (std::string(key) == "classlabels_strings") {
          sig.class_labels = attrs.get_strings(key);
          sig.numeric_labels = false;
        } else {
          for (int64_t v : attrs.get_ints(key)) sig.class_labels.push_back(std::to_string(v));
        }
      }
    }
  }
  sig.operators.assign(ops.begin(), ops.end());

  for (size_t k = 0; k < sig.inputs.size(); ++k) {
    bool ok = true;
    for (const auto& out : graph.output()) ok = ok && !tainted[k].count(out.name());
    sig.input_accepts_missing.push_back(ok);
  }

  for (const auto& out : graph.output()) {
    auto it = slot_of.find(out.name());
    if (it == slot_of.end())
      fail(ErrorCode::InvalidModel, fmt::format("model output '{}' is produced by no node", out.name()));
    plan.output_slots.push_back(it->second);
    sig.outputs.push_back({out.name(), type_text(out.type())});
  }
  if (sig.outputs.empty()) fail(ErrorCode::InvalidModel, "model has no outputs");
  plan.plan_releases();

  // A graph that keeps rows apart runs a large batch as chunks of rows (Plan::row_chunk).
  {
    std::map<std::string, int> input_ranks;
    for (const auto& vi : graph.input()) {
      if (initializer_names.count(vi.name())) continue;
      const auto& tt = vi.type().tensor_type();
      input_ranks[vi.name()] = tt.has_shape() ? tt.shape().dim_size() : -1;
    }
    auto constant = [&](const std::string& name) -> const Tensor* {
      auto slot = slot_of.find(name);
      if (slot == slot_of.end()) return nullptr;
      auto c = plan.constants.find(slot->second);
      return c == plan.constants.end() ? nullptr : &c->second;
    };
    if (detail::rows_independent(graph, opsets, constant, input_ranks)) plan.row_chunk = kRowChunk;
  }

  // Which output is the label, which the score. A classifier has an int64 or string tensor output.
  for (int k = 0; k < graph.output_size(); ++k) {
    const auto& t = graph.output(k).type();
    if (t.has_tensor_type()) {
      auto e = elem_type_of(t.tensor_type().elem_type());
      if (e && (*e == ElemType::Int64 || *e == ElemType::String) && model->label_output_ < 0) {
        model->label_output_ = k;
        continue;
      }
      if (e && (*e == ElemType::Float || *e == ElemType::Double) && model->score_output_ < 0) model->score_output_ = k;
    } else if (t.has_sequence_type() && model->score_output_ < 0) {
      model->score_output_ = k;  // ZipMap: seq(map(label, float)), carried as the float tensor
    }
  }
  if (model->score_output_ < 0) {  // e.g. a graph whose only output is a bool tensor
    for (int k = 0; k < graph.output_size() && model->score_output_ < 0; ++k) {
      const auto& t = graph.output(k).type();
      if (k != model->label_output_ && t.has_tensor_type() && elem_type_of(t.tensor_type().elem_type()))
        model->score_output_ = k;
    }
  }
  sig.task = model->label_output_ >= 0 ? Task::Classification : Task::Regression;
  if (sig.task == Task::Classification) {
    const auto& t = graph.output(model->label_output_).type().tensor_type();
    sig.numeric_labels = t.elem_type() != onnx::TensorProto::STRING;
  }

  // Feature names: from the model's metadata for a single vector input, else the input names.
  std::vector<std::string> names = feature_names_from_metadata(proto);
  if (format == ModelFormat::XGBoostJson && names.empty()) {
    // import_xgboost_json stores names in metadata when the model has them.
  }
  if (sig.inputs.size() == 1) {
    if (!names.empty() && sig.inputs[0].width >= 0 && static_cast<int64_t>(names.size()) != sig.inputs[0].width)
      fail(ErrorCode::InvalidModel,
           fmt::format("model names {} features but its input '{}' takes {} values per row", names.size(),
                       sig.inputs[0].name, sig.inputs[0].width));
    sig.feature_names = names;
  } else {
    for (const auto& in : sig.inputs) sig.feature_names.push_back(in.name);
  }
  // Labels and names become SQL text and JSON. ONNX string attributes (classlabels_strings) are
  // `bytes` in the schema, so the importer's UTF-8 check does not cover them.
  auto require_utf8 = [](const std::vector<std::string>& texts, const char* what) {
    for (const auto& t : texts)
      if (!is_valid_utf8(t)) fail(ErrorCode::InvalidModel, fmt::format("model's {} not valid UTF-8", what));
  };
  require_utf8(sig.class_labels, "class labels are");
  require_utf8(sig.feature_names, "feature names are");
  require_utf8({sig.producer}, "producer name is");
  model->bytes_per_row_ = model->trial_run();
  return model;
}

// Runs the compiled graph once on a row of zeros, so an operator that cannot run the element types
// or shapes this graph gives it fails at load (registration), not on the first query. Errors that
// depend on the values (an index out of range for zeros, say) are left to real inputs.
// Returns the bytes one row of a batch takes during a run: the peak of live values in this one-row
// run (an overestimate: it also holds what does not grow with the rows), or when the run cannot be
// made, the inputs' values plus 8 bytes per output.
size_t Model::trial_run() const {
  size_t per_row = 8 * signature_.outputs.size();
  for (const auto& in : signature_.inputs) {
    const size_t elem = in.type == ElemType::Float ? 4 : in.type == ElemType::Bool ? 1
                        : in.type == ElemType::String ? sizeof(std::string) : 8;
    per_row += elem * static_cast<size_t>(std::max<int64_t>(in.width, 1));
  }
  FeatureBatch batch;
  batch.rows = 1;
  for (const auto& in : signature_.inputs) {
    if (in.width < 0) return per_row;  // cannot make a row for it
    batch.inputs.emplace_back(in.type, std::vector<int64_t>{1, in.width});
  }
  try {
    size_t peak = 0;
    plan_->run(feed_for(batch), &peak);
    per_row = std::max(per_row, peak);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::UnsupportedOperator || e.code() == ErrorCode::TypeMismatch ||
        e.code() == ErrorCode::InvalidModel || e.code() == ErrorCode::Cancelled)
      throw;
  }
  return per_row;
}

size_t Model::memory_bytes() const {
  return sizeof(Model) + plan_->weight_bytes() + plan_->arena_size().second;
}

std::vector<Tensor> Model::run_tensors_unguarded(std::vector<Tensor> inputs) const {
  const auto& specs = signature_.inputs;
  if (inputs.size() != specs.size())
    fail(ErrorCode::InvalidInput, fmt::format("model takes {} inputs, got {}", specs.size(), inputs.size()));
  for (size_t k = 0; k < specs.size(); ++k) {
    const Tensor& t = inputs[k];
    const InputSpec& spec = specs[k];
    if (t.type != spec.type)
      fail(ErrorCode::TypeMismatch,
           fmt::format("model input '{}' takes {} values, got {}", spec.name, to_string(spec.type), to_string(t.type)));
    if (t.numel() > plan_->limits.max_tensor_elements)
      fail(ErrorCode::LimitExceeded, fmt::format("input '{}' holds {} values, over the limit of {}", spec.name,
                                                 t.numel(), plan_->limits.max_tensor_elements));
    if (static_cast<int64_t>(t.size()) != t.numel())
      fail(ErrorCode::InvalidInput, fmt::format("input '{}' holds {} values for a shape of {}", spec.name, t.size(),
                                                t.numel()));
    if (spec.shape.size() > 1 && t.shape.size() != spec.shape.size())
      fail(ErrorCode::InvalidInput, fmt::format("model input '{}' has rank {}, got a tensor of rank {}", spec.name,
                                                spec.shape.size(), t.shape.size()));
    for (size_t d = 0; d < t.shape.size() && d < spec.shape.size(); ++d) {
      if (spec.shape.size() > 1 && spec.shape[d] >= 0 && t.shape[d] != spec.shape[d])
        fail(ErrorCode::InvalidInput, fmt::format("model input '{}' has dimension {} of size {}, got {}", spec.name,
                                                  d, spec.shape[d], t.shape[d]));
    }
  }
  return plan_->run(std::move(inputs));
}

std::vector<Tensor> Model::run_unguarded(const FeatureBatch& batch) const { return plan_->run(feed_for(batch)); }

std::vector<Tensor> Model::feed_for(const FeatureBatch& batch) const {
  const auto& inputs = signature_.inputs;
  if (batch.inputs.size() != inputs.size())
    fail(ErrorCode::InvalidInput, fmt::format("model takes {} inputs, got {}", inputs.size(), batch.inputs.size()));
  std::vector<Tensor> feed;
  feed.reserve(inputs.size());
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& t = batch.inputs[k];
    const InputSpec& spec = inputs[k];
    if (spec.width < 0)
      fail(ErrorCode::UnsupportedOperator,
           fmt::format("model input '{}' has a symbolic dimension past the batch dimension, so it cannot bind "
                       "to a row of features", spec.name),
           "Export the model with fixed feature dimensions; only the first (batch) dimension may be dynamic.");
    if (t.type != spec.type)
      fail(ErrorCode::TypeMismatch,
           fmt::format("model input '{}' takes {} values, got {}", spec.name, to_string(spec.type), to_string(t.type)));
    if (batch.rows < 0) fail(ErrorCode::InvalidInput, fmt::format("batch of {} rows", batch.rows));
    const int64_t values = checked_mul(batch.rows, spec.width, fmt::format("values of input '{}'", spec.name));
    if (static_cast<int64_t>(t.size()) != values)
      fail(ErrorCode::InvalidInput,
           fmt::format("model input '{}' takes {} values per row, got {}", spec.name, spec.width,
                       batch.rows ? static_cast<int64_t>(t.size()) / batch.rows : 0));
    if (values > plan_->limits.max_tensor_elements)
      fail(ErrorCode::LimitExceeded,
           fmt::format("input '{}' would hold {} values, over the limit of {}", spec.name, values,
                       plan_->limits.max_tensor_elements));
    Tensor fed = t;
    fed.shape.assign(spec.shape.begin(), spec.shape.end());
    fed.shape[0] = batch.rows;
    feed.push_back(std::move(fed));
  }
  return feed;
}

namespace {

// out[k] = t's element k as double, for the first n elements (one type switch, not one per element).
void as_doubles(const Tensor& t, double* out, size_t n) {
  // The tensor comes out of the model's graph: never read past what it holds.
  if (t.size() < n)
    fail(ErrorCode::InvalidModel, fmt::format("model output holds {} values where {} are needed", t.size(), n));
  switch (t.type) {
    case ElemType::Float: for (size_t k = 0; k < n; ++k) out[k] = t.f[k]; break;
    case ElemType::Double: for (size_t k = 0; k < n; ++k) out[k] = t.d[k]; break;
    case ElemType::Int64: for (size_t k = 0; k < n; ++k) out[k] = static_cast<double>(t.i[k]); break;
    default: for (size_t k = 0; k < n; ++k) out[k] = t.as_double(k); break;
  }
}

}  // namespace

Prediction Model::predict_unguarded(const FeatureBatch& batch, unsigned parts) const {
  return prediction_of(run_unguarded(batch), batch, parts);
}

Prediction Model::prediction_of(const std::vector<Tensor>& outputs, const FeatureBatch& batch, unsigned parts) const {
  Prediction p;
  p.rows = batch.rows;
  if (signature_.task == Task::Regression) {
    if (score_output_ < 0)
      fail(ErrorCode::TypeMismatch, "model has no numeric output to return",
           "flock.predict needs a float output (regressors) or an int64/string label output (classifiers).");
    const Tensor& out = outputs[score_output_];
    if (out.type == ElemType::String)
      fail(ErrorCode::TypeMismatch, "model's output is text", "Use flock.predict_label.");
    if (out.rows() != batch.rows)
      fail(ErrorCode::InvalidModel, fmt::format("model output has {} rows for {} input rows", out.rows(), batch.rows));
    int64_t width = out.cols();
    if (width != 1)
      fail(ErrorCode::TypeMismatch, fmt::format("model returns {} values per row, not one", width),
           "Use flock.predict_tensor for the whole output, or flock.predict_proba for class scores.");
    p.values.resize(batch.rows);
    as_doubles(out, p.values.data(), p.values.size());
    return p;
  }
  const Tensor& label = outputs[label_output_];
  if (label.numel() != batch.rows)
    fail(ErrorCode::InvalidModel, fmt::format("model label output has {} values for {} rows", label.numel(), batch.rows));
  if (label.type == ElemType::String) {
    if (static_cast<int64_t>(label.s.size()) < batch.rows)
      fail(ErrorCode::InvalidModel, fmt::format("model label output holds {} labels for {} rows", label.s.size(), batch.rows));
    if (parts & kPredictLabels) p.labels = label.s;
  } else {
    if (parts & kPredictValues) {
      p.values.resize(batch.rows);
      as_doubles(label, p.values.data(), p.values.size());
    }
    if (parts & kPredictLabels) {
      // Labels are int64 in a model Flock accepts, but a graph may compute another numeric type.
      std::vector<double> numeric(batch.rows);
      as_doubles(label, numeric.data(), numeric.size());
      p.labels.resize(batch.rows);
      for (int64_t r = 0; r < batch.rows; ++r)
        p.labels[r] = label.type == ElemType::Int64 ? std::to_string(label.i[r]) : fmt::format("{}", numeric[r]);
    }
  }
  if (score_output_ >= 0) {
    const Tensor& scores = outputs[score_output_];
    p.n_classes = scores.cols();
    if (parts & kPredictProba) {
      p.proba.resize(scores.numel());
      as_doubles(scores, p.proba.data(), p.proba.size());
    }
  }
  return p;
}

std::string Model::signature_json_unguarded() const {
  using nlohmann::json;
  const Signature& s = signature_;
  json inputs = json::array();
  for (const auto& in : s.inputs) {
    inputs.push_back({{"name", in.name}, {"type", to_string(in.type)}, {"shape", in.shape}, {"width", in.width}});
  }
  for (size_t k = 0; k < s.inputs.size(); ++k) inputs[k]["accepts_null"] = bool(s.input_accepts_missing[k]);
  json outputs = json::array();
  for (const auto& out : s.outputs) outputs.push_back({{"name", out.name}, {"type", out.kind}});
  json j = {{"format", to_string(format_)},
            {"task", s.task == Task::Classification ? "classification" : "regression"},
            {"inputs", inputs},
            {"outputs", outputs},
            {"features", s.feature_names},
            {"operators", s.operators},
            {"opset", s.opset},
            {"ml_opset", s.ml_opset},
            {"supported_opsets", json{{"ai.onnx", json::array({kMinOnnxOpset, kMaxOnnxOpset})},
                                       {"ai.onnx.ml", json::array({int64_t(1), kMaxMlOpset})}}},
            {"producer", s.producer}};
  if (s.task == Task::Classification) {
    j["classes"] = s.class_labels;
    j["numeric_labels"] = s.numeric_labels;
  }
  // Load checked that the model's text is UTF-8; replace anything else rather than throw.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

static std::vector<uint8_t> with_feature_names_unguarded(std::span<const uint8_t> bytes, ModelFormat format,
                                                         const std::vector<std::string>& names) {
  for (const std::string& name : names)
    if (!is_valid_utf8(name))
      fail(ErrorCode::InvalidInput, "a feature name is not valid UTF-8", "Pass feature names as UTF-8 text.");
  if (format == ModelFormat::Auto) format = detect_format(bytes);
  std::vector<uint8_t> out;
  if (format == ModelFormat::XGBoostJson) {
    nlohmann::json j = nlohmann::json::parse(bytes.begin(), bytes.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("learner"))
      fail(ErrorCode::InvalidModel, "xgboost model: bytes are not an XGBoost JSON model");
    j["learner"]["feature_names"] = names;
    if (!j["learner"].contains("feature_types") || j["learner"]["feature_types"].size() != names.size())
      j["learner"]["feature_types"] = std::vector<std::string>(names.size(), "float");
    std::string text = j.dump();
    out.assign(text.begin(), text.end());
  } else {
    onnx::ModelProto proto = import_onnx(bytes);
    auto* props = proto.mutable_metadata_props();
    for (int k = props->size() - 1; k >= 0; --k) {
      if (props->Get(k).key() == "feature_names") props->DeleteSubrange(k, 1);
    }
    auto* p = proto.add_metadata_props();
    p->set_key("feature_names");
    p->set_value(nlohmann::json(names).dump());
    std::string text;
    if (!proto.SerializeToString(&text)) fail(ErrorCode::Internal, "could not serialize the ONNX model");
    out.assign(text.begin(), text.end());
  }
  // Validates the names against the model's inputs.
  auto model = Model::load(out, format);
  if (model->signature().inputs.size() != 1)
    fail(ErrorCode::InvalidInput,
         fmt::format("model has {} named inputs; feature names apply to a model with one vector input",
                     model->signature().inputs.size()),
         "Such a model binds its inputs by their own names; omit 'features'.");
  return out;
}

// ---- public entry points ----
//
// Everything that leaves the core is a flock::Error with a code (the PostgreSQL glue maps it to an
// SQLSTATE), except std::bad_alloc, which the glue maps to out-of-memory, and exceptions that are not
// std::exceptions (the glue's own PgError passing through a callback), which pass unchanged. A
// library exception (protobuf, onnx, nlohmann::json, a std::vector's length_error) becomes
// `code_otherwise`: InvalidModel while loading, Internal after.

namespace {

template <typename F>
auto guarded(const char* entry, ErrorCode code_otherwise, F&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::length_error& e) {
    fail(ErrorCode::LimitExceeded, fmt::format("{}: a size is too large to allocate ({})", entry, e.what()),
         "A dimension or count in the model or its input is far too large.");
  } catch (const std::exception& e) {
    fail(code_otherwise, fmt::format("{}: {}", entry, e.what()));
  }
}

}  // namespace

std::shared_ptr<const Model> Model::load(std::span<const uint8_t> bytes, ModelFormat format, const Limits& limits) {
  return guarded("loading the model", ErrorCode::InvalidModel, [&] { return load_unguarded(bytes, format, limits); });
}

Prediction Model::predict(const FeatureBatch& batch, unsigned parts) const {
  return guarded("running the model", ErrorCode::Internal, [&] { return predict_unguarded(batch, parts); });
}

std::vector<Tensor> Model::run(const FeatureBatch& batch) const {
  return guarded("running the model", ErrorCode::Internal, [&] { return run_unguarded(batch); });
}

std::vector<Tensor> Model::run_tensors(std::vector<Tensor> inputs) const {
  return guarded("running the model", ErrorCode::Internal,
                 [&] { return run_tensors_unguarded(std::move(inputs)); });
}

std::string Model::signature_json() const {
  return guarded("describing the model", ErrorCode::Internal, [&] { return signature_json_unguarded(); });
}

std::vector<uint8_t> with_feature_names(std::span<const uint8_t> bytes, ModelFormat format,
                                        const std::vector<std::string>& names) {
  return guarded("setting the model's feature names", ErrorCode::InvalidModel,
                 [&] { return with_feature_names_unguarded(bytes, format, names); });
}

ModelInternals::GraphView ModelInternals::graph(const Model& model) {
  const Plan& plan = *model.plan_;
  GraphView g;
  g.input_slots = plan.input_slots;
  g.output_slots = plan.output_slots;
  for (const auto& [slot, tensor] : plan.constants) g.constant_slots.push_back(slot);
  g.steps.reserve(plan.steps.size());
  for (const auto& step : plan.steps)
    g.steps.push_back(
        StepView{step.kernel.get(), step.inputs, step.outputs, step.where, step.input_names, step.output_names});
  return g;
}

std::vector<Tensor> ModelInternals::run_observed(const Model& model, const FeatureBatch& batch,
                                                 const StepObserver& observe) {
  return guarded("running the model", ErrorCode::Internal,
                 [&] { return model.plan_->run(model.feed_for(batch), nullptr, &observe); });
}

Prediction ModelInternals::prediction_of(const Model& model, const std::vector<Tensor>& outputs,
                                         const FeatureBatch& batch, unsigned parts) {
  return guarded("running the model", ErrorCode::Internal,
                 [&] { return model.prediction_of(outputs, batch, parts); });
}

int ModelInternals::label_output(const Model& model) { return model.label_output_; }

std::shared_ptr<const Model> ModelInternals::with_kernels(
    const Model& model, const std::vector<std::pair<size_t, std::shared_ptr<const Kernel>>>& replacements) {
  std::unique_ptr<Plan> plan = model.plan_->copy();
  for (const auto& [index, kernel] : replacements) {
    if (index >= plan->steps.size() || !kernel)
      fail(ErrorCode::Internal, fmt::format("with_kernels: no step {} of {} or no kernel", index, plan->steps.size()));
    plan->steps[index].kernel = kernel;
  }
  std::shared_ptr<Model> copy(new Model());
  copy->format_ = model.format_;
  copy->signature_ = model.signature_;
  copy->size_bytes_ = model.size_bytes_;
  copy->bytes_per_row_ = model.bytes_per_row_;
  copy->plan_ = std::move(plan);
  copy->label_output_ = model.label_output_;
  copy->score_output_ = model.score_output_;
  return copy;
}

}  // namespace flock
