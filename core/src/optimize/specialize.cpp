// Specializing tree ensembles to per-column constraints, and the columns a model reads
// (flock/optimize.hpp).
//
// A tree is rebuilt by walking it from its root with the Range of every column (value_range.hpp):
// at a branch whose allowed values all go one way, the walk continues into that child and the
// branch disappears; at a branch that stays, each child is rebuilt with the Ranges narrowed to the
// values that reach it, so a later branch that an earlier one decides goes too. Leaves keep their
// weights in order, trees keep their order (scores add up in the same order, so the same bits) and
// a tree reduced to a leaf stays as that leaf.
#include <fmt/format.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <utility>

#include "../kernels/ml_linear.hpp"
#include "../kernels/ml_preprocess.hpp"
#include "../kernels/ml_tree.hpp"
#include "../model_internals.hpp"
#include "flock/optimize.hpp"
#include "graph_view.hpp"
#include "value_range.hpp"

namespace flock::optimize {
namespace {

using detail::Domain;
using detail::NodeValues;
using detail::Range;
using detail::VectorInput;
using detail::vector_input;
using tree::Ensemble;
using tree::Node;

std::string with_thousands(int64_t v) {
  std::string digits = std::to_string(v < 0 ? -v : v), out;
  for (size_t k = 0; k < digits.size(); ++k) {
    if (k > 0 && (digits.size() - k) % 3 == 0) out += ',';
    out += digits[k];
  }
  return v < 0 ? "-" + out : out;
}

// The step that writes `slot` as its first output, if any.
const ModelInternals::StepView* producer_of(const ModelInternals::GraphView& g, int slot) {
  for (const auto& step : g.steps)
    if (!step.outputs.empty() && step.outputs[0] == slot) return &step;
  return nullptr;
}

// Steps that map the input's columns one to one, with parameters for one or `width` columns.
enum class ColumnOp { kNone, kScaler, kImputer };

ColumnOp column_op(const ModelInternals::StepView& step, int64_t width) {
  if (step.inputs.size() != 1 || step.outputs.size() != 1 || step.outputs[0] < 0) return ColumnOp::kNone;
  auto fits = [&](size_t n) { return n == 1 || static_cast<int64_t>(n) == width; };
  if (const auto* scaler = dynamic_cast<const preprocess::ScalerKernel*>(step.kernel)) {
    const size_t n = scaler->scales().size();
    return n == scaler->offsets().size() && fits(n) ? ColumnOp::kScaler : ColumnOp::kNone;
  }
  if (const auto* imputer = dynamic_cast<const preprocess::ImputerKernel*>(step.kernel)) {
    const size_t n = imputer->imputed_floats().size();
    return n > 0 && fits(n) ? ColumnOp::kImputer : ColumnOp::kNone;
  }
  return ColumnOp::kNone;
}

// What a tree step compares: the model input's columns, or what a chain of Scalers and Imputers
// makes of them.
struct TreeInput {
  std::vector<Range> ranges;
  Domain domain;
};

constexpr size_t kMaxColumnChain = 16;

std::optional<TreeInput> tree_input(const ModelInternals::GraphView& g, const ModelInternals::StepView& step,
                                    const VectorInput& in, const std::vector<Range>& input_ranges) {
  if (step.inputs.empty()) return std::nullopt;
  // Back from what the tree reads to the model input, through column-wise steps only.
  std::vector<const ModelInternals::StepView*> chain;
  for (int slot = step.inputs[0]; slot != in.slot;) {
    const ModelInternals::StepView* producer = producer_of(g, slot);
    if (!producer || chain.size() >= kMaxColumnChain || column_op(*producer, in.width) == ColumnOp::kNone)
      return std::nullopt;
    chain.push_back(producer);
    slot = producer->inputs[0];
  }
  TreeInput out{input_ranges, in.domain()};
  ElemType type = in.type;
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    const Kernel* kernel = (*it)->kernel;
    if (const auto* scaler = dynamic_cast<const preprocess::ScalerKernel*>(kernel)) {
      for (size_t k = 0; k < out.ranges.size(); ++k) {
        const size_t p = scaler->scales().size() == 1 ? 0 : k;
        out.ranges[k] = detail::scaler_output(out.ranges[k], out.domain, scaler->offsets()[p], scaler->scales()[p]);
      }
      out.domain = Domain::Float;  // a Scaler writes float
      type = ElemType::Float;
    } else if (const auto* imputer = dynamic_cast<const preprocess::ImputerKernel*>(kernel)) {
      if (type == ElemType::Int64) return std::nullopt;  // float imputation of int64: the kernel refuses it
      const auto& imputed = imputer->imputed_floats();
      for (size_t k = 0; k < out.ranges.size(); ++k)
        out.ranges[k] = detail::imputer_output(out.ranges[k], imputed[imputed.size() == 1 ? 0 : k],
                                               imputer->replaced_float());
    } else {
      return std::nullopt;
    }
  }
  return out;
}

// Rebuilds one ensemble for the column Ranges; nullopt when its structure is not what the kernels
// accept or the rebuilt trees would outgrow the budget (shared subtrees are copied per path).
class TreeRebuilder {
 public:
  TreeRebuilder(const Ensemble& e, Domain domain, std::vector<Range> ranges)
      : e_(e), thresholds_{e, domain}, domain_(domain), ranges_(std::move(ranges)) {}

