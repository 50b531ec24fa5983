#include "common.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <fmt/format.h>

namespace flock::cli {

std::optional<std::string> option(const Invocation& inv, const std::string& name) {
  auto it = inv.options.find(name);
  if (it == inv.options.end()) return std::nullopt;
  return it->second;
}

void write_out(std::string_view s) { std::fwrite(s.data(), 1, s.size(), stdout); }

// stdio rather than open(2): <fcntl.h> declares a `struct flock` that clashes with our namespace.
std::string read_file(const std::string& path, std::string_view what, std::size_t limit) {
  bool is_stdin = path == "-";
  std::string shown = is_stdin ? "standard input" : fmt::format("{} '{}'", what, path);
  std::FILE* f = is_stdin ? stdin : std::fopen(path.c_str(), "rb");
  if (!f) throw InputError(fmt::format("cannot read {}: {}", shown, std::strerror(errno)));
  struct Closer {
    std::FILE* f;
    bool close;
    ~Closer() {
      if (close) std::fclose(f);
    }
  } closer{f, !is_stdin};

  struct stat st {};
  if (::fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode))
    throw InputError(fmt::format("cannot read {}: {}", shown, std::strerror(EISDIR)));
  std::string bytes;
  if (S_ISREG(st.st_mode) && static_cast<std::size_t>(st.st_size) <= limit)
    bytes.reserve(static_cast<std::size_t>(st.st_size));
  char buf[1 << 16];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, f)) {
    bytes.append(buf, n);
    if (bytes.size() > limit)
      throw InputError(fmt::format("cannot read {}: larger than the {} MB it may take", shown, limit >> 20));
  }
  if (std::ferror(f)) throw InputError(fmt::format("cannot read {}: {}", shown, std::strerror(errno)));
  return bytes;
}

std::vector<std::string> split_list(const std::string& list, std::string_view option_name,
                                    std::string_view item_noun, std::string_view example,
                                    std::string_view command) {
  std::vector<std::string> items;
  std::size_t pos = 0;
  for (;;) {
    std::size_t comma = list.find(',', pos);
    std::string item = list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    std::size_t b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    item = b == std::string::npos ? "" : item.substr(b, e - b + 1);
    if (item.empty())
      throw UsageError(fmt::format("--{} '{}' has an empty {}; separate them by commas, e.g. --{} {}",
                                   option_name, list, item_noun, option_name, example),
                       std::string(command));
    items.push_back(item);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return items;
}

bool extension_missing(Connection& conn, const Failure& f) {
  if (f.sqlstate != "3F000" && f.sqlstate != "42883" && f.sqlstate != "42P01") return false;
  try {
    if (conn.in_transaction()) conn.exec("ROLLBACK");
    return conn.exec("SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'flock')").get(0, 0) ==
           "t";
  } catch (const Failure&) {
    return false;
  }
}

void throw_extension_missing(Connection& conn, const Failure& f) {
  throw Failure(fmt::format("the flock extension is not installed in database \"{}\"", conn.dbname()), f.what(),
                "run CREATE EXTENSION flock; in that database, or pick another with -d DBNAME", f.sqlstate);
}

}  // namespace flock::cli
