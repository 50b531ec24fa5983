// Elementwise default-domain (ai.onnx) operators, opsets 7-21:
//   unary math     Abs Neg Exp Log Sqrt Reciprocal Floor Ceil Round Sign Erf Sin Cos Tan Asin Acos Atan
//                  Sinh Cosh Asinh Acosh Atanh IsNaN IsInf
//   arithmetic     Add Sub Mul Div Pow Mod, variadic Sum Mean Min Max (numpy broadcasting)
//   comparison     Equal Less Greater LessOrEqual GreaterOrEqual (bool output)
//   logic          Not And Or Xor
//   selection      Where, Clip
//   activations    Sigmoid Tanh Relu LeakyRelu Elu Selu Celu HardSigmoid HardSwish Softplus Softsign
//                  PRelu ThresholdedRelu Mish
//   Dropout        inference: identity, mask all true (training mode: the reference's seeded draw)
//
// Each operator is a small functor; the kernels (Unary, Binary, Variadic) are templates over it, so
// the per-element work is inlined into the loops of broadcast.hpp. The element types an operator
// runs (of float, double, int64, bool, string) follow the ONNX type constraints of the node's opset;
// any other type is UnsupportedOperator. Values follow the ONNX reference (numpy): Max/Min/Clip
// propagate NaN, Round is half-to-even, integer Mod takes the divisor's sign unless fmod=1,
// integer arithmetic wraps around.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "broadcast.hpp"
#include "flock/interrupt.hpp"
#include "flock/kernel.hpp"

