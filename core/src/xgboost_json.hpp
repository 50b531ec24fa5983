// Internal to flock_core: the JSON document the XGBoost importer reads (xgboost_import.cpp).
//
// The whole text is read once, front to back, by simdjson's On-Demand API into a small tree of
// values, so every value is visited and validated — structure, strings (escapes, UTF-8) and every
// number, including the per-node statistics the importer never reads — and each number is parsed
// once, where it stands. An array whose elements are all numbers (most of a model's bytes) keeps
// them as one run of doubles, which the importer copies instead of walking values; the arrays of
// per-node statistics it never reads are validated the same way but their numbers are not kept.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace flock::xgboost_json {

// Deepest nesting of arrays and objects accepted (XGBoost models nest about 6 levels).
constexpr int kMaxDepth = 512;

struct Value {
  enum Kind : uint8_t { Null, False, True, Number, String, Array, Object };
  Kind kind = Null;
  bool numeric = false;   // Array whose elements are all numbers (an empty array is one too)
  bool dropped = false;   // Array of a member named in `unread`: validated and counted, elements not kept
  uint32_t count = 0;     // Array: elements; Object: members
  uint32_t first = 0;     // numeric Array: first of its doubles; other Array / Object: first member
  double number = 0;      // Number
  std::string_view text;  // String: the decoded contents (they live as long as the document)

  bool is_array() const { return kind == Array; }
  bool is_object() const { return kind == Object; }
  bool is_string() const { return kind == String; }
  bool is_number() const { return kind == Number; }
  bool is_bool() const { return kind == True || kind == False; }
  bool is_null() const { return kind == Null; }
};

class Document {
 public:
  // Throws flock::Error(InvalidModel, "xgboost model: not valid JSON: ...") on malformed text.
  // An array that is the value of a member named in `unread` is validated like the rest, but its
  // elements are not kept: numbers() and at() of it hold nothing.
  explicit Document(std::span<const uint8_t> bytes, std::span<const std::string_view> unread = {});
  ~Document();
  Document(const Document&) = delete;
  Document& operator=(const Document&) = delete;

  const Value& root() const { return values_[root_]; }
  // Element k of an array that is not numeric, or the value of member k of an object.
  const Value& at(const Value& container, size_t k) const { return values_[members_[container.first + k].value]; }
  // The first member named `key` of an object, or nullptr.
  const Value* find(const Value& object, std::string_view key) const;
  // The elements of a numeric array.
  std::span<const double> numbers(const Value& numeric_array) const {
    if (!numeric_array.numeric || numeric_array.dropped) return {};
    return {numbers_.data() + numeric_array.first, numeric_array.count};
  }

 private:
  struct Member {
    uint32_t value;
    std::string_view key;  // objects only
  };
  struct Parser;  // simdjson's parser and the padded copy of the text: the strings point into them
  struct Builder;  // the one pass that fills the vectors below

  std::unique_ptr<Parser> parser_;
  uint32_t root_ = 0;
  std::vector<Value> values_;
  std::vector<Member> members_;
  std::vector<double> numbers_;
};

}  // namespace flock::xgboost_json
