// ai.onnx.ml TreeEnsembleRegressor / TreeEnsembleClassifier (opsets 1 and 3), and TreeEnsemble
// (ai.onnx.ml 5), lowered onto the regressor by ml_tree_v5.cpp.
//
// The semantics follow ONNX Runtime's CPU implementation (tree_ensemble_common.h,
// tree_ensemble_aggregator.h, ml_common.h) including its quirks, so that a model gives the same
// numbers here as in ORT:
//   * a tree's root is the first node (in attribute order) of each run of equal nodes_treeids;
//   * weights attached to a branch node are ignored (but still count for the classifier's
//     "binary case" and "all weights positive" flags); a leaf without weights adds nothing (with
//     one target: its nodes_values entry, like recent ORT);
//   * a regressor with n_targets == 1 uses only the first weight of each leaf (its value rounded
//     to the threshold type, float unless the input is double), adds base_values[0]
//     (when base_values has one value) and applies PROBIT only: other post_transforms (LOGISTIC,
//     SOFTMAX, SOFTMAX_ZERO) are ignored for a single target, exactly like ORT;
//   * with several targets/classes, a target no leaf wrote to reads as 0 after the base values
//     were added (ORT's ScoreValue::has_score);
//   * the two-class classifier follows ORT's FinalizeScores binary rules (see finalize_binary).
// Transforms (logistic, softmax, probit) are computed in float like ORT; scores accumulate in
// double. Thresholds compare in the input's type: float for float and int64 input (the int64
// value converted to float), double for double input.
//
// Speed: the factory compiles the attributes once into flat node arrays (pre-order, leaves
// pointing to themselves) and validates every id. On float input, an ensemble whose branches all
// use one of LEQ/LT/GTE/GT and whose trees are at most kMaxPerfectDepth deep also gets a
// "perfect-tree" layout (see Fast below): each tree padded to a complete binary tree stored in heap
// order, so every row takes exactly `depth` branch-free steps. run() copies blocks of 128 rows
// column-major into a scratch buffer (NaN resolved there, per node, by the column a node reads)
// and walks trees outer, 16 rows at a time inner — or for fewer than 8 rows, 8 trees at a time.
// On a CPU with AVX-512F, trees at most six deep are evaluated instead, QuickScorer style, with
// vector compares (eval_tree_avx512) and their leaf values added by permutes; deeper trees evaluate
// their top five levels so (walk_top_avx512) and the walk continues from there.
// Other ensembles (mixed or EQ/NEQ modes, deep trees, double or int64 input) walk the flat nodes:
// blocks of 128 rows tree by tree, 8 rows at a time, or for fewer than 8 rows 8 trees at a time.
// Scores accumulate per row in tree order in every path, so all paths give the same bits.
//
// Files: ml_tree_compile.cpp (attributes -> Ensemble, validation), ml_tree_walk.hpp (the walk and
// its AVX-512 form), this file (the kernels: aggregation, post transforms, ORT's output rules).
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <mutex>
#include <numeric>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "flock/interrupt.hpp"
#include "flock/kernel.hpp"
#include "ml_tree.hpp"
#include "ml_tree_walk.hpp"

