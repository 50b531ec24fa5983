// Interrupting model runs (flock/interrupt.hpp): the plan polls the host's callback between kernels
// and long kernels poll it inside their loops; a callback that says stop ends the run with
// ErrorCode::Cancelled, and with no callback (or one that never fires) nothing changes.
#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "flock/interrupt.hpp"
#include "flock/model.hpp"
#include "flock/onnx.hpp"

#ifndef FLOCK_TEST_DATA_DIR
#error "FLOCK_TEST_DATA_DIR must point at tests/core/data"
#endif

namespace {

using flock::ErrorCode;
using flock::Tensor;

// The callback under test: counts polls and asks to stop at poll number `fire_at` (0: never).
long polls = 0;
long fire_at = 0;
bool counting_check() { return ++polls == fire_at || (fire_at > 0 && polls > fire_at); }

// Installs counting_check for one test, and removes it after (also when the test fails).
struct CheckScope {
  explicit CheckScope(long fire) {
    polls = 0;
    fire_at = fire;
    flock::set_interrupt_check(counting_check);
  }
  ~CheckScope() { flock::set_interrupt_check(nullptr); }
};

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

// x [N, k] -> Gemm(k -> n) -> Relu -> Gemm(n -> 1): one large product per run.
std::shared_ptr<const flock::Model> wide_mlp(int64_t k, int64_t n) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(13);
  auto* g = m.mutable_graph();
  g->set_name("wide");
  auto value = [](onnx::ValueInfoProto* v, const char* name, int64_t width) {
    v->set_name(name);
    auto* tt = v->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(onnx::TensorProto::FLOAT);
    tt->mutable_shape()->add_dim()->set_dim_param("N");
    tt->mutable_shape()->add_dim()->set_dim_value(width);
  };
  value(g->add_input(), "x", k);
  value(g->add_output(), "y", 1);
  auto init = [&](const char* name, std::vector<int64_t> dims, uint32_t seed) {
    auto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    int64_t count = 1;
    for (int64_t d : dims) {
      t->add_dims(d);
      count *= d;
    }
    for (float f : random_floats(static_cast<size_t>(count), seed)) t->add_float_data(f * 0.05f);
  };
  init("w1", {k, n}, 1);
  init("b1", {n}, 2);
  init("w2", {n, 1}, 3);
  auto node = [&](const char* type, std::vector<std::string> ins, const char* out) {
    auto* nd = g->add_node();
    nd->set_op_type(type);
    for (const auto& i : ins) nd->add_input(i);
    nd->add_output(out);
  };
  node("Gemm", {"x", "w1", "b1"}, "h");
  node("Relu", {"h"}, "r");
  node("Gemm", {"r", "w2"}, "y");
  std::string s;
  m.SerializeToString(&s);
  return flock::Model::load(std::vector<uint8_t>(s.begin(), s.end()));
}

// x [N, width] -> Sigmoid -> y: one elementwise op over the whole batch.
std::shared_ptr<const flock::Model> sigmoid_model(int64_t width) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(13);
  auto* g = m.mutable_graph();
  g->set_name("sigmoid");
  auto value = [&](onnx::ValueInfoProto* v, const char* name) {
    v->set_name(name);
    auto* tt = v->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(onnx::TensorProto::FLOAT);
    tt->mutable_shape()->add_dim()->set_dim_param("N");
    tt->mutable_shape()->add_dim()->set_dim_value(width);
  };
  value(g->add_input(), "x");
  value(g->add_output(), "y");
  auto* nd = g->add_node();
  nd->set_op_type("Sigmoid");
  nd->add_input("x");
  nd->add_output("y");
  std::string s;
  m.SerializeToString(&s);
  return flock::Model::load(std::vector<uint8_t>(s.begin(), s.end()));
}

std::shared_ptr<const flock::Model> xgboost_model() {
  std::ifstream in(std::string(FLOCK_TEST_DATA_DIR) + "/xgb/reg_squarederror.model.json", std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  return flock::Model::load(std::vector<uint8_t>(text.begin(), text.end()), flock::ModelFormat::XGBoostJson);
}

flock::FeatureBatch batch_of(const flock::Model& model, int64_t rows, uint32_t seed) {
  const int64_t width = model.signature().inputs.at(0).width;
  flock::FeatureBatch b;
  b.rows = rows;
  b.inputs.push_back(Tensor::floats({rows, width}, random_floats(static_cast<size_t>(rows * width), seed)));
  return b;
}

// Runs the batch with the callback asking to stop at poll `fire`; returns whether the run was
// cancelled (any other error fails the test).
bool cancelled_at(const flock::Model& model, const flock::FeatureBatch& batch, long fire) {
  CheckScope scope(fire);
  try {
    model.run(batch);
    return false;
  } catch (const flock::Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Cancelled) << e.what();
    return true;
  }
}