namespace flock {
namespace {

using namespace kernels;

// ---- compile-time helpers ----

bool before(const KernelContext& ctx, int64_t version) { return ctx.opset > 0 && ctx.opset < version; }

// The allowed element types at the node's opset: `base`, plus `later` from opset `since` on.
TypeSet types_at(const KernelContext& ctx, TypeSet base, TypeSet later = 0, int64_t since = 0) {
  return before(ctx, since) ? base : base | later;
}

const onnx::AttributeProto* find_attr(const KernelContext& ctx, const char* name) {
  for (const auto& a : ctx.node.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}

float float_attr(const KernelContext& ctx, const char* name, float dflt) {
  const onnx::AttributeProto* a = find_attr(ctx, name);
  if (!a) return dflt;
  if (a->type() != onnx::AttributeProto::FLOAT && a->type() != onnx::AttributeProto::UNDEFINED)
    fail(ErrorCode::InvalidModel, fmt::format("{}: attribute '{}' must be a float", ctx.attrs.where(), name));
  return a->f();
}

int64_t int_attr(const KernelContext& ctx, const char* name, int64_t dflt) {
  const onnx::AttributeProto* a = find_attr(ctx, name);
  if (!a) return dflt;
  if (a->type() != onnx::AttributeProto::INT && a->type() != onnx::AttributeProto::UNDEFINED)
    fail(ErrorCode::InvalidModel, fmt::format("{}: attribute '{}' must be an int", ctx.attrs.where(), name));
  return a->i();
}

bool flag_attr(const KernelContext& ctx, const char* name, bool dflt) {
  const int64_t v = int_attr(ctx, name, dflt ? 1 : 0);
  if (v != 0 && v != 1)
    fail(ErrorCode::InvalidModel, fmt::format("{}: attribute '{}' must be 0 or 1, got {}", ctx.attrs.where(), name, v));
  return v == 1;
}

std::string count_text(int n) {
  switch (n) {
    case 1: return "one input";
    case 2: return "two inputs";
    case 3: return "three inputs";
    default: return fmt::format("{} inputs", n);
  }
}

// The node's input count (omitted optional inputs included) must be in [lo, hi].
void require_inputs(const KernelContext& ctx, int lo, int hi) {
  const int n = ctx.node.input_size();
  if (n >= lo && n <= hi) return;
  const std::string where = ctx.attrs.where();
  if (lo == hi) fail(ErrorCode::InvalidModel, fmt::format("{}: needs {}, has {}", where, count_text(lo), n));
  if (hi == std::numeric_limits<int>::max())
    fail(ErrorCode::InvalidModel, fmt::format("{}: needs at least {}, has {}", where, count_text(lo), n));
  fail(ErrorCode::InvalidModel, fmt::format("{}: takes {} to {} inputs, has {}", where, lo, hi, n));
}

// ---- integer helpers (two's-complement wrap-around, as ONNX Runtime and numpy compute) ----

template <typename T>
T wrap_add(T a, T b) {
  if constexpr (std::is_integral_v<T>) return static_cast<T>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
  else return a + b;
}
template <typename T>
T wrap_sub(T a, T b) {
  if constexpr (std::is_integral_v<T>) return static_cast<T>(static_cast<uint64_t>(a) - static_cast<uint64_t>(b));
  else return a - b;
}
template <typename T>
T wrap_mul(T a, T b) {
  if constexpr (std::is_integral_v<T>) return static_cast<T>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
  else return a * b;
}

// x86 cvttsd2si: NaN and out-of-range values become INT64_MIN (what a C cast does on ONNX Runtime's
// and numpy's usual hosts).
int64_t to_int64(double v) {
  if (!(v >= -9223372036854775808.0 && v < 9223372036854775808.0)) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(v);
}

// ---------------------------------------------------------------------------------------------------
// Unary functors. kTypes: the types the functor compiles for (a superset of what any opset allows).

#define FLOCK_FLOAT_UNARY(Name, expr)            \
  struct Name {                                  \
    static constexpr TypeSet kTypes = kFloats;   \
    template <typename T>                        \
    T operator()(T x) const {                    \
      return expr;                               \
    }                                            \
  };

FLOCK_FLOAT_UNARY(ExpOp, std::exp(x))
FLOCK_FLOAT_UNARY(LogOp, std::log(x))
FLOCK_FLOAT_UNARY(SqrtOp, std::sqrt(x))
FLOCK_FLOAT_UNARY(ReciprocalOp, T(1) / x)
FLOCK_FLOAT_UNARY(FloorOp, std::floor(x))
FLOCK_FLOAT_UNARY(CeilOp, std::ceil(x))
FLOCK_FLOAT_UNARY(SinOp, std::sin(x))
FLOCK_FLOAT_UNARY(CosOp, std::cos(x))
FLOCK_FLOAT_UNARY(TanOp, std::tan(x))
FLOCK_FLOAT_UNARY(AsinOp, std::asin(x))
FLOCK_FLOAT_UNARY(AcosOp, std::acos(x))
FLOCK_FLOAT_UNARY(AtanOp, std::atan(x))
FLOCK_FLOAT_UNARY(SinhOp, std::sinh(x))
FLOCK_FLOAT_UNARY(CoshOp, std::cosh(x))
FLOCK_FLOAT_UNARY(AsinhOp, std::asinh(x))
FLOCK_FLOAT_UNARY(AcoshOp, std::acosh(x))
FLOCK_FLOAT_UNARY(AtanhOp, std::atanh(x))
FLOCK_FLOAT_UNARY(TanhOp, std::tanh(x))
FLOCK_FLOAT_UNARY(SoftsignOp, x / (T(1) + std::abs(x)))

#undef FLOCK_FLOAT_UNARY

// Half to even, like numpy.round (independent of the floating-point rounding mode).
struct RoundOp {
  static constexpr TypeSet kTypes = kFloats;
  template <typename T>
  T operator()(T x) const {
    const T r = std::round(x);  // half away from zero
    if (std::abs(x - std::trunc(x)) == T(0.5)) return T(2) * std::round(x / T(2));
    return r;
  }
};

// log(1 + exp(x)) without overflow.
template <typename T>
T softplus(T x) {
  return x > T(0) ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
}

struct SoftplusOp {
  static constexpr TypeSet kTypes = kFloats;
  template <typename T>
  T operator()(T x) const {
    return softplus(x);
  }
};

struct MishOp {
  static constexpr TypeSet kTypes = kFloats;
  template <typename T>
  T operator()(T x) const {
    return x * std::tanh(softplus(x));
  }
};

struct SigmoidOp {
  static constexpr TypeSet kTypes = kFloats;
  template <typename T>
  T operator()(T x) const {
    const T a = T(1) / (T(1) + std::exp(-std::abs(x)));
    return x < T(0) ? T(1) - a : a;
  }
};

struct AbsOp {
  static constexpr TypeSet kTypes = kNumeric;
  template <typename T>
  T operator()(T x) const {
    if constexpr (std::is_integral_v<T>) return x < 0 ? wrap_sub(T(0), x) : x;
    else return std::abs(x);
  }
};

struct NegOp {
  static constexpr TypeSet kTypes = kNumeric;
  template <typename T>
  T operator()(T x) const {
    return wrap_sub(T(0), x);
  }
};

struct SignOp {
  static constexpr TypeSet kTypes = kNumeric;
  template <typename T>
  T operator()(T x) const {
    if constexpr (std::is_floating_point_v<T>)
      if (std::isnan(x)) return x;
    return x > T(0) ? T(1) : x < T(0) ? T(-1) : T(0);
  }
};

// Integer inputs: the reference computes erf in double and casts back (truncation), which is 0 for
// every integer.
struct ErfOp {
  static constexpr TypeSet kTypes = kNumeric;
  template <typename T>
  T operator()(T x) const {
    if constexpr (std::is_integral_v<T>) return static_cast<T>(to_int64(std::erf(static_cast<double>(x))));
    else return std::erf(x);
  }
};

struct ReluOp {
  static constexpr TypeSet kTypes = kNumeric;
  template <typename T>
  T operator()(T x) const {
    return x < T(0) ? T(0) : x;  // NaN passes through
  }
};

struct IsNaNOp {
  static constexpr TypeSet kTypes = kFloats;
  template <typename T>
  bool operator()(T x) const {
    return std::isnan(x);
  }
};

struct IsInfOp {
  static constexpr TypeSet kTypes = kFloats;
  bool negative = true, positive = true;
  template <typename T>
  bool operator()(T x) const {
    return std::isinf(x) && (x > 0 ? positive : negative);
  }
};

struct NotOp {
  static constexpr TypeSet kTypes = kBool;
  bool operator()(uint8_t x) const { return x == 0; }
};

// ---- activations with attributes ----

struct LeakyReluOp {
  static constexpr TypeSet kTypes = kFloats;
  float alpha = 0.01f;
  template <typename T>
  T operator()(T x) const {
    return x < T(0) ? static_cast<T>(alpha) * x : x;
  }
};

struct EluOp {
  static constexpr TypeSet kTypes = kFloats;
  float alpha = 1.0f;
  template <typename T>
  T operator()(T x) const {
    return x < T(0) ? static_cast<T>(alpha) * std::expm1(x) : x;
  }
};

struct SeluOp {
  static constexpr TypeSet kTypes = kFloats;
  float alpha = 1.67326319217681884765625f, gamma = 1.05070102214813232421875f;
  template <typename T>
  T operator()(T x) const {
    return static_cast<T>(gamma) * (x <= T(0) ? static_cast<T>(alpha) * std::expm1(x) : x);
  }
};

struct CeluOp {
  static constexpr TypeSet kTypes = kFloats;
  float alpha = 1.0f;
  template <typename T>
  T operator()(T x) const {
    const T a = static_cast<T>(alpha);
    return x > T(0) ? x : a * std::expm1(x / a);
  }
};

// max(0, min(1, alpha * x + beta)), NaN passing through.
template <typename T>
T hard_sigmoid(T x, T alpha, T beta) {
  const T v = alpha * x + beta;
  return v < T(0) ? T(0) : v > T(1) ? T(1) : v;
}

struct HardSigmoidOp {
  static constexpr TypeSet kTypes = kFloats;
  float alpha = 0.2f, beta = 0.5f;
  template <typename T>
  T operator()(T x) const {
    return hard_sigmoid(x, static_cast<T>(alpha), static_cast<T>(beta));
  }
};

struct HardSwishOp {
  static constexpr TypeSet kTypes = kFloats;
  template <typename T>
  T operator()(T x) const {
    return x * hard_sigmoid(x, static_cast<T>(1.0f / 6.0f), T(0.5));
  }
};

struct ThresholdedReluOp {
  static constexpr TypeSet kTypes = kFloats;
  float alpha = 1.0f;
  template <typename T>
  T operator()(T x) const {
    return x > static_cast<T>(alpha) || x != x ? x : T(0);
  }
};

// ---------------------------------------------------------------------------------------------------
// Unary kernel

// Calls fn(begin, end) over [0, n) in chunks, polling for interrupts between them: a unary op
// over a huge tensor (Exp, Erf, Tanh...) can take a while.
template <typename F>
void for_interruptible_chunks(size_t n, F&& fn) {
  constexpr size_t kChunk = size_t(1) << 20;
  for (size_t b = 0; b < n; b += kChunk) {
    if (b > 0) poll_interrupt();
    fn(b, std::min(n, b + kChunk));
  }
}

template <typename Op>
class Unary final : public Kernel {
 public:
  Unary(const KernelContext& ctx, TypeSet allowed, Op op)
      : where_(ctx.attrs.where()), allowed_(allowed & Op::kTypes), op_(op) {
    require_inputs(ctx, 1, 1);
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    run_donated(in, {}, out);
  }

  // In place when X is donated and the result has X's element type (Relu, Neg, Exp, ...).
  void run_donated(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& donated,
                   std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "X");
    require_type(where_, x.type, allowed_);
    Tensor* own = donated.empty() ? nullptr : donated[0];
    dispatch(x.type, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (in_set<T>(Op::kTypes)) {
        using R = std::invoke_result_t<const Op&, T>;
        using S = stored_t<R>;
        const size_t n = x.size();
        if constexpr (std::is_same_v<S, T> && std::is_same_v<R, T>) {
          if (own) {
            Tensor y = std::move(*own);
            T* py = data_of<T>(y).data();
            for_interruptible_chunks(n, [&](size_t b, size_t e) {
              for (size_t k = b; k < e; ++k) py[k] = op_(py[k]);
            });
            set_out(out, 0, std::move(y));
            return;
          }
        }
        Tensor y = Tensor::uninitialized(elem_type_of<R>(), x.shape);
        const T* px = data_of<T>(x).data();
        S* py = data_of<S>(y).data();
        for_interruptible_chunks(n, [&](size_t b, size_t e) {
          for (size_t k = b; k < e; ++k) py[k] = static_cast<S>(op_(px[k]));
        });
        set_out(out, 0, std::move(y));
      }
    });
  }

