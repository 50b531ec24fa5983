#include "flock/tensor.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "flock/checked.hpp"

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

Tensor Tensor::uninitialized(ElemType t, std::vector<int64_t> dims) {
  Tensor out;
  out.type = t;
  out.shape = std::move(dims);
  out.resize_storage(false);
  return out;
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

int64_t Tensor::numel() const { return checked_numel(shape, "tensor size", ErrorCode::InvalidInput); }

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

void Tensor::resize_storage(bool zero) {
  for (int64_t dim : shape) {
    if (dim < 0) fail(ErrorCode::Internal, fmt::format("tensor with negative dimension {}", dim));
  }
  const int64_t count = numel();
  const size_t n = static_cast<size_t>(count);
  if (count > TensorLimitScope::current())
    fail(ErrorCode::LimitExceeded,
         fmt::format("a tensor of shape [{}] would hold {} elements, over the limit of {}", fmt::join(shape, ", "),
                     count, TensorLimitScope::current()),
         "Raise flock.max_tensor_elements if the model is meant to compute tensors this large.");
  switch (type) {
    case ElemType::Float:
      if (TensorArena* arena = TensorArena::current()) arena->take(f, n, zero);
      else f.assign(n, 0.0f);
      break;
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

// ---- TensorLimitScope ----

namespace {
thread_local int64_t current_max_elements = std::numeric_limits<int64_t>::max();
}

int64_t TensorLimitScope::current() { return current_max_elements; }

TensorLimitScope::TensorLimitScope(int64_t max_elements) : prev_(current_max_elements) {
  current_max_elements = max_elements;
}

TensorLimitScope::~TensorLimitScope() { current_max_elements = prev_; }

// ---- TensorArena ----

namespace {
thread_local TensorArena* current_arena = nullptr;
}

TensorArena* TensorArena::current() { return current_arena; }

TensorArena::Scope::Scope(TensorArena* arena) : prev_(current_arena) { current_arena = arena; }

TensorArena::Scope::~Scope() { current_arena = prev_; }

void TensorArena::take(std::vector<float>& v, size_t n, bool zero) {
  ++taken_;
  // Best fit: the smallest buffer that holds n elements, if it is not more than about twice n.
  size_t best = pool_.size();
  for (size_t k = 0; k < pool_.size(); ++k) {
    const size_t cap = pool_[k].v.capacity();
    if (cap < n || cap > 2 * n + 1024) continue;
    if (best == pool_.size() || cap < pool_[best].v.capacity()) best = k;
  }
  if (best == pool_.size()) {
    v.assign(n, 0.0f);
    return;
  }
  v = std::move(pool_[best].v);
  pool_[best] = std::move(pool_.back());
  pool_.pop_back();
  if (zero) v.assign(n, 0.0f);
  else v.resize(n);  // shrinking keeps the old values; growing within the capacity zero-fills the tail
}

void TensorArena::give(std::vector<float>&& v) {
  if (v.capacity() == 0) return;
  pool_.push_back({std::move(v), run_});
  v = std::vector<float>();
}

void TensorArena::give(Tensor&& t) {
  if (t.type == ElemType::Float) give(std::move(t.f));
  t = Tensor();
}

size_t TensorArena::bytes() const {
  size_t total = 0;
  for (const Buffer& b : pool_) total += b.v.capacity() * sizeof(float);
  return total;
}

void TensorArena::end_run(size_t max_bytes) {
  // Newest first; keep as many buffers as this run allocated, within max_bytes.
  std::stable_sort(pool_.begin(), pool_.end(), [](const Buffer& a, const Buffer& b) { return a.stamp > b.stamp; });
  size_t keep = 0, total = 0;
  for (size_t k = 0; k < pool_.size() && keep < taken_; ++k) {
    const size_t size = pool_[k].v.capacity() * sizeof(float);
    if (total + size > max_bytes) continue;
    total += size;
    if (k != keep) std::swap(pool_[keep], pool_[k]);
    ++keep;
  }
  pool_.resize(keep);
  taken_ = 0;
  ++run_;
}

}  // namespace flock
