// The C++ / PostgreSQL error boundary.
//
// PostgreSQL raises errors with longjmp, C++ with exceptions; neither may cross the other's frames.
// So every SQL-callable function does its PostgreSQL work in plain C style (no C++ objects with
// destructors alive in those frames) and runs its C++ work inside flock_guard(), which catches every
// exception and raises the ereport() only after the C++ frames and the exception object are gone.
// C++ code that must call a PostgreSQL function that may elog wraps it in pg_call(), which turns the
// PostgreSQL error into a PgError exception; flock_guard() re-throws it unchanged.
//
// Query cancel and statement_timeout: the core polls interrupt_requested() (installed in _PG_init,
// see flock/interrupt.hpp) and stops with Error(Cancelled); flock_guard() then lets PostgreSQL
// process the pending interrupt with CHECK_FOR_INTERRUPTS(), so the client gets PostgreSQL's own
// 57014 message ("canceling statement due to statement timeout" / "... user request").
#pragma once

#include "pg.hpp"  // must come first

#include <exception>
#include <new>

#include "flock/error.hpp"

namespace flock::pg {

struct PgError {
  ErrorData* data;
};

int sqlstate_for(ErrorCode code);
// The core's interrupt callback: a query cancel or backend termination is pending and may be
// processed now. Reads only the flags PostgreSQL's signal handlers set.
bool interrupt_requested();
// The hint given when the core raised an error without one (nullptr: none).
const char* default_hint_for(ErrorCode code);

template <typename F>
void flock_guard(F&& body) {
  int code = 0;
  char* message = nullptr;
  char* hint = nullptr;
  ErrorData* pg_error = nullptr;
  bool cancelled = false;
  try {
    body();
    return;
  } catch (const Error& e) {
    cancelled = e.code() == ErrorCode::Cancelled;
    code = sqlstate_for(e.code());
    message = pstrdup(e.what());
    if (!e.hint().empty()) hint = pstrdup(e.hint().c_str());
    else if (const char* dflt = default_hint_for(e.code())) hint = pstrdup(dflt);
  } catch (const PgError& e) {
    pg_error = e.data;
  } catch (const std::bad_alloc&) {
    code = ERRCODE_OUT_OF_MEMORY;
    message = pstrdup("out of memory in the Flock runtime");
  } catch (const std::exception& e) {
    code = ERRCODE_INTERNAL_ERROR;
    message = pstrdup(e.what());
  } catch (...) {
    code = ERRCODE_INTERNAL_ERROR;
    message = pstrdup("unexpected C++ exception in Flock");
  }
  if (pg_error) ReThrowError(pg_error);
  if (cancelled) {
    CHECK_FOR_INTERRUPTS();  // raises PostgreSQL's own cancel or termination error
    message = pstrdup("canceling statement due to user request");  // the interrupt was consumed elsewhere
    hint = nullptr;
  }
  ereport(ERROR, (errcode(code), errmsg("%s", message), hint ? errhint("%s", hint) : 0));
}

// Runs a PostgreSQL call from C++ code, turning its error into a PgError exception.
template <typename F>
void pg_call(F&& fn) {
  MemoryContext ctx = CurrentMemoryContext;
  ErrorData* edata = nullptr;
  PG_TRY();
  {
    fn();
  }
  PG_CATCH();
  {
    MemoryContextSwitchTo(ctx);
    edata = CopyErrorData();
    FlushErrorState();
  }
  PG_END_TRY();
  if (edata) throw PgError{edata};
}

}  // namespace flock::pg
