// The SQL functions flock.explain and flock.explain_rows (pg/sql/40_explain.sql): a row bound as
// flock.predict binds it (resolve.cpp, bind.cpp), an optional background read through SPI as
// current_user, and one core call (flock::explain::explain, core/src/explain/) behind the error
// boundary, whose results come back in malloc'd buffers.
#include "flock/explain.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "call_state.hpp"
#include "explain.hpp"
#include "explain_batch.hpp"
#include "guard.hpp"
#include "pg.hpp"  // must come first

extern "C" {
PG_FUNCTION_INFO_V1(flock_explain);
PG_FUNCTION_INFO_V1(flock_explain_rows);
PG_FUNCTION_INFO_V1(flock_explain_rows_of);
PG_FUNCTION_INFO_V1(flock_feature_importance);
}

namespace flock::pg {
namespace {

// flock.explain_kernel_samples / _seed / flock.explain_method (define_explain_gucs).
int kernel_samples = 2048;
int kernel_seed = 0;
enum class ExplainMethod { Auto, Kernel };
int explain_method = static_cast<int>(ExplainMethod::Auto);
const config_enum_entry explain_method_options[] = {
    {"auto", static_cast<int>(ExplainMethod::Auto), false},
    {"kernel", static_cast<int>(ExplainMethod::Kernel), false},
    {nullptr, 0, false}};

// One row's explanation for one output, in malloc'd buffers.
struct Explained {
  int nfeat;
  char** names;           // per feature
  double* contributions;  // per feature, then the base value
  double* interactions;   // (nfeat + 1)^2 or nullptr
  char* output;           // the explained output's name
  bool show_output;       // a classifier, or several outputs
  char* json;             // flock.explain's result as text (when asked)
};

void free_explained(Explained& e) {
  if (e.names)
    for (int k = 0; k < e.nfeat; ++k) std::free(e.names[k]);
  std::free(e.names);
  std::free(e.contributions);
  std::free(e.interactions);
  std::free(e.output);
  std::free(e.json);
}

// The model's feature names (one vector input), its input names (several inputs: "name", or
// "name[j]" for an input of several columns), else "f0", "f1", ...
std::vector<std::string> feature_names(const flock::Signature& sig, int F) {
  std::vector<std::string> out;
  if (sig.inputs.size() == 1) {
    for (int k = 0; k < F; ++k)
      out.push_back(static_cast<size_t>(k) < sig.feature_names.size()
                        ? sig.feature_names[static_cast<size_t>(k)]
                        : fmt::format("f{}", k));
    return out;
  }
  for (const auto& in : sig.inputs)
    for (int64_t j = 0; j < in.width; ++j)
      out.push_back(in.width == 1 ? in.name : fmt::format("{}[{}]", in.name, j));
  out.resize(static_cast<size_t>(F), "");
  for (int k = 0; k < F; ++k)
    if (out[static_cast<size_t>(k)].empty()) out[static_cast<size_t>(k)] = fmt::format("f{}", k);
  return out;
}

char* malloc_string(const std::string& s) {
  char* p = strdup(s.c_str());
  if (!p) throw std::bad_alloc();
  return p;
}

// The rows of `ref` (a data set reference or a query) bound to the model like an input record,
// read as current_user. Allocated in CurrentMemoryContext.
RowValues* read_background(Datum model_arg, bool model_is_value, text* ref, int* n) {
  MemoryContext caller = CurrentMemoryContext;
  CallState* bg = new_call_state(caller, model_is_value, true);
  resolve_model(bg, model_arg);
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
  Oid argtypes[1] = {TEXTOID};
  Datum args[1] = {PointerGetDatum(ref)};
  if (SPI_execute_with_args("SELECT flock._background_query($1)", 1, argtypes, args, nullptr, true, 1) !=
          SPI_OK_SELECT ||
      SPI_processed != 1)
    elog(ERROR, "flock._background_query returned no query");
  char* query = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
  int rc = SPI_execute(query, true, 0);
  if (rc != SPI_OK_SELECT)
    ereport(ERROR,
            (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("background must be a query that returns rows"),
             errhint("Pass a data set reference ('name@N') or a SELECT.")));
  uint64 rows = SPI_processed;
  if (rows == 0)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("background has no rows"),
                    errhint("Pass a data set or query with at least one row.")));
  if (rows > static_cast<uint64>(INT_MAX / 2))
    ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED), errmsg("background has too many rows")));
  MemoryContext old = MemoryContextSwitchTo(caller);
  TupleDesc desc = BlessTupleDesc(CreateTupleDescCopy(SPI_tuptable->tupdesc));
  auto* out = static_cast<RowValues*>(palloc(sizeof(RowValues) * rows));
  for (uint64 r = 0; r < rows; ++r) {
    CHECK_FOR_INTERRUPTS();
    Datum row = heap_copy_tuple_as_datum(SPI_tuptable->vals[r], desc);
    out[r] = extract_row(bg, row);
  }
  MemoryContextSwitchTo(old);
  SPI_finish();
  *n = static_cast<int>(rows);
  return out;
}

