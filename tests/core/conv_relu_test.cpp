// A Relu that alone reads a Conv's output is folded into the Conv (Kernel::fold_relu): the direct
// 1-D path applies it in registers before the store, the other paths over the result. Checked bit
// for bit against the same graph where the Conv's result is also a graph output (no folding, the
// Relu runs as its own node), for every tile height of the direct path, a tail of positions, NaN
// inputs (ONNX's Relu passes NaN through), 2-D and double convolutions.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
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

struct ConvRelu {
  int64_t channels = 3, outputs = 25;  // 25 = tiles of 12, 6, 4, 2 and 1 channels
  std::vector<int64_t> spatial = {45};  // 45 positions: a tail past the 32- and 16-wide tiles
  int64_t kernel = 3;
  bool use_double = false;
  bool conv_output_too = false;  // the Conv's result is also a graph output: no folding

  std::shared_ptr<const flock::Model> load() const {
    const int elem = use_double ? onnx::TensorProto::DOUBLE : onnx::TensorProto::FLOAT;
    Graph g(13, 7);
    std::vector<int64_t> in_dims = {-1, channels}, w_dims = {outputs, channels}, pads;
    for (int64_t s : spatial) {
      in_dims.push_back(s);
      w_dims.push_back(kernel);
      pads.push_back(kernel / 2);
    }
    const std::vector<int64_t> begins = pads;
    pads.insert(pads.end(), begins.begin(), begins.end());
    g.input("x", in_dims, elem);
    g.weights("w", w_dims, elem);
    g.weights("b", {outputs}, elem);
    Graph::attr(g.node("Conv", {"x", "w", "b"}, {"h"}), "pads", pads);
    g.node("Relu", {"h"}, {"y"});
    const int rank = static_cast<int>(in_dims.size());
    g.output("y", rank, elem);
    if (conv_output_too) g.output("h", rank, elem);
    return g.load();
  }
};

Tensor input(const ConvRelu& c, int64_t rows) {
  std::vector<int64_t> shape = {rows, c.channels};
  int64_t n = rows * c.channels;
  for (int64_t s : c.spatial) {
    shape.push_back(s);
    n *= s;
  }
  std::mt19937 rng(static_cast<uint32_t>(rows));
  std::normal_distribution<double> dist(0.0, 1.0);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& d : v) d = dist(rng);
  v[5] = std::numeric_limits<double>::quiet_NaN();  // sample 0: the windows over it give NaN
  if (c.use_double) return Tensor::doubles(shape, v);
  std::vector<float> f(v.begin(), v.end());
  return Tensor::floats(shape, f);
}

void check(ConvRelu c) {
  auto folded = c.load();
  c.conv_output_too = true;
  auto separate = c.load();
  for (int64_t rows : {1, 2, 9}) {
    Tensor x = input(c, rows);
    auto got = folded->run_tensors({x});
    auto want = separate->run_tensors({x});
    ASSERT_EQ(got.size(), 1u);
    ASSERT_EQ(got[0].shape, want[0].shape);
    ASSERT_EQ(got[0].type, want[0].type);
    const size_t n = static_cast<size_t>(got[0].numel());
    const size_t width = c.use_double ? sizeof(double) : sizeof(float);
    const char* g = c.use_double ? reinterpret_cast<const char*>(got[0].d.data()) : reinterpret_cast<const char*>(got[0].f.data());
    const char* w = c.use_double ? reinterpret_cast<const char*>(want[0].d.data()) : reinterpret_cast<const char*>(want[0].f.data());
    size_t nans = 0, zeros = 0;
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(std::memcmp(g + i * width, w + i * width, width), 0) << "rows " << rows << " element " << i;
      const double v = c.use_double ? got[0].d[i] : got[0].f[i];
      nans += std::isnan(v);
      zeros += v == 0.0;
    }
    EXPECT_GT(nans, 0u);   // NaN passed through the folded Relu
    EXPECT_GT(zeros, 0u);  // and negative values were cut
  }
}

TEST(ConvRelu, Direct1DFoldedEqualsSeparateRelu) { check(ConvRelu{}); }

TEST(ConvRelu, Direct1DWideKernelAndFewChannels) {
  ConvRelu c;
  c.outputs = 5;
  c.kernel = 7;
  c.spatial = {100};
  check(c);
}

TEST(ConvRelu, TwoDimensionalFoldedEqualsSeparateRelu) {
  ConvRelu c;
  c.spatial = {9, 11};
  c.outputs = 8;
  check(c);
}

TEST(ConvRelu, DoubleFoldedEqualsSeparateRelu) {
  ConvRelu c;
  c.use_double = true;
  check(c);
}

}  // namespace
