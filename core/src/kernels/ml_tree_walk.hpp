// The tree walk, flat and perfect-tree layouts, and its AVX-512 form: templates over the node type,
// the input type and what a kernel does at each leaf. Internal to ml_tree_kernels.cpp, its only
// includer (hence the unnamed namespace).
#pragma once

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

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace flock {
namespace {

using namespace tree;  // Mode, Node, Ensemble

// The nodes with double thresholds, for double input. An ensemble built without them (the
// XGBoost importer: float thresholds) gets them from the float nodes on first use.
class DoubleNodes {
 public:
  const std::vector<Node<double>>& get(const Ensemble& e) const {
    if (!e.nodes_d.empty()) return e.nodes_d;
    std::call_once(once_, [&] {
      built_.resize(e.nodes_f.size());
      for (size_t i = 0; i < e.nodes_f.size(); ++i) {
        const Node<float>& f = e.nodes_f[i];
        built_[i] = Node<double>{static_cast<double>(f.threshold), f.feature, f.yes, f.no, f.mode, f.missing_true};
      }
    });
    return built_;
  }
  size_t bytes() const { return built_.capacity() * sizeof(Node<double>); }

 private:
  mutable std::once_flag once_;
  mutable std::vector<Node<double>> built_;
};

// ----------------------------------------------------------------------------------------------
// Tree walking

template <typename T>
inline bool is_nan(T x) {
  if constexpr (std::is_floating_point_v<T>) return std::isnan(x);
  else return false;
}

template <uint8_t M, typename T>
inline bool compare(uint8_t mode, T x, T t) {
  if constexpr (M == kLeq) return x <= t;
  else if constexpr (M == kLt) return x < t;
  else if constexpr (M == kGte) return x >= t;
  else if constexpr (M == kGt) return x > t;
  else if constexpr (M == kEq) return x == t;
  else if constexpr (M == kNeq) return x != t;
  else {
    switch (mode) {
      case kLeq: return x <= t;
      case kLt: return x < t;
      case kGte: return x >= t;
      case kGt: return x > t;
      case kEq: return x == t;
      default: return x != t;
    }
  }
}

// Walks `n` rows down one tree together (independent walks interleave, hiding load latency);
// leaves loop on themselves, so the walk stops when no row moved.
template <uint8_t M, int N, typename T, typename In>
inline void walk_group(const Node<T>* nodes, int32_t root, const In* const* row, int n, int32_t* idx) {
  const int count = N > 0 ? N : n;
  for (int j = 0; j < count; ++j) idx[j] = root;
  bool moved = true;
  while (moved) {
    moved = false;
    for (int j = 0; j < count; ++j) {
      const Node<T>& nd = nodes[idx[j]];
      const T x = static_cast<T>(row[j][nd.feature]);
      const bool go = compare<M>(nd.mode, x, nd.threshold) | (nd.missing_true & is_nan(x));
      const int32_t next = go ? nd.yes : nd.no;
      moved |= next != idx[j];
      idx[j] = next;
    }
  }
}

// Rows or trees walked together.
constexpr int kGroup = 8;

// Walks one row down `n` trees together (for small batches, where rows cannot interleave).
template <uint8_t M, int N, typename T, typename In>
inline void walk_trees(const Node<T>* nodes, const int32_t* roots, const In* row, int n, int32_t* idx) {
  const int count = N > 0 ? N : n;
  for (int j = 0; j < count; ++j) idx[j] = roots[j];
  bool moved = true;
  while (moved) {
    moved = false;
    for (int j = 0; j < count; ++j) {
      const Node<T>& nd = nodes[idx[j]];
      const T x = static_cast<T>(row[nd.feature]);
      const bool go = compare<M>(nd.mode, x, nd.threshold) | (nd.missing_true & is_nan(x));
      const int32_t next = go ? nd.yes : nd.no;
      moved |= next != idx[j];
      idx[j] = next;
    }
  }
}

// Visits every (row, leaf) pair of a block: trees outer, rows inner. on_leaf(row in block, node).
template <uint8_t M, typename T, typename In, typename F>
void visit_block(const Ensemble& e, const std::vector<Node<T>>& nodes, const In* x, int64_t stride, int64_t r0,
                 int64_t r1, F&& on_leaf) {
  const Node<T>* base = nodes.data();
  const In* row[kGroup];
  int32_t idx[kGroup];
  if (r1 - r0 < kGroup && e.max_feature >= 0) {
    // Few rows: interleave trees instead. Leaf roots are safe here since the row has >= 1 column.
    const int32_t* roots = e.roots.data();
    const int64_t n_trees = static_cast<int64_t>(e.roots.size());
    for (int64_t t = 0; t < n_trees; t += kGroup) {
      const int n = static_cast<int>(std::min<int64_t>(kGroup, n_trees - t));
      for (int64_t r = r0; r < r1; ++r) {
        if (n == kGroup) walk_trees<M, kGroup>(base, roots + t, x + r * stride, n, idx);
        else walk_trees<M, 0>(base, roots + t, x + r * stride, n, idx);
        for (int j = 0; j < n; ++j) on_leaf(r - r0, idx[j]);
      }
    }
    return;
  }
  for (int32_t root : e.roots) {
    if (base[root].mode == kLeaf) {  // a single-leaf tree reads no column
      for (int64_t r = r0; r < r1; ++r) on_leaf(r - r0, root);
      continue;
    }
    for (int64_t g = r0; g < r1; g += kGroup) {
      const int n = static_cast<int>(std::min<int64_t>(kGroup, r1 - g));
      for (int j = 0; j < n; ++j) row[j] = x + (g + j) * stride;
      if (n == kGroup) walk_group<M, kGroup>(base, root, row, n, idx);
      else walk_group<M, 0>(base, root, row, n, idx);
      for (int j = 0; j < n; ++j) on_leaf(g + j - r0, idx[j]);
    }
  }
}

template <typename T, typename In, typename F>
void visit_dispatch(const Ensemble& e, const std::vector<Node<T>>& nodes, const In* x, int64_t stride, int64_t r0,
                    int64_t r1, F&& on_leaf) {
  switch (e.uniform_mode) {
    case kLeq: visit_block<kLeq>(e, nodes, x, stride, r0, r1, on_leaf); break;
    case kLt: visit_block<kLt>(e, nodes, x, stride, r0, r1, on_leaf); break;
    case kGte: visit_block<kGte>(e, nodes, x, stride, r0, r1, on_leaf); break;
    case kGt: visit_block<kGt>(e, nodes, x, stride, r0, r1, on_leaf); break;
    case kEq: visit_block<kEq>(e, nodes, x, stride, r0, r1, on_leaf); break;
    case kNeq: visit_block<kNeq>(e, nodes, x, stride, r0, r1, on_leaf); break;
    default: visit_block<kMixed>(e, nodes, x, stride, r0, r1, on_leaf); break;
  }
}

// Accumulation state for one block of rows (trees outer, rows of the block inner).
struct Block {
  std::vector<double> s;   // rows x width
  std::vector<uint8_t> h;  // has_score
};

constexpr int64_t kBlockRows = 128;

// ----------------------------------------------------------------------------------------------
// Perfect-tree layout (float input)
//
// Each tree is padded to a complete binary tree of its depth D and stored in heap order: node i
// has its true child at 2i+1 and its false child at 2i+2, and leaf slot k (0 <= k < 2^D) sits at
// heap index 2^D - 1 + k. A row goes down with D steps of
//     i = 2i + 1 + go_false(x, threshold)
// with no data-dependent branch. A leaf above depth D continues through padding nodes (threshold
// NaN: every comparison is false, so they always take the true side) to the leftmost slot under
// it. The slots a row cannot reach hold the same leaf, so every slot names a real leaf.
//
// Missing values: a comparison with NaN is false, so a node whose missing values go to the true
// side (missing_true = 1) reads the column as is. A node whose missing values go to the false side
// reads a second copy of the column where NaN is replaced by +inf (LT, LEQ) or -inf (GTE, GT),
// which compares "false side" against every threshold the layout accepts (LEQ with threshold
// +inf and GTE with -inf are left to the generic walk). Rows are copied column-major into a
// buffer of kBlockRows rows per block, one column per (feature, NaN handling) the trees read.

constexpr int kMaxPerfectDepth = 12;
constexpr int kRowGroup = 16;   // rows walked together down one tree
constexpr int kTreeGroup = 8;   // trees walked together for one row (small batches)
constexpr int64_t kSmallRows = 8;

struct PNode {
  float thr;    // threshold (NaN for padding)
  int32_t off;  // buffer column * kBlockRows
};

// A branch of a tree of depth <= kEvalDepth in the QuickScorer form of the AVX-512 walk
// (eval_tree_avx512): when its test sends a row to the false side, the row's word of slot bits is
// ANDed with `keep`, which clears the slots under the true child.
struct QNode {
  float thr;
  int32_t off;    // buffer column * kBlockRows
  uint32_t keep;
};

constexpr int32_t kEvalDepth = 6;  // 64 slots: two 32-bit words per row

struct PTree {
  int64_t node_begin = 0;  // first of 2^depth - 1 nodes in Fast::nodes
  int64_t slot_begin = 0;  // first of 2^depth slots
  int32_t depth = 0;
  int32_t target = -1;  // >= 0: every leaf has exactly one weight, for this target / class
  // depth <= kEvalDepth: its branches (padding left out) in Fast::qnodes from qnode_begin, those
  // on slots 0-31 first (qnodes_low of them), then those on slots 32-63 (qnodes_high).
  int64_t qnode_begin = 0;
  int32_t qnodes_low = 0, qnodes_high = 0;
  bool float_values = false;  // every slot value is a float (Fast::slot_value_f holds them exactly)
};

struct Fast {
  bool enabled = false;
  uint8_t mode = kLt;
  std::vector<PTree> trees;        // in the order of Ensemble::roots
  std::vector<PNode> nodes;
  std::vector<QNode> qnodes;       // trees of depth <= kEvalDepth, for the AVX-512 walk
  std::vector<int32_t> slot_node;  // per slot: the leaf (Ensemble node index)
  std::vector<double> slot_value;  // per slot of a tree with target >= 0: what it adds
  std::vector<float> slot_value_f;  // the same as floats, for trees with float_values
  std::vector<int32_t> col_feature;  // per buffer column: the input column it copies
  std::vector<uint8_t> col_fill;     // per buffer column: 1 if NaN becomes fill_value
  float fill_value = 0;
  std::vector<int32_t> targets_always;  // targets every row gets a weight for (simple trees)
  int32_t one_target = -1;  // >= 0: every tree has one weight per leaf, all for this target
};

template <typename V>
size_t vector_bytes(const V& v) {
  return v.capacity() * sizeof(typename V::value_type);
}

// What an ensemble's kernel keeps in memory: the nodes and weights in both layouts.
size_t ensemble_bytes(const Ensemble& e, const Fast& f, const DoubleNodes& d) {
  return vector_bytes(e.nodes_f) + vector_bytes(e.nodes_d) + vector_bytes(e.roots) + vector_bytes(e.leaf_first) +
         vector_bytes(e.leaf_count) + vector_bytes(e.w_id) + vector_bytes(e.w_value) + vector_bytes(e.source_ids) +
         vector_bytes(e.cover) + vector_bytes(e.gain) + vector_bytes(f.trees) +
         vector_bytes(f.nodes) + vector_bytes(f.qnodes) + vector_bytes(f.slot_node) + vector_bytes(f.slot_value) +
         vector_bytes(f.slot_value_f) +
         vector_bytes(f.col_feature) + vector_bytes(f.col_fill) + vector_bytes(f.targets_always) + d.bytes();
}

template <uint8_t M>
inline uint32_t go_false(float x, float t) {
  if constexpr (M == kLt) return x >= t;
  else if constexpr (M == kLeq) return x > t;
  else if constexpr (M == kGte) return x < t;
  else return x <= t;  // kGt
}

// `leaf_value(node)`: what a leaf adds on the sum path, `leaf_target(node)`: its single target or
// -1 when the leaf does not have exactly one weight.
template <typename V, typename G>
Fast build_fast(const Ensemble& e, V&& leaf_value, G&& leaf_target) {
  Fast f;
  const uint8_t m = e.uniform_mode;
  if (m != kLt && m != kLeq && m != kGte && m != kGt) return f;
  const auto& nd = e.nodes_f;
  const size_t n_trees = e.roots.size();
  f.mode = m;
  f.fill_value = (m == kLt || m == kLeq) ? std::numeric_limits<float>::infinity()
                                          : -std::numeric_limits<float>::infinity();
  // Depths (a node may be shared by several parents: count paths, stopping past the limit).
  f.trees.resize(n_trees);
  int64_t total_slots = 0;
  {
    std::vector<std::pair<int32_t, int32_t>> stack;
    for (size_t t = 0; t < n_trees; ++t) {
      int32_t depth = 0;
      int64_t visits = 0;
      stack.assign(1, {e.roots[t], 0});
      while (!stack.empty()) {
        auto [v, d] = stack.back();
        stack.pop_back();
        if (++visits > (int64_t(2) << kMaxPerfectDepth)) return Fast{};
        const auto& q = nd[static_cast<size_t>(v)];
        if (q.mode == kLeaf) {
          depth = std::max(depth, d);
          continue;
        }
        if (d + 1 > kMaxPerfectDepth || std::isnan(q.threshold)) return Fast{};
        if (!q.missing_true && ((m == kLeq && q.threshold == std::numeric_limits<float>::infinity()) ||
                                (m == kGte && q.threshold == -std::numeric_limits<float>::infinity())))
          return Fast{};
        stack.emplace_back(q.no, d + 1);
        stack.emplace_back(q.yes, d + 1);
      }
      f.trees[t].depth = depth;
      total_slots += int64_t(1) << depth;
    }
  }
  // Padding is bounded: at most 4 slots per node of the ensemble, plus some slack for small ones.
  if (total_slots > 4 * static_cast<int64_t>(nd.size()) + 65536) return Fast{};

  // Buffer columns: one per (feature, missing_true) pair the branches use.
  std::vector<int32_t> column_of(static_cast<size_t>(std::max<int64_t>(e.max_feature + 1, 0)) * 2, -1);
  auto column = [&](int32_t feature, bool fill) -> int32_t {
    int32_t& c = column_of[static_cast<size_t>(feature) * 2 + (fill ? 1 : 0)];
    if (c < 0) {
      c = static_cast<int32_t>(f.col_feature.size());
      f.col_feature.push_back(feature);
      f.col_fill.push_back(fill ? 1 : 0);
    }
    return c;
  };

  f.nodes.reserve(static_cast<size_t>(total_slots));
  f.slot_node.resize(static_cast<size_t>(total_slots));
  f.slot_value.assign(static_cast<size_t>(total_slots), 0.0);
  std::vector<uint8_t> has_target;
  struct Item {
    int32_t node;
    int64_t heap;
    int32_t level;
  };
  std::vector<Item> stack;
  int64_t node_begin = 0, slot_begin = 0;
  for (size_t t = 0; t < n_trees; ++t) {
    PTree& pt = f.trees[t];
    const int32_t D = pt.depth;
    const int64_t n_int = (int64_t(1) << D) - 1;
    pt.node_begin = node_begin;
    pt.slot_begin = slot_begin;
    f.nodes.resize(static_cast<size_t>(node_begin + n_int),
                   PNode{std::numeric_limits<float>::quiet_NaN(), 0});
    int32_t target = -2;  // -2: no leaf seen yet
    stack.assign(1, {e.roots[t], 0, 0});
    while (!stack.empty()) {
      const Item it = stack.back();
      stack.pop_back();
      const auto& q = nd[static_cast<size_t>(it.node)];
      if (q.mode != kLeaf) {
        const int32_t col = column(q.feature, !q.missing_true);
        f.nodes[static_cast<size_t>(node_begin + it.heap)] =
            PNode{q.threshold, static_cast<int32_t>(col * kBlockRows)};
        stack.push_back({q.no, 2 * it.heap + 2, it.level + 1});
        stack.push_back({q.yes, 2 * it.heap + 1, it.level + 1});
        continue;
      }
      // Every slot under this heap position (only the leftmost is reachable) names the leaf.
      const int32_t below = D - it.level;
      const int64_t first = (it.heap << below) + ((int64_t(1) << below) - 1) - n_int;
      const int32_t tg = leaf_target(it.node);
      target = (target == -2 || target == tg) ? tg : -1;
      const double value = leaf_value(it.node);
      for (int64_t k = 0; k < (int64_t(1) << below); ++k) {
        f.slot_node[static_cast<size_t>(slot_begin + first + k)] = it.node;
        f.slot_value[static_cast<size_t>(slot_begin + first + k)] = value;
      }
    }
    pt.target = target < 0 ? -1 : target;
    if (pt.target >= 0) {
      if (has_target.size() <= static_cast<size_t>(pt.target)) has_target.resize(static_cast<size_t>(pt.target) + 1);
      has_target[static_cast<size_t>(pt.target)] = 1;
    }
    node_begin += n_int;
    slot_begin += int64_t(1) << D;
  }
  if (static_cast<int64_t>(f.col_feature.size()) * kBlockRows >= std::numeric_limits<int32_t>::max()) return Fast{};
  // Slot values as floats where that is exact (XGBoost's leaves are floats): the AVX-512 sum picks
  // 16 of them per permute instead of 8 doubles.
  f.slot_value_f.resize(f.slot_value.size());
  for (size_t k = 0; k < f.slot_value.size(); ++k) f.slot_value_f[k] = static_cast<float>(f.slot_value[k]);
  for (PTree& pt : f.trees) {
    pt.float_values = true;
    for (int64_t k = pt.slot_begin; k < pt.slot_begin + (int64_t(1) << pt.depth); ++k)
      pt.float_values = pt.float_values && static_cast<double>(f.slot_value_f[static_cast<size_t>(k)]) ==
                                               f.slot_value[static_cast<size_t>(k)];
  }
  // The QuickScorer lists: node (d, p) (level d, position p) covers slots [p * span, (p + 1) * span)
  // with span = 2^(depth - d); its true child the first half, which lies within one 32-slot word.
  for (PTree& pt : f.trees) {
    if (pt.depth > kEvalDepth) continue;
    pt.qnode_begin = static_cast<int64_t>(f.qnodes.size());
    for (int32_t word = 0; word < 2; ++word) {
      int32_t count = 0;
      for (int32_t d = 0; d < pt.depth; ++d) {
        const int32_t span = int32_t(1) << (pt.depth - d);
        for (int32_t p = 0; p < (int32_t(1) << d); ++p) {
          const int32_t first = p * span, half = span / 2;
          const PNode& q = f.nodes[static_cast<size_t>(pt.node_begin + (int32_t(1) << d) - 1 + p)];
          if ((first >> 5) != word || std::isnan(q.thr)) continue;  // NaN: padding, never the false side
          const uint32_t ones = half == 32 ? ~uint32_t(0) : (uint32_t(1) << half) - 1;
          f.qnodes.push_back(QNode{q.thr, q.off, ~(ones << (first & 31))});
          ++count;
        }
      }
      (word == 0 ? pt.qnodes_low : pt.qnodes_high) = count;
    }
  }
  for (size_t k = 0; k < has_target.size(); ++k)
    if (has_target[k]) f.targets_always.push_back(static_cast<int32_t>(k));
  if (!f.trees.empty() && std::all_of(f.trees.begin(), f.trees.end(), [&](const PTree& pt) {
        return pt.target >= 0 && pt.target == f.trees[0].target;
      }))
    f.one_target = f.trees[0].target;
  f.enabled = true;
  return f;
}

// Copies rows [r0, r0 + n) into the column-major buffer, resolving NaN per column.
template <typename In>
void fill_block(const Fast& f, const In* x, int64_t stride, int64_t r0, int64_t n, float* buf) {
  const size_t n_cols = f.col_feature.size();
  for (size_t c = 0; c < n_cols; ++c) {
    float* dst = buf + c * kBlockRows;
    const In* src = x + r0 * stride + f.col_feature[c];
    if (f.col_fill[c]) {
      const float fill = f.fill_value;
      for (int64_t r = 0; r < n; ++r) {
        const float v = static_cast<float>(src[r * stride]);
        dst[r] = std::isnan(v) ? fill : v;
      }
    } else {
      for (int64_t r = 0; r < n; ++r) dst[r] = static_cast<float>(src[r * stride]);
    }
  }
}

// Keeps v in a general register: GCC 12's SLP vectorizer otherwise packs the 16 row indices of
// walk_rows into vectors and moves each lane out again for every node load (~10% slower).
inline void keep_scalar(uint32_t& v) {
#if defined(__GNUC__)
  asm("" : "+r"(v));
#endif
}

// Walks kRowGroup rows of the buffer (starting at `xr`) down one tree; slot[j] = leaf slot of row j.
// With `from` > 0 the rows start at level `from`, at the nodes idx[j] (the vector walk's top).
template <uint8_t M>
inline void walk_rows(const PNode* nd, int32_t depth, const float* xr, uint32_t* slot, int32_t from = 0,
                      const uint32_t* start = nullptr) {
  uint32_t idx[kRowGroup];
  for (int j = 0; j < kRowGroup; ++j) idx[j] = from > 0 ? start[j] : 0;
  for (int32_t d = from; d < depth; ++d) {
    for (int j = 0; j < kRowGroup; ++j) {
      const PNode q = nd[idx[j]];
      idx[j] = 2 * idx[j] + 1 + go_false<M>((xr + j)[q.off], q.thr);  // xr + j: a constant displacement
      keep_scalar(idx[j]);
    }
  }
  const uint32_t n_int = (uint32_t(1) << depth) - 1;
  for (int j = 0; j < kRowGroup; ++j) slot[j] = idx[j] - n_int;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// AVX-512 form of the walk, picked at run time (the build does not assume AVX-512). Gathers are
// slow on the CPUs measured (about 20 cycles for 16 lanes), so instead of walking, trees of depth
// <= kEvalDepth, and the first kTopLevels levels of deeper ones, are *evaluated*: every node is
// compared against its column for 16 rows at a time with contiguous loads (the buffer is
// column-major), and clears, for the rows it sends to its false side, the bits of the slots under
// its true child (QuickScorer); the lowest bit left is the row's slot (or node at kTopLevels,
// where walk_rows continues). The comparisons are the ordered, quiet forms of go_false's (NaN
// compares false), so every row reaches exactly the scalar walk's leaf. Every node costs one
// compare and one masked AND per 16 rows. On the Xeon measured (vector compares on one port),
// evaluating all 63 nodes of a depth-6 tree and evaluating 31 then walking the last level scalar
// cost about the same; the whole evaluation, padding left out, was a little ahead and leaves no
// scalar step between the compares and the vector sum of the leaf values.
#define FLOCK_TREE_AVX512 1

constexpr int32_t kTopLevels = 5;  // 31 nodes: one bit each in a 32-bit lane

template <uint8_t M>
constexpr int avx512_go_false_predicate() {
  if constexpr (M == kLt) return _CMP_GE_OQ;
  else if constexpr (M == kLeq) return _CMP_GT_OQ;
  else if constexpr (M == kGte) return _CMP_LT_OQ;
  else return _CMP_LE_OQ;  // kGt
}

// The top of one tree for G groups of 16 rows starting at row r0 of the block buffer: after
// levels = min(depth, kTopLevels) levels, top[r0 + j] is row j's node. QuickScorer style
// (Lucchese et al. 2015): each row keeps one bit per node of level `levels` (32 at most), all set
// at first; a node whose test sends the row to its false side clears the bits under its true child,
// and the row's node at that level is the lowest bit left.
template <uint8_t M, int G>
__attribute__((target("avx512f"))) void walk_top_avx512(const PNode* nd, int32_t depth, const float* buf, int32_t r0,
                                                         uint32_t* top) {
  constexpr int kPred = avx512_go_false_predicate<M>();
  const int32_t levels = std::min(depth, kTopLevels);
  __m512i live[G];
  for (int g = 0; g < G; ++g) live[g] = _mm512_set1_epi32(-1);
  int32_t k = 0;
  for (int32_t d = 0; d < levels; ++d) {
    const int32_t span = int32_t(1) << (levels - d);  // bits under a node of level d
    for (int32_t p = 0; p < (int32_t(1) << d); ++p, ++k) {
      const uint32_t true_side = ((uint32_t(1) << (span / 2)) - 1) << (p * span);
      const __m512i keep = _mm512_set1_epi32(static_cast<int32_t>(~true_side));
      const __m512 t = _mm512_set1_ps(nd[k].thr);
      const float* col = buf + nd[k].off + r0;
      for (int g = 0; g < G; ++g) {
        const __mmask16 go_false = _mm512_cmp_ps_mask(_mm512_loadu_ps(col + 16 * g), t, kPred);
        live[g] = _mm512_mask_and_epi32(live[g], go_false, live[g], keep);
      }
    }
  }
  // The lowest bit 2^i, as a float, has exponent field 127 + i: node 2^levels - 1 + i.
  const __m512i origin = _mm512_set1_epi32(((int32_t(1) << levels) - 1) - 127);
  for (int g = 0; g < G; ++g) {
    const __m512i lowest = _mm512_and_si512(live[g], _mm512_sub_epi32(_mm512_setzero_si512(), live[g]));
    // (maskz_: the plain intrinsics trip GCC 12's -Wuninitialized)
    const __m512 as_float = _mm512_maskz_cvtepu32_ps(0xFFFF, lowest);
    const __m512i exponent = _mm512_maskz_srli_epi32(0xFFFF, _mm512_castps_si512(as_float), 23);
    _mm512_storeu_si512(top + r0 + 16 * g, _mm512_add_epi32(exponent, origin));
  }
}

// Trees at most kEvalDepth deep are evaluated whole, QuickScorer style over all of their (up to
// 64) slots: every row starts with all slot bits set, in two 32-bit words (slots 0-31, 32-63); a
// branch whose test sends the row to its false side clears the slots under its true child, and the
// row's slot is the lowest bit left (Lucchese et al., 2015). No scalar walk at all: one compare and
// one masked AND per branch for 16 rows, padding left out. The comparisons are go_false's ordered,
// quiet forms (NaN compares false: the true side, as in the scalar walk).

// One word: out[g] = what is left of the 32 slot bits of `n` branches for group g of 16 rows.
// (A word at a time keeps the G vectors in registers.)
template <uint8_t M, int G>
__attribute__((target("avx512f"))) void eval_word_avx512(const QNode* q, int32_t n, const float* buf, int32_t r0,
                                                          __m512i* out) {
  constexpr int kPred = avx512_go_false_predicate<M>();
  __m512i w[G];
  for (int g = 0; g < G; ++g) w[g] = _mm512_set1_epi32(-1);
  for (int32_t k = 0; k < n; ++k) {
    const __m512 t = _mm512_set1_ps(q[k].thr);
    const __m512i keep = _mm512_set1_epi32(static_cast<int32_t>(q[k].keep));
    const float* col = buf + q[k].off + r0;
    for (int g = 0; g < G; ++g) {
      const __mmask16 go_false = _mm512_cmp_ps_mask(_mm512_loadu_ps(col + 16 * g), t, kPred);
      w[g] = _mm512_mask_and_epi32(w[g], go_false, w[g], keep);
    }
  }
  for (int g = 0; g < G; ++g) out[g] = w[g];
}

// slot[r0 + j] = the slot of row j of G groups of 16 rows from row r0 of the block buffer.
template <uint8_t M, int G>
__attribute__((target("avx512f"))) void eval_tree_avx512(const QNode* q, const PTree& pt, const float* buf, int32_t r0,
                                                          uint32_t* slot) {
  __m512i lo[G], hi[G];
  eval_word_avx512<M, G>(q, pt.qnodes_low, buf, r0, lo);
  eval_word_avx512<M, G>(q + pt.qnodes_low, pt.qnodes_high, buf, r0, hi);
  // The lowest bit 2^i, as a float, has exponent field 127 + i. The last slot of a tree is never
  // cleared, so a row whose low word is empty has a bit in the high word.
  const __m512i bias = _mm512_set1_epi32(127), bias_hi = _mm512_set1_epi32(127 - 32);
  for (int g = 0; g < G; ++g) {
    const __m512i lowest_lo = _mm512_and_si512(lo[g], _mm512_sub_epi32(_mm512_setzero_si512(), lo[g]));
    const __m512i lowest_hi = _mm512_and_si512(hi[g], _mm512_sub_epi32(_mm512_setzero_si512(), hi[g]));
    // (maskz_: the plain intrinsics trip GCC 12's -Wuninitialized)
    const __m512i e_lo =
        _mm512_maskz_srli_epi32(0xFFFF, _mm512_castps_si512(_mm512_maskz_cvtepu32_ps(0xFFFF, lowest_lo)), 23);
    const __m512i e_hi =
        _mm512_maskz_srli_epi32(0xFFFF, _mm512_castps_si512(_mm512_maskz_cvtepu32_ps(0xFFFF, lowest_hi)), 23);
    const __mmask16 in_hi = _mm512_testn_epi32_mask(lo[g], lo[g]);
    const __m512i s = _mm512_mask_blend_epi32(in_hi, _mm512_sub_epi32(e_lo, bias), _mm512_sub_epi32(e_hi, bias_hi));
    _mm512_storeu_si512(slot + r0 + 16 * g, s);
  }
}

// Rows r..r+7 of s (width W) get v's lanes added to their target c, in double.
template <int W>
__attribute__((target("avx512f"))) inline void add_rows8_avx512(double* s, int64_t r, int32_t c, __m512d v) {
  if constexpr (W == 1) {
    double* sr = s + r + c;
    _mm512_storeu_pd(sr, _mm512_add_pd(_mm512_loadu_pd(sr), v));
  } else {
    // Rows r..r+7 hold 16 doubles from s + 2r; row j's target c is lane 2j + c. (maskz_: the plain
    // intrinsics trip GCC 12's -Wmaybe-uninitialized)
    const __mmask8 lanes = c == 0 ? 0x55 : 0xAA;
    const __m512d lo = _mm512_maskz_permutexvar_pd(0xFF, _mm512_set_epi64(3, 3, 2, 2, 1, 1, 0, 0), v);
    const __m512d hi = _mm512_maskz_permutexvar_pd(0xFF, _mm512_set_epi64(7, 7, 6, 6, 5, 5, 4, 4), v);
    double* sr = s + 2 * r;
    const __m512d s0 = _mm512_loadu_pd(sr), s1 = _mm512_loadu_pd(sr + 8);
    _mm512_storeu_pd(sr, _mm512_mask_add_pd(s0, lanes, s0, lo));
    _mm512_storeu_pd(sr + 8, _mm512_mask_add_pd(s1, lanes, s1, hi));
  }
}

// add_slot_values_avx512 (below) for a tree whose values are all floats: 64 of them in 4 registers,
// 16 rows per step, each value widened to double (exactly) before it is added.
template <int W>
__attribute__((target("avx512f"))) void add_slot_values_f32_avx512(const float* value, int32_t depth,
                                                                    const uint32_t* slot, int64_t n, double* s,
                                                                    int32_t c) {
  const int32_t n_values = int32_t(1) << depth;
  __m512 table[4];
  for (int i = 0; i < 4; ++i) {
    const int32_t valid = std::clamp(n_values - 16 * i, 0, 16);
    table[i] = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << valid) - 1), value + 16 * i);
  }
  const __m512i bit5 = _mm512_set1_epi32(32);
  int64_t r = 0;
  for (; r + 16 <= n; r += 16) {
    const __m512i idx = _mm512_loadu_si512(slot + r);
    const __m512 v = _mm512_mask_blend_ps(_mm512_test_epi32_mask(idx, bit5),
                                          _mm512_permutex2var_ps(table[0], idx, table[1]),
                                          _mm512_permutex2var_ps(table[2], idx, table[3]));
    const __m256 v_lo = _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xFF, _mm512_castps_pd(v), 0));
    const __m256 v_hi = _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xFF, _mm512_castps_pd(v), 1));
    add_rows8_avx512<W>(s, r, c, _mm512_maskz_cvtps_pd(0xFF, v_lo));
    add_rows8_avx512<W>(s, r + 8, c, _mm512_maskz_cvtps_pd(0xFF, v_hi));
  }
  for (; r < n; ++r) s[r * W + c] += static_cast<double>(value[slot[r]]);
}