// The explained output's index in `e` for row r: the one named `output`, else the largest raw
// score. Inside the guard.
size_t chosen_output(const flock::explain::Explanation& e, size_t r, const char* label, const char* output) {
  const size_t O = e.outputs.size();
  size_t o = 0;
  if (output) {
    while (o < O && e.outputs[o] != output) ++o;
    if (o == O) {
      std::string names;
      for (const auto& name : e.outputs) names += (names.empty() ? "" : ", ") + name;
      flock::fail(flock::ErrorCode::InvalidInput, fmt::format("{} has no output \"{}\" to explain", label, output),
                  fmt::format("Its explained outputs are: {}.", names));
    }
  } else {
    for (size_t k = 1; k < O; ++k)
      if (e.raw[r * O + k] > e.raw[r * O + o]) o = k;
  }
  return o;
}

// flock.explain's result for row r of `e` (inside the guard).
std::string row_json(const flock::explain::Explanation& e, size_t r, size_t o, const std::vector<std::string>& names,
                     bool interactions, bool show_output) {
  const int F = static_cast<int>(e.features);
  const size_t S = static_cast<size_t>(F) + 1;
  const size_t O = e.outputs.size();
  const double* c = e.contributions.data() + (r * O + o) * S;
  nlohmann::json j = nlohmann::json::object();
  for (int k = 0; k < F; ++k) {
    if (!interactions) {
      j[names[static_cast<size_t>(k)]] = c[k];
      continue;
    }
    const double* m = e.interactions.data() + (r * O + o) * S * S;
    nlohmann::json inner = nlohmann::json::object();
    for (int i = 0; i < F; ++i) inner[names[static_cast<size_t>(i)]] = m[static_cast<size_t>(k) * S + static_cast<size_t>(i)];
    j[names[static_cast<size_t>(k)]] = std::move(inner);
  }
  j["base_value"] = c[F];
  if (!e.std_errors.empty()) {
    // Sampled KernelSHAP: each contribution's standard error, and the coalitions fitted.
    const double* se = e.std_errors.data() + (r * O + o) * static_cast<size_t>(F);
    nlohmann::json errors = nlohmann::json::object();
    for (int k = 0; k < F; ++k) errors[names[static_cast<size_t>(k)]] = se[k];
    j["std_error"] = std::move(errors);
    j["kernel_samples"] = e.kernel_samples;
  }
  if (show_output) j["output"] = e.outputs[o];
  return j.dump();
}

flock::explain::Explanation explain_core(const flock::Model* model, const char* label, const RowValues* rows, int n,
                                         const RowValues* background, int background_rows, bool interactions) {
  const flock::FeatureBatch batch = feature_batch(model, label, rows, n);
  flock::FeatureBatch bg;
  flock::explain::Options options;
  options.interactions = interactions;
  options.kernel_samples = kernel_samples;
  options.seed = static_cast<uint64_t>(kernel_seed);
  options.force_kernel = explain_method == static_cast<int>(ExplainMethod::Kernel);
  if (background) {
    bg = feature_batch(model, label, background, background_rows);
    options.background = &bg;
  }
  return flock::explain::explain(*model, batch, options);
}

