// flock.explain_rows batched (issue 14): a planner step run before batch_plan.cpp's rewrite.
//
// `FROM t, flock.explain_rows(const model, t, const background, const output)` plans as a Nested
// Loop whose inner Function Scan calls flock.explain_rows once per outer row, the row passed as a
// nest-loop parameter. When the outer side is a plain scan, this step adds the equivalent
// flock.explain(model, row, false, background, output) to that scan's target list — which
// batch_plan.cpp then batches like any flock.explain call (one core call per batch) — passes its
// jsonb down as one more nest-loop parameter, and makes the Function Scan call
// flock._explain_rows_of(model, row, background, output, explanation) instead, which lists the
// explanation's contributions in the model's feature order with the row's values (explain.cpp).
// Any other shape is left alone: explain_rows then runs one row per call, as before.
// Plain PostgreSQL code.
#include "pg.hpp"  // must come first

extern "C" {
#include "catalog/pg_proc.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "nodes/plannodes.h"
#include "optimizer/optimizer.h"
#include "parser/parse_func.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
}
#undef flock

#include "explain_plan.hpp"

namespace flock::pg {
namespace {

bool is_scan(Plan* plan) {
  switch (nodeTag(plan)) {
    case T_SeqScan:
    case T_SampleScan:
    case T_IndexScan:
    case T_BitmapHeapScan:
    case T_TidScan:
    case T_TidRangeScan:
    case T_SubqueryScan:
    case T_ValuesScan:
    case T_CteScan:
      return true;
    default:
      return false;
  }
}

Oid flock_function(const char* name, int nargs, const Oid* argtypes) {
  List* qualified = list_make2(makeString(pstrdup("flock")), makeString(pstrdup(name)));
  return LookupFuncName(qualified, nargs, argtypes, true);
}

// The nest-loop parameter `paramid` of `nl`, or nullptr.
NestLoopParam* nest_param(NestLoop* nl, int paramid) {
  ListCell* lc;
  foreach (lc, nl->nestParams) {
    auto* p = static_cast<NestLoopParam*>(lfirst(lc));
    if (p->paramno == paramid) return p;
  }
  return nullptr;
}

struct OuterRowContext {
  NestLoop* nl;
  Plan* outer;
  bool ok;
};

Node* outer_row_mutator(Node* node, OuterRowContext* c) {
  if (!node) return nullptr;
  if (IsA(node, Var)) {
    c->ok = false;
    return node;
  }
  if (IsA(node, Param)) {
    auto* p = reinterpret_cast<Param*>(node);
    NestLoopParam* source = p->paramkind == PARAM_EXEC ? nest_param(c->nl, p->paramid) : nullptr;
    auto* ref = source && IsA(source->paramval, Var) ? reinterpret_cast<Var*>(source->paramval) : nullptr;
    if (!ref || ref->varno != OUTER_VAR || ref->varattno < 1 ||
        ref->varattno > list_length(c->outer->targetlist)) {
      c->ok = false;
      return node;
    }
    return reinterpret_cast<Node*>(
        copyObject(static_cast<TargetEntry*>(list_nth(c->outer->targetlist, ref->varattno - 1))->expr));
  }
  if (IsA(node, SubPlan) || IsA(node, AlternativeSubPlan)) {
    c->ok = false;
    return node;
  }
  return expression_tree_mutator(node, reinterpret_cast<Node* (*)()>(outer_row_mutator), c);
}

void batch_explain_rows_join(PlannedStmt* stmt, NestLoop* nl, Oid flock_namespace) {
  Plan* outer = nl->join.plan.lefttree;
  Plan* inner = nl->join.plan.righttree;
  if (!outer || !inner || !IsA(inner, FunctionScan) || !is_scan(outer)) return;
  auto* fs = reinterpret_cast<FunctionScan*>(inner);
  if (list_length(fs->functions) != 1 || fs->funcordinality) return;
  auto* rtfunc = static_cast<RangeTblFunction*>(linitial(fs->functions));
  if (!rtfunc->funcexpr || !IsA(rtfunc->funcexpr, FuncExpr)) return;
  auto* call = reinterpret_cast<FuncExpr*>(rtfunc->funcexpr);
  if (get_func_namespace(call->funcid) != flock_namespace || list_length(call->args) != 4) return;
  char* name = get_func_name(call->funcid);
  if (!name || strcmp(name, "explain_rows") != 0) return;
  // Model, background and output constants; the row a parameter this join sets from an outer
  // target-list column.
  Node* model = static_cast<Node*>(linitial(call->args));
  Node* row = static_cast<Node*>(lsecond(call->args));
  Node* background = static_cast<Node*>(lthird(call->args));
  Node* output = static_cast<Node*>(lfourth(call->args));
  if (!IsA(model, Const) || !IsA(background, Const) || !IsA(output, Const)) return;
  // The row as the outer scan computes it: each parameter the join sets from the outer side
  // replaced by the outer target-list expression it is set from (a whole row, or columns of an
  // array); anything else (another parameter, a Var) leaves the plan alone.
  OuterRowContext orc = {nl, outer, true};
  Node* outer_row = outer_row_mutator(row, &orc);
  if (!orc.ok || contain_volatile_functions(outer_row)) return;
  // The argument types explain_rows was declared with (record or float4[] for the row).
  Oid declared[4];
  HeapTuple proc = SearchSysCache1(PROCOID, ObjectIdGetDatum(call->funcid));
  if (!HeapTupleIsValid(proc)) return;
  auto* form = reinterpret_cast<Form_pg_proc>(GETSTRUCT(proc));
  const bool four = form->pronargs == 4;
  for (int k = 0; four && k < 4; ++k) declared[k] = form->proargtypes.values[k];
  ReleaseSysCache(proc);
  if (!four) return;
  const Oid explain_types[5] = {declared[0], declared[1], BOOLOID, TEXTOID, TEXTOID};
  const Oid rows_of_types[5] = {declared[0], declared[1], TEXTOID, TEXTOID, JSONBOID};
  const Oid explain_fn = flock_function("explain", 5, explain_types);
  const Oid rows_of_fn = flock_function("_explain_rows_of", 5, rows_of_types);
  if (!OidIsValid(explain_fn) || !OidIsValid(rows_of_fn)) return;

  // The outer scan computes the explanation: batch_plan.cpp batches it there.
  List* explain_args = list_make5(copyObject(model), outer_row, makeBoolConst(false, false),
                                  copyObject(background), copyObject(output));
  Expr* explain = reinterpret_cast<Expr*>(
      makeFuncExpr(explain_fn, JSONBOID, explain_args, InvalidOid, call->inputcollid, COERCE_EXPLICIT_CALL));
  const AttrNumber resno = static_cast<AttrNumber>(list_length(outer->targetlist) + 1);
  outer->targetlist = lappend(outer->targetlist, makeTargetEntry(explain, resno, nullptr, false));

  // Its value reaches the inner side as a new nest-loop parameter.
  const int paramid = list_length(stmt->paramExecTypes);
  stmt->paramExecTypes = lappend_oid(stmt->paramExecTypes, JSONBOID);
  NestLoopParam* passed = makeNode(NestLoopParam);
  passed->paramno = paramid;
  passed->paramval = makeVar(OUTER_VAR, resno, JSONBOID, -1, InvalidOid, 0);
  nl->nestParams = lappend(nl->nestParams, passed);
  Param* explanation = makeNode(Param);
  explanation->paramkind = PARAM_EXEC;
  explanation->paramid = paramid;
  explanation->paramtype = JSONBOID;
  explanation->paramtypmod = -1;
  explanation->paramcollid = InvalidOid;
  explanation->location = -1;

  FuncExpr* rows_of =
      makeFuncExpr(rows_of_fn, call->funcresulttype, list_make5(model, row, background, output, explanation),
                   InvalidOid, call->inputcollid, COERCE_EXPLICIT_CALL);
  rows_of->funcretset = true;
  rtfunc->funcexpr = reinterpret_cast<Node*>(rows_of);
  rtfunc->funcparams = bms_add_member(rtfunc->funcparams, paramid);
  inner->extParam = bms_add_member(inner->extParam, paramid);
  inner->allParam = bms_add_member(inner->allParam, paramid);
}

void walk(PlannedStmt* stmt, Plan* plan, Oid flock_namespace) {
  if (!plan) return;
  walk(stmt, plan->lefttree, flock_namespace);
  walk(stmt, plan->righttree, flock_namespace);
  ListCell* lc;
  switch (nodeTag(plan)) {
    case T_Append:
      foreach (lc, reinterpret_cast<Append*>(plan)->appendplans)
        walk(stmt, static_cast<Plan*>(lfirst(lc)), flock_namespace);
      break;
    case T_MergeAppend:
      foreach (lc, reinterpret_cast<MergeAppend*>(plan)->mergeplans)
        walk(stmt, static_cast<Plan*>(lfirst(lc)), flock_namespace);
      break;
    case T_SubqueryScan:
      walk(stmt, reinterpret_cast<SubqueryScan*>(plan)->subplan, flock_namespace);
      break;
    case T_NestLoop:
      batch_explain_rows_join(stmt, reinterpret_cast<NestLoop*>(plan), flock_namespace);
      break;
    default:
      break;
  }
}

}  // namespace

void batch_explain_rows(PlannedStmt* stmt, Oid flock_namespace) {
  walk(stmt, stmt->planTree, flock_namespace);
  ListCell* lc;
  foreach (lc, stmt->subplans) walk(stmt, static_cast<Plan*>(lfirst(lc)), flock_namespace);
}

}  // namespace flock::pg
