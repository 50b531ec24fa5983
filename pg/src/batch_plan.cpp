// Batched in-query inference, planning: the planner hook that puts a FlockBatchScore node (see
// batch_exec.cpp) where a batch of rows can be scored per model call.
//
// The planner hook runs after PostgreSQL has planned the query and rewrites two shapes:
//  * a scan whose target list or quals call flock.predict*(const model, input over the scan's
//    columns): the scan keeps the plain columns and quals, and a FlockBatchScore node above it
//    computes the predictions, the target list and the quals that use them;
//  * an Agg / Result / WindowAgg / Group over a scan whose expressions call flock.predict* on its
//    input (e.g. sum(flock.predict(...))): a FlockBatchScore node is put between the two and the
//    calls become references to its prediction columns.
// Anything else keeps PostgreSQL's plan, where the functions score one row per call. What the node
// needs to know travels in custom_private, written by encode_batch_private (batch_node.hpp).
// Plain PostgreSQL code.
#include "pg.hpp"  // must come first

extern "C" {
#include "executor/executor.h"
#include "nodes/extensible.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "optimizer/planner.h"
#include "parser/parsetree.h"
#include "catalog/pg_opfamily_d.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "access/table.h"
#include "nodes/readfuncs.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/partcache.h"
#include "utils/typcache.h"
}
#undef flock

#include <algorithm>
#include <cmath>

#include "batch_node.hpp"
#include "batch_plan.hpp"
#include "optimize_query.hpp"
#include "distribute_plan.hpp"
#include "explain_plan.hpp"
#include "pin_remote.hpp"
#include "plan_model.hpp"

