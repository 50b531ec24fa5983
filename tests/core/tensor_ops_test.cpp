// Tests for the shape, indexing and reduction kernels (core/src/kernels/tensor_ops.cpp): validation
// at compile time, precise errors at run time, and hand-computed cases. The ONNX backend node tests
// (flock_onnx_conformance) cover the rest.
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

using flock::testing::Node;
using flock::testing::expect_error;

std::unique_ptr<Kernel> make(const Node& n, int64_t opset = 17) { return flock::testing::make_kernel(n, opset); }
std::vector<Tensor> run(const Kernel& k, std::vector<const Tensor*> in, size_t n_out = 1) {
  return flock::testing::run_kernel(k, std::move(in), n_out);
}
template <typename T>
void expect_near(const std::vector<T>& got, const std::vector<double>& want, double tol = 1e-6) {
  flock::testing::expect_all_near(got, want, tol);
}

Tensor run1(const Kernel& k, std::vector<const Tensor*> in) { return run(k, std::move(in))[0]; }

Tensor ints(std::vector<int64_t> v) {
  const int64_t n = static_cast<int64_t>(v.size());
  return Tensor::int64s({n}, std::move(v));
}

Tensor scalar(int64_t v) { return Tensor::int64s({}, {v}); }

// [[0, 1, 2], [3, 4, 5]]
Tensor iota23() { return Tensor::floats({2, 3}, {0, 1, 2, 3, 4, 5}); }

using V = std::vector<int64_t>;

// ---------------------------------------------------------------------------------------------------
// Compile-time validation

TEST(TensorOpsCompile, RejectsBadAttributes) {
  expect_error([] { make(Node("Transpose").ints("perm", {0, 0, 1})); }, ErrorCode::InvalidModel,
               "Transpose: attribute 'perm' [0, 0, 1] is not a permutation");
  expect_error([] { make(Node("Transpose").ints("perm", {0, 3})); }, ErrorCode::InvalidModel, "not a permutation");
  expect_error([] { make(Node("Split", 1, 2).ints("split", {1, 2, 3}), 11); }, ErrorCode::InvalidModel,
               "Split: attribute 'split' has 3 sizes for 2 outputs");
  expect_error([] { make(Node("Split", 1, 2).ints("split", {-1, 2}), 11); }, ErrorCode::InvalidModel,
               "negative size");
  expect_error([] { make(Node("Split", 1, 2).ints("split", {1, 2}), 13); }, ErrorCode::InvalidModel,
               "attribute 'split' became an input in opset 13");
  expect_error([] { make(Node("Pad", 2).s("mode", "mirror")); }, ErrorCode::InvalidModel,
               "Pad: mode 'mirror' is not one of");
  expect_error([] { make(Node("Pad", 1).ints("pads", {1, 2, 3}), 9); }, ErrorCode::InvalidModel,
               "odd number of values");
  expect_error([] { make(Node("Pad", 1), 9); }, ErrorCode::InvalidModel, "lacks required attribute 'pads'");
  expect_error([] { make(Node("Squeeze").ints("axes", {0}), 13); }, ErrorCode::InvalidModel,
               "Squeeze: attribute 'axes' became an input in opset 13");
  expect_error([] { make(Node("Unsqueeze"), 11); }, ErrorCode::InvalidModel, "lacks required attribute 'axes'");
  expect_error([] { make(Node("Unsqueeze", 1), 13); }, ErrorCode::InvalidModel, "needs 2 inputs");
  expect_error([] { make(Node("ReduceMean").ints("axes", {1, 1}), 13); }, ErrorCode::InvalidModel,
               "ReduceMean: attribute 'axes' [1, 1] repeats 1");
  expect_error([] { make(Node("ReduceSum").ints("axes", {1}), 13); }, ErrorCode::InvalidModel,
               "ReduceSum: attribute 'axes' became an input in opset 13");
  expect_error([] { make(Node("ReduceMax", 2), 13); }, ErrorCode::InvalidModel, "the 'axes' input needs opset 18");
  expect_error([] { make(Node("Slice"), 9); }, ErrorCode::InvalidModel, "lacks required attributes 'starts' and 'ends'");
  expect_error([] { make(Node("Slice").ints("starts", {0, 1}).ints("ends", {2}), 9); }, ErrorCode::InvalidModel,
               "'starts' has 2 values, 'ends' 1");
  expect_error([] { make(Node("Slice", 2), 13); }, ErrorCode::InvalidModel, "needs 3 inputs");
  expect_error([] { make(Node("Shape").i("start", 1), 13); }, ErrorCode::InvalidModel, "need opset 15");
  expect_error([] { make(Node("TopK").i("k", -1), 9); }, ErrorCode::InvalidModel, "attribute 'k' is negative");
  expect_error([] { make(Node("TopK"), 9); }, ErrorCode::InvalidModel, "lacks required attribute 'k'");
  expect_error([] { make(Node("Gather", 1)); }, ErrorCode::InvalidModel, "Gather: needs 2 inputs");

  onnx::TensorProto two;
  two.set_data_type(onnx::TensorProto::FLOAT);
  two.add_dims(2);
  two.add_float_data(1);
  two.add_float_data(2);
  expect_error([&] { make(Node("ConstantOfShape").tensor("value", two)); }, ErrorCode::InvalidModel,
               "attribute 'value' holds 2 values");
  expect_error([] { make(Node("Resize").s("mode", "area")); }, ErrorCode::InvalidModel, "mode 'area'");
  expect_error([] { make(Node("Resize").s("nearest_mode", "up")); }, ErrorCode::InvalidModel, "nearest_mode 'up'");
}