 private:
  std::string where_;
  TypeSet allowed_;
  Op op_;
};

// ---------------------------------------------------------------------------------------------------
// Binary functors. kIntDivision: integer inputs fail on a zero divisor (checked before the loop).

struct AddOp {
  static constexpr TypeSet kTypes = kNumeric;
  template <typename T>
  T operator()(T a, T b) const {
    return wrap_add(a, b);
  }
};

struct SubOp {
  static constexpr TypeSet kTypes = kNumeric;
  template <typename T>
  T operator()(T a, T b) const {
    return wrap_sub(a, b);
  }
};

struct MulOp {
  static constexpr TypeSet kTypes = kNumeric;
  template <typename T>
  T operator()(T a, T b) const {
    return wrap_mul(a, b);
  }
};

// Integer division truncates toward zero; INT64_MIN / -1 wraps to INT64_MIN.
struct DivOp {
  static constexpr TypeSet kTypes = kNumeric;
  static constexpr bool kIntDivision = true;
  template <typename T>
  T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) return b == -1 ? wrap_sub(T(0), a) : a / b;
    else return a / b;
  }
};

// fmod=1: remainder with the dividend's sign (C fmod / %).
struct FModOp {
  static constexpr TypeSet kTypes = kNumeric;
  static constexpr bool kIntDivision = true;
  template <typename T>
  T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) return b == -1 ? T(0) : a % b;
    else return std::fmod(a, b);
  }
};

// fmod=0 (integers only): remainder with the divisor's sign (Python %).
struct IntModOp {
  static constexpr TypeSet kTypes = kInt64;
  static constexpr bool kIntDivision = true;
  int64_t operator()(int64_t a, int64_t b) const {
    if (b == -1) return 0;
    const int64_t r = a % b;
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
  }
};

// NaN-propagating maximum / minimum (numpy.maximum / numpy.minimum).
struct MaxOp {
  static constexpr TypeSet kTypes = kNumeric;
  template <typename T>
  T operator()(T a, T b) const {
    if constexpr (std::is_floating_point_v<T>)
      if (a != a || b != b) return a + b;
    return a < b ? b : a;
  }
};

struct MinOp {
  static constexpr TypeSet kTypes = kNumeric;
  template <typename T>
  T operator()(T a, T b) const {
    if constexpr (std::is_floating_point_v<T>)
      if (a != a || b != b) return a + b;
    return b < a ? b : a;
  }
};

struct EqualOp {
  static constexpr TypeSet kTypes = kNumeric | kBool | kString;  // strings from opset 19
  template <typename T>
  bool operator()(const T& a, const T& b) const {
    if constexpr (std::is_same_v<T, uint8_t>) return (a != 0) == (b != 0);
    else return a == b;
  }
};

#define FLOCK_COMPARE(Name, op)                   \
  struct Name {                                   \
    static constexpr TypeSet kTypes = kNumeric;   \
    template <typename T>                         \
    bool operator()(T a, T b) const {             \
      return a op b;                              \
    }                                             \
  };

