// See flock/binding.hpp.
#include "flock/binding.hpp"

#include <fmt/format.h>

#include "flock/error.hpp"

namespace flock {

namespace {

char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool equal_ignoring_ascii_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  return true;
}

}  // namespace

int find_record_column(std::span<const RecordColumn> columns, std::string_view name) {
  int ci_match = -1, ci_count = 0;
  for (size_t a = 0; a < columns.size(); ++a) {
    if (columns[a].dropped) continue;
    if (columns[a].name == name) return static_cast<int>(a);
    if (equal_ignoring_ascii_case(columns[a].name, name)) {
      ci_match = static_cast<int>(a);
      ci_count++;
    }
  }
  return ci_count == 1 ? ci_match : -1;
}

RecordBinding bind_record_columns(const Signature& sig, std::span<const RecordColumn> columns) {
  RecordBinding b;
  for (const auto& in : sig.inputs) b.total_features += static_cast<int>(in.width);
  bool single = sig.inputs.size() == 1;
  b.by_name = !single || !sig.feature_names.empty();
  for (const auto& c : columns) b.live_columns += !c.dropped;
  if (!b.by_name && b.live_columns != b.total_features) {
    b.width_mismatch = true;
    return b;
  }
  b.features.reserve(static_cast<size_t>(b.total_features));
  int f = 0;
  for (size_t k = 0; k < sig.inputs.size(); ++k) {
    const InputSpec& in = sig.inputs[k];
    if (!single && in.width != 1) {
      b.multi_value_input = static_cast<int>(k);
      return b;
    }
    for (int64_t j = 0; j < in.width; ++j, ++f) {
      FeatureColumn fc;
      fc.input = k;
      fc.position = j;
      if (b.by_name) {
        fc.name = single ? std::string_view(sig.feature_names[static_cast<size_t>(j)]) : std::string_view(in.name);
        fc.column = find_record_column(columns, fc.name);
      } else {
        for (int a = 0, seen = 0; a < static_cast<int>(columns.size()); ++a) {
          if (columns[static_cast<size_t>(a)].dropped) continue;
          if (seen++ == f) {
            fc.column = a;
            break;
          }
        }
      }
      b.features.push_back(fc);
    }
  }
  return b;
}

void check_output(const Signature& sig, Want want, std::string_view label, int64_t n_classes) {
  switch (want) {
    case Want::Value:
      if (sig.task == Task::Classification && !sig.numeric_labels)
        fail(ErrorCode::TypeMismatch, fmt::format("{} has text class labels; flock.predict returns a number", label),
             "Use flock.predict_label for the label, or flock.predict_proba for class probabilities.");
      return;
    case Want::Label:
      if (sig.task != Task::Classification)
        fail(ErrorCode::TypeMismatch, fmt::format("{} is a regressor; it has no class label", label),
             "Use flock.predict for its value.");
      return;
    case Want::Proba:
      if (sig.task != Task::Classification || n_classes == 0)
        fail(ErrorCode::TypeMismatch, fmt::format("{} is a regressor; it has no class probabilities", label),
             "Use flock.predict for its value.");
      return;
    case Want::Tensor:
      return;
  }
}

const Tensor& choose_tensor_output(const std::vector<Tensor>& outputs, std::string_view label) {
  for (const auto& t : outputs)
    if (t.type == ElemType::Float || t.type == ElemType::Double) return t;
  for (const auto& t : outputs)
    if (t.type != ElemType::String) return t;
  fail(ErrorCode::TypeMismatch, fmt::format("{} has no numeric output", label),
       "Use flock.predict_label for text outputs.");
}

unsigned predict_parts_for(Want want) {
  return want == Want::Value ? kPredictValues : want == Want::Label ? kPredictLabels : kPredictProba;
}

}  // namespace flock
