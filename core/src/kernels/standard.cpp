// Default-domain (ai.onnx) operators used by converted classic-ML models: Cast, Concat, Identity,
// Reshape, Flatten, MatMul, Gemm, Softmax, LogSoftmax, Hardmax, ArgMax, ArgMin. The elementwise
// operators (Add, Sub, Mul, Div, Sigmoid, Tanh, Relu, ...) are in elementwise.cpp.
//
// Semantics follow the ONNX specification per opset. Cast to string writes the shortest text that
// reads back to the same value, formatted like numpy's str() (the ONNX reference: "0.1", "1e-05",
// "100.0"), with the ONNX spellings "NaN", "INF", "-INF"; Cast from string parses like std::strtod /
// std::strtoll.
#include <fmt/format.h>

// GCC 12.2's AVX-512 intrinsics trip -W(maybe-)uninitialized inside Eigen's GEMM under -march=native
// (GCC PR 105593, fixed in 12.3): silence them for the headers only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/Core>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "gemm.hpp"
#include "broadcast.hpp"
#include "flock/checked.hpp"
#include "flock/interrupt.hpp"
#include "flock/kernel.hpp"

namespace flock {
namespace {

using namespace kernels;

// Calls f(out_index, index_a, index_b) for every element of the broadcast output (MatMul batches).
template <typename F>
void broadcast_for_each(const std::vector<int64_t>& sa, const std::vector<int64_t>& sb,
                        const std::vector<int64_t>& so, F&& f) {
  const int64_t total = product(so, 0, so.size());
  if (total == 0) return;
  const size_t r = so.size();
  const std::vector<int64_t> ta = aligned_strides(sa, r), tb = aligned_strides(sb, r);
  std::vector<int64_t> idx(r, 0);
  int64_t ia = 0, ib = 0;
  for (int64_t k = 0; k < total; ++k) {
    f(k, ia, ib);
    for (size_t d = r; d-- > 0;) {
      ++idx[d];
      ia += ta[d];
      ib += tb[d];
      if (idx[d] < so[d]) break;
      ia -= ta[d] * so[d];
      ib -= tb[d] * so[d];
      idx[d] = 0;
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Cast

enum class Target { Float, Double, Int64, Int32, Int16, Int8, UInt32, UInt16, UInt8, String, Bool };

ElemType storage_type(Target t) {
  switch (t) {
    case Target::Float: return ElemType::Float;
    case Target::Double: return ElemType::Double;
    case Target::String: return ElemType::String;
    case Target::Bool: return ElemType::Bool;
    default: return ElemType::Int64;
  }
}

// x86 cvttsd2si semantics (what ONNX Runtime's static_cast produces for NaN / out-of-range values).
int64_t trunc_to_int64(double v) {
  if (!(v >= -9223372036854775808.0 && v < 9223372036854775808.0)) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(v);
}

int32_t trunc_to_int32(double v) {
  if (!(v > -2147483649.0 && v < 2147483648.0)) return std::numeric_limits<int32_t>::min();
  return static_cast<int32_t>(v);
}

// Wraps an integer to the target width (two's complement, as ONNX specifies for integer narrowing).
int64_t wrap_int(int64_t v, Target t) {
  switch (t) {
    case Target::Int32: return static_cast<int32_t>(v);
    case Target::Int16: return static_cast<int16_t>(v);
    case Target::Int8: return static_cast<int8_t>(v);
    case Target::UInt32: return static_cast<uint32_t>(v);
    case Target::UInt16: return static_cast<uint16_t>(v);
    case Target::UInt8: return static_cast<uint8_t>(v);
    default: return v;
  }
}

int64_t float_to_int(double v, Target t) {
  switch (t) {
    case Target::Int64: return trunc_to_int64(v);
    case Target::UInt32: return wrap_int(trunc_to_int64(v), t);
    default: return wrap_int(trunc_to_int32(v), t);
  }
}

// Shortest round-trip text of `v`, laid out like numpy's str(): positional for 1e-4 <= |v| < 1e16
// ("0.1", "100.0"), scientific otherwise ("1e-05", "1.5e+16").
template <typename T>
std::string float_to_string(T v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v < 0 ? "-INF" : "INF";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  const double a = std::fabs(static_cast<double>(v));
  if (a != 0.0 && (a < 1e-4 || a >= 1e16)) return sci;
  // "-1.2345e+02" -> sign, digits "12345", exponent 2.
  const size_t e = sci.find('e');
  const int exp10 = std::atoi(sci.c_str() + e + 1);
  std::string sign = sci[0] == '-' ? "-" : "";
  std::string digits;
  for (size_t k = sign.size(); k < e; ++k)
    if (sci[k] != '.') digits += sci[k];
  std::string text;
  if (exp10 >= 0) {
    const size_t int_len = static_cast<size_t>(exp10) + 1;
    if (digits.size() < int_len) digits.append(int_len - digits.size(), '0');
    std::string frac = digits.substr(int_len);
    text = digits.substr(0, int_len) + "." + (frac.empty() ? "0" : frac);
  } else {
    text = "0." + std::string(static_cast<size_t>(-exp10 - 1), '0') + digits;
  }
  return sign + text;
}

class Cast final : public Kernel {
 public:
  explicit Cast(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    const onnx::AttributeProto* to = nullptr;
    for (const auto& a : ctx.node.attribute())
      if (a.name() == "to") to = &a;
    if (!to) fail(ErrorCode::InvalidModel, fmt::format("{}: lacks required attribute 'to'", where_));
    using TP = onnx::TensorProto;
    int dt = 0;
    if (to->type() == onnx::AttributeProto::STRING || (!to->has_i() && to->has_s())) {
      TP::DataType parsed;
      if (!TP::DataType_Parse(to->s(), &parsed))
        fail(ErrorCode::UnsupportedOperator, fmt::format("{}: unknown target type '{}'", where_, to->s()));
      dt = parsed;
    } else {
      dt = static_cast<int>(to->i());
    }
    switch (dt) {
      case TP::FLOAT: target_ = Target::Float; break;
      case TP::DOUBLE: target_ = Target::Double; break;
      case TP::INT64: target_ = Target::Int64; break;
      case TP::INT32: target_ = Target::Int32; break;
      case TP::INT16: target_ = Target::Int16; break;
      case TP::INT8: target_ = Target::Int8; break;
      case TP::UINT32: target_ = Target::UInt32; break;
      case TP::UINT16: target_ = Target::UInt16; break;
      case TP::UINT8: target_ = Target::UInt8; break;
      case TP::STRING: target_ = Target::String; break;
      case TP::BOOL: target_ = Target::Bool; break;
      default: {
        const std::string name =
            TP::DataType_IsValid(dt) ? TP::DataType_Name(static_cast<TP::DataType>(dt)) : std::to_string(dt);
        fail(ErrorCode::UnsupportedOperator, fmt::format("{}: cast to {} is not supported", where_, name));
      }
    }
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "input");
    Tensor y(storage_type(target_), x.shape);
    const size_t n = x.size();
    for (size_t k = 0; k < n; ++k) convert(x, k, y);
    set_out(out, 0, std::move(y));
  }

 private:
  void convert(const Tensor& x, size_t k, Tensor& y) const {
    if (x.type == ElemType::String) {
      from_string(x.s[k], k, y);
      return;
    }
    const bool is_int = x.type == ElemType::Int64 || x.type == ElemType::Bool;
    const int64_t iv = x.type == ElemType::Int64 ? x.i[k] : x.type == ElemType::Bool ? (x.b[k] ? 1 : 0) : 0;
    const double dv = x.type == ElemType::Float ? static_cast<double>(x.f[k])
                      : x.type == ElemType::Double ? x.d[k]
                                                   : static_cast<double>(iv);
    switch (target_) {
      case Target::Float: y.f[k] = x.type == ElemType::Int64 ? static_cast<float>(iv) : static_cast<float>(dv); break;
      case Target::Double: y.d[k] = dv; break;
      case Target::String:
        y.s[k] = is_int ? std::to_string(iv) : x.type == ElemType::Float ? float_to_string(x.f[k]) : float_to_string(dv);
        break;
      case Target::Bool: y.b[k] = is_int ? iv != 0 : dv != 0.0; break;  // NaN -> true
      default: y.i[k] = is_int ? wrap_int(iv, target_) : float_to_int(dv, target_); break;
    }
  }

  void from_string(const std::string& s, size_t k, Tensor& y) const {
    const char* begin = s.c_str();
    char* end = nullptr;
    errno = 0;
    switch (target_) {
      case Target::String: y.s[k] = s; return;
      case Target::Float:
      case Target::Double: {
        const double v = std::strtod(begin, &end);
        check_parse(s, begin, end, "a number");
        if (target_ == Target::Float) y.f[k] = static_cast<float>(v);
        else y.d[k] = v;
        return;
      }
      case Target::Bool:
      case Target::UInt32:
      case Target::UInt16:
      case Target::UInt8: {
        const unsigned long long v = std::strtoull(begin, &end, 10);
        check_parse(s, begin, end, "an unsigned integer");
        if (target_ == Target::Bool) y.b[k] = v != 0;
        else y.i[k] = wrap_int(static_cast<int64_t>(v), target_);
        return;
      }
      default: {
        const long long v = std::strtoll(begin, &end, 10);
        check_parse(s, begin, end, "an integer");
        y.i[k] = wrap_int(static_cast<int64_t>(v), target_);
        return;
      }
    }
  }

  void check_parse(const std::string& s, const char* begin, const char* end, const char* what) const {
    if (end == begin)
      fail(ErrorCode::InvalidInput, fmt::format("{}: cannot convert '{}' to {}", where_, s, what));
    if (errno == ERANGE)
      fail(ErrorCode::InvalidInput, fmt::format("{}: '{}' is out of range for {}", where_, s, what));
  }

  std::string where_;
  Target target_ = Target::Float;
};

// ---------------------------------------------------------------------------------------------------
// Identity

class Identity final : public Kernel {
 public:
  explicit Identity(const KernelContext& ctx) : where_(ctx.attrs.where()) {}
  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    set_out(out, 0, input(in, 0, where_, "input"));
  }

 private:
  std::string where_;
};

// ---------------------------------------------------------------------------------------------------
// Concat

class Concat final : public Kernel {
 public:
  explicit Concat(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    if (ctx.attrs.has("axis")) axis_ = ctx.attrs.get_int("axis");
    else if (ctx.opset >= 4) fail(ErrorCode::InvalidModel, fmt::format("{}: lacks required attribute 'axis'", where_));
    else axis_ = 1;  // opset 1 default
    if (ctx.node.input_size() < 1) fail(ErrorCode::InvalidModel, fmt::format("{}: has no inputs", where_));
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    if (in.empty()) fail(ErrorCode::InvalidInput, fmt::format("{}: no inputs", where_));
    const Tensor& first = input(in, 0, where_, "inputs");
    const int64_t rank = static_cast<int64_t>(first.shape.size());
    if (rank == 0) fail(ErrorCode::InvalidInput, fmt::format("{}: cannot concatenate scalars", where_));
    const int64_t axis = normalize_axis(axis_, rank, false, where_);
    const size_t ax = static_cast<size_t>(axis);
    std::vector<int64_t> shape = first.shape;
    shape[ax] = 0;
    for (size_t k = 0; k < in.size(); ++k) {
      const Tensor& t = input(in, k, where_, "inputs");
      if (t.type != first.type)
        fail(ErrorCode::InvalidInput, fmt::format("{}: input {} has element type {}; input 0 has {}", where_, k,
                                                  to_string(t.type), to_string(first.type)));
      bool ok = t.shape.size() == first.shape.size();
      for (size_t d = 0; ok && d < t.shape.size(); ++d) ok = d == ax || t.shape[d] == first.shape[d];
      if (!ok)
        fail(ErrorCode::InvalidInput, fmt::format("{}: input {} has shape {}, which does not fit input 0's {} along "
                                                  "axis {}",
                                                  where_, k, shape_str(t.shape), shape_str(first.shape), axis));
      shape[ax] = checked_add(shape[ax], t.shape[ax], fmt::format("{}: output size along axis {}", where_, axis));
    }
    const int64_t outer = product(first.shape, 0, ax);
    const int64_t inner = product(first.shape, ax + 1, first.shape.size());
    Tensor y(first.type, shape);
    dispatch(y.type, [&](auto tag) {
      using T = typename decltype(tag)::type;
      std::vector<T>& dst = data_of<T>(y);
      size_t o = 0;
      for (int64_t r = 0; r < outer; ++r) {
        for (const Tensor* t : in) {
          const std::vector<T>& src = data_of<T>(*t);
          const size_t chunk = static_cast<size_t>(t->shape[ax] * inner);
          const size_t from = static_cast<size_t>(r) * chunk;
          std::copy(src.begin() + static_cast<std::ptrdiff_t>(from),
                    src.begin() + static_cast<std::ptrdiff_t>(from + chunk), dst.begin() + static_cast<std::ptrdiff_t>(o));
          o += chunk;
        }
      }
    });
    set_out(out, 0, std::move(y));
  }

 private:
  std::string where_;
  int64_t axis_ = 1;
};

// ---------------------------------------------------------------------------------------------------
// Reshape (opset < 5: `shape` attribute; opset >= 5: int64 shape input; opset 14: allowzero)

class Reshape final : public Kernel {
 public:
  explicit Reshape(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    allowzero_ = ctx.attrs.get_int("allowzero", 0) != 0;
    if (ctx.opset > 0 && ctx.opset < 5) {
      if (!ctx.attrs.has("shape"))
        fail(ErrorCode::InvalidModel, fmt::format("{}: lacks required attribute 'shape'", where_));
      attr_shape_ = ctx.attrs.get_ints("shape");
      from_attr_ = true;
    } else if (ctx.node.input_size() < 2) {
      fail(ErrorCode::InvalidModel, fmt::format("{}: needs two inputs (data and shape), has {}", where_,
                                                ctx.node.input_size()));
    }
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    run_donated(in, {}, out);
  }

  // A donated input is moved, not copied.
  void run_donated(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& donated,
                   std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "data");
    std::vector<int64_t> req;
    if (from_attr_) {
      req = attr_shape_;
    } else {
      const Tensor& s = input(in, 1, where_, "shape");
      if (s.type != ElemType::Int64)
        fail(ErrorCode::InvalidInput,
             fmt::format("{}: shape input has element type {}; expected int64", where_, to_string(s.type)));
      if (s.shape.size() > 1)
        fail(ErrorCode::InvalidInput, fmt::format("{}: shape input has rank {}; expected 1", where_, s.shape.size()));
      req = s.i;
    }
    int infer = -1;
    bool has_zero = false;
    for (size_t k = 0; k < req.size(); ++k) {
      int64_t& d = req[k];
      if (d == -1) {
        if (infer >= 0) fail(ErrorCode::InvalidInput, fmt::format("{}: shape {} has more than one -1", where_, shape_str(req)));
        infer = static_cast<int>(k);
        continue;
      }
      if (d < -1) fail(ErrorCode::InvalidInput, fmt::format("{}: shape {} has a negative dimension", where_, shape_str(req)));
      if (d == 0) {
        has_zero = true;
        if (!allowzero_) {
          if (k >= x.shape.size())
            fail(ErrorCode::InvalidInput, fmt::format("{}: shape {} copies dimension {} (0) but the input {} has rank {}",
                                                      where_, shape_str(req), k, shape_str(x.shape), x.shape.size()));
          d = x.shape[k];
        }
      }
    }
    // The product of the given dimensions, checked: a target like [2^62, 4] must not wrap around to
    // the input's size.
    std::vector<int64_t> given = req;
    if (infer >= 0) given[static_cast<size_t>(infer)] = 1;
    const int64_t known = checked_numel(given, fmt::format("{}: target shape", where_), ErrorCode::InvalidInput);
    if (allowzero_ && has_zero && infer >= 0)
      fail(ErrorCode::InvalidInput, fmt::format("{}: shape {} has both 0 and -1 with allowzero", where_, shape_str(req)));
    const int64_t total = x.numel();
    if (infer >= 0) {
      if (known == 0 || total % known != 0)
        fail(ErrorCode::InvalidInput, fmt::format("{}: cannot reshape {} into {}", where_, shape_str(x.shape),
                                                  shape_str(req)));
      req[static_cast<size_t>(infer)] = total / known;
    } else if (known != total) {
      fail(ErrorCode::InvalidInput,
           fmt::format("{}: cannot reshape {} ({} values) into {}", where_, shape_str(x.shape), total, shape_str(req)));
    }
    Tensor y = !donated.empty() && donated[0] ? std::move(*donated[0]) : x;
    y.shape = std::move(req);
    set_out(out, 0, std::move(y));
  }

 private:
  std::string where_;
  bool allowzero_ = false;
  bool from_attr_ = false;
  std::vector<int64_t> attr_shape_;
};

// ---------------------------------------------------------------------------------------------------
// Flatten: [prod(dims[:axis]), prod(dims[axis:])]

class Flatten final : public Kernel {
 public:
  explicit Flatten(const KernelContext& ctx) : where_(ctx.attrs.where()), axis_(ctx.attrs.get_int("axis", 1)) {
    if (ctx.opset > 0 && ctx.opset < 11 && axis_ < 0)
      fail(ErrorCode::InvalidModel, fmt::format("{}: negative axis {} needs opset 11", where_, axis_));
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    run_donated(in, {}, out);
  }

