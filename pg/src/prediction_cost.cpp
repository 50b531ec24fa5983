// Costs of the prediction functions (issue 13, item 5): flock._prediction_support, the prosupport
// function of flock.predict / predict_proba / predict_label / predict_tensor, answers
// SupportRequestCost for a call whose model is a constant the planner can resolve with
// optimize::cost of the compiled model, so that the planner evaluates cheap quals before a
// prediction and sees what scoring costs.
//
// Target-list calls keep the declared COST 1 (00_core.sql): at a cost above 10 operators
// PostgreSQL postpones a target-list expression of an ORDER BY ... LIMIT query above the Sort
// (make_sort_input_target), where each row would be scored alone instead of in batches. A call is
// a target-list call when the planner's processed target list holds that very node (the sort-input
// split costs those nodes, not copies).
//
// Scans with a prediction qual (correct_qual_costs, a set_rel_pathlist_hook): PostgreSQL charges
// every qual of a scan on every row the scan reads (cost_qual_eval sums them), but the executor
// evaluates them cheapest first and stops at the first false one (order_qual_clauses), and the
// batch node scores a prediction only for the rows the scan's other quals keep. A cheap qual that
// rejects most rows before a prediction (a derived filter, optimize_query.cpp) would look like
// extra work; each path of such a scan is recosted with its quals short-circuited.
#include "pg.hpp"  // must come first

extern "C" {
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "nodes/nodeFuncs.h"
#include "nodes/pathnodes.h"
#include "nodes/supportnodes.h"
#include "optimizer/cost.h"
#include "optimizer/optimizer.h"
#include "optimizer/pathnode.h"
#include "optimizer/paths.h"
#include "utils/lsyscache.h"
}
#undef flock

#include <cstring>
#include <new>

#include "batch_plan.hpp"
#include "cache.hpp"
#include "flock/optimize.hpp"
#include "guard.hpp"
#include "plan_model.hpp"

