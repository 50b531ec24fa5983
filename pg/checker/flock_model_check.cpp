// flock-model-check: validates one untrusted model in a short-lived process of its own.
//
// libonnx's checker and shape inference were not written for hostile input: some models crash
// them (SIGSEGV, SIGFPE), keep them busy for minutes or make them allocate gigabytes. A backend
// that did that would take the whole cluster down (PostgreSQL restarts every backend after a
// crash), so the backend runs this program instead (pg/src/model_check.cpp), under rlimits, kills it
// on cancel or statement_timeout, and turns its death into a clean error.
//
// Protocol (stdin, then stdout). The program reads ALL of its input before it writes anything, so
// a writer that fills the pipe cannot deadlock against it.
//   in:  "flock-model-check/1 format=<auto|onnx|xgboost> max_tensor_elements=<n> cpu_seconds=<n>
//         memory_mb=<n> features=<k> bytes=<n>\n"   (one line)
//        then k times "<len>\n<len bytes of a feature name>", then the model's <n> bytes.
//   out: "ok <len>\n<len bytes>"            valid; the bytes are the model with its feature names
//                                            embedded (k >= 0 given as -1: none, len 0)
//        "error <code> <msglen> <hintlen>\n<message><hint>"
//                                            rejected; <code> is a flock::ErrorCode name or
//                                            out_of_memory
// Pure core: no PostgreSQL headers (and no <fcntl.h>: its `struct flock` clashes with the namespace).
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "flock/error.hpp"
#include "flock/model.hpp"

namespace {

// The answer is written with write(2) only: no allocation once the model is loaded, and none at
// all from the out-of-memory handler.
void write_all(const void* data, size_t len) {
  const char* p = static_cast<const char*>(data);
  while (len > 0) {
    ssize_t n = write(STDOUT_FILENO, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) _exit(3);  // the backend went away
    p += n;
    len -= static_cast<size_t>(n);
  }
}

[[noreturn]] void answer_error(const char* code, const std::string& message, const std::string& hint) {
  char head[160];
  int n = snprintf(head, sizeof(head), "error %s %zu %zu\n", code, message.size(), hint.size());
  write_all(head, static_cast<size_t>(n));
  write_all(message.data(), message.size());
  write_all(hint.data(), hint.size());
  _exit(0);  // no static destructors: libonnx's registries are big and irrelevant now
}

// Every operator new that fails under RLIMIT_AS lands here: answer "out of memory" and stop, even
// where libonnx would otherwise turn std::bad_alloc into std::terminate.
void on_out_of_memory() {
  static const char kAnswer[] = "error out_of_memory 0 0\n";
  write_all(kAnswer, sizeof(kAnswer) - 1);
  _exit(0);
}

[[noreturn]] void usage_error(const char* what) {
  answer_error("internal", std::string("flock-model-check: ") + what, "");
}

const char* code_name(flock::ErrorCode code) {
  switch (code) {
    case flock::ErrorCode::InvalidModel: return "invalid_model";
    case flock::ErrorCode::UnsupportedOperator: return "unsupported_operator";
    case flock::ErrorCode::InvalidInput: return "invalid_input";
    case flock::ErrorCode::MissingValue: return "missing_value";
    case flock::ErrorCode::TypeMismatch: return "type_mismatch";
    case flock::ErrorCode::LimitExceeded: return "limit_exceeded";
    case flock::ErrorCode::Internal: return "internal";
    // The checker installs no interrupt check (the backend kills it instead), so no run is cancelled.
    case flock::ErrorCode::Cancelled: return "internal";
  }
  return "internal";
}

bool read_exact(void* out, size_t len) {
  return len == 0 || fread(out, 1, len, stdin) == len;
}

bool read_line(char* buf, size_t cap) {
  if (!fgets(buf, static_cast<int>(cap), stdin)) return false;
  size_t n = strlen(buf);
  if (n == 0 || buf[n - 1] != '\n') return false;
  buf[n - 1] = '\0';
  return true;
}

void set_limit(int resource, rlim_t soft, rlim_t hard) {
  struct rlimit rl = {soft, hard};
  if (setrlimit(resource, &rl) != 0) usage_error("could not set a resource limit");
}

}  // namespace

