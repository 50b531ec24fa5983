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
#include "pg.hpp"  // must come first

extern "C" {
#include "nodes/nodeFuncs.h"
#include "nodes/pathnodes.h"
#include "nodes/supportnodes.h"
#include "optimizer/optimizer.h"
}
#undef flock

#include <new>

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

}  // namespace

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
  double units = -1;
  const flock::Model* model = pm->handle->model.get();
  flock_guard([&] {
    try {
      units = flock::optimize::cost(*model);
    } catch (const std::bad_alloc&) {
      units = -1;  // no estimate: the declared cost
    }
  });
  if (units < 0) PG_RETURN_POINTER(nullptr);
  req->startup = 0;
  req->per_tuple = (kCallOperators + units * kOperatorsPerUnit) * cpu_operator_cost;
  PG_RETURN_POINTER(req);
}
}
