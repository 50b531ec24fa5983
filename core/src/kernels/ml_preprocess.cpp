// ai.onnx.ml preprocessing operators: Scaler, Normalizer, Imputer, OneHotEncoder, LabelEncoder,
// Binarizer, ArrayFeatureExtractor, FeatureVectorizer, ZipMap.
//
// Semantics follow ONNX Runtime's CPU kernels (onnxruntime/core/providers/cpu/ml/*.cc); where ORT
// would read out of bounds or silently ignore a malformed attribute, Flock raises an error instead.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "flock/checked.hpp"
#include "flock/kernel.hpp"
#include "ml_preprocess.hpp"
#include "kernel_io.hpp"

namespace flock {
namespace {

constexpr const char* kMl = "ai.onnx.ml";

using kernels::input;
using kernels::set_out;

bool is_numeric(ElemType t) { return t == ElemType::Float || t == ElemType::Double || t == ElemType::Int64; }

void require_numeric(const Tensor& t, const std::string& where, const char* name) {
  if (!is_numeric(t.type))
    fail(ErrorCode::InvalidInput,
         fmt::format("{}: input '{}' has element type {}; expected float, double or int64", where, name,
                     to_string(t.type)));
}

// Element k as float (the cast ONNX Runtime applies before computing in float).
float as_float(const Tensor& t, size_t k) {
  switch (t.type) {
    case ElemType::Float: return t.f[k];
    case ElemType::Double: return static_cast<float>(t.d[k]);
    case ElemType::Int64: return static_cast<float>(t.i[k]);
    case ElemType::Bool: return t.b[k] ? 1.0f : 0.0f;
    case ElemType::String: break;
  }
  fail(ErrorCode::InvalidInput, "string element where a number is needed");
}

// [N, F] view used by Scaler / Imputer / Normalizer: stride F is dims[0] for 1-D and dims[1] for 2-D.
int64_t feature_stride(const Tensor& t, const std::string& where, bool allow_higher_rank) {
  if (t.shape.empty()) fail(ErrorCode::InvalidInput, fmt::format("{}: input is a scalar; expected [N, F] or [F]", where));
  if (!allow_higher_rank && t.shape.size() > 2)
    fail(ErrorCode::InvalidInput, fmt::format("{}: input has rank {}; expected [N, F] or [F]", where, t.shape.size()));
  return t.shape.size() == 1 ? t.shape[0] : t.shape[1];
}

// ---------------------------------------------------------------------------------------------------
// Scaler: Y = (X - offset) * scale, float output.

class Scaler final : public preprocess::ScalerKernel {
 public:
  explicit Scaler(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    scale_ = ctx.attrs.get_floats("scale");
    offset_ = ctx.attrs.get_floats("offset");
    if (scale_.empty() && offset_.empty())
      fail(ErrorCode::InvalidModel, fmt::format("{}: neither scale nor offset is set", where_));
    if (scale_.empty()) scale_.assign(offset_.size(), 1.0f);
    if (offset_.empty()) offset_.assign(scale_.size(), 0.0f);
    if (scale_.size() != offset_.size())
      fail(ErrorCode::InvalidModel,
           fmt::format("{}: scale has {} values and offset {}; they must have the same length", where_, scale_.size(),
                       offset_.size()));
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "X");
    require_numeric(x, where_, "X");
    const int64_t stride = feature_stride(x, where_, scale_.size() == 1);
    Tensor y(ElemType::Float, x.shape);
    const size_t n = y.f.size();
    if (scale_.size() == 1) {
      for (size_t k = 0; k < n; ++k) y.f[k] = (as_float(x, k) - offset_[0]) * scale_[0];
    } else if (static_cast<int64_t>(scale_.size()) == stride) {
      const size_t s = static_cast<size_t>(stride);
      for (size_t k = 0; k < n; ++k) y.f[k] = (as_float(x, k) - offset_[k % s]) * scale_[k % s];
    } else {
      fail(ErrorCode::InvalidInput,
           fmt::format("{}: input has {} features per row; scale and offset have {} values (expected {} or 1)", where_,
                       stride, scale_.size(), stride));
    }
    set_out(out, 0, std::move(y));
  }

