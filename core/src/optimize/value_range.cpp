// Constraints as the tree kernels compare values (value_range.hpp).
#include "value_range.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>

namespace flock::optimize::detail {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr Range kEmptyValues{kInf, -kInf, false};

// A double to the nearest float as IEEE converts (the cast itself is undefined past FLT_MAX).
double round_to_float(double v) {
  if (std::isnan(v) || std::isinf(v)) return v;
  if (std::fabs(v) <= static_cast<double>(FLT_MAX)) return static_cast<double>(static_cast<float>(v));
  // Past FLT_MAX: FLT_MAX up to half its ulp (2^103) above it, infinity from there (a tie goes to
  // infinity, whose "mantissa" is even).
  const double limit = static_cast<double>(FLT_MAX) + std::ldexp(1.0, 103);
  const double magnitude = std::fabs(v) >= limit ? kInf : static_cast<double>(FLT_MAX);
  return std::copysign(magnitude, v);
}

}  // namespace

Range full_range() { return Range{-kInf, kInf, true}; }

double round_to(double v, Domain d) { return d == Domain::Float ? round_to_float(v) : v; }

double next_up(double v, Domain d) {
  if (v == kInf || std::isnan(v)) return v;
  if (d == Domain::Float) return static_cast<double>(std::nextafter(static_cast<float>(v), std::numeric_limits<float>::infinity()));
  return std::nextafter(v, kInf);
}

double next_down(double v, Domain d) {
  if (v == -kInf || std::isnan(v)) return v;
  if (d == Domain::Float) return static_cast<double>(std::nextafter(static_cast<float>(v), -std::numeric_limits<float>::infinity()));
  return std::nextafter(v, -kInf);
}

Range range_for(const FeatureConstraint& c, ElemType input, bool exact) {
  const Interval& v = c.values;
  if (v.is_empty()) return Range{kInf, -kInf, c.missing_allowed};
  if (input == ElemType::Int64) {
    // An int64 column is never NaN, and what a NULL becomes is the binding's business: a column
    // that may be missing is taken as unconstrained.
    if (c.missing_allowed) return Range{-kInf, kInf, false};
    constexpr double kMin = -9223372036854775808.0, kMax = 9223372036854775808.0;  // -2^63, 2^63
    double lo = kMin, hi = kMax;
    if (v.lower()) {
      const double l = v.lower()->value;
      // The integers above l; without exactness, whatever rounding made the integer (monotone).
      lo = !exact ? std::floor(l) : v.lower()->closed ? std::ceil(l) : std::floor(l) + 1;
    }
    if (v.upper()) {
      const double u = v.upper()->value;
      hi = !exact ? std::ceil(u) : v.upper()->closed ? std::floor(u) : std::ceil(u) - 1;
    }
    lo = std::max(lo, kMin);
    hi = std::min(hi, kMax);
    if (lo > hi) return kEmptyValues;
    // The trees compare the int64 converted to float, a monotone rounding.
    return Range{round_to_float(lo), round_to_float(hi), false};
  }
  const Domain d = input == ElemType::Double ? Domain::Double : Domain::Float;
  double lo = -kInf, hi = kInf;
  if (v.lower()) {
    const Bound b = *v.lower();
    if (exact && !b.closed && b.value == kInf) return Range{kInf, -kInf, c.missing_allowed};
    lo = round_to(b.value, d);
    if (exact) {
      // The least value of the type inside the bound.
      if (lo < b.value || (!b.closed && lo == b.value)) lo = next_up(lo, d);
    }
  }
  if (v.upper()) {
    const Bound b = *v.upper();
    if (exact && !b.closed && b.value == -kInf) return Range{kInf, -kInf, c.missing_allowed};
    hi = round_to(b.value, d);
    if (exact) {
      if (hi > b.value || (!b.closed && hi == b.value)) hi = next_down(hi, d);
    }
  }
  if (lo > hi) return Range{kInf, -kInf, c.missing_allowed};
  return Range{lo, hi, c.missing_allowed};
}

Range scaler_output(const Range& x, Domain from, float offset, float scale) {
  if (!std::isfinite(offset) || !std::isfinite(scale)) return full_range();
  Range y{kInf, -kInf, x.missing};
  if (!x.has_values()) return y;
  // float(X): exact for float values, rounded (monotone) for doubles.
  const float lo = static_cast<float>(from == Domain::Float ? x.lo : round_to_float(x.lo));
  const float hi = static_cast<float>(from == Domain::Float ? x.hi : round_to_float(x.hi));
  const float shifted_lo = lo - offset, shifted_hi = hi - offset;
  if (scale == 0.0f) {
    y.lo = y.hi = 0.0;  // +0 or -0, equal to every comparison
    if (std::isinf(shifted_lo) || std::isinf(shifted_hi)) y.missing = true;  // inf * 0 is NaN
    return y;
  }
  const float a = shifted_lo * scale, b = shifted_hi * scale;
  y.lo = std::min(a, b);
  y.hi = std::max(a, b);
  return y;
}

