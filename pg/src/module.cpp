// Module entry: GUCs, cache invalidation, the error-code map and small catalog helpers.
#include "pg.hpp"  // must come first

extern "C" {
#include "commands/trigger.h"
#include "utils/queryjumble.h"
#include "utils/syscache.h"
}
#undef flock

#include "audit.hpp"

#include "batch_plan.hpp"
#include "cache.hpp"
#include "explain.hpp"
#include "guard.hpp"
#include "model_check.hpp"
#include "optimize_call.hpp"
#include "train.hpp"
#include "optimize_query.hpp"
#include "pinned.hpp"
#include "plan_model.hpp"
#include "optimize_inline.hpp"
#include "prediction_cost.hpp"

#include <malloc.h>

#include "flock/interrupt.hpp"

extern "C" {
PG_MODULE_MAGIC;

void _PG_init(void);
PG_FUNCTION_INFO_V1(flock_catalog_changed);
}

namespace flock::pg {

int sqlstate_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::InvalidModel: return ERRCODE_INVALID_PARAMETER_VALUE;          // 22023
    case ErrorCode::UnsupportedOperator: return ERRCODE_FEATURE_NOT_SUPPORTED;     // 0A000
    case ErrorCode::InvalidInput: return ERRCODE_INVALID_PARAMETER_VALUE;          // 22023
    case ErrorCode::MissingValue: return ERRCODE_NULL_VALUE_NOT_ALLOWED;           // 22004
    case ErrorCode::TypeMismatch: return ERRCODE_DATATYPE_MISMATCH;                // 42804
    case ErrorCode::LimitExceeded: return ERRCODE_PROGRAM_LIMIT_EXCEEDED;          // 54000
    case ErrorCode::Cancelled: return ERRCODE_QUERY_CANCELED;                      // 57014
    case ErrorCode::Internal: return ERRCODE_INTERNAL_ERROR;                       // XX000
  }
  return ERRCODE_INTERNAL_ERROR;
}

Oid models_relid = InvalidOid;

const char* default_hint_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::InvalidModel:
      return "Pass the unmodified bytes of an .onnx file, or of an XGBoost JSON model (Booster.save_model('model.json')).";
    case ErrorCode::UnsupportedOperator:
      return "See the README's model coverage for the operators and formats Flock runs.";
    case ErrorCode::InvalidInput:
      return "Check the features against flock.model_info(model): their number, order and types.";
    case ErrorCode::MissingValue:
      return "Filter or COALESCE the NULLs in the query, or use a model that handles missing values.";
    case ErrorCode::TypeMismatch:
      return "Check the feature types against flock.model_info(model).";
    case ErrorCode::LimitExceeded:
      return "Raise flock.max_tensor_elements if the input is meant to be this large.";
    case ErrorCode::Cancelled:
    case ErrorCode::Internal:
      return nullptr;
  }
  return nullptr;
}

bool interrupt_requested() {
  return InterruptPending && (QueryCancelPending || ProcDiePending) && INTERRUPTS_CAN_BE_PROCESSED();
}

namespace {

// Any invalidation of flock.models (or of all relations) means the catalog may have changed.
void on_relcache_invalidation(Datum, Oid relid) {
  if (relid == InvalidOid || models_relid == InvalidOid || relid == models_relid) catalog_generation++;
}

}  // namespace
}  // namespace flock::pg

using namespace flock::pg;