  const std::vector<float>& offsets() const override { return offset_; }
  const std::vector<float>& scales() const override { return scale_; }

 private:
  std::string where_;
  std::vector<float> scale_, offset_;
};

// ---------------------------------------------------------------------------------------------------
// Normalizer: per row, MAX (x / max x), L1 (x / sum |x|), L2 (x / sqrt(sum x²)); unchanged if the
// divisor is 0. Float output, computed in float as ONNX Runtime does.

class Normalizer final : public Kernel {
 public:
  enum class Norm { Max, L1, L2 };

  explicit Normalizer(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    const std::string n = ctx.attrs.get_string("norm", "MAX");
    if (n == "MAX") norm_ = Norm::Max;
    else if (n == "L1") norm_ = Norm::L1;
    else if (n == "L2") norm_ = Norm::L2;
    else fail(ErrorCode::UnsupportedOperator, fmt::format("{}: norm '{}' is not one of MAX, L1, L2", where_, n));
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "X");
    require_numeric(x, where_, "X");
    const int64_t cols = feature_stride(x, where_, false);
    const int64_t rows = x.shape.size() == 1 ? 1 : x.shape[0];
    Tensor y(ElemType::Float, x.shape);
    for (int64_t r = 0; r < rows; ++r) {
      const size_t base = static_cast<size_t>(r * cols);
      float* o = y.f.data() + base;
      switch (norm_) {
        case Norm::Max: {
          float m = std::numeric_limits<float>::lowest();
          for (int64_t c = 0; c < cols; ++c) m = std::max(m, as_float(x, base + c));
          for (int64_t c = 0; c < cols; ++c) o[c] = m != 0.0f ? as_float(x, base + c) / m : as_float(x, base + c);
          break;
        }
        case Norm::L1: {
          float sum = 0.0f;
          for (int64_t c = 0; c < cols; ++c) sum += std::abs(as_float(x, base + c));
          for (int64_t c = 0; c < cols; ++c) o[c] = sum != 0.0f ? as_float(x, base + c) / sum : as_float(x, base + c);
          break;
        }
        case Norm::L2: {
          float sum = 0.0f;
          for (int64_t c = 0; c < cols; ++c) {
            const float v = as_float(x, base + c);
            sum += v * v;
          }
          for (int64_t c = 0; c < cols; ++c) {
            const float v = as_float(x, base + c);
            if (sum != 0.0f) {
              const float q = std::sqrt(v * v / sum);
              o[c] = v < 0 ? -q : q;
            } else {
              o[c] = v;
            }
          }
          break;
        }
      }
    }
    set_out(out, 0, std::move(y));
  }

 private:
  std::string where_;
  Norm norm_ = Norm::Max;
};

// ---------------------------------------------------------------------------------------------------
// Imputer: elements equal to the replaced value (or NaN when the replaced value is NaN) become the
// imputed value (one for all features, or one per feature). Output type = input type.

