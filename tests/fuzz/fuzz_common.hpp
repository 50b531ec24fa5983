// What every fuzz target does with a candidate model: what the server does with one (load it,
// which parses, validates, compiles and trial-runs it; describe it; score a few rows), with the
// core's own errors as the only accepted failure. Anything else is a finding: a sanitizer report,
// a signal, or an exception that is not a flock::Error (the PostgreSQL glue would turn it into
// XX000, the "internal error"), which libFuzzer sees as an abort through std::terminate.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "flock/model.hpp"

namespace flock::fuzz {

// Smaller than the server's default tensor limit, so that a declared shape that the limit allows
// stays well inside libFuzzer's memory limit (-rss_limit_mb) instead of reading as an out-of-memory.
inline Limits fuzz_limits() {
  Limits limits;
  limits.max_tensor_elements = int64_t(1) << 22;
  return limits;
}

// Three rows per input: zeros, ordinary values, and the edge values (NaN, -inf, INT64_MIN, a
// non-UTF-8 string) a query can bind.
inline FeatureBatch sample_batch(const Signature& sig) {
  constexpr int64_t kRows = 3;
  constexpr int64_t kMaxWidth = 4096;
  FeatureBatch batch;
  batch.rows = kRows;
  for (const auto& in : sig.inputs) {
    if (in.width < 0 || in.width > kMaxWidth) return {};
    Tensor t(in.type, {kRows, in.width});
    for (int64_t r = 0; r < kRows; ++r)
      for (int64_t c = 0; c < in.width; ++c) {
        const size_t k = static_cast<size_t>(r * in.width + c);
        const bool odd = c % 2 == 1;
        switch (in.type) {
          case ElemType::Float:
            t.f[k] = r == 0 ? 0.0f : r == 1 ? 1.5f * static_cast<float>(c) : odd ? -INFINITY : NAN;
            break;
          case ElemType::Double:
            t.d[k] = r == 0 ? 0.0 : r == 1 ? -2.25 * static_cast<double>(c) : odd ? INFINITY : NAN;
            break;
          case ElemType::Int64:
            t.i[k] = r == 0 ? 0 : r == 1 ? c : odd ? std::numeric_limits<int64_t>::min() : -1;
            break;
          case ElemType::String: t.s[k] = r == 0 ? "" : r == 1 ? "a" : "\xff\xfe"; break;
          case ElemType::Bool: t.b[k] = static_cast<uint8_t>(r == 1); break;
        }
      }
    batch.inputs.push_back(std::move(t));
  }
  return batch;
}

inline void load_and_score(std::span<const uint8_t> bytes, ModelFormat format) {
  std::shared_ptr<const Model> model;
  try {
    model = Model::load(bytes, format, fuzz_limits());
  } catch (const Error&) {
    return;  // rejected with a clean error: the expected outcome for almost every input
  }
  (void)model->signature_json();
  FeatureBatch batch = sample_batch(model->signature());
  if (batch.rows == 0) return;
  try {
    (void)model->predict(batch);
  } catch (const Error&) {
  }
}

}  // namespace flock::fuzz
