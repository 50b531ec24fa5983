// Isolated model validation: the backend hands untrusted model bytes to flock-model-check (a
// process of its own, under RLIMIT_CPU / RLIMIT_AS) and compiles them itself only once that
// process has loaded them without trouble. A crash, a hang or a runaway allocation in libonnx's
// checker or shape inference then costs a child process, never the backend (whose crash would
// restart the whole cluster).
//
// The child is started with posix_spawn (no fork of a backend running arbitrary code), with only
// its two pipes as descriptors. The backend waits on the pipes and its latch and checks for
// interrupts on every wake-up, so statement_timeout and cancel stop it at once; whatever way this
// code is left (an ERROR, cancel, FATAL), the child is killed with SIGKILL and reaped and every
// descriptor closed. Everything here is plain PostgreSQL code: no C++ object with a destructor is
// alive in these frames, so ereport's longjmp is safe.
#include "pg.hpp"  // must come first

extern "C" {
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/wait_event.h"
}

#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "cache.hpp"
#include "guard.hpp"
#include "model_check.hpp"

extern char** environ;

namespace flock::pg {

namespace {

constexpr const char* kCheckerName = "flock-model-check";

// GUCs. Superuser-only: they bound what an untrusted model may cost the server.
char* model_checker_path = nullptr;  // empty: flock-model-check beside the postgres binary
constexpr int kDefaultCheckCpuSeconds = 30;
constexpr int kDefaultCheckMemoryMb = 4096;
int model_check_cpu_seconds = kDefaultCheckCpuSeconds;
int model_check_memory_mb = kDefaultCheckMemoryMb;

// One running checker. Lives in palloc'd memory; `active` is what the exit callback kills if the
// backend leaves (FATAL) while a check runs.
struct CheckerRun {
  pid_t pid;  // -1: not started
  bool reaped;
  int status;
  struct rusage usage;
  int to_child;    // child's stdin (-1: closed)
  int from_child;  // child's stdout (-1: closed)
  WaitEventSet* events;
};
CheckerRun* active = nullptr;
bool exit_callback_registered = false;

void checker_path(char* out) {
  if (model_checker_path && model_checker_path[0] != '\0') {
    strlcpy(out, model_checker_path, MAXPGPATH);
    return;
  }
  // The server's own directory: pg_config --bindir, where CMake installs the checker. A private
  // copy of PostgreSQL (the tests') thus finds its own copy of the checker.
  char dir[MAXPGPATH];
  strlcpy(dir, my_exec_path, MAXPGPATH);
  get_parent_directory(dir);
  join_path_components(out, dir, kCheckerName);
}

// The two pipe ends the backend keeps count against max_files_per_process, like any descriptor
// PostgreSQL's fd.c does not manage itself (ReserveExternalFD / ReleaseExternalFD).
void close_fd(int* fd) {
  if (*fd >= 0) {
    close(*fd);
    ReleaseExternalFD();
  }
  *fd = -1;
}

void reap(CheckerRun* run, bool kill_first) {
  if (run->pid <= 0 || run->reaped) return;
  if (kill_first) kill(run->pid, SIGKILL);
  for (;;) {
    pid_t r = wait4(run->pid, &run->status, 0, &run->usage);
    if (r == run->pid || (r < 0 && errno != EINTR)) break;
  }
  run->reaped = true;
}

// Kills and reaps the child, closes every descriptor. Idempotent; never raises.
void release(CheckerRun* run) {
  if (run->events) FreeWaitEventSet(run->events);
  run->events = nullptr;
  close_fd(&run->to_child);
  close_fd(&run->from_child);
  reap(run, true);
  if (active == run) active = nullptr;
}

void release_on_exit(int, Datum) {
  if (active) release(active);
}

void spawn_checker(CheckerRun* run, const char* path) {
  if (access(path, X_OK) != 0)
    ereport(ERROR, (errcode(ERRCODE_UNDEFINED_FILE),
                    errmsg("model checker \"%s\" is not available: %m", path),
                    errdetail("Flock validates every model in a separate process and never loads one unchecked."),
                    errhint("Install %s beside the PostgreSQL server binaries (pg_config --bindir), or point "
                            "flock.model_checker at it.",
                            kCheckerName)));
  int in_pipe[2], out_pipe[2];
  ReserveExternalFD();
  ReserveExternalFD();
  if (pipe2(in_pipe, O_CLOEXEC) != 0) {
    ReleaseExternalFD();
    ReleaseExternalFD();
    ereport(ERROR, (errcode_for_file_access(), errmsg("could not create a pipe: %m")));
  }
  run->to_child = in_pipe[1];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    close(in_pipe[0]);
    ReleaseExternalFD();  // the one reserved for from_child; to_child's goes with close_fd
    ereport(ERROR, (errcode_for_file_access(), errmsg("could not create a pipe: %m")));
  }
  run->from_child = out_pipe[0];

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  // stdin/stdout are the pipes (dup2 clears close-on-exec), stderr is /dev/null (what libonnx
  // prints is not the server log's business), nothing else is inherited: the backend's sockets,
  // data files and latch descriptors are not all close-on-exec.
  posix_spawn_file_actions_adddup2(&actions, in_pipe[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  // Default dispositions and an empty mask, whatever the backend blocks or ignores. The child stays
  // in the backend's process group, so the postmaster's SIGQUIT/SIGTERM to the group reach it too.
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  char parent[32];
  snprintf(parent, sizeof(parent), "%d", static_cast<int>(getpid()));
  char* argv[] = {const_cast<char*>(kCheckerName), const_cast<char*>("--parent"), parent, nullptr};
  pid_t pid;
  // The server's environment (the dynamic loader may need its LD_LIBRARY_PATH to find libonnx).
  int rc = posix_spawn(&pid, path, &actions, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close(in_pipe[0]);
  close(out_pipe[1]);
  if (rc != 0) {
    errno = rc;
    ereport(ERROR, (errcode(ERRCODE_UNDEFINED_FILE), errmsg("could not start model checker \"%s\": %m", path),
                    errhint("Flock never loads a model unchecked; fix or reinstall %s.", kCheckerName)));
  }
  run->pid = pid;
  // A big pipe buffer means fewer wake-ups for a large model (best effort: the default is 64 kB).
  (void)fcntl(run->to_child, F_SETPIPE_SZ, 1 << 20);
  (void)fcntl(run->to_child, F_SETFL, O_NONBLOCK);
  (void)fcntl(run->from_child, F_SETFL, O_NONBLOCK);
}

// Reads what the child has written so far. Returns false at end of file.
bool drain(CheckerRun* run, StringInfo answer, size_t max_answer) {
  for (;;) {
    if (static_cast<size_t>(answer->len) > max_answer)
      ereport(ERROR, (errcode(ERRCODE_SYSTEM_ERROR), errmsg("model checker answered more than expected")));
    enlargeStringInfo(answer, 65536);
    ssize_t n = read(run->from_child, answer->data + answer->len, answer->maxlen - answer->len - 1);
    if (n > 0) {
      answer->len += static_cast<int>(n);
      answer->data[answer->len] = '\0';
      continue;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
    ereport(ERROR, (errcode_for_file_access(), errmsg("could not read from the model checker: %m")));
  }
}

struct Chunk {
  const char* data;
  size_t len;
};

// Writes the request and reads the answer until the child closes its stdout. Both ends are polled
// together, so neither side can block the other whatever the sizes; the latch wakes us for
// interrupts (cancel, statement_timeout), which CHECK_FOR_INTERRUPTS turns into an ERROR.
void exchange(CheckerRun* run, const Chunk* chunks, int nchunks, StringInfo answer, size_t max_answer) {
  run->events = CreateWaitEventSet(CurrentMemoryContext, 4);
  AddWaitEventToSet(run->events, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, nullptr);
  AddWaitEventToSet(run->events, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, nullptr, nullptr);
  AddWaitEventToSet(run->events, WL_SOCKET_READABLE, run->from_child, nullptr, nullptr);
  AddWaitEventToSet(run->events, WL_SOCKET_WRITEABLE, run->to_child, nullptr, nullptr);
  int chunk = 0;
  size_t offset = 0;
  bool reading = true;
  while (reading) {
    CHECK_FOR_INTERRUPTS();
    WaitEvent event;
    int n = WaitEventSetWait(run->events, -1, &event, 1, PG_WAIT_EXTENSION);
    if (n == 0) continue;
    if (event.events & WL_LATCH_SET) {
      ResetLatch(MyLatch);
      continue;
    }
    if ((event.events & WL_SOCKET_READABLE) && event.fd == run->from_child) {
      reading = drain(run, answer, max_answer);
      continue;
    }
    if ((event.events & WL_SOCKET_WRITEABLE) && event.fd == run->to_child) {
      bool done = false;
      while (chunk < nchunks) {
        size_t left = chunks[chunk].len - offset;
        if (left == 0) {
          chunk++;
          offset = 0;
          continue;
        }
        // SIGPIPE is ignored in every backend (PostgresMain, background workers): a child that died
        // gives EPIPE here, and its death is reported from its exit status.
        ssize_t w = write(run->to_child, chunks[chunk].data + offset, left);
        if (w > 0) {
          offset += static_cast<size_t>(w);
          continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        done = true;  // EPIPE: the child is gone; its exit status tells why
        break;
      }
      if (chunk >= nchunks || done) {
        // End of input. The write end leaves the wait set with the set itself: rebuild it with the
        // read end only (a closed descriptor must not stay registered).
        FreeWaitEventSet(run->events);
        run->events = nullptr;
        close_fd(&run->to_child);
        run->events = CreateWaitEventSet(CurrentMemoryContext, 3);
        AddWaitEventToSet(run->events, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, nullptr);
        AddWaitEventToSet(run->events, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, nullptr, nullptr);
        AddWaitEventToSet(run->events, WL_SOCKET_READABLE, run->from_child, nullptr, nullptr);
      }
    }
  }
  FreeWaitEventSet(run->events);
  run->events = nullptr;
  close_fd(&run->from_child);
  close_fd(&run->to_child);
  // The child closed its stdout by exiting: reap it, still interruptible.
  for (;;) {
    CHECK_FOR_INTERRUPTS();
    pid_t r = wait4(run->pid, &run->status, WNOHANG, &run->usage);
    if (r == run->pid) {
      run->reaped = true;
      break;
    }
    if (r < 0 && errno != EINTR)
      ereport(ERROR, (errcode(ERRCODE_SYSTEM_ERROR), errmsg("could not wait for the model checker: %m")));
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 1, PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
  }
}

double cpu_seconds_used(const struct rusage& u) {
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

ErrorCode parse_code(const char* name, bool* known) {
  *known = true;
  if (strcmp(name, "invalid_model") == 0) return ErrorCode::InvalidModel;
  if (strcmp(name, "unsupported_operator") == 0) return ErrorCode::UnsupportedOperator;
  if (strcmp(name, "invalid_input") == 0) return ErrorCode::InvalidInput;
  if (strcmp(name, "missing_value") == 0) return ErrorCode::MissingValue;
  if (strcmp(name, "type_mismatch") == 0) return ErrorCode::TypeMismatch;
  if (strcmp(name, "limit_exceeded") == 0) return ErrorCode::LimitExceeded;
  if (strcmp(name, "internal") == 0) return ErrorCode::Internal;
  *known = false;
  return ErrorCode::Internal;
}

// Turns the child's exit and answer into the result, or a clean ERROR.
bytea* outcome(const CheckerRun* run, StringInfo answer, bytea* input, const char* path) {
  int status = run->status;
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    double cpu = cpu_seconds_used(run->usage);
    if (sig == SIGXCPU || (sig == SIGKILL && cpu >= model_check_cpu_seconds))
      ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                      errmsg("model rejected: checking it took more than %d s of CPU time", model_check_cpu_seconds),
                      errdetail("The model checker (%s) was stopped by its CPU-time limit after %.1f s.", kCheckerName,
                                cpu),
                      errhint("ONNX shape inference does not finish on this model in reasonable time. If the model "
                              "is legitimate, a superuser can raise flock.model_check_cpu_time.")));
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("model rejected: the model checker crashed (signal %d: %s)", sig, pg_strsignal(sig)),
                    errdetail("The ONNX checker or shape inference failed on this model in %s, a separate process; "
                              "the server is unaffected.",
                              kCheckerName),
                    errhint("The model is malformed (e.g. an axis, stride or tensor size that does not fit its "
                            "inputs); re-export it from its training framework.")));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    ereport(ERROR, (errcode(ERRCODE_SYSTEM_ERROR),
                    errmsg("model checker \"%s\" failed (exit status %d)", path,
                           WIFEXITED(status) ? WEXITSTATUS(status) : -1),
                    errhint("Check that %s matches the installed Flock extension.", kCheckerName)));

  const char* data = answer->data;
  const char* newline = static_cast<const char*>(memchr(data, '\n', answer->len));
  char line[160];
  size_t head = newline ? static_cast<size_t>(newline - data) : 0;
  if (!newline || head >= sizeof(line))
    ereport(ERROR, (errcode(ERRCODE_SYSTEM_ERROR), errmsg("model checker \"%s\" gave no answer", path)));
  memcpy(line, data, head);
  line[head] = '\0';
  const char* body = newline + 1;
  size_t body_len = answer->len - head - 1;

  size_t len = 0, message_len = 0, hint_len = 0;
  char code[32];
  if (sscanf(line, "ok %zu", &len) == 1 && len == body_len) {
    if (len == 0) return input;
    bytea* result = static_cast<bytea*>(palloc(VARHDRSZ + len));
    SET_VARSIZE(result, VARHDRSZ + len);
    memcpy(VARDATA(result), body, len);
    return result;
  }
  if (sscanf(line, "error %31s %zu %zu", code, &message_len, &hint_len) == 3 && message_len + hint_len == body_len) {
    if (strcmp(code, "out_of_memory") == 0)
      ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY),
                      errmsg("model rejected: loading it needs more than %d MB of memory", model_check_memory_mb),
                      errdetail("The model checker (%s) ran out of its address-space limit.", kCheckerName),
                      errhint("Check the model's declared shapes and initializer sizes. If the model is legitimate, "
                              "a superuser can raise flock.model_check_memory (or lower flock.max_tensor_elements "
                              "to reject such shapes sooner).")));
    bool known;
    ErrorCode ec = parse_code(code, &known);
    char* message = pnstrdup(body, message_len);
    char* hint = hint_len ? pnstrdup(body + message_len, hint_len) : nullptr;
    if (!hint) {
      const char* dflt = default_hint_for(ec);
      hint = dflt ? pstrdup(dflt) : nullptr;
    }
    // "internal" from the checker is a request it could not read, not a model's fault: 58000.
    int sqlstate = known && ec != ErrorCode::Internal ? sqlstate_for(ec) : ERRCODE_SYSTEM_ERROR;
    ereport(ERROR, (errcode(sqlstate), errmsg("%s", message), hint ? errhint("%s", hint) : 0));
  }
  ereport(ERROR, (errcode(ERRCODE_SYSTEM_ERROR), errmsg("model checker \"%s\" gave a malformed answer", path)));
  return nullptr;  // not reached
}

