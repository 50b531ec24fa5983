// `flockctl report REF --html FILE`: one self-contained HTML page about a model version — its
// signature, lineage graph, training run and metrics, and (when the database has the functions
// and the options say on what data) global importance, a SHAP summary, drift and fairness. Charts
// are Vega-Lite specifications drawn in the page by Vega / vega-embed, whose browser builds are
// inlined (tools/report/install-charts.sh puts them where find_chart_library looks), so the page
// renders offline. Everything else is HTML tables.
#include "report.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common.hpp"
#include "pq.hpp"

namespace flock::cli {
namespace {

using nlohmann::json;

// Rows explain_rows explains for the SHAP summary unless --rows says otherwise.
constexpr int kDefaultExplainRows = 200;
constexpr const char* kChartFiles[] = {"vega.min.js", "vega-lite.min.js", "vega-embed.min.js"};

std::string html_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// JSON text safe inside a <script> element: no "</" can close it.
std::string script_json(const json& j) {
  std::string text = j.dump(-1, ' ', false, json::error_handler_t::replace);
  std::string out;
  for (size_t k = 0; k < text.size(); ++k) {
    if (text[k] == '<' && k + 1 < text.size() && (text[k + 1] == '/' || text[k + 1] == '!'))
      out += "\\u003c";
    else
      out += text[k];
  }
  return out;
}

std::string text_of(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "";
  return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Where the chart library's builds are: $FLOCK_REPORT_JS_DIR, else the installed copy, else the
// build tree's (both compiled in by cli/CMakeLists.txt).
std::string find_chart_library() {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("FLOCK_REPORT_JS_DIR"); env && *env) dirs.emplace_back(env);
  dirs.emplace_back(FLOCK_REPORT_JS_INSTALLED);
  dirs.emplace_back(FLOCK_REPORT_JS_BUILD);
  for (const auto& dir : dirs) {
    bool all = true;
    for (const char* f : kChartFiles) all = all && std::ifstream(dir + "/" + f).good();
    if (all) return dir;
  }
  throw InputError(fmt::format(
      "the chart library (Vega, Vega-Lite, vega-embed) is not installed; looked in {}; run 'make charts' "
      "(tools/report/install-charts.sh) or set FLOCK_REPORT_JS_DIR",
      fmt::join(dirs, ", ")));
}

std::string inline_script(const std::string& path) {
  std::string code = read_file(path, "chart library file", std::size_t{64} << 20);
  // A literal "</script" would end the element early; in JavaScript "<\/script" means the same.
  for (size_t at = code.find("</script"); at != std::string::npos; at = code.find("</script", at + 2))
    code.replace(at, 2, "<\\/");
  return "<script>\n" + code + "\n</script>\n";
}

// The page: sections of HTML, charts as {id: Vega-Lite spec}.
struct Page {
  std::string body;
  json charts = json::object();
  int next_chart = 0;

