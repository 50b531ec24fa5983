// Hostile model bytes and inputs: sizes that overflow, indices and axes out of range, text that is
// not UTF-8. Each must end in a flock::Error with the right code, never a wrap-around, an
// out-of-bounds read or a foreign exception. (Issue 11, attack 2 and "also seen".)
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "flock/checked.hpp"
#include "flock/kernel.hpp"
#include "flock/model.hpp"
#include "flock/onnx.hpp"
#include "kernel_test_util.hpp"

namespace {

using flock::ElemType;
using flock::Error;
using flock::ErrorCode;
using flock::Tensor;
using flock::testing::expect_error;
using flock::testing::Node;

constexpr int64_t k2to62 = int64_t(1) << 62;
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kInt64Min = std::numeric_limits<int64_t>::min();

// fn must throw a flock::Error with one of `codes` (and nothing else).
void expect_code_in(const std::function<void()>& fn, std::vector<ErrorCode> codes) {
  try {
    fn();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    bool ok = false;
    for (ErrorCode c : codes) ok = ok || e.code() == c;
    EXPECT_TRUE(ok) << "code " << static_cast<int>(e.code()) << ": " << e.what();
  }
}

std::unique_ptr<flock::Kernel> make(const Node& n, int64_t opset = 17) { return flock::testing::make_kernel(n, opset); }

std::vector<Tensor> run(const flock::Kernel& k, std::vector<const Tensor*> in, size_t n_out = 1) {
  return flock::testing::run_kernel(k, std::move(in), n_out);
}

Tensor ints(std::vector<int64_t> v) {
  const int64_t n = static_cast<int64_t>(v.size());
  return Tensor::int64s({n}, std::move(v));
}

// ---- models ----

onnx::ModelProto empty_model(int opset = 15) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("hostile_input_test");
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(opset);
  m.mutable_graph()->set_name("g");
  return m;
}

onnx::ValueInfoProto* add_value(google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>* list,
                                const std::string& name, int elem, const std::vector<int64_t>& dims) {
  auto* v = list->Add();
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(elem);
  for (int64_t d : dims) {
    if (d < 0) tt->mutable_shape()->add_dim()->set_dim_param("N");
    else tt->mutable_shape()->add_dim()->set_dim_value(d);
  }
  return v;
}

onnx::NodeProto* add_node(onnx::ModelProto& m, const std::string& op, std::vector<std::string> in,
                          std::vector<std::string> out) {
  auto* n = m.mutable_graph()->add_node();
  n->set_op_type(op);
  n->set_name(op + "_node");
  for (auto& s : in) n->add_input(s);
  for (auto& s : out) n->add_output(s);
  return n;
}

std::vector<uint8_t> bytes_of(const onnx::ModelProto& m) {
  std::string s;
  m.SerializeToString(&s);
  return {s.begin(), s.end()};
}

// y = Gather(data, idx) over a float initializer `data` of the given dims holding n_values floats as
// raw_data: the model of issue 11's attack 2.
onnx::ModelProto gather_over_initializer(const std::vector<int64_t>& dims, int64_t n_values) {
  auto m = empty_model();
  auto* g = m.mutable_graph();
  auto* init = g->add_initializer();
  init->set_name("data");
  init->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) init->add_dims(d);
  std::vector<float> values(static_cast<size_t>(n_values), 1.5f);
  init->set_raw_data(std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
  add_value(g->mutable_input(), "idx", onnx::TensorProto::INT64, {-1});
  add_node(m, "Gather", {"data", "idx"}, {"y"});
  add_value(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {-1, dims.size() > 1 ? dims[1] : 1});
  return m;
}

ErrorCode load_error(const onnx::ModelProto& m, std::string* message = nullptr) {
  try {
    flock::Model::load(bytes_of(m));
  } catch (const Error& e) {
    if (message) *message = e.what();
    return e.code();
  }
  ADD_FAILURE() << "the model loaded";
  return ErrorCode::Internal;
}

