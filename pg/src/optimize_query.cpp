// The optimizer's query rewrites (see optimize_query.hpp): one function per pass.
//
// derive_filters (flock.optimizer_derive_filters): prediction-predicate inversion. For a top-level
// conjunct of a WHERE or JOIN ... ON qual `flock.predict(m, x) OP c` (OP one of < <= > >=, either
// side, BETWEEN being two of them) or `flock.predict_label(m, x) = 'label'` / `IN (...)`, with m a
// constant and x a plain table's whole row (or a ROW(...) / float4 ARRAY[...] of its columns), the
// model's region for the comparison (optimize::prediction_region / label_region), within what the
// same AND's other conjuncts say about the columns, becomes a qual on the table's columns that
// every row satisfying the conjunct satisfies, ANDed next to it: PostgreSQL can then use an index,
// a partition bound or a cheaper filter before the model runs. The original conjunct stays, so the
// result is exactly the same. The rewritten query is kept only when PostgreSQL's planner estimates
// it cheaper than the original (both are planned; `always`: kept anyway; a scan with a prediction
// qual is costed with its quals short-circuited, prediction_cost.cpp, so quals that reject rows
// before the model lower the estimate); then the calls of the model name the version the filter
// was derived from.
// Plain PostgreSQL code; C++ only inside flock_guard.
#include "pg.hpp"  // must come first

extern "C" {
#include "access/stratnum.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "executor/spi.h"
#include "parser/parse_relation.h"
#include "catalog/pg_operator_d.h"
#include "catalog/pg_opfamily_d.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "optimizer/planner.h"
#include "parser/parsetree.h"
#include "rewrite/rewriteManip.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/ruleutils.h"
#include "utils/syscache.h"
}
#undef flock

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cache.hpp"
#include "call_state.hpp"
#include "flock/binding.hpp"
#include "flock/optimize.hpp"
#include "guard.hpp"
#include "optimize_call.hpp"
#include "optimize_inline.hpp"
#include "optimize_query.hpp"
#include "plan_model.hpp"

namespace flock::pg {

int optimizer_derive_filters = static_cast<int>(DeriveFilters::On);

namespace {

namespace opt = flock::optimize;

constexpr Oid kFloatBtreeFamily = 1970;  // float_ops (pg_opfamily.dat); PostgreSQL names no symbol for it
// Tables with fewer rows than this (pg_class.reltuples) get no derived filter unless `always`.
constexpr float4 kMinRowsToDerive = 1000;
// A column whose region is more ranges than this gets their hull (fewer index probes, still sound).
constexpr int kMaxRangesPerColumn = 8;

// pg_class.reltuples of a table: -1 when never analyzed or unknown.
float4 table_rows(Oid relid) {
  HeapTuple tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
  if (!HeapTupleIsValid(tuple)) return -1;
  float4 rows = reinterpret_cast<Form_pg_class>(GETSTRUCT(tuple))->reltuples;
  ReleaseSysCache(tuple);
  return rows;
}

// ---- Finding prediction calls

bool is_flock_function(Oid funcid, Oid flock_namespace, const char* name) {
  if (get_func_namespace(funcid) != flock_namespace) return false;
  char* fname = get_func_name(funcid);
  return fname && strcmp(fname, name) == 0;
}

struct CallSearch {
  Oid flock_namespace;
  bool found;
};

bool find_prediction_call(Node* node, CallSearch* search) {
  if (!node) return false;
  if (IsA(node, FuncExpr)) {
    Oid f = reinterpret_cast<FuncExpr*>(node)->funcid;
    if (is_flock_function(f, search->flock_namespace, "predict") ||
        is_flock_function(f, search->flock_namespace, "predict_label")) {
      search->found = true;
      return true;
    }
  }
  if (IsA(node, Query))
    return query_tree_walker(reinterpret_cast<Query*>(node),
                             reinterpret_cast<bool (*)()>(find_prediction_call), search, 0);
  return expression_tree_walker(node, reinterpret_cast<bool (*)()>(find_prediction_call), search);
}

// ---- derive_filters

bool float_column(Oid type) { return type == FLOAT4OID || type == FLOAT8OID; }

// What the conjunct asks of the model.
struct Candidate {
  FuncExpr* call;
  bool label;          // predict_label = / IN; else predict OP c
  opt::Comparison op;  // predict: prediction OP c
  double c;
  List* labels;  // label: the text constants (char*)
};

// A number constant as the double PostgreSQL compares with a float8: a Const of a float or integer
// type, or one cast to float8 by the parser (`predict(...) > 1` casts the int4 1). NaN: false (a
// comparison with NaN says nothing about the columns; left alone).
bool constant_double(Node* node, ParamListInfo params, double* out) {
  if (IsA(node, Param)) {
    // A parameter PostgreSQL itself treats as a constant for this plan (a custom plan's bound
    // value, PARAM_FLAG_CONST), as eval_const_expressions does; a generic plan has none.
    Param* p = reinterpret_cast<Param*>(node);
    if (p->paramkind != PARAM_EXTERN || !params || p->paramid <= 0 || p->paramid > params->numParams ||
        params->paramFetch)
      return false;
    ParamExternData* prm = &params->params[p->paramid - 1];
    if (!(prm->pflags & PARAM_FLAG_CONST) || prm->isnull || prm->ptype != p->paramtype ||
        p->paramtype != FLOAT8OID)
      return false;
    *out = DatumGetFloat8(prm->value);
    return !std::isnan(*out);
  }
  if (IsA(node, FuncExpr)) {
    FuncExpr* f = reinterpret_cast<FuncExpr*>(node);
    if (f->funcformat == COERCE_EXPLICIT_CALL || list_length(f->args) != 1) return false;
    Node* arg = static_cast<Node*>(linitial(f->args));
    if (!IsA(arg, Const) || reinterpret_cast<Const*>(arg)->constisnull) return false;
    Const* k = reinterpret_cast<Const*>(arg);
    switch (f->funcid) {
      case F_FLOAT8_INT2:
        *out = DatumGetInt16(k->constvalue);
        break;
      case F_FLOAT8_INT4:
        *out = DatumGetInt32(k->constvalue);
        break;
      case F_FLOAT8_INT8:
        *out = static_cast<double>(DatumGetInt64(k->constvalue));
        break;
      case F_FLOAT8_FLOAT4:
        *out = DatumGetFloat4(k->constvalue);
        break;
      case F_FLOAT8_NUMERIC:  // as numeric_float8 rounds it; out of range: the planner raises that itself
        *out = DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow, k->constvalue));
        break;
      default:
        return false;
    }
    return !std::isnan(*out);
  }
  if (!IsA(node, Const) || reinterpret_cast<Const*>(node)->constisnull) return false;
  Const* k = reinterpret_cast<Const*>(node);
  switch (k->consttype) {
    case FLOAT8OID:
      *out = DatumGetFloat8(k->constvalue);
      break;
    case FLOAT4OID:
      *out = DatumGetFloat4(k->constvalue);
      break;
    default:
      return false;
  }
  return !std::isnan(*out);
}

bool deterministic_collation(Oid collation) {
  return !OidIsValid(collation) || get_collation_isdeterministic(collation);
}