Range imputer_output(const Range& x, float imputed, float replaced) {
  const bool hit = std::isnan(replaced) ? x.missing
                                        : x.has_values() && x.lo <= replaced && replaced <= x.hi;
  if (!hit) return x;
  Range y = x;
  if (std::isnan(replaced)) y.missing = false;  // every NaN is replaced
  if (std::isnan(imputed)) {
    y.missing = true;
    return y;
  }
  // The values plus the imputed one (a replaced value inside the interval stays in it: only its
  // hull is known).
  const double v = static_cast<double>(imputed);
  y.lo = x.has_values() ? std::min(x.lo, v) : v;
  y.hi = x.has_values() ? std::max(x.hi, v) : v;
  return y;
}

Outcomes branch_outcomes(uint8_t mode, double t, bool missing_true, const Range& r) {
  using namespace flock::tree;
  Outcomes o;
  if (r.has_values()) {
    if (std::isnan(t)) {
      // Every ordered comparison and == with NaN is false; != is true.
      o.can_true = mode == kNeq;
      o.can_false = mode != kNeq;
    } else {
      const bool t_inside = r.lo <= t && t <= r.hi;
      const bool only_t = r.lo == t && r.hi == t;
      switch (mode) {
        case kLeq: o.can_true = r.lo <= t; o.can_false = r.hi > t; break;
        case kLt: o.can_true = r.lo < t; o.can_false = r.hi >= t; break;
        case kGte: o.can_true = r.hi >= t; o.can_false = r.lo < t; break;
        case kGt: o.can_true = r.hi > t; o.can_false = r.lo <= t; break;
        case kEq: o.can_true = t_inside; o.can_false = !only_t; break;
        case kNeq: o.can_true = !only_t; o.can_false = t_inside; break;
        default: o.can_true = o.can_false = true; break;  // not a branch mode: decide nothing
      }
    }
  }
  if (r.missing) {
    // NaN compares false, except != (true); missing_true sends it to the true child either way.
    const bool nan_goes_true = mode == kNeq || missing_true;
    o.can_true = o.can_true || nan_goes_true;
    o.can_false = o.can_false || !nan_goes_true;
  }
  return o;
}

ChildRanges branch_children(uint8_t mode, double t, bool missing_true, const Range& r, Domain d) {
  using namespace flock::tree;
  const bool nan_goes_true = mode == kNeq || missing_true;
  ChildRanges c{r, r};
  c.yes.missing = r.missing && nan_goes_true;
  c.no.missing = r.missing && !nan_goes_true;
  auto at_least = [&](Range& x, double v) { x.lo = std::max(x.lo, v); };
  auto at_most = [&](Range& x, double v) { x.hi = std::min(x.hi, v); };
  auto no_values = [](Range& x) {
    x.lo = kInf;
    x.hi = -kInf;
  };
  auto above = [&](Range& x, double v) {  // x > v
    if (v == kInf) no_values(x);
    else at_least(x, next_up(v, d));
  };
  auto below = [&](Range& x, double v) {  // x < v
    if (v == -kInf) no_values(x);
    else at_most(x, next_down(v, d));
  };
  auto equal = [&](Range& x, double v) {
    at_least(x, v);
    at_most(x, v);
  };
  auto not_equal = [&](Range& x, double v) {  // only the ends can be cut
    if (x.lo == v) above(x, v);
    else if (x.hi == v) below(x, v);
  };
  if (std::isnan(t)) {
    if (mode == kNeq) no_values(c.no);
    else no_values(c.yes);
    return c;
  }
  switch (mode) {
    case kLeq: at_most(c.yes, t); above(c.no, t); break;
    case kLt: below(c.yes, t); at_least(c.no, t); break;
    case kGte: at_least(c.yes, t); below(c.no, t); break;
    case kGt: above(c.yes, t); at_most(c.no, t); break;
    case kEq: equal(c.yes, t); not_equal(c.no, t); break;
    case kNeq: not_equal(c.yes, t); equal(c.no, t); break;
    default: break;
  }
  return c;
}

}  // namespace flock::optimize::detail