  // A donated input is moved, not copied.
  void run_donated(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& donated,
                   std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "input");
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    const size_t axis = static_cast<size_t>(normalize_axis(axis_, rank, true, where_));
    std::vector<int64_t> shape{product(x.shape, 0, axis), product(x.shape, axis, x.shape.size())};
    Tensor y = !donated.empty() && donated[0] ? std::move(*donated[0]) : x;
    y.shape = std::move(shape);
    set_out(out, 0, std::move(y));
  }

 private:
  std::string where_;
  int64_t axis_ = 1;
};

// Products of at least this many multiply-adds go to oneDNN (gemm.hpp); smaller ones stay in Eigen,
// where a call costs less than oneDNN's dispatch.
constexpr int64_t kGemmMinMacs = int64_t(1) << 14;
// Products with fewer output columns than this stay in Eigen too: a classifier's last layer (64 -> 2)
// is a few multiply-adds per row, and oneDNN generates each new sgemm shape's code on its first call
// in a process (30-50 ms, measured in parallel workers), which a fresh backend or worker pays per
// query.
constexpr int64_t kGemmMinOutputs = 8;

// ---------------------------------------------------------------------------------------------------
// MatMul (numpy matmul semantics, batched with broadcasting)

template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Rows of a product's output computed per call, so that the run polls for interrupts every
// kProductChunkMacs multiply-adds (5-20 ms on one core) but still hands the BLAS enough rows to
// amortise packing the right-hand matrix, which it does again for every call (2^28: a 1024 x 1024
// weight is packed once per 256 rows, a few percent of the product).
constexpr int64_t kProductChunkMacs = int64_t(1) << 28;
inline int64_t product_chunk_rows(int64_t k, int64_t n) {
  const int64_t per_row = std::max<int64_t>(k, 1) * std::max<int64_t>(n, 1);
  return std::max<int64_t>(1, kProductChunkMacs / per_row);
}

class MatMul final : public Kernel {
 public:
  explicit MatMul(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    if (ctx.node.input_size() < 2)
      fail(ErrorCode::InvalidModel, fmt::format("{}: needs two inputs, has {}", where_, ctx.node.input_size()));
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& a = input(in, 0, where_, "A");
    const Tensor& b = input(in, 1, where_, "B");
    if (a.type != b.type)
      fail(ErrorCode::InvalidInput, fmt::format("{}: inputs have element types {} and {}; they must match", where_,
                                                to_string(a.type), to_string(b.type)));
    if (a.shape.empty() || b.shape.empty())
      fail(ErrorCode::InvalidInput, fmt::format("{}: scalar operands are not allowed", where_));
    std::vector<int64_t> as = a.shape, bs = b.shape;
    const bool squeeze_m = as.size() == 1, squeeze_n = bs.size() == 1;
    if (squeeze_m) as.insert(as.begin(), 1);
    if (squeeze_n) bs.push_back(1);
    const int64_t m = as[as.size() - 2], k = as.back(), k2 = bs[bs.size() - 2], n = bs.back();
    if (k != k2)
      fail(ErrorCode::InvalidInput, fmt::format("{}: shapes {} and {} do not fit (inner dimensions {} and {})", where_,
                                                shape_str(a.shape), shape_str(b.shape), k, k2));
    const std::vector<int64_t> ba(as.begin(), as.end() - 2), bb(bs.begin(), bs.end() - 2);
    std::vector<int64_t> batch;
    if (!broadcast_shape(ba, bb, batch))
      fail(ErrorCode::InvalidInput, fmt::format("{}: batch dimensions of {} and {} do not broadcast", where_,
                                                shape_str(a.shape), shape_str(b.shape)));
    std::vector<int64_t> shape = batch;
    if (!squeeze_m) shape.push_back(m);
    if (!squeeze_n) shape.push_back(n);
    Tensor y(a.type, shape);
    switch (a.type) {
      case ElemType::Float: compute<float>(a, b, y, ba, bb, batch, m, k, n); break;
      case ElemType::Double: compute<double>(a, b, y, ba, bb, batch, m, k, n); break;
      case ElemType::Int64: compute<int64_t>(a, b, y, ba, bb, batch, m, k, n); break;
      default: require_type(where_, a.type, kNumeric);
    }
    set_out(out, 0, std::move(y));
  }