// `predict(m, x) OP c`, `c OP predict(m, x)`, `predict_label(m, x) = 'l'`, `= ANY ('{...}')`.
bool match_candidate(Node* conjunct, Oid flock_namespace, ParamListInfo params, Candidate* out) {
  *out = {nullptr, false, opt::Comparison::Greater, 0, NIL};
  if (IsA(conjunct, OpExpr)) {
    OpExpr* op = reinterpret_cast<OpExpr*>(conjunct);
    if (list_length(op->args) != 2) return false;
    Node* left = static_cast<Node*>(linitial(op->args));
    Node* right = static_cast<Node*>(lsecond(op->args));
    bool commuted = false;
    if (!IsA(left, FuncExpr)) {
      std::swap(left, right);
      commuted = true;
    }
    if (!IsA(left, FuncExpr)) return false;
    FuncExpr* call = reinterpret_cast<FuncExpr*>(left);
    if (list_length(call->args) != 2) return false;
    if (is_flock_function(call->funcid, flock_namespace, "predict")) {
      int strategy = get_op_opfamily_strategy(op->opno, kFloatBtreeFamily);
      double c;
      if (strategy == 0 || strategy == BTEqualStrategyNumber || !constant_double(right, params, &c))
        return false;
      if (commuted) strategy = BTMaxStrategyNumber + 1 - strategy;  // c < p is p > c
      switch (strategy) {
        case BTLessStrategyNumber:
          out->op = opt::Comparison::Less;
          break;
        case BTLessEqualStrategyNumber:
          out->op = opt::Comparison::LessOrEqual;
          break;
        case BTGreaterEqualStrategyNumber:
          out->op = opt::Comparison::GreaterOrEqual;
          break;
        default:
          out->op = opt::Comparison::Greater;
          break;
      }
      out->call = call;
      out->c = c;
      return true;
    }
    if (is_flock_function(call->funcid, flock_namespace, "predict_label")) {
      if (op->opno != TextEqualOperator || !deterministic_collation(op->inputcollid)) return false;
      if (!IsA(right, Const) || reinterpret_cast<Const*>(right)->constisnull ||
          reinterpret_cast<Const*>(right)->consttype != TEXTOID)
        return false;
      out->call = call;
      out->label = true;
      out->labels = list_make1(TextDatumGetCString(reinterpret_cast<Const*>(right)->constvalue));
      return true;
    }
    return false;
  }
  if (IsA(conjunct, ScalarArrayOpExpr)) {
    ScalarArrayOpExpr* sa = reinterpret_cast<ScalarArrayOpExpr*>(conjunct);
    if (!sa->useOr || sa->opno != TextEqualOperator || !deterministic_collation(sa->inputcollid))
      return false;
    Node* left = static_cast<Node*>(linitial(sa->args));
    Node* right = static_cast<Node*>(lsecond(sa->args));
    if (!IsA(left, FuncExpr) ||
        !is_flock_function(reinterpret_cast<FuncExpr*>(left)->funcid, flock_namespace, "predict_label") ||
        list_length(reinterpret_cast<FuncExpr*>(left)->args) != 2)
      return false;
    if (!IsA(right, Const) || reinterpret_cast<Const*>(right)->constisnull ||
        reinterpret_cast<Const*>(right)->consttype != TEXTARRAYOID)
      return false;
    ArrayType* arr = DatumGetArrayTypeP(reinterpret_cast<Const*>(right)->constvalue);
    Datum* elems;
    bool* nulls;
    int n;
    deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
    List* labels = NIL;
    for (int i = 0; i < n; ++i)
      if (!nulls[i]) labels = lappend(labels, TextDatumGetCString(elems[i]));  // NULL matches nothing
    out->call = reinterpret_cast<FuncExpr*>(left);
    out->label = true;
    out->labels = labels;
    return true;
  }
  return false;
}

// One value of the call's input as the executor binds it: a column of the record (a table's
// column, a ROW(...) field) or an element of a float4[].
struct InputField {
  const char* name;  // the record column's name (fields of ROW(...) are f1, f2, ...); arrays: unused
  bool dropped;
  Oid value_type;   // what the executor reads (float4 for an array element)
  int attno;        // the table column it is (1-based), 0: anything else
  Oid column_type;  // that column's type, typmod, collation and name
  int32 column_typmod;
  Oid column_collation;
  const char* column_name;
};

// The call's input: the table whose columns the derived quals are on, and its fields.
struct InputShape {
  Index varno;
  bool positional;  // a float4[]: features by position
  int nfields;
  InputField* fields;
};

bool plain_table(Query* q, int varno) {
  if (varno < 1 || varno > list_length(q->rtable)) return false;
  RangeTblEntry* rte = rt_fetch(varno, q->rtable);
  return rte->rtekind == RTE_RELATION &&
         (rte->relkind == RELKIND_RELATION || rte->relkind == RELKIND_PARTITIONED_TABLE ||
          rte->relkind == RELKIND_MATVIEW);
}

// A Var of a plain table of this query level, or a cast of one to float4 (an element of
// ARRAY[...]::float4[]): the column; else nullptr.
Var* field_column(Node* e, Query* q, bool allow_float4_cast) {
  if (allow_float4_cast && IsA(e, FuncExpr)) {
    FuncExpr* f = reinterpret_cast<FuncExpr*>(e);
    if (list_length(f->args) != 1 || f->funcformat == COERCE_EXPLICIT_CALL) return nullptr;
    switch (f->funcid) {
      case F_FLOAT4_FLOAT8:
      case F_FLOAT4_INT2:
      case F_FLOAT4_INT4:
      case F_FLOAT4_INT8:
        break;
      default:
        return nullptr;
    }
    e = static_cast<Node*>(linitial(f->args));
  }
  if (!IsA(e, Var)) return nullptr;
  Var* v = reinterpret_cast<Var*>(e);
  if (v->varlevelsup != 0 || v->varattno <= 0 || !plain_table(q, v->varno)) return nullptr;
  return v;
}

void set_column(InputField* f, Var* v, Query* q) {
  f->attno = v->varattno;
  f->column_type = v->vartype;
  f->column_typmod = v->vartypmod;
  f->column_collation = v->varcollid;
  f->column_name = get_attname(rt_fetch(v->varno, q->rtable)->relid, v->varattno, true);
  if (!f->column_name) f->attno = 0;
}

// The input of `call` when it is a table's whole row, a ROW(...) of expressions some of which are
// columns of one table, or an ARRAY[...] of float4 values some of which are columns of one table
// (or their casts to float4); false otherwise.
bool input_shape(FuncExpr* call, Query* q, InputShape* out) {
  Node* input = static_cast<Node*>(lsecond(call->args));
  *out = {0, false, 0, nullptr};
  if (IsA(input, Var)) {
    Var* v = reinterpret_cast<Var*>(input);
    if (v->varattno != 0 || v->varlevelsup != 0 || !plain_table(q, v->varno)) return false;
    RangeTblEntry* rte = rt_fetch(v->varno, q->rtable);
    if (v->vartype != get_rel_type_id(rte->relid)) return false;
    Relation rel = table_open(rte->relid, NoLock);  // parse analysis locked it
    TupleDesc desc = RelationGetDescr(rel);
    out->varno = static_cast<Index>(v->varno);
    out->nfields = desc->natts;
    out->fields = static_cast<InputField*>(palloc0(sizeof(InputField) * std::max(desc->natts, 1)));
    for (int a = 0; a < desc->natts; ++a) {
      Form_pg_attribute att = TupleDescAttr(desc, a);
      InputField& f = out->fields[a];
      f.name = pstrdup(NameStr(att->attname));
      f.dropped = att->attisdropped;
      f.value_type = att->atttypid;
      if (!att->attisdropped)
        f = {f.name,        false,          att->atttypid,     att->attnum,
             att->atttypid, att->atttypmod, att->attcollation, f.name};
    }
    table_close(rel, NoLock);
    return true;
  }
  List* args;
  bool positional;
  if (IsA(input, RowExpr)) {
    RowExpr* r = reinterpret_cast<RowExpr*>(input);
    if (r->row_typeid != RECORDOID || list_length(r->colnames) != list_length(r->args)) return false;
    args = r->args;
    positional = false;
  } else if (IsA(input, ArrayExpr)) {
    ArrayExpr* a = reinterpret_cast<ArrayExpr*>(input);
    if (a->multidims || a->element_typeid != FLOAT4OID) return false;
    args = a->elements;
    positional = true;
  } else {
    return false;
  }
  out->positional = positional;
  out->nfields = list_length(args);
  out->fields = static_cast<InputField*>(palloc0(sizeof(InputField) * std::max(out->nfields, 1)));
  for (int k = 0; k < out->nfields; ++k) {
    Node* e = static_cast<Node*>(list_nth(args, k));
    InputField& f = out->fields[k];
    f.name = positional ? "" : strVal(list_nth(reinterpret_cast<RowExpr*>(input)->colnames, k));
    f.value_type = exprType(e);
    Var* v = field_column(e, q, positional);
    if (!v) continue;
    if (out->varno == 0) out->varno = static_cast<Index>(v->varno);
    if (v->varno == static_cast<int>(out->varno)) set_column(&f, v, q);
  }
  return out->varno != 0;
}