namespace flock {
namespace {

using namespace tree;  // Mode, Node, Ensemble

// ----------------------------------------------------------------------------------------------
// ORT's float helpers (ml_common.h)

inline float compute_logistic(float val) {
  float v = 1 / (1 + std::exp(-std::abs(val)));
  return (val < 0) ? (1 - v) : v;
}

inline float erf_inv(float x) {
  float sgn = x < 0 ? -1.0f : 1.0f;
  x = (1 - x) * (1 + x);
  float lg = std::log(x);
  float v = 2 / (3.14159265358979323846f * 0.147f) + 0.5f * lg;
  float v2 = 1 / (0.147f) * lg;
  float v3 = -v + std::sqrt(v * v - v2);
  return sgn * std::sqrt(v3);
}

inline float compute_probit(float val) { return 1.41421356237309504880f * erf_inv(2 * val - 1); }

// Writes `n` (>= 2) effective scores through the post transform, as ORT's write_scores does.
void write_multi(const double* v, size_t n, Transform t, float* z) {
  switch (t) {
    case Transform::Probit:
      for (size_t k = 0; k < n; ++k) z[k] = compute_probit(static_cast<float>(v[k]));
      break;
    case Transform::Logistic:
      for (size_t k = 0; k < n; ++k) z[k] = compute_logistic(static_cast<float>(v[k]));
      break;
    case Transform::Softmax: {
      float vmax = -std::numeric_limits<float>::max();
      for (size_t k = 0; k < n; ++k) vmax = std::max(vmax, static_cast<float>(v[k]));
      float sum = 0.f;
      for (size_t k = 0; k < n; ++k) {
        z[k] = std::exp(static_cast<float>(v[k]) - vmax);
        sum += z[k];
      }
      for (size_t k = 0; k < n; ++k) z[k] = z[k] / sum;
      break;
    }
    case Transform::SoftmaxZero: {
      float vmax = -std::numeric_limits<float>::max();
      for (size_t k = 0; k < n; ++k) vmax = std::max(vmax, static_cast<float>(v[k]));
      const float exp_neg_vmax = std::exp(-vmax);
      float sum = 0.f;
      for (size_t k = 0; k < n; ++k) {
        float f = static_cast<float>(v[k]);
        if (f > 0.0000001f || f < -0.0000001f) {
          z[k] = std::exp(f - vmax);
          sum += z[k];
        } else {
          z[k] = f * exp_neg_vmax;
        }
      }
      for (size_t k = 0; k < n; ++k) z[k] = z[k] / sum;
      break;
    }
    case Transform::None:
      for (size_t k = 0; k < n; ++k) z[k] = static_cast<float>(v[k]);
      break;
  }
}

// ORT's write_scores for one score ("binary case"). `second` is ORT's add_second_class.
void write_single(double v, Transform t, int second, float* z) {
  if (t == Transform::Probit) {
    z[0] = compute_probit(static_cast<float>(v));
    return;
  }
  switch (second) {
    case 0:
    case 1:
      z[0] = static_cast<float>(1 - v);
      z[1] = static_cast<float>(v);
      break;
    case 2:
    case 3:
      if (t == Transform::Logistic) {
        z[1] = compute_logistic(static_cast<float>(v));
        z[0] = compute_logistic(static_cast<float>(-v));
      } else {
        z[0] = static_cast<float>(-v);
        z[1] = static_cast<float>(v);
      }
      break;
    default:
      z[0] = static_cast<float>(v);
      break;
  }
}

// ----------------------------------------------------------------------------------------------
// Regressor

// ----------------------------------------------------------------------------------------------
// flock.trace: one row through every tree (TreeKernel::trace_row).

const char* transform_name(Transform t) {
  switch (t) {
    case Transform::None: return "NONE";
    case Transform::Logistic: return "LOGISTIC";
    case Transform::Softmax: return "SOFTMAX";
    case Transform::SoftmaxZero: return "SOFTMAX_ZERO";
    case Transform::Probit: return "PROBIT";
  }
  return "NONE";
}

const char* aggregate_name(Aggregate a) {
  switch (a) {
    case Aggregate::Sum: return "SUM";
    case Aggregate::Average: return "AVERAGE";
    case Aggregate::Min: return "MIN";
    case Aggregate::Max: return "MAX";
  }
  return "SUM";
}

// The leaves come from visit_leaves, the walk run() scores with (perfect-tree layout, vector form
// and all); each root-to-leaf path is then walked on the flat nodes with the same comparison and
// must end at that leaf.
std::vector<TreeKernel::TracedTree> trace_walks(const Ensemble& e, const Fast& fast, const DoubleNodes& nd,
                                                const std::vector<const Tensor*>& in, const std::string& where,
                                                int64_t row) {
  const InputView v = check_input(in, e, where);
  if (row < 0 || row >= v.rows) fail(ErrorCode::Internal, fmt::format("{}: no row {} to trace", where, row));
  std::vector<TreeKernel::TracedTree> traced;
  with_input(*in[0], e, nd, [&](const auto& nodes, const auto* x) {
    const auto* xr = x + row * v.cols;
    std::vector<int32_t> leaves;
    leaves.reserve(e.roots.size());
    visit_leaves(e, fast, nodes, xr, v.cols, 0, 1, [&](int64_t, int32_t leaf) { leaves.push_back(leaf); });
    if (leaves.size() != e.roots.size())
      fail(ErrorCode::Internal, fmt::format("{}: the walk reached {} leaves for {} trees", where, leaves.size(),
                                            e.roots.size()));
    traced.resize(e.roots.size());
    for (size_t t = 0; t < e.roots.size(); ++t) {
      TreeKernel::TracedTree& out = traced[t];
      int32_t at = e.roots[t];
      // A path is at most as long as the ensemble has nodes: a bound for a malformed walk.
      for (size_t steps = 0; nodes[static_cast<size_t>(at)].mode != kLeaf; ++steps) {
        if (steps > nodes.size()) fail(ErrorCode::Internal, fmt::format("{}: tree {} does not end", where, t));
        const auto& n = nodes[static_cast<size_t>(at)];
        using T = std::decay_t<decltype(n.threshold)>;
        const T value = static_cast<T>(xr[n.feature]);
        const bool go = compare<kMixed>(n.mode, value, n.threshold) | (n.missing_true & is_nan(value));
        out.branches.push_back({at, static_cast<double>(n.threshold), static_cast<double>(value), go, is_nan(value)});
        at = go ? n.yes : n.no;
      }
      if (at != leaves[t])
        fail(ErrorCode::Internal, fmt::format("{}: tree {}: the traced path ends at node {}, the scoring walk at {}",
                                              where, t, at, leaves[t]));
      out.leaf = at;
      out.leaf_value = static_cast<double>(nodes[static_cast<size_t>(at)].threshold);
    }
  });
  return traced;
}

class TreeRegressor final : public TreeKernel {
 public:
  explicit TreeRegressor(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    read_attrs(ctx.attrs);
    e_ = compile_ensemble(ctx.attrs, "target", n_targets_);
    finish();
  }
  TreeRegressor(const KernelContext& ctx, Ensemble&& e) : where_(ctx.attrs.where()) {
    read_attrs(ctx.attrs);
    e_ = std::move(e);
    check_ensemble(e_, where_, "target", n_targets_);
    finish();
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const InputView v = check_input(in, e_, where_);
    if (input_type_ && in[0]->type != *input_type_)
      fail(ErrorCode::InvalidModel, fmt::format("{}: input has element type {}; its nodes_splits and leaf_weights have {}", where_,
                                                to_string(in[0]->type), to_string(*input_type_)));
    if (out.empty()) out.resize(1);
    Tensor& y = out[0];
    const bool as_double = double_output_ && in[0]->type == ElemType::Double;
    y = Tensor(as_double ? ElemType::Double : ElemType::Float, {v.rows, n_targets_});
    if (v.rows == 0) return;
    with_input(*in[0], e_, nodes_d_, [&](const auto& nodes, const auto* x) {
      if (as_double) {
        if (n_targets_ == 1) run_single(nodes, x, v, y.d.data());
        else run_multi(nodes, x, v, y.d.data());
      } else {
        if (n_targets_ == 1) run_single(nodes, x, v, y.f.data());
        else run_multi(nodes, x, v, y.f.data());
      }
    });
  }