TEST(HostileModel, InitializerWhoseDimsWrapPastInt64IsRejected) {
  // [2^62 + 1, 4] has 2^64 + 4 elements: 4 once wrapped, which 16 bytes of data would satisfy.
  std::string message;
  EXPECT_EQ(load_error(gather_over_initializer({k2to62 + 1, 4}, 4), &message), ErrorCode::InvalidModel);
  EXPECT_NE(message.find("data"), std::string::npos) << message;
  // The same through the tensor conversion every initializer and Constant goes through.
  const auto m = gather_over_initializer({k2to62 + 1, 4}, 4);
  expect_error([&] { flock::tensor_from_proto(m.graph().initializer(0)); }, ErrorCode::InvalidModel, "'data'");
  // A zero dimension does not excuse the others: [0, 2^62, 4] cannot be indexed safely either.
  const auto z = gather_over_initializer({0, k2to62, 4}, 0);
  expect_error([&] { flock::tensor_from_proto(z.graph().initializer(0)); }, ErrorCode::InvalidModel, "'data'");
}

TEST(HostileModel, GatherIndicesAreCheckedAtRunTime) {
  auto model = flock::Model::load(bytes_of(gather_over_initializer({4, 4}, 16)));
  auto run_with = [&](int64_t index) {
    std::vector<Tensor> in;
    in.push_back(Tensor::int64s({1}, {index}));
    return model->run_tensors(std::move(in));
  };
  EXPECT_EQ(run_with(3)[0].f.size(), 4u);
  EXPECT_EQ(run_with(-4)[0].f.size(), 4u);
  for (int64_t bad : {int64_t(4), int64_t(-5), k2to62, kInt64Max, kInt64Min})
    expect_error([&] { run_with(bad); }, ErrorCode::InvalidInput, "out of range");
}

TEST(HostileModel, InitializerDataShorterThanItsDims) {
  // int64 [4] with 8 raw bytes (one value): the shape needs 32.
  onnx::TensorProto t;
  t.set_name("shape");
  t.set_data_type(onnx::TensorProto::INT64);
  t.add_dims(4);
  t.set_raw_data(std::string(8, '\0'));
  expect_error([&] { flock::tensor_from_proto(t); }, ErrorCode::InvalidModel, "'shape'");
  // Typed data: 2 floats for a shape of 3, and a huge shape over 2 floats (rejected before any allocation).
  onnx::TensorProto f;
  f.set_name("w");
  f.set_data_type(onnx::TensorProto::FLOAT);
  f.add_dims(3);
  f.add_float_data(1.0f);
  f.add_float_data(2.0f);
  expect_error([&] { flock::tensor_from_proto(f); }, ErrorCode::InvalidModel, "'w'");
  f.set_dims(0, int64_t(1) << 40);
  expect_error([&] { flock::tensor_from_proto(f); }, ErrorCode::InvalidModel, "'w'");
  // int16 raw data: the byte count is checked against dims x 2 without wrapping.
  onnx::TensorProto s;
  s.set_name("s");
  s.set_data_type(onnx::TensorProto::INT16);
  s.add_dims(k2to62);
  s.add_dims(4);
  s.set_raw_data(std::string(8, '\0'));
  expect_error([&] { flock::tensor_from_proto(s); }, ErrorCode::InvalidModel, "'s'");
}

