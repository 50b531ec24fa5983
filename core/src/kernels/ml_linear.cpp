// ai.onnx.ml LinearRegressor and LinearClassifier.
//
// Semantics follow ONNX Runtime's CPU kernels (onnxruntime/core/providers/cpu/ml/linearclassifier.cc,
// linearregressor.cc, ml_common.h), which is what converter output (sklearn-onnx, onnxmltools) is
// validated against:
//   scores = X · coefficientsᵀ + intercepts, X cast to float, output float [N, C].
//   Classifier label: argmax of the raw scores (first maximum wins) for C > 1; for C == 1 the raw score
//   is thresholded at 0 (positive label when score > 0).
//   post_transform is applied to the scores after the label is chosen.
//   ORT's binary special case: one coefficient row (C == 1) with exactly two class labels gives scores
//   [N, 2] = [1 - s, s] (post_transform NONE).
// Where ONNX Runtime silently ignores a transform on a single score (LOGISTIC with C == 1, a known
// defect), Flock applies it as the ONNX reference implementation does: [1 - sigmoid(s), sigmoid(s)].
// Transforms that are degenerate on one score (SOFTMAX, SOFTMAX_ZERO, PROBIT for the two-label case)
// are refused as unsupported instead of reproducing ORT's undefined output.
#include <fmt/format.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "flock/kernel.hpp"
#include "ml_linear.hpp"

