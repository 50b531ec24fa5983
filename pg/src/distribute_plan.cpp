// Aggregates of predictions over a distributed table, planned as partial aggregates on the shards
// (issue 18, flock.distribute_aggregates). PostgreSQL 15's postgres_fdw ships no partial
// aggregate, so
//   SELECT g, sum(flock.predict('m', d)) FROM d WHERE ... GROUP BY g
// over a table whose partitions are all foreign is planned instead as
//   SELECT g1 AS g, sum(a1) FROM flock.on_shards('d', 'SELECT g AS g1, sum(flock.predict(%1$s, d)) AS a1
//                                                    FROM d WHERE ... GROUP BY 1', 'm@N')
//        AS r(g1 ..., a1 ...) GROUP BY g1
// from the query's own expressions deparsed by ruleutils; every shard scores its rows (batched,
// pinned to the version the planner resolved) and sends one row per group. Only sum, count, min
// and max, no DISTINCT / FILTER / ORDER BY inside them, GROUP BY plain columns, no HAVING, ORDER
// BY, LIMIT, window, sublink or parameter. Anything else, or any failure, leaves the query to
// PostgreSQL (DEBUG1 says why); never raises. EXPLAIN: "Flock On Shards: <the shards' query>".
#include "pg.hpp"  // must come first

extern "C" {
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_aggregate.h"
#include "catalog/pg_class.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_proc.h"
#include "fmgr.h"
#include "foreign/foreign.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "optimizer/planner.h"
#include "parser/analyze.h"
#include "parser/parse_func.h"
#include "parser/parsetree.h"
#include "rewrite/rewriteHandler.h"
#include "rewrite/rewriteManip.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
#include "utils/resowner.h"
#include "utils/rls.h"
#include "utils/ruleutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
}
#undef flock

#include "distribute_plan.hpp"
#include "plan_model.hpp"

