// Internal to flock_core: path-dependent TreeSHAP over a compiled tree ensemble (tree_shap.cpp).
#pragma once

#include <cstdint>
#include <vector>

#include "../kernels/ml_tree.hpp"
#include "flock/explain.hpp"

namespace flock::explain {

// One distinct feature on the current path: the share of cover that follows the path at its
// splits (zero fraction), whether the row follows it (one fraction), and the permutation weight of
// subsets of its size (pweight, not tied to the feature).
struct PathElement {
  int32_t feature;
  double zero_fraction;
  double one_fraction;
  double pweight;
};

// An ensemble prepared for TreeSHAP: covers, expected values, depths, leaf values per output.
class TreeShap {
 public:
  // `scores` says which weight ids feed which output. `cover`: per node, else empty and
  // `background` (rows x cols, NaN = missing) routes rows to count them. Throws flock::Error.
  TreeShap(const tree::Ensemble& e, const tree::TreeKernel::RawScores& scores, bool double_input,
           const std::vector<double>* background, int64_t background_rows, int64_t cols);

  int64_t outputs() const { return outputs_; }
  const std::vector<double>& cover() const { return cover_; }

  // x: rows x cols (NaN = missing). phi: rows x outputs x (cols + 1), overwritten.
  void contributions(const double* x, int64_t rows, int64_t cols, double* phi,
                     TreeShapForm form = TreeShapForm::Auto) const;
  // phi as above; inter: rows x outputs x (cols + 1) x (cols + 1), overwritten.
  void interactions(const double* x, int64_t rows, int64_t cols, const double* phi, double* inter) const;

 private:
  bool goes_yes(int32_t node, double x) const;
  double fraction(int32_t parent, int32_t child) const;
  void recurse(const double* x, double* phi, int64_t stride, int32_t node, uint32_t depth,
               PathElement* parent_path, double parent_zero, double parent_one, int32_t parent_feature,
               int condition, int32_t condition_feature, double condition_fraction) const;
  void tree_row(size_t tree, const double* x, double* phi, int64_t stride, int condition,
                int32_t condition_feature, std::vector<PathElement>& path) const;
  void leaf_paths(int32_t node, int32_t depth, std::vector<int32_t>& features, std::vector<double>& zeros);
  bool use_leaf_tables(int64_t rows) const;
  void contributions_by_leaf_tables(const double* x, int64_t rows, int64_t cols, double* phi) const;

  const tree::Ensemble& e_;
  std::vector<double> thresholds_;  // per node, as the kernel compares them for this input type
  std::vector<double> cover_;
  std::vector<int32_t> out_of_weight_;               // per weight: the output it feeds, or -1
  std::vector<double> leaf_value_;                   // per weight: its value times the score's scale
  std::vector<double> mean_;                         // per node x output: expected value below it
  std::vector<double> origin_;                       // per output
  std::vector<int32_t> tree_depth_;                  // per tree
  std::vector<std::vector<int32_t>> tree_features_;  // per tree: distinct split columns
  int64_t outputs_ = 0;

  // The leaf-table form (contributions_by_leaf_tables): per leaf, the distinct features on its
  // path (in order of first split) and their zero fractions (the share of cover that follows the
  // path at all their splits); per branch node, the position of its feature on its path.
  struct LeafPath {
    int32_t node;
    int32_t first;  // into leaf_features_ / leaf_zeros_
    int32_t count;  // distinct features on the path (<= kMaxTableFeatures)
  };
  static constexpr int kMaxTableFeatures = 16;
  std::vector<int32_t> position_;  // per branch node: its feature's position; per leaf: its index in leaves_
  std::vector<LeafPath> leaves_;
  std::vector<int32_t> tree_first_leaf_;  // per tree, into leaves_ (plus one past the end)
  std::vector<int32_t> leaf_features_;
  std::vector<double> leaf_zeros_;
  bool tables_possible_ = true;
  double table_cost_ = 0;      // work to build every tree's tables once
  double recursive_cost_ = 0;  // work of the recursive form per row
};

}  // namespace flock::explain
