// What a prediction function returns: flock.predict (Value), predict_proba (Proba), predict_label
// (Label), predict_tensor (Tensor). One name in the core and the extension; the values are stored in
// audit records, so the order is fixed.
#pragma once

namespace flock {

enum class Want { Value = 0, Proba = 1, Label = 2, Tensor = 3 };

}  // namespace flock
