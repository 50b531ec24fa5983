// Neural-network operators of the default ONNX domain: Conv, MaxPool, AveragePool,
// GlobalAveragePool, GlobalMaxPool, BatchNormalization, InstanceNormalization, LayerNormalization
// and LRN, on float and double tensors.
//
// Semantics follow the ONNX specification (opsets 9-21). Where the specification leaves a case
// open, the kernels do what ONNX Runtime's CPU kernels do; each such place says so.
//
// Conv is im2col + Eigen GEMM, single-threaded. Several samples (or output rows) share one GEMM so
// that small per-sample products (a 1-D CNN at a large batch) run as one large product; the im2col
// and product buffers are per-thread scratch reused across calls, so a call allocates only its
// output tensors.
#include <fmt/format.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

// GCC 12 with AVX-512 (FLOCK_NATIVE builds) reports -Wmaybe-uninitialized inside its own
// intrinsics (_mm512_undefined_* in avx512fintrin.h) wherever Eigen's GEMM and reductions inline
// them: a known false positive of the compiler, not of this code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/Core>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "flock/checked.hpp"
#include "flock/interrupt.hpp"
#include "flock/kernel.hpp"
#include "gemm.hpp"
#include "kernel_io.hpp"

namespace flock {
namespace {

template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// dst[m, n] (+)= w[m, k] * x[k, n], all row-major and dense: oneDNN for float (gemm.hpp), Eigen
// otherwise or when oneDNN declines.
template <typename T>
void product(const T* w, const T* x, T* dst, int64_t m, int64_t k, int64_t n, bool accumulate) {
  if constexpr (std::is_same_v<T, float>) {
    if (kernels::sgemm(false, false, m, n, k, 1.0f, w, k, x, n, accumulate ? 1.0f : 0.0f, dst, n)) return;
  }
  Eigen::Map<const RowMat<T>> wm(w, m, k);
  Eigen::Map<const RowMat<T>> xm(x, k, n);
  if (accumulate) Eigen::Map<RowMat<T>>(dst, m, n).noalias() += wm * xm;
  else Eigen::Map<RowMat<T>>(dst, m, n).noalias() = wm * xm;
}
template <typename T>
using RowArr = Eigen::Array<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using Vec = Eigen::Array<T, Eigen::Dynamic, 1>;

// ---- shared helpers ----

using kernels::has_input;
using kernels::input;
using kernels::optional_input;
using kernels::product;
using kernels::set_out;
using kernels::shape_str;

template <typename T>
const T* cdata(const Tensor& t) {
  if constexpr (std::is_same_v<T, float>) return t.f.data();
  else return t.d.data();
}

template <typename T>
T* mdata(Tensor& t) {
  if constexpr (std::is_same_v<T, float>) return t.f.data();
  else return t.d.data();
}

bool is_real(ElemType t) { return t == ElemType::Float || t == ElemType::Double; }

// The element type of the main input: float or double, else the operator does not run it.
void require_real(const Tensor& t, const std::string& where, const char* name) {
  if (!is_real(t.type))
    fail(ErrorCode::UnsupportedOperator,
         fmt::format("{}: element type {} of input '{}' is not supported (float and double only)", where,
                     to_string(t.type), name));
}

// An input that must have the element type of X.
void require_type_of(const Tensor& t, const Tensor& x, const std::string& where, const char* name) {
  if (t.type != x.type)
    fail(ErrorCode::InvalidInput, fmt::format("{}: input '{}' has element type {}; X has {}, they must match", where,
                                              name, to_string(t.type), to_string(x.type)));
}

// A per-channel parameter: 1-D of size C.
void require_channels(const Tensor& t, int64_t c, const std::string& where, const char* name) {
  if (t.shape.size() != 1 || t.shape[0] != c)
    fail(ErrorCode::InvalidInput, fmt::format("{}: input '{}' has shape {}; X has {} channels, so it must be [{}]",
                                              where, name, shape_str(t.shape), c, c));
}

// Per-thread scratch buffers (slot 0, 1, ...), grown on demand and kept: kernels are const and may
// run on several threads at once.
template <typename T>
T* scratch(int slot, size_t n) {
  static thread_local std::vector<T> buffers[2];
  std::vector<T>& v = buffers[slot];
  if (v.size() < n) v.resize(n);
  return v.data();
}

float finite_float_attr(const Attrs& a, const char* name, float dflt, const std::string& where) {
  const float v = a.get_float(name, dflt);
  if (!std::isfinite(v)) fail(ErrorCode::InvalidModel, fmt::format("{}: {} must be finite, got {}", where, name, v));
  return v;
}

float epsilon_attr(const Attrs& a, const std::string& where) {
  const float eps = finite_float_attr(a, "epsilon", 1e-5f, where);
  if (eps < 0) fail(ErrorCode::InvalidModel, fmt::format("{}: epsilon must not be negative, got {}", where, eps));
  return eps;
}

int64_t flag_attr(const Attrs& a, const char* name, const std::string& where) {
  const int64_t v = a.get_int(name, 0);
  if (v != 0 && v != 1) fail(ErrorCode::InvalidModel, fmt::format("{}: {} must be 0 or 1, got {}", where, name, v));
  return v;
}

// ---------------------------------------------------------------------------------------------------
// Sliding-window geometry shared by Conv and the pools.

enum class AutoPad { NotSet, SameUpper, SameLower, Valid };

const char* to_string(AutoPad p) {
  switch (p) {
    case AutoPad::NotSet: return "NOTSET";
    case AutoPad::SameUpper: return "SAME_UPPER";
    case AutoPad::SameLower: return "SAME_LOWER";
    case AutoPad::Valid: return "VALID";
  }
  return "?";
}

constexpr int64_t kMaxWindowAttr = std::numeric_limits<int32_t>::max();

struct WindowAttrs {
  AutoPad auto_pad = AutoPad::NotSet;
  std::vector<int64_t> kernel;     // empty: taken from W (Conv)
  std::vector<int64_t> strides;    // empty: all 1
  std::vector<int64_t> dilations;  // empty: all 1
  std::vector<int64_t> pads;       // empty: all 0; else begins then ends
  bool ceil_mode = false;

