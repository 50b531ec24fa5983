// A dense tensor of one element type. One storage vector is used, chosen by `type`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "flock/error.hpp"

namespace flock {

enum class ElemType { Float, Double, Int64, String, Bool };

const char* to_string(ElemType t);

struct Tensor {
  ElemType type = ElemType::Float;
  std::vector<int64_t> shape;

  std::vector<float> f;         // Float
  std::vector<double> d;        // Double
  std::vector<int64_t> i;       // Int64
  std::vector<std::string> s;   // String
  std::vector<uint8_t> b;       // Bool

  Tensor() = default;
  Tensor(ElemType t, std::vector<int64_t> dims) : type(t), shape(std::move(dims)) { resize_storage(); }

  // A tensor whose values are left unspecified (old values of a recycled buffer, see TensorArena),
  // for a kernel that overwrites every element. Outside an arena, or for non-float types, zeros.
  static Tensor uninitialized(ElemType t, std::vector<int64_t> dims);

  static Tensor floats(std::vector<int64_t> dims, std::vector<float> values);
  static Tensor doubles(std::vector<int64_t> dims, std::vector<double> values);
  static Tensor int64s(std::vector<int64_t> dims, std::vector<int64_t> values);
  static Tensor strings(std::vector<int64_t> dims, std::vector<std::string> values);

  // Number of elements the shape describes (1 for a scalar). Checked: a negative dimension, or
  // non-zero dimensions whose product overflows int64, is InvalidInput (see checked_numel).
  int64_t numel() const;
  // Number of elements actually stored in the active vector.
  size_t size() const;
  // Rows = shape[0] (1 for a scalar), cols = numel / rows.
  int64_t rows() const;
  int64_t cols() const;
  // Allocates the active vector to numel() elements (LimitExceeded past TensorLimitScope's ceiling,
  // before allocating), zero-filled (or unspecified values when
  // `zero` is false and a buffer is recycled from the thread's current TensorArena).
  void resize_storage(bool zero = true);

  // Element as double, whatever the numeric type (String throws).
  double as_double(size_t idx) const;
};

// The most elements a tensor may be allocated with on this thread while the scope is active (a model
// run sets its Limits::max_tensor_elements), so that a huge computed shape fails before it allocates
// rather than after. Without a scope: no ceiling beyond int64.
class TensorLimitScope {
 public:
  explicit TensorLimitScope(int64_t max_elements);
  ~TensorLimitScope();
  TensorLimitScope(const TensorLimitScope&) = delete;
  TensorLimitScope& operator=(const TensorLimitScope&) = delete;
  static int64_t current();

 private:
  int64_t prev_;
};

// Recycled float storage for the tensors of a model run. While a TensorArena::Scope is active on
// a thread, float tensors allocated there (the Tensor(type, dims) constructor, uninitialized())
// take a buffer from the arena when one is large enough, and the run gives the storage of values
// it no longer needs back with give(). A second run with the same shapes then allocates (and page
// faults) nothing. One arena serves one run at a time; it is not thread safe.
class TensorArena {
 public:
  // Storage of at least n elements, resized to n: recycled if a buffer fits (not much larger than
  // n, so a small tensor does not pin a large buffer), else fresh. Zero-filled when `zero`;
  // otherwise fresh elements are zero and recycled ones keep old values.
  void take(std::vector<float>& v, size_t n, bool zero);
  // Keeps the tensor's float storage for later runs (other types are freed).
  void give(Tensor&& t);
  void give(std::vector<float>&& v);
  // Called after a run: frees the buffers this run neither took nor gave back beyond the number it
  // took, oldest first, and keeps at most `max_bytes` in total.
  void end_run(size_t max_bytes);

  size_t buffers() const { return pool_.size(); }
  size_t bytes() const;

  // Makes `arena` the current thread's arena for the scope (nullptr: none), restoring the previous
  // one after.
  class Scope {
   public:
    explicit Scope(TensorArena* arena);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    TensorArena* prev_;
  };
  static TensorArena* current();

 private:
  struct Buffer {
    std::vector<float> v;
    uint64_t stamp = 0;  // run in which it was last taken or given
  };
  std::vector<Buffer> pool_;
  uint64_t run_ = 1;
  size_t taken_ = 0;  // allocations served (recycled or fresh) in this run
};

}  // namespace flock
