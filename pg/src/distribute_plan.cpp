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
#include "access/xact.h"
#include "catalog/pg_aggregate.h"
#include "catalog/pg_class.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_namespace.h"
#include "foreign/foreign.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "optimizer/planner.h"
#include "parser/analyze.h"
#include "rewrite/rewriteHandler.h"
#include "tcop/tcopprot.h"
#include "utils/resowner.h"
#include "utils/rls.h"
#include "utils/ruleutils.h"
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

void replan(void* arg) {
  auto* r = static_cast<Replan*>(arg);
  // A partition on a server flock.add_shard did not add (plain postgres_fdw, maybe without flock)
  // is left to PostgreSQL.
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
  ListCell* ls;
  foreach (ls, r->servers) {
    Oid argtypes[1] = {TEXTOID};
    Datum args[1] = {CStringGetTextDatum(static_cast<char*>(lfirst(ls)))};
    if (SPI_execute_with_args("SELECT 1 FROM flock.shards WHERE name = $1", 1, argtypes, args, nullptr, true,
                              1) != SPI_OK_SELECT ||
        SPI_processed != 1)
      elog(ERROR, "server \"%s\" is not a shard added by flock.add_shard", static_cast<char*>(lfirst(ls)));
  }
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
  if (check_enable_rls(rte->relid, InvalidOid, true) == RLS_ENABLED) {
    skip("row-level security on the table (its policies would not apply on the shards)");
    return nullptr;
  }
  if (XactReadOnly || RecoveryInProgress()) {
    skip("a read-only transaction (flock.on_shards creates a temporary view)");
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
  char* final_sql =
      psprintf("SELECT %s FROM flock.on_shards(%u::regclass, %s%s) AS r(%s)%s%s", final_select.data,
               rte->relid, quote_literal_cstr(for_format(shard_sql, list_length(b.refs))), refs.data,
               columns.data, final_group.len ? " GROUP BY " : "", final_group.data);
  Replan r = {servers, final_sql, cursor_options, params, types, nullptr};
  if (!plan_in_subtransaction(replan, &r, "aggregates not planned on shards")) return nullptr;
  plan_depends_on_models(r.stmt);
  if (!list_member_oid(r.stmt->relationOids, rte->relid))
    r.stmt->relationOids = lappend_oid(r.stmt->relationOids, rte->relid);
  if (plan_notes_wanted()) plan_note("Flock On Shards", with_refs(shard_sql, b.refs));
  return r.stmt;
}

}  // namespace flock::pg