  int64_t stride(size_t i) const { return strides.empty() ? 1 : strides[i]; }
  int64_t dilation(size_t i) const { return dilations.empty() ? 1 : dilations[i]; }
  int64_t pad_begin(size_t i) const { return pads.empty() ? 0 : pads[i]; }
  int64_t pad_end(size_t i) const { return pads.empty() ? 0 : pads[i + pads.size() / 2]; }
};

std::vector<int64_t> ints_attr(const Attrs& a, const char* name, int64_t min, const std::string& where) {
  std::vector<int64_t> v = a.get_ints(name);
  for (size_t k = 0; k < v.size(); ++k) {
    if (v[k] < min || v[k] > kMaxWindowAttr)
      fail(ErrorCode::InvalidModel, fmt::format("{}: {}[{}] is {}; it must be in [{}, {}]", where, name, k, v[k],
                                                min, kMaxWindowAttr));
  }
  return v;
}

WindowAttrs parse_window(const Attrs& a, const std::string& where, bool kernel_required) {
  WindowAttrs w;
  w.kernel = ints_attr(a, "kernel_shape", 1, where);
  if (kernel_required && w.kernel.empty())
    fail(ErrorCode::InvalidModel, fmt::format("{}: lacks required attribute 'kernel_shape'", where));
  w.strides = ints_attr(a, "strides", 1, where);
  w.dilations = ints_attr(a, "dilations", 1, where);
  w.pads = ints_attr(a, "pads", 0, where);
  const std::string ap = a.get_string("auto_pad", "NOTSET");
  if (ap == "NOTSET" || ap.empty()) w.auto_pad = AutoPad::NotSet;
  else if (ap == "SAME_UPPER") w.auto_pad = AutoPad::SameUpper;
  else if (ap == "SAME_LOWER") w.auto_pad = AutoPad::SameLower;
  else if (ap == "VALID") w.auto_pad = AutoPad::Valid;
  else
    fail(ErrorCode::InvalidModel,
         fmt::format("{}: auto_pad is '{}'; it must be NOTSET, SAME_UPPER, SAME_LOWER or VALID", where, ap));
  if (w.auto_pad != AutoPad::NotSet) {
    // The specification forbids explicit pads with auto_pad; all-zero pads are tolerated.
    for (int64_t p : w.pads) {
      if (p != 0)
        fail(ErrorCode::InvalidModel, fmt::format("{}: pads {} cannot be combined with auto_pad={}", where,
                                                  shape_str(w.pads), to_string(w.auto_pad)));
    }
    w.pads.clear();
  }
  return w;
}

// Attribute lengths against the number of spatial dimensions: InvalidModel when checked against
// kernel_shape at load, InvalidInput when checked against W at run time.
void check_window_lengths(const WindowAttrs& w, size_t dims, const std::string& where,
                          ErrorCode code = ErrorCode::InvalidModel) {
  auto check = [&](const std::vector<int64_t>& v, const char* name, size_t want) {
    if (!v.empty() && v.size() != want)
      fail(code, fmt::format("{}: {} has {} values; {} spatial dimensions need {}", where, name,
                                                v.size(), dims, want));
  };
  check(w.kernel, "kernel_shape", dims);
  check(w.strides, "strides", dims);
  check(w.dilations, "dilations", dims);
  check(w.pads, "pads", 2 * dims);
}

// One spatial axis of a window operation, resolved against the input.
struct Axis {
  int64_t in = 0, k = 1, s = 1, d = 1, pb = 0, pe = 0, out = 0;
  int64_t extent() const { return (k - 1) * d + 1; }
};

std::vector<Axis> resolve_axes(const WindowAttrs& w, const std::vector<int64_t>& kernel,
                               const std::vector<int64_t>& x_shape, const std::string& where) {
  const size_t dims = kernel.size();
  std::vector<Axis> axes(dims);
  for (size_t i = 0; i < dims; ++i) {
    Axis& ax = axes[i];
    ax.in = x_shape[2 + i];
    ax.k = kernel[i];
    ax.s = w.stride(i);
    ax.d = w.dilation(i);
    const int64_t ext = ax.extent();
    if (w.auto_pad == AutoPad::SameUpper || w.auto_pad == AutoPad::SameLower) {
      // Output ceil(in / stride); the padding that needs (never negative) is split evenly, the odd
      // one at the end (SAME_UPPER) or the beginning (SAME_LOWER).
      // (Checked: an empty X may still declare a spatial size near 2^63.)
      ax.out = checked_add(ax.in, ax.s - 1, where) / ax.s;
      const int64_t total =
          std::max<int64_t>(0, checked_add(checked_mul(ax.out - 1, ax.s, where), ext, where) - ax.in);
      ax.pb = w.auto_pad == AutoPad::SameUpper ? total / 2 : total - total / 2;
      ax.pe = total - ax.pb;
      continue;
    }
    if (w.auto_pad == AutoPad::NotSet) {
      ax.pb = w.pad_begin(i);
      ax.pe = w.pad_end(i);
    }
    const int64_t span = checked_add(checked_add(ax.in, ax.pb, where), ax.pe, where);
    if (span < ext)
      fail(ErrorCode::InvalidInput,
           fmt::format("{}: spatial dimension {} of X has size {}; with pads {} and {} it is smaller than the kernel "
                       "extent {}",
                       where, i, ax.in, ax.pb, ax.pe, ext));
    // ceil_mode as the specification of opsets 10-18 (and ONNX's shape inference, and ONNX
    // Runtime) has it: the last window may start in the end padding. (Opset 19 drops such a
    // window, as PyTorch does; that rule does not apply to the opsets Flock runs.)
    ax.out = (w.ceil_mode ? (span - ext + ax.s - 1) / ax.s : (span - ext) / ax.s) + 1;
  }
  return axes;
}

// Past any tensor a query can hold; guards the allocation (huge pads and dilations are legal).
constexpr int64_t kMaxOutputElements = int64_t(1) << 32;

std::vector<int64_t> window_output_shape(int64_t n, int64_t c, const std::vector<Axis>& axes,
                                         const std::string& where) {
  std::vector<int64_t> shape{n, c};
  for (const Axis& ax : axes) shape.push_back(ax.out);
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d == 0) continue;  // [0, C, 2^40] holds nothing, but its loops would still count 2^40 positions
    if (numel > kMaxOutputElements / d)
      fail(ErrorCode::LimitExceeded,
           fmt::format("{}: the output of shape {} would hold more than {} elements", where, shape_str(shape),
                       kMaxOutputElements));
    numel *= d;
  }
  return shape;
}

// ---------------------------------------------------------------------------------------------------
// Conv

// Target size (elements) of the im2col buffer of one GEMM: large enough that a product amortises
// its packing, small enough to stay in the L2 cache.
constexpr int64_t kColTarget = int64_t(1) << 16;

// Direct 1-D convolution, float, unit stride: y[o, p] = b[o] + sum_{c,k} w[o, c, k] * xp[c, p + k*d]
// over a zero-padded input plane xp. No im2col: the output is computed in register tiles of OB
// (up to 6) channels by 16 positions, each input vector loaded once per tap for all OB channels. For the
// small-channel 1-D CNNs where an im2col GEMM is dominated by packing and short dimensions.
using V8f = float __attribute__((vector_size(32)));