TEST(TensorOpsCompile, RejectsUnsupportedForms) {
  expect_error([] { make(Node("Pad", 2).s("mode", "wrap")); }, ErrorCode::UnsupportedOperator, "mode 'wrap'");
  expect_error([] { make(Node("Tile", 3), 1); }, ErrorCode::UnsupportedOperator, "opset 6 or later");
  expect_error([] { make(Node("Resize", 2), 10); }, ErrorCode::UnsupportedOperator, "opset 11 or later");
  expect_error([] { make(Node("Resize", 4).i("antialias", 1)); }, ErrorCode::UnsupportedOperator, "antialias");
  expect_error([] { make(Node("Resize", 4).s("coordinate_transformation_mode", "half_pixel_symmetric")); },
               ErrorCode::UnsupportedOperator, "half_pixel_symmetric");
}

// ---------------------------------------------------------------------------------------------------
// Gather / GatherElements

TEST(TensorOpsGather, AxisAndNegativeIndices) {
  const Tensor x = iota23();
  const Tensor idx = Tensor::int64s({2, 2}, {-1, 0, 1, -3});
  Tensor y = run1(*make(Node("Gather", 2).i("axis", 1)), {&x, &idx});
  EXPECT_EQ(y.shape, (V{2, 2, 2}));
  EXPECT_EQ(y.f, (std::vector<float>{2, 0, 1, 0, 5, 3, 4, 3}));
  const Tensor s = Tensor::strings({3}, {"a", "b", "c"});
  const Tensor one = scalar(-2);
  Tensor ys = run1(*make(Node("Gather", 2)), {&s, &one});
  EXPECT_TRUE(ys.shape.empty());
  EXPECT_EQ(ys.s, (std::vector<std::string>{"b"}));
}

TEST(TensorOpsGather, OutOfRangeIndex) {
  const Tensor x = iota23();
  const Tensor idx = ints({0, 3});
  expect_error([&] { run1(*make(Node("Gather", 2).i("axis", 1)), {&x, &idx}); }, ErrorCode::InvalidInput,
               "Gather: index 3 is out of range for axis 1 of size 3");
  const Tensor neg = ints({-4});
  expect_error([&] { run1(*make(Node("Gather", 2).i("axis", 1)), {&x, &neg}); }, ErrorCode::InvalidInput,
               "index -4 is out of range");
  expect_error([&] { run1(*make(Node("Gather", 2).i("axis", 2)), {&x, &idx}); }, ErrorCode::InvalidInput,
               "axis 2 is out of range for an input of rank 2");
  const Tensor fidx = Tensor::floats({1}, {0});
  expect_error([&] { run1(*make(Node("Gather", 2)), {&x, &fidx}); }, ErrorCode::UnsupportedOperator,
               "indices have element type float");
}