int main(int argc, char** argv) {
  // Inherit nothing but stdin/stdout/stderr, even if the parent leaked a descriptor.
  close_range(3, ~0U, 0);
  // Die with the backend: a checker must never outlive the statement that started it.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (argc == 3 && strcmp(argv[1], "--parent") == 0 && getppid() != static_cast<pid_t>(atol(argv[2]))) _exit(4);

  char header[512];
  char format[32];
  long long max_tensor_elements = 0, cpu_seconds = 0, memory_mb = 0, features = 0;
  unsigned long long nbytes = 0;
  if (!read_line(header, sizeof(header)) ||
      sscanf(header,
             "flock-model-check/1 format=%31s max_tensor_elements=%lld cpu_seconds=%lld memory_mb=%lld "
             "features=%lld bytes=%llu",
             format, &max_tensor_elements, &cpu_seconds, &memory_mb, &features, &nbytes) != 6 ||
      max_tensor_elements < 1 || cpu_seconds < 1 || memory_mb < 1 || features < -1)
    usage_error("malformed request header");

  // The limits, before a single byte of the model is read. RLIMIT_CPU's soft limit sends SIGXCPU
  // (default action: terminate), the hard limit one second later SIGKILL.
  set_limit(RLIMIT_CPU, static_cast<rlim_t>(cpu_seconds), static_cast<rlim_t>(cpu_seconds) + 1);
  rlim_t as = static_cast<rlim_t>(memory_mb) << 20;
  set_limit(RLIMIT_AS, as, as);
  set_limit(RLIMIT_CORE, 0, 0);
  set_limit(RLIMIT_NOFILE, 8, 8);
  std::set_new_handler(on_out_of_memory);

  std::vector<std::string> names;
  for (long long k = 0; k < features; ++k) {
    char line[32];
    unsigned long long len = 0;
    if (!read_line(line, sizeof(line)) || sscanf(line, "%llu", &len) != 1 || len > nbytes + (1u << 20))
      usage_error("malformed feature name");
    std::string name(len, '\0');
    if (!read_exact(name.data(), len)) usage_error("truncated feature name");
    names.push_back(std::move(name));
  }
  std::vector<uint8_t> bytes(nbytes);
  if (!read_exact(bytes.data(), nbytes)) usage_error("truncated model bytes");

  std::vector<uint8_t> result;
  try {
    flock::Limits limits;
    limits.max_tensor_elements = max_tensor_elements;
    flock::ModelFormat fmt = flock::parse_format(format);
    if (fmt == flock::ModelFormat::Auto) fmt = flock::detect_format(bytes);
    std::span<const uint8_t> final_bytes = bytes;
    if (features >= 0) {
      for (const auto& name : names)
        if (name.empty()) flock::fail(flock::ErrorCode::InvalidInput, "feature names must not be empty");
      result = flock::with_feature_names(bytes, fmt, names);
      final_bytes = result;
    }
    // Exactly what the backend compiles next: these bytes, this tensor limit, the format it sniffs
    // (and first the format the caller stated, which must fit too).
    flock::Model::load(final_bytes, fmt, limits);
    if (flock::detect_format(final_bytes) != fmt) flock::Model::load(final_bytes, flock::ModelFormat::Auto, limits);
  } catch (const flock::Error& e) {
    answer_error(code_name(e.code()), e.what(), e.hint());
  } catch (const std::bad_alloc&) {
    on_out_of_memory();
  } catch (const std::length_error&) {
    on_out_of_memory();  // a size past what the allocator can ever give
  } catch (const std::exception& e) {
    // Anything else a hostile model provokes inside a library is still a rejected model.
    answer_error("invalid_model", std::string("model rejected: ") + e.what(), "");
  } catch (...) {
    answer_error("invalid_model", "model rejected: unexpected exception while loading it", "");
  }

  char head[64];
  int n = snprintf(head, sizeof(head), "ok %zu\n", result.size());
  write_all(head, static_cast<size_t>(n));
  write_all(result.data(), result.size());
  _exit(0);
}
