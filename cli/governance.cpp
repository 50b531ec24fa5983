// Governance commands: `register` with training capture (model + training run in one transaction)
// and `lineage` (text table, Graphviz dot, or OpenLineage JSON).
#include "governance.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <set>

#include "common.hpp"
#include "pq.hpp"
#include "table.hpp"

namespace flock::cli {
namespace {

constexpr std::size_t kMaxTextFile = std::size_t{64} << 20;  // training scripts, JSON files

// Graphviz double-quoted string contents.
std::string dot_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

struct Edge {
  std::string depth, from_kind, from_ref, relation, to_kind, to_ref, at, actor;
};

std::string node_label(const std::string& kind, const std::string& ref) {
  if (kind == "training_run") return fmt::format("training run\n{}", ref.substr(0, 8));
  if (kind == "inference") return fmt::format("inference\n{}", ref);
  if (kind == "table") return fmt::format("table\n{}", ref);
  if (kind == "erasure" || kind == "retention") return fmt::format("{}\n{}", kind, ref);  // privacy events
  return fmt::format("{}\n{}", kind == "model" ? "model" : kind == "alias" ? "alias" : "data set", ref);
}

std::string node_shape(const std::string& kind) {
  if (kind == "table" || kind == "dataset") return "cylinder";
  if (kind == "training_run") return "ellipse";
  if (kind == "model") return "box3d";
  if (kind == "alias") return "cds";
  if (kind == "erasure" || kind == "retention") return "note";
  return "parallelogram";
}

std::string render_dot(const std::string& start_kind, const std::string& start_ref,
                       const std::vector<Edge>& edges) {
  std::string out =
      "digraph lineage {\n  rankdir=LR;\n  node [fontname=\"Helvetica\", fontsize=10];\n"
      "  edge [fontname=\"Helvetica\", fontsize=9];\n";
  std::set<std::pair<std::string, std::string>> nodes{{start_kind, start_ref}};
  for (const auto& e : edges) {
    nodes.insert({e.from_kind, e.from_ref});
    nodes.insert({e.to_kind, e.to_ref});
  }
  for (const auto& [kind, ref] : nodes) {
    bool is_start = kind == start_kind && ref == start_ref;
    out += fmt::format("  \"{}:{}\" [label=\"{}\", shape={}{}];\n", dot_escape(kind), dot_escape(ref),
                       dot_escape(node_label(kind, ref)), node_shape(kind), is_start ? ", penwidth=2" : "");
  }
  for (const auto& e : edges)
    out += fmt::format("  \"{}:{}\" -> \"{}:{}\" [label=\"{}\"];\n", dot_escape(e.from_kind),
                       dot_escape(e.from_ref), dot_escape(e.to_kind), dot_escape(e.to_ref),
                       dot_escape(e.relation));
  out += "}\n";
  return out;
}

}  // namespace

bool wants_training_capture(const Invocation& inv) {
  for (const char* name : {"dataset", "training-code", "code-ref", "params", "metrics", "environment"})
    if (inv.options.count(name)) return true;
  return false;
}

int cmd_register_with_training(const Invocation& inv) {
  auto name = option(inv, "name");
  if (!name) throw UsageError("'register' needs --name NAME", "register");
  if (name->empty()) throw UsageError("--name must not be empty", "register");
  std::string format = option(inv, "format").value_or("auto");
  if (format != "auto" && format != "onnx" && format != "xgboost")
    throw UsageError(fmt::format("unknown --format '{}': use auto, onnx or xgboost", format), "register");
  std::optional<std::vector<std::string>> features;
  if (auto f = option(inv, "features")) features = split_list(*f, "features", "feature name", "age,income,tenure", "register");
  std::optional<std::vector<std::string>> datasets;
  if (auto d = option(inv, "dataset")) datasets = split_list(*d, "dataset", "item", "churn_train@3,churn_extra@1", "register");

  int from_stdin = inv.args[0] == "-";
  for (const char* opt : {"training-code", "params", "metrics", "environment"})
    if (option(inv, opt) == "-") ++from_stdin;
  if (from_stdin > 1) throw UsageError("only one of the files can be standard input (\"-\")", "register");

  std::optional<std::string> code, params, metrics, environment;
  if (auto p = option(inv, "training-code")) code = read_file(*p, "training code file", kMaxTextFile);
  if (auto p = option(inv, "params")) params = read_file(*p, "parameters file", kMaxTextFile);
  if (auto p = option(inv, "metrics")) metrics = read_file(*p, "metrics file", kMaxTextFile);
  if (auto p = option(inv, "environment")) environment = read_file(*p, "environment file", kMaxTextFile);
  std::optional<std::string> code_ref = option(inv, "code-ref");
  if (!code_ref && code && inv.options.at("training-code") != "-") code_ref = inv.options.at("training-code");
  std::string bytes = read_file(inv.args[0], "model file", kMaxModelBytes);

  return with_connection(inv, [&](Connection& conn) {
    // One transaction: the model is registered only if its training run is recorded too.
    conn.exec("BEGIN");
    Result r = conn.exec("SELECT flock.register_model($1, $2, $3, $4, $5)",
                         {Param::text(*name), Param::bytea(std::move(bytes)), Param::text(format),
                          Param::text(option(inv, "description")), Param::text_array(features)});
    std::string ref(r.get(0, 0));
    Result id = conn.exec(
        "SELECT flock.log_training($1, $2, $3, $4, $5::text::jsonb, $6::text::jsonb, $7::text::jsonb)",
        {Param::text(ref), Param::text_array(datasets), Param::text(code), Param::text(code_ref),
         Param::text(params), Param::text(metrics), Param::text(environment)});
    Result t = conn.exec("SELECT run_id FROM flock.training_runs WHERE id = $1::text::bigint",
                         {Param::text(std::string(id.get(0, 0)))});
    Result m = conn.exec("SELECT format, sha256 FROM flock.models WHERE name || '@' || version = $1",
                         {Param::text(ref)});
    conn.exec("COMMIT");
    std::string extra;
    if (m.rows() == 1)
      extra = fmt::format(" ({}, sha256 {}…)", m.get(0, 0), m.get(0, 1).substr(0, kShortSha256));
    write_out(fmt::format("registered {}{}\n", ref, extra));
    std::string inputs;
    if (datasets) {
      for (const auto& d : *datasets) inputs += (inputs.empty() ? "" : ", ") + d;
      inputs = fmt::format(" on {}", inputs);
    }
    write_out(fmt::format("recorded training run {}{}\n", t.rows() == 1 ? t.get(0, 0) : "?", inputs));
    return 0;
  });
}

int cmd_lineage(const Invocation& inv) {
  const std::string& ref = inv.args[0];
  if (ref.empty()) throw UsageError("the REF must not be empty", "lineage");
  std::string direction = option(inv, "direction").value_or("both");
  if (direction == "up") direction = "upstream";
  if (direction == "down") direction = "downstream";
  if (direction != "both" && direction != "upstream" && direction != "downstream")
    throw UsageError(fmt::format("unknown --direction '{}': use upstream, downstream or both", direction),
                     "lineage");
  bool dot = inv.options.count("dot") > 0, openlineage = inv.options.count("openlineage") > 0;
  if (dot && openlineage) throw UsageError("--dot and --openlineage are alternatives; give one", "lineage");

  return with_connection(inv, [&](Connection& conn) {
    if (openlineage) {
      Result r = conn.exec("SELECT jsonb_pretty(flock.openlineage($1))", {Param::text(ref)});
      write_out(r.get(0, 0));
      write_out("\n");
      return 0;
    }
    Result start = conn.exec("SELECT kind, node FROM flock._lineage_start($1)", {Param::text(ref)});
    std::string start_kind(start.get(0, 0)), start_ref(start.get(0, 1));
    Result r = conn.exec(
        "SELECT depth, from_kind, from_ref, relation, to_kind, to_ref,"
        "       to_char(at, 'YYYY-MM-DD HH24:MI:SSOF'), actor"
        "  FROM flock.lineage($1, $2)",
        {Param::text(ref), Param::text(direction)});
    std::vector<Edge> edges;
    for (int i = 0; i < r.rows(); ++i) {
      auto get = [&](int c) { return r.is_null(i, c) ? std::string() : std::string(r.get(i, c)); };
      edges.push_back({get(0), get(1), get(2), get(3), get(4), get(5), get(6), get(7)});
    }
    if (dot) {
      write_out(render_dot(start_kind, start_ref, edges));
      return 0;
    }
    std::string shown =
        start_kind == "model" ? fmt::format("model {}", start_ref) : fmt::format("data set {}", start_ref);
    if (edges.empty()) {
      write_out(fmt::format("no lineage recorded for {}\n", shown));
      return 0;
    }
    write_out(fmt::format("lineage of {} ({}):\n", shown,
                          direction == "both" ? "upstream and downstream" : direction));
    std::vector<Column> columns{{"depth", true}, {"from"}, {"relation"}, {"to"}, {"at"}, {"by"}};
    std::vector<std::vector<std::string>> rows;
    constexpr std::size_t kNodeWidth = 120;  // "model churn@3", "data set train@2": cut past this
    for (const auto& e : edges)
      rows.push_back({e.depth, one_line(e.from_kind + " " + e.from_ref, kNodeWidth), e.relation,
                      one_line(e.to_kind + " " + e.to_ref, kNodeWidth), e.at, e.actor});
    write_out(render_table(columns, rows));
    return 0;
  });
}

}  // namespace flock::cli