// What another conjunct of the same AND says about a column of the table (`col OP const`,
// `col IS NOT NULL`): the rows the candidate keeps satisfy it too, so the region is derived within it.
struct ColumnFact {
  int attno;     // 1-based
  int strategy;  // BTLessStrategyNumber...BTGreaterStrategyNumber; 0: IS NOT NULL
  bool integer;  // an integer column (no NaN; strict bounds made closed)
  double value;
};

bool integer_type(Oid type) { return type == INT2OID || type == INT4OID || type == INT8OID; }

// `col OP const` / `const OP col` on a float column (float_ops) or an integer column (integer_ops,
// integer constants), or `col IS NOT NULL`. NaN constants, and integers past 2^53, say nothing here.
bool column_fact(Node* conjunct, Index varno, ColumnFact* out) {
  if (IsA(conjunct, NullTest)) {
    NullTest* t = reinterpret_cast<NullTest*>(conjunct);
    if (t->nulltesttype != IS_NOT_NULL || t->argisrow || !IsA(t->arg, Var)) return false;
    Var* v = reinterpret_cast<Var*>(t->arg);
    if (v->varno != static_cast<int>(varno) || v->varlevelsup != 0 || v->varattno <= 0) return false;
    *out = {v->varattno, 0, integer_type(v->vartype), 0};
    return true;
  }
  if (!IsA(conjunct, OpExpr) || list_length(reinterpret_cast<OpExpr*>(conjunct)->args) != 2) return false;
  OpExpr* op = reinterpret_cast<OpExpr*>(conjunct);
  Node* left = static_cast<Node*>(linitial(op->args));
  Node* right = static_cast<Node*>(lsecond(op->args));
  bool commuted = false;
  if (!IsA(left, Var)) {
    std::swap(left, right);
    commuted = true;
  }
  if (!IsA(left, Var) || !IsA(right, Const) || reinterpret_cast<Const*>(right)->constisnull) return false;
  Var* v = reinterpret_cast<Var*>(left);
  Const* k = reinterpret_cast<Const*>(right);
  if (v->varno != static_cast<int>(varno) || v->varlevelsup != 0 || v->varattno <= 0) return false;
  bool integer = integer_type(v->vartype);
  if (!integer && !float_column(v->vartype)) return false;
  int strategy = get_op_opfamily_strategy(op->opno, integer ? INTEGER_BTREE_FAM_OID : kFloatBtreeFamily);
  if (strategy == 0) return false;
  if (commuted) strategy = BTMaxStrategyNumber + 1 - strategy;
  double value;
  if (integer) {
    int64 i;
    switch (k->consttype) {
      case INT2OID:
        i = DatumGetInt16(k->constvalue);
        break;
      case INT4OID:
        i = DatumGetInt32(k->constvalue);
        break;
      case INT8OID:
        i = DatumGetInt64(k->constvalue);
        break;
      default:
        return false;
    }
    if (strategy == BTGreaterStrategyNumber) {  // x > i is x >= i + 1
      if (i == PG_INT64_MAX) return false;
      ++i;
      strategy = BTGreaterEqualStrategyNumber;
    } else if (strategy == BTLessStrategyNumber) {
      if (i == PG_INT64_MIN) return false;
      --i;
      strategy = BTLessEqualStrategyNumber;
    }
    const int64 exact = int64{1} << 53;
    if (i > exact || i < -exact) return false;
    value = static_cast<double>(i);
  } else {
    switch (k->consttype) {
      case FLOAT8OID:
        value = DatumGetFloat8(k->constvalue);
        break;
      case FLOAT4OID:
        value = DatumGetFloat4(k->constvalue);
        break;
      default:
        return false;
    }
    if (std::isnan(value)) return false;
  }
  *out = {v->varattno, strategy, integer, value};
  return true;
}

// The facts among `conjuncts` about columns of table `varno` (palloc'd array; *n its length).
ColumnFact* column_facts(List* conjuncts, Index varno, int* n) {
  auto* facts = static_cast<ColumnFact*>(palloc(sizeof(ColumnFact) * std::max(list_length(conjuncts), 1)));
  *n = 0;
  ListCell* lc;
  foreach (lc, conjuncts)
    if (column_fact(static_cast<Node*>(lfirst(lc)), varno, &facts[*n])) ++*n;
  return facts;
}

// A fact as the core's constraint, with PostgreSQL's NULL and NaN semantics: NULL fails every
// comparison; NaN sorts above every number, so `x > c`, `x >= c` and IS NOT NULL keep NaN (a
// missing value to the model) on a float column.
opt::FeatureConstraint fact_constraint(const ColumnFact& f) {
  opt::FeatureConstraint c;
  switch (f.strategy) {
    case BTLessStrategyNumber:
      c.values = opt::Interval::less_than(f.value);
      c.missing_allowed = false;
      break;
    case BTLessEqualStrategyNumber:
      c.values = opt::Interval::at_most(f.value);
      c.missing_allowed = false;
      break;
    case BTEqualStrategyNumber:
      c.values = opt::Interval::point(f.value);
      c.missing_allowed = false;
      break;
    case BTGreaterEqualStrategyNumber:
      c.values = opt::Interval::at_least(f.value);
      c.missing_allowed = !f.integer;
      break;
    case BTGreaterStrategyNumber:
      c.values = opt::Interval::greater_than(f.value);
      c.missing_allowed = !f.integer;
      break;
    default:
      c.missing_allowed = !f.integer;
      break;  // IS NOT NULL
  }
  return c;
}

// One column's derived ranges, as the core computed them (plain data).
struct ColumnRanges {
  int attno;  // 1-based column of the table
  Oid type;   // its type
  int32 typmod;
  Oid collation;
  bool missing;  // NULL (and NaN) may qualify
  int n;         // ranges
  double* lo;    // -inf: no lower bound
  double* hi;    // +inf: no upper bound
};

// What the core derived for one candidate, copied out of the guard (malloc'd; freed by the caller).
struct Derived {
  bool none;  // no row can qualify
  int ncolumns;
  ColumnRanges* columns;
  char* text;  // "(f00 >= 0.82) AND ..." (malloc'd)
  bool real_columns;  // every feature is a real (float4) table column
};

void free_derived(Derived* d) {
  for (int i = 0; i < d->ncolumns; ++i) {
    std::free(d->columns[i].lo);
    std::free(d->columns[i].hi);
  }
  std::free(d->columns);
  std::free(d->text);
  *d = {false, 0, nullptr, nullptr};
}

template <typename T>
T* malloc_array(size_t n) {
  auto* p = static_cast<T*>(std::calloc(std::max<size_t>(n, 1), sizeof(T)));
  if (!p) throw std::bad_alloc();
  return p;
}

char* malloc_string(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (!out) throw std::bad_alloc();
  std::memcpy(out, s.c_str(), s.size() + 1);
  return out;
}

