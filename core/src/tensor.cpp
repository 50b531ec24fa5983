#include "flock/tensor.hpp"

#include <fmt/format.h>

namespace flock {

const char* to_string(ElemType t) {
  switch (t) {
    case ElemType::Float: return "float";
    case ElemType::Double: return "double";
    case ElemType::Int64: return "int64";
    case ElemType::String: return "string";
    case ElemType::Bool: return "bool";
  }
  return "?";
}

Tensor Tensor::floats(std::vector<int64_t> dims, std::vector<float> values) {
  Tensor t;
  t.type = ElemType::Float;
  t.shape = std::move(dims);
  t.f = std::move(values);
  return t;
}

Tensor Tensor::doubles(std::vector<int64_t> dims, std::vector<double> values) {
  Tensor t;
  t.type = ElemType::Double;
  t.shape = std::move(dims);
  t.d = std::move(values);
  return t;
}

Tensor Tensor::int64s(std::vector<int64_t> dims, std::vector<int64_t> values) {
  Tensor t;
  t.type = ElemType::Int64;
  t.shape = std::move(dims);
  t.i = std::move(values);
  return t;
}

Tensor Tensor::strings(std::vector<int64_t> dims, std::vector<std::string> values) {
  Tensor t;
  t.type = ElemType::String;
  t.shape = std::move(dims);
  t.s = std::move(values);
  return t;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

size_t Tensor::size() const {
  switch (type) {
    case ElemType::Float: return f.size();
    case ElemType::Double: return d.size();
    case ElemType::Int64: return i.size();
    case ElemType::String: return s.size();
    case ElemType::Bool: return b.size();
  }
  return 0;
}

int64_t Tensor::rows() const { return shape.empty() ? 1 : shape[0]; }

int64_t Tensor::cols() const {
  int64_t r = rows();
  return r == 0 ? 0 : numel() / r;
}

void Tensor::resize_storage() {
  for (int64_t dim : shape) {
    if (dim < 0) fail(ErrorCode::Internal, fmt::format("tensor with negative dimension {}", dim));
  }
  size_t n = static_cast<size_t>(numel());
  switch (type) {
    case ElemType::Float: f.assign(n, 0.0f); break;
    case ElemType::Double: d.assign(n, 0.0); break;
    case ElemType::Int64: i.assign(n, 0); break;
    case ElemType::String: s.assign(n, std::string()); break;
    case ElemType::Bool: b.assign(n, 0); break;
  }
}

double Tensor::as_double(size_t idx) const {
  switch (type) {
    case ElemType::Float: return f[idx];
    case ElemType::Double: return d[idx];
    case ElemType::Int64: return static_cast<double>(i[idx]);
    case ElemType::Bool: return b[idx];
    case ElemType::String: break;
  }
  fail(ErrorCode::TypeMismatch, "a string tensor has no numeric value");
}

}  // namespace flock