inline V8f load8(const float* p) {
  V8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store8(float* p, V8f v) { std::memcpy(p, &v, sizeof v); }

inline V8f splat8(float f) { return V8f{f, f, f, f, f, f, f, f}; }

// Input planes of the direct path hold at most this many floats (L1/L2 resident), and a tile's
// weights (cg * k per channel) at most kDirectMaxTaps.
constexpr int64_t kDirectMaxPlane = int64_t(1) << 15;
constexpr int64_t kDirectMaxTaps = 1024;

// OB output channels starting at w (rows of ck = cg * k weights) over `out` positions. xp: cg
// planes of lp floats, readable up to 16 positions past the last output (zeros there). y: OB rows
// of ystride.
template <int OB>
void conv1d_tile(const float* xp, int64_t lp, const float* w, int64_t cg, int64_t k, int64_t d, const float* bias,
                 float* y, int64_t ystride, int64_t out, bool relu) {
  const int64_t ck = cg * k;
  for (int64_t p0 = 0; p0 < out; p0 += 16) {
    V8f acc[OB][2];
#pragma GCC unroll 8
    for (int o = 0; o < OB; ++o) acc[o][0] = acc[o][1] = splat8(bias ? bias[o] : 0.0f);
    for (int64_t c = 0; c < cg; ++c) {
      const float* xr = xp + c * lp + p0;
      const float* wr = w + c * k;
      for (int64_t j = 0; j < k; ++j) {
        const V8f x0 = load8(xr + j * d), x1 = load8(xr + j * d + 8);
#pragma GCC unroll 8
        for (int o = 0; o < OB; ++o) {
          const V8f wv = splat8(wr[o * ck + j]);
          acc[o][0] += wv * x0;
          acc[o][1] += wv * x1;
        }
      }
    }
    if (relu) {  // a folded Relu (x < 0 ? 0 : x: NaN passes through), in registers
      const V8f zero = splat8(0.0f);
#pragma GCC unroll 8
      for (int o = 0; o < OB; ++o) {
        acc[o][0] = acc[o][0] < zero ? zero : acc[o][0];
        acc[o][1] = acc[o][1] < zero ? zero : acc[o][1];
      }
    }
    if (p0 + 16 <= out) {
#pragma GCC unroll 8
      for (int o = 0; o < OB; ++o) {
        store8(y + o * ystride + p0, acc[o][0]);
        store8(y + o * ystride + p0 + 8, acc[o][1]);
      }
    } else {
      float tmp[16];
      for (int o = 0; o < OB; ++o) {
        store8(tmp, acc[o][0]);
        store8(tmp + 8, acc[o][1]);
        std::copy(tmp, tmp + (out - p0), y + o * ystride + p0);
      }
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// The same tile on AVX-512 (chosen at run time, the build does not assume it): 32 positions as two
// 16-float vectors and up to 12 channels (24 accumulators of the 32 registers), so each input vector
// loaded feeds twice as many multiply-adds. Same products, same order of summation per output: the
// same bits as conv1d_tile.
using V16f = float __attribute__((vector_size(64)));

template <int OB>
__attribute__((target("avx512f"))) void conv1d_tile_avx512(const float* xp, int64_t lp, const float* w, int64_t cg,
                                                            int64_t k, int64_t d, const float* bias, float* y,
                                                            int64_t ystride, int64_t out, bool relu) {
  const int64_t ck = cg * k;
  for (int64_t p0 = 0; p0 < out; p0 += 32) {
    V16f acc[OB][2];
#pragma GCC unroll 12
    for (int o = 0; o < OB; ++o) {
      const float b = bias ? bias[o] : 0.0f;
      acc[o][0] = acc[o][1] = V16f{b, b, b, b, b, b, b, b, b, b, b, b, b, b, b, b};
    }
    for (int64_t c = 0; c < cg; ++c) {
      const float* xr = xp + c * lp + p0;
      const float* wr = w + c * k;
      for (int64_t j = 0; j < k; ++j) {
        V16f x0, x1;
        std::memcpy(&x0, xr + j * d, sizeof x0);
        std::memcpy(&x1, xr + j * d + 16, sizeof x1);
#pragma GCC unroll 12
        for (int o = 0; o < OB; ++o) {
          const float wv = wr[o * ck + j];
          acc[o][0] += wv * x0;
          acc[o][1] += wv * x1;
        }
      }
    }
    if (relu) {  // a folded Relu (x < 0 ? 0 : x: NaN passes through), in registers
      const V16f zero = {};
#pragma GCC unroll 12
      for (int o = 0; o < OB; ++o) {
        acc[o][0] = acc[o][0] < zero ? zero : acc[o][0];
        acc[o][1] = acc[o][1] < zero ? zero : acc[o][1];
      }
    }
    const int64_t n = std::min<int64_t>(32, out - p0);
    for (int o = 0; o < OB; ++o) {
      if (n == 32) {
        std::memcpy(y + o * ystride + p0, &acc[o][0], sizeof(V16f));
        std::memcpy(y + o * ystride + p0 + 16, &acc[o][1], sizeof(V16f));
      } else {
        float tmp[32];
        std::memcpy(tmp, &acc[o][0], sizeof(V16f));
        std::memcpy(tmp + 16, &acc[o][1], sizeof(V16f));
        std::copy(tmp, tmp + n, y + o * ystride + p0);
      }
    }
  }
}

bool conv_avx512() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return has;
}
#else
template <int OB>
void conv1d_tile_avx512(const float*, int64_t, const float*, int64_t, int64_t, int64_t, const float*, float*, int64_t,
                        int64_t, bool) {}
bool conv_avx512() { return false; }
#endif

class Conv final : public Kernel {
 public:
  explicit Conv(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    win_ = parse_window(ctx.attrs, where_, false);
    if (!win_.kernel.empty()) check_window_lengths(win_, win_.kernel.size(), where_);
    group_ = ctx.attrs.get_int("group", 1);
    if (group_ < 1 || group_ > kMaxWindowAttr)
      fail(ErrorCode::InvalidModel, fmt::format("{}: group is {}; it must be at least 1", where_, group_));
    if (!has_input(ctx, 0) || !has_input(ctx, 1))
      fail(ErrorCode::InvalidModel, fmt::format("{}: needs inputs X and W", where_));
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "X");
    const Tensor& w = input(in, 1, where_, "W");
    const Tensor* b = optional_input(in, 2, where_, "B");
    require_real(x, where_, "X");
    require_type_of(w, x, where_, "W");
    if (b) require_type_of(*b, x, where_, "B");
    if (w.shape.size() < 3)
      fail(ErrorCode::InvalidInput,
           fmt::format("{}: W has shape {}; it must be [M, C/group, k1, ...] (rank 3 or more)", where_,
                       shape_str(w.shape)));
    const size_t dims = w.shape.size() - 2;
    const std::vector<int64_t> kernel(w.shape.begin() + 2, w.shape.end());
    if (!win_.kernel.empty() && win_.kernel != kernel)
      fail(ErrorCode::InvalidInput, fmt::format("{}: kernel_shape {} does not match W of shape {}", where_,
                                                shape_str(win_.kernel), shape_str(w.shape)));
    check_window_lengths(win_, dims, where_, ErrorCode::InvalidInput);
    for (int64_t k : kernel) {
      if (k < 1)
        fail(ErrorCode::InvalidInput, fmt::format("{}: W has shape {}: an empty kernel", where_, shape_str(w.shape)));
    }
    if (x.shape.size() != dims + 2)
      fail(ErrorCode::InvalidInput, fmt::format("{}: X has shape {}; W of shape {} needs X of rank {} (N, C, {} "
                                                "spatial dimensions)",
                                                where_, shape_str(x.shape), shape_str(w.shape), dims + 2, dims));
    const int64_t m = w.shape[0], cg = w.shape[1], c = x.shape[1];
    if (m % group_ != 0)
      fail(ErrorCode::InvalidInput, fmt::format("{}: W has {} output channels, not a multiple of group={}", where_,
                                                m, group_));
    if (c != cg * group_)
      fail(ErrorCode::InvalidInput,
           fmt::format("{}: X has {} channels; W of shape {} with group={} needs {}", where_, c, shape_str(w.shape),
                       group_, cg * group_));
    if (b && (b->shape.size() != 1 || b->shape[0] != m))
      fail(ErrorCode::InvalidInput,
           fmt::format("{}: B has shape {}; W has {} output channels, so it must be [{}]", where_,
                       shape_str(b->shape), m, m));
    const std::vector<Axis> axes = resolve_axes(win_, kernel, x.shape, where_);
    // compute writes every element
    Tensor y = Tensor::uninitialized(x.type, window_output_shape(x.shape[0], m, axes, where_));
    const bool relu_done = x.type == ElemType::Float ? compute<float>(x, w, b, axes, y) : compute<double>(x, w, b, axes, y);
    if (relu_ && !relu_done) {
      if (x.type == ElemType::Float) relu_in_place(y.f.data(), y.numel());
      else relu_in_place(y.d.data(), y.numel());
    }
    set_out(out, 0, std::move(y));
  }

  bool fold_relu() override {
    relu_ = true;
    return true;
  }

 private:
  // The folded Relu (ONNX's: NaN passes through) over `count` values just computed.
  template <typename T>
  static void relu_in_place(T* v, int64_t count) {
    for (T *p = v, *end = v + count; p != end; ++p) *p = *p < T(0) ? T(0) : *p;
  }

  // Returns whether the folded Relu was applied (by the direct path's tiles, in registers).
  template <typename T>
  bool compute(const Tensor& xt, const Tensor& wt, const Tensor* bt, const std::vector<Axis>& axes,
               Tensor& yt) const {
    const int64_t n_batch = xt.shape[0], c = xt.shape[1], m = wt.shape[0], cg = wt.shape[1];
    const int64_t groups = group_, mg = m / groups;
    const size_t dims = axes.size();
    int64_t ks = 1, in_size = 1, out_size = 1;
    bool pointwise = true;
    for (const Axis& ax : axes) {
      ks *= ax.k;
      in_size *= ax.in;
      out_size *= ax.out;
      pointwise = pointwise && ax.k == 1 && ax.s == 1 && ax.pb == 0 && ax.pe == 0;
    }
    const int64_t ck = cg * ks;
    const T* x = cdata<T>(xt);
    const T* w = cdata<T>(wt);
    const T* bias = bt ? cdata<T>(*bt) : nullptr;
    T* y = mdata<T>(yt);
    if (n_batch == 0 || m == 0 || out_size == 0) return true;
    if (ck == 0) {  // no input channels: the output is the bias
      for (int64_t n = 0; n < n_batch; ++n)
        for (int64_t o = 0; o < m; ++o) std::fill_n(y + (n * m + o) * out_size, out_size, bias ? bias[o] : T(0));
      return false;
    }
    // dst: an [mg, out_size] block, set to the bias of its channels (or zero) before the product
    // is accumulated into it.
    auto init_bias = [&](T* dst, int64_t first_channel) {
      for (int64_t o = 0; o < mg; ++o) std::fill_n(dst + o * out_size, out_size, bias ? bias[first_channel + o] : T(0));
    };

    // 1-D, float, unit stride, small planes and kernels: direct convolution (conv1d_tile).
    if constexpr (std::is_same_v<T, float>) {
      const Axis& ax = axes[0];
      const bool wide = conv_avx512();
      const int64_t tile_width = wide ? 32 : 16;
      const int64_t lp = ((out_size + tile_width - 1) / tile_width) * tile_width + (ax.k - 1) * ax.d;  // padded plane
      if (dims == 1 && ax.s == 1 && ck <= kDirectMaxTaps && cg * lp <= kDirectMaxPlane && !pointwise) {
        float* xp = scratch<float>(0, static_cast<size_t>(cg * lp));
        std::fill_n(xp, cg * lp, 0.0f);  // the padding stays zero: only the interior is rewritten
        for (int64_t n = 0; n < n_batch; ++n) {
          poll_interrupt();
          for (int64_t g = 0; g < groups; ++g) {
            for (int64_t ci = 0; ci < cg; ++ci)
              std::copy_n(x + (n * c + g * cg + ci) * in_size, in_size, xp + ci * lp + ax.pb);
            const float* wg = w + g * mg * ck;
            const float* bg = bias ? bias + g * mg : nullptr;
            float* yg = y + (n * m + g * mg) * out_size;
            // Tiles of 6 channels (12 accumulators + 2 input vectors + 1 weight: 15 of the 16 AVX2
            // registers), then 4, 2 and 1 for the rest; on AVX-512, tiles of 12 first.
            auto tile = [&](auto ob, int64_t o) {
              if (wide)
                conv1d_tile_avx512<decltype(ob)::value>(xp, lp, wg + o * ck, cg, ax.k, ax.d, bg ? bg + o : nullptr,
                                                        yg + o * out_size, out_size, out_size, relu_);
              else
                conv1d_tile<decltype(ob)::value>(xp, lp, wg + o * ck, cg, ax.k, ax.d, bg ? bg + o : nullptr,
                                                 yg + o * out_size, out_size, out_size, relu_);
            };
            int64_t o = 0;
            if (wide)
              for (; o + 12 <= mg; o += 12) tile(std::integral_constant<int, 12>{}, o);
            for (; o + 6 <= mg; o += 6) tile(std::integral_constant<int, 6>{}, o);
            if (o + 4 <= mg) {
              tile(std::integral_constant<int, 4>{}, o);
              o += 4;
            }
            for (; o + 2 <= mg; o += 2) tile(std::integral_constant<int, 2>{}, o);
            if (o < mg) tile(std::integral_constant<int, 1>{}, o);
          }
        }
        return true;
      }
    }

    // 1x1 kernel, unit stride, no padding: each sample's channels are the im2col matrix already.
    if (pointwise && out_size >= 64) {
      for (int64_t n = 0; n < n_batch; ++n) {
        poll_interrupt();
        for (int64_t g = 0; g < groups; ++g) {
          T* dst = y + (n * m + g * mg) * out_size;
          init_bias(dst, g * mg);
          product(w + g * mg * ck, x + (n * c + g * cg) * in_size, dst, mg, cg, in_size, true);
        }
      }
      return false;
    }

    // im2col over "units": one unit is one row of the last output dimension of one sample, so a
    // chunk of units can hold part of a sample (large images) or many samples (small 1-D inputs).
    const Axis& last = axes[dims - 1];
    const int64_t width = last.out;                      // output positions per unit
    const int64_t units_per_sample = out_size / width;
    const int64_t total_units = n_batch * units_per_sample;
    int64_t chunk = std::max<int64_t>(1, kColTarget / (ck * width));
    if (chunk >= units_per_sample) chunk = (chunk / units_per_sample) * units_per_sample;  // whole samples
    chunk = std::min(chunk, total_units);

    // Kernel offsets: kk[kidx * dims + d]; for the last dimension, the range [lo, hi) of output
    // positions whose input position is inside X, and the input offset of output position 0.
    std::vector<int64_t> kk(static_cast<size_t>(ks * static_cast<int64_t>(dims)));
    for (int64_t kidx = 0; kidx < ks; ++kidx) {
      int64_t r = kidx;
      for (size_t d = dims; d-- > 0;) {
        kk[static_cast<size_t>(kidx) * dims + d] = r % axes[d].k;
        r /= axes[d].k;
      }
    }
    std::vector<int64_t> lo(static_cast<size_t>(last.k)), hi(lo.size()), off(lo.size());
    for (int64_t k = 0; k < last.k; ++k) {
      const int64_t o0 = k * last.d - last.pb;  // input position of output 0
      off[k] = o0;
      int64_t l = o0 >= 0 ? 0 : (-o0 + last.s - 1) / last.s;
      int64_t h = last.in - o0 <= 0 ? 0 : (last.in - o0 + last.s - 1) / last.s;
      l = std::min(l, width);
      h = std::clamp(h, l, width);
      lo[k] = l;
      hi[k] = h;
    }
    std::vector<int64_t> outer(dims > 0 ? dims - 1 : 0);  // output position in the leading dimensions

    const int64_t max_cols = chunk * width;
    T* col = scratch<T>(0, static_cast<size_t>(ck * max_cols));
    T* prod = nullptr;
    if (chunk != units_per_sample) prod = scratch<T>(1, static_cast<size_t>(mg * max_cols));

    for (int64_t g = 0; g < groups; ++g) {
      const T* wg = w + g * mg * ck;
      for (int64_t u0 = 0; u0 < total_units; u0 += chunk) {
        poll_interrupt();  // a chunk is about kColTarget values of im2col and their product
        const int64_t nu = std::min(chunk, total_units - u0);
        const int64_t cols = nu * width;
        for (int64_t u = 0; u < nu; ++u) {
          const int64_t n = (u0 + u) / units_per_sample;
          int64_t r = (u0 + u) % units_per_sample;
          for (size_t d = dims - 1; d-- > 0;) {
            outer[d] = r % axes[d].out;
            r /= axes[d].out;
          }
          const T* xs = x + (n * c + g * cg) * in_size;
          for (int64_t ci = 0; ci < cg; ++ci) {
            const T* xc = xs + ci * in_size;
            for (int64_t kidx = 0; kidx < ks; ++kidx) {
              T* dst = col + (ci * ks + kidx) * cols + u * width;
              const int64_t* kd = kk.data() + static_cast<size_t>(kidx) * dims;
              int64_t row = 0;
              bool inside = true;
              for (size_t d = 0; d + 1 < dims; ++d) {
                const Axis& ax = axes[d];
                const int64_t pos = outer[d] * ax.s - ax.pb + kd[d] * ax.d;
                if (pos < 0 || pos >= ax.in) {
                  inside = false;
                  break;
                }
                row = row * ax.in + pos;
              }
              if (!inside) {
                std::fill_n(dst, width, T(0));
                continue;
              }
              const T* src = xc + row * last.in;
              const int64_t kl = kd[dims - 1], l = lo[kl], h = hi[kl], o0 = off[kl];
              std::fill(dst, dst + l, T(0));
              if (last.s == 1) {
                std::copy(src + l + o0, src + h + o0, dst + l);
              } else {
                for (int64_t o = l; o < h; ++o) dst[o] = src[o * last.s + o0];
              }
              std::fill(dst + h, dst + width, T(0));
            }
          }
        }
        if (nu == units_per_sample && u0 % units_per_sample == 0) {
          // Exactly one sample: the product is that sample's output block.
          T* dst = y + ((u0 / units_per_sample) * m + g * mg) * out_size;
          init_bias(dst, g * mg);
          product(wg, col, dst, mg, ck, out_size, true);
          continue;
        }
        product(wg, col, prod, mg, ck, cols, false);
        for (int64_t u = 0; u < nu; ++u) {
          const int64_t n = (u0 + u) / units_per_sample, r = (u0 + u) % units_per_sample;
          for (int64_t o = 0; o < mg; ++o) {
            T* dst = y + (n * m + g * mg + o) * out_size + r * width;
            const T* src = prod + o * cols + u * width;
            const T bo = bias ? bias[g * mg + o] : T(0);
            for (int64_t p = 0; p < width; ++p) dst[p] = src[p] + bo;
          }
        }
      }
    }
    return false;
  }

  std::string where_;
  WindowAttrs win_;
  int64_t group_ = 1;
  bool relu_ = false;  // a following Relu folded in (fold_relu)
};

// ---------------------------------------------------------------------------------------------------
// MaxPool, AveragePool

enum class PoolKind { Max, Average };

// For one axis and each output position: the first input position of the window and the range
// [lo, hi) of kernel taps that fall inside the input; `count` the taps inside the padded input.
struct AxisTaps {
  std::vector<int64_t> start, lo, hi, count;
};

AxisTaps axis_taps(const Axis& ax) {
  AxisTaps t;
  const size_t n = static_cast<size_t>(ax.out);
  t.start.resize(n);
  t.lo.resize(n);
  t.hi.resize(n);
  t.count.resize(n);
  for (int64_t o = 0; o < ax.out; ++o) {
    const int64_t s = o * ax.s - ax.pb;
    int64_t lo = s >= 0 ? 0 : (-s + ax.d - 1) / ax.d;
    int64_t hi = ax.in - s <= 0 ? 0 : (ax.in - s + ax.d - 1) / ax.d;
    lo = std::min(lo, ax.k);
    hi = std::clamp(hi, lo, ax.k);
    const int64_t padded_end = ax.in + ax.pe - s;  // taps before the end of the padded input
    const int64_t count = padded_end <= 0 ? 0 : std::min(ax.k, (padded_end + ax.d - 1) / ax.d);
    t.start[o] = s;
    t.lo[o] = lo;
    t.hi[o] = hi;
    t.count[o] = count;
  }
  return t;
}

class Pool final : public Kernel {
 public:
  Pool(const KernelContext& ctx, PoolKind kind) : where_(ctx.attrs.where()), kind_(kind) {
    const Attrs& a = ctx.attrs;
    win_ = parse_window(a, where_, true);
    check_window_lengths(win_, win_.kernel.size(), where_);
    win_.ceil_mode = flag_attr(a, "ceil_mode", where_) != 0;
    // AveragePool 19 drops a last window that would start in the end padding (the rule above is
    // the one of the earlier versions).
    if (kind_ == PoolKind::Average && ctx.opset >= 19 && win_.ceil_mode)
      fail(ErrorCode::UnsupportedOperator, fmt::format("{}: ceil_mode 1 at opset {} is not supported", where_, ctx.opset),
           "Export with ceil_mode=0, or with opset 18 or lower.");
    if (kind_ == PoolKind::Average && ctx.opset > 0 && ctx.opset < 19 && a.has("dilations"))
      fail(ErrorCode::InvalidModel, fmt::format("{}: attribute 'dilations' needs opset 19", where_));
    if (kind_ == PoolKind::Average) {
      count_include_pad_ = flag_attr(a, "count_include_pad", where_) != 0;
    } else {
      column_major_ = flag_attr(a, "storage_order", where_) != 0;
    }
    // As ONNX Runtime: a window may not lie wholly in the padding.
    for (size_t i = 0; i < win_.kernel.size(); ++i) {
      const int64_t ext = (win_.kernel[i] - 1) * win_.dilation(i) + 1;
      if (win_.pad_begin(i) >= ext || win_.pad_end(i) >= ext)
        fail(ErrorCode::InvalidModel,
             fmt::format("{}: pads {} reach past the kernel extent {} on spatial axis {}", where_,
                         shape_str(win_.pads), ext, i));
    }
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "X");
    require_real(x, where_, "X");
    const size_t dims = win_.kernel.size();
    if (x.shape.size() != dims + 2)
      fail(ErrorCode::InvalidInput, fmt::format("{}: X has shape {}; kernel_shape {} needs X of rank {}", where_,
                                                shape_str(x.shape), shape_str(win_.kernel), dims + 2));
    const std::vector<Axis> axes = resolve_axes(win_, win_.kernel, x.shape, where_);
    const std::vector<int64_t> shape = window_output_shape(x.shape[0], x.shape[1], axes, where_);
    Tensor y = Tensor::uninitialized(x.type, shape);  // compute writes every element
    Tensor indices;
    const bool want_indices = kind_ == PoolKind::Max && out.size() > 1;
    if (want_indices) indices = Tensor(ElemType::Int64, shape);
    if (x.type == ElemType::Float) compute<float>(x, axes, y, want_indices ? &indices : nullptr);
    else compute<double>(x, axes, y, want_indices ? &indices : nullptr);
    set_out(out, 0, std::move(y));
    if (want_indices) set_out(out, 1, std::move(indices));
  }

 private:
  template <typename T>
  void compute(const Tensor& xt, const std::vector<Axis>& axes, Tensor& yt, Tensor* it) const {
    const size_t dims = axes.size();
    const int64_t planes = xt.shape[0] * xt.shape[1];
    int64_t in_size = 1, out_size = 1;
    for (const Axis& ax : axes) {
      in_size *= ax.in;
      out_size *= ax.out;
    }
    if (planes == 0 || out_size == 0) return;
    std::vector<AxisTaps> taps;
    taps.reserve(dims);
    for (const Axis& ax : axes) taps.push_back(axis_taps(ax));
    std::vector<int64_t> in_stride(dims, 1);  // row-major strides of the input's spatial dimensions
    for (size_t d = dims - 1; d-- > 0;) in_stride[d] = in_stride[d + 1] * axes[d + 1].in;

    const T* x = cdata<T>(xt);
    T* y = mdata<T>(yt);
    int64_t* idx = it ? it->i.data() : nullptr;
    if (dims == 1) {  // the common 1-D case, without the general bookkeeping
      const AxisTaps& t = taps[0];
      const Axis& ax = axes[0];
      if (kind_ == PoolKind::Average) average_1d(x, y, planes, in_size, out_size, t, ax.d, ax.s, ax.k);
      else if (idx) max_1d<T, true>(x, y, idx, planes, in_size, out_size, t, ax.d, ax.s, ax.k);
      else max_1d<T, false>(x, y, idx, planes, in_size, out_size, t, ax.d, ax.s, ax.k);
      return;
    }
    std::vector<int64_t> o(dims, 0), k(dims, 0);

    for (int64_t p = 0; p < planes; ++p) {
      poll_interrupt();
      const T* xp = x + p * in_size;
      T* yp = y + p * out_size;
      int64_t* ip = idx ? idx + p * out_size : nullptr;
      std::fill(o.begin(), o.end(), 0);
      for (int64_t q = 0; q < out_size; ++q) {
        // Window of output position o: taps k[d] in [lo, hi) on every axis.
        bool empty = false;
        int64_t base = 0, cnt_valid = 1, cnt_padded = 1;
        for (size_t d = 0; d < dims; ++d) {
          const AxisTaps& t = taps[d];
          const size_t od = static_cast<size_t>(o[d]);
          k[d] = t.lo[od];
          empty = empty || t.lo[od] >= t.hi[od];
          base += t.start[od] * in_stride[d];
          cnt_valid *= t.hi[od] - t.lo[od];
          cnt_padded *= t.count[od];
        }
        T best = -std::numeric_limits<T>::infinity(), sum = 0;
        int64_t arg = -1;
        if (!empty) {
          const int64_t last_d = axes[dims - 1].d;
          const size_t ol = static_cast<size_t>(o[dims - 1]);
          const int64_t l = taps[dims - 1].lo[ol], h = taps[dims - 1].hi[ol];
          while (true) {
            int64_t at = base;
            for (size_t d = 0; d + 1 < dims; ++d) at += k[d] * axes[d].d * in_stride[d];
            if (kind_ == PoolKind::Max) {
              if (arg < 0) arg = at + l * last_d;
              for (int64_t j = l; j < h; ++j) {
                const T v = xp[at + j * last_d];
                if (v > best) {
                  best = v;
                  arg = at + j * last_d;
                }
              }
            } else {
              for (int64_t j = l; j < h; ++j) sum += xp[at + j * last_d];
            }
            // Next tap position over the leading axes.
            size_t d = dims - 1;
            while (d-- > 0) {
              if (++k[d] < taps[d].hi[static_cast<size_t>(o[d])]) break;
              k[d] = taps[d].lo[static_cast<size_t>(o[d])];
            }
            if (d == static_cast<size_t>(-1)) break;
          }
        }
        if (kind_ == PoolKind::Max) {
          yp[q] = best;
          if (ip) ip[q] = arg < 0 ? -1 : p * in_size + (column_major_ ? to_column_major(arg, axes) : arg);
        } else {
          yp[q] = sum / static_cast<T>(count_include_pad_ ? cnt_padded : cnt_valid);
        }
        for (size_t d = dims; d-- > 0;) {
          if (++o[d] < axes[d].out) break;
          o[d] = 0;
        }
      }
    }
  }

  // Maximum over the taps inside X. As ONNX Runtime, NaN taps are skipped. A window with no tap
  // inside X (possible with SAME padding and dilation) yields -inf, the maximum of nothing, with
  // index -1; a window whose taps are all NaN or -inf yields -inf with the index of its first tap.
  template <typename T, bool Indices>
  static void max_1d(const T* x, T* y, int64_t* idx, int64_t planes, int64_t in_size, int64_t out_size,
                     const AxisTaps& t, int64_t dil, int64_t stride, int64_t k) {
    const auto [qa, qb] = interior(t, k);
    if constexpr (!Indices) {
      // Every window inside X, no padding, and each plane exactly `stride` times as long as its
      // output (MaxPool(2) after a convolution): the planes form one long row, so the taps run over
      // the whole tensor at once instead of a few dozen outputs per plane.
      if (qa == 0 && qb == out_size && t.start[0] == 0 && in_size == out_size * stride) {
        const int64_t n = planes * out_size;
#ifdef __AVX2__
        if constexpr (std::is_same_v<T, float>) {
          if (stride == 2 && k == 2 && dil == 1) {
            max_pairs_avx2(x, y, n);
            return;
          }
        }
#endif
        std::fill(y, y + n, -std::numeric_limits<T>::infinity());
        for (int64_t j = 0; j < k; ++j) {
          const T* src = x + j * dil;
          for (int64_t q = 0; q < n; ++q) {
            const T v = src[q * stride];
            y[q] = v > y[q] ? v : y[q];
          }
        }
        return;
      }
    }
    for (int64_t p = 0; p < planes; ++p) {
      poll_interrupt();
      const T* xp = x + p * in_size;
      T* yp = y + p * out_size;
      if constexpr (!Indices) {
        // Windows wholly inside X, tap by tap across outputs: independent lanes the compiler
        // vectorizes, rather than one dependent chain per output.
        if (qb > qa) {
          std::fill(yp + qa, yp + qb, -std::numeric_limits<T>::infinity());
          for (int64_t j = 0; j < k; ++j) {
            const T* src = xp + t.start[qa] + j * dil;
            if (stride == 1) {
              for (int64_t q = qa; q < qb; ++q) {
                const T v = src[q - qa];
                yp[q] = v > yp[q] ? v : yp[q];
              }
            } else {
              for (int64_t q = qa; q < qb; ++q) {
                const T v = src[(q - qa) * stride];
                yp[q] = v > yp[q] ? v : yp[q];
              }
            }
          }
        }
      }
      for (int64_t q = 0; q < out_size; ++q) {
        if (!Indices && q == qa && qb > qa) q = qb;
        if (q >= out_size) break;
        const int64_t base = t.start[q], lo = t.lo[q], hi = t.hi[q];
        T best = -std::numeric_limits<T>::infinity();
        if constexpr (Indices) {
          int64_t arg = lo < hi ? base + lo * dil : -1;
          for (int64_t j = lo; j < hi; ++j) {
            const T v = xp[base + j * dil];
            if (v > best) {
              best = v;
              arg = base + j * dil;
            }
          }
          idx[p * out_size + q] = arg < 0 ? -1 : p * in_size + arg;
        } else {
          for (int64_t j = lo; j < hi; ++j) {
            const T v = xp[base + j * dil];
            best = v > best ? v : best;
          }
        }
        yp[q] = best;
      }
    }
  }

  template <typename T>
  void average_1d(const T* x, T* y, int64_t planes, int64_t in_size, int64_t out_size, const AxisTaps& t,
                  int64_t dil, int64_t stride, int64_t k) const {
    const auto [qa, qb] = interior(t, k);
    const T inv_k = T(1) / static_cast<T>(k);
    for (int64_t p = 0; p < planes; ++p) {
      poll_interrupt();
      const T* xp = x + p * in_size;
      T* yp = y + p * out_size;
      if (qb > qa) {  // full windows, tap by tap across outputs (see max_1d)
        std::fill(yp + qa, yp + qb, T(0));
        for (int64_t j = 0; j < k; ++j) {
          const T* src = xp + t.start[qa] + j * dil;
          for (int64_t q = qa; q < qb; ++q) yp[q] += src[(q - qa) * stride];
        }
        for (int64_t q = qa; q < qb; ++q) yp[q] *= inv_k;
      }
      for (int64_t q = 0; q < out_size; ++q) {
        if (q == qa && qb > qa) q = qb;
        if (q >= out_size) break;
        const int64_t base = t.start[q], lo = t.lo[q], hi = t.hi[q];
        T sum = 0;
        for (int64_t j = lo; j < hi; ++j) sum += xp[base + j * dil];
        yp[q] = sum / static_cast<T>(count_include_pad_ ? t.count[q] : hi - lo);
      }
    }
  }

  // The outputs [qa, qb) whose windows have every tap inside X (a contiguous range: windows move
  // forward with the output position).
#ifdef __AVX2__
  // y[q] = max(x[2q], x[2q+1]), NaN taps skipped as in max_1d: MAXPS returns its second operand
  // when either is NaN, which is `v > best ? v : best` with best starting at -inf. The compiler
  // turns the stride-2 loads of the generic loop into one-lane inserts; deinterleaving two
  // vectors does the same work in a few instructions.
  static void max_pairs_avx2(const float* x, float* y, int64_t n) {
    const __m256 lowest = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    int64_t q = 0;
    for (; q + 8 <= n; q += 8) {
      const __m256 a = _mm256_loadu_ps(x + 2 * q), b = _mm256_loadu_ps(x + 2 * q + 8);
      // evens / odds of a and b, lanes in order 0 1 4 5 2 3 6 7; the permute restores 0..7.
      const __m256 even = restore_lane_order(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)));
      const __m256 odd = restore_lane_order(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
      _mm256_storeu_ps(y + q, _mm256_max_ps(odd, _mm256_max_ps(even, lowest)));
    }
    for (; q < n; ++q) {
      float best = -std::numeric_limits<float>::infinity();
      best = x[2 * q] > best ? x[2 * q] : best;
      best = x[2 * q + 1] > best ? x[2 * q + 1] : best;
      y[q] = best;
    }
  }
  static __m256 restore_lane_order(__m256 v) {
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), _MM_SHUFFLE(3, 1, 2, 0)));
  }
