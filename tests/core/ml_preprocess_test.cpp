// Tests for the ai.onnx.ml preprocessing kernels (core/src/kernels/ml_preprocess.cpp).
#include <gtest/gtest.h>

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

struct Node : flock::testing::Node {
  explicit Node(const std::string& op, int n_in = 1) : flock::testing::Node(op, n_in, 1, "ai.onnx.ml") {}
};
using flock::testing::expect_error;

std::unique_ptr<Kernel> make(const flock::testing::Node& n, int64_t opset = 1) { return flock::testing::make_kernel(n, opset); }

const float kNaN = std::numeric_limits<float>::quiet_NaN();

onnx::TensorProto tp_doubles(const std::vector<double>& v) {
  onnx::TensorProto t;
  t.set_data_type(onnx::TensorProto::DOUBLE);
  t.add_dims(static_cast<int64_t>(v.size()));
  for (double x : v) t.add_double_data(x);
  return t;
}

onnx::TensorProto tp_strings(const std::vector<std::string>& v, bool scalar = false) {
  onnx::TensorProto t;
  t.set_data_type(onnx::TensorProto::STRING);
  if (!scalar) t.add_dims(static_cast<int64_t>(v.size()));
  for (const auto& x : v) t.add_string_data(x);
  return t;
}

onnx::TensorProto tp_int64s(const std::vector<int64_t>& v, bool scalar = false) {
  onnx::TensorProto t;
  t.set_data_type(onnx::TensorProto::INT64);
  if (!scalar) t.add_dims(static_cast<int64_t>(v.size()));
  for (auto x : v) t.add_int64_data(x);
  return t;
}

Tensor run1(const Kernel& k, std::vector<const Tensor*> in) {
  return std::move(flock::testing::run_kernel(k, std::move(in), 1)[0]);
}

Tensor run1(const Kernel& k, const Tensor& x) { return run1(k, std::vector<const Tensor*>{&x}); }

void expect_floats(const std::vector<float>& got, const std::vector<float>& want, float tol = 1e-6f) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t k = 0; k < got.size(); ++k) {
    if (std::isnan(want[k])) EXPECT_TRUE(std::isnan(got[k])) << "at " << k;
    else EXPECT_NEAR(got[k], want[k], tol) << "at " << k;
  }
}

// ---------------------------------------------------------------------------------------------------
// Scaler

TEST(PreprocessScaler, PerFeatureOffsetAndScale) {
  Node n("Scaler");
  n.floats("offset", {1, 2}).floats("scale", {2, 0.5f});
  auto y = run1(*make(n), Tensor::floats({2, 2}, {3, 4, 5, 10}));
  EXPECT_EQ(y.type, ElemType::Float);
  EXPECT_EQ(y.shape, (std::vector<int64_t>{2, 2}));
  expect_floats(y.f, {4, 1, 8, 4});
}

TEST(PreprocessScaler, SingleValueBroadcastsAndInputTypes) {
  Node n("Scaler");
  n.floats("offset", {1}).floats("scale", {3});
  auto k = make(n);
  expect_floats(run1(*k, Tensor::doubles({1, 3}, {1, 2, 3})).f, {0, 3, 6});
  expect_floats(run1(*k, Tensor::int64s({3}, {1, 2, 3})).f, {0, 3, 6});
  // One value applies to any rank.
  expect_floats(run1(*k, Tensor::floats({1, 1, 2}, {2, 3})).f, {3, 6});
}

TEST(PreprocessScaler, MissingOffsetOrScaleDefaults) {
  Node only_scale("Scaler");
  only_scale.floats("scale", {2, 3});
  expect_floats(run1(*make(only_scale), Tensor::floats({1, 2}, {1, 1})).f, {2, 3});
  Node only_offset("Scaler");
  only_offset.floats("offset", {1, 1});
  expect_floats(run1(*make(only_offset), Tensor::floats({1, 2}, {1, 3})).f, {0, 2});
}