  // ai.onnx.ml 5 TreeEnsemble: the input has the attributes' element type `type`, and so has the
  // output (double for double input).
  void set_tree_ensemble5(ElemType type) {
    double_output_ = true;
    input_type_ = type;
  }

  size_t memory_bytes() const override { return ensemble_bytes(e_, fast_, nodes_d_); }

  const Ensemble& ensemble() const override { return e_; }

  std::unique_ptr<Kernel> with_ensemble(Ensemble&& replacement) const override {
    return std::unique_ptr<Kernel>(new TreeRegressor(*this, std::move(replacement)));
  }

  std::vector<TracedTree> trace_row(const Tensor& input, int64_t row) const override {
    return trace_walks(e_, fast_, nodes_d_, {&input}, where_, row);
  }

  Aggregation aggregation() const override {
    Aggregation a;
    a.aggregate = aggregate_name(agg_);
    a.post_transform = transform_name(transform_);
    a.base_values = base_;
    a.outputs = n_targets_;
    a.single_target = n_targets_ == 1;
    return a;
  }

  std::optional<SumRule> sum_rule() const override {
    // run_single: PROBIT is the only post_transform ORT applies to a single target.
    // A TreeEnsemble's output is double for double input: not rounded to float.
    if (n_targets_ != 1 || transform_ == Transform::Probit || (double_output_ && input_type_ != ElemType::Float))
      return std::nullopt;
    if (agg_ != Aggregate::Sum && agg_ != Aggregate::Average) return std::nullopt;
    return SumRule{agg_ == Aggregate::Average, base_.size() == 1 ? base_[0] : 0.0};
  }

  std::optional<RawScores> raw_scores() const override {
    if (agg_ != Aggregate::Sum && agg_ != Aggregate::Average) return std::nullopt;
    RawScores r;
    r.scale = agg_ == Aggregate::Average ? 1.0 / static_cast<double>(e_.roots.size()) : 1.0;
    for (int64_t k = 0; k < n_targets_; ++k) {
      r.ids.push_back(static_cast<int32_t>(k));
      r.origins.push_back(base_.empty() ? 0.0 : base_[static_cast<size_t>(k)]);
      r.names.push_back(std::to_string(k));
    }
    return r;
  }

