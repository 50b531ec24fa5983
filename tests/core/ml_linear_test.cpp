// Tests for ai.onnx.ml LinearClassifier / LinearRegressor (core/src/kernels/ml_linear.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
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
  explicit Node(const std::string& op, int n_out = 2) : flock::testing::Node(op, 1, n_out, "ai.onnx.ml") {}
};
using flock::testing::expect_error;

std::unique_ptr<Kernel> make(const flock::testing::Node& n, int64_t opset = 1) { return flock::testing::make_kernel(n, opset); }

std::vector<Tensor> run(const Kernel& k, const Tensor& x, size_t n_out = 2) {
  return flock::testing::run_kernel(k, {&x}, n_out);
}

void expect_near(const std::vector<float>& got, const std::vector<double>& want, double tol) {
  flock::testing::expect_all_near(got, want, tol);
}

double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }

// Standard normal quantile by bisection on Φ(x) = erfc(-x/√2)/2.
double probit(double p) {
  double lo = -10, hi = 10;
  for (int k = 0; k < 200; ++k) {
    const double mid = (lo + hi) / 2;
    (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
  }
  return (lo + hi) / 2;
}

// Raw scores X·Wᵀ + b in double.
std::vector<double> raw_scores(const std::vector<float>& x, int64_t n, const std::vector<float>& w,
                               const std::vector<float>& b) {
  const int64_t c = static_cast<int64_t>(b.size());
  const int64_t f = static_cast<int64_t>(w.size()) / c;
  std::vector<double> s(static_cast<size_t>(n * c));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < c; ++j) {
      double acc = b[static_cast<size_t>(j)];
      for (int64_t k = 0; k < f; ++k) acc += double(x[size_t(r * f + k)]) * double(w[size_t(j * f + k)]);
      s[size_t(r * c + j)] = acc;
    }
  return s;
}

// ONNX Runtime's unit-test data (onnxruntime/test/providers/cpu/ml/linearclassifer_test.cc).
const std::vector<float> kOrtCoef = {-0.22562418f, 0.34188559f, 0.68346153f, -0.68051993f, -0.1975279f, 0.03748541f};
const std::vector<float> kOrtIcpt = {-3.91601811f, 0.42575697f, 0.13731251f};
const std::vector<float> kOrtX = {1.f, 0.f, 3.f, 44.f, 23.f, 11.3f};

Node ort_multiclass(const std::string& post = "") {
  Node n("LinearClassifier");
  n.floats("coefficients", kOrtCoef).floats("intercepts", kOrtIcpt).ints("classlabels_ints", {1, 2, 3});
  if (!post.empty()) n.s("post_transform", post);
  return n;
}

// ---------------------------------------------------------------------------------------------------
// LinearClassifier