 private:
  template <typename T>
  void compute(const Tensor& a, const Tensor& b, Tensor& y, const std::vector<int64_t>& ba,
               const std::vector<int64_t>& bb, const std::vector<int64_t>& batch, int64_t m, int64_t k,
               int64_t n) const {
    const T* pa = data_of<T>(a).data();
    const T* pb = data_of<T>(b).data();
    T* py = data_of<T>(y).data();
    const int64_t step = product_chunk_rows(k, n);
    auto one = [&](int64_t o, int64_t ia, int64_t ib) {
      Eigen::Map<RowMat<T>> ym(py + o * m * n, m, n);
      if (k == 0) {
        ym.setZero();
        return;
      }
      Eigen::Map<const RowMat<T>> am(pa + ia * m * k, m, k);
      Eigen::Map<const RowMat<T>> bm(pb + ib * k * n, k, n);
      for (int64_t r0 = 0; r0 < m; r0 += step) {  // row chunks, so a large product can be interrupted
        poll_interrupt();
        const int64_t rows = std::min(step, m - r0);
        if constexpr (std::is_same_v<T, float>) {
          if (rows > 1 && n >= kGemmMinOutputs && rows * n * k >= kGemmMinMacs &&
              sgemm(false, false, rows, n, k, 1.0f, am.data() + r0 * k, k, bm.data(), n, 0.0f,
                    ym.data() + r0 * n, n))
            continue;
        }
        ym.middleRows(r0, rows).noalias() = am.middleRows(r0, rows) * bm;
      }
    };
    if (batch.empty()) {
      one(0, 0, 0);
    } else {
      broadcast_for_each(ba, bb, batch, one);
    }
  }