 private:
  // `other`'s attributes over another ensemble (with_ensemble).
  TreeRegressor(const TreeRegressor& other, Ensemble&& e)
      : where_(other.where_), n_targets_(other.n_targets_), transform_(other.transform_), agg_(other.agg_),
        base_(other.base_), double_output_(other.double_output_), input_type_(other.input_type_) {
    e_ = std::move(e);
    check_ensemble(e_, where_, "target", n_targets_);
    e_.weights_all_positive = other.e_.weights_all_positive;
    e_.distinct_ids = other.e_.distinct_ids;
    finish();
  }

  void read_attrs(const Attrs& a) {
    if (!a.has("n_targets"))
      fail(ErrorCode::InvalidModel, fmt::format("{} lacks required attribute 'n_targets'", where_));
    n_targets_ = a.get_int("n_targets");
    if (n_targets_ < 1 || n_targets_ > kMaxTreeOutputs)
      fail(ErrorCode::InvalidModel, fmt::format("{}: n_targets is {}, it must be between 1 and 2^24", where_, n_targets_));
    transform_ = parse_transform(a);
    agg_ = parse_aggregate(a);
    base_ = numeric_attr(a, "base_values");
    if (!base_.empty() && static_cast<int64_t>(base_.size()) != n_targets_)
      fail(ErrorCode::InvalidModel, fmt::format("{}: base_values has {} values, n_targets is {}", where_,
                                                base_.size(), n_targets_));
  }

  void finish() {
    if (n_targets_ == 1) {
      // One target: a leaf adds its single-target value (float thresholds: float input only).
      fast_ = build_fast(
          e_, [&](int32_t leaf) { return static_cast<double>(e_.nodes_f[static_cast<size_t>(leaf)].threshold); },
          [](int32_t) { return 0; });
    } else {
      fast_ = build_fast_weighted(e_);
    }
  }

  // `Out` float, or double for TreeEnsemble on double input (then no rounding to float, except
  // through PROBIT, which is computed in float like ORT's).
  template <typename T, typename In, typename Out>
  void run_single(const std::vector<Node<T>>& nodes, const In* x, const InputView& v, Out* z) const {
    const double origin = base_.size() == 1 ? base_[0] : 0.0;
    const double n_trees = static_cast<double>(e_.roots.size());
    double s[kBlockRows];
    uint8_t h[kBlockRows];
    const Node<T>* nd = nodes.data();
    for (int64_t r0 = 0; r0 < v.rows; r0 += kBlockRows) {
      poll_interrupt();  // every block: a fraction of a millisecond for hundreds of trees
      const int64_t r1 = std::min(v.rows, r0 + kBlockRows);
      std::fill(s, s + (r1 - r0), 0.0);
      std::fill(h, h + (r1 - r0), uint8_t(0));
      switch (agg_) {
        case Aggregate::Sum:
        case Aggregate::Average:
          if constexpr (std::is_same_v<In, float>) {
            if (fast_.enabled) {
              const double* sv = fast_.slot_value.data();
              visit_fast(
                  fast_, x, v.cols, r0, r1, [&](int64_t r, int64_t, int64_t slot) { s[r] += sv[slot]; },
                  [&](int64_t t, int64_t, const uint32_t* slot, int64_t n) { add_slot_values(fast_, t, slot, n, s, 1, 0); });
              break;
            }
          }
          visit_dispatch(e_, nodes, x, v.cols, r0, r1, [&](int64_t r, int32_t leaf) { s[r] += nd[leaf].threshold; });
          break;
        case Aggregate::Min:
          visit_leaves(e_, fast_, nodes, x, v.cols, r0, r1, [&](int64_t r, int32_t leaf) {
            const double w = nd[leaf].threshold;
            if (!h[r] || w < s[r]) s[r] = w;
            h[r] = 1;
          });
          break;
        case Aggregate::Max:
          visit_leaves(e_, fast_, nodes, x, v.cols, r0, r1, [&](int64_t r, int32_t leaf) {
            const double w = nd[leaf].threshold;
            if (!h[r] || w > s[r]) s[r] = w;
            h[r] = 1;
          });
          break;
      }
      for (int64_t r = r0; r < r1; ++r) {
        double val = s[r - r0];
        switch (agg_) {
          case Aggregate::Sum: val += origin; break;
          case Aggregate::Average: val = val / n_trees + origin; break;
          default: val = h[r - r0] ? val + origin : origin; break;
        }
        // ORT applies only PROBIT to a single target.
        z[r] = transform_ == Transform::Probit ? compute_probit(static_cast<float>(val)) : static_cast<Out>(val);
      }
    }
  }