// s[r * W + c] += value[slot[r]] for r < n, for a tree of depth <= kEvalDepth (at most 64 values,
// held in 8 registers) and width W of 1 or 2: the value of each row's slot is picked by permutes,
// not loaded row by row, and added in double as the scalar loop adds it, in the same order.
template <int W>
__attribute__((target("avx512f"))) void add_slot_values_avx512(const double* value, int32_t depth,
                                                                const uint32_t* slot, int64_t n, double* s,
                                                                int32_t c) {
  const int32_t n_values = int32_t(1) << depth;
  __m512d table[8];
  for (int i = 0; i < 8; ++i) {
    const int32_t valid = std::clamp(n_values - 8 * i, 0, 8);
    table[i] = _mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << valid) - 1), value + 8 * i);
  }
  const __m512i bit4 = _mm512_set1_epi64(16), bit5 = _mm512_set1_epi64(32);
  int64_t r = 0;
  for (; r + 8 <= n; r += 8) {
    // (maskz_: the plain intrinsics trip GCC 12's -Wmaybe-uninitialized)
    const __m512i idx =
        _mm512_maskz_cvtepu32_epi64(0xFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(slot + r)));
    const __m512d v01 = _mm512_permutex2var_pd(table[0], idx, table[1]);
    const __m512d v23 = _mm512_permutex2var_pd(table[2], idx, table[3]);
    const __m512d v45 = _mm512_permutex2var_pd(table[4], idx, table[5]);
    const __m512d v67 = _mm512_permutex2var_pd(table[6], idx, table[7]);
    const __mmask8 high16 = _mm512_test_epi64_mask(idx, bit4);
    const __mmask8 high32 = _mm512_test_epi64_mask(idx, bit5);
    add_rows8_avx512<W>(s, r, c,
                        _mm512_mask_blend_pd(high32, _mm512_mask_blend_pd(high16, v01, v23),
                                             _mm512_mask_blend_pd(high16, v45, v67)));
  }
  for (; r < n; ++r) s[r * W + c] += value[slot[r]];
}

