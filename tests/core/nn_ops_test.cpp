// Tests for the neural-network kernels (core/src/kernels/nn.cpp): hand-computed cases, agreement
// with a naive reference on shapes that exercise the batched im2col path, and the error paths
// (attributes at compile time, shapes and types at run time).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "flock/kernel.hpp"
#include "flock/model.hpp"
#include "kernel_test_util.hpp"

namespace {

using flock::ElemType;
using flock::Error;
using flock::ErrorCode;
using flock::Kernel;
using flock::Tensor;
using TP = onnx::TensorProto;

using flock::testing::Node;
using flock::testing::expect_error;

std::unique_ptr<Kernel> make(const Node& n, int64_t opset = 17) { return flock::testing::make_kernel(n, opset); }
std::vector<Tensor> run(const Kernel& k, std::vector<const Tensor*> in, size_t n_out = 1) {
  return flock::testing::run_kernel(k, std::move(in), n_out);
}
template <typename T>
void expect_near(const std::vector<T>& got, const std::vector<double>& want, double tol = 1e-5) {
  flock::testing::expect_all_near(got, want, tol);
}

Tensor run1(const Kernel& k, std::vector<const Tensor*> in) { return run(k, std::move(in))[0]; }

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist;
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

Tensor to_double(const Tensor& t) {
  Tensor d(ElemType::Double, t.shape);
  for (size_t k = 0; k < t.f.size(); ++k) d.d[k] = t.f[k];
  return d;
}

// Naive 2-D convolution (NCHW, symmetric pads, groups), in double.
std::vector<double> naive_conv2d(const Tensor& x, const Tensor& w, const Tensor* b, int64_t stride, int64_t pad,
                                 int64_t dil, int64_t group, std::vector<int64_t>& shape) {
  const int64_t n = x.shape[0], c = x.shape[1], h = x.shape[2], wd = x.shape[3];
  const int64_t m = w.shape[0], cg = w.shape[1], kh = w.shape[2], kw = w.shape[3], mg = m / group;
  const int64_t oh = (h + 2 * pad - ((kh - 1) * dil + 1)) / stride + 1;
  const int64_t ow = (wd + 2 * pad - ((kw - 1) * dil + 1)) / stride + 1;
  shape = {n, m, oh, ow};
  std::vector<double> y(static_cast<size_t>(n * m * oh * ow), 0.0);
  for (int64_t in = 0; in < n; ++in)
    for (int64_t o = 0; o < m; ++o)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j) {
          double acc = b ? b->as_double(static_cast<size_t>(o)) : 0.0;
          const int64_t g = o / mg;
          for (int64_t ci = 0; ci < cg; ++ci)
            for (int64_t a = 0; a < kh; ++a)
              for (int64_t e = 0; e < kw; ++e) {
                const int64_t r = i * stride - pad + a * dil, q = j * stride - pad + e * dil;
                if (r < 0 || r >= h || q < 0 || q >= wd) continue;
                acc += x.as_double(static_cast<size_t>(((in * c + g * cg + ci) * h + r) * wd + q)) *
                       w.as_double(static_cast<size_t>(((o * cg + ci) * kh + a) * kw + e));
              }
          y[static_cast<size_t>(((in * m + o) * oh + i) * ow + j)] = acc;
        }
  return y;
}

// ---------------------------------------------------------------------------------------------------
// Conv

TEST(NNConv, OneDimensionalHandComputed) {
  // y[i] = x[i-1] - x[i+1] + 0.5 with one zero of padding on each side.
  auto k = make(Node("Conv", 3).ints("pads", {1, 1}));
  const Tensor x = Tensor::floats({1, 1, 5}, {1, 2, 3, 4, 5});
  const Tensor w = Tensor::floats({1, 1, 3}, {1, 0, -1});
  const Tensor b = Tensor::floats({1}, {0.5f});
  const Tensor y = run1(*k, {&x, &w, &b});
  EXPECT_EQ(y.shape, (std::vector<int64_t>{1, 1, 5}));
  expect_near(y.f, {-1.5, -1.5, -1.5, -1.5, 4.5});
}

TEST(NNConv, StridesDilationsAndNoBias) {
  // x = 0..9, kernel [1, 1] dilated by 3, stride 2: y[i] = x[2i] + x[2i+3].
  auto k = make(Node("Conv", 2).ints("strides", {2}).ints("dilations", {3}).ints("kernel_shape", {2}));
  std::vector<float> xs(10);
  for (int v = 0; v < 10; ++v) xs[static_cast<size_t>(v)] = static_cast<float>(v);
  const Tensor x = Tensor::floats({1, 1, 10}, xs);
  const Tensor w = Tensor::floats({1, 1, 2}, {1, 1});
  const Tensor y = run1(*k, {&x, &w});
  EXPECT_EQ(y.shape, (std::vector<int64_t>{1, 1, 4}));
  expect_near(y.f, {3, 7, 11, 15});
}

