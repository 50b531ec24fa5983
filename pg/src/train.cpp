// flock._train_fit: reads a data set's table into feature and target columns (plain C style), then
// trains with the core (core/src/train/) inside flock_guard. flock.train (pg/sql/14_train.sql)
// snapshots the data first, and registers and records what this returns.
//
// Rows are read in the table's physical order with synchronized scans off, so a snapshot's rows
// come in the order its query gave them. Numbers only: smallint, integer, bigint, real, double
// precision, numeric and boolean (0 / 1); NULL (and NaN) is a missing value.
#include "train.hpp"  // must come first

extern "C" {
#include "access/heapam.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "executor/tuptable.h"
#include "optimizer/cost.h"
#include "postmaster/bgworker_internals.h"
#include "storage/proc.h"
#include "utils/snapmgr.h"
}
#undef flock

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "flock/train.hpp"
#include "guard.hpp"

extern "C" {
PG_FUNCTION_INFO_V1(flock_train_fit);
PG_FUNCTION_INFO_V1(flock_train_capture_next);
}

namespace flock::pg {
namespace {

constexpr int kCopiesOfTheData = 3;  // the rows read, XGBoost's train / test copy, its matrix
constexpr int64 kRowsPerInterruptCheck = 4096;

bool numeric_type(Oid type) {
  switch (type) {
    case INT2OID:
    case INT4OID:
    case INT8OID:
    case FLOAT4OID:
    case FLOAT8OID:
    case NUMERICOID:
    case BOOLOID:
      return true;
    default:
      return false;
  }
}

float as_float(Datum value, Oid type) {
  switch (type) {
    case INT2OID:
      return static_cast<float>(DatumGetInt16(value));
    case INT4OID:
      return static_cast<float>(DatumGetInt32(value));
    case INT8OID:
      return static_cast<float>(DatumGetInt64(value));
    case FLOAT4OID:
      return DatumGetFloat4(value);
    case FLOAT8OID:
      return static_cast<float>(DatumGetFloat8(value));
    case BOOLOID:
      return DatumGetBool(value) ? 1.0f : 0.0f;
    default:
      return static_cast<float>(DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow, value)));
  }
}

int column_named(TupleDesc desc, const char* name) {
  for (int i = 0; i < desc->natts; ++i) {
    Form_pg_attribute att = TupleDescAttr(desc, i);
    if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0) return i;
  }
  return -1;
}

char* column_list(TupleDesc desc) {
  StringInfoData names;
  initStringInfo(&names);
  for (int i = 0; i < desc->natts; ++i) {
    Form_pg_attribute att = TupleDescAttr(desc, i);
    if (att->attisdropped) continue;
    appendStringInfo(&names, "%s%s", names.len ? ", " : "", quote_identifier(NameStr(att->attname)));
  }
  return names.data;
}

void check_numeric(TupleDesc desc, int column, const char* role) {
  Form_pg_attribute att = TupleDescAttr(desc, column);
  if (!numeric_type(att->atttypid))
    ereport(ERROR,
            (errcode(ERRCODE_DATATYPE_MISMATCH),
             errmsg("%s \"%s\" is of type %s, not a number", role, NameStr(att->attname),
                    format_type_be(att->atttypid)),
             errhint("Training takes smallint, integer, bigint, real, double precision, numeric and boolean "
                     "columns: cast or encode the column in the query (e.g. (color = 'red')::int), or leave "
                     "it out with features => ARRAY[...].")));
}

}  // namespace

struct TrainingCapture {
  MemoryContext context;  // a child of TopTransactionContext
  SubTransactionId subxact;
  Oid relid;  // InvalidOid while rows are added
  int natts;
  Oid* types;  // per column: its type, InvalidOid when it is not a number
  float** columns;
  int64 rows;
  int64 capacity;
  int64 max_values;  // flock.train_memory in float4 values
  bool dropped;
};

namespace {

LocalTransactionId capture_requested = InvalidLocalTransactionId;
TrainingCapture* capture = nullptr;
bool capture_callbacks = false;

void drop_capture() {
  if (capture != nullptr && capture->context != nullptr) MemoryContextDelete(capture->context);
  capture = nullptr;
}

void capture_at_xact_end(XactEvent event, void*) {
  if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_COMMIT ||
      event == XACT_EVENT_PARALLEL_ABORT || event == XACT_EVENT_PREPARE) {
    capture = nullptr;  // its memory goes with TopTransactionContext
    capture_requested = InvalidLocalTransactionId;
  }
}