// Crashers of the onnx library's shape inference (issue 11, attack 3) are refused before it runs.
TEST(HostileModel, LibraryCrashersAreRefusedBeforeShapeInference) {
  // Reshape whose shape initializer (int64 [4]) has one value's worth of raw bytes.
  auto m = empty_model();
  auto* g = m.mutable_graph();
  add_value(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {2, 2});
  auto* shape = g->add_initializer();
  shape->set_name("shape");
  shape->set_data_type(onnx::TensorProto::INT64);
  shape->add_dims(4);
  shape->set_raw_data(std::string(8, '\1'));
  add_node(m, "Reshape", {"x", "shape"}, {"y"});
  add_value(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {4});
  std::string message;
  EXPECT_EQ(load_error(m, &message), ErrorCode::InvalidModel);
  EXPECT_NE(message.find("'shape'"), std::string::npos) << message;
  EXPECT_NE(message.find("raw_data"), std::string::npos) << message;
  // The same tensor as a Constant node's value.
  auto c = empty_model();
  add_value(c.mutable_graph()->mutable_input(), "x", onnx::TensorProto::FLOAT, {2, 2});
  auto* constant = add_node(c, "Constant", {}, {"shape"});
  auto* value = constant->add_attribute();
  value->set_name("value");
  value->set_type(onnx::AttributeProto::TENSOR);
  *value->mutable_t() = *shape;
  add_node(c, "Reshape", {"x", "shape"}, {"y"});
  add_value(c.mutable_graph()->mutable_output(), "y", onnx::TensorProto::FLOAT, {4});
  EXPECT_EQ(load_error(c, &message), ErrorCode::InvalidModel);
  EXPECT_NE(message.find("'shape'"), std::string::npos) << message;

  // MaxPool / Conv with a zero stride or dilation: the library's output-size formula divides by it.
  for (const char* attr : {"strides", "dilations", "kernel_shape"}) {
    auto p = empty_model();
    add_value(p.mutable_graph()->mutable_input(), "x", onnx::TensorProto::FLOAT, {1, 1, 8});
    auto* pool = add_node(p, "MaxPool", {"x"}, {"y"});
    auto* k = pool->add_attribute();
    k->set_name("kernel_shape");
    k->set_type(onnx::AttributeProto::INTS);
    k->add_ints(std::string(attr) == "kernel_shape" ? 0 : 2);
    if (std::string(attr) != "kernel_shape") {
      auto* a = pool->add_attribute();
      a->set_name(attr);
      a->set_type(onnx::AttributeProto::INTS);
      a->add_ints(0);
    }
    add_value(p.mutable_graph()->mutable_output(), "y", onnx::TensorProto::FLOAT, {1, 1, 4});
    EXPECT_EQ(load_error(p, &message), ErrorCode::InvalidModel) << attr;
    EXPECT_NE(message.find(attr), std::string::npos) << message;
  }
}

onnx::ModelProto relu_with_input_dims(const std::vector<int64_t>& dims) {
  auto m = empty_model();
  auto* g = m.mutable_graph();
  add_value(g->mutable_input(), "x", onnx::TensorProto::FLOAT, dims);
  add_node(m, "Relu", {"x"}, {"y"});
  add_value(g->mutable_output(), "y", onnx::TensorProto::FLOAT, dims);
  return m;
}

TEST(HostileModel, InputDeclarationWhoseWidthOverflows) {
  std::string message;
  EXPECT_EQ(load_error(relu_with_input_dims({-1, int64_t(1) << 32, int64_t(1) << 32}), &message),
            ErrorCode::InvalidModel);
  EXPECT_NE(message.find("'x'"), std::string::npos) << message;
  // Past the tensor limit without overflowing: rejected before the trial run allocates a row.
  EXPECT_EQ(load_error(relu_with_input_dims({-1, int64_t(1) << 40}), &message), ErrorCode::LimitExceeded);
  EXPECT_NE(message.find("'x'"), std::string::npos) << message;
  // A sane declaration still loads and runs.
  auto model = flock::Model::load(bytes_of(relu_with_input_dims({-1, 3})));
  flock::FeatureBatch b;
  b.rows = 1;
  b.inputs.push_back(Tensor::floats({1, 3}, {-1, 0, 2}));
  EXPECT_EQ(model->run(b)[0].f, (std::vector<float>{0, 0, 2}));
}

TEST(HostileModel, BatchRowsTimesWidthIsChecked) {
  auto model = flock::Model::load(bytes_of(relu_with_input_dims({-1, 4})));
  flock::FeatureBatch b;
  b.rows = k2to62;  // x 4 wraps to 0, which an empty input would match
  b.inputs.push_back(Tensor::floats({0}, {}));
  expect_code_in([&] { model->run(b); }, {ErrorCode::LimitExceeded, ErrorCode::InvalidInput});
}

