// `flockctl trace`: runs flock.trace on the one row a query returns and prints it as text: the
// model, the input values, each graph step's outputs, each tree's path as comparisons, the
// aggregation, and the prediction. --json prints the document itself.
#include "trace.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <nlohmann/json.hpp>

#include "common.hpp"
#include "pq.hpp"

namespace flock::cli {
namespace {

using nlohmann::json;

// Values listed per tensor line before "…".
constexpr size_t kValuesPerLine = 8;

// A number as the trace gives it (a number, or "NaN"/"Infinity" text), in 7 significant digits.
std::string show(const json& v) {
  if (v.is_null()) return "NULL";
  if (v.is_number_integer()) return v.dump();
  if (v.is_number()) return fmt::format("{:.7g}", v.get<double>());
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

std::string show_values(const json& values, bool truncated) {
  std::string out = "[";
  size_t k = 0;
  for (const auto& v : values) {
    if (k == kValuesPerLine) {
      out += fmt::format(", … {} more", values.size() - k);
      break;
    }
    out += (k ? ", " : "") + show(v);
    ++k;
  }
  if (truncated) out += " (truncated)";
  return out + "]";
}

std::string comparison(const std::string& mode) {
  if (mode == "BRANCH_LEQ") return "<=";
  if (mode == "BRANCH_LT") return "<";
  if (mode == "BRANCH_GTE") return ">=";
  if (mode == "BRANCH_GT") return ">";
  if (mode == "BRANCH_EQ") return "==";
  if (mode == "BRANCH_NEQ") return "!=";
  return mode;
}

std::string render_tree(const json& tree) {
  std::string out = fmt::format("    tree {}:", tree.value("tree", 0));
  for (const auto& step : tree.at("path")) {
    std::string feature = step.contains("feature_name") ? step["feature_name"].get<std::string>()
                                                        : fmt::format("x[{}]", step.value("feature", 0));
    std::string test = step.value("missing", false)
                           ? fmt::format("{} is missing, default", feature)
                           : fmt::format("{} = {} {} {}", feature, show(step["value"]),
                                         comparison(step.value("mode", "")), show(step["threshold"]));
    out += fmt::format(" node {}: {} -> {};", show(step["node"]), test, step.value("branch", ""));
  }
  out += fmt::format(" leaf {}", show(tree["leaf"]));
  if (tree.contains("value")) {
    out += fmt::format(" = {}", show(tree["value"]));
  } else {
    for (const auto& w : tree.at("weights")) {
      const char* key = w.contains("class") ? "class" : "target";
      out += fmt::format(", {} {} += {}", key, show(w[key]), show(w["value"]));
    }
  }
  return out + "\n";
}

}  // namespace

std::string render_trace(const std::string& text) {
  json t = json::parse(text, nullptr, false);
  if (t.is_discarded() || !t.is_object() || !t.contains("model"))
    throw Failure("the server returned something that is not a trace");
  std::string out;
  const json& m = t["model"];
  std::string who = m["name"].is_string()
                        ? fmt::format("{}@{}", m["name"].get<std::string>(), show(m["version"]))
                        : std::string("a model value");
  out += fmt::format("model      {} ({}, {}), sha256 {}\n", who, t.value("format", "?"), t.value("task", "?"),
                     m.value("sha256", "?"));
  out += "inputs (as the model saw them; NULL = missing)\n";
  size_t width = 0;
  for (const auto& f : t["features"]) width = std::max(width, f.value("name", "").size());
  for (const auto& f : t["features"])
    out += fmt::format("  {:<{}} = {}\n", f.value("name", ""), width, show(f["value"]));
  for (const auto& step : t["steps"]) {
    out += fmt::format("step {:<5} {}\n", show(step["step"]), step.value("node", ""));
    if (step.contains("trees")) {
      for (const auto& tree : step["trees"]) out += render_tree(tree);
      if (step.value("trees_truncated", false))
        out += fmt::format("    … {} trees in all (raise --max-values to list them)\n",
                           show(step["trees_total"]));
      const json& a = step["aggregation"];
      std::string base;
      for (const auto& b : a["base_values"]) base += (base.empty() ? "" : ", ") + show(b);
      out += fmt::format("  {} over {} trees: leaf sums {}, base values [{}], post_transform {}\n",
                         a.value("aggregate", ""), show(a["trees"]), show_values(a["leaf_sums"], false), base,
                         a.value("post_transform", ""));
    }
    for (const auto& o : step["outputs"])
      out += fmt::format("  -> {} {}\n", o.value("name", ""),
                         show_values(o["values"], o.value("truncated", false)));
  }
  out += "outputs\n";
  for (const auto& o : t["outputs"])
    out += fmt::format("  {} = {}\n", o.value("name", ""), show_values(o["values"], false));
  const json& p = t["prediction"];
  out += "prediction";
  if (p.contains("error")) out += fmt::format(" (none: {})", p["error"].get<std::string>());
  if (p.contains("label"))
    out += fmt::format("  label {}", p["label"].get<std::string>());
  else if (p.contains("value"))
    out += fmt::format("  value {}", show(p["value"]));
  if (p.contains("proba")) out += fmt::format("  probabilities {}", show_values(p["proba"], false));
  out += "\n";
  if (t.value("truncated", false))
    out += fmt::format("(truncated: more than {} values; raise --max-values)\n", show(t["max_values"]));
  return out;
}

int cmd_trace(const Invocation& inv) {
  const std::string& ref = inv.args[0];
  if (ref.empty()) throw UsageError("the model REF must not be empty", "trace");
  auto row = option(inv, "row");
  if (!row || row->empty())
    throw UsageError("'trace' needs --row 'SQL' (a query returning the row)", "trace");
  std::optional<int> max_values;
  if (auto mv = option(inv, "max-values")) {
    int v = 0;
    auto [end, ec] = std::from_chars(mv->data(), mv->data() + mv->size(), v);
    if (ec != std::errc() || end != mv->data() + mv->size() || v < 0)
      throw UsageError(fmt::format("--max-values '{}' is not a count (0, 1, 2, …)", *mv), "trace");
    max_values = v;
  }
  const bool as_json = option(inv, "json").has_value();
  return with_connection(inv, [&](Connection& conn) {
    // The row binds to the model as flock.predict binds it: by column name, or by position for a
    // model without feature names. LIMIT 2 is enough to tell one row from several.
    Result r =
        conn.exec(fmt::format("SELECT {}flock.trace($1, r, coalesce($2, 10000)){} FROM ({}\n) r LIMIT 2",
                              as_json ? "jsonb_pretty(" : "", as_json ? ")" : "", *row),
                  {Param::text(ref), Param::int4(max_values)});
    if (r.rows() != 1)
      throw Failure(
          fmt::format("the --row query returned {} rows; a trace is of one row", r.rows() ? "several" : "no"),
          "", "Narrow it down, e.g. with WHERE id = 42 or LIMIT 1.");
    if (r.is_null(0, 0)) throw Failure("the --row query returned a NULL row");
    std::string text(r.get(0, 0));
    write_out(as_json ? text + "\n" : render_trace(text));
    return 0;
  });
}

}  // namespace flock::cli