void capture_at_subxact_end(SubXactEvent event, SubTransactionId subxact, SubTransactionId parent, void*) {
  if (capture == nullptr || capture->subxact != subxact) return;
  if (event == SUBXACT_EVENT_ABORT_SUB)
    drop_capture();
  else if (event == SUBXACT_EVENT_COMMIT_SUB)
    capture->subxact = parent;
}

// What the core hands back, in malloc'd memory (C++ never pallocs; see guard.hpp).
struct Fitted {
  char* model = nullptr;
  size_t model_bytes = 0;
  char* format = nullptr;
  char* params = nullptr;
  char* metrics = nullptr;
  char* environment = nullptr;
};

// nthread when params do not say: the leader and the parallel workers one query may use.
int default_threads() { return Max(1, Min(max_parallel_workers_per_gather, max_parallel_workers) + 1); }

Datum jsonb_from(const char* text) { return DirectFunctionCall1(jsonb_in, CStringGetDatum(text)); }

// A NOTICE of a training round; its error (a client gone, say) returned rather than raised, so
// that C++ code can call it (pg_call's role, without a lambda in a setjmp frame).
__attribute__((noinline)) ErrorData* send_notice(const char* model, int round, int rounds,
                                                 const char* metric) {
  MemoryContext context = CurrentMemoryContext;
  ErrorData* volatile error = nullptr;
  PG_TRY();
  { ereport(NOTICE, (errmsg("flock.train %s: round %d of %d%s", model, round, rounds, metric))); }
  PG_CATCH();
  {
    MemoryContextSwitchTo(context);
    error = CopyErrorData();
    FlushErrorState();
  }
  PG_END_TRY();
  return error;
}

// The core's part, inside the guard, in a frame of its own (noinline): flock_train_fit's frames stay
// plain C.
__attribute__((noinline)) void fit_in_core(int64 rows, int n_features, const float* x, const float* y,
                                           const char** names, const char* algorithm, const char* params,
                                           double test_fraction, int32 seed, const char* model_name,
                                           Fitted* out) {
  const int threads = default_threads();
  const int notice_rounds = train_notice_rounds;
  Fitted& fitted = *out;
  flock_guard([&] {
    flock::train::TrainingData data;
    data.rows = rows;
    data.cols = n_features;
    data.features.assign(x, x + rows * n_features);
    data.target.assign(y, y + rows);
    for (int j = 0; j < n_features; ++j) data.feature_names.emplace_back(names[j]);
    flock::train::Request request;
    request.algorithm = algorithm;
    try {
      request.params = nlohmann::json::parse(params);
    } catch (const nlohmann::json::exception&) {
      flock::fail(flock::ErrorCode::Internal, "params are not JSON");
    }
    request.test_fraction = test_fraction;
    request.seed = seed;
    request.default_threads = threads;
    request.on_progress = [&](const flock::train::Progress& p) {
      train_progress_update("training", p.round, p.rounds, p.metric);
      if (notice_rounds > 0 && (p.round % notice_rounds == 0 || p.round == p.rounds || p.best_round > 0)) {
        std::string metric =
            std::isnan(p.metric) ? std::string() : ", test " + p.metric_name + " " + std::to_string(p.metric);
        if (p.best_round > 0) metric += "; stopped early, keeping round " + std::to_string(p.best_round);
        if (ErrorData* error = send_notice(model_name, p.round, p.rounds, metric.c_str()))
          throw PgError{error};
      }
    };
    flock::train::Result result = flock::train::train(data, request);
    fitted.model = static_cast<char*>(malloc(result.model.size()));
    fitted.format = strdup(result.format.c_str());
    fitted.params = strdup(result.params.dump().c_str());
    fitted.metrics = strdup(result.metrics.dump().c_str());
    fitted.environment = strdup(result.environment.dump().c_str());
    if (!fitted.model || !fitted.format || !fitted.params || !fitted.metrics || !fitted.environment)
      throw std::bad_alloc();
    memcpy(fitted.model, result.model.data(), result.model.size());
    fitted.model_bytes = result.model.size();
  });
}

}  // namespace

