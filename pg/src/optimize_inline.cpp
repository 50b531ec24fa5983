// Model inlining (optimize_inline.hpp): flock.predict(constant model, row) -> the model as SQL.
//
// The core gives the model as an optimize::Expression over the values the binding would hold
// (double, NaN when missing) with exactly the model's operations; this file turns it into
// PostgreSQL nodes that compute the same thing and can raise no error:
//  * a column's value is the column cast to float8 (int8 -> float8 rounds like the binding's
//    static_cast<double>); NULL and NaN are both missing, and since PostgreSQL orders NaN above
//    every number (and NULL fails every test), a Branch adds `OR v IS NULL` / `OR v = 'NaN'` /
//    `AND v <> 'NaN'` only where its comparison would otherwise send them the wrong way;
//  * comparisons are float8 with the core's thresholds (already moved so that comparing the double
//    decides as comparing its float rounding would): no float8 -> float4 cast, which raises on
//    overflow where the binding rounds to infinity;
//  * sums are float8_pl / float8_div in the kernel's order: the core only builds expressions whose
//    finite sums stay far below overflow and whose quotients cannot underflow (float8 operators
//    raise there), and infinities (a linear model's float(1e300)) raise nothing;
//  * rounding to float is flock._round_to_float4 (C: (double)(float)x, IEEE, no error), called once
//    per value.
// Linear models refuse NULL features with an error: they are inlined only when every bound column
// is NOT NULL and no outer join can null the row. Models with an audit policy are never inlined
// (the audit log must see the call).
#include "pg.hpp"  // must come first

extern "C" {
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_operator_d.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_func.h"
#include "parser/parsetree.h"
#include "utils/fmgroids.h"
#include "utils/resowner.h"
}
#undef flock

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "cache.hpp"
#include "flock/binding.hpp"
#include "flock/optimize.hpp"
#include "guard.hpp"
#include "optimize_inline.hpp"
#include "optimize_query.hpp"
#include "plan_model.hpp"

