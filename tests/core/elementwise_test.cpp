// Tests for the elementwise kernels (core/src/kernels/elementwise.cpp, broadcast.hpp) and the
// softmax family / ArgMin (standard.cpp): hand-computed values, broadcasting against a naive
// reference, opset-dependent type rules, and error codes and messages.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "flock/kernel.hpp"
#include "flock/model.hpp"
#include "flock/onnx.hpp"
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
std::vector<Tensor> run(const Kernel& k, std::vector<const Tensor*> in, size_t n_out = 1) {
  return flock::testing::run_kernel(k, std::move(in), n_out);
}
// NaN must be NaN and an infinity that infinity; finite values within tol relative to max(1, |want|).
template <typename T>
void expect_near(const std::vector<T>& got, const std::vector<double>& want, double tol = 1e-6) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t k = 0; k < want.size(); ++k) {
    if (std::isnan(want[k])) {
      EXPECT_TRUE(std::isnan(static_cast<double>(got[k]))) << "at " << k;
    } else if (std::isinf(want[k])) {
      EXPECT_EQ(static_cast<double>(got[k]), want[k]) << "at " << k;
    } else {
      EXPECT_NEAR(static_cast<double>(got[k]), want[k], tol * std::max(1.0, std::fabs(want[k]))) << "at " << k;
    }
  }
}

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();
const int64_t kMin64 = std::numeric_limits<int64_t>::min();

Tensor run1(const Kernel& k, const Tensor& x) { return run(k, {&x})[0]; }
Tensor run2(const Kernel& k, const Tensor& a, const Tensor& b) { return run(k, {&a, &b})[0]; }
Tensor op1(const std::string& op, const Tensor& x, int64_t opset = 17) { return run1(*make(Node(op), opset), x); }
Tensor op2(const std::string& op, const Tensor& a, const Tensor& b, int64_t opset = 17) {
  return run2(*make(Node(op, 2), opset), a, b);
}

Tensor bools(std::vector<int64_t> shape, std::vector<uint8_t> v) {
  Tensor t(ElemType::Bool, std::move(shape));
  t.b = std::move(v);
  return t;
}

// ---------------------------------------------------------------------------------------------------
// Broadcasting

// Naive numpy broadcasting: every output index mapped to each input by its own multi-index.
std::vector<int64_t> naive_add(const Tensor& a, const Tensor& b, std::vector<int64_t>& shape) {
  const size_t r = std::max(a.shape.size(), b.shape.size());
  auto dim = [&](const std::vector<int64_t>& s, size_t k) { return k < r - s.size() ? 1 : s[k - (r - s.size())]; };
  shape.assign(r, 1);
  for (size_t k = 0; k < r; ++k) shape[k] = std::max(dim(a.shape, k), dim(b.shape, k));
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<int64_t> out(static_cast<size_t>(n));
  for (int64_t o = 0; o < n; ++o) {
    std::vector<int64_t> idx(r);
    int64_t rem = o;
    for (size_t k = r; k-- > 0;) {
      idx[k] = rem % shape[k];
      rem /= shape[k];
    }
    auto offset = [&](const std::vector<int64_t>& s) {
      int64_t off = 0;
      for (size_t k = r - s.size(); k < r; ++k) off = off * s[k - (r - s.size())] + (s[k - (r - s.size())] == 1 ? 0 : idx[k]);
      return off;
    };
    out[static_cast<size_t>(o)] = a.i[static_cast<size_t>(offset(a.shape))] + b.i[static_cast<size_t>(offset(b.shape))];
  }
  return out;
}

Tensor iota(std::vector<int64_t> shape, int64_t start) {
  Tensor t(ElemType::Int64, std::move(shape));
  for (size_t k = 0; k < t.i.size(); ++k) t.i[k] = start + static_cast<int64_t>(k);
  return t;
}

TEST(ElementwiseBroadcast, MatchesNaiveReferenceOnRandomShapes) {
  std::mt19937 gen(7);
  auto k = make(Node("Add", 2));
  for (int trial = 0; trial < 400; ++trial) {
    const size_t rank = gen() % 5;
    std::vector<int64_t> full(rank);
    for (auto& d : full) d = 1 + static_cast<int64_t>(gen() % 4);
    auto derive = [&] {
      std::vector<int64_t> s(full.begin() + static_cast<std::ptrdiff_t>(gen() % (rank + 1)), full.end());
      for (auto& d : s)
        if (gen() % 3 == 0) d = 1;
      return s;
    };
    const Tensor a = iota(derive(), 0), b = iota(derive(), 1000);
    std::vector<int64_t> shape;
    const std::vector<int64_t> want = naive_add(a, b, shape);
    const Tensor y = run2(*k, a, b);
    ASSERT_EQ(y.shape, shape);
    ASSERT_EQ(y.i, want) << "trial " << trial;
  }
}