// Explains `row` (inside the guard), keeping the output named `output` (nullptr: the default).
void explain_row(const flock::Model* model, const char* label, const RowValues* row,
                 const RowValues* background, int background_rows, bool interactions, const char* output,
                 bool want_json, Explained& out) {
  flock_guard([&] {
    const flock::explain::Explanation e = explain_core(model, label, row, 1, background, background_rows, interactions);
    const size_t O = e.outputs.size();
    const size_t o = chosen_output(e, 0, label, output);
    const flock::Signature& sig = model->signature();
    const int F = static_cast<int>(e.features);
    const size_t S = static_cast<size_t>(F) + 1;
    out.nfeat = F;
    out.names = malloc_array<char*>(static_cast<size_t>(F));
    const std::vector<std::string> names = feature_names(sig, F);
    for (int k = 0; k < F; ++k) out.names[k] = malloc_string(names[static_cast<size_t>(k)]);
    out.contributions = malloc_array<double>(S);
    std::memcpy(out.contributions, e.contributions.data() + o * S, sizeof(double) * S);
    if (interactions) {
      out.interactions = malloc_array<double>(S * S);
      std::memcpy(out.interactions, e.interactions.data() + o * S * S, sizeof(double) * S * S);
    }
    out.output = malloc_string(e.outputs[o]);
    out.show_output = sig.task == flock::Task::Classification || O > 1;
    if (want_json) out.json = malloc_string(row_json(e, 0, o, names, interactions, out.show_output));
  });
}

// Explains n rows in one core call (inside the guard): their flock.explain results, one after
// the other, each ended by a NUL, in one malloc'd buffer (made last, so nothing leaks on error).
char* explain_rows_json(const flock::Model* model, const char* label, const RowValues* rows, int n,
                        const RowValues* background, int background_rows, bool interactions, const char* output) {
  char* packed = nullptr;
  flock_guard([&] {
    const flock::explain::Explanation e = explain_core(model, label, rows, n, background, background_rows, interactions);
    const flock::Signature& sig = model->signature();
    const std::vector<std::string> names = feature_names(sig, static_cast<int>(e.features));
    const bool show_output = sig.task == flock::Task::Classification || e.outputs.size() > 1;
    std::string all;
    for (size_t r = 0; r < static_cast<size_t>(n); ++r) {
      all += row_json(e, r, chosen_output(e, r, label, output), names, interactions, show_output);
      all.push_back('\0');
    }
    packed = malloc_array<char>(all.size());
    std::memcpy(packed, all.data(), all.size());
  });
  return packed;
}

// What an explain call site keeps across rows (fn_extra, or the batch node's ExplainCall): its
// CallState, and the background it read last, bound for the model it was read for, as the role it
// was read as. Rereading a background for every row of a query would dominate its cost.
struct ExplainSite {
  CallState* st;
  char* background_ref;
  char background_sha[kSha256HexSize];  // the model's sha256
  Oid background_user;
  RowValues* background;
  int background_rows;
};

// The background `ref` for the site's (resolved) model: the one read last when it is the same
// reference, model and role, else read now into `mcxt`.
void site_background(ExplainSite* site, MemoryContext mcxt, Datum model_arg, text* ref_text) {
  char* ref = text_to_cstring(ref_text);
  CallState* st = site->st;
  if (site->background && memcmp(site->background_sha, st->model_sha, kSha256HexSize) == 0 &&
      site->background_user == GetUserId() && strcmp(site->background_ref, ref) == 0)
    return;
  MemoryContext old = MemoryContextSwitchTo(mcxt);
  site->background = nullptr;
  site->background = read_background(model_arg, st->model_is_value, ref_text, &site->background_rows);
  site->background_ref = pstrdup(ref);
  memcpy(site->background_sha, st->model_sha, kSha256HexSize);
  site->background_user = GetUserId();
  MemoryContextSwitchTo(old);
}