TEST(Interrupt, NoCallbackChangesNothing) {
  auto model = wide_mlp(64, 512);
  const auto batch = batch_of(*model, 3000, 7);
  flock::set_interrupt_check(nullptr);
  const std::vector<Tensor> plain = model->run(batch);
  std::vector<Tensor> polled;
  {
    CheckScope scope(0);  // polls, never fires
    polled = model->run(batch);
    EXPECT_GT(polls, 0);
  }
  ASSERT_EQ(plain.size(), polled.size());
  EXPECT_EQ(plain[0].f, polled[0].f);
}

TEST(Interrupt, LargeProductPollsInsideTheKernel) {
  // 1024 x 1024 weights: a row is 2^20 multiply-adds, so 1024 rows take 2^30: several row chunks.
  auto model = wide_mlp(1024, 1024);
  const auto batch = batch_of(*model, 1024, 3);
  {
    CheckScope scope(0);
    model->run(batch);
    // At least one poll per 2^28 multiply-adds besides the one per kernel.
    EXPECT_GE(polls, 3 + 4) << polls;
  }
  // Every poll is a place the run stops: the first, one in the middle of the product, the last.
  long total = 0;
  {
    CheckScope scope(0);
    model->run(batch);
    total = polls;
  }
  for (long fire : {1L, total / 2, total}) EXPECT_TRUE(cancelled_at(*model, batch, fire)) << fire;
  // A cancelled run leaves the model usable, with the same results.
  flock::set_interrupt_check(nullptr);
  const auto again = model->run(batch);
  CheckScope scope(0);
  EXPECT_EQ(again[0].f, model->run(batch)[0].f);
}

TEST(Interrupt, TreeEnsemblePollsEveryBlockOfRows) {
  auto model = xgboost_model();
  const auto batch = batch_of(*model, 100000, 5);
  long total = 0;
  {
    CheckScope scope(0);
    model->run(batch);
    total = polls;
  }
  EXPECT_GE(total, 100000 / 128) << "the tree kernel polls every block of rows";
  EXPECT_TRUE(cancelled_at(*model, batch, total / 2));
  EXPECT_FALSE(cancelled_at(*model, batch, total + 1));
}

TEST(Interrupt, ElementwiseOpsPollOverHugeTensors) {
  auto model = sigmoid_model(1000);
  const auto batch = batch_of(*model, 4200, 2);  // 4.2M values: chunks of 2^20
  long total = 0;
  {
    CheckScope scope(0);
    model->run(batch);
    total = polls;
  }
  EXPECT_GE(total, 1 + 4);
  EXPECT_TRUE(cancelled_at(*model, batch, total));
}

TEST(Interrupt, PredictAndRunTensorsAreCancelledToo) {
  auto model = xgboost_model();
  const auto batch = batch_of(*model, 1000, 9);
  {
    CheckScope scope(1);
    EXPECT_THROW(model->predict(batch), flock::Error);
  }
  {
    CheckScope scope(1);
    EXPECT_THROW(model->run_tensors({batch.inputs[0]}), flock::Error);
  }
}

TEST(Interrupt, ChunkRowsStayPositive) {
  EXPECT_EQ(flock::interrupt_chunk_rows(0), flock::kInterruptWork);
  EXPECT_EQ(flock::interrupt_chunk_rows(flock::kInterruptWork * 4), 1);
  EXPECT_EQ(flock::interrupt_chunk_rows(1024), flock::kInterruptWork / 1024);
}

TEST(Interrupt, MemoryEstimates) {
  auto model = wide_mlp(64, 512);
  // Weights: 64 x 512 + 512 + 512 floats at least; a row: its 64 inputs and 512 hidden values.
  EXPECT_GE(model->memory_bytes(), (64 * 512 + 1024) * sizeof(float));
  EXPECT_GE(model->bytes_per_row(), (64 + 512) * sizeof(float));
  EXPECT_LT(model->bytes_per_row(), 64 * 1024u);
  auto trees = xgboost_model();
  EXPECT_GT(trees->memory_bytes(), 0u);
  const size_t before = model->memory_bytes();
  model->run(batch_of(*model, 2048, 1));
  EXPECT_GT(model->memory_bytes(), before) << "the buffers kept for the next run count";
}

}  // namespace