TEST(ElementwiseBroadcast, FastPathsAndEmpty) {
  const Tensor m = Tensor::floats({2, 3}, {1, 2, 3, 4, 5, 6});
  EXPECT_EQ(op2("Mul", m, m).f, (std::vector<float>{1, 4, 9, 16, 25, 36}));
  EXPECT_EQ(op2("Sub", m, Tensor::floats({}, {1})).f, (std::vector<float>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(op2("Sub", Tensor::floats({1, 1}, {10}), m).f, (std::vector<float>{9, 8, 7, 6, 5, 4}));
  // [2, 1] with [1, 3]: an outer product of rows and columns.
  auto outer = op2("Mul", Tensor::floats({2, 1}, {1, 2}), Tensor::floats({1, 3}, {1, 10, 100}));
  EXPECT_EQ(outer.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(outer.f, (std::vector<float>{1, 10, 100, 2, 20, 200}));
  auto empty = op2("Add", Tensor::floats({0, 3}, {}), Tensor::floats({1, 3}, {1, 2, 3}));
  EXPECT_EQ(empty.shape, (std::vector<int64_t>{0, 3}));
  EXPECT_TRUE(empty.f.empty());
  auto empty2 = op2("Add", Tensor::floats({2, 1}, {1, 2}), Tensor::floats({0}, {}));
  EXPECT_EQ(empty2.shape, (std::vector<int64_t>{2, 0}));
}

TEST(ElementwiseBroadcast, IncompatibleShapesNamePreciseDimension) {
  const Tensor a = Tensor::floats({2, 3}, std::vector<float>(6));
  const Tensor b = Tensor::floats({4, 1}, std::vector<float>(4));
  expect_error([&] { op2("Add", a, b); }, ErrorCode::InvalidInput,
               "shapes [2, 3] and [4, 1] do not broadcast: dimension -2 (counted from the end) has sizes 2 and 4");
  Node w("Where", 3);
  const Tensor c = bools({2}, {1, 0});
  expect_error([&] { run(*make(w), {&c, &a, &a}); }, ErrorCode::InvalidInput,
               "shapes [2], [2, 3] and [2, 3] do not broadcast: dimension -1 (counted from the end) has sizes 2 and 3");
  Node pr("PRelu", 2);
  expect_error([&] { run2(*make(pr), Tensor::floats({3}, {1, 2, 3}), Tensor::floats({2, 3}, std::vector<float>(6))); },
               ErrorCode::InvalidInput, "does not broadcast to input A's shape [3]");
}

// ---------------------------------------------------------------------------------------------------
// Unary math

TEST(ElementwiseUnary, HandComputedValues) {
  const Tensor x = Tensor::floats({4}, {-2.5f, -0.5f, 0.5f, 2.5f});
  EXPECT_EQ(op1("Abs", x).f, (std::vector<float>{2.5f, 0.5f, 0.5f, 2.5f}));
  EXPECT_EQ(op1("Neg", x).f, (std::vector<float>{2.5f, 0.5f, -0.5f, -2.5f}));
  EXPECT_EQ(op1("Round", x).f, (std::vector<float>{-2, -0.0f, 0, 2}));  // half to even
  EXPECT_EQ(op1("Round", Tensor::floats({3}, {1.5f, 3.5f, -3.7f})).f, (std::vector<float>{2, 4, -4}));
  EXPECT_EQ(op1("Floor", x).f, (std::vector<float>{-3, -1, 0, 2}));
  EXPECT_EQ(op1("Ceil", x).f, (std::vector<float>{-2, -0.0f, 1, 3}));
  EXPECT_EQ(op1("Reciprocal", Tensor::floats({2}, {4, -0.5f})).f, (std::vector<float>{0.25f, -2}));
  expect_near(op1("Exp", Tensor::doubles({2}, {0, 1})).d, {1, std::exp(1.0)}, 1e-15);
  expect_near(op1("Log", Tensor::doubles({3}, {1, 0, -1})).d, {0, -INFINITY, NAN});
  expect_near(op1("Sqrt", Tensor::floats({2}, {9, -1})).f, {3, NAN});
  expect_near(op1("Erf", Tensor::doubles({3}, {0, 1, -0.5})).d, {0, 0.8427007929497149, -0.5204998778130465}, 1e-14);
  expect_near(op1("Sin", x).f, {std::sin(-2.5), std::sin(-0.5), std::sin(0.5), std::sin(2.5)});
  expect_near(op1("Acosh", Tensor::doubles({2}, {1, 2})).d, {0, std::acosh(2.0)}, 1e-15);
  expect_near(op1("Atanh", Tensor::doubles({2}, {0, 0.5})).d, {0, std::atanh(0.5)}, 1e-15);
  auto sign = op1("Sign", Tensor::floats({4}, {-3, 0, 7, kNaN}));
  EXPECT_EQ(sign.f[0], -1);
  EXPECT_EQ(sign.f[1], 0);
  EXPECT_EQ(sign.f[2], 1);
  EXPECT_TRUE(std::isnan(sign.f[3]));
}

TEST(ElementwiseUnary, Int64WrapsLikeTwosComplement) {
  const Tensor x = Tensor::int64s({4}, {-5, 0, 7, kMin64});
  EXPECT_EQ(op1("Abs", x).i, (std::vector<int64_t>{5, 0, 7, kMin64}));
  EXPECT_EQ(op1("Neg", x).i, (std::vector<int64_t>{5, 0, -7, kMin64}));
  EXPECT_EQ(op1("Sign", x).i, (std::vector<int64_t>{-1, 0, 1, -1}));
  EXPECT_EQ(op1("Relu", x).i, (std::vector<int64_t>{0, 0, 7, 0}));
  // erf in double, truncated: 0 except where erf rounds to +-1 in double.
  EXPECT_EQ(op1("Erf", x).i, (std::vector<int64_t>{0, 0, 1, -1}));
}

TEST(ElementwiseUnary, IsNaNIsInfAndNot) {
  const Tensor x = Tensor::floats({4}, {1, kNaN, kInf, -kInf});
  auto nan = op1("IsNaN", x);
  EXPECT_EQ(nan.type, ElemType::Bool);
  EXPECT_EQ(nan.b, (std::vector<uint8_t>{0, 1, 0, 0}));
  EXPECT_EQ(op1("IsInf", x).b, (std::vector<uint8_t>{0, 0, 1, 1}));
  Node pos("IsInf");
  pos.i("detect_negative", 0);
  EXPECT_EQ(run1(*make(pos), x).b, (std::vector<uint8_t>{0, 0, 1, 0}));
  Node neg("IsInf");
  neg.i("detect_positive", 0);
  EXPECT_EQ(run1(*make(neg), Tensor::doubles({2}, {INFINITY, -INFINITY})).b, (std::vector<uint8_t>{0, 1}));
  EXPECT_EQ(op1("Not", bools({3}, {0, 1, 2})).b, (std::vector<uint8_t>{1, 0, 0}));
}

TEST(ElementwiseUnary, UnsupportedTypesNameOpAndType) {
  expect_error([] { op1("Exp", Tensor::int64s({1}, {1})); }, ErrorCode::UnsupportedOperator,
               "Exp: element type int64 is not supported; expected float or double");
  expect_error([] { op1("Abs", bools({1}, {1})); }, ErrorCode::UnsupportedOperator, "Abs: element type bool");
  expect_error([] { op1("Not", Tensor::floats({1}, {1})); }, ErrorCode::UnsupportedOperator,
               "Not: element type float is not supported; expected bool");
  expect_error([] { op1("Sigmoid", Tensor::strings({1}, {"a"})); }, ErrorCode::UnsupportedOperator, "string");
  // Relu runs int64 from opset 14; Celu is float-only.
  expect_error([] { op1("Relu", Tensor::int64s({1}, {1}), 13); }, ErrorCode::UnsupportedOperator, "int64");
  EXPECT_EQ(op1("Relu", Tensor::int64s({1}, {-1}), 14).i, (std::vector<int64_t>{0}));
  expect_error([] { op1("Celu", Tensor::doubles({1}, {1})); }, ErrorCode::UnsupportedOperator, "expected float");
}

TEST(ElementwiseUnary, CompileErrors) {
  expect_error([] { make(Node("Exp", 2)); }, ErrorCode::InvalidModel, "Exp: needs one input, has 2");
  Node inf("IsInf");
  inf.i("detect_negative", 2);
  expect_error([&] { make(inf); }, ErrorCode::InvalidModel, "attribute 'detect_negative' must be 0 or 1");
  expect_error([] { run(*make(Node("Exp")), {nullptr}); }, ErrorCode::InvalidInput, "missing");
}

// ---------------------------------------------------------------------------------------------------
// Binary arithmetic: Add/Sub/Mul/Div for every type, Pow, Mod

TEST(ElementwiseBinary, ArithmeticAllTypes) {
  EXPECT_EQ(op2("Add", Tensor::doubles({2}, {1.5, 2}), Tensor::doubles({}, {0.25})).d, (std::vector<double>{1.75, 2.25}));
  EXPECT_EQ(op2("Div", Tensor::int64s({4}, {7, -7, 7, -7}), Tensor::int64s({4}, {2, 2, -2, -2})).i,
            (std::vector<int64_t>{3, -3, -3, 3}));  // truncation toward zero
  EXPECT_EQ(op2("Add", Tensor::int64s({1}, {std::numeric_limits<int64_t>::max()}), Tensor::int64s({1}, {1})).i,
            (std::vector<int64_t>{kMin64}));
  expect_error([] { op2("Div", Tensor::int64s({2}, {1, 2}), Tensor::int64s({2}, {1, 0})); }, ErrorCode::InvalidInput,
               "Div: integer division by zero");
  expect_near(op2("Div", Tensor::floats({2}, {1, -1}), Tensor::floats({}, {0})).f, {INFINITY, -INFINITY});
  expect_error([] { op2("Mul", bools({1}, {1}), bools({1}, {1})); }, ErrorCode::UnsupportedOperator,
               "Mul: element type bool is not supported; expected float, double or int64");
  expect_error([] { op2("Sub", Tensor::floats({1}, {1}), Tensor::int64s({1}, {1})); }, ErrorCode::InvalidInput,
               "inputs 0 and 1 have element types float and int64; they must match");
}

TEST(ElementwiseBinary, PowMixedTypes) {
  // int64 base, float exponent: computed in double, truncated to int64.
  auto a = op2("Pow", Tensor::int64s({3}, {2, 3, -2}), Tensor::floats({3}, {0.5f, 2, 3}));
  EXPECT_EQ(a.type, ElemType::Int64);
  EXPECT_EQ(a.i, (std::vector<int64_t>{1, 9, -8}));
  auto b = op2("Pow", Tensor::floats({2, 2}, {1, 2, 3, 4}), Tensor::int64s({2}, {2, 3}));
  EXPECT_EQ(b.type, ElemType::Float);
  EXPECT_EQ(b.f, (std::vector<float>{1, 8, 9, 64}));
  auto c = op2("Pow", Tensor::int64s({5}, {3, 2, 1, -1, -1}), Tensor::int64s({5}, {4, -1, -5, -3, 2}));
  EXPECT_EQ(c.i, (std::vector<int64_t>{81, 0, 1, -1, 1}));
  expect_near(op2("Pow", Tensor::doubles({2}, {-8, 4}), Tensor::doubles({}, {0.5})).d, {NAN, 2});
  // Opset < 12: base and exponent share one floating-point type.
  expect_error([] { op2("Pow", Tensor::floats({1}, {2}), Tensor::int64s({1}, {2}), 11); },
               ErrorCode::UnsupportedOperator, "exponent element type int64");
  expect_error([] { op2("Pow", Tensor::floats({1}, {2}), Tensor::doubles({1}, {2}), 11); }, ErrorCode::InvalidInput,
               "must match");
  expect_error([] { op2("Pow", bools({1}, {1}), Tensor::floats({1}, {2})); }, ErrorCode::UnsupportedOperator,
               "base element type bool");
}

TEST(ElementwiseBinary, ModSignRules) {
  const Tensor a = Tensor::int64s({6}, {-4, 7, 5, 4, -7, 8});
  const Tensor b = Tensor::int64s({6}, {2, -3, 8, -2, 3, 5});
  EXPECT_EQ(op2("Mod", a, b).i, (std::vector<int64_t>{0, -2, 5, 0, 2, 3}));  // divisor's sign
  Node fm("Mod", 2);
  fm.i("fmod", 1);
  EXPECT_EQ(run2(*make(fm), a, b).i, (std::vector<int64_t>{0, 1, 5, 0, -1, 3}));  // dividend's sign
  expect_near(run2(*make(fm), Tensor::doubles({2}, {-4.5, 7.5}), Tensor::doubles({2}, {2, -2})).d, {-0.5, 1.5});
  EXPECT_EQ(op2("Mod", Tensor::int64s({1}, {kMin64}), Tensor::int64s({1}, {-1})).i, (std::vector<int64_t>{0}));
  expect_error([&] { op2("Mod", Tensor::floats({1}, {1}), Tensor::floats({1}, {1})); }, ErrorCode::UnsupportedOperator,
               "Mod: element type float is not supported with fmod=0; floating-point inputs need fmod=1");
  expect_error([&] { op2("Mod", a, Tensor::int64s({1}, {0})); }, ErrorCode::InvalidInput, "division by zero");
  Node bad("Mod", 2);
  bad.i("fmod", 2);
  expect_error([&] { make(bad); }, ErrorCode::InvalidModel, "Mod: attribute 'fmod' must be 0 or 1, got 2");
}

// ---------------------------------------------------------------------------------------------------
// Variadic: Sum, Mean, Max, Min

TEST(ElementwiseVariadic, FoldWithBroadcasting) {
  const Tensor a = Tensor::floats({2, 1}, {1, 2});
  const Tensor b = Tensor::floats({3}, {10, 20, 30});
  const Tensor c = Tensor::floats({}, {100});
  auto sum = run(*make(Node("Sum", 3)), {&a, &b, &c})[0];
  EXPECT_EQ(sum.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(sum.f, (std::vector<float>{111, 121, 131, 112, 122, 132}));
  auto mean = run(*make(Node("Mean", 2)), {&a, &b})[0];
  expect_near(mean.f, {5.5, 10.5, 15.5, 6, 11, 16});
  auto mx = run(*make(Node("Max", 3)), {&a, &b, &c})[0];
  EXPECT_EQ(mx.f, std::vector<float>(6, 100));
  auto mn = run(*make(Node("Min", 2)), {&a, &b})[0];
  EXPECT_EQ(mn.f, (std::vector<float>{1, 1, 1, 2, 2, 2}));
  // One input: a copy.
  EXPECT_EQ(run(*make(Node("Max", 1)), {&b})[0].f, b.f);
  // NaN propagates (numpy.maximum / minimum).
  const Tensor n1 = Tensor::floats({2}, {kNaN, 1}), n2 = Tensor::floats({2}, {0, kNaN});
  auto mnan = run(*make(Node("Min", 2)), {&n1, &n2})[0];
  EXPECT_TRUE(std::isnan(mnan.f[0]) && std::isnan(mnan.f[1]));
  const Tensor i1 = Tensor::int64s({3}, {5, -1, 3}), i2 = Tensor::int64s({1}, {2});
  EXPECT_EQ(run(*make(Node("Max", 2)), {&i1, &i2})[0].i, (std::vector<int64_t>{5, 2, 3}));
}

TEST(ElementwiseVariadic, OpsetRulesAndErrors) {
  const Tensor a = Tensor::floats({2}, {1, 2}), b = Tensor::floats({1}, {3});
  expect_error([&] { run(*make(Node("Sum", 2), 7), {&a, &b}); }, ErrorCode::InvalidInput,
               "before opset 8 they must match");
  EXPECT_EQ(run(*make(Node("Sum", 2), 8), {&a, &b})[0].f, (std::vector<float>{4, 5}));
  const Tensor i = Tensor::int64s({1}, {1});
  expect_error([&] { run(*make(Node("Max", 2), 11), {&i, &i}); }, ErrorCode::UnsupportedOperator, "int64");
  expect_error([&] { run(*make(Node("Sum", 2)), {&i, &i}); }, ErrorCode::UnsupportedOperator, "Sum: element type int64");
  const Tensor d = Tensor::doubles({1}, {1});
  expect_error([&] { run(*make(Node("Mean", 2)), {&a, &d}); }, ErrorCode::InvalidInput, "must match");
  expect_error([] { make(Node("Sum", 0)); }, ErrorCode::InvalidModel, "needs at least one input");
  const Tensor c = Tensor::floats({3}, {1, 2, 3});
  expect_error([&] { run(*make(Node("Mean", 2)), {&a, &c}); }, ErrorCode::InvalidInput, "do not broadcast");
}

// ---------------------------------------------------------------------------------------------------
// Comparison and logic

TEST(ElementwiseCompare, BoolOutputsAndTypeRules) {
  const Tensor a = Tensor::floats({2, 2}, {1, 2, 3, kNaN});
  const Tensor b = Tensor::floats({2}, {2, 2});
  auto eq = op2("Equal", a, b);
  EXPECT_EQ(eq.type, ElemType::Bool);
  EXPECT_EQ(eq.b, (std::vector<uint8_t>{0, 1, 0, 0}));
  EXPECT_EQ(op2("Less", a, b).b, (std::vector<uint8_t>{1, 0, 0, 0}));
  EXPECT_EQ(op2("Greater", a, b).b, (std::vector<uint8_t>{0, 0, 1, 0}));
  EXPECT_EQ(op2("LessOrEqual", a, b).b, (std::vector<uint8_t>{1, 1, 0, 0}));
  EXPECT_EQ(op2("GreaterOrEqual", a, b).b, (std::vector<uint8_t>{0, 1, 1, 0}));
  EXPECT_EQ(op2("Equal", bools({3}, {1, 0, 2}), bools({}, {1})).b, (std::vector<uint8_t>{1, 0, 1}));
  EXPECT_EQ(op2("Less", Tensor::int64s({2}, {-1, 5}), Tensor::int64s({1}, {0})).b, (std::vector<uint8_t>{1, 0}));
  // Equal on floats from opset 11, Less/Greater on int64 from opset 9.
  expect_error([&] { op2("Equal", a, b, 10); }, ErrorCode::UnsupportedOperator, "Equal: element type float");
  EXPECT_EQ(op2("Equal", Tensor::int64s({1}, {3}), Tensor::int64s({1}, {3}), 7).b, (std::vector<uint8_t>{1}));
  expect_error([] { op2("Greater", Tensor::int64s({1}, {1}), Tensor::int64s({1}, {1}), 8); },
               ErrorCode::UnsupportedOperator, "int64");
  expect_error([] { op2("Less", bools({1}, {1}), bools({1}, {1})); }, ErrorCode::UnsupportedOperator, "bool");
}

TEST(ElementwiseLogic, AndOrXorBroadcast) {
  const Tensor a = bools({2, 2}, {0, 0, 1, 1});
  const Tensor b = bools({2}, {0, 1});
  EXPECT_EQ(op2("And", a, b).b, (std::vector<uint8_t>{0, 0, 0, 1}));
  EXPECT_EQ(op2("Or", a, b).b, (std::vector<uint8_t>{0, 1, 1, 1}));
  EXPECT_EQ(op2("Xor", a, b).b, (std::vector<uint8_t>{0, 1, 1, 0}));
  expect_error([] { op2("Or", Tensor::int64s({1}, {1}), Tensor::int64s({1}, {0})); }, ErrorCode::UnsupportedOperator,
               "Or: element type int64 is not supported; expected bool");
}

TEST(ElementwiseWhere, ThreeWayBroadcastAnyType) {
  const Tensor c = bools({2, 1}, {1, 0});
  const Tensor x = Tensor::floats({3}, {1, 2, 3});
  const Tensor y = Tensor::floats({}, {-1});
  Node w("Where", 3);
  auto z = run(*make(w), {&c, &x, &y})[0];
  EXPECT_EQ(z.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(z.f, (std::vector<float>{1, 2, 3, -1, -1, -1}));
  const Tensor sx = Tensor::strings({2}, {"a", "b"}), sy = Tensor::strings({2}, {"c", "d"});
  const Tensor c2 = bools({2}, {0, 1});
  EXPECT_EQ(run(*make(w), {&c2, &sx, &sy})[0].s, (std::vector<std::string>{"c", "b"}));
  const Tensor ix = Tensor::int64s({2}, {1, 2}), iy = Tensor::int64s({2}, {3, 4});
  EXPECT_EQ(run(*make(w), {&c2, &ix, &iy})[0].i, (std::vector<int64_t>{3, 2}));
  const Tensor fc = Tensor::floats({2}, {1, 0});
  expect_error([&] { run(*make(w), {&fc, &ix, &iy}); }, ErrorCode::InvalidInput, "condition has element type float");
  expect_error([&] { run(*make(w), {&c2, &ix, &x}); }, ErrorCode::InvalidInput, "must match");
  expect_error([] { make(Node("Where", 2)); }, ErrorCode::InvalidModel, "Where: needs three inputs, has 2");
}

// ---------------------------------------------------------------------------------------------------
// Clip

TEST(ElementwiseClip, AttributesInputsAndEdgeCases) {
  const Tensor x = Tensor::floats({5}, {-3, -1, 0, 2, kNaN});
  Node legacy("Clip");
  legacy.f("min", -1.5f).f("max", 1.0f);
  auto y6 = run1(*make(legacy, 6), x);
  expect_near(y6.f, {-1.5, -1, 0, 1, NAN});
  Node only_max("Clip");
  only_max.f("max", 0.0f);
  expect_near(run1(*make(only_max, 6), x).f, {-3, -1, 0, 0, NAN});

  const Tensor lo = Tensor::floats({}, {-1}), hi = Tensor::floats({1}, {1});
  Node n("Clip", 3);
  expect_near(run(*make(n), {&x, &lo, &hi})[0].f, {-1, -1, 0, 1, NAN});
  expect_near(run(*make(n), {&x, nullptr, &hi})[0].f, {-3, -1, 0, 1, NAN});
  expect_near(run(*make(Node("Clip", 2)), {&x, &lo})[0].f, {-1, -1, 0, 2, NAN});
  expect_near(run(*make(Node("Clip")), {&x})[0].f, {-3, -1, 0, 2, NAN});
  // min > max: everything becomes max (numpy.clip).
  const Tensor big = Tensor::floats({}, {5});
  expect_near(run(*make(n), {&x, &big, &hi})[0].f, {1, 1, 1, 1, NAN});
  // int64 from opset 12.
  const Tensor xi = Tensor::int64s({3}, {-5, 0, 5}), li = Tensor::int64s({}, {-2}), hi_i = Tensor::int64s({}, {3});
  EXPECT_EQ(run(*make(n, 12), {&xi, &li, &hi_i})[0].i, (std::vector<int64_t>{-2, 0, 3}));
  expect_error([&] { run(*make(n, 11), {&xi, &li, &hi_i}); }, ErrorCode::UnsupportedOperator, "Clip: element type int64");
}

TEST(ElementwiseClip, Errors) {
  const Tensor x = Tensor::floats({2}, {1, 2});
  const Tensor two = Tensor::floats({2}, {0, 1});
  const Tensor d = Tensor::doubles({}, {0});
  Node n("Clip", 3);
  expect_error([&] { run(*make(n), {&x, &two, nullptr}); }, ErrorCode::InvalidInput, "'min' must be a scalar, got shape [2]");
  expect_error([&] { run(*make(n), {&x, nullptr, &d}); }, ErrorCode::InvalidInput, "'max' has element type double");
  Node attr13("Clip");
  attr13.f("min", 0.0f);
  expect_error([&] { make(attr13, 13); }, ErrorCode::InvalidModel, "replaced by inputs in opset 11");
  expect_error([] { make(Node("Clip", 2), 6); }, ErrorCode::InvalidModel, "Clip: needs one input, has 2");
  Node wrong_type("Clip");
  wrong_type.i("min", 0);
  expect_error([&] { make(wrong_type, 6); }, ErrorCode::InvalidModel, "attribute 'min' must be a float");
}

// ---------------------------------------------------------------------------------------------------
// Activations

TEST(ElementwiseActivation, HandComputedValues) {
  const std::vector<double> xs = {-2, -0.5, 0, 1.5};
  const Tensor x = Tensor::doubles({4}, xs);
  auto each = [&](const std::function<double(double)>& f) {
    std::vector<double> out;
    for (double v : xs) out.push_back(f(v));
    return out;
  };
  Node lr("LeakyRelu");
  lr.f("alpha", 0.5f);
  expect_near(run1(*make(lr), x).d, {-1, -0.25, 0, 1.5}, 1e-12);
  expect_near(op1("LeakyRelu", x).d, {-0.02, -0.005, 0, 1.5}, 1e-7);
  Node elu("Elu");
  elu.f("alpha", 2.0f);
  expect_near(run1(*make(elu), x).d, each([](double v) { return v < 0 ? 2 * (std::exp(v) - 1) : v; }), 1e-12);
  const double sa = 1.67326319217681884765625, sg = 1.05070102214813232421875;
  expect_near(op1("Selu", x).d, each([&](double v) { return sg * (v <= 0 ? sa * (std::exp(v) - 1) : v); }), 1e-7);
  Node celu("Celu");
  celu.f("alpha", 2.0f);
  expect_near(run1(*make(celu), Tensor::floats({4}, {-2, -0.5f, 0, 1.5f})).f,
              each([](double v) { return std::max(0.0, v) + std::min(0.0, 2 * (std::exp(v / 2) - 1)); }));
  expect_near(op1("HardSigmoid", x).d, {0.1, 0.4, 0.5, 0.8}, 1e-7);
  expect_near(op1("HardSwish", Tensor::doubles({4}, {-4, -1, 1, 4})).d, {0, -1.0 / 3, 2.0 / 3, 4}, 1e-7);
  expect_near(op1("Softplus", x).d, each([](double v) { return std::log(std::exp(v) + 1); }), 1e-12);
  expect_near(op1("Softplus", Tensor::floats({2}, {100, -100})).f, {100, std::exp(-100.0)});  // no overflow
  expect_near(op1("Softsign", x).d, each([](double v) { return v / (1 + std::fabs(v)); }), 1e-12);
  Node tr("ThresholdedRelu");
  tr.f("alpha", 1.0f);
  expect_near(run1(*make(tr), Tensor::floats({4}, {0.5f, 1, 1.5f, -3})).f, {0, 0, 1.5, 0});
  expect_near(op1("Mish", x).d, each([](double v) { return v * std::tanh(std::log1p(std::exp(v))); }), 1e-12);
  expect_near(op1("Sigmoid", x).d, each([](double v) { return 1 / (1 + std::exp(-v)); }), 1e-12);
  expect_near(op1("Tanh", Tensor::floats({2}, {-1, 0.5f})).f, {std::tanh(-1.0), std::tanh(0.5)});
}

TEST(ElementwiseActivation, PReluBroadcastsSlopeToX) {
  const Tensor x = Tensor::floats({2, 3}, {-1, 2, -3, 4, -5, 6});
  const Tensor slope = Tensor::floats({3}, {0.1f, 0.2f, 0.3f});
  expect_near(op2("PRelu", x, slope).f, {-0.1, 2, -0.9, 4, -1, 6});
  const Tensor s1 = Tensor::floats({2, 1}, {2, 3});
  expect_near(op2("PRelu", x, s1).f, {-2, 2, -6, 4, -15, 6});
  EXPECT_EQ(op2("PRelu", Tensor::int64s({2}, {-3, 3}), Tensor::int64s({1}, {2})).i, (std::vector<int64_t>{-6, 3}));
  expect_error([] { op2("PRelu", Tensor::int64s({1}, {1}), Tensor::int64s({1}, {1}), 8); },
               ErrorCode::UnsupportedOperator, "int64");
}

TEST(ElementwiseActivation, AttributeValidation) {
  Node celu("Celu");
  celu.f("alpha", 0.0f);
  expect_error([&] { make(celu); }, ErrorCode::InvalidModel, "Celu: alpha must be finite and non-zero");
  Node lr("LeakyRelu");
  lr.i("alpha", 1);
  expect_error([&] { make(lr); }, ErrorCode::InvalidModel, "LeakyRelu: attribute 'alpha' must be a float");
  Node named("Elu");
  named.p.set_name("act1");
  named.i("alpha", 1);
  expect_error([&] { make(named); }, ErrorCode::InvalidModel, "Elu 'act1': attribute 'alpha'");
}

// ---------------------------------------------------------------------------------------------------
// Dropout

TEST(ElementwiseDropout, InferenceIsIdentityWithTrueMask) {
  const Tensor x = Tensor::floats({2, 2}, {1, -2, 3, -4});
  auto out = run(*make(Node("Dropout", 1, 2), 13), {&x}, 2);
  EXPECT_EQ(out[0].f, x.f);
  EXPECT_EQ(out[1].type, ElemType::Bool);
  EXPECT_EQ(out[1].b, std::vector<uint8_t>(4, 1));
  // Opset 7-9: the mask has the input's type.
  auto old = run(*make(Node("Dropout", 1, 2), 9), {&x}, 2);
  EXPECT_EQ(old[1].type, ElemType::Float);
  EXPECT_EQ(old[1].f, std::vector<float>(4, 1));
  // ratio and training_mode=false inputs.
  const Tensor r = Tensor::floats({}, {0.3f});
  const Tensor off = bools({}, {0});
  EXPECT_EQ(run(*make(Node("Dropout", 3), 13), {&x, &r, &off})[0].f, x.f);
  // training_mode=true with ratio 0 is still the identity.
  const Tensor zero = Tensor::floats({}, {0});
  const Tensor on = bools({}, {1});
  EXPECT_EQ(run(*make(Node("Dropout", 3), 13), {&x, &zero, &on})[0].f, x.f);
}

TEST(ElementwiseDropout, TrainingModeReproducesReferenceDraw) {
  // numpy: np.random.seed(0); np.random.uniform(0, 1, 5) = [0.549, 0.715, 0.603, 0.545, 0.424].
  Node n("Dropout", 3, 2);
  n.i("seed", 0);
  const Tensor x = Tensor::floats({5}, {1, 2, 3, 4, 5});
  const Tensor r = Tensor::floats({}, {0.5f});
  const Tensor on = bools({}, {1});
  auto out = run(*make(n, 13), {&x, &r, &on}, 2);
  EXPECT_EQ(out[0].f, (std::vector<float>{2, 4, 6, 8, 0}));
  EXPECT_EQ(out[1].b, (std::vector<uint8_t>{1, 1, 1, 1, 0}));
}

TEST(ElementwiseDropout, Errors) {
  const Tensor x = Tensor::floats({1}, {1});
  const Tensor one = Tensor::floats({}, {1});
  expect_error([&] { run(*make(Node("Dropout", 2), 13), {&x, &one}); }, ErrorCode::InvalidInput,
               "ratio 1 is outside [0, 1)");
  Node bad("Dropout");
  bad.f("ratio", 1.5f);
  expect_error([&] { make(bad, 10); }, ErrorCode::InvalidModel, "ratio 1.5 is outside [0, 1)");
  expect_error([] { make(Node("Dropout", 2), 11); }, ErrorCode::InvalidModel, "needs one input");
  const Tensor i = Tensor::int64s({1}, {1});
  expect_error([&] { run(*make(Node("Dropout"), 13), {&i}); }, ErrorCode::UnsupportedOperator,
               "Dropout: element type int64");
  const Tensor ft = Tensor::floats({}, {1});
  expect_error([&] { run(*make(Node("Dropout", 3), 13), {&x, nullptr, &ft}); }, ErrorCode::UnsupportedOperator,
               "training_mode element type float");
}

// ---------------------------------------------------------------------------------------------------
// Softmax family and ArgMin (standard.cpp)

TEST(ElementwiseSoftmaxFamily, LogSoftmaxAndHardmaxPerOpset) {
  const Tensor x = Tensor::doubles({2, 3}, {1, 2, 3, 0, 0, 0});
  const double l = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  expect_near(run1(*make(Node("LogSoftmax"), 13), x).d, {1 - l, 2 - l, 3 - l, -std::log(3.0), -std::log(3.0),
                                                          -std::log(3.0)}, 1e-12);
  // Hardmax: 1 at the first maximum along the axis.
  EXPECT_EQ(run1(*make(Node("Hardmax"), 13), Tensor::floats({2, 3}, {1, 3, 3, -1, -2, -3})).f,
            (std::vector<float>{0, 1, 0, 1, 0, 0}));
  // Opset 11 coerces [2, 2, 2] to [2, 4] at axis 1: one maximum per batch row.
  const Tensor x3 = Tensor::floats({2, 2, 2}, {0, 5, 1, 2, 7, 1, 1, 9});
  EXPECT_EQ(run1(*make(Node("Hardmax"), 11), x3).f, (std::vector<float>{0, 1, 0, 0, 0, 0, 0, 1}));
  // Opset 13 default axis -1: one maximum per innermost pair.
  EXPECT_EQ(run1(*make(Node("Hardmax"), 13), x3).f, (std::vector<float>{0, 1, 0, 1, 1, 0, 0, 1}));
  Node a0("LogSoftmax");
  a0.i("axis", 0);
  auto y = run1(*make(a0, 13), Tensor::floats({2, 1}, {0, 0}));
  expect_near(y.f, {-std::log(2.0), -std::log(2.0)});
  expect_error([] { run1(*make(Node("Hardmax")), Tensor::int64s({2}, {1, 2})); }, ErrorCode::UnsupportedOperator,
               "Hardmax: element type int64");
}

TEST(ElementwiseArgMin, MatchesArgMaxRules) {
  const Tensor x = Tensor::floats({2, 3}, {3, 1, 1, 0, 5, 0});
  Node a1("ArgMin");
  a1.i("axis", 1);
  auto y = run1(*make(a1), x);
  EXPECT_EQ(y.shape, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(y.i, (std::vector<int64_t>{1, 0}));
  Node last("ArgMin");
  last.i("axis", 1).i("keepdims", 0).i("select_last_index", 1);
  auto yl = run1(*make(last), x);
  EXPECT_EQ(yl.shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(yl.i, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(run1(*make(Node("ArgMin")), Tensor::int64s({3}, {4, -9, 1})).i, (std::vector<int64_t>{1}));
  // NaN counts as the extreme value (numpy.argmin): the first one, or the last with select_last_index.
  const Tensor n = Tensor::floats({4}, {1, kNaN, -5, kNaN});
  EXPECT_EQ(run1(*make(Node("ArgMin")), n).i, (std::vector<int64_t>{1}));
  Node nl("ArgMin");
  nl.i("select_last_index", 1);
  EXPECT_EQ(run1(*make(nl), n).i, (std::vector<int64_t>{3}));
  expect_error([] { run1(*make(Node("ArgMin")), bools({1}, {1})); }, ErrorCode::UnsupportedOperator,
               "ArgMin: element type bool");
}

// ---------------------------------------------------------------------------------------------------
// Whole graphs through flock::Model

onnx::ModelProto graph_model(int elem, std::vector<int64_t> dims) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(17);
  m.mutable_graph()->set_name("g");
  auto* in = m.mutable_graph()->add_input();
  in->set_name("x");
  auto* tt = in->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(elem);
  for (int64_t d : dims) tt->mutable_shape()->add_dim()->set_dim_value(d);
  auto* out = m.mutable_graph()->add_output();
  out->set_name("y");
  auto* ot = out->mutable_type()->mutable_tensor_type();
  ot->set_elem_type(elem);
  for (int64_t d : dims) ot->mutable_shape()->add_dim()->set_dim_value(d);
  return m;
}

void add_node(onnx::ModelProto& m, const std::string& op, std::vector<std::string> in, const std::string& out) {
  auto* n = m.mutable_graph()->add_node();
  n->set_op_type(op);
  for (auto& s : in) n->add_input(s);
  n->add_output(out);
}

void add_scalar(onnx::ModelProto& m, const std::string& name, float v) {
  auto* n = m.mutable_graph()->add_node();
  n->set_op_type("Constant");
  n->add_output(name);
  auto* a = n->add_attribute();
  a->set_name("value");
  a->set_type(onnx::AttributeProto::TENSOR);
  a->mutable_t()->set_data_type(onnx::TensorProto::FLOAT);
  a->mutable_t()->add_float_data(v);
}

std::shared_ptr<const flock::Model> load(const onnx::ModelProto& m) {
  std::string s;
  m.SerializeToString(&s);
  return flock::Model::load(std::vector<uint8_t>(s.begin(), s.end()));
}

TEST(ElementwiseGraph, TorchGeluPattern) {
  // torch.nn.GELU exported at opset <= 17: y = (x * 0.5) * (1 + erf(x / sqrt(2))).
  auto m = graph_model(onnx::TensorProto::FLOAT, {2, 3});
  add_scalar(m, "sqrt2", 1.4142135381698608f);
  add_scalar(m, "one", 1.0f);
  add_scalar(m, "half", 0.5f);
  add_node(m, "Div", {"x", "sqrt2"}, "d");
  add_node(m, "Erf", {"d"}, "e");
  add_node(m, "Add", {"e", "one"}, "a");
  add_node(m, "Mul", {"x", "a"}, "m");
  add_node(m, "Mul", {"m", "half"}, "y");
  auto model = load(m);
  const std::vector<float> xs = {-3, -1, -0.25f, 0, 0.5f, 2};
  auto out = model->run_tensors({Tensor::floats({2, 3}, xs)});
  std::vector<double> want;
  for (float v : xs) want.push_back(0.5 * v * (1 + std::erf(v / std::sqrt(2.0))));
  expect_near(out[0].f, want);
}

TEST(ElementwiseGraph, UnsupportedTypeFailsAtLoad) {
  // ONNX type inference accepts float Mod without fmod=1; the trial run at load does not.
  auto m = graph_model(onnx::TensorProto::FLOAT, {1, 2});
  add_node(m, "Mod", {"x", "x"}, "y");
  try {
    load(m);
    ADD_FAILURE() << "loaded";
  } catch (const Error& e) {
    EXPECT_EQ(static_cast<int>(e.code()), static_cast<int>(ErrorCode::UnsupportedOperator)) << e.what();
    EXPECT_NE(std::string(e.what()).find("fmod=1"), std::string::npos) << e.what();
  }
}

}  // namespace