TEST(LinearClassifier, MulticlassRawScoresMatchOnnxRuntime) {
  auto k = make(ort_multiclass().i("multi_class", 0));
  auto out = run(*k, Tensor::floats({3, 2}, kOrtX));
  ASSERT_EQ(out[0].type, ElemType::Int64);
  EXPECT_EQ(out[0].shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(out[0].i, (std::vector<int64_t>{2, 1, 2}));
  ASSERT_EQ(out[1].type, ElemType::Float);
  EXPECT_EQ(out[1].shape, (std::vector<int64_t>{3, 3}));
  expect_near(out[1].f,
              {-4.14164229, 1.1092185, -0.06021539, 10.45007543, -27.46673545, 1.19408663, -5.24206713, 8.45549693,
               -3.98224414},
              1e-4);
}

TEST(LinearClassifier, MulticlassLogisticMatchesOnnxRuntime) {
  auto k = make(ort_multiclass("LOGISTIC"));
  auto out = run(*k, Tensor::floats({3, 2}, kOrtX));
  EXPECT_EQ(out[0].i, (std::vector<int64_t>{2, 1, 2}));
  expect_near(out[1].f,
              {0.015647972, 0.751983387, 0.484950699, 0.999971055, 1.17855E-12, 0.767471158, 0.005261482, 0.999787317,
               0.018302525},
              1e-4);
}

TEST(LinearClassifier, MulticlassSoftmaxFromFirstPrinciples) {
  auto k = make(ort_multiclass("SOFTMAX"));
  auto out = run(*k, Tensor::floats({3, 2}, kOrtX));
  const auto s = raw_scores(kOrtX, 3, kOrtCoef, kOrtIcpt);
  std::vector<double> want(9);
  for (int r = 0; r < 3; ++r) {
    double mx = std::max({s[r * 3], s[r * 3 + 1], s[r * 3 + 2]}), sum = 0;
    for (int j = 0; j < 3; ++j) sum += std::exp(s[r * 3 + j] - mx);
    for (int j = 0; j < 3; ++j) want[r * 3 + j] = std::exp(s[r * 3 + j] - mx) / sum;
  }
  expect_near(out[1].f, want, 1e-5);
  EXPECT_EQ(out[0].i, (std::vector<int64_t>{2, 1, 2}));
}

TEST(LinearClassifier, MulticlassSoftmaxZeroKeepsZeroScoresSmall) {
  // Row 0 scores (0, 1, 2): the zero score is weighted exp(-max) instead of exp(0 - max).
  Node n("LinearClassifier");
  n.floats("coefficients", {0, 1, 2}).floats("intercepts", {0, 0, 0}).ints("classlabels_ints", {0, 1, 2});
  n.s("post_transform", "SOFTMAX_ZERO");
  auto out = run(*make(n), Tensor::floats({1, 1}, {1.0f}));
  // exp(-2)*0 = 0 for the zero score; the others are softmax over {1, 2}.
  const double e1 = std::exp(1.0 - 2.0), e2 = 1.0;
  expect_near(out[1].f, {0.0, e1 / (e1 + e2), e2 / (e1 + e2)}, 1e-6);
  EXPECT_EQ(out[0].i, (std::vector<int64_t>{2}));
}

TEST(LinearClassifier, MulticlassProbitIsNormalQuantile) {
  Node n("LinearClassifier");
  n.floats("coefficients", {0, 0}).floats("intercepts", {0.2f, 0.9f}).ints("classlabels_ints", {5, 6});
  n.s("post_transform", "PROBIT");
  auto out = run(*make(n), Tensor::floats({1, 1}, {3.0f}));
  // ONNX Runtime uses a closed-form erfinv approximation (error ~1e-3).
  expect_near(out[1].f, {probit(0.2), probit(0.9)}, 5e-3);
  EXPECT_EQ(out[0].i, (std::vector<int64_t>{6}));
}

TEST(LinearClassifier, LabelIsArgmaxOfRawScoresFirstMaximumWins) {
  Node n("LinearClassifier");
  n.floats("coefficients", {1, 1, 0}).floats("intercepts", {0, 0, 0}).strings("classlabels_strings", {"a", "b", "c"});
  auto out = run(*make(n), Tensor::floats({2, 1}, {2.0f, -1.0f}));
  ASSERT_EQ(out[0].type, ElemType::String);
  EXPECT_EQ(out[0].s, (std::vector<std::string>{"a", "c"}));
}

TEST(LinearClassifier, BinaryOneRowNoLabelsGivesOneScoreColumn) {
  // ORT LinearClassifierBinary.
  Node n("LinearClassifier");
  n.floats("coefficients", {0.00085401f, -0.00314063f}).floats("intercepts", {0.03930598f});
  auto out = run(*make(n), Tensor::floats({3, 2}, kOrtX));
  EXPECT_EQ(out[0].i, (std::vector<int64_t>{1, 0, 1}));
  EXPECT_EQ(out[1].shape, (std::vector<int64_t>{3, 1}));
  expect_near(out[1].f, {0.0401599929, -0.0963197052, 0.0234590918}, 1e-6);
}

TEST(LinearClassifier, BinaryOneRowTwoLabelsMatchesOnnxRuntime) {
  // ORT LinearClassifierBinaryWithLabels: scores [1 - s, s], label by s > 0.
  Node n("LinearClassifier");
  n.floats("coefficients", {0.00085401f, -0.00314063f}).floats("intercepts", {0.03930598f});
  n.strings("classlabels_strings", {"not_so_good", "pretty_good"});
  auto out = run(*make(n), Tensor::floats({3, 2}, kOrtX));
  EXPECT_EQ(out[0].s, (std::vector<std::string>{"pretty_good", "not_so_good", "pretty_good"}));
  EXPECT_EQ(out[1].shape, (std::vector<int64_t>{3, 2}));
  expect_near(out[1].f, {0.959840000, 0.0401599929, 1.09631968, -0.0963197052, 0.976540923, 0.0234590918}, 1e-6);
}

TEST(LinearClassifier, BinaryOneRowLogisticGivesComplementaryProbabilities) {
  Node n("LinearClassifier");
  n.floats("coefficients", {2.0f}).floats("intercepts", {-1.0f}).ints("classlabels_ints", {10, 20});
  n.s("post_transform", "LOGISTIC");
  auto out = run(*make(n), Tensor::floats({3, 1}, {0.0f, 0.5f, 3.0f}));
  EXPECT_EQ(out[0].i, (std::vector<int64_t>{10, 10, 20}));  // s = -1, 0, 5: positive only when s > 0
  const double p0 = sigmoid(-1), p2 = sigmoid(5);
  expect_near(out[1].f, {1 - p0, p0, 0.5, 0.5, 1 - p2, p2}, 1e-6);
}

TEST(LinearClassifier, SingleScoreLogisticAndProbit) {
  Node n("LinearClassifier");
  n.floats("coefficients", {1.0f}).floats("intercepts", {0.0f}).s("post_transform", "LOGISTIC");
  auto out = run(*make(n), Tensor::floats({2, 1}, {1.5f, -2.0f}));
  expect_near(out[1].f, {sigmoid(1.5), sigmoid(-2.0)}, 1e-6);
  EXPECT_EQ(out[0].i, (std::vector<int64_t>{1, 0}));

  Node p("LinearClassifier");
  p.floats("coefficients", {1.0f}).floats("intercepts", {0.0f}).s("post_transform", "PROBIT");
  auto outp = run(*make(p), Tensor::floats({1, 1}, {0.3f}));
  expect_near(outp[1].f, {probit(0.3)}, 5e-3);
}

// sklearn 1.2.1 LogisticRegression, exported the way sklearn-onnx does it (binary: two rows [-w, w],
// intercepts [-b, b], LOGISTIC). Values from:
//   X = np.random.RandomState(0).randn(40, 3); y = (X[:,0] + 0.5*X[:,1] - X[:,2] > 0)
//   m = LogisticRegression().fit(X, y); m.predict_proba(Xt) for Xt below.
TEST(LinearClassifier, SklearnBinaryLogisticRegression) {
  const std::vector<float> w = {2.1180184703123217f, 0.5339622580462994f, -1.5524455879792574f};
  const float b = 0.36468745662863367f;
  Node n("LinearClassifier");
  n.floats("coefficients", {-w[0], -w[1], -w[2], w[0], w[1], w[2]}).floats("intercepts", {-b, b});
  n.ints("classlabels_ints", {0, 1}).s("post_transform", "LOGISTIC").i("multi_class", 0);
  auto out = run(*make(n), Tensor::floats({3, 3}, {0.5f, -1.0f, 2.0f, 1.5f, 0.25f, -0.75f, -0.2f, 0.1f, 0.3f}));
  EXPECT_EQ(out[0].i, (std::vector<int64_t>{0, 1, 0}));
  expect_near(out[1].f,
              {0.9016023583995598, 0.09839764160044014, 0.0078486048830263, 0.9921513951169737, 0.6156804445763532,
               0.3843195554236468},
              1e-6);
}

// Same data, three classes, multinomial (SOFTMAX):
//   y3 = np.digitize(X[:,0] + X[:,1], [-0.5, 0.5]); LogisticRegression(max_iter=1000).fit(X, y3)
TEST(LinearClassifier, SklearnMultinomialLogisticRegression) {
  Node n("LinearClassifier");
  n.floats("coefficients", {-1.4917875141881665f, -1.4928427816689407f, -0.25818686466928387f, -0.10348557466584561f,
                            0.00560184465000293f, 0.09304881870406494f, 1.595273088854012f, 1.4872409370189383f,
                            0.165138045965219f});
  n.floats("intercepts", {-0.5075907619045458f, 0.38228692389809527f, 0.12530383800645112f});
  n.strings("classlabels_strings", {"low", "mid", "high"}).s("post_transform", "SOFTMAX").i("multi_class", 1);
  auto out = run(*make(n), Tensor::floats({3, 3}, {0.5f, -1.0f, 2.0f, 1.5f, 0.25f, -0.75f, -0.2f, 0.1f, 0.3f}));
  EXPECT_EQ(out[0].s, (std::vector<std::string>{"mid", "high", "mid"}));
  expect_near(out[1].f,
              {0.2356798362729176, 0.5182872649082582, 0.24603289881882423, 0.003134516622046418,
               0.06844222534659983, 0.9284232580313537, 0.2026648043747016, 0.48250238793616806,
               0.31483280768913036},
              1e-6);
}

TEST(LinearClassifier, DoubleAndInt64InputsAreCastToFloat) {
  auto k = make(ort_multiclass());
  auto f = run(*k, Tensor::floats({3, 2}, {1, 0, 3, 44, 23, 11}));
  auto d = run(*k, Tensor::doubles({3, 2}, {1, 0, 3, 44, 23, 11}));
  auto i = run(*k, Tensor::int64s({3, 2}, {1, 0, 3, 44, 23, 11}));
  EXPECT_EQ(f[1].f, d[1].f);
  EXPECT_EQ(f[1].f, i[1].f);
  EXPECT_EQ(i[0].i, (std::vector<int64_t>{2, 1, 2}));
  // ORT's LinearClassifierMulticlassInt64Input expectation for the last row.
  expect_near({i[1].f[6], i[1].f[7], i[1].f[8]}, {-5.3446321487426758, 8.6596536636352539, -3.9934897422790527}, 1e-4);
}

TEST(LinearClassifier, OneDimensionalInputIsOneRow) {
  auto out = run(*make(ort_multiclass()), Tensor::floats({2}, {1.f, 0.f}));
  EXPECT_EQ(out[0].shape, (std::vector<int64_t>{1}));
  EXPECT_EQ(out[1].shape, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(out[0].i, (std::vector<int64_t>{2}));
}

TEST(LinearClassifier, EmptyBatch) {
  auto out = run(*make(ort_multiclass()), Tensor::floats({0, 2}, {}));
  EXPECT_EQ(out[0].shape, (std::vector<int64_t>{0}));
  EXPECT_EQ(out[1].shape, (std::vector<int64_t>{0, 3}));
}

TEST(LinearClassifier, LabelOnlyNodeWritesOneOutput) {
  Node n = ort_multiclass();
  n.p.mutable_output()->RemoveLast();
  auto out = run(*make(n), Tensor::floats({3, 2}, kOrtX), 1);
  EXPECT_EQ(out[0].i, (std::vector<int64_t>{2, 1, 2}));
}

TEST(LinearClassifier, NoInterceptsRowCountFromInputWidth) {
  // Two labels and no intercepts: 2 coefficients over 2 features = one row (binary special case) ...
  Node one("LinearClassifier");
  one.floats("coefficients", {1.0f, -1.0f}).ints("classlabels_ints", {0, 1});
  auto o1 = run(*make(one), Tensor::floats({1, 2}, {3.0f, 1.0f}));
  expect_near(o1[1].f, {-1.0, 2.0}, 1e-6);
  EXPECT_EQ(o1[0].i, (std::vector<int64_t>{1}));
  // ... over 1 feature = two rows.
  auto o2 = run(*make(one), Tensor::floats({1, 1}, {3.0f}));
  expect_near(o2[1].f, {3.0, -3.0}, 1e-6);
  EXPECT_EQ(o2[0].i, (std::vector<int64_t>{0}));
  // ... over 3 features: neither.
  expect_error([&] { run(*make(one), Tensor::floats({1, 3}, {1, 2, 3})); }, ErrorCode::InvalidInput,
               "neither 1 nor 2 rows");
  // Three labels and no intercepts: three rows, zero intercepts.
  Node three("LinearClassifier");
  three.floats("coefficients", {1, 2, 3}).ints("classlabels_ints", {7, 8, 9});
  auto o3 = run(*make(three), Tensor::floats({1, 1}, {1.0f}));
  expect_near(o3[1].f, {1, 2, 3}, 1e-6);
  EXPECT_EQ(o3[0].i, (std::vector<int64_t>{9}));
}

TEST(LinearClassifier, CompileErrors) {
  expect_error([] { make(Node("LinearClassifier")); }, ErrorCode::InvalidModel, "coefficients");
  {
    Node n("LinearClassifier");
    n.floats("coefficients", {1, 2}).floats("intercepts", {0, 0}).ints("classlabels_ints", {1, 2});
    n.strings("classlabels_strings", {"a", "b"});
    expect_error([&] { make(n); }, ErrorCode::InvalidModel, "both classlabels_ints and classlabels_strings");
  }
  {
    Node n("LinearClassifier");
    n.floats("coefficients", {1, 2, 3}).floats("intercepts", {0, 0}).ints("classlabels_ints", {1, 2});
    expect_error([&] { make(n); }, ErrorCode::InvalidModel, "3 coefficients do not split into 2 classes");
  }
  {
    Node n("LinearClassifier");
    n.floats("coefficients", {1, 2, 3}).floats("intercepts", {0, 0, 0}).ints("classlabels_ints", {1, 2});
    expect_error([&] { make(n); }, ErrorCode::InvalidModel, "3 coefficient rows but 2 class labels");
  }
  {
    Node n("LinearClassifier");
    n.floats("coefficients", {1, 2}).floats("intercepts", {0, 0});
    expect_error([&] { make(n); }, ErrorCode::InvalidModel, "2 coefficient rows but 0 class labels");
  }
  {
    Node n("LinearClassifier");
    n.floats("coefficients", {1, 2}).floats("intercepts", {0}).ints("classlabels_ints", {4});
    expect_error([&] { make(n); }, ErrorCode::InvalidModel, "a single class label");
  }
  {
    Node n = ort_multiclass("SIGMOID");
    expect_error([&] { make(n); }, ErrorCode::UnsupportedOperator, "post_transform 'SIGMOID'");
  }
  {
    Node n = ort_multiclass();
    n.i("multi_class", 7);
    expect_error([&] { make(n); }, ErrorCode::UnsupportedOperator, "multi_class 7");
  }
  for (const char* post : {"SOFTMAX", "SOFTMAX_ZERO"}) {
    Node n("LinearClassifier");
    n.floats("coefficients", {1}).floats("intercepts", {0}).s("post_transform", post);
    expect_error([&] { make(n); }, ErrorCode::UnsupportedOperator, "single coefficient row");
  }
  {
    Node n("LinearClassifier");
    n.floats("coefficients", {1}).floats("intercepts", {0}).ints("classlabels_ints", {0, 1});
    n.s("post_transform", "PROBIT");
    expect_error([&] { make(n); }, ErrorCode::UnsupportedOperator, "PROBIT");
  }
}

TEST(LinearClassifier, RunErrors) {
  auto k = make(ort_multiclass());
  expect_error([&] { run(*k, Tensor::floats({1, 3}, {1, 2, 3})); }, ErrorCode::InvalidInput,
               "input has 3 features per row; the model has coefficients for 2");
  expect_error([&] { run(*k, Tensor::strings({1, 2}, {"a", "b"})); }, ErrorCode::InvalidInput, "element type string");
  expect_error([&] { run(*k, Tensor::floats({}, {1})); }, ErrorCode::InvalidInput, "scalar");
  expect_error([&] { run(*k, Tensor::floats({2, 2}, {1, 2})); }, ErrorCode::InvalidInput, "holds 2 values");
  std::vector<Tensor> out(2);
  expect_error([&] { k->run({nullptr}, out); }, ErrorCode::InvalidInput, "missing");
  expect_error([&] { k->run({}, out); }, ErrorCode::InvalidInput, "missing");
}

TEST(LinearClassifier, RunIsConstAndRepeatable) {
  auto k = make(ort_multiclass("SOFTMAX"));
  const Tensor x = Tensor::floats({3, 2}, kOrtX);
  auto a = run(*k, x);
  auto b = run(*k, x);
  EXPECT_EQ(a[1].f, b[1].f);
  EXPECT_EQ(a[0].i, b[0].i);
}

// ---------------------------------------------------------------------------------------------------
// LinearRegressor

TEST(LinearRegressor, SingleTargetWithIntercept) {
  Node n("LinearRegressor", 1);
  n.floats("coefficients", {0.3f, -0.77f}).floats("intercepts", {0.5f});
  auto out = run(*make(n), Tensor::floats({3, 2}, {1.f, 0.f, 3.f, 44.f, 23.f, 11.3f}), 1);
  EXPECT_EQ(out[0].shape, (std::vector<int64_t>{3, 1}));
  expect_near(out[0].f, {0.8, 0.9 - 33.88 + 0.5, 6.9 - 8.701 + 0.5}, 1e-4);
}

TEST(LinearRegressor, MultipleTargetsNoIntercept) {
  Node n("LinearRegressor", 1);
  n.floats("coefficients", {1, 2, 3, 4, 5, 6}).i("targets", 2);
  auto out = run(*make(n), Tensor::floats({2, 3}, {1, 0, 0, 1, 1, 1}), 1);
  EXPECT_EQ(out[0].shape, (std::vector<int64_t>{2, 2}));
  expect_near(out[0].f, {1, 4, 6, 15}, 1e-6);
}

TEST(LinearRegressor, PostTransforms) {
  {
    Node n("LinearRegressor", 1);
    n.floats("coefficients", {1}).floats("intercepts", {0}).s("post_transform", "LOGISTIC");
    expect_near(run(*make(n), Tensor::floats({2, 1}, {0.7f, -3.f}), 1)[0].f, {sigmoid(0.7), sigmoid(-3)}, 1e-6);
  }
  {
    Node n("LinearRegressor", 1);
    n.floats("coefficients", {1}).s("post_transform", "PROBIT");
    expect_near(run(*make(n), Tensor::floats({1, 1}, {0.8f}), 1)[0].f, {probit(0.8)}, 5e-3);
  }
  {
    Node n("LinearRegressor", 1);
    n.floats("coefficients", {1, 2}).i("targets", 2).s("post_transform", "SOFTMAX");
    const double e1 = std::exp(1.0), e2 = std::exp(2.0);
    expect_near(run(*make(n), Tensor::floats({1, 1}, {1.f}), 1)[0].f, {e1 / (e1 + e2), e2 / (e1 + e2)}, 1e-6);
  }
  {
    Node n("LinearRegressor", 1);
    n.floats("coefficients", {0, 2}).i("targets", 2).s("post_transform", "SOFTMAX_ZERO");
    expect_near(run(*make(n), Tensor::floats({1, 1}, {1.f}), 1)[0].f, {0.0, 1.0}, 1e-6);
  }
  {
    Node n("LinearRegressor", 1);
    n.floats("coefficients", {1, -1}).i("targets", 2).s("post_transform", "LOGISTIC");
    expect_near(run(*make(n), Tensor::floats({1, 1}, {2.f}), 1)[0].f, {sigmoid(2), sigmoid(-2)}, 1e-6);
  }
}

TEST(LinearRegressor, DoubleAndInt64Inputs) {
  Node n("LinearRegressor", 1);
  n.floats("coefficients", {2, 3}).floats("intercepts", {1});
  expect_near(run(*make(n), Tensor::doubles({1, 2}, {1.5, 2}), 1)[0].f, {10}, 1e-6);
  expect_near(run(*make(n), Tensor::int64s({1, 2}, {1, 2}), 1)[0].f, {9}, 1e-6);
  expect_near(run(*make(n), Tensor::floats({2}, {1, 2}), 1)[0].f, {9}, 1e-6);
}

TEST(LinearRegressor, Errors) {
  expect_error([] { make(Node("LinearRegressor", 1)); }, ErrorCode::InvalidModel, "coefficients");
  {
    Node n("LinearRegressor", 1);
    n.floats("coefficients", {1, 2, 3}).i("targets", 2);
    expect_error([&] { make(n); }, ErrorCode::InvalidModel, "3 coefficients do not split into 2 targets");
  }
  {
    Node n("LinearRegressor", 1);
    n.floats("coefficients", {1, 2}).i("targets", 0);
    expect_error([&] { make(n); }, ErrorCode::InvalidModel, "targets is 0");
  }
  {
    Node n("LinearRegressor", 1);
    n.floats("coefficients", {1, 2}).floats("intercepts", {1, 2});
    expect_error([&] { make(n); }, ErrorCode::InvalidModel, "2 intercepts for 1 targets");
  }
  {
    Node n("LinearRegressor", 1);
    n.floats("coefficients", {1, 2}).s("post_transform", "BOGUS");
    expect_error([&] { make(n); }, ErrorCode::UnsupportedOperator, "BOGUS");
  }
  {
    Node n("LinearRegressor", 1);
    n.floats("coefficients", {1, 2}).s("post_transform", "SOFTMAX");
    expect_error([&] { make(n); }, ErrorCode::UnsupportedOperator, "single target");
  }
  Node n("LinearRegressor", 1);
  n.floats("coefficients", {1, 2});
  auto k = make(n);
  expect_error([&] { run(*k, Tensor::floats({1, 3}, {1, 2, 3}), 1); }, ErrorCode::InvalidInput,
               "input has 3 features per row; the model has coefficients for 2");
  expect_error([&] { run(*k, Tensor::strings({1, 2}, {"1", "2"}), 1); }, ErrorCode::InvalidInput, "string");
}

}  // namespace