namespace flock::pg {

bool optimizer_costs = true;  // GUC flock.optimizer_costs
extern bool optimizer_enabled;

namespace {

// A call's cost in cpu_operator_cost units, as batched (FlockBatchScore scores a scan's quals):
// a fixed part and a part per optimize::cost unit. bench/prediction_cost.py (400,000 rows, two
// runs on a shared machine): a float8 addition costs 7.3-7.5 ns a row, a batched call of a
// one-split tree (cost 2) 22-47 ns (3-6 operators), each further unit 0.5-1.0 ns (0.07-0.14
// operators); the lower ends are taken (the calls' cost is not overstated).
constexpr double kCallOperators = 3;
constexpr double kOperatorsPerUnit = 0.07;

bool contains_node(Node* node, Node* target) {
  if (!node) return false;
  if (node == target) return true;
  return expression_tree_walker(node, reinterpret_cast<bool (*)()>(contains_node), target);
}

bool in_target_list(PlannerInfo* root, Node* call) {
  if (!root) return false;
  if (contains_node(reinterpret_cast<Node*>(root->processed_tlist), call)) return true;
  return root->parse && contains_node(reinterpret_cast<Node*>(root->parse->targetList), call);
}

// ---- Short-circuited qual costs of scans with a prediction qual

set_rel_pathlist_hook_type prev_set_rel_pathlist = nullptr;

bool is_prediction_function(Oid funcid, Oid flock_namespace) {
  if (get_func_namespace(funcid) != flock_namespace) return false;
  char* name = get_func_name(funcid);
  return name && (strcmp(name, "predict") == 0 || strcmp(name, "predict_proba") == 0 ||
                  strcmp(name, "predict_label") == 0 || strcmp(name, "predict_tensor") == 0);
}

bool contains_prediction(Node* node, Oid* flock_namespace) {
  if (!node) return false;
  if (IsA(node, FuncExpr) && is_prediction_function(reinterpret_cast<FuncExpr*>(node)->funcid, *flock_namespace))
    return true;
  return expression_tree_walker(node, reinterpret_cast<bool (*)()>(contains_prediction), flock_namespace);
}

struct ScanQual {
  RestrictInfo* rinfo;
  double per_tuple;  // PostgreSQL's (cached) evaluation cost
  bool prediction;
};

// The order the executor evaluates a scan's quals in: cheapest first, stable (order_qual_clauses);
// with batching the prediction quals last (the batch node scores the rows the scan returns).
bool evaluated_before(const ScanQual& a, const ScanQual& b) {
  if (batching_enabled && a.prediction != b.prediction) return !a.prediction;
  return a.per_tuple < b.per_tuple;
}

// How much PostgreSQL overcharges a scan that reads `fetched` rows, of which `enforced` (index
// clauses) already hold, and evaluates `quals` on each: it charges every qual on every row; the
// fraction of the rows that reaches the i-th qual is estimated as PostgreSQL estimates rows
// (clauselist_selectivity of the enforced and the earlier quals over the table's rows).
double overcharge(PlannerInfo* root, RelOptInfo* rel, const ScanQual* sorted, int n, List* enforced,
                  double fetched) {
  if (n < 2 || fetched <= 0 || rel->tuples <= 0) return 0;
  double charged = 0, evaluated = 0, reaching = 1;
  List* before = list_copy(enforced);
  for (int i = 0; i < n; ++i) {
    charged += sorted[i].per_tuple;
    evaluated += sorted[i].per_tuple * reaching;
    if (i + 1 == n) break;
    before = lappend(before, sorted[i].rinfo);
    double kept = rel->tuples * clauselist_selectivity(root, before, 0, JOIN_INNER, nullptr) / fetched;
    reaching = Min(reaching, Max(kept, 0.0));
  }
  list_free(before);
  return fetched * Max(charged - evaluated, 0.0);
}

// A parallel scan's share of the work per process, as costsize.c's get_parallel_divisor.
double parallel_divisor(const Path* path) {
  double divisor = path->parallel_workers;
  if (parallel_leader_participation) {
    double leader = 1.0 - 0.3 * path->parallel_workers;
    if (leader > 0) divisor += leader;
  }
  return divisor;
}

// One scan path's overcharge; 0 for the paths left as PostgreSQL costs them (parameterized ones,
// scans of partial indexes, Gather, ...). A parallel scan's qual costs are divided among its
// processes.
double path_overcharge(PlannerInfo* root, RelOptInfo* rel, Path* path, ScanQual* quals, int nquals) {
  if (path->param_info) return 0;
  ScanQual* charged = static_cast<ScanQual*>(palloc(sizeof(ScanQual) * nquals));
  int n = 0;
  List* enforced = NIL;
  double fetched;
  if (IsA(path, Path) && path->pathtype == T_SeqScan) {
    fetched = rel->tuples;  // cost_seqscan
    for (int i = 0; i < nquals; ++i) charged[n++] = quals[i];
  } else if (IsA(path, BitmapHeapPath)) {
    Cost ignored;
    Selectivity selectivity;
    cost_bitmap_tree_node(reinterpret_cast<BitmapHeapPath*>(path)->bitmapqual, &ignored, &selectivity);
    fetched = clamp_row_est(selectivity * rel->tuples);  // cost_bitmap_heap_scan charges every qual
    for (int i = 0; i < nquals; ++i) charged[n++] = quals[i];
  } else if (IsA(path, IndexPath)) {
    IndexPath* ipath = reinterpret_cast<IndexPath*>(path);
    if (ipath->indexinfo->indpred != NIL) return 0;  // cost_index leaves out what the predicate implies
    fetched = clamp_row_est(ipath->indexselectivity * rel->tuples);
    ListCell* lc;
    foreach (lc, ipath->indexclauses) enforced = lappend(enforced, reinterpret_cast<IndexClause*>(lfirst(lc))->rinfo);
    for (int i = 0; i < nquals; ++i)
      if (!list_member_ptr(enforced, quals[i].rinfo)) charged[n++] = quals[i];  // cost_index's qpquals
  } else {
    return 0;
  }
  double over = overcharge(root, rel, charged, n, enforced, fetched);
  return path->parallel_workers > 0 ? over / parallel_divisor(path) : over;
}

int cheaper_total(const ListCell* a, const ListCell* b) {
  Cost x = static_cast<Path*>(lfirst(a))->total_cost, y = static_cast<Path*>(lfirst(b))->total_cost;
  return x < y ? -1 : x > y ? 1 : 0;
}

void correct_qual_costs(PlannerInfo* root, RelOptInfo* rel, Index rti, RangeTblEntry* rte) {
  if (prev_set_rel_pathlist) prev_set_rel_pathlist(root, rel, rti, rte);
  if (!optimizer_enabled || !optimizer_costs) return;
  // (A relation proven empty keeps its one dummy path.)
  if (IS_DUMMY_REL(rel) || rel->rtekind != RTE_RELATION || rte->rtekind != RTE_RELATION || rte->inh ||
      rte->tablesample || list_length(rel->baserestrictinfo) < 2)
    return;
  Oid flock_namespace = get_namespace_oid("flock", true);
  if (!OidIsValid(flock_namespace)) return;
  bool any_prediction = false;
  ListCell* lc;
  foreach (lc, rel->baserestrictinfo) {
    Node* clause = reinterpret_cast<Node*>(static_cast<RestrictInfo*>(lfirst(lc))->clause);
    if ((any_prediction = contains_prediction(clause, &flock_namespace))) break;
  }
  if (!any_prediction) return;
  const int nquals = list_length(rel->baserestrictinfo);
  ScanQual* quals = static_cast<ScanQual*>(palloc(sizeof(ScanQual) * nquals));
  int n = 0;
  any_prediction = false;  // among the quals that are not one-time filters
  foreach (lc, rel->baserestrictinfo) {
    RestrictInfo* rinfo = static_cast<RestrictInfo*>(lfirst(lc));
    if (rinfo->pseudoconstant) continue;  // a one-time filter, costed apart
    QualCost cost;
    cost_qual_eval_node(&cost, reinterpret_cast<Node*>(rinfo), root);  // cached in the RestrictInfo
    bool prediction = contains_prediction(reinterpret_cast<Node*>(rinfo->clause), &flock_namespace);
    any_prediction |= prediction;
    // Stable insertion: the order PostgreSQL's list has among equals.
    ScanQual q = {rinfo, cost.per_tuple, prediction};
    int at = n;
    while (at > 0 && evaluated_before(q, quals[at - 1])) {
      quals[at] = quals[at - 1];
      --at;
    }
    quals[at] = q;
    ++n;
  }
  if (!any_prediction || n < 2) return;
  bool has_seqscan = false;
  foreach (lc, rel->pathlist) {
    Path* path = static_cast<Path*>(lfirst(lc));
    double over = path_overcharge(root, rel, path, quals, n);
    path->total_cost -= Min(over, path->total_cost - path->startup_cost);  // a run cost, never below startup
    has_seqscan |= IsA(path, Path) && path->pathtype == T_SeqScan && !path->param_info && path->parallel_workers == 0;
  }
  list_sort(rel->pathlist, cheaper_total);
  // Partial paths too, before the Gather paths over them are made (after this hook).
  foreach (lc, rel->partial_pathlist) {
    Path* path = static_cast<Path*>(lfirst(lc));
    double over = path_overcharge(root, rel, path, quals, n);
    path->total_cost -= Min(over, path->total_cost - path->startup_cost);
  }
  list_sort(rel->partial_pathlist, cheaper_total);
  // The sequential scan add_path dropped for a cheaper-looking index or bitmap path comes back
  // recosted (set_plain_rel_pathlist makes one for every plain table).
  char relkind = get_rel_relkind(rte->relid);
  if (!has_seqscan && (relkind == RELKIND_RELATION || relkind == RELKIND_MATVIEW)) {
    Path* seqscan = create_seqscan_path(root, rel, nullptr, 0);
    double over = path_overcharge(root, rel, seqscan, quals, n);
    seqscan->total_cost -= Min(over, seqscan->total_cost - seqscan->startup_cost);
    add_path(rel, seqscan);
  }
}

}  // namespace

void install_prediction_costs() {
  prev_set_rel_pathlist = set_rel_pathlist_hook;
  set_rel_pathlist_hook = correct_qual_costs;
}

}  // namespace flock::pg