#endif

  static std::pair<int64_t, int64_t> interior(const AxisTaps& t, int64_t k) {
    const int64_t n = static_cast<int64_t>(t.lo.size());
    int64_t qa = 0;
    while (qa < n && !(t.lo[qa] == 0 && t.hi[qa] == k)) ++qa;
    int64_t qb = qa;
    while (qb < n && t.lo[qb] == 0 && t.hi[qb] == k) ++qb;
    return {qa, qb};
  }

  // A row-major spatial offset as the column-major one (storage_order=1).
  static int64_t to_column_major(int64_t offset, const std::vector<Axis>& axes) {
    int64_t result = 0, stride = 1;
    std::vector<int64_t> pos(axes.size());
    for (size_t d = axes.size(); d-- > 0;) {
      pos[d] = offset % axes[d].in;
      offset /= axes[d].in;
    }
    for (size_t d = 0; d < axes.size(); ++d) {
      result += pos[d] * stride;
      stride *= axes[d].in;
    }
    return result;
  }

  std::string where_;
  PoolKind kind_;
  WindowAttrs win_;
  bool count_include_pad_ = false;
  bool column_major_ = false;
};

// ---------------------------------------------------------------------------------------------------
// GlobalAveragePool, GlobalMaxPool

class GlobalPool final : public Kernel {
 public:
  GlobalPool(const KernelContext& ctx, PoolKind kind) : where_(ctx.attrs.where()), kind_(kind) {}

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "X");
    require_real(x, where_, "X");
    if (x.shape.size() < 3)
      fail(ErrorCode::InvalidInput,
           fmt::format("{}: X has shape {}; it needs rank 3 or more (N, C, spatial dimensions)", where_,
                       shape_str(x.shape)));
    const int64_t planes = x.shape[0] * x.shape[1];
    const int64_t size = product(x.shape, 2, x.shape.size());
    if (size == 0 && planes > 0)
      fail(ErrorCode::InvalidInput, fmt::format("{}: X has shape {}: no spatial values to pool", where_,
                                                shape_str(x.shape)));
    std::vector<int64_t> shape(x.shape.size(), 1);
    shape[0] = x.shape[0];
    shape[1] = x.shape[1];
    Tensor y = Tensor::uninitialized(x.type, shape);  // compute writes every element
    if (x.type == ElemType::Float) compute<float>(x, y, planes, size);
    else compute<double>(x, y, planes, size);
    set_out(out, 0, std::move(y));
  }

 private:
  template <typename T>
  void compute(const Tensor& xt, Tensor& yt, int64_t planes, int64_t size) const {
    if (planes == 0) return;
    Eigen::Map<const RowArr<T>> xm(cdata<T>(xt), planes, size);
    Eigen::Map<Vec<T>> ym(mdata<T>(yt), planes);
    if (kind_ == PoolKind::Average) {
      ym = xm.rowwise().mean();
      return;
    }
    for (int64_t p = 0; p < planes; ++p) ym[p] = xm.row(p).template maxCoeff<Eigen::PropagateNaN>();
  }

  std::string where_;
  PoolKind kind_;
};