class Imputer final : public preprocess::ImputerKernel {
 public:
  explicit Imputer(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    const Attrs& a = ctx.attrs;
    floats_ = a.get_floats("imputed_value_floats");
    ints_ = a.get_ints("imputed_value_int64s");
    if (floats_.empty() == ints_.empty())
      fail(ErrorCode::InvalidModel,
           fmt::format("{}: exactly one of imputed_value_floats and imputed_value_int64s must be set", where_));
    use_floats_ = !floats_.empty();
    replaced_float_ = a.get_float("replaced_value_float", 0.0f);
    replaced_int_ = a.get_int("replaced_value_int64", 0);
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "X");
    const size_t count = use_floats_ ? floats_.size() : ints_.size();
    const int64_t stride = feature_stride(x, where_, count == 1);
    if (count != 1 && static_cast<int64_t>(count) != stride)
      fail(ErrorCode::InvalidInput,
           fmt::format("{}: input has {} features per row; {} imputed values (expected {} or 1)", where_, stride, count,
                       stride));
    const size_t s = static_cast<size_t>(stride);
    Tensor y = x;
    if (use_floats_) {
      const bool nan_mode = std::isnan(replaced_float_);
      auto impute = [&](auto& v) {
        for (size_t k = 0; k < v.size(); ++k) {
          const bool hit = nan_mode ? std::isnan(v[k]) : v[k] == replaced_float_;
          if (hit) v[k] = floats_[count == 1 ? 0 : k % s];
        }
      };
      if (x.type == ElemType::Float) impute(y.f);
      else if (x.type == ElemType::Double) impute(y.d);
      else
        fail(ErrorCode::InvalidInput,
             fmt::format("{}: input has element type {}; imputed_value_floats needs float or double", where_,
                         to_string(x.type)));
    } else {
      if (x.type != ElemType::Int64)
        fail(ErrorCode::InvalidInput,
             fmt::format("{}: input has element type {}; imputed_value_int64s needs int64", where_, to_string(x.type)));
      for (size_t k = 0; k < y.i.size(); ++k)
        if (y.i[k] == replaced_int_) y.i[k] = ints_[count == 1 ? 0 : k % s];
    }
    set_out(out, 0, std::move(y));
  }

  const std::vector<float>& imputed_floats() const override { return floats_; }
  float replaced_float() const override { return replaced_float_; }

 private:
  std::string where_;
  std::vector<float> floats_;
  std::vector<int64_t> ints_;
  bool use_floats_ = true;
  float replaced_float_ = 0.0f;
  int64_t replaced_int_ = 0;
};

// ---------------------------------------------------------------------------------------------------
// OneHotEncoder: output shape = input shape + [K], float. Numeric inputs are truncated to int64 and
// looked up in cats_int64s; strings in cats_strings.

class OneHotEncoder final : public Kernel {
 public:
  explicit OneHotEncoder(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    const Attrs& a = ctx.attrs;
    std::vector<int64_t> ci = a.get_ints("cats_int64s");
    std::vector<std::string> cs = a.get_strings("cats_strings");
    if (ci.empty() == cs.empty())
      fail(ErrorCode::InvalidModel, fmt::format("{}: exactly one of cats_int64s and cats_strings must be set", where_));
    strings_ = !cs.empty();
    k_ = static_cast<int64_t>(strings_ ? cs.size() : ci.size());
    // Later duplicates win, as in ONNX Runtime's map assignment.
    for (size_t j = 0; j < ci.size(); ++j) int_index_[ci[j]] = static_cast<int64_t>(j);
    for (size_t j = 0; j < cs.size(); ++j) string_index_[cs[j]] = static_cast<int64_t>(j);
    zeros_ = a.get_int("zeros", 1) != 0;
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "X");
    if (strings_ && x.type != ElemType::String)
      fail(ErrorCode::InvalidInput,
           fmt::format("{}: input has element type {}; cats_strings needs string input", where_, to_string(x.type)));
    if (!strings_ && !is_numeric(x.type))
      fail(ErrorCode::InvalidInput,
           fmt::format("{}: input has element type {}; cats_int64s needs numeric input", where_, to_string(x.type)));
    std::vector<int64_t> shape = x.shape;
    shape.push_back(k_);
    Tensor y(ElemType::Float, shape);
    const size_t n = x.size();
    for (size_t e = 0; e < n; ++e) {
      int64_t idx = -1;
      if (strings_) {
        auto it = string_index_.find(x.s[e]);
        if (it != string_index_.end()) idx = it->second;
      } else {
        std::optional<int64_t> v;
        if (x.type == ElemType::Int64) {
          v = x.i[e];
        } else {
          const double d = x.type == ElemType::Float ? x.f[e] : x.d[e];
          if (d >= -9.2233720368547758e18 && d < 9.2233720368547758e18) v = static_cast<int64_t>(d);
        }
        if (v) {
          auto it = int_index_.find(*v);
          if (it != int_index_.end()) idx = it->second;
        }
      }
      if (idx >= 0) {
        y.f[e * static_cast<size_t>(k_) + static_cast<size_t>(idx)] = 1.0f;
      } else if (!zeros_) {
        fail(ErrorCode::InvalidInput,
             fmt::format("{}: element {} ({}) is not a known category and zeros = 0", where_, e,
                         strings_ ? "'" + x.s[e] + "'" : fmt::format("{}", x.as_double(e))));
      }
    }
    set_out(out, 0, std::move(y));
  }

 private:
  std::string where_;
  bool strings_ = false;
  int64_t k_ = 0;
  std::unordered_map<int64_t, int64_t> int_index_;
  std::unordered_map<std::string, int64_t> string_index_;
  bool zeros_ = true;
};

