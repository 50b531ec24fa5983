// The SQL functions behind flock.drift, flock.monitor and flock.fairness (pg/sql/41_monitor.sql):
// arrays of samples in, the core's statistics (core/src/monitor/) out. The PL/pgSQL functions
// there gather the samples (data sets, queries, the inference log) as the calling role; these only
// compute. Missing values (NULL elements, NaN and infinities) are left out of the samples.
#include "flock/monitor.hpp"

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "guard.hpp"
#include "pg.hpp"  // must come first

extern "C" {
PG_FUNCTION_INFO_V1(flock_drift_numeric);
PG_FUNCTION_INFO_V1(flock_drift_categorical);
PG_FUNCTION_INFO_V1(flock_fairness_classification);
PG_FUNCTION_INFO_V1(flock_fairness_regression);
}

namespace {

using namespace flock::pg;

struct Sample {
  Datum* values;
  bool* nulls;
  int count;
};

Sample deconstruct(ArrayType* array, Oid type) {
  Sample s;
  int16 typlen;
  bool byval;
  char align;
  get_typlenbyvalalign(type, &typlen, &byval, &align);
  deconstruct_array(array, type, typlen, byval, align, &s.values, &s.nulls, &s.count);
  return s;
}

// A text array's elements as (pointer, length) pairs, detoasted here so the C++ side only reads.
struct TextSample {
  const char** data;
  int* lengths;
  int count;
};

TextSample text_sample(ArrayType* array) {
  Sample s = deconstruct(array, TEXTOID);
  TextSample t{static_cast<const char**>(palloc0(sizeof(char*) * Max(s.count, 1))),
               static_cast<int*>(palloc0(sizeof(int) * Max(s.count, 1))), 0};
  for (int i = 0; i < s.count; ++i) {
    if (s.nulls[i]) continue;
    text* v = DatumGetTextPP(s.values[i]);
    t.data[t.count] = VARDATA_ANY(v);
    t.lengths[t.count] = int(VARSIZE_ANY_EXHDR(v));
    ++t.count;
  }
  return t;
}

std::vector<double> finite_values(const Sample& s) {
  std::vector<double> out;
  out.reserve(size_t(s.count));
  for (int i = 0; i < s.count; ++i) {
    if (s.nulls[i]) continue;
    const double v = DatumGetFloat8(s.values[i]);
    if (std::isfinite(v)) out.push_back(v);
  }
  return out;
}

std::vector<std::string> strings(const TextSample& t) {
  std::vector<std::string> out;
  out.reserve(size_t(t.count));
  for (int i = 0; i < t.count; ++i) out.emplace_back(t.data[i], size_t(t.lengths[i]));
  return out;
}

TupleDesc result_desc(FunctionCallInfo fcinfo) {
  TupleDesc desc;
  if (get_call_result_type(fcinfo, nullptr, &desc) != TYPEFUNC_COMPOSITE)
    ereport(ERROR,
            (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("function returning record called in context "
                                                            "that cannot accept type record")));
  return BlessTupleDesc(desc);
}

// One (group, metric, value) row of a fairness result; group -1 is every row, -2 the summary.
struct MetricRow {
  int group;
  const char* metric;
  double value;
  bool defined;
};

constexpr int kOverall = -1;
constexpr int kSummary = -2;

void put_metric_rows(FunctionCallInfo fcinfo, const MetricRow* rows, int count) {
  InitMaterializedSRF(fcinfo, 0);
  ReturnSetInfo* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
  for (int i = 0; i < count; ++i) {
    Datum values[3];
    bool nulls[3] = {false, false, false};
    if (rows[i].group == kSummary)
      nulls[0] = true;
    else
      values[0] = Int32GetDatum(rows[i].group);
    values[1] = CStringGetTextDatum(rows[i].metric);
    if (rows[i].defined)
      values[2] = Float8GetDatum(rows[i].value);
    else
      nulls[2] = true;
    tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
  }
}

// Group numbers (0-based, all below `groups`) from an int4[] with no NULLs.
int32 group_count(const Sample& s) {
  int32 largest = -1;
  for (int i = 0; i < s.count; ++i) {
    if (s.nulls[i])
      ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("fairness: a group number is NULL")));
    largest = Max(largest, DatumGetInt32(s.values[i]));
  }
  return largest + 1;
}

