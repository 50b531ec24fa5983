// The plan executor's memory handling: buffers recycled across runs (TensorArena), inputs donated
// to a node at their last use (in-place elementwise kernels), and that neither changes results.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "flock/model.hpp"
#include "flock/onnx.hpp"
#include "flock/tensor.hpp"

namespace {

using flock::Tensor;

onnx::ModelProto graph_model(int64_t width) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("plan_test");
  m.mutable_graph()->set_name("g");
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(13);
  auto* in = m.mutable_graph()->add_input();
  in->set_name("x");
  auto* tt = in->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  tt->mutable_shape()->add_dim()->set_dim_param("N");
  tt->mutable_shape()->add_dim()->set_dim_value(width);
  return m;
}

void add_output(onnx::ModelProto& m, const std::string& name) {
  auto* out = m.mutable_graph()->add_output();
  out->set_name(name);
  auto* tt = out->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  tt->mutable_shape()->add_dim()->set_dim_param("N");
  tt->mutable_shape()->add_dim()->set_dim_param("D");
}

void add_init(onnx::ModelProto& m, const std::string& name, std::vector<int64_t> dims, const std::vector<float>& v) {
  auto* t = m.mutable_graph()->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) t->add_dims(d);
  for (float f : v) t->add_float_data(f);
}

onnx::NodeProto* add_node(onnx::ModelProto& m, const std::string& op, std::vector<std::string> ins,
                          const std::string& out) {
  auto* n = m.mutable_graph()->add_node();
  n->set_op_type(op);
  n->set_name(out + "_node");
  for (const auto& i : ins) n->add_input(i);
  n->add_output(out);
  return n;
}

std::shared_ptr<const flock::Model> load(const onnx::ModelProto& m) {
  std::string s;
  m.SerializeToString(&s);
  std::vector<uint8_t> bytes(s.begin(), s.end());
  return flock::Model::load(bytes);
}

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

// x [N, 6] -> Gemm(6->16, transB) -> Relu -> Gemm(16->16) -> Relu -> Gemm(16->1, transB)
struct Mlp {
  std::vector<float> w1 = random_floats(16 * 6, 1), b1 = random_floats(16, 2);
  std::vector<float> w2 = random_floats(16 * 16, 3), b2 = random_floats(16, 4);
  std::vector<float> w3 = random_floats(16, 5), b3 = random_floats(1, 6);

  onnx::ModelProto model() const {
    auto m = graph_model(6);
    add_init(m, "w1", {16, 6}, w1);
    add_init(m, "b1", {16}, b1);
    add_init(m, "w2", {16, 16}, w2);  // [in, out]: no transB
    add_init(m, "b2", {1, 16}, b2);
    add_init(m, "w3", {1, 16}, w3);
    add_init(m, "b3", {1}, b3);
    auto* g1 = add_node(m, "Gemm", {"x", "w1", "b1"}, "h1");
    auto* t = g1->add_attribute();
    t->set_name("transB");
    t->set_type(onnx::AttributeProto::INT);
    t->set_i(1);
    add_node(m, "Relu", {"h1"}, "r1");
    add_node(m, "Gemm", {"r1", "w2", "b2"}, "h2");
    add_node(m, "Relu", {"h2"}, "r2");
    auto* g3 = add_node(m, "Gemm", {"r2", "w3", "b3"}, "y");
    *g3->add_attribute() = *t;
    add_output(m, "y");
    return m;
  }

  std::vector<double> reference(const std::vector<float>& x, int64_t n) const {
    std::vector<double> y(static_cast<size_t>(n));
    for (int64_t r = 0; r < n; ++r) {
      double h1[16], h2[16];
      for (int o = 0; o < 16; ++o) {
        double s = b1[o];
        for (int i = 0; i < 6; ++i) s += double(x[r * 6 + i]) * w1[o * 6 + i];
        h1[o] = s < 0 ? 0 : s;
      }
      for (int o = 0; o < 16; ++o) {
        double s = b2[o];
        for (int i = 0; i < 16; ++i) s += h1[i] * w2[i * 16 + o];
        h2[o] = s < 0 ? 0 : s;
      }
      double s = b3[0];
      for (int i = 0; i < 16; ++i) s += h2[i] * w3[i];
      y[static_cast<size_t>(r)] = s;
    }
    return y;
  }
};

