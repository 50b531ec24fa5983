// A large batch of a graph that keeps rows apart runs as chunks of 256 rows (Plan::row_chunk,
// row_chunks.cpp): the result is the one of running the same rows in batches of the chunks' sizes,
// bit for bit, and close to running each row alone. Graphs that mix rows (a mean over the batch,
// a Gram matrix, a constant with a row per batch row, Flatten at axis 0, an If reading the rows
// from the outer scope) run whole: their results are checked against a direct computation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "flock/model.hpp"
#include "flock/onnx.hpp"
#include "flock/tensor.hpp"
#include "onnx_graph_builder.hpp"

namespace {

using flock::Tensor;
using flock::testing::Graph;

constexpr int64_t kChunk = 256;

Tensor random_rows(int64_t rows, std::vector<int64_t> row_shape, uint32_t seed) {
  std::vector<int64_t> shape = {rows};
  int64_t n = rows;
  for (int64_t d : row_shape) {
    shape.push_back(d);
    n *= d;
  }
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& f : v) f = dist(rng);
  return Tensor::floats(shape, v);
}

Tensor rows_of(const Tensor& t, int64_t r0, int64_t n) {
  std::vector<int64_t> shape = t.shape;
  const int64_t width = t.numel() / t.shape[0];
  shape[0] = n;
  return Tensor::floats(shape, std::vector<float>(t.f.begin() + r0 * width, t.f.begin() + (r0 + n) * width));
}

// The chunked run of `rows` rows equals the runs of its chunks one by one (bit for bit), and each
// row run alone (within a float tolerance).
void expect_chunked_like_pieces(const Graph& graph, std::vector<int64_t> row_shape, int64_t rows) {
  auto model = graph.load();
  const Tensor x = random_rows(rows, row_shape, 5);
  const auto whole = model->run_tensors({x});
  for (size_t k = 0; k < whole.size(); ++k) ASSERT_EQ(whole[k].shape[0], rows) << "output " << k;
  for (int64_t r0 = 0; r0 < rows; r0 += kChunk) {
    const int64_t n = std::min(kChunk, rows - r0);
    const auto piece = model->run_tensors({rows_of(x, r0, n)});
    for (size_t k = 0; k < whole.size(); ++k) {
      ASSERT_EQ(piece[k].type, whole[k].type);
      const int64_t width = piece[k].numel() / n;
      if (whole[k].type == flock::ElemType::Float) {
        ASSERT_EQ(std::memcmp(piece[k].f.data(), whole[k].f.data() + r0 * width, sizeof(float) * n * width), 0)
            << "output " << k << " rows from " << r0;
      } else {
        ASSERT_TRUE(std::equal(piece[k].i.begin(), piece[k].i.end(), whole[k].i.begin() + r0 * width));
      }
    }
  }
  for (int64_t r : {int64_t(0), int64_t(255), int64_t(256), rows - 1}) {
    const auto one = model->run_tensors({rows_of(x, r, 1)});
    const int64_t width = one[0].numel();
    for (int64_t j = 0; j < width; ++j)
      ASSERT_NEAR(one[0].f[j], whole[0].f[r * width + j], 1e-5 * (1 + std::abs(one[0].f[j]))) << "row " << r;
  }
}

TEST(RowChunks, MlpWithProbabilitiesAndLabels) {
  Graph g;
  g.input("x", {-1, 28});
  g.weights("w1", {64, 28});
  g.weights("b1", {64});
  g.weights("w2", {3, 64});
  g.weights("b2", {1, 3});
  Graph::attr(g.node("Gemm", {"x", "w1", "b1"}, {"h"}), "transB", 1);
  g.node("Relu", {"h"}, {"r"});
  Graph::attr(g.node("Gemm", {"r", "w2", "b2"}, {"s"}), "transB", 1);
  g.node("Softmax", {"s"}, {"p"});
  auto* am = g.node("ArgMax", {"p"}, {"label"});
  Graph::attr(am, "axis", 1);
  Graph::attr(am, "keepdims", 0);
  g.output("p", 2);
  g.output("label", 1, onnx::TensorProto::INT64);
  expect_chunked_like_pieces(g, {28}, 1000);
}