// The table's column types that bind to a float / double input as bind.cpp reads them, and whether
// a derived range can be written for them (float and integer columns).
bool number_column(Oid type) {
  return type == FLOAT4OID || type == FLOAT8OID || type == INT2OID || type == INT4OID || type == INT8OID ||
         type == NUMERICOID || type == BOOLOID;
}
bool range_column(Oid type) {
  return type == FLOAT4OID || type == FLOAT8OID || type == INT2OID || type == INT4OID || type == INT8OID;
}
// Why a candidate was left alone (DEBUG1), or empty.
struct Why {
  char text[256];
};

// Regions already derived in this backend, by model (sha256), comparison and constraints: a query
// planned again (a custom plan per execution, the same statement sent again) does not pay for the
// region again; the core bounds the first computation (tens of milliseconds for thousands of
// trees). Content-addressed, so never stale; cleared when full. C++: call inside flock_guard.
constexpr size_t kRegionCacheEntries = 256;

std::string constraints_key(const opt::Constraints& constraints) {
  std::string key = constraints.exact_input_values ? "x" : "r";
  char buf[96];
  for (const auto& c : constraints.columns) {
    const auto& lo = c.values.lower();
    const auto& hi = c.values.upper();
    snprintf(buf, sizeof(buf), "|%c%a,%c%a,%d", lo ? (lo->closed ? '[' : '(') : '*', lo ? lo->value : 0.0,
             hi ? (hi->closed ? ']' : ')') : '*', hi ? hi->value : 0.0, c.missing_allowed ? 1 : 0);
    key += buf;
  }
  return key;
}

template <typename Compute>
std::optional<opt::PredictionRegion> cached_region(const char* sha256, const std::string& what,
                                                   const opt::Constraints& constraints, Compute&& compute) {
  static auto* cache = new std::unordered_map<std::string, std::optional<opt::PredictionRegion>>();
  std::string key = std::string(sha256) + "|" + what + "|" + constraints_key(constraints);
  auto it = cache->find(key);
  if (it != cache->end()) return it->second;
  std::optional<opt::PredictionRegion> region = compute();
  if (cache->size() >= kRegionCacheEntries) cache->clear();
  cache->emplace(std::move(key), region);
  return region;
}

// The region of `cand` over the fields of its input, through the core: binding (flock/binding.hpp,
// as bind.cpp binds a record, or by position for an array), then prediction_region or label_region.
bool derive_region(const Candidate* cand, const PlanModel* pm, const InputShape* shape,
                   const ColumnFact* facts, int nfacts, Derived* out, Why* why) {
  *out = {false, 0, nullptr, nullptr};
  const int nfields = shape->nfields;
  auto* columns =
      static_cast<flock::RecordColumn*>(palloc0(sizeof(flock::RecordColumn) * std::max(nfields, 1)));
  for (int a = 0; a < nfields; ++a)
    new (&columns[a]) flock::RecordColumn{shape->fields[a].name, shape->fields[a].dropped};
  int nlabels = list_length(cand->labels);
  const char** labels = static_cast<const char**>(palloc0(sizeof(char*) * std::max(nlabels, 1)));
  for (int i = 0; i < nlabels; ++i) labels[i] = static_cast<const char*>(list_nth(cand->labels, i));
  const InputField* fields = shape->fields;
  const flock::Model* model = pm->handle->model.get();
  bool out_of_memory = false;
  why->text[0] = '\0';
  flock_guard([&] {
    try {
      const flock::Signature& sig = model->signature();
      if (sig.inputs.size() != 1 ||
          (sig.inputs[0].type != flock::ElemType::Float && sig.inputs[0].type != flock::ElemType::Double)) {
        snprintf(why->text, sizeof(why->text), "not a single float or double input");
        return;
      }
      const int64_t width = sig.inputs[0].width;
      flock::RecordBinding b;
      if (shape->positional) {  // a float4[]: element k is feature k
        if (width != nfields) {
          snprintf(why->text, sizeof(why->text), "the array's length is not the model's width");
          return;
        }
        for (int k = 0; k < nfields; ++k) b.features.push_back(flock::FeatureColumn{0, k, {}, k});
      } else {
        b = flock::bind_record_columns(sig, {columns, static_cast<size_t>(nfields)});
      }
      if (b.width_mismatch || b.multi_value_input >= 0 || width <= 0 ||
          static_cast<int64_t>(b.features.size()) != width) {
        snprintf(why->text, sizeof(why->text), "the input does not bind to it");
        return;
      }
      const bool float_input = sig.inputs[0].type == flock::ElemType::Float;
      // Exact input values: every feature is a column the model receives unrounded.
      bool exact = true;
      bool real_columns = true;
      std::vector<int> column_of(static_cast<size_t>(width), -1);  // per feature: its field
      for (const auto& fc : b.features) {
        if (fc.column < 0 || fc.column >= nfields || fc.position < 0 || fc.position >= width) {
          snprintf(why->text, sizeof(why->text), "the input does not bind to it");
          return;
        }
        const InputField& field = fields[fc.column];
        if (!number_column(field.value_type)) {  // the executor raises its type error: leave that to it
          snprintf(why->text, sizeof(why->text), "a feature's value is not a number");
          return;
        }
        column_of[static_cast<size_t>(fc.position)] = fc.column;
        Oid type = field.attno > 0 && field.column_type == field.value_type ? field.value_type : InvalidOid;
        exact = exact && ((type == FLOAT4OID && float_input) || (type == FLOAT8OID && !float_input));
        real_columns = real_columns && field.attno > 0 && field.column_type == FLOAT4OID;
      }
      opt::Constraints constraints(static_cast<size_t>(width));
      constraints.exact_input_values = exact;
      for (int i = 0; i < nfacts; ++i) {
        for (int64_t f = 0; f < width; ++f) {
          if (fields[column_of[static_cast<size_t>(f)]].attno != facts[i].attno) continue;
          auto& column = constraints.columns[static_cast<size_t>(f)];
          column = column.intersect(fact_constraint(facts[i]));
        }
      }
      if (constraints.unsatisfiable()) {
        snprintf(why->text, sizeof(why->text), "the other quals admit no row (PostgreSQL sees that too)");
        return;
      }
      std::optional<opt::PredictionRegion> region;
      if (cand->label) {
        const auto& classes = sig.class_labels;
        if (sig.task != flock::Task::Classification || classes.size() != 2 || classes[0] == classes[1]) {
          snprintf(why->text, sizeof(why->text), "not a two-class classifier");
          return;
        }
        bool wanted[2] = {false, false};
        for (int i = 0; i < nlabels; ++i) {
          int k = classes[0] == labels[i] ? 0 : classes[1] == labels[i] ? 1 : -1;
          if (k < 0) {  // how would a label the model does not list compare? not ours to guess
            snprintf(why->text, sizeof(why->text), "a label that is not one of the model's classes");
            return;
          }
          wanted[k] = true;
        }
        if (wanted[0] && wanted[1]) {
          snprintf(why->text, sizeof(why->text), "every class qualifies");
          return;
        }
        if (!wanted[0] && !wanted[1]) {
          region = opt::PredictionRegion{true, {}};  // = ANY('{}'): no row qualifies
        } else {
          const int64_t k = wanted[1] ? 1 : 0;
          region = cached_region(pm->sha256, "L" + std::to_string(k), constraints,
                                 [&] { return opt::label_region(*model, k, constraints); });
        }
      } else {
        char what[64];
        snprintf(what, sizeof(what), "P%d %a", static_cast<int>(cand->op), cand->c);
        region = cached_region(pm->sha256, what, constraints, [&] {
          return opt::prediction_region(*model, cand->op, cand->c, constraints);
        });
      }
      if (!region) {
        snprintf(why->text, sizeof(why->text),
                 "no region for this model (only single-output tree ensembles)");
        return;
      }
      out->real_columns = real_columns;
      if (region->none) {
        out->none = true;
        out->text = malloc_string("false (no row can satisfy the prediction's comparison)");
        return;
      }
      if (region->columns_narrowed() == 0) {
        snprintf(why->text, sizeof(why->text), "the region narrows no column");
        return;
      }
      out->columns = malloc_array<ColumnRanges>(region->columns.size());
      std::vector<std::string> names(static_cast<size_t>(width));
      for (int64_t f = 0; f < width; ++f) {
        const InputField& field = fields[column_of[static_cast<size_t>(f)]];
        names[static_cast<size_t>(f)] = field.attno > 0 ? field.column_name : "";
      }
      std::string text;
      for (int64_t f = 0; f < width; ++f) {
        const opt::ColumnRegion& cr = region->columns[static_cast<size_t>(f)];
        const InputField& field = fields[column_of[static_cast<size_t>(f)]];
        // Only a column of the table, read as it is or cast to float4 (the region, not exact then,
        // holds for values that round into it).
        if (cr.all || field.attno <= 0 || !range_column(field.column_type)) continue;
        ColumnRanges& c = out->columns[out->ncolumns++];
        c = {field.attno,
             field.column_type,
             field.column_typmod,
             field.column_collation,
             cr.missing_allowed,
             0,
             nullptr,
             nullptr};
        size_t n = cr.intervals.size();
        size_t kept = n > static_cast<size_t>(kMaxRangesPerColumn) ? 1 : n;
        c.lo = malloc_array<double>(kept);
        c.hi = malloc_array<double>(kept);
        for (size_t i = 0; i < n; ++i) {
          const opt::Interval& iv = cr.intervals[i];
          double lo = iv.lower() ? iv.lower()->value : -std::numeric_limits<double>::infinity();
          double hi = iv.upper() ? iv.upper()->value : std::numeric_limits<double>::infinity();
          if (kept == 1 && n > 1) {  // the hull
            if (i == 0) c.lo[0] = lo;
            if (i == n - 1) c.hi[0] = hi;
            continue;
          }
          c.lo[i] = lo;
          c.hi[i] = hi;
        }
        c.n = static_cast<int>(kept);
        text += (text.empty() ? "" : " AND ") + cr.to_string(names[static_cast<size_t>(f)]);
      }
      if (out->ncolumns == 0) {
        snprintf(why->text, sizeof(why->text), "the region narrows no float or integer column");
        return;
      }
      out->text = malloc_string(text);
    } catch (const std::bad_alloc&) {
      out_of_memory = true;
    }
  });
  if (out_of_memory) snprintf(why->text, sizeof(why->text), "out of memory while deriving");
  if (why->text[0]) {
    free_derived(out);
    return false;
  }
  return true;
}