namespace flock {
namespace {

constexpr const char* kMl = "ai.onnx.ml";

using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

enum class PostTransform { None, Logistic, Softmax, SoftmaxZero, Probit };

const char* to_string(PostTransform p) {
  switch (p) {
    case PostTransform::None: return "NONE";
    case PostTransform::Logistic: return "LOGISTIC";
    case PostTransform::Softmax: return "SOFTMAX";
    case PostTransform::SoftmaxZero: return "SOFTMAX_ZERO";
    case PostTransform::Probit: return "PROBIT";
  }
  return "?";
}

PostTransform parse_post_transform(const Attrs& attrs) {
  const std::string s = attrs.get_string("post_transform", "NONE");
  if (s == "NONE") return PostTransform::None;
  if (s == "LOGISTIC") return PostTransform::Logistic;
  if (s == "SOFTMAX") return PostTransform::Softmax;
  if (s == "SOFTMAX_ZERO") return PostTransform::SoftmaxZero;
  if (s == "PROBIT") return PostTransform::Probit;
  fail(ErrorCode::UnsupportedOperator,
       fmt::format("{}: post_transform '{}' is not one of NONE, LOGISTIC, SOFTMAX, SOFTMAX_ZERO, PROBIT",
                   attrs.where(), s));
}

// ---- ONNX Runtime's float post-transform functions (ml_common.h) ----

float ort_logistic(float v) {
  const float a = 1.0f / (1.0f + std::exp(-std::abs(v)));
  return v < 0 ? 1.0f - a : a;
}

float ort_erfinv(float x) {
  const float sgn = x < 0 ? -1.0f : 1.0f;
  x = (1 - x) * (1 + x);
  const float lg = std::log(x);
  const float v = 2 / (3.14159265358979323846f * 0.147f) + 0.5f * lg;
  const float v2 = 1 / 0.147f * lg;
  const float v3 = -v + std::sqrt(v * v - v2);
  return sgn * std::sqrt(v3);
}

float ort_probit(float v) { return 1.41421356f * ort_erfinv(2 * v - 1); }

void ort_softmax(float* s, int64_t n) {
  float vmax = -std::numeric_limits<float>::max();
  for (int64_t k = 0; k < n; ++k) vmax = std::max(vmax, s[k]);
  float sum = 0.0f;
  for (int64_t k = 0; k < n; ++k) {
    s[k] = std::exp(s[k] - vmax);
    sum += s[k];
  }
  for (int64_t k = 0; k < n; ++k) s[k] /= sum;
}

// Softmax that leaves (near-)zero scores at exp(-max) weight, as ORT's ComputeSoftmaxZero.
void ort_softmax_zero(float* s, int64_t n) {
  float vmax = -std::numeric_limits<float>::max();
  for (int64_t k = 0; k < n; ++k) vmax = std::max(vmax, s[k]);
  const float exp_neg_vmax = std::exp(-vmax);
  float sum = 0.0f;
  for (int64_t k = 0; k < n; ++k) {
    if (s[k] > 0.0000001f || s[k] < -0.0000001f) {
      s[k] = std::exp(s[k] - vmax);
      sum += s[k];
    } else {
      s[k] *= exp_neg_vmax;
    }
  }
  for (int64_t k = 0; k < n; ++k) s[k] /= sum;
}

// Applies `p` to each row of a row-major [rows, cols] float block (cols > 1 semantics).
void apply_rows(PostTransform p, float* s, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = s + r * cols;
    switch (p) {
      case PostTransform::None: break;
      case PostTransform::Logistic:
        for (int64_t c = 0; c < cols; ++c) row[c] = ort_logistic(row[c]);
        break;
      case PostTransform::Softmax: ort_softmax(row, cols); break;
      case PostTransform::SoftmaxZero: ort_softmax_zero(row, cols); break;
      case PostTransform::Probit:
        for (int64_t c = 0; c < cols; ++c) row[c] = ort_probit(row[c]);
        break;
    }
  }
}

// Transform of a lone score (one target / one coefficient row).
float apply_single(PostTransform p, float s) {
  switch (p) {
    case PostTransform::Logistic: return ort_logistic(s);
    case PostTransform::Probit: return ort_probit(s);
    default: return s;
  }
}

// ---- input handling ----

struct Features {
  int64_t n = 0;
  int64_t f = 0;
  RowMatrix x;
};

Features read_features(const std::vector<const Tensor*>& in, const std::string& where) {
  if (in.empty() || in[0] == nullptr) fail(ErrorCode::InvalidInput, fmt::format("{}: input X is missing", where));
  const Tensor& t = *in[0];
  if (t.type != ElemType::Float && t.type != ElemType::Double && t.type != ElemType::Int64)
    fail(ErrorCode::InvalidInput,
         fmt::format("{}: input X has element type {}; expected float, double or int64", where, to_string(t.type)));
  if (t.shape.empty())
    fail(ErrorCode::InvalidInput, fmt::format("{}: input X is a scalar; expected shape [N, F] or [F]", where));
  if (static_cast<int64_t>(t.size()) != t.numel())
    fail(ErrorCode::InvalidInput,
         fmt::format("{}: input X holds {} values but its shape needs {}", where, t.size(), t.numel()));
  Features r;
  if (t.shape.size() == 1) {
    r.n = 1;
    r.f = t.shape[0];
  } else {
    r.n = t.shape[0];
    r.f = 1;
    for (size_t k = 1; k < t.shape.size(); ++k) r.f *= t.shape[k];
  }
  r.x.resize(r.n, r.f);
  double* dst = r.x.data();
  const size_t total = static_cast<size_t>(r.n * r.f);
  switch (t.type) {
    // X is cast to float first, as ONNX Runtime does before its float GEMM.
    case ElemType::Float:
      for (size_t k = 0; k < total; ++k) dst[k] = t.f[k];
      break;
    case ElemType::Double:
      for (size_t k = 0; k < total; ++k) dst[k] = static_cast<float>(t.d[k]);
      break;
    default:
      for (size_t k = 0; k < total; ++k) dst[k] = static_cast<float>(t.i[k]);
      break;
  }
  return r;
}

// scores[N, C] (float, row-major) = X · Wᵀ + b, accumulated in double.
std::vector<float> linear_scores(const Features& x, const RowMatrix& w, const std::vector<double>& b) {
  const int64_t c = w.rows();
  RowMatrix s(x.n, c);
  if (x.n > 0 && c > 0) {
    if (x.f > 0 && c < 8) {
      // A few classes or targets: one matrix-vector product each, with no packing of the
      // coefficients as a matrix product does on every call.
      for (int64_t j = 0; j < c; ++j) s.col(j).noalias() = x.x * w.row(j).transpose();
    } else if (x.f > 0) {
      s.noalias() = x.x * w.transpose();
    } else {
      s.setZero();
    }
    if (!b.empty()) {
      for (int64_t r = 0; r < x.n; ++r)
        for (int64_t j = 0; j < c; ++j) s(r, j) += b[static_cast<size_t>(j)];
    }
  }
  std::vector<float> out(static_cast<size_t>(x.n * c));
  for (size_t k = 0; k < out.size(); ++k) out[k] = static_cast<float>(s.data()[k]);
  return out;
}

RowMatrix coefficient_matrix(const std::vector<float>& coef, int64_t rows) {
  const int64_t cols = rows > 0 ? static_cast<int64_t>(coef.size()) / rows : 0;
  RowMatrix w(rows, cols);
  for (size_t k = 0; k < coef.size(); ++k) w.data()[k] = coef[k];
  return w;
}

// ---------------------------------------------------------------------------------------------------
// LinearRegressor

class LinearRegressor final : public linear::LinearKernel {
 public:
  explicit LinearRegressor(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    const Attrs& a = ctx.attrs;
    targets_ = a.get_int("targets", 1);
    if (targets_ < 1) fail(ErrorCode::InvalidModel, fmt::format("{}: targets is {}; it must be at least 1", where_, targets_));
    std::vector<float> coef = a.get_floats("coefficients");
    if (coef.empty()) fail(ErrorCode::InvalidModel, fmt::format("{}: coefficients are missing or empty", where_));
    if (coef.size() % static_cast<size_t>(targets_) != 0)
      fail(ErrorCode::InvalidModel,
           fmt::format("{}: {} coefficients do not split into {} targets", where_, coef.size(), targets_));
    std::vector<float> icpt = a.get_floats("intercepts");
    if (!icpt.empty() && icpt.size() != static_cast<size_t>(targets_))
      fail(ErrorCode::InvalidModel,
           fmt::format("{}: {} intercepts for {} targets; expected one per target", where_, icpt.size(), targets_));
    intercepts_.assign(icpt.begin(), icpt.end());
    post_ = parse_post_transform(a);
    if (targets_ == 1 && (post_ == PostTransform::Softmax || post_ == PostTransform::SoftmaxZero))
      fail(ErrorCode::UnsupportedOperator,
           fmt::format("{}: post_transform {} over a single target is degenerate (ONNX Runtime leaves the value "
                       "unchanged)",
                       where_, to_string(post_)));
    features_ = static_cast<int64_t>(coef.size()) / targets_;
    w_ = coefficient_matrix(coef, targets_);
    coef_ = std::move(coef);
  }