// ---------------------------------------------------------------------------------------------------
// BatchNormalization: Y = scale * (X - mean) / sqrt(var + epsilon) + B per channel (axis 1).
// Opset 9-13: inference only (a node with the training outputs is not run). Opset 14+:
// training_mode=1 normalizes with the batch's own statistics (biased variance) and outputs the
// updated running statistics, as the specification's reference implementation does.

class BatchNorm final : public Kernel {
 public:
  explicit BatchNorm(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    const Attrs& a = ctx.attrs;
    epsilon_ = epsilon_attr(a, where_);
    momentum_ = finite_float_attr(a, "momentum", 0.9f, where_);
    if (ctx.opset == 0 || ctx.opset >= 14) training_ = flag_attr(a, "training_mode", where_) != 0;
    if (a.has("spatial") && a.get_int("spatial") != 1)
      fail(ErrorCode::UnsupportedOperator,
           fmt::format("{}: spatial={} (per-activation statistics) is not supported", where_, a.get_int("spatial")));
    for (int k = 0; k < 5; ++k) {
      if (!has_input(ctx, k))
        fail(ErrorCode::InvalidModel, fmt::format("{}: needs inputs X, scale, B, input_mean and input_var", where_));
    }
    if (!training_) {
      for (int k = 1; k < ctx.node.output_size(); ++k) {
        if (ctx.node.output(k).empty()) continue;
        if (ctx.opset > 0 && ctx.opset < 14)
          fail(ErrorCode::UnsupportedOperator,
               fmt::format("{}: output {} ('{}') is a training-mode output; training mode is not supported before "
                           "opset 14",
                           where_, k, ctx.node.output(k)));
        fail(ErrorCode::InvalidModel, fmt::format("{}: output {} ('{}') is produced only with training_mode=1",
                                                  where_, k, ctx.node.output(k)));
      }
    }
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "X");
    require_real(x, where_, "X");
    if (x.shape.size() < 2)
      fail(ErrorCode::InvalidInput,
           fmt::format("{}: X has shape {}; it needs rank 2 or more (N, C, ...)", where_, shape_str(x.shape)));
    const int64_t c = x.shape[1];
    static const char* const names[] = {"X", "scale", "B", "input_mean", "input_var"};
    const Tensor* p[5] = {&x, nullptr, nullptr, nullptr, nullptr};
    for (size_t k = 1; k < 5; ++k) {
      p[k] = &input(in, k, where_, names[k]);
      if (!is_real(p[k]->type))
        fail(ErrorCode::UnsupportedOperator, fmt::format("{}: element type {} of input '{}' is not supported "
                                                         "(float and double only)",
                                                         where_, to_string(p[k]->type), names[k]));
      require_channels(*p[k], c, where_, names[k]);
    }
    Tensor y(x.type, x.shape);
    if (x.type == ElemType::Float) compute<float>(x, *p[1], *p[2], *p[3], *p[4], y, out);
    else compute<double>(x, *p[1], *p[2], *p[3], *p[4], y, out);
    set_out(out, 0, std::move(y));
  }

 private:
  template <typename T>
  void compute(const Tensor& xt, const Tensor& scale, const Tensor& bias, const Tensor& mean, const Tensor& var,
               Tensor& yt, std::vector<Tensor>& out) const {
    const int64_t n_batch = xt.shape[0], c = xt.shape[1], size = product(xt.shape, 2, xt.shape.size());
    const T* x = cdata<T>(xt);
    T* y = mdata<T>(yt);
    Vec<T> mu(c), a(c), b(c);  // y = (x - mu) * a + b per channel
    if (!training_) {
      for (int64_t ch = 0; ch < c; ++ch) {
        const size_t k = static_cast<size_t>(ch);
        mu[ch] = static_cast<T>(mean.as_double(k));
        a[ch] = static_cast<T>(scale.as_double(k) / std::sqrt(var.as_double(k) + static_cast<double>(epsilon_)));
        b[ch] = static_cast<T>(bias.as_double(k));
      }
    } else {
      Tensor running_mean(mean.type, {c}), running_var(var.type, {c});
      const double count = static_cast<double>(n_batch * size);
      const double mom = momentum_;
      for (int64_t ch = 0; ch < c; ++ch) {
        double sum = 0;
        for (int64_t n = 0; n < n_batch; ++n) {
          const T* plane = x + (n * c + ch) * size;
          for (int64_t j = 0; j < size; ++j) sum += plane[j];
        }
        const double mean_ch = count > 0 ? sum / count : 0.0;
        double sq = 0;
        for (int64_t n = 0; n < n_batch; ++n) {
          const T* plane = x + (n * c + ch) * size;
          for (int64_t j = 0; j < size; ++j) sq += (plane[j] - mean_ch) * (plane[j] - mean_ch);
        }
        const double v = count > 0 ? sq / count : 0.0;
        const size_t k = static_cast<size_t>(ch);
        mu[ch] = static_cast<T>(mean_ch);
        a[ch] = static_cast<T>(scale.as_double(k) / std::sqrt(v + static_cast<double>(epsilon_)));
        b[ch] = static_cast<T>(bias.as_double(k));
        const double rm = mean.as_double(k) * mom + mean_ch * (1 - mom);
        const double rv = var.as_double(k) * mom + v * (1 - mom);
        if (mean.type == ElemType::Float) running_mean.f[k] = static_cast<float>(rm);
        else running_mean.d[k] = rm;
        if (var.type == ElemType::Float) running_var.f[k] = static_cast<float>(rv);
        else running_var.d[k] = rv;
      }
      set_out(out, 1, std::move(running_mean));
      set_out(out, 2, std::move(running_var));
    }
    for (int64_t n = 0; n < n_batch; ++n) {
      for (int64_t ch = 0; ch < c; ++ch) {
        const int64_t at = (n * c + ch) * size;
        Eigen::Map<Vec<T>>(y + at, size) = (Eigen::Map<const Vec<T>>(x + at, size) - mu[ch]) * a[ch] + b[ch];
      }
    }
  }

  std::string where_;
  float epsilon_ = 1e-5f;
  float momentum_ = 0.9f;
  bool training_ = false;
};