// ---- The derived qual as SQL expressions

Expr* compare(Var* column, int strategy, Oid opfamily, Const* value) {
  Oid opno = get_opfamily_member(opfamily, column->vartype, value->consttype, static_cast<int16>(strategy));
  if (!OidIsValid(opno)) return nullptr;
  auto* e = reinterpret_cast<OpExpr*>(make_opclause(opno, BOOLOID, false,
                                                    reinterpret_cast<Expr*>(copyObject(column)),
                                                    reinterpret_cast<Expr*>(value), InvalidOid, InvalidOid));
  set_opfuncid(e);
  return reinterpret_cast<Expr*>(e);
}

Const* float8_const(double v) {
  return makeConst(FLOAT8OID, -1, InvalidOid, sizeof(float8), Float8GetDatum(v), false, true);
}
Const* int8_const(int64 v) {
  return makeConst(INT8OID, -1, InvalidOid, sizeof(int64), Int64GetDatum(v), false, true);
}

Expr* null_test(Var* column, NullTestType type) {
  NullTest* t = makeNode(NullTest);
  t->arg = reinterpret_cast<Expr*>(copyObject(column));
  t->nulltesttype = type;
  t->argisrow = false;
  t->location = -1;
  return reinterpret_cast<Expr*>(t);
}

Expr* or_of(List* args) {
  if (args == NIL) return reinterpret_cast<Expr*>(makeBoolConst(false, false));
  if (list_length(args) == 1) return static_cast<Expr*>(linitial(args));
  return make_orclause(args);
}

// One column's ranges as `(col >= lo AND col <= hi) OR ... [OR col IS NULL OR col = 'NaN']`.
// Float columns: PostgreSQL orders NaN above every number, so a missing-allowed column also takes
// NaN; a range without an upper bound is closed by +Infinity when missing values are excluded
// (NaN >= lo holds). Integer columns compare with integers: ceil(lo), floor(hi), exactly the same
// rows. nullptr when an operator is missing (never for the built-in types).
Expr* column_qual(Index varno, const ColumnRanges& c) {
  Var* column =
      makeVar(static_cast<int>(varno), static_cast<AttrNumber>(c.attno), c.type, c.typmod, c.collation, 0);
  const bool is_float = float_column(c.type);
  const Oid family = is_float ? kFloatBtreeFamily : INTEGER_BTREE_FAM_OID;
  List* arms = NIL;
  constexpr double kInt8Limit = 9223372036854775807.0;  // 2^63
  for (int i = 0; i < c.n; ++i) {
    double lo = c.lo[i], hi = c.hi[i];
    List* bounds = NIL;
    if (is_float) {
      if (lo > -std::numeric_limits<double>::infinity())
        bounds = lappend(bounds, compare(column, BTGreaterEqualStrategyNumber, family, float8_const(lo)));
      if (hi < std::numeric_limits<double>::infinity() || !c.missing)
        bounds = lappend(bounds, compare(column, BTLessEqualStrategyNumber, family, float8_const(hi)));
    } else {
      double ilo = std::ceil(lo), ihi = std::floor(hi);
      if (ilo > ihi || ilo >= kInt8Limit || ihi < -kInt8Limit) continue;  // no integer in it
      if (ilo > -kInt8Limit)
        bounds = lappend(bounds, compare(column, BTGreaterEqualStrategyNumber, family,
                                         int8_const(static_cast<int64>(ilo))));
      if (ihi < kInt8Limit)
        bounds = lappend(
            bounds, compare(column, BTLessEqualStrategyNumber, family, int8_const(static_cast<int64>(ihi))));
      if (bounds == NIL) bounds = lappend(bounds, null_test(column, IS_NOT_NULL));
    }
    ListCell* lc;
    foreach (lc, bounds)
      if (!lfirst(lc)) return nullptr;
    arms = lappend(arms, list_length(bounds) == 1 ? linitial(bounds) : make_andclause(bounds));
  }
  if (c.missing) {
    arms = lappend(arms, null_test(column, IS_NULL));
    if (is_float) {
      Expr* nan = compare(column, BTEqualStrategyNumber, family,
                          float8_const(std::numeric_limits<double>::quiet_NaN()));
      if (!nan) return nullptr;
      arms = lappend(arms, nan);
    }
  }
  return or_of(arms);
}

// The derived conjuncts for one query level (added to `quals`' AND), with their notes.
struct Rewrite {
  QueryOptimizeContext* ctx;
  int derived;          // conjuncts added, over every level
  List* notes;          // char*: "t: (f00 >= 0.82)"
  List* verbose_notes;  // char*: the expressions
  List* pins;           // per derived conjunct from a model name: the name reference, then "name@version"
  bool reads_real_columns;  // a derived conjunct's model reads only real (float4) table columns
};