  template <typename T, typename In, typename Out>
  void run_multi(const std::vector<Node<T>>& nodes, const In* x, const InputView& v, Out* z) const {
    const size_t K = static_cast<size_t>(n_targets_);
    const double n_trees = static_cast<double>(e_.roots.size());
    const bool use_base = base_.size() == K;
    Block b;
    b.s.resize(static_cast<size_t>(std::min(v.rows, kBlockRows)) * K);
    b.h.resize(b.s.size());
    std::vector<double> eff(K);
    std::vector<float> eff_f;
    const int32_t* wid = e_.w_id.data();
    const double* wv = e_.w_value.data();
    const int32_t* first = e_.leaf_first.data();
    const int32_t* cnt = e_.leaf_count.data();
    for (int64_t r0 = 0; r0 < v.rows; r0 += kBlockRows) {
      poll_interrupt();  // every block: a fraction of a millisecond for hundreds of trees
      const int64_t r1 = std::min(v.rows, r0 + kBlockRows);
      const size_t used = static_cast<size_t>(r1 - r0) * K;
      std::fill(b.s.begin(), b.s.begin() + used, 0.0);
      std::fill(b.h.begin(), b.h.begin() + used, uint8_t(0));
      double* s = b.s.data();
      uint8_t* h = b.h.data();
      switch (agg_) {
        case Aggregate::Sum:
        case Aggregate::Average:
          if (use_fast<In>(fast_)) {
            for (int64_t r = 0; r < r1 - r0; ++r)
              for (int32_t c : fast_.targets_always) h[r * static_cast<int64_t>(K) + c] = 1;
          }
          sum_weights(e_, fast_, nodes, x, v.cols, r0, r1, K, s, h);
          break;
        case Aggregate::Min:
          visit_leaves(e_, fast_, nodes, x, v.cols, r0, r1, [&](int64_t r, int32_t leaf) {
            double* sr = s + r * K;
            uint8_t* hr = h + r * K;
            for (int32_t k = first[leaf], end = k + cnt[leaf]; k < end; ++k) {
              const int32_t t = wid[k];
              if (!hr[t] || wv[k] < sr[t]) sr[t] = wv[k];
              hr[t] = 1;
            }
          });
          break;
        case Aggregate::Max:
          visit_leaves(e_, fast_, nodes, x, v.cols, r0, r1, [&](int64_t r, int32_t leaf) {
            double* sr = s + r * K;
            uint8_t* hr = h + r * K;
            for (int32_t k = first[leaf], end = k + cnt[leaf]; k < end; ++k) {
              const int32_t t = wid[k];
              if (!hr[t] || wv[k] > sr[t]) sr[t] = wv[k];
              hr[t] = 1;
            }
          });
          break;
      }
      for (int64_t r = r0; r < r1; ++r) {
        const double* sr = s + (r - r0) * K;
        const uint8_t* hr = h + (r - r0) * K;
        for (size_t k = 0; k < K; ++k) {
          double val = sr[k];
          switch (agg_) {
            case Aggregate::Sum:
              if (use_base) val += base_[k];
              break;
            case Aggregate::Average:
              val = use_base ? val / n_trees + base_[k] : val / n_trees;
              break;
            default:
              val = (use_base ? base_[k] : 0.0) + (hr[k] ? val : 0.0);
              break;
          }
          eff[k] = hr[k] ? val : 0.0;  // a target no leaf wrote to reads as 0 (ORT)
        }
        if constexpr (std::is_same_v<Out, float>) {
          write_multi(eff.data(), K, transform_, z + r * static_cast<int64_t>(K));
        } else if (transform_ == Transform::None) {
          std::copy(eff.begin(), eff.end(), z + r * static_cast<int64_t>(K));
        } else {  // transforms are computed in float, like ORT's
          eff_f.resize(K);
          write_multi(eff.data(), K, transform_, eff_f.data());
          std::copy(eff_f.begin(), eff_f.end(), z + r * static_cast<int64_t>(K));
        }
      }
    }
  }