// ---------------------------------------------------------------------------------------------------
// InstanceNormalization: per sample and channel, Y = scale * (X - mean) / sqrt(var + epsilon) + B
// over the spatial dimensions (biased variance).

class InstanceNorm final : public Kernel {
 public:
  explicit InstanceNorm(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    epsilon_ = epsilon_attr(ctx.attrs, where_);
    for (int k = 0; k < 3; ++k) {
      if (!has_input(ctx, k))
        fail(ErrorCode::InvalidModel, fmt::format("{}: needs inputs input, scale and B", where_));
    }
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "input");
    const Tensor& scale = input(in, 1, where_, "scale");
    const Tensor& bias = input(in, 2, where_, "B");
    require_real(x, where_, "input");
    require_type_of(scale, x, where_, "scale");
    require_type_of(bias, x, where_, "B");
    if (x.shape.size() < 3)
      fail(ErrorCode::InvalidInput, fmt::format("{}: input has shape {}; it needs rank 3 or more (N, C, spatial "
                                                "dimensions)",
                                                where_, shape_str(x.shape)));
    require_channels(scale, x.shape[1], where_, "scale");
    require_channels(bias, x.shape[1], where_, "B");
    Tensor y(x.type, x.shape);
    if (x.type == ElemType::Float) compute<float>(x, scale, bias, y);
    else compute<double>(x, scale, bias, y);
    set_out(out, 0, std::move(y));
  }

 private:
  template <typename T>
  void compute(const Tensor& xt, const Tensor& st, const Tensor& bt, Tensor& yt) const {
    const int64_t n_batch = xt.shape[0], c = xt.shape[1], size = product(xt.shape, 2, xt.shape.size());
    if (size == 0) return;
    const T* x = cdata<T>(xt);
    const T* scale = cdata<T>(st);
    const T* bias = cdata<T>(bt);
    T* y = mdata<T>(yt);
    for (int64_t n = 0; n < n_batch; ++n) {
      for (int64_t ch = 0; ch < c; ++ch) {
        const int64_t at = (n * c + ch) * size;
        Eigen::Map<const Vec<T>> xp(x + at, size);
        const double mu = xp.template cast<double>().sum() / static_cast<double>(size);
        const double var = (xp.template cast<double>() - mu).square().sum() / static_cast<double>(size);
        const T a = static_cast<T>(static_cast<double>(scale[ch]) / std::sqrt(var + static_cast<double>(epsilon_)));
        Eigen::Map<Vec<T>>(y + at, size) = (xp - static_cast<T>(mu)) * a + bias[ch];
      }
    }
  }

  std::string where_;
  float epsilon_ = 1e-5f;
};