  std::optional<Ensemble> rebuild(SpecializeStats& stats) {
    const size_t n = e_.nodes_f.size();
    if (n == 0 || e_.leaf_first.size() != n || e_.leaf_count.size() != n || e_.w_id.size() != e_.w_value.size() ||
        (!e_.nodes_d.empty() && e_.nodes_d.size() != n))
      return std::nullopt;
    budget_ = 2 * static_cast<int64_t>(n) + 1024;
    out_.roots.reserve(e_.roots.size());
    int64_t collapsed = 0;
    for (int32_t root : e_.roots) {
      if (root < 0 || static_cast<size_t>(root) >= n) return std::nullopt;
      const int32_t new_root = static_cast<int32_t>(out_.nodes_f.size());
      out_.roots.push_back(new_root);
      if (!rebuild_tree(root)) return std::nullopt;
      if (e_.nodes_f[static_cast<size_t>(root)].mode != tree::kLeaf &&
          out_.nodes_f[static_cast<size_t>(new_root)].mode == tree::kLeaf)
        ++collapsed;
    }
    stats.nodes_before += static_cast<int64_t>(n);
    stats.nodes_after += static_cast<int64_t>(out_.nodes_f.size());
    stats.branches_removed += removed_;
    stats.trees += static_cast<int64_t>(e_.roots.size());
    stats.trees_collapsed += collapsed;
    return std::move(out_);
  }

 private:
  // One step of the walk: visit `node` (its new parent `parent` gets it as the true or false
  // child), with column `feature`'s Range narrowed to `range` first; or put a Range back.
  struct Frame {
    bool restore = false;
    int32_t node = -1;
    int32_t parent = -1;
    bool yes_side = true;
    int32_t feature = -1;  // -1: nothing to narrow
    Range range{};
  };

  Range range_of(int32_t feature) const {
    return feature >= 0 && static_cast<size_t>(feature) < ranges_.size() ? ranges_[static_cast<size_t>(feature)]
                                                                        : detail::full_range();
  }

  bool valid_child(int32_t c) const { return c >= 0 && static_cast<size_t>(c) < e_.nodes_f.size(); }