  std::optional<std::vector<bool>> weighted_columns(int64_t width) const override {
    if (width != features_) return std::nullopt;
    return linear::nonzero_columns(coef_, width);
  }

  std::optional<Affine> affine() const override {
    if (targets_ != 1 || post_ != PostTransform::None) return std::nullopt;
    return Affine{coef_, !intercepts_.empty(), intercepts_.empty() ? 0.0 : intercepts_[0]};
  }

  std::optional<Scores> scores(int64_t width) const override {
    if (width <= 0 || static_cast<int64_t>(coef_.size()) != targets_ * width) return std::nullopt;
    Scores r{targets_, coef_, intercepts_, {}};
    for (int64_t t = 0; t < targets_; ++t) r.names.push_back(std::to_string(t));
    return r;
  }

  std::unique_ptr<Kernel> with_affine(const Affine& a) const override {
    if (!affine() || a.coefficients.size() != coef_.size()) return nullptr;
    auto k = std::unique_ptr<LinearRegressor>(new LinearRegressor(*this));
    k->coef_ = a.coefficients;
    k->w_ = coefficient_matrix(k->coef_, targets_);
    k->intercepts_.clear();
    if (a.has_intercept) k->intercepts_.push_back(a.intercept);
    return k;
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    Features x = read_features(in, where_);
    if (x.f != features_)
      fail(ErrorCode::InvalidInput,
           fmt::format("{}: input has {} features per row; the model has coefficients for {}", where_, x.f, features_));
    std::vector<float> s = linear_scores(x, w_, intercepts_);
    if (targets_ == 1) {
      for (float& v : s) v = apply_single(post_, v);
    } else {
      apply_rows(post_, s.data(), x.n, targets_);
    }
    if (out.empty()) return;
    out[0] = Tensor::floats({x.n, targets_}, std::move(s));
  }