Expr* derive_for(Node* conjunct, List* conjuncts, Query* q, Rewrite* rw, char** note, char** verbose_note) {
  Candidate cand;
  if (!match_candidate(conjunct, rw->ctx->flock_namespace, rw->ctx->params, &cand)) return nullptr;
  const char* fn = cand.label ? "predict_label" : "predict";
  InputShape shape;
  if (!input_shape(cand.call, q, &shape)) {
    ereport(DEBUG1, (errmsg_internal(
                        "flock optimizer: no derived filter for a flock.%s call: its input is not a table's "
                        "whole row, nor a ROW(...) or float4 ARRAY[...] of its columns",
                        fn)));
    return nullptr;
  }
  Index varno = shape.varno;
  // A table PostgreSQL knows to be tiny scans in no time: not worth a plan-time resolution and
  // region (unless `always`). Never analyzed (reltuples < 0): unknown, derived.
  float4 reltuples = table_rows(rt_fetch(varno, q->rtable)->relid);
  if (optimizer_derive_filters != static_cast<int>(DeriveFilters::Always) && reltuples >= 0 &&
      reltuples < kMinRowsToDerive) {
    ereport(DEBUG1,
            (errmsg_internal("flock optimizer: no derived filter for a flock.%s call: its table has about "
                             "%.0f rows",
                             fn, reltuples)));
    return nullptr;
  }
  PlanModel* pm = plan_model(static_cast<Node*>(linitial(cand.call->args)));
  if (!pm) return nullptr;  // plan_model said why
  rw->ctx->used_plan_models = true;
  RangeTblEntry* rte = rt_fetch(varno, q->rtable);
  Derived d;
  Why why;
  int nfacts;
  ColumnFact* facts = column_facts(conjuncts, varno, &nfacts);
  if (!derive_region(&cand, pm, &shape, facts, nfacts, &d, &why)) {
    ereport(DEBUG1, (errmsg_internal("flock optimizer: no derived filter for %s: %s", pm->label, why.text)));
    return nullptr;
  }
  const char* relname = rte->eref ? rte->eref->aliasname : get_rel_name(rte->relid);
  Expr* qual = nullptr;
  if (d.none) {
    qual = reinterpret_cast<Expr*>(makeBoolConst(false, false));
  } else {
    List* per_column = NIL;
    for (int i = 0; i < d.ncolumns; ++i) {
      Expr* e = column_qual(varno, d.columns[i]);
      if (!e) {
        per_column = NIL;
        break;
      }
      per_column = lappend(per_column, e);
    }
    if (per_column != NIL)
      qual = list_length(per_column) == 1 ? static_cast<Expr*>(linitial(per_column))
                                          : make_andclause(per_column);
  }
  if (!qual) {
    ereport(DEBUG1, (errmsg_internal("flock optimizer: no derived filter for %s: no operator for a column",
                                     pm->label)));
    flock_guard([&] { free_derived(&d); });
    return nullptr;
  }
  *note = psprintf("%s: %s", relname, d.text);
  rw->reads_real_columns = rw->reads_real_columns || d.real_columns;
  Const* model = reinterpret_cast<Const*>(linitial(cand.call->args));
  if (model->consttype == TEXTOID)
    rw->pins = lappend(lappend(rw->pins, TextDatumGetCString(model->constvalue)), pstrdup(pm->label));
  if (plan_notes_wanted()) {
    // Deparsed over the table alone (varno 1 in a one-table context).
    Node* shown = reinterpret_cast<Node*>(copyObject(qual));
    ChangeVarNodes(shown, static_cast<int>(varno), 1, 0);
    List* dpctx = deparse_context_for(relname, rte->relid);
    *verbose_note = psprintf("%s: %s", relname, deparse_expression(shown, dpctx, true, false));
  } else {
    *verbose_note = nullptr;
  }
  flock_guard([&] { free_derived(&d); });
  return qual;
}

// Adds derived conjuncts to a qual (a WHERE or an ON clause): its top-level AND's members.
Node* derive_in_quals(Node* quals, Query* q, Rewrite* rw) {
  if (!quals) return quals;
  List* conjuncts = make_ands_implicit(reinterpret_cast<Expr*>(quals));
  List* added = NIL;
  ListCell* lc;
  foreach (lc, conjuncts) {
    char *note = nullptr, *verbose_note = nullptr;
    if (Expr* e = derive_for(static_cast<Node*>(lfirst(lc)), conjuncts, q, rw, &note, &verbose_note)) {
      added = lappend(added, e);
      rw->notes = lappend(rw->notes, note);
      rw->verbose_notes = lappend(rw->verbose_notes, verbose_note ? verbose_note : note);
    }
  }
  if (added == NIL) return quals;
  rw->derived += list_length(added);
  return reinterpret_cast<Node*>(make_ands_explicit(list_concat(conjuncts, added)));
}

void derive_in_jointree(Node* node, Query* q, Rewrite* rw) {
  if (!node) return;
  if (IsA(node, FromExpr)) {
    FromExpr* f = reinterpret_cast<FromExpr*>(node);
    ListCell* lc;
    foreach (lc, f->fromlist) derive_in_jointree(static_cast<Node*>(lfirst(lc)), q, rw);
    f->quals = derive_in_quals(f->quals, q, rw);
  } else if (IsA(node, JoinExpr)) {
    JoinExpr* j = reinterpret_cast<JoinExpr*>(node);
    derive_in_jointree(j->larg, q, rw);
    derive_in_jointree(j->rarg, q, rw);
    j->quals = derive_in_quals(j->quals, q, rw);  // an implied conjunct of the same ON: any join type
  }
}

void derive_in_query(Query* q, Rewrite* rw);

// The queries of sublinks (EXISTS, IN, scalar subqueries) in an expression of a query level.
bool derive_in_sublinks(Node* node, Rewrite* rw) {
  if (!node) return false;
  if (IsA(node, SubLink)) {
    SubLink* link = reinterpret_cast<SubLink*>(node);
    if (link->subselect && IsA(link->subselect, Query))
      derive_in_query(reinterpret_cast<Query*>(link->subselect), rw);
    return derive_in_sublinks(link->testexpr, rw);
  }
  if (IsA(node, Query)) return false;
  return expression_tree_walker(node, reinterpret_cast<bool (*)()>(derive_in_sublinks), rw);
}

void derive_in_query(Query* q, Rewrite* rw) {
  if (q->commandType != CMD_SELECT) return;
  derive_in_jointree(reinterpret_cast<Node*>(q->jointree), q, rw);
  derive_in_sublinks(reinterpret_cast<Node*>(q->jointree), rw);
  derive_in_sublinks(reinterpret_cast<Node*>(q->targetList), rw);
  derive_in_sublinks(q->havingQual, rw);
  ListCell* lc;
  foreach (lc, q->rtable) {
    RangeTblEntry* rte = static_cast<RangeTblEntry*>(lfirst(lc));
    if (rte->rtekind == RTE_SUBQUERY && rte->subquery) derive_in_query(rte->subquery, rw);
  }
  foreach (lc, q->cteList) {
    CommonTableExpr* cte = static_cast<CommonTableExpr*>(lfirst(lc));
    if (cte->ctequery && IsA(cte->ctequery, Query))
      derive_in_query(reinterpret_cast<Query*>(cte->ctequery), rw);
  }
}

// Every prediction call of the query whose model reference is a name a derived filter was computed
// for now names the version it was computed from ('m' and 'm@prod' become 'm@3'): the executor
// resolves the reference again, and a version registered or an alias moved between this planning
// and the executor's start must not meet filters derived from another version. (A cached plan is
// replanned after any catalog change: plan_depends_on_models.)
struct PinContext {
  List* pins;
  Oid flock_namespace;
};