TEST(NNConv, AutoPadSameUpperAndLower) {
  // Length 4, kernel 2, stride 1: one pad, at the end (SAME_UPPER) or the start (SAME_LOWER).
  const Tensor x = Tensor::floats({1, 1, 4}, {1, 2, 3, 4});
  const Tensor w = Tensor::floats({1, 1, 2}, {1, 10});
  auto upper = run1(*make(Node("Conv", 2).s("auto_pad", "SAME_UPPER")), {&x, &w});
  expect_near(upper.f, {21, 32, 43, 4});
  auto lower = run1(*make(Node("Conv", 2).s("auto_pad", "SAME_LOWER")), {&x, &w});
  expect_near(lower.f, {10, 21, 32, 43});
  auto valid = run1(*make(Node("Conv", 2).s("auto_pad", "VALID")), {&x, &w});
  expect_near(valid.f, {21, 32, 43});
}

TEST(NNConv, GroupsHandComputed) {
  // Two groups of one channel each; each output channel sees only its own input channel.
  auto k = make(Node("Conv", 2).i("group", 2));
  const Tensor x = Tensor::floats({1, 2, 3}, {1, 2, 3, 10, 20, 30});
  const Tensor w = Tensor::floats({2, 1, 2}, {1, 1, 1, -1});
  const Tensor y = run1(*k, {&x, &w});
  EXPECT_EQ(y.shape, (std::vector<int64_t>{1, 2, 2}));
  expect_near(y.f, {3, 5, -10, -10});
}

TEST(NNConv, MatchesNaiveReferenceAcrossBatchingPaths) {
  struct Case {
    std::vector<int64_t> x, w;
    int64_t stride, pad, dil, group;
  };
  const Case cases[] = {
      {{300, 3, 1, 40}, {8, 3, 1, 5}, 1, 2, 1, 1},  // many small samples in one GEMM
      {{2, 8, 64, 64}, {6, 8, 3, 3}, 1, 1, 1, 1},   // a sample split over several GEMMs
      {{3, 4, 9, 7}, {6, 2, 3, 2}, 2, 1, 2, 2},     // groups, strides, dilations
      {{2, 4, 9, 9}, {4, 4, 1, 1}, 1, 0, 1, 1},     // 1x1 kernel
      {{2, 3, 5, 6}, {3, 1, 3, 3}, 1, 1, 1, 3},     // depthwise
  };
  uint32_t seed = 1;
  for (const Case& c : cases) {
    const Tensor x = Tensor::floats(c.x, random_floats(static_cast<size_t>(c.x[0] * c.x[1] * c.x[2] * c.x[3]), seed++));
    const Tensor w = Tensor::floats(c.w, random_floats(static_cast<size_t>(c.w[0] * c.w[1] * c.w[2] * c.w[3]), seed++));
    const Tensor b = Tensor::floats({c.w[0]}, random_floats(static_cast<size_t>(c.w[0]), seed++));
    auto k = make(Node("Conv", 3)
                      .ints("strides", {c.stride, c.stride})
                      .ints("pads", {c.pad, c.pad, c.pad, c.pad})
                      .ints("dilations", {c.dil, c.dil})
                      .i("group", c.group));
    std::vector<int64_t> shape;
    const std::vector<double> want = naive_conv2d(x, w, &b, c.stride, c.pad, c.dil, c.group, shape);
    const Tensor y = run1(*k, {&x, &w, &b});
    EXPECT_EQ(y.shape, shape);
    expect_near(y.f, want, 1e-4);
    // The same in double, to double precision.
    const Tensor xd = to_double(x), wd = to_double(w), bd = to_double(b);
    const Tensor yd = run1(*k, {&xd, &wd, &bd});
    EXPECT_EQ(yd.type, ElemType::Double);
    expect_near(yd.d, want, 1e-10);
  }
}