 private:
  std::string where_;
  int64_t targets_ = 1;
  int64_t features_ = 0;
  std::vector<float> coef_;
  RowMatrix w_;
  std::vector<double> intercepts_;
  PostTransform post_ = PostTransform::None;
};

// ---------------------------------------------------------------------------------------------------
// LinearClassifier

class LinearClassifier final : public linear::LinearKernel {
 public:
  explicit LinearClassifier(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    const Attrs& a = ctx.attrs;
    coef_ = a.get_floats("coefficients");
    if (coef_.empty()) fail(ErrorCode::InvalidModel, fmt::format("{}: coefficients are missing or empty", where_));
    std::vector<float> icpt = a.get_floats("intercepts");
    intercepts_.assign(icpt.begin(), icpt.end());
    label_ints_ = a.get_ints("classlabels_ints");
    label_strings_ = a.get_strings("classlabels_strings");
    if (!label_ints_.empty() && !label_strings_.empty())
      fail(ErrorCode::InvalidModel,
           fmt::format("{}: both classlabels_ints and classlabels_strings are set; exactly one may be", where_));
    using_strings_ = !label_strings_.empty();
    n_labels_ = static_cast<int64_t>(using_strings_ ? label_strings_.size() : label_ints_.size());
    const int64_t mc = a.get_int("multi_class", 0);
    if (mc != 0 && mc != 1)
      fail(ErrorCode::UnsupportedOperator,
           fmt::format("{}: multi_class {} is not 0 (one-vs-rest) or 1 (multinomial)", where_, mc));
    post_ = parse_post_transform(a);

    // Number of coefficient rows.
    if (!intercepts_.empty()) {
      classes_ = static_cast<int64_t>(intercepts_.size());
    } else if (n_labels_ == 0) {
      classes_ = 1;
    } else if (n_labels_ != 2) {
      classes_ = n_labels_;
    } else {
      classes_ = -1;  // one row (binary special case) or two: decided by the input width
    }
    if (classes_ > 0) {
      if (coef_.size() % static_cast<size_t>(classes_) != 0)
        fail(ErrorCode::InvalidModel,
             fmt::format("{}: {} coefficients do not split into {} classes", where_, coef_.size(), classes_));
      check_classes(classes_, ErrorCode::InvalidModel);
      w_ = coefficient_matrix(coef_, classes_);
    }
  }

  std::optional<std::vector<bool>> weighted_columns(int64_t width) const override {
    // Whatever the number of rows (decided by the width when classes_ < 0), the table is row-major.
    return linear::nonzero_columns(coef_, width);
  }

