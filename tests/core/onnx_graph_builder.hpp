// Whole ONNX models for core tests that run a graph through flock::Model: typed inputs and outputs
// (a negative dimension is the symbolic batch), random float initializers, int64 initializers,
// nodes with INT and INTS attributes.
#pragma once

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "flock/model.hpp"
#include "flock/onnx.hpp"

namespace flock::testing {

struct Graph {
  onnx::ModelProto m;
  onnx::GraphProto* g;  // m's graph: a Graph is not copied
  std::mt19937 rng;

  explicit Graph(int64_t opset = 13, uint32_t seed = 11) : rng(seed) {
    m.set_ir_version(8);
    auto* op = m.add_opset_import();
    op->set_domain("");
    op->set_version(opset);
    g = m.mutable_graph();
    g->set_name("g");
  }
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  static void typed(onnx::ValueInfoProto* v, const std::string& name, int elem, std::vector<int64_t> dims) {
    v->set_name(name);
    auto* tt = v->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(elem);
    for (int64_t d : dims) {
      if (d < 0) tt->mutable_shape()->add_dim()->set_dim_param("N");
      else tt->mutable_shape()->add_dim()->set_dim_value(d);
    }
  }
  void input(const std::string& name, std::vector<int64_t> dims, int elem = onnx::TensorProto::FLOAT) {
    typed(g->add_input(), name, elem, dims);
  }
  void output(const std::string& name, int rank, int elem = onnx::TensorProto::FLOAT) {
    auto* o = g->add_output();
    o->set_name(name);
    auto* tt = o->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(elem);
    for (int k = 0; k < rank; ++k) tt->mutable_shape()->add_dim()->set_dim_param(name + "_" + std::to_string(k));
  }
  // Normal(0, 0.5) values, float or double.
  void weights(const std::string& name, std::vector<int64_t> dims, int elem = onnx::TensorProto::FLOAT) {
    auto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(elem);
    int64_t n = 1;
    for (int64_t d : dims) {
      t->add_dims(d);
      n *= d;
    }
    std::normal_distribution<double> dist(0.0, 0.5);
    for (int64_t i = 0; i < n; ++i) {
      if (elem == onnx::TensorProto::DOUBLE) t->add_double_data(dist(rng));
      else t->add_float_data(static_cast<float>(dist(rng)));
    }
  }
  void ints(const std::string& name, std::vector<int64_t> v) {
    auto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::INT64);
    t->add_dims(static_cast<int64_t>(v.size()));
    for (int64_t x : v) t->add_int64_data(x);
  }
  onnx::NodeProto* node(const std::string& op, std::vector<std::string> in, std::vector<std::string> out) {
    auto* n = g->add_node();
    n->set_op_type(op);
    for (auto& s : in) n->add_input(s);
    for (auto& s : out) n->add_output(s);
    return n;
  }
  static void attr(onnx::NodeProto* n, const std::string& name, int64_t v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void attr(onnx::NodeProto* n, const std::string& name, std::vector<int64_t> v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  std::shared_ptr<const Model> load() const {
    std::string bytes;
    m.SerializeToString(&bytes);
    return Model::load(std::vector<uint8_t>(bytes.begin(), bytes.end()));
  }
};

}  // namespace flock::testing