// ---------------------------------------------------------------------------------------------------
// LabelEncoder.
//   opset 1: classes_strings; string input -> int64 index (default_int64, -1), int64 input ->
//            classes_strings[index] (default_string, "_Unused").
//   opset 2+: keys_{strings,int64s,floats} -> values_{strings,int64s,floats}; default_* by value type.
//   opset 4:  keys_tensor / values_tensor / default_tensor (also double keys and values).
// Float keys match NaN to NaN (ORT's NaN-aware hash) and 0.0 to -0.0.

class LabelEncoder final : public Kernel {
 public:
  explicit LabelEncoder(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    const Attrs& a = ctx.attrs;
    const bool v2 = a.has("keys_strings") || a.has("keys_int64s") || a.has("keys_floats") || a.has("keys_tensor") ||
                    a.has("values_strings") || a.has("values_int64s") || a.has("values_floats") ||
                    a.has("values_tensor");
    if (!v2) {
      if (ctx.opset >= 2 && !a.has("classes_strings"))
        fail(ErrorCode::InvalidModel, fmt::format("{}: no keys_* / values_* attributes", where_));
      init_v1(a);
    } else {
      init_v2(a);
    }
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "X");
    if (v1_) {
      run_v1(x, out);
      return;
    }
    const size_t n = x.size();
    Tensor y(value_type_, x.shape);
    auto put = [&](size_t k, const Value* v) {
      const Value& val = v ? *v : default_;
      switch (value_type_) {
        case ElemType::String: y.s[k] = val.s; break;
        case ElemType::Int64: y.i[k] = val.i; break;
        case ElemType::Float: y.f[k] = static_cast<float>(val.d); break;
        case ElemType::Double: y.d[k] = val.d; break;
        case ElemType::Bool: break;
      }
    };
    switch (key_type_) {
      case ElemType::String: {
        if (x.type != ElemType::String) type_error(x);
        for (size_t k = 0; k < n; ++k) {
          auto it = string_map_.find(x.s[k]);
          put(k, it == string_map_.end() ? nullptr : &it->second);
        }
        break;
      }
      case ElemType::Int64: {
        if (x.type != ElemType::Int64) type_error(x);
        for (size_t k = 0; k < n; ++k) {
          auto it = int_map_.find(x.i[k]);
          put(k, it == int_map_.end() ? nullptr : &it->second);
        }
        break;
      }
      default: {  // Float or Double keys
        if (x.type != ElemType::Float && x.type != ElemType::Double) type_error(x);
        for (size_t k = 0; k < n; ++k) {
          double v = x.type == ElemType::Float ? x.f[k] : x.d[k];
          if (key_type_ == ElemType::Float) v = static_cast<float>(v);
          const Value* found = nullptr;
          if (std::isnan(v)) {
            if (nan_value_) found = &*nan_value_;
          } else {
            auto it = float_map_.find(v == 0.0 ? 0.0 : v);
            if (it != float_map_.end()) found = &it->second;
          }
          put(k, found);
        }
        break;
      }
    }
    set_out(out, 0, std::move(y));
  }

 private:
  struct Value {
    std::string s;
    int64_t i = 0;
    double d = 0.0;
  };

  [[noreturn]] void type_error(const Tensor& x) const {
    fail(ErrorCode::InvalidInput, fmt::format("{}: input has element type {}; the keys are {}", where_,
                                              to_string(x.type), to_string(key_type_)));
  }

  void init_v1(const Attrs& a) {
    v1_ = true;
    classes_ = a.get_strings("classes_strings");
    for (size_t k = 0; k < classes_.size(); ++k) string_map_[classes_[k]].i = static_cast<int64_t>(k);
    default_int_v1_ = a.get_int("default_int64", -1);
    default_string_v1_ = a.get_string("default_string", "_Unused");
  }

  void run_v1(const Tensor& x, std::vector<Tensor>& out) const {
    const size_t n = x.size();
    if (x.type == ElemType::String) {
      Tensor y(ElemType::Int64, x.shape);
      for (size_t k = 0; k < n; ++k) {
        auto it = string_map_.find(x.s[k]);
        y.i[k] = it == string_map_.end() ? default_int_v1_ : it->second.i;
      }
      set_out(out, 0, std::move(y));
    } else if (x.type == ElemType::Int64) {
      Tensor y(ElemType::String, x.shape);
      for (size_t k = 0; k < n; ++k) {
        const int64_t v = x.i[k];
        y.s[k] = (v >= 0 && v < static_cast<int64_t>(classes_.size())) ? classes_[static_cast<size_t>(v)]
                                                                          : default_string_v1_;
      }
      set_out(out, 0, std::move(y));
    } else {
      fail(ErrorCode::InvalidInput,
           fmt::format("{}: input has element type {}; expected string or int64", where_, to_string(x.type)));
    }
  }

  // Keys or values from `<prefix>_{strings,int64s,floats}` or `<prefix>_tensor`.
  struct Column {
    ElemType type = ElemType::String;
    std::vector<std::string> s;
    std::vector<int64_t> i;
    std::vector<double> d;
    size_t size() const { return type == ElemType::String ? s.size() : type == ElemType::Int64 ? i.size() : d.size(); }
  };

  Column read_column(const Attrs& a, const std::string& prefix) const {
    Column c;
    int set = 0;
    if (a.has(prefix + "_strings")) {
      ++set;
      c.type = ElemType::String;
      c.s = a.get_strings(prefix + "_strings");
    }
    if (a.has(prefix + "_int64s")) {
      ++set;
      c.type = ElemType::Int64;
      c.i = a.get_ints(prefix + "_int64s");
    }
    if (a.has(prefix + "_floats")) {
      ++set;
      c.type = ElemType::Float;
      std::vector<float> f = a.get_floats(prefix + "_floats");
      c.d.assign(f.begin(), f.end());
    }
    if (a.has(prefix + "_tensor")) {
      ++set;
      Tensor t = a.get_tensor(prefix + "_tensor");
      c.type = t.type;
      switch (t.type) {
        case ElemType::String: c.s = t.s; break;
        case ElemType::Int64: c.i = t.i; break;
        case ElemType::Float: c.d.assign(t.f.begin(), t.f.end()); break;
        case ElemType::Double: c.d = t.d; break;
        case ElemType::Bool:
          fail(ErrorCode::UnsupportedOperator, fmt::format("{}: {}_tensor of type bool is not supported", where_, prefix));
      }
    }
    if (set != 1)
      fail(ErrorCode::InvalidModel,
           fmt::format("{}: exactly one of {}_strings, {}_int64s, {}_floats, {}_tensor must be set ({} are)", where_,
                       prefix, prefix, prefix, prefix, set));
    return c;
  }

  void init_v2(const Attrs& a) {
    Column keys = read_column(a, "keys");
    Column values = read_column(a, "values");
    if (keys.size() != values.size())
      fail(ErrorCode::InvalidModel,
           fmt::format("{}: {} keys but {} values; they must have the same length", where_, keys.size(), values.size()));
    key_type_ = keys.type;
    value_type_ = values.type;

    // Default value: default_tensor (opset 4), else default_<value type>, else the spec default.
    switch (value_type_) {
      case ElemType::String: default_.s = a.get_string("default_string", "_Unused"); break;
      case ElemType::Int64: default_.i = a.get_int("default_int64", -1); break;
      default: default_.d = a.get_float("default_float", -0.0f); break;
    }
    if (a.has("default_tensor")) {
      Tensor t = a.get_tensor("default_tensor");
      if (t.size() != 1)
        fail(ErrorCode::InvalidModel, fmt::format("{}: default_tensor has {} values; expected 1", where_, t.size()));
      const bool ok = t.type == value_type_ || (value_type_ == ElemType::Double && t.type == ElemType::Float) ||
                      (value_type_ == ElemType::Float && t.type == ElemType::Double);
      if (!ok)
        fail(ErrorCode::InvalidModel, fmt::format("{}: default_tensor has type {} but the values are {}", where_,
                                                  to_string(t.type), to_string(value_type_)));
      switch (value_type_) {
        case ElemType::String: default_.s = t.s[0]; break;
        case ElemType::Int64: default_.i = t.i[0]; break;
        default: default_.d = t.as_double(0); break;
      }
    }

    for (size_t k = 0; k < keys.size(); ++k) {
      Value v;
      switch (value_type_) {
        case ElemType::String: v.s = values.s[k]; break;
        case ElemType::Int64: v.i = values.i[k]; break;
        default: v.d = values.d[k]; break;
      }
      // First occurrence wins (ORT's emplace).
      switch (key_type_) {
        case ElemType::String: string_map_.emplace(keys.s[k], std::move(v)); break;
        case ElemType::Int64: int_map_.emplace(keys.i[k], std::move(v)); break;
        default: {
          const double key = keys.d[k];
          if (std::isnan(key)) {
            if (!nan_value_) nan_value_ = std::move(v);
          } else {
            float_map_.emplace(key == 0.0 ? 0.0 : key, std::move(v));
          }
          break;
        }
      }
    }
  }

  std::string where_;
  bool v1_ = false;
  // opset 1
  std::vector<std::string> classes_;
  int64_t default_int_v1_ = -1;
  std::string default_string_v1_;
  // opset 2+
  ElemType key_type_ = ElemType::String;
  ElemType value_type_ = ElemType::Int64;
  std::unordered_map<std::string, Value> string_map_;
  std::unordered_map<int64_t, Value> int_map_;
  std::map<double, Value> float_map_;
  std::optional<Value> nan_value_;
  Value default_;
};