  std::optional<Scores> scores(int64_t width) const override {
    if (width <= 0) return std::nullopt;
    const int64_t ncoef = static_cast<int64_t>(coef_.size());
    int64_t c = classes_;
    if (c < 0) c = ncoef == 2 * width ? 2 : ncoef == width ? 1 : -1;
    if (c <= 0 || ncoef != c * width) return std::nullopt;
    auto label = [&](int64_t k) -> std::string {
      if (k >= n_labels_) return std::to_string(k);
      return using_strings_ ? label_strings_[static_cast<size_t>(k)]
                            : std::to_string(label_ints_[static_cast<size_t>(k)]);
    };
    Scores r{c, coef_, intercepts_, {}};
    for (int64_t k = 0; k < c; ++k) r.names.push_back(c == 1 && n_labels_ == 2 ? label(1) : label(k));
    return r;
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    Features x = read_features(in, where_);
    int64_t c = classes_;
    RowMatrix w_deferred;
    const RowMatrix* w = &w_;
    const int64_t ncoef = static_cast<int64_t>(coef_.size());
    if (c < 0) {
      // No intercepts and two labels: one row (ncoef == F) or one row per class (ncoef == 2F).
      if (x.f > 0 && ncoef == 2 * x.f) c = 2;
      else if (ncoef == x.f) c = 1;
      else
        fail(ErrorCode::InvalidInput,
             fmt::format("{}: input has {} features per row; {} coefficients are neither 1 nor 2 rows of that width",
                         where_, x.f, ncoef));
      check_classes(c, ErrorCode::InvalidModel);
      w_deferred = coefficient_matrix(coef_, c);
      w = &w_deferred;
    } else if (ncoef != c * x.f) {
      fail(ErrorCode::InvalidInput,
           fmt::format("{}: input has {} features per row; the model has coefficients for {}", where_, x.f, ncoef / c));
    }
    std::vector<float> s = linear_scores(x, *w, intercepts_);
    const int64_t n = x.n;

    // Labels from the raw scores.
    Tensor labels(using_strings_ ? ElemType::String : ElemType::Int64, {n});
    if (c == 1) {
      const bool two = n_labels_ == 2;
      for (int64_t r = 0; r < n; ++r) {
        const bool pos = s[static_cast<size_t>(r)] > 0;
        if (using_strings_) labels.s[static_cast<size_t>(r)] = label_strings_[pos ? 1 : 0];
        else labels.i[static_cast<size_t>(r)] = two ? label_ints_[pos ? 1 : 0] : (pos ? 1 : 0);
      }
    } else {
      for (int64_t r = 0; r < n; ++r) {
        const float* row = s.data() + r * c;
        int64_t best = 0;
        for (int64_t j = 1; j < c; ++j)
          if (row[j] > row[best]) best = j;
        if (using_strings_) labels.s[static_cast<size_t>(r)] = label_strings_[static_cast<size_t>(best)];
        else labels.i[static_cast<size_t>(r)] = label_ints_[static_cast<size_t>(best)];
      }
    }

    // Scores.
    Tensor scores;
    if (c == 1 && n_labels_ == 2) {
      std::vector<float> two(static_cast<size_t>(2 * n));
      for (int64_t r = 0; r < n; ++r) {
        const float p = apply_single(post_, s[static_cast<size_t>(r)]);
        two[static_cast<size_t>(2 * r)] = 1.0f - p;
        two[static_cast<size_t>(2 * r + 1)] = p;
      }
      scores = Tensor::floats({n, 2}, std::move(two));
    } else if (c == 1) {
      for (float& v : s) v = apply_single(post_, v);
      scores = Tensor::floats({n, 1}, std::move(s));
    } else {
      apply_rows(post_, s.data(), n, c);
      scores = Tensor::floats({n, c}, std::move(s));
    }
    if (!out.empty()) out[0] = std::move(labels);
    if (out.size() > 1) out[1] = std::move(scores);
  }

 private:
  // Labels and post_transform consistent with `c` coefficient rows.
  void check_classes(int64_t c, ErrorCode code) const {
    if (c > 1) {
      if (n_labels_ != c)
        fail(code, fmt::format("{}: {} coefficient rows but {} class labels; expected one label per row", where_, c,
                               n_labels_));
      return;
    }
    if (n_labels_ == 1)
      fail(code, fmt::format("{}: a single class label; a one-row classifier needs two labels (or none)", where_));
    if (post_ == PostTransform::Softmax || post_ == PostTransform::SoftmaxZero ||
        (n_labels_ == 2 && post_ == PostTransform::Probit))
      fail(ErrorCode::UnsupportedOperator,
           fmt::format("{}: post_transform {} on a single coefficient row is not supported (ONNX Runtime's output is "
                       "not a probability there)",
                       where_, to_string(post_)));
  }

  std::string where_;
  std::vector<float> coef_;
  std::vector<double> intercepts_;
  std::vector<int64_t> label_ints_;
  std::vector<std::string> label_strings_;
  bool using_strings_ = false;
  int64_t n_labels_ = 0;
  int64_t classes_ = -1;
  RowMatrix w_;
  PostTransform post_ = PostTransform::None;
};

}  // namespace

std::optional<std::vector<bool>> linear::nonzero_columns(const std::vector<float>& coefficients, int64_t width) {
  if (width <= 0 || coefficients.size() % static_cast<size_t>(width) != 0) return std::nullopt;
  std::vector<bool> nonzero(static_cast<size_t>(width), false);
  for (size_t k = 0; k < coefficients.size(); ++k)
    if (!(coefficients[k] == 0.0f)) nonzero[k % static_cast<size_t>(width)] = true;  // NaN: nonzero
  return nonzero;
}

void register_ml_linear_kernels(KernelRegistry& r) {
  r.add(kMl, "LinearRegressor",
        [](const KernelContext& ctx) -> std::unique_ptr<Kernel> { return std::make_unique<LinearRegressor>(ctx); });
  r.add(kMl, "LinearClassifier",
        [](const KernelContext& ctx) -> std::unique_ptr<Kernel> { return std::make_unique<LinearClassifier>(ctx); });
}

}  // namespace flock