namespace flock::pg {

bool batching_enabled = true;
bool share_models_with_workers = true;
bool read_heap_pages = true;
int batch_size = kDefaultBatchSize;
int batch_memory_kb = kDefaultBatchMemoryKb;

namespace {

planner_hook_type prev_planner_hook = nullptr;

struct RewriteContext {
  Oid flock_namespace;
  List* rtable;
};

// Whether row type `rowtype` has the same columns (names and types, in order, dropped ones aside)
// as `desc`: a row converted to it (ConvertRowtypeExpr, which maps columns by name) binds to a
// model exactly as the unconverted row does, by name or by position.
bool same_columns(TupleDesc desc, Oid rowtype) {
  TupleDesc other = lookup_rowtype_tupdesc_noerror(rowtype, -1, true);
  if (!other) return false;
  bool same = true;
  int a = 0, b = 0;
  while (same) {
    while (a < desc->natts && TupleDescAttr(desc, a)->attisdropped) a++;
    while (b < other->natts && TupleDescAttr(other, b)->attisdropped) b++;
    if (a == desc->natts || b == other->natts) {
      same = a == desc->natts && b == other->natts;
      break;
    }
    Form_pg_attribute x = TupleDescAttr(desc, a++), y = TupleDescAttr(other, b++);
    same = strcmp(NameStr(x->attname), NameStr(y->attname)) == 0 && x->atttypid == y->atttypid &&
           x->atttypmod == y->atttypmod;
  }
  ReleaseTupleDesc(other);
  return same;
}

// A call's input with the row type conversions around it taken off: a partition's (or inheritance
// child's) whole row reaches a call on its parent as (t.*)::parent.
Node* strip_row_conversions(Node* input) {
  while (input && IsA(input, ConvertRowtypeExpr)) input = reinterpret_cast<Node*>(reinterpret_cast<ConvertRowtypeExpr*>(input)->arg);
  return input;
}

// A ROW(...) of a named row type whose fields are columns of table `varno` (each of its
// attribute's type) or NULLs: an input narrowed by optimize_query.cpp (a view's row, say). Appended
// like a table's row, with the map of its columns to the table's (RowColumns::table_columns), so
// that features are read from the scan's columns instead of a row value formed per row.
RowColumns append_row_expr_columns(RowExpr* row, Index varno, const RewriteContext* ctx, List** tlist, List** mirror,
                                   int* pos) {
  RowColumns rc = {0, 0, InvalidOid};
  if (row->row_typeid == RECORDOID || !ctx->rtable || rt_fetch(varno, ctx->rtable)->rtekind != RTE_RELATION) return rc;
  TupleDesc desc = lookup_rowtype_tupdesc_noerror(row->row_typeid, -1, true);
  if (!desc) return rc;
  const int natts = desc->natts;
  bool ok = natts == list_length(row->args);
  int* map = static_cast<int*>(palloc0(sizeof(int) * std::max(natts, 1)));
  int a = 0;
  ListCell* lc;
  foreach (lc, row->args) {
    if (!ok) break;
    Form_pg_attribute att = TupleDescAttr(desc, a);
    Node* e = static_cast<Node*>(lfirst(lc));
    if (att->attisdropped) {
      ok = false;
    } else if (IsA(e, Var)) {
      Var* v = reinterpret_cast<Var*>(e);
      ok = v->varno == static_cast<int>(varno) && v->varlevelsup == 0 && v->varattno >= 1 && v->vartype == att->atttypid;
      map[a] = v->varattno;
    } else {
      ok = IsA(e, Const) && reinterpret_cast<Const*>(e)->constisnull && reinterpret_cast<Const*>(e)->consttype == att->atttypid;
    }
    a++;
  }
  ReleaseTupleDesc(desc);
  if (!ok) return rc;
  rc = {*pos, natts, row->row_typeid, map};
  foreach (lc, row->args) {
    Expr* e = static_cast<Expr*>(lfirst(lc));
    *tlist = lappend(*tlist, makeTargetEntry(static_cast<Expr*>(copyObject(e)), static_cast<AttrNumber>(*pos), nullptr, false));
    if (mirror) *mirror = lappend(*mirror, makeTargetEntry(static_cast<Expr*>(copyObject(e)), static_cast<AttrNumber>(*pos), nullptr, false));
    (*pos)++;
  }
  return rc;
}

// If `input` is a whole-row Var of table `varno` (possibly converted to a row type of the same
// columns), or a narrowed ROW(...) of its columns (append_row_expr_columns), appends the table's columns (a NULL placeholder for each dropped one, so that column
// k sits at first + k - 1) to `tlist` and `mirror` (when not null) from *pos on. The call then
// binds the table's own row type.
RowColumns append_row_columns(Node* input, Index varno, const RewriteContext* ctx, List** tlist, List** mirror,
                              int* pos) {
  RowColumns rc = {0, 0, InvalidOid};
  Oid converted_to = input && IsA(input, ConvertRowtypeExpr) ? reinterpret_cast<ConvertRowtypeExpr*>(input)->resulttype
                                                              : InvalidOid;
  input = strip_row_conversions(input);
  if (input && IsA(input, RowExpr) && !OidIsValid(converted_to))
    return append_row_expr_columns(reinterpret_cast<RowExpr*>(input), varno, ctx, tlist, mirror, pos);
  if (!input || !IsA(input, Var)) return rc;
  Var* v = reinterpret_cast<Var*>(input);
  if (v->varattno != 0 || v->varlevelsup != 0 || v->varno != static_cast<int>(varno) || !ctx->rtable) return rc;
  RangeTblEntry* rte = rt_fetch(varno, ctx->rtable);
  if (rte->rtekind != RTE_RELATION || v->vartype != get_rel_type_id(rte->relid)) return rc;
  Relation rel = table_open(rte->relid, NoLock);  // the planner holds its lock
  TupleDesc desc = RelationGetDescr(rel);
  if (OidIsValid(converted_to) && !same_columns(desc, converted_to)) {
    table_close(rel, NoLock);
    return rc;
  }
  rc = {*pos, desc->natts, v->vartype};
  for (int a = 0; a < desc->natts; ++a) {
    Form_pg_attribute att = TupleDescAttr(desc, a);
    Expr* e = att->attisdropped ? reinterpret_cast<Expr*>(makeNullConst(INT4OID, -1, InvalidOid))
                                : reinterpret_cast<Expr*>(makeVar(static_cast<int>(varno), static_cast<AttrNumber>(a + 1),
                                                                  att->atttypid, att->atttypmod, att->attcollation, 0));
    *tlist = lappend(*tlist, makeTargetEntry(static_cast<Expr*>(copyObject(e)), static_cast<AttrNumber>(*pos), nullptr, false));
    if (mirror) *mirror = lappend(*mirror, makeTargetEntry(e, static_cast<AttrNumber>(*pos), nullptr, false));
    (*pos)++;
  }
  table_close(rel, NoLock);
  return rc;
}

bool references_var(Node* node, Var* target);

// Whether an input that is evaluated as an expression (not read from columns) refers to `ref`.
bool expression_input_reads(List* inputs, List* row_columns, Var* ref) {
  ListCell *li, *lr;
  forboth(li, inputs, lr, row_columns) {
    if (intVal(linitial(static_cast<List*>(lfirst(lr)))) == 0 && references_var(static_cast<Node*>(lfirst(li)), ref))
      return true;
  }
  return false;
}

// The whole-row column at `pos` of the child's and the batch node's scan target lists becomes a NULL
// of its type: when only inputs read from columns used it, no row value is formed per row.
void blank_whole_row(List* child_tlist, List* custom_tlist, int pos, Oid type) {
  Expr* none = reinterpret_cast<Expr*>(makeNullConst(type, -1, InvalidOid));
  static_cast<TargetEntry*>(list_nth(child_tlist, pos - 1))->expr = none;
  static_cast<TargetEntry*>(list_nth(custom_tlist, pos - 1))->expr = static_cast<Expr*>(copyObject(none));
}

bool references_var(Node* node, Var* target) {
  if (!node) return false;
  if (IsA(node, Var)) {
    Var* v = reinterpret_cast<Var*>(node);
    return v->varno == target->varno && v->varattno == target->varattno && v->varlevelsup == 0;
  }
  return expression_tree_walker(node, reinterpret_cast<bool (*)()>(references_var), target);
}

// Which prediction function, if funcid is one; -1 otherwise.
int want_of(Oid funcid, const RewriteContext* ctx) {
  if (get_func_namespace(funcid) != ctx->flock_namespace) return -1;
  char* name = get_func_name(funcid);
  if (!name) return -1;
  for (Want want : kEveryWant) {
    if (strcmp(name, function_name(want)) == 0) return static_cast<int>(want);
    // The pinned forms (issue 18): flock.predict_pinned and the like, batched alike.
    size_t len = strlen(function_name(want));
    if (want != Want::Tensor && strncmp(name, function_name(want), len) == 0 && strcmp(name + len, "_pinned") == 0)
      return static_cast<int>(want);
  }
  return -1;
}

// Vars of the input may use only `varno` (a scan's relation, or OUTER_VAR above a child).
struct VarCheck {
  int varno;
  bool ok;
};

bool vars_only_from(Node* node, VarCheck* check) {
  if (!node) return false;
  if (IsA(node, Var)) {
    Var* v = reinterpret_cast<Var*>(node);
    if (v->varno != check->varno || v->varlevelsup != 0) check->ok = false;
    return false;
  }
  if (IsA(node, Aggref) || IsA(node, WindowFunc) || IsA(node, GroupingFunc) || IsA(node, SubPlan) ||
      IsA(node, AlternativeSubPlan) || IsA(node, PlaceHolderVar)) {
    check->ok = false;
    return false;
  }
  return expression_tree_walker(node, reinterpret_cast<bool (*)()>(vars_only_from), check);
}

// A flock.explain(model, input, interactions, background, output) call (issue 14) whose arguments
// but the input are constants (NULL ones included): batched like a prediction, one core explain
// call per batch. (The planner has filled in the defaults: there are always five arguments.)
bool explain_call(FuncExpr* f, const RewriteContext* ctx) {
  if (f->funcresulttype != JSONBOID || list_length(f->args) != 5 || get_func_namespace(f->funcid) != ctx->flock_namespace)
    return false;
  char* name = get_func_name(f->funcid);
  if (!name || strcmp(name, "explain") != 0) return false;
  for (int a = 2; a < 5; ++a)
    if (!IsA(list_nth(f->args, a), Const)) return false;
  return true;
}

// A call we can batch: flock.predict*(constant model, input over `varno` only, nothing volatile),
// or such a flock.explain call.
bool batchable(FuncExpr* f, int varno, const RewriteContext* ctx) {
  if (!explain_call(f, ctx) && (want_of(f->funcid, ctx) < 0 || list_length(f->args) != 2)) return false;
  Node* model = static_cast<Node*>(linitial(f->args));
  Node* input = static_cast<Node*>(lsecond(f->args));
  if (!IsA(model, Const) || reinterpret_cast<Const*>(model)->constisnull) return false;
  if (contain_volatile_functions(input)) return false;
  VarCheck check = {varno, true};
  vars_only_from(input, &check);
  return check.ok;
}

struct CollectContext {
  const RewriteContext* rw;
  int varno;
  List* calls;  // distinct FuncExprs, in order of discovery
};

bool collect_calls(Node* node, CollectContext* cc) {
  if (!node) return false;
  if (IsA(node, FuncExpr) && batchable(reinterpret_cast<FuncExpr*>(node), cc->varno, cc->rw)) {
    if (!list_member(cc->calls, node)) cc->calls = lappend(cc->calls, node);
    return false;  // its input has no prediction calls worth batching separately
  }
  return expression_tree_walker(node, reinterpret_cast<bool (*)()>(collect_calls), cc);
}

// Replaces the collected calls (and, for a scan, its Vars) by references to new columns.
struct ReplaceContext {
  List* calls;
  int call_varno;    // varno of the references to prediction columns
  int first_call_col;  // attno of the first prediction column
  int scan_varno;    // scan relation whose Vars are remapped (0: none)
  List* scan_vars;     // Vars of the scan relation, in output position order
  int scan_new_varno;
};

Node* replace_calls(Node* node, ReplaceContext* rc) {
  if (!node) return nullptr;
  if (IsA(node, FuncExpr)) {
    int k = 0;
    ListCell* lc;
    foreach (lc, rc->calls) {
      if (equal(node, lfirst(lc))) {
        FuncExpr* f = reinterpret_cast<FuncExpr*>(node);
        return reinterpret_cast<Node*>(
            makeVar(rc->call_varno, static_cast<AttrNumber>(rc->first_call_col + k), f->funcresulttype, -1,
                    f->funccollid, 0));
      }
      k++;
    }
  }
  if (IsA(node, Var) && rc->scan_varno != 0) {
    Var* v = reinterpret_cast<Var*>(node);
    if (v->varno == rc->scan_varno && v->varlevelsup == 0) {
      int k = 1;
      ListCell* lc;
      foreach (lc, rc->scan_vars) {
        Var* sv = static_cast<Var*>(lfirst(lc));
        if (sv->varattno == v->varattno) {
          Var* nv = static_cast<Var*>(copyObject(v));
          nv->varno = rc->scan_new_varno;
          nv->varattno = static_cast<AttrNumber>(k);
          return reinterpret_cast<Node*>(nv);
        }
        k++;
      }
      elog(ERROR, "flock: scan column %d missing from the batched scan's input", v->varattno);
    }
  }
  return expression_tree_mutator(node, reinterpret_cast<Node* (*)()>(replace_calls), rc);
}

bool contains_any_call(Node* node, List* calls) {
  if (!node) return false;
  if (IsA(node, FuncExpr) && list_member(calls, node)) return true;
  return expression_tree_walker(node, reinterpret_cast<bool (*)()>(contains_any_call), calls);
}

bool has_special_varno(Node* node, void*) {
  if (!node) return false;
  if (IsA(node, Var) && IS_SPECIAL_VARNO(reinterpret_cast<Var*>(node)->varno)) return true;
  return expression_tree_walker(node, reinterpret_cast<bool (*)()>(has_special_varno), nullptr);
}

// The child columns (positions 1 .. limit-1) that expressions read through Vars of `varno`; `all`
// when one reads a whole row.
struct ColumnUse {
  int varno;
  int limit;
  Bitmapset* cols;
  bool all;
};

bool collect_column_use(Node* node, ColumnUse* use) {
  if (!node) return false;
  if (IsA(node, Var)) {
    Var* v = reinterpret_cast<Var*>(node);
    if (v->varno == use->varno && v->varlevelsup == 0) {
      if (v->varattno <= 0) use->all = true;
      else if (v->varattno < use->limit) use->cols = bms_add_member(use->cols, v->varattno);
    }
    return false;
  }
  return expression_tree_walker(node, reinterpret_cast<bool (*)()>(collect_column_use), use);
}

void use_columns(ColumnUse* use, int n, const AttrNumber* idx) {
  for (int k = 0; k < n; ++k) {
    if (idx[k] <= 0) use->all = true;
    else if (idx[k] < use->limit) use->cols = bms_add_member(use->cols, idx[k]);
  }
}

// The columns as a list of Integers, in order (every one when `all`).
List* used_column_list(const ColumnUse* use) {
  List* out = NIL;
  for (int c = 1; c < use->limit; ++c)
    if (use->all || bms_is_member(c, use->cols)) out = lappend(out, makeInteger(c));
  return out;
}

// The child columns an upper node reads from the rows below it (its OUTER_VAR positions before
// `limit`): its expressions, and the columns it groups, partitions or orders by.
List* upper_node_columns(Plan* plan, int limit) {
  ColumnUse use = {OUTER_VAR, limit, nullptr, false};
  collect_column_use(reinterpret_cast<Node*>(plan->targetlist), &use);
  collect_column_use(reinterpret_cast<Node*>(plan->qual), &use);
  switch (nodeTag(plan)) {
    case T_Agg: {
      Agg* agg = reinterpret_cast<Agg*>(plan);
      use_columns(&use, agg->numCols, agg->grpColIdx);
      if (agg->groupingSets != NIL || agg->chain != NIL) use.all = true;  // more sorts and groupings
      break;
    }
    case T_Group: {
      Group* group = reinterpret_cast<Group*>(plan);
      use_columns(&use, group->numCols, group->grpColIdx);
      break;
    }
    case T_WindowAgg: {
      WindowAgg* w = reinterpret_cast<WindowAgg*>(plan);
      use_columns(&use, w->partNumCols, w->partColIdx);
      use_columns(&use, w->ordNumCols, w->ordColIdx);
      collect_column_use(w->startOffset, &use);
      collect_column_use(w->endOffset, &use);
      collect_column_use(reinterpret_cast<Node*>(w->runCondition), &use);
      collect_column_use(reinterpret_cast<Node*>(w->runConditionOrig), &use);
      break;
    }
    case T_Result:
      collect_column_use(reinterpret_cast<Result*>(plan)->resconstantqual, &use);
      break;
    default:
      use.all = true;
      break;
  }
  return used_column_list(&use);
}

// The PARAM_EXEC params an expression reads.
bool collect_exec_params(Node* node, Bitmapset** ids) {
  if (!node) return false;
  if (IsA(node, Param) && reinterpret_cast<Param*>(node)->paramkind == PARAM_EXEC)
    *ids = bms_add_member(*ids, reinterpret_cast<Param*>(node)->paramid);
  return expression_tree_walker(node, reinterpret_cast<bool (*)()>(collect_exec_params), ids);
}

// `copied`: the child columns (1-based positions) the rows the node returns must carry: those its
// own target list and quals read, or, when it returns its scan rows as they are, those the node
// above reads. The others are left NULL.
CustomScan* make_batch_node(Plan* child, List* custom_scan_tlist, List* tlist, List* qual, List* calls,
                            List* inputs, List* row_columns, List* copied) {
  // The child is no longer an Append's direct child: an async-capable foreign scan (a foreign
  // partition) there would wait for requests only an Append makes, and return no rows (issue 18).
  child->async_capable = false;
  CustomScan* cs = makeNode(CustomScan);
  cs->scan.plan.startup_cost = child->startup_cost;
  cs->scan.plan.total_cost = child->total_cost;
  cs->scan.plan.plan_rows = child->plan_rows;
  cs->scan.plan.plan_width = child->plan_width;
  cs->scan.plan.parallel_safe = child->parallel_safe;
  cs->scan.plan.parallel_aware = false;
  cs->scan.plan.targetlist = tlist;
  cs->scan.plan.qual = qual;
  cs->scan.scanrelid = 0;
  cs->custom_plans = list_make1(child);
  cs->custom_scan_tlist = custom_scan_tlist;
  // custom_exprs: model constant and input expression of each call (see BatchPrivate).
  List* exprs = NIL;
  BatchPrivate priv;
  priv.ncalls = list_length(calls);
  priv.wants = static_cast<Want*>(palloc(sizeof(Want) * std::max(priv.ncalls, 1)));
  priv.explains = static_cast<bool*>(palloc(sizeof(bool) * std::max(priv.ncalls, 1)));
  priv.row_columns = static_cast<RowColumns*>(palloc(sizeof(RowColumns) * std::max(priv.ncalls, 1)));
  priv.copied = copied;
  priv.sources = NIL;  // read_table_rows sets them
  priv.nfacts = 0;     // attach_column_facts sets them
  priv.facts = nullptr;
  int k = 0;
  ListCell *lc, *li, *lr;
  forthree(lc, calls, li, inputs, lr, row_columns) {
    FuncExpr* f = static_cast<FuncExpr*>(lfirst(lc));
    exprs = lappend(exprs, copyObject(linitial(f->args)));
    exprs = lappend(exprs, lfirst(li));
    priv.explains[k] = f->funcresulttype == JSONBOID;
    priv.wants[k] = f->funcresulttype == FLOAT8OID        ? Want::Value
                    : f->funcresulttype == TEXTOID        ? Want::Label
                    : f->funcresulttype == FLOAT8ARRAYOID ? Want::Proba
                                                          : Want::Tensor;
    priv.row_columns[k] = decode_row_columns(static_cast<List*>(lfirst(lr)));
    ++k;
  }
  // The explain calls' other arguments, after every call's model and input (see BatchPrivate).
  foreach (lc, calls) {
    FuncExpr* f = static_cast<FuncExpr*>(lfirst(lc));
    if (f->funcresulttype != JSONBOID) continue;
    for (int a = 2; a < 5; ++a) exprs = lappend(exprs, copyObject(list_nth(f->args, a)));
  }
  cs->custom_exprs = exprs;
  cs->custom_private = encode_batch_private(priv);
  cs->methods = &batch_scan_methods;
  // The parameter sets the planner computes for every node before this hook runs: the node depends
  // on what its child does and on the params its own expressions read. Rescans propagate through
  // them, and EvalPlanQual recognises by them a node inside the plan it re-runs (see recheck).
  Bitmapset* params = nullptr;
  collect_exec_params(reinterpret_cast<Node*>(tlist), &params);
  collect_exec_params(reinterpret_cast<Node*>(qual), &params);
  collect_exec_params(reinterpret_cast<Node*>(exprs), &params);
  cs->scan.plan.extParam = bms_union(child->extParam, params);
  cs->scan.plan.allParam = bms_union(child->allParam, params);
  return cs;
}

// OUTER_VAR references to child column i become references to column sources[i - 1] (1-based;
// 0: the column has no source, and ok turns false).
struct RemapContext {
  const int* sources;
  int n;
  bool ok;
};

Node* remap_outer(Node* node, RemapContext* rc) {
  if (!node) return nullptr;
  if (IsA(node, Var) && reinterpret_cast<Var*>(node)->varno == OUTER_VAR) {
    Var* v = reinterpret_cast<Var*>(copyObject(node));
    if (v->varattno < 1 || v->varattno > rc->n || rc->sources[v->varattno - 1] == 0) rc->ok = false;
    else v->varattno = static_cast<AttrNumber>(rc->sources[v->varattno - 1]);
    return reinterpret_cast<Node*>(v);
  }
  return expression_tree_mutator(node, reinterpret_cast<Node* (*)()>(remap_outer), rc);
}

// When the batch node's child is a table scan whose columns are all plain table columns (or NULL
// placeholders), the scan can return the table's rows as they are, with no projection per row:
// its target list becomes the table's columns, and the node takes its child column i from table
// column sources[i] (0: NULL): BatchPrivate.sources (left NIL: the child's columns as planned).
void read_table_rows(CustomScan* cs, Plan* child, const RewriteContext* ctx) {
  BatchPrivate priv = decode_batch_private(cs->custom_private);
  Index rti = 0;
  switch (nodeTag(child)) {
    case T_SeqScan: case T_SampleScan: case T_IndexScan: case T_BitmapHeapScan: case T_TidScan:
    case T_TidRangeScan:
      rti = reinterpret_cast<Scan*>(child)->scanrelid;
      break;
    default:
      break;
  }
  if (rti == 0 || !ctx->rtable || rt_fetch(rti, ctx->rtable)->rtekind != RTE_RELATION) return;
  int n = list_length(child->targetlist);
  int* src = static_cast<int*>(palloc0(sizeof(int) * std::max(n, 1)));
  bool ok = true;
  ListCell* lc;
  foreach (lc, child->targetlist) {
    TargetEntry* te = static_cast<TargetEntry*>(lfirst(lc));
    Node* e = reinterpret_cast<Node*>(te->expr);
    if (te->resjunk) ok = false;
    else if (IsA(e, Var) && reinterpret_cast<Var*>(e)->varno == static_cast<int>(rti) &&
             reinterpret_cast<Var*>(e)->varlevelsup == 0 && reinterpret_cast<Var*>(e)->varattno >= 1)
      src[te->resno - 1] = reinterpret_cast<Var*>(e)->varattno;
    else if (!IsA(e, Const) || !reinterpret_cast<Const*>(e)->constisnull) ok = false;
  }
  // Whole table rows read from columns: the table's columns in order.
  for (int k = 0; k < priv.ncalls; ++k) {
    const RowColumns& rc = priv.row_columns[k];
    for (int a = 0; ok && rc.first > 0 && a < rc.natts; ++a) ok = src[rc.first - 1 + a] == a + 1;
  }
  // Inputs evaluated on the child's rows (not those read from columns: never evaluated).
  RemapContext remap = {src, n, true};
  List* exprs = NIL;
  for (int k = 0; k < priv.ncalls; ++k) {
    Node* input = static_cast<Node*>(list_nth(cs->custom_exprs, 2 * k + 1));
    bool from_columns = priv.row_columns[k].first > 0;
    exprs = lappend(exprs, list_nth(cs->custom_exprs, 2 * k));
    exprs = lappend(exprs, from_columns ? input : remap_outer(input, &remap));
  }
  for (int i = 2 * priv.ncalls; i < list_length(cs->custom_exprs); ++i)  // the explain calls' constants
    exprs = lappend(exprs, list_nth(cs->custom_exprs, i));
  // The table: no dropped columns or columns added with a default since its rows were written,
  // else the scan would project its rows anyway.
  Relation rel = table_open(rt_fetch(rti, ctx->rtable)->relid, NoLock);  // the planner holds its lock
  TupleDesc desc = RelationGetDescr(rel);
  List* physical = NIL;
  for (int a = 0; ok && a < desc->natts; ++a) {
    Form_pg_attribute att = TupleDescAttr(desc, a);
    ok = !att->attisdropped && !att->atthasmissing;
    physical = lappend(physical, makeTargetEntry(reinterpret_cast<Expr*>(makeVar(static_cast<int>(rti), static_cast<AttrNumber>(a + 1),
                                                                               att->atttypid, att->atttypmod,
                                                                               att->attcollation, 0)),
                                                 static_cast<AttrNumber>(a + 1), nullptr, false));
  }
  table_close(rel, NoLock);
  if (!ok || !remap.ok) return;
  for (int k = 0; k < priv.ncalls; ++k)
    if (priv.row_columns[k].first > 0) priv.row_columns[k].first = 1;
  cs->custom_exprs = exprs;
  child->targetlist = physical;
  for (int i = 0; i < n; ++i) priv.sources = lappend(priv.sources, makeInteger(src[i]));
  cs->custom_private = encode_batch_private(priv);
}

// ---- What the scan under a batch node guarantees (for the optimizer: optimize_call.cpp)

// The btree operator families whose comparisons order numbers as numbers (NaN above every float):
// integer_ops (int2, int4, int8 in any mix) and float_ops (float4, float8). PostgreSQL 15 names
// only the first; float_ops is 1970 in pg_opfamily.dat.
constexpr Oid kFloatBtreeFamily = 1970;

bool numeric_column_type(Oid type, bool* integer) {
  *integer = type == INT2OID || type == INT4OID || type == INT8OID;
  return *integer || type == FLOAT4OID || type == FLOAT8OID;
}

// A plain column of table `rti` (nothing around it).
Var* table_column(Node* node, Index rti) {
  if (!node || !IsA(node, Var)) return nullptr;
  Var* v = reinterpret_cast<Var*>(node);
  if (v->varno != static_cast<int>(rti) || v->varlevelsup != 0 || v->varattno <= 0) return nullptr;
  return v;
}

// A constant cast to float8 (a stored CHECK constraint keeps `x > 0.5` as `x > 0.5::numeric::float8`,
// unfolded) as a float8 constant, computed as the cast computes it but without ever raising an
// error (a numeric past float8's range becomes an infinity, not the cast's error); else `node`.
Node* folded_number(Node* node) {
  if (!node || !IsA(node, FuncExpr)) return node;
  FuncExpr* f = reinterpret_cast<FuncExpr*>(node);
  if (f->funcresulttype != FLOAT8OID || list_length(f->args) != 1 || !IsA(linitial(f->args), Const)) return node;
  Const* c = static_cast<Const*>(linitial(f->args));
  if (c->constisnull) return node;
  double v;
  switch (f->funcid) {
    case F_FLOAT8_NUMERIC: v = DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow, c->constvalue)); break;
    case F_FLOAT8_INT2: v = DatumGetInt16(c->constvalue); break;
    case F_FLOAT8_INT4: v = DatumGetInt32(c->constvalue); break;
    case F_FLOAT8_INT8: v = static_cast<double>(DatumGetInt64(c->constvalue)); break;
    case F_FLOAT8_FLOAT4: v = DatumGetFloat4(c->constvalue); break;
    default: return node;
  }
  return reinterpret_cast<Node*>(makeConst(FLOAT8OID, -1, InvalidOid, sizeof(float8), Float8GetDatum(v), false,
                                           FLOAT8PASSBYVAL));
}