TEST(PreprocessScaler, Errors) {
  expect_error([] { make(Node("Scaler")); }, ErrorCode::InvalidModel, "neither scale nor offset");
  {
    Node n("Scaler");
    n.floats("offset", {1, 2}).floats("scale", {1});
    expect_error([&] { make(n); }, ErrorCode::InvalidModel, "same length");
  }
  Node n("Scaler");
  n.floats("offset", {1, 2}).floats("scale", {1, 1});
  auto k = make(n);
  expect_error([&] { run1(*k, Tensor::floats({1, 3}, {1, 2, 3})); }, ErrorCode::InvalidInput,
               "input has 3 features per row");
  expect_error([&] { run1(*k, Tensor::strings({1, 2}, {"a", "b"})); }, ErrorCode::InvalidInput, "string");
  expect_error([&] { run1(*k, Tensor::floats({}, {1})); }, ErrorCode::InvalidInput, "scalar");
  expect_error([&] { run1(*k, std::vector<const Tensor*>{nullptr}); }, ErrorCode::InvalidInput, "missing");
}

// ---------------------------------------------------------------------------------------------------
// Normalizer

TEST(PreprocessNormalizer, MaxL1L2) {
  const Tensor x = Tensor::floats({2, 3}, {1, -2, 4, 0, 0, 0});
  {
    Node n("Normalizer");  // default MAX
    expect_floats(run1(*make(n), x).f, {0.25f, -0.5f, 1, 0, 0, 0});
  }
  {
    Node n("Normalizer");
    n.s("norm", "L1");
    expect_floats(run1(*make(n), x).f, {1 / 7.f, -2 / 7.f, 4 / 7.f, 0, 0, 0});
  }
  {
    Node n("Normalizer");
    n.s("norm", "L2");
    const float r = std::sqrt(21.f);
    expect_floats(run1(*make(n), x).f, {1 / r, -2 / r, 4 / r, 0, 0, 0});
  }
}

TEST(PreprocessNormalizer, MaxUsesSignedMaximumAndIntInput) {
  Node n("Normalizer");
  n.s("norm", "MAX");
  // max of (-4, -2) is -2 (not the absolute maximum), as in ONNX Runtime.
  auto y = run1(*make(n), Tensor::int64s({1, 2}, {-4, -2}));
  expect_floats(y.f, {2, 1});
  expect_floats(run1(*make(n), Tensor::doubles({2}, {1, 2})).f, {0.5f, 1});
}

TEST(PreprocessNormalizer, Errors) {
  Node bad("Normalizer");
  bad.s("norm", "L3");
  expect_error([&] { make(bad); }, ErrorCode::UnsupportedOperator, "norm 'L3'");
  auto k = make(Node("Normalizer"));
  expect_error([&] { run1(*k, Tensor::floats({1, 1, 2}, {1, 2})); }, ErrorCode::InvalidInput, "rank 3");
  expect_error([&] { run1(*k, Tensor::strings({1}, {"x"})); }, ErrorCode::InvalidInput, "string");
}

// ---------------------------------------------------------------------------------------------------
// Imputer

TEST(PreprocessImputer, NaNReplacedPerFeature) {
  Node n("Imputer");
  n.floats("imputed_value_floats", {10, 20}).f("replaced_value_float", kNaN);
  auto y = run1(*make(n), Tensor::floats({2, 2}, {kNaN, 1, 2, kNaN}));
  EXPECT_EQ(y.type, ElemType::Float);
  expect_floats(y.f, {10, 1, 2, 20});
}

TEST(PreprocessImputer, SpecificFloatValueAndSingleImpute) {
  Node n("Imputer");
  n.floats("imputed_value_floats", {7}).f("replaced_value_float", -1);
  auto k = make(n);
  expect_floats(run1(*k, Tensor::floats({1, 3}, {-1, kNaN, 3})).f, {7, kNaN, 3});
  auto yd = run1(*k, Tensor::doubles({3}, {-1, 0, -1}));
  EXPECT_EQ(yd.type, ElemType::Double);
  EXPECT_EQ(yd.d, (std::vector<double>{7, 0, 7}));
}

TEST(PreprocessImputer, DefaultReplacedValueIsZero) {
  Node n("Imputer");
  n.floats("imputed_value_floats", {5});
  expect_floats(run1(*make(n), Tensor::floats({1, 2}, {0, 1})).f, {5, 1});
}