ExplainSite* explain_site(FunctionCallInfo fcinfo) {
  auto* site = static_cast<ExplainSite*>(fcinfo->flinfo->fn_extra);
  if (site) return site;
  site = static_cast<ExplainSite*>(MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(ExplainSite)));
  // As call_state (resolve.cpp) decides for the prediction functions.
  Oid arg0 = get_fn_expr_argtype(fcinfo->flinfo, 0);
  Oid arg1 = get_fn_expr_argtype(fcinfo->flinfo, 1);
  site->st =
      new_call_state(fcinfo->flinfo->fn_mcxt, arg0 != TEXTOID && arg0 != InvalidOid && arg0 != UNKNOWNOID,
                     arg1 != FLOAT4ARRAYOID);
  fcinfo->flinfo->fn_extra = site;
  return site;
}

// What both functions do before the core call; false when the input is NULL (no row, no result).
bool prepare(FunctionCallInfo fcinfo, int background_arg, int output_arg, CallState** st, RowValues* row,
             RowValues** background, int* background_rows, char** output) {
  if (PG_ARGISNULL(0))
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("model must not be NULL"),
                    errhint("Pass a model name ('name' or 'name@N') or a flock.model value.")));
  if (PG_ARGISNULL(1)) return false;
  ExplainSite* site = explain_site(fcinfo);
  *st = site->st;
  resolve_model(*st, PG_GETARG_DATUM(0));
  *row = extract_row(*st, PG_GETARG_DATUM(1));
  *background = nullptr;
  *background_rows = 0;
  if (PG_NARGS() > background_arg && !PG_ARGISNULL(background_arg)) {
    site_background(site, fcinfo->flinfo->fn_mcxt, PG_GETARG_DATUM(0), PG_GETARG_TEXT_PP(background_arg));
    *background = site->background;
    *background_rows = site->background_rows;
  }
  *output = PG_NARGS() > output_arg && !PG_ARGISNULL(output_arg)
                ? text_to_cstring(PG_GETARG_TEXT_PP(output_arg))
                : nullptr;
  return true;
}

// flock.feature_importance's result in malloc'd buffers: measure m of feature k at values[m * nfeat + k].
struct Importances {
  int nfeat;
  int nmeasures;
  char** names;
  char** measures;
  double* values;
};

void free_importances(Importances& im) {
  if (im.names)
    for (int k = 0; k < im.nfeat; ++k) std::free(im.names[k]);
  if (im.measures)
    for (int m = 0; m < im.nmeasures; ++m) std::free(im.measures[m]);
  std::free(im.names);
  std::free(im.measures);
  std::free(im.values);
}

void importances(const flock::Model* model, const char* label, const RowValues* data, int data_rows,
                 Importances& out) {
  flock_guard([&] {
    flock::FeatureBatch batch;
    if (data) batch = feature_batch(model, label, data, data_rows);
    flock::explain::Options options;
    options.kernel_samples = kernel_samples;
    options.seed = static_cast<uint64_t>(kernel_seed);
    const flock::explain::Importance im =
        flock::explain::importance(*model, data ? &batch : nullptr, options);
    const flock::Signature& sig = model->signature();
    const int F = static_cast<int>(im.features);
    out.nfeat = F;
    out.names = malloc_array<char*>(static_cast<size_t>(F));
    const std::vector<std::string> names = feature_names(sig, F);
    for (int k = 0; k < F; ++k) out.names[k] = malloc_string(names[static_cast<size_t>(k)]);
    out.nmeasures = static_cast<int>(im.measures.size());
    out.measures = malloc_array<char*>(im.measures.size());
    out.values = malloc_array<double>(im.measures.size() * static_cast<size_t>(F));
    for (size_t m = 0; m < im.measures.size(); ++m) {
      out.measures[m] = malloc_string(im.measures[m]);
      std::memcpy(out.values + m * static_cast<size_t>(F), im.values[m].data(),
                  sizeof(double) * static_cast<size_t>(F));
    }
  });
}

}  // namespace

