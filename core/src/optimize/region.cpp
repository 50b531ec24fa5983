// Prediction-predicate inversion (flock/optimize.hpp, prediction_region): which values a column can
// hold in a row whose prediction satisfies `prediction OP c`.
//
// Every reachable leaf of every tree is found with the box of inputs that reach it (the column
// Ranges narrowed along its path, value_range.hpp). For a column j, the values its leaves' ranges
// start and end at cut the column into cells that no leaf range crosses. The largest output a row
// with x_j in a cell can have is the kernel's own sum (same operations, same order) of, per tree,
// the largest leaf value whose range meets the cell (trees that do not split on j: their largest
// reachable leaf). Every operation of that sum is monotone in IEEE arithmetic (addition, division
// by the tree count, rounding to float), so it bounds the real output exactly. A cell whose bound
// cannot satisfy the comparison is left out; the cells kept, merged, are the column's region.
//
// That per-tree bound is loose for boosted ensembles: each tree's extreme leaf is taken on its own
// although no input reaches them all. When it does not exclude a cell, a tighter bound
// (EnsembleBound, one level of the merging of Chen et al., "Robustness Verification of Tree-based
// Models", NeurIPS 2019) is tried: trees in groups of consecutive ones, each group's exact extreme
// sum over the combinations of its leaves whose boxes meet the cell's box and each other (a
// branch-and-bound search, capped per group: past the cap the group's halves are bounded, down to
// single trees and their extremes), the groups' extremes added. Each group's extreme bounds its
// trees' part of the sum for every input of the box, so the total bounds the real sum; the kernel's
// sum rounds, so the total is widened by a bound on the rounding of a sum of n terms,
// 4 (n + 8) 2^-53 sum|leaf|, before `finalize`. The tight bound has its own work budget (then the
// per-tree bound stands) and polls interrupts.
#include <fmt/format.h>

#include <algorithm>
#include <functional>
#include <cmath>
#include <limits>
#include <utility>

#include "../kernels/ml_tree.hpp"
#include "../model_internals.hpp"
#include "flock/error.hpp"
#include "flock/interrupt.hpp"
#include "flock/optimize.hpp"
#include "graph_view.hpp"
#include "value_range.hpp"