// `column op constant` or `column op $n` (either side), or `column IS NOT NULL`, as a fact; false
// for anything else, which simply says nothing (leaving a qual out only loses pruning, never
// correctness). `null_passes`: the qual is a constraint, which a NULL comparison passes.
bool qual_fact(Node* qual, Index rti, bool null_passes, ColumnFact* fact) {
  if (IsA(qual, NullTest)) {
    NullTest* nt = reinterpret_cast<NullTest*>(qual);
    Var* v = table_column(reinterpret_cast<Node*>(nt->arg), rti);
    bool integer;
    if (!v || nt->nulltesttype != IS_NOT_NULL || nt->argisrow || !numeric_column_type(v->vartype, &integer)) return false;
    *fact = {v->varattno, FactOp::NotNull, integer, false, 0, 0, InvalidOid};  // never NULL itself
    return true;
  }
  if (!IsA(qual, OpExpr)) return false;
  OpExpr* op = reinterpret_cast<OpExpr*>(qual);
  if (list_length(op->args) != 2) return false;
  Node* left = static_cast<Node*>(linitial(op->args));
  Node* right = static_cast<Node*>(lsecond(op->args));
  Var* v = table_column(left, rti);
  bool commuted = false;
  if (!v) {
    v = table_column(right, rti);
    std::swap(left, right);
    commuted = true;
  }
  bool integer;
  if (!v || !numeric_column_type(v->vartype, &integer)) return false;
  right = folded_number(right);
  // The operator's meaning, from its btree family: only the built-in number orderings.
  int strategy = 0;
  ListCell* lc;
  foreach (lc, get_op_btree_interpretation(op->opno)) {
    auto* bi = static_cast<OpBtreeInterpretation*>(lfirst(lc));
    bool family = integer ? bi->opfamily_id == INTEGER_BTREE_FAM_OID : bi->opfamily_id == kFloatBtreeFamily;
    if (family && bi->strategy >= BTLessStrategyNumber && bi->strategy <= BTGreaterStrategyNumber) strategy = bi->strategy;
  }
  if (strategy == 0) return false;
  if (commuted) strategy = BTMaxStrategyNumber + 1 - strategy;  // c < x is x > c
  *fact = {v->varattno, static_cast<FactOp>(strategy), integer, null_passes, 0, 0, InvalidOid};
  if (IsA(right, Param)) {
    // Its value is known at executor start (batch_exec.cpp settles the fact then).
    Param* p = reinterpret_cast<Param*>(right);
    bool param_integer;
    if (p->paramkind != PARAM_EXTERN || p->paramid <= 0 || !numeric_column_type(p->paramtype, &param_integer) ||
        param_integer != integer)
      return false;
    fact->param = p->paramid;
    fact->param_type = p->paramtype;
    return true;
  }
  if (!IsA(right, Const) || reinterpret_cast<Const*>(right)->constisnull) return false;
  return settle_fact(fact, reinterpret_cast<Const*>(right)->consttype, reinterpret_cast<Const*>(right)->constvalue);
}

