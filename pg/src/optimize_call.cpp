// The batch node's model optimizations (see optimize_call.hpp): the facts the scan's quals give
// about table columns become optimize::Constraints on the features those columns bind to, with
// PostgreSQL's NULL and NaN semantics, and the model is specialized with them.
#include "pg.hpp"  // must come first

#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "call_state.hpp"
#include "guard.hpp"
#include "optimize_call.hpp"

#include "flock/optimize.hpp"

namespace flock::pg {

bool optimizer_enabled = true;
bool optimizer_prune = true;
bool optimizer_projection = true;

namespace {

namespace opt = flock::optimize;

// What a fact says about a feature's values. PostgreSQL orders float NaN above every number and
// NULL fails every comparison: `x < c`, `x <= c` and `x = c` (c never NaN here) exclude both
// missing kinds; `x > c`, `x >= c` and IS NOT NULL exclude NULL but not NaN, so on a float column
// they keep the missing-value branch. An integer column has no NaN: every fact excludes missing.
opt::FeatureConstraint fact_constraint(const ColumnFact& f) {
  opt::FeatureConstraint c;
  switch (f.op) {
    case FactOp::Less: c.values = opt::Interval::less_than(f.value); c.missing_allowed = false; break;
    case FactOp::LessEqual: c.values = opt::Interval::at_most(f.value); c.missing_allowed = false; break;
    case FactOp::Equal: c.values = opt::Interval::point(f.value); c.missing_allowed = false; break;
    case FactOp::GreaterEqual: c.values = opt::Interval::at_least(f.value); c.missing_allowed = f.integer ? false : true; break;
    case FactOp::Greater: c.values = opt::Interval::greater_than(f.value); c.missing_allowed = f.integer ? false : true; break;
    case FactOp::NotNull: c.missing_allowed = !f.integer; break;
  }
  if (f.null_passes) c.missing_allowed = true;  // a constraint: NULL passes it
  return c;
}

bool numeric_conv(Conv conv, bool* integer) {
  *integer = conv == Conv::Int2 || conv == Conv::Int4 || conv == Conv::Int8;
  return *integer || conv == Conv::Float4 || conv == Conv::Float8;
}

// The constraints exactly, as a cache key: per column its bounds (hex doubles) and missing flag.
std::string constraints_key(const opt::Constraints& constraints) {
  std::string key = constraints.exact_input_values ? "exact" : "rounded";
  char buf[96];
  for (const auto& column : constraints.columns) {
    if (column.is_any()) {
      key += "|*";
      continue;
    }
    const auto& lo = column.values.lower();
    const auto& hi = column.values.upper();
    snprintf(buf, sizeof(buf), "|%c%a,%a%c%s", lo ? (lo->closed ? '[' : '(') : '-', lo ? lo->value : 0.0,
             hi ? hi->value : 0.0, hi ? (hi->closed ? ']' : ')') : '-', column.missing_allowed ? "m" : "");
    key += buf;
  }
  return key;
}

// "Pruned: 1,412 of ..." without its "Pruned: " (EXPLAIN has its own label).
void copy_after_colon(char* out, size_t size, const std::string& s) {
  size_t colon = s.find(": ");
  snprintf(out, size, "%s", colon == std::string::npos ? s.c_str() : s.c_str() + colon + 2);
}

}  // namespace

CallOptimization optimize_call(CallState* st, Oid rowtype, const ColumnFact* facts, int nfacts) {
  CallOptimization out = {nullptr, nullptr, nullptr};
  if (!optimizer_enabled || (!optimizer_prune && !optimizer_projection)) return out;
  const flock::Signature& sig = st->model->signature();
  if (sig.inputs.size() != 1 ||
      (sig.inputs[0].type != flock::ElemType::Float && sig.inputs[0].type != flock::ElemType::Double)) {
    ereport(DEBUG1, (errmsg_internal("flock optimizer: %s left as it is: not a single float or double input",
                                     st->label)));
    return out;
  }
  if (!bind_record(st, st->mcxt, rowtype, -1, /*probe=*/true)) {
    ereport(DEBUG1, (errmsg_internal("flock optimizer: %s left as it is: the row does not bind to it", st->label)));
    return out;
  }
  const int width = st->nfeatures;
  const bool float_input = sig.inputs[0].type == flock::ElemType::Float;
  // Per feature: its column's name, and which facts are about that column (plain data: the C++
  // work below runs under the guard).
  const char** names = static_cast<const char**>(palloc0(sizeof(char*) * std::max(width, 1)));
  int* fact_feature = static_cast<int*>(palloc(sizeof(int) * std::max(nfacts, 1)));
  bool exact = true;
  int constrained = 0;
  for (int i = 0; i < nfacts; ++i) fact_feature[i] = -1;
  for (int f = 0; f < width; ++f) {
    const FeatureBinding& b = st->binds[f];
    names[f] = NameStr(TupleDescAttr(st->rec_desc, b.attno)->attname);
    bool integer;
    if (!numeric_conv(b.conv, &integer)) continue;
    for (int i = 0; i < nfacts; ++i) {
      if (facts[i].attno != b.attno + 1 || facts[i].integer != integer) continue;
      fact_feature[i] = f;
      constrained++;
      // Exact: the column's values are the model's input values (else rounded to them).
      exact = exact && ((b.conv == Conv::Float4 && float_input) || (b.conv == Conv::Float8 && !float_input));
    }
  }

  char pruned[1024] = "", inputs[128] = "", why[256] = "";
  bool specialized = false, out_of_memory = false;
  bool* feature_read = static_cast<bool*>(palloc(sizeof(bool) * std::max(width, 1)));
  bool read_some = false;  // feature_read says which features the model reads (else all)
  CallState* state = st;
  const char* sha = st->model_sha;
  flock_guard([&] {
    try {
      opt::Constraints constraints(static_cast<size_t>(width));
      // Missing values are NULL and NaN; facts may exclude one and not the other (a partition's
      // `x IS NOT NULL` and `x < 10` as a constraint, which NULL passes and NaN fails): together
      // they exclude both.
      std::vector<bool> null_excluded(static_cast<size_t>(width)), nan_excluded(static_cast<size_t>(width));
      for (int i = 0; i < nfacts; ++i) {
        if (fact_feature[i] < 0) continue;
        const size_t f = static_cast<size_t>(fact_feature[i]);
        auto& column = constraints.columns[f];
        column = column.intersect(fact_constraint(facts[i]));
        const FactOp op = facts[i].op;
        if (!facts[i].null_passes) null_excluded[f] = true;
        if (facts[i].integer || op == FactOp::Less || op == FactOp::LessEqual || op == FactOp::Equal)
          nan_excluded[f] = true;
        if (null_excluded[f] && nan_excluded[f]) column.missing_allowed = false;
      }
      constraints.exact_input_values = constrained > 0 && exact;
      bool informative = false;  // IS NOT NULL on a float column, say, still allows every value
      for (const auto& column : constraints.columns) informative = informative || !column.is_any();
      // The model for these constraints: specialized once per backend, then found again (a prepared
      // statement, the same query again, another partition with the same bounds).
      const bool prune = optimizer_prune && informative;
      std::string key = model_cache_key(sha) + (prune ? "/prune/" : "/as-is/") + constraints_key(constraints);
      std::shared_ptr<const SpecializedModel> done = find_specialized(key);
      if (!done) {
        auto made = std::make_shared<SpecializedModel>();
        std::shared_ptr<const flock::Model> model = state->handle->model;
        if (prune) {
          if (constraints.unsatisfiable()) {
            made->not_pruned = "no row can satisfy the scan's quals";
          } else if (auto sp = opt::specialize(*model, constraints)) {
            made->pruned = sp->stats.summary();
            made->model = sp->model;
            model = sp->model;
            cache_stats.specializations++;
          } else {
            made->not_pruned = "nothing to specialize (no tree ensemble reading the input directly)";
          }
        }
        opt::InputsRead read = opt::inputs_read(*model, constraints);
        made->read_all = read.all;
        made->read = read.read;
        made->width = read.width;
        cache_specialized(key, made);
        done = made;
      }
      if (!done->not_pruned.empty()) snprintf(why, sizeof(why), "%s", done->not_pruned.c_str());
      if (done->model) {
        std::vector<std::string> column_names(names, names + width);
        copy_after_colon(pruned, sizeof(pruned), done->pruned + " (" + constraints.to_string(column_names) + ")");
        specialized = true;
      }
      if (optimizer_projection && done->width > 0) {
        opt::InputsRead read;
        read.all = done->read_all;
        read.read = done->read;
        read.width = done->width;
        copy_after_colon(inputs, sizeof(inputs), read.summary());
        if (!read.all && read.read.size() == static_cast<size_t>(width)) {
          for (int f = 0; f < width; ++f) feature_read[f] = read.read[static_cast<size_t>(f)];
          read_some = true;
        }
      }
      if (specialized) {
        state->handle->model = done->model;  // the call's own: the model cache keeps the original
        state->model = done->model.get();
      }
    } catch (const std::bad_alloc&) {
      out_of_memory = true;  // the optimizer never fails a query: score the model as it is
    }
  });
  if (out_of_memory) {
    ereport(DEBUG1, (errmsg_internal("flock optimizer: %s left as it is: out of memory while optimizing", st->label)));
    return out;
  }
  if (why[0]) ereport(DEBUG1, (errmsg_internal("flock optimizer: %s not pruned: %s", st->label, why)));
  if (specialized) out.pruned = pstrdup(pruned);
  if (inputs[0]) out.inputs_read = pstrdup(inputs);
  if (read_some) out.feature_read = feature_read;
  return out;
}

}  // namespace flock::pg