TEST(PreprocessImputer, Int64) {
  Node n("Imputer");
  n.ints("imputed_value_int64s", {100, 200}).i("replaced_value_int64", -1);
  auto y = run1(*make(n), Tensor::int64s({2, 2}, {-1, 3, -1, -1}));
  EXPECT_EQ(y.type, ElemType::Int64);
  EXPECT_EQ(y.i, (std::vector<int64_t>{100, 3, 100, 200}));
}

TEST(PreprocessImputer, Errors) {
  expect_error([] { make(Node("Imputer")); }, ErrorCode::InvalidModel, "exactly one of imputed_value_floats");
  {
    Node n("Imputer");
    n.floats("imputed_value_floats", {1}).ints("imputed_value_int64s", {1});
    expect_error([&] { make(n); }, ErrorCode::InvalidModel, "exactly one");
  }
  Node nf("Imputer");
  nf.floats("imputed_value_floats", {1, 2});
  auto kf = make(nf);
  expect_error([&] { run1(*kf, Tensor::floats({1, 3}, {1, 2, 3})); }, ErrorCode::InvalidInput, "3 features per row");
  expect_error([&] { run1(*kf, Tensor::int64s({1, 2}, {1, 2})); }, ErrorCode::InvalidInput, "int64");
  Node ni("Imputer");
  ni.ints("imputed_value_int64s", {1});
  expect_error([&] { run1(*make(ni), Tensor::floats({1, 2}, {1, 2})); }, ErrorCode::InvalidInput,
               "imputed_value_int64s needs int64");
}

// ---------------------------------------------------------------------------------------------------
// OneHotEncoder

TEST(PreprocessOneHotEncoder, Int64Categories) {
  Node n("OneHotEncoder");
  n.ints("cats_int64s", {3, 1, 7});
  auto y = run1(*make(n), Tensor::int64s({2, 2}, {1, 7, 3, 5}));
  EXPECT_EQ(y.type, ElemType::Float);
  EXPECT_EQ(y.shape, (std::vector<int64_t>{2, 2, 3}));
  EXPECT_EQ(y.f, (std::vector<float>{0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0}));
}