void quals_facts(List* quals, Index rti, bool null_passes, List** facts) {
  ListCell* lc;
  foreach (lc, quals) {
    Node* q = static_cast<Node*>(lfirst(lc));
    if (is_andclause(q)) {
      // A constraint's AND is not false only when no conjunct is false: each holds as a constraint.
      quals_facts(reinterpret_cast<BoolExpr*>(q)->args, rti, null_passes, facts);
      continue;
    }
    ColumnFact f;
    if (qual_fact(q, rti, null_passes, &f)) {
      auto* copy = static_cast<ColumnFact*>(palloc(sizeof(ColumnFact)));
      *copy = f;
      *facts = lappend(*facts, copy);
    }
  }
}

// What the table itself guarantees about its rows: NOT NULL columns, validated CHECK constraints
// and, for a partition, its partition constraint (its bounds and its ancestors'). Constraints pass
// a row on NULL as well as on true, so their comparisons say nothing about NULL (null_passes);
// their expressions use varno 1.
void relation_facts(Oid relid, List** facts) {
  Relation rel = table_open(relid, NoLock);  // the planner holds its lock
  TupleDesc desc = RelationGetDescr(rel);
  for (int a = 0; a < desc->natts; ++a) {
    Form_pg_attribute att = TupleDescAttr(desc, a);
    bool integer;
    if (att->attisdropped || !att->attnotnull || !numeric_column_type(att->atttypid, &integer)) continue;
    auto* f = static_cast<ColumnFact*>(palloc(sizeof(ColumnFact)));
    *f = {a + 1, FactOp::NotNull, integer, false, 0, 0, InvalidOid};
    *facts = lappend(*facts, f);
  }
  if (desc->constr) {
    for (int i = 0; i < desc->constr->num_check; ++i) {
      const ConstrCheck& check = desc->constr->check[i];
      if (!check.ccvalid || !check.ccbin) continue;  // NOT VALID: old rows may break it
      Node* expr = static_cast<Node*>(stringToNode(check.ccbin));
      quals_facts(make_ands_implicit(reinterpret_cast<Expr*>(expr)), 1, true, facts);
    }
  }
  if (rel->rd_rel->relispartition) quals_facts(RelationGetPartitionQual(rel), 1, true, facts);
  table_close(rel, NoLock);
}