FLOCK_COMPARE(LessOp, <)
FLOCK_COMPARE(GreaterOp, >)
FLOCK_COMPARE(LessOrEqualOp, <=)
FLOCK_COMPARE(GreaterOrEqualOp, >=)

#undef FLOCK_COMPARE

struct AndOp {
  static constexpr TypeSet kTypes = kBool;
  bool operator()(uint8_t a, uint8_t b) const { return a != 0 && b != 0; }
};

struct OrOp {
  static constexpr TypeSet kTypes = kBool;
  bool operator()(uint8_t a, uint8_t b) const { return a != 0 || b != 0; }
};

struct XorOp {
  static constexpr TypeSet kTypes = kBool;
  bool operator()(uint8_t a, uint8_t b) const { return (a != 0) != (b != 0); }
};

// PRelu: slope * x where x < 0.
struct PReluOp {
  static constexpr TypeSet kTypes = kNumeric;
  template <typename T>
  T operator()(T x, T slope) const {
    return x < T(0) ? wrap_mul(slope, x) : x;
  }
};

template <typename Op>
constexpr bool divides_integers() {
  if constexpr (requires { Op::kIntDivision; }) return Op::kIntDivision;
  else return false;
}

// ---------------------------------------------------------------------------------------------------
// Binary kernel: two inputs of one element type, numpy broadcasting (opset >= 7) or the legacy
// broadcast/axis attributes (opset < 7). `unidirectional`: B must broadcast to A's shape (PRelu).

template <typename Op>
class Binary final : public Kernel {
 public:
  // `float_note`: appended to the error for a floating-point type the operator does not run.
  Binary(const KernelContext& ctx, TypeSet allowed, Op op, bool unidirectional = false, std::string float_note = {})
      : where_(ctx.attrs.where()),
        allowed_(allowed & Op::kTypes),
        op_(op),
        unidirectional_(unidirectional),
        type_note_(std::move(float_note)) {
    require_inputs(ctx, 2, 2);
    if (before(ctx, 7)) {
      legacy_ = true;
      legacy_broadcast_ = ctx.attrs.get_int("broadcast", 0) != 0;
      if (ctx.attrs.has("axis")) legacy_axis_ = ctx.attrs.get_int("axis");
    }
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    run_donated(in, {}, out);
  }

  // In place over a donated input that has the output's shape and element type.
  void run_donated(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& donated,
                   std::vector<Tensor>& out) const override {
    const Tensor& a = input(in, 0, where_, "A");
    const Tensor& b = input(in, 1, where_, "B");
    require_same_type(where_, a, b, 0, 1);
    if (!(allowed_ & type_bit(a.type))) {
      if (!type_note_.empty() && (kFloats & type_bit(a.type)))
        fail(ErrorCode::UnsupportedOperator,
             fmt::format("{}: element type {} is not supported {}", where_, to_string(a.type), type_note_));
      require_type(where_, a.type, allowed_);
    }
    std::vector<int64_t> bshape = b.shape;
    std::vector<int64_t> shape;
    if (legacy_) {
      legacy_shape(a, b, bshape);
      shape = a.shape;
    } else {
      shape = broadcast_shapes(where_, {&a.shape, &bshape});
      if (unidirectional_ && shape != a.shape)
        fail(ErrorCode::InvalidInput, fmt::format("{}: input B of shape {} does not broadcast to input A's shape {}",
                                                  where_, shape_str(b.shape), shape_str(a.shape)));
    }
    dispatch(a.type, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (in_set<T>(Op::kTypes)) {
        using R = std::invoke_result_t<const Op&, T, T>;
        using S = stored_t<R>;
        const std::vector<T>& vb = data_of<T>(b);
        if constexpr (divides_integers<Op>() && std::is_integral_v<T>) {
          if (product(shape) > 0 && std::find(vb.begin(), vb.end(), T(0)) != vb.end())
            fail(ErrorCode::InvalidInput, fmt::format("{}: integer division by zero", where_));
        }
        const Op& op = op_;
        auto f = [&op](T u, T v) { return static_cast<S>(op(u, v)); };
        if constexpr (std::is_same_v<S, T>) {
          // Each output element is written after the inputs at its own position are read, so the
          // output may share storage with an input of its full shape.
          for (size_t k = 0; k < donated.size() && k < 2; ++k) {
            Tensor* own = donated[k];
            if (!own || (k == 0 ? a.shape : bshape) != shape) continue;
            // After the move `own` (a or b) is empty: its values and shape are read from y and `shape`.
            const T* pa = k == 0 ? nullptr : data_of<T>(a).data();
            const T* pb = k == 1 ? nullptr : vb.data();
            Tensor y = std::move(*own);
            T* py = data_of<T>(y).data();
            broadcast_binary(k == 0 ? py : pa, k == 0 ? shape : a.shape, k == 1 ? py : pb, bshape, py, shape, f);
            y.shape = shape;
            set_out(out, 0, std::move(y));
            return;
          }
        }
        Tensor y = Tensor::uninitialized(elem_type_of<R>(), shape);
        broadcast_binary(data_of<T>(a).data(), a.shape, vb.data(), bshape, data_of<S>(y).data(), shape, f);
        set_out(out, 0, std::move(y));
      }
    });
  }

 private:
  // Opset < 7: B is the same shape as A, a scalar, or (broadcast=1) a suffix of A's shape or, with
  // `axis`, a run of A's dimensions starting there.
  void legacy_shape(const Tensor& a, const Tensor& b, std::vector<int64_t>& bshape) const {
    if (!legacy_broadcast_) {
      if (a.shape != b.shape && b.numel() != 1)
        fail(ErrorCode::InvalidInput, fmt::format("{}: shapes {} and {} differ and broadcast is 0", where_,
                                                  shape_str(a.shape), shape_str(b.shape)));
      if (a.shape != b.shape) bshape.clear();
      return;
    }
    if (legacy_axis_) {
      const int64_t ra = static_cast<int64_t>(a.shape.size());
      const int64_t axis = normalize_axis(*legacy_axis_, ra, false, where_);
      const int64_t pad = ra - axis - static_cast<int64_t>(bshape.size());
      if (pad < 0)
        fail(ErrorCode::InvalidInput, fmt::format("{}: B {} does not fit A {} at axis {}", where_, shape_str(b.shape),
                                                  shape_str(a.shape), axis));
      bshape.insert(bshape.end(), static_cast<size_t>(pad), 1);
    }
    std::vector<int64_t> shape;
    if (!broadcast_shape(a.shape, bshape, shape) || shape != a.shape)
      fail(ErrorCode::InvalidInput, fmt::format("{}: B {} does not broadcast to A {}", where_, shape_str(b.shape),
                                                shape_str(a.shape)));
  }

  std::string where_;
  TypeSet allowed_;
  Op op_;
  bool unidirectional_ = false;
  std::string type_note_;
  bool legacy_ = false;
  bool legacy_broadcast_ = false;
  std::optional<int64_t> legacy_axis_;
};