void define_explain_gucs() {
  DefineCustomIntVariable(
      "flock.explain_kernel_samples", "Coalitions KernelSHAP fits per explained row.",
      "All 2^F - 2 coalitions of F features are enumerated (exact values) when that is no "
      "more; otherwise this many are sampled, in complementary pairs, and each contribution "
      "gets a standard error that shrinks as 1/sqrt(samples).",
      &kernel_samples, 2048, 64, static_cast<int>(flock::explain::kMaxKernelSamples), PGC_USERSET, 0, nullptr,
      nullptr, nullptr);
  DefineCustomIntVariable("flock.explain_kernel_seed", "Seed of KernelSHAP's coalition sampling.",
                          "The same seed, model, row and background give the same values.", &kernel_seed, 0,
                          0, INT_MAX, PGC_USERSET, 0, nullptr, nullptr, nullptr);
  DefineCustomEnumVariable("flock.explain_method", "Which method flock.explain uses: 'auto' or 'kernel'.",
                           "auto: exact TreeSHAP or linear SHAP where they apply, else KernelSHAP with a "
                           "background. kernel: KernelSHAP for every model (needs a background; explains a "
                           "classifier's probabilities).",
                           &explain_method, static_cast<int>(ExplainMethod::Auto), explain_method_options,
                           PGC_USERSET, 0, nullptr, nullptr, nullptr);
}

struct ExplainCall {
  ExplainSite site;
  MemoryContext mcxt;
  Datum model_arg;
  bool interactions;
  text* background_ref;  // nullptr: none
  char* output;          // nullptr: the default
};

ExplainCall* new_explain_call(MemoryContext mcxt, CallState* st, Datum model_arg, bool interactions,
                              text* background_ref, const char* output) {
  auto* call = static_cast<ExplainCall*>(MemoryContextAllocZero(mcxt, sizeof(ExplainCall)));
  call->site.st = st;
  call->mcxt = mcxt;
  call->model_arg = model_arg;
  call->interactions = interactions;
  call->background_ref = background_ref;
  call->output = output ? MemoryContextStrdup(mcxt, output) : nullptr;
  return call;
}

Size explain_bytes_per_row(const ExplainCall* call) {
  const flock::Signature& sig = call->site.st->model->signature();
  Size features = 0;
  for (const auto& in : sig.inputs) features += static_cast<Size>(std::max<int64_t>(in.width, 1));
  const Size S = features + 1;
  const Size outputs = std::max<Size>(sig.class_labels.size(), 1);
  // Per explained output: its contributions (and interaction matrix); for the one kept, its json
  // text and jsonb (about 64 bytes a value with its key).
  Size values = S;
  if (call->interactions) values += S * S;
  return outputs * values * sizeof(double) + values * 64;
}

void explain_batch(ExplainCall* call, const RowValues* rows, int n, Datum* out) {
  if (n == 0) return;  // as flock.explain on NULL inputs only: no background read
  CallState* st = call->site.st;
  if (call->background_ref) site_background(&call->site, call->mcxt, call->model_arg, call->background_ref);
  char* packed = explain_rows_json(st->model, st->label, rows, n, call->site.background,
                                   call->background_ref ? call->site.background_rows : 0, call->interactions,
                                   call->output);
  // Copy out of the malloc'd buffer before anything can raise.
  const char* p = packed;
  char** jsons = static_cast<char**>(palloc(sizeof(char*) * n));
  for (int r = 0; r < n; ++r) {
    jsons[r] = pstrdup(p);
    p += strlen(p) + 1;
  }
  std::free(packed);
  for (int r = 0; r < n; ++r) out[r] = DirectFunctionCall1(jsonb_in, CStringGetDatum(jsons[r]));
}

}  // namespace flock::pg