// ---------------------------------------------------------------------------------------------------
// Binarizer: x > threshold ? 1 : 0, same element type; NaN input is an error (as in ORT).

class Binarizer final : public Kernel {
 public:
  explicit Binarizer(const KernelContext& ctx)
      : where_(ctx.attrs.where()), threshold_(ctx.attrs.get_float("threshold", 0.0f)) {}

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "X");
    require_numeric(x, where_, "X");
    Tensor y = x;
    auto bin = [&](auto& v) {
      for (size_t k = 0; k < v.size(); ++k) {
        const double d = static_cast<double>(v[k]);
        if (std::isnan(d)) fail(ErrorCode::InvalidInput, fmt::format("{}: input element {} is NaN", where_, k));
        v[k] = d > static_cast<double>(threshold_) ? 1 : 0;
      }
    };
    if (y.type == ElemType::Float) bin(y.f);
    else if (y.type == ElemType::Double) bin(y.d);
    else bin(y.i);
    set_out(out, 0, std::move(y));
  }

 private:
  std::string where_;
  float threshold_ = 0.0f;
};

// ---------------------------------------------------------------------------------------------------
// ArrayFeatureExtractor: Z[..., j] = X[..., indices[j]] along the last axis. A 1-D X gives [1, K].

class ArrayFeatureExtractor final : public Kernel {
 public:
  explicit ArrayFeatureExtractor(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    if (ctx.node.input_size() < 2)
      fail(ErrorCode::InvalidModel, fmt::format("{}: needs two inputs (X and indices), has {}", where_,
                                                ctx.node.input_size()));
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "X");
    const Tensor& idx = input(in, 1, where_, "Y");
    if (x.type == ElemType::Bool)
      fail(ErrorCode::InvalidInput, fmt::format("{}: input X has element type bool", where_));
    if (idx.type != ElemType::Int64)
      fail(ErrorCode::InvalidInput,
           fmt::format("{}: indices have element type {}; expected int64", where_, to_string(idx.type)));
    if (x.shape.empty()) fail(ErrorCode::InvalidInput, fmt::format("{}: input X is a scalar", where_));
    if (idx.i.empty()) fail(ErrorCode::InvalidInput, fmt::format("{}: no indices", where_));
    const int64_t stride = x.shape.back();
    for (size_t j = 0; j < idx.i.size(); ++j) {
      if (idx.i[j] < 0 || idx.i[j] >= stride)
        fail(ErrorCode::InvalidInput,
             fmt::format("{}: index {} is out of range for a last dimension of {}", where_, idx.i[j], stride));
    }
    const int64_t k = static_cast<int64_t>(idx.i.size());
    std::vector<int64_t> shape = x.shape;
    if (shape.size() == 1) shape = {1, k};
    else shape.back() = k;
    Tensor z(x.type, shape);
    const int64_t outer = stride == 0 ? 0 : x.numel() / stride;
    auto gather = [&](const auto& src, auto& dst) {
      size_t o = 0;
      for (int64_t r = 0; r < outer; ++r)
        for (int64_t j = 0; j < k; ++j) dst[o++] = src[static_cast<size_t>(r * stride + idx.i[static_cast<size_t>(j)])];
    };
    switch (x.type) {
      case ElemType::Float: gather(x.f, z.f); break;
      case ElemType::Double: gather(x.d, z.d); break;
      case ElemType::Int64: gather(x.i, z.i); break;
      case ElemType::String: gather(x.s, z.s); break;
      case ElemType::Bool: break;
    }
    set_out(out, 0, std::move(z));
  }

 private:
  std::string where_;
};

