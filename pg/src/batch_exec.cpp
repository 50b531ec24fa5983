// Batched in-query inference, execution: the FlockBatchScore CustomScan gathers rows from its
// child, scores a whole batch per model call (through a ColumnScorer when the features can go from
// the columns straight into the model's inputs, else through score_rows), and streams the rows back
// with the predictions as extra columns. Planned by batch_plan.cpp. Plain PostgreSQL code: the C++
// work happens behind the error boundary in the scoring functions.
#include "pg.hpp"  // must come first

extern "C" {
#include "access/parallel.h"
#include "commands/explain.h"
#include "executor/executor.h"
#include "nodes/extensible.h"
#include "nodes/nodeFuncs.h"
#include "utils/lsyscache.h"
}
#undef flock

#include <algorithm>

#include "batch_node.hpp"
#include "batch_plan.hpp"
#include "explain_batch.hpp"
#include "heap_reader.hpp"
#include "optimize_call.hpp"
#include "pinned.hpp"
#include "predict.hpp"
#include "shared_model.hpp"

namespace flock::pg {

namespace {

struct BatchScanState {
  CustomScanState css;
  PlanState* child;
  // The child's heap pages read directly when it is a plain sequential scan (heap_reader.hpp), else
  // nullptr. `direct`: every call reads its features from a stored tuple and no column is kept, so
  // a tuple that passes column_scorer_add_tuple for every call needs nothing else.
  HeapReader* reader;
  bool direct;
  int ncalls;
  int nchild;   // columns of the child's rows
  int nlayout;  // columns of the node's scan rows before the predictions
  int* source;  // [nlayout] the child column (0-based) scan row column i comes from, -1: NULL
  Want* wants;
  bool* explains;              // per call: flock.explain (jsonb), else a prediction
  ExplainCall** explain_calls;  // per flock.explain call, else nullptr
  RowColumns* row_columns;
  CallState** calls;
  CallOptimization* optimized;  // per call: what the optimizer did (for EXPLAIN)
  ColumnScorer** scorers;  // per call: its features go straight into the model's input (else nullptr)
  int scorer_width;        // leading child columns the scorers read
  ExprState** inputs;
  int batch_size;
  // Which child columns the rows keep: all (copy_all), else only those of the scan row columns
  // copy_cols[0..ncopy-1] (0-based; the others stay NULL). All when a call reads its input from the
  // kept rows.
  bool copy_all;
  int ncopy;
  int* copy_cols;
  int copy_width;   // leading child columns the kept ones are among
  bool copy_byref;  // a kept column is passed by reference: the kept rows own a copy
  TupleTableSlot** rows;
  int nrows;
  int pos;
  bool done;
  Datum* results;  // [call][row]
  bool* result_nulls;
  RowValues* values;  // scratch for one call's non-NULL rows
  int* value_rows;
  ExprContext* input_cxt;
  MemoryContext batch_cxt;
  // Under a Gather (the plan marks the node parallel aware), the leader hands its resolved models
  // to the workers (shared_model.cpp): a worker sets its calls up only once it has them
  // (initialize_worker), not in begin.
  BatchPrivate priv;
  bool* pinned;      // per call: a flock.predict*_pinned call (resolved by each process itself)
  bool* share;       // per call: handed to the workers (leader, from estimate_dsm on)
  Datum* model_values;  // per call: its model constant's value
  bool ready;        // calls resolved and buffers made
};

extern const CustomExecMethods batch_exec_methods;  // below

Node* create_state(CustomScan* cscan) {
  BatchScanState* s = static_cast<BatchScanState*>(palloc0(sizeof(BatchScanState)));
  NodeSetTag(s, T_CustomScanState);
  s->css.methods = &batch_exec_methods;
  return reinterpret_cast<Node*>(s);
}

// flock.batch_size, capped so that a batch fits in flock.batch_memory: per row, the node's slot
// and results, and for each call its features and the model's inputs, intermediates and outputs.
int rows_per_batch(const BatchScanState* s) {
  Size row = sizeof(TupleTableSlot) + static_cast<Size>(s->nchild) * (sizeof(Datum) + sizeof(bool));
  for (int k = 0; k < s->ncalls; ++k) {
    row += sizeof(Datum) + sizeof(bool) + sizeof(int) + call_bytes_per_row(s->calls[k]);
    if (s->explain_calls[k]) row += explain_bytes_per_row(s->explain_calls[k]);
  }
  const Size budget = static_cast<Size>(batch_memory_kb) * 1024;
  const Size fit = std::max<Size>(budget / std::max<Size>(row, 1), 1);
  return static_cast<int>(std::min<Size>(fit, static_cast<Size>(batch_size)));
}

// The facts with their parameters' values, known now (a generic plan's `x > $1`); a fact whose
// parameter is NULL (its qual passes no row: any fact is true of no rows, none is needed), missing
// or of another type than planned is left out. Returns how many facts are kept, in place.
int settle_param_facts(ColumnFact* facts, int nfacts, ParamListInfo params) {
  int kept = 0;
  for (int i = 0; i < nfacts; ++i) {
    ColumnFact f = facts[i];
    if (f.param > 0) {
      if (!params || f.param > params->numParams) continue;
      ParamExternData workspace;
      ParamExternData* prm = params->paramFetch ? params->paramFetch(params, f.param, true, &workspace)
                                                : &params->params[f.param - 1];
      if (!prm || prm->isnull || prm->ptype != f.param_type || !settle_fact(&f, prm->ptype, prm->value)) continue;
      f.param = 0;
    }
    facts[kept++] = f;
  }
  return kept;
}

// The facts about table columns as facts about the columns of a row made of them (a narrowed
// ROW(...): RowColumns::table_columns): one per row column holding a fact's table column.
const ColumnFact* facts_for_row(const RowColumns& cols, const ColumnFact* facts, int* nfacts) {
  auto* out = static_cast<ColumnFact*>(palloc(sizeof(ColumnFact) * std::max(*nfacts * cols.natts, 1)));
  int n = 0;
  for (int i = 0; i < *nfacts; ++i) {
    for (int a = 0; a < cols.natts; ++a) {
      if (cols.table_columns[a] != facts[i].attno) continue;
      out[n] = facts[i];
      out[n].attno = a + 1;
      n++;
    }
  }
  *nfacts = n;
  return out;
}

void set_up_calls(BatchScanState* s, const void* shared);

void begin(CustomScanState* node, EState* estate, int eflags) {
  BatchScanState* s = reinterpret_cast<BatchScanState*>(node);
  CustomScan* cscan = reinterpret_cast<CustomScan*>(node->ss.ps.plan);
  s->child = ExecInitNode(static_cast<Plan*>(linitial(cscan->custom_plans)), estate, eflags);
  node->custom_ps = list_make1(s->child);
  s->reader = read_heap_pages ? heap_reader(s->child) : nullptr;
  s->nchild = ExecGetResultType(s->child)->natts;
  BatchPrivate priv = decode_batch_private(cscan->custom_private);
  s->ncalls = priv.ncalls;
  s->wants = priv.wants;
  s->explains = priv.explains;
  s->explain_calls = static_cast<ExplainCall**>(palloc0(sizeof(ExplainCall*) * std::max(s->ncalls, 1)));
  s->row_columns = priv.row_columns;
  s->calls = static_cast<CallState**>(palloc(sizeof(CallState*) * s->ncalls));
  s->inputs = static_cast<ExprState**>(palloc(sizeof(ExprState*) * s->ncalls));
  s->scorers = static_cast<ColumnScorer**>(palloc0(sizeof(ColumnScorer*) * std::max(s->ncalls, 1)));
  s->optimized = static_cast<CallOptimization*>(palloc0(sizeof(CallOptimization) * std::max(s->ncalls, 1)));
  priv.nfacts = settle_param_facts(priv.facts, priv.nfacts, estate->es_param_list_info);
  s->priv = priv;
  s->pinned = static_cast<bool*>(palloc0(sizeof(bool) * std::max(s->ncalls, 1)));
  s->share = static_cast<bool*>(palloc0(sizeof(bool) * std::max(s->ncalls, 1)));
  s->model_values = static_cast<Datum*>(palloc0(sizeof(Datum) * std::max(s->ncalls, 1)));
  for (int k = 0; k < s->ncalls; ++k) {
    Const* model = static_cast<Const*>(list_nth(cscan->custom_exprs, 2 * k));
    Expr* input = static_cast<Expr*>(list_nth(cscan->custom_exprs, 2 * k + 1));
    s->pinned[k] = is_pinned_type(model->consttype);  // flock.predict*_pinned (issue 18)
    s->model_values[k] = model->constvalue;
    s->calls[k] = new_call_state(estate->es_query_cxt, !s->pinned[k] && model->consttype != TEXTOID,
                                 exprType(reinterpret_cast<Node*>(input)) != FLOAT4ARRAYOID);
    s->inputs[k] = ExecInitExpr(input, &node->ss.ps);
  }
  if (IsParallelWorker() && cscan->scan.plan.parallel_aware) return;  // set up in initialize_worker
  set_up_calls(s, nullptr);
}

// Resolves each call's model (from the leader's chunk `shared` in a parallel worker, else itself),
// specializes it, and sizes the batch and its buffers.
void set_up_calls(BatchScanState* s, const void* shared) {
  CustomScan* cscan = reinterpret_cast<CustomScan*>(s->css.ss.ps.plan);
  EState* estate = s->css.ss.ps.state;
  MemoryContext old = MemoryContextSwitchTo(estate->es_query_cxt);
  BatchPrivate& priv = s->priv;
  List* copied = priv.copied;
  List* sources = priv.sources;
  int explain_arg = 2 * s->ncalls;  // the explain calls' constants follow the models and inputs
  for (int k = 0; k < s->ncalls; ++k) {
    Const* model = static_cast<Const*>(list_nth(cscan->custom_exprs, 2 * k));
    // Resolve now: a query sees one version of each model, and EXPLAIN can name it.
    if (s->pinned[k])
      resolve_pinned(s->calls[k], model->constvalue);
    else if (!(shared && !s->explains[k] && resolve_shared_model(s->calls[k], shared, k)))
      resolve_model(s->calls[k], model->constvalue);
    // Specialize it once for this node, here rather than at plan time: the model is known only now
    // (a name resolves to its current version), and EXPLAIN runs this too, so it shows what was done.
    if (s->explains[k]) {
      // Explained as they are: no pruning (optimize_call), which would change the explanation.
      Const* interactions = static_cast<Const*>(list_nth(cscan->custom_exprs, explain_arg++));
      Const* background = static_cast<Const*>(list_nth(cscan->custom_exprs, explain_arg++));
      Const* output = static_cast<Const*>(list_nth(cscan->custom_exprs, explain_arg++));
      s->explain_calls[k] = new_explain_call(
          estate->es_query_cxt, s->calls[k], model->constvalue,
          !interactions->constisnull && DatumGetBool(interactions->constvalue),
          background->constisnull ? nullptr : DatumGetTextPP(background->constvalue),
          output->constisnull ? nullptr : TextDatumGetCString(output->constvalue));
      continue;
    }
    const RowColumns& cols = s->row_columns[k];
    if (cols.first > 0) {
      int nfacts = priv.nfacts;
      const ColumnFact* facts = cols.table_columns ? facts_for_row(cols, priv.facts, &nfacts) : priv.facts;
      s->optimized[k] = optimize_call(s->calls[k], cols.rowtype, facts, nfacts);
    }
  }
  s->batch_size = rows_per_batch(s);
  for (int k = 0; k < s->ncalls; ++k) {
    const RowColumns& cols = s->row_columns[k];
    if (cols.first > 0 && !s->explains[k]) {
      s->scorers[k] = column_scorer(s->calls[k], cols.rowtype, cols.first - 1, s->batch_size, s->optimized[k].feature_read);
      if (s->scorers[k]) s->scorer_width = std::max(s->scorer_width, column_scorer_width(s->scorers[k]));
    }
  }
  TupleDesc child_desc = ExecGetResultType(s->child);
  s->nlayout = s->css.ss.ss_ScanTupleSlot->tts_tupleDescriptor->natts - s->ncalls;
  s->source = static_cast<int*>(palloc(sizeof(int) * std::max(s->nlayout, 1)));
  if (sources != NIL && list_length(sources) != s->nlayout)
    elog(ERROR, "flock: batch node has %d child columns, %d sources", s->nlayout, list_length(sources));
  for (int i = 0; i < s->nlayout; ++i)
    s->source[i] = sources == NIL ? i : intVal(list_nth(sources, i)) - 1;
  s->copy_all = false;
  for (int k = 0; k < s->ncalls; ++k) s->copy_all = s->copy_all || !s->scorers[k];
  s->direct = s->reader && !s->copy_all && list_length(copied) == 0;
  s->copy_cols = static_cast<int*>(palloc(sizeof(int) * std::max(list_length(copied), 1)));
  ListCell* lc;
  foreach (lc, copied) {
    int c = intVal(lfirst(lc)) - 1;
    s->copy_cols[s->ncopy++] = c;
    if (s->source[c] < 0) continue;
    s->copy_width = std::max(s->copy_width, s->source[c] + 1);
    s->copy_byref = s->copy_byref || !TupleDescAttr(child_desc, s->source[c])->attbyval;
  }
  s->rows = static_cast<TupleTableSlot**>(palloc(sizeof(TupleTableSlot*) * s->batch_size));
  for (int r = 0; r < s->batch_size; ++r) {
    s->rows[r] = ExecAllocTableSlot(&estate->es_tupleTable, child_desc, &TTSOpsVirtual);
    if (!s->copy_all) memset(s->rows[r]->tts_isnull, true, sizeof(bool) * s->nchild);
  }
  s->results = static_cast<Datum*>(palloc(sizeof(Datum) * s->batch_size * std::max(s->ncalls, 1)));
  s->result_nulls = static_cast<bool*>(palloc(sizeof(bool) * s->batch_size * std::max(s->ncalls, 1)));
  s->values = static_cast<RowValues*>(palloc(sizeof(RowValues) * s->batch_size));
  s->value_rows = static_cast<int*>(palloc(sizeof(int) * s->batch_size));
  s->input_cxt = CreateExprContext(estate);
  s->batch_cxt = AllocSetContextCreate(estate->es_query_cxt, "flock batch", ALLOCSET_DEFAULT_SIZES);
  s->ready = true;
  MemoryContextSwitchTo(old);
}

// The calls the leader may hand to its workers: predictions by name or by value (pinned calls
// verify their pin in each process; flock.explain calls resolve themselves).
Size estimate_dsm(CustomScanState* node, ParallelContext* pcxt) {
  BatchScanState* s = reinterpret_cast<BatchScanState*>(node);
  for (int k = 0; k < s->ncalls; ++k) s->share[k] = !s->pinned[k] && !s->explains[k];
  return shared_models_size(SharedCalls{s->ncalls, s->calls, s->share, s->model_values},
                            pcxt->estimator.space_for_chunks);
}

void initialize_dsm(CustomScanState* node, ParallelContext*, void* coordinate) {
  BatchScanState* s = reinterpret_cast<BatchScanState*>(node);
  shared_models_write(SharedCalls{s->ncalls, s->calls, s->share, s->model_values}, coordinate, node->pscan_len);
}

void initialize_worker(CustomScanState* node, shm_toc*, void* coordinate) {
  BatchScanState* s = reinterpret_cast<BatchScanState*>(node);
  if (!s->ready) set_up_calls(s, coordinate);
}

// Writes every call's features of the next row from a heap tuple; false when a call cannot take
// them so (a NULL, a tuple from before a column was added...): then the row goes through a slot.
bool add_tuple(BatchScanState* s, HeapTuple tuple) {
  TupleDesc desc = heap_reader_desc(s->reader);
  const int* columns = heap_reader_columns(s->reader);
  for (int k = 0; k < s->ncalls; ++k)
    if (!column_scorer_add_tuple(s->scorers[k], s->nrows, tuple->t_data, desc, columns)) return false;
  return true;
}

// Pulls up to batch_size rows from the child and scores each call over all of them at once.
void fill_batch(BatchScanState* s) {
  MemoryContextReset(s->batch_cxt);
  s->nrows = 0;
  s->pos = 0;
  for (int k = 0; k < s->ncalls; ++k)
    if (s->scorers[k]) column_scorer_start(s->scorers[k]);
  while (s->nrows < s->batch_size) {
    TupleTableSlot* slot;
    if (s->reader) {
      HeapTuple tuple = heap_reader_next(s->reader);
      if (!tuple) {
        s->done = true;
        break;
      }
      if (s->direct && add_tuple(s, tuple)) {
        s->nrows++;
        continue;
      }
      slot = heap_reader_row(s->reader, tuple);
    } else {
      slot = ExecProcNode(s->child);
      if (TupIsNull(slot)) {
        s->done = true;
        break;
      }
    }
    if (s->scorer_width > 0) {
      bool deformed = false;
      for (int k = 0; k < s->ncalls; ++k) {
        if (!s->scorers[k] || column_scorer_add_stored(s->scorers[k], s->nrows, slot)) continue;
        if (!deformed) slot_getsomeattrs(slot, s->scorer_width);
        deformed = true;
        column_scorer_add(s->scorers[k], s->nrows, slot->tts_values, slot->tts_isnull);
      }
    }
    if (s->copy_all) {
      ExecCopySlot(s->rows[s->nrows], slot);
    } else if (s->ncopy > 0) {  // only the columns the rows above read
      TupleTableSlot* row = s->rows[s->nrows];
      ExecClearTuple(row);
      slot_getsomeattrs(slot, s->copy_width);
      for (int j = 0; j < s->ncopy; ++j) {
        int c = s->source[s->copy_cols[j]];
        if (c < 0) continue;
        row->tts_values[c] = slot->tts_values[c];
        row->tts_isnull[c] = slot->tts_isnull[c];
      }
      ExecStoreVirtualTuple(row);
      if (s->copy_byref) ExecMaterializeSlot(row);
    }
    s->nrows++;
  }
  if (s->nrows == 0) return;
  MemoryContext old = MemoryContextSwitchTo(s->batch_cxt);
  ExprContext* ec = s->input_cxt;
  for (int k = 0; k < s->ncalls; ++k) {
    int n = 0;
    Datum* out = s->results + k * s->batch_size;
    bool* nulls = s->result_nulls + k * s->batch_size;
    const RowColumns& rc = s->row_columns[k];
    if (s->scorers[k]) {  // a table row whose features were written as the rows came
      for (int r = 0; r < s->nrows; ++r) nulls[r] = false;
      column_scorer_score(s->scorers[k], s->nrows, s->wants[k], out);
      continue;
    }
    // The calls' inputs are evaluated here for the whole batch, past the child's own interrupt
    // checks: a large batch of costly expressions must stay cancellable.
    for (int r = 0; r < s->nrows && rc.first > 0; ++r) {
      CHECK_FOR_INTERRUPTS();
      TupleTableSlot* row = s->rows[r];
      slot_getsomeattrs(row, rc.first - 1 + rc.natts);
      nulls[r] = false;  // a table row is never NULL
      s->values[n] = extract_columns(s->calls[k], rc.rowtype, row->tts_values + rc.first - 1,
                                     row->tts_isnull + rc.first - 1);
      s->value_rows[n++] = r;
    }
    for (int r = 0; r < s->nrows && rc.first == 0; ++r) {
      CHECK_FOR_INTERRUPTS();
      ec->ecxt_outertuple = s->rows[r];
      bool isnull;
      Datum input = ExecEvalExpr(s->inputs[k], ec, &isnull);
      nulls[r] = isnull;  // no row, no prediction
      if (isnull) continue;
      s->values[n] = extract_row(s->calls[k], input);
      s->value_rows[n++] = r;
    }
    Datum* scored = static_cast<Datum*>(palloc(sizeof(Datum) * std::max(n, 1)));
    if (s->explains[k])
      explain_batch(s->explain_calls[k], s->values, n, scored);
    else
      score_rows(s->calls[k], s->values, n, s->wants[k], scored);
    for (int j = 0; j < n; ++j) out[s->value_rows[j]] = scored[j];
  }
  MemoryContextSwitchTo(old);
}

TupleTableSlot* next_row(ScanState* ss) {
  BatchScanState* s = reinterpret_cast<BatchScanState*>(ss);
  if (!s->ready) set_up_calls(s, nullptr);  // a worker given no chunk resolves its models itself
  if (s->pos >= s->nrows) {
    if (s->done) return nullptr;
    fill_batch(s);
    if (s->nrows == 0) return nullptr;
  }
  TupleTableSlot* out = ss->ss_ScanTupleSlot;
  TupleTableSlot* row = s->rows[s->pos];
  ExecClearTuple(out);
  memset(out->tts_isnull, true, sizeof(bool) * s->nlayout);
  if (s->copy_all) {
    slot_getallattrs(row);
    for (int i = 0; i < s->nlayout; ++i) {
      int c = s->source[i];
      if (c < 0) continue;
      out->tts_values[i] = row->tts_values[c];
      out->tts_isnull[i] = row->tts_isnull[c];
    }
  } else {
    for (int j = 0; j < s->ncopy; ++j) {
      int i = s->copy_cols[j];
      int c = s->source[i];
      if (c < 0) continue;
      out->tts_values[i] = row->tts_values[c];
      out->tts_isnull[i] = row->tts_isnull[c];
    }
  }
  for (int k = 0; k < s->ncalls; ++k) {
    out->tts_values[s->nlayout + k] = s->results[k * s->batch_size + s->pos];
    out->tts_isnull[s->nlayout + k] = s->result_nulls[k * s->batch_size + s->pos];
  }
  ExecStoreVirtualTuple(out);
  s->pos++;
  return out;
}

// Inside an EvalPlanQual recheck (a row locked or updated after a concurrent change), PostgreSQL
// leaves it to a node without a scan relation of its own to put the re-checked row in its scan
// slot: the child returns the new version of the row, which is scored like any other.
bool recheck(ScanState* ss, TupleTableSlot*) { return next_row(ss) != nullptr; }

TupleTableSlot* exec(CustomScanState* node) { return ExecScan(&node->ss, next_row, recheck); }

void end(CustomScanState* node) {
  BatchScanState* s = reinterpret_cast<BatchScanState*>(node);
  ExecEndNode(s->child);
}

void rescan(CustomScanState* node) {
  BatchScanState* s = reinterpret_cast<BatchScanState*>(node);
  ExecReScan(s->child);
  if (s->reader) heap_reader_restart(s->reader);
  s->nrows = s->pos = 0;
  s->done = false;
}

void explain(CustomScanState* node, List*, ExplainState* es) {
  BatchScanState* s = reinterpret_cast<BatchScanState*>(node);
  for (int k = 0; k < s->ncalls; ++k) {
    char* text = psprintf("%s (%s)", model_label(s->calls[k]), s->explains[k] ? "explain" : function_name(s->wants[k]));
    ExplainPropertyText("Flock Model", text, es);
    if (s->optimized[k].pruned) ExplainPropertyText("Flock Pruned", s->optimized[k].pruned, es);
    if (s->optimized[k].inputs_read) ExplainPropertyText("Flock Inputs Read", s->optimized[k].inputs_read, es);
  }
  // The scan below is still shown (with EXPLAIN ANALYZE, the pages' time and visible rows).
  if (s->reader) ExplainPropertyText("Flock Heap Pages", "read directly", es);
  ExplainPropertyInteger("Batch Size", nullptr, s->batch_size, es);
}

const CustomExecMethods batch_exec_methods = {
    .CustomName = kBatchNodeName,
    .BeginCustomScan = begin,
    .ExecCustomScan = exec,
    .EndCustomScan = end,
    .ReScanCustomScan = rescan,
    .MarkPosCustomScan = nullptr,
    .RestrPosCustomScan = nullptr,
    .EstimateDSMCustomScan = estimate_dsm,
    .InitializeDSMCustomScan = initialize_dsm,
    .ReInitializeDSMCustomScan = nullptr,  // the models stay those of the first scan
    .InitializeWorkerCustomScan = initialize_worker,
    .ShutdownCustomScan = nullptr,
    .ExplainCustomScan = explain,
};

}  // namespace

const CustomScanMethods batch_scan_methods = {
    .CustomName = kBatchNodeName,
    .CreateCustomScanState = create_state,
};

}  // namespace flock::pg