TEST(PlanBuffers, RepeatedRunsWithVaryingBatchSizesGiveIdenticalResults) {
  const Mlp mlp;
  auto model = load(mlp.model());
  std::vector<float> first64;
  uint32_t seed = 100;
  for (int64_t n : {64, 1, 64, 3, 1000, 64, 64, 1, 1000, 2, 64}) {
    // Batch 64 always gets the same input, so its output must be bit-identical every time.
    const std::vector<float> x = random_floats(static_cast<size_t>(n) * 6, n == 64 ? 7 : seed++);
    auto out = model->run_tensors({Tensor::floats({n, 6}, x)});
    ASSERT_EQ(out.size(), 1u);
    ASSERT_EQ(out[0].shape, (std::vector<int64_t>{n, 1}));
    ASSERT_EQ(out[0].f.size(), static_cast<size_t>(n));
    const std::vector<double> want = mlp.reference(x, n);
    for (int64_t r = 0; r < n; ++r) ASSERT_NEAR(out[0].f[r], want[r], 1e-4 * (1 + std::abs(want[r]))) << "row " << r;
    if (n == 64) {
      if (first64.empty()) first64 = out[0].f;
      else EXPECT_EQ(out[0].f, first64);
    }
  }
}

TEST(PlanBuffers, ConcurrentlyKeptOutputsAreNotRecycled) {
  // Outputs handed to the caller stay valid and distinct while later runs recycle buffers.
  const Mlp mlp;
  auto model = load(mlp.model());
  const std::vector<float> xa = random_floats(64 * 6, 11), xb = random_floats(64 * 6, 12);
  auto a = model->run_tensors({Tensor::floats({64, 6}, xa)});
  auto b = model->run_tensors({Tensor::floats({64, 6}, xb)});
  auto a2 = model->run_tensors({Tensor::floats({64, 6}, xa)});
  EXPECT_EQ(a[0].f, a2[0].f);
  EXPECT_NE(a[0].f, b[0].f);
  EXPECT_NE(a[0].f.data(), a2[0].f.data());
}

TEST(PlanInPlace, ValuesReadByLaterNodesAreNotClobbered) {
  // r = Relu(x) is read by Neg, by Mul (twice, as both operands) and is a graph output; x itself
  // is read again at the end. Neither may be overwritten by an in-place kernel.
  auto m = graph_model(5);
  add_node(m, "Relu", {"x"}, "r");
  add_node(m, "Neg", {"r"}, "a");
  add_node(m, "Mul", {"r", "r"}, "b");
  add_node(m, "Add", {"a", "b"}, "y");   // a and b die here: may be reused
  add_node(m, "Sigmoid", {"y"}, "s");    // y dies here: in place
  add_node(m, "Add", {"x", "s"}, "z");   // x's last use
  add_output(m, "r");
  add_output(m, "z");
  auto model = load(m);
  for (int64_t n : {4, 1, 4, 300, 4}) {
    const std::vector<float> x = random_floats(static_cast<size_t>(n) * 5, static_cast<uint32_t>(n));
    auto out = model->run_tensors({Tensor::floats({n, 5}, x)});
    ASSERT_EQ(out.size(), 2u);
    ASSERT_EQ(out[0].f.size(), x.size());
    ASSERT_EQ(out[1].f.size(), x.size());
    for (size_t k = 0; k < x.size(); ++k) {
      const double r = x[k] < 0 ? 0.0 : x[k];
      const double y = -r + r * r;
      const double z = x[k] + 1.0 / (1.0 + std::exp(-y));
      EXPECT_FLOAT_EQ(out[0].f[k], static_cast<float>(r));
      EXPECT_NEAR(out[1].f[k], z, 1e-5);
    }
  }
}

