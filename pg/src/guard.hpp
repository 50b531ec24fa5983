// The C++ / PostgreSQL error boundary.
//
// PostgreSQL raises errors with longjmp, C++ with exceptions; neither may cross the other's frames.
// So every SQL-callable function does its PostgreSQL work in plain C style (no C++ objects with
// destructors alive in those frames) and runs its C++ work inside flock_guard(), which catches every
// exception and raises the ereport() only after the C++ frames and the exception object are gone.
// C++ code that must call a PostgreSQL function that may elog wraps it in pg_call(), which turns the
// PostgreSQL error into a PgError exception; flock_guard() re-throws it unchanged.
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
// The hint given when the core raised an error without one (nullptr: none).
const char* default_hint_for(ErrorCode code);

template <typename F>
void flock_guard(F&& body) {
  int code = 0;
  char* message = nullptr;
  char* hint = nullptr;
  ErrorData* pg_error = nullptr;
  try {
    body();
    return;
  } catch (const Error& e) {
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
