// Default-domain reductions along axes: the Reduce family, TopK, CumSum.
#include "tensor_ops.hpp"

namespace flock {
namespace tensor_ops {
namespace {

// ---------------------------------------------------------------------------------------------------
// TopK: k (attribute before opset 10, input after), axis, largest and sorted (opset 11). Equal values
// keep the lower index first; NaN ranks above every number.

class TopK final : public Kernel {
 public:
  explicit TopK(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    axis_ = ctx.attrs.get_int("axis", -1);
    if ((ctx.attrs.has("largest") || ctx.attrs.has("sorted")) && !at_least(ctx.opset, 11))
      fail(ErrorCode::InvalidModel, fmt::format("{}: attributes 'largest' and 'sorted' need opset 11", where_));
    largest_ = ctx.attrs.get_int("largest", 1) != 0;
    if (!at_least(ctx.opset, 10)) {
      need_inputs(ctx, 1, where_);
      k_attr_ = ctx.attrs.get_int("k");
      if (k_attr_ < 0) fail(ErrorCode::InvalidModel, fmt::format("{}: attribute 'k' is negative ({})", where_, k_attr_));
    } else {
      if (ctx.attrs.has("k"))
        fail(ErrorCode::InvalidModel, fmt::format("{}: attribute 'k' became an input in opset 10", where_));
      need_inputs(ctx, 2, where_);
      k_input_ = true;
    }
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "X");
    require_numeric(x, where_, "X");
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    if (rank == 0) fail(ErrorCode::InvalidInput, fmt::format("{}: input is a scalar; it needs rank >= 1", where_));
    const size_t axis = static_cast<size_t>(normalize_axis(axis_, rank, where_));
    const int64_t n = x.shape[axis];
    const int64_t k = k_input_ ? int_scalar(input(in, 1, where_, "K"), where_, "K") : k_attr_;
    if (k < 0 || k > n)
      fail(ErrorCode::InvalidInput, fmt::format("{}: k = {} is out of range for axis {} of size {}", where_, k, axis, n));
    std::vector<int64_t> shape = x.shape;
    shape[axis] = k;
    Tensor values(x.type, shape), indices(ElemType::Int64, shape);
    const int64_t outer = product(x.shape, 0, axis), inner = product(x.shape, axis + 1, x.shape.size());
    std::vector<int64_t> order(static_cast<size_t>(n));
    visit2(x, values, [&](const auto& src, auto& dst) {
      using T = typename std::decay_t<decltype(src)>::value_type;
      if constexpr (std::is_arithmetic_v<T>) {
        for (int64_t o = 0; o < outer; ++o) {
          for (int64_t i = 0; i < inner; ++i) {
            const size_t base = static_cast<size_t>(o * n * inner + i);
            auto at = [&](int64_t j) { return src[base + static_cast<size_t>(j * inner)]; };
            auto before = [&](int64_t a, int64_t b) {
              const T va = at(a), vb = at(b);
              if constexpr (std::is_floating_point_v<T>) {
                const bool na = std::isnan(va), nb = std::isnan(vb);
                if (na || nb) {
                  if (na && nb) return a < b;
                  return largest_ ? na : nb;
                }
              }
              if (va != vb) return largest_ ? va > vb : va < vb;
              return a < b;
            };
            std::iota(order.begin(), order.end(), int64_t(0));
            std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(), before);
            for (int64_t j = 0; j < k; ++j) {
              const size_t to = static_cast<size_t>((o * k + j) * inner + i);
              dst[to] = at(order[static_cast<size_t>(j)]);
              indices.i[to] = order[static_cast<size_t>(j)];
            }
          }
        }
      }
    });
    set_out(out, 0, std::move(values));
    set_out(out, 1, std::move(indices));
  }