// ---------------------------------------------------------------------------------------------------
// LayerNormalization (opset 17): normalizes over the dimensions from `axis` on, computing in the
// stash_type precision (float or double); Scale and B broadcast to X. Optional outputs Mean and
// InvStdDev have X's leading dimensions and 1 for the normalized ones.

class LayerNorm final : public Kernel {
 public:
  explicit LayerNorm(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    const Attrs& a = ctx.attrs;
    axis_ = a.get_int("axis", -1);
    epsilon_ = epsilon_attr(a, where_);
    const int64_t stash = a.get_int("stash_type", onnx::TensorProto::FLOAT);
    if (stash == onnx::TensorProto::FLOAT) {
      stash_ = ElemType::Float;
    } else if (stash == onnx::TensorProto::DOUBLE) {
      stash_ = ElemType::Double;
    } else if (onnx::TensorProto::DataType_IsValid(static_cast<int>(stash)) && stash != 0) {
      fail(ErrorCode::UnsupportedOperator,
           fmt::format("{}: stash_type {} is not supported (FLOAT or DOUBLE only)", where_,
                       onnx::TensorProto::DataType_Name(static_cast<onnx::TensorProto::DataType>(stash))));
    } else {
      fail(ErrorCode::InvalidModel, fmt::format("{}: stash_type {} is not an ONNX element type", where_, stash));
    }
    if (!has_input(ctx, 0) || !has_input(ctx, 1))
      fail(ErrorCode::InvalidModel, fmt::format("{}: needs inputs X and Scale", where_));
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "X");
    const Tensor& scale = input(in, 1, where_, "Scale");
    const Tensor* bias = optional_input(in, 2, where_, "B");
    require_real(x, where_, "X");
    require_type_of(scale, x, where_, "Scale");
    if (bias) require_type_of(*bias, x, where_, "B");
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    if (axis_ < -rank || axis_ >= rank)
      fail(ErrorCode::InvalidInput,
           fmt::format("{}: axis {} is out of range for X of shape {}", where_, axis_, shape_str(x.shape)));
    const size_t axis = static_cast<size_t>(axis_ < 0 ? axis_ + rank : axis_);
    check_broadcast(scale, x, "Scale");
    if (bias) check_broadcast(*bias, x, "B");
    std::vector<int64_t> stat_shape = x.shape;
    for (size_t d = axis; d < stat_shape.size(); ++d) stat_shape[d] = 1;
    Tensor y(x.type, x.shape), mean(stash_, stat_shape), inv_std(stash_, stat_shape);
    if (x.type == ElemType::Float) dispatch<float>(x, scale, bias, axis, y, mean, inv_std);
    else dispatch<double>(x, scale, bias, axis, y, mean, inv_std);
    set_out(out, 0, std::move(y));
    set_out(out, 1, std::move(mean));
    set_out(out, 2, std::move(inv_std));
  }

 private:
  // Scale and B must broadcast to X (X's shape is the result).
  void check_broadcast(const Tensor& t, const Tensor& x, const char* name) const {
    bool ok = t.shape.size() <= x.shape.size();
    for (size_t k = 0; ok && k < t.shape.size(); ++k) {
      const int64_t dt = t.shape[t.shape.size() - 1 - k], dx = x.shape[x.shape.size() - 1 - k];
      ok = dt == dx || dt == 1;
    }
    if (!ok)
      fail(ErrorCode::InvalidInput, fmt::format("{}: {} has shape {}, which does not broadcast to X's {}", where_,
                                                name, shape_str(t.shape), shape_str(x.shape)));
  }

  // Offsets of a broadcast parameter: for row r (leading dimensions) and normalized element j, the
  // element is at outer[r] + inner[j]. Empty vectors when the parameter is laid out as the
  // normalized dimensions exactly (the usual case).
  static bool plain_layout(const Tensor& t, const std::vector<int64_t>& x_shape, size_t axis) {
    std::vector<int64_t> s = t.shape;
    while (!s.empty() && s.front() == 1 && s.size() > x_shape.size() - axis) s.erase(s.begin());
    return s == std::vector<int64_t>(x_shape.begin() + static_cast<std::ptrdiff_t>(axis), x_shape.end());
  }

  static void broadcast_offsets(const Tensor& t, const std::vector<int64_t>& x_shape, size_t axis,
                                std::vector<int64_t>& outer, std::vector<int64_t>& inner) {
    const size_t r = x_shape.size();
    std::vector<int64_t> st(r, 0);
    int64_t acc = 1;
    for (size_t k = t.shape.size(); k-- > 0;) {
      const size_t o = k + (r - t.shape.size());
      st[o] = t.shape[k] == 1 ? 0 : acc;
      acc *= t.shape[k];
    }
    auto offsets = [&](size_t from, size_t to, std::vector<int64_t>& v) {
      v.assign(static_cast<size_t>(product(x_shape, from, to)), 0);
      std::vector<int64_t> idx(to - from, 0);
      int64_t cur = 0;
      for (size_t q = 0; q < v.size(); ++q) {
        v[q] = cur;
        for (size_t d = to - from; d-- > 0;) {
          cur += st[from + d];
          if (++idx[d] < x_shape[from + d]) break;
          cur -= st[from + d] * x_shape[from + d];
          idx[d] = 0;
        }
      }
    };
    offsets(0, axis, outer);
    offsets(axis, r, inner);
  }

  template <typename T>
  void dispatch(const Tensor& x, const Tensor& scale, const Tensor* bias, size_t axis, Tensor& y, Tensor& mean,
                Tensor& inv_std) const {
    if (stash_ == ElemType::Float) compute<T, float>(x, scale, bias, axis, y, mean, inv_std);
    else compute<T, double>(x, scale, bias, axis, y, mean, inv_std);
  }

  template <typename T, typename U>
  void compute(const Tensor& xt, const Tensor& st, const Tensor* bt, size_t axis, Tensor& yt, Tensor& mt,
               Tensor& it) const {
    const int64_t rows = product(xt.shape, 0, axis), cols = product(xt.shape, axis, xt.shape.size());
    const T* x = cdata<T>(xt);
    const T* scale = cdata<T>(st);
    const T* bias = bt ? cdata<T>(*bt) : nullptr;
    T* y = mdata<T>(yt);
    U* mean_out = mdata<U>(mt);
    U* inv_out = mdata<U>(it);
    const bool plain_scale = plain_layout(st, xt.shape, axis);
    const bool plain_bias = !bt || plain_layout(*bt, xt.shape, axis);
    std::vector<int64_t> s_outer, s_inner, b_outer, b_inner;
    if (!plain_scale) broadcast_offsets(st, xt.shape, axis, s_outer, s_inner);
    if (!plain_bias) broadcast_offsets(*bt, xt.shape, axis, b_outer, b_inner);
    const U eps = static_cast<U>(epsilon_);
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * cols;
      T* yr = y + r * cols;
      // Statistics in U: the mean, then the mean squared deviation (two passes, as the
      // specification's function body computes them).
      // The sums accumulate in double whatever U is.
      double sum = 0;
      for (int64_t j = 0; j < cols; ++j) sum += static_cast<U>(xr[j]);
      const U mu = cols > 0 ? static_cast<U>(sum / static_cast<double>(cols)) : U(0);
      double sq = 0;
      for (int64_t j = 0; j < cols; ++j) {
        const U dev = static_cast<U>(xr[j]) - mu;
        sq += static_cast<double>(dev) * dev;
      }
      const U var = cols > 0 ? static_cast<U>(sq / static_cast<double>(cols)) : U(0);
      const U inv = U(1) / std::sqrt(var + eps);
      mean_out[r] = mu;
      inv_out[r] = inv;
      if (plain_scale && plain_bias) {
        for (int64_t j = 0; j < cols; ++j) {
          const T norm = static_cast<T>((static_cast<U>(xr[j]) - mu) * inv);
          yr[j] = bias ? norm * scale[j] + bias[j] : norm * scale[j];
        }
      } else {
        for (int64_t j = 0; j < cols; ++j) {
          const size_t q = static_cast<size_t>(j), rr = static_cast<size_t>(r);
          const T sv = plain_scale ? scale[j] : scale[s_outer[rr] + s_inner[q]];
          const T norm = static_cast<T>((static_cast<U>(xr[j]) - mu) * inv);
          T v = norm * sv;
          if (bias) v += plain_bias ? bias[j] : bias[b_outer[rr] + b_inner[q]];
          yr[j] = v;
        }
      }
    }
  }

  std::string where_;
  int64_t axis_ = -1;
  float epsilon_ = 1e-5f;
  ElemType stash_ = ElemType::Float;
};