namespace flock::pg {

bool distribute_aggregates = true;

namespace {

enum class Partial { Sum, Count, CountStar, Min, Max };

struct Build {
  Oid flock_namespace;
  List* refs;  // pinned refs ('name@N'), in placeholder order
  bool has_prediction;
  bool ok;
};

void skip(const char* why) {
  ereport(DEBUG1, (errmsg_internal("flock: aggregates not planned on shards: %s", why)));
}

// Every partition of relid is a foreign table (one level); their servers' names go to *servers.
bool all_partitions_foreign(Oid relid, List** servers) {
  List* parts = find_inheritance_children(relid, NoLock);
  if (parts == NIL) return false;
  ListCell* lc;
  foreach (lc, parts) {
    if (get_rel_relkind(lfirst_oid(lc)) != RELKIND_FOREIGN_TABLE) return false;
    *servers = lappend(*servers, GetForeignServer(GetForeignTable(lfirst_oid(lc))->serverid)->servername);
  }
  return true;
}

bool aggregate_kind(Aggref* a, Partial* out) {
  if (a->aggdistinct || a->aggorder || a->aggfilter || a->aggdirectargs || a->aggkind != AGGKIND_NORMAL ||
      a->agglevelsup != 0)
    return false;
  if (get_func_namespace(a->aggfnoid) != PG_CATALOG_NAMESPACE) return false;
  const char* name = get_func_name(a->aggfnoid);
  if (!name) return false;
  if (strcmp(name, "count") == 0)
    *out = a->aggstar ? Partial::CountStar : Partial::Count;
  else if (strcmp(name, "sum") == 0)
    *out = Partial::Sum;
  else if (strcmp(name, "min") == 0)
    *out = Partial::Min;
  else if (strcmp(name, "max") == 0)
    *out = Partial::Max;
  else
    return false;
  return *out == Partial::CountStar || list_length(a->args) == 1;
}

// Prediction calls get their ref replaced by a placeholder constant 'flock_ref_<k>' (the version
// resolved now); anything not deparsable the same on a shard (parameters, sublinks) stops it.
Node* pin_refs(Node* node, Build* b) {
  if (!node || !b->ok) return node;
  if (IsA(node, Param) || IsA(node, SubLink) || IsA(node, SubPlan)) {
    b->ok = false;
    return node;
  }
  if (IsA(node, FuncExpr)) {
    FuncExpr* f = reinterpret_cast<FuncExpr*>(node);
    const char* name =
        get_func_namespace(f->funcid) == b->flock_namespace ? get_func_name(f->funcid) : nullptr;
    if (name && strncmp(name, "predict", 7) == 0 && !strstr(name, "pinned") && list_length(f->args) == 2) {
      Node* ref = static_cast<Node*>(linitial(f->args));
      if (!IsA(ref, Const) || reinterpret_cast<Const*>(ref)->consttype != TEXTOID ||
          reinterpret_cast<Const*>(ref)->constisnull) {
        b->ok = false;
        return node;
      }
      PlanModel* pm = plan_model(ref);
      if (!pm || strncmp(pm->label, "model ", 6) == 0) {
        b->ok = false;
        return node;
      }
      int k = 0, i = 1;
      ListCell* lc;
      foreach (lc, b->refs) {
        if (strcmp(static_cast<char*>(lfirst(lc)), pm->label) == 0) k = i;
        i++;
      }
      if (k == 0) {
        b->refs = lappend(b->refs, pstrdup(pm->label));
        k = list_length(b->refs);
      }
      b->has_prediction = true;
      FuncExpr* copy = reinterpret_cast<FuncExpr*>(copyObject(f));
      linitial(copy->args) = makeConst(TEXTOID, -1, DEFAULT_COLLATION_OID, -1,
                                       CStringGetTextDatum(psprintf("flock_ref_%d", k)), false, false);
      lsecond(copy->args) = pin_refs(static_cast<Node*>(lsecond(copy->args)), b);
      return reinterpret_cast<Node*>(copy);
    }
  }
  return expression_tree_mutator(node, reinterpret_cast<Node* (*)()>(pin_refs), b);
}

// sql with each placeholder 'flock_ref_<k>'::text replaced by the k-th of `with`.
char* replace_refs(const char* sql, List* with) {
  char* out = pstrdup(sql);
  for (int k = 1; k <= list_length(with); ++k) {
    char* token = psprintf("'flock_ref_%d'::text", k);
    const char* repl = static_cast<const char*>(list_nth(with, k - 1));
    StringInfoData next;
    initStringInfo(&next);
    for (const char* p = out; *p;) {
      if (strncmp(p, token, strlen(token)) == 0) {
        appendStringInfoString(&next, repl);
        p += strlen(token);
      } else {
        appendStringInfoChar(&next, *p++);
      }
    }
    out = next.data;
  }
  return out;
}

// The shards' query text for format(): '%' doubled, each placeholder made %<k>$s.
char* for_format(const char* sql, int nrefs) {
  StringInfoData buf;
  initStringInfo(&buf);
  for (const char* p = sql; *p; ++p) {
    if (*p == '%') appendStringInfoChar(&buf, '%');
    appendStringInfoChar(&buf, *p);
  }
  List* placeholders = NIL;
  for (int k = 1; k <= nrefs; ++k) placeholders = lappend(placeholders, psprintf("%%%d$s", k));
  return replace_refs(buf.data, placeholders);
}

// The same text with the refs themselves, for EXPLAIN.
char* with_refs(const char* sql, List* refs) {
  List* literals = NIL;
  ListCell* lc;
  foreach (lc, refs) literals = lappend(literals, quote_literal_cstr(static_cast<char*>(lfirst(lc))));
  return replace_refs(sql, literals);
}

struct Replan {
  List* servers;  // the partitions' foreign servers: each must be a Flock shard
  const char* sql;
  int options;
  ParamListInfo params;
  List* types;  // the original's output types, in order
  PlannedStmt* stmt;
};

// Inside SPI: every server is a shard flock.add_shard added, and dblink will connect to it for the
// current user (dblink refuses a non-superuser whose connection uses no password, where
// postgres_fdw may be allowed: password_required 'false'). Raises otherwise.
void check_shards(List* servers) {
  const bool super = superuser();
  ListCell* ls;
  foreach (ls, servers) {
    Oid argtypes[1] = {TEXTOID};
    Datum args[1] = {CStringGetTextDatum(static_cast<char*>(lfirst(ls)))};
    if (SPI_execute_with_args("SELECT 1 FROM flock.shards WHERE name = $1", 1, argtypes, args, nullptr, true,
                              1) != SPI_OK_SELECT ||
        SPI_processed != 1)
      elog(ERROR, "server \"%s\" is not a shard added by flock.add_shard", static_cast<char*>(lfirst(ls)));
    if (!super &&
        (SPI_execute_with_args("SELECT 1 FROM pg_user_mappings u, unnest(u.umoptions) o WHERE u.srvname = $1 "
                               "AND u.usename IN (current_user::text, 'public') AND o LIKE 'password=%'",
                               1, argtypes, args, nullptr, true, 1) != SPI_OK_SELECT ||
         SPI_processed != 1))
      elog(ERROR, "no password in the user mapping for server \"%s\" (dblink needs one for a non-superuser)",
           static_cast<char*>(lfirst(ls)));
  }
}

void replan(void* arg) {
  auto* r = static_cast<Replan*>(arg);
  // A partition on a server flock.add_shard did not add (plain postgres_fdw, maybe without flock)
  // is left to PostgreSQL.
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
  check_shards(r->servers);
  SPI_finish();
  List* raw = pg_parse_query(r->sql);
  if (list_length(raw) != 1) elog(ERROR, "not one statement");
  Query* q = parse_analyze_fixedparams(linitial_node(RawStmt, raw), r->sql, nullptr, 0, nullptr);
  List* rewritten = QueryRewrite(q);
  if (list_length(rewritten) != 1) elog(ERROR, "rewritten into several statements");
  q = linitial_node(Query, rewritten);
  ListCell* lc;
  ListCell* lt = list_head(r->types);
  foreach (lc, q->targetList) {
    TargetEntry* te = static_cast<TargetEntry*>(lfirst(lc));
    if (te->resjunk) continue;
    if (!lt || exprType(reinterpret_cast<Node*>(te->expr)) != lfirst_oid(lt))
      elog(ERROR, "result types differ");
    lt = lnext(r->types, lt);
  }
  if (lt) elog(ERROR, "result types differ");
  r->stmt = planner(q, r->sql, r->options, r->params);
}

}  // namespace

PlannedStmt* plan_on_shards(Query* parse, int cursor_options, ParamListInfo params) {
  if (!distribute_aggregates || parse->commandType != CMD_SELECT || parse->utilityStmt || !parse->hasAggs)
    return nullptr;
  if (parse->hasWindowFuncs || parse->hasTargetSRFs || parse->hasSubLinks || parse->hasDistinctOn ||
      parse->distinctClause || parse->havingQual || parse->sortClause || parse->limitCount ||
      parse->limitOffset || parse->setOperations || parse->cteList || parse->rowMarks ||
      parse->groupingSets || parse->hasForUpdate || list_length(parse->rtable) != 1 ||
      list_length(parse->jointree->fromlist) != 1 || !IsA(linitial(parse->jointree->fromlist), RangeTblRef))
    return nullptr;
  RangeTblEntry* rte = linitial_node(RangeTblEntry, parse->rtable);
  List* servers = NIL;
  if (rte->rtekind != RTE_RELATION || !rte->inh || get_rel_relkind(rte->relid) != RELKIND_PARTITIONED_TABLE ||
      !all_partitions_foreign(rte->relid, &servers))
    return nullptr;
  Oid ns = get_namespace_oid("flock", true);
  if (!OidIsValid(ns) || !OidIsValid(get_relname_relid("shards", ns))) return nullptr;
  if (OidIsValid(rte->checkAsUser) && rte->checkAsUser != GetUserId()) {
    skip("a table read as another role (a view's owner), whose user mappings postgres_fdw would use");
    return nullptr;
  }
  if (check_enable_rls(rte->relid, InvalidOid, true) == RLS_ENABLED) {
    skip("row-level security on the table (its policies would not apply on the shards)");
    return nullptr;
  }
  if (XactReadOnly || RecoveryInProgress()) {
    skip("a read-only transaction (flock.on_shards creates a temporary view)");
    return nullptr;
  }
  if (IsTransactionBlock() || GetCurrentCommandId(false) != FirstCommandId) {
    skip(
        "a transaction block, or a transaction that has written (the shards answer on connections of "
        "their own, which would not see its snapshot or its writes)");
    return nullptr;
  }

  Build b = {ns, NIL, false, true};
  Node* quals = pin_refs(parse->jointree->quals, &b);
  const char* alias = rte->eref->aliasname;
  List* dpcontext = deparse_context_for(alias, rte->relid);
  StringInfoData shard_select, columns, final_select, group_by, final_group;
  initStringInfo(&shard_select);
  initStringInfo(&columns);
  initStringInfo(&final_select);
  initStringInfo(&group_by);
  initStringInfo(&final_group);
  List* types = NIL;
  int ncol = 0;
  ListCell* lc;
  foreach (lc, parse->targetList) {
    TargetEntry* te = static_cast<TargetEntry*>(lfirst(lc));
    if (te->resjunk) {
      skip("a hidden output column");
      return nullptr;
    }
    Node* e = reinterpret_cast<Node*>(te->expr);
    ncol++;
    const char* sep = ncol > 1 ? ", " : "";
    types = lappend_oid(types, exprType(e));
    const char* out_name = quote_identifier(te->resname ? te->resname : psprintf("column%d", ncol));
    char* col = psprintf("c%d", ncol);
    if (IsA(e, Aggref)) {
      Aggref* a = reinterpret_cast<Aggref*>(e);
      Partial kind;
      if (!aggregate_kind(a, &kind)) {
        skip("an aggregate other than sum, count, min or max, or one with DISTINCT, ORDER BY or FILTER");
        return nullptr;
      }
      char* arg = nullptr;
      if (kind != Partial::CountStar) {
        Node* x = pin_refs(reinterpret_cast<Node*>(linitial_node(TargetEntry, a->args)->expr), &b);
        if (!b.ok) break;
        arg = deparse_expression(x, dpcontext, false, true);
      }
      const char* fn = kind == Partial::Sum   ? "sum"
                       : kind == Partial::Min ? "min"
                       : kind == Partial::Max ? "max"
                                              : "count";
      appendStringInfo(&shard_select, "%s%s(%s) AS %s", sep, fn, arg ? arg : "*", col);
      appendStringInfo(&columns, "%s%s %s", sep, col, format_type_with_typemod(a->aggtype, -1));
      // Counts and sums add up; the sum of integer partials is numeric: cast back to the type.
      const char* final_fn = kind == Partial::Min ? "min" : kind == Partial::Max ? "max" : "sum";
      appendStringInfo(&final_select, "%s%s(r.%s)::%s AS %s", sep, final_fn, col,
                       format_type_with_typemod(a->aggtype, -1), out_name);
    } else {
      if (!IsA(e, Var) || te->ressortgroupref == 0) {
        skip("an output column that is neither an aggregate nor a grouped column");
        return nullptr;
      }
      appendStringInfo(&shard_select, "%s%s AS %s", sep, deparse_expression(e, dpcontext, false, true), col);
      appendStringInfo(&columns, "%s%s %s", sep, col, format_type_with_typemod(exprType(e), exprTypmod(e)));
      appendStringInfo(&final_select, "%sr.%s AS %s", sep, col, out_name);
      appendStringInfo(&group_by, "%s%d", group_by.len ? ", " : "", ncol);
      appendStringInfo(&final_group, "%sr.%s", final_group.len ? ", " : "", col);
    }
  }
  if (!b.ok || !b.has_prediction) {
    if (!b.ok) skip("a parameter, sublink or model reference that is not a resolvable constant");
    return nullptr;
  }
  // Every GROUP BY item must be an output column (so the shards group alike).
  int grouped_outputs = 0;
  foreach (lc, parse->targetList)
    if (static_cast<TargetEntry*>(lfirst(lc))->ressortgroupref) grouped_outputs++;
  if (grouped_outputs != list_length(parse->groupClause)) {
    skip("a GROUP BY item that is not an output column");
    return nullptr;
  }

  char* shard_sql = psprintf(
      "SELECT %s FROM %s %s%s%s%s%s", shard_select.data,
      quote_qualified_identifier(get_namespace_name(get_rel_namespace(rte->relid)), get_rel_name(rte->relid)),
      quote_identifier(alias), quals ? " WHERE " : "",
      quals ? deparse_expression(quals, dpcontext, false, true) : "", group_by.len ? " GROUP BY " : "",
      group_by.data);
  StringInfoData refs;
  initStringInfo(&refs);
  foreach (lc, b.refs) appendStringInfo(&refs, ", %s", quote_literal_cstr(static_cast<char*>(lfirst(lc))));
  char* final_sql = psprintf(
      "SELECT %s FROM flock.on_shards(%u::regclass, %s%s) AS r(%s) WHERE flock._shards_see_statement()%s%s",
      final_select.data, rte->relid, quote_literal_cstr(for_format(shard_sql, list_length(b.refs))),
      refs.data, columns.data, final_group.len ? " GROUP BY " : "", final_group.data);
  Replan r = {servers, final_sql, cursor_options, params, types, nullptr};
  if (!plan_in_subtransaction(replan, &r, "aggregates not planned on shards")) return nullptr;
  plan_depends_on_models(r.stmt);
  if (!list_member_oid(r.stmt->relationOids, rte->relid))
    r.stmt->relationOids = lappend_oid(r.stmt->relationOids, rte->relid);
  if (plan_notes_wanted()) plan_note("Flock On Shards", with_refs(shard_sql, b.refs));
  return r.stmt;
}

// ---------------------------------------------------------------------------------------------
// Predictions over a distributed table's rows, scored on the shards (flock.distribute_predictions).
// A query level that reads one distributed table and computes predictions of its rows outside
// WHERE (select list, ORDER BY, aggregates the rewrite above did not take, HAVING), e.g.
//   SELECT id, flock.predict('m', d) AS p FROM d WHERE bmi > 0 ORDER BY p DESC LIMIT 10
// keeps its shape; only its scan changes: the table becomes
//   (SELECT r.* FROM flock._send_to_shards('d', 'SELECT id AS c1, flock.predict_pinned(
//        ''m@N#sha256''::flock.pinned, d.*) AS c2 FROM public.d d WHERE bmi > 0') AS s,
//      LATERAL dblink_get_result(s.conn) AS r(c1 int, c2 float8) WHERE flock._shards_see_statement())
// and the level reads the columns and the predictions from it. The WHERE clause moves to the shards
// whole; everything else (ORDER BY, LIMIT, GROUP BY, aggregates, window functions) runs here on the
// rows the shards send, exactly as it would on the table's rows. The table stays in the range table
// (not joined), so its privileges are checked and its lock taken as before. Taken only when it is
// provably the same query (distribute_level's checks, shippable(), collect()); DEBUG1 says why
// not. EXPLAIN: "Flock Remote SQL: <the shards' query>".
// ---------------------------------------------------------------------------------------------

bool distribute_predictions = true;

namespace {

void skip_scan(const char* why) {
  ereport(DEBUG1, (errmsg_internal("flock: predictions not planned on shards: %s", why)));
}

// A prediction of the rows by a model named by a constant: flock.predict / predict_proba /
// predict_label / predict_tensor (ref text, input), not the pinned forms (they ship as they are).
bool is_prediction(Node* node, Oid flock_namespace) {
  if (!node || !IsA(node, FuncExpr)) return false;
  FuncExpr* f = reinterpret_cast<FuncExpr*>(node);
  if (list_length(f->args) != 2 || get_func_namespace(f->funcid) != flock_namespace) return false;
  const char* name = get_func_name(f->funcid);
  if (!name || strncmp(name, "predict", 7) != 0 || strstr(name, "pinned")) return false;
  Node* ref = static_cast<Node*>(linitial(f->args));
  return IsA(ref, Const) && reinterpret_cast<Const*>(ref)->consttype == TEXTOID &&
         !reinterpret_cast<Const*>(ref)->constisnull;
}

struct Shippable {
  Oid flock_namespace;
  int rti;  // the table's range table index in the level
};

bool immutable_builtin(Oid funcid) {
  return funcid < FirstNormalObjectId && func_volatile(funcid) == PROVOLATILE_IMMUTABLE;
}

// Whether the expression computes the same on a shard as here: columns of the level's one table,
// constants and immutable built-in functions, and no collation-dependent operation (a shard's
// database may sort text differently). Whole rows only as a prediction's input (bound by name).
bool shippable(Node* node, Shippable* s) {
  if (!node) return true;
  switch (nodeTag(node)) {
    case T_Var: {
      Var* v = reinterpret_cast<Var*>(node);
      return v->varlevelsup == 0 && v->varno == s->rti && v->varattno > 0;
    }
    case T_Const:
      return reinterpret_cast<Const*>(node)->consttype < FirstNormalObjectId;
    case T_FuncExpr: {
      FuncExpr* f = reinterpret_cast<FuncExpr*>(node);
      if (is_prediction(node, s->flock_namespace)) {
        Node* input = static_cast<Node*>(lsecond(f->args));
        if (IsA(input, Var) && reinterpret_cast<Var*>(input)->varattno == 0)
          return reinterpret_cast<Var*>(input)->varlevelsup == 0 &&
                 reinterpret_cast<Var*>(input)->varno == s->rti;
        return shippable(input, s);
      }
      if (!immutable_builtin(f->funcid) || OidIsValid(f->inputcollid)) return false;
      break;
    }
    case T_OpExpr:
    case T_DistinctExpr:
    case T_NullIfExpr: {
      OpExpr* o = reinterpret_cast<OpExpr*>(node);
      set_opfuncid(o);
      if (!immutable_builtin(o->opfuncid) || OidIsValid(o->inputcollid)) return false;
      break;
    }
    case T_ScalarArrayOpExpr: {
      ScalarArrayOpExpr* o = reinterpret_cast<ScalarArrayOpExpr*>(node);
      set_sa_opfuncid(o);
      if (!immutable_builtin(o->opfuncid) || OidIsValid(o->inputcollid) || OidIsValid(o->hashfuncid))
        return false;
      break;
    }
    case T_RelabelType:
    case T_ArrayExpr:
    case T_NullTest:
    case T_BooleanTest:
    case T_BoolExpr:
    case T_CoalesceExpr:
    case T_List:
      break;
    default:
      return false;  // anything else stays here: not provably the same on a shard
  }
  return !expression_tree_walker(node, reinterpret_cast<bool (*)()>(+[](Node* n, void* c) {
                                   return !shippable(n, static_cast<Shippable*>(c));
                                 }),
                                 s);
}

struct Hoist {
  Oid flock_namespace;
  int rti;
  List* calls;      // the distinct predictions computed on the shards (FuncExpr), in column order
  const char* why;  // set when the level cannot be taken
};

// Collects the predictions outside WHERE. Each must be computed for every row that passes WHERE,
// as on the shards: one under CASE, COALESCE, AND / OR or an aggregate's FILTER may be skipped
// for some rows here (and could raise for them there), so the level is then left alone. Columns
// may appear anywhere; a whole row or system column only as a prediction's input.
bool collect(Node* node, Hoist* h, bool conditional) {
  if (!node) return false;
  if (is_prediction(node, h->flock_namespace)) {
    FuncExpr* f = reinterpret_cast<FuncExpr*>(node);
    Shippable s = {h->flock_namespace, h->rti};
    if (conditional) {
      h->why = "a prediction evaluated only for some rows (CASE, COALESCE, AND / OR, FILTER)";
      return true;
    }
    if (!shippable(node, &s)) {
      h->why = "a prediction whose input is not provably computed the same on a shard";
      return true;
    }
    if (!list_member(h->calls, f)) h->calls = lappend(h->calls, f);
    return false;
  }
  if (IsA(node, Var)) {
    Var* v = reinterpret_cast<Var*>(node);
    if (v->varlevelsup != 0 || v->varno != h->rti || v->varattno <= 0) {
      h->why = "a whole row, a system column or an outer reference outside a prediction";
      return true;
    }
    return false;
  }
  if (IsA(node, Param) || IsA(node, SubLink) || IsA(node, SubPlan)) return false;  // stay here: no rows read
  if (IsA(node, CaseExpr) || IsA(node, CoalesceExpr) || IsA(node, BoolExpr) || IsA(node, MinMaxExpr) ||
      IsA(node, NullIfExpr))
    conditional = true;
  if (IsA(node, Aggref)) {
    Aggref* a = reinterpret_cast<Aggref*>(node);
    if (collect(reinterpret_cast<Node*>(a->args), h, conditional) ||
        collect(reinterpret_cast<Node*>(a->aggdirectargs), h, conditional))
      return true;
    return collect(reinterpret_cast<Node*>(a->aggfilter), h, true);
  }
  if (IsA(node, WindowFunc)) {
    WindowFunc* w = reinterpret_cast<WindowFunc*>(node);
    return collect(reinterpret_cast<Node*>(w->args), h, conditional) ||
           collect(reinterpret_cast<Node*>(w->aggfilter), h, true);
  }
  struct Walk {
    Hoist* h;
    bool conditional;
  } walk = {h, conditional};
  return expression_tree_walker(node, reinterpret_cast<bool (*)()>(+[](Node* n, void* c) {
                                  auto* w = static_cast<Walk*>(c);
                                  return collect(n, w->h, w->conditional);
                                }),
                                &walk);
}

struct PinCalls {
  Oid flock_namespace;
  Oid pinned_type;
  bool ok;
};

// Every prediction as its pinned form, of the version its ref resolves to now ('name@N#sha256'):
// on a shard it scores with exactly those bytes, or fails naming the node (at executor start when
// batched, before any row is read). Clears ok when a call has no pinned form or cannot be pinned.
Node* pin_calls(Node* node, PinCalls* p) {
  if (!node || !p->ok) return node;
  if (IsA(node, Param) || IsA(node, SubLink) || IsA(node, SubPlan)) {
    p->ok = false;
    return node;
  }
  if (is_prediction(node, p->flock_namespace)) {
    FuncExpr* f = reinterpret_cast<FuncExpr*>(node);
    PlanModel* pm = plan_model(static_cast<Node*>(linitial(f->args)));
    Oid* declared;
    int nargs;
    get_func_signature(f->funcid, &declared, &nargs);
    Oid args[2] = {p->pinned_type, nargs == 2 ? declared[1] : InvalidOid};
    char* pinned_name = psprintf("%s_pinned", get_func_name(f->funcid));
    Oid pinned = LookupFuncName(list_make2(makeString(const_cast<char*>("flock")), makeString(pinned_name)),
                                2, args, true);
    if (!pm || strncmp(pm->label, "model ", 6) == 0 || !OidIsValid(pinned)) {
      p->ok = false;
      return node;
    }
    Const* pin =
        makeConst(p->pinned_type, -1, InvalidOid, -1,
                  PointerGetDatum(cstring_to_text(psprintf("%s#%s", pm->label, pm->sha256))), false, false);
    FuncExpr* out = reinterpret_cast<FuncExpr*>(copyObject(f));
    out->funcid = pinned;
    out->inputcollid = InvalidOid;
    out->args = list_make2(pin, pin_calls(static_cast<Node*>(lsecond(f->args)), p));
    return reinterpret_cast<Node*>(out);
  }
  return expression_tree_mutator(node, reinterpret_cast<Node* (*)()>(pin_calls), p);
}

struct Remap {
  Oid flock_namespace;
  int rti;        // the table's range table index
  List* calls;    // hoisted predictions: column k + ncolumns
  List* columns;  // attnos of the table's columns shipped, in column order
  int varno;      // the subquery's range table index
};

int position_of(List* list, int value) {
  int i = 0;
  ListCell* lc;
  foreach (lc, list) {
    if (lfirst_int(lc) == value) return i;
    i++;
  }
  return -1;
}

Node* remap(Node* node, Remap* r) {
  if (!node) return nullptr;
  if (IsA(node, FuncExpr) && is_prediction(node, r->flock_namespace)) {
    int k = 0;
    ListCell* lc;
    foreach (lc, r->calls) {
      k++;
      if (equal(lfirst(lc), node)) {
        FuncExpr* f = reinterpret_cast<FuncExpr*>(node);
        return reinterpret_cast<Node*>(makeVar(r->varno, static_cast<AttrNumber>(list_length(r->columns) + k),
                                               f->funcresulttype, -1, f->funccollid, 0));
      }
    }
  }
  if (IsA(node, Var)) {
    Var* v = reinterpret_cast<Var*>(node);
    if (v->varlevelsup == 0 && v->varno == r->rti) {
      Var* out = reinterpret_cast<Var*>(copyObject(v));
      out->varno = out->varnosyn = r->varno;
      out->varattno = out->varattnosyn = static_cast<AttrNumber>(position_of(r->columns, v->varattno) + 1);
      return reinterpret_cast<Node*>(out);
    }
    return node;
  }
  return expression_tree_mutator(node, reinterpret_cast<Node* (*)()>(remap), r);
}

struct Columns {
  Oid flock_namespace;
  int rti;
  List* calls;
  List* attnos;
};

// The table's columns the level reads outside the predictions computed on the shards.
bool columns_used(Node* node, Columns* c) {
  if (!node) return false;
  if (is_prediction(node, c->flock_namespace) && list_member(c->calls, node)) return false;
  if (IsA(node, Var)) {
    Var* v = reinterpret_cast<Var*>(node);
    if (v->varno == c->rti && v->varlevelsup == 0 && !list_member_int(c->attnos, v->varattno))
      c->attnos = lappend_int(c->attnos, v->varattno);
    return false;
  }
  return expression_tree_walker(node, reinterpret_cast<bool (*)()>(columns_used), c);
}

struct ScanReplan {
  List* servers;
  const char* sql_head;  // the query: head, dblink's schema, tail
  const char* sql_tail;
  List* types;  // expected output types and typmods and collations, in order
  List* typmods;
  List* collations;
  Query* query;  // out
};

void scan_replan(void* arg) {
  auto* r = static_cast<ScanReplan*>(arg);
  MemoryContext caller = CurrentMemoryContext;  // SPI_finish frees what SPI's context holds
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
  check_shards(r->servers);
  if (SPI_execute("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'dblink'", true,
                  1) != SPI_OK_SELECT ||
      SPI_processed != 1)
    elog(ERROR, "no dblink extension here");
  // regnamespace's output is already a quoted identifier.
  const char* sql = MemoryContextStrdup(
      caller, psprintf("%s%s%s", r->sql_head, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1),
                       r->sql_tail));
  SPI_finish();
  List* raw = pg_parse_query(sql);
  if (list_length(raw) != 1) elog(ERROR, "not one statement");
  Query* q = parse_analyze_fixedparams(linitial_node(RawStmt, raw), sql, nullptr, 0, nullptr);
  List* rewritten = QueryRewrite(q);
  if (list_length(rewritten) != 1) elog(ERROR, "rewritten into several statements");
  q = linitial_node(Query, rewritten);
  if (list_length(q->targetList) != list_length(r->types)) elog(ERROR, "result columns differ");
  ListCell *lc, *lt, *lm, *lk;
  forfour(lc, q->targetList, lt, r->types, lm, r->typmods, lk, r->collations) {
    Node* e = reinterpret_cast<Node*>(static_cast<TargetEntry*>(lfirst(lc))->expr);
    if (exprType(e) != lfirst_oid(lt) || exprTypmod(e) != lfirst_int(lm) ||
        exprCollation(e) != lfirst_oid(lk))
      elog(ERROR, "result types differ");
  }
  r->query = q;
}

// One query level (its own copy) with its scan moved to the shards, or nullptr (DEBUG1 says why,
// when the level reads a distributed table and predicts).
Query* distribute_level(Query* parse, Oid ns, bool* used_models) {
  // One table joined; other range table entries only as a view's (PostgreSQL 15 keeps a view's
  // OLD and NEW entries in its query), never read: a Var of them stops collect().
  if (parse->commandType != CMD_SELECT || parse->utilityStmt || !parse->jointree ||
      list_length(parse->jointree->fromlist) != 1 || !IsA(linitial(parse->jointree->fromlist), RangeTblRef))
    return nullptr;
  const int rti = linitial_node(RangeTblRef, parse->jointree->fromlist)->rtindex;
  ListCell* le;
  foreach (le, parse->rtable)
    if (static_cast<RangeTblEntry*>(lfirst(le))->rtekind != RTE_RELATION) return nullptr;
  RangeTblEntry* rte = rt_fetch(rti, parse->rtable);
  List* servers = NIL;
  if (rte->rtekind != RTE_RELATION || !rte->inh || get_rel_relkind(rte->relid) != RELKIND_PARTITIONED_TABLE ||
      !all_partitions_foreign(rte->relid, &servers))
    return nullptr;
  Hoist h = {ns, rti, NIL, nullptr};
  if (collect(reinterpret_cast<Node*>(parse->targetList), &h, false) ||
      collect(parse->havingQual, &h, false)) {
    if (h.calls != NIL || h.why) skip_scan(h.why);
    return nullptr;
  }
  if (h.calls == NIL) return nullptr;  // nothing to score outside WHERE: pin_remote's case, or none
  if (parse->hasSubLinks || parse->hasForUpdate || parse->rowMarks || parse->setOperations ||
      parse->cteList || parse->hasTargetSRFs || rte->tablesample) {
    skip_scan("a sublink, FOR UPDATE, set operation, WITH, set-returning function or TABLESAMPLE");
    return nullptr;
  }
  if (OidIsValid(rte->checkAsUser) && rte->checkAsUser != GetUserId()) {
    skip_scan("a table read as another role (a view's owner), whose user mappings postgres_fdw would use");
    return nullptr;
  }
  if (check_enable_rls(rte->relid, InvalidOid, true) == RLS_ENABLED) {
    skip_scan("row-level security on the table (its policies would not apply on the shards)");
    return nullptr;
  }
  if (pg_class_aclcheck(rte->relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK) {
    skip_scan(
        "no SELECT privilege on the whole table (flock._send_to_shards checks it, as flock.on_shards does)");
    return nullptr;
  }
  if (IsTransactionBlock() || GetCurrentCommandId(false) != FirstCommandId) {
    skip_scan(
        "a transaction block, or a transaction that has written (the shards answer on connections of "
        "their own, which would not see its snapshot or its writes)");
    return nullptr;
  }
  // WHERE moves to the shards whole: a condition that cannot leaves the level here.
  Shippable s = {ns, rti};
  if (!shippable(parse->jointree->quals, &s)) {
    skip_scan("a WHERE condition that is not provably computed the same on a shard");
    return nullptr;
  }
  ListCell* lc;
  foreach (lc, h.calls) {
    PlanModel* pm = plan_model(static_cast<Node*>(linitial(static_cast<FuncExpr*>(lfirst(lc))->args)));
    if (!pm ||
        plan_model_audited(static_cast<Node*>(linitial(static_cast<FuncExpr*>(lfirst(lc))->args)), pm)) {
      skip_scan(
          "a model that is not resolvable here, or whose predictions are audited (the records would be "
          "written on the shards)");
      return nullptr;
    }
  }

  // The columns the level reads, with the predictions taken out.
  Columns used = {ns, rti, h.calls, NIL};
  columns_used(reinterpret_cast<Node*>(parse->targetList), &used);
  columns_used(parse->havingQual, &used);
  List* columns = used.attnos;
  const int sub_index = list_length(parse->rtable) + 1;  // the subquery's, appended
  Remap rm = {ns, rti, h.calls, columns, sub_index};

  PinCalls pc = {
      ns, GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid, CStringGetDatum("pinned"), ObjectIdGetDatum(ns)),
      true};
  const char* alias = rte->eref->aliasname;
  List* dpcontext = deparse_context_for(alias, rte->relid);
  StringInfoData shard_select, coldefs;
  initStringInfo(&shard_select);
  initStringInfo(&coldefs);
  List *types = NIL, *typmods = NIL, *collations = NIL;
  int ncol = 0;
  foreach (lc, columns) {
    AttrNumber attno = static_cast<AttrNumber>(lfirst_int(lc));
    Oid type, collation;
    int32 typmod;
    get_atttypetypmodcoll(rte->relid, attno, &type, &typmod, &collation);
    Var* v = makeVar(1, attno, type, typmod, collation, 0);
    ncol++;
    appendStringInfo(&shard_select, "%s%s AS c%d", ncol > 1 ? ", " : "",
                     deparse_expression(reinterpret_cast<Node*>(v), dpcontext, false, false), ncol);
    appendStringInfo(&coldefs, "%sc%d %s", ncol > 1 ? ", " : "", ncol,
                     format_type_with_typemod(type, typmod));
    if (OidIsValid(collation) && collation != get_typcollation(type))
      appendStringInfo(&coldefs, " COLLATE %s", generate_collation_name(collation));
    types = lappend_oid(types, type);
    typmods = lappend_int(typmods, typmod);
    collations = lappend_oid(collations, collation);
  }
  foreach (lc, h.calls) {
    FuncExpr* f = static_cast<FuncExpr*>(lfirst(lc));
    Node* pinned = pin_calls(reinterpret_cast<Node*>(copyObject(f)), &pc);
    ChangeVarNodes(pinned, rti, 1, 0);  // deparse_context_for knows the table as 1
    if (!pc.ok) {
      skip_scan("a prediction without a pinned form (predict_tensor) or whose model is not resolvable here");
      return nullptr;
    }
    ncol++;
    appendStringInfo(&shard_select, "%s%s AS c%d", ncol > 1 ? ", " : "",
                     deparse_expression(pinned, dpcontext, false, false), ncol);
    appendStringInfo(&coldefs, "%sc%d %s", ncol > 1 ? ", " : "", ncol,
                     format_type_with_typemod(f->funcresulttype, -1));
    types = lappend_oid(types, f->funcresulttype);
    typmods = lappend_int(typmods, -1);
    collations = lappend_oid(collations, f->funccollid);
  }
  Node* quals = pin_calls(reinterpret_cast<Node*>(copyObject(parse->jointree->quals)), &pc);
  if (quals) ChangeVarNodes(quals, rti, 1, 0);
  if (!pc.ok) {
    skip_scan(
        "a prediction in WHERE without a pinned form (predict_tensor) or whose model is not resolvable here");
    return nullptr;
  }
  *used_models = true;
  char* shard_sql = psprintf(
      "SELECT %s FROM %s %s%s%s", shard_select.data,
      quote_qualified_identifier(get_namespace_name(get_rel_namespace(rte->relid)), get_rel_name(rte->relid)),
      quote_identifier(alias), quals ? " WHERE " : "",
      quals ? deparse_expression(quals, dpcontext, false, false) : "");
  // Each shard's rows go straight from dblink_get_result to the plan (flock.on_shards would copy
  // them through PL/pgSQL: measured at 2-3 us a row, most of the coordinator's cost).
  // (dblink's schema is filled in by scan_replan.)
  char* sub_sql_head = psprintf("SELECT r.* FROM flock._send_to_shards(%u::regclass, %s) AS s, LATERAL ",
                                rte->relid, quote_literal_cstr(for_format(shard_sql, 0)));
  char* sub_sql_tail =
      psprintf(".dblink_get_result(s.conn) AS r(%s) WHERE flock._shards_see_statement()", coldefs.data);
  ScanReplan r = {servers, sub_sql_head, sub_sql_tail, types, typmods, collations, nullptr};
  if (!plan_in_subtransaction(scan_replan, &r, "predictions not planned on shards")) return nullptr;

  // The level, reading the subquery (range table entry 2) instead of the table, which stays as
  // entry 1 for its privileges and lock.
  Query* out = reinterpret_cast<Query*>(copyObject(parse));
  RangeTblEntry* sub = makeNode(RangeTblEntry);
  sub->rtekind = RTE_SUBQUERY;
  sub->subquery = r.query;
  List* colnames = NIL;
  for (int k = 1; k <= ncol; ++k) colnames = lappend(colnames, makeString(psprintf("c%d", k)));
  sub->eref = makeAlias(alias, colnames);
  sub->inFromCl = true;
  out->rtable = lappend(out->rtable, sub);
  rt_fetch(rti, out->rtable)->inh = false;  // not scanned: only checked and locked
  linitial_node(RangeTblRef, out->jointree->fromlist)->rtindex = sub_index;
  out->jointree->quals = nullptr;
  out->targetList = reinterpret_cast<List*>(remap(reinterpret_cast<Node*>(out->targetList), &rm));
  out->havingQual = remap(out->havingQual, &rm);
  if (plan_notes_wanted()) plan_note("Flock Remote SQL", shard_sql);
  return out;
}

Query* distribute_tree(Query* parse, Oid ns, bool* used_models) {
  // Subqueries in FROM first (INSERT ... SELECT's SELECT is one), then the level itself.
  ListCell* lc;
  foreach (lc, parse->rtable) {
    RangeTblEntry* rte = static_cast<RangeTblEntry*>(lfirst(lc));
    if (rte->rtekind == RTE_SUBQUERY && rte->subquery)
      rte->subquery = distribute_tree(rte->subquery, ns, used_models);
  }
  Query* out = distribute_level(parse, ns, used_models);
  return out ? out : parse;
}

}  // namespace