// Records in the batch node what its child, a scan of a table, enforces on every row it returns:
// the scan's quals, and the index quals an index or bitmap heap scan checks (rechecking them when
// the index is lossy), and what the table's constraints guarantee (relation_facts). Quals on the
// node itself (those that read predictions) are not among them.
void attach_column_facts(CustomScan* cs, Plan* child, const RewriteContext* ctx) {
  Index rti = 0;
  List* quals = child->qual;
  switch (nodeTag(child)) {
    case T_SeqScan: case T_SampleScan: case T_TidScan: case T_TidRangeScan:
      rti = reinterpret_cast<Scan*>(child)->scanrelid;
      break;
    case T_IndexScan:
      rti = reinterpret_cast<Scan*>(child)->scanrelid;
      quals = list_concat_copy(quals, reinterpret_cast<IndexScan*>(child)->indexqualorig);
      break;
    case T_BitmapHeapScan:
      rti = reinterpret_cast<Scan*>(child)->scanrelid;
      quals = list_concat_copy(quals, reinterpret_cast<BitmapHeapScan*>(child)->bitmapqualorig);
      break;
    default:
      return;
  }
  if (rti == 0 || !ctx->rtable || rt_fetch(rti, ctx->rtable)->rtekind != RTE_RELATION) return;
  List* facts = NIL;
  quals_facts(quals, rti, false, &facts);
  relation_facts(rt_fetch(rti, ctx->rtable)->relid, &facts);
  if (facts == NIL) return;
  BatchPrivate priv = decode_batch_private(cs->custom_private);
  priv.nfacts = list_length(facts);
  priv.facts = static_cast<ColumnFact*>(palloc(sizeof(ColumnFact) * priv.nfacts));
  for (int i = 0; i < priv.nfacts; ++i) priv.facts[i] = *static_cast<ColumnFact*>(list_nth(facts, i));
  cs->custom_private = encode_batch_private(priv);
}

bool is_plain_scan(Plan* plan) {
  switch (nodeTag(plan)) {
    case T_SeqScan: case T_SampleScan: case T_IndexScan: case T_BitmapHeapScan: case T_TidScan:
    case T_TidRangeScan: case T_SubqueryScan: case T_FunctionScan: case T_ValuesScan: case T_CteScan:
      return true;
    default:
      return false;
  }
}

// A scan whose own expressions call the functions: the scan keeps its plain columns and quals;
// a batch node above it computes the rest.
Plan* rewrite_scan(Scan* scan, const RewriteContext* ctx) {
  int rti = static_cast<int>(scan->scanrelid);
  CollectContext cc = {ctx, rti, NIL};
  collect_calls(reinterpret_cast<Node*>(scan->plan.targetlist), &cc);
  collect_calls(reinterpret_cast<Node*>(scan->plan.qual), &cc);
  if (cc.calls == NIL) return &scan->plan;

  List* kept_qual = NIL;
  List* moved_qual = NIL;
  ListCell* lc;
  foreach (lc, scan->plan.qual) {
    if (contains_any_call(static_cast<Node*>(lfirst(lc)), cc.calls)) moved_qual = lappend(moved_qual, lfirst(lc));
    else kept_qual = lappend(kept_qual, lfirst(lc));
  }
  // The scan now returns the Vars the target list and the moved quals need.
  List* needed = pull_var_clause(reinterpret_cast<Node*>(list_concat_copy(scan->plan.targetlist, moved_qual)), 0);
  List* vars = NIL;
  foreach (lc, needed) {
    Var* v = static_cast<Var*>(lfirst(lc));
    if (v->varno != rti || v->varlevelsup != 0) return &scan->plan;  // not a plain scan column: leave it
    bool seen = false;
    ListCell* lv;
    foreach (lv, vars) seen = seen || static_cast<Var*>(lfirst(lv))->varattno == v->varattno;
    if (!seen) vars = lappend(vars, v);
  }
  List* original_tlist = scan->plan.targetlist;
  List* scan_tlist = NIL;
  List* custom_tlist = NIL;
  int pos = 1;
  foreach (lc, vars) {
    scan_tlist = lappend(scan_tlist, makeTargetEntry(static_cast<Expr*>(copyObject(lfirst(lc))), pos, nullptr, false));
    custom_tlist = lappend(custom_tlist, makeTargetEntry(static_cast<Expr*>(copyObject(lfirst(lc))), pos, nullptr, false));
    pos++;
  }
  List* row_columns = NIL;
  bool reads_columns = false;
  foreach (lc, cc.calls) {
    Node* input = static_cast<Node*>(lsecond(static_cast<FuncExpr*>(lfirst(lc))->args));
    RowColumns rc = append_row_columns(input, static_cast<Index>(rti), ctx, &scan_tlist, &custom_tlist, &pos);
    row_columns = lappend(row_columns, encode_row_columns(rc));
    reads_columns = reads_columns || rc.first > 0;
  }
  int first_call = pos;
  foreach (lc, cc.calls) {
    custom_tlist = lappend(custom_tlist, makeTargetEntry(static_cast<Expr*>(copyObject(lfirst(lc))), pos++,
                                                          nullptr, false));
  }
  // Inputs are evaluated on the scan's new output rows (OUTER_VAR positions).
  ReplaceContext to_outer = {NIL, 0, 0, rti, vars, OUTER_VAR};
  List* inputs = NIL;
  foreach (lc, cc.calls) {
    Node* input = static_cast<Node*>(lsecond(static_cast<FuncExpr*>(lfirst(lc))->args));
    inputs = lappend(inputs, replace_calls(static_cast<Node*>(copyObject(input)), &to_outer));
  }
  ReplaceContext to_index = {cc.calls, INDEX_VAR, first_call, rti, vars, INDEX_VAR};
  List* tlist = reinterpret_cast<List*>(replace_calls(reinterpret_cast<Node*>(copyObject(original_tlist)), &to_index));
  List* qual = reinterpret_cast<List*>(replace_calls(reinterpret_cast<Node*>(copyObject(moved_qual)), &to_index));

  // The whole row itself is no longer needed when only inputs read from columns used it.
  int k0 = 1;
  foreach (lc, vars) {
    Var* v = static_cast<Var*>(lfirst(lc));
    if (reads_columns && v->varattno == 0) {
      Var at_index = *v, at_outer = *v;
      at_index.varno = INDEX_VAR;
      at_index.varattno = static_cast<AttrNumber>(k0);
      at_outer.varno = OUTER_VAR;
      at_outer.varattno = static_cast<AttrNumber>(k0);
      if (!references_var(reinterpret_cast<Node*>(tlist), &at_index) &&
          !references_var(reinterpret_cast<Node*>(qual), &at_index) &&
          !expression_input_reads(inputs, row_columns, &at_outer))
        blank_whole_row(scan_tlist, custom_tlist, k0, v->vartype);
    }
    k0++;
  }

  // The node projects its target list (or returns rows that are exactly it): the rows above read
  // what the target list and quals read.
  ColumnUse use = {INDEX_VAR, first_call, nullptr, false};
  collect_column_use(reinterpret_cast<Node*>(tlist), &use);
  collect_column_use(reinterpret_cast<Node*>(qual), &use);

  scan->plan.targetlist = scan_tlist;
  scan->plan.qual = kept_qual;
  CustomScan* cs = make_batch_node(&scan->plan, custom_tlist, tlist, qual, cc.calls, inputs, row_columns,
                                   used_column_list(&use));
  cs->custom_relids = bms_make_singleton(static_cast<int>(rti));
  attach_column_facts(cs, &scan->plan, ctx);
  read_table_rows(cs, &scan->plan, ctx);
  return &cs->scan.plan;
}