TEST(HostileModel, NonUtf8TextIsRejectedAtLoad) {
  auto m = relu_with_input_dims({-1, 3});
  m.set_producer_name("skl2onnx\xff\xfe");
  std::string message;
  EXPECT_EQ(load_error(m, &message), ErrorCode::InvalidModel);
  EXPECT_NE(message.find("producer_name"), std::string::npos) << message;
  EXPECT_NE(message.find("UTF-8"), std::string::npos) << message;

  m = relu_with_input_dims({-1, 3});
  auto* prop = m.add_metadata_props();
  prop->set_key("feature_names");
  prop->set_value("a,b,\xc3\x28");  // an invalid two-byte sequence
  EXPECT_EQ(load_error(m), ErrorCode::InvalidModel);

  m = relu_with_input_dims({-1, 3});
  m.mutable_graph()->mutable_node(0)->set_name("relu\xed\xa0\x80");  // an encoded surrogate
  EXPECT_EQ(load_error(m), ErrorCode::InvalidModel);

  // Valid multi-byte UTF-8 loads, and its signature is JSON without a throw.
  m = relu_with_input_dims({-1, 3});
  m.set_producer_name("pr\xc3\xa9" "dicteur \xe2\x82\xac \xf0\x9f\x90\x91");
  auto model = flock::Model::load(bytes_of(m));
  EXPECT_NE(model->signature_json().find("pr\xc3\xa9" "dicteur"), std::string::npos);

  // Names passed in for a model are checked too.
  const auto bytes = bytes_of(relu_with_input_dims({-1, 3}));
  expect_error([&] { flock::with_feature_names(bytes, flock::ModelFormat::Onnx, {"a", "b", "c\x80"}); },
               ErrorCode::InvalidInput, "UTF-8");
}

TEST(HostileModel, EntryPointsThrowOnlyFlockErrors) {
  // Bytes that are no model at all, or a truncated one, through every entry that takes bytes.
  const auto good = bytes_of(gather_over_initializer({4, 4}, 16));
  for (size_t cut : {size_t(1), size_t(7), good.size() / 2, good.size() - 1}) {
    std::vector<uint8_t> part(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(cut));
    expect_code_in([&] { flock::Model::load(part); },
                   {ErrorCode::InvalidModel, ErrorCode::UnsupportedOperator, ErrorCode::LimitExceeded});
    expect_code_in([&] { flock::with_feature_names(part, flock::ModelFormat::Onnx, {"a"}); },
                   {ErrorCode::InvalidModel, ErrorCode::InvalidInput, ErrorCode::UnsupportedOperator});
  }
  const std::string json = R"({"learner": {"gradient_booster": 7}})";
  std::vector<uint8_t> jb(json.begin(), json.end());
  expect_code_in([&] { flock::Model::load(jb); }, {ErrorCode::InvalidModel, ErrorCode::UnsupportedOperator});
}

// ---- checked arithmetic ----

TEST(Checked, ArithmeticFailsInsteadOfWrapping) {
  EXPECT_EQ(flock::checked_mul(int64_t(1) << 31, int64_t(1) << 31, "x"), int64_t(1) << 62);
  expect_error([] { flock::checked_mul(k2to62, 4, "Tile output size"); }, ErrorCode::LimitExceeded,
               "Tile output size");
  expect_error([] { flock::checked_add(kInt64Max, 1, "sum"); }, ErrorCode::LimitExceeded, "sum");
  expect_error([] { flock::checked_sub(kInt64Min, 1, "difference"); }, ErrorCode::LimitExceeded, "difference");
  const std::vector<int64_t> scalar;
  EXPECT_EQ(flock::checked_numel(scalar, "x"), 1);
  const std::vector<int64_t> empty{0, int64_t(1) << 40};
  EXPECT_EQ(flock::checked_numel(empty, "x"), 0);
  const std::vector<int64_t> wraps{k2to62 + 1, 4};
  expect_error([&] { flock::checked_numel(wraps, "x", ErrorCode::InvalidModel); }, ErrorCode::InvalidModel, "x");
  const std::vector<int64_t> hidden{0, k2to62, 4};  // zero elements, but its sub-products overflow
  expect_error([&] { flock::checked_numel(hidden, "x"); }, ErrorCode::LimitExceeded, "x");
  const std::vector<int64_t> negative{2, -1};
  expect_error([&] { flock::checked_numel(negative, "x"); }, ErrorCode::LimitExceeded, "negative");
  expect_error([] { flock::checked_bytes(int64_t(1) << 62, 8, "bytes"); }, ErrorCode::LimitExceeded, "bytes");
}

TEST(Checked, TensorNumelIsChecked) {
  Tensor t = Tensor::floats({k2to62 + 1, 4}, {1, 2, 3, 4});
  expect_error([&] { t.numel(); }, ErrorCode::InvalidInput, "shape");
  t.shape = {3, -2};
  expect_error([&] { t.numel(); }, ErrorCode::InvalidInput, "negative");
  t.shape = {0, int64_t(1) << 40};
  EXPECT_EQ(t.numel(), 0);
}