// ---------------------------------------------------------------------------------------------------
// Variadic kernel (Sum, Mean, Max, Min): one or more inputs of one element type, folded left to
// right into the broadcast output. Before opset 8 all inputs must have the same shape.

template <typename Op>
class Variadic final : public Kernel {
 public:
  Variadic(const KernelContext& ctx, TypeSet allowed, bool mean)
      : where_(ctx.attrs.where()), allowed_(allowed & Op::kTypes), mean_(mean), same_shape_(before(ctx, 8)) {
    require_inputs(ctx, 1, std::numeric_limits<int>::max());
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    if (in.empty()) fail(ErrorCode::InvalidInput, fmt::format("{}: no inputs", where_));
    std::vector<const Tensor*> xs;
    std::vector<const std::vector<int64_t>*> shapes;
    for (size_t k = 0; k < in.size(); ++k) {
      xs.push_back(&input(in, k, where_, "data"));
      require_same_type(where_, *xs[0], *xs[k], 0, k);
      shapes.push_back(&xs[k]->shape);
    }
    const ElemType type = xs[0]->type;
    require_type(where_, type, allowed_);
    std::vector<int64_t> shape;
    if (same_shape_) {
      for (size_t k = 1; k < xs.size(); ++k)
        if (xs[k]->shape != xs[0]->shape)
          fail(ErrorCode::InvalidInput, fmt::format("{}: input {} has shape {}, input 0 has {}; before opset 8 they "
                                                    "must match",
                                                    where_, k, shape_str(xs[k]->shape), shape_str(xs[0]->shape)));
      shape = xs[0]->shape;
    } else {
      shape = broadcast_shapes(where_, shapes);
    }
    dispatch(type, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (in_set<T>(Op::kTypes)) {
        Tensor y(type, shape);
        T* py = data_of<T>(y).data();
        const T* p0 = data_of<T>(*xs[0]).data();
        broadcast_binary(p0, xs[0]->shape, p0, xs[0]->shape, py, shape, [](T u, T) { return u; });
        const Op op{};
        for (size_t k = 1; k < xs.size(); ++k)
          broadcast_binary(py, shape, data_of<T>(*xs[k]).data(), xs[k]->shape, py, shape, op);
        if constexpr (std::is_floating_point_v<T>) {
          if (mean_) {
            const T n = static_cast<T>(xs.size());
            for (T& v : data_of<T>(y)) v /= n;
          }
        }
        set_out(out, 0, std::move(y));
      }
    });
  }

 private:
  std::string where_;
  TypeSet allowed_;
  bool mean_ = false;
  bool same_shape_ = false;
};

// ---------------------------------------------------------------------------------------------------
// Pow: base and exponent may have different types (opset >= 12); the output has the base's type.
// Integer results of a floating-point power truncate toward zero (the reference computes in double
// and casts).

template <typename A, typename B>
A pow_value(A x, B y) {
  if constexpr (std::is_same_v<A, float> && std::is_same_v<B, float>) {
    return std::pow(x, y);
  } else if constexpr (std::is_floating_point_v<A>) {
    return static_cast<A>(std::pow(static_cast<double>(x), static_cast<double>(y)));
  } else if constexpr (std::is_integral_v<B>) {
    // Exact integer power, wrapping on overflow. A negative exponent truncates 1/x^|y|.
    if (y < 0) return x == 1 ? 1 : x == -1 ? ((y & 1) ? -1 : 1) : 0;
    uint64_t result = 1, base = static_cast<uint64_t>(x);
    for (uint64_t e = static_cast<uint64_t>(y); e; e >>= 1) {
      if (e & 1) result *= base;
      base *= base;
    }
    return static_cast<A>(result);
  } else {
    return to_int64(std::pow(static_cast<double>(x), static_cast<double>(y)));
  }
}

class Pow final : public Kernel {
 public:
  explicit Pow(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    require_inputs(ctx, 2, 2);
    same_type_ = before(ctx, 12);
    allowed_ = same_type_ ? kFloats : kNumeric;
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& a = input(in, 0, where_, "X");
    const Tensor& b = input(in, 1, where_, "Y");
    require_type(where_, a.type, allowed_, "base element type");
    require_type(where_, b.type, allowed_, "exponent element type");
    if (same_type_) require_same_type(where_, a, b, 0, 1);
    const std::vector<int64_t> shape = broadcast_shapes(where_, {&a.shape, &b.shape});
    Tensor y(a.type, shape);
    dispatch(a.type, [&](auto ta) {
      using A = typename decltype(ta)::type;
      if constexpr (in_set<A>(kNumeric)) {
        dispatch(b.type, [&](auto tb) {
          using B = typename decltype(tb)::type;
          if constexpr (in_set<B>(kNumeric)) {
            broadcast_binary(data_of<A>(a).data(), a.shape, data_of<B>(b).data(), b.shape, data_of<A>(y).data(),
                             shape, [](A u, B v) { return pow_value(u, v); });
          }
        });
      }
    });
    set_out(out, 0, std::move(y));
  }