  bool rebuild_tree(int32_t root) {
    std::vector<Frame> stack;
    stack.push_back(Frame{false, root, -1, true, -1, {}});
    while (!stack.empty()) {
      const Frame f = stack.back();
      stack.pop_back();
      if (f.restore) {
        ranges_[static_cast<size_t>(f.feature)] = f.range;
        continue;
      }
      if (f.feature >= 0) {
        stack.push_back(Frame{true, -1, -1, true, f.feature, ranges_[static_cast<size_t>(f.feature)]});
        ranges_[static_cast<size_t>(f.feature)] = f.range;
      }
      // Follow the branches the Ranges decide.
      int32_t v = f.node;
      for (size_t hops = 0;; ++hops) {
        const Node<float>& nd = e_.nodes_f[static_cast<size_t>(v)];
        if (nd.mode == tree::kLeaf) break;
        if (hops > e_.nodes_f.size()) return false;  // a cycle: not an ensemble the kernels accept
        const detail::Outcomes o =
            detail::branch_outcomes(nd.mode, thresholds_(static_cast<size_t>(v)), nd.missing_true, range_of(nd.feature));
        if (o.can_true && o.can_false) break;
        // Exactly one way, or none (a path no allowed input takes: either child will do).
        v = o.can_true || !o.can_false ? nd.yes : nd.no;
        if (!valid_child(v)) return false;
        ++removed_;
      }
      const int32_t k = emit(v);
      if (k < 0) return false;
      if (f.parent >= 0) {
        if (f.yes_side) set_child(f.parent, k, true);
        else set_child(f.parent, k, false);
      }
      const Node<float>& nd = e_.nodes_f[static_cast<size_t>(v)];
      if (nd.mode == tree::kLeaf) continue;
      if (!valid_child(nd.yes) || !valid_child(nd.no)) return false;
      int32_t feature = nd.feature;
      detail::ChildRanges c{};
      if (feature >= 0 && static_cast<size_t>(feature) < ranges_.size()) {
        c = detail::branch_children(nd.mode, thresholds_(static_cast<size_t>(v)), nd.missing_true,
                                    ranges_[static_cast<size_t>(feature)], domain_);
      } else {
        feature = -1;
      }
      stack.push_back(Frame{false, nd.no, k, false, feature, c.no});
      stack.push_back(Frame{false, nd.yes, k, true, feature, c.yes});
    }
    return true;
  }

  // Appends a copy of old node `v` (children to be set; a leaf with its weights); -1 past the budget.
  int32_t emit(int32_t v) {
    if (static_cast<int64_t>(out_.nodes_f.size()) >= budget_) return -1;
    const int32_t k = static_cast<int32_t>(out_.nodes_f.size());
    Node<float> nf = e_.nodes_f[static_cast<size_t>(v)];
    int32_t first = 0, count = 0;
    if (nf.mode == tree::kLeaf) {
      nf.yes = nf.no = k;
      const int64_t old_first = e_.leaf_first[static_cast<size_t>(v)], old_count = e_.leaf_count[static_cast<size_t>(v)];
      if (old_first < 0 || old_count < 0 || old_first + old_count > static_cast<int64_t>(e_.w_id.size())) return -1;
      first = static_cast<int32_t>(out_.w_id.size());
      count = static_cast<int32_t>(old_count);
      for (int64_t w = old_first; w < old_first + old_count; ++w) {
        out_.w_id.push_back(e_.w_id[static_cast<size_t>(w)]);
        out_.w_value.push_back(e_.w_value[static_cast<size_t>(w)]);
      }
    } else {
      nf.yes = nf.no = -1;
    }
    out_.nodes_f.push_back(nf);
    if (!e_.nodes_d.empty()) {
      Node<double> nd = e_.nodes_d[static_cast<size_t>(v)];
      nd.yes = nf.yes;
      nd.no = nf.no;
      out_.nodes_d.push_back(nd);
    }
    out_.leaf_first.push_back(first);
    out_.leaf_count.push_back(count);
    return k;
  }

  void set_child(int32_t parent, int32_t child, bool yes) {
    Node<float>& pf = out_.nodes_f[static_cast<size_t>(parent)];
    (yes ? pf.yes : pf.no) = child;
    if (!out_.nodes_d.empty()) {
      Node<double>& pd = out_.nodes_d[static_cast<size_t>(parent)];
      (yes ? pd.yes : pd.no) = child;
    }
  }

