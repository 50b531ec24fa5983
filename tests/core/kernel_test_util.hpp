// What every kernel unit test needs: build one ONNX node with attributes, instantiate its kernel
// through the registry the way the model compiler does, run it, and check errors and values.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "flock/kernel.hpp"
#include "flock/onnx.hpp"

namespace flock::testing {

// One NodeProto with inputs in0..in{n-1}, outputs out0..out{m-1}; the setters chain.
struct Node {
  onnx::NodeProto p;
  explicit Node(const std::string& op, int n_in = 1, int n_out = 1, const std::string& domain = "") {
    p.set_op_type(op);
    p.set_domain(domain);
    for (int k = 0; k < n_in; ++k) p.add_input("in" + std::to_string(k));
    for (int k = 0; k < n_out; ++k) p.add_output("out" + std::to_string(k));
  }
  onnx::AttributeProto* attr(const std::string& name, onnx::AttributeProto::AttributeType t) {
    auto* a = p.add_attribute();
    a->set_name(name);
    a->set_type(t);
    return a;
  }
  Node& i(const std::string& n, int64_t v) {
    attr(n, onnx::AttributeProto::INT)->set_i(v);
    return *this;
  }
  Node& f(const std::string& n, float v) {
    attr(n, onnx::AttributeProto::FLOAT)->set_f(v);
    return *this;
  }
  Node& s(const std::string& n, const std::string& v) {
    attr(n, onnx::AttributeProto::STRING)->set_s(v);
    return *this;
  }
  Node& ints(const std::string& n, const std::vector<int64_t>& v) {
    auto* a = attr(n, onnx::AttributeProto::INTS);
    for (auto x : v) a->add_ints(x);
    return *this;
  }
  Node& floats(const std::string& n, const std::vector<float>& v) {
    auto* a = attr(n, onnx::AttributeProto::FLOATS);
    for (auto x : v) a->add_floats(x);
    return *this;
  }
  Node& strings(const std::string& n, const std::vector<std::string>& v) {
    auto* a = attr(n, onnx::AttributeProto::STRINGS);
    for (const auto& x : v) a->add_strings(x);
    return *this;
  }
  Node& tensor(const std::string& n, const onnx::TensorProto& t) {
    *attr(n, onnx::AttributeProto::TENSOR)->mutable_t() = t;
    return *this;
  }
};

inline std::unique_ptr<Kernel> make_kernel(const Node& n, int64_t opset) {
  Attrs attrs(n.p);
  KernelContext ctx{n.p, attrs, opset};
  const KernelFactory* f = KernelRegistry::instance().find(n.p.domain(), n.p.op_type());
  if (!f) throw std::runtime_error("no kernel for " + n.p.op_type());
  return (*f)(ctx);
}

inline std::vector<Tensor> run_kernel(const Kernel& k, std::vector<const Tensor*> in, size_t n_out) {
  std::vector<Tensor> out(n_out);
  k.run(in, out);
  return out;
}

// fn must throw a flock::Error with this code whose message contains needle.
inline void expect_error(const std::function<void()>& fn, ErrorCode code, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_EQ(static_cast<int>(e.code()), static_cast<int>(code)) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

template <typename T>
void expect_all_near(const std::vector<T>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t k = 0; k < got.size(); ++k) EXPECT_NEAR(static_cast<double>(got[k]), want[k], tol) << "at " << k;
}

}  // namespace flock::testing