 private:
  std::string where_;
  int64_t axis_ = -1;
  bool largest_ = true;
  bool k_input_ = false;
  int64_t k_attr_ = 0;
};

// ---------------------------------------------------------------------------------------------------
// Reduce family. axes: attribute, or input from opset 13 (ReduceSum) / 18 (the rest), with
// noop_with_empty_axes. Reducing an empty set gives the operation's identity (0, 1, -inf for Max, ...).

enum class Red { Sum, Mean, Max, Min, Prod, L1, L2, LogSum, LogSumExp, SumSquare };

class Reduce final : public Kernel {
 public:
  Reduce(const KernelContext& ctx, Red op) : where_(ctx.attrs.where()), op_(op) {
    need_inputs(ctx, 1, where_);
    keepdims_ = ctx.attrs.get_int("keepdims", 1) != 0;
    const int64_t input_since = op == Red::Sum ? 13 : 18;
    bool_ok_ = (op == Red::Max || op == Red::Min) && at_least(ctx.opset, 20);
    from_input_ = at_least(ctx.opset, input_since) && !(ctx.opset == 0 && ctx.attrs.has("axes"));
    if (from_input_) {
      if (ctx.attrs.has("axes"))
        fail(ErrorCode::InvalidModel,
             fmt::format("{}: attribute 'axes' became an input in opset {}", where_, input_since));
      noop_ = ctx.attrs.get_int("noop_with_empty_axes", 0) != 0;
    } else {
      if (has_input(ctx, 1))
        fail(ErrorCode::InvalidModel, fmt::format("{}: the 'axes' input needs opset {}", where_, input_since));
      if (ctx.attrs.has("noop_with_empty_axes"))
        fail(ErrorCode::InvalidModel,
             fmt::format("{}: attribute 'noop_with_empty_axes' needs opset {}", where_, input_since));
      axes_ = ctx.attrs.get_ints("axes");
      check_unique_attr(axes_, where_, "axes");
    }
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "data");
    if (!(bool_ok_ && x.type == ElemType::Bool)) require_numeric(x, where_, "data");
    std::vector<int64_t> axes = axes_;
    if (from_input_)
      if (const Tensor* a = optional_input(in, 1, where_, "axes")) axes = int_list(*a, where_, "axes");
    if (axes.empty() && noop_) {
      set_out(out, 0, x);
      return;
    }
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    std::vector<bool> reduced(x.shape.size(), axes.empty());
    for (int64_t a : normalize_axes(axes, rank, where_)) reduced[static_cast<size_t>(a)] = true;
    std::vector<int64_t> shape, kept;  // output shape; the output's dims without the dropped ones
    int64_t count = 1;
    for (size_t d = 0; d < x.shape.size(); ++d) {
      if (reduced[d]) {
        count *= x.shape[d];
        if (keepdims_) shape.push_back(1);
      } else {
        shape.push_back(x.shape[d]);
      }
    }
    // Output offset of each input index: 0 along reduced axes, the output stride along kept ones.
    AxisMaps maps(x.shape.size());
    int64_t stride = 1;
    const bool empty = x.numel() == 0;  // nothing to visit; a shape like [0, 2^40] must not size the maps
    for (size_t d = x.shape.size(); d-- > 0 && !empty;) {
      maps[d].assign(static_cast<size_t>(std::max<int64_t>(x.shape[d], 1)), 0);
      if (!reduced[d]) {
        for (size_t i = 0; i < maps[d].size(); ++i) maps[d][i] = static_cast<int64_t>(i) * stride;
        stride *= x.shape[d];
      }
    }
    Tensor y(x.type, shape);
    if (x.type == ElemType::Bool) {  // opset 20: max is any, min is all (an empty set: false, true)
      std::fill(y.b.begin(), y.b.end(), uint8_t(op_ == Red::Min ? 1 : 0));
      for_each_mapped(x.shape, maps, [&](int64_t k, int64_t o) {
        uint8_t& a = y.b[static_cast<size_t>(o)];
        const uint8_t v = x.b[static_cast<size_t>(k)] != 0;
        a = op_ == Red::Max ? (a | v) : (a & v);
      });
      set_out(out, 0, std::move(y));
      return;
    }
    switch (x.type) {
      case ElemType::Float: reduce_real(x.f, x.shape, maps, count, y.f); break;
      case ElemType::Double: reduce_real(x.d, x.shape, maps, count, y.d); break;
      default:
        if (op_ == Red::L2 || op_ == Red::LogSum || op_ == Red::LogSumExp) reduce_real(x.i, x.shape, maps, count, y.i);
        else reduce_int(x.i, x.shape, maps, count, y.i);
        break;
    }
    set_out(out, 0, std::move(y));
  }

 private:
  // Accumulates in double; integers are truncated on the way out.
  template <typename T>
  void reduce_real(const std::vector<T>& x, const std::vector<int64_t>& shape, const AxisMaps& maps, int64_t count,
                   std::vector<T>& y) const {
    constexpr double inf = std::numeric_limits<double>::infinity();
    const double init = op_ == Red::Prod ? 1.0 : op_ == Red::Max ? -inf : op_ == Red::Min ? inf : 0.0;
    std::vector<double> acc(y.size(), init);
    std::vector<double> mx;
    if (op_ == Red::LogSumExp) {
      mx.assign(y.size(), -inf);
      for_each_mapped(shape, maps, [&](int64_t k, int64_t o) {
        const double v = static_cast<double>(x[static_cast<size_t>(k)]);
        double& m = mx[static_cast<size_t>(o)];
        if (v > m) m = v;
      });
    }
    for_each_mapped(shape, maps, [&](int64_t k, int64_t o) {
      const double v = static_cast<double>(x[static_cast<size_t>(k)]);
      double& a = acc[static_cast<size_t>(o)];
      switch (op_) {
        case Red::Sum: case Red::Mean: case Red::LogSum: a += v; break;
        case Red::Prod: a *= v; break;
        case Red::Max: if (std::isnan(v) || v > a) a = v; break;
        case Red::Min: if (std::isnan(v) || v < a) a = v; break;
        case Red::L1: a += std::fabs(v); break;
        case Red::L2: case Red::SumSquare: a += v * v; break;
        case Red::LogSumExp: {
          const double m = mx[static_cast<size_t>(o)];
          a += std::isnan(v) ? v : std::isinf(m) ? 0.0 : std::exp(v - m);
          break;
        }
      }
    });
    for (size_t o = 0; o < y.size(); ++o) {
      double r = acc[o];
      switch (op_) {
        case Red::Mean: r = r / static_cast<double>(count); break;
        case Red::L2: r = std::sqrt(r); break;
        case Red::LogSum: r = std::log(r); break;
        case Red::LogSumExp: r = std::isnan(r) ? r : std::isinf(mx[o]) ? mx[o] : mx[o] + std::log(r); break;
        default: break;
      }
      if constexpr (std::is_integral_v<T>) y[o] = to_int64(r);
      else y[o] = static_cast<T>(r);
    }
  }

