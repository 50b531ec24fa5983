// A small RAII layer over libpq: connect, run parameterized statements, turn errors into
// Failure exceptions that carry the server's message, detail, hint and SQLSTATE.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <libpq-fe.h>

#include "options.hpp"

namespace flock::cli {

// A failed operation or connection (exit status 1).
class Failure : public std::runtime_error {
 public:
  explicit Failure(const std::string& message, std::string detail_ = {}, std::string hint_ = {},
                   std::string sqlstate_ = {})
      : std::runtime_error(message),
        detail(std::move(detail_)),
        hint(std::move(hint_)),
        sqlstate(std::move(sqlstate_)) {}

  std::string detail;
  std::string hint;
  std::string sqlstate;
};

// One statement parameter. Text parameters are sent in text format; binary ones (bytea) are sent
// as raw bytes with paramFormats = 1, never escaped.
struct Param {
  static constexpr Oid kText = 25, kBytea = 17, kInt4 = 23, kTextArray = 1009;

  std::optional<std::string> value;  // nullopt is SQL NULL
  Oid type = kText;
  bool binary = false;

  static Param text(std::optional<std::string> v) { return {std::move(v), kText, false}; }
  static Param int4(std::optional<int> v) {
    return {v ? std::optional<std::string>(std::to_string(*v)) : std::nullopt, kInt4, false};
  }
  static Param bytea(std::string bytes) { return {std::move(bytes), kBytea, true}; }
  // A text[] in array-literal form; nullopt is NULL.
  static Param text_array(const std::optional<std::vector<std::string>>& items);
};

class Result {
 public:
  explicit Result(PGresult* r) : r_(r) {}
  Result(Result&& o) noexcept : r_(o.r_) { o.r_ = nullptr; }
  Result& operator=(Result&&) = delete;
  Result(const Result&) = delete;
  ~Result() { PQclear(r_); }

  int rows() const { return PQntuples(r_); }
  int cols() const { return PQnfields(r_); }
  bool is_null(int row, int col) const { return PQgetisnull(r_, row, col) != 0; }
  std::string_view get(int row, int col) const {
    return {PQgetvalue(r_, row, col), static_cast<std::size_t>(PQgetlength(r_, row, col))};
  }

 private:
  PGresult* r_;
};

class Connection {
 public:
  // Connects with the command-line settings layered over libpq's defaults. Throws Failure.
  explicit Connection(const ConnOptions& opts);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() { PQfinish(conn_); }

  // Runs one statement; throws Failure with the server's error fields when it fails.
  Result exec(const std::string& sql, const std::vector<Param>& params = {});

  std::string dbname() const { return PQdb(conn_); }
  bool in_transaction() const { return PQtransactionStatus(conn_) != PQTRANS_IDLE; }

 private:
  PGconn* conn_ = nullptr;
};

}  // namespace flock::cli
