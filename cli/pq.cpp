#include "pq.hpp"

#include "options.hpp"

#include <cctype>
#include <cstdio>

namespace flock::cli {
namespace {

std::string field(const PGresult* r, int code) {
  const char* v = PQresultErrorField(r, code);
  return v ? v : "";
}

std::string trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

// libpq's own messages (connection failures, a lost connection) are several lines: a primary
// line per attempted server, then tab-indented advice. Keep the first line as the message, other
// unindented lines as detail and the indented advice as a hint.
Failure client_failure(std::string_view raw, std::string_view fallback) {
  std::string primary, detail, hint;
  std::size_t pos = 0;
  while (pos < raw.size()) {
    std::size_t end = raw.find('\n', pos);
    if (end == std::string_view::npos) end = raw.size();
    std::string_view line = raw.substr(pos, end - pos);
    pos = end + 1;
    bool indented = !line.empty() && std::isspace(static_cast<unsigned char>(line.front()));
    std::string text = trim(line);
    if (text.empty()) continue;
    for (std::string_view prefix : {"ERROR:  ", "FATAL:  "})
      if (text.starts_with(prefix)) text.erase(0, prefix.size());
    for (std::size_t p; (p = text.find("FATAL:  ")) != std::string::npos;) text.erase(p + 6, 1);
    std::string& into = indented ? hint : primary.empty() ? primary : detail;
    if (!into.empty()) into += indented ? " " : "\n";
    into += text;
  }
  if (primary.empty()) primary = fallback;
  return Failure(primary, detail, hint);
}

void print_notice(void*, const PGresult* r) {
  std::string severity = field(r, PG_DIAG_SEVERITY_NONLOCALIZED);
  if (severity.empty()) severity = field(r, PG_DIAG_SEVERITY);
  for (char& c : severity) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (severity.empty()) severity = "notice";
  std::string message = field(r, PG_DIAG_MESSAGE_PRIMARY);
  if (message.empty()) message = trim(PQresultErrorMessage(r));
  std::fprintf(stderr, "%s: %s: %s\n", kProgram.data(), severity.c_str(), message.c_str());
  if (std::string d = field(r, PG_DIAG_MESSAGE_DETAIL); !d.empty()) std::fprintf(stderr, "detail: %s\n", d.c_str());
  if (std::string h = field(r, PG_DIAG_MESSAGE_HINT); !h.empty()) std::fprintf(stderr, "hint: %s\n", h.c_str());
}

}  // namespace

Param Param::text_array(const std::optional<std::vector<std::string>>& items) {
  if (!items) return {std::nullopt, kTextArray, false};
  std::string lit = "{";
  for (std::size_t i = 0; i < items->size(); ++i) {
    if (i) lit += ',';
    lit += '"';
    for (char c : (*items)[i]) {
      if (c == '"' || c == '\\') lit += '\\';
      lit += c;
    }
    lit += '"';
  }
  lit += '}';
  return {std::move(lit), kTextArray, false};
}

Connection::Connection(const ConnOptions& opts) {
  // The same order as psql: an expanded dbname connection string overrides -h/-p/-U.
  std::vector<const char*> keys, values;
  auto add = [&](const char* key, const std::optional<std::string>& value) {
    if (value) {
      keys.push_back(key);
      values.push_back(value->c_str());
    }
  };
  add("host", opts.host);
  add("port", opts.port);
  add("user", opts.username);
  add("dbname", opts.dbname);
  keys.push_back("fallback_application_name");
  values.push_back(kProgram.data());
  keys.push_back(nullptr);
  values.push_back(nullptr);

  conn_ = PQconnectdbParams(keys.data(), values.data(), /*expand_dbname=*/1);
  if (!conn_) throw Failure("could not connect: out of memory");
  if (PQstatus(conn_) != CONNECTION_OK) {
    Failure f = client_failure(PQerrorMessage(conn_), "could not connect to the database");
    if (std::string_view(f.what()).find("connection to server") == std::string_view::npos)
      f = Failure(std::string("could not connect: ") + f.what(), f.detail, f.hint);
    PQfinish(conn_);  // the destructor does not run for a throwing constructor
    conn_ = nullptr;
    throw f;
  }
  PQsetNoticeReceiver(conn_, print_notice, nullptr);
}

Result Connection::exec(const std::string& sql, const std::vector<Param>& params) {
  std::vector<Oid> types;
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
  for (const auto& p : params) {
    types.push_back(p.type);
    values.push_back(p.value ? p.value->data() : nullptr);
    lengths.push_back(p.value ? static_cast<int>(p.value->size()) : 0);
    formats.push_back(p.binary ? 1 : 0);
  }
  PGresult* r = PQexecParams(conn_, sql.c_str(), static_cast<int>(params.size()), types.data(), values.data(),
                             lengths.data(), formats.data(), /*resultFormat=*/0);
  Result res(r);
  if (!r) throw client_failure(PQerrorMessage(conn_), "the query failed (out of memory?)");
  ExecStatusType status = PQresultStatus(r);
  if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK) return res;
  std::string primary = field(r, PG_DIAG_MESSAGE_PRIMARY);
  if (primary.empty()) {  // not from the server: a lost connection or the like
    const char* msg = PQresultErrorMessage(r);
    throw client_failure(msg && *msg ? msg : PQerrorMessage(conn_), "the query failed");
  }
  throw Failure(primary, field(r, PG_DIAG_MESSAGE_DETAIL), field(r, PG_DIAG_MESSAGE_HINT),
                field(r, PG_DIAG_SQLSTATE));
}

}  // namespace flock::cli