// ---------------------------------------------------------------------------------------------------
// FeatureVectorizer: Y[N, sum(inputdimensions)] float; input k (flattened to [N, width]) fills its
// inputdimensions[k] columns; as in ORT, a wider input is truncated and a narrower one zero-padded.

class FeatureVectorizer final : public Kernel {
 public:
  explicit FeatureVectorizer(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    dims_ = ctx.attrs.get_ints("inputdimensions");
    if (dims_.empty()) fail(ErrorCode::InvalidModel, fmt::format("{}: inputdimensions is missing or empty", where_));
    for (int64_t d : dims_) {
      if (d < 0) fail(ErrorCode::InvalidModel, fmt::format("{}: inputdimensions has a negative value {}", where_, d));
      total_ = checked_add(total_, d, fmt::format("{}: sum of inputdimensions", where_), ErrorCode::InvalidModel);
    }
    if (ctx.node.input_size() != static_cast<int>(dims_.size()))
      fail(ErrorCode::InvalidModel, fmt::format("{}: {} inputs but {} inputdimensions", where_, ctx.node.input_size(),
                                                dims_.size()));
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    if (in.size() != dims_.size())
      fail(ErrorCode::InvalidInput, fmt::format("{}: {} inputs arrived; inputdimensions has {}", where_, in.size(),
                                                dims_.size()));
    int64_t n = -1;
    for (size_t k = 0; k < in.size(); ++k) {
      const Tensor& x = input(in, k, where_, "X");
      require_numeric(x, where_, "X");
      if (x.shape.empty()) fail(ErrorCode::InvalidInput, fmt::format("{}: input {} is a scalar", where_, k));
      const int64_t rows = x.shape.size() == 1 ? 1 : x.shape[0];
      if (n < 0) n = rows;
      else if (rows != n)
        fail(ErrorCode::InvalidInput, fmt::format("{}: input {} has {} rows; input 0 has {}", where_, k, rows, n));
    }
    Tensor y(ElemType::Float, {n, total_});
    int64_t offset = 0;
    for (size_t k = 0; k < in.size(); ++k) {
      const Tensor& x = *in[k];
      const int64_t rows = x.shape.size() == 1 ? 1 : x.shape[0];
      int64_t width = 1;
      if (x.shape.size() == 1) width = x.shape[0];
      else
        for (size_t d = 1; d < x.shape.size(); ++d) width *= x.shape[d];
      const int64_t copy = std::min(width, dims_[k]);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < copy; ++c)
          y.f[static_cast<size_t>(r * total_ + offset + c)] = as_float(x, static_cast<size_t>(r * width + c));
      offset += dims_[k];
    }
    set_out(out, 0, std::move(y));
  }

 private:
  std::string where_;
  std::vector<int64_t> dims_;
  int64_t total_ = 0;
};