 private:
  std::string where_;
  bool same_type_ = false;
  TypeSet allowed_ = kNumeric;
};

// ---------------------------------------------------------------------------------------------------
// Where(condition, X, Y): X where condition else Y, all three broadcast; any element type.

class Where final : public Kernel {
 public:
  explicit Where(const KernelContext& ctx) : where_(ctx.attrs.where()) { require_inputs(ctx, 3, 3); }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& c = input(in, 0, where_, "condition");
    const Tensor& x = input(in, 1, where_, "X");
    const Tensor& y = input(in, 2, where_, "Y");
    if (c.type != ElemType::Bool)
      fail(ErrorCode::InvalidInput,
           fmt::format("{}: condition has element type {}; expected bool", where_, to_string(c.type)));
    require_same_type(where_, x, y, 1, 2);
    const std::vector<int64_t> shape = broadcast_shapes(where_, {&c.shape, &x.shape, &y.shape});
    Tensor z(x.type, shape);
    dispatch(x.type, [&](auto tag) {
      using T = typename decltype(tag)::type;
      broadcast_ternary(c.b.data(), c.shape, data_of<T>(x).data(), x.shape, data_of<T>(y).data(), y.shape,
                        data_of<T>(z).data(), shape,
                        [](uint8_t k, const T& u, const T& v) -> const T& { return k ? u : v; });
    });
    set_out(out, 0, std::move(z));
  }

 private:
  std::string where_;
};

// ---------------------------------------------------------------------------------------------------
// Clip: bounds from attributes `min`/`max` (opset < 11) or from optional scalar inputs (opset >= 11).
// y = min(max(x, lo), hi): NaN passes through; lo > hi gives hi everywhere (numpy.clip).

class Clip final : public Kernel {
 public:
  explicit Clip(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    legacy_ = before(ctx, 11);
    allowed_ = types_at(ctx, kFloats, kInt64, 12);
    if (legacy_) {
      require_inputs(ctx, 1, 1);
      if (find_attr(ctx, "min")) lo_ = float_attr(ctx, "min", 0.0f);
      if (find_attr(ctx, "max")) hi_ = float_attr(ctx, "max", 0.0f);
    } else {
      require_inputs(ctx, 1, 3);
      if (find_attr(ctx, "min") || find_attr(ctx, "max"))
        fail(ErrorCode::InvalidModel,
             fmt::format("{}: attributes 'min' and 'max' were replaced by inputs in opset 11", where_));
    }
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "input");
    require_type(where_, x.type, allowed_);
    Tensor y(x.type, x.shape);
    dispatch(x.type, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (in_set<T>(kNumeric)) {
        T lo = std::numeric_limits<T>::lowest(), hi = std::numeric_limits<T>::max();
        bool has_lo = false, has_hi = false;
        if (legacy_) {
          if (lo_) lo = static_cast<T>(*lo_), has_lo = true;
          if (hi_) hi = static_cast<T>(*hi_), has_hi = true;
        } else {
          has_lo = bound<T>(in, 1, "min", x, lo);
          has_hi = bound<T>(in, 2, "max", x, hi);
        }
        const T* px = data_of<T>(x).data();
        T* py = data_of<T>(y).data();
        const size_t n = x.size();
        if (has_lo && has_hi) {
          for (size_t k = 0; k < n; ++k) {
            const T v = px[k] < lo ? lo : px[k];
            py[k] = v > hi ? hi : v;
          }
        } else if (has_lo) {
          for (size_t k = 0; k < n; ++k) py[k] = px[k] < lo ? lo : px[k];
        } else if (has_hi) {
          for (size_t k = 0; k < n; ++k) py[k] = px[k] > hi ? hi : px[k];
        } else {
          std::copy(px, px + n, py);
        }
      }
    });
    set_out(out, 0, std::move(y));
  }

 private:
  // Reads optional bound input k into `v`; false when omitted.
  template <typename T>
  bool bound(const std::vector<const Tensor*>& in, size_t k, const char* name, const Tensor& x, T& v) const {
    const Tensor* t = optional_input(in, k, where_, name);
    if (!t) return false;
    if (t->type != x.type)
      fail(ErrorCode::InvalidInput, fmt::format("{}: '{}' has element type {}, input has {}; they must match", where_,
                                                name, to_string(t->type), to_string(x.type)));
    if (t->numel() != 1)
      fail(ErrorCode::InvalidInput,
           fmt::format("{}: '{}' must be a scalar, got shape {}", where_, name, shape_str(t->shape)));
    v = data_of<T>(*t)[0];
    return true;
  }

  std::string where_;
  bool legacy_ = false;
  TypeSet allowed_ = kNumeric;
  std::optional<float> lo_, hi_;
};

// ---------------------------------------------------------------------------------------------------
// Dropout. Inference (the usual case): output = input, the optional mask all true (bool from opset
// 10, the input's type before). Opset >= 12 takes `ratio` and `training_mode` as optional inputs;
// with training_mode true and a non-zero ratio it drops like the ONNX reference: a value is kept
// where a uniform draw from numpy's MT19937 (seeded by the `seed` attribute, reseeded every run, so
// the result is reproducible) is >= ratio, and kept values are scaled by 1 / (1 - ratio). Without a
// `seed` attribute each run draws a fresh seed.