using namespace flock::pg;

// flock.explain(model, input, interactions, background, output) RETURNS jsonb
extern "C" Datum flock_explain(PG_FUNCTION_ARGS) {
  CallState* st = nullptr;
  RowValues row;
  RowValues* background = nullptr;
  int background_rows = 0;
  char* output = nullptr;
  if (!prepare(fcinfo, 3, 4, &st, &row, &background, &background_rows, &output)) PG_RETURN_NULL();
  const bool interactions = PG_NARGS() > 2 && !PG_ARGISNULL(2) && PG_GETARG_BOOL(2);
  Explained e = {};
  explain_row(st->model, st->label, &row, background, background_rows, interactions, output, true, e);
  char* json = pstrdup(e.json);
  free_explained(e);
  PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}

namespace {

// explain_rows' rows: each feature with the row's value (NULL when missing) and its contribution,
// then base_value. names / contributions: F entries, then the base value's contribution.
void put_explained_rows(FunctionCallInfo fcinfo, const RowValues& row, char** names,
                        const double* contributions, int F) {
  auto* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
  for (int k = 0; k <= F; ++k) {
    Datum values[3];
    bool nulls[3] = {false, false, false};
    values[0] = CStringGetTextDatum(k < F ? names[k] : "base_value");
    // The input value as the model saw it (NULL for a missing one, and for the base value).
    const bool has_value = k < F && k < row.n && !row.isnull[k] && !std::isnan(row.num[k]);
    values[1] = has_value ? Float8GetDatum(row.num[k]) : (Datum)0;
    nulls[1] = !has_value;
    values[2] = Float8GetDatum(contributions[k]);
    tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
  }
}

// explain_rows for one row (arguments model, input, background, output), after InitMaterializedSRF.
Datum explain_rows_of_one_row(FunctionCallInfo fcinfo) {
  CallState* st = nullptr;
  RowValues row;
  RowValues* background = nullptr;
  int background_rows = 0;
  char* output = nullptr;
  if (!prepare(fcinfo, 2, 3, &st, &row, &background, &background_rows, &output)) return (Datum)0;
  Explained e = {};
  explain_row(st->model, st->label, &row, background, background_rows, false, output, false, e);
  // Copy out of the malloc'd buffers before anything can raise.
  const int F = e.nfeat;
  char** names = static_cast<char**>(palloc(sizeof(char*) * (F + 1)));
  double* contributions = static_cast<double*>(palloc(sizeof(double) * (F + 1)));
  for (int k = 0; k < F; ++k) names[k] = pstrdup(e.names[k]);
  memcpy(contributions, e.contributions, sizeof(double) * (F + 1));
  free_explained(e);
  put_explained_rows(fcinfo, row, names, contributions, F);
  return (Datum)0;
}

}  // namespace

// flock.explain_rows(model, input, background, output) RETURNS TABLE(feature, value, contribution)
extern "C" Datum flock_explain_rows(PG_FUNCTION_ARGS) {
  InitMaterializedSRF(fcinfo, 0);
  return explain_rows_of_one_row(fcinfo);
}