  const Ensemble& e_;
  NodeValues thresholds_;
  Domain domain_;
  std::vector<Range> ranges_;
  Ensemble out_;
  int64_t budget_ = 0;
  int64_t removed_ = 0;
};

// Columns some branch reachable from a root splits on (all nodes of a valid ensemble are, but an
// imported one is not required to be tidy).
void mark_tree_columns(const Ensemble& e, std::vector<bool>& read, bool& reads_beyond) {
  const size_t n = e.nodes_f.size();
  std::vector<uint8_t> seen(n, 0);
  std::vector<int32_t> stack;
  stack.reserve(e.roots.size() + 64);
  for (int32_t root : e.roots) stack.push_back(root);
  while (!stack.empty()) {
    const int32_t v = stack.back();
    stack.pop_back();
    if (v < 0 || static_cast<size_t>(v) >= n) {
      reads_beyond = true;  // malformed: answer "all"
      continue;
    }
    if (seen[static_cast<size_t>(v)]) continue;
    seen[static_cast<size_t>(v)] = 1;
    const Node<float>& nd = e.nodes_f[static_cast<size_t>(v)];
    if (nd.mode == tree::kLeaf) continue;
    if (nd.feature < 0 || static_cast<size_t>(nd.feature) >= read.size()) reads_beyond = true;
    else read[static_cast<size_t>(nd.feature)] = true;
    stack.push_back(nd.yes);
    stack.push_back(nd.no);
  }
}

// The column's values are never missing and finite once converted to float (the linear kernels
// cast their input to float): a zero coefficient then contributes a zero.
bool finite_in_float(const FeatureConstraint& c) {
  if (c.missing_allowed) return false;
  const Interval& v = c.values;
  if (v.is_empty()) return true;
  const double max = static_cast<double>(FLT_MAX);
  return v.lower() && v.upper() && v.lower()->value >= -max && v.upper()->value <= max;
}

InputsRead inputs_read_unguarded(const Model& model, const Constraints& constraints) {
  InputsRead result;
  const ModelInternals::GraphView g = ModelInternals::graph(model);
  const std::optional<VectorInput> in = vector_input(model, g);
  if (!in) {
    result.width = -1;
    return result;
  }
  result.width = in->width;
  // Slots that hold the input's columns one to one: the input itself, Scalers and Imputers of it.
  std::vector<int> column_slots = {in->slot};
  auto is_column_slot = [&](int slot) {
    return std::find(column_slots.begin(), column_slots.end(), slot) != column_slots.end();
  };
  std::vector<bool> read(static_cast<size_t>(in->width), false);
  bool all = false;
  for (const auto& step : g.steps) {
    const int64_t reads = std::count_if(step.inputs.begin(), step.inputs.end(), is_column_slot);
    if (reads == 0) continue;
    if (reads != 1 || !is_column_slot(step.inputs[0])) {
      all = true;
      break;
    }
    const bool direct = step.inputs[0] == in->slot;
    if (column_op(step, in->width) != ColumnOp::kNone) {
      column_slots.push_back(step.outputs[0]);  // read as far as its readers read it
    } else if (const auto* t = dynamic_cast<const tree::TreeKernel*>(step.kernel)) {
      mark_tree_columns(t->ensemble(), read, all);
    } else if (const auto* l = dynamic_cast<const linear::LinearKernel*>(step.kernel); l && direct) {
      const std::optional<std::vector<bool>> weighted = l->weighted_columns(in->width);
      if (!weighted || weighted->size() != read.size()) {
        all = true;
      } else {
        for (size_t k = 0; k < read.size(); ++k) {
          const bool finite = k < constraints.columns.size() && finite_in_float(constraints.columns[k]);
          if ((*weighted)[k] || !finite) read[k] = true;
        }
      }
    } else {
      all = true;  // anything else, a linear model over scaled columns included
    }
    if (all) break;
  }
  for (int s : g.output_slots)
    if (is_column_slot(s)) all = true;  // the input (or its scaling) is an output as it is
  if (all) return result;
  result.all = false;
  result.read = std::move(read);
  return result;
}

std::optional<Specialized> specialize_unguarded(const Model& model, const Constraints& constraints) {
  const ModelInternals::GraphView g = ModelInternals::graph(model);
  const std::optional<VectorInput> in = vector_input(model, g);
  if (!in || static_cast<int64_t>(constraints.columns.size()) != in->width || constraints.unsatisfiable())
    return std::nullopt;
  std::vector<Range> ranges;
  ranges.reserve(constraints.columns.size());
  for (const FeatureConstraint& c : constraints.columns)
    ranges.push_back(detail::range_for(c, in->type, constraints.exact_input_values));

  Specialized result;
  std::vector<std::pair<size_t, std::shared_ptr<const Kernel>>> replaced;
  for (size_t k = 0; k < g.steps.size(); ++k) {
    const auto& step = g.steps[k];
    const auto* t = dynamic_cast<const tree::TreeKernel*>(step.kernel);
    if (!t) continue;
    // Only an ensemble that reads the model's input, as it is or scaled, knows which values it compares.
    std::optional<TreeInput> tree_in = tree_input(g, step, *in, ranges);
    if (!tree_in) continue;
    SpecializeStats stats;
    std::optional<Ensemble> rebuilt = TreeRebuilder(t->ensemble(), tree_in->domain, std::move(tree_in->ranges)).rebuild(stats);
    if (!rebuilt) return std::nullopt;
    if (stats.branches_removed > 0) {  // else the original kernel is as good, and already built
      std::unique_ptr<Kernel> kernel = t->with_ensemble(std::move(*rebuilt));
      if (!kernel) return std::nullopt;
      replaced.emplace_back(k, std::shared_ptr<const Kernel>(std::move(kernel)));
    }
    result.stats.nodes_before += stats.nodes_before;
    result.stats.nodes_after += stats.nodes_after;
    result.stats.branches_removed += stats.branches_removed;
    result.stats.trees += stats.trees;
    result.stats.trees_collapsed += stats.trees_collapsed;
    ++result.stats.ensembles;
  }
  if (result.stats.ensembles == 0) return std::nullopt;
  result.model = ModelInternals::with_kernels(model, replaced);
  return result;
}

}  // namespace