bool cpu_has_avx512f() {
  static const bool has = [] {
    __builtin_cpu_init();  // simd_walk_on is initialised by a constructor, maybe before libgcc's
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return has;
}
#else
bool cpu_has_avx512f() { return false; }
#endif

std::atomic<bool> simd_walk_on{cpu_has_avx512f()};

// s[r * width + c] += value[slot[r]] for r < n: tree t's leaf values added to a block's rows.
inline void add_slot_values(const Fast& f, int64_t t, const uint32_t* slot, int64_t n, double* s, int64_t width,
                            int32_t c) {
  const PTree& pt = f.trees[static_cast<size_t>(t)];
  const double* value = f.slot_value.data() + pt.slot_begin;
#ifdef FLOCK_TREE_AVX512
  if (pt.depth <= kEvalDepth && (width == 1 || width == 2) && simd_walk_on.load(std::memory_order_relaxed)) {
    if (pt.float_values) {
      const float* value_f = f.slot_value_f.data() + pt.slot_begin;
      if (width == 1) add_slot_values_f32_avx512<1>(value_f, pt.depth, slot, n, s, c);
      else add_slot_values_f32_avx512<2>(value_f, pt.depth, slot, n, s, c);
    } else {
      if (width == 1) add_slot_values_avx512<1>(value, pt.depth, slot, n, s, c);
      else add_slot_values_avx512<2>(value, pt.depth, slot, n, s, c);
    }
    return;
  }
#endif
  double* sc = s + c;
  for (int64_t r = 0; r < n; ++r) sc[r * width] += value[slot[r]];
}

// Visits every (row, tree, slot) of rows [r0, r1) (one block), trees in order for every row:
// on(row in block, tree, global slot) for small blocks, and for the others, tree by tree,
// on_tree(tree, slot_begin, slot, n) with row r's global slot slot_begin + slot[r] (a caller's
// tight loop over the rows beats a call per row).
template <uint8_t M, typename F, typename G>
void visit_fast_mode(const Fast& f, const float* buf, int64_t n, F&& on, G&& on_tree) {
  const PNode* nodes = f.nodes.data();
  const PTree* trees = f.trees.data();
  const int64_t n_trees = static_cast<int64_t>(f.trees.size());
  if (n < kSmallRows) {
    // Few rows: walk kTreeGroup trees at once for each row.
    uint32_t idx[kTreeGroup];
    const PNode* base[kTreeGroup];
    for (int64_t r = 0; r < n; ++r) {
      const float* xr = buf + r;
      for (int64_t t0 = 0; t0 < n_trees; t0 += kTreeGroup) {
        const int g = static_cast<int>(std::min<int64_t>(kTreeGroup, n_trees - t0));
        const PTree* pt = trees + t0;
        int32_t dmin = pt[0].depth, dmax = pt[0].depth;
        for (int j = 0; j < g; ++j) {
          idx[j] = 0;
          base[j] = nodes + pt[j].node_begin;
          dmin = std::min(dmin, pt[j].depth);
          dmax = std::max(dmax, pt[j].depth);
        }
        if (g == kTreeGroup && dmin == dmax) {  // the common case: a full group of equally deep trees
          for (int32_t d = 0; d < dmax; ++d) {
            for (int j = 0; j < kTreeGroup; ++j) {
              const PNode q = base[j][idx[j]];
              idx[j] = 2 * idx[j] + 1 + go_false<M>(xr[q.off], q.thr);
            }
          }
        } else {
          for (int32_t d = 0; d < dmax; ++d) {
            for (int j = 0; j < g; ++j) {
              if (d >= pt[j].depth) continue;
              const PNode q = base[j][idx[j]];
              idx[j] = 2 * idx[j] + 1 + go_false<M>(xr[q.off], q.thr);
            }
          }
        }
        for (int j = 0; j < g; ++j)
          on(r, t0 + j, pt[j].slot_begin + idx[j] - ((int64_t(1) << pt[j].depth) - 1));
      }
    }
    return;
  }
  uint32_t slot[kBlockRows];
#ifdef FLOCK_TREE_AVX512
  if (simd_walk_on.load(std::memory_order_relaxed)) {
    static_assert(kRowGroup == 16 && kBlockRows % kRowGroup == 0);
    uint32_t top[kBlockRows];
    for (int64_t t = 0; t < n_trees; ++t) {
      const PTree& pt = trees[t];
      const PNode* nd = nodes + pt.node_begin;
      if (pt.depth <= kEvalDepth) {
        const QNode* q = f.qnodes.data() + pt.qnode_begin;
        if (n == kBlockRows) eval_tree_avx512<M, kBlockRows / kRowGroup>(q, pt, buf, 0, slot);
        else
          for (int32_t r = 0; r < n; r += kRowGroup) eval_tree_avx512<M, 1>(q, pt, buf, r, slot);
        on_tree(t, pt.slot_begin, static_cast<const uint32_t*>(slot), n);
        continue;
      }
      if (n == kBlockRows) walk_top_avx512<M, kBlockRows / kRowGroup>(nd, pt.depth, buf, 0, top);
      else
        for (int32_t r = 0; r < n; r += kRowGroup) walk_top_avx512<M, 1>(nd, pt.depth, buf, r, top);
      const int32_t from = std::min(pt.depth, kTopLevels);
      for (int64_t r = 0; r < n; r += kRowGroup) walk_rows<M>(nd, pt.depth, buf + r, slot + r, from, top + r);
      on_tree(t, pt.slot_begin, static_cast<const uint32_t*>(slot), n);
    }
    return;
  }
#endif
  for (int64_t t = 0; t < n_trees; ++t) {
    const PTree& pt = trees[t];
    const PNode* nd = nodes + pt.node_begin;
    for (int64_t r = 0; r < n; r += kRowGroup) walk_rows<M>(nd, pt.depth, buf + r, slot + r);
    on_tree(t, pt.slot_begin, static_cast<const uint32_t*>(slot), n);
  }
}

// A scratch buffer per thread, kept between calls. Rows past a block's end (walked by the last
// group, results unused) hold values of earlier blocks or zeros, never uninitialized memory.
float* block_buffer(size_t n_cols) {
  static thread_local std::vector<float> buf;
  const size_t need = std::max<size_t>(n_cols, 1) * static_cast<size_t>(kBlockRows);
  if (buf.size() < need) buf.resize(need, 0.0f);
  return buf.data();
}

template <typename In, typename F, typename G>
void visit_fast(const Fast& f, const In* x, int64_t stride, int64_t r0, int64_t r1, F&& on, G&& on_tree) {
  float* buf = block_buffer(f.col_feature.size());
  const int64_t n = r1 - r0;
  fill_block(f, x, stride, r0, n, buf);
  switch (f.mode) {
    case kLt: visit_fast_mode<kLt>(f, buf, n, on, on_tree); break;
    case kLeq: visit_fast_mode<kLeq>(f, buf, n, on, on_tree); break;
    case kGte: visit_fast_mode<kGte>(f, buf, n, on, on_tree); break;
    default: visit_fast_mode<kGt>(f, buf, n, on, on_tree); break;
  }
}

template <typename In, typename F>
void visit_fast(const Fast& f, const In* x, int64_t stride, int64_t r0, int64_t r1, F&& on) {
  visit_fast(f, x, stride, r0, r1, on, [&](int64_t t, int64_t slot_begin, const uint32_t* slot, int64_t n) {
    for (int64_t r = 0; r < n; ++r) on(r, t, slot_begin + slot[r]);
  });
}

// Input shape: [N, C] or [C] (one row).
struct InputView {
  int64_t rows = 0;
  int64_t cols = 0;
};

InputView check_input(const std::vector<const Tensor*>& in, const Ensemble& e, const std::string& where) {
  if (in.empty() || in[0] == nullptr)
    fail(ErrorCode::InvalidInput, fmt::format("{} needs one input tensor", where));
  const Tensor& t = *in[0];
  if (t.type != ElemType::Float && t.type != ElemType::Double && t.type != ElemType::Int64)
    fail(ErrorCode::TypeMismatch,
         fmt::format("{} takes float, double or int64 input, not {}", where, to_string(t.type)));
  InputView v;
  if (t.shape.size() == 1) {
    v.rows = 1;
    v.cols = t.shape[0];
  } else if (t.shape.size() == 2) {
    v.rows = t.shape[0];
    v.cols = t.shape[1];
  } else {
    fail(ErrorCode::InvalidInput,
         fmt::format("{} takes a 1-D or 2-D input, got {} dimensions", where, t.shape.size()));
  }
  if (v.rows < 0 || v.cols < 0 || static_cast<int64_t>(t.size()) != t.numel())
    fail(ErrorCode::InvalidInput, fmt::format("{}: input holds {} values, its shape needs {}", where, t.size(),
                                              t.numel()));
  if (e.max_feature >= v.cols && v.rows > 0)
    fail(ErrorCode::InvalidInput,
         fmt::format("{} reads feature {} but the input has {} features per row", where, e.max_feature, v.cols));
  return v;
}

// Calls f(nodes, x) with typed pointers for the input's element type.
template <typename F>
void with_input(const Tensor& t, const Ensemble& e, const DoubleNodes& dn, F&& f) {
  switch (t.type) {
    case ElemType::Float: f(e.nodes_f, t.f.data()); break;
    case ElemType::Double: f(dn.get(e), t.d.data()); break;
    default: f(e.nodes_f, t.i.data()); break;  // int64 compared against float thresholds, like ORT
  }
}

// ----------------------------------------------------------------------------------------------
// Leaf visiting: the perfect-tree layout for float input when the ensemble has one, else the
// flat nodes. on_leaf(row in block, leaf node), trees in order for every row.

template <typename T, typename In, typename F>
void visit_leaves(const Ensemble& e, const Fast& f, const std::vector<Node<T>>& nodes, const In* x, int64_t stride,
                  int64_t r0, int64_t r1, F&& on_leaf) {
  if constexpr (std::is_same_v<In, float>) {
    if (f.enabled) {
      const int32_t* sn = f.slot_node.data();
      visit_fast(f, x, stride, r0, r1, [&](int64_t r, int64_t, int64_t slot) { on_leaf(r, sn[slot]); });
      return;
    }
  }
  visit_dispatch(e, nodes, x, stride, r0, r1, on_leaf);
}

template <typename In>
bool use_fast(const Fast& f) {
  return std::is_same_v<In, float> && f.enabled;
}

// Sum of every tree's weights into s (rows x K, zeros on entry) and h, for rows [r0, r1) (at most
// a block): the fast layout adds the single weight of a "simple" tree's leaf directly (its
// target's h is preset by the caller), other leaves go through their weight lists.
template <typename T, typename In>
void sum_weights(const Ensemble& e, const Fast& f, const std::vector<Node<T>>& nodes, const In* x, int64_t stride,
                 int64_t r0, int64_t r1, size_t K, double* s, uint8_t* h) {
  const int32_t* wid = e.w_id.data();
  const double* wv = e.w_value.data();
  const int32_t* first = e.leaf_first.data();
  const int32_t* cnt = e.leaf_count.data();
  auto add_leaf = [&](int64_t r, int32_t leaf) {
    double* sr = s + r * static_cast<int64_t>(K);
    uint8_t* hr = h + r * static_cast<int64_t>(K);
    for (int32_t k = first[leaf], end = k + cnt[leaf]; k < end; ++k) {
      sr[wid[k]] += wv[k];
      hr[wid[k]] = 1;
    }
  };
  if constexpr (std::is_same_v<In, float>) {
    if (f.enabled) {
      const PTree* trees = f.trees.data();
      const double* sv = f.slot_value.data();
      const int32_t* sn = f.slot_node.data();
      if (f.one_target >= 0 && K > 1 && r1 - r0 <= kBlockRows) {
        // Every tree adds to one target (XGBoost's binary:logistic): sum in a contiguous column,
        // which the vector sum prefers, then move it into s. The same additions from the same 0 in
        // the same order, and 0 + sum is the sum (never -0, starting from +0): the same bits.
        double column[kBlockRows] = {};
        visit_fast(
            f, x, stride, r0, r1, [&](int64_t r, int64_t, int64_t slot) { column[r] += sv[slot]; },
            [&](int64_t t, int64_t, const uint32_t* slot, int64_t n) { add_slot_values(f, t, slot, n, column, 1, 0); });
        for (int64_t r = 0; r < r1 - r0; ++r) s[r * static_cast<int64_t>(K) + f.one_target] += column[r];
        return;
      }
      auto on = [&](int64_t r, int64_t t, int64_t slot) {
        const int32_t c = trees[t].target;
        if (c >= 0) s[r * static_cast<int64_t>(K) + c] += sv[slot];
        else add_leaf(r, sn[slot]);
      };
      visit_fast(f, x, stride, r0, r1, on, [&](int64_t t, int64_t slot_begin, const uint32_t* slot, int64_t n) {
        const int32_t c = trees[t].target;
        if (c < 0) {
          for (int64_t r = 0; r < n; ++r) add_leaf(r, sn[slot_begin + slot[r]]);
          return;
        }
        add_slot_values(f, t, slot, n, s, static_cast<int64_t>(K), c);
      });
      return;
    }
  }
  visit_dispatch(e, nodes, x, stride, r0, r1, add_leaf);
}

// Fast layout for kernels whose leaves carry weight lists (multi-target regressor, classifier).
Fast build_fast_weighted(const Ensemble& e) {
  return build_fast(
      e,
      [&](int32_t leaf) { return e.leaf_count[leaf] == 1 ? e.w_value[static_cast<size_t>(e.leaf_first[leaf])] : 0.0; },
      [&](int32_t leaf) { return e.leaf_count[leaf] == 1 ? e.w_id[static_cast<size_t>(e.leaf_first[leaf])] : -1; });
}

}  // namespace
}  // namespace flock
