// A dense tensor of one element type. One storage vector is used, chosen by `type`.
#pragma once

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

  static Tensor floats(std::vector<int64_t> dims, std::vector<float> values);
  static Tensor doubles(std::vector<int64_t> dims, std::vector<double> values);
  static Tensor int64s(std::vector<int64_t> dims, std::vector<int64_t> values);
  static Tensor strings(std::vector<int64_t> dims, std::vector<std::string> values);

  // Number of elements the shape describes (1 for a scalar).
  int64_t numel() const;
  // Number of elements actually stored in the active vector.
  size_t size() const;
  // Rows = shape[0] (1 for a scalar), cols = numel / rows.
  int64_t rows() const;
  int64_t cols() const;
  // Allocates the active vector to numel() elements.
  void resize_storage();

  // Element as double, whatever the numeric type (String throws).
  double as_double(size_t idx) const;
};

}  // namespace flock