// Spawns the checker and talks to it. Whatever way this is left, the child is killed and reaped and
// the descriptors are closed: on success it has exited already; on any ERROR (cancel,
// statement_timeout, ...) the handler sends SIGKILL.
void run_checker(CheckerRun* run, const char* path, const Chunk* chunks, int nchunks, StringInfo answer,
                 size_t max_answer) {
  PG_TRY();
  {
    active = run;
    spawn_checker(run, path);
    exchange(run, chunks, nchunks, answer, max_answer);
  }
  PG_CATCH();
  {
    release(run);
    PG_RE_THROW();
  }
  PG_END_TRY();
  release(run);  // (PG_CATCH rather than PG_FINALLY: GCC's -Wclobbered flags the latter's flag)
}

}  // namespace

void define_model_check_gucs() {
  DefineCustomStringVariable("flock.model_checker", "Path of the flock-model-check program.",
                             "Empty: flock-model-check in the PostgreSQL server's own directory (pg_config --bindir).",
                             &model_checker_path, "", PGC_SUSET, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("flock.model_check_cpu_time", "CPU time a model's isolated validation may use.",
                          "RLIMIT_CPU of flock-model-check; past it the model is rejected with 54000.",
                          &model_check_cpu_seconds, kDefaultCheckCpuSeconds, 1, 3600, PGC_SUSET, GUC_UNIT_S,
                          nullptr, nullptr, nullptr);
  DefineCustomIntVariable("flock.model_check_memory", "Address space a model's isolated validation may use.",
                          "RLIMIT_AS of flock-model-check; past it the model is rejected with 53200.",
                          &model_check_memory_mb, kDefaultCheckMemoryMb, 256, INT_MAX / 2, PGC_SUSET,
                          GUC_UNIT_MB, nullptr, nullptr, nullptr);
}

bytea* check_model_isolated(bytea* bytes, const char* format, int nfeatures, char** features) {
  char path[MAXPGPATH];
  checker_path(path);
  if (!exit_callback_registered) {
    // FATAL (e.g. pg_terminate_backend) leaves without PG_FINALLY: kill the child on the way out.
    // (It also dies with us through PR_SET_PDEATHSIG; this reaps it promptly.)
    before_shmem_exit(release_on_exit, (Datum)0);
    exit_callback_registered = true;
  }

  size_t model_len = VARSIZE_ANY_EXHDR(bytes);
  StringInfoData request;
  initStringInfo(&request);
  appendStringInfo(&request,
                   "flock-model-check/1 format=%s max_tensor_elements=%d cpu_seconds=%d memory_mb=%d features=%d "
                   "bytes=%zu\n",
                   format, max_tensor_elements, model_check_cpu_seconds, model_check_memory_mb, nfeatures, model_len);
  size_t names_len = 0;
  for (int k = 0; k < nfeatures; ++k) {
    size_t len = strlen(features[k]);
    names_len += len;
    appendStringInfo(&request, "%zu\n", len);
    appendBinaryStringInfo(&request, features[k], static_cast<int>(len));
  }
  Chunk chunks[2] = {{request.data, static_cast<size_t>(request.len)}, {VARDATA_ANY(bytes), model_len}};
  // With feature names the answer is the model plus its names (plus JSON quoting); else a line. The
  // line (verdict, signature, error) gets this much either way.
  constexpr size_t kAnswerLineBytes = size_t(1) << 20;
  size_t max_answer =
      nfeatures >= 0 ? 2 * (model_len + names_len) + nfeatures * 8 + kAnswerLineBytes : kAnswerLineBytes;

  StringInfoData answer;
  initStringInfo(&answer);
  CheckerRun* run = static_cast<CheckerRun*>(palloc0(sizeof(CheckerRun)));
  run->pid = -1;
  run->to_child = -1;
  run->from_child = -1;
  run_checker(run, path, chunks, 2, &answer, max_answer);
  pfree(request.data);
  return outcome(run, &answer, bytes, path);
}

}  // namespace flock::pg