// The three arrays of a fairness call (groups int4[], labels and predictions of `type`): equally
// long, no NULL anywhere.
struct FairnessInput {
  Sample group, truth, predicted;
  int32 groups;
};

FairnessInput fairness_input(FunctionCallInfo fcinfo, Oid type) {
  FairnessInput in{deconstruct(PG_GETARG_ARRAYTYPE_P(0), INT4OID), deconstruct(PG_GETARG_ARRAYTYPE_P(1), type),
                   deconstruct(PG_GETARG_ARRAYTYPE_P(2), type), 0};
  if (in.group.count != in.truth.count || in.group.count != in.predicted.count)
    ereport(ERROR, (errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
                    errmsg("fairness: groups, labels and predictions have different lengths")));
  for (int i = 0; i < in.truth.count; ++i)
    if (in.truth.nulls[i] || in.predicted.nulls[i])
      ereport(ERROR,
              (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("fairness: a label or prediction is NULL")));
  in.groups = group_count(in.group);
  return in;
}

}  // namespace

// flock._drift_numeric(baseline float8[], current float8[]) -> (n_baseline, n_current, psi,
// psi_bins, ks_statistic, ks_pvalue, ks_method)
extern "C" Datum flock_drift_numeric(PG_FUNCTION_ARGS) {
  TupleDesc desc = result_desc(fcinfo);
  Sample baseline = deconstruct(PG_GETARG_ARRAYTYPE_P(0), FLOAT8OID);
  Sample current = deconstruct(PG_GETARG_ARRAYTYPE_P(1), FLOAT8OID);
  flock::monitor::NumericDrift d;
  flock_guard([&] { d = flock::monitor::numeric_drift(finite_values(baseline), finite_values(current)); });
  Datum values[7] = {Int64GetDatum(d.n_baseline),
                     Int64GetDatum(d.n_current),
                     Float8GetDatum(d.psi),
                     Int32GetDatum(d.bins),
                     Float8GetDatum(d.ks_statistic),
                     Float8GetDatum(d.ks_pvalue),
                     CStringGetTextDatum(d.ks_exact ? "exact" : "asymptotic")};
  bool nulls[7] = {};
  PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

// flock._drift_categorical(baseline text[], current text[]) -> (n_baseline, n_current, psi,
// categories, chi2, chi2_dof, chi2_pvalue)
extern "C" Datum flock_drift_categorical(PG_FUNCTION_ARGS) {
  TupleDesc desc = result_desc(fcinfo);
  TextSample baseline = text_sample(PG_GETARG_ARRAYTYPE_P(0));
  TextSample current = text_sample(PG_GETARG_ARRAYTYPE_P(1));
  flock::monitor::CategoricalDrift d;
  flock_guard([&] { d = flock::monitor::categorical_drift(strings(baseline), strings(current)); });
  Datum values[7] = {Int64GetDatum(d.n_baseline),  Int64GetDatum(d.n_current), Float8GetDatum(d.psi),
                     Int32GetDatum(d.categories),  Float8GetDatum(d.chi2),     Int64GetDatum(d.chi2_dof),
                     Float8GetDatum(d.chi2_pvalue)};
  bool nulls[7] = {};
  PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

// flock._fairness_classification(groups int4[], y_true bool[], y_pred bool[])
//   -> SETOF (group_no int4, metric text, value float8): group_no -1 is every row, NULL the summary.
extern "C" Datum flock_fairness_classification(PG_FUNCTION_ARGS) {
  const FairnessInput in = fairness_input(fcinfo, BOOLOID);
  const Sample &group = in.group, &truth = in.truth, &predicted = in.predicted;
  const int32 groups = in.groups;
  constexpr int kPerGroup = 7, kSummaryMetrics = 11;
  const int capacity = (groups + 1) * kPerGroup + kSummaryMetrics;
  MetricRow* rows = static_cast<MetricRow*>(palloc0(sizeof(MetricRow) * size_t(capacity)));
  int count = 0;
  flock_guard([&] {
    std::vector<int32_t> g(size_t(group.count));
    std::vector<uint8_t> y(size_t(group.count)), p(size_t(group.count));
    for (int i = 0; i < group.count; ++i) {
      g[size_t(i)] = DatumGetInt32(group.values[i]);
      y[size_t(i)] = DatumGetBool(truth.values[i]);
      p[size_t(i)] = DatumGetBool(predicted.values[i]);
    }
    const auto f = flock::monitor::classification_fairness(g, groups, y, p);
    auto put = [&](int group_no, const char* metric, std::optional<double> v) {
      rows[count++] = MetricRow{group_no, metric, v.value_or(0), v.has_value()};
    };
    for (int k = -1; k < groups; ++k) {
      const auto& r = k == kOverall ? f.overall : f.groups[size_t(k)];
      put(k, "count", double(r.count));
      put(k, "positives", double(r.positives));
      put(k, "selection_rate", r.selection_rate);
      put(k, "true_positive_rate", r.true_positive_rate);
      put(k, "false_positive_rate", r.false_positive_rate);
      put(k, "precision", r.precision);
      put(k, "accuracy", r.accuracy);
    }
    put(kSummary, "demographic_parity_difference", f.demographic_parity_difference);
    put(kSummary, "demographic_parity_ratio", f.demographic_parity_ratio);
    put(kSummary, "equalized_odds_difference", f.equalized_odds_difference);
    put(kSummary, "equal_opportunity_difference", f.equal_opportunity_difference);
    put(kSummary, "true_positive_rate_difference", f.true_positive_rate_difference);
    put(kSummary, "false_positive_rate_difference", f.false_positive_rate_difference);
    put(kSummary, "accuracy_difference", f.accuracy_difference);
    put(kSummary, "equalized_odds_ratio", f.equalized_odds_ratio);
    put(kSummary, "equal_opportunity_ratio", f.equal_opportunity_ratio);
    put(kSummary, "true_positive_rate_ratio", f.true_positive_rate_ratio);
    put(kSummary, "false_positive_rate_ratio", f.false_positive_rate_ratio);
  });
  put_metric_rows(fcinfo, rows, count);
  return Datum(0);
}

// flock._fairness_regression(groups int4[], y_true float8[], y_pred float8[]) -> as above.
extern "C" Datum flock_fairness_regression(PG_FUNCTION_ARGS) {
  const FairnessInput in = fairness_input(fcinfo, FLOAT8OID);
  const Sample &group = in.group, &truth = in.truth, &predicted = in.predicted;
  const int32 groups = in.groups;
  constexpr int kPerGroup = 6, kSummaryMetrics = 4;
  const int capacity = (groups + 1) * kPerGroup + kSummaryMetrics;
  MetricRow* rows = static_cast<MetricRow*>(palloc0(sizeof(MetricRow) * size_t(capacity)));
  int count = 0;
  flock_guard([&] {
    std::vector<int32_t> g(size_t(group.count));
    std::vector<double> y(size_t(group.count)), p(size_t(group.count));
    for (int i = 0; i < group.count; ++i) {
      g[size_t(i)] = DatumGetInt32(group.values[i]);
      y[size_t(i)] = DatumGetFloat8(truth.values[i]);
      p[size_t(i)] = DatumGetFloat8(predicted.values[i]);
    }
    const auto f = flock::monitor::regression_fairness(g, groups, y, p);
    auto put = [&](int group_no, const char* metric, std::optional<double> v) {
      rows[count++] = MetricRow{group_no, metric, v.value_or(0), v.has_value()};
    };
    for (int k = -1; k < groups; ++k) {
      const auto& r = k == kOverall ? f.overall : f.groups[size_t(k)];
      put(k, "count", double(r.count));
      put(k, "mean_label", r.mean_label);
      put(k, "mean_prediction", r.mean_prediction);
      put(k, "mean_error", r.mean_error);
      put(k, "mae", r.mae);
      put(k, "rmse", r.rmse);
    }
    put(kSummary, "mean_error_difference", f.mean_error_difference);
    put(kSummary, "mae_difference", f.mae_difference);
    put(kSummary, "rmse_difference", f.rmse_difference);
    put(kSummary, "mae_ratio", f.mae_ratio);
  });
  put_metric_rows(fcinfo, rows, count);
  return Datum(0);
}
