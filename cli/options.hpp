// Command-line parsing, help texts and the command table of flockctl, the command-line client.
#pragma once

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace flock::cli {

// The program's name in help and messages. Not "flock": util-linux's flock(1) owns that name.
inline constexpr std::string_view kProgram = "flockctl";

// A mistake on the command line (exit status 2). `command` names the command whose help the
// message should point to, empty for the top level.
class UsageError : public std::runtime_error {
 public:
  UsageError(const std::string& message, std::string command = {})
      : std::runtime_error(message), command_(std::move(command)) {}
  const std::string& command() const noexcept { return command_; }

 private:
  std::string command_;
};

// Bad input that is not a command-line mistake as such, e.g. an unreadable model file (also
// exit status 2, without pointing to the help).
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// libpq connection settings given on the command line; unset ones fall back to libpq's own
// defaults (PG* environment variables, service files, .pgpass).
struct ConnOptions {
  std::optional<std::string> dbname;  // a database name or a full conninfo string / URI
  std::optional<std::string> host;
  std::optional<std::string> port;
  std::optional<std::string> username;
};

struct Invocation {
  std::string command;                         // "register", "models", "info", "drop", or empty
  std::vector<std::string> args;               // positional arguments after the command
  std::map<std::string, std::string> options;  // command options by long name, e.g. "name"
  ConnOptions conn;
  bool help = false;     // --help (or the `help` command): print help for `command`
  bool version = false;  // --version before any command
};

// Parses argv[1..]. Throws UsageError; on a throw, `inv` holds what was parsed so far (so that
// `flockctl register --help --bogus` can still show the register help).
void parse_command_line(const std::vector<std::string>& argv, Invocation& inv);

// Checks the parsed invocation against the command's requirements (number of arguments, options
// that belong to it). Throws UsageError.
void validate(const Invocation& inv);

bool is_command(std::string_view name);

// Validates the invocation and runs its command through the command table (name -> handler).
int run_command(const Invocation& inv);

// Help texts. An empty command gives the top-level help.
std::string help_text(std::string_view command);
std::string usage_line(std::string_view command);

}  // namespace flock::cli