  std::string where_;
  int64_t n_targets_ = 1;
  Transform transform_ = Transform::None;
  Aggregate agg_ = Aggregate::Sum;
  std::vector<double> base_;
  bool double_output_ = false;
  std::optional<ElemType> input_type_;  // TreeEnsemble: the one input type its attributes allow
  Ensemble e_;
  DoubleNodes nodes_d_;
  Fast fast_;
};

// ----------------------------------------------------------------------------------------------
// Classifier

class TreeClassifier final : public TreeKernel {
 public:
  explicit TreeClassifier(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    read_attrs(ctx.attrs);
    e_ = compile_ensemble(ctx.attrs, "class", n_classes_);
    finish();
  }
  TreeClassifier(const KernelContext& ctx, Ensemble&& e) : where_(ctx.attrs.where()) {
    read_attrs(ctx.attrs);
    e_ = std::move(e);
    check_ensemble(e_, where_, "class", n_classes_);
    finish();
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const InputView v = check_input(in, e_, where_);
    if (out.size() < 2) out.resize(2);
    Tensor& y = out[0];
    Tensor& z = out[1];
    y = Tensor(strings_ ? ElemType::String : ElemType::Int64, {v.rows});
    z = Tensor(ElemType::Float, {v.rows, n_classes_});
    if (v.rows == 0) return;
    std::vector<int64_t> lab(strings_ ? static_cast<size_t>(v.rows) : 0);
    int64_t* label = strings_ ? lab.data() : y.i.data();
    with_input(*in[0], e_, nodes_d_, [&](const auto& nodes, const auto* x) { run_typed(nodes, x, v, z.f.data(), label); });
    if (strings_) {
      for (int64_t r = 0; r < v.rows; ++r) y.s[static_cast<size_t>(r)] = str_labels_[static_cast<size_t>(lab[r])];
    }
  }

  size_t memory_bytes() const override { return ensemble_bytes(e_, fast_, nodes_d_); }

  const Ensemble& ensemble() const override { return e_; }

  std::unique_ptr<Kernel> with_ensemble(Ensemble&& replacement) const override {
    return std::unique_ptr<Kernel>(new TreeClassifier(*this, std::move(replacement)));
  }

  std::vector<TracedTree> trace_row(const Tensor& input, int64_t row) const override {
    return trace_walks(e_, fast_, nodes_d_, {&input}, where_, row);
  }

  Aggregation aggregation() const override {
    Aggregation a;
    a.classifier = true;
    a.post_transform = transform_name(transform_);
    a.base_values = base_;
    a.outputs = n_classes_;
    a.binary_case = binary_case_;
    return a;
  }

  std::optional<BinaryLabelRule> binary_label_rule() const override {
    if (n_classes_ != 2) return std::nullopt;
    auto class0_weights = [&](size_t leaf) {
      int count = 0;
      for (int32_t k = e_.leaf_first[leaf], end = k + e_.leaf_count[leaf]; k < end; ++k)
        count += e_.w_id[static_cast<size_t>(k)] == 0;
      return count;
    };
    if (binary_case_) {
      // finalize_binary, binary case, every leaf scoring class 0 once (h[0] always set, h[1]
      // never): pos = s[0] + base_values[0] (when given); class 1 iff pos > 0.5 or pos > 0.
      for (size_t i = 0; i < e_.nodes_f.size(); ++i) {
        if (e_.nodes_f[i].mode != kLeaf) continue;
        if (e_.leaf_count[i] != 1 || class0_weights(i) != 1) return std::nullopt;
      }
      return BinaryLabelRule{base_.empty() ? 0.0 : base_[0], e_.weights_all_positive ? 0.5 : 0.0};
    }
    // Both classes scored, two base values, class 1 scored on every path (a tree all of whose
    // leaves score it, so h[1] is always set): finalize_binary makes s1 = base_values[1] + s[0] and
    // s0 = -s1, and the label is class 1 iff s1 > s0, i.e. base_values[1] + s[0] > 0. (XGBoost's
    // encoding of binary:logistic when no leaf is negative.) At most one class-0 weight per leaf,
    // so s[0] adds one value per tree.
    if (base_.size() != 2) return std::nullopt;
    for (size_t i = 0; i < e_.nodes_f.size(); ++i)
      if (e_.nodes_f[i].mode == kLeaf && class0_weights(i) > 1) return std::nullopt;
    bool class1_always = false;
    for (size_t t = 0; t < e_.roots.size() && !class1_always; ++t) {
      const size_t begin = static_cast<size_t>(e_.roots[t]);
      const size_t end = t + 1 < e_.roots.size() ? static_cast<size_t>(e_.roots[t + 1]) : e_.nodes_f.size();
      bool all = true;  // every leaf of tree t (its nodes lie in [begin, end)) scores class 1
      for (size_t i = begin; i < end && all; ++i) {
        if (e_.nodes_f[i].mode != kLeaf) continue;
        bool scores1 = false;
        for (int32_t k = e_.leaf_first[i], stop = k + e_.leaf_count[i]; k < stop; ++k)
          scores1 = scores1 || e_.w_id[static_cast<size_t>(k)] == 1;
        all = scores1;
      }
      class1_always = all;
    }
    if (!class1_always) return std::nullopt;
    return BinaryLabelRule{base_[1], 0.0};
  }

