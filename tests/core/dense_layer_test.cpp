// Fully connected layers run as one oneDNN primitive (kernels/dense_layer.hpp): Gemm on constant
// weights, with the Relu that alone reads it folded in. Checked against a double-precision
// reference for every attribute combination the fusion accepts, for batch heights around the
// primitive's block (256 rows), and for the graphs where the Relu must not be folded.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "flock/model.hpp"
#include "flock/onnx.hpp"
#include "flock/tensor.hpp"

namespace {

using flock::Tensor;

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

struct Layer {
  int64_t k = 24, n = 40;
  bool trans_b = true;
  float alpha = 1.0f, beta = 1.0f;
  std::vector<int64_t> bias_dims = {40};  // empty: no C input
  bool relu = true;
  bool gemm_output_too = false;  // the Gemm's result is also a graph output (no folding)
  bool second_reader = false;    // the Gemm's result is also read by a Neg (no folding)

  std::vector<float> w, c;

  onnx::ModelProto model() {
    w = random_floats(static_cast<size_t>(k * n), 1);
    int64_t nc = 1;
    for (int64_t d : bias_dims) nc *= d;
    c = bias_dims.empty() ? std::vector<float>{} : random_floats(static_cast<size_t>(nc), 2);
    onnx::ModelProto m;
    m.set_ir_version(8);
    auto* op = m.add_opset_import();
    op->set_domain("");
    op->set_version(13);
    auto* g = m.mutable_graph();
    g->set_name("dense");
    auto* in = g->add_input();
    in->set_name("x");
    auto* tt = in->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(onnx::TensorProto::FLOAT);
    tt->mutable_shape()->add_dim()->set_dim_param("N");
    tt->mutable_shape()->add_dim()->set_dim_value(k);
    auto init = [&](const std::string& name, std::vector<int64_t> dims, const std::vector<float>& v) {
      auto* t = g->add_initializer();
      t->set_name(name);
      t->set_data_type(onnx::TensorProto::FLOAT);
      for (int64_t d : dims) t->add_dims(d);
      for (float f : v) t->add_float_data(f);
    };
    init("w", trans_b ? std::vector<int64_t>{n, k} : std::vector<int64_t>{k, n}, w);
    auto* gemm = g->add_node();
    gemm->set_op_type("Gemm");
    gemm->add_input("x");
    gemm->add_input("w");
    if (!bias_dims.empty()) {
      init("c", bias_dims, c);
      gemm->add_input("c");
    }
    gemm->add_output("h");
    auto attr_f = [&](const char* name, float v) {
      auto* a = gemm->add_attribute();
      a->set_name(name);
      a->set_type(onnx::AttributeProto::FLOAT);
      a->set_f(v);
    };
    attr_f("alpha", alpha);
    attr_f("beta", beta);
    auto* tb = gemm->add_attribute();
    tb->set_name("transB");
    tb->set_type(onnx::AttributeProto::INT);
    tb->set_i(trans_b ? 1 : 0);
    auto output = [&](const std::string& name) {
      auto* o = g->add_output();
      o->set_name(name);
      auto* ot = o->mutable_type()->mutable_tensor_type();
      ot->set_elem_type(onnx::TensorProto::FLOAT);
      ot->mutable_shape()->add_dim()->set_dim_param("N");
      ot->mutable_shape()->add_dim()->set_dim_value(n);
    };
    if (relu) {
      auto* r = g->add_node();
      r->set_op_type("Relu");
      r->add_input("h");
      r->add_output("y");
      output("y");
    }
    if (!relu || gemm_output_too) output("h");
    if (second_reader) {
      auto* neg = g->add_node();
      neg->set_op_type("Neg");
      neg->add_input("h");
      neg->add_output("z");
      output("z");
    }
    return m;
  }

  // Reference in double: the Gemm's result per row and output.
  std::vector<double> reference(const std::vector<float>& x, int64_t rows) const {
    std::vector<double> h(static_cast<size_t>(rows * n));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = 0; o < n; ++o) {
        double s = 0;
        for (int64_t i = 0; i < k; ++i) s += double(x[r * k + i]) * (trans_b ? w[o * k + i] : w[i * n + o]);
        double bias = 0;
        if (!c.empty()) bias = c.size() == 1 ? c[0] : c[static_cast<size_t>(o)];
        h[r * n + o] = alpha * s + beta * bias;
      }
    return h;
  }
};

void check(Layer layer) {
  std::string bytes;
  layer.model().SerializeToString(&bytes);
  auto model = flock::Model::load(std::vector<uint8_t>(bytes.begin(), bytes.end()));
  for (int64_t rows : {1, 3, 255, 256, 257, 600, 256}) {
    std::vector<float> x = random_floats(static_cast<size_t>(rows * layer.k), static_cast<uint32_t>(rows));
    x[0] = std::numeric_limits<float>::quiet_NaN();  // row 0 carries a NaN: every output of it is NaN
    auto out = model->run_tensors({Tensor::floats({rows, layer.k}, x)});
    const std::vector<double> h = layer.reference(x, rows);
    size_t at = 0;
    auto expect = [&](const Tensor& t, auto fn, const char* what) {
      ASSERT_EQ(t.shape, (std::vector<int64_t>{rows, layer.n})) << what;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t o = 0; o < layer.n; ++o) {
          const float got = t.f[static_cast<size_t>(r * layer.n + o)];
          if (r == 0) {
            ASSERT_TRUE(std::isnan(got)) << what << " row 0 output " << o;
            continue;
          }
          const double want = fn(h[static_cast<size_t>(r * layer.n + o)]);
          ASSERT_NEAR(got, want, 1e-4 * (1 + std::abs(want))) << what << " rows " << rows << " r " << r << " o " << o;
        }
    };
    if (layer.relu) expect(out[at++], [](double v) { return v < 0 ? 0.0 : v; }, "relu");
    if (!layer.relu || layer.gemm_output_too) expect(out[at++], [](double v) { return v; }, "gemm");
    if (layer.second_reader) expect(out[at++], [](double v) { return -v; }, "neg");
    ASSERT_EQ(at, out.size());
  }
}

TEST(DenseLayer, GemmReluTransposedWeightsRowBias) { check(Layer{}); }

TEST(DenseLayer, PlainWeightsScalarBiasAlphaBeta) {
  Layer l;
  l.trans_b = false;
  l.alpha = 0.5f;
  l.beta = -2.0f;
  l.bias_dims = {1};
  check(l);
}

TEST(DenseLayer, RowVectorBiasAndNoBias) {
  Layer l;
  l.bias_dims = {1, 40};
  check(l);
  l.bias_dims = {};
  l.relu = false;
  check(l);
}

TEST(DenseLayer, ReluNotFoldedWhenTheGemmResultIsAlsoAnOutputOrReadTwice) {
  Layer l;
  l.gemm_output_too = true;
  check(l);
  Layer t;
  t.second_reader = true;
  check(t);
}

TEST(DenseLayer, WideAndDeepLayer) {
  Layer l;
  l.k = 300;
  l.n = 129;
  l.bias_dims = {129};
  check(l);
}

}  // namespace