namespace flock::optimize {
namespace {

using detail::Domain;
using detail::NodeValues;
using detail::Range;
using tree::Ensemble;
using tree::Node;

constexpr double kInf = std::numeric_limits<double>::infinity();

// Leaf-cell checks for the columns (a planner calls this while planning): past the budget the
// remaining columns stay `all`, less precise, never wrong. Node visits for finding leaves have
// their own budget (reachable_leaves), past which there is no answer.
constexpr int64_t kCellWorkBudget = int64_t(1) << 22;  // ~50 ms
// The tight bound's work (leaf-box checks, in narrowed columns checked): per group (the whole
// budget is RegionBudget's).
constexpr int64_t kGroupWorkCap = int64_t(1) << 14;
constexpr size_t kGroupSize = 4;
constexpr int64_t kCheapBound = int64_t(1) << 12;

struct ReachedLeaf {
  double value = 0;
  std::vector<std::pair<int32_t, Range>> narrowed;  // columns the path narrowed, with their Range
};

// The leaves of the tree at `root` some input within `ranges` reaches, with their boxes.
// false when the walk outgrows `visits_left` (shared subtrees are walked once per path) or the
// structure is not what the kernels accept.
template <typename LeafValue>
bool reachable_leaves(const Ensemble& e, int32_t root, const NodeValues& thresholds, LeafValue&& leaf_value,
                      Domain domain, std::vector<Range>& ranges, int64_t& visits_left, std::vector<ReachedLeaf>& out) {
  struct Frame {
    bool restore = false;
    int32_t node = -1;
    int32_t feature = -1;
    Range range{};
  };
  const size_t n = e.nodes_f.size();
  std::vector<int32_t> path;  // features narrowed on the current path, innermost last
  std::vector<Frame> stack = {Frame{false, root, -1, {}}};
  while (!stack.empty()) {
    const Frame f = stack.back();
    stack.pop_back();
    if (f.restore) {
      ranges[static_cast<size_t>(f.feature)] = f.range;
      path.pop_back();
      continue;
    }
    if (--visits_left < 0) return false;
    if (f.node < 0 || static_cast<size_t>(f.node) >= n) return false;
    if (f.feature >= 0) {
      stack.push_back(Frame{true, -1, f.feature, ranges[static_cast<size_t>(f.feature)]});
      ranges[static_cast<size_t>(f.feature)] = f.range;
      path.push_back(f.feature);
    }
    const Node<float>& nd = e.nodes_f[static_cast<size_t>(f.node)];
    if (nd.mode == tree::kLeaf) {
      ReachedLeaf leaf;
      leaf.value = leaf_value(static_cast<size_t>(f.node));
      for (int32_t col : path) {
        const bool seen = std::any_of(leaf.narrowed.begin(), leaf.narrowed.end(),
                                      [&](const auto& p) { return p.first == col; });
        if (!seen) leaf.narrowed.emplace_back(col, ranges[static_cast<size_t>(col)]);
      }
      out.push_back(std::move(leaf));
      continue;
    }
    const double t = thresholds(static_cast<size_t>(f.node));
    const bool known_column = nd.feature >= 0 && static_cast<size_t>(nd.feature) < ranges.size();
    const Range r = known_column ? ranges[static_cast<size_t>(nd.feature)] : detail::full_range();
    const detail::Outcomes o = detail::branch_outcomes(nd.mode, t, nd.missing_true, r);
    const detail::ChildRanges c = detail::branch_children(nd.mode, t, nd.missing_true, r, domain);
    const int32_t feature = known_column ? nd.feature : -1;
    if (o.can_false) stack.push_back(Frame{false, nd.no, feature, c.no});
    if (o.can_true) stack.push_back(Frame{false, nd.yes, feature, c.yes});
  }
  return true;
}

// How leaves become the value compared: each reached leaf's value, added per tree in tree order
// in double from 0, then `finalize` (monotone non-decreasing) of that sum.
struct ScoreRule {
  const Ensemble* ensemble = nullptr;
  std::function<double(size_t node)> leaf_value;
  std::function<double(double sum)> finalize;
};

template <typename F>
double sum_of(size_t n_trees, F&& leaf_value) {
  double s = 0;
  for (size_t t = 0; t < n_trees; ++t) s += leaf_value(t);
  return s;
}

bool may_satisfy(Comparison op, double bound, double c) {
  switch (op) {
    case Comparison::Greater: return bound > c;
    case Comparison::GreaterOrEqual: return bound >= c;
    case Comparison::Less: return bound < c;
    case Comparison::LessOrEqual: return bound <= c;
  }
  return true;
}

bool wants_upper(Comparison op) { return op == Comparison::Greater || op == Comparison::GreaterOrEqual; }

struct Cell {
  double lo, hi;  // closed, values of the domain
};

// Merges sorted closed intervals that overlap or touch (no value of the domain between them).
std::vector<Cell> merge(std::vector<Cell> cells, Domain d) {
  std::sort(cells.begin(), cells.end(), [](const Cell& a, const Cell& b) { return a.lo < b.lo; });
  std::vector<Cell> out;
  for (const Cell& c : cells) {
    if (!out.empty() && (c.lo <= out.back().hi || c.lo == detail::next_up(out.back().hi, d))) {
      out.back().hi = std::max(out.back().hi, c.hi);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// Values of a column in both boxes (nullopt: none, missing or not).
std::optional<Range> intersect(const Range& a, const Range& b) {
  const Range r{std::max(a.lo, b.lo), std::min(a.hi, b.hi), a.missing && b.missing};
  if (!r.has_values() && !r.missing) return std::nullopt;
  return r;
}

// A bound on the ensemble's sum (before `finalize`) over the inputs of a box: see the file comment.
// Values are signed so that the bound is always a largest value: sign * leaf value.
class EnsembleBound {
 public:
  EnsembleBound(const std::vector<std::vector<ReachedLeaf>>& leaves, bool upper, int64_t& work_left)
      : leaves_(leaves), sign_(upper ? 1.0 : -1.0), work_left_(work_left) {}

  // An upper bound on sign * (the kernel's sum) for every input in `box` (a Range per column,
  // within the constraints' ranges): nullopt when the work budget ran out (nothing known), or
  // `unreachable` set when no input of the box reaches a leaf of some tree.
  std::optional<double> bound(const std::vector<Range>& box, bool& unreachable) {
    const int64_t before = work_left_;
    const auto result = bound_within(box, unreachable);
    last_work_ = before - work_left_;
    return result;
  }
  int64_t last_work() const { return last_work_; }  // what the last bound() cost

 private:
  std::optional<double> bound_within(const std::vector<Range>& box, bool& unreachable) {
    unreachable = false;
    const size_t n_trees = leaves_.size();
    candidates_.assign(n_trees, {});
    std::vector<double> tree_max(n_trees, -kInf);
    double magnitude = 0;  // sum over trees of the largest |leaf value| met
    for (size_t t = 0; t < n_trees; ++t) {
      double largest = 0;
      for (size_t k = 0; k < leaves_[t].size(); ++k) {
        const ReachedLeaf& leaf = leaves_[t][k];
        if (!spend(static_cast<int64_t>(leaf.narrowed.size()) + 1)) return std::nullopt;
        bool meets = true;
        for (const auto& [col, r] : leaf.narrowed)
          if (!intersect(r, box[static_cast<size_t>(col)])) {
            meets = false;
            break;
          }
        if (!meets) continue;
        candidates_[t].push_back(Candidate{sign_ * leaf.value, &leaf});
        tree_max[t] = std::max(tree_max[t], sign_ * leaf.value);
        largest = std::max(largest, std::fabs(leaf.value));
      }
      if (candidates_[t].empty()) {
        unreachable = true;
        return std::nullopt;
      }
      std::sort(candidates_[t].begin(), candidates_[t].end(),
                [](const Candidate& a, const Candidate& b) { return a.value > b.value; });
      magnitude += largest;
    }
    double total = 0;
    for (size_t first = 0; first < n_trees; first += kGroupSize) {
      const auto group = group_bound(first, std::min(n_trees, first + kGroupSize), box, tree_max, unreachable);
      if (!group) return std::nullopt;
      total += *group;
    }
    const double slack = 4.0 * (static_cast<double>(n_trees) + 8.0) * std::ldexp(magnitude, -53);
    return std::nextafter(total + slack, kInf);
  }

  struct Candidate {
    double value;  // signed
    const ReachedLeaf* leaf;
  };

  bool spend(int64_t units) {
    const int64_t before = work_left_;
    work_left_ -= units;
    if ((before >> 12) != (work_left_ >> 12)) poll_interrupt();
    return work_left_ >= 0;
  }

  // The largest sum of a leaf per tree of [first, last) over the inputs of `box`, or, when that
  // search outgrows the group's cap, the two halves' bounds added (one tree: its extreme). nullopt
  // when the whole budget ran out, or (with `unreachable` set) when no input reaches every tree.
  std::optional<double> group_bound(size_t first, size_t last, const std::vector<Range>& box,
                                    const std::vector<double>& tree_max, bool& unreachable) {
    if (last - first == 1) return tree_max[first];
    // rest_[i]: the sum of the per-tree extremes of trees i.. of the group (the pruning bound).
    rest_.assign(last - first + 1, 0);
    for (size_t i = last - first; i-- > 0;) rest_[i] = rest_[i + 1] + tree_max[first + i];
    group_first_ = first;
    group_size_ = last - first;
    group_work_ = kGroupWorkCap;
    best_ = -kInf;
    current_ = box;
    undo_.clear();
    if (search(0, 0.0)) {
      if (best_ == -kInf) {  // no input of the box reaches a leaf of every tree of the group
        unreachable = true;
        return std::nullopt;
      }
      return std::min(best_, rest_[0]);
    }
    if (work_left_ < 0) return std::nullopt;
    const size_t middle = first + (last - first) / 2;
    const auto low = group_bound(first, middle, box, tree_max, unreachable);
    if (!low) return std::nullopt;
    const auto high = group_bound(middle, last, box, tree_max, unreachable);
    if (!high) return std::nullopt;
    return *low + *high;
  }

  // The largest sum of leaves of trees i.. of the group whose boxes meet `current_`, given `partial`
  // for the trees before; false when the group's or the whole budget ran out.
  bool search(size_t i, double partial) {
    if (i == group_size_) {
      best_ = std::max(best_, partial);
      return true;
    }
    for (const Candidate& cand : candidates_[group_first_ + i]) {
      if (partial + cand.value + rest_[i + 1] <= best_) break;  // sorted: no later leaf does better
      const int64_t units = static_cast<int64_t>(cand.leaf->narrowed.size()) + 1;
      group_work_ -= units;
      if (group_work_ < 0 || !spend(units)) return false;
      const size_t mark = undo_.size();
      bool meets = true;
      for (const auto& [col, r] : cand.leaf->narrowed) {
        const auto both = intersect(current_[static_cast<size_t>(col)], r);
        if (!both) {
          meets = false;
          break;
        }
        undo_.emplace_back(col, current_[static_cast<size_t>(col)]);
        current_[static_cast<size_t>(col)] = *both;
      }
      const bool finished = !meets || search(i + 1, partial + cand.value);
      while (undo_.size() > mark) {
        current_[static_cast<size_t>(undo_.back().first)] = undo_.back().second;
        undo_.pop_back();
      }
      if (!finished) return false;
    }
    return true;
  }

  const std::vector<std::vector<ReachedLeaf>>& leaves_;
  const double sign_;
  int64_t& work_left_;
  std::vector<std::vector<Candidate>> candidates_;
  std::vector<double> rest_;
  std::vector<Range> current_;
  std::vector<std::pair<int32_t, Range>> undo_;
  size_t group_first_ = 0, group_size_ = 0;
  int64_t group_work_ = 0;
  int64_t last_work_ = 0;
  double best_ = -kInf;
};

std::optional<PredictionRegion> region_of(const detail::VectorInput& in, const ScoreRule& rule,
                                          Comparison op, double c, const Constraints& given,
                                          const RegionBudget& budget) {
  const Ensemble& e = *rule.ensemble;
  const size_t n_trees = e.roots.size();
  if (n_trees == 0) return std::nullopt;

  Constraints constraints = given.columns.empty() ? Constraints(static_cast<size_t>(in.width)) : given;
  if (static_cast<int64_t>(constraints.columns.size()) != in.width) return std::nullopt;
  PredictionRegion region;
  region.columns.resize(static_cast<size_t>(in.width));
  if (constraints.unsatisfiable()) {
    region.none = true;
    return region;
  }
  const Domain domain = in.domain();
  std::vector<Range> ranges;
  for (const auto& col : constraints.columns)
    ranges.push_back(detail::range_for(col, in.type, constraints.exact_input_values));
  auto values = [&](size_t node) { return rule.leaf_value(node); };
  const NodeValues thresholds{e, domain};

  // Leaves per tree, and each tree's extreme reachable leaf value.
  std::vector<std::vector<ReachedLeaf>> leaves(n_trees);
  std::vector<double> tree_best(n_trees);
  int64_t visits_left = 4 * static_cast<int64_t>(e.nodes_f.size()) + 4096;
  const bool upper = wants_upper(op);
  for (size_t t = 0; t < n_trees; ++t) {
    if (!reachable_leaves(e, e.roots[t], thresholds, values, domain, ranges, visits_left, leaves[t])) return std::nullopt;
    if (leaves[t].empty()) {
      region.none = true;  // no allowed input gets through this tree
      return region;
    }
    double best = upper ? -kInf : kInf;
    for (const auto& leaf : leaves[t]) {
      if (!std::isfinite(leaf.value)) return std::nullopt;  // sums could be NaN
      best = upper ? std::max(best, leaf.value) : std::min(best, leaf.value);
    }
    tree_best[t] = best;
  }
  int64_t tight_work_left = std::max<int64_t>(budget.tight_work, 0);
  EnsembleBound ensemble_bound(leaves, upper, tight_work_left);
  // How much the tight bound gained over the per-tree one on the whole box, in output units: when a
  // bound costs more than kCheapBound, a cell whose per-tree bound passes c by much more than that
  // is not worth the tight bound's budget (a choice of where to spend work only: without the tight
  // bound a cell is kept, which is always sound).
  double whole_box_gain = kInf;
  // Whether an input of `box` may satisfy the comparison, given the per-tree bound's sum `loose`:
  // tried with the tight bound while its budget lasts.
  auto box_may_satisfy = [&](double loose, const std::vector<Range>& box) {
    const double loose_bound = rule.finalize(loose);
    if (!may_satisfy(op, loose_bound, c)) return false;
    if (tight_work_left <= 0) return true;
    if (ensemble_bound.last_work() > kCheapBound && !(std::fabs(loose_bound - c) <= 2 * whole_box_gain)) return true;
    bool unreachable = false;
    const auto tight = ensemble_bound.bound(box, unreachable);
    if (unreachable) return false;
    if (!tight) return true;
    const double sum = upper ? std::min(loose, *tight) : std::max(loose, -*tight);
    if (whole_box_gain == kInf) whole_box_gain = std::fabs(loose_bound - rule.finalize(sum));
    return may_satisfy(op, rule.finalize(sum), c);
  };
  if (!box_may_satisfy(sum_of(n_trees, [&](size_t t) { return tree_best[t]; }), ranges)) {
    region.none = true;
    return region;
  }
  if (whole_box_gain == kInf) whole_box_gain = 0;  // the tight bound could not run on the whole box

  int64_t work_left = kCellWorkBudget;
  // Values of the model's input lie in a cell; the comparisons see them converted (int64 -> float),
  // so an int64 region is widened like rounded values.
  const bool widen = !constraints.exact_input_values || in.type == ElemType::Int64;
  // The columns most trees split on first: they get the tight bound's budget first.
  std::vector<size_t> column_order(region.columns.size());
  std::vector<int64_t> trees_splitting(region.columns.size(), 0);
  for (size_t t = 0; t < n_trees; ++t) {
    std::vector<bool> seen(region.columns.size(), false);
    for (const auto& leaf : leaves[t])
      for (const auto& [k, r] : leaf.narrowed) seen[static_cast<size_t>(k)] = true;
    for (size_t j = 0; j < seen.size(); ++j) trees_splitting[j] += seen[j] ? 1 : 0;
  }
  for (size_t j = 0; j < column_order.size(); ++j) column_order[j] = j;
  std::stable_sort(column_order.begin(), column_order.end(),
                   [&](size_t a, size_t b) { return trees_splitting[a] > trees_splitting[b]; });
  std::vector<Range> box = ranges;
  for (const size_t j : column_order) {
    const int32_t col = static_cast<int32_t>(j);
    // Per tree that splits on j: its leaves' ranges of j (or the column's whole range).
    std::vector<size_t> trees_on_j;
    std::vector<double> cuts;
    for (size_t t = 0; t < n_trees; ++t) {
      bool splits = false;
      for (const auto& leaf : leaves[t])
        for (const auto& [k, r] : leaf.narrowed)
          if (k == col) {
            splits = true;
            if (r.has_values()) {
              cuts.push_back(r.lo);
              if (r.hi != kInf) cuts.push_back(detail::next_up(r.hi, domain));
            }
          }
      if (splits) trees_on_j.push_back(t);
    }
    if (trees_on_j.empty()) continue;  // the prediction does not depend on j: nothing to derive
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
    std::vector<Cell> cells;
    if (cuts.empty() || cuts.front() > -kInf) cells.push_back({-kInf, cuts.empty() ? kInf : detail::next_down(cuts.front(), domain)});
    for (size_t k = 0; k < cuts.size(); ++k)
      cells.push_back({cuts[k], k + 1 < cuts.size() ? detail::next_down(cuts[k + 1], domain) : kInf});
    int64_t leaves_on_j = 0;
    for (size_t t : trees_on_j) leaves_on_j += static_cast<int64_t>(leaves[t].size());
    const int64_t work = (static_cast<int64_t>(cells.size()) + 1) * leaves_on_j;
    if (work > work_left) continue;  // too costly: leave the column `all`
    work_left -= work;

    auto j_range = [&](const ReachedLeaf& leaf) {
      for (const auto& [k, r] : leaf.narrowed)
        if (k == col) return r;
      return ranges[j];
    };
    // The per-tree bound's sum for rows whose column j is in `cell` (nullopt: no tree lets such a
    // row through); cell == nullptr: rows where j is missing.
    auto bound_for = [&](const Cell* cell) -> std::optional<double> {
      std::vector<double> best(tree_best);
      for (size_t t : trees_on_j) {
        bool any = false;
        double b = upper ? -kInf : kInf;
        for (const auto& leaf : leaves[t]) {
          const Range r = j_range(leaf);
          const bool meets = cell ? (r.has_values() && r.lo <= cell->hi && r.hi >= cell->lo) : r.missing;
          if (!meets) continue;
          any = true;
          b = upper ? std::max(b, leaf.value) : std::min(b, leaf.value);
        }
        if (!any) return std::nullopt;
        best[t] = b;
      }
      return sum_of(n_trees, [&](size_t t) { return best[t]; });
    };
    // Whether a row with column j in `cell` (nullptr: missing) may satisfy the comparison.
    auto cell_may_satisfy = [&](const Cell* cell) {
      const auto b = bound_for(cell);
      if (!b) return false;
      const auto in_cell = intersect(ranges[j], cell ? Range{cell->lo, cell->hi, false} : Range{kInf, -kInf, true});
      if (!in_cell) return false;  // no allowed value of the column in the cell
      box[j] = *in_cell;
      const bool may = box_may_satisfy(*b, box);
      box[j] = ranges[j];
      return may;
    };
    std::vector<Cell> kept;
    for (const Cell& cell : cells) {
      if (cell.lo > cell.hi) continue;
      if (cell_may_satisfy(&cell)) kept.push_back(cell);
    }
    const bool missing_kept = ranges[j].missing && cell_may_satisfy(nullptr);
    if (widen)
      for (Cell& cell : kept) {
        cell.lo = detail::next_down(cell.lo, domain);
        cell.hi = detail::next_up(cell.hi, domain);
      }
    kept = merge(std::move(kept), domain);
    ColumnRegion& out = region.columns[j];
    if (missing_kept && kept.size() == 1 && kept[0].lo == -kInf && kept[0].hi == kInf) continue;  // all
    out.all = false;
    out.missing_allowed = missing_kept;
    for (const Cell& cell : kept) out.intervals.push_back(Interval::between({cell.lo, true}, {cell.hi, true}));
    if (kept.empty() && !missing_kept) {
      region.none = true;
      return region;
    }
  }
  return region;
}

// The model's single vector input and the tree kernel that reads it and writes output `output`.
struct TreeAtOutput {
  detail::VectorInput in;
  const tree::TreeKernel* kernel = nullptr;
};

std::optional<TreeAtOutput> tree_at_output(const Model& model, size_t output) {
  const ModelInternals::GraphView g = ModelInternals::graph(model);
  const auto in = detail::vector_input(model, g);
  if (!in || output >= g.output_slots.size()) return std::nullopt;
  for (const auto& step : g.steps) {
    const auto* t = dynamic_cast<const tree::TreeKernel*>(step.kernel);
    if (!t || step.inputs.empty() || step.inputs[0] != in->slot) continue;
    if (std::find(step.outputs.begin(), step.outputs.end(), g.output_slots[output]) != step.outputs.end())
      return TreeAtOutput{*in, t};
  }
  return std::nullopt;
}

std::optional<PredictionRegion> value_region(const Model& model, Comparison op, double c, const Constraints& given,
                                            const RegionBudget& budget) {
  if (std::isnan(c) || model.signature().outputs.size() != 1) return std::nullopt;
  const auto found = tree_at_output(model, 0);
  if (!found) return std::nullopt;
  const auto sum = found->kernel->sum_rule();
  if (!sum || !std::isfinite(sum->origin)) return std::nullopt;
  const Ensemble& e = found->kernel->ensemble();
  const NodeValues leaf_values{e, found->in.domain()};  // run_single: the leaf's threshold slot
  const double n_trees = static_cast<double>(e.roots.size());
  const tree::TreeKernel::SumRule rule = *sum;
  ScoreRule score{&e, [leaf_values](size_t node) { return leaf_values(node); },
                  [rule, n_trees](double s) {
                    const double val = rule.average ? s / n_trees + rule.origin : s + rule.origin;
                    return detail::round_to(val, Domain::Float);  // the output tensor is float
                  }};
  return region_of(found->in, score, op, c, given, budget);
}

std::optional<PredictionRegion> binary_label_region(const Model& model, int64_t class_index, const Constraints& given,
                                                   const RegionBudget& budget) {
  const int label_output = ModelInternals::label_output(model);
  if (label_output < 0 || (class_index != 0 && class_index != 1)) return std::nullopt;
  const auto found = tree_at_output(model, static_cast<size_t>(label_output));
  if (!found) return std::nullopt;
  const auto binary = found->kernel->binary_label_rule();
  if (!binary || !std::isfinite(binary->origin)) return std::nullopt;
  const Ensemble& e = found->kernel->ensemble();
  const double origin = binary->origin;
  ScoreRule score{&e,
                  [&e](size_t node) {
                    // The leaf's class-0 weight (binary_label_rule: at most one), else nothing added.
                    const int64_t first = e.leaf_first[node], count = e.leaf_count[node];
                    for (int64_t k = first; k < first + count; ++k)
                      if (k >= 0 && static_cast<size_t>(k) < e.w_id.size() && e.w_id[static_cast<size_t>(k)] == 0)
                        return e.w_value[static_cast<size_t>(k)];
                    return 0.0;
                  },
                  [origin](double s) { return s + origin; }};
  // Class 1 iff margin > threshold.
  return region_of(found->in, score, class_index == 1 ? Comparison::Greater : Comparison::LessOrEqual,
                   binary->threshold, given, budget);
}

std::string number(double v) {
  if (v == kInf) return "inf";
  if (v == -kInf) return "-inf";
  return fmt::format("{}", v);
}

}  // namespace

bool ColumnRegion::contains(double v) const {
  if (all) return true;
  if (std::isnan(v)) return missing_allowed;
  return std::any_of(intervals.begin(), intervals.end(), [&](const Interval& i) { return i.contains(v); });
}

std::string ColumnRegion::to_string(const std::string& name) const {
  if (all) return "";
  std::vector<std::string> parts;
  for (const Interval& i : intervals) {
    const auto& lo = i.lower();
    const auto& hi = i.upper();
    const bool has_lo = lo && lo->value != -kInf, has_hi = hi && hi->value != kInf;
    if (has_lo && has_hi && lo->value == hi->value) parts.push_back(fmt::format("{} = {}", name, number(lo->value)));
    else if (has_lo && has_hi)
      parts.push_back(fmt::format("{} >= {} and {} <= {}", name, number(lo->value), name, number(hi->value)));
    else if (has_lo) parts.push_back(fmt::format("{} >= {}", name, number(lo->value)));
    else if (has_hi) parts.push_back(fmt::format("{} <= {}", name, number(hi->value)));
    else parts.push_back(fmt::format("{} is not missing", name));
  }
  if (missing_allowed) parts.push_back(fmt::format("{} is missing", name));
  if (parts.empty()) return "false";
  return fmt::format("({})", fmt::join(parts, " or "));
}

int64_t PredictionRegion::columns_narrowed() const {
  return static_cast<int64_t>(std::count_if(columns.begin(), columns.end(), [](const ColumnRegion& c) { return !c.all; }));
}

std::string PredictionRegion::to_string(const std::vector<std::string>& names) const {
  if (none) return "false";
  std::vector<std::string> parts;
  for (size_t k = 0; k < columns.size(); ++k) {
    if (columns[k].all) continue;
    parts.push_back(columns[k].to_string(k < names.size() && !names[k].empty() ? names[k] : fmt::format("column {}", k)));
  }
  return parts.empty() ? "true" : fmt::format("{}", fmt::join(parts, " AND "));
}

std::optional<PredictionRegion> prediction_region(const Model& model, Comparison op, double c,
                                                  const Constraints& constraints, const RegionBudget& budget) {
  try {
    return value_region(model, op, c, constraints, budget);
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const Error& e) {
    if (e.code() == ErrorCode::Cancelled) throw;
    return std::nullopt;
  } catch (...) {
    return std::nullopt;
  }
}

std::optional<PredictionRegion> label_region(const Model& model, int64_t class_index, const Constraints& constraints,
                                             const RegionBudget& budget) {
  try {
    return binary_label_region(model, class_index, constraints, budget);
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const Error& e) {
    if (e.code() == ErrorCode::Cancelled) throw;
    return std::nullopt;
  } catch (...) {
    return std::nullopt;
  }
}

}  // namespace flock::optimize