  std::string where_;
};

// ---------------------------------------------------------------------------------------------------
// Gemm: Y = alpha * op(A) · op(B) + beta * C, C unidirectionally broadcast to [M, N].


class Gemm final : public Kernel {
 public:
  explicit Gemm(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    const Attrs& a = ctx.attrs;
    alpha_ = a.get_float("alpha", 1.0f);
    beta_ = a.get_float("beta", 1.0f);
    trans_a_ = a.get_int("transA", 0) != 0;
    trans_b_ = a.get_int("transB", 0) != 0;
    if (ctx.node.input_size() < 2)
      fail(ErrorCode::InvalidModel, fmt::format("{}: needs inputs A and B, has {}", where_, ctx.node.input_size()));
    if (ctx.opset > 0 && ctx.opset < 11 && !has_input(ctx, 2))
      fail(ErrorCode::InvalidModel, fmt::format("{}: input C is required before opset 11", where_));
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& a = input(in, 0, where_, "A");
    const Tensor& b = input(in, 1, where_, "B");
    const Tensor* c = in.size() > 2 ? in[2] : nullptr;
    if (c) c = &input(in, 2, where_, "C");
    if (a.type != b.type || (c && c->type != a.type))
      fail(ErrorCode::InvalidInput, fmt::format("{}: inputs have different element types", where_));
    if (a.shape.size() != 2 || b.shape.size() != 2)
      fail(ErrorCode::InvalidInput, fmt::format("{}: A {} and B {} must be 2-D", where_, shape_str(a.shape),
                                                shape_str(b.shape)));
    const int64_t m = trans_a_ ? a.shape[1] : a.shape[0];
    const int64_t k = trans_a_ ? a.shape[0] : a.shape[1];
    const int64_t k2 = trans_b_ ? b.shape[1] : b.shape[0];
    const int64_t n = trans_b_ ? b.shape[0] : b.shape[1];
    if (k != k2)
      fail(ErrorCode::InvalidInput, fmt::format("{}: A {} and B {} do not fit (transA={}, transB={})", where_,
                                                shape_str(a.shape), shape_str(b.shape), trans_a_ ? 1 : 0,
                                                trans_b_ ? 1 : 0));
    if (c) {
      std::vector<int64_t> s;
      if (!broadcast_shape(c->shape, {m, n}, s) || s != std::vector<int64_t>{m, n})
        fail(ErrorCode::InvalidInput,
             fmt::format("{}: C {} does not broadcast to [{}, {}]", where_, shape_str(c->shape), m, n));
    }
    Tensor y = Tensor::uninitialized(a.type, {m, n});  // compute writes every element
    switch (a.type) {
      case ElemType::Float: compute<float>(a, b, c, y, m, k, n); break;
      case ElemType::Double: compute<double>(a, b, c, y, m, k, n); break;
      default: require_type(where_, a.type, kFloats);
    }
    set_out(out, 0, std::move(y));
  }

