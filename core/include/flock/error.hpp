// Errors raised by the core. The PostgreSQL glue maps each code to an SQLSTATE.
#pragma once

#include <stdexcept>
#include <string>

namespace flock {

enum class ErrorCode {
  InvalidModel,         // bytes are not a valid model (22P02 / 22023 in SQL)
  UnsupportedOperator,  // model uses an operator or attribute Flock does not run (0A000)
  InvalidInput,         // feature values do not fit the model (22023)
  MissingValue,         // NULL feature where the model has no missing-value semantics (22004)
  TypeMismatch,         // feature type or output kind does not fit the call (42804)
  LimitExceeded,        // a tensor or model past a configured limit (54000)
  Cancelled,            // the host's interrupt callback stopped the run (57014; see interrupt.hpp)
  Internal,             // a can't-happen state (XX000)
};

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message, std::string hint = {})
      : std::runtime_error(message), code_(code), hint_(std::move(hint)) {}

  ErrorCode code() const noexcept { return code_; }
  const std::string& hint() const noexcept { return hint_; }

 private:
  ErrorCode code_;
  std::string hint_;
};

[[noreturn]] inline void fail(ErrorCode code, const std::string& message, std::string hint = {}) {
  throw Error(code, message, std::move(hint));
}

}  // namespace flock
