#include "flock/interrupt.hpp"

#include "flock/error.hpp"

namespace flock {

namespace detail {
std::atomic<InterruptCheck> interrupt_check{nullptr};

void throw_cancelled() { throw Error(ErrorCode::Cancelled, "model run interrupted"); }
}  // namespace detail

InterruptCheck set_interrupt_check(InterruptCheck check) noexcept {
  return detail::interrupt_check.exchange(check, std::memory_order_relaxed);
}

}  // namespace flock
