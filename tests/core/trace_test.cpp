// flock::trace_json on XGBoost fixtures (tests/core/data/xgb, made by XGBoost itself): the
// prediction equals Model::predict on the same row bit for bit, every tree has a path ending in a
// leaf, the traced leaves add up (with the base values) to XGBoost's own margin, missing values
// take their default branch, and max_values bounds the listing.
#include "flock/trace.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
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

struct Fixture {
  std::shared_ptr<const flock::Model> model;
  json data;
};

Fixture load(const std::string& name) {
  const std::string dir = std::string(FLOCK_TEST_DATA_DIR) + "/xgb/" + name;
  const std::string text = read_text(dir + ".model.json");
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  return {flock::Model::load(bytes), json::parse(read_text(dir + ".data.json"))};
}

flock::FeatureBatch one_row(const json& values) {
  flock::FeatureBatch batch;
  batch.rows = 1;
  std::vector<float> row;
  for (const auto& v : values)
    row.push_back(v.is_null() ? std::numeric_limits<float>::quiet_NaN() : v.get<float>());
  const int64_t width = static_cast<int64_t>(row.size());
  batch.inputs.push_back(flock::Tensor::floats({1, width}, std::move(row)));
  return batch;
}

double number(const json& v) {
  if (v.is_string()) return std::numeric_limits<double>::quiet_NaN();
  return v.get<double>();
}

// The trace of every fixture row against predict and XGBoost's margins (one per output).
void check(const std::string& name) {
  const Fixture f = load(name);
  const json& margins = f.data["margin"];
  size_t missing_seen = 0;
  for (size_t r = 0; r < f.data["inputs"].size(); ++r) {
    SCOPED_TRACE(name + " row " + std::to_string(r));
    const flock::FeatureBatch batch = one_row(f.data["inputs"][r]);
    const json t = json::parse(flock::trace_json(*f.model, batch, {std::numeric_limits<int64_t>::max()}));
    const flock::Prediction p = f.model->predict(batch);
    const json& got = t["prediction"];
    if (!p.values.empty()) {
      EXPECT_EQ(number(got["value"]), p.values[0]);
    }
    if (!p.proba.empty()) {
      ASSERT_EQ(got["proba"].size(), static_cast<size_t>(p.n_classes));
      for (int64_t c = 0; c < p.n_classes; ++c)
        EXPECT_EQ(number(got["proba"][c]), p.proba[static_cast<size_t>(c)]);
    }
    ASSERT_EQ(t["steps"].size(), 1u);
    const json& step = t["steps"][0];
    const json& agg = step["aggregation"];
    ASSERT_EQ(step["trees"].size(), agg["trees"].get<size_t>());
    EXPECT_FALSE(t["truncated"].get<bool>());
    for (const auto& tree : step["trees"]) {
      int64_t node = tree["root"];
      for (const auto& b : tree["path"]) {
        EXPECT_EQ(b["node"].get<int64_t>(), node);
        if (b["missing"].get<bool>()) {
          EXPECT_EQ(b["branch"], b["missing_goes"]);
          EXPECT_TRUE(b["value"].is_null());
          ++missing_seen;
        } else {
          // XGBoost: x < split_condition takes the true (left) side.
          EXPECT_EQ(b["branch"] == "true", number(b["value"]) < number(b["threshold"]));
        }
        node = b["next"];
      }
      EXPECT_EQ(tree["leaf"].get<int64_t>(), node);
    }
    // The traced leaves and base values make XGBoost's margin, per output, up to float rounding.
    // (Not for two-class models: XGBoost's binary encodings are checked by the predictions above.)
    if (margins.is_array() && (agg["kind"] == "regressor" || agg["outputs"].get<int64_t>() > 2)) {
      const json& m = margins[r];
      for (size_t k = 0; k < agg["leaf_sums"].size(); ++k) {
        const double want = m.is_array() ? m[k].get<double>() : m.get<double>();
        const double base = agg["base_values"].empty() ? 0.0 : number(agg["base_values"][k]);
        EXPECT_NEAR(number(agg["leaf_sums"][k]) + base, want, 1e-4 * std::max(1.0, std::abs(want)));
      }
    }
  }
  EXPECT_GT(missing_seen, 0u) << "the fixtures hold missing values";
}

TEST(Trace, RegressorEqualsPredictAndXGBoostsMargin) { check("reg_squarederror"); }
TEST(Trace, MultiClassEqualsPredictAndXGBoostsMargin) { check("multi_softprob"); }

TEST(Trace, BinaryClassifierEqualsPredict) { check("binary_logistic"); }

TEST(Trace, MaxValuesBoundsTheListing) {
  const Fixture f = load("multi_softprob");
  const flock::FeatureBatch batch = one_row(f.data["inputs"][0]);
  const json full = json::parse(flock::trace_json(*f.model, batch, {1000000}));
  const json none = json::parse(flock::trace_json(*f.model, batch, {0}));
  EXPECT_TRUE(none["truncated"].get<bool>());
  EXPECT_TRUE(none["steps"][0]["trees"].empty());
  EXPECT_TRUE(none["steps"][0]["trees_truncated"].get<bool>());
  EXPECT_EQ(none["steps"][0]["outputs"][1]["values"].size(), 0u);
  EXPECT_EQ(none["prediction"], full["prediction"]);
  EXPECT_EQ(none["outputs"], full["outputs"]);
  EXPECT_EQ(none["steps"][0]["aggregation"], full["steps"][0]["aggregation"]);
}

TEST(Trace, OneRowOnly) {
  const Fixture f = load("reg_squarederror");
  flock::FeatureBatch two = one_row(f.data["inputs"][0]);
  two.rows = 2;
  try {
    flock::trace_json(*f.model, two);
    FAIL() << "a trace of two rows";
  } catch (const flock::Error& e) {
    EXPECT_EQ(e.code(), flock::ErrorCode::InvalidInput);
  }
}

}  // namespace