TEST(NNConv, OneDimensionalDirectPathMatchesNaiveReference) {
  // 1-D float convolutions with unit stride take the direct (no im2col) path: channel counts that
  // are and are not multiples of its tiles (12 channels x 32 positions on AVX-512, 6 x 16 else),
  // outputs shorter and longer than a tile and not multiples of it, padding, dilation and groups.
  // Stride 2 takes the im2col path.
  struct Case {
    int64_t n, c, len, m, cg, k, pad, dil, group, stride;
  };
  const Case cases[] = {
      {64, 1, 64, 16, 1, 5, 0, 1, 1, 1},  {7, 16, 60, 32, 16, 5, 0, 1, 1, 1}, {3, 3, 10, 5, 3, 3, 1, 1, 1, 1},
      {2, 4, 37, 6, 2, 3, 2, 2, 2, 1},    {5, 6, 1, 6, 1, 1, 0, 1, 6, 1},     {2, 2, 33, 3, 2, 4, 3, 1, 1, 1},
      {4, 3, 50, 9, 3, 3, 1, 1, 1, 2},
  };
  uint32_t seed = 40;
  for (const Case& c : cases) {
    const Tensor x3 = Tensor::floats({c.n, c.c, c.len}, random_floats(static_cast<size_t>(c.n * c.c * c.len), seed++));
    const Tensor w3 = Tensor::floats({c.m, c.cg, c.k}, random_floats(static_cast<size_t>(c.m * c.cg * c.k), seed++));
    const Tensor b = Tensor::floats({c.m}, random_floats(static_cast<size_t>(c.m), seed++));
    // The reference in 2-D with a height of 1 (no padding along it).
    Tensor x4 = x3, w4 = w3;
    x4.shape = {c.n, c.c, 1, c.len};
    w4.shape = {c.m, c.cg, 1, c.k};
    const int64_t oh_pad = 0;
    auto k2 = make(Node("Conv", 3)
                       .ints("strides", {1, c.stride})
                       .ints("pads", {oh_pad, c.pad, oh_pad, c.pad})
                       .ints("dilations", {1, c.dil})
                       .i("group", c.group));
    const Tensor want = run1(*k2, {&x4, &w4, &b});  // the 2-D im2col path
    auto k1 = make(Node("Conv", 3)
                       .ints("strides", {c.stride})
                       .ints("pads", {c.pad, c.pad})
                       .ints("dilations", {c.dil})
                       .i("group", c.group));
    for (bool with_bias : {true, false}) {
      const Tensor y = with_bias ? run1(*k1, {&x3, &w3, &b}) : run1(*k1, {&x3, &w3});
      ASSERT_EQ(y.shape, (std::vector<int64_t>{want.shape[0], want.shape[1], want.shape[3]}));
      std::vector<double> ref(want.f.begin(), want.f.end());
      if (!with_bias) {
        const int64_t per = want.shape[3];
        for (size_t q = 0; q < ref.size(); ++q) ref[q] -= b.f[(q / static_cast<size_t>(per)) % c.m];
      }
      expect_near(y.f, ref, 1e-4);
    }
  }
}

TEST(NNConv, ConcurrentRunsShareNothing) {
  // Kernels are const and may run on several threads; scratch buffers are per thread.
  auto k = make(Node("Conv", 2).ints("pads", {1, 1}));
  const Tensor w = Tensor::floats({4, 2, 3}, random_floats(24, 7));
  std::vector<Tensor> xs, want;
  for (uint32_t t = 0; t < 4; ++t) {
    xs.push_back(Tensor::floats({50 + t * 30, 2, 33}, random_floats((50 + t * 30) * 66, 100 + t)));
    want.push_back(run1(*k, {&xs.back(), &w}));
  }
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (size_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      bool same = true;
      for (int rep = 0; rep < 20; ++rep) same = same && run1(*k, {&xs[t], &w}).f == want[t].f;
      ok[t] = same;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok, (std::vector<int>{1, 1, 1, 1}));
}

TEST(NNConv, AttributeErrorsAtCompileTime) {
  expect_error([] { make(Node("Conv", 2).i("group", 0)); }, ErrorCode::InvalidModel, "group");
  expect_error([] { make(Node("Conv", 2).ints("strides", {1, 0})); }, ErrorCode::InvalidModel, "strides[1]");
  expect_error([] { make(Node("Conv", 2).ints("dilations", {-1})); }, ErrorCode::InvalidModel, "dilations[0]");
  expect_error([] { make(Node("Conv", 2).ints("pads", {0, -1})); }, ErrorCode::InvalidModel, "pads[1]");
  expect_error([] { make(Node("Conv", 2).ints("kernel_shape", {0})); }, ErrorCode::InvalidModel, "kernel_shape");
  expect_error([] { make(Node("Conv", 2).s("auto_pad", "SAME")); }, ErrorCode::InvalidModel, "auto_pad");
  expect_error([] { make(Node("Conv", 2).s("auto_pad", "SAME_UPPER").ints("pads", {1, 1})); },
               ErrorCode::InvalidModel, "cannot be combined with auto_pad");
  expect_error([] { make(Node("Conv", 2).ints("kernel_shape", {3, 3}).ints("strides", {1})); },
               ErrorCode::InvalidModel, "strides has 1 values; 2 spatial dimensions need 2");
  expect_error([] { make(Node("Conv", 2).ints("kernel_shape", {3}).ints("pads", {1, 1, 1, 1})); },
               ErrorCode::InvalidModel, "pads has 4 values");
  expect_error([] { make(Node("Conv", 1)); }, ErrorCode::InvalidModel, "needs inputs X and W");
  // Error messages name the operator (and the node, when it has a name).
  Node named("Conv", 2);
  named.p.set_name("conv1");
  named.i("group", -2);
  expect_error([&] { make(named); }, ErrorCode::InvalidModel, "Conv 'conv1': group is -2");
  // All-zero pads next to auto_pad are tolerated.
  EXPECT_NO_THROW(make(Node("Conv", 2).s("auto_pad", "VALID").ints("pads", {0, 0})));
}