TEST(PreprocessOneHotEncoder, FloatInputIsTruncated) {
  Node n("OneHotEncoder");
  n.ints("cats_int64s", {0, 2});
  auto y = run1(*make(n), Tensor::doubles({3}, {2.9, 0.2, kNaN}));
  EXPECT_EQ(y.shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(y.f, (std::vector<float>{0, 1, 1, 0, 0, 0}));
  expect_floats(run1(*make(n), Tensor::floats({1}, {2.5f})).f, {0, 1});
}

TEST(PreprocessOneHotEncoder, StringCategoriesAndZeros) {
  Node n("OneHotEncoder");
  n.strings("cats_strings", {"red", "green"}).i("zeros", 1);
  auto y = run1(*make(n), Tensor::strings({1, 3}, {"green", "blue", "red"}));
  EXPECT_EQ(y.shape, (std::vector<int64_t>{1, 3, 2}));
  EXPECT_EQ(y.f, (std::vector<float>{0, 1, 0, 0, 1, 0}));
  Node strict("OneHotEncoder");
  strict.strings("cats_strings", {"red", "green"}).i("zeros", 0);
  expect_error([&] { run1(*make(strict), Tensor::strings({1}, {"blue"})); }, ErrorCode::InvalidInput,
               "('blue') is not a known category");
  EXPECT_EQ(run1(*make(strict), Tensor::strings({1}, {"red"})).f, (std::vector<float>{1, 0}));
}

TEST(PreprocessOneHotEncoder, Errors) {
  expect_error([] { make(Node("OneHotEncoder")); }, ErrorCode::InvalidModel, "exactly one of cats_int64s");
  {
    Node n("OneHotEncoder");
    n.ints("cats_int64s", {1}).strings("cats_strings", {"a"});
    expect_error([&] { make(n); }, ErrorCode::InvalidModel, "exactly one");
  }
  Node ni("OneHotEncoder");
  ni.ints("cats_int64s", {1}).i("zeros", 0);
  auto k = make(ni);
  expect_error([&] { run1(*k, Tensor::strings({1}, {"1"})); }, ErrorCode::InvalidInput, "numeric input");
  expect_error([&] { run1(*k, Tensor::int64s({1}, {2})); }, ErrorCode::InvalidInput, "(2) is not a known category");
  Node ns("OneHotEncoder");
  ns.strings("cats_strings", {"a"});
  expect_error([&] { run1(*make(ns), Tensor::int64s({1}, {1})); }, ErrorCode::InvalidInput, "string input");
}

// ---------------------------------------------------------------------------------------------------
// LabelEncoder

TEST(PreprocessLabelEncoder, Opset1StringToIntAndBack) {
  Node n("LabelEncoder");
  n.strings("classes_strings", {"a", "b", "c"}).i("default_int64", 42).s("default_string", "?");
  auto k = make(n, 1);
  auto yi = run1(*k, Tensor::strings({2, 2}, {"c", "a", "zz", "b"}));
  EXPECT_EQ(yi.type, ElemType::Int64);
  EXPECT_EQ(yi.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(yi.i, (std::vector<int64_t>{2, 0, 42, 1}));
  auto ys = run1(*k, Tensor::int64s({3}, {1, 3, -1}));
  EXPECT_EQ(ys.type, ElemType::String);
  EXPECT_EQ(ys.s, (std::vector<std::string>{"b", "?", "?"}));
  // Defaults: -1 and "_Unused".
  Node d("LabelEncoder");
  d.strings("classes_strings", {"a"});
  EXPECT_EQ(run1(*make(d, 1), Tensor::strings({1}, {"x"})).i, (std::vector<int64_t>{-1}));
  EXPECT_EQ(run1(*make(d, 1), Tensor::int64s({1}, {5})).s, (std::vector<std::string>{"_Unused"}));
  expect_error([&] { run1(*make(d, 1), Tensor::floats({1}, {1})); }, ErrorCode::InvalidInput, "float");
}

TEST(PreprocessLabelEncoder, Opset2StringToInt64) {
  // The example from the ONNX specification.
  Node n("LabelEncoder");
  n.strings("keys_strings", {"Amy", "Sally"}).ints("values_int64s", {5, 6}).i("default_int64", -1);
  auto y = run1(*make(n, 2), Tensor::strings({5}, {"Dori", "Amy", "Amy", "Sally", "Sally"}));
  EXPECT_EQ(y.type, ElemType::Int64);
  EXPECT_EQ(y.i, (std::vector<int64_t>{-1, 5, 5, 6, 6}));
}

TEST(PreprocessLabelEncoder, Opset2AllTypePairsAndDefaults) {
  {
    Node n("LabelEncoder");
    n.ints("keys_int64s", {1, 2}).strings("values_strings", {"one", "two"});
    auto y = run1(*make(n, 2), Tensor::int64s({3}, {2, 1, 9}));
    EXPECT_EQ(y.s, (std::vector<std::string>{"two", "one", "_Unused"}));
  }
  {
    Node n("LabelEncoder");
    n.floats("keys_floats", {0.5f, kNaN, 0.0f}).floats("values_floats", {1, 2, 3}).f("default_float", 9);
    auto y = run1(*make(n, 2), Tensor::floats({5}, {0.5f, kNaN, -0.0f, 7, 0.0f}));
    EXPECT_EQ(y.type, ElemType::Float);
    EXPECT_EQ(y.f, (std::vector<float>{1, 2, 3, 9, 3}));
  }
  {
    Node n("LabelEncoder");
    n.strings("keys_strings", {"x"}).floats("values_floats", {1.5f});
    auto y = run1(*make(n, 2), Tensor::strings({2}, {"x", "y"}));
    EXPECT_EQ(y.f[0], 1.5f);
    EXPECT_EQ(y.f[1], 0.0f);
    EXPECT_TRUE(std::signbit(y.f[1]));  // default_float is -0.0
  }
  {
    Node n("LabelEncoder");
    n.floats("keys_floats", {1.5f}).ints("values_int64s", {3});
    EXPECT_EQ(run1(*make(n, 2), Tensor::doubles({2}, {1.5, 2})).i, (std::vector<int64_t>{3, -1}));
  }
  {
    Node n("LabelEncoder");
    n.ints("keys_int64s", {1, 1}).ints("values_int64s", {10, 20}).i("default_int64", 0);
    EXPECT_EQ(run1(*make(n, 2), Tensor::int64s({2}, {1, 2})).i, (std::vector<int64_t>{10, 0}));  // first wins
  }
  {
    Node n("LabelEncoder");
    n.strings("keys_strings", {"a"}).strings("values_strings", {"b"}).s("default_string", "none");
    EXPECT_EQ(run1(*make(n, 2), Tensor::strings({2}, {"a", "c"})).s, (std::vector<std::string>{"b", "none"}));
  }
}

TEST(PreprocessLabelEncoder, Opset4TensorAttributes) {
  {
    Node n("LabelEncoder");
    n.tensor("keys_tensor", tp_strings({"a", "b"})).tensor("values_tensor", tp_doubles({0.25, 0.5}));
    n.tensor("default_tensor", tp_doubles({-7}));
    auto y = run1(*make(n, 4), Tensor::strings({3}, {"b", "a", "q"}));
    EXPECT_EQ(y.type, ElemType::Double);
    EXPECT_EQ(y.d, (std::vector<double>{0.5, 0.25, -7}));
  }
  {
    Node n("LabelEncoder");
    n.tensor("keys_tensor", tp_int64s({4, 5})).tensor("values_tensor", tp_strings({"four", "five"}));
    n.tensor("default_tensor", tp_strings({"other"}, true));
    EXPECT_EQ(run1(*make(n, 4), Tensor::int64s({2}, {5, 6})).s, (std::vector<std::string>{"five", "other"}));
  }
  {
    Node n("LabelEncoder");
    n.tensor("keys_tensor", tp_doubles({0.1, 0.2})).ints("values_int64s", {1, 2});
    EXPECT_EQ(run1(*make(n, 4), Tensor::doubles({2}, {0.2, 0.3})).i, (std::vector<int64_t>{2, -1}));
  }
}

TEST(PreprocessLabelEncoder, Errors) {
  expect_error([] { make(Node("LabelEncoder"), 2); }, ErrorCode::InvalidModel, "no keys_");
  {
    Node n("LabelEncoder");
    n.strings("keys_strings", {"a", "b"}).ints("values_int64s", {1});
    expect_error([&] { make(n, 2); }, ErrorCode::InvalidModel, "2 keys but 1 values");
  }
  {
    Node n("LabelEncoder");
    n.strings("keys_strings", {"a"}).ints("keys_int64s", {1}).ints("values_int64s", {1});
    expect_error([&] { make(n, 2); }, ErrorCode::InvalidModel, "exactly one of keys_strings");
  }
  {
    Node n("LabelEncoder");
    n.strings("keys_strings", {"a"});
    expect_error([&] { make(n, 2); }, ErrorCode::InvalidModel, "exactly one of values_strings");
  }
  {
    Node n("LabelEncoder");
    n.strings("keys_strings", {"a"}).ints("values_int64s", {1}).tensor("default_tensor", tp_strings({"x"}));
    expect_error([&] { make(n, 4); }, ErrorCode::InvalidModel, "default_tensor has type string");
  }
  {
    Node n("LabelEncoder");
    n.strings("keys_strings", {"a"}).ints("values_int64s", {1}).tensor("default_tensor", tp_int64s({1, 2}));
    expect_error([&] { make(n, 4); }, ErrorCode::InvalidModel, "default_tensor has 2 values");
  }
  Node n("LabelEncoder");
  n.strings("keys_strings", {"a"}).ints("values_int64s", {1});
  expect_error([&] { run1(*make(n, 2), Tensor::int64s({1}, {1})); }, ErrorCode::InvalidInput,
               "input has element type int64; the keys are string");
}

// ---------------------------------------------------------------------------------------------------
// Binarizer

TEST(PreprocessBinarizer, ThresholdAndTypes) {
  Node n("Binarizer");
  n.f("threshold", 0.5f);
  auto k = make(n);
  auto y = run1(*k, Tensor::floats({2, 2}, {0.5f, 0.6f, -1, 2}));
  EXPECT_EQ(y.type, ElemType::Float);
  EXPECT_EQ(y.f, (std::vector<float>{0, 1, 0, 1}));
  EXPECT_EQ(run1(*k, Tensor::doubles({2}, {0.4, 0.51})).d, (std::vector<double>{0, 1}));
  EXPECT_EQ(run1(*k, Tensor::int64s({2}, {0, 3})).i, (std::vector<int64_t>{0, 1}));
  // Default threshold 0 (ONNX specification).
  EXPECT_EQ(run1(*make(Node("Binarizer")), Tensor::floats({3}, {-0.1f, 0, 0.1f})).f, (std::vector<float>{0, 0, 1}));
}

TEST(PreprocessBinarizer, Errors) {
  auto k = make(Node("Binarizer"));
  expect_error([&] { run1(*k, Tensor::floats({2}, {1, kNaN})); }, ErrorCode::InvalidInput, "element 1 is NaN");
  expect_error([&] { run1(*k, Tensor::strings({1}, {"1"})); }, ErrorCode::InvalidInput, "string");
}

// ---------------------------------------------------------------------------------------------------
// ArrayFeatureExtractor

TEST(PreprocessArrayFeatureExtractor, SelectsAlongLastAxis) {
  auto k = make(Node("ArrayFeatureExtractor", 2));
  const Tensor x = Tensor::floats({2, 3}, {1, 2, 3, 4, 5, 6});
  const Tensor idx = Tensor::int64s({2}, {2, 0});
  auto y = run1(*k, {&x, &idx});
  EXPECT_EQ(y.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(y.f, (std::vector<float>{3, 1, 6, 4}));
  const Tensor s = Tensor::strings({3}, {"a", "b", "c"});
  const Tensor one = Tensor::int64s({}, {1});
  auto ys = run1(*k, {&s, &one});
  EXPECT_EQ(ys.shape, (std::vector<int64_t>{1, 1}));  // 1-D input gives [1, K]
  EXPECT_EQ(ys.s, (std::vector<std::string>{"b"}));
  const Tensor x3 = Tensor::int64s({2, 1, 2}, {1, 2, 3, 4});
  auto y3 = run1(*k, {&x3, &one});
  EXPECT_EQ(y3.shape, (std::vector<int64_t>{2, 1, 1}));
  EXPECT_EQ(y3.i, (std::vector<int64_t>{2, 4}));
  const Tensor xd = Tensor::doubles({1, 2}, {0.5, 1.5});
  EXPECT_EQ(run1(*k, {&xd, &one}).d, (std::vector<double>{1.5}));
}

TEST(PreprocessArrayFeatureExtractor, Errors) {
  expect_error([] { make(Node("ArrayFeatureExtractor", 1)); }, ErrorCode::InvalidModel, "needs two inputs");
  auto k = make(Node("ArrayFeatureExtractor", 2));
  const Tensor x = Tensor::floats({1, 3}, {1, 2, 3});
  const Tensor bad = Tensor::int64s({1}, {3});
  const Tensor neg = Tensor::int64s({1}, {-1});
  const Tensor none = Tensor::int64s({0}, {});
  const Tensor fidx = Tensor::floats({1}, {0});
  expect_error([&] { run1(*k, {&x, &bad}); }, ErrorCode::InvalidInput, "index 3 is out of range");
  expect_error([&] { run1(*k, {&x, &neg}); }, ErrorCode::InvalidInput, "index -1 is out of range");
  expect_error([&] { run1(*k, {&x, &none}); }, ErrorCode::InvalidInput, "no indices");
  expect_error([&] { run1(*k, {&x, &fidx}); }, ErrorCode::InvalidInput, "expected int64");
  expect_error([&] { run1(*k, {&x}); }, ErrorCode::InvalidInput, "missing");
}

// ---------------------------------------------------------------------------------------------------
// FeatureVectorizer

TEST(PreprocessFeatureVectorizer, ConcatenatesAndCasts) {
  Node n("FeatureVectorizer", 3);
  n.ints("inputdimensions", {1, 2, 1});
  const Tensor a = Tensor::int64s({2, 1}, {1, 2});
  const Tensor b = Tensor::doubles({2, 2}, {0.5, 1.5, 2.5, 3.5});
  const Tensor c2 = Tensor::floats({2, 1}, {9, 8});
  auto y = run1(*make(n), {&a, &b, &c2});
  EXPECT_EQ(y.type, ElemType::Float);
  EXPECT_EQ(y.shape, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(y.f, (std::vector<float>{1, 0.5f, 1.5f, 9, 2, 2.5f, 3.5f, 8}));
}

TEST(PreprocessFeatureVectorizer, PadsAndTruncatesLikeOnnxRuntime) {
  Node n("FeatureVectorizer", 2);
  n.ints("inputdimensions", {3, 1});
  const Tensor a = Tensor::floats({1, 2}, {1, 2});     // narrower: zero-padded
  const Tensor b = Tensor::floats({1, 2}, {5, 6});     // wider: truncated
  auto y = run1(*make(n), {&a, &b});
  EXPECT_EQ(y.f, (std::vector<float>{1, 2, 0, 5}));
  const Tensor v = Tensor::floats({3}, {1, 2, 3});  // 1-D: one row
  const Tensor w = Tensor::floats({1}, {4});
  auto y1 = run1(*make(n), {&v, &w});
  EXPECT_EQ(y1.shape, (std::vector<int64_t>{1, 4}));
  EXPECT_EQ(y1.f, (std::vector<float>{1, 2, 3, 4}));
}

TEST(PreprocessFeatureVectorizer, Errors) {
  expect_error([] { make(Node("FeatureVectorizer", 1)); }, ErrorCode::InvalidModel, "inputdimensions");
  {
    Node n("FeatureVectorizer", 2);
    n.ints("inputdimensions", {1});
    expect_error([&] { make(n); }, ErrorCode::InvalidModel, "2 inputs but 1 inputdimensions");
  }
  {
    Node n("FeatureVectorizer", 1);
    n.ints("inputdimensions", {-1});
    expect_error([&] { make(n); }, ErrorCode::InvalidModel, "negative");
  }
  Node n("FeatureVectorizer", 2);
  n.ints("inputdimensions", {1, 1});
  auto k = make(n);
  const Tensor a = Tensor::floats({2, 1}, {1, 2});
  const Tensor b = Tensor::floats({3, 1}, {1, 2, 3});
  const Tensor s = Tensor::strings({2, 1}, {"1", "2"});
  expect_error([&] { run1(*k, {&a, &b}); }, ErrorCode::InvalidInput, "input 1 has 3 rows; input 0 has 2");
  expect_error([&] { run1(*k, {&a, &s}); }, ErrorCode::InvalidInput, "string");
  expect_error([&] { run1(*k, {&a}); }, ErrorCode::InvalidInput, "1 inputs arrived");
}

// ---------------------------------------------------------------------------------------------------
// ZipMap

TEST(PreprocessZipMap, PassesProbabilitiesThrough) {
  Node n("ZipMap");
  n.ints("classlabels_int64s", {0, 1, 2});
  const Tensor x = Tensor::floats({2, 3}, {0.1f, 0.2f, 0.7f, 0.3f, 0.3f, 0.4f});
  auto y = run1(*make(n), x);
  EXPECT_EQ(y.shape, x.shape);
  EXPECT_EQ(y.f, x.f);
  Node s("ZipMap");
  s.strings("classlabels_strings", {"no", "yes"});
  EXPECT_EQ(run1(*make(s), Tensor::floats({2}, {0.4f, 0.6f})).f, (std::vector<float>{0.4f, 0.6f}));
}

TEST(PreprocessZipMap, Errors) {
  expect_error([] { make(Node("ZipMap")); }, ErrorCode::InvalidModel, "exactly one of classlabels_int64s");
  {
    Node n("ZipMap");
    n.ints("classlabels_int64s", {1}).strings("classlabels_strings", {"a"});
    expect_error([&] { make(n); }, ErrorCode::InvalidModel, "exactly one");
  }
  Node n("ZipMap");
  n.ints("classlabels_int64s", {0, 1});
  auto k = make(n);
  expect_error([&] { run1(*k, Tensor::floats({1, 3}, {1, 2, 3})); }, ErrorCode::InvalidInput,
               "3 columns but there are 2 class labels");
  expect_error([&] { run1(*k, Tensor::doubles({1, 2}, {1, 2})); }, ErrorCode::InvalidInput, "double");
  expect_error([&] { run1(*k, Tensor::floats({1, 1, 2}, {1, 2})); }, ErrorCode::InvalidInput, "rank 3");
}

}  // namespace