bool pin_walker(Node* node, PinContext* pc) {
  if (!node) return false;
  if (IsA(node, Query))
    return query_tree_walker(reinterpret_cast<Query*>(node), reinterpret_cast<bool (*)()>(pin_walker), pc, 0);
  if (IsA(node, FuncExpr)) {
    FuncExpr* f = reinterpret_cast<FuncExpr*>(node);
    char* fname;
    if (list_length(f->args) == 2 && get_func_namespace(f->funcid) == pc->flock_namespace &&
        (fname = get_func_name(f->funcid)) && strncmp(fname, "predict", 7) == 0 &&
        IsA(linitial(f->args), Const)) {
      Const* k = static_cast<Const*>(linitial(f->args));
      if (k->consttype == TEXTOID && !k->constisnull) {
        char* ref = TextDatumGetCString(k->constvalue);
        for (int i = 0; i + 1 < list_length(pc->pins); i += 2) {
          if (strcmp(ref, static_cast<char*>(list_nth(pc->pins, i))) == 0) {
            k->constvalue = CStringGetTextDatum(static_cast<char*>(list_nth(pc->pins, i + 1)));
            break;
          }
        }
      }
    }
  }
  return expression_tree_walker(node, reinterpret_cast<bool (*)()>(pin_walker), pc);
}

void pin_versions(Query* query, List* pins, Oid flock_namespace) {
  if (pins == NIL) return;
  PinContext pc = {pins, flock_namespace};
  query_tree_walker(query, reinterpret_cast<bool (*)()>(pin_walker), &pc, 0);
}

// A derived filter for a model that reads only `real` columns is used when the planner estimates
// the query with it at most this fraction of the cost without it (derive_filters). Measured on 1M
// rows (bench/optimizer_filters.py, bench/optimizer q7): such filters estimated at 0.28-0.29 of
// the cost without them ran 3.7-5.2x faster; ones estimated at 0.76-0.79 ran at 0.69-0.79x. (On
// float8 columns, which the node deforms too, one estimated at 0.80 ran 1.6-2.6x faster.)
constexpr double kDerivedFilterCostRatio = 0.5;

double plan_cost(Query* query, QueryOptimizeContext* ctx) {
  PlannedStmt* stmt = standard_planner(static_cast<Query*>(copyObject(query)), ctx->query_string,
                                       ctx->cursor_options, ctx->params);
  return stmt->planTree->total_cost;
}

// Prediction-predicate inversion (see the top of the file).
Query* derive_filters(Query* parse, QueryOptimizeContext* ctx) {
  CallSearch search = {ctx->flock_namespace, false};
  query_tree_walker(parse, reinterpret_cast<bool (*)()>(find_prediction_call), &search, 0);
  if (!search.found) return parse;
  Query* rewritten = static_cast<Query*>(copyObject(parse));
  Rewrite rw = {ctx, 0, NIL, NIL, NIL, false};
  derive_in_query(rewritten, &rw);
  if (rw.derived == 0) return parse;
  // Used only when PostgreSQL's own estimate says the derived quals narrow the work. Where the
  // model reads only `real` columns, the batch node copies them straight from the pages of a scan
  // with no qual of its own (heap_reader.cpp): the derived quals take that away, and PostgreSQL
  // then deforms each row they are evaluated on and charges one operator for a first qual that
  // costs several; its estimate of the plan with them is low by more than its estimate of the plan
  // without. There the estimate must at least halve (kDerivedFilterCostRatio).
  bool always = optimizer_derive_filters == static_cast<int>(DeriveFilters::Always);
  double with = always ? 0 : plan_cost(rewritten, ctx);
  double without = always ? 0 : plan_cost(parse, ctx);
  double limit = rw.reads_real_columns ? kDerivedFilterCostRatio * without : without;
  if (!always && !(rw.reads_real_columns ? with <= limit : with < limit)) {
    ereport(DEBUG1,
            (errmsg_internal("flock optimizer: derived filter not used: estimated cost %.2f, %.2f without it%s",
                             with, without,
                             rw.reads_real_columns ? " (the model reads real columns: used at half or less)" : "")));
    return parse;
  }
  pin_versions(rewritten, rw.pins, ctx->flock_namespace);
  ListCell *ln, *lv;
  forboth(ln, rw.notes, lv, rw.verbose_notes)
      plan_note("Flock Derived Filter", static_cast<char*>(lfirst(ln)), static_cast<char*>(lfirst(lv)));
  return rewritten;
}


// ---- narrow_row_inputs (flock.optimizer_projection)

// The rtable indexes (relations and joins) on the nullable side of an outer join: their whole row
// may be NULL as a whole, which a ROW(...) of their columns is not.
void nullable_rels(Node* jt, bool nullable, Bitmapset** out) {
  if (!jt) return;
  if (IsA(jt, RangeTblRef)) {
    if (nullable) *out = bms_add_member(*out, reinterpret_cast<RangeTblRef*>(jt)->rtindex);
  } else if (IsA(jt, FromExpr)) {
    ListCell* lc;
    foreach (lc, reinterpret_cast<FromExpr*>(jt)->fromlist) nullable_rels(static_cast<Node*>(lfirst(lc)), nullable, out);
  } else if (IsA(jt, JoinExpr)) {
    JoinExpr* j = reinterpret_cast<JoinExpr*>(jt);
    if (nullable && j->rtindex > 0) *out = bms_add_member(*out, j->rtindex);
    bool full = j->jointype == JOIN_FULL;
    nullable_rels(j->larg, nullable || full || j->jointype == JOIN_RIGHT, out);
    nullable_rels(j->rarg, nullable || full || j->jointype == JOIN_LEFT, out);
  }
}

struct Narrow {
  QueryOptimizeContext* ctx;
  Query* query;
  Bitmapset* nullable;  // nullable_rels of the query
};

void narrow_in_query(Query* q, QueryOptimizeContext* ctx);

bool is_prediction_function(Oid funcid, Oid flock_namespace) {
  static const char* const kNames[] = {"predict", "predict_proba", "predict_label", "predict_tensor"};
  for (const char* name : kNames)
    if (is_flock_function(funcid, flock_namespace, name)) return true;
  return false;
}

bool convertible_number(Oid type) {
  return type == INT2OID || type == INT4OID || type == INT8OID || type == FLOAT4OID || type == FLOAT8OID ||
         type == BOOLOID;
}