TEST(RowChunks, Cnn1d) {
  Graph g;
  g.input("x", {-1, 64});
  g.ints("axes", {1});
  g.node("Unsqueeze", {"x", "axes"}, {"u"});
  g.weights("wc", {8, 1, 3});
  g.weights("bc", {8});
  Graph::attr(g.node("Conv", {"u", "wc", "bc"}, {"c"}), "pads", std::vector<int64_t>{1, 1});
  g.node("Relu", {"c"}, {"r"});
  Graph::attr(g.node("MaxPool", {"r"}, {"m"}), "kernel_shape", std::vector<int64_t>{2});
  g.node("GlobalAveragePool", {"m"}, {"gp"});
  g.node("Flatten", {"gp"}, {"f"});
  g.weights("wo", {8, 1});
  g.node("MatMul", {"f", "wo"}, {"y"});
  g.output("y", 2);
  expect_chunked_like_pieces(g, {64}, 700);
}

// A batch of 1000 rows through a graph that mixes them gives what the whole batch should.
TEST(RowChunks, CenteringByTheBatchMeanRunsWhole) {
  Graph g;
  g.input("x", {-1, 4});
  auto* mean = g.node("ReduceMean", {"x"}, {"mu"});
  Graph::attr(mean, "axes", std::vector<int64_t>{0});
  g.node("Sub", {"x", "mu"}, {"y"});
  g.output("y", 2);
  auto model = g.load();
  const Tensor x = random_rows(1000, {4}, 9);
  const auto y = model->run_tensors({x})[0];
  for (int j = 0; j < 4; ++j) {
    double mu = 0;
    for (int r = 0; r < 1000; ++r) mu += x.f[r * 4 + j];
    mu /= 1000;
    for (int r = 0; r < 1000; r += 97) ASSERT_NEAR(y.f[r * 4 + j], x.f[r * 4 + j] - mu, 1e-5);
  }
}

TEST(RowChunks, GramMatrixRunsWhole) {
  Graph g;
  g.input("x", {-1, 3});
  Graph::attr(g.node("Transpose", {"x"}, {"t"}), "perm", std::vector<int64_t>{1, 0});
  g.node("MatMul", {"t", "x"}, {"y"});
  g.output("y", 2);
  const Tensor x = random_rows(600, {3}, 3);
  const auto y = g.load()->run_tensors({x})[0];
  ASSERT_EQ(y.shape, (std::vector<int64_t>{3, 3}));
  double s = 0;
  for (int r = 0; r < 600; ++r) s += double(x.f[r * 3]) * x.f[r * 3 + 1];
  EXPECT_NEAR(y.f[1], s, 1e-3);
}

TEST(RowChunks, AConstantWithARowPerBatchRowRunsWhole) {
  Graph g(13);
  g.input("x", {-1, 2});
  g.weights("per_row", {600, 2});
  g.node("Add", {"x", "per_row"}, {"y"});
  g.output("y", 2);
  const Tensor x = random_rows(600, {2}, 4);
  auto model = g.load();
  const auto y = model->run_tensors({x})[0];
  ASSERT_EQ(y.shape, (std::vector<int64_t>{600, 2}));
  const auto zero = model->run_tensors({Tensor::floats({600, 2}, std::vector<float>(1200, 0.0f))})[0];
  for (int i = 0; i < 1200; i += 7) ASSERT_FLOAT_EQ(y.f[i], x.f[i] + zero.f[i]);
}

TEST(RowChunks, FlattenAtAxisZeroAndRowsThroughReshapeRunWhole) {
  Graph g;
  g.input("x", {-1, 2});
  Graph::attr(g.node("Flatten", {"x"}, {"f"}), "axis", 0);
  g.output("f", 2);
  g.ints("shape", {-1});
  g.node("Reshape", {"x", "shape"}, {"r"});
  g.output("r", 1);
  const Tensor x = random_rows(700, {2}, 8);
  const auto out = g.load()->run_tensors({x});
  ASSERT_EQ(out[0].shape, (std::vector<int64_t>{1, 1400}));
  ASSERT_EQ(out[1].shape, (std::vector<int64_t>{1400}));
  EXPECT_EQ(out[0].f, x.f);
  EXPECT_EQ(out[1].f, x.f);
}

}  // namespace