TEST(Checked, TensorAllocationStopsAtTheScopesLimit) {
  flock::TensorLimitScope limit(100);
  EXPECT_NO_THROW(Tensor(ElemType::Float, {10, 10}));
  expect_error([] { Tensor(ElemType::Double, {int64_t(1) << 20, int64_t(1) << 20}); }, ErrorCode::LimitExceeded,
               "over the limit of 100");
  expect_error([] { Tensor(ElemType::Float, {k2to62, 8}); }, ErrorCode::InvalidInput, "shape");
}

TEST(Checked, NormalizeAxisAndIndices) {
  EXPECT_EQ(flock::normalize_axis_checked(-1, 3, "Op"), 2);
  EXPECT_EQ(flock::normalize_axis_checked(3, 3, "Op", /*inclusive=*/true), 3);
  EXPECT_EQ(flock::normalize_axis_checked(-4, 3, "Op", /*inclusive=*/true), 0);
  expect_error([] { flock::normalize_axis_checked(3, 3, "Op"); }, ErrorCode::InvalidInput, "axis 3");
  expect_error([] { flock::normalize_axis_checked(-100, 3, "Op"); }, ErrorCode::InvalidInput, "axis -100");
  expect_error([] { flock::normalize_axis_checked(kInt64Min, 3, "Op"); }, ErrorCode::InvalidInput, "axis");
  const std::vector<int64_t> idx{0, -3, 2, 3};
  expect_error([&] { flock::check_indices(idx.data(), idx.data() + idx.size(), 3, "Gather 'g'", 1); },
               ErrorCode::InvalidInput, "Gather 'g': index 3 is out of range for axis 1 of size 3 (at position 3)");
  EXPECT_NO_THROW(flock::check_indices(idx.data(), idx.data() + 3, 3, "Gather", 0));
  expect_error([&] { flock::check_indices(idx.data(), idx.data() + 2, 3, "Op", 0, /*allow_negative=*/false); },
               ErrorCode::InvalidInput, "index -3 is out of range");
}

// ---- kernels: sizes ----

TEST(HostileKernels, ReshapeTargetThatWrapsToTheInputSize) {
  auto k = make(Node("Reshape", 2));
  Tensor x = Tensor::floats({4}, {1, 2, 3, 4});
  for (std::vector<int64_t> target : {std::vector<int64_t>{k2to62 + 1, 4}, {-1, k2to62, 8}, {0, k2to62, 4},
                                      {kInt64Max, kInt64Max}}) {
    Tensor s = ints(target);
    expect_code_in([&] { run(*k, {&x, &s}); }, {ErrorCode::InvalidInput, ErrorCode::LimitExceeded});
  }
  // allowzero: a literal 0 with huge other dimensions is still an overflow, not an empty tensor.
  auto kz = make(Node("Reshape", 2).i("allowzero", 1));
  Tensor empty = Tensor::floats({0}, {});
  Tensor s = ints({0, k2to62, 4});
  expect_code_in([&] { run(*kz, {&empty, &s}); }, {ErrorCode::InvalidInput, ErrorCode::LimitExceeded});
}

TEST(HostileKernels, ExpandTileConstantOfShapeTargets) {
  Tensor x = Tensor::floats({1}, {1});
  auto expand = make(Node("Expand", 2));
  Tensor big = ints({int64_t(1) << 40, int64_t(1) << 40});
  expect_code_in([&] { run(*expand, {&x, &big}); }, {ErrorCode::LimitExceeded});
  // An empty target with a huge other dimension: refused before a 2^40-long axis map is built.
  Tensor empty_target = ints({0, int64_t(1) << 40});
  expect_code_in([&] { run(*expand, {&x, &empty_target}); }, {ErrorCode::LimitExceeded});
  Tensor small_empty = ints({0, 1000});
  EXPECT_EQ(run(*expand, {&x, &small_empty})[0].shape, (std::vector<int64_t>{0, 1000}));

  auto tile = make(Node("Tile", 2));
  Tensor x4 = Tensor::floats({4}, {1, 2, 3, 4});
  Tensor reps = ints({k2to62});
  expect_code_in([&] { run(*tile, {&x4, &reps}); }, {ErrorCode::LimitExceeded});

  auto cos = make(Node("ConstantOfShape", 1));
  Tensor shape = ints({k2to62 + 1, 4});
  expect_code_in([&] { run(*cos, {&shape}); }, {ErrorCode::LimitExceeded, ErrorCode::InvalidInput});
  Tensor hidden = ints({0, k2to62, 4});
  expect_code_in([&] { run(*cos, {&hidden}); }, {ErrorCode::LimitExceeded, ErrorCode::InvalidInput});
}