// flock._explain_rows_of(model, input, background, output, explanation jsonb): what
// flock.explain_rows(model, input, background, output) returns, read from `explanation`, that
// call's flock.explain computed by the batch node (explain_plan.cpp): contributions in the model's
// feature order with the row's values. A feature name the jsonb cannot hold apart (a duplicate,
// or one of its other keys) is explained again here, one row, as explain_rows does.
extern "C" Datum flock_explain_rows_of(PG_FUNCTION_ARGS) {
  InitMaterializedSRF(fcinfo, 0);
  if (PG_ARGISNULL(4))
    return explain_rows_of_one_row(fcinfo);  // no explanation: only a NULL input gives none
  CallState* st = nullptr;
  RowValues row;
  RowValues* no_background = nullptr;
  int no_rows = 0;
  char* no_output = nullptr;
  if (!prepare(fcinfo, PG_NARGS(), PG_NARGS(), &st, &row, &no_background, &no_rows, &no_output))
    return (Datum)0;
  char** names = nullptr;
  int F = 0;
  {
    char** malloced = nullptr;
    flock_guard([&] {
      const flock::Signature& sig = st->model->signature();
      int64_t features = 0;
      for (const auto& in : sig.inputs) features += std::max<int64_t>(in.width, 1);
      const std::vector<std::string> list = feature_names(sig, static_cast<int>(features));
      malloced = malloc_array<char*>(list.size());
      for (size_t k = 0; k < list.size(); ++k) malloced[k] = malloc_string(list[k]);
      F = static_cast<int>(list.size());
    });
    names = static_cast<char**>(palloc(sizeof(char*) * (F + 1)));
    for (int k = 0; k < F; ++k) {
      names[k] = pstrdup(malloced[k]);
      std::free(malloced[k]);
    }
    std::free(malloced);
  }
  Jsonb* explanation = PG_GETARG_JSONB_P(4);
  double* contributions = static_cast<double*>(palloc(sizeof(double) * (F + 1)));
  bool readable = true;
  for (int k = 0; readable && k <= F; ++k) {
    const char* key = k < F ? names[k] : "base_value";
    for (int j = 0; readable && j < k && k < F; ++j) readable = strcmp(names[j], key) != 0;
    if (k < F)
      for (const char* reserved : {"base_value", "output", "std_error", "kernel_samples"})
        readable = readable && strcmp(key, reserved) != 0;
    if (!readable) break;
    JsonbValue wanted;
    wanted.type = jbvString;
    wanted.val.string.val = const_cast<char*>(key);
    wanted.val.string.len = static_cast<int>(strlen(key));
    JsonbValue* found = findJsonbValueFromContainer(&explanation->root, JB_FOBJECT, &wanted);
    readable = found && found->type == jbvNumeric;
    if (readable)
      contributions[k] =
          DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(found->val.numeric)));
  }
  if (!readable) return explain_rows_of_one_row(fcinfo);
  put_explained_rows(fcinfo, row, names, contributions, F);
  return (Datum)0;
}
// flock.feature_importance(model, data) RETURNS TABLE(feature, measure, value)
extern "C" Datum flock_feature_importance(PG_FUNCTION_ARGS) {
  if (PG_ARGISNULL(0))
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("model must not be NULL"),
                    errhint("Pass a model name ('name' or 'name@N') or a flock.model value.")));
  InitMaterializedSRF(fcinfo, 0);
  CallState* st = call_state(fcinfo);
  resolve_model(st, PG_GETARG_DATUM(0));
  RowValues* data = nullptr;
  int data_rows = 0;
  if (!PG_ARGISNULL(1))
    data = read_background(PG_GETARG_DATUM(0), st->model_is_value, PG_GETARG_TEXT_PP(1), &data_rows);
  Importances im = {};
  importances(st->model, st->label, data, data_rows, im);
  const int F = im.nfeat, M = im.nmeasures;
  char** names = static_cast<char**>(palloc(sizeof(char*) * Max(F, 1)));
  char** measures = static_cast<char**>(palloc(sizeof(char*) * Max(M, 1)));
  double* values = static_cast<double*>(palloc(sizeof(double) * Max(F * M, 1)));
  for (int k = 0; k < F; ++k) names[k] = pstrdup(im.names[k]);
  for (int m = 0; m < M; ++m) measures[m] = pstrdup(im.measures[m]);
  if (F * M > 0) memcpy(values, im.values, sizeof(double) * F * M);
  free_importances(im);
  auto* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
  for (int m = 0; m < M; ++m) {
    for (int k = 0; k < F; ++k) {
      Datum row[3] = {CStringGetTextDatum(names[k]), CStringGetTextDatum(measures[m]),
                      Float8GetDatum(values[m * F + k])};
      bool nulls[3] = {false, false, false};
      tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, nulls);
    }
  }
  return (Datum)0;
}
