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

namespace {

using flock::Tensor;

struct ConvRelu {
  int64_t channels = 3, outputs = 25;  // 25 = tiles of 12, 6, 4, 2 and 1 channels
  std::vector<int64_t> spatial = {45};  // 45 positions: a tail past the 32- and 16-wide tiles
  int64_t kernel = 3;
  bool use_double = false;
  bool conv_output_too = false;  // the Conv's result is also a graph output: no folding

  onnx::ModelProto model() const {
    const int elem = use_double ? onnx::TensorProto::DOUBLE : onnx::TensorProto::FLOAT;
    onnx::ModelProto m;
    m.set_ir_version(8);
    auto* op = m.add_opset_import();
    op->set_domain("");
    op->set_version(13);
    auto* g = m.mutable_graph();
    g->set_name("conv_relu");
    auto value = [&](onnx::ValueInfoProto* v, const std::string& name, int64_t ch) {
      v->set_name(name);
      auto* tt = v->mutable_type()->mutable_tensor_type();
      tt->set_elem_type(elem);
      tt->mutable_shape()->add_dim()->set_dim_param("N");
      tt->mutable_shape()->add_dim()->set_dim_value(ch);
      for (int64_t s : spatial) tt->mutable_shape()->add_dim()->set_dim_value(s);
    };
    value(g->add_input(), "x", channels);
    std::mt19937 rng(7);
    std::normal_distribution<double> dist(0.0, 1.0);
    auto init = [&](const std::string& name, const std::vector<int64_t>& dims) {
      auto* t = g->add_initializer();
      t->set_name(name);
      t->set_data_type(elem);
      int64_t n = 1;
      for (int64_t d : dims) {
        t->add_dims(d);
        n *= d;
      }
      for (int64_t i = 0; i < n; ++i) {
        if (use_double) t->add_double_data(dist(rng));
        else t->add_float_data(static_cast<float>(dist(rng)));
      }
    };
    std::vector<int64_t> wdims = {outputs, channels};
    for (size_t i = 0; i < spatial.size(); ++i) wdims.push_back(kernel);
    init("w", wdims);
    init("b", {outputs});
    auto* conv = g->add_node();
    conv->set_op_type("Conv");
    conv->set_name("conv");
    conv->add_input("x");
    conv->add_input("w");
    conv->add_input("b");
    conv->add_output("h");
    auto* pads = conv->add_attribute();
    pads->set_name("pads");
    pads->set_type(onnx::AttributeProto::INTS);
    for (size_t i = 0; i < 2 * spatial.size(); ++i) pads->add_ints(kernel / 2);
    auto* relu = g->add_node();
    relu->set_op_type("Relu");
    relu->set_name("relu");
    relu->add_input("h");
    relu->add_output("y");
    value(g->add_output(), "y", outputs);
    if (conv_output_too) value(g->add_output(), "h", outputs);
    return m;
  }
};

std::shared_ptr<const flock::Model> load(const ConvRelu& c) {
  std::string bytes;
  c.model().SerializeToString(&bytes);
  return flock::Model::load(std::vector<uint8_t>(bytes.begin(), bytes.end()));
}

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
  auto folded = load(c);
  c.conv_output_too = true;
  auto separate = load(c);
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
