// The tree walk, flat and perfect-tree layouts, and its AVX-512 form: templates over the node type,
// the input type and what a kernel does at each leaf. Internal to ml_tree_kernels.cpp, its only
// includer (hence the unnamed namespace).
#pragma once

// instead (walk_top_avx512), and the walk continues from there.
// Other ensembles (mixed or EQ/NEQ modes, deep trees, double or int64 input) walk the flat nodes:
// blocks of 128 rows tree by tree, 8 rows at a time, or for fewer than 8 rows 8 trees at a time.
// Scores accumulate per row in tree order in every path, so all paths give the same bits.
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

struct PTree {
  int64_t node_begin = 0;  // first of 2^depth - 1 nodes in Fast::nodes
  int64_t slot_begin = 0;  // first of 2^depth slots
  int32_t depth = 0;
  int32_t target = -1;  // >= 0: every leaf has exactly one weight, for this target / class
};

struct Fast {
  bool enabled = false;
  uint8_t mode = kLt;
  std::vector<PTree> trees;        // in the order of Ensemble::roots
  std::vector<PNode> nodes;
  std::vector<int32_t> slot_node;  // per slot: the leaf (Ensemble node index)
  std::vector<double> slot_value;  // per slot of a tree with target >= 0: what it adds
  std::vector<int32_t> col_feature;  // per buffer column: the input column it copies
  std::vector<uint8_t> col_fill;     // per buffer column: 1 if NaN becomes fill_value
  float fill_value = 0;
  std::vector<int32_t> targets_always;  // targets every row gets a weight for (simple trees)
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
         vector_bytes(f.nodes) + vector_bytes(f.slot_node) + vector_bytes(f.slot_value) +
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
  for (size_t k = 0; k < has_target.size(); ++k)
    if (has_target[k]) f.targets_always.push_back(static_cast<int32_t>(k));
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
// AVX-512 form of the top of the walk, picked at run time (the build does not assume AVX-512).
// Gathers are slow on the CPUs measured (about 20 cycles for 16 lanes), so instead of walking,
// the first kTopLevels levels of a tree are *evaluated*: every one of its (up to 31) top nodes is
// compared against its column for 16 rows at a time with contiguous loads (the buffer is
// column-major), and each row collects one bit per node. The walk through those levels is then
// shifts and adds; deeper levels continue with walk_rows. The comparisons are the ordered, quiet
// forms of go_false's (NaN compares false), so every row takes exactly the scalar walk's path.
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
// min(depth, kTopLevels) levels, top[r0 + j] is row j's node.
template <uint8_t M, int G>
__attribute__((target("avx512f"))) void walk_top_avx512(const PNode* nd, int32_t depth, const float* buf, int32_t r0,
                                                         uint32_t* top) {
  constexpr int kPred = avx512_go_false_predicate<M>();
  const int32_t levels = std::min(depth, kTopLevels);
  const int32_t n_top = (int32_t(1) << levels) - 1;
  __m512i bits[G];
  for (int g = 0; g < G; ++g) bits[g] = _mm512_setzero_si512();
  for (int32_t k = 0; k < n_top; ++k) {
    const __m512 t = _mm512_set1_ps(nd[k].thr);
    const __m512i bit = _mm512_set1_epi32(int32_t(1) << k);
    const float* col = buf + nd[k].off + r0;
    for (int g = 0; g < G; ++g) {
      const __mmask16 go_false = _mm512_cmp_ps_mask(_mm512_loadu_ps(col + 16 * g), t, kPred);
      bits[g] = _mm512_mask_or_epi32(bits[g], go_false, bits[g], bit);
    }
  }
  const __m512i one = _mm512_set1_epi32(1);
  for (int g = 0; g < G; ++g) {
    __m512i idx = _mm512_setzero_si512();
    for (int32_t d = 0; d < levels; ++d) {
      // (maskz_: the plain intrinsic trips GCC 12's -Wmaybe-uninitialized)
      const __m512i go_false = _mm512_and_si512(_mm512_maskz_srlv_epi32(0xFFFF, bits[g], idx), one);
      idx = _mm512_add_epi32(_mm512_add_epi32(idx, idx), _mm512_add_epi32(go_false, one));
    }
    _mm512_storeu_si512(top + r0 + 16 * g, idx);
  }
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

// Sum of every tree's weights into s (rows x K) and h, for rows [r0, r1): the fast layout adds the
// single weight of a "simple" tree's leaf directly (its target's h is preset by the caller),
// other leaves go through their weight lists.
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
        const double* value = sv + slot_begin;
        double* sc = s + c;
        const int64_t width = static_cast<int64_t>(K);
        for (int64_t r = 0; r < n; ++r) sc[r * width] += value[slot[r]];
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