  std::optional<RawScores> raw_scores() const override {
    auto label = [&](size_t k) { return strings_ ? str_labels_[k] : std::to_string(int_labels_[k]); };
    RawScores r;
    if (const auto rule = binary_label_rule()) {
      r.ids = {0};
      r.origins = {rule->origin};
      r.names = {label(1)};
      return r;
    }
    if (n_classes_ == 2 && (binary_case_ || base_.size() == 2)) return std::nullopt;
    for (int64_t k = 0; k < n_classes_; ++k) {
      const size_t c = static_cast<size_t>(k);
      r.ids.push_back(static_cast<int32_t>(k));
      r.origins.push_back(c < base_.size() ? base_[c] : 0.0);
      r.names.push_back(label(c));
    }
    return r;
  }

 private:
  // `other`'s attributes over another ensemble (with_ensemble).
  TreeClassifier(const TreeClassifier& other, Ensemble&& e)
      : where_(other.where_), int_labels_(other.int_labels_), str_labels_(other.str_labels_),
        strings_(other.strings_), labels_(other.labels_), n_classes_(other.n_classes_),
        transform_(other.transform_), base_(other.base_) {
    e_ = std::move(e);
    check_ensemble(e_, where_, "class", n_classes_);
    e_.weights_all_positive = other.e_.weights_all_positive;
    e_.distinct_ids = other.e_.distinct_ids;
    finish();
  }

  void read_attrs(const Attrs& a) {
    int_labels_ = a.get_ints("classlabels_int64s");
    str_labels_ = a.get_strings("classlabels_strings");
    if (!int_labels_.empty() && !str_labels_.empty())
      fail(ErrorCode::InvalidModel,
           fmt::format("{} has both classlabels_int64s and classlabels_strings; give only one", where_));
    strings_ = !str_labels_.empty();
    n_classes_ = static_cast<int64_t>(strings_ ? str_labels_.size() : int_labels_.size());
    if (n_classes_ == 0)
      fail(ErrorCode::InvalidModel,
           fmt::format("{} lacks class labels (classlabels_int64s or classlabels_strings)", where_));
    if (n_classes_ < 2)
      fail(ErrorCode::InvalidModel, fmt::format("{} has a single class label; a classifier needs at least two",
                                                where_));
    if (strings_) {
      labels_.resize(static_cast<size_t>(n_classes_));
      std::iota(labels_.begin(), labels_.end(), int64_t(0));
    } else {
      labels_ = int_labels_;
    }
    transform_ = parse_transform(a);
    base_ = numeric_attr(a, "base_values");
    if (static_cast<int64_t>(base_.size()) > n_classes_)
      fail(ErrorCode::InvalidModel, fmt::format("{}: base_values has {} values for {} classes", where_,
                                                base_.size(), n_classes_));
  }

  void finish() {
    binary_case_ = n_classes_ == 2 && e_.distinct_ids == 1;
    fast_ = build_fast_weighted(e_);
  }

  template <typename T, typename In>
  void run_typed(const std::vector<Node<T>>& nodes, const In* x, const InputView& v, float* z, int64_t* label) const {
    const size_t K = static_cast<size_t>(n_classes_);
    Block b;
    b.s.resize(static_cast<size_t>(std::min(v.rows, kBlockRows)) * K);
    b.h.resize(b.s.size());
    std::vector<double> eff(K);
    for (int64_t r0 = 0; r0 < v.rows; r0 += kBlockRows) {
      poll_interrupt();  // every block: a fraction of a millisecond for hundreds of trees
      const int64_t r1 = std::min(v.rows, r0 + kBlockRows);
      const size_t used = static_cast<size_t>(r1 - r0) * K;
      std::fill(b.s.begin(), b.s.begin() + used, 0.0);
      std::fill(b.h.begin(), b.h.begin() + used, uint8_t(0));
      double* s = b.s.data();
      uint8_t* h = b.h.data();
      if (use_fast<In>(fast_)) {
        for (int64_t r = 0; r < r1 - r0; ++r)
          for (int32_t c : fast_.targets_always) h[r * static_cast<int64_t>(K) + c] = 1;
      }
      sum_weights(e_, fast_, nodes, x, v.cols, r0, r1, K, s, h);
      for (int64_t r = r0; r < r1; ++r) {
        double* sr = s + (r - r0) * K;
        uint8_t* hr = h + (r - r0) * K;
        float* zr = z + r * static_cast<int64_t>(K);
        if (K > 2) label[r] = finalize_multi(sr, hr, eff.data(), zr);
        else label[r] = finalize_binary(sr, hr, zr);
      }
    }
  }