TrainingCapture* training_capture_begin(TupleDesc desc) {
  if (capture_requested == InvalidLocalTransactionId || capture_requested != MyProc->lxid) return nullptr;
  capture_requested = InvalidLocalTransactionId;
  drop_capture();
  if (!capture_callbacks) {
    RegisterXactCallback(capture_at_xact_end, nullptr);
    RegisterSubXactCallback(capture_at_subxact_end, nullptr);
    capture_callbacks = true;
  }
  MemoryContext context =
      AllocSetContextCreate(TopTransactionContext, "flock training capture", ALLOCSET_DEFAULT_SIZES);
  TrainingCapture* c =
      static_cast<TrainingCapture*>(MemoryContextAllocZero(context, sizeof(TrainingCapture)));
  c->context = context;
  c->subxact = GetCurrentSubTransactionId();
  c->natts = desc->natts;
  c->types = static_cast<Oid*>(MemoryContextAllocZero(context, sizeof(Oid) * Max(desc->natts, 1)));
  c->columns = static_cast<float**>(MemoryContextAllocZero(context, sizeof(float*) * Max(desc->natts, 1)));
  c->capacity = 1024;
  int numeric_columns = 0;
  for (int i = 0; i < desc->natts; ++i) {
    Form_pg_attribute att = TupleDescAttr(desc, i);
    if (att->attisdropped || !numeric_type(att->atttypid)) continue;
    c->types[i] = att->atttypid;
    c->columns[i] = static_cast<float*>(MemoryContextAllocHuge(context, c->capacity * sizeof(float)));
    ++numeric_columns;
  }
  c->max_values = static_cast<int64>(train_memory_kb) * 1024 / static_cast<int64>(sizeof(float));
  c->dropped = numeric_columns == 0;
  capture = c;
  return c;
}

void training_capture_add(TrainingCapture* c, const Datum* values, const bool* nulls) {
  if (c->dropped || capture != c) return;
  if (c->rows == c->capacity) {
    int64 grown = c->capacity * 2;
    int numeric_columns = 0;
    for (int i = 0; i < c->natts; ++i) numeric_columns += OidIsValid(c->types[i]) ? 1 : 0;
    if (grown * numeric_columns > c->max_values) {
      // Past flock.train_memory: the fit reads the table instead, and says so if it does not fit.
      c->dropped = true;
      for (int i = 0; i < c->natts; ++i)
        if (c->columns[i] != nullptr) pfree(c->columns[i]);
      return;
    }
    for (int i = 0; i < c->natts; ++i)
      if (c->columns[i] != nullptr)
        c->columns[i] = static_cast<float*>(repalloc_huge(c->columns[i], grown * sizeof(float)));
    c->capacity = grown;
  }
  for (int i = 0; i < c->natts; ++i) {
    if (c->columns[i] == nullptr) continue;
    c->columns[i][c->rows] =
        nulls[i] ? std::numeric_limits<float>::quiet_NaN() : as_float(values[i], c->types[i]);
  }
  ++c->rows;
}

void training_capture_cancel_request() { capture_requested = InvalidLocalTransactionId; }

void training_capture_end(TrainingCapture* c, Oid relid) {
  if (capture == c && !c->dropped) c->relid = relid;
}

namespace {

// The capture of `relid`'s rows, if this transaction wrote that table with one and it is whole;
// the caller drops it (drop_capture) once read.
TrainingCapture* capture_of(Oid relid) {
  if (capture == nullptr || capture->dropped || capture->relid != relid) return nullptr;
  return capture;
}

// Past flock.train_memory while reading the rows (54000).
[[noreturn]] void train_memory_exceeded(int64 max_rows, int n_features) {
  ereport(ERROR,
          (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
           errmsg("the training data needs more memory than flock.train_memory (%d kB)", train_memory_kb),
           errdetail("%lld rows of %d features and a target fit in it.", static_cast<long long>(max_rows),
                     n_features),
           errhint("Raise flock.train_memory (SET flock.train_memory = '4GB'), or train on a sample.")));
  pg_unreachable();
}

}  // namespace
}  // namespace flock::pg

using namespace flock::pg;

// flock._train_capture_next(): flock.train's next snapshot in this transaction keeps its numeric
// columns in memory for the fit (TrainingCapture, train.hpp).
extern "C" Datum flock_train_capture_next(PG_FUNCTION_ARGS) {
  capture_requested = MyProc->lxid;
  PG_RETURN_VOID();
}