TEST(NNConv, ShapeAndTypeErrorsAtRunTime) {
  auto k = make(Node("Conv", 3).i("group", 2));
  const Tensor x = Tensor::floats({1, 4, 5}, std::vector<float>(20, 1.0f));
  const Tensor w = Tensor::floats({2, 2, 3}, std::vector<float>(12, 1.0f));
  const Tensor b = Tensor::floats({2}, {0, 0});
  EXPECT_NO_THROW(run1(*k, {&x, &w, &b}));
  const Tensor x3 = Tensor::floats({1, 3, 5}, std::vector<float>(15, 1.0f));
  expect_error([&] { run1(*k, {&x3, &w, &b}); }, ErrorCode::InvalidInput, "X has 3 channels; W of shape [2, 2, 3] with group=2 needs 4");
  const Tensor x2d = Tensor::floats({4, 5}, std::vector<float>(20, 1.0f));
  expect_error([&] { run1(*k, {&x2d, &w, &b}); }, ErrorCode::InvalidInput, "needs X of rank 3");
  const Tensor short_x = Tensor::floats({1, 4, 2}, std::vector<float>(8, 1.0f));
  expect_error([&] { run1(*k, {&short_x, &w, &b}); }, ErrorCode::InvalidInput, "smaller than the kernel extent 3");
  const Tensor b3 = Tensor::floats({3}, {0, 0, 0});
  expect_error([&] { run1(*k, {&x, &w, &b3}); }, ErrorCode::InvalidInput, "B has shape [3]");
  const Tensor wd = to_double(w);
  expect_error([&] { run1(*k, {&x, &wd, &b}); }, ErrorCode::InvalidInput, "'W' has element type double; X has float");
  const Tensor w_odd = Tensor::floats({3, 2, 3}, std::vector<float>(18, 1.0f));
  expect_error([&] { run1(*k, {&x, &w_odd, &b}); }, ErrorCode::InvalidInput, "not a multiple of group=2");
  const Tensor xi = Tensor::int64s({1, 4, 5}, std::vector<int64_t>(20, 1));
  expect_error([&] { run1(*k, {&xi, &w, &b}); }, ErrorCode::UnsupportedOperator,
               "Conv: element type int64 of input 'X' is not supported");
  expect_error([&] { run1(*k, {&x}); }, ErrorCode::InvalidInput, "input 1 ('W') is missing");
  auto ks = make(Node("Conv", 2).ints("kernel_shape", {2}));
  expect_error([&] { run1(*ks, {&x, &w}); }, ErrorCode::InvalidInput, "kernel_shape [2] does not match W");
  // Legal but absurd pads: the output size is checked before anything is allocated.
  const int64_t big = std::numeric_limits<int32_t>::max();
  auto huge = make(Node("Conv", 2).ints("pads", {big, big, big, big}));
  const Tensor x1 = Tensor::floats({1, 1, 1, 1}, {1}), w1 = Tensor::floats({1, 1, 1, 1}, {1});
  expect_error([&] { run1(*huge, {&x1, &w1}); }, ErrorCode::LimitExceeded, "would hold more than");
}

// ---------------------------------------------------------------------------------------------------
// MaxPool, AveragePool

TEST(NNPool, MaxPoolOverWholeRowsSkipsNaNLikeTheGeneralPath) {
  // [3, 5, 22] with kernel 2, stride 2: every plane is exactly twice its output, the case scored
  // over the whole tensor at once (and with AVX2 eight outputs at a time). NaN taps are skipped;
  // a window of two NaN is -inf; with a 3-wide window (general path) the same rule holds.
  const int64_t n = 3, c = 5, len = 22;
  std::vector<float> v = random_floats(static_cast<size_t>(n * c * len), 7);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  v[0] = nan;
  v[5] = nan;
  v[6] = -inf;
  v[8] = nan;
  v[9] = nan;
  v[40] = inf;
  v[63] = nan;
  const Tensor x = Tensor::floats({n, c, len}, v);
  for (int64_t k : {2, 3}) {
    const Tensor y = run1(*make(Node("MaxPool").ints("kernel_shape", {k}).ints("strides", {2})), {&x});
    const int64_t out = (len - k) / 2 + 1;
    ASSERT_EQ(y.shape, (std::vector<int64_t>{n, c, out}));
    for (int64_t p = 0; p < n * c; ++p)
      for (int64_t q = 0; q < out; ++q) {
        float best = -inf;
        for (int64_t j = 0; j < k; ++j) {
          const float t = v[static_cast<size_t>(p * len + 2 * q + j)];
          best = t > best ? t : best;
        }
        EXPECT_EQ(y.f[static_cast<size_t>(p * out + q)], best) << "kernel " << k << " plane " << p << " output " << q;
      }
  }
}