  // ORT TreeAggregatorClassifier::FinalizeScores, more than two classes.
  int64_t finalize_multi(double* s, uint8_t* h, double* eff, float* z) const {
    const size_t K = static_cast<size_t>(n_classes_);
    for (size_t k = 0; k < base_.size(); ++k) {
      if (!h[k]) {
        h[k] = 1;
        s[k] = base_[k];
      } else {
        s[k] += base_[k];
      }
    }
    int64_t best = -1;
    double best_w = 0;
    for (size_t k = 0; k < K; ++k) {
      if (h[k] && (best == -1 || s[k] > best_w)) {
        best = static_cast<int64_t>(k);
        best_w = s[k];
      }
      eff[k] = h[k] ? s[k] : 0.0;
    }
    write_multi(eff, K, transform_, z);
    return labels_[static_cast<size_t>(best < 0 ? 0 : best)];
  }

  // ORT TreeAggregatorClassifier::FinalizeScores, two classes.
  int64_t finalize_binary(double* s, uint8_t* h, float* z) const {
    int second = -1;
    size_t size = 2;
    if (base_.size() == 2) {
      if (h[1]) {
        // ORT: base_values[0] is not used; class 0 carries the score, class 1 its opposite.
        s[1] = base_[1] + s[0];
        s[0] = -s[1];
      } else {
        s[1] += base_[1];
        s[0] += base_[0];
      }
    } else if (base_.size() == 1) {
      s[0] += base_[0];
      if (!h[1]) size = 1;
    } else {
      second = 3;
      if (!h[1]) size = 1;
    }
    const double pos = (size == 2 && h[1]) ? s[1] : (h[0] ? s[0] : 0.0);
    int64_t label;
    if (binary_case_) {
      if (e_.weights_all_positive) {
        second = pos > 0.5 ? 0 : 1;
        label = labels_[pos > 0.5 ? 1 : 0];
      } else {
        second = pos > 0 ? 2 : 3;
        label = labels_[pos > 0 ? 1 : 0];
      }
    } else {
      // Both classes carry weights. ORT returns the literal 0/1 here (label 1 whenever class 1 scores
      // above 0, whatever class 0 scores); we take the argmax, which agrees with the probabilities
      // and maps to the model's class labels. No converter we know emits this form.
      const double s0 = h[0] ? s[0] : 0.0;
      const double s1 = (size == 2 && h[1]) ? s[1] : 0.0;
      label = labels_[s1 > s0 ? 1 : 0];
    }
    if (size == 2) {
      const double eff[2] = {h[0] ? s[0] : 0.0, h[1] ? s[1] : 0.0};
      write_multi(eff, 2, transform_, z);
    } else {
      write_single(h[0] ? s[0] : 0.0, transform_, second, z);
    }
    return label;
  }

  std::string where_;
  std::vector<int64_t> int_labels_;
  std::vector<std::string> str_labels_;
  bool strings_ = false;
  std::vector<int64_t> labels_;  // int labels, or indices into str_labels_
  int64_t n_classes_ = 0;
  Transform transform_ = Transform::None;
  std::vector<double> base_;
  Ensemble e_;
  DoubleNodes nodes_d_;
  Fast fast_;
  bool binary_case_ = false;
};

}  // namespace

std::unique_ptr<Kernel> tree::make_tree_kernel(const KernelContext& ctx, Ensemble&& ensemble) {
  const std::string& op = ctx.node.op_type();
  if (op == "TreeEnsembleRegressor") return std::make_unique<TreeRegressor>(ctx, std::move(ensemble));
  if (op == "TreeEnsembleClassifier") return std::make_unique<TreeClassifier>(ctx, std::move(ensemble));
  fail(ErrorCode::Internal, fmt::format("{} is not a tree ensemble", ctx.attrs.where()));
}

std::unique_ptr<Kernel> tree::make_tree_ensemble5_kernel(const KernelContext& lowered, ElemType type) {
  auto k = std::make_unique<TreeRegressor>(lowered);
  k->set_tree_ensemble5(type);
  return k;
}

bool tree::simd_walk_available() { return cpu_has_avx512f(); }

bool tree::set_simd_walk(bool on) {
  simd_walk_on.store(on && cpu_has_avx512f());
  return simd_walk_on.load();
}

void register_ml_tree_kernels(KernelRegistry& r) {
  r.add("ai.onnx.ml", "TreeEnsembleRegressor",
        [](const KernelContext& ctx) -> std::unique_ptr<Kernel> { return std::make_unique<TreeRegressor>(ctx); });
  r.add("ai.onnx.ml", "TreeEnsembleClassifier",
        [](const KernelContext& ctx) -> std::unique_ptr<Kernel> { return std::make_unique<TreeClassifier>(ctx); });
  r.add("ai.onnx.ml", "TreeEnsemble", tree::make_tree_ensemble5);
}

}  // namespace flock