TEST(HostileKernels, PadConcatAndRangeSizes) {
  auto pad = make(Node("Pad", 2));
  Tensor x = Tensor::floats({2}, {1, 2});
  Tensor pads = ints({kInt64Max, 1});
  expect_code_in([&] { run(*pad, {&x, &pads}); }, {ErrorCode::LimitExceeded, ErrorCode::InvalidInput});

  // Concat of empty tensors whose concatenated axis overflows.
  auto concat = make(Node("Concat", 2).i("axis", 1));
  Tensor a = Tensor::floats({0, kInt64Max}, {});
  Tensor b = Tensor::floats({0, 2}, {});
  expect_code_in([&] { run(*concat, {&a, &b}); }, {ErrorCode::LimitExceeded, ErrorCode::InvalidInput});

  auto range = make(Node("Range", 3));
  Tensor s = Tensor::int64s({}, {kInt64Min}), l = Tensor::int64s({}, {kInt64Max}), d = Tensor::int64s({}, {1});
  expect_code_in([&] { run(*range, {&s, &l, &d}); }, {ErrorCode::LimitExceeded});
}

// Found by fuzzing (the onnx_import and model_input targets' timeouts): Pad with pads of 2^27 rows
// passed the 2^31 output ceiling, built its 2^27-entry axis maps (a gigabyte, zeroed; 30-50 s under
// ASan) and only then met the run's tensor limit at the allocation. The run's limit now stops the
// shape before any map, with the kernel's own message.
TEST(HostileKernels, PadPastTheRunsTensorLimitStopsBeforeItsAxisMaps) {
  auto pad = make(Node("Pad", 2));
  Tensor x = Tensor::floats({1, 8}, std::vector<float>(8, 1.0f));
  Tensor pads = ints({int64_t(1) << 27, 1, 0, 1});
  flock::TensorLimitScope limit(int64_t(1) << 28);
  expect_error([&] { run(*pad, {&x, &pads}); }, ErrorCode::LimitExceeded, "Pad: output shape [134217729, 10] holds more than");
  // Under the limit it still runs.
  Tensor small = ints({2, 1, 0, 1});
  EXPECT_NO_THROW(run(*pad, {&x, &small}));
}

TEST(HostileKernels, BroadcastOfEmptyTensorsWithHugeDims) {
  // Both operands are empty, but the broadcast shape [2^40, 2^40, 0] has sub-products past 2^64.
  auto add = make(Node("Add", 2));
  Tensor a = Tensor::floats({int64_t(1) << 40, 1, 0}, {});
  Tensor b = Tensor::floats({1, int64_t(1) << 40, 0}, {});
  expect_code_in([&] { run(*add, {&a, &b}); }, {ErrorCode::LimitExceeded, ErrorCode::InvalidInput});
  auto where = make(Node("Where", 3));
  Tensor c = Tensor{ElemType::Bool, {1, 1, 0}};
  expect_code_in([&] { run(*where, {&c, &a, &b}); }, {ErrorCode::LimitExceeded, ErrorCode::InvalidInput});
  auto matmul = make(Node("MatMul", 2));
  Tensor ma = Tensor::floats({int64_t(1) << 40, 1, 0, 2}, {});
  Tensor mb = Tensor::floats({1, int64_t(1) << 40, 2, 0}, {});
  expect_code_in([&] { run(*matmul, {&ma, &mb}); }, {ErrorCode::LimitExceeded, ErrorCode::InvalidInput});
}