// OUTER_VAR references rewritten as the child's own target expressions (for EXPLAIN).
Node* replace_outer_with_child(Node* node, List* child_tlist) {
  if (!node) return nullptr;
  if (IsA(node, Var) && reinterpret_cast<Var*>(node)->varno == OUTER_VAR) {
    TargetEntry* te = static_cast<TargetEntry*>(list_nth(child_tlist, reinterpret_cast<Var*>(node)->varattno - 1));
    return reinterpret_cast<Node*>(copyObject(te->expr));
  }
  return expression_tree_mutator(node, reinterpret_cast<Node* (*)()>(replace_outer_with_child), child_tlist);
}

// Whether every field of a ROW(...) above a child is one of the child's columns or a constant.
bool fields_are_child_columns(RowExpr* row, int nchild) {
  ListCell* lc;
  foreach (lc, row->args) {
    Node* e = static_cast<Node*>(lfirst(lc));
    if (IsA(e, Const)) continue;
    if (!IsA(e, Var)) return false;
    Var* v = reinterpret_cast<Var*>(e);
    if (v->varno != OUTER_VAR || v->varattno < 1 || v->varattno > nchild) return false;
  }
  return true;
}

// An upper node computing the functions over its child's rows: a batch node goes in between.
Plan* rewrite_upper(Plan* plan, const RewriteContext* ctx) {
  Plan* child = plan->lefttree;
  if (!child || plan->righttree || has_special_varno(reinterpret_cast<Node*>(child->targetlist), nullptr))
    return plan;
  CollectContext cc = {ctx, OUTER_VAR, NIL};
  collect_calls(reinterpret_cast<Node*>(plan->targetlist), &cc);
  collect_calls(reinterpret_cast<Node*>(plan->qual), &cc);
  if (cc.calls == NIL) return plan;

  // Whole-row inputs of a table scan read the table's columns, appended to the scan's output.
  ListCell* lc;
  List* row_columns = NIL;
  bool reads_columns = false;
  bool table_scan = is_plain_scan(child) && reinterpret_cast<Scan*>(child)->scanrelid > 0;
  int next = list_length(child->targetlist) + 1;
  foreach (lc, cc.calls) {
    Node* input = static_cast<Node*>(lsecond(static_cast<FuncExpr*>(lfirst(lc))->args));
    RowColumns rc = {0, 0, InvalidOid};
    Node* row = strip_row_conversions(input);
    if (table_scan && IsA(row, Var) && reinterpret_cast<Var*>(row)->varno == OUTER_VAR &&
        reinterpret_cast<Var*>(row)->varattno >= 1 &&
        reinterpret_cast<Var*>(row)->varattno <= list_length(child->targetlist)) {
      TargetEntry* te = static_cast<TargetEntry*>(list_nth(child->targetlist, reinterpret_cast<Var*>(row)->varattno - 1));
      Node* below = reinterpret_cast<Node*>(te->expr);
      if (row != input) {  // the same conversion, over the child's expression
        ConvertRowtypeExpr* conv = reinterpret_cast<ConvertRowtypeExpr*>(copyObject(input));
        ConvertRowtypeExpr* inner = conv;
        while (IsA(inner->arg, ConvertRowtypeExpr)) inner = reinterpret_cast<ConvertRowtypeExpr*>(inner->arg);
        inner->arg = reinterpret_cast<Expr*>(below);
        below = reinterpret_cast<Node*>(conv);
      }
      rc = append_row_columns(below, reinterpret_cast<Scan*>(child)->scanrelid, ctx, &child->targetlist, nullptr,
                              &next);
    } else if (table_scan && row == input && IsA(row, RowExpr) &&
               fields_are_child_columns(reinterpret_cast<RowExpr*>(row), list_length(child->targetlist))) {
      // A narrowed ROW(...) over the child's columns: the same over the scan's own columns.
      Node* over_scan = replace_outer_with_child(static_cast<Node*>(copyObject(row)), child->targetlist);
      rc = append_row_columns(over_scan, reinterpret_cast<Scan*>(child)->scanrelid, ctx, &child->targetlist, nullptr,
                              &next);
    }
    row_columns = lappend(row_columns, encode_row_columns(rc));
    reads_columns = reads_columns || rc.first > 0;
  }

  List* custom_tlist = NIL;
  List* tlist = NIL;
  int pos = 1;
  foreach (lc, child->targetlist) {
    TargetEntry* te = static_cast<TargetEntry*>(lfirst(lc));
    custom_tlist = lappend(custom_tlist, makeTargetEntry(static_cast<Expr*>(copyObject(te->expr)), pos, nullptr, false));
    Node* e = reinterpret_cast<Node*>(te->expr);
    tlist = lappend(tlist, makeTargetEntry(reinterpret_cast<Expr*>(makeVar(INDEX_VAR, static_cast<AttrNumber>(pos),
                                                                           exprType(e), exprTypmod(e),
                                                                           exprCollation(e), 0)),
                                           pos, nullptr, false));
    pos++;
  }
  int first_call = pos;
  List* inputs = NIL;
  foreach (lc, cc.calls) {
    FuncExpr* f = static_cast<FuncExpr*>(lfirst(lc));
    // For EXPLAIN: the call with its input written over the child's columns.
    FuncExpr* shown = static_cast<FuncExpr*>(copyObject(f));
    lsecond(shown->args) = replace_outer_with_child(static_cast<Node*>(lsecond(shown->args)), child->targetlist);
    custom_tlist = lappend(custom_tlist, makeTargetEntry(reinterpret_cast<Expr*>(shown), pos, nullptr, false));
    tlist = lappend(tlist, makeTargetEntry(reinterpret_cast<Expr*>(makeVar(INDEX_VAR, static_cast<AttrNumber>(pos),
                                                                           f->funcresulttype, -1, f->funccollid, 0)),
                                           pos, nullptr, false));
    inputs = lappend(inputs, copyObject(lsecond(f->args)));
    pos++;
  }
  ReplaceContext to_outer = {cc.calls, OUTER_VAR, first_call, 0, NIL, 0};
  plan->targetlist = reinterpret_cast<List*>(replace_calls(reinterpret_cast<Node*>(plan->targetlist), &to_outer));
  plan->qual = reinterpret_cast<List*>(replace_calls(reinterpret_cast<Node*>(plan->qual), &to_outer));
  // The node returns its scan rows as they are (its target list is the identity): the node above
  // reads them.
  CustomScan* cs = make_batch_node(child, custom_tlist, tlist, NIL, cc.calls, inputs, row_columns,
                                   upper_node_columns(plan, first_call));
  // The whole row itself is no longer needed when only inputs read from columns used it.
  if (reads_columns) {
    ListCell *li, *lr;
    forboth(li, inputs, lr, row_columns) {
      if (intVal(linitial(static_cast<List*>(lfirst(lr)))) == 0) continue;
      // OUTER_VAR p: the child's whole-row column (converted or not); a narrowed ROW(...) has none.
      Node* row = strip_row_conversions(static_cast<Node*>(lfirst(li)));
      if (!IsA(row, Var)) continue;
      Var* whole = reinterpret_cast<Var*>(row);
      if (!references_var(reinterpret_cast<Node*>(plan->targetlist), whole) &&
          !references_var(reinterpret_cast<Node*>(plan->qual), whole) &&
          !expression_input_reads(inputs, row_columns, whole))
        blank_whole_row(child->targetlist, custom_tlist, whole->varattno, whole->vartype);
    }
  }
  attach_column_facts(cs, child, ctx);
  read_table_rows(cs, child, ctx);
  plan->lefttree = &cs->scan.plan;
  return plan;
}