Query* distribute_scans(Query* parse, bool* used_models) {
  if (!distribute_predictions || parse->utilityStmt) return parse;
  Oid ns = get_namespace_oid("flock", true);
  if (!OidIsValid(ns) || !OidIsValid(get_relname_relid("shards", ns))) return parse;
  return distribute_tree(parse, ns, used_models);
}

}  // namespace flock::pg

extern "C" {
PG_FUNCTION_INFO_V1(flock_shards_see_statement);
}

// flock._shards_see_statement(): a one-time filter of every query Flock plans onto the shards.
// The shards answer on connections of their own, which see what is committed, not what this
// transaction wrote before the statement. The planner leaves such statements alone; a plan it made
// earlier and reused later in the transaction (a prepared statement, a function's cached plan) is
// stopped here rather than answered from data the transaction has since changed.
Datum flock_shards_see_statement(PG_FUNCTION_ARGS) {
  const bool wrote = ActiveSnapshotSet() && GetActiveSnapshot()->curcid != FirstCommandId;
  if (wrote || (IsTransactionBlock() && IsolationUsesXactSnapshot()))
    ereport(
        ERROR,
        (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
         errmsg("a plan that scores on the shards cannot run after this transaction has written, or in a "
                "repeatable read transaction block"),
         errdetail("The shards answer on connections of their own, which would not see this transaction's "
                   "writes or snapshot."),
         errhint("Run the statement in a transaction of its own, or SET flock.distribute_predictions = off "
                 "and flock.distribute_aggregates = off before preparing it.")));
  PG_RETURN_BOOL(true);
}
