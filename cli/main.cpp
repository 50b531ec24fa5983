// flockctl: the command-line client for models stored by the flock PostgreSQL extension.
//
// Exit status: 0 on success, 1 when the operation or the connection failed, 2 for a usage error
// (unknown command or option, missing argument, unreadable model file).

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <libpq-fe.h>

#include "commands.hpp"
#include "governance.hpp"
#include "options.hpp"
#include "pq.hpp"

using namespace flock::cli;

namespace {

void print_error(const std::string& message) { std::fprintf(stderr, "%s: error: %s\n", kProgram.data(), message.c_str()); }

int usage_error(const UsageError& e) {
  print_error(e.what());
  std::string cmd = e.command().empty() ? "" : e.command() + " ";
  std::fprintf(stderr, "%s\nTry '%s %s--help' for more information.\n", usage_line(e.command()).c_str(),
               kProgram.data(), cmd.c_str());
  return 2;
}

int failure(const Failure& f) {
  print_error(f.what());
  if (!f.detail.empty()) std::fprintf(stderr, "detail: %s\n", f.detail.c_str());
  if (!f.hint.empty()) std::fprintf(stderr, "hint: %s\n", f.hint.c_str());
  if (!f.sqlstate.empty()) std::fprintf(stderr, "(SQLSTATE %s)\n", f.sqlstate.c_str());
  return 1;
}

std::string version_text() {
  int v = PQlibVersion();
  return fmt::format("{} {} (libpq {}.{})\n", kProgram, FLOCK_VERSION, v / 10000, v % 10000);
}

int run(const std::vector<std::string>& argv) {
  Invocation inv;
  try {
    parse_command_line(argv, inv);
  } catch (const UsageError&) {
    if (!inv.help) throw;  // `flockctl register --help --bogus` still shows the help
  }
  if (inv.help) {
    std::fputs(help_text(inv.command).c_str(), stdout);
    return 0;
  }
  if (inv.version) {
    std::fputs(version_text().c_str(), stdout);
    return 0;
  }
  if (inv.command.empty()) throw UsageError("no command given: use register, models, info, drop, lineage, trace or report");
  return run_command(inv);
}

}  // namespace

int main(int argc, char** argv) {
  int status;
  try {
    status = run(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const UsageError& e) {
    status = usage_error(e);
  } catch (const InputError& e) {
    print_error(e.what());
    status = 2;
  } catch (const Failure& f) {
    status = failure(f);
  } catch (const std::exception& e) {
    print_error(e.what());
    status = 1;
  }
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    if (errno != EPIPE) print_error(fmt::format("cannot write the output: {}", std::strerror(errno)));
    return status == 0 ? 1 : status;
  }
  return status;
}