// Whether a list of Integer column numbers holds `pos`.
bool column_listed(List* columns, int pos) {
  ListCell* lc;
  foreach (lc, columns)
    if (intVal(lfirst(lc)) == pos) return true;
  return false;
}

// An Append's target list gets one column per call, passing its children's new columns up.
void append_call_columns(Append* app, List* calls, int first) {
  int pos = first;
  ListCell* lc;
  foreach (lc, calls) {
    FuncExpr* f = static_cast<FuncExpr*>(lfirst(lc));
    app->plan.targetlist = lappend(app->plan.targetlist,
                                   makeTargetEntry(reinterpret_cast<Expr*>(makeVar(OUTER_VAR, static_cast<AttrNumber>(pos),
                                                                                   f->funcresulttype, -1, f->funccollid, 0)),
                                                   static_cast<AttrNumber>(pos), nullptr, false));
    pos++;
  }
}

// The calls of an upper node (over OUTER_VAR) appended to its child's target list, written over
// the child's own expressions.
void append_calls_to_child(Plan* child, List* calls) {
  List* child_tlist = child->targetlist;
  ListCell* lc;
  foreach (lc, calls) {
    Node* over_child = replace_outer_with_child(static_cast<Node*>(copyObject(lfirst(lc))), child_tlist);
    child->targetlist = lappend(child->targetlist,
                                makeTargetEntry(reinterpret_cast<Expr*>(over_child),
                                                static_cast<AttrNumber>(list_length(child->targetlist) + 1), nullptr, false));
  }
}

// A whole row a child's target list returns (converted to the parent's row type or not).
bool whole_row_entry(Node* e) {
  while (e && IsA(e, ConvertRowtypeExpr)) e = reinterpret_cast<Node*>(reinterpret_cast<ConvertRowtypeExpr*>(e)->arg);
  return e && IsA(e, Var) && reinterpret_cast<Var*>(e)->varattno == 0;
}

// The whole rows among a child's first n columns that the node above does not read become NULLs.
void blank_unread_whole_rows(Plan* child, int n, List* used) {
  for (int pos = 1; pos <= n; ++pos) {
    TargetEntry* te = static_cast<TargetEntry*>(list_nth(child->targetlist, pos - 1));
    if (!column_listed(used, pos) && whole_row_entry(reinterpret_cast<Node*>(te->expr)))
      te->expr = reinterpret_cast<Expr*>(makeNullConst(exprType(reinterpret_cast<Node*>(te->expr)), -1, InvalidOid));
  }
}

// An upper node computing the functions over an Append (an aggregate over a partitioned table,
// say): each of the Append's subplans gets a Result that passes its rows on with the predictions
// as extra columns, computed by a batch node below it (rewrite_upper), so that every partition's
// scan has its own batch node and its facts (partition bounds, CHECK constraints); the Append
// passes the new columns up and the upper node reads them. Columns of the Append the upper node no
// longer reads (the whole row the calls took) become NULLs, so no row value is formed per row.
Plan* rewrite_upper_over_append(Plan* plan, Append* app, const RewriteContext* ctx) {
  CollectContext cc = {ctx, OUTER_VAR, NIL};
  collect_calls(reinterpret_cast<Node*>(plan->targetlist), &cc);
  collect_calls(reinterpret_cast<Node*>(plan->qual), &cc);
  if (cc.calls == NIL || app->appendplans == NIL) return plan;
  const int napp = list_length(app->plan.targetlist);
  ListCell* lc;
  foreach (lc, app->appendplans) {
    Plan* sub = static_cast<Plan*>(lfirst(lc));
    if (list_length(sub->targetlist) != napp || has_special_varno(reinterpret_cast<Node*>(sub->targetlist), nullptr))
      return plan;
  }
  List* calls = cc.calls;
  ReplaceContext to_outer = {calls, OUTER_VAR, napp + 1, 0, NIL, 0};
  plan->targetlist = reinterpret_cast<List*>(replace_calls(reinterpret_cast<Node*>(plan->targetlist), &to_outer));
  plan->qual = reinterpret_cast<List*>(replace_calls(reinterpret_cast<Node*>(plan->qual), &to_outer));
  List* used = upper_node_columns(plan, napp + 1);
  foreach (lc, app->appendplans) {
    Plan* sub = static_cast<Plan*>(lfirst(lc));
    Result* r = makeNode(Result);
    r->plan.startup_cost = sub->startup_cost;
    r->plan.total_cost = sub->total_cost;
    r->plan.plan_rows = sub->plan_rows;
    r->plan.plan_width = sub->plan_width;
    r->plan.parallel_safe = sub->parallel_safe;
    r->plan.lefttree = sub;
    r->plan.extParam = bms_copy(sub->extParam);
    r->plan.allParam = bms_copy(sub->allParam);
    List* tlist = NIL;
    int pos = 1;
    ListCell* ls;
    foreach (ls, sub->targetlist) {
      Node* e = reinterpret_cast<Node*>(static_cast<TargetEntry*>(lfirst(ls))->expr);
      Expr* out = column_listed(used, pos) ? reinterpret_cast<Expr*>(makeVar(OUTER_VAR, static_cast<AttrNumber>(pos), exprType(e),
                                                               exprTypmod(e), exprCollation(e), 0))
                             : reinterpret_cast<Expr*>(makeNullConst(exprType(e), exprTypmod(e), exprCollation(e)));
      tlist = lappend(tlist, makeTargetEntry(out, static_cast<AttrNumber>(pos), nullptr, false));
      pos++;
    }
    ListCell* lk;
    foreach (lk, calls) tlist = lappend(tlist, makeTargetEntry(static_cast<Expr*>(copyObject(lfirst(lk))),
                                                                static_cast<AttrNumber>(pos++), nullptr, false));
    r->plan.targetlist = tlist;
    lfirst(lc) = rewrite_upper(&r->plan, ctx);
  }
  append_call_columns(app, calls, napp + 1);
  return plan;
}

// Whether a table scan's quals call the functions.
bool quals_call(Plan* scan, const RewriteContext* ctx) {
  CollectContext in_quals = {ctx, static_cast<int>(reinterpret_cast<Scan*>(scan)->scanrelid), NIL};
  collect_calls(reinterpret_cast<Node*>(scan->qual), &in_quals);
  return in_quals.calls != NIL;
}

// The upper node's calls move into the target list of each of `children` (their first `ncols`
// columns are the rows the node reads, through `app` when it is not null): the node reads the new
// columns, and a whole row it no longer reads becomes a NULL.
void move_upper_calls_into(Plan* plan, List* children, int ncols, Append* app, const RewriteContext* ctx) {
  CollectContext cc = {ctx, OUTER_VAR, NIL};
  collect_calls(reinterpret_cast<Node*>(plan->targetlist), &cc);
  collect_calls(reinterpret_cast<Node*>(plan->qual), &cc);
  if (cc.calls == NIL) return;
  ListCell* lc;
  foreach (lc, children) append_calls_to_child(static_cast<Plan*>(lfirst(lc)), cc.calls);
  if (app) append_call_columns(app, cc.calls, ncols + 1);
  ReplaceContext to_outer = {cc.calls, OUTER_VAR, ncols + 1, 0, NIL, 0};
  plan->targetlist = reinterpret_cast<List*>(replace_calls(reinterpret_cast<Node*>(plan->targetlist), &to_outer));
  plan->qual = reinterpret_cast<List*>(replace_calls(reinterpret_cast<Node*>(plan->qual), &to_outer));
  List* used = upper_node_columns(plan, ncols + 1);
  foreach (lc, children) blank_unread_whole_rows(static_cast<Plan*>(lfirst(lc)), ncols, used);
}

