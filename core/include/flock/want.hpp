// What a prediction function returns: flock.predict (Value), predict_proba (Proba), predict_label
// (Label), predict_tensor (Tensor). One name in the core and the extension; the values are stored in
// audit records, so the order is fixed.
#pragma once

namespace flock {

enum class Want { Value = 0, Proba = 1, Label = 2, Tensor = 3 };

constexpr Want kEveryWant[] = {Want::Value, Want::Proba, Want::Label, Want::Tensor};

// The SQL function (in schema flock) that returns it: how the planner recognizes a call, and how
// EXPLAIN and the inference log name it.
constexpr const char* function_name(Want want) {
  switch (want) {
    case Want::Value: return "predict";
    case Want::Proba: return "predict_proba";
    case Want::Label: return "predict_label";
    case Want::Tensor: return "predict_tensor";
  }
  return "predict";
}

}  // namespace flock