  void section(const std::string& title) { body += fmt::format("<h2>{}</h2>\n", html_escape(title)); }
  void para(const std::string& text, const char* cls = nullptr) {
    body += cls ? fmt::format("<p class=\"{}\">{}</p>\n", cls, html_escape(text))
                : fmt::format("<p>{}</p>\n", html_escape(text));
  }
  void chart(json spec) {
    const std::string id = fmt::format("chart-{}", next_chart++);
    spec["$schema"] = "https://vega.github.io/schema/vega-lite/v6.json";
    charts[id] = std::move(spec);
    body += fmt::format("<div class=\"chart\" id=\"{}\"></div>\n", id);
  }
  // A table; `head` empty: rows of (name, value) with the names as row headers.
  void table(const std::vector<std::string>& head, const std::vector<std::vector<std::string>>& rows) {
    body += "<table>";
    if (!head.empty()) {
      body += "<tr>";
      for (const auto& h : head) body += "<th>" + html_escape(h) + "</th>";
      body += "</tr>";
    }
    body += "\n";
    for (const auto& r : rows) {
      body += "<tr>";
      for (size_t k = 0; k < r.size(); ++k)
        body += (head.empty() && k == 0 ? "<th>" : "<td>") + html_escape(r[k]) +
                (head.empty() && k == 0 ? "</th>" : "</td>");
      body += "</tr>\n";
    }
    body += "</table>\n";
  }
  // An array of objects as a table (columns in first-seen order).
  void table_of(const json& rows) {
    std::vector<std::string> head;
    for (const auto& r : rows)
      if (r.is_object())
        for (const auto& [k, v] : r.items())
          if (std::find(head.begin(), head.end(), k) == head.end()) head.push_back(k);
    std::vector<std::vector<std::string>> cells;
    for (const auto& r : rows) {
      std::vector<std::string> line;
      for (const auto& h : head) line.push_back(r.is_object() && r.contains(h) ? text_of(r[h]) : "");
      cells.push_back(std::move(line));
    }
    table(head, cells);
  }
};

json query_json(Connection& conn, const std::string& sql, const std::vector<Param>& params = {}) {
  Result r = conn.exec(sql, params);
  if (r.rows() != 1 || r.is_null(0, 0)) return nullptr;
  return json::parse(std::string(r.get(0, 0)), nullptr, false);
}

// A function's result rows as an array of objects, whatever it returns: a set of rows (one object
// each), one jsonb object per row, or a single jsonb document (an array, or {feature: number}).
json as_rows(const json& result) {
  json rows = json::array();
  if (!result.is_array()) return rows;
  for (const auto& r : result) {
    if (r.is_object() && r.size() == 1 && r.begin().value().is_array()) {  // {"f": [...]} one document
      for (const auto& x : r.begin().value()) rows.push_back(x);
    } else if (r.is_object() && r.size() == 1 && r.begin().value().is_object()) {  // {"f": {...}} one jsonb
      const json& doc = r.begin().value();
      bool all_numbers = !doc.empty();
      for (const auto& [k, v] : doc.items()) all_numbers = all_numbers && v.is_number();
      if (all_numbers) {
        for (const auto& [k, v] : doc.items()) rows.push_back({{"feature", k}, {"value", v}});
      } else {
        rows.push_back(doc);
      }
    } else {
      rows.push_back(r);
    }
  }
  return rows;
}

// The first key whose values are text (or named `preferred`), and the keys whose values are numbers.
std::string text_key(const json& rows, const std::vector<std::string>& preferred) {
  if (rows.empty() || !rows[0].is_object()) return "";
  for (const auto& p : preferred)
    if (rows[0].contains(p)) return p;
  for (const auto& [k, v] : rows[0].items())
    if (v.is_string()) return k;
  return "";
}

std::vector<std::string> number_keys(const json& rows) {
  std::vector<std::string> keys;
  if (rows.empty() || !rows[0].is_object()) return keys;
  for (const auto& [k, v] : rows[0].items())
    if (v.is_number()) keys.push_back(k);
  return keys;
}

// Bars of each numeric column per category (a facet per numeric column when there are several).
json bars(const json& rows, const std::string& category, const std::vector<std::string>& measures,
          const std::string& title) {
  json spec = {{"title", title}, {"data", {{"values", rows}}}};
  json fold = json::array();
  for (const auto& m : measures) fold.push_back(m);
  spec["transform"] = json::array({{{"fold", fold}, {"as", json::array({"measure", "amount"})}}});
  spec["mark"] = {{"type", "bar"}, {"tooltip", true}};
  spec["encoding"] = {{"y", {{"field", category}, {"type", "nominal"}, {"sort", "-x"}, {"title", category}}},
                      {"x", {{"field", "amount"}, {"type", "quantitative"}, {"title", ""}}},
                      {"color", {{"field", "measure"}, {"type", "nominal"}, {"title", ""}}}};
  if (measures.size() > 1) {
    spec["encoding"]["yOffset"] = {{"field", "measure"}};
  }
  spec["width"] = 560;
  return spec;
}

// Layers of the lineage DAG (longest path from a source), then the graph as points, rules and text.
json lineage_chart(const json& edges, const std::string& model_ref) {
  std::map<std::string, std::pair<std::string, std::string>> nodes;  // id -> (kind, ref)
  std::vector<std::pair<std::string, std::string>> links;
  for (const auto& e : edges) {
    const std::string from = text_of(e["from_kind"]) + " " + text_of(e["from_ref"]);
    const std::string to = text_of(e["to_kind"]) + " " + text_of(e["to_ref"]);
    nodes[from] = {text_of(e["from_kind"]), text_of(e["from_ref"])};
    nodes[to] = {text_of(e["to_kind"]), text_of(e["to_ref"])};
    links.emplace_back(from, to);
  }
  nodes["model " + model_ref] = {"model", model_ref};
  std::map<std::string, int> layer;
  for (const auto& [id, kr] : nodes) layer[id] = 0;
  for (size_t pass = 0; pass < nodes.size(); ++pass) {  // relax; a DAG settles within |nodes| passes
    bool changed = false;
    for (const auto& [from, to] : links)
      if (layer[to] < layer[from] + 1 && layer[from] + 1 <= static_cast<int>(nodes.size())) {
        layer[to] = layer[from] + 1;
        changed = true;
      }
    if (!changed) break;
  }
  std::map<int, int> used;
  std::map<std::string, std::pair<int, int>> at;
  json points = json::array();
  for (const auto& [id, kr] : nodes) {
    const int x = layer[id], y = used[layer[id]]++;
    at[id] = {x, y};
    // Training runs are UUIDs: their first 8 hex digits name them well enough in the picture.
    const std::string shown = kr.first == "training_run" ? kr.second.substr(0, 8) : kr.second;
    points.push_back({{"x", x},
                      {"y", y},
                      {"kind", kr.first},
                      {"label", kr.first + " " + shown},
                      {"focus", id == "model " + model_ref}});
  }
  json lines = json::array();
  for (const auto& [from, to] : links)
    lines.push_back(
        {{"x", at[from].first}, {"y", at[from].second}, {"x2", at[to].first}, {"y2", at[to].second}});
  int tallest = 1;
  for (const auto& [x, count] : used) tallest = std::max(tallest, count);
  int widest = 0;
  for (const auto& [x, count] : used) widest = std::max(widest, x);
  // Half a layer of room on each side, for the labels.
  auto enc = [&](const char* f) {
    json e = {{"field", f}, {"type", "quantitative"}, {"axis", nullptr}};
    if (f[0] == 'x')
      e["scale"] = {{"domain", json::array({-0.5, widest + 0.5})}};
    else
      e["scale"] = {{"domain", json::array({-0.5, tallest - 0.5})}};
    return e;
  };
  json spec = {{"title", "lineage"}, {"width", 640}, {"height", 60 + 40 * tallest}};
  spec["layer"] = json::array(
      {{{"data", {{"values", lines}}},
        {"mark", {{"type", "rule"}, {"color", "#999"}}},
        {"encoding",
         {{"x", enc("x")}, {"y", enc("y")}, {"x2", {{"field", "x2"}}}, {"y2", {{"field", "y2"}}}}}},
       {{"data", {{"values", points}}},
        {"mark", {{"type", "point"}, {"filled", true}, {"size", 220}, {"tooltip", true}}},
        {"encoding",
         {{"x", enc("x")},
          {"y", enc("y")},
          {"color", {{"field", "kind"}, {"type", "nominal"}}},
          {"shape", {{"field", "focus"}, {"type", "nominal"}, {"legend", nullptr}}}}}},
       {{"data", {{"values", points}}},
        {"mark", {{"type", "text"}, {"dy", -14}, {"fontSize", 11}}},
        {"encoding", {{"x", enc("x")}, {"y", enc("y")}, {"text", {{"field", "label"}}}}}}});
  return spec;
}

// Beeswarm: one point per (row, feature), x its contribution, color the feature's value scaled
// within the feature, jittered within its band.
json shap_chart(const json& rows) {
  json spec = {
      {"title", "SHAP summary"}, {"width", 560}, {"height", {{"step", 36}}}, {"data", {{"values", rows}}}};
  spec["transform"] = json::array(
      {{{"joinaggregate", json::array({{{"op", "min"}, {"field", "value"}, {"as", "vmin"}},
                                       {{"op", "max"}, {"field", "value"}, {"as", "vmax"}}})},
        {"groupby", json::array({"feature"})}},
       {{"calculate",
         "datum.vmax > datum.vmin ? (datum.value - datum.vmin) / (datum.vmax - datum.vmin) : 0.5"},
        {"as", "scaled"}},
       {{"calculate", "random()"}, {"as", "jitter"}}});
  spec["mark"] = {{"type", "circle"}, {"size", 18}, {"opacity", 0.8}};
  spec["encoding"] = {
      {"y", {{"field", "feature"}, {"type", "nominal"}, {"title", ""}}},
      {"yOffset", {{"field", "jitter"}, {"type", "quantitative"}}},
      {"x", {{"field", "contribution"}, {"type", "quantitative"}, {"title", "contribution to the output"}}},
      {"color",
       {{"field", "scaled"},
        {"type", "quantitative"},
        {"title", "feature value (low→high)"},
        {"scale", {{"scheme", "redblue"}, {"reverse", true}}}}},
      {"tooltip", json::array({{{"field", "feature"}}, {{"field", "value"}}, {{"field", "contribution"}}})}};
  return spec;
}

// A section for an optional SQL function: "not available" without it, "not requested" without the
// options it needs, else its result as a chart and a table; an error from it is shown, not fatal.
template <class Run>
void optional_section(Page& page, const std::string& title, bool available, const std::string& function,
                      const std::string& missing_options, Run&& run) {
  page.section(title);
  if (!available) {
    page.para(fmt::format("not available: this database has no {}", function), "na");
    return;
  }
  if (!missing_options.empty()) {
    page.para(fmt::format("not requested: give {}", missing_options), "na");
    return;
  }
  try {
    run();
  } catch (const Failure& f) {
    page.para(fmt::format("{} failed: {}", function, f.what()), "error");
  }
}

// Long results (a text column naming the measure, e.g. feature_importance's `measure`,
// fairness's `metric`, and a numeric `value`): one panel of bars per measure, each with its own
// scale. Rows with a `scope` other than "group" (fairness's differences and ratios) stay in the table.
json faceted_bars(const json& rows, const std::string& facet, const std::string& category,
                  const std::string& title) {
  json shown = json::array();
  for (const auto& r : rows)
    if (!r.contains("scope") || r["scope"] == "group") shown.push_back(r);
  json spec = {{"title", title}, {"data", {{"values", shown}}}};
  spec["facet"] = {{"row", {{"field", facet}, {"type", "nominal"}, {"title", ""}}}};
  spec["spec"] = {{"width", 520},
                  {"mark", {{"type", "bar"}, {"tooltip", true}}},
                  {"encoding",
                   {{"y", {{"field", category}, {"type", "nominal"}, {"title", ""}}},
                    {"x", {{"field", "value"}, {"type", "quantitative"}, {"title", ""}}},
                    {"color", {{"field", category}, {"type", "nominal"}, {"legend", nullptr}}}}}};
  spec["resolve"] = {{"scale", {{"x", "independent"}, {"y", "independent"}}}};
  return spec;
}

// Objects and arrays in a row (fairness's group, a jsonb) as their JSON text, so charts can name them.
json flatten(const json& rows) {
  json out = json::array();
  for (const auto& r : rows) {
    json flat = r;
    if (flat.is_object())
      for (auto& [k, v] : flat.items())
        if (v.is_object() || v.is_array()) v = text_of(v);
    out.push_back(std::move(flat));
  }
  return out;
}

void chart_rows(Page& page, const json& raw, const std::string& title,
                const std::vector<std::string>& category_keys,
                const std::vector<std::string>& prefer_measures,
                const std::vector<std::string>& facet_keys = {}) {
  const json rows = flatten(raw);
  if (rows.empty()) {
    page.para("no rows");
    return;
  }
  for (const auto& facet : facet_keys) {
    if (!rows[0].is_object() || !rows[0].contains(facet) || !rows[0].contains("value")) continue;
    std::string category;
    for (const auto& k : category_keys)
      if (rows[0].contains(k)) category = k;
    if (category.empty()) break;
    page.chart(faceted_bars(rows, facet, category, title));
    page.table_of(rows);
    return;
  }
  const std::string category = text_key(rows, category_keys);
  std::vector<std::string> measures;
  for (const auto& m : prefer_measures)
    if (rows[0].is_object() && rows[0].contains(m) && rows[0][m].is_number()) measures.push_back(m);
  if (measures.empty()) measures = number_keys(rows);
  if (!category.empty() && !measures.empty()) page.chart(bars(rows, category, measures, title));
  page.table_of(rows);
}

const char* kStyle = R"~(
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } .na { color: #777; font-style: italic; } .error { color: #b00; }
.chart { margin: 1em 0; } code { background: #f4f4f4; padding: 0 .2em; }
)~";

// Draws every chart; records script errors and the outcome in #report-status (the test reads it).
const char* kRender = R"~(
window.__reportErrors = window.__reportErrors || [];
(function () {
  var status = document.getElementById('report-status');
  var ids = Object.keys(FLOCK_CHARTS);
  Promise.all(ids.map(function (id) {
    return vegaEmbed('#' + id, FLOCK_CHARTS[id], {renderer: 'svg', actions: false})
      .then(function () { document.getElementById(id).setAttribute('data-rendered', 'yes'); });
  })).catch(function (e) { window.__reportErrors.push(String(e && e.stack || e)); })
    .then(function () {
      status.setAttribute('data-done', 'yes');
      status.textContent = JSON.stringify({charts: ids.length, errors: window.__reportErrors});
    });
})();
)~";

}  // namespace