TEST(TensorOpsGatherElements, Axis1) {
  const Tensor x = iota23();
  const Tensor idx = Tensor::int64s({2, 2}, {2, -3, 1, 1});
  Tensor y = run1(*make(Node("GatherElements", 2).i("axis", 1)), {&x, &idx});
  EXPECT_EQ(y.shape, (V{2, 2}));
  EXPECT_EQ(y.f, (std::vector<float>{2, 0, 4, 4}));
  const Tensor bad = Tensor::int64s({1, 1}, {5});
  expect_error([&] { run1(*make(Node("GatherElements", 2).i("axis", 1)), {&x, &bad}); }, ErrorCode::InvalidInput,
               "GatherElements: index 5 is out of range for axis 1 of size 3");
  const Tensor wide = Tensor::int64s({3, 1}, {0, 0, 0});
  expect_error([&] { run1(*make(Node("GatherElements", 2).i("axis", 1)), {&x, &wide}); }, ErrorCode::InvalidInput,
               "exceeds data shape");
}

// ---------------------------------------------------------------------------------------------------
// Split / Slice

TEST(TensorOpsSplit, FormsByOpset) {
  const Tensor x = Tensor::floats({7}, {0, 1, 2, 3, 4, 5, 6});
  auto a = run(*make(Node("Split", 1, 2).ints("split", {2, 5}), 11), {&x}, 2);
  EXPECT_EQ(a[0].f, (std::vector<float>{0, 1}));
  EXPECT_EQ(a[1].shape, (V{5}));
  const Tensor sizes = ints({4, 0, 3});
  auto b = run(*make(Node("Split", 2, 3), 13), {&x, &sizes}, 3);
  EXPECT_EQ(b[1].shape, (V{0}));
  EXPECT_EQ(b[2].f, (std::vector<float>{4, 5, 6}));
  auto c = run(*make(Node("Split", 1, 3).i("num_outputs", 3), 18), {&x}, 3);  // ceil(7/3) = 3: 3, 3, 1
  EXPECT_EQ(c[0].shape, (V{3}));
  EXPECT_EQ(c[2].f, (std::vector<float>{6}));
  expect_error([&] { run(*make(Node("Split", 1, 2), 13), {&x}, 2); }, ErrorCode::InvalidInput,
               "Split: axis 0 of size 7 does not split into 2 equal parts");
  const Tensor wrong = ints({3, 3});
  expect_error([&] { run(*make(Node("Split", 2, 2), 13), {&x, &wrong}, 2); }, ErrorCode::InvalidInput,
               "split sizes [3, 3] add up to 6, but axis 0 has size 7");
}