// flock.predict*(m, s) with s the whole row of a subquery or join (not on an outer join's nullable
// side): s becomes ROW(...) of the same column names and types where the columns the model never
// reads (features it does not read, columns bound to no feature) are typed NULLs. Binding by name
// is unchanged, the prediction too (inputs_read: any value of an unread input gives the same
// outputs, and the model takes NULLs there), and the columns, once read by nothing else, let
// PostgreSQL remove a LEFT JOIN that only fed them. Returns the new input, or nullptr.
Node* narrowed_input(FuncExpr* call, Narrow* nw) {
  Node* input = static_cast<Node*>(lsecond(call->args));
  if (!IsA(input, Var)) return nullptr;
  Var* v = reinterpret_cast<Var*>(input);
  Query* q = nw->query;
  // A subquery's or join's whole row is a RECORD; a view's (a subquery once rewritten) is of the
  // view's composite type. Either way a ROW(...) with the same column names binds the same.
  if (v->varattno != 0 || v->varlevelsup != 0 || v->varno < 1 || v->varno > list_length(q->rtable) ||
      (v->vartype != RECORDOID && get_typtype(v->vartype) != TYPTYPE_COMPOSITE))
    return nullptr;
  RangeTblEntry* rte = rt_fetch(v->varno, q->rtable);
  if (rte->rtekind != RTE_SUBQUERY && rte->rtekind != RTE_JOIN) return nullptr;
  if (bms_is_member(v->varno, nw->nullable)) {
    ereport(DEBUG1, (errmsg_internal("flock optimizer: row input left whole: on the nullable side of an outer join")));
    return nullptr;
  }
  List* names = NIL;
  List* vars = NIL;
  expandRTE(rte, v->varno, 0, -1, false, &names, &vars);
  const int ncols = list_length(names);
  if (ncols == 0) return nullptr;
  PlanModel* pm = plan_model(static_cast<Node*>(linitial(call->args)));
  if (!pm) return nullptr;
  nw->ctx->used_plan_models = true;
  // Per column: bound to a read feature (keep), to one not read or to none (NULL); plain data.
  const char** cnames = static_cast<const char**>(palloc(sizeof(char*) * ncols));
  bool* keep = static_cast<bool*>(palloc(sizeof(bool) * ncols));
  int k = 0;
  ListCell* lc;
  foreach (lc, names) cnames[k++] = strVal(lfirst(lc));
  char why[160] = "";
  bool ok = false, out_of_memory = false;
  std::shared_ptr<const flock::Model> model = pm->handle->model;
  flock_guard([&] {
    try {
      const flock::Signature& sig = model->signature();
      std::vector<flock::RecordColumn> columns;
      for (int c = 0; c < ncols; ++c) columns.push_back({cnames[c], false});
      if (sig.inputs.size() != 1 || sig.inputs[0].width < 0) {
        snprintf(why, sizeof(why), "not a single vector input");
        return;
      }
      flock::RecordBinding binding = flock::bind_record_columns(sig, columns);
      if (!binding.by_name || binding.width_mismatch || binding.multi_value_input >= 0 ||
          static_cast<int64_t>(binding.features.size()) != sig.inputs[0].width) {
        snprintf(why, sizeof(why), "the row does not bind by name");
        return;
      }
      if (!null_allowed(sig, 0)) {
        snprintf(why, sizeof(why), "the model takes no NULL inputs");
        return;
      }
      opt::InputsRead read = opt::inputs_read(*model);
      if (read.all || read.read.size() != binding.features.size()) {
        snprintf(why, sizeof(why), "the model reads every input");
        return;
      }
      for (int c = 0; c < ncols; ++c) keep[c] = false;
      for (size_t f = 0; f < binding.features.size(); ++f) {
        int c = binding.features[f].column;
        if (c < 0) {
          snprintf(why, sizeof(why), "a feature has no column");
          return;
        }
        if (read.read[f]) keep[c] = true;
      }
      ok = true;
    } catch (const std::bad_alloc&) {
      out_of_memory = true;
    }
  });
  if (out_of_memory) snprintf(why, sizeof(why), "out of memory");
  if (!ok) {
    ereport(DEBUG1, (errmsg_internal("flock optimizer: row input of %s left whole: %s", pm->label, why)));
    return nullptr;
  }
  // Columns replaced must be numbers, as converting them can raise no error the NULL would hide.
  int dropped = 0;
  k = 0;
  foreach (lc, vars) {
    Var* cv = static_cast<Var*>(lfirst(lc));
    if (!keep[k] && !convertible_number(cv->vartype)) keep[k] = true;
    dropped += !keep[k];
    k++;
  }
  if (dropped == 0) {
    ereport(DEBUG1, (errmsg_internal("flock optimizer: row input of %s left whole: it reads every column", pm->label)));
    return nullptr;
  }
  if (plan_model_audited(static_cast<Node*>(linitial(call->args)), pm)) {
    ereport(DEBUG1, (errmsg_internal("flock optimizer: row input of %s left whole: audit records carry every input",
                                     pm->label)));
    return nullptr;
  }
  RowExpr* row = makeNode(RowExpr);
  k = 0;
  foreach (lc, vars) {
    Var* cv = static_cast<Var*>(lfirst(lc));
    row->args = lappend(row->args, keep[k] ? static_cast<void*>(copyObject(cv))
                                           : static_cast<void*>(makeNullConst(cv->vartype, cv->vartypmod, cv->varcollid)));
    k++;
  }
  // A view's row keeps the view's row type: the batch node then reads its columns from the scan
  // (batch_plan.cpp, append_row_expr_columns) rather than forming a row value per row.
  row->row_typeid = v->vartype;
  row->row_format = COERCE_IMPLICIT_CAST;
  row->colnames = static_cast<List*>(copyObject(names));
  row->location = -1;
  char* text = psprintf("%s: %d of %d columns of %s", pm->label, ncols - dropped, ncols,
                        rte->eref && rte->eref->aliasname ? rte->eref->aliasname : "a row");
  plan_note("Flock Narrowed Input", text);
  ereport(DEBUG1, (errmsg_internal("flock optimizer: row input narrowed: %s", text)));
  return reinterpret_cast<Node*>(row);
}

Node* narrow_mutator(Node* node, Narrow* nw) {
  if (!node) return nullptr;
  if (IsA(node, Query)) {
    narrow_in_query(reinterpret_cast<Query*>(node), nw->ctx);
    return node;
  }
  if (IsA(node, FuncExpr)) {
    FuncExpr* f = reinterpret_cast<FuncExpr*>(node);
    if (list_length(f->args) == 2 && is_prediction_function(f->funcid, nw->ctx->flock_namespace)) {
      if (Node* narrowed = narrowed_input(f, nw)) {
        FuncExpr* copy = static_cast<FuncExpr*>(copyObject(f));
        lsecond(copy->args) = narrowed;
        return reinterpret_cast<Node*>(copy);
      }
    }
  }
  return expression_tree_mutator(node, reinterpret_cast<Node* (*)()>(narrow_mutator), nw);
}

void narrow_in_query(Query* q, QueryOptimizeContext* ctx) {
  CHECK_FOR_INTERRUPTS();
  if (q->groupClause != NIL || q->groupingSets != NIL || q->hasWindowFuncs) {
    // A row grouped or partitioned by is one value there; its columns are not: a ROW(...) of them
    // past the grouping would not plan. Its subqueries are still looked at.
    ereport(DEBUG1, (errmsg_internal("flock optimizer: row inputs left whole in a query with GROUP BY or windows")));
    ListCell* lc;
    foreach (lc, q->rtable) {
      RangeTblEntry* rte = static_cast<RangeTblEntry*>(lfirst(lc));
      if (rte->rtekind == RTE_SUBQUERY && rte->subquery) narrow_in_query(rte->subquery, ctx);
    }
    return;
  }
  Narrow nw = {ctx, q, nullptr};
  nullable_rels(reinterpret_cast<Node*>(q->jointree), false, &nw.nullable);
  query_tree_mutator(q, reinterpret_cast<Node* (*)()>(narrow_mutator), &nw, QTW_DONT_COPY_QUERY);
}

bool find_any_prediction_call(Node* node, CallSearch* search) {
  if (!node) return false;
  if (IsA(node, FuncExpr) && is_prediction_function(reinterpret_cast<FuncExpr*>(node)->funcid, search->flock_namespace)) {
    search->found = true;
    return true;
  }
  if (IsA(node, Query))
    return query_tree_walker(reinterpret_cast<Query*>(node), reinterpret_cast<bool (*)()>(find_any_prediction_call),
                             search, 0);
  return expression_tree_walker(node, reinterpret_cast<bool (*)()>(find_any_prediction_call), search);
}

// Model-projection pushdown of row inputs (see narrowed_input).
Query* narrow_row_inputs(Query* parse, QueryOptimizeContext* ctx) {
  CallSearch search = {ctx->flock_namespace, false};
  query_tree_walker(parse, reinterpret_cast<bool (*)()>(find_any_prediction_call), &search, 0);
  if (!search.found) return parse;
  narrow_in_query(parse, ctx);
  return parse;
}

}  // namespace

Query* optimize_query(Query* parse, QueryOptimizeContext* ctx) {
  if (!optimizer_enabled || parse->commandType != CMD_SELECT) return parse;
  ctx->flock_namespace = get_namespace_oid("flock", true);
  if (!OidIsValid(ctx->flock_namespace)) return parse;
  if (optimizer_projection) parse = narrow_row_inputs(parse, ctx);
  if (optimizer_derive_filters != static_cast<int>(DeriveFilters::Off)) parse = derive_filters(parse, ctx);
  // After deriving filters (which read the prediction calls it replaces).
  parse = inline_models(parse, ctx);
  return parse;
}

}  // namespace flock::pg
