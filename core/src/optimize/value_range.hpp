// Internal to core/src/optimize/: a column's constraint as the kernels compare it. A Range is the
// closed interval [lo, hi] of the values a comparison can see, in the type it compares in (float
// or double: every bound is a value of that type, so "x > t" becomes "x >= the next value after
// t" exactly), and whether NaN can arrive. Tree branches are evaluated on Ranges exactly as
// ml_tree_walk.hpp walks: go = compare(x, t) | (missing_true & isnan(x)).
#pragma once

#include <cstdint>

#include "../kernels/ml_tree.hpp"
#include "flock/optimize.hpp"
#include "flock/tensor.hpp"

namespace flock::optimize::detail {

enum class Domain { Float, Double };  // the type a tree compares in

struct Range {
  double lo;
  double hi;
  bool missing;  // NaN possible
  bool has_values() const { return lo <= hi; }
};

Range full_range();  // every value, NaN included

// The Range of the values a tree compares for a column constrained by `c`, fed to the model as an
// `input` element (Float -> compared as float, Double -> as double, Int64 -> converted to float).
// `exact`: Constraints::exact_input_values.
Range range_for(const FeatureConstraint& c, ElemType input, bool exact);

// Nearest value of the domain's type (IEEE round to nearest, overflow to infinity).
double round_to(double v, Domain d);
double next_up(double v, Domain d);    // the next value of the type above v (+inf stays +inf)
double next_down(double v, Domain d);

// The Range of a Scaler's output column, Y = (float(X) - offset) * scale computed in float, for
// X in `x` (values of `from`'s type). Every step is monotone (increasing, or decreasing for a
// negative scale); a zero scale gives 0, or NaN from an infinite X - offset. Non-finite
// parameters: anything.
Range scaler_output(const Range& x, Domain from, float offset, float scale);

// The Range of an Imputer's output column (same type as its input): X with the values equal to
// `replaced` (NaN: the missing ones) replaced by `imputed`.
Range imputer_output(const Range& x, float imputed, float replaced);

struct Outcomes {
  bool can_true = false;   // some allowed value takes the true child
  bool can_false = false;  // some allowed value takes the false child
};

// Where the values of `r` go at a branch (mode, threshold t in the domain's type, missing_true).
Outcomes branch_outcomes(uint8_t mode, double t, bool missing_true, const Range& r);

// The values of `r` that reach the true child and the false child.
struct ChildRanges {
  Range yes;
  Range no;
};
ChildRanges branch_children(uint8_t mode, double t, bool missing_true, const Range& r, Domain d);

}  // namespace flock::optimize::detail
