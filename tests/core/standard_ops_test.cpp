// Tests for the default-domain kernels (core/src/kernels/standard.cpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "flock/kernel.hpp"
#include "kernel_test_util.hpp"

namespace {

using flock::ElemType;
using flock::Error;
using flock::ErrorCode;
using flock::Kernel;
using flock::Tensor;

using flock::testing::Node;
using flock::testing::expect_error;

std::unique_ptr<Kernel> make(const Node& n, int64_t opset = 17) { return flock::testing::make_kernel(n, opset); }
template <typename T>
void expect_near(const std::vector<T>& got, const std::vector<double>& want, double tol = 1e-6) {
  flock::testing::expect_all_near(got, want, tol);
}

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

Tensor run1(const Kernel& k, std::vector<const Tensor*> in) {
  return std::move(flock::testing::run_kernel(k, std::move(in), 1)[0]);
}

Tensor run1(const Kernel& k, const Tensor& x) { return run1(k, std::vector<const Tensor*>{&x}); }
Tensor run2(const Kernel& k, const Tensor& a, const Tensor& b) { return run1(k, std::vector<const Tensor*>{&a, &b}); }

Node cast_to(int to) {
  Node n("Cast");
  n.i("to", to);
  return n;
}

using TP = onnx::TensorProto;

// ---------------------------------------------------------------------------------------------------
// Cast

TEST(StandardCast, NumericConversions) {
  const Tensor x = Tensor::floats({2, 2}, {1.9f, -1.9f, 0.0f, 3.0f});
  auto d = run1(*make(cast_to(TP::DOUBLE)), x);
  EXPECT_EQ(d.type, ElemType::Double);
  EXPECT_EQ(d.shape, x.shape);
  expect_near(d.d, {1.9, -1.9, 0, 3}, 1e-6);
  auto i = run1(*make(cast_to(TP::INT64)), x);
  EXPECT_EQ(i.type, ElemType::Int64);
  EXPECT_EQ(i.i, (std::vector<int64_t>{1, -1, 0, 3}));  // truncation toward zero
  auto b = run1(*make(cast_to(TP::BOOL)), x);
  EXPECT_EQ(b.type, ElemType::Bool);
  EXPECT_EQ(b.b, (std::vector<uint8_t>{1, 1, 0, 1}));
  auto f = run1(*make(cast_to(TP::FLOAT)), Tensor::int64s({2}, {7, -3}));
  EXPECT_EQ(f.f, (std::vector<float>{7, -3}));
  auto fb = run1(*make(cast_to(TP::FLOAT)), b);
  EXPECT_EQ(fb.f, (std::vector<float>{1, 1, 0, 1}));
  auto i32 = run1(*make(cast_to(TP::INT32)), Tensor::int64s({2}, {int64_t(1) << 32 | 5, -1}));
  EXPECT_EQ(i32.type, ElemType::Int64);
  EXPECT_EQ(i32.i, (std::vector<int64_t>{5, -1}));  // wraps to 32 bits
  auto u8 = run1(*make(cast_to(TP::UINT8)), Tensor::int64s({2}, {300, -1}));
  EXPECT_EQ(u8.i, (std::vector<int64_t>{44, 255}));
  auto nan = run1(*make(cast_to(TP::INT64)), Tensor::doubles({2}, {std::nan(""), 1e300}));
  EXPECT_EQ(nan.i, (std::vector<int64_t>{std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::min()}));
}

TEST(StandardCast, ToStringShortestRoundTrip) {
  auto s = run1(*make(cast_to(TP::STRING)), Tensor::floats({5}, {1.5f, 0.1f, kNaN, kInf, -kInf}));
  EXPECT_EQ(s.type, ElemType::String);
  EXPECT_EQ(s.s, (std::vector<std::string>{"1.5", "0.1", "NaN", "INF", "-INF"}));
  auto sd = run1(*make(cast_to(TP::STRING)), Tensor::doubles({2}, {1.0 / 3.0, 1e20}));
  EXPECT_EQ(sd.s, (std::vector<std::string>{"0.3333333333333333", "1e+20"}));
  // numpy str(): positional in [1e-4, 1e16) with at least one decimal, scientific outside.
  auto sf = run1(*make(cast_to(TP::STRING)),
                 Tensor::floats({8}, {0.6048455f, 100.0f, -0.0f, 1e-5f, 123456789.0f, 1e16f, 0.00012f, -2.5e-7f}));
  EXPECT_EQ(sf.s, (std::vector<std::string>{"0.6048455", "100.0", "-0.0", "1e-05", "123456790.0", "1e+16", "0.00012",
                                            "-2.5e-07"}));
  auto si = run1(*make(cast_to(TP::STRING)), Tensor::int64s({2}, {-42, 7}));
  EXPECT_EQ(si.s, (std::vector<std::string>{"-42", "7"}));
  auto same = run1(*make(cast_to(TP::STRING)), Tensor::strings({1}, {"x"}));
  EXPECT_EQ(same.s, (std::vector<std::string>{"x"}));
}

TEST(StandardCast, FromString) {
  const Tensor x = Tensor::strings({4}, {"1.25", " -3", "1e3", "7abc"});
  expect_near(run1(*make(cast_to(TP::FLOAT)), x).f, {1.25, -3, 1000, 7});
  expect_near(run1(*make(cast_to(TP::DOUBLE)), x).d, {1.25, -3, 1000, 7});
  EXPECT_EQ(run1(*make(cast_to(TP::INT64)), Tensor::strings({2}, {"42", "-7"})).i, (std::vector<int64_t>{42, -7}));
  EXPECT_EQ(run1(*make(cast_to(TP::BOOL)), Tensor::strings({2}, {"0", "2"})).b, (std::vector<uint8_t>{0, 1}));
  auto nan = run1(*make(cast_to(TP::FLOAT)), Tensor::strings({2}, {"NaN", "-INF"}));
  EXPECT_TRUE(std::isnan(nan.f[0]));
  EXPECT_EQ(nan.f[1], -kInf);
  expect_error([&] { run1(*make(cast_to(TP::FLOAT)), Tensor::strings({1}, {"abc"})); }, ErrorCode::InvalidInput,
               "cannot convert 'abc'");
  expect_error([&] { run1(*make(cast_to(TP::INT64)), Tensor::strings({1}, {"99999999999999999999"})); },
               ErrorCode::InvalidInput, "out of range");
}

TEST(StandardCast, Opset1StringAttribute) {
  Node n("Cast");
  n.s("to", "DOUBLE");
  auto y = run1(*make(n, 1), Tensor::floats({1}, {2.5f}));
  EXPECT_EQ(y.type, ElemType::Double);
  EXPECT_EQ(y.d, (std::vector<double>{2.5}));
}

TEST(StandardCast, CompileErrors) {
  expect_error([] { make(Node("Cast")); }, ErrorCode::InvalidModel, "'to'");
  expect_error([] { make(cast_to(TP::FLOAT16)); }, ErrorCode::UnsupportedOperator, "FLOAT16");
  expect_error([] { make(cast_to(999)); }, ErrorCode::UnsupportedOperator, "999");
  Node n("Cast");
  n.s("to", "NOPE");
  expect_error([&] { make(n, 1); }, ErrorCode::UnsupportedOperator, "'NOPE'");
}

// ---------------------------------------------------------------------------------------------------
// Identity, Flatten, Reshape, Concat

TEST(StandardIdentity, CopiesAnyType) {
  auto k = make(Node("Identity"));
  const Tensor s = Tensor::strings({2}, {"a", "b"});
  EXPECT_EQ(run1(*k, s).s, s.s);
  const Tensor f = Tensor::floats({1, 2}, {1, 2});
  auto y = run1(*k, f);
  EXPECT_EQ(y.f, f.f);
  EXPECT_EQ(y.shape, f.shape);
  expect_error([&] { run1(*k, std::vector<const Tensor*>{}); }, ErrorCode::InvalidInput, "missing");
}

TEST(StandardFlatten, Axes) {
  const Tensor x = Tensor::floats({2, 3, 4}, std::vector<float>(24, 1.0f));
  EXPECT_EQ(run1(*make(Node("Flatten")), x).shape, (std::vector<int64_t>{2, 12}));
  Node a0("Flatten");
  a0.i("axis", 0);
  EXPECT_EQ(run1(*make(a0), x).shape, (std::vector<int64_t>{1, 24}));
  Node a3("Flatten");
  a3.i("axis", 3);
  EXPECT_EQ(run1(*make(a3), x).shape, (std::vector<int64_t>{24, 1}));
  Node neg("Flatten");
  neg.i("axis", -1);
  EXPECT_EQ(run1(*make(neg), x).shape, (std::vector<int64_t>{6, 4}));
  expect_error([&] { make(neg, 9); }, ErrorCode::InvalidModel, "opset 11");
  Node bad("Flatten");
  bad.i("axis", 4);
  expect_error([&] { run1(*make(bad), x); }, ErrorCode::InvalidInput, "axis 4 is out of range");
}

TEST(StandardReshape, ZeroCopiesMinusOneInfers) {
  auto k = make(Node("Reshape", 2));
  const Tensor x = Tensor::int64s({2, 3, 4}, std::vector<int64_t>(24, 5));
  const Tensor s1 = Tensor::int64s({2}, {0, -1});
  EXPECT_EQ(run2(*k, x, s1).shape, (std::vector<int64_t>{2, 12}));
  const Tensor s2 = Tensor::int64s({3}, {4, 0, -1});
  EXPECT_EQ(run2(*k, x, s2).shape, (std::vector<int64_t>{4, 3, 2}));
  const Tensor s3 = Tensor::int64s({1}, {-1});
  auto flat = run2(*k, x, s3);
  EXPECT_EQ(flat.shape, (std::vector<int64_t>{24}));
  EXPECT_EQ(flat.i, x.i);
}

TEST(StandardReshape, AllowZeroAndLegacyAttribute) {
  Node n("Reshape", 2);
  n.i("allowzero", 1);
  const Tensor empty = Tensor::floats({0, 3}, {});
  const Tensor s = Tensor::int64s({2}, {3, 0});
  EXPECT_EQ(run2(*make(n, 14), empty, s).shape, (std::vector<int64_t>{3, 0}));
  const Tensor bad = Tensor::int64s({2}, {0, -1});
  expect_error([&] { run2(*make(n, 14), empty, bad); }, ErrorCode::InvalidInput, "both 0 and -1");

  Node legacy("Reshape", 1);
  legacy.ints("shape", {3, -1});
  EXPECT_EQ(run1(*make(legacy, 1), Tensor::floats({6}, {1, 2, 3, 4, 5, 6})).shape, (std::vector<int64_t>{3, 2}));
  expect_error([] { make(Node("Reshape", 1), 1); }, ErrorCode::InvalidModel, "'shape'");
  expect_error([] { make(Node("Reshape", 1), 13); }, ErrorCode::InvalidModel, "needs two inputs");
}

TEST(StandardReshape, Errors) {
  auto k = make(Node("Reshape", 2));
  const Tensor x = Tensor::floats({2, 3}, {1, 2, 3, 4, 5, 6});
  expect_error([&] { run2(*k, x, Tensor::int64s({2}, {4, 2})); }, ErrorCode::InvalidInput, "cannot reshape");
  expect_error([&] { run2(*k, x, Tensor::int64s({2}, {-1, -1})); }, ErrorCode::InvalidInput, "more than one -1");
  expect_error([&] { run2(*k, x, Tensor::int64s({2}, {4, -1})); }, ErrorCode::InvalidInput, "cannot reshape");
  expect_error([&] { run2(*k, x, Tensor::int64s({2}, {-2, 3})); }, ErrorCode::InvalidInput, "negative dimension");
  expect_error([&] { run2(*k, x, Tensor::int64s({3}, {1, 1, 0})); }, ErrorCode::InvalidInput, "copies dimension 2");
  expect_error([&] { run2(*k, x, Tensor::floats({1}, {6})); }, ErrorCode::InvalidInput, "expected int64");
}

TEST(StandardConcat, AxesAndTypes) {
  Node n("Concat", 2);
  n.i("axis", 1);
  const Tensor a = Tensor::floats({2, 1}, {1, 2});
  const Tensor b = Tensor::floats({2, 2}, {3, 4, 5, 6});
  auto y = run2(*make(n), a, b);
  EXPECT_EQ(y.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(y.f, (std::vector<float>{1, 3, 4, 2, 5, 6}));
  Node neg("Concat", 2);
  neg.i("axis", -2);
  const Tensor c = Tensor::strings({1, 2}, {"a", "b"});
  const Tensor d = Tensor::strings({2, 2}, {"c", "d", "e", "f"});
  auto ys = run2(*make(neg), c, d);
  EXPECT_EQ(ys.shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(ys.s, (std::vector<std::string>{"a", "b", "c", "d", "e", "f"}));
  Node three("Concat", 3);
  three.i("axis", 0);
  const Tensor i1 = Tensor::int64s({1}, {1}), i2 = Tensor::int64s({0}, {}), i3 = Tensor::int64s({2}, {2, 3});
  EXPECT_EQ(run1(*make(three), {&i1, &i2, &i3}).i, (std::vector<int64_t>{1, 2, 3}));
  // Opset 1 default axis is 1.
  EXPECT_EQ(run2(*make(Node("Concat", 2), 1), a, b).shape, (std::vector<int64_t>{2, 3}));
}

TEST(StandardConcat, Errors) {
  expect_error([] { make(Node("Concat", 2), 13); }, ErrorCode::InvalidModel, "'axis'");
  Node n("Concat", 2);
  n.i("axis", 1);
  auto k = make(n);
  const Tensor a = Tensor::floats({2, 1}, {1, 2});
  expect_error([&] { run2(*k, a, Tensor::doubles({2, 1}, {1, 2})); }, ErrorCode::InvalidInput, "element type double");
  expect_error([&] { run2(*k, a, Tensor::floats({3, 1}, {1, 2, 3})); }, ErrorCode::InvalidInput, "does not fit");
  expect_error([&] { run2(*k, a, Tensor::floats({2}, {1, 2})); }, ErrorCode::InvalidInput, "does not fit");
  Node far("Concat", 2);
  far.i("axis", 2);
  expect_error([&] { run2(*make(far), a, a); }, ErrorCode::InvalidInput, "axis 2 is out of range");
  expect_error([&] { run2(*k, Tensor::floats({}, {1}), a); }, ErrorCode::InvalidInput, "scalars");
}

// ---------------------------------------------------------------------------------------------------
// Add / Sub / Mul / Div

TEST(StandardBinary, SameShapeAndScalars) {
  const Tensor a = Tensor::floats({2, 2}, {1, 2, 3, 4});
  const Tensor b = Tensor::floats({2, 2}, {4, 3, 2, 1});
  const Tensor s = Tensor::floats({}, {2});
  EXPECT_EQ(run2(*make(Node("Add", 2)), a, b).f, (std::vector<float>{5, 5, 5, 5}));
  EXPECT_EQ(run2(*make(Node("Sub", 2)), a, b).f, (std::vector<float>{-3, -1, 1, 3}));
  EXPECT_EQ(run2(*make(Node("Mul", 2)), a, s).f, (std::vector<float>{2, 4, 6, 8}));
  EXPECT_EQ(run2(*make(Node("Div", 2)), s, a).f, (std::vector<float>{2, 1, 2.0f / 3, 0.5f}));
  auto sc = run2(*make(Node("Add", 2)), s, s);
  EXPECT_TRUE(sc.shape.empty());
  EXPECT_EQ(sc.f, (std::vector<float>{4}));
}

TEST(StandardBinary, NumpyBroadcasting) {
  const Tensor m = Tensor::doubles({2, 3}, {1, 2, 3, 4, 5, 6});
  const Tensor row = Tensor::doubles({3}, {10, 20, 30});
  const Tensor col = Tensor::doubles({2, 1}, {100, 200});
  auto y1 = run2(*make(Node("Sub", 2)), m, row);
  EXPECT_EQ(y1.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(y1.d, (std::vector<double>{-9, -18, -27, -6, -15, -24}));
  auto y2 = run2(*make(Node("Add", 2)), col, row);
  EXPECT_EQ(y2.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(y2.d, (std::vector<double>{110, 120, 130, 210, 220, 230}));
  const Tensor c3 = Tensor::doubles({2, 1, 1}, {1, -1});
  auto y3 = run2(*make(Node("Mul", 2)), c3, m);
  EXPECT_EQ(y3.shape, (std::vector<int64_t>{2, 2, 3}));
  EXPECT_EQ(y3.d, (std::vector<double>{1, 2, 3, 4, 5, 6, -1, -2, -3, -4, -5, -6}));
  auto e = run2(*make(Node("Add", 2)), Tensor::doubles({0, 3}, {}), row);
  EXPECT_EQ(e.shape, (std::vector<int64_t>{0, 3}));
}

TEST(StandardBinary, Int64) {
  const Tensor a = Tensor::int64s({3}, {7, -7, std::numeric_limits<int64_t>::min()});
  const Tensor b = Tensor::int64s({3}, {2, 2, -1});
  EXPECT_EQ(run2(*make(Node("Div", 2)), a, b).i, (std::vector<int64_t>{3, -3, std::numeric_limits<int64_t>::min()}));
  EXPECT_EQ(run2(*make(Node("Mul", 2)), a, b).i, (std::vector<int64_t>{14, -14, std::numeric_limits<int64_t>::min()}));
  expect_error([&] { run2(*make(Node("Div", 2)), a, Tensor::int64s({1}, {0})); }, ErrorCode::InvalidInput,
               "division by zero");
}

TEST(StandardBinary, LegacyBroadcastAttributes) {
  const Tensor a = Tensor::floats({2, 3}, {1, 2, 3, 4, 5, 6});
  Node n("Add", 2);
  n.i("broadcast", 1).i("axis", 0);
  const Tensor col = Tensor::floats({2}, {10, 20});
  EXPECT_EQ(run2(*make(n, 6), a, col).f, (std::vector<float>{11, 12, 13, 24, 25, 26}));
  Node suffix("Add", 2);
  suffix.i("broadcast", 1);
  const Tensor row = Tensor::floats({3}, {1, 1, 1});
  EXPECT_EQ(run2(*make(suffix, 6), a, row).f, (std::vector<float>{2, 3, 4, 5, 6, 7}));
  expect_error([&] { run2(*make(Node("Add", 2), 6), a, row); }, ErrorCode::InvalidInput, "broadcast is 0");
}

TEST(StandardBinary, Errors) {
  expect_error([] { make(Node("Add", 1)); }, ErrorCode::InvalidModel, "two inputs");
  auto k = make(Node("Add", 2));
  expect_error([&] { run2(*k, Tensor::floats({2}, {1, 2}), Tensor::doubles({2}, {1, 2})); }, ErrorCode::InvalidInput,
               "must match");
  expect_error([&] { run2(*k, Tensor::floats({2}, {1, 2}), Tensor::floats({3}, {1, 2, 3})); }, ErrorCode::InvalidInput,
               "do not broadcast");
  expect_error([&] { run2(*k, Tensor::strings({1}, {"a"}), Tensor::strings({1}, {"b"})); },
               ErrorCode::UnsupportedOperator, "element type string");
}

// ---------------------------------------------------------------------------------------------------
// MatMul, Gemm

std::vector<double> naive_matmul(const std::vector<double>& a, const std::vector<double>& b, int m, int k, int n) {
  std::vector<double> c(static_cast<size_t>(m * n), 0.0);
  for (int r = 0; r < m; ++r)
    for (int j = 0; j < n; ++j)
      for (int t = 0; t < k; ++t) c[r * n + j] += a[r * k + t] * b[t * n + j];
  return c;
}

TEST(StandardMatMul, TwoDimensional) {
  const std::vector<double> av = {1, 2, 3, 4, 5, 6}, bv = {7, 8, 9, 10, 11, 12};
  auto y = run2(*make(Node("MatMul", 2)), Tensor::floats({2, 3}, {1, 2, 3, 4, 5, 6}),
                Tensor::floats({3, 2}, {7, 8, 9, 10, 11, 12}));
  EXPECT_EQ(y.shape, (std::vector<int64_t>{2, 2}));
  expect_near(y.f, naive_matmul(av, bv, 2, 3, 2));
  auto yi = run2(*make(Node("MatMul", 2)), Tensor::int64s({2, 3}, {1, 2, 3, 4, 5, 6}),
                 Tensor::int64s({3, 2}, {7, 8, 9, 10, 11, 12}));
  EXPECT_EQ(yi.i, (std::vector<int64_t>{58, 64, 139, 154}));
}

TEST(StandardMatMul, VectorsAndBatches) {
  auto k = make(Node("MatMul", 2));
  const Tensor v = Tensor::doubles({3}, {1, 2, 3});
  const Tensor m = Tensor::doubles({3, 2}, {1, 0, 0, 1, 1, 1});
  auto vm = run2(*k, v, m);
  EXPECT_EQ(vm.shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(vm.d, (std::vector<double>{4, 5}));
  const Tensor mt = Tensor::doubles({2, 3}, {1, 0, 1, 0, 1, 1});
  auto mv = run2(*k, mt, v);
  EXPECT_EQ(mv.shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(mv.d, (std::vector<double>{4, 5}));
  auto dot = run2(*k, v, v);
  EXPECT_TRUE(dot.shape.empty());
  EXPECT_EQ(dot.d, (std::vector<double>{14}));
  // [2, 1, 1, 2] x [3, 2, 1] -> [2, 3, 1, 1] (batch dimensions [2, 1] and [3] broadcast).
  const Tensor a = Tensor::doubles({2, 1, 1, 2}, {1, 2, 3, 4});
  const Tensor b = Tensor::doubles({3, 2, 1}, {1, 1, 0, 1, 1, 0});
  auto y = run2(*k, a, b);
  EXPECT_EQ(y.shape, (std::vector<int64_t>{2, 3, 1, 1}));
  EXPECT_EQ(y.d, (std::vector<double>{3, 2, 1, 7, 4, 3}));
  const Tensor a3 = Tensor::floats({2, 2, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
  const Tensor eye = Tensor::floats({2, 2}, {0, 1, 1, 0});
  EXPECT_EQ(run2(*k, a3, eye).f, (std::vector<float>{2, 1, 4, 3, 6, 5, 8, 7}));
}

TEST(StandardMatMul, Errors) {
  expect_error([] { make(Node("MatMul", 1)); }, ErrorCode::InvalidModel, "two inputs");
  auto k = make(Node("MatMul", 2));
  expect_error([&] { run2(*k, Tensor::floats({2, 3}, std::vector<float>(6)), Tensor::floats({2, 2}, std::vector<float>(4))); },
               ErrorCode::InvalidInput, "inner dimensions 3 and 2");
  expect_error([&] { run2(*k, Tensor::floats({2, 1, 1}, {1, 2}), Tensor::floats({3, 1, 1}, {1, 2, 3})); },
               ErrorCode::InvalidInput, "batch dimensions");
  expect_error([&] { run2(*k, Tensor::floats({}, {1}), Tensor::floats({1}, {1})); }, ErrorCode::InvalidInput,
               "scalar");
  expect_error([&] { run2(*k, Tensor::floats({1, 1}, {1}), Tensor::doubles({1, 1}, {1})); }, ErrorCode::InvalidInput,
               "must match");
  expect_error([&] { run2(*k, Tensor::strings({1, 1}, {"a"}), Tensor::strings({1, 1}, {"b"})); },
               ErrorCode::UnsupportedOperator, "string");
}

TEST(StandardGemm, AlphaBetaTransposesAndBias) {
  const std::vector<double> av = {1, 2, 3, 4, 5, 6}, bv = {1, -1, 2, 0.5, 0, 3};
  // A [2,3], B [3,2]; C row vector [2].
  Node n("Gemm", 3);
  n.f("alpha", 2.0f).f("beta", 0.5f);
  const Tensor a = Tensor::doubles({2, 3}, av), b = Tensor::doubles({3, 2}, bv), c = Tensor::doubles({2}, {10, 20});
  auto y = run1(*make(n), {&a, &b, &c});
  auto ab = naive_matmul(av, bv, 2, 3, 2);
  EXPECT_EQ(y.shape, (std::vector<int64_t>{2, 2}));
  expect_near(y.d, {2 * ab[0] + 5, 2 * ab[1] + 10, 2 * ab[2] + 5, 2 * ab[3] + 10});

  // transA / transB with the transposed operands give the same product; C [2,1] column, scalar C.
  Node t("Gemm", 3);
  t.i("transA", 1).i("transB", 1);
  const Tensor at = Tensor::doubles({3, 2}, {1, 4, 2, 5, 3, 6});
  const Tensor bt = Tensor::doubles({2, 3}, {1, 2, 0, -1, 0.5, 3});
  const Tensor ccol = Tensor::doubles({2, 1}, {1, 2});
  expect_near(run1(*make(t), {&at, &bt, &ccol}).d, {ab[0] + 1, ab[1] + 1, ab[2] + 2, ab[3] + 2});
  Node ta("Gemm", 2);
  ta.i("transA", 1);
  expect_near(run1(*make(ta), {&at, &b}).d, ab);
  Node tb("Gemm", 2);
  tb.i("transB", 1);
  const Tensor af = Tensor::floats({2, 3}, {1, 2, 3, 4, 5, 6});
  const Tensor btf = Tensor::floats({2, 3}, {1, 2, 0, -1, 0.5f, 3});
  const Tensor cs = Tensor::floats({}, {1});
  expect_near(run1(*make(tb), {&af, &btf, &cs}).f, {ab[0] + 1, ab[1] + 1, ab[2] + 1, ab[3] + 1}, 1e-5);
  // Omitted optional C (nullptr) and beta = 0 ignore the bias.
  expect_near(run1(*make(tb), {&af, &btf, nullptr}).f, ab, 1e-5);
  Node b0("Gemm", 3);
  b0.f("beta", 0.0f).i("transB", 1);
  expect_near(run1(*make(b0), {&af, &btf, &cs}).f, ab, 1e-5);
}

TEST(StandardGemm, LargeFloatProductsMatchDoubleForEveryLayout) {
  // Large enough for the OpenBLAS path when it is available (else Eigen): every transpose, alpha,
  // beta and bias shape, against the same Gemm in double (which stays on Eigen).
  const int64_t m = 40, k = 20, n = 30;
  std::vector<float> av(m * k), bv(k * n);
  for (size_t q = 0; q < av.size(); ++q) av[q] = std::sin(0.37f * static_cast<float>(q));
  for (size_t q = 0; q < bv.size(); ++q) bv[q] = std::cos(0.11f * static_cast<float>(q));
  std::vector<float> cn(n), cm(m), cmn(m * n);
  for (int64_t q = 0; q < n; ++q) cn[q] = 0.1f * static_cast<float>(q);
  for (int64_t q = 0; q < m; ++q) cm[q] = -0.2f * static_cast<float>(q);
  for (int64_t q = 0; q < m * n; ++q) cmn[q] = 0.01f * static_cast<float>(q % 17);
  const std::vector<Tensor> biases = {Tensor::floats({n}, cn), Tensor::floats({1, n}, cn), Tensor::floats({m, 1}, cm),
                                      Tensor::floats({m, n}, cmn), Tensor::floats({}, {1.5f})};
  auto to_double = [](const Tensor& t) {
    std::vector<double> d(t.f.begin(), t.f.end());
    return Tensor::doubles(t.shape, d);
  };
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (size_t bi = 0; bi <= biases.size(); ++bi) {
        Node node("Gemm", 3);
        node.i("transA", ta).i("transB", tb).f("alpha", 0.75f).f("beta", bi == 1 ? 1.0f : -2.0f);
        const Tensor a = Tensor::floats(ta ? std::vector<int64_t>{k, m} : std::vector<int64_t>{m, k}, av);
        const Tensor b = Tensor::floats(tb ? std::vector<int64_t>{n, k} : std::vector<int64_t>{k, n}, bv);
        const Tensor* c = bi < biases.size() ? &biases[bi] : nullptr;
        auto kernel = make(node);
        const Tensor y = run1(*kernel, {&a, &b, c});
        const Tensor ad = to_double(a), bd = to_double(b);
        Tensor cd;
        if (c) cd = to_double(*c);
        const Tensor yd = run1(*kernel, {&ad, &bd, c ? &cd : nullptr});
        ASSERT_EQ(y.shape, (std::vector<int64_t>{m, n}));
        expect_near(y.f, yd.d, 1e-4);
      }
}

TEST(StandardGemm, Errors) {
  expect_error([] { make(Node("Gemm", 1)); }, ErrorCode::InvalidModel, "needs inputs A and B");
  expect_error([] { make(Node("Gemm", 2), 9); }, ErrorCode::InvalidModel, "required before opset 11");
  auto k = make(Node("Gemm", 3));
  const Tensor a = Tensor::floats({2, 3}, std::vector<float>(6, 1));
  const Tensor b = Tensor::floats({3, 2}, std::vector<float>(6, 1));
  const Tensor bad_c = Tensor::floats({3}, {1, 2, 3});
  const Tensor b_wrong = Tensor::floats({2, 2}, std::vector<float>(4, 1));
  const Tensor v = Tensor::floats({3}, {1, 2, 3});
  const Tensor i = Tensor::int64s({3, 2}, std::vector<int64_t>(6, 1));
  const Tensor ia = Tensor::int64s({2, 3}, std::vector<int64_t>(6, 1));
  expect_error([&] { run1(*k, {&a, &b, &bad_c}); }, ErrorCode::InvalidInput, "does not broadcast to [2, 2]");
  expect_error([&] { run1(*k, {&a, &b_wrong}); }, ErrorCode::InvalidInput, "do not fit");
  expect_error([&] { run1(*k, {&v, &b}); }, ErrorCode::InvalidInput, "must be 2-D");
  expect_error([&] { run1(*k, {&a, &i}); }, ErrorCode::InvalidInput, "different element types");
  expect_error([&] { run1(*k, {&ia, &i}); }, ErrorCode::UnsupportedOperator, "int64");
}

// ---------------------------------------------------------------------------------------------------
// Sigmoid, Tanh, Relu

TEST(StandardUnary, SigmoidTanhRelu) {
  const std::vector<float> xv = {-100, -1, 0, 2, 100};
  const Tensor x = Tensor::floats({5}, xv);
  std::vector<double> sig, th;
  for (float v : xv) {
    sig.push_back(1 / (1 + std::exp(-double(v))));
    th.push_back(std::tanh(double(v)));
  }
  expect_near(run1(*make(Node("Sigmoid")), x).f, sig);
  expect_near(run1(*make(Node("Tanh")), x).f, th);
  EXPECT_EQ(run1(*make(Node("Relu")), x).f, (std::vector<float>{0, 0, 0, 2, 100}));
  expect_near(run1(*make(Node("Sigmoid")), Tensor::doubles({1}, {0.5})).d, {1 / (1 + std::exp(-0.5))}, 1e-12);
  EXPECT_EQ(run1(*make(Node("Relu")), Tensor::int64s({2}, {-3, 3})).i, (std::vector<int64_t>{0, 3}));
  EXPECT_TRUE(std::isnan(run1(*make(Node("Relu")), Tensor::floats({1}, {kNaN})).f[0]));
  expect_error([] { run1(*make(Node("Sigmoid")), Tensor::int64s({1}, {1})); }, ErrorCode::UnsupportedOperator, "int64");
  expect_error([] { run1(*make(Node("Tanh")), Tensor::strings({1}, {"1"})); }, ErrorCode::UnsupportedOperator, "string");
}

// ---------------------------------------------------------------------------------------------------
// Softmax

std::vector<double> softmax(const std::vector<double>& v) {
  double mx = -INFINITY, sum = 0;
  for (double x : v) mx = std::max(mx, x);
  std::vector<double> e;
  for (double x : v) {
    e.push_back(std::exp(x - mx));
    sum += e.back();
  }
  for (double& x : e) x /= sum;
  return e;
}

TEST(StandardSoftmax, Opset13AlongLastAxisByDefault) {
  const Tensor x = Tensor::floats({2, 3}, {1, 2, 3, 0, 0, 1000});
  auto y = run1(*make(Node("Softmax"), 13), x);
  auto r0 = softmax({1, 2, 3}), r1 = softmax({0, 0, 1000});
  expect_near(y.f, {r0[0], r0[1], r0[2], r1[0], r1[1], r1[2]});
  // axis 0 on [2, 2, 2]: softmax over pairs (x[0,j,k], x[1,j,k]).
  Node a0("Softmax");
  a0.i("axis", 0);
  const Tensor x3 = Tensor::doubles({2, 2, 2}, {0, 1, 2, 3, 1, 1, 2, 5});
  auto y3 = run1(*make(a0, 13), x3);
  std::vector<double> want(8);
  for (int j = 0; j < 4; ++j) {
    auto p = softmax({x3.d[j], x3.d[4 + j]});
    want[j] = p[0];
    want[4 + j] = p[1];
  }
  expect_near(y3.d, want, 1e-12);
}

TEST(StandardSoftmax, LegacyCoercesTo2D) {
  // Opset 11, default axis 1 on [2, 2, 2]: each batch row's 4 values form one softmax.
  const Tensor x = Tensor::doubles({2, 2, 2}, {0, 1, 2, 3, 4, 4, 4, 4});
  auto y = run1(*make(Node("Softmax"), 11), x);
  auto r0 = softmax({0, 1, 2, 3});
  expect_near(y.d, {r0[0], r0[1], r0[2], r0[3], 0.25, 0.25, 0.25, 0.25}, 1e-12);
  Node neg("Softmax");
  neg.i("axis", -1);
  auto yl = run1(*make(neg, 1), x);
  auto p = softmax({0, 1});
  EXPECT_NEAR(yl.d[0], p[0], 1e-12);
  EXPECT_NEAR(yl.d[4], 0.5, 1e-12);
}

TEST(StandardSoftmax, Errors) {
  Node n("Softmax");
  n.i("axis", 2);
  expect_error([&] { run1(*make(n), Tensor::floats({2, 2}, {1, 2, 3, 4})); }, ErrorCode::InvalidInput,
               "axis 2 is out of range");
  expect_error([] { run1(*make(Node("Softmax")), Tensor::int64s({2}, {1, 2})); }, ErrorCode::UnsupportedOperator,
               "int64");
}

// ---------------------------------------------------------------------------------------------------
// ArgMax

TEST(StandardArgMax, AxisKeepdimsSelectLast) {
  const Tensor x = Tensor::floats({2, 3}, {1, 5, 5, 7, 2, 7});
  Node a1("ArgMax");
  a1.i("axis", 1);
  auto y = run1(*make(a1), x);
  EXPECT_EQ(y.type, ElemType::Int64);
  EXPECT_EQ(y.shape, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(y.i, (std::vector<int64_t>{1, 0}));
  Node last("ArgMax");
  last.i("axis", -1).i("keepdims", 0).i("select_last_index", 1);
  auto yl = run1(*make(last), x);
  EXPECT_EQ(yl.shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(yl.i, (std::vector<int64_t>{2, 2}));
  auto y0 = run1(*make(Node("ArgMax")), x);  // axis 0 default, keepdims 1
  EXPECT_EQ(y0.shape, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(y0.i, (std::vector<int64_t>{1, 0, 1}));
  Node k0("ArgMax");
  k0.i("keepdims", 0);
  EXPECT_EQ(run1(*make(k0), Tensor::int64s({3}, {4, 9, 1})).i, (std::vector<int64_t>{1}));
  EXPECT_EQ(run1(*make(a1), Tensor::doubles({1, 2}, {-1, -2})).i, (std::vector<int64_t>{0}));
}

TEST(StandardArgMax, Errors) {
  Node n("ArgMax");
  n.i("axis", 2);
  expect_error([&] { run1(*make(n), Tensor::floats({2, 2}, {1, 2, 3, 4})); }, ErrorCode::InvalidInput,
               "out of range");
  expect_error([] { run1(*make(Node("ArgMax")), Tensor::floats({}, {1})); }, ErrorCode::InvalidInput, "scalar");
  expect_error([] { run1(*make(Node("ArgMax")), Tensor::floats({0, 2}, {})); }, ErrorCode::InvalidInput, "size 0");
  expect_error([] { run1(*make(Node("ArgMax")), Tensor::strings({1}, {"a"})); }, ErrorCode::UnsupportedOperator,
               "string");
}

TEST(StandardRegistry, AiOnnxDomainAliasAndListing) {
  EXPECT_NE(flock::KernelRegistry::instance().find("ai.onnx", "Gemm"), nullptr);
  auto ops = flock::KernelRegistry::instance().supported();
  for (const char* op : {"Cast", "Concat", "Identity", "Reshape", "Flatten", "Add", "Sub", "Mul", "Div", "MatMul",
                         "Gemm", "Sigmoid", "Softmax", "ArgMax", "Relu", "Tanh", "ai.onnx.ml:LinearClassifier",
                         "ai.onnx.ml:LinearRegressor", "ai.onnx.ml:Scaler", "ai.onnx.ml:Normalizer",
                         "ai.onnx.ml:Imputer", "ai.onnx.ml:OneHotEncoder", "ai.onnx.ml:LabelEncoder",
                         "ai.onnx.ml:Binarizer", "ai.onnx.ml:ArrayFeatureExtractor", "ai.onnx.ml:FeatureVectorizer",
                         "ai.onnx.ml:ZipMap"})
    EXPECT_NE(std::find(ops.begin(), ops.end(), op), ops.end()) << op;
}

}  // namespace