TEST(HostileKernels, WindowAttributesAndHugeSpatialDims) {
  Tensor x = Tensor::floats({1, 1, 4}, {1, 2, 3, 4});
  Tensor w = Tensor::floats({1, 1, 2}, {1, 1});
  for (const char* op : {"MaxPool", "AveragePool"}) {
    expect_error([&] { make(Node(op).ints("kernel_shape", {2}).ints("strides", {0})); }, ErrorCode::InvalidModel,
                 "strides");
    expect_error([&] { make(Node(op).ints("kernel_shape", {0})); }, ErrorCode::InvalidModel, "kernel_shape");
  }
  expect_error([&] { make(Node("MaxPool").ints("kernel_shape", {2}).ints("dilations", {0})); },
               ErrorCode::InvalidModel, "dilations");
  expect_error([&] { make(Node("Conv", 2).ints("strides", {0})); }, ErrorCode::InvalidModel, "strides");
  expect_error([&] { make(Node("Conv", 2).ints("dilations", {-1})); }, ErrorCode::InvalidModel, "dilations");
  expect_error([&] { make(Node("Conv", 2).ints("pads", {-1, 0})); }, ErrorCode::InvalidModel, "pads");
  // An empty batch that declares a spatial size near 2^63: the output size must not wrap.
  auto pool = make(Node("MaxPool").ints("kernel_shape", {2}).ints("pads", {1, 1}).ints("strides", {2}));
  Tensor huge = Tensor::floats({0, 1, kInt64Max}, {});
  expect_code_in([&] { run(*pool, {&huge}); }, {ErrorCode::LimitExceeded, ErrorCode::InvalidInput});
  auto same = make(Node("MaxPool").ints("kernel_shape", {3}).s("auto_pad", "SAME_UPPER").ints("strides", {2}));
  expect_code_in([&] { run(*same, {&huge}); }, {ErrorCode::LimitExceeded, ErrorCode::InvalidInput});
  auto conv = make(Node("Conv", 2).ints("pads", {1, 1}));
  Tensor wc = Tensor::floats({1, 1, 2}, {1, 1});
  expect_code_in([&] { run(*conv, {&huge, &wc}); }, {ErrorCode::LimitExceeded, ErrorCode::InvalidInput});
}

// ---- kernels: indices and axes ----

TEST(HostileKernels, GatherElementsChecksEveryIndexFirst) {
  auto k = make(Node("GatherElements", 2).i("axis", 1));
  Tensor x = Tensor::floats({2, 2}, {1, 2, 3, 4});
  for (int64_t bad : {int64_t(2), int64_t(-3), kInt64Max, kInt64Min}) {
    Tensor idx = Tensor::int64s({2, 2}, {0, 1, 1, bad});
    expect_error([&] { run(*k, {&x, &idx}); }, ErrorCode::InvalidInput, "out of range");
  }
  Tensor ok = Tensor::int64s({2, 2}, {1, -2, 0, -1});
  EXPECT_EQ(run(*k, {&x, &ok})[0].f, (std::vector<float>{2, 1, 3, 4}));
}

TEST(HostileKernels, OneHotSliceAndTopKWithExtremeValues) {
  auto onehot = make(Node("OneHot", 3));
  Tensor idx = ints({0, k2to62, kInt64Min, -1, 2});
  Tensor depth = Tensor::int64s({}, {3});
  Tensor values = Tensor::floats({2}, {0, 1});
  // Out-of-range indices give an all-off row (the specification), never a write outside the output.
  EXPECT_EQ(run(*onehot, {&idx, &depth, &values})[0].f,
            (std::vector<float>{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1}));
  Tensor huge_depth = Tensor::int64s({}, {kInt64Max});
  expect_code_in([&] { run(*onehot, {&idx, &huge_depth, &values}); },
                 {ErrorCode::InvalidInput, ErrorCode::LimitExceeded});

  auto slice = make(Node("Slice", 5));
  Tensor x = Tensor::floats({4}, {1, 2, 3, 4});
  Tensor starts = ints({kInt64Min}), ends = ints({kInt64Max}), axes = ints({0}), steps = ints({kInt64Max});
  EXPECT_EQ(run(*slice, {&x, &starts, &ends, &axes, &steps})[0].f, (std::vector<float>{1}));
  Tensor back_starts = ints({kInt64Max}), back_ends = ints({kInt64Min}), back_steps = ints({kInt64Min});
  EXPECT_EQ(run(*slice, {&x, &back_starts, &back_ends, &axes, &back_steps})[0].f, (std::vector<float>{4}));
  Tensor bad_axes = ints({1});
  expect_error([&] { run(*slice, {&x, &starts, &ends, &bad_axes, &steps}); }, ErrorCode::InvalidInput, "axis");

  auto topk = make(Node("TopK", 2, 2));
  Tensor k = Tensor::int64s({1}, {5});
  expect_error([&] { run(*topk, {&x, &k}, 2); }, ErrorCode::InvalidInput, "out of range");
  Tensor neg = Tensor::int64s({1}, {-1});
  expect_error([&] { run(*topk, {&x, &neg}, 2); }, ErrorCode::InvalidInput, "out of range");
}

