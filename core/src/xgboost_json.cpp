// The XGBoost importer's JSON document, read with simdjson's On-Demand API (see xgboost_json.hpp).
#include "xgboost_json.hpp"

#include <fmt/format.h>
#include <simdjson.h>

#include <array>
#include <utility>

#include "flock/error.hpp"

namespace flock::xgboost_json {

namespace ondemand = simdjson::ondemand;
using ondemand::json_type;

struct Document::Parser {
  simdjson::padded_string text;
  ondemand::parser parser;
  ondemand::document doc;
};

// One pass over the document in text order. Each container's members are gathered in a per-depth
// scratch list and appended to members_ when the container closes, so they stay contiguous.
struct Document::Builder {
  Document& d;
  ondemand::document& doc;
  const char* text_begin;
  std::span<const std::string_view> unread;
  std::array<std::vector<Member>, kMaxDepth + 2> scratch;

  [[noreturn]] void error(simdjson::error_code e) {
    std::string where;
    const char* at = nullptr;
    if (doc.current_location().get(at) == simdjson::SUCCESS && at) where = fmt::format(" (near byte {})", at - text_begin);
    fail(ErrorCode::InvalidModel, fmt::format("xgboost model: not valid JSON: {}{}", simdjson::error_message(e), where));
  }
  void check(simdjson::error_code e) {
    if (e != simdjson::SUCCESS) error(e);
  }

  uint32_t add(const Value& v) {
    d.values_.push_back(v);
    return static_cast<uint32_t>(d.values_.size() - 1);
  }
  uint32_t add_number(double x) {
    Value v;
    v.kind = Value::Number;
    v.number = x;
    return add(v);
  }

  // A string, number, boolean or null: of a value, or of the document when it is one.
  template <typename V>
  uint32_t scalar(V& v, json_type type) {
    Value out;
    switch (type) {
      case json_type::string:
        out.kind = Value::String;
        check(v.get_string().get(out.text));
        return add(out);
      case json_type::number: {
        double x = 0;
        check(v.get_double().get(x));
        return add_number(x);
      }
      case json_type::boolean: {
        bool b = false;
        check(v.get_bool().get(b));
        out.kind = b ? Value::True : Value::False;
        return add(out);
      }
      case json_type::null: {
        bool is_null = false;
        check(v.is_null().get(is_null));
        if (!is_null) error(simdjson::N_ATOM_ERROR);
        return add(out);
      }
      default: error(simdjson::TAPE_ERROR);
    }
  }

  uint32_t value(ondemand::value v, int depth, bool keep_numbers = true) {
    if (depth > kMaxDepth) error(simdjson::DEPTH_ERROR);
    json_type type;
    check(v.type().get(type));
    if (type == json_type::object) {
      ondemand::object o;
      check(v.get_object().get(o));
      return object(o, depth);
    }
    if (type == json_type::array) {
      ondemand::array a;
      check(v.get_array().get(a));
      return array(a, depth, keep_numbers);
    }
    return scalar(v, type);
  }

  uint32_t object(ondemand::object& o, int depth) {
    std::vector<Member>& members = scratch[static_cast<size_t>(depth)];
    members.clear();
    for (auto field_result : o) {
      ondemand::field field;
      check(std::move(field_result).get(field));
      std::string_view key;
      check(field.unescaped_key().get(key));
      bool keep_numbers = true;
      for (std::string_view name : unread) keep_numbers = keep_numbers && key != name;
      members.push_back({value(field.value(), depth + 1, keep_numbers), key});
    }
    Value out;
    out.kind = Value::Object;
    return close(out, members);
  }

  // Numbers are read straight into numbers_ while every element is one (get_double leaves a value
  // that is not a number unread); the first other element turns the array into a list of values.
  // An array that is not kept is read the same way, element by element, and only counted.
  uint32_t array(ondemand::array& a, int depth, bool keep) {
    std::vector<Member>& members = scratch[static_cast<size_t>(depth)];
    members.clear();
    const size_t first_number = d.numbers_.size();
    bool numeric = true;
    uint32_t count = 0;
    for (auto element_result : a) {
      ondemand::value element;
      check(std::move(element_result).get(element));
      ++count;
      if (numeric) {
        double x;
        const simdjson::error_code e = element.get_double().get(x);
        if (e == simdjson::SUCCESS) {
          if (keep) d.numbers_.push_back(x);
          continue;
        }
        if (e != simdjson::INCORRECT_TYPE) error(e);
        numeric = false;
        if (keep) {
          for (size_t k = first_number; k < d.numbers_.size(); ++k) members.push_back({add_number(d.numbers_[k]), {}});
          d.numbers_.resize(first_number);
        }
      }
      const uint32_t v = value(element, depth + 1, keep);
      if (keep) members.push_back({v, {}});
    }
    Value out;
    out.kind = Value::Array;
    if (!keep) {
      out.numeric = numeric;
      out.dropped = true;
      out.count = count;
      return add(out);
    }
    if (!numeric) return close(out, members);
    out.numeric = true;
    out.first = static_cast<uint32_t>(first_number);
    out.count = count;
    return add(out);
  }

  uint32_t close(Value& out, const std::vector<Member>& members) {
    out.first = static_cast<uint32_t>(d.members_.size());
    out.count = static_cast<uint32_t>(members.size());
    d.members_.insert(d.members_.end(), members.begin(), members.end());
    return add(out);
  }
};

Document::Document(std::span<const uint8_t> bytes, std::span<const std::string_view> unread)
    : parser_(std::make_unique<Parser>()) {
  // Offsets are 32-bit; simdjson itself stops at 4 GB.
  if (bytes.size() >= UINT32_MAX)
    fail(ErrorCode::LimitExceeded, fmt::format("xgboost model: {} bytes of JSON is more than Flock reads", bytes.size()));
  parser_->text = simdjson::padded_string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  ondemand::document& doc = parser_->doc;
  const simdjson::error_code opened = parser_->parser.iterate(parser_->text).get(doc);
  if (opened != simdjson::SUCCESS)
    fail(ErrorCode::InvalidModel, fmt::format("xgboost model: not valid JSON: {}", simdjson::error_message(opened)));
  values_.reserve(1024);
  members_.reserve(1024);
  // A number takes at least two bytes ("1,"); XGBoost's take about six, and the importer keeps
  // about 60% of them. Reserving an eighth of the size avoids regrowing (and copying) on the way.
  numbers_.reserve(bytes.size() / 8);
  auto builder = std::make_unique<Builder>(Builder{*this, doc, parser_->text.data(), unread, {}});
  json_type type;
  builder->check(doc.type().get(type));
  if (type == json_type::object || type == json_type::array) {
    ondemand::value v;
    builder->check(doc.get_value().get(v));
    root_ = builder->value(v, 0);
  } else {
    root_ = builder->scalar(doc, type);
  }
  // Past the root value, current_location() is out of bounds unless something follows it.
  const char* rest = nullptr;
  if (doc.current_location().get(rest) != simdjson::OUT_OF_BOUNDS)
    fail(ErrorCode::InvalidModel, "xgboost model: not valid JSON: unexpected content after the JSON value");
}

Document::~Document() = default;

const Value* Document::find(const Value& object, std::string_view key) const {
  for (uint32_t k = 0; k < object.count; ++k) {
    const Member& m = members_[object.first + k];
    if (m.key == key) return &values_[m.value];
  }
  return nullptr;
}

}  // namespace flock::xgboost_json