class Dropout final : public Kernel {
 public:
  explicit Dropout(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    legacy_ = before(ctx, 12);
    bool_mask_ = !before(ctx, 10);
    if (legacy_) {
      require_inputs(ctx, 1, 1);
      const float ratio = float_attr(ctx, "ratio", 0.5f);
      if (!(ratio >= 0.0f && ratio < 1.0f))
        fail(ErrorCode::InvalidModel, fmt::format("{}: ratio {} is outside [0, 1)", where_, ratio));
    } else {
      require_inputs(ctx, 1, 3);
      if (find_attr(ctx, "seed")) {
        const int64_t seed = int_attr(ctx, "seed", 0);
        if (seed < 0 || seed > 0xffffffffLL)
          fail(ErrorCode::InvalidModel, fmt::format("{}: seed {} is outside [0, 2^32)", where_, seed));
        seed_ = static_cast<uint32_t>(seed);
      }
    }
    if (ctx.node.output_size() > 2)
      fail(ErrorCode::InvalidModel, fmt::format("{}: has {} outputs; at most 2", where_, ctx.node.output_size()));
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "data");
    require_type(where_, x.type, kFloats);
    double ratio = 0.5;
    bool training = false;
    if (!legacy_) {
      if (const Tensor* r = optional_input(in, 1, where_, "ratio")) {
        require_type(where_, r->type, kFloats, "ratio element type");
        if (r->numel() != 1)
          fail(ErrorCode::InvalidInput,
               fmt::format("{}: ratio must be a scalar, got shape {}", where_, shape_str(r->shape)));
        ratio = r->as_double(0);
        if (!(ratio >= 0.0 && ratio < 1.0))
          fail(ErrorCode::InvalidInput, fmt::format("{}: ratio {} is outside [0, 1)", where_, ratio));
      }
      if (const Tensor* t = optional_input(in, 2, where_, "training_mode")) {
        require_type(where_, t->type, kBool, "training_mode element type");
        if (t->numel() != 1)
          fail(ErrorCode::InvalidInput,
               fmt::format("{}: training_mode must be a scalar, got shape {}", where_, shape_str(t->shape)));
        training = t->b[0] != 0 && ratio != 0.0;
      }
    }
    const bool want_mask = out.size() > 1;
    if (!training) {
      if (want_mask) {
        Tensor mask(bool_mask_ ? ElemType::Bool : x.type, x.shape);
        if (mask.type == ElemType::Bool) std::fill(mask.b.begin(), mask.b.end(), uint8_t(1));
        else if (mask.type == ElemType::Float) std::fill(mask.f.begin(), mask.f.end(), 1.0f);
        else std::fill(mask.d.begin(), mask.d.end(), 1.0);
        set_out(out, 1, std::move(mask));
      }
      set_out(out, 0, x);
      return;
    }
    std::mt19937 gen(seed_ ? *seed_ : std::random_device{}());
    Tensor y(x.type, x.shape);
    Tensor mask(ElemType::Bool, x.shape);
    const double scale = 1.0 / (1.0 - ratio);
    const size_t n = x.size();
    for (size_t k = 0; k < n; ++k) {
      const uint32_t a = gen() >> 5, b = gen() >> 6;
      mask.b[k] = (a * 67108864.0 + b) / 9007199254740992.0 >= ratio;  // numpy random_sample()
    }
    dispatch(x.type, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_floating_point_v<T>) {
        const T* px = data_of<T>(x).data();
        T* py = data_of<T>(y).data();
        const T s = static_cast<T>(scale);
        for (size_t k = 0; k < n; ++k) py[k] = mask.b[k] ? px[k] * s : T(0);
      }
    });
    set_out(out, 0, std::move(y));
    if (want_mask) set_out(out, 1, std::move(mask));
  }

 private:
  std::string where_;
  bool legacy_ = false;
  bool bool_mask_ = true;
  std::optional<uint32_t> seed_;
};

// ---------------------------------------------------------------------------------------------------
// Registration

// The element types a node runs, given its opset.
using TypeRule = std::function<TypeSet(const KernelContext&)>;

// Types allowed at every opset in 7-21.
TypeRule always(TypeSet s) {
  return [s](const KernelContext&) { return s; };
}
// `base`, plus `later` from opset `since`.
TypeRule from(TypeSet base, TypeSet later, int64_t since) {
  return [=](const KernelContext& ctx) { return types_at(ctx, base, later, since); };
}

template <typename Op>
void unary(KernelRegistry& r, const char* name, TypeRule types) {
  r.add("", name, [types](const KernelContext& ctx) -> std::unique_ptr<Kernel> {
    return std::make_unique<Unary<Op>>(ctx, types(ctx), Op{});
  });
}

template <typename Op, typename Make>
void unary(KernelRegistry& r, const char* name, TypeRule types, Make make) {
  r.add("", name, [types, make](const KernelContext& ctx) -> std::unique_ptr<Kernel> {
    return std::make_unique<Unary<Op>>(ctx, types(ctx), make(ctx));
  });
}

template <typename Op>
void binary(KernelRegistry& r, const char* name, TypeRule types) {
  r.add("", name, [types](const KernelContext& ctx) -> std::unique_ptr<Kernel> {
    return std::make_unique<Binary<Op>>(ctx, types(ctx), Op{});
  });
}

template <typename Op>
void variadic(KernelRegistry& r, const char* name, TypeRule types, bool mean = false) {
  r.add("", name, [types, mean](const KernelContext& ctx) -> std::unique_ptr<Kernel> {
    return std::make_unique<Variadic<Op>>(ctx, types(ctx), mean);
  });
}

template <typename K>
void plain(KernelRegistry& r, const char* name) {
  r.add("", name, [](const KernelContext& ctx) -> std::unique_ptr<Kernel> { return std::make_unique<K>(ctx); });
}

std::unique_ptr<Kernel> make_mod(const KernelContext& ctx) {
  if (flag_attr(ctx, "fmod", false)) return std::make_unique<Binary<FModOp>>(ctx, kNumeric, FModOp{});
  return std::make_unique<Binary<IntModOp>>(ctx, kInt64, IntModOp{}, false,
                                            "with fmod=0; floating-point inputs need fmod=1");
}

}  // namespace

