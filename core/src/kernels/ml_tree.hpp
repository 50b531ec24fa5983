// Internal to flock_core: the compiled form of an ai.onnx.ml TreeEnsemble, shared by the kernels
// (ml_tree_*.cpp) and the XGBoost importer, which builds it directly instead of going through
// hundreds of thousands of ONNX attribute values (see xgboost_import.cpp).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "flock/kernel.hpp"

namespace flock::tree {

enum Mode : uint8_t { kLeaf = 0, kLeq, kLt, kGte, kGt, kEq, kNeq, kMixed };

// Most outputs (regression targets, classes) an ensemble may have: 2^24.
constexpr int64_t kMaxTreeOutputs = int64_t(1) << 24;

// A node of the flattened ensemble. Nodes are numbered in pre-order per tree (a branch's true
// child right after it), trees one after another. A leaf points to itself on both sides (and
// reads column 0), so walking several rows at once needs no per-row branch.
template <typename T>
struct Node {
  T threshold;      // branch: threshold; leaf: its single-target value
  int32_t feature;  // branch: column; leaf: 0
  int32_t yes;      // index of the true child (leaf: itself)
  int32_t no;       // index of the false child (leaf: itself)
  uint8_t mode;     // Mode (kLeaf for leaves)
  uint8_t missing_true;
};

struct Ensemble {
  std::vector<Node<float>> nodes_f;   // thresholds as float (float / int64 input)
  std::vector<Node<double>> nodes_d;  // thresholds as double (double input)
  std::vector<int32_t> roots;
  std::vector<int32_t> leaf_first;  // per node: first weight of a leaf
  std::vector<int32_t> leaf_count;  // per node: number of weights of a leaf
  std::vector<int32_t> w_id;        // target / class index per weight
  std::vector<double> w_value;      // weight value
  // Per node: how much training data reached it (XGBoost's sum_hessian), for path-dependent
  // TreeSHAP (core/src/explain/). Empty when the model does not say (ONNX has no such attribute).
  std::vector<float> cover;
  // Per node: the loss reduction of its split (XGBoost's loss_changes; 0 at leaves), for
  // feature importance. Empty when unknown.
  std::vector<float> gain;
  int64_t max_feature = -1;         // highest column a branch node reads
  uint8_t uniform_mode = kMixed;
  // Classifier flags, computed over all weights like ORT.
  bool weights_all_positive = true;
  size_t distinct_ids = 0;
  // Per node: its id in the model (ONNX nodes_nodeids, the XGBoost node index), for flock.trace;
  // empty for an ensemble rebuilt by the optimizer.
  std::vector<int64_t> source_ids;
};

// Builds the TreeEnsembleRegressor / TreeEnsembleClassifier kernel for `ctx.node` from an ensemble
// compiled elsewhere (the XGBoost importer) instead of the node's nodes_* / target_* / class_*
// attributes; every other attribute (n_targets, class labels, base_values, post_transform,
// aggregate_function) is read from the node as usual. Only nodes_f, roots, leaf_first,
// leaf_count, w_id and w_value need to be filled: max_feature, uniform_mode and the classifier
// flags are computed here, and nodes_d, when left empty, is derived from nodes_f on the first
// double input. The structure is validated (children after their parent, leaves, weight tables,
// ids against the number of targets or classes); throws flock::Error(InvalidModel) naming what is
// wrong.
// Attribute enums
enum class Transform { None, Logistic, Softmax, SoftmaxZero, Probit };
enum class Aggregate { Sum, Average, Min, Max };

// Compile and validate (ml_tree_compile.cpp): attributes -> Ensemble, every id checked.
Transform parse_transform(const Attrs& a);
Aggregate parse_aggregate(const Attrs& a);
std::vector<double> numeric_attr(const Attrs& a, const std::string& name);
Ensemble compile_ensemble(const Attrs& a, const std::string& prefix, int64_t n_outputs);
void check_ensemble(Ensemble& e, const std::string& where, const std::string& prefix, int64_t n_outputs);

std::unique_ptr<Kernel> make_tree_kernel(const KernelContext& ctx, Ensemble&& ensemble);

// ai.onnx.ml 5 TreeEnsemble (ml_tree_v5.cpp): the node's tensor attributes lowered onto a
// TreeEnsembleRegressor node (BRANCH_MEMBER sets become chains of BRANCH_NEQ nodes), compiled by
// the regressor; the output has the input's element type.
std::unique_ptr<Kernel> make_tree_ensemble5(const KernelContext& ctx);
// The regressor kernel for a lowered TreeEnsemble node: its input must have `type` (that of the
// splits and weights), its output has that type.
std::unique_ptr<Kernel> make_tree_ensemble5_kernel(const KernelContext& lowered, ElemType type);

// What the tree kernels (TreeEnsembleRegressor / TreeEnsembleClassifier) show the optimizer
// (core/src/optimize/): their compiled ensemble, and a kernel that is the same in every attribute
// (targets, labels, base values, transform, aggregation) but walks another ensemble.
class TreeKernel : public Kernel {
 public:
  virtual const Ensemble& ensemble() const = 0;
  // Validates `replacement` as check_ensemble does, but keeps this kernel's classifier flags
  // (weights_all_positive, distinct_ids): they describe the model's weights as ORT counts them,
  // including weights of leaves the replacement no longer holds. Throws flock::Error(InvalidModel).
  virtual std::unique_ptr<Kernel> with_ensemble(Ensemble&& replacement) const = 0;