TEST(NNPool, MaxPoolWithIndicesRowAndColumnMajor) {
  std::vector<float> xs(25);
  for (int v = 0; v < 25; ++v) xs[static_cast<size_t>(v)] = static_cast<float>(v + 1);
  const Tensor x = Tensor::floats({1, 1, 5, 5}, xs);
  auto row = run(*make(Node("MaxPool", 1, 2).ints("kernel_shape", {2, 2}).ints("strides", {2, 2})), {&x}, 2);
  expect_near(row[0].f, {7, 9, 17, 19});
  EXPECT_EQ(row[1].type, ElemType::Int64);
  EXPECT_EQ(row[1].i, (std::vector<int64_t>{6, 8, 16, 18}));
  auto col = run(*make(Node("MaxPool", 1, 2).ints("kernel_shape", {2, 2}).ints("strides", {2, 2}).i("storage_order", 1)),
                 {&x}, 2);
  EXPECT_EQ(col[1].i, (std::vector<int64_t>{6, 16, 8, 18}));
  // Indices count from the start of the whole tensor (batch and channel included).
  const Tensor x2 = Tensor::floats({1, 2, 2}, {1, 5, 7, 3});
  auto two = run(*make(Node("MaxPool", 1, 2).ints("kernel_shape", {2})), {&x2}, 2);
  expect_near(two[0].f, {5, 7});
  EXPECT_EQ(two[1].i, (std::vector<int64_t>{1, 2}));
}

TEST(NNPool, MaxPoolPaddingSkipsPadsAndCeilMode) {
  const Tensor x = Tensor::floats({1, 1, 5}, {-1, -2, -3, -4, -5});
  auto y = run1(*make(Node("MaxPool", 1).ints("kernel_shape", {2}).ints("pads", {1, 1})), {&x});
  expect_near(y.f, {-1, -1, -2, -3, -4, -5});  // padding never wins, even against negatives
  // ceil_mode: length 5, kernel 2, stride 2 -> 3 windows, the last one partial.
  auto c = run1(*make(Node("MaxPool", 1).ints("kernel_shape", {2}).ints("strides", {2}).i("ceil_mode", 1)), {&x});
  expect_near(c.f, {-1, -3, -5});
  auto f = run1(*make(Node("MaxPool", 1).ints("kernel_shape", {2}).ints("strides", {2})), {&x});
  expect_near(f.f, {-1, -3});
}