 private:
  template <typename T>
  void compute(const Tensor& a, const Tensor& b, const Tensor* c, Tensor& y, int64_t m, int64_t k, int64_t n) const {
    Eigen::Map<const RowMat<T>> am(data_of<T>(a).data(), a.shape[0], a.shape[1]);
    Eigen::Map<const RowMat<T>> bm(data_of<T>(b).data(), b.shape[0], b.shape[1]);
    Eigen::Map<RowMat<T>> ym(data_of<T>(y).data(), m, n);
    const T alpha = static_cast<T>(alpha_), beta = static_cast<T>(beta_);
    // Y starts as beta * C (broadcast) or zeros, then the product is accumulated into it: one pass
    // over Y for the bias instead of a second one after the product.
    if (c && beta_ != 0.0f && m > 0 && n > 0) {
      const T* pc = data_of<T>(*c).data();
      const int64_t nc = c->numel();
      const bool row = nc == n && (c->shape.size() == 1 || (c->shape.size() == 2 && c->shape[0] == 1));
      if (nc == 1) {
        ym.setConstant(beta * pc[0]);
      } else if (row) {
        Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>> cr(pc, n);
        if (beta_ == 1.0f) ym.rowwise() = cr;
        else ym.rowwise() = beta * cr;
      } else {
        T* py = data_of<T>(y).data();
        broadcast_binary(py, y.shape, pc, c->shape, py, y.shape, [beta](T, T cv) { return beta * cv; });
      }
    } else {
      ym.setZero();
    }
    if (k == 0 || m == 0 || n == 0) return;
    // Row chunks of Y, so a large product can be interrupted (op(A)'s rows r0.. are A's rows, or
    // its columns when transposed).
    const int64_t step = product_chunk_rows(k, n);
    for (int64_t r0 = 0; r0 < m; r0 += step) {
      poll_interrupt();
      const int64_t rows = std::min(step, m - r0);
      auto yc = ym.middleRows(r0, rows);
      if constexpr (std::is_same_v<T, float>) {
        // oneDNN for products past a matrix-vector one (beta = 1: Y holds C).
        const float* ac = trans_a_ ? am.data() + r0 : am.data() + r0 * a.shape[1];
        if (m > 1 && n >= kGemmMinOutputs && m * n * k >= kGemmMinMacs &&
            sgemm(trans_a_, trans_b_, rows, n, k, alpha, ac, a.shape[1], bm.data(), b.shape[1], 1.0f,
                       yc.data(), n))
          continue;
      }
      if (!trans_a_ && n < kGemmMinOutputs) {
        // A few outputs (a classifier's last layer): one matrix-vector product per output, with
        // no packing of B as a matrix product does on every call.
        for (int64_t j = 0; j < n; ++j) {
          if (trans_b_) yc.col(j).noalias() += alpha * (am.middleRows(r0, rows) * bm.row(j).transpose());
          else yc.col(j).noalias() += alpha * (am.middleRows(r0, rows) * bm.col(j));
        }
      } else if (!trans_a_ && !trans_b_) {
        yc.noalias() += alpha * am.middleRows(r0, rows) * bm;
      } else if (trans_a_ && !trans_b_) {
        yc.noalias() += alpha * am.middleCols(r0, rows).transpose() * bm;
      } else if (!trans_a_) {
        yc.noalias() += alpha * am.middleRows(r0, rows) * bm.transpose();
      } else {
        yc.noalias() += alpha * am.middleCols(r0, rows).transpose() * bm.transpose();
      }
    }
  }