// ---------------------------------------------------------------------------------------------------
// LRN: Y = X / (bias + alpha / size * sum of squares over the channel window) ^ beta, the window
// being channels [c - floor((size - 1) / 2), c + ceil((size - 1) / 2)].

class Lrn final : public Kernel {
 public:
  explicit Lrn(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    const Attrs& a = ctx.attrs;
    size_ = a.get_int("size");
    if (size_ < 1 || size_ > kMaxWindowAttr)
      fail(ErrorCode::InvalidModel, fmt::format("{}: size is {}; it must be at least 1", where_, size_));
    alpha_ = finite_float_attr(a, "alpha", 1e-4f, where_);
    beta_ = finite_float_attr(a, "beta", 0.75f, where_);
    bias_ = finite_float_attr(a, "bias", 1.0f, where_);
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "X");
    require_real(x, where_, "X");
    if (x.shape.size() < 3)
      fail(ErrorCode::InvalidInput, fmt::format("{}: X has shape {}; it needs rank 3 or more (N, C, spatial "
                                                "dimensions)",
                                                where_, shape_str(x.shape)));
    Tensor y(x.type, x.shape);
    if (x.type == ElemType::Float) compute<float>(x, y);
    else compute<double>(x, y);
    set_out(out, 0, std::move(y));
  }

 private:
  template <typename T>
  void compute(const Tensor& xt, Tensor& yt) const {
    const int64_t n_batch = xt.shape[0], c = xt.shape[1], size = product(xt.shape, 2, xt.shape.size());
    const T* x = cdata<T>(xt);
    T* y = mdata<T>(yt);
    const int64_t before = (size_ - 1) / 2, after = size_ - 1 - before;
    const double scale = static_cast<double>(alpha_) / static_cast<double>(size_);
    std::vector<double> sq(static_cast<size_t>(size));
    for (int64_t n = 0; n < n_batch; ++n) {
      for (int64_t ch = 0; ch < c; ++ch) {
        std::fill(sq.begin(), sq.end(), 0.0);
        const int64_t c0 = std::max<int64_t>(0, ch - before), c1 = std::min(c - 1, ch + after);
        for (int64_t cc = c0; cc <= c1; ++cc) {
          const T* plane = x + (n * c + cc) * size;
          for (int64_t j = 0; j < size; ++j) sq[static_cast<size_t>(j)] += static_cast<double>(plane[j]) * plane[j];
        }
        const T* xp = x + (n * c + ch) * size;
        T* yp = y + (n * c + ch) * size;
        for (int64_t j = 0; j < size; ++j)
          yp[j] = static_cast<T>(xp[j] / std::pow(static_cast<double>(bias_) + scale * sq[static_cast<size_t>(j)],
                                                  static_cast<double>(beta_)));
      }
    }
  }

  std::string where_;
  int64_t size_ = 1;
  float alpha_ = 1e-4f, beta_ = 0.75f, bias_ = 1.0f;
};

template <typename K>
void add(KernelRegistry& r, const char* op) {
  r.add("", op, [](const KernelContext& ctx) -> std::unique_ptr<Kernel> { return std::make_unique<K>(ctx); });
}

template <typename K>
void add_pool(KernelRegistry& r, const char* op, PoolKind kind) {
  r.add("", op,
        [kind](const KernelContext& ctx) -> std::unique_ptr<Kernel> { return std::make_unique<K>(ctx, kind); });
}

}  // namespace

void register_nn_kernels(KernelRegistry& r) {
  add<Conv>(r, "Conv");
  add_pool<Pool>(r, "MaxPool", PoolKind::Max);
  add_pool<Pool>(r, "AveragePool", PoolKind::Average);
  add_pool<GlobalPool>(r, "GlobalAveragePool", PoolKind::Average);
  add_pool<GlobalPool>(r, "GlobalMaxPool", PoolKind::Max);
  add<BatchNorm>(r, "BatchNormalization");
  add<InstanceNorm>(r, "InstanceNormalization");
  add<LayerNorm>(r, "LayerNormalization");
  add<Lrn>(r, "LRN");
}

}  // namespace flock