// An upper node over a table scan whose quals call the functions (`SELECT sum(flock.predict(m, t))
// FROM t WHERE flock.predict(m, t) > c`): the upper node's calls move into the scan's target list,
// so the scan's batch node computes them with the quals' (one call where they are equal) and the
// scan no longer forms the whole row per row for the upper node to score unbatched.
void move_upper_calls_into_scan(Plan* plan, const RewriteContext* ctx) {
  Plan* child = plan->lefttree;
  if (!child || plan->righttree || !is_plain_scan(child) || reinterpret_cast<Scan*>(child)->scanrelid == 0 ||
      has_special_varno(reinterpret_cast<Node*>(child->targetlist), nullptr) || !quals_call(child, ctx))
    return;
  move_upper_calls_into(plan, list_make1(child), list_length(child->targetlist), nullptr, ctx);
}

// The same over an Append of table scans (a partitioned table's): the upper node's calls move into
// every child scan's target list, the Append passes the new columns up, and each child's batch
// node computes them with its quals'. Every child must be a plain table scan.
void move_upper_calls_into_append_scans(Plan* plan, Append* app, const RewriteContext* ctx) {
  if (plan->righttree || app->appendplans == NIL) return;
  const int napp = list_length(app->plan.targetlist);
  ListCell* lc;
  int pos = 1;
  foreach (lc, app->plan.targetlist) {  // the Append passes its children's columns on as they are
    Node* e = reinterpret_cast<Node*>(static_cast<TargetEntry*>(lfirst(lc))->expr);
    if (!IsA(e, Var) || reinterpret_cast<Var*>(e)->varno != OUTER_VAR || reinterpret_cast<Var*>(e)->varattno != pos)
      return;
    pos++;
  }
  bool any_quals_call = false;
  foreach (lc, app->appendplans) {
    Plan* sub = static_cast<Plan*>(lfirst(lc));
    if (!is_plain_scan(sub) || reinterpret_cast<Scan*>(sub)->scanrelid == 0 || list_length(sub->targetlist) != napp ||
        has_special_varno(reinterpret_cast<Node*>(sub->targetlist), nullptr))
      return;
    any_quals_call = any_quals_call || quals_call(sub, ctx);
  }
  if (any_quals_call) move_upper_calls_into(plan, app->appendplans, napp, app, ctx);
}

Plan* rewrite_plan(Plan* plan, const RewriteContext* ctx) {
  if (!plan) return nullptr;
  switch (nodeTag(plan)) {
    case T_Agg: case T_Result: case T_WindowAgg: case T_Group:
      if (plan->lefttree && IsA(plan->lefttree, Append))
        move_upper_calls_into_append_scans(plan, reinterpret_cast<Append*>(plan->lefttree), ctx);
      else
        move_upper_calls_into_scan(plan, ctx);
      break;
    default:
      break;
  }
  plan->lefttree = rewrite_plan(plan->lefttree, ctx);
  plan->righttree = rewrite_plan(plan->righttree, ctx);
  ListCell* lc;
  switch (nodeTag(plan)) {
    case T_Append:
      foreach (lc, reinterpret_cast<Append*>(plan)->appendplans) lfirst(lc) = rewrite_plan(static_cast<Plan*>(lfirst(lc)), ctx);
      break;
    case T_MergeAppend:
      foreach (lc, reinterpret_cast<MergeAppend*>(plan)->mergeplans) lfirst(lc) = rewrite_plan(static_cast<Plan*>(lfirst(lc)), ctx);
      break;
    case T_SubqueryScan: {
      SubqueryScan* sq = reinterpret_cast<SubqueryScan*>(plan);
      sq->subplan = rewrite_plan(sq->subplan, ctx);
      break;
    }
    default:
      break;
  }
  if (is_plain_scan(plan)) return rewrite_scan(reinterpret_cast<Scan*>(plan), ctx);
  switch (nodeTag(plan)) {
    case T_Agg: case T_Result: case T_WindowAgg: case T_Group:
      if (plan->lefttree && IsA(plan->lefttree, Append) && !plan->righttree)
        return rewrite_upper_over_append(plan, reinterpret_cast<Append*>(plan->lefttree), ctx);
      return rewrite_upper(plan, ctx);
    default:
      return plan;
  }
}

// Marks the batch nodes below a Gather or Gather Merge parallel aware, so that the leader hands
// its resolved models to the workers through the query's shared memory (shared_model.cpp) instead
// of each worker reading and compiling them. EXPLAIN then says "Parallel Custom Scan".
void mark_parallel_batch_nodes(Plan* plan, bool under_gather) {
  if (!plan) return;
  under_gather = under_gather || IsA(plan, Gather) || IsA(plan, GatherMerge);
  ListCell* lc;
  switch (nodeTag(plan)) {
    case T_CustomScan: {
      CustomScan* cs = reinterpret_cast<CustomScan*>(plan);
      if (cs->methods == &batch_scan_methods && under_gather) plan->parallel_aware = true;
      foreach (lc, cs->custom_plans) mark_parallel_batch_nodes(static_cast<Plan*>(lfirst(lc)), under_gather);
      break;
    }
    case T_Append:
      foreach (lc, reinterpret_cast<Append*>(plan)->appendplans) mark_parallel_batch_nodes(static_cast<Plan*>(lfirst(lc)), under_gather);
      break;
    case T_MergeAppend:
      foreach (lc, reinterpret_cast<MergeAppend*>(plan)->mergeplans) mark_parallel_batch_nodes(static_cast<Plan*>(lfirst(lc)), under_gather);
      break;
    case T_SubqueryScan:
      mark_parallel_batch_nodes(reinterpret_cast<SubqueryScan*>(plan)->subplan, under_gather);
      break;
    default:
      break;
  }
  mark_parallel_batch_nodes(plan->lefttree, under_gather);
  mark_parallel_batch_nodes(plan->righttree, under_gather);
}

PlannedStmt* flock_planner(Query* parse, const char* query_string, int options, ParamListInfo params) {
  // The optimizer's query rewrites first (optimize_query.cpp): PostgreSQL then plans what they add.
  // An aggregate of predictions over a distributed table: partial aggregates on the shards (issue 18).
  if (PlannedStmt* on_shards = plan_on_shards(parse, options, params)) return on_shards;
  bool scored_on_shards = false;  // predictions of a distributed table's rows moved to the shards (issue 18)
  parse = distribute_scans(parse, &scored_on_shards);
  QueryOptimizeContext octx = {query_string, options, params, InvalidOid, false};
  parse = optimize_query(parse, &octx);
  parse = pin_remote(parse, &octx);  // predictions over foreign tables, pinned so they ship (issue 18)
  PlannedStmt* stmt = prev_planner_hook ? prev_planner_hook(parse, query_string, options, params)
                                        : standard_planner(parse, query_string, options, params);
  if (octx.used_plan_models || scored_on_shards) plan_depends_on_models(stmt);
  if (!batching_enabled || stmt->commandType != CMD_SELECT) return stmt;
  RewriteContext ctx = {get_namespace_oid("flock", true), stmt->rtable};
  if (!OidIsValid(ctx.flock_namespace)) return stmt;
  batch_explain_rows(stmt, ctx.flock_namespace);  // explain_plan.cpp: flock.explain_rows joins (issue 14)
  stmt->planTree = rewrite_plan(stmt->planTree, &ctx);
  ListCell* lc;
  foreach (lc, stmt->subplans) lfirst(lc) = rewrite_plan(static_cast<Plan*>(lfirst(lc)), &ctx);
  if (share_models_with_workers) {
    mark_parallel_batch_nodes(stmt->planTree, false);
    foreach (lc, stmt->subplans) mark_parallel_batch_nodes(static_cast<Plan*>(lfirst(lc)), false);
  }
  return stmt;
}

}  // namespace

void install_batching() {
  RegisterCustomScanMethods(&batch_scan_methods);
  prev_planner_hook = planner_hook;
  planner_hook = flock_planner;
}

}  // namespace flock::pg