  // One row's way through every tree, for flock.trace (core/src/trace.cpp). The leaves are the ones
  // the kernel's own walk (the one run() scores with) reaches; the branches from each root to its
  // leaf are walked again with the same nodes and comparison, and a disagreement throws
  // Error(Internal). Thresholds and values are in the type the kernel compares in.
  struct TracedBranch {
    int32_t node = 0;        // index in the ensemble's nodes
    double threshold = 0;
    double value = 0;        // the input value compared
    bool went_true = false;  // took the `yes` child
    bool missing = false;    // the value is missing (NaN): the node's missing-value rule applied
  };
  struct TracedTree {
    std::vector<TracedBranch> branches;
    int32_t leaf = 0;
    double leaf_value = 0;  // the leaf's single-target value, in the compared type
  };
  virtual std::vector<TracedTree> trace_row(const Tensor& input, int64_t row) const = 0;

  // How leaf weights become the kernel's outputs, as attributes say it (for flock.trace).
  struct Aggregation {
    bool classifier = false;
    const char* aggregate = "SUM";
    const char* post_transform = "NONE";
    std::vector<double> base_values;
    int64_t outputs = 0;             // targets or classes
    bool single_target = false;      // regressor with one target: a leaf adds leaf_value
    bool binary_case = false;        // classifier: ORT's binary case (one class scored)
  };
  virtual Aggregation aggregation() const = 0;

  // How a single-target regressor turns its leaves into its one output, when it is a sum:
  // output = float(s + origin) (SUM) or float(s / trees + origin) (AVERAGE), where s adds one leaf
  // value per tree in tree order, in double, starting from 0. nullopt for anything else (several
  // targets, MIN / MAX, PROBIT, classifiers).
  struct SumRule {
    bool average = false;
    double origin = 0;
  };
  virtual std::optional<SumRule> sum_rule() const { return std::nullopt; }

  // How a two-class classifier picks its label, when it is by a margin: margin = s + origin,
  // where s adds per tree the class-0 weight of the leaf reached (0 when it has none) in tree
  // order, in double, from 0; the label is class 1 when margin > threshold, class 0 otherwise.
  // Two forms of ORT's rules qualify (see the classifier's binary_label_rule): the binary case
  // with one class-0 weight per leaf, and two scored classes with two base values where class 1
  // is scored on every path (XGBoost's binary:logistic encodings). nullopt otherwise.
  struct BinaryLabelRule {
    double origin = 0;
    double threshold = 0;
  };
  virtual std::optional<BinaryLabelRule> binary_label_rule() const { return std::nullopt; }

  // The raw scores (before any post_transform) that explanations decompose (core/src/explain/):
  // output k = origins[k] + scale * (sum over trees of the weights with id ids[k] of the leaf
  // reached). For a classifier whose label a margin decides (binary_label_rule) the one output is
  // that margin, named after the positive class. nullopt when the scores are not such sums
  // (MIN / MAX aggregation, ORT's two-base-value binary form without a margin rule).
  struct RawScores {
    double scale = 1;
    std::vector<int32_t> ids;
    std::vector<double> origins;
    std::vector<std::string> names;  // class label, or target index
  };
  virtual std::optional<RawScores> raw_scores() const { return std::nullopt; }
};

// The perfect-tree walk has an AVX-512 form, used when the CPU has AVX-512F (checked at run time).
// Both forms give the same bits; tests switch the vector form off to check the portable one.
// set_simd_walk returns whether the vector form is now in use.
bool simd_walk_available();
bool set_simd_walk(bool on);

}  // namespace flock::tree