void _PG_init(void) {
  // Batches allocate and free the same few-hundred-KB buffers (feature matrices, tensors) over and
  // over. glibc's defaults serve such sizes with mmap, or trim them off the heap once freed, so
  // every batch would fault its pages in again: measured at 150-280 faults per 1,000 rows, enough
  // to make batching slower than per-row calls for cheap models. Keep them on the heap.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  DefineCustomIntVariable(
      "flock.max_tensor_elements", "Largest tensor (in elements) a model may take or produce.",
      "Protects the backend from models or inputs that would need huge tensors.", &max_tensor_elements,
      flock::kDefaultMaxTensorElements, 1, INT_MAX, PGC_USERSET, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("flock.model_cache_entries", "Compiled models each backend keeps in memory.",
                          nullptr, &model_cache_entries, kDefaultModelCacheEntries, 1, 100000, PGC_USERSET, 0,
                          nullptr, nullptr, nullptr);
  DefineCustomBoolVariable("flock.batching", "Score flock.predict calls in batches through a CustomScan.",
                           "Off: every call scores one row (for comparison).", &batching_enabled, true, PGC_USERSET,
                           0, nullptr, nullptr, nullptr);
  DefineCustomBoolVariable("flock.share_models_with_workers",
                           "Parallel workers get the leader's resolved models through shared memory.",
                           "Off: each parallel worker reads and compiles the models itself (for comparison).",
                           &share_models_with_workers, true, PGC_USERSET, 0, nullptr, nullptr, nullptr);
  DefineCustomBoolVariable("flock.read_heap_pages",
                           "Batch nodes read the heap pages of a plain sequential scan below them directly.",
                           "The visible tuples of a page as the scan finds them, without a call into the scan "
                           "node per row. Off: rows come one at a time from the scan node (for comparison).",
                           &read_heap_pages, true, PGC_USERSET, 0, nullptr, nullptr, nullptr);
  // The optimizer (issue 13): what the query says about a model's inputs changes how it runs.
  DefineCustomBoolVariable("flock.optimizer", "Optimize models for the queries that score them.",
                           "Off: every optimizer pass is off, whatever its own setting.", &optimizer_enabled, true,
                           PGC_USERSET, 0, nullptr, nullptr, nullptr);
  DefineCustomBoolVariable("flock.optimizer_prune",
                           "Specialize a batched model for the scan's quals on the columns it reads.",
                           "Tree branches no row passing the quals can take are removed; results are unchanged.",
                           &optimizer_prune, true, PGC_USERSET, 0, nullptr, nullptr, nullptr);
  DefineCustomBoolVariable("flock.optimizer_projection", "Find the inputs a batched model reads.",
                           "Shown by EXPLAIN as Flock Inputs Read.", &optimizer_projection, true, PGC_USERSET, 0,
                           nullptr, nullptr, nullptr);
  static const struct config_enum_entry derive_filters_options[] = {
      {"off", static_cast<int>(DeriveFilters::Off), false},
      {"on", static_cast<int>(DeriveFilters::On), false},
      {"always", static_cast<int>(DeriveFilters::Always), false},
      {"false", static_cast<int>(DeriveFilters::Off), true},
      {"true", static_cast<int>(DeriveFilters::On), true},
      {"no", static_cast<int>(DeriveFilters::Off), true},
      {"yes", static_cast<int>(DeriveFilters::On), true},
      {"0", static_cast<int>(DeriveFilters::Off), true},
      {"1", static_cast<int>(DeriveFilters::On), true},
      {nullptr, 0, false}};
  DefineCustomEnumVariable("flock.optimizer_derive_filters",
                           "Add to a query the column ranges a prediction's comparison implies.",
                           "For flock.predict(m, t) > c and flock.predict_label(m, t) = 'label' on tree models; "
                           "on: when the planner estimates the query cheaper with them; always: whatever the "
                           "estimate (for tests). Results are unchanged.",
                           &optimizer_derive_filters, static_cast<int>(DeriveFilters::On), derive_filters_options,
                           PGC_USERSET, 0, nullptr, nullptr, nullptr);
  DefineCustomBoolVariable("flock.optimizer_inline",
                           "Inline small tree and linear regressors as SQL expressions (no model call).",
                           "Shown by EXPLAIN as Flock Inlined; results are those of the model.", &optimizer_inline,
                           true, PGC_USERSET, 0, nullptr, nullptr, nullptr);
  DefineCustomRealVariable("flock.optimizer_inline_max_cost",
                           "Largest per-row model cost (optimize::cost units) inlined as SQL.",
                           "A developer setting for tests and benchmarks; the default is measured.", &inline_max_cost,
                           kDefaultInlineMaxCost, 0, 1e9, PGC_USERSET, GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL, nullptr,
                           nullptr, nullptr);
  DefineCustomBoolVariable("flock.optimizer_costs",
                           "Give prediction calls in quals a planner cost from their compiled model.",
                           "Off: every prediction function costs its declared COST 1.", &optimizer_costs, true,
                           PGC_USERSET, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("flock.batch_size", "Rows scored per model call by batched execution.",
                          "At most as many rows as fit in flock.batch_memory.", &batch_size, kDefaultBatchSize, 1,
                          1 << 20, PGC_USERSET, 0, nullptr, nullptr, nullptr);
  // Memory limits are the administrator's (as temp_file_limit): superusers, or roles granted SET
  // ON PARAMETER, change them; any role may still lower flock.batch_size.
  DefineCustomIntVariable("flock.batch_memory", "Memory one batch of batched execution may take.",
                          "Caps the rows per batch: inputs, intermediate values and outputs of the model, per row "
                          "as measured when it was loaded.",
                          &batch_memory_kb, kDefaultBatchMemoryKb, 1024, MAX_KILOBYTES, PGC_SUSET, GUC_UNIT_KB,
                          nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "flock.model_cache_memory", "Memory each backend's compiled models may take.",
      "Compiled weights and the buffers kept for the next run; least recently used models are "
      "dropped past it.",
      &model_cache_memory_kb, kDefaultModelCacheMemoryKb, 1024, MAX_KILOBYTES, PGC_SUSET, GUC_UNIT_KB,
      nullptr, nullptr, nullptr);
  define_model_check_gucs();  // flock.model_checker, flock.model_check_cpu_time, flock.model_check_memory
  install_audit();
  install_training();  // flock.train's GUCs and progress slots (issue 16)
  define_pinned_gucs();  // flock.node_name (scoring on shards)
  define_explain_gucs();  // flock.explain_kernel_samples, flock.explain_kernel_seed, flock.explain_method
  MarkGUCPrefixReserved("flock");
  flock::set_interrupt_check(interrupt_requested);  // query cancel and statement_timeout stop model runs
  install_batching();
  install_plan_notes();  // EXPLAIN lines of the optimizer's query rewrites
  install_prediction_costs();  // scans with a prediction qual costed with their quals short-circuited (issue 13)
  // Audit records carry the statement's query id: have it computed (compute_query_id = auto)
  // as pg_stat_statements does. Only possible at server start.
  if (process_shared_preload_libraries_in_progress) EnableQueryId();
  CacheRegisterRelcacheCallback(on_relcache_invalidation, (Datum)0);
}

// Statement trigger on flock.models: tell every backend to drop its name → model resolutions.
Datum flock_catalog_changed(PG_FUNCTION_ARGS) {
  if (!CALLED_AS_TRIGGER(fcinfo)) elog(ERROR, "flock._catalog_changed must be called as a trigger");
  TriggerData* trigger = reinterpret_cast<TriggerData*>(fcinfo->context);
  models_relid = RelationGetRelid(trigger->tg_relation);
  CacheInvalidateRelcache(trigger->tg_relation);
  return PointerGetDatum(nullptr);
}
