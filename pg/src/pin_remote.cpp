// Shipping predictions to shards (issue 18): in a query level that reads a foreign table (a
// distributed table's partitions are foreign tables), flock.predict / predict_proba /
// predict_label(constant ref, float4[] of columns) in WHERE and JOIN ... ON become the pinned
// functions with the version the reference resolves to now ('name@N#sha256'), which postgres_fdw
// ships (IMMUTABLE, non-collatable arguments). The pinned function computes the same value with
// the same bytes, so results do not change. Never raises: what it cannot resolve it leaves alone,
// with a DEBUG1 message. Plain PostgreSQL code.
#include "pg.hpp"  // must come first

extern "C" {
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_func.h"
#include "utils/syscache.h"
}
#undef flock

#include "pin_remote.hpp"
#include "plan_model.hpp"

namespace flock::pg {

bool pin_remote_predictions = true;

namespace {

struct PinContext {
  QueryOptimizeContext* octx;
  Oid flock_namespace;
  bool looked_up;
  Oid pinned_type;
  Oid plain[3];   // flock.predict, predict_proba, predict_label (text, float4[])
  Oid pinned[3];  // their pinned forms (flock.pinned, float4[])
};

Oid lookup(const char* name, Oid arg0) {
  Oid args[2] = {arg0, FLOAT4ARRAYOID};
  return LookupFuncName(
      list_make2(makeString(const_cast<char*>("flock")), makeString(const_cast<char*>(name))), 2, args, true);
}

// Whether the relation's rows are (partly) on other servers: a foreign table, or a partitioned
// table with a foreign partition.
bool is_remote(Oid relid) {
  char kind = get_rel_relkind(relid);
  if (kind == RELKIND_FOREIGN_TABLE) return true;
  if (kind != RELKIND_PARTITIONED_TABLE) return false;
  List* parts = find_all_inheritors(relid, NoLock, nullptr);
  ListCell* lc;
  foreach (lc, parts)
    if (get_rel_relkind(lfirst_oid(lc)) == RELKIND_FOREIGN_TABLE) return true;
  return false;
}

bool reads_remote(Query* q) {
  ListCell* lc;
  foreach (lc, q->rtable) {
    RangeTblEntry* rte = static_cast<RangeTblEntry*>(lfirst(lc));
    if (rte->rtekind == RTE_RELATION && is_remote(rte->relid)) return true;
  }
  return false;
}

Node* pin_mutator(Node* node, PinContext* ctx) {
  if (!node) return nullptr;
  if (IsA(node, FuncExpr)) {
    FuncExpr* f = reinterpret_cast<FuncExpr*>(node);
    int which = -1;
    for (int i = 0; i < 3; ++i)
      if (OidIsValid(ctx->plain[i]) && f->funcid == ctx->plain[i]) which = i;
    if (which >= 0 && list_length(f->args) == 2 && OidIsValid(ctx->pinned[which])) {
      Node* ref = static_cast<Node*>(linitial(f->args));
      Node* input = static_cast<Node*>(lsecond(f->args));
      // Only calls on the rows: a call on constants would be folded here at plan time.
      if (IsA(ref, Const) && !reinterpret_cast<Const*>(ref)->constisnull && contain_var_clause(input) &&
          !contain_volatile_functions(input)) {
        PlanModel* pm = plan_model(ref);
        if (!pm || strncmp(pm->label, "model ", 6) == 0) {
          ereport(DEBUG1,
                  (errmsg_internal("flock: prediction left unpinned: its model is not resolvable here")));
        } else {
          char* pin = psprintf("%s#%s", pm->label, pm->sha256);
          Const* c = makeConst(ctx->pinned_type, -1, InvalidOid, -1, PointerGetDatum(cstring_to_text(pin)),
                               false, false);
          FuncExpr* pinned = reinterpret_cast<FuncExpr*>(copyObject(f));
          pinned->funcid = ctx->pinned[which];
          pinned->inputcollid = InvalidOid;
          pinned->args =
              list_make2(c, expression_tree_mutator(input, reinterpret_cast<Node* (*)()>(pin_mutator), ctx));
          ctx->octx->used_plan_models = true;
          if (plan_notes_wanted()) plan_note("Flock Pinned", pin);
          return reinterpret_cast<Node*>(pinned);
        }
      }
    }
  }
  if (IsA(node, Query)) return node;  // sublinks' queries: their own level (not visited)
  return expression_tree_mutator(node, reinterpret_cast<Node* (*)()>(pin_mutator), ctx);
}

void pin_join_quals(Node* jt, PinContext* ctx) {
  if (!jt) return;
  if (IsA(jt, FromExpr)) {
    FromExpr* f = reinterpret_cast<FromExpr*>(jt);
    f->quals = pin_mutator(f->quals, ctx);
    ListCell* lc;
    foreach (lc, f->fromlist) pin_join_quals(static_cast<Node*>(lfirst(lc)), ctx);
  } else if (IsA(jt, JoinExpr)) {
    JoinExpr* j = reinterpret_cast<JoinExpr*>(jt);
    j->quals = pin_mutator(j->quals, ctx);
    pin_join_quals(j->larg, ctx);
    pin_join_quals(j->rarg, ctx);
  }
}

// The functions, looked up once per planning and only for a query that reads a foreign table.
bool look_up(PinContext* ctx) {
  if (!ctx->looked_up) {
    ctx->looked_up = true;
    ctx->pinned_type = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid, CStringGetDatum("pinned"),
                                       ObjectIdGetDatum(ctx->flock_namespace));
    const char* plain[3] = {"predict", "predict_proba", "predict_label"};
    const char* pinned[3] = {"predict_pinned", "predict_proba_pinned", "predict_label_pinned"};
    for (int i = 0; i < 3; ++i) {
      ctx->plain[i] = lookup(plain[i], TEXTOID);
      ctx->pinned[i] = OidIsValid(ctx->pinned_type) ? lookup(pinned[i], ctx->pinned_type) : InvalidOid;
    }
  }
  return OidIsValid(ctx->pinned_type);
}

void pin_level(Query* q, PinContext* ctx) {
  ListCell* lc;
  foreach (lc, q->rtable) {
    RangeTblEntry* rte = static_cast<RangeTblEntry*>(lfirst(lc));
    if (rte->rtekind == RTE_SUBQUERY && rte->subquery) pin_level(rte->subquery, ctx);
  }
  foreach (lc, q->cteList) {
    CommonTableExpr* cte = static_cast<CommonTableExpr*>(lfirst(lc));
    if (IsA(cte->ctequery, Query)) pin_level(reinterpret_cast<Query*>(cte->ctequery), ctx);
  }
  if (reads_remote(q) && look_up(ctx)) pin_join_quals(reinterpret_cast<Node*>(q->jointree), ctx);
}

}  // namespace

Query* pin_remote(Query* parse, QueryOptimizeContext* octx) {
  if (!pin_remote_predictions) return parse;
  Oid ns = get_namespace_oid("flock", true);
  if (!OidIsValid(ns)) return parse;
  PinContext ctx = {};
  ctx.octx = octx;
  ctx.flock_namespace = ns;
  pin_level(parse, &ctx);
  return parse;
}

}  // namespace flock::pg