  // Exact (wrapping) int64 arithmetic for Sum, Mean, Max, Min, Prod, L1 and SumSquare.
  void reduce_int(const std::vector<int64_t>& x, const std::vector<int64_t>& shape, const AxisMaps& maps,
                  int64_t count, std::vector<int64_t>& y) const {
    const int64_t init = op_ == Red::Prod ? 1
                         : op_ == Red::Max ? std::numeric_limits<int64_t>::min()
                         : op_ == Red::Min ? std::numeric_limits<int64_t>::max()
                                           : 0;
    std::fill(y.begin(), y.end(), init);
    for_each_mapped(shape, maps, [&](int64_t k, int64_t o) {
      const int64_t v = x[static_cast<size_t>(k)];
      int64_t& a = y[static_cast<size_t>(o)];
      switch (op_) {
        case Red::Prod: a = wrap_mul(a, v); break;
        case Red::Max: a = std::max(a, v); break;
        case Red::Min: a = std::min(a, v); break;
        case Red::L1: a = wrap_add(a, wrap_abs(v)); break;
        case Red::SumSquare: a = wrap_add(a, wrap_mul(v, v)); break;
        default: a = wrap_add(a, v); break;
      }
    });
    if (op_ == Red::Mean)
      for (int64_t& a : y) a = count > 0 ? a / count : 0;
  }

  std::string where_;
  Red op_;
  bool bool_ok_ = false;  // ReduceMax / ReduceMin on bool (opset 20)
  bool keepdims_ = true;
  bool from_input_ = false;
  bool noop_ = false;
  std::vector<int64_t> axes_;
};

// ---------------------------------------------------------------------------------------------------
// CumSum (axis input; exclusive, reverse)

class CumSum final : public Kernel {
 public:
  explicit CumSum(const KernelContext& ctx)
      : where_(ctx.attrs.where()),
        exclusive_(ctx.attrs.get_int("exclusive", 0) != 0),
        reverse_(ctx.attrs.get_int("reverse", 0) != 0) {
    need_inputs(ctx, 2, where_);
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "x");
    require_numeric(x, where_, "x");
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    if (rank == 0) fail(ErrorCode::InvalidInput, fmt::format("{}: input is a scalar; it needs rank >= 1", where_));
    const size_t axis =
        static_cast<size_t>(normalize_axis(int_scalar(input(in, 1, where_, "axis"), where_, "axis"), rank, where_));
    const int64_t outer = product(x.shape, 0, axis), n = x.shape[axis],
                  inner = product(x.shape, axis + 1, x.shape.size());
    Tensor y(x.type, x.shape);
    visit2(x, y, [&](const auto& src, auto& dst) {
      using T = typename std::decay_t<decltype(src)>::value_type;
      if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, uint8_t>) {
        for (int64_t o = 0; o < outer; ++o) {
          for (int64_t i = 0; i < inner; ++i) {
            T acc{};
            for (int64_t s = 0; s < n; ++s) {
              const int64_t j = reverse_ ? n - 1 - s : s;
              const size_t at = static_cast<size_t>((o * n + j) * inner + i);
              if (exclusive_) dst[at] = acc;
              if constexpr (std::is_integral_v<T>) acc = wrap_add(acc, src[at]);
              else acc += src[at];
              if (!exclusive_) dst[at] = acc;
            }
          }
        }
      }
    });
    set_out(out, 0, std::move(y));
  }

 private:
  std::string where_;
  bool exclusive_ = false, reverse_ = false;
};

void add_reduce(KernelRegistry& r, const char* op, Red red) {
  r.add("", op, [red](const KernelContext& ctx) -> std::unique_ptr<Kernel> { return std::make_unique<Reduce>(ctx, red); });
}

}  // namespace

void register_reduction_kernels(KernelRegistry& r) {
  add<TopK>(r, "TopK");
  add_reduce(r, "ReduceSum", Red::Sum);
  add_reduce(r, "ReduceMean", Red::Mean);
  add_reduce(r, "ReduceMax", Red::Max);
  add_reduce(r, "ReduceMin", Red::Min);
  add_reduce(r, "ReduceProd", Red::Prod);
  add_reduce(r, "ReduceL1", Red::L1);
  add_reduce(r, "ReduceL2", Red::L2);
  add_reduce(r, "ReduceLogSum", Red::LogSum);
  add_reduce(r, "ReduceLogSumExp", Red::LogSumExp);
  add_reduce(r, "ReduceSumSquare", Red::SumSquare);
  add<CumSum>(r, "CumSum");
}

}  // namespace tensor_ops
}  // namespace flock
