#include "commands.hpp"


#include <charconv>
#include <climits>
#include <cstdio>

#include <fmt/format.h>

#include "common.hpp"
#include "pq.hpp"
#include "table.hpp"

namespace flock::cli {
namespace {

constexpr std::size_t kDescriptionWidth = 60;

std::optional<int> parse_version(std::string_view s) {
  int v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < 1) return std::nullopt;
  return v;
}

}  // namespace

int cmd_register(const Invocation& inv) {
  auto name = option(inv, "name");
  if (!name) throw UsageError("'register' needs --name NAME", "register");
  if (name->empty()) throw UsageError("--name must not be empty", "register");
  std::string format = option(inv, "format").value_or("auto");
  if (format != "auto" && format != "onnx" && format != "xgboost")
    throw UsageError(fmt::format("unknown --format '{}': use auto, onnx or xgboost", format), "register");
  std::optional<std::vector<std::string>> features;
  if (auto f = option(inv, "features")) features = split_list(*f, "features", "feature name", "age,income,tenure", "register");
  std::string bytes = read_file(inv.args[0], "model file", kMaxModelBytes);

  return with_connection(inv, [&](Connection& conn) {
    Result r = conn.exec("SELECT flock.register_model($1, $2, $3, $4, $5)",
                         {Param::text(*name), Param::bytea(std::move(bytes)), Param::text(format),
                          Param::text(option(inv, "description")), Param::text_array(features)});
    std::string ref(r.get(0, 0));

    // Show the stored format and checksum; the model is registered even if this lookup fails.
    std::string extra;
    if (auto at = ref.rfind('@'); at != std::string::npos) {
      if (auto version = parse_version(std::string_view(ref).substr(at + 1))) {
        try {
          Result m = conn.exec("SELECT format, sha256 FROM flock.models WHERE name = $1 AND version = $2",
                               {Param::text(ref.substr(0, at)), Param::int4(version)});
          if (m.rows() == 1 && !m.is_null(0, 0) && !m.is_null(0, 1))
            extra = fmt::format(" ({}, sha256 {}…)", m.get(0, 0), m.get(0, 1).substr(0, kShortSha256));
        } catch (const Failure&) {
        }
      }
    }
    write_out(fmt::format("registered {}{}\n", ref, extra));
    return 0;
  });
}

int cmd_models(const Invocation& inv) {
  std::optional<std::string> name;
  if (!inv.args.empty()) name = inv.args[0];
  return with_connection(inv, [&](Connection& conn) {
    Result r = conn.exec(
        "SELECT name, version, format, left(sha256, 12), created_by,"
        "       to_char(created_at, 'YYYY-MM-DD HH24:MI:SSOF'), description"
        "  FROM flock.models WHERE $1::text IS NULL OR name = $1::text ORDER BY name, version",
        {Param::text(name)});
    if (r.rows() == 0) {
      if (name) throw Failure(fmt::format("model \"{}\" does not exist", *name), "", "flockctl models lists all models");
      write_out("no models registered\n");
      return 0;
    }
    std::vector<Column> columns{{"name"},       {"version", true}, {"format"},     {"sha256"},
                                {"created_by"}, {"created_at"},    {"description"}};
    constexpr int kDescriptionColumn = 6;  // the query's last column
    std::vector<std::vector<std::string>> rows;
    for (int i = 0; i < r.rows(); ++i) {
      std::vector<std::string> row;
      for (int j = 0; j < r.cols(); ++j)
        row.push_back(
            r.is_null(i, j) ? "" : one_line(r.get(i, j), j == kDescriptionColumn ? kDescriptionWidth : 200));
      rows.push_back(std::move(row));
    }
    write_out(render_table(columns, rows));
    return 0;
  });
}

int cmd_info(const Invocation& inv) {
  const std::string& ref = inv.args[0];
  if (ref.empty()) throw UsageError("the model REF must not be empty", "info");
  return with_connection(inv, [&](Connection& conn) {
    Result r = conn.exec("SELECT jsonb_pretty(flock.model_info($1))", {Param::text(ref)});
    if (r.rows() != 1 || r.is_null(0, 0)) throw Failure(fmt::format("model \"{}\" does not exist", ref));
    write_out(r.get(0, 0));
    write_out("\n");
    return 0;
  });
}

int cmd_drop(const Invocation& inv) {
  std::string name = inv.args[0];
  std::optional<int> version;
  if (auto v = option(inv, "version")) {
    version = parse_version(*v);
    if (!version) throw UsageError(fmt::format("--version '{}' is not a version number (1, 2, …)", *v), "drop");
  }
  if (auto at = name.rfind('@'); at != std::string::npos) {
    if (auto v = parse_version(std::string_view(name).substr(at + 1))) {
      if (version && *version != *v)
        throw UsageError(fmt::format("'{}' and --version {} name different versions", name, *version), "drop");
      version = v;
      name.resize(at);
    }
  }
  if (name.empty()) throw UsageError("the model NAME must not be empty", "drop");

  return with_connection(inv, [&](Connection& conn) {
    // drop_model raises for an unknown model or version and returns how many versions went.
    Result r = conn.exec("SELECT flock.drop_model($1, $2)", {Param::text(name), Param::int4(version)});
    std::optional<long> count;
    if (r.rows() == 1 && r.cols() == 1 && !r.is_null(0, 0)) {
      long n = 0;
      std::string_view v = r.get(0, 0);
      if (auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n); ec == std::errc() && end == v.data() + v.size())
        count = n;
    }
    std::string ref = version ? fmt::format("{}@{}", name, *version) : name;
    if (count && *count == 0) throw Failure(fmt::format("model \"{}\" does not exist", ref));
    if (version || !count)
      write_out(fmt::format("dropped {}\n", ref));
    else
      write_out(fmt::format("dropped {} ({} version{})\n", name, *count, *count == 1 ? "" : "s"));
    return 0;
  });
}

}  // namespace flock::cli