int cmd_report(const Invocation& inv) {
  const std::string& ref = inv.args[0];
  if (ref.empty()) throw UsageError("the model REF must not be empty", "report");
  auto out_path = option(inv, "html");
  if (!out_path || out_path->empty()) throw UsageError("'report' needs --html FILE", "report");
  auto data = option(inv, "data");
  auto baseline = option(inv, "baseline"), current = option(inv, "current");
  auto sensitive = option(inv, "sensitive"), label = option(inv, "label"), positive = option(inv, "positive");
  int explain_rows = kDefaultExplainRows;
  if (auto n = option(inv, "rows")) {
    char* end = nullptr;
    long v = std::strtol(n->c_str(), &end, 10);
    if (n->empty() || *end || v < 1 || v > 100000)
      throw UsageError(fmt::format("--rows '{}' is not a row count (1 to 100000)", *n), "report");
    explain_rows = static_cast<int>(v);
  }
  const std::string library = find_chart_library();

  Page page;
  std::string title;
  with_connection(inv, [&](Connection& conn) {
    json info = query_json(conn, "SELECT flock.model_info($1)::text", {Param::text(ref)});
    if (!info.is_object()) throw Failure(fmt::format("model \"{}\" does not exist", ref));
    const std::string model_ref = text_of(info["ref"]);
    title = "Model report: " + model_ref;

    page.section("Model");
    page.table({}, {{"reference", model_ref},
                    {"sha256", text_of(info["sha256"])},
                    {"format", text_of(info["format"])},
                    {"task", text_of(info["task"])},
                    {"size (bytes)", text_of(info["size_bytes"])},
                    {"registered by", text_of(info["created_by"])},
                    {"registered at", text_of(info["created_at"])},
                    {"description", text_of(info["description"])},
                    {"producer", text_of(info["producer"])}});

    page.section("Signature");
    json inputs = json::array();
    for (const auto& in : info["inputs"])
      inputs.push_back({{"input", in["name"]},
                        {"type", in["type"]},
                        {"shape", text_of(in["shape"])},
                        {"accepts NULL", in.value("accepts_null", false) ? "yes" : "no"}});
    page.table_of(inputs);
    if (info.contains("features") && !info["features"].empty())
      page.para("features, in order: " + text_of(info["features"]));
    json outputs = json::array();
    for (const auto& o : info["outputs"]) outputs.push_back({{"output", o["name"]}, {"type", o["type"]}});
    page.table_of(outputs);
    if (info.contains("classes")) page.para("classes: " + text_of(info["classes"]));
    page.para("operators: " + text_of(info["operators"]));

    page.section("Lineage");
    json edges =
        query_json(conn,
                   "SELECT coalesce(jsonb_agg(to_jsonb(l) - 'detail' ORDER BY depth, from_ref, to_ref), "
                   "'[]')::text FROM flock.lineage($1, 'both') l",
                   {Param::text(model_ref)});
    if (edges.is_array() && !edges.empty()) {
      page.chart(lineage_chart(edges, model_ref));
      page.table_of(edges);
    } else {
      page.para("no lineage recorded");
    }

    page.section("Training run");
    json runs = query_json(
        conn,
        "SELECT coalesce(jsonb_agg(to_jsonb(r) - 'code' - 'id' || jsonb_build_object('datasets', "
        "  (SELECT jsonb_agg(i.dataset_name || '@' || i.dataset_version) FROM flock.training_inputs i "
        "    WHERE i.run_id = r.id)) ORDER BY r.logged_at DESC), '[]')::text "
        "FROM flock.training_runs r WHERE r.model_name = $1 AND r.model_version = $2::int",
        {Param::text(text_of(info["name"])), Param::text(text_of(info["version"]))});
    if (runs.is_array() && !runs.empty()) {
      const json& run = runs[0];
      page.table({}, {{"run", text_of(run["run_id"])},
                      {"data sets", text_of(run["datasets"])},
                      {"code", text_of(run["code_ref"])},
                      {"code sha256", text_of(run["code_sha256"])},
                      {"parameters", text_of(run["params"])},
                      {"environment", text_of(run["environment"])},
                      {"logged by", text_of(run["logged_by"])},
                      {"logged at", text_of(run["logged_at"])}});
      page.section("Metrics");
      json metrics = json::array();
      for (const auto& [k, v] : run["metrics"].items())
        if (v.is_number()) metrics.push_back({{"metric", k}, {"value", v}});
      if (!metrics.empty()) {
        page.chart(bars(metrics, "metric", {"value"}, "metrics of the training run"));
        page.table_of(metrics);
      } else {
        page.para("no numeric metrics recorded");
      }
    } else {
      page.para("no training run recorded (flock.log_training, flockctl register --dataset ...)");
      page.section("Metrics");
      page.para("no training run recorded");
    }

    // By signature (issue 14's, with the optional arguments the functions have), or failing that
    // by name: the report calls them with their leading arguments only.
    Result avail = conn.exec(
        "SELECT to_regprocedure(sig) IS NOT NULL OR EXISTS (SELECT 1 FROM pg_catalog.pg_proc p "
        "         JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'flock' "
        "          AND p.proname = name) "
        "  FROM (VALUES (1, 'feature_importance', 'flock.feature_importance(text,text)'), "
        "               (2, 'explain_rows', 'flock.explain_rows(text,record,text,text)'), "
        "               (3, 'drift', 'flock.drift(text,text,text,float8,float8)'), "
        "               (4, 'fairness', 'flock.fairness(text,text,text,text,text)')) f(k, name, sig) ORDER "
        "BY k");
    Result results_table = conn.exec("SELECT to_regclass('flock.monitor_results') IS NOT NULL");
    auto has = [&](int k) { return avail.get(k, 0) == "t"; };

    optional_section(page, "Global importance", has(0), "flock.feature_importance(model, data)", "", [&] {
      json rows = as_rows(query_json(
          conn, "SELECT coalesce(jsonb_agg(to_jsonb(x)), '[]')::text FROM flock.feature_importance($1, $2) x",
          {Param::text(model_ref), Param::text(data)}));
      chart_rows(page, rows, "global importance", {"feature"},
                 {"importance", "gain", "mean_abs_shap", "value"}, {"measure"});
    });
    optional_section(
        page, "SHAP summary", has(1), "flock.explain_rows(model, input)",
        data ? "" : "--data 'SQL' (the rows to explain)", [&] {
          json rows = query_json(
              conn,
              fmt::format(
                  "SELECT coalesce(jsonb_agg(jsonb_build_object('feature', e.feature, 'value', e.value, "
                  "'contribution', e.contribution)), '[]')::text "
                  "FROM (SELECT d FROM ({}\n) d LIMIT $2) s, flock.explain_rows($1, s.d) e "
                  "WHERE e.feature IS DISTINCT FROM 'base_value'",
                  *data),
              {Param::text(model_ref), Param::int4(explain_rows)});
          if (!rows.is_array() || rows.empty()) {
            page.para("no rows");
            return;
          }
          page.chart(shap_chart(rows));
          page.para(
              fmt::format("{} contributions over at most {} rows of --data", rows.size(), explain_rows));
        });
    optional_section(
        page, "Drift", has(2), "flock.drift(model, baseline, current)",
        baseline && current ? "" : "--baseline and --current (data set references or queries)", [&] {
          json rows = as_rows(query_json(
              conn, "SELECT coalesce(jsonb_agg(to_jsonb(x)), '[]')::text FROM flock.drift($1, $2, $3) x",
              {Param::text(model_ref), Param::text(baseline), Param::text(current)}));
          chart_rows(page, rows, "drift per feature", {"feature", "column", "name"}, {"psi", "ks_statistic"});
        });
    optional_section(
        page, "Drift over time", results_table.get(0, 0) == "t", "flock.monitor_results", "", [&] {
          json rows = query_json(
              conn,
              "SELECT coalesce(jsonb_agg(jsonb_build_object('window_start', window_start, 'feature', "
              "feature, "
              "'psi', psi) ORDER BY window_start, feature), '[]')::text FROM flock.monitor_results "
              "WHERE model_name = $1 AND model_version = $2::int",
              {Param::text(text_of(info["name"])), Param::text(text_of(info["version"]))});
          if (!rows.is_array() || rows.empty()) {
            page.para("no monitor results for this version (flock.monitor, flock.schedule_monitor)");
            return;
          }
          page.chart({{"title", "PSI per feature and window"},
                      {"width", 560},
                      {"data", {{"values", rows}}},
                      {"mark", {{"type", "line"}, {"point", true}, {"tooltip", true}}},
                      {"encoding",
                       {{"x", {{"field", "window_start"}, {"type", "temporal"}, {"title", "window"}}},
                        {"y", {{"field", "psi"}, {"type", "quantitative"}, {"title", "PSI"}}},
                        {"color", {{"field", "feature"}, {"type", "nominal"}}}}}});
        });
    optional_section(
        page, "Fairness", has(3), "flock.fairness(model, data, sensitive, label, positive)",
        data && sensitive && label ? "" : "--data, --sensitive and --label", [&] {
          json rows = as_rows(query_json(
              conn,
              "SELECT coalesce(jsonb_agg(to_jsonb(x)), '[]')::text FROM flock.fairness($1, $2, $3, $4, $5) x",
              {Param::text(model_ref), Param::text(data), Param::text(sensitive), Param::text(label),
               Param::text(positive)}));
          chart_rows(page, rows, "fairness by group", {"group", "sensitive_value"},
                     {"selection_rate", "tpr", "fpr", "precision", "accuracy"}, {"metric"});
        });
    return 0;
  });

  std::string html =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>" + html_escape(title) +
      "</title>\n<style>" + kStyle + "</style>\n" +
      "<script>window.__reportErrors = [];\n"
      "window.addEventListener('error', function (e) { window.__reportErrors.push(String(e.message)); "
      "});</script>\n";
  for (const char* f : kChartFiles) html += inline_script(library + "/" + f);
  html += "</head><body>\n<h1>" + html_escape(title) + "</h1>\n" + page.body +
          "<p class=\"na\" id=\"report-status\" hidden></p>\n<script>var FLOCK_CHARTS = " +
          script_json(page.charts) + ";\n" + kRender + "</script>\n</body></html>\n";
  std::ofstream f(*out_path, std::ios::binary | std::ios::trunc);
  if (!f) throw InputError(fmt::format("cannot write {}", *out_path));
  f << html;
  f.close();
  if (!f) throw InputError(fmt::format("cannot write {}", *out_path));
  write_out(fmt::format("wrote {} ({} charts)\n", *out_path, page.charts.size()));
  return 0;
}

}  // namespace flock::cli
