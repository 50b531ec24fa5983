// Helpers every flock subcommand uses: options, reading input files, comma lists, output, and a
// connection that explains a database without the extension.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "options.hpp"
#include "pq.hpp"

namespace flock::cli {

// bytea values and libpq parameter lengths top out well below this.
constexpr std::size_t kMaxModelBytes = std::size_t{1} << 30;

// Hex digits of a model's sha256 that "registered name@N (format, sha256 …)" shows.
constexpr std::size_t kShortSha256 = 8;

std::optional<std::string> option(const Invocation& inv, const std::string& name);

void write_out(std::string_view s);

// Reads a whole file ("-" is standard input); `what` names it in errors ("model file"). Throws
// InputError naming the file and why, also when it is a directory or larger than `limit` bytes.
std::string read_file(const std::string& path, std::string_view what, std::size_t limit);

// "a, b,c" -> {"a", "b", "c"}; an empty item is a UsageError of `command` that shows `example`.
std::vector<std::string> split_list(const std::string& list, std::string_view option_name,
                                    std::string_view item_noun, std::string_view example,
                                    std::string_view command);

// Whether a failed statement's error means the flock extension is missing from the database; if
// so, `conn` is left outside any transaction.
bool extension_missing(Connection& conn, const Failure& f);
[[noreturn]] void throw_extension_missing(Connection& conn, const Failure& f);

// Connects and runs `body`. When a statement fails because the flock schema or its functions are
// missing, and the extension is indeed not installed in this database, says so instead.
template <class Body>
int with_connection(const Invocation& inv, Body body) {
  Connection conn(inv.conn);
  try {
    return body(conn);
  } catch (Failure& f) {
    if (extension_missing(conn, f)) throw_extension_missing(conn, f);
    throw;
  }
}

}  // namespace flock::cli