TEST(TensorOpsSlice, NegativeStepsAndClamping) {
  const Tensor x = Tensor::floats({2, 5}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  const Tensor starts = ints({100}), ends = ints({-100}), axes = ints({-1}), steps = ints({-2});
  Tensor y = run1(*make(Node("Slice", 5)), {&x, &starts, &ends, &axes, &steps});
  EXPECT_EQ(y.shape, (V{2, 3}));
  EXPECT_EQ(y.f, (std::vector<float>{4, 2, 0, 9, 7, 5}));
  const Tensor s2 = ints({1, 1}), e2 = ints({std::numeric_limits<int64_t>::max(), 3});
  Tensor z = run1(*make(Node("Slice", 3)), {&x, &s2, &e2});
  EXPECT_EQ(z.shape, (V{1, 2}));
  EXPECT_EQ(z.f, (std::vector<float>{6, 7}));
  Tensor legacy = run1(*make(Node("Slice").ints("starts", {-2}).ints("ends", {1000}).ints("axes", {1}), 9), {&x});
  EXPECT_EQ(legacy.f, (std::vector<float>{3, 4, 8, 9}));
  const Tensor zero = ints({0});
  expect_error([&] { run1(*make(Node("Slice", 5)), {&x, &starts, &ends, &axes, &zero}); }, ErrorCode::InvalidInput,
               "Slice: step for axis 1 is 0");
  const Tensor dup = ints({1, -1}), two = ints({0, 0});
  expect_error([&] { run1(*make(Node("Slice", 4)), {&x, &two, &two, &dup}); }, ErrorCode::InvalidInput,
               "name axis 1 twice");
}

// ---------------------------------------------------------------------------------------------------
// Transpose, Squeeze, Unsqueeze, Shape, Size

TEST(TensorOpsShape, TransposeSqueezeUnsqueeze) {
  const Tensor x = iota23();
  Tensor t = run1(*make(Node("Transpose")), {&x});
  EXPECT_EQ(t.shape, (V{3, 2}));
  EXPECT_EQ(t.f, (std::vector<float>{0, 3, 1, 4, 2, 5}));
  expect_error([&] { run1(*make(Node("Transpose").ints("perm", {0, 2, 1})), {&x}); }, ErrorCode::InvalidInput,
               "perm [0, 2, 1] does not fit an input of rank 2");

  const Tensor u_axes = ints({-1, 0});
  Tensor u = run1(*make(Node("Unsqueeze", 2)), {&x, &u_axes});
  EXPECT_EQ(u.shape, (V{1, 2, 3, 1}));
  Tensor u11 = run1(*make(Node("Unsqueeze").ints("axes", {1}), 11), {&x});
  EXPECT_EQ(u11.shape, (V{2, 1, 3}));
  const Tensor dup = ints({0, -4});
  expect_error([&] { run1(*make(Node("Unsqueeze", 2)), {&x, &dup}); }, ErrorCode::InvalidInput, "name axis 0 twice");

  Tensor sq = run1(*make(Node("Squeeze")), {&u});
  EXPECT_EQ(sq.shape, (V{2, 3}));
  EXPECT_EQ(sq.f, x.f);
  const Tensor bad = ints({1});
  expect_error([&] { run1(*make(Node("Squeeze", 2)), {&u, &bad}); }, ErrorCode::InvalidInput,
               "Squeeze: cannot squeeze axis 1 of size 2");

  Tensor s = run1(*make(Node("Shape").i("start", -3).i("end", -1), 15), {&u});
  EXPECT_EQ(s.i, (V{2, 3}));
  Tensor all = run1(*make(Node("Shape"), 13), {&u});
  EXPECT_EQ(all.shape, (V{4}));
  EXPECT_EQ(all.i, (V{1, 2, 3, 1}));
  Tensor n = run1(*make(Node("Size")), {&u});
  EXPECT_TRUE(n.shape.empty());
  EXPECT_EQ(n.i, (V{6}));
}

// ---------------------------------------------------------------------------------------------------
// ConstantOfShape, Expand, Tile, Range

TEST(TensorOpsGenerate, ConstantOfShapeExpandTile) {
  onnx::TensorProto seven;
  seven.set_data_type(onnx::TensorProto::INT64);
  seven.add_dims(1);
  seven.add_int64_data(7);
  const Tensor shape = ints({2, 2});
  Tensor c = run1(*make(Node("ConstantOfShape").tensor("value", seven)), {&shape});
  EXPECT_EQ(c.type, ElemType::Int64);
  EXPECT_EQ(c.i, (V{7, 7, 7, 7}));
  Tensor z = run1(*make(Node("ConstantOfShape")), {&shape});
  EXPECT_EQ(z.type, ElemType::Float);
  EXPECT_EQ(z.f, (std::vector<float>{0, 0, 0, 0}));
  const Tensor neg = ints({2, -1});
  expect_error([&] { run1(*make(Node("ConstantOfShape")), {&neg}); }, ErrorCode::InvalidInput,
               "output shape [2, -1] has a negative dimension");
  const Tensor huge = ints({int64_t(1) << 20, int64_t(1) << 20});
  expect_error([&] { run1(*make(Node("ConstantOfShape")), {&huge}); }, ErrorCode::LimitExceeded, "holds more than");

  const Tensor col = Tensor::floats({2, 1}, {1, 2});
  const Tensor to = ints({2, 1, 3});
  Tensor e = run1(*make(Node("Expand", 2)), {&col, &to});
  EXPECT_EQ(e.shape, (V{2, 2, 3}));
  EXPECT_EQ(e.f, (std::vector<float>{1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2}));
  const Tensor bad = ints({3, 3});
  expect_error([&] { run1(*make(Node("Expand", 2)), {&col, &bad}); }, ErrorCode::InvalidInput,
               "Expand: input shape [2, 1] does not broadcast with shape [3, 3]");

  const Tensor reps = ints({2, 2});
  Tensor t = run1(*make(Node("Tile", 2)), {&col, &reps});
  EXPECT_EQ(t.shape, (V{4, 2}));
  EXPECT_EQ(t.f, (std::vector<float>{1, 1, 2, 2, 1, 1, 2, 2}));
  const Tensor short_reps = ints({2});
  expect_error([&] { run1(*make(Node("Tile", 2)), {&col, &short_reps}); }, ErrorCode::InvalidInput,
               "repeats [2] has 1 values for an input of rank 2");
}

TEST(TensorOpsGenerate, Range) {
  const Tensor a = scalar(10), b = scalar(1), d = scalar(-3);
  Tensor r = run1(*make(Node("Range", 3)), {&a, &b, &d});
  EXPECT_EQ(r.i, (V{10, 7, 4}));
  const Tensor fa = Tensor::floats({}, {0.5f}), fb = Tensor::floats({}, {2.0f}), fd = Tensor::floats({}, {0.5f});
  Tensor rf = run1(*make(Node("Range", 3)), {&fa, &fb, &fd});
  EXPECT_EQ(rf.f, (std::vector<float>{0.5f, 1.0f, 1.5f}));
  const Tensor zero = scalar(0);
  expect_error([&] { run1(*make(Node("Range", 3)), {&a, &b, &zero}); }, ErrorCode::InvalidInput, "Range: delta is 0");
  expect_error([&] { run1(*make(Node("Range", 3)), {&a, &fb, &d}); }, ErrorCode::InvalidModel, "must match");
}

// ---------------------------------------------------------------------------------------------------
// TopK

TEST(TensorOpsTopK, TiesKeepTheLowerIndex) {
  const Tensor x = Tensor::floats({2, 4}, {3, 1, 3, 2, 0, 0, 5, 0});
  const Tensor k = ints({3});
  auto out = run(*make(Node("TopK", 2, 2)), {&x, &k}, 2);
  EXPECT_EQ(out[0].shape, (V{2, 3}));
  EXPECT_EQ(out[0].f, (std::vector<float>{3, 3, 2, 5, 0, 0}));
  EXPECT_EQ(out[1].i, (V{0, 2, 3, 2, 0, 1}));
  const Tensor one = ints({1});
  auto small = run(*make(Node("TopK", 2, 2).i("largest", 0).i("axis", 0)), {&x, &one}, 2);
  EXPECT_EQ(small[0].shape, (V{1, 4}));
  EXPECT_EQ(small[0].f, (std::vector<float>{0, 0, 3, 0}));
  EXPECT_EQ(small[1].i, (V{1, 1, 0, 1}));
}

TEST(TensorOpsTopK, SmallestAndErrors) {
  const Tensor x = Tensor::int64s({5}, {4, -1, 4, -1, 0});
  const Tensor k = ints({2});
  auto out = run(*make(Node("TopK", 2, 2).i("largest", 0)), {&x, &k}, 2);
  EXPECT_EQ(out[0].i, (V{-1, -1}));
  EXPECT_EQ(out[1].i, (V{1, 3}));
  auto legacy = run(*make(Node("TopK", 1, 2).i("k", 1), 9), {&x}, 2);
  EXPECT_EQ(legacy[0].i, (V{4}));
  EXPECT_EQ(legacy[1].i, (V{0}));
  const Tensor big = ints({6});
  expect_error([&] { run(*make(Node("TopK", 2, 2)), {&x, &big}, 2); }, ErrorCode::InvalidInput,
               "TopK: k = 6 is out of range for axis 0 of size 5");
  const Tensor s = Tensor::strings({1}, {"a"});
  expect_error([&] { run(*make(Node("TopK", 2, 2)), {&s, &k}, 2); }, ErrorCode::UnsupportedOperator,
               "element type string");
}

// ---------------------------------------------------------------------------------------------------
// Reduce family

TEST(TensorOpsReduce, HandComputed) {
  const Tensor x = iota23();
  Tensor mean = run1(*make(Node("ReduceMean").ints("axes", {1}).i("keepdims", 0)), {&x});
  EXPECT_EQ(mean.shape, (V{2}));
  expect_near(mean.f, {1, 4});
  const Tensor ax0 = ints({-2});
  Tensor sum = run1(*make(Node("ReduceSum", 2)), {&x, &ax0});
  EXPECT_EQ(sum.shape, (V{1, 3}));
  expect_near(sum.f, {3, 5, 7});
  Tensor all = run1(*make(Node("ReduceProd").i("keepdims", 0)), {&x});
  EXPECT_TRUE(all.shape.empty());
  expect_near(all.f, {0});
  Tensor l2 = run1(*make(Node("ReduceL2").ints("axes", {0})), {&x});
  expect_near(l2.f, {3, std::sqrt(17.0), std::sqrt(29.0)}, 1e-5);
  const Tensor big = Tensor::doubles({2}, {1000, 1000});
  Tensor lse = run1(*make(Node("ReduceLogSumExp").i("keepdims", 0)), {&big});
  expect_near(lse.d, {1000 + std::log(2.0)}, 1e-9);
  const Tensor empty = ints({});
  Tensor noop = run1(*make(Node("ReduceSum", 2).i("noop_with_empty_axes", 1)), {&x, &empty});
  EXPECT_EQ(noop.shape, x.shape);
  EXPECT_EQ(noop.f, x.f);
  const Tensor xi = Tensor::int64s({2, 2}, {-7, 2, 3, 4});
  Tensor imean = run1(*make(Node("ReduceMean").ints("axes", {1})), {&xi});
  EXPECT_EQ(imean.i, (V{-2, 3}));  // truncated like ONNX Runtime
  Tensor imax = run1(*make(Node("ReduceMax").ints("axes", {0}).i("keepdims", 0)), {&xi});
  EXPECT_EQ(imax.i, (V{3, 4}));
  const Tensor z = Tensor::floats({0, 2}, {});
  Tensor zmax = run1(*make(Node("ReduceMax").ints("axes", {0})), {&z});
  EXPECT_EQ(zmax.shape, (V{1, 2}));
  EXPECT_EQ(zmax.f[0], -std::numeric_limits<float>::infinity());
}

TEST(TensorOpsReduce, Errors) {
  const Tensor x = iota23();
  expect_error([&] { run1(*make(Node("ReduceMin").ints("axes", {2})), {&x}); }, ErrorCode::InvalidInput,
               "ReduceMin: axis 2 is out of range for an input of rank 2");
  const Tensor dup = ints({0, -2});
  expect_error([&] { run1(*make(Node("ReduceSum", 2)), {&x, &dup}); }, ErrorCode::InvalidInput, "name axis 0 twice");
  const Tensor s = Tensor::strings({1}, {"a"});
  expect_error([&] { run1(*make(Node("ReduceSum")), {&s}); }, ErrorCode::UnsupportedOperator,
               "ReduceSum: input 'data' has element type string");
}

// ---------------------------------------------------------------------------------------------------
// Pad

TEST(TensorOpsPad, Modes) {
  const Tensor x = Tensor::floats({1, 3}, {1, 2, 3});
  const Tensor pads = ints({0, 2, 0, 1});
  Tensor r = run1(*make(Node("Pad", 2).s("mode", "reflect")), {&x, &pads});
  EXPECT_EQ(r.shape, (V{1, 6}));
  EXPECT_EQ(r.f, (std::vector<float>{3, 2, 1, 2, 3, 2}));
  Tensor e = run1(*make(Node("Pad", 2).s("mode", "edge")), {&x, &pads});
  EXPECT_EQ(e.f, (std::vector<float>{1, 1, 1, 2, 3, 3}));
  const Tensor cv = Tensor::floats({}, {9});
  Tensor c = run1(*make(Node("Pad", 3)), {&x, &pads, &cv});
  EXPECT_EQ(c.f, (std::vector<float>{9, 9, 1, 2, 3, 9}));
  Tensor legacy = run1(*make(Node("Pad").ints("pads", {1, -1, 0, 0}).f("value", -1), 9), {&x});
  EXPECT_EQ(legacy.shape, (V{2, 2}));
  EXPECT_EQ(legacy.f, (std::vector<float>{-1, -1, 2, 3}));
}

TEST(TensorOpsPad, Errors) {
  const Tensor x = Tensor::floats({1, 3}, {1, 2, 3});
  const Tensor three = ints({0, 1, 0});
  expect_error([&] { run1(*make(Node("Pad", 2)), {&x, &three}); }, ErrorCode::InvalidInput,
               "Pad: pads [0, 1, 0] has 3 values; an input of rank 2 needs 4");
  const Tensor crop = ints({0, -2, 0, -2});
  expect_error([&] { run1(*make(Node("Pad", 2)), {&x, &crop}); }, ErrorCode::InvalidInput, "below zero");
  const Tensor empty = Tensor::floats({0, 3}, {});
  const Tensor p = ints({1, 0, 0, 0});
  expect_error([&] { run1(*make(Node("Pad", 2).s("mode", "edge")), {&empty, &p}); }, ErrorCode::InvalidInput,
               "cannot pad the empty axis 0 in edge mode");
  const Tensor dv = Tensor::doubles({}, {1});
  const Tensor p2 = ints({0, 0, 0, 0});
  expect_error([&] { run1(*make(Node("Pad", 3)), {&x, &p2, &dv}); }, ErrorCode::InvalidModel,
               "constant_value has element type double; data has float");
}

// ---------------------------------------------------------------------------------------------------
// OneHot, NonZero, CumSum

TEST(TensorOpsMisc, OneHot) {
  const Tensor idx = ints({0, -1, 5});
  const Tensor depth = scalar(3);
  const Tensor vals = Tensor::floats({2}, {0, 1});
  Tensor y = run1(*make(Node("OneHot", 3)), {&idx, &depth, &vals});
  EXPECT_EQ(y.shape, (V{3, 3}));
  EXPECT_EQ(y.f, (std::vector<float>{1, 0, 0, 0, 0, 1, 0, 0, 0}));
  Tensor y9 = run1(*make(Node("OneHot", 3).i("axis", 0), 9), {&idx, &depth, &vals});  // no wrap before opset 11
  EXPECT_EQ(y9.f, (std::vector<float>{1, 0, 0, 0, 0, 0, 0, 0, 0}));
  const Tensor bad_vals = Tensor::floats({3}, {0, 1, 2});
  expect_error([&] { run1(*make(Node("OneHot", 3)), {&idx, &depth, &bad_vals}); }, ErrorCode::InvalidInput,
               "values has shape [3]; expected [2]");
  const Tensor zero = scalar(0);
  expect_error([&] { run1(*make(Node("OneHot", 3)), {&idx, &zero, &vals}); }, ErrorCode::InvalidInput,
               "depth 0 is not a positive count");
}

TEST(TensorOpsMisc, NonZeroAndCumSum) {
  const Tensor x = Tensor::floats({2, 2}, {0, 3, 4, 0});
  Tensor nz = run1(*make(Node("NonZero")), {&x});
  EXPECT_EQ(nz.shape, (V{2, 2}));
  EXPECT_EQ(nz.i, (V{0, 1, 1, 0}));
  const Tensor s = Tensor::strings({3}, {"", "a", ""});
  EXPECT_EQ(run1(*make(Node("NonZero")), {&s}).i, (V{1}));

  const Tensor v = Tensor::int64s({4}, {1, 2, 3, 4});
  const Tensor axis = scalar(0);
  Tensor c = run1(*make(Node("CumSum", 2).i("exclusive", 1).i("reverse", 1)), {&v, &axis});
  EXPECT_EQ(c.i, (V{9, 7, 4, 0}));
  const Tensor bad_axis = scalar(1);
  expect_error([&] { run1(*make(Node("CumSum", 2)), {&v, &bad_axis}); }, ErrorCode::InvalidInput,
               "CumSum: axis 1 is out of range for an input of rank 1");
}

// ---------------------------------------------------------------------------------------------------
// Resize

TEST(TensorOpsResize, LinearAndNearest) {
  const Tensor x = Tensor::floats({1, 2}, {0, 1});
  const Tensor scales = Tensor::floats({2}, {1, 2});
  Tensor lin = run1(*make(Node("Resize", 3).s("mode", "linear")), {&x, nullptr, &scales});
  EXPECT_EQ(lin.shape, (V{1, 4}));
  expect_near(lin.f, {0, 0.25, 0.75, 1});
  const Tensor sizes = ints({1, 3});
  Tensor ac = run1(*make(Node("Resize", 4).s("mode", "linear").s("coordinate_transformation_mode", "align_corners")),
                   {&x, nullptr, nullptr, &sizes});
  expect_near(ac.f, {0, 0.5, 1});
  const Tensor xi = Tensor::int64s({3}, {10, 20, 30});
  const Tensor six = ints({6});
  Tensor near = run1(*make(Node("Resize", 4)), {&xi, nullptr, nullptr, &six});
  EXPECT_EQ(near.i, (V{10, 10, 20, 20, 30, 30}));
  expect_error([&] { run1(*make(Node("Resize", 4)), {&x, nullptr, &scales, &sizes}); }, ErrorCode::InvalidInput,
               "exactly one of 'scales' and 'sizes'");
  expect_error([&] { run1(*make(Node("Resize", 4).s("mode", "cubic")), {&xi, nullptr, nullptr, &six}); },
               ErrorCode::UnsupportedOperator, "cubic mode needs float or double input");
}

}  // namespace
