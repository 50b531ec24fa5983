// `flockctl train NAME --data DATA --target COLUMN [...]`: runs flock.train, which snapshots the
// data, trains, registers the model and records the run in one transaction, and prints the new
// reference with the held-out metrics. The server's NOTICEs (flock.train_notice_rounds) go to
// standard error as libpq prints them.
#include "train.hpp"

#include <fmt/format.h>

#include "common.hpp"
#include "pq.hpp"

namespace flock::cli {

namespace {

constexpr std::size_t kMaxParamsFile = std::size_t{1} << 20;

}  // namespace

int cmd_train(const Invocation& inv) {
  const std::string& name = inv.args[0];
  auto data = option(inv, "data");
  auto target = option(inv, "target");
  if (!data || data->empty())
    throw UsageError("'train' needs --data TABLE, NAME@VERSION or a query", "train");
  if (!target || target->empty()) throw UsageError("'train' needs --target COLUMN", "train");
  std::string params = "{}";
  if (auto p = option(inv, "params"))
    params = (!p->empty() && p->front() == '{') ? *p : read_file(*p, "params file", kMaxParamsFile);
  std::optional<std::vector<std::string>> features;
  if (auto f = option(inv, "features"))
    features = split_list(*f, "features", "feature name", "age,income,tenure", "train");
  auto seed = option(inv, "seed");
  if (seed && seed->find_first_not_of("-0123456789") != std::string::npos)
    throw UsageError(fmt::format("--seed must be an integer, not '{}'", *seed), "train");

  return with_connection(inv, [&](Connection& conn) {
    if (auto rounds = option(inv, "notice-rounds"))
      conn.exec("SELECT pg_catalog.set_config('flock.train_notice_rounds', $1, false)",
                {Param::text(*rounds)});
    Result r = conn.exec(
        "SELECT flock.train($1, $2, $3, $4, $5::jsonb, $6, coalesce($7::float8, 0.2), coalesce($8::integer, "
        "0))",
        {Param::text(name), Param::text(*data), Param::text(*target),
         Param::text(option(inv, "algorithm").value_or("xgboost")), Param::text(params),
         Param::text_array(features), Param::text(option(inv, "test-fraction")), Param::text(seed)});
    std::string ref(r.get(0, 0));
    auto at = ref.rfind('@');
    Result m = conn.exec(
        "SELECT t.metrics::text, i.dataset_name || '@' || i.dataset_version FROM flock.training_runs t "
        "JOIN flock.training_inputs i ON i.run_id = t.id WHERE t.model_name = $1 AND t.model_version = "
        "$2::integer",
        {Param::text(ref.substr(0, at)), Param::text(ref.substr(at + 1))});
    if (m.rows() >= 1)
      write_out(fmt::format("trained {} on data set {}\nmetrics: {}\n", ref, m.get(0, 1), m.get(0, 0)));
    else
      write_out(fmt::format("trained {}\n", ref));
    return 0;
  });
}

}  // namespace flock::cli
