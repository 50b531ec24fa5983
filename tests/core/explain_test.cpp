// Explanations (core/src/explain/): TreeSHAP against XGBoost's own pred_contribs and
// pred_interactions (tests/core/data/make_shap_fixtures.py), additivity against the model's
// margins, and covers counted from a background against a brute-force Shapley computation over
// the model's JSON trees.
#include "flock/explain.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "flock/error.hpp"
#include "flock/model.hpp"

#ifndef FLOCK_TEST_DATA_DIR
#error "FLOCK_TEST_DATA_DIR must point at tests/core/data"
#endif

namespace {

using json = nlohmann::json;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string fixture(const std::string& name, const char* kind) {
  return read_text(std::string(FLOCK_TEST_DATA_DIR) + "/xgb/" + name + "." + kind + ".json");
}

std::shared_ptr<const flock::Model> load(const std::string& text) {
  return flock::Model::load(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

flock::FeatureBatch batch_of(const json& rows) {
  flock::FeatureBatch b;
  b.rows = static_cast<int64_t>(rows.size());
  const int64_t f = b.rows ? static_cast<int64_t>(rows[0].size()) : 0;
  std::vector<float> v;
  for (const auto& row : rows)
    for (const auto& e : row)
      v.push_back(e.is_null() ? std::numeric_limits<float>::quiet_NaN() : e.get<float>());
  b.inputs.push_back(flock::Tensor::floats({b.rows, f}, v));
  return b;
}

::testing::AssertionResult close(double got, double want, double tol = 1e-4) {
  if (std::abs(got - want) <= tol * std::max(1.0, std::abs(want))) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "got " << got << ", want " << want;
}

class XGBoostShap : public ::testing::TestWithParam<const char*> {};

TEST_P(XGBoostShap, EqualsPredContribsAndInteractionsAndAddsUpToTheMargin) {
  const std::string name = GetParam();
  const auto model = load(fixture(name, "model"));
  const json data = json::parse(fixture(name, "data"));
  const json shap = json::parse(fixture(name, "shap"));
  const flock::FeatureBatch batch = batch_of(data["inputs"]);
  flock::explain::Options opt;
  opt.interactions = true;
  opt.tree_shap_form = flock::explain::TreeShapForm::Recursive;
  const flock::explain::Explanation e = flock::explain::explain(*model, batch, opt);
  ASSERT_EQ(flock::explain::method_for(*model), flock::explain::Method::TreeShap);
  // The leaf-table form gives the same contributions.
  flock::explain::Options tables;
  tables.tree_shap_form = flock::explain::TreeShapForm::LeafTables;
  const flock::explain::Explanation et = flock::explain::explain(*model, batch, tables);

  const int64_t R = batch.rows, F = batch.inputs[0].shape[1], S = F + 1;
  const std::vector<double> contribs = shap["contribs"].get<std::vector<double>>();
  const std::vector<double> inter = shap["interactions"].get<std::vector<double>>();
  const int64_t groups = static_cast<int64_t>(contribs.size()) / (R * S);
  const bool two_class_softmax = name == "multi_softprob_2class";  // Flock's one score: margin1 - margin0
  const int64_t O = static_cast<int64_t>(e.outputs.size());
  ASSERT_EQ(O, two_class_softmax ? 1 : groups);
  ASSERT_EQ(e.rows, R);
  ASSERT_EQ(e.features, F);
  auto want_contrib = [&](int64_t r, int64_t o, int64_t k) {
    if (two_class_softmax) return contribs[(r * 2 + 1) * S + k] - contribs[(r * 2 + 0) * S + k];
    return contribs[(r * groups + o) * S + k];
  };
  auto want_inter = [&](int64_t r, int64_t o, int64_t i, int64_t k) {
    if (two_class_softmax) return inter[((r * 2 + 1) * S + i) * S + k] - inter[((r * 2 + 0) * S + i) * S + k];
    return inter[((r * groups + o) * S + i) * S + k];
  };
  const std::vector<double> margin = [&] {
    std::vector<double> m;
    for (const auto& v : data["margin"]) {
      if (v.is_array())
        for (const auto& x : v) m.push_back(x.get<double>());
      else
        m.push_back(v.get<double>());
    }
    return m;
  }();
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t o = 0; o < O; ++o) {
      for (int64_t k = 0; k < S; ++k) {
        EXPECT_TRUE(close(e.contributions[static_cast<size_t>((r * O + o) * S + k)], want_contrib(r, o, k)))
            << name << " row " << r << " output " << o << " feature " << k;
        EXPECT_TRUE(close(et.contributions[static_cast<size_t>((r * O + o) * S + k)], want_contrib(r, o, k)))
            << name << " (leaf tables) row " << r << " output " << o << " feature " << k;
        for (int64_t i = 0; i < S; ++i)
          EXPECT_TRUE(close(e.interactions[static_cast<size_t>(((r * O + o) * S + k) * S + i)],
                            want_inter(r, o, k, i)))
              << name << " row " << r << " output " << o << " features " << k << "," << i;
      }
      // Additivity: contributions + base value = XGBoost's margin for this row.
      const double m = two_class_softmax
                           ? margin[static_cast<size_t>(r * 2 + 1)] - margin[static_cast<size_t>(r * 2)]
                           : margin[static_cast<size_t>(r * O + o)];
      EXPECT_TRUE(close(e.raw[static_cast<size_t>(r * O + o)], m, 1e-5)) << name << " row " << r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, XGBoostShap,
                         ::testing::Values("reg_squarederror", "reg_logistic", "binary_logistic",
                                           "binary_positive_leaves", "multi_softprob", "multi_softmax",
                                           "multi_softprob_2class"));

// The brute-force oracle: path-dependent expectations v(S) over the JSON trees, weighted by how
// many background rows reach each node, and Shapley values by enumerating subsets.
struct JsonTree {
  std::vector<int> left, right, feature, default_left;
  std::vector<double> cond, cover;
};

int next_node(const JsonTree& t, int n, double v) {
  if (std::isnan(v)) return t.default_left[n] ? t.left[n] : t.right[n];
  return static_cast<float>(v) < static_cast<float>(t.cond[n]) ? t.left[n] : t.right[n];
}

double expectation(const JsonTree& t, int n, const std::vector<double>& x, unsigned subset) {
  if (t.left[n] == -1) return t.cond[n];
  if (subset & (1u << t.feature[n])) return expectation(t, next_node(t, n, x[t.feature[n]]), x, subset);
  const double w = t.cover[n];
  const double fl = w > 0 ? t.cover[t.left[n]] / w : 0.5, fr = w > 0 ? t.cover[t.right[n]] / w : 0.5;
  return fl * expectation(t, t.left[n], x, subset) + fr * expectation(t, t.right[n], x, subset);
}

TEST(TreeShapBackground, CoversCountedFromBackgroundRowsMatchBruteForceShapley) {
  json model = json::parse(fixture("reg_squarederror", "model"));
  const json data = json::parse(fixture("reg_squarederror", "data"));
  auto& trees = model["learner"]["gradient_booster"]["model"]["trees"];
  for (auto& t : trees) t.erase("sum_hessian");  // as an ONNX model: no covers
  const auto m = load(model.dump());
  const flock::FeatureBatch batch = batch_of(data["inputs"]);
  // No covers, no background: a clear error.
  try {
    (void)flock::explain::explain(*m, batch);
    FAIL() << "expected an error";
  } catch (const flock::Error& err) {
    EXPECT_EQ(err.code(), flock::ErrorCode::InvalidInput);
    EXPECT_NE(err.hint().find("background"), std::string::npos);
  }
  // The background: the explained rows themselves.
  flock::explain::Options opt;
  opt.background = &batch;
  for (auto form : {flock::explain::TreeShapForm::Recursive, flock::explain::TreeShapForm::LeafTables}) {
    opt.tree_shap_form = form;
    const auto e = flock::explain::explain(*m, batch, opt);

    std::vector<JsonTree> jt;
    const int64_t R = batch.rows, F = batch.inputs[0].shape[1];
    std::vector<std::vector<double>> rows;
    for (int64_t r = 0; r < R; ++r) {
      std::vector<double> x;
      for (int64_t k = 0; k < F; ++k)
        x.push_back(static_cast<double>(batch.inputs[0].f[static_cast<size_t>(r * F + k)]));
      rows.push_back(x);
    }
    for (const auto& t : trees) {
      JsonTree j{
          t["left_children"].get<std::vector<int>>(),       t["right_children"].get<std::vector<int>>(),
          t["split_indices"].get<std::vector<int>>(),       t["default_left"].get<std::vector<int>>(),
          t["split_conditions"].get<std::vector<double>>(), {}};
      j.cover.assign(j.left.size(), 0.0);
      for (const auto& x : rows) {
        int n = 0;
        for (;;) {
          j.cover[static_cast<size_t>(n)] += 1;
          if (j.left[static_cast<size_t>(n)] == -1) break;
          n = next_node(j, n, x[static_cast<size_t>(j.feature[static_cast<size_t>(n)])]);
        }
      }
      jt.push_back(j);
    }
    const double base_score =
        std::stod(model["learner"]["learner_model_param"]["base_score"].get<std::string>());
    auto v = [&](const std::vector<double>& x, unsigned subset) {
      double s = base_score;
      for (const auto& t : jt) s += expectation(t, 0, x, subset);
      return s;
    };
    std::vector<double> factorial(static_cast<size_t>(F + 1), 1.0);
    for (int64_t k = 1; k <= F; ++k)
      factorial[static_cast<size_t>(k)] = factorial[static_cast<size_t>(k - 1)] * static_cast<double>(k);
    for (int64_t r = 0; r < R; ++r) {
      const auto& x = rows[static_cast<size_t>(r)];
      EXPECT_TRUE(close(e.contributions[static_cast<size_t>(r * (F + 1) + F)], v(x, 0)));
      for (int64_t i = 0; i < F; ++i) {
        double phi = 0;
        for (unsigned s = 0; s < (1u << F); ++s) {
          if (s & (1u << i)) continue;
          const int size = __builtin_popcount(s);
          const double weight = factorial[static_cast<size_t>(size)] *
                                factorial[static_cast<size_t>(F - size - 1)] /
                                factorial[static_cast<size_t>(F)];
          phi += weight * (v(x, s | (1u << i)) - v(x, s));
        }
        EXPECT_TRUE(close(e.contributions[static_cast<size_t>(r * (F + 1) + i)], phi))
            << "row " << r << " feature " << i;
      }
    }
  }
}

}  // namespace

namespace {

TEST(TreeShapCovers, UnusableXGBoostCoversAreDroppedNotAnError) {
  json model = json::parse(fixture("reg_squarederror", "model"));
  const json data = json::parse(fixture("reg_squarederror", "data"));
  model["learner"]["gradient_booster"]["model"]["trees"][1]["sum_hessian"][0] = -1.0;
  const auto m = load(model.dump());  // still loads and predicts
  const flock::FeatureBatch batch = batch_of(data["inputs"]);
  EXPECT_EQ(m->predict(batch).rows, batch.rows);
  try {
    (void)flock::explain::explain(*m, batch);
    FAIL() << "expected an error";
  } catch (const flock::Error& err) {
    EXPECT_EQ(err.code(), flock::ErrorCode::InvalidInput);
  }
  flock::explain::Options opt;
  opt.background = &batch;
  const auto e = flock::explain::explain(*m, batch, opt);
  const auto p = m->predict(batch);
  for (int64_t r = 0; r < batch.rows; ++r)
    EXPECT_TRUE(close(e.raw[static_cast<size_t>(r)], p.values[static_cast<size_t>(r)], 1e-5));
}

}  // namespace

namespace {

// Sampled KernelSHAP against the exact interventional Shapley values of a tree model: the XGBoost
// regression fixture with its splits spread over 14 features (so 2,048 coalitions are sampled, not
// enumerated), explained with Options::force_kernel. Exact: v(S) = mean over the background of the
// model's prediction on x over S and the background row elsewhere, for all 2^14 subsets, and the
// Shapley formula. The sampled values must lie within their standard errors as a normal error would:
// about 95% within 2 SE, about 99.7% within 3 SE, and all within the documented hard bound 5 SE.
TEST(KernelShapBound, SampledValuesLieWithinTheirStandardErrorsOfExactShapley) {
  constexpr int64_t F = 14;
  json model = json::parse(fixture("reg_squarederror", "model"));
  const json data = json::parse(fixture("reg_squarederror", "data"));
  auto& learner = model["learner"];
  learner["learner_model_param"]["num_feature"] = std::to_string(F);
  learner["feature_names"] = json::array();
  learner["feature_types"] = json::array();
  int tree_index = 0;
  for (auto& t : learner["gradient_booster"]["model"]["trees"]) {
    t["tree_param"]["num_feature"] = std::to_string(F);
    auto& split = t["split_indices"];
    for (size_t n = 0; n < split.size(); ++n)
      split[n] = (split[n].get<int>() * 3 + static_cast<int>(n) + 5 * tree_index) % F;
    ++tree_index;
  }
  const auto m = load(model.dump());
  // 12 rows of 14 columns from the fixture's values (missing ones as 0), explained against themselves.
  const auto& in = data["inputs"];
  const int64_t R = 12;
  std::vector<float> values;
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < F; ++j) {
      const json& e =
          in[static_cast<size_t>((r + j) % static_cast<int64_t>(in.size()))][static_cast<size_t>(j % 5)];
      values.push_back(e.is_null() ? 0.0f : e.get<float>());
    }
  flock::FeatureBatch batch;
  batch.rows = R;
  batch.inputs.push_back(flock::Tensor::floats({R, F}, values));

  // Exact Shapley values, brute force over the model's predictions.
  std::vector<double> exact(static_cast<size_t>(R * F));
  {
    std::vector<double> factorial(F + 1, 1.0);
    for (int64_t k = 1; k <= F; ++k)
      factorial[static_cast<size_t>(k)] = factorial[static_cast<size_t>(k - 1)] * k;
    const int64_t subsets = int64_t(1) << F;
    for (int64_t r = 0; r < R; ++r) {
      std::vector<float> h;
      h.reserve(static_cast<size_t>(subsets * R * F));
      for (int64_t s = 0; s < subsets; ++s)
        for (int64_t b = 0; b < R; ++b)
          for (int64_t j = 0; j < F; ++j)
            h.push_back(values[static_cast<size_t>(((s >> j) & 1 ? r : b) * F + j)]);
      flock::FeatureBatch hb;
      hb.rows = subsets * R;
      hb.inputs.push_back(flock::Tensor::floats({hb.rows, F}, h));
      const flock::Prediction p = m->predict(hb, flock::kPredictValues);
      std::vector<double> v(static_cast<size_t>(subsets), 0.0);
      for (int64_t s = 0; s < subsets; ++s) {
        for (int64_t b = 0; b < R; ++b) v[static_cast<size_t>(s)] += p.values[static_cast<size_t>(s * R + b)];
        v[static_cast<size_t>(s)] /= static_cast<double>(R);
      }
      for (int64_t i = 0; i < F; ++i) {
        double phi = 0;
        for (int64_t s = 0; s < subsets; ++s) {
          if ((s >> i) & 1) continue;
          const int size = __builtin_popcountll(static_cast<unsigned long long>(s));
          phi += factorial[static_cast<size_t>(size)] * factorial[static_cast<size_t>(F - size - 1)] /
                 factorial[F] * (v[static_cast<size_t>(s | (int64_t(1) << i))] - v[static_cast<size_t>(s)]);
        }
        exact[static_cast<size_t>(r * F + i)] = phi;
      }
    }
  }

  flock::explain::Options opt;
  opt.background = &batch;
  opt.force_kernel = true;
  // Every coalition enumerated: the exact values, and no standard errors.
  opt.kernel_samples = (int64_t(1) << F) - 2;
  {
    const auto e = flock::explain::explain(*m, batch, opt);
    EXPECT_TRUE(e.std_errors.empty());
    for (int64_t r = 0; r < R; ++r)
      for (int64_t i = 0; i < F; ++i)
        EXPECT_TRUE(close(e.contributions[static_cast<size_t>(r * (F + 1) + i)],
                          exact[static_cast<size_t>(r * F + i)], 1e-6));
  }
  // Sampled, over several seeds.
  opt.kernel_samples = 2048;
  int64_t n = 0, within2 = 0, within3 = 0;
  double max_ratio = 0;
  for (uint64_t seed : {0u, 1u, 2u, 3u, 4u}) {
    opt.seed = seed;
    const auto e = flock::explain::explain(*m, batch, opt);
    ASSERT_EQ(e.std_errors.size(), static_cast<size_t>(R * F));
    EXPECT_EQ(e.kernel_samples, 2048);
    for (int64_t r = 0; r < R; ++r) {
      double sum = e.contributions[static_cast<size_t>(r * (F + 1) + F)];
      for (int64_t i = 0; i < F; ++i) {
        const double got = e.contributions[static_cast<size_t>(r * (F + 1) + i)];
        const double se = e.std_errors[static_cast<size_t>(r * F + i)];
        const double error = std::abs(got - exact[static_cast<size_t>(r * F + i)]);
        sum += got;
        ++n;
        within2 += error <= 2 * se + 1e-9;
        within3 += error <= 3 * se + 1e-9;
        max_ratio = std::max(max_ratio, error / std::max(se, 1e-12));
        EXPECT_LE(error, 5 * se + 1e-9) << "seed " << seed << " row " << r << " feature " << i;
      }
      EXPECT_TRUE(close(sum, e.raw[static_cast<size_t>(r)], 1e-9));  // additive by construction
    }
  }
  const double cover2 = static_cast<double>(within2) / static_cast<double>(n);
  const double cover3 = static_cast<double>(within3) / static_cast<double>(n);
  std::printf(
      "KernelSHAP bound: %lld contributions, %.1f%% within 2 SE, %.1f%% within 3 SE, max |error|/SE %.2f\n",
      static_cast<long long>(n), 100 * cover2, 100 * cover3, max_ratio);
  EXPECT_GE(cover2, 0.90);
  EXPECT_GE(cover3, 0.985);
}

}  // namespace