  std::string where_;
  float alpha_ = 1.0f, beta_ = 1.0f;
  bool trans_a_ = false, trans_b_ = false;
};

// ---------------------------------------------------------------------------------------------------
// Softmax, LogSoftmax, Hardmax: opset < 13 coerces the input to 2-D at `axis` (default 1) and works
// on each row; opset >= 13 works along the single axis `axis` (default -1).

// Whether `v` replaces `best` as the extreme value (numpy argmax/argmin: the first NaN wins, or the
// last one with select_last_index).
template <bool IsMax, typename T>
inline bool better(T v, T best, bool last) {
  if constexpr (std::is_floating_point_v<T>) {
    if (std::isnan(best)) return last && std::isnan(v);
    if (std::isnan(v)) return true;
  }
  if constexpr (IsMax) return last ? v >= best : v > best;
  else return last ? v <= best : v < best;
}

enum class SoftKind { Softmax, LogSoftmax, Hardmax };

class SoftmaxFamily final : public Kernel {
 public:
  SoftmaxFamily(const KernelContext& ctx, SoftKind kind) : where_(ctx.attrs.where()), kind_(kind) {
    legacy_ = ctx.opset > 0 && ctx.opset < 13;
    axis_ = ctx.attrs.get_int("axis", legacy_ ? 1 : -1);
    if (ctx.node.input_size() < 1) fail(ErrorCode::InvalidModel, fmt::format("{}: has no input", where_));
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "input");
    require_type(where_, x.type, kFloats);
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    int64_t outer = 1, n = 1, inner = 1;
    if (rank > 0) {
      const size_t axis = static_cast<size_t>(normalize_axis(axis_, rank, false, where_));
      outer = product(x.shape, 0, axis);
      if (legacy_) {
        n = product(x.shape, axis, x.shape.size());
      } else {
        n = x.shape[axis];
        inner = product(x.shape, axis + 1, x.shape.size());
      }
    }
    Tensor y(x.type, x.shape);
    if (x.type == ElemType::Float) compute(x.f.data(), y.f.data(), outer, n, inner);
    else compute(x.d.data(), y.d.data(), outer, n, inner);
    set_out(out, 0, std::move(y));
  }