int64_t InputsRead::count() const {
  if (all) return width;
  return static_cast<int64_t>(std::count(read.begin(), read.end(), true));
}

std::string InputsRead::summary() const {
  if (width < 0) return "Inputs Read: all";
  return fmt::format("Inputs Read: {} of {}", with_thousands(count()), with_thousands(width));
}

std::string SpecializeStats::summary() const {
  std::string text = fmt::format("Pruned: {} of {} nodes", with_thousands(nodes_before - nodes_after),
                                 with_thousands(nodes_before));
  if (trees_collapsed > 0)
    text += fmt::format(", {} of {} trees to a leaf", with_thousands(trees_collapsed), with_thousands(trees));
  return text;
}

// The passes never fail a query: anything unexpected (a flock::Error from validating a rebuilt
// ensemble, a library exception) means "cannot", and only running out of memory propagates.
InputsRead inputs_read(const Model& model, const Constraints& constraints) {
  try {
    return inputs_read_unguarded(model, constraints);
  } catch (const std::bad_alloc&) {
    throw;
  } catch (...) {
    InputsRead all;
    all.width = model.signature().inputs.size() == 1 ? model.signature().inputs[0].width : -1;
    return all;
  }
}

std::optional<Specialized> specialize(const Model& model, const Constraints& constraints) {
  try {
    return specialize_unguarded(model, constraints);
  } catch (const std::bad_alloc&) {
    throw;
  } catch (...) {
    return std::nullopt;
  }
}

}  // namespace flock::optimize