void register_elementwise_kernels(KernelRegistry& r) {
  // Unary math.
  unary<AbsOp>(r, "Abs", always(kNumeric));
  unary<NegOp>(r, "Neg", always(kNumeric));
  unary<ExpOp>(r, "Exp", always(kFloats));
  unary<LogOp>(r, "Log", always(kFloats));
  unary<SqrtOp>(r, "Sqrt", always(kFloats));
  unary<ReciprocalOp>(r, "Reciprocal", always(kFloats));
  unary<FloorOp>(r, "Floor", always(kFloats));
  unary<CeilOp>(r, "Ceil", always(kFloats));
  unary<RoundOp>(r, "Round", always(kFloats));
  unary<SignOp>(r, "Sign", always(kNumeric));
  unary<ErfOp>(r, "Erf", always(kNumeric));
  unary<SinOp>(r, "Sin", always(kFloats));
  unary<CosOp>(r, "Cos", always(kFloats));
  unary<TanOp>(r, "Tan", always(kFloats));
  unary<AsinOp>(r, "Asin", always(kFloats));
  unary<AcosOp>(r, "Acos", always(kFloats));
  unary<AtanOp>(r, "Atan", always(kFloats));
  unary<SinhOp>(r, "Sinh", always(kFloats));
  unary<CoshOp>(r, "Cosh", always(kFloats));
  unary<AsinhOp>(r, "Asinh", always(kFloats));
  unary<AcoshOp>(r, "Acosh", always(kFloats));
  unary<AtanhOp>(r, "Atanh", always(kFloats));
  unary<IsNaNOp>(r, "IsNaN", always(kFloats));
  unary<IsInfOp>(r, "IsInf", always(kFloats), [](const KernelContext& ctx) {
    IsInfOp op;
    op.negative = flag_attr(ctx, "detect_negative", true);
    op.positive = flag_attr(ctx, "detect_positive", true);
    return op;
  });

  // Arithmetic.
  binary<AddOp>(r, "Add", always(kNumeric));
  binary<SubOp>(r, "Sub", always(kNumeric));
  binary<MulOp>(r, "Mul", always(kNumeric));
  binary<DivOp>(r, "Div", always(kNumeric));
  plain<Pow>(r, "Pow");
  r.add("", "Mod", make_mod);
  variadic<AddOp>(r, "Sum", always(kFloats));
  variadic<AddOp>(r, "Mean", always(kFloats), true);
  variadic<MaxOp>(r, "Max", from(kFloats, kInt64, 12));
  variadic<MinOp>(r, "Min", from(kFloats, kInt64, 12));

  // Comparison and logic.
  binary<EqualOp>(r, "Equal", [](const KernelContext& ctx) {
    return types_at(ctx, kBool | kInt64, kFloats, 11) | types_at(ctx, 0, kString, 19);
  });
  binary<LessOp>(r, "Less", from(kFloats, kInt64, 9));
  binary<GreaterOp>(r, "Greater", from(kFloats, kInt64, 9));
  binary<LessOrEqualOp>(r, "LessOrEqual", always(kNumeric));
  binary<GreaterOrEqualOp>(r, "GreaterOrEqual", always(kNumeric));
  unary<NotOp>(r, "Not", always(kBool));
  binary<AndOp>(r, "And", always(kBool));
  binary<OrOp>(r, "Or", always(kBool));
  binary<XorOp>(r, "Xor", always(kBool));
  plain<Where>(r, "Where");
  plain<Clip>(r, "Clip");

  // Activations.
  unary<SigmoidOp>(r, "Sigmoid", always(kFloats));
  unary<TanhOp>(r, "Tanh", always(kFloats));
  unary<ReluOp>(r, "Relu", from(kFloats, kInt64, 14));
  unary<LeakyReluOp>(r, "LeakyRelu", always(kFloats), [](const KernelContext& ctx) {
    return LeakyReluOp{float_attr(ctx, "alpha", 0.01f)};
  });
  unary<EluOp>(r, "Elu", always(kFloats), [](const KernelContext& ctx) { return EluOp{float_attr(ctx, "alpha", 1.0f)}; });
  unary<SeluOp>(r, "Selu", always(kFloats), [](const KernelContext& ctx) {
    SeluOp op;
    op.alpha = float_attr(ctx, "alpha", op.alpha);
    op.gamma = float_attr(ctx, "gamma", op.gamma);
    return op;
  });
  unary<CeluOp>(r, "Celu", always(kFloat), [](const KernelContext& ctx) {
    const float alpha = float_attr(ctx, "alpha", 1.0f);
    if (alpha == 0.0f || !std::isfinite(alpha))
      fail(ErrorCode::InvalidModel, fmt::format("{}: alpha must be finite and non-zero, got {}", ctx.attrs.where(), alpha));
    return CeluOp{alpha};
  });
  unary<HardSigmoidOp>(r, "HardSigmoid", always(kFloats), [](const KernelContext& ctx) {
    return HardSigmoidOp{float_attr(ctx, "alpha", 0.2f), float_attr(ctx, "beta", 0.5f)};
  });
  unary<HardSwishOp>(r, "HardSwish", always(kFloats));
  unary<SoftplusOp>(r, "Softplus", always(kFloats));
  unary<SoftsignOp>(r, "Softsign", always(kFloats));
  unary<ThresholdedReluOp>(r, "ThresholdedRelu", always(kFloats), [](const KernelContext& ctx) {
    return ThresholdedReluOp{float_attr(ctx, "alpha", 1.0f)};
  });
  unary<MishOp>(r, "Mish", always(kFloats));
  r.add("", "PRelu", [](const KernelContext& ctx) -> std::unique_ptr<Kernel> {
    return std::make_unique<Binary<PReluOp>>(ctx, types_at(ctx, kFloats, kInt64, 9), PReluOp{}, true);
  });
  plain<Dropout>(r, "Dropout");
}

}  // namespace flock
