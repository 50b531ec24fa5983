// Path-dependent TreeSHAP (Lundberg, Erion et al., "Consistent individualized feature attribution
// for tree ensembles", algorithm 2), the formulation XGBoost's pred_contribs uses, in double: one
// recursive walk per row and tree that follows every path, carrying for each distinct feature on
// the path the share of cover that goes its way (zero fraction) and whether the row goes its way
// (one fraction), and the permutation weights of the subsets; at a leaf each feature on the path
// gets its Shapley share of the leaf value. Interaction values condition the walk on one feature
// being fixed on or off (XGBoost's pred_interactions).
#include "tree_shap.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "flock/error.hpp"
#include "flock/explain.hpp"
#include "flock/interrupt.hpp"

namespace flock::explain {

using tree::kLeaf;

TreeShap::TreeShap(const tree::Ensemble& e, const tree::TreeKernel::RawScores& scores, bool double_input,
                   const std::vector<double>* background, int64_t background_rows, int64_t cols)
    : e_(e) {
  const size_t n = e.nodes_f.size();
  outputs_ = static_cast<int64_t>(scores.ids.size());
  origin_ = scores.origins;
  thresholds_.resize(n);
  const bool use_double = double_input && e.nodes_d.size() == n;
  for (size_t i = 0; i < n; ++i)
    thresholds_[i] = use_double ? e.nodes_d[i].threshold : static_cast<double>(e.nodes_f[i].threshold);

  out_of_weight_.assign(e.w_id.size(), -1);
  leaf_value_.resize(e.w_id.size());
  for (size_t k = 0; k < e.w_id.size(); ++k) {
    leaf_value_[k] = e.w_value[k] * scores.scale;
    for (size_t o = 0; o < scores.ids.size(); ++o)
      if (scores.ids[o] == e.w_id[k]) out_of_weight_[k] = static_cast<int32_t>(o);
  }

  // Depths and parents: a node shared by two parents (an ONNX graph may share them) would mix the
  // covers of two paths.
  std::vector<int32_t> depth(n, -1);
  std::vector<uint8_t> parents(n, 0);
  tree_depth_.assign(e.roots.size(), 0);
  tree_features_.resize(e.roots.size());
  for (size_t t = 0; t < e.roots.size(); ++t) {
    const size_t begin = static_cast<size_t>(e.roots[t]);
    const size_t end = t + 1 < e.roots.size() ? static_cast<size_t>(e.roots[t + 1]) : n;
    depth[begin] = 0;
    std::vector<int32_t>& features = tree_features_[t];
    for (size_t i = begin; i < end; ++i) {
      if (depth[i] < 0 || e.nodes_f[i].mode == kLeaf) continue;
      if (depth[i] + 1 > kMaxShapDepth)
        fail(ErrorCode::LimitExceeded,
             fmt::format("tree {} is deeper than {} levels, TreeSHAP's limit", t, kMaxShapDepth));
      for (int32_t child : {e.nodes_f[i].yes, e.nodes_f[i].no}) {
        const size_t c = static_cast<size_t>(child);
        if (++parents[c] > 1)
          fail(
              ErrorCode::UnsupportedOperator,
              fmt::format("tree {} shares node {} between two parents; TreeSHAP needs a tree", t, c - begin));
        depth[c] = depth[i] + 1;
      }
      tree_depth_[t] = std::max(tree_depth_[t], depth[i] + 1);
      if (std::find(features.begin(), features.end(), e.nodes_f[i].feature) == features.end())
        features.push_back(e.nodes_f[i].feature);
    }
  }

  if (!e.cover.empty()) {
    cover_.assign(e.cover.begin(), e.cover.end());
  } else if (background && background_rows > 0) {
    cover_.assign(n, 0.0);
    for (int64_t r = 0; r < background_rows; ++r) {
      if (r % 256 == 0) poll_interrupt();
      const double* x = background->data() + r * cols;
      for (int32_t root : e.roots) {
        int32_t node = root;
        for (;;) {
          cover_[static_cast<size_t>(node)] += 1;
          const tree::Node<float>& nd = e.nodes_f[static_cast<size_t>(node)];
          if (nd.mode == kLeaf) break;
          node = goes_yes(node, x[nd.feature]) ? nd.yes : nd.no;
        }
      }
    }
  } else {
    fail(ErrorCode::InvalidInput, "the model's trees carry no node covers, which TreeSHAP weighs paths by",
         "Pass a background data set (background => 'name@version'): Flock counts how many of its rows reach "
         "each "
         "node.");
  }

  // Expected value below each node, per output: children follow their parent, so one backward pass.
  const size_t O = static_cast<size_t>(outputs_);
  mean_.assign(n * O, 0.0);
  for (size_t i = n; i-- > 0;) {
    const tree::Node<float>& nd = e.nodes_f[i];
    double* m = mean_.data() + i * O;
    if (nd.mode == kLeaf) {
      for (int32_t k = e.leaf_first[i], end = k + e.leaf_count[i]; k < end; ++k) {
        const int32_t o = out_of_weight_[static_cast<size_t>(k)];
        if (o >= 0) m[o] += leaf_value_[static_cast<size_t>(k)];
      }
      continue;
    }
    const double fy = fraction(static_cast<int32_t>(i), nd.yes),
                 fn = fraction(static_cast<int32_t>(i), nd.no);
    const double* my = mean_.data() + static_cast<size_t>(nd.yes) * O;
    const double* mn = mean_.data() + static_cast<size_t>(nd.no) * O;
    for (size_t o = 0; o < O; ++o) m[o] = fy * my[o] + fn * mn[o];
  }

  position_.assign(n, -1);
  std::vector<int32_t> features;
  std::vector<double> zeros;
  for (int32_t root : e.roots) {
    tree_first_leaf_.push_back(static_cast<int32_t>(leaves_.size()));
    leaf_paths(root, 0, features, zeros);
  }
  tree_first_leaf_.push_back(static_cast<int32_t>(leaves_.size()));
}

void TreeShap::leaf_paths(int32_t node, int32_t depth, std::vector<int32_t>& features,
                          std::vector<double>& zeros) {
  const tree::Node<float>& nd = e_.nodes_f[static_cast<size_t>(node)];
  if (nd.mode == kLeaf) {
    const int32_t d = static_cast<int32_t>(features.size());
    if (d > kMaxTableFeatures) tables_possible_ = false;
    if (!tables_possible_) return;
    position_[static_cast<size_t>(node)] = static_cast<int32_t>(leaves_.size());
    leaves_.push_back({node, static_cast<int32_t>(leaf_features_.size()), d});
    leaf_features_.insert(leaf_features_.end(), features.begin(), features.end());
    leaf_zeros_.insert(leaf_zeros_.end(), zeros.begin(), zeros.end());
    table_cost_ += static_cast<double>(int64_t(1) << d) * (d + 1);
    recursive_cost_ +=
        3.0 * (d + 1) * (d + 1) - 2.0 * (d + 2);  // its unwound sums, less the table's per-row work
    return;
  }
  int32_t p = 0;
  while (p < static_cast<int32_t>(features.size()) && features[static_cast<size_t>(p)] != nd.feature) ++p;
  const bool added = p == static_cast<int32_t>(features.size());
  if (added) {
    features.push_back(nd.feature);
    zeros.push_back(1.0);
  }
  position_[static_cast<size_t>(node)] = p;
  const double saved = zeros[static_cast<size_t>(p)];
  for (int32_t child : {nd.yes, nd.no}) {
    zeros[static_cast<size_t>(p)] = saved * fraction(node, child);
    leaf_paths(child, depth + 1, features, zeros);
  }
  zeros[static_cast<size_t>(p)] = saved;
  if (added) {
    features.pop_back();
    zeros.pop_back();
  }
}

bool TreeShap::use_leaf_tables(int64_t rows) const {
  return tables_possible_ && static_cast<double>(rows) * recursive_cost_ > table_cost_;
}

// As the kernels walk (ml_tree_walk.hpp): go = compare(x, t) | (missing_true & isnan(x)); a NaN
// compares false except with !=.
bool TreeShap::goes_yes(int32_t node, double x) const {
  const tree::Node<float>& nd = e_.nodes_f[static_cast<size_t>(node)];
  const double t = thresholds_[static_cast<size_t>(node)];
  bool go = false;
  switch (nd.mode) {
    case tree::kLeq:
      go = x <= t;
      break;
    case tree::kLt:
      go = x < t;
      break;
    case tree::kGte:
      go = x >= t;
      break;
    case tree::kGt:
      go = x > t;
      break;
    case tree::kEq:
      go = x == t;
      break;
    case tree::kNeq:
      go = x != t;
      break;
    default:
      break;
  }
  return go || (nd.missing_true && std::isnan(x));
}

// The share of `parent`'s cover that reaches `child`; half each when no cover reached the parent
// (a node no background row reaches), so that expected values stay defined.
double TreeShap::fraction(int32_t parent, int32_t child) const {
  const double w = cover_[static_cast<size_t>(parent)];
  return w > 0 ? cover_[static_cast<size_t>(child)] / w : 0.5;
}

namespace {

void extend_path(PathElement* path, uint32_t depth, double zero_fraction, double one_fraction,
                 int32_t feature) {
  path[depth] = {feature, zero_fraction, one_fraction, depth == 0 ? 1.0 : 0.0};
  const double d1 = static_cast<double>(depth + 1);
  for (int i = static_cast<int>(depth) - 1; i >= 0; --i) {
    path[i + 1].pweight += one_fraction * path[i].pweight * (i + 1) / d1;
    path[i].pweight = zero_fraction * path[i].pweight * (depth - i) / d1;
  }
}

void unwind_path(PathElement* path, uint32_t depth, uint32_t index) {
  const double one = path[index].one_fraction, zero = path[index].zero_fraction;
  const double d1 = static_cast<double>(depth + 1);
  double next_one_portion = path[depth].pweight;
  for (int i = static_cast<int>(depth) - 1; i >= 0; --i) {
    if (one != 0) {
      const double tmp = path[i].pweight;
      path[i].pweight = next_one_portion * d1 / ((i + 1) * one);
      next_one_portion = tmp - path[i].pweight * zero * (depth - i) / d1;
    } else {
      path[i].pweight = path[i].pweight * d1 / (zero * (depth - i));
    }
  }
  for (uint32_t i = index; i < depth; ++i) {
    path[i].feature = path[i + 1].feature;
    path[i].zero_fraction = path[i + 1].zero_fraction;
    path[i].one_fraction = path[i + 1].one_fraction;
  }
}

// The total permutation weight the path would have without element `index`.
double unwound_path_sum(const PathElement* path, uint32_t depth, uint32_t index) {
  const double one = path[index].one_fraction, zero = path[index].zero_fraction;
  const double d1 = static_cast<double>(depth + 1);
  double next_one_portion = path[depth].pweight;
  double total = 0;
  for (int i = static_cast<int>(depth) - 1; i >= 0; --i) {
    if (one != 0) {
      const double tmp = next_one_portion * d1 / ((i + 1) * one);
      total += tmp;
      next_one_portion = path[i].pweight - tmp * zero * ((depth - i) / d1);
    } else if (zero != 0) {
      total += (path[i].pweight / zero) / ((depth - i) / d1);
    }
  }
  return total;
}

}  // namespace

void TreeShap::recurse(const double* x, double* phi, int64_t stride, int32_t node, uint32_t depth,
                       PathElement* parent_path, double parent_zero, double parent_one,
                       int32_t parent_feature, int condition, int32_t condition_feature,
                       double condition_fraction) const {
  if (condition_fraction == 0) return;
  // A branch no cover reaches (zero fraction 0) that the row does not take (one fraction 0) adds
  // nothing to any subset's value; extending the path by it would zero every permutation weight,
  // which a later split on the same feature could not unwind (0 / 0).
  if (parent_zero == 0 && parent_one == 0 && (condition == 0 || condition_feature != parent_feature)) return;
  PathElement* path = parent_path + depth + 1;
  std::copy(parent_path, parent_path + depth + 1, path);
  if (condition == 0 || condition_feature != parent_feature)
    extend_path(path, depth, parent_zero, parent_one, parent_feature);

  const tree::Node<float>& nd = e_.nodes_f[static_cast<size_t>(node)];
  if (nd.mode == kLeaf) {
    const int32_t first = e_.leaf_first[static_cast<size_t>(node)],
                  count = e_.leaf_count[static_cast<size_t>(node)];
    for (uint32_t i = 1; i <= depth; ++i) {
      const PathElement& el = path[i];
      const double share =
          unwound_path_sum(path, depth, i) * (el.one_fraction - el.zero_fraction) * condition_fraction;
      for (int32_t k = first; k < first + count; ++k) {
        const int32_t o = out_of_weight_[static_cast<size_t>(k)];
        if (o >= 0) phi[o * stride + el.feature] += share * leaf_value_[static_cast<size_t>(k)];
      }
    }
    return;
  }

  const int32_t split = nd.feature;
  const int32_t hot = goes_yes(node, x[split]) ? nd.yes : nd.no;
  const int32_t cold = hot == nd.yes ? nd.no : nd.yes;
  const double hot_zero = fraction(node, hot), cold_zero = fraction(node, cold);
  double incoming_zero = 1, incoming_one = 1;

  // A feature split on higher up: undo that split, to redo it here with both fractions combined.
  uint32_t index = 0;
  for (; index <= depth; ++index)
    if (path[index].feature == split) break;
  if (index != depth + 1) {
    incoming_zero = path[index].zero_fraction;
    incoming_one = path[index].one_fraction;
    unwind_path(path, depth, index);
    depth -= 1;
  }

  double hot_condition = condition_fraction, cold_condition = condition_fraction;
  if (condition > 0 && split == condition_feature) {
    cold_condition = 0;
    depth -= 1;
  } else if (condition < 0 && split == condition_feature) {
    hot_condition *= hot_zero;
    cold_condition *= cold_zero;
    depth -= 1;
  }
  recurse(x, phi, stride, hot, depth + 1, path, hot_zero * incoming_zero, incoming_one, split, condition,
          condition_feature, hot_condition);
  recurse(x, phi, stride, cold, depth + 1, path, cold_zero * incoming_zero, 0, split, condition,
          condition_feature, cold_condition);
}

void TreeShap::tree_row(size_t t, const double* x, double* phi, int64_t stride, int condition,
                        int32_t condition_feature, std::vector<PathElement>& path) const {
  const size_t need = static_cast<size_t>(tree_depth_[t] + 2) * static_cast<size_t>(tree_depth_[t] + 3) / 2;
  if (path.size() < need) path.resize(need);
  recurse(x, phi, stride, e_.roots[t], 0, path.data(), 1, 1, -1, condition, condition_feature, 1);
}

void TreeShap::contributions(const double* x, int64_t rows, int64_t cols, double* phi,
                             TreeShapForm form) const {
  if (form == TreeShapForm::LeafTables ? tables_possible_
                                       : form == TreeShapForm::Auto && use_leaf_tables(rows)) {
    contributions_by_leaf_tables(x, rows, cols, phi);
    return;
  }
  const int64_t stride = cols + 1;
  const size_t O = static_cast<size_t>(outputs_);
  std::vector<PathElement> path;
  const long long chunk = interrupt_chunk_rows(static_cast<long long>(e_.nodes_f.size()) * 8);
  std::fill(phi, phi + rows * outputs_ * stride, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    if (r % chunk == 0) poll_interrupt();
    double* p = phi + r * outputs_ * stride;
    const double* xr = x + r * cols;
    for (size_t o = 0; o < O; ++o) p[static_cast<int64_t>(o) * stride + cols] = origin_[o];
    for (size_t t = 0; t < e_.roots.size(); ++t) {
      const double* m = mean_.data() + static_cast<size_t>(e_.roots[t]) * O;
      for (size_t o = 0; o < O; ++o) p[static_cast<int64_t>(o) * stride + cols] += m[o];
      tree_row(t, xr, p, stride, 0, 0, path);
    }
  }
}

// For a leaf with value v whose path has distinct features F (d of them) with zero fractions z_k,
// and a row that follows the path's splits on the features A (o_k = 1 for k in A, else 0), the
// path-dependent value of a subset S is v * prod_{k in S} o_k * prod_{k in F \ S} z_k, whose Shapley
// values are, with Z = prod_{k in F \ A} z_k and R(C) = sum_{S subset of C} w(|S|) prod_{k in C \ S} z_k,
// w(s) = s! (d - 1 - s)! / d!:
//   phi_j = v (1 - z_j) R(A \ {j}) Z   for j in A,   phi_j = -v R(A) Z   for j not in A.
// R depends on the leaf only: a table of 2^d values built once per tree for the batch (from the
// elementary symmetric polynomials of z over each subset), so that a row costs O(d) per leaf.
void TreeShap::contributions_by_leaf_tables(const double* x, int64_t rows, int64_t cols, double* phi) const {
  const int64_t stride = cols + 1;
  const size_t O = static_cast<size_t>(outputs_);
  std::fill(phi, phi + rows * outputs_ * stride, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    double* p = phi + r * outputs_ * stride;
    for (size_t o = 0; o < O; ++o) {
      double base = origin_[o];
      for (int32_t root : e_.roots) base += mean_[static_cast<size_t>(root) * O + o];
      p[static_cast<int64_t>(o) * stride + cols] = base;
    }
  }
  std::vector<double> table, symmetric, weight;
  std::vector<size_t> table_first;
  std::vector<uint32_t> masks;
  const long long chunk = interrupt_chunk_rows(static_cast<long long>(e_.nodes_f.size()) * 8);
  for (size_t t = 0; t < e_.roots.size(); ++t) {
    poll_interrupt();
    const int32_t first_leaf = tree_first_leaf_[t], end_leaf = tree_first_leaf_[t + 1];
    table_first.clear();
    size_t size = 0;
    for (int32_t l = first_leaf; l < end_leaf; ++l) {
      table_first.push_back(size);
      size += size_t(1) << leaves_[static_cast<size_t>(l)].count;
    }
    table.assign(size, 0.0);
    for (int32_t l = first_leaf; l < end_leaf; ++l) {
      const LeafPath& leaf = leaves_[static_cast<size_t>(l)];
      const int d = leaf.count;
      if (d == 0) continue;
      const double* z = leaf_zeros_.data() + leaf.first;
      weight.assign(static_cast<size_t>(d), 0.0);
      weight[0] = 1.0 / d;
      for (int k = 0; k + 1 < d; ++k)
        weight[static_cast<size_t>(k + 1)] = weight[static_cast<size_t>(k)] * (k + 1) / (d - 1 - k);
      const size_t masks = size_t(1) << d, width = static_cast<size_t>(d) + 1;
      symmetric.assign(masks * width, 0.0);
      symmetric[0] = 1.0;
      double* out = table.data() + table_first[static_cast<size_t>(l - first_leaf)];
      out[0] = weight[0];
      for (size_t mask = 1; mask < masks; ++mask) {
        const int k = __builtin_ctzll(mask);
        const double* prev = symmetric.data() + (mask & (mask - 1)) * width;
        double* cur = symmetric.data() + mask * width;
        cur[0] = prev[0];
        for (size_t m = 1; m < width; ++m) cur[m] = prev[m] + z[k] * prev[m - 1];
        const int size_c = __builtin_popcountll(mask);
        double sum = 0;
        for (int s = 0; s <= std::min(size_c, d - 1); ++s)
          sum += weight[static_cast<size_t>(s)] * cur[size_c - s];
        out[mask] = sum;
      }
    }
    const int32_t tree_begin = e_.roots[t];
    const int32_t tree_end =
        t + 1 < e_.roots.size() ? e_.roots[t + 1] : static_cast<int32_t>(e_.nodes_f.size());
    masks.assign(static_cast<size_t>(tree_end - tree_begin), 0u);
    for (int64_t r = 0; r < rows; ++r) {
      if (r % chunk == chunk - 1) poll_interrupt();
      const double* xr = x + r * cols;
      double* p = phi + r * outputs_ * stride;
      // Nodes in pre-order (children after their parent): one pass gives every node the bits of
      // the path features whose splits the row followed on the way to it.
      masks[0] = ~0u;
      for (int32_t node = tree_begin; node < tree_end; ++node) {
        const int32_t pos = position_[static_cast<size_t>(node)];
        if (pos < 0) continue;  // not reachable from the root
        const uint32_t mask = masks[static_cast<size_t>(node - tree_begin)];
        const tree::Node<float>& nd = e_.nodes_f[static_cast<size_t>(node)];
        if (nd.mode != kLeaf) {
          const bool yes = goes_yes(node, xr[nd.feature]);
          const uint32_t cold = mask & ~(1u << pos);
          masks[static_cast<size_t>(nd.yes - tree_begin)] = yes ? mask : cold;
          masks[static_cast<size_t>(nd.no - tree_begin)] = yes ? cold : mask;
          continue;
        }
        const int32_t l = pos;
        const LeafPath& leaf = leaves_[static_cast<size_t>(l)];
        const int d = leaf.count;
        if (d == 0) continue;
        const uint32_t a = mask & ((1u << d) - 1);
        const double* z = leaf_zeros_.data() + leaf.first;
        const int32_t* f = leaf_features_.data() + leaf.first;
        const double* table_l = table.data() + table_first[static_cast<size_t>(l - first_leaf)];
        double zero_product = 1;
        for (int k = 0; k < d; ++k)
          if (!(a >> k & 1)) zero_product *= z[k];
        const double off = -table_l[a] * zero_product;
        const int32_t w_first = e_.leaf_first[static_cast<size_t>(node)],
                      w_end = w_first + e_.leaf_count[static_cast<size_t>(node)];
        if (w_end - w_first == 1) {  // one weight: the common case, without the inner loop
          const int32_t o = out_of_weight_[static_cast<size_t>(w_first)];
          if (o < 0) continue;
          const double v = leaf_value_[static_cast<size_t>(w_first)];
          double* po = p + o * stride;
          for (int j = 0; j < d; ++j) {
            const double on = (1 - z[j]) * table_l[a ^ (1u << j)] * zero_product;
            po[f[j]] += ((a >> j & 1) ? on : off) * v;
          }
          continue;
        }
        for (int j = 0; j < d; ++j) {
          const double on = (1 - z[j]) * table_l[a ^ (1u << j)] * zero_product;
          const double share = (a >> j & 1) ? on : off;
          for (int32_t k = w_first; k < w_end; ++k) {
            const int32_t o = out_of_weight_[static_cast<size_t>(k)];
            if (o >= 0) p[o * stride + f[j]] += share * leaf_value_[static_cast<size_t>(k)];
          }
        }
      }
    }
  }
}

void TreeShap::interactions(const double* x, int64_t rows, int64_t cols, const double* phi,
                            double* inter) const {
  const int64_t stride = cols + 1;
  const int64_t matrix = stride * stride;
  const size_t O = static_cast<size_t>(outputs_);
  std::vector<PathElement> path;
  std::vector<double> on(O * static_cast<size_t>(stride)), off(on.size());
  std::fill(inter, inter + rows * outputs_ * matrix, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    poll_interrupt();
    double* m = inter + r * outputs_ * matrix;
    const double* xr = x + r * cols;
    for (size_t t = 0; t < e_.roots.size(); ++t) {
      for (int32_t i : tree_features_[t]) {
        std::fill(on.begin(), on.end(), 0.0);
        std::fill(off.begin(), off.end(), 0.0);
        tree_row(t, xr, on.data(), stride, 1, i, path);
        tree_row(t, xr, off.data(), stride, -1, i, path);
        for (size_t o = 0; o < O; ++o) {
          double* row = m + static_cast<int64_t>(o) * matrix + i * stride;
          const double* a = on.data() + o * static_cast<size_t>(stride);
          const double* b = off.data() + o * static_cast<size_t>(stride);
          for (int64_t k = 0; k < cols; ++k)
            if (k != i) row[k] += (a[k] - b[k]) / 2;
        }
      }
    }
    // The diagonal: each row of the matrix sums to the feature's contribution.
    const double* p = phi + r * outputs_ * stride;
    for (size_t o = 0; o < O; ++o) {
      double* mo = m + static_cast<int64_t>(o) * matrix;
      const double* po = p + static_cast<int64_t>(o) * stride;
      for (int64_t i = 0; i < cols; ++i) {
        double off_diagonal = 0;
        for (int64_t k = 0; k < cols; ++k)
          if (k != i) off_diagonal += mo[i * stride + k];
        mo[i * stride + i] = po[i] - off_diagonal;
      }
      mo[cols * stride + cols] = po[cols];
    }
  }
}

}  // namespace flock::explain