TEST(PlanInPlace, CallerInputsAreNotModified) {
  // Model::run binds a batch the caller keeps: the Relu on the graph input works on the plan's copy.
  auto m = graph_model(3);
  add_node(m, "Relu", {"x"}, "y");
  add_output(m, "y");
  auto model = load(m);
  flock::FeatureBatch batch;
  batch.rows = 2;
  batch.inputs.push_back(Tensor::floats({2, 3}, {-1, 2, -3, 4, -5, 6}));
  auto out = model->run(batch);
  EXPECT_EQ(out[0].f, (std::vector<float>{0, 2, 0, 4, 0, 6}));
  EXPECT_EQ(batch.inputs[0].f, (std::vector<float>{-1, 2, -3, 4, -5, 6}));
}

TEST(PlanInPlace, FlattenAndReshapeOfDyingValues) {
  auto m = graph_model(6);
  auto* s = m.mutable_graph()->add_initializer();
  s->set_name("shape");
  s->set_data_type(onnx::TensorProto::INT64);
  s->add_dims(3);
  for (int64_t v : {-1, 2, 3}) s->add_int64_data(v);
  add_node(m, "Relu", {"x"}, "r");
  add_node(m, "Reshape", {"r", "shape"}, "q");
  add_node(m, "Flatten", {"q"}, "y");
  add_output(m, "y");
  auto model = load(m);
  const std::vector<float> x = random_floats(12, 3);
  auto out = model->run_tensors({Tensor::floats({2, 6}, x)});
  ASSERT_EQ(out[0].shape, (std::vector<int64_t>{2, 6}));
  for (size_t k = 0; k < x.size(); ++k) EXPECT_EQ(out[0].f[k], x[k] < 0 ? 0.0f : x[k]);
}

TEST(TensorArena, RecyclesFittingBuffersAndTrims) {
  flock::TensorArena arena;
  std::vector<float> v;
  arena.take(v, 10000, false);
  ASSERT_EQ(v.size(), 10000u);
  for (float f : v) ASSERT_EQ(f, 0.0f);  // fresh storage is zeroed
  v.assign(10000, 7.0f);
  const float* p = v.data();
  arena.give(std::move(v));
  EXPECT_EQ(arena.buffers(), 1u);
  arena.end_run(size_t(1) << 30);
  EXPECT_EQ(arena.buffers(), 1u);

  std::vector<float> w;
  arena.take(w, 10000, false);  // the same buffer, old values kept
  EXPECT_EQ(w.data(), p);
  EXPECT_EQ(w.size(), 10000u);
  EXPECT_EQ(w[9999], 7.0f);
  arena.give(std::move(w));

  std::vector<float> z;
  arena.take(z, 9000, true);  // fits; zero-filled on request
  EXPECT_EQ(z.data(), p);
  EXPECT_EQ(z.size(), 9000u);
  for (float f : z) ASSERT_EQ(f, 0.0f);
  arena.give(std::move(z));

  std::vector<float> small;
  arena.take(small, 4, false);  // would waste the large buffer: fresh
  EXPECT_NE(small.data(), p);
  arena.give(std::move(small));
  EXPECT_EQ(arena.buffers(), 2u);

  // This run took 3 buffers: it keeps at most 3, newest first, within the byte budget.
  arena.end_run(2000);
  EXPECT_LE(arena.bytes(), 2000u);
  EXPECT_EQ(arena.buffers(), 1u);
  arena.end_run(size_t(1) << 30);  // took nothing: keeps nothing
  EXPECT_EQ(arena.buffers(), 0u);
}

TEST(TensorArena, TensorsAllocatedInScopeUseIt) {
  flock::TensorArena arena;
  std::vector<float> big(4096, 1.0f);
  const float* p = big.data();
  arena.give(std::move(big));
  {
    flock::TensorArena::Scope scope(&arena);
    Tensor t = Tensor::uninitialized(flock::ElemType::Float, {64, 64});
    EXPECT_EQ(t.f.data(), p);
    EXPECT_EQ(t.f.size(), 4096u);
    arena.give(std::move(t));
    Tensor z(flock::ElemType::Float, {64, 64});  // the constructor still zero-fills
    EXPECT_EQ(z.f.data(), p);
    for (float f : z.f) ASSERT_EQ(f, 0.0f);
  }
  EXPECT_EQ(flock::TensorArena::current(), nullptr);
  Tensor u = Tensor::uninitialized(flock::ElemType::Float, {3});  // no arena: zeros
  EXPECT_EQ(u.f, (std::vector<float>{0, 0, 0}));
}

}  // namespace
