// Interrupting a model run from outside the core (query cancel, statement_timeout).
//
// The core knows nothing of its host, so the host installs a callback that says whether the run
// should stop, as PostGIS's liblwgeom does (lwgeom_set_handlers / lwgeom_request_interrupt). The
// plan polls it between kernels, and kernels with long loops poll it every block of rows or every
// few milliseconds of work. When it says stop, poll_interrupt() throws Error(Cancelled); the host
// then raises its own cancel error once the core's frames are gone.
//
// The callback must be cheap, must not throw and must not longjmp (it is called inside kernels):
// reading a flag set by a signal handler is what it is for.
#pragma once

#include <atomic>

namespace flock {

using InterruptCheck = bool (*)();

namespace detail {
extern std::atomic<InterruptCheck> interrupt_check;
[[noreturn]] void throw_cancelled();
}  // namespace detail

// Installs the callback for every later poll in the process (nullptr: runs are never interrupted).
// Returns the previous one.
InterruptCheck set_interrupt_check(InterruptCheck check) noexcept;

// Throws Error(ErrorCode::Cancelled) when the installed callback says the run must stop. One
// relaxed atomic load when none is installed; call it every block of rows, not every row.
inline void poll_interrupt() {
  const InterruptCheck check = detail::interrupt_check.load(std::memory_order_relaxed);
  if (check && __builtin_expect(check(), 0)) detail::throw_cancelled();
}

// Row chunks for a loop doing `work_per_row` units of work (multiply-adds, element visits) per row,
// so each chunk is about kInterruptWork units (a few milliseconds at most) between two polls.
constexpr long long kInterruptWork = 1ll << 24;
inline long long interrupt_chunk_rows(long long work_per_row) {
  if (work_per_row <= 0) return kInterruptWork;
  const long long rows = kInterruptWork / work_per_row;
  return rows > 0 ? rows : 1;
}

}  // namespace flock