// ---------------------------------------------------------------------------------------------------
// ZipMap: Flock keeps the [N, C] float tensor; the keys stay in the node's classlabels_* attribute.

class ZipMap final : public Kernel {
 public:
  explicit ZipMap(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    const size_t ni = ctx.attrs.get_ints("classlabels_int64s").size();
    const size_t ns = ctx.attrs.get_strings("classlabels_strings").size();
    if ((ni == 0) == (ns == 0))
      fail(ErrorCode::InvalidModel,
           fmt::format("{}: exactly one of classlabels_int64s and classlabels_strings must be set", where_));
    labels_ = static_cast<int64_t>(ni + ns);
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "X");
    if (x.type != ElemType::Float)
      fail(ErrorCode::InvalidInput,
           fmt::format("{}: input has element type {}; expected float", where_, to_string(x.type)));
    if (x.shape.empty() || x.shape.size() > 2)
      fail(ErrorCode::InvalidInput, fmt::format("{}: input has rank {}; expected [N, C] or [C]", where_, x.shape.size()));
    if (x.shape.back() != labels_)
      fail(ErrorCode::InvalidInput,
           fmt::format("{}: input has {} columns but there are {} class labels", where_, x.shape.back(), labels_));
    set_out(out, 0, x);
  }

 private:
  std::string where_;
  int64_t labels_ = 0;
};

template <typename K>
void add(KernelRegistry& r, const char* op) {
  r.add(kMl, op, [](const KernelContext& ctx) -> std::unique_ptr<Kernel> { return std::make_unique<K>(ctx); });
}

}  // namespace

void register_ml_preprocess_kernels(KernelRegistry& r) {
  add<Scaler>(r, "Scaler");
  add<Normalizer>(r, "Normalizer");
  add<Imputer>(r, "Imputer");
  add<OneHotEncoder>(r, "OneHotEncoder");
  add<LabelEncoder>(r, "LabelEncoder");
  add<Binarizer>(r, "Binarizer");
  add<ArrayFeatureExtractor>(r, "ArrayFeatureExtractor");
  add<FeatureVectorizer>(r, "FeatureVectorizer");
  add<ZipMap>(r, "ZipMap");
}

}  // namespace flock