TEST(HostileKernels, AxesOutOfRangeAreInvalidInput) {
  Tensor x = Tensor::floats({2, 2}, {1, 2, 3, 4});
  Tensor idx = ints({0});
  for (int64_t axis : {int64_t(2), int64_t(-3), int64_t(-100), kInt64Min, kInt64Max}) {
    SCOPED_TRACE(axis);
    expect_error([&] { run(*make(Node("Gather", 2).i("axis", axis)), {&x, &idx}); }, ErrorCode::InvalidInput, "axis");
    expect_error([&] { run(*make(Node("Softmax").i("axis", axis)), {&x}); }, ErrorCode::InvalidInput, "axis");
    expect_error([&] { run(*make(Node("Concat", 2).i("axis", axis)), {&x, &x}); }, ErrorCode::InvalidInput, "axis");
    expect_error([&] { run(*make(Node("Split", 1, 2).i("axis", axis)), {&x}, 2); }, ErrorCode::InvalidInput, "axis");
    expect_error([&] { run(*make(Node("ArgMax").i("axis", axis)), {&x}); }, ErrorCode::InvalidInput, "axis");
    expect_error([&] { run(*make(Node("Flatten").i("axis", axis == 2 ? 3 : axis)), {&x}); }, ErrorCode::InvalidInput,
                 "axis");
    Tensor scale = Tensor::floats({2}, {1, 1});
    expect_code_in([&] { run(*make(Node("LayerNormalization", 2).i("axis", axis)), {&x, &scale}); },
                   {ErrorCode::InvalidInput, ErrorCode::InvalidModel});
    Tensor axes = ints({axis});
    expect_error([&] { run(*make(Node("ReduceSum", 2)), {&x, &axes}); }, ErrorCode::InvalidInput, "axis");
    if (axis != 2 && axis != -3)  // those are valid insertion points for a rank-3 output
      expect_error([&] { run(*make(Node("Unsqueeze", 2)), {&x, &axes}); }, ErrorCode::InvalidInput, "axis");
    expect_error([&] { run(*make(Node("Squeeze", 2)), {&x, &axes}); }, ErrorCode::InvalidInput, "axis");
    Tensor ax = Tensor::int64s({}, {axis});
    expect_error([&] { run(*make(Node("CumSum", 2)), {&x, &ax}); }, ErrorCode::InvalidInput, "axis");
    Tensor k = Tensor::int64s({1}, {1});
    expect_error([&] { run(*make(Node("TopK", 2, 2).i("axis", axis)), {&x, &k}, 2); }, ErrorCode::InvalidInput,
                 "axis");
  }
  // Transpose: perm must be a permutation.
  expect_error([] { make(Node("Transpose").ints("perm", {0, 2})); }, ErrorCode::InvalidModel, "perm");
  expect_error([] { make(Node("Transpose").ints("perm", {0, -1})); }, ErrorCode::InvalidModel, "perm");
  expect_error([&] { run(*make(Node("Transpose").ints("perm", {0, 1, 2})), {&x}); }, ErrorCode::InvalidInput, "perm");
}

TEST(HostileKernels, SplitSizesThatOverflow) {
  auto k = make(Node("Split", 2, 2).i("axis", 0));
  Tensor x = Tensor::floats({4}, {1, 2, 3, 4});
  Tensor sizes = ints({kInt64Max, 5});  // wraps to 4 when added
  expect_code_in([&] { run(*k, {&x, &sizes}, 2); }, {ErrorCode::InvalidInput, ErrorCode::LimitExceeded});
}

}  // namespace