// flock._train_fit(data regclass, target text, features text[], algorithm text, params jsonb,
//                  test_fraction float8, seed integer, model_name text)
//   -> (model bytea, format text, feature_names text[], used_params jsonb, metrics jsonb, environment jsonb)
extern "C" Datum flock_train_fit(PG_FUNCTION_ARGS) {
  for (int i = 0; i < 8; ++i) {
    if (i != 2 && PG_ARGISNULL(i))
      ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                      errmsg("flock._train_fit: argument %d is NULL", i + 1)));
  }
  Oid relid = PG_GETARG_OID(0);
  char* target = text_to_cstring(PG_GETARG_TEXT_PP(1));
  char* algorithm = text_to_cstring(PG_GETARG_TEXT_PP(3));
  char* params = JsonbToCString(nullptr, &PG_GETARG_JSONB_P(4)->root, VARSIZE(PG_GETARG_JSONB_P(4)));
  double test_fraction = PG_GETARG_FLOAT8(5);
  int32 seed = PG_GETARG_INT32(6);
  char* model_name = text_to_cstring(PG_GETARG_TEXT_PP(7));

  // Only data set snapshots: they have no row-level security, which a heap scan would bypass.
  const char* schema = get_namespace_name(get_rel_namespace(relid));
  if (schema == nullptr || strcmp(schema, "flock_data") != 0 || get_rel_relkind(relid) != RELKIND_RELATION)
    ereport(ERROR,
            (errcode(ERRCODE_WRONG_OBJECT_TYPE), errmsg("flock._train_fit reads data set snapshots only"),
             errhint("Train with flock.train, which snapshots the data first.")));
  if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
    ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                    errmsg("permission denied for the training data %s", get_rel_name(relid)),
                    errhint("Train on a table, data set or query you may read.")));
  Relation rel = table_open(relid, AccessShareLock);
  TupleDesc desc = RelationGetDescr(rel);

  int target_column = column_named(desc, target);
  if (target_column < 0)
    ereport(ERROR, (errcode(ERRCODE_UNDEFINED_COLUMN),
                    errmsg("target column \"%s\" is not in the training data", target),
                    errhint("Its columns are %s.", column_list(desc))));
  check_numeric(desc, target_column, "target column");

  int* columns = static_cast<int*>(palloc(sizeof(int) * (desc->natts + 1)));
  int n_features = 0;
  if (PG_ARGISNULL(2)) {
    for (int i = 0; i < desc->natts; ++i) {
      if (i == target_column || TupleDescAttr(desc, i)->attisdropped) continue;
      check_numeric(desc, i, "feature");
      columns[n_features++] = i;
    }
  } else {
    ArrayType* names = PG_GETARG_ARRAYTYPE_P(2);
    Datum* elems;
    bool* elem_nulls;
    int n;
    deconstruct_array(names, TEXTOID, -1, false, TYPALIGN_INT, &elems, &elem_nulls, &n);
    if (n > desc->natts)
      ereport(ERROR,
              (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("more features than columns were named"),
               errhint("Name each feature column once.")));
    for (int k = 0; k < n; ++k) {
      if (elem_nulls[k])
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("a feature name is NULL"),
                        errhint("features => ARRAY['col1', 'col2'] names the feature columns.")));
      char* name = TextDatumGetCString(elems[k]);
      int column = column_named(desc, name);
      if (column < 0)
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_COLUMN),
                        errmsg("feature \"%s\" is not in the training data", name),
                        errhint("Its columns are %s.", column_list(desc))));
      if (column == target_column)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("column \"%s\" is both the target and a feature", name),
                        errhint("Leave the target out of features.")));
      for (int j = 0; j < n_features; ++j)
        if (columns[j] == column)
          ereport(ERROR,
                  (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("feature \"%s\" is named twice", name),
                   errhint("Name each feature column once.")));
      check_numeric(desc, column, "feature");
      columns[n_features++] = column;
    }
  }
  if (n_features == 0)
    ereport(ERROR,
            (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("the training data has no feature columns"),
             errhint("The features are the columns other than the target, or those named in features.")));

  // Read the rows into float columns, within flock.train_memory.
  const double bytes_per_row = static_cast<double>(n_features + 1) * sizeof(float) * kCopiesOfTheData;
  const int64 max_rows = static_cast<int64>(static_cast<double>(train_memory_kb) * 1024.0 / bytes_per_row);
  int64 capacity = 1024;
  int64 rows = 0, null_targets = 0;
  float* x = static_cast<float*>(
      MemoryContextAllocHuge(CurrentMemoryContext, capacity * n_features * sizeof(float)));
  float* y = static_cast<float*>(MemoryContextAllocHuge(CurrentMemoryContext, capacity * sizeof(float)));
  // The slot is cleared at the end, or by the (sub)transaction abort of an error (train_progress.cpp).
  train_progress_begin(model_name, algorithm, 0, n_features);
  bool from_capture = false;
  if (TrainingCapture* captured = capture_of(relid)) {
    from_capture = true;
    // The rows as the snapshot wrote them: no second read of the table.
    rows = captured->rows;
    if (rows > max_rows)
      train_memory_exceeded(max_rows, n_features);
    capacity = Max(rows, 1);
    x = static_cast<float*>(repalloc_huge(x, capacity * n_features * sizeof(float)));
    y = static_cast<float*>(repalloc_huge(y, capacity * sizeof(float)));
    for (int j = 0; j < n_features; ++j) {
      const float* column = captured->columns[columns[j]];
      for (int64 r = 0; r < rows; ++r) x[r * n_features + j] = column[r];
      CHECK_FOR_INTERRUPTS();
    }
    const float* target_values = captured->columns[target_column];
    for (int64 r = 0; r < rows; ++r) {
      y[r] = target_values[r];
      if (std::isnan(y[r])) ++null_targets;
    }
    drop_capture();
    elog(DEBUG1, "flock.train %s: %lld rows taken as the snapshot wrote them", model_name,
         static_cast<long long>(rows));
  }
  TableScanDesc scan = table_beginscan_strat(rel, GetActiveSnapshot(), 0, nullptr, true, false);
  TupleTableSlot* slot = table_slot_create(rel, nullptr);
  while (!from_capture && table_scan_getnextslot(scan, ForwardScanDirection, slot)) {
    if (rows % kRowsPerInterruptCheck == 0) {
      CHECK_FOR_INTERRUPTS();
      train_progress_rows(rows);
    }
    if (rows >= max_rows)
      train_memory_exceeded(max_rows, n_features);
    if (rows == capacity) {
      capacity *= 2;
      x = static_cast<float*>(repalloc_huge(x, capacity * n_features * sizeof(float)));
      y = static_cast<float*>(repalloc_huge(y, capacity * sizeof(float)));
    }
    slot_getallattrs(slot);
    for (int j = 0; j < n_features; ++j) {
      int c = columns[j];
      x[rows * n_features + j] = slot->tts_isnull[c]
                                     ? std::numeric_limits<float>::quiet_NaN()
                                     : as_float(slot->tts_values[c], TupleDescAttr(desc, c)->atttypid);
    }
    if (slot->tts_isnull[target_column]) {
      ++null_targets;
      y[rows] = std::numeric_limits<float>::quiet_NaN();
    } else {
      y[rows] = as_float(slot->tts_values[target_column], TupleDescAttr(desc, target_column)->atttypid);
      if (std::isnan(y[rows])) ++null_targets;
    }
    ++rows;
  }
  ExecDropSingleTupleTableSlot(slot);
  table_endscan(scan);
  if (rows == 0)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("the training data has no rows"),
                    errhint("Check the table or the query's WHERE clause.")));
  if (null_targets == rows)
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                    errmsg("target column \"%s\" is NULL in every row", target),
                    errhint("Train on rows whose target is known.")));
  if (null_targets > 0)
    ereport(ERROR,
            (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
             errmsg("target column \"%s\" is NULL (or NaN) in %lld of %lld rows", target,
                    static_cast<long long>(null_targets), static_cast<long long>(rows)),
             errhint("Leave those rows out in the query: WHERE %s IS NOT NULL.", quote_identifier(target))));

  const char** names = static_cast<const char**>(palloc(sizeof(char*) * n_features));
  Datum* name_datums = static_cast<Datum*>(palloc(sizeof(Datum) * n_features));
  for (int j = 0; j < n_features; ++j) {
    names[j] = NameStr(TupleDescAttr(desc, columns[j])->attname);
    name_datums[j] = CStringGetTextDatum(names[j]);
  }
  table_close(rel, AccessShareLock);

  Fitted fitted;
  train_progress_rows(rows);
  train_progress_update("training", 0, 0, std::nan(""));
  fit_in_core(rows, n_features, x, y, names, algorithm, params, test_fraction, seed, model_name, &fitted);
  train_progress_end();

  pfree(x);
  pfree(y);
  bytea* model = static_cast<bytea*>(palloc(VARHDRSZ + fitted.model_bytes));
  SET_VARSIZE(model, VARHDRSZ + fitted.model_bytes);
  memcpy(VARDATA(model), fitted.model, fitted.model_bytes);
  Datum values[6] = {
      PointerGetDatum(model),
      CStringGetTextDatum(fitted.format),
      PointerGetDatum(construct_array(name_datums, n_features, TEXTOID, -1, false, TYPALIGN_INT)),
      jsonb_from(fitted.params),
      jsonb_from(fitted.metrics),
      jsonb_from(fitted.environment)};
  free(fitted.model);
  free(fitted.format);
  free(fitted.params);
  free(fitted.metrics);
  free(fitted.environment);
  bool nulls[6] = {false};
  TupleDesc result_desc;
  if (get_call_result_type(fcinfo, nullptr, &result_desc) != TYPEFUNC_COMPOSITE)
    elog(ERROR, "flock._train_fit must return a record");
  PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(result_desc), values, nulls)));
}
