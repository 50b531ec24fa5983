// Binding record columns to model features, and the output checks of the prediction functions.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "flock/binding.hpp"
#include "flock/error.hpp"

namespace {

using flock::RecordColumn;

flock::Signature one_input(int64_t width, std::vector<std::string> names) {
  flock::Signature sig;
  flock::InputSpec in;
  in.name = "X";
  in.shape = {-1, width};
  in.width = width;
  sig.inputs.push_back(in);
  sig.feature_names = std::move(names);
  return sig;
}

flock::Signature inputs(std::vector<std::pair<std::string, int64_t>> specs) {
  flock::Signature sig;
  for (auto& [name, width] : specs) {
    flock::InputSpec in;
    in.name = name;
    in.shape = {-1, width};
    in.width = width;
    sig.inputs.push_back(in);
    sig.feature_names.push_back(name);
  }
  return sig;
}

flock::ErrorCode code_of(auto&& fn) {
  try {
    fn();
  } catch (const flock::Error& e) {
    return e.code();
  }
  return flock::ErrorCode::Internal;
}

TEST(FindRecordColumn, ExactMatchWins) {
  std::vector<RecordColumn> cols = {{"Age"}, {"age"}, {"AGE"}};
  EXPECT_EQ(flock::find_record_column(cols, "age"), 1);
  EXPECT_EQ(flock::find_record_column(cols, "AGE"), 2);
}

TEST(FindRecordColumn, CaseInsensitiveWhenUnique) {
  std::vector<RecordColumn> cols = {{"income"}, {"petal_Length"}};
  EXPECT_EQ(flock::find_record_column(cols, "Petal_length"), 1);
  EXPECT_EQ(flock::find_record_column(cols, "INCOME"), 0);
}

TEST(FindRecordColumn, CaseCollisionIsAmbiguous) {
  // Two columns differ from the feature name only in case: neither is chosen.
  std::vector<RecordColumn> cols = {{"Age"}, {"AGE"}};
  EXPECT_EQ(flock::find_record_column(cols, "age"), -1);
}

TEST(FindRecordColumn, DroppedColumnsAreSkipped) {
  std::vector<RecordColumn> cols = {{"a", true}, {"A"}};
  EXPECT_EQ(flock::find_record_column(cols, "a"), 1);
  std::vector<RecordColumn> only_dropped = {{"a", true}};
  EXPECT_EQ(flock::find_record_column(only_dropped, "a"), -1);
}

TEST(FindRecordColumn, CaseFoldingIsAsciiOnly) {
  std::vector<RecordColumn> cols = {{"\xc3\x89t\xc3\xa9"}};  // "Été"
  EXPECT_EQ(flock::find_record_column(cols, "\xc3\xa9t\xc3\xa9"), -1);  // "été"
  EXPECT_EQ(flock::find_record_column(cols, "\xc3\x89T\xc3\xa9"), 0);   // "ÉTé": only ASCII folds
}

TEST(BindRecordColumns, ByNameInModelOrder) {
  auto sig = one_input(3, {"a", "b", "c"});
  std::vector<RecordColumn> cols = {{"c"}, {"x"}, {"A"}, {"b"}};
  auto b = flock::bind_record_columns(sig, cols);
  EXPECT_TRUE(b.by_name);
  EXPECT_FALSE(b.width_mismatch);
  EXPECT_EQ(b.total_features, 3);
  EXPECT_EQ(b.live_columns, 4);
  ASSERT_EQ(b.features.size(), 3u);
  EXPECT_EQ(b.features[0].column, 2);
  EXPECT_EQ(b.features[1].column, 3);
  EXPECT_EQ(b.features[2].column, 0);
  EXPECT_EQ(b.features[1].name, "b");
  EXPECT_EQ(b.features[2].position, 2);
}

TEST(BindRecordColumns, MissingNameIsReportedInOrder) {
  auto sig = one_input(3, {"a", "b", "c"});
  std::vector<RecordColumn> cols = {{"a"}, {"c"}};
  auto b = flock::bind_record_columns(sig, cols);
  ASSERT_EQ(b.features.size(), 3u);
  EXPECT_EQ(b.features[0].column, 0);
  EXPECT_EQ(b.features[1].column, -1);
  EXPECT_EQ(b.features[1].name, "b");
  EXPECT_EQ(b.features[2].column, 1);
}

TEST(BindRecordColumns, NameCollisionLeavesTheFeatureUnbound) {
  auto sig = one_input(2, {"x", "y"});
  std::vector<RecordColumn> cols = {{"X"}, {"Y"}, {"y"}, {"x2"}};
  auto b = flock::bind_record_columns(sig, cols);
  ASSERT_EQ(b.features.size(), 2u);
  EXPECT_EQ(b.features[0].column, 0);  // only X matches x ignoring case
  EXPECT_EQ(b.features[1].column, 2);  // y exactly, despite Y
  std::vector<RecordColumn> clash = {{"X"}, {"x "}, {"Y"}, {"yY"}};
  EXPECT_EQ(flock::bind_record_columns(sig, clash).features[0].column, 0);
}

TEST(BindRecordColumns, ExtraColumnsAreIgnoredByName) {
  auto sig = one_input(1, {"f"});
  std::vector<RecordColumn> cols = {{"id"}, {"f"}, {"label"}};
  auto b = flock::bind_record_columns(sig, cols);
  EXPECT_FALSE(b.width_mismatch);
  ASSERT_EQ(b.features.size(), 1u);
  EXPECT_EQ(b.features[0].column, 1);
}

TEST(BindRecordColumns, PositionalWithoutNames) {
  auto sig = one_input(2, {});
  std::vector<RecordColumn> cols = {{"p"}, {"gone", true}, {"q"}};
  auto b = flock::bind_record_columns(sig, cols);
  EXPECT_FALSE(b.by_name);
  EXPECT_FALSE(b.width_mismatch);
  ASSERT_EQ(b.features.size(), 2u);
  EXPECT_EQ(b.features[0].column, 0);
  EXPECT_EQ(b.features[1].column, 2);  // dropped columns do not count
  EXPECT_TRUE(b.features[0].name.empty());
}

TEST(BindRecordColumns, PositionalWidthMismatch) {
  auto sig = one_input(3, {});
  std::vector<RecordColumn> fewer = {{"a"}, {"b"}};
  auto b = flock::bind_record_columns(sig, fewer);
  EXPECT_TRUE(b.width_mismatch);
  EXPECT_EQ(b.total_features, 3);
  EXPECT_EQ(b.live_columns, 2);
  EXPECT_TRUE(b.features.empty());
  std::vector<RecordColumn> more = {{"a"}, {"b"}, {"c"}, {"d"}};
  EXPECT_TRUE(flock::bind_record_columns(sig, more).width_mismatch);
  std::vector<RecordColumn> dropped = {{"a"}, {"b"}, {"c", true}};
  EXPECT_TRUE(flock::bind_record_columns(sig, dropped).width_mismatch);
}

TEST(BindRecordColumns, SeveralInputsBindByInputName) {
  auto sig = inputs({{"age", 1}, {"City", 1}});
  std::vector<RecordColumn> cols = {{"city"}, {"age"}};
  auto b = flock::bind_record_columns(sig, cols);
  EXPECT_TRUE(b.by_name);
  EXPECT_EQ(b.multi_value_input, -1);
  ASSERT_EQ(b.features.size(), 2u);
  EXPECT_EQ(b.features[0].column, 1);
  EXPECT_EQ(b.features[1].column, 0);
  EXPECT_EQ(b.features[1].input, 1u);
}

TEST(BindRecordColumns, SeveralInputsWithAWideOneStopThere) {
  auto sig = inputs({{"a", 1}, {"v", 4}, {"b", 1}});
  std::vector<RecordColumn> cols = {{"a"}, {"v"}, {"b"}};
  auto b = flock::bind_record_columns(sig, cols);
  EXPECT_EQ(b.multi_value_input, 1);
  ASSERT_EQ(b.features.size(), 1u);  // the features before it, whose errors come first
  EXPECT_EQ(b.features[0].column, 0);
}

TEST(CheckOutput, RegressorHasNoLabelOrProbabilities) {
  flock::Signature reg;
  reg.task = flock::Task::Regression;
  EXPECT_NO_THROW(flock::check_output(reg, flock::Want::Value, "m"));
  EXPECT_NO_THROW(flock::check_output(reg, flock::Want::Tensor, "m"));
  EXPECT_EQ(code_of([&] { flock::check_output(reg, flock::Want::Label, "m"); }), flock::ErrorCode::TypeMismatch);
  EXPECT_EQ(code_of([&] { flock::check_output(reg, flock::Want::Proba, "m", 0); }), flock::ErrorCode::TypeMismatch);
  try {
    flock::check_output(reg, flock::Want::Label, "m@2");
    FAIL();
  } catch (const flock::Error& e) {
    EXPECT_STREQ(e.what(), "m@2 is a regressor; it has no class label");
    EXPECT_EQ(e.hint(), "Use flock.predict for its value.");
  }
}

TEST(CheckOutput, TextLabelsAreNotAValue) {
  flock::Signature cls;
  cls.task = flock::Task::Classification;
  cls.numeric_labels = false;
  EXPECT_EQ(code_of([&] { flock::check_output(cls, flock::Want::Value, "m"); }), flock::ErrorCode::TypeMismatch);
  EXPECT_NO_THROW(flock::check_output(cls, flock::Want::Label, "m"));
  EXPECT_NO_THROW(flock::check_output(cls, flock::Want::Proba, "m", 3));
  EXPECT_EQ(code_of([&] { flock::check_output(cls, flock::Want::Proba, "m", 0); }), flock::ErrorCode::TypeMismatch);
  cls.numeric_labels = true;
  EXPECT_NO_THROW(flock::check_output(cls, flock::Want::Value, "m"));
}

TEST(ChooseTensorOutput, FirstFloatThenFirstNumeric) {
  std::vector<flock::Tensor> outs;
  outs.emplace_back(flock::ElemType::Int64, std::vector<int64_t>{1});
  outs.emplace_back(flock::ElemType::Double, std::vector<int64_t>{1});
  outs.emplace_back(flock::ElemType::Float, std::vector<int64_t>{1});
  EXPECT_EQ(&flock::choose_tensor_output(outs, "m"), &outs[1]);
  std::vector<flock::Tensor> ints;
  ints.emplace_back(flock::ElemType::String, std::vector<int64_t>{1});
  ints.emplace_back(flock::ElemType::Int64, std::vector<int64_t>{1});
  EXPECT_EQ(&flock::choose_tensor_output(ints, "m"), &ints[1]);
  std::vector<flock::Tensor> text;
  text.emplace_back(flock::ElemType::String, std::vector<int64_t>{1});
  EXPECT_EQ(code_of([&] { flock::choose_tensor_output(text, "m"); }), flock::ErrorCode::TypeMismatch);
}

TEST(PredictParts, OnePartPerWant) {
  EXPECT_EQ(flock::predict_parts_for(flock::Want::Value), flock::kPredictValues);
  EXPECT_EQ(flock::predict_parts_for(flock::Want::Label), flock::kPredictLabels);
  EXPECT_EQ(flock::predict_parts_for(flock::Want::Proba), flock::kPredictProba);
}

}  // namespace