 private:
  template <typename T>
  void compute(const T* x, T* y, int64_t outer, int64_t n, int64_t inner) const {
    if (kind_ == SoftKind::Softmax && inner == 1) {
      softmax_rows(x, y, outer, n);
      return;
    }
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t i = 0; i < inner; ++i) {
        const T* xr = x + o * n * inner + i;
        T* yr = y + o * n * inner + i;
        switch (kind_) {
          case SoftKind::Softmax:
          case SoftKind::LogSoftmax: {
            double mx = -std::numeric_limits<double>::infinity();
            for (int64_t j = 0; j < n; ++j) mx = std::max(mx, static_cast<double>(xr[j * inner]));
            double sum = 0.0;
            if (kind_ == SoftKind::Softmax) {
              // exp(x - max) in double; stored in y, then scaled by 1 / sum.
              for (int64_t j = 0; j < n; ++j) {
                const double e = std::exp(static_cast<double>(xr[j * inner]) - mx);
                sum += e;
                yr[j * inner] = static_cast<T>(e);
              }
              const double inv = 1.0 / sum;
              for (int64_t j = 0; j < n; ++j) yr[j * inner] = static_cast<T>(static_cast<double>(yr[j * inner]) * inv);
            } else {
              for (int64_t j = 0; j < n; ++j) sum += std::exp(static_cast<double>(xr[j * inner]) - mx);
              const double shift = mx + std::log(sum);
              for (int64_t j = 0; j < n; ++j) yr[j * inner] = static_cast<T>(static_cast<double>(xr[j * inner]) - shift);
            }
            break;
          }
          case SoftKind::Hardmax: {
            int64_t best = 0;
            for (int64_t j = 1; j < n; ++j)
              if (better<true>(xr[j * inner], xr[best * inner], false)) best = j;
            for (int64_t j = 0; j < n; ++j) yr[j * inner] = j == best ? T(1) : T(0);
            break;
          }
        }
      }
    }
  }

  // Softmax over rows of n contiguous values (a classifier's scores): the same arithmetic as the
  // general loop, without its per-element dispatch; the largest value's exp(0) is exactly 1 and is
  // not computed (for two classes, half the exp calls).
  template <typename T>
  static void softmax_rows(const T* x, T* y, int64_t rows, int64_t n) {
    for (int64_t o = 0; o < rows; ++o) {
      const T* xr = x + o * n;
      T* yr = y + o * n;
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < n; ++j) mx = std::max(mx, static_cast<double>(xr[j]));
      double sum = 0.0;
      for (int64_t j = 0; j < n; ++j) {
        const double d = static_cast<double>(xr[j]) - mx;
        const double e = d == 0.0 ? 1.0 : std::exp(d);
        sum += e;
        yr[j] = static_cast<T>(e);
      }
      const double inv = 1.0 / sum;
      for (int64_t j = 0; j < n; ++j) yr[j] = static_cast<T>(static_cast<double>(yr[j]) * inv);
    }
  }

  std::string where_;
  SoftKind kind_;
  bool legacy_ = false;
  int64_t axis_ = -1;
};

