// Per-column constraints (flock/optimize.hpp): intervals with open, closed or absent ends, and
// whether a missing value is possible.
#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "flock/optimize.hpp"

namespace flock::optimize {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

std::optional<Bound> sane(std::optional<Bound> b) {
  if (b && std::isnan(b->value)) return std::nullopt;
  return b;
}

// The tighter of two lower bounds (at equal values, open is tighter).
std::optional<Bound> tighter_lower(const std::optional<Bound>& a, const std::optional<Bound>& b) {
  if (!a) return b;
  if (!b) return a;
  if (a->value != b->value) return a->value > b->value ? a : b;
  return Bound{a->value, a->closed && b->closed};
}

std::optional<Bound> tighter_upper(const std::optional<Bound>& a, const std::optional<Bound>& b) {
  if (!a) return b;
  if (!b) return a;
  if (a->value != b->value) return a->value < b->value ? a : b;
  return Bound{a->value, a->closed && b->closed};
}

std::string number(double v) {
  if (v == kInf) return "inf";
  if (v == -kInf) return "-inf";
  return fmt::format("{}", v);
}

}  // namespace

Interval Interval::point(double v) { return between({v, true}, {v, true}); }
Interval Interval::at_least(double v) {
  Interval i;
  i.lower_ = sane(Bound{v, true});
  return i;
}
Interval Interval::greater_than(double v) {
  Interval i;
  i.lower_ = sane(Bound{v, false});
  return i;
}
Interval Interval::at_most(double v) {
  Interval i;
  i.upper_ = sane(Bound{v, true});
  return i;
}
Interval Interval::less_than(double v) {
  Interval i;
  i.upper_ = sane(Bound{v, false});
  return i;
}
Interval Interval::between(Bound lower, Bound upper) {
  Interval i;
  i.lower_ = sane(lower);
  i.upper_ = sane(upper);
  return i;
}
Interval Interval::none() { return between({kInf, false}, {kInf, false}); }

bool Interval::is_empty() const {
  const double lo = lower_ ? lower_->value : -kInf, hi = upper_ ? upper_->value : kInf;
  const bool lo_closed = !lower_ || lower_->closed, hi_closed = !upper_ || upper_->closed;
  if (lo > hi) return true;
  if (lo == hi) return !(lo_closed && hi_closed);
  // (v, +inf] over the extended reals is never empty below +inf; (+inf, ...) is.
  return lower_ && !lower_->closed && lower_->value == kInf;
}

bool Interval::contains(double v) const {
  if (std::isnan(v)) return false;
  if (lower_ && (v < lower_->value || (v == lower_->value && !lower_->closed))) return false;
  if (upper_ && (v > upper_->value || (v == upper_->value && !upper_->closed))) return false;
  return true;
}

Interval Interval::intersect(const Interval& other) const {
  Interval i;
  i.lower_ = tighter_lower(lower_, other.lower_);
  i.upper_ = tighter_upper(upper_, other.upper_);
  return i;
}

bool Interval::operator==(const Interval& other) const {
  auto same = [](const std::optional<Bound>& a, const std::optional<Bound>& b) {
    if (!a || !b) return !a && !b;
    return a->value == b->value && a->closed == b->closed;
  };
  return same(lower_, other.lower_) && same(upper_, other.upper_);
}

std::string Interval::to_string() const {
  if (is_empty()) return "{}";
  if (lower_ && upper_ && lower_->value == upper_->value) return fmt::format("{{{}}}", number(lower_->value));
  return fmt::format("{}{}, {}{}", !lower_ || lower_->closed ? "[" : "(", lower_ ? number(lower_->value) : "-inf",
                     upper_ ? number(upper_->value) : "inf", !upper_ || upper_->closed ? "]" : ")");
}

bool FeatureConstraint::contains(double v) const { return std::isnan(v) ? missing_allowed : values.contains(v); }

FeatureConstraint FeatureConstraint::intersect(const FeatureConstraint& other) const {
  return FeatureConstraint{values.intersect(other.values), missing_allowed && other.missing_allowed};
}

std::string FeatureConstraint::to_string() const {
  if (is_empty()) return "nothing";
  if (values.is_empty()) return "missing";
  return values.to_string() + (missing_allowed ? " or missing" : "");
}

Constraints Constraints::intersect(const Constraints& other) const {
  Constraints out;
  out.exact_input_values = exact_input_values && other.exact_input_values;
  const size_t n = std::max(columns.size(), other.columns.size());
  out.columns.resize(n);
  for (size_t k = 0; k < n; ++k) {
    const FeatureConstraint mine = k < columns.size() ? columns[k] : FeatureConstraint::any();
    const FeatureConstraint theirs = k < other.columns.size() ? other.columns[k] : FeatureConstraint::any();
    out.columns[k] = mine.intersect(theirs);
  }
  return out;
}

bool Constraints::unsatisfiable() const {
  for (const auto& c : columns)
    if (c.is_empty()) return true;
  return false;
}

std::string Constraints::to_string(const std::vector<std::string>& names) const {
  std::string out;
  for (size_t k = 0; k < columns.size(); ++k) {
    const FeatureConstraint& c = columns[k];
    if (c.is_any()) continue;
    const std::string name = k < names.size() && !names[k].empty() ? names[k] : fmt::format("column {}", k);
    const Interval& v = c.values;
    std::string text;
    if (c.is_empty() || v.is_empty()) {
      text = fmt::format("{} {}", name, c.is_empty() ? "has no value" : "is missing");
    } else if (v.is_all()) {
      text = fmt::format("{} is not missing", name);
    } else if (v.lower() && v.upper() && v.lower()->value == v.upper()->value) {
      text = fmt::format("{} = {}", name, number(v.lower()->value));
    } else {
      if (v.lower()) text = fmt::format("{} {} {}", name, v.lower()->closed ? ">=" : ">", number(v.lower()->value));
      if (v.upper())
        text += fmt::format("{}{} {} {}", text.empty() ? "" : " and ", name, v.upper()->closed ? "<=" : "<",
                            number(v.upper()->value));
      if (c.missing_allowed) text = fmt::format("({} or {} is missing)", text, name);
    }
    out += (out.empty() ? "" : ", ") + text;
  }
  return out;
}

}  // namespace flock::optimize