TEST(NNPool, AveragePoolCountIncludePad) {
  const Tensor x = Tensor::floats({1, 1, 4}, {1, 2, 3, 4});
  auto excl = run1(*make(Node("AveragePool", 1).ints("kernel_shape", {3}).ints("pads", {1, 1})), {&x});
  expect_near(excl.f, {1.5, 2, 3, 3.5});
  auto incl = run1(*make(Node("AveragePool", 1).ints("kernel_shape", {3}).ints("pads", {1, 1}).i("count_include_pad", 1)),
                   {&x});
  expect_near(incl.f, {1, 2, 3, 7.0 / 3});
  // 2-D, double: a 3x3 window over a 3x3 input padded by 1.
  const Tensor xd = Tensor::doubles({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  auto d = run1(*make(Node("AveragePool", 1).ints("kernel_shape", {3, 3}).ints("pads", {1, 1, 1, 1})), {&xd});
  EXPECT_EQ(d.type, ElemType::Double);
  expect_near(d.d, {3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5, 7}, 1e-12);
}

TEST(NNPool, ThreeDimensionalMatchesBruteForce) {
  const Tensor x = Tensor::floats({2, 2, 5, 4, 6}, random_floats(480, 3));
  auto k = make(Node("MaxPool", 1).ints("kernel_shape", {2, 3, 2}).ints("strides", {2, 1, 2}).ints("pads", {1, 1, 0, 0, 1, 1}));
  const Tensor y = run1(*k, {&x});
  ASSERT_EQ(y.shape, (std::vector<int64_t>{2, 2, 3, 4, 3}));
  size_t q = 0;
  for (int64_t p = 0; p < 4; ++p)
    for (int64_t a = 0; a < 3; ++a)
      for (int64_t b = 0; b < 4; ++b)
        for (int64_t c = 0; c < 3; ++c, ++q) {
          float best = -std::numeric_limits<float>::infinity();
          for (int64_t i = a * 2 - 1; i < a * 2 - 1 + 2; ++i)
            for (int64_t j = b - 1; j < b - 1 + 3; ++j)
              for (int64_t l = c * 2; l < c * 2 + 2; ++l)
                if (i >= 0 && i < 5 && j >= 0 && j < 4 && l < 6) best = std::max(best, x.f[static_cast<size_t>(((p * 5 + i) * 4 + j) * 6 + l)]);
          EXPECT_EQ(y.f[q], best) << "at " << q;
        }
}

TEST(NNPool, Errors) {
  expect_error([] { make(Node("MaxPool", 1)); }, ErrorCode::InvalidModel, "lacks required attribute 'kernel_shape'");
  expect_error([] { make(Node("MaxPool", 1).ints("kernel_shape", {2}).i("ceil_mode", 2)); }, ErrorCode::InvalidModel,
               "ceil_mode must be 0 or 1");
  expect_error([] { make(Node("MaxPool", 1).ints("kernel_shape", {2}).i("storage_order", 3)); }, ErrorCode::InvalidModel,
               "storage_order");
  expect_error([] { make(Node("AveragePool", 1).ints("kernel_shape", {2}).i("count_include_pad", 5)); },
               ErrorCode::InvalidModel, "count_include_pad");
  expect_error([] { make(Node("MaxPool", 1).ints("kernel_shape", {2}).ints("pads", {2, 0})); }, ErrorCode::InvalidModel,
               "reach past the kernel extent 2");
  expect_error([] { make(Node("AveragePool", 1).ints("kernel_shape", {2, 2}).ints("strides", {1, 1, 1})); },
               ErrorCode::InvalidModel, "strides has 3 values");
  auto k = make(Node("MaxPool", 1).ints("kernel_shape", {2, 2}));
  const Tensor x3 = Tensor::floats({1, 1, 4}, {1, 2, 3, 4});
  expect_error([&] { run1(*k, {&x3}); }, ErrorCode::InvalidInput, "needs X of rank 4");
  const Tensor small = Tensor::floats({1, 1, 1, 4}, {1, 2, 3, 4});
  expect_error([&] { run1(*k, {&small}); }, ErrorCode::InvalidInput, "smaller than the kernel extent 2");
  const Tensor xi = Tensor::int64s({1, 1, 2, 2}, {1, 2, 3, 4});
  expect_error([&] { run1(*k, {&xi}); }, ErrorCode::UnsupportedOperator, "MaxPool: element type int64");
}

TEST(NNPool, GlobalPools) {
  const Tensor x = Tensor::floats({1, 2, 2, 2}, {1, 2, 3, 4, -1, -5, 0, 2});
  auto avg = run1(*make(Node("GlobalAveragePool", 1)), {&x});
  EXPECT_EQ(avg.shape, (std::vector<int64_t>{1, 2, 1, 1}));
  expect_near(avg.f, {2.5, -1});
  auto mx = run1(*make(Node("GlobalMaxPool", 1)), {&x});
  expect_near(mx.f, {4, 2});
  const Tensor nan = Tensor::doubles({1, 1, 3}, {1, std::nan(""), 3});
  EXPECT_TRUE(std::isnan(run1(*make(Node("GlobalMaxPool", 1)), {&nan}).d[0]));
  const Tensor x2 = Tensor::floats({2, 2}, {1, 2, 3, 4});
  expect_error([&] { run1(*make(Node("GlobalAveragePool", 1)), {&x2}); }, ErrorCode::InvalidInput, "rank 3 or more");
  const Tensor s = Tensor::strings({1, 1, 1}, {"a"});
  expect_error([&] { run1(*make(Node("GlobalMaxPool", 1)), {&s}); }, ErrorCode::UnsupportedOperator,
               "GlobalMaxPool: element type string");
}

// ---------------------------------------------------------------------------------------------------
// Normalizations

TEST(NNNorm, BatchNormalizationInference) {
  // Channel 0: (x - 1) / sqrt(4) * 2 + 0.5; channel 1: (x - 0) / sqrt(1) * 1 - 1 (epsilon 0).
  auto k = make(Node("BatchNormalization", 5).f("epsilon", 0.0f), 15);
  const Tensor x = Tensor::floats({1, 2, 2}, {1, 3, 2, -2});
  const Tensor scale = Tensor::floats({2}, {2, 1}), bias = Tensor::floats({2}, {0.5f, -1});
  const Tensor mean = Tensor::floats({2}, {1, 0}), var = Tensor::floats({2}, {4, 1});
  auto y = run1(*k, {&x, &scale, &bias, &mean, &var});
  expect_near(y.f, {0.5, 2.5, 1, -3});
  // Opset 15 lets the statistics have their own type.
  const Tensor mean_d = to_double(mean), var_d = to_double(var);
  expect_near(run1(*k, {&x, &scale, &bias, &mean_d, &var_d}).f, {0.5, 2.5, 1, -3});
}

TEST(NNNorm, BatchNormalizationTrainingMode) {
  auto k = make(Node("BatchNormalization", 5, 3).f("epsilon", 0.0f).f("momentum", 0.5f).i("training_mode", 1), 15);
  const Tensor x = Tensor::floats({2, 1, 2}, {1, 3, 5, 7});  // batch mean 4, variance 5
  const Tensor one = Tensor::floats({1}, {1}), zero = Tensor::floats({1}, {0});
  auto out = run(*k, {&x, &one, &zero, &zero, &one}, 3);
  const double s = 1 / std::sqrt(5.0);
  expect_near(out[0].f, {-3 * s, -1 * s, 1 * s, 3 * s});
  expect_near(out[1].f, {2});    // 0 * 0.5 + 4 * 0.5
  expect_near(out[2].f, {3});    // 1 * 0.5 + 5 * 0.5
}

TEST(NNNorm, BatchNormalizationErrors) {
  expect_error([] { make(Node("BatchNormalization", 5).i("training_mode", 2), 15); }, ErrorCode::InvalidModel,
               "training_mode must be 0 or 1");
  expect_error([] { make(Node("BatchNormalization", 5).f("epsilon", -1.0f), 15); }, ErrorCode::InvalidModel,
               "epsilon must not be negative");
  expect_error([] { make(Node("BatchNormalization", 5).i("spatial", 0), 7); }, ErrorCode::UnsupportedOperator,
               "spatial=0");
  expect_error([] { make(Node("BatchNormalization", 5, 5), 9); }, ErrorCode::UnsupportedOperator,
               "training mode is not supported before opset 14");
  expect_error([] { make(Node("BatchNormalization", 3), 15); }, ErrorCode::InvalidModel, "needs inputs");
  auto k = make(Node("BatchNormalization", 5), 15);
  const Tensor x = Tensor::floats({1, 2, 1}, {1, 2});
  const Tensor two = Tensor::floats({2}, {1, 1}), three = Tensor::floats({3}, {1, 1, 1});
  expect_error([&] { run1(*k, {&x, &two, &two, &three, &two}); }, ErrorCode::InvalidInput,
               "input 'input_mean' has shape [3]; X has 2 channels");
  const Tensor xi = Tensor::int64s({1, 2}, {1, 2});
  expect_error([&] { run1(*k, {&xi, &two, &two, &two, &two}); }, ErrorCode::UnsupportedOperator,
               "BatchNormalization: element type int64");
  const Tensor si = Tensor::int64s({2}, {1, 1});
  expect_error([&] { run1(*k, {&x, &si, &two, &two, &two}); }, ErrorCode::UnsupportedOperator, "input 'scale'");
}

TEST(NNNorm, InstanceNormalization) {
  auto k = make(Node("InstanceNormalization", 3).f("epsilon", 0.0f));
  const Tensor x = Tensor::doubles({1, 2, 2}, {1, 3, 10, 12});  // means 2 and 11, variances 1
  const Tensor scale = Tensor::doubles({2}, {2, 1}), bias = Tensor::doubles({2}, {1, 5});
  auto y = run1(*k, {&x, &scale, &bias});
  expect_near(y.d, {-1, 3, 4, 6}, 1e-12);
  // Far from zero, the result keeps its precision: (x - mean) is formed first.
  auto kf = make(Node("InstanceNormalization", 3).f("epsilon", 0.0f));
  const Tensor xf = Tensor::floats({1, 1, 2}, {10000.0f, 10000.5f});
  const Tensor one = Tensor::floats({1}, {1}), zero = Tensor::floats({1}, {0});
  expect_near(run1(*kf, {&xf, &one, &zero}).f, {-1, 1}, 1e-6);
  const Tensor x2 = Tensor::doubles({1, 2}, {1, 2});
  expect_error([&] { run1(*k, {&x2, &scale, &bias}); }, ErrorCode::InvalidInput, "rank 3 or more");
  const Tensor sf = Tensor::floats({2}, {1, 1});
  expect_error([&] { run1(*k, {&x, &sf, &bias}); }, ErrorCode::InvalidInput, "'scale' has element type float");
}

TEST(NNNorm, LayerNormalizationWithStatistics) {
  auto k = make(Node("LayerNormalization", 3, 3));
  const Tensor x = Tensor::floats({2, 4}, {1, 2, 3, 4, 2, 2, 2, 2});
  const Tensor scale = Tensor::floats({4}, {1, 1, 2, 2}), bias = Tensor::floats({4}, {0, 0, 0, 1});
  auto out = run(*k, {&x, &scale, &bias}, 3);
  const double inv = 1 / std::sqrt(1.25 + 1e-5);
  expect_near(out[0].f, {-1.5 * inv, -0.5 * inv, 1.0 * inv, 3.0 * inv + 1, 0, 0, 0, 1}, 1e-5);
  EXPECT_EQ(out[1].shape, (std::vector<int64_t>{2, 1}));
  expect_near(out[1].f, {2.5, 2});
  expect_near(out[2].f, {inv, 1 / std::sqrt(1e-5)}, 1e-3);
  // stash_type DOUBLE: statistics in double even for float X.
  auto kd = make(Node("LayerNormalization", 2, 3).i("axis", 0).i("stash_type", TP::DOUBLE));
  const Tensor s8 = Tensor::floats({2, 4}, std::vector<float>(8, 1.0f));
  auto d = run(*kd, {&x, &s8}, 3);
  EXPECT_EQ(d[1].type, ElemType::Double);
  EXPECT_EQ(d[1].shape, (std::vector<int64_t>{1, 1}));
  expect_near(d[1].d, {2.25}, 1e-12);
  // Scale broadcast over the normalized dimensions.
  auto kb = make(Node("LayerNormalization", 2).i("axis", 0).f("epsilon", 0.0f));
  const Tensor col = Tensor::floats({2, 1}, {1, 10});
  const Tensor x2 = Tensor::floats({2, 2}, {0, 0, 2, 2});  // mean 1, variance 1
  expect_near(run1(*kb, {&x2, &col}).f, {-1, -1, 10, 10});
}

TEST(NNNorm, LayerNormalizationErrors) {
  expect_error([] { make(Node("LayerNormalization", 2).i("stash_type", TP::FLOAT16)); }, ErrorCode::UnsupportedOperator,
               "stash_type FLOAT16");
  expect_error([] { make(Node("LayerNormalization", 2).i("stash_type", 999)); }, ErrorCode::InvalidModel, "stash_type 999");
  expect_error([] { make(Node("LayerNormalization", 2).f("epsilon", std::numeric_limits<float>::infinity())); },
               ErrorCode::InvalidModel, "epsilon must be finite");
  auto k = make(Node("LayerNormalization", 2).i("axis", 2));
  const Tensor x = Tensor::floats({2, 2}, {1, 2, 3, 4});
  const Tensor s = Tensor::floats({2}, {1, 1});
  expect_error([&] { run1(*k, {&x, &s}); }, ErrorCode::InvalidInput, "axis 2 is out of range for X of shape [2, 2]");
  auto k1 = make(Node("LayerNormalization", 2));
  const Tensor s3 = Tensor::floats({3}, {1, 1, 1});
  expect_error([&] { run1(*k1, {&x, &s3}); }, ErrorCode::InvalidInput, "Scale has shape [3], which does not broadcast");
}

TEST(NNNorm, LocalResponseNormalization) {
  // size 3 over 3 channels of one value each: channel c sums squares of c-1..c+1.
  auto k = make(Node("LRN", 1).i("size", 3).f("alpha", 3.0f).f("beta", 1.0f).f("bias", 1.0f));
  const Tensor x = Tensor::floats({1, 3, 1}, {1, 2, 3});
  auto y = run1(*k, {&x});
  expect_near(y.f, {1.0 / (1 + 5), 2.0 / (1 + 14), 3.0 / (1 + 13)});
  expect_error([] { make(Node("LRN", 1)); }, ErrorCode::InvalidModel, "lacks required attribute 'size'");
  expect_error([] { make(Node("LRN", 1).i("size", 0)); }, ErrorCode::InvalidModel, "size is 0");
}

// ---------------------------------------------------------------------------------------------------
// A small 1-D CNN through flock::Model: Conv (initializers) -> MaxPool -> GlobalAveragePool.

onnx::AttributeProto* add_ints(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
  return a;
}

void set_type(onnx::ValueInfoProto* vi, const std::string& name, const std::vector<int64_t>& dims) {
  vi->set_name(name);
  auto* tt = vi->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(TP::FLOAT);
  tt->mutable_shape()->add_dim()->set_dim_param("N");
  for (int64_t d : dims) tt->mutable_shape()->add_dim()->set_dim_value(d);
}

TEST(NNModel, SmallCnnRunsThroughTheModel) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(13);
  auto* g = m.mutable_graph();
  g->set_name("cnn");
  set_type(g->add_input(), "x", {2, 8});
  auto* w = g->add_initializer();
  w->set_name("w");
  w->set_data_type(TP::FLOAT);
  for (int64_t d : {3, 2, 3}) w->add_dims(d);
  const std::vector<float> wv = random_floats(18, 11);
  for (float v : wv) w->add_float_data(v);
  auto* b = g->add_initializer();
  b->set_name("b");
  b->set_data_type(TP::FLOAT);
  b->add_dims(3);
  for (float v : {0.1f, -0.2f, 0.3f}) b->add_float_data(v);
  auto* conv = g->add_node();
  conv->set_op_type("Conv");
  for (const char* in : {"x", "w", "b"}) conv->add_input(in);
  conv->add_output("c");
  add_ints(conv, "pads", {1, 1});
  auto* pool = g->add_node();
  pool->set_op_type("MaxPool");
  pool->add_input("c");
  pool->add_output("p");
  add_ints(pool, "kernel_shape", {2});
  add_ints(pool, "strides", {2});
  auto* gap = g->add_node();
  gap->set_op_type("GlobalAveragePool");
  gap->add_input("p");
  gap->add_output("y");
  set_type(g->add_output(), "y", {3, 1});
  std::string bytes;
  m.SerializeToString(&bytes);
  auto model = flock::Model::load(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));

  const int64_t n = 5;
  const Tensor x = Tensor::floats({n, 2, 8}, random_floats(static_cast<size_t>(n * 16), 12));
  auto out = model->run_tensors({x});
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0].shape, (std::vector<int64_t>{n, 3, 1}));
  for (int64_t s = 0; s < n; ++s) {
    for (int64_t o = 0; o < 3; ++o) {
      double conv_out[8];
      for (int64_t i = 0; i < 8; ++i) {
        double acc = o == 0 ? 0.1 : o == 1 ? -0.2 : 0.3;
        for (int64_t c = 0; c < 2; ++c)
          for (int64_t k = 0; k < 3; ++k) {
            const int64_t at = i - 1 + k;
            if (at >= 0 && at < 8)
              acc += static_cast<double>(x.f[static_cast<size_t>((s * 2 + c) * 8 + at)]) * wv[static_cast<size_t>((o * 2 + c) * 3 + k)];
          }
        conv_out[i] = acc;
      }
      double mean = 0;
      for (int64_t i = 0; i < 4; ++i) mean += std::max(conv_out[2 * i], conv_out[2 * i + 1]) / 4;
      EXPECT_NEAR(out[0].f[static_cast<size_t>(s * 3 + o)], mean, 1e-5);
    }
  }
}

}  // namespace