extern "C" {
PG_FUNCTION_INFO_V1(flock_prediction_support);
Datum flock_prediction_support(PG_FUNCTION_ARGS) {
  using namespace flock::pg;
  Node* raw = reinterpret_cast<Node*>(PG_GETARG_POINTER(0));
  if (!optimizer_enabled || !optimizer_costs || !IsA(raw, SupportRequestCost)) PG_RETURN_POINTER(nullptr);
  SupportRequestCost* req = reinterpret_cast<SupportRequestCost*>(raw);
  if (!req->node || !IsA(req->node, FuncExpr)) PG_RETURN_POINTER(nullptr);
  FuncExpr* call = reinterpret_cast<FuncExpr*>(req->node);
  if (list_length(call->args) != 2 || in_target_list(req->root, req->node)) PG_RETURN_POINTER(nullptr);
  PlanModel* pm = plan_model(static_cast<Node*>(linitial(call->args)));
  if (!pm) PG_RETURN_POINTER(nullptr);
  double units = plan_model_cost(pm);
  if (units < 0) PG_RETURN_POINTER(nullptr);  // no estimate: the declared cost
  req->startup = 0;
  req->per_tuple = (kCallOperators + units * kOperatorsPerUnit) * cpu_operator_cost;
  PG_RETURN_POINTER(req);
}
}
