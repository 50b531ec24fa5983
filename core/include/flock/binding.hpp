// Binding a row of named columns to a model's features, and choosing what each prediction function
// returns: the rules of flock.predict / predict_proba / predict_label / predict_tensor that are not
// PostgreSQL's. The extension translates Datums; the decisions are made here. No PostgreSQL headers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "flock/model.hpp"
#include "flock/want.hpp"

namespace flock {

// A column of the input record, in attribute order (dropped columns included, as PostgreSQL keeps
// them).
struct RecordColumn {
  std::string_view name;
  bool dropped = false;
};

// The record column (0-based) named `name`: an exact match, else the only one that matches ignoring
// ASCII case; -1 when there is none, or several that differ only in case (the name is then
// ambiguous, and the caller reports it missing, as an exact-case name resolves it).
int find_record_column(std::span<const RecordColumn> columns, std::string_view name);

// One model feature and the record column that feeds it.
struct FeatureColumn {
  size_t input = 0;        // model input
  int64_t position = 0;    // position in that input's row
  std::string_view name;   // the feature's name when bound by name (points into the signature)
  int column = -1;         // 0-based record column; -1: no column of that name
};

// How a record binds to a model: by name where the model has feature names (several inputs bind by
// their input names), else by column order. `features` lists the model's features in order up to
// the first input that cannot bind; callers report the problems in that order.
struct RecordBinding {
  bool by_name = false;
  int total_features = 0;   // over all inputs
  int live_columns = 0;     // the record's columns, dropped ones excluded
  // By column order and the counts differ: nothing binds.
  bool width_mismatch = false;
  // A model with several inputs binds one column per input; the first input whose rows take more
  // than one value (-1: none). `features` stops before it.
  int multi_value_input = -1;
  std::vector<FeatureColumn> features;
};

// Throws only std::bad_alloc. The signature's input widths must be known (non-negative).
RecordBinding bind_record_columns(const Signature& sig, std::span<const RecordColumn> columns);

// Whether the model has what `want` returns, for a model named `label` in messages; throws
// Error(TypeMismatch) with the hint to use when it does not. For Proba, `n_classes` is the count
// the prediction reported. Tensor is always available here (see choose_tensor_output).
void check_output(const Signature& sig, Want want, std::string_view label, int64_t n_classes = 0);

// The output flock.predict_tensor returns: the first float output, else the first output that
// has numbers. Throws Error(TypeMismatch) when every output is text.
const Tensor& choose_tensor_output(const std::vector<Tensor>& outputs, std::string_view label);

// What Model::predict must compute for `want` (Value, Label or Proba).
unsigned predict_parts_for(Want want);

}  // namespace flock