// ---------------------------------------------------------------------------------------------------
// ArgMax / ArgMin (axis default 0, keepdims default 1, select_last_index default 0); int64 output.

template <bool IsMax>
class ArgExtreme final : public Kernel {
 public:
  explicit ArgExtreme(const KernelContext& ctx)
      : where_(ctx.attrs.where()),
        axis_(ctx.attrs.get_int("axis", 0)),
        keepdims_(ctx.attrs.get_int("keepdims", 1) != 0),
        last_(ctx.attrs.get_int("select_last_index", 0) != 0) {
    if (ctx.node.input_size() < 1) fail(ErrorCode::InvalidModel, fmt::format("{}: has no input", where_));
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "data");
    require_type(where_, x.type, kNumeric);
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    if (rank == 0) fail(ErrorCode::InvalidInput, fmt::format("{}: input is a scalar", where_));
    const size_t axis = static_cast<size_t>(normalize_axis(axis_, rank, false, where_));
    const int64_t outer = product(x.shape, 0, axis), n = x.shape[axis],
                  inner = product(x.shape, axis + 1, x.shape.size());
    if (n == 0) fail(ErrorCode::InvalidInput, fmt::format("{}: axis {} has size 0", where_, axis));
    std::vector<int64_t> shape = x.shape;
    if (keepdims_) shape[axis] = 1;
    else shape.erase(shape.begin() + static_cast<std::ptrdiff_t>(axis));
    Tensor y(ElemType::Int64, shape);
    dispatch(x.type, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (in_set<T>(kNumeric)) {
        const T* v = data_of<T>(x).data();
        for (int64_t o = 0; o < outer; ++o) {
          for (int64_t i = 0; i < inner; ++i) {
            const T* row = v + o * n * inner + i;
            int64_t best = 0;
            for (int64_t j = 1; j < n; ++j)
              if (better<IsMax>(row[j * inner], row[best * inner], last_)) best = j;
            y.i[static_cast<size_t>(o * inner + i)] = best;
          }
        }
      }
    });
    set_out(out, 0, std::move(y));
  }

 private:
  std::string where_;
  int64_t axis_ = 0;
  bool keepdims_ = true;
  bool last_ = false;
};

template <typename K>
void add(KernelRegistry& r, const char* op) {
  r.add("", op, [](const KernelContext& ctx) -> std::unique_ptr<Kernel> { return std::make_unique<K>(ctx); });
}

void add_soft(KernelRegistry& r, const char* op, SoftKind kind) {
  r.add("", op, [kind](const KernelContext& ctx) -> std::unique_ptr<Kernel> {
    return std::make_unique<SoftmaxFamily>(ctx, kind);
  });
}

}  // namespace

void register_standard_kernels(KernelRegistry& r) {
  add<Cast>(r, "Cast");
  add<Concat>(r, "Concat");
  add<Identity>(r, "Identity");
  add<Reshape>(r, "Reshape");
  add<Flatten>(r, "Flatten");
  add<MatMul>(r, "MatMul");
  add<Gemm>(r, "Gemm");
  add_soft(r, "Softmax", SoftKind::Softmax);
  add_soft(r, "LogSoftmax", SoftKind::LogSoftmax);
  add_soft(r, "Hardmax", SoftKind::Hardmax);
  add<ArgExtreme<true>>(r, "ArgMax");
  add<ArgExtreme<false>>(r, "ArgMin");
}

}  // namespace flock