namespace flock::pg {

bool optimizer_inline = true;
double inline_max_cost = kDefaultInlineMaxCost;
extern bool optimizer_enabled;

namespace {

namespace opt = flock::optimize;

// And at most this many expression nodes (the plan's size; a tree's CASE holds every branch).
constexpr int64_t kMaxInlineNodes = 2048;

// float8 operators (pg_operator.dat).
constexpr Oid kFloat8Eq = 670, kFloat8Ne = 671, kFloat8Lt = 672, kFloat8Le = 673, kFloat8Gt = 674,
              kFloat8Ge = 675, kFloat8Plus = 591, kFloat8Mul = 594, kFloat8Div = 593;

// One column of the record, as the model's input sees it.
struct SqlColumn {
  Expr* value;      // the column as float8
  bool nullable;    // may be NULL
  bool may_be_nan;  // a float column
  bool is_float4;   // its value is a float already: rounding to float changes nothing
};

struct InlineContext {
  Oid flock_namespace;
  Oid round_fn;   // flock._round_to_float4(float8)
  List* queries;  // the Query being rewritten, innermost first
  List* noted;    // labels of the models EXPLAIN already shows as inlined
  bool inlined;
};

Expr* f8(double v) {
  return reinterpret_cast<Expr*>(
      makeConst(FLOAT8OID, -1, InvalidOid, sizeof(float8), Float8GetDatum(v), false, FLOAT8PASSBYVAL));
}

Expr* op(Oid opno, Oid result, Expr* l, Expr* r) {
  OpExpr* e = reinterpret_cast<OpExpr*>(make_opclause(opno, result, false, l, r, InvalidOid, InvalidOid));
  e->opfuncid = get_opcode(opno);
  return reinterpret_cast<Expr*>(e);
}

Expr* compare(Oid opno, Expr* l, Expr* r) { return op(opno, BOOLOID, l, r); }

Expr* null_test(Expr* arg, NullTestType type) {
  NullTest* n = makeNode(NullTest);
  n->arg = arg;
  n->nulltesttype = type;
  n->argisrow = false;
  n->location = -1;
  return reinterpret_cast<Expr*>(n);
}

Expr* bool_expr(BoolExprType type, Expr* a, Expr* b) { return makeBoolExpr(type, list_make2(a, b), -1); }

Expr* case_when(Expr* cond, Expr* yes, Expr* no) {
  CaseWhen* w = makeNode(CaseWhen);
  w->expr = cond;
  w->result = yes;
  w->location = -1;
  CaseExpr* c = makeNode(CaseExpr);
  c->casetype = FLOAT8OID;
  c->casecollid = InvalidOid;
  c->arg = nullptr;
  c->args = list_make1(w);
  c->defresult = no;
  c->location = -1;
  return reinterpret_cast<Expr*>(c);
}

Expr* call1(Oid fn, Oid result, Expr* arg) {
  return reinterpret_cast<Expr*>(
      makeFuncExpr(fn, result, list_make1(arg), InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL));
}

Expr* column_value(const SqlColumn& c) { return static_cast<Expr*>(copyObject(c.value)); }

// missing(v): NULL or NaN, as the column allows.
Expr* missing(const SqlColumn& c) {
  Expr* nan = c.may_be_nan ? compare(kFloat8Eq, column_value(c), f8(NAN)) : nullptr;
  Expr* null = c.nullable ? null_test(column_value(c), IS_NULL) : nullptr;
  if (nan && null) return bool_expr(OR_EXPR, null, nan);
  return nan ? nan : null;
}

// The test on a non-missing value, and whether PostgreSQL's operators make it true for NaN.
Expr* test_expr(const opt::ExprNode& n, const SqlColumn& c, bool* true_for_nan) {
  Oid opno = InvalidOid;
  *true_for_nan = false;
  switch (n.test) {
    case opt::ExprTest::Less:
      opno = kFloat8Lt;
      break;
    case opt::ExprTest::LessEqual:
      opno = kFloat8Le;
      break;
    case opt::ExprTest::Greater:
      opno = kFloat8Gt;
      *true_for_nan = true;
      break;
    case opt::ExprTest::GreaterEqual:
      opno = kFloat8Ge;
      *true_for_nan = true;
      break;
    case opt::ExprTest::Equal:
      opno = kFloat8Eq;
      break;
    case opt::ExprTest::NotEqual:
      opno = kFloat8Ne;
      *true_for_nan = true;
      break;
    case opt::ExprTest::Between:
    case opt::ExprTest::NotBetween: {
      Expr* between = bool_expr(AND_EXPR, compare(kFloat8Lt, f8(n.a), column_value(c)),
                                compare(kFloat8Le, column_value(c), f8(n.b)));
      if (n.test == opt::ExprTest::Between) return between;
      *true_for_nan = true;  // a < NaN holds, NaN <= b does not: NOT (...) holds
      return makeBoolExpr(NOT_EXPR, list_make1(between), -1);
    }
    default:
      return nullptr;
  }
  return compare(opno, column_value(c), f8(n.a));
}

struct Translation {
  const opt::ExprNode* nodes;
  int32_t count;
  const SqlColumn* columns;
  int ncolumns;
  Oid round_fn;
};

Expr* to_sql(const Translation& t, int32_t i);

Expr* branch_sql(const Translation& t, const opt::ExprNode& n) {
  // A preprocessed column (column < 0): the expression of node `arg`, a float8 that may be NULL or
  // NaN, evaluated where it is used.
  SqlColumn computed = {nullptr, !n.never_missing, !n.never_missing, true};
  if (n.column < 0) computed.value = to_sql(t, n.arg);
  const SqlColumn& c = n.column < 0 ? computed : t.columns[n.column];
  const bool can_miss = c.nullable || c.may_be_nan;
  const bool m = n.missing_yes;
  if (n.test == opt::ExprTest::Always && (m || !can_miss)) return to_sql(t, n.left);
  if (n.test == opt::ExprTest::Never && (!m || !can_miss)) return to_sql(t, n.right);
  Expr* yes = to_sql(t, n.left);
  Expr* no = to_sql(t, n.right);
  Expr* cond;
  if (n.test == opt::ExprTest::Always) {
    // Non-missing values go to yes, missing ones to no.
    cond = c.may_be_nan ? compare(kFloat8Ne, column_value(c), f8(NAN))  // NULL <> NaN is NULL: no
                        : null_test(column_value(c), IS_NOT_NULL);
  } else if (n.test == opt::ExprTest::Never) {
    cond = missing(c);
  } else {
    bool true_for_nan;
    cond = test_expr(n, c, &true_for_nan);
    if (c.may_be_nan && true_for_nan != m)
      cond = m ? bool_expr(OR_EXPR, cond, compare(kFloat8Eq, column_value(c), f8(NAN)))
               : bool_expr(AND_EXPR, cond, compare(kFloat8Ne, column_value(c), f8(NAN)));
    // A NULL test is NULL: CASE goes to ELSE (no).
    if (c.nullable && m) cond = bool_expr(OR_EXPR, cond, null_test(column_value(c), IS_NULL));
  }
  return case_when(cond, yes, no);
}

Expr* to_sql(const Translation& t, int32_t i) {
  const opt::ExprNode& n = t.nodes[i];
  switch (n.kind) {
    case opt::ExprKind::Constant:
      return f8(n.value);
    case opt::ExprKind::Input:
      return column_value(t.columns[n.column]);
    case opt::ExprKind::Branch:
      return branch_sql(t, n);
    case opt::ExprKind::Add:
      return op(kFloat8Plus, FLOAT8OID, to_sql(t, n.left), to_sql(t, n.right));
    case opt::ExprKind::Multiply:
      return op(kFloat8Mul, FLOAT8OID, to_sql(t, n.left), to_sql(t, n.right));
    case opt::ExprKind::Divide:
      return op(kFloat8Div, FLOAT8OID, to_sql(t, n.left), to_sql(t, n.right));
    case opt::ExprKind::RoundToFloat: {
      const opt::ExprNode& arg = t.nodes[n.left];
      if (arg.kind == opt::ExprKind::Input && t.columns[arg.column].is_float4) return to_sql(t, n.left);
      return call1(t.round_fn, FLOAT8OID, to_sql(t, n.left));
    }
  }
  return nullptr;
}

// Whether the expression is well formed: every column one of the record's bound features, every
// child before its parent (the core builds it so; checked before recursing over it).
bool columns_in_range(const opt::ExprNode* nodes, int32_t count, int ncolumns) {
  for (int32_t i = 0; i < count; ++i) {
    const opt::ExprNode& n = nodes[i];
    if (n.kind == opt::ExprKind::Input && (n.column < 0 || n.column >= ncolumns)) return false;
    if (n.kind == opt::ExprKind::Branch && n.column < 0 && (n.arg < 0 || n.arg >= i)) return false;
    if (n.kind == opt::ExprKind::Branch && n.column >= ncolumns) return false;
    const bool has_children = n.kind == opt::ExprKind::Branch || n.kind == opt::ExprKind::Add ||
                              n.kind == opt::ExprKind::Multiply || n.kind == opt::ExprKind::Divide;
    if ((has_children || n.kind == opt::ExprKind::RoundToFloat) && (n.left < 0 || n.left >= i)) return false;
    if (has_children && (n.right < 0 || n.right >= i)) return false;
  }
  return true;
}

bool has_outer_join(Node* jt) {
  if (!jt) return false;
  if (IsA(jt, JoinExpr)) {
    JoinExpr* j = reinterpret_cast<JoinExpr*>(jt);
    return j->jointype != JOIN_INNER || has_outer_join(j->larg) || has_outer_join(j->rarg);
  }
  if (IsA(jt, FromExpr)) {
    ListCell* lc;
    foreach (lc, reinterpret_cast<FromExpr*>(jt)->fromlist)
      if (has_outer_join(static_cast<Node*>(lfirst(lc)))) return true;
  }
  return false;
}

bool is_predict(FuncExpr* f, const InlineContext* ctx) {
  if (list_length(f->args) != 2 || f->funcresulttype != FLOAT8OID) return false;
  if (get_func_namespace(f->funcid) != ctx->flock_namespace) return false;
  char* name = get_func_name(f->funcid);
  return name && strcmp(name, "predict") == 0 &&
         exprType(static_cast<Node*>(lsecond(f->args))) != FLOAT4ARRAYOID;
}

Expr* as_float8(Expr* value, Oid type) {
  switch (type) {
    case FLOAT8OID:
      return value;
    case FLOAT4OID:
      return call1(F_FLOAT8_FLOAT4, FLOAT8OID, value);
    case INT2OID:
      return call1(F_FLOAT8_INT2, FLOAT8OID, value);
    case INT4OID:
      return call1(F_FLOAT8_INT4, FLOAT8OID, value);
    case INT8OID:
      return call1(F_FLOAT8_INT8, FLOAT8OID, value);
    default:
      return nullptr;
  }
}

// The record's columns: name, type, expression, NOT NULL. nullptr when the input is not a
// whole-row Var of a plain table of this query level, nor a ROW(...) expression.
struct RecordInput {
  int natts;
  flock::RecordColumn* names;  // palloc'd, points into palloc'd strings
  Expr** values;
  Oid* types;
  bool* not_null;
  bool whole_row;
};

bool record_input(Node* input, const InlineContext* ctx, RecordInput* out, const char** why) {
  Query* q = static_cast<Query*>(linitial(ctx->queries));
  if (IsA(input, Var)) {
    Var* v = reinterpret_cast<Var*>(input);
    if (v->varattno != 0 || v->varlevelsup != 0 || v->varno < 1 || v->varno > list_length(q->rtable)) {
      *why = "its input is not a row of a table of the query";
      return false;
    }
    RangeTblEntry* rte = rt_fetch(v->varno, q->rtable);
    if (rte->rtekind != RTE_RELATION) {
      *why = "its input is the row of a subquery or function, not of a table";
      return false;
    }
    if (has_outer_join(reinterpret_cast<Node*>(q->jointree))) {
      *why = "the query has an outer join (a row the join nulls would be scored as NULL)";
      return false;
    }
    Relation rel = table_open(rte->relid, NoLock);  // the parser holds its lock
    TupleDesc desc = RelationGetDescr(rel);
    out->natts = desc->natts;
    out->names =
        static_cast<flock::RecordColumn*>(palloc0(sizeof(flock::RecordColumn) * Max(desc->natts, 1)));
    out->values = static_cast<Expr**>(palloc0(sizeof(Expr*) * Max(desc->natts, 1)));
    out->types = static_cast<Oid*>(palloc0(sizeof(Oid) * Max(desc->natts, 1)));
    out->not_null = static_cast<bool*>(palloc0(sizeof(bool) * Max(desc->natts, 1)));
    for (int a = 0; a < desc->natts; ++a) {
      Form_pg_attribute att = TupleDescAttr(desc, a);
      new (&out->names[a])
          flock::RecordColumn{pstrdup(NameStr(att->attname)), static_cast<bool>(att->attisdropped)};
      out->types[a] = att->atttypid;
      out->not_null[a] = att->attnotnull;
      if (!att->attisdropped)
        out->values[a] = reinterpret_cast<Expr*>(makeVar(
            v->varno, static_cast<AttrNumber>(a + 1), att->atttypid, att->atttypmod, att->attcollation, 0));
    }
    table_close(rel, NoLock);
    out->whole_row = true;
    return true;
  }
  if (IsA(input, RowExpr)) {
    RowExpr* r = reinterpret_cast<RowExpr*>(input);
    const int n = list_length(r->args);
    if (r->row_typeid != RECORDOID || list_length(r->colnames) != n) {
      *why = "its input is a ROW of a named composite type";
      return false;
    }
    out->natts = n;
    out->names = static_cast<flock::RecordColumn*>(palloc0(sizeof(flock::RecordColumn) * Max(n, 1)));
    out->values = static_cast<Expr**>(palloc0(sizeof(Expr*) * Max(n, 1)));
    out->types = static_cast<Oid*>(palloc0(sizeof(Oid) * Max(n, 1)));
    out->not_null = static_cast<bool*>(palloc0(sizeof(bool) * Max(n, 1)));
    for (int a = 0; a < n; ++a) {
      Node* arg = static_cast<Node*>(list_nth(r->args, a));
      new (&out->names[a]) flock::RecordColumn{strVal(list_nth(r->colnames, a)), false};
      out->values[a] = reinterpret_cast<Expr*>(arg);
      out->types[a] = exprType(arg);
      out->not_null[a] = false;
      // The expression reads a column at every branch on it: only what is cheap to read again.
      if (!IsA(arg, Var) && !IsA(arg, Const) && !IsA(arg, Param)) {
        *why = "a ROW(...) field is an expression, not a column, constant or parameter";
        return false;
      }
    }
    out->whole_row = false;
    return true;
  }
  *why = "its input is neither a table's row nor ROW(...)";
  return false;
}

// The call as SQL, or nullptr (DEBUG1 says why).
Expr* inline_call(FuncExpr* f, InlineContext* ctx) {
  Node* model_arg = static_cast<Node*>(linitial(f->args));
  Node* input = static_cast<Node*>(lsecond(f->args));
  PlanModel* pm = plan_model(model_arg);
  if (!pm) {
    ereport(DEBUG1,
            (errmsg_internal(
                "flock optimizer: a call not inlined: its model is not a constant resolved at plan time")));
    return nullptr;
  }
  const char* label = pm->label;
  if (plan_model_audited(model_arg, pm)) {
    ereport(DEBUG1,
            (errmsg_internal("flock optimizer: %s not inlined: the model has an audit policy", label)));
    return nullptr;
  }
  const char* why = nullptr;
  RecordInput rec;
  if (!record_input(input, ctx, &rec, &why)) {
    ereport(DEBUG1, (errmsg_internal("flock optimizer: %s not inlined: %s", label, why)));
    return nullptr;
  }

  // The core's decisions (binding, expression, cost), copied out as plain data.
  const flock::Model* model = pm->handle->model.get();
  opt::ExprNode* nodes = nullptr;
  int32_t count = 0, root = -1;
  int nfeatures = 0;
  int* feature_column = nullptr;
  bool missing_is_error = false, out_of_memory = false;
  double model_cost = 0;
  const double known_cost = plan_model_cost(pm);  // -1: computed below (and fails there alike)
  char reason[256] = "";
  const int natts = rec.natts;
  const flock::RecordColumn* names = rec.names;
  flock_guard([&] {
    try {
      const flock::Signature& sig = model->signature();
      if (sig.inputs.size() != 1 || sig.inputs[0].width <= 0) {
        snprintf(reason, sizeof(reason), "not a model with one vector input");
        return;
      }
      flock::RecordBinding b = flock::bind_record_columns(sig, {names, static_cast<size_t>(natts)});
      if (b.width_mismatch || b.multi_value_input >= 0 ||
          static_cast<int64_t>(b.features.size()) != sig.inputs[0].width) {
        snprintf(reason, sizeof(reason), "the row does not bind to its features");
        return;
      }
      model_cost = known_cost >= 0 ? known_cost : opt::cost(*model);
      if (model_cost > inline_max_cost) {
        snprintf(reason, sizeof(reason), "its cost per row (%.0f) is above %g: the model call is cheaper",
                 model_cost, inline_max_cost);
        return;
      }
      auto e = opt::as_expression(*model, kMaxInlineNodes);
      if (!e) {
        snprintf(reason, sizeof(reason),
                 "not a tree or linear regressor the inliner takes, or more than %lld expression nodes",
                 static_cast<long long>(kMaxInlineNodes));
        return;
      }
      // malloc, not palloc: no PostgreSQL error may jump over these frames. Copied below.
      nfeatures = static_cast<int>(b.features.size());
      feature_column = static_cast<int*>(std::malloc(sizeof(int) * std::max(nfeatures, 1)));
      nodes = static_cast<opt::ExprNode*>(
          std::malloc(sizeof(opt::ExprNode) * std::max<size_t>(e->nodes.size(), 1)));
      if (!feature_column || !nodes) throw std::bad_alloc();
      for (int k = 0; k < nfeatures; ++k) feature_column[k] = -1;
      for (const flock::FeatureColumn& fc : b.features)
        if (fc.position >= 0 && fc.position < nfeatures) feature_column[fc.position] = fc.column;
      count = static_cast<int32_t>(e->nodes.size());
      root = e->root;
      missing_is_error = e->missing_is_error;
      std::memcpy(nodes, e->nodes.data(), sizeof(opt::ExprNode) * e->nodes.size());
    } catch (const std::bad_alloc&) {
      out_of_memory = true;
    }
  });
  if (out_of_memory) {
    snprintf(reason, sizeof(reason), "out of memory");
    std::free(nodes);
    std::free(feature_column);
    nodes = nullptr;
    feature_column = nullptr;
  }
  if (nodes) {
    opt::ExprNode* kept_nodes = static_cast<opt::ExprNode*>(palloc(sizeof(opt::ExprNode) * Max(count, 1)));
    int* kept_columns = static_cast<int*>(palloc(sizeof(int) * Max(nfeatures, 1)));
    memcpy(kept_nodes, nodes, sizeof(opt::ExprNode) * count);
    memcpy(kept_columns, feature_column, sizeof(int) * nfeatures);
    std::free(nodes);
    std::free(feature_column);
    nodes = kept_nodes;
    feature_column = kept_columns;
  }
  if (!nodes) {
    ereport(DEBUG1, (errmsg_internal("flock optimizer: %s not inlined: %s", label, reason)));
    return nullptr;
  }
  if (root < 0 || root >= count || !columns_in_range(nodes, count, nfeatures)) {
    ereport(DEBUG1,
            (errmsg_internal("flock optimizer: %s not inlined: an expression it cannot read", label)));
    return nullptr;
  }

  SqlColumn* columns = static_cast<SqlColumn*>(palloc0(sizeof(SqlColumn) * Max(nfeatures, 1)));
  for (int k = 0; k < nfeatures; ++k) {
    const int a = feature_column[k];
    if (a < 0 || a >= rec.natts || !rec.values[a]) {
      ereport(DEBUG1, (errmsg_internal("flock optimizer: %s not inlined: a feature has no column", label)));
      return nullptr;
    }
    const Oid type = rec.types[a];
    Expr* value = as_float8(static_cast<Expr*>(copyObject(rec.values[a])), type);
    if (!value) {
      ereport(DEBUG1,
              (errmsg_internal("flock optimizer: %s not inlined: column \"%s\" is %s, not a float or integer",
                               label, rec.names[a].name.data(), format_type_be(type))));
      return nullptr;
    }
    columns[k] = {value, !rec.not_null[a], type == FLOAT4OID || type == FLOAT8OID, type == FLOAT4OID};
    if (missing_is_error && columns[k].nullable) {
      ereport(DEBUG1,
              (errmsg_internal("flock optimizer: %s not inlined: column \"%s\" may be NULL, which the model "
                               "refuses with an error",
                               label, rec.names[a].name.data())));
      return nullptr;
    }
  }
  Translation t = {nodes, count, columns, nfeatures, ctx->round_fn};
  Expr* sql = to_sql(t, root);
  ListCell* lc;
  bool noted = false;
  foreach (lc, ctx->noted) noted = noted || strcmp(static_cast<const char*>(lfirst(lc)), label) == 0;
  if (!noted) {
    plan_note("Flock Inlined", psprintf("%s as SQL", label),
              psprintf("%s as SQL (%d expression nodes, cost %g per row)", label, count, model_cost));
    ctx->noted = lappend(ctx->noted, pstrdup(label));
  }
  ctx->inlined = true;
  return sql;
}

Node* inline_mutator(Node* node, InlineContext* ctx) {
  if (!node) return nullptr;
  if (IsA(node, Query)) {
    ctx->queries = lcons(node, ctx->queries);
    Query* q = query_tree_mutator(reinterpret_cast<Query*>(node),
                                  reinterpret_cast<Node* (*)()>(inline_mutator), ctx, 0);
    ctx->queries = list_delete_first(ctx->queries);
    return reinterpret_cast<Node*>(q);
  }
  if (IsA(node, FuncExpr) && is_predict(reinterpret_cast<FuncExpr*>(node), ctx)) {
    // Calls nested in its input (now copied into the expression) are inlined too.
    if (Expr* sql = inline_call(reinterpret_cast<FuncExpr*>(node), ctx))
      return expression_tree_mutator(reinterpret_cast<Node*>(sql),
                                     reinterpret_cast<Node* (*)()>(inline_mutator), ctx);
  }
  return expression_tree_mutator(node, reinterpret_cast<Node* (*)()>(inline_mutator), ctx);
}

}  // namespace

Query* inline_models(Query* parse, QueryOptimizeContext* qctx) {
  if (!optimizer_enabled || !optimizer_inline || parse->commandType == CMD_UTILITY) return parse;
  InlineContext ctx = {qctx->flock_namespace, InvalidOid, NIL, NIL, false};
  if (!OidIsValid(ctx.flock_namespace)) return parse;
  Oid argtypes[1] = {FLOAT8OID};
  ctx.round_fn = LookupFuncName(
      list_make2(makeString(pstrdup("flock")), makeString(pstrdup("_round_to_float4"))), 1, argtypes, true);
  if (!OidIsValid(ctx.round_fn)) return parse;  // an extension script older than the library
  // query_tree_mutator copies each Query it rewrites.
  Query* rewritten = reinterpret_cast<Query*>(inline_mutator(reinterpret_cast<Node*>(parse), &ctx));
  if (!ctx.inlined) return parse;
  qctx->used_plan_models = true;
  return rewritten;
}

}  // namespace flock::pg

// ---- flock._round_to_float4: the float nearest a float8 (IEEE: overflow to infinity, underflow
// to zero), as a float8. PostgreSQL's float8 -> float4 cast raises in both cases.
extern "C" {
PG_FUNCTION_INFO_V1(flock_round_to_float4);
Datum flock_round_to_float4(PG_FUNCTION_ARGS) {
  const double v = PG_GETARG_FLOAT8(0);
  constexpr double kFloatOverflow = 0x1.ffffffp127;  // FLT_MAX + half an ulp: rounds to infinity
  if (v >= kFloatOverflow) PG_RETURN_FLOAT8(INFINITY);
  if (v <= -kFloatOverflow) PG_RETURN_FLOAT8(-INFINITY);
  PG_RETURN_FLOAT8(static_cast<double>(static_cast<float>(v)));
}
}
