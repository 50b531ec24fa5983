// XGBoost JSON (gbtree) -> ONNX-ML TreeEnsemble model.
//
// Encoding (checked against ONNX Runtime's TreeEnsemble semantics, which Flock's kernels follow):
//   reg:squarederror  TreeEnsembleRegressor(NONE, base_values=[base_score]) -> "variable"
//   reg:logistic      TreeEnsembleRegressor(NONE, base_values=[logit(base_score)]) -> Sigmoid ->
//                     "variable". (ORT ignores post_transform LOGISTIC on a single-target
//                     regressor, so the sigmoid is a separate standard node.)
//   binary:logistic   TreeEnsembleClassifier(LOGISTIC), labels [0, 1], every leaf weight on class 0
//                     and base_values=[logit(base_score)]: ORT's binary single-score case, which
//                     gives probabilities [1 - p, p] and label 1 iff the margin is > 0.
//                     If no leaf weight is negative, ORT's single-score case would skip the
//                     sigmoid ("all weights positive" rule); then class 1 also gets a 0 weight on
//                     every leaf of the first tree and base_values=[m, m], which ORT turns into
//                     scores [-margin, margin] -> the same [1 - p, p] and label.
//   multi:softprob / multi:softmax with num_class >= 3
//                     TreeEnsembleClassifier(SOFTMAX), class_ids = tree_info,
//                     base_values = [base_score] * num_class.
//   multi:* with num_class == 2
//                     the binary encoding on margin1 - margin0 (class-0 trees negated), since
//                     softmax of two margins is the logistic of their difference and ORT's
//                     two-class rules would otherwise drop the class-1 sum.
//
// Two outputs share one parse: import_xgboost_json emits the tree ensemble as standard ONNX
// attributes; import_xgboost_compiled (Model::load's route) hands the same ensemble to the kernel
// as arrays, because a 1,000-tree model has ~350,000 nodes and the attribute form (a string per
// node mode, id lookups through a hash map) dominated its load time.
//
// JSON: a small reader of its own (JsonDoc below) rather than nlohmann::json, which needs ~1 s
// and ~1 GB of allocations for a 20 MB model. It validates the structure of the whole document,
// every string (escapes, UTF-8) and every number outside arrays of numbers. An array of numbers
// (most of the bytes: per-node statistics the importer never reads) is only checked, 16 bytes at a
// time, to hold nothing but number characters and separators up to its ']'; the arrays the
// importer reads are then parsed strictly (number grammar, separators), so a malformed number can
// only go unnoticed in an array nothing uses — like simdjson's On-Demand API, which does not
// validate the values it skips.
#include "xgboost_import.hpp"

#include <fmt/format.h>

#include <bit>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "flock/error.hpp"
#include "flock/importers.hpp"
#include "kernels/ml_tree.hpp"

namespace flock {
namespace {

const char* kSupportedHint =
    "Flock imports XGBoost gbtree models with objective reg:squarederror, reg:logistic, "
    "binary:logistic, multi:softprob or multi:softmax (numerical splits only).";

[[noreturn]] void bad(const std::string& msg) { fail(ErrorCode::InvalidModel, "xgboost model: " + msg); }

[[noreturn]] void unsupported(const std::string& msg) {
  fail(ErrorCode::UnsupportedOperator, "xgboost model: " + msg, kSupportedHint);
}

// ---------------------------------------------------------------------------------------------
// JSON reader

inline bool is_digit(char c) { return c >= '0' && c <= '9'; }
inline bool is_ws(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

// Per byte of x: nonzero unless the byte is '0'..'9' (high nibble 3, low nibble <= 9). A carry out
// of a byte >= 0xFA only disturbs the bytes above it, past the first non-digit.
inline uint64_t non_digits(uint64_t x) {
  const uint64_t hi = 0xF0F0F0F0F0F0F0F0ull, threes = 0x3030303030303030ull;
  return ((x & hi) ^ threes) | (((x + 0x0606060606060606ull) & hi) ^ threes);
}

// The 8-bytes-at-a-time helpers read the first byte as the lowest: little-endian only (big-endian
// machines take the byte-by-byte paths).
constexpr bool kLittleEndian = std::endian::native == std::endian::little;

// First non-digit at or after p, 8 bytes at a time while 8 can be read before `limit`.
inline const char* skip_digits(const char* p, const char* limit) {
  while (kLittleEndian && limit - p >= 8) {
    uint64_t x;
    std::memcpy(&x, p, 8);
    if (const uint64_t nd = non_digits(x)) return p + (std::countr_zero(nd) >> 3);  // lowest byte first
    p += 8;
  }
  while (p < limit && is_digit(*p)) ++p;
  return p;
}

// End of the JSON number starting at p, or nullptr if none starts there:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?  The caller guarantees a byte that cannot
// continue a number (a separator) before `limit`.
inline const char* number_end(const char* p, const char* limit) {
  const char* q = p + (*p == '-');
  const char* d = skip_digits(q, limit);
  if (d == q || (*q == '0' && d - q > 1)) return nullptr;
  q = d;
  if (*q == '.') {
    d = skip_digits(q + 1, limit);
    if (d == q + 1) return nullptr;
    q = d;
  }
  if (*q == 'e' || *q == 'E') {
    ++q;
    q += (*q == '+' || *q == '-');
    d = skip_digits(q, limit);
    if (d == q) return nullptr;
    q = d;
  }
  return q;
}

struct JValue {
  enum Kind : uint8_t { Null, False, True, Number, String, Array, Object };
  Kind kind = Null;
  bool numeric = false;  // Array of numbers, kept as text in [begin, end) (end: its ']')
  bool escaped = false;  // String: contains escapes (decode before use)
  uint32_t count = 0;    // Array: elements; Object: members
  uint32_t first = 0;    // Array (not numeric) / Object: first entry in JsonDoc::kids_
  const char* begin = nullptr;  // Number: text; String: contents without quotes; numeric Array: after '['
  const char* end = nullptr;

  bool is_array() const { return kind == Array; }
  bool is_object() const { return kind == Object; }
  bool is_string() const { return kind == String; }
  bool is_number() const { return kind == Number; }
  bool is_bool() const { return kind == True || kind == False; }
  bool is_null() const { return kind == Null; }
  // A number written without fraction or exponent.
  bool is_integer_text() const {
    if (kind != Number) return false;
    for (const char* p = begin; p < end; ++p)
      if (*p == '.' || *p == 'e' || *p == 'E') return false;
    return true;
  }
};

class JsonDoc {
 public:
  explicit JsonDoc(std::span<const uint8_t> bytes)
      : p_(reinterpret_cast<const char*>(bytes.data())), start_(p_), end_(p_ + bytes.size()) {
    values_.reserve(1024);
    kids_.reserve(1024);
    ws();
    root_ = parse_value(0);
    ws();
    if (p_ != end_) error("unexpected content after the JSON value");
  }

  const JValue& root() const { return values_[root_]; }
  const JValue& at(const JValue& container, size_t k) const { return values_[kids_[container.first + k].value]; }
  const JValue* find(const JValue& obj, std::string_view key) const {
    for (uint32_t k = 0; k < obj.count; ++k) {
      const Kid& kid = kids_[obj.first + k];
      if (!kid.key_escaped) {
        if (std::string_view(kid.key, kid.key_len) == key) return &values_[kid.value];
      } else if (decode_string(kid.key, kid.key + kid.key_len) == key) {
        return &values_[kid.value];
      }
    }
    return nullptr;
  }

  static std::string text(const JValue& v) {
    return v.escaped ? decode_string(v.begin, v.end) : std::string(v.begin, v.end);
  }

  // End of the document: bytes up to here may be read.
  const char* limit() const { return end_; }

 private:
  struct Kid {
    uint32_t value;
    uint32_t key_len;
    const char* key;
    bool key_escaped;
  };

  [[noreturn]] void error(const std::string& what) const {
    bad(fmt::format("not valid JSON: {} at byte {}", what, p_ - start_));
  }

  void ws() {
    while (p_ < end_ && is_ws(*p_)) ++p_;
  }

  uint32_t add(const JValue& v) {
    values_.push_back(v);
    return static_cast<uint32_t>(values_.size() - 1);
  }

  uint32_t parse_value(int depth) {
    if (p_ >= end_) error("unexpected end of input");
    if (depth > 512) error("nesting deeper than 512 levels");
    JValue v;
    switch (*p_) {
      case '{': return parse_object(depth);
      case '[': return parse_array(depth);
      case '"':
        v.kind = JValue::String;
        scan_string(v);
        return add(v);
      case 't': literal("true"); v.kind = JValue::True; return add(v);
      case 'f': literal("false"); v.kind = JValue::False; return add(v);
      case 'n': literal("null"); v.kind = JValue::Null; return add(v);
      default:
        if (*p_ == '-' || is_digit(*p_)) {
          v.kind = JValue::Number;
          v.begin = p_;
          scan_number();
          v.end = p_;
          return add(v);
        }
        error(fmt::format("unexpected character '{}'", printable(*p_)));
    }
  }

  static std::string printable(char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u < 0x7f ? std::string(1, c) : fmt::format("\\x{:02x}", u);
  }

  void literal(const char* word) {
    const size_t n = std::strlen(word);
    if (static_cast<size_t>(end_ - p_) < n || std::memcmp(p_, word, n) != 0)
      error(fmt::format("unexpected character '{}'", printable(*p_)));
    p_ += n;
  }

  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  void scan_number() {
    const char* p = p_ + (*p_ == '-');
    const char* d = skip_digits(p, end_);
    if (d == p) {
      p_ = p;
      error("invalid number");
    }
    if (*p == '0' && d - p > 1) {
      p_ = p;
      error("invalid number: leading zero");
    }
    p = d;
    if (p < end_ && *p == '.') {
      ++p;
      d = skip_digits(p, end_);
      if (d == p) {
        p_ = p;
        error("invalid number: no digit after '.'");
      }
      p = d;
    }
    if (p < end_ && (*p == 'e' || *p == 'E')) {
      ++p;
      if (p < end_ && (*p == '+' || *p == '-')) ++p;
      d = skip_digits(p, end_);
      if (d == p) {
        p_ = p;
        error("invalid number: no digit in the exponent");
      }
      p = d;
    }
    p_ = p;
  }

  static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // At '"': validates the string (escapes, surrogate pairs, UTF-8) and records its contents.
  void scan_string(JValue& v) {
    ++p_;
    v.begin = p_;
    while (true) {
      if (p_ >= end_) error("unterminated string");
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '"') break;
      if (c == '\\') {
        v.escaped = true;
        ++p_;
        if (p_ >= end_) error("unterminated string");
        const char e = *p_;
        if (e == 'u') {
          const uint32_t cp = read_hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') error("lone surrogate in a \\u escape");
            p_ += 1;
            const uint32_t lo = read_hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) error("invalid surrogate pair in a \\u escape");
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            error("lone surrogate in a \\u escape");
          }
          continue;  // read_hex4 left p_ after the escape
        }
        if (!std::strchr("\"\\/bfnrt", e) || e == 0) error("invalid escape in a string");
        ++p_;
        continue;
      }
      if (c < 0x20) error("control character in a string");
      if (c < 0x80) {
        ++p_;
        continue;
      }
      scan_utf8(c);
    }
    v.end = p_;
    ++p_;  // closing quote
  }

  // At 'u' of "\uXXXX": returns the code unit, leaves p_ after it.
  uint32_t read_hex4() {
    ++p_;
    if (end_ - p_ < 4) error("truncated \\u escape");
    uint32_t cp = 0;
    for (int k = 0; k < 4; ++k) {
      const int h = hex(p_[k]);
      if (h < 0) error("invalid \\u escape");
      cp = cp * 16 + static_cast<uint32_t>(h);
    }
    p_ += 4;
    return cp;
  }

  void scan_utf8(unsigned char c) {
    int n;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      cp = c & 0x07;
    } else {
      error("ill-formed UTF-8 in a string");
    }
    if (end_ - p_ <= n) error("ill-formed UTF-8 in a string");
    for (int k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(p_[k]);
      if ((cc & 0xC0) != 0x80) error("ill-formed UTF-8 in a string");
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((n == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
      error("ill-formed UTF-8 in a string");
    p_ += n + 1;
  }

  static void put_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  // Decodes the contents of a string the scanner validated.
  static std::string decode_string(const char* p, const char* e) {
    std::string out;
    out.reserve(static_cast<size_t>(e - p));
    auto hex4 = [](const char* q) {
      uint32_t cp = 0;
      for (int k = 0; k < 4; ++k) cp = cp * 16 + static_cast<uint32_t>(hex(q[k]));
      return cp;
    };
    while (p < e) {
      if (*p != '\\') {
        out += *p++;
        continue;
      }
      const char c = p[1];
      p += 2;
      switch (c) {
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4(p);
          p += 4;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            const uint32_t lo = hex4(p + 2);
            p += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          put_utf8(out, cp);
          break;
        }
        default: out += c; break;  // " \ /
      }
    }
    return out;
  }

  uint32_t parse_object(int depth) {
    ++p_;  // '{'
    std::vector<Kid> members;
    ws();
    if (p_ < end_ && *p_ == '}') {
      ++p_;
    } else {
      while (true) {
        ws();
        if (p_ >= end_) error("unexpected end of input in an object");
        if (*p_ != '"') error("expected a string key in an object");
        JValue key;
        scan_string(key);
        ws();
        if (p_ >= end_ || *p_ != ':') error("expected ':' after an object key");
        ++p_;
        ws();
        const uint32_t value = parse_value(depth + 1);
        members.push_back(Kid{value, static_cast<uint32_t>(key.end - key.begin), key.begin, key.escaped});
        ws();
        if (p_ >= end_) error("unexpected end of input in an object");
        if (*p_ == ',') {
          ++p_;
          continue;
        }
        if (*p_ == '}') {
          ++p_;
          break;
        }
        error("expected ',' or '}' in an object");
      }
    }
    JValue v;
    v.kind = JValue::Object;
    v.first = static_cast<uint32_t>(kids_.size());
    v.count = static_cast<uint32_t>(members.size());
    kids_.insert(kids_.end(), members.begin(), members.end());
    return add(v);
  }

  // From p to the next ']': true (close at it, commas counted) if every byte is one an array of
  // numbers holds (digits . e E + - , and white space), false at the first other byte.
  bool scan_number_chars(const char* p, const char*& close, uint32_t& commas) const {
    using v16 = uint8_t __attribute__((vector_size(16)));
    v16 count = {};
    int pending = 0;
    auto flush = [&] {
      uint64_t lo, hi;
      std::memcpy(&lo, &count, 8);
      std::memcpy(&hi, reinterpret_cast<const char*>(&count) + 8, 8);
      for (int k = 0; k < 8; ++k) commas += static_cast<uint32_t>(((lo >> (8 * k)) & 0xFF) + ((hi >> (8 * k)) & 0xFF));
      count = v16{};
      pending = 0;
    };
    while (end_ - p >= 16) {
      v16 c;
      std::memcpy(&c, p, 16);
      const v16 comma = (v16)(c == ',');
      const v16 ok = (v16)((v16)(c - '0') < 10) | comma | (v16)(c == '.') | (v16)(c == '-') | (v16)(c == '+') |
                     (v16)((c | 0x20) == 'e') | (v16)(c == ' ') | (v16)(c == '\n') | (v16)(c == '\r') |
                     (v16)(c == '\t');
      uint64_t lo, hi;
      std::memcpy(&lo, &ok, 8);
      std::memcpy(&hi, reinterpret_cast<const char*>(&ok) + 8, 8);
      if ((lo & hi) != ~uint64_t(0)) break;  // a ']' or another byte: finish byte by byte
      count -= comma;                          // comma lanes are 0xFF: -1
      if (++pending == 255) flush();
      p += 16;
    }
    flush();
    for (; p < end_; ++p) {
      const char c = *p;
      if (c == ']') {
        close = p;
        return true;
      }
      if (c == ',') ++commas;
      else if (!is_digit(c) && c != '.' && c != '-' && c != '+' && c != 'e' && c != 'E' && !is_ws(c)) return false;
    }
    return false;  // no ']': the general parse reports where the document ends
  }

  uint32_t parse_array(int depth) {
    const char* open = p_;
    ++p_;  // '['
    // Arrays of numbers: scanned for their character set only, kept as text.
    {
      ws();
      if (p_ < end_ && *p_ == ']') {
        JValue v;
        v.kind = JValue::Array;
        v.numeric = true;
        v.begin = v.end = p_++;
        return add(v);
      }
      if (p_ < end_ && (*p_ == '-' || is_digit(*p_))) {
        const char* close = nullptr;
        uint32_t commas = 0;
        if (scan_number_chars(p_, close, commas)) {
          JValue v;
          v.kind = JValue::Array;
          v.numeric = true;
          v.begin = open + 1;
          v.end = close;
          v.count = commas + 1;
          p_ = close + 1;
          return add(v);
        }
      }
    }
    // General arrays.
    p_ = open + 1;
    std::vector<Kid> elems;
    ws();
    if (p_ < end_ && *p_ == ']') {
      ++p_;
    } else {
      while (true) {
        ws();
        elems.push_back(Kid{parse_value(depth + 1), 0, nullptr, false});
        ws();
        if (p_ >= end_) error("unexpected end of input in an array");
        if (*p_ == ',') {
          ++p_;
          continue;
        }
        if (*p_ == ']') {
          ++p_;
          break;
        }
        error("expected ',' or ']' in an array");
      }
    }
    JValue v;
    v.kind = JValue::Array;
    v.first = static_cast<uint32_t>(kids_.size());
    v.count = static_cast<uint32_t>(elems.size());
    kids_.insert(kids_.end(), elems.begin(), elems.end());
    return add(v);
  }

  const char* p_;
  const char* start_;
  const char* end_;
  uint32_t root_ = 0;
  std::vector<JValue> values_;
  std::vector<Kid> kids_;
};

// ---------------------------------------------------------------------------------------------
// Typed access with paths in error messages

std::string join(const std::string& path, const char* name) { return path.empty() ? name : path + "." + name; }

const JValue& key(const JsonDoc& d, const JValue& j, const char* name, const std::string& path) {
  if (!j.is_object()) bad(fmt::format("'{}' is not a JSON object", path));
  const JValue* v = d.find(j, name);
  if (!v) bad(fmt::format("missing key '{}{}{}'", path, path.empty() ? "" : ".", name));
  return *v;
}

const JValue* opt_key(const JsonDoc& d, const JValue& j, const char* name) {
  if (!j.is_object()) return nullptr;
  return d.find(j, name);
}

// A number token (validated JSON) as double, correctly rounded like strtod. Most tokens take
// Clinger's fast path: at most 19 significant digits whose value fits 2^53, scaled by an exact
// power of ten <= 1e22 — one correctly rounded operation. The rest go to std::from_chars (and
// values out of its range to strtod, which gives +-inf or 0 as nlohmann::json did).
double parse_double(const char* b, const char* e) {
  static constexpr double kPow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                      1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
  const char* p = b;
  const bool neg = p < e && *p == '-';
  p += neg;
  uint64_t m = 0;
  int digits = 0, exp10 = 0;
  bool exact = true;
  for (; p < e && *p >= '0' && *p <= '9'; ++p) {
    if (m == 0 && *p == '0') continue;
    if (digits < 19) {
      m = m * 10 + static_cast<uint64_t>(*p - '0');
      ++digits;
    } else {
      exact = false;
    }
  }
  if (p < e && *p == '.') {
    for (++p; p < e && *p >= '0' && *p <= '9'; ++p) {
      if (m == 0 && *p == '0') {
        --exp10;
        continue;
      }
      if (digits < 19) {
        m = m * 10 + static_cast<uint64_t>(*p - '0');
        ++digits;
        --exp10;
      } else {
        exact = false;
      }
    }
  }
  if (p < e && (*p == 'e' || *p == 'E')) {
    ++p;
    const bool eneg = p < e && *p == '-';
    if (p < e && (*p == '-' || *p == '+')) ++p;
    int x = 0;
    for (; p < e && *p >= '0' && *p <= '9'; ++p) x = std::min(x * 10 + (*p - '0'), 100000);
    exp10 += eneg ? -x : x;
  }
  if (exact && p == e) {
    if (m == 0) return neg ? -0.0 : 0.0;
    if (m <= (uint64_t(1) << 53) && exp10 >= -22 && exp10 <= 22) {
      double v = static_cast<double>(m);
      v = exp10 < 0 ? v / kPow10[-exp10] : v * kPow10[exp10];
      return neg ? -v : v;
    }
  }
  double d = 0;
  auto [ptr, ec] = std::from_chars(b, e, d);
  if (ec == std::errc() && ptr == e) return d;
  const std::string str(b, e);
  return std::strtod(str.c_str(), nullptr);
}

// XGBoost writes most scalars as strings ("5E-1", "4").
double number(const JValue& v, const std::string& path) {
  if (v.is_number()) return parse_double(v.begin, v.end);
  if (v.is_bool()) return v.kind == JValue::True ? 1.0 : 0.0;
  if (v.is_string()) {
    std::string s = JsonDoc::text(v);
    // XGBoost >= 2.1 may write a vector "[5E-1]" for base_score.
    if (s.size() >= 2 && s.front() == '[' && s.back() == ']') s = s.substr(1, s.size() - 2);
    const auto comma = s.find(',');
    if (comma != std::string::npos) s = s.substr(0, comma);
    try {
      size_t used = 0;
      double d = std::stod(s, &used);
      while (used < s.size() && (s[used] == ' ' || s[used] == '\t')) ++used;
      if (used == s.size()) return d;
    } catch (const std::exception&) {
    }
    bad(fmt::format("'{}' is \"{}\", not a number", path, JsonDoc::text(v)));
  }
  bad(fmt::format("'{}' is not a number", path));
}


int64_t check_integer(double d, const std::string& path) {
  if (!std::isfinite(d) || d != std::floor(d) || std::abs(d) > 9.0e15)
    bad(fmt::format("'{}' is {}, not an integer", path, d));
  return static_cast<int64_t>(d);
}

int64_t integer(const JValue& v, const std::string& path) { return check_integer(number(v, path), path); }

const JValue& array(const JsonDoc& d, const JValue& j, const char* name, const std::string& path) {
  const JValue& a = key(d, j, name, path);
  if (!a.is_array()) bad(fmt::format("'{}' is not an array", join(path, name)));
  return a;
}

[[noreturn]] void bad_element(const std::string& path, const char* name, uint32_t k, const char* what) {
  bad(fmt::format("not valid JSON: '{}[{}]' {}", join(path, name), k, what));
}

// Walks the elements of an array of numbers strictly: f(k, p) reads the number at p and returns
// where it ends (nullptr if no valid number starts there); separators are checked here.
template <typename F>
void for_each_element(const JValue& a, const std::string& path, const char* name, F&& f) {
  const char* p = a.begin;
  while (is_ws(*p)) ++p;
  if (p == a.end) return;  // []
  for (uint32_t k = 0;; ++k) {
    const char* e = f(k, p);
    if (!e) bad_element(path, name, k, "is not a valid number");
    p = e;
    if (*p == ',' && !is_ws(p[1])) {  // compact "1,2,3": the common case
      ++p;
      continue;
    }
    while (is_ws(*p)) ++p;
    if (p == a.end) return;
    if (*p != ',') bad_element(path, name, k, "is not followed by ',' or ']'");
    ++p;
    while (is_ws(*p)) ++p;
  }
}

// A plain integer of at most 7 digits at p, read 8 bytes at once (no branch per digit). False
// when it is not one (a fraction, an exponent, more digits, a malformed number, too near the end
// of the document): the caller takes the general path.
inline bool small_integer(const char* p, const char* limit, int64_t& value, const char*& end) {
  if (!kLittleEndian) return false;
  const bool neg = *p == '-';
  const char* q = p + neg;
  if (limit - q < 8) return false;
  uint64_t x;
  std::memcpy(&x, q, 8);
  const uint64_t nd = non_digits(x);
  if (nd == 0) return false;
  const int len = std::countr_zero(nd) >> 3;
  if (len == 0 || (len > 1 && q[0] == '0') || q[len] == '.' || q[len] == 'e' || q[len] == 'E') return false;
  // Digits to the top bytes (zeros below them read as leading zeros), then the eight-digit sum
  // of fast_float's parse_eight_digits_unrolled.
  uint64_t v = (x - 0x3030303030303030ull) << (8 * (8 - len));
  v = (v * 10) + (v >> 8);
  v = (((v & 0x000000FF000000FFull) * (100 + (1000000ull << 32))) +
       (((v >> 16) & 0x000000FF000000FFull) * (1 + (10000ull << 32)))) >>
      32;
  const int64_t u = static_cast<int64_t>(static_cast<uint32_t>(v));
  value = neg ? -u : u;
  end = q + len;
  return true;
}

void read_ints(const JsonDoc& d, const JValue& j, const char* name, const std::string& path, std::vector<int64_t>& out) {
  const JValue& a = array(d, j, name, path);
  out.clear();
  if (a.numeric) {
    out.reserve(a.count);
    const char* limit = d.limit();
    for_each_element(a, path, name, [&](uint32_t k, const char* p) -> const char* {
      int64_t v;
      const char* e;
      if (small_integer(p, limit, v, e)) {
        out.push_back(v);
        return e;
      }
      e = number_end(p, limit);
      if (e) out.push_back(check_integer(parse_double(p, e), fmt::format("{}[{}]", join(path, name), k)));
      return e;
    });
    return;
  }
  out.reserve(a.count);
  const std::string p = join(path, name);
  for (uint32_t k = 0; k < a.count; ++k) out.push_back(integer(d.at(a, k), fmt::format("{}[{}]", p, k)));
}

std::vector<int64_t> ints(const JsonDoc& d, const JValue& j, const char* name, const std::string& path) {
  std::vector<int64_t> out;
  read_ints(d, j, name, path, out);
  return out;
}

// Value of the n <= 8 digits at p (8 bytes readable), fast_float's eight-digit sum on the digits
// moved to the top bytes (the zero bytes below them read as leading zeros).
inline uint64_t digits_value(const char* p, int n) {
  if (n == 0) return 0;
  uint64_t x;
  std::memcpy(&x, p, 8);
  uint64_t v = (x - 0x3030303030303030ull) << (8 * (8 - n));
  v = (v * 10) + (v >> 8);
  v = (((v & 0x000000FF000000FFull) * (100 + (1000000ull << 32))) +
       (((v >> 16) & 0x000000FF000000FFull) * (1 + (10000ull << 32)))) >>
      32;
  return static_cast<uint32_t>(v);
}

// Reads the JSON number at p strictly into `value`; returns its end, or nullptr if no valid
// number starts there. Digits are taken 8 at a time; numbers with more than 19 digits, exponents
// past +-22 or mantissas past 2^53 go to parse_double.
inline const char* read_number(const char* p, const char* limit, double& value) {
  static constexpr double kPow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                      1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
  const bool neg = *p == '-';
  const char* q = p + neg;
  const char* int_end = skip_digits(q, limit);
  if (int_end == q || (*q == '0' && int_end - q > 1)) return nullptr;
  const char* frac = int_end;
  const char* frac_end = int_end;
  if (*int_end == '.') {
    frac = int_end + 1;
    frac_end = skip_digits(frac, limit);
    if (frac_end == frac) return nullptr;
  }
  const char* e = frac_end;
  int exp10 = 0;
  if (*e == 'e' || *e == 'E') {
    ++e;
    const bool eneg = *e == '-';
    e += (*e == '+' || *e == '-');
    const char* exp_end = skip_digits(e, limit);
    if (exp_end == e) return nullptr;
    for (const char* k = e; k < exp_end; ++k) exp10 = std::min(exp10 * 10 + (*k - '0'), 100000);
    exp10 = eneg ? -exp10 : exp10;
    e = exp_end;
  }
  const int n_int = static_cast<int>(int_end - q), n_frac = static_cast<int>(frac_end - frac);
  if (kLittleEndian && n_int + n_frac <= 19 && limit - frac_end >= 8 && limit - int_end >= 8) {
    uint64_t m = 0;
    auto run = [&](const char* r, int n) {
      for (; n > 8; n -= 8, r += 8) m = m * 100000000ull + digits_value(r, 8);
      static constexpr uint64_t kScale[] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000};
      m = m * kScale[n] + digits_value(r, n);
    };
    run(q, n_int);
    run(frac, n_frac);
    exp10 -= n_frac;
    if (m == 0) {
      value = neg ? -0.0 : 0.0;
      return e;
    }
    if (m <= (uint64_t(1) << 53) && exp10 >= -22 && exp10 <= 22) {
      const double v = exp10 < 0 ? static_cast<double>(m) / kPow10[-exp10] : static_cast<double>(m) * kPow10[exp10];
      value = neg ? -v : v;
      return e;
    }
  }
  value = parse_double(p, e);
  return e;
}

void read_doubles(const JsonDoc& d, const JValue& j, const char* name, const std::string& path,
                  std::vector<double>& out) {
  const JValue& a = array(d, j, name, path);
  out.clear();
  out.reserve(a.count);
  if (a.numeric) {
    const char* limit = d.limit();
    for_each_element(a, path, name, [&](uint32_t, const char* p) -> const char* {
      double v;
      const char* e = read_number(p, limit, v);
      if (e) out.push_back(v);
      return e;
    });
    return;
  }
  const std::string p = join(path, name);
  for (uint32_t k = 0; k < a.count; ++k) out.push_back(number(d.at(a, k), fmt::format("{}[{}]", p, k)));
}

// An array of numbers whose elements are all exactly 0 (XGBoost's split_type of numerical splits).
bool all_zeros(const JValue& a) {
  if (!a.numeric) return false;
  const char* p = a.begin;
  while (is_ws(*p)) ++p;
  while (p < a.end) {
    if (*p != '0') return false;
    ++p;
    while (is_ws(*p)) ++p;
    if (p == a.end) return true;
    if (*p != ',') return false;
    ++p;
    while (is_ws(*p)) ++p;
  }
  return true;
}

std::string string_of(const JValue& v, const std::string& path) {
  if (!v.is_string()) bad(fmt::format("'{}' is not a string", path));
  return JsonDoc::text(v);
}

// ---------------------------------------------------------------------------------------------
// The parsed model

struct Parsed {
  bool regressor = false;  // reg:squarederror / reg:logistic
  bool reg_logistic = false;
  int64_t num_feature = 0;
  int64_t n_classes = 0;  // classifiers
  std::string producer_version;
  std::vector<std::string> feature_names;
  std::vector<int64_t> tree_info;
  std::vector<float> base_values;
  // The trees exactly as the TreeEnsemble kernel compiles them from the attributes
  // add_tree_attrs writes: nodes in pre-order per tree (XGBoost's left child, the true side of
  // BRANCH_LT, right after its parent), trees one after another, a leaf's weights in attribute
  // order and its threshold slot holding its first weight.
  tree::Ensemble e;
  // Two-class models without a negative leaf: every leaf of the first tree also has a 0 weight
  // for class 1 (second in its weight list, last in the attributes).
  bool class1_zeros = false;
};

struct Scratch {
  std::vector<int64_t> left, right, split_index, default_left, split_type;
  std::vector<double> split_cond;
  std::vector<int64_t> new_id, order, stack;
};

// Appends tree `t` (XGBoost JSON object) to the ensemble, nodes numbered in pre-order; each leaf
// gets one weight, for `leaf_id`, negated if `negate`.
void add_tree(const JsonDoc& d, const JValue& tree, int64_t t, int64_t num_feature, const std::string& path,
              int32_t leaf_id, bool negate, tree::Ensemble& e, Scratch& s) {
  read_ints(d, tree, "left_children", path, s.left);
  read_ints(d, tree, "right_children", path, s.right);
  read_ints(d, tree, "split_indices", path, s.split_index);
  read_doubles(d, tree, "split_conditions", path, s.split_cond);
  read_ints(d, tree, "default_left", path, s.default_left);
  const size_t n = s.left.size();
  if (n == 0) bad(fmt::format("'{}.left_children' is empty", path));
  auto same = [&](const char* name, size_t len) {
    if (len != n)
      bad(fmt::format("'{}.{}' has {} entries but '{}.left_children' has {}", path, name, len, path, n));
  };
  same("right_children", s.right.size());
  same("split_indices", s.split_index.size());
  same("split_conditions", s.split_cond.size());
  same("default_left", s.default_left.size());
  if (const JValue* st = opt_key(d, tree, "split_type"); st && st->is_array() && !all_zeros(*st)) {
    read_ints(d, tree, "split_type", path, s.split_type);
    for (size_t k = 0; k < s.split_type.size(); ++k) {
      if (s.split_type[k] != 0)
        unsupported(fmt::format("tree {} has a categorical split (node {}); categorical features are not supported",
                                t, k));
    }
  }
  if (const JValue* tp = opt_key(d, tree, "tree_param")) {
    if (const JValue* slv = opt_key(d, *tp, "size_leaf_vector")) {
      if (integer(*slv, path + ".tree_param.size_leaf_vector") > 1)
        unsupported(fmt::format("tree {} has vector leaves (multi-target trees)", t));
    }
  }
  const size_t base = e.nodes_f.size();
  if (n >= static_cast<size_t>(std::numeric_limits<int32_t>::max()) - base)
    fail(ErrorCode::LimitExceeded,
         fmt::format("xgboost model: more than {} tree nodes", std::numeric_limits<int32_t>::max()));

  // Pre-order walk from node 0; each node must be reached exactly once.
  s.new_id.assign(n, -1);
  s.order.clear();
  s.stack.assign(1, 0);
  while (!s.stack.empty()) {
    const int64_t v = s.stack.back();
    s.stack.pop_back();
    if (s.new_id[v] >= 0)
      bad(fmt::format("tree {} reaches node {} twice (the children arrays do not form a tree)", t, v));
    s.new_id[v] = static_cast<int64_t>(s.order.size());
    s.order.push_back(v);
    const int64_t l = s.left[v], r = s.right[v];
    if (l == -1 && r == -1) continue;
    if (l < 0 || r < 0 || l >= static_cast<int64_t>(n) || r >= static_cast<int64_t>(n))
      bad(fmt::format("tree {} node {} has children {} and {}, outside [0, {})", t, v, l, r, n));
    s.stack.push_back(r);
    s.stack.push_back(l);
  }

  e.roots.push_back(static_cast<int32_t>(base));
  for (size_t j = 0; j < s.order.size(); ++j) {
    const int64_t v = s.order[j];
    const int32_t self = static_cast<int32_t>(base + j);
    if (s.left[v] == -1) {
      const float w = negate ? -static_cast<float>(s.split_cond[v]) : static_cast<float>(s.split_cond[v]);
      e.nodes_f.push_back({w, 0, self, self, tree::kLeaf, 0});
      e.leaf_first.push_back(static_cast<int32_t>(e.w_id.size()));
      e.leaf_count.push_back(1);
      e.w_id.push_back(leaf_id);
      e.w_value.push_back(static_cast<double>(w));
    } else {
      if (s.split_index[v] < 0 || s.split_index[v] >= num_feature)
        bad(fmt::format("tree {} node {} splits on feature {}, but the model has {} features", t, v,
                        s.split_index[v], num_feature));
      // XGBoost: x < split_condition goes left (the true side); missing values go left if default_left.
      e.nodes_f.push_back({static_cast<float>(s.split_cond[v]), static_cast<int32_t>(s.split_index[v]),
                           static_cast<int32_t>(base + static_cast<size_t>(s.new_id[s.left[v]])),
                           static_cast<int32_t>(base + static_cast<size_t>(s.new_id[s.right[v]])), tree::kLt,
                           static_cast<uint8_t>(s.default_left[v] != 0 ? 1 : 0)});
      e.leaf_first.push_back(0);
      e.leaf_count.push_back(0);
    }
  }
}

// Margin of a probability, computed in float like XGBoost's ProbToMargin.
float logit(double base_score) {
  if (!(base_score > 0.0 && base_score < 1.0))
    bad(fmt::format("'learner.learner_model_param.base_score' is {}; a logistic objective needs it in (0, 1)",
                    base_score));
  const float p = static_cast<float>(base_score);
  return -std::log(1.0f / p - 1.0f);
}

Parsed parse(std::span<const uint8_t> bytes) {
  const JsonDoc d(bytes);
  const JValue& root = d.root();
  Parsed out;

  const JValue& learner = key(d, root, "learner", "");
  const JValue& booster = key(d, learner, "gradient_booster", "learner");
  const std::string booster_name =
      string_of(key(d, booster, "name", "learner.gradient_booster"), "learner.gradient_booster.name");
  if (booster_name != "gbtree")
    unsupported(fmt::format("booster '{}' is not supported (only 'gbtree')", booster_name));

  const JValue& objective_j = key(d, learner, "objective", "learner");
  const std::string objective = string_of(key(d, objective_j, "name", "learner.objective"), "learner.objective.name");
  const bool is_reg_sq = objective == "reg:squarederror";
  const bool is_reg_log = objective == "reg:logistic";
  const bool is_binary = objective == "binary:logistic";
  const bool is_multi = objective == "multi:softprob" || objective == "multi:softmax";
  if (!is_reg_sq && !is_reg_log && !is_binary && !is_multi)
    unsupported(fmt::format("objective '{}' is not supported", objective));
  out.regressor = is_reg_sq || is_reg_log;
  out.reg_logistic = is_reg_log;

  const std::string mp_path = "learner.learner_model_param";
  const JValue& mp = key(d, learner, "learner_model_param", "learner");
  const double base_score = number(key(d, mp, "base_score", mp_path), mp_path + ".base_score");
  const int64_t num_feature = integer(key(d, mp, "num_feature", mp_path), mp_path + ".num_feature");
  const int64_t num_class = integer(key(d, mp, "num_class", mp_path), mp_path + ".num_class");
  if (num_feature < 1) bad(fmt::format("'{}.num_feature' is {}; it must be positive", mp_path, num_feature));
  if (num_feature > std::numeric_limits<int32_t>::max())
    bad(fmt::format("'{}.num_feature' is {}, more than Flock supports", mp_path, num_feature));
  if (const JValue* nt = opt_key(d, mp, "num_target")) {
    const int64_t num_target = integer(*nt, mp_path + ".num_target");
    if (num_target > 1) unsupported(fmt::format("num_target is {} (multi-output models are not supported)", num_target));
  }
  if (!std::isfinite(base_score)) bad(fmt::format("'{}.base_score' is not finite", mp_path));
  if (is_multi && num_class < 2)
    bad(fmt::format("objective '{}' needs '{}.num_class' >= 2, got {}", objective, mp_path, num_class));
  if (!is_multi && num_class > 1)
    bad(fmt::format("objective '{}' does not take '{}.num_class' = {}", objective, mp_path, num_class));
  if (is_multi && num_class > (int64_t(1) << 24))
    bad(fmt::format("'{}.num_class' is {}, more than Flock supports", mp_path, num_class));
  out.num_feature = num_feature;
  out.n_classes = out.regressor ? 0 : (is_multi ? num_class : 2);

  const std::string model_path = "learner.gradient_booster.model";
  const JValue& model = key(d, booster, "model", "learner.gradient_booster");
  const JValue& trees = array(d, model, "trees", model_path);
  out.tree_info = ints(d, model, "tree_info", model_path);
  const auto& tree_info = out.tree_info;
  if (trees.count == 0) bad(fmt::format("'{}.trees' is empty; the model has no trees", model_path));
  if (trees.numeric) bad(fmt::format("'{}.trees[0]' is not a JSON object", model_path));
  if (tree_info.size() != trees.count)
    bad(fmt::format("'{}.tree_info' has {} entries for {} trees", model_path, tree_info.size(), trees.count));
  const int64_t n_groups = is_multi ? num_class : 1;
  for (size_t t = 0; t < tree_info.size(); ++t) {
    if (tree_info[t] < 0 || tree_info[t] >= n_groups)
      bad(fmt::format("'{}.tree_info[{}]' is {}, outside [0, {})", model_path, t, tree_info[t], n_groups));
  }

  tree::Ensemble& e = out.e;
  {  // capacity from the text of the children arrays (at least 2 bytes per element)
    size_t nodes = 0;
    for (uint32_t t = 0; t < trees.count; ++t) {
      const JValue* lc = opt_key(d, d.at(trees, t), "left_children");
      if (lc && lc->is_array()) nodes += lc->numeric ? lc->count : 0;
    }
    e.nodes_f.reserve(nodes);
    e.leaf_first.reserve(nodes);
    e.leaf_count.reserve(nodes);
    e.w_id.reserve(nodes / 2 + trees.count);  // a binary tree has (nodes + 1) / 2 leaves
    e.w_value.reserve(nodes / 2 + trees.count);
    e.roots.reserve(trees.count);
  }
  Scratch scratch;
  for (uint32_t t = 0; t < trees.count; ++t) {
    // The class a tree's leaves score: multi-class trees their group; two-class softmax scores
    // margin(1) - margin(0), so class-0 trees count negatively.
    const int64_t group = tree_info[t];
    const bool two_class_multi = is_multi && num_class == 2;
    const int32_t leaf_id = (is_multi && num_class > 2) ? static_cast<int32_t>(group) : 0;
    add_tree(d, d.at(trees, t), t, num_feature, fmt::format("{}.trees[{}]", model_path, t), leaf_id,
             two_class_multi && group == 0, e, scratch);
  }

  if (const JValue* fn = opt_key(d, learner, "feature_names"); fn && !fn->is_null()) {
    if (!fn->is_array()) bad("'learner.feature_names' is not an array");
    if (fn->numeric && fn->count > 0) bad("'learner.feature_names[0]' is not a string");
    if (!fn->numeric)
      for (uint32_t k = 0; k < fn->count; ++k)
        out.feature_names.push_back(string_of(d.at(*fn, k), fmt::format("learner.feature_names[{}]", k)));
    if (!out.feature_names.empty() && static_cast<int64_t>(out.feature_names.size()) != num_feature)
      bad(fmt::format("'learner.feature_names' has {} names but the model has {} features",
                      out.feature_names.size(), num_feature));
  }
  if (const JValue* ver = opt_key(d, root, "version"); ver && ver->is_array()) {
    // "major.minor.patch" from the leading integers.
    std::string v;
    auto part = [&](uint32_t k, const char* b, const char* e) {
      if (k) v += '.';
      v.append(b, e);
    };
    if (ver->numeric) {
      bool ok = true;
      for_each_element(*ver, "", "version", [&](uint32_t k, const char* p) -> const char* {
        const char* e = number_end(p, d.limit());
        for (const char* q = p; e && q < e; ++q) ok = ok && *q != '.' && *q != 'e' && *q != 'E';
        if (e && ok) part(k, p, e);
        return e;
      });
    } else {
      for (uint32_t k = 0; k < ver->count; ++k) {
        const JValue& x = d.at(*ver, k);
        if (!x.is_integer_text()) break;
        part(k, x.begin, x.end);
      }
    }
    out.producer_version = v;
  }

  if (out.regressor) {
    out.base_values = {is_reg_log ? logit(base_score) : static_cast<float>(base_score)};
  } else if (out.n_classes == 2) {
    // One score: binary margin, or margin(class 1) - margin(class 0) for two-class softmax.
    const float base = is_binary ? logit(base_score) : 0.0f;
    bool all_positive = true;
    for (double w : e.w_value) all_positive = all_positive && !(w < 0);
    if (all_positive) {
      // Class 1 also gets a 0 weight on every leaf of the first tree: the weights of tree 0's
      // leaves (one each, in node order at the start of the table) become pairs.
      out.class1_zeros = true;
      const size_t n0 = static_cast<size_t>(e.roots.size() > 1 ? e.roots[1] : static_cast<int32_t>(e.nodes_f.size()));
      size_t leaves0 = 0;
      for (size_t i = 0; i < n0; ++i) leaves0 += static_cast<size_t>(e.leaf_count[i]);
      std::vector<int32_t> ids(e.w_id.size() + leaves0);
      std::vector<double> vals(ids.size());
      size_t pos = 0;
      for (size_t i = 0; i < e.nodes_f.size(); ++i) {
        if (e.leaf_count[i] == 0) continue;
        const size_t first = static_cast<size_t>(e.leaf_first[i]);
        e.leaf_first[i] = static_cast<int32_t>(pos);
        ids[pos] = e.w_id[first];
        vals[pos++] = e.w_value[first];
        if (i < n0) {
          ids[pos] = 1;
          vals[pos++] = 0.0;
          e.leaf_count[i] = 2;
        }
      }
      e.w_id = std::move(ids);
      e.w_value = std::move(vals);
      out.base_values = {base, base};
    } else {
      out.base_values = {base};
    }
  } else {
    out.base_values.assign(static_cast<size_t>(out.n_classes), static_cast<float>(base_score));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// ONNX building helpers

template <typename V>
void attr_ints(onnx::NodeProto* n, const char* name, const V& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  a->mutable_ints()->Reserve(static_cast<int>(v.size()));
  for (auto x : v) a->add_ints(static_cast<int64_t>(x));
}

void attr_floats(onnx::NodeProto* n, const char* name, const std::vector<float>& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOATS);
  a->mutable_floats()->Reserve(static_cast<int>(v.size()));
  for (float x : v) a->add_floats(x);
}

void attr_int(onnx::NodeProto* n, const char* name, int64_t v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}

void attr_string(onnx::NodeProto* n, const char* name, const std::string& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(v);
}

// dims: -1 stands for the batch dimension "N".
void value_info(onnx::ValueInfoProto* vi, const std::string& name, int32_t elem, const std::vector<int64_t>& dims) {
  vi->set_name(name);
  auto* tt = vi->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(elem);
  auto* shape = tt->mutable_shape();
  for (int64_t d : dims) {
    auto* dim = shape->add_dim();
    if (d < 0) dim->set_dim_param("N");
    else dim->set_dim_value(d);
  }
}

// The per-tree-node attributes (nodes_* and the leaf weights) of the parsed ensemble.
void add_tree_attrs(onnx::NodeProto* node, const Parsed& p) {
  const tree::Ensemble& e = p.e;
  const size_t n = e.nodes_f.size();
  std::vector<int64_t> treeids(n), nodeids(n), featureids(n), trueids(n), falseids(n), missing(n);
  std::vector<float> values(n);
  std::vector<int64_t> w_ids, w_nodes, w_trees;
  std::vector<float> w_vals;
  for (size_t t = 0; t < e.roots.size(); ++t) {
    const int32_t root = e.roots[t];
    const int32_t end = t + 1 < e.roots.size() ? e.roots[t + 1] : static_cast<int32_t>(n);
    for (int32_t i = root; i < end; ++i) {
      const tree::Node<float>& nd = e.nodes_f[static_cast<size_t>(i)];
      const size_t k = static_cast<size_t>(i);
      treeids[k] = static_cast<int64_t>(t);
      nodeids[k] = i - root;
      if (nd.mode == tree::kLeaf) {
        const size_t w = static_cast<size_t>(e.leaf_first[k]);
        w_ids.push_back(e.w_id[w]);
        w_nodes.push_back(i - root);
        w_trees.push_back(static_cast<int64_t>(t));
        w_vals.push_back(static_cast<float>(e.w_value[w]));
      } else {
        featureids[k] = nd.feature;
        values[k] = nd.threshold;
        trueids[k] = nd.yes - root;
        falseids[k] = nd.no - root;
        missing[k] = nd.missing_true;
      }
    }
  }
  if (p.class1_zeros) {  // the second weight of the first tree's leaves, after all the others
    const int32_t end = e.roots.size() > 1 ? e.roots[1] : static_cast<int32_t>(n);
    for (int32_t i = 0; i < end; ++i) {
      if (e.nodes_f[static_cast<size_t>(i)].mode != tree::kLeaf) continue;
      const size_t w = static_cast<size_t>(e.leaf_first[static_cast<size_t>(i)]) + 1;
      w_ids.push_back(e.w_id[w]);
      w_nodes.push_back(i);
      w_trees.push_back(0);
      w_vals.push_back(static_cast<float>(e.w_value[w]));
    }
  }
  attr_ints(node, "nodes_treeids", treeids);
  attr_ints(node, "nodes_nodeids", nodeids);
  attr_ints(node, "nodes_featureids", featureids);
  auto* modes = node->add_attribute();
  modes->set_name("nodes_modes");
  modes->set_type(onnx::AttributeProto::STRINGS);
  modes->mutable_strings()->Reserve(static_cast<int>(n));
  for (size_t i = 0; i < n; ++i) modes->add_strings(e.nodes_f[i].mode == tree::kLeaf ? "LEAF" : "BRANCH_LT");
  attr_floats(node, "nodes_values", values);
  attr_ints(node, "nodes_truenodeids", trueids);
  attr_ints(node, "nodes_falsenodeids", falseids);
  attr_ints(node, "nodes_missing_value_tracks_true", missing);
  const std::string pre = p.regressor ? "target" : "class";
  attr_ints(node, (pre + "_ids").c_str(), w_ids);
  attr_ints(node, (pre + "_nodeids").c_str(), w_nodes);
  attr_ints(node, (pre + "_treeids").c_str(), w_trees);
  attr_floats(node, (pre + "_weights").c_str(), w_vals);
}

// The ONNX model; with `tree_attrs` false the tree node carries only its small attributes.
onnx::ModelProto build_model(const Parsed& p, bool tree_attrs) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("xgboost");
  m.set_producer_version(p.producer_version);
  auto* opset = m.add_opset_import();
  opset->set_domain("");
  opset->set_version(15);
  opset = m.add_opset_import();
  opset->set_domain("ai.onnx.ml");
  opset->set_version(3);
  if (!p.feature_names.empty()) {
    auto* prop = m.add_metadata_props();
    prop->set_key("feature_names");
    prop->set_value(nlohmann::json(p.feature_names).dump());
  }

  onnx::GraphProto* g = m.mutable_graph();
  g->set_name("xgboost");
  value_info(g->add_input(), "input", onnx::TensorProto::FLOAT, {-1, p.num_feature});

  onnx::NodeProto* node = g->add_node();
  node->set_domain("ai.onnx.ml");
  node->add_input("input");
  node->set_name("xgboost_trees");

  if (p.regressor) {
    node->set_op_type("TreeEnsembleRegressor");
    node->add_output(p.reg_logistic ? "margin" : "variable");
    if (tree_attrs) add_tree_attrs(node, p);
    attr_int(node, "n_targets", 1);
    attr_string(node, "aggregate_function", "SUM");
    attr_string(node, "post_transform", "NONE");
    attr_floats(node, "base_values", p.base_values);
    if (p.reg_logistic) {
      onnx::NodeProto* sig = g->add_node();
      sig->set_op_type("Sigmoid");
      sig->set_name("xgboost_sigmoid");
      sig->add_input("margin");
      sig->add_output("variable");
      // ONNX has no type inference for TreeEnsembleRegressor: declare the intermediate.
      value_info(g->add_value_info(), "margin", onnx::TensorProto::FLOAT, {-1, 1});
    }
    value_info(g->add_output(), "variable", onnx::TensorProto::FLOAT, {-1, 1});
    return m;
  }

  node->set_op_type("TreeEnsembleClassifier");
  node->add_output("label");
  node->add_output("probabilities");
  if (tree_attrs) add_tree_attrs(node, p);
  attr_floats(node, "base_values", p.base_values);
  attr_string(node, "post_transform", p.n_classes == 2 ? "LOGISTIC" : "SOFTMAX");
  std::vector<int64_t> labels(static_cast<size_t>(p.n_classes));
  for (int64_t k = 0; k < p.n_classes; ++k) labels[static_cast<size_t>(k)] = k;
  attr_ints(node, "classlabels_int64s", labels);

  value_info(g->add_output(), "label", onnx::TensorProto::INT64, {-1});
  value_info(g->add_output(), "probabilities", onnx::TensorProto::FLOAT, {-1, p.n_classes});
  return m;
}

}  // namespace

onnx::ModelProto import_xgboost_json(std::span<const uint8_t> bytes) { return build_model(parse(bytes), true); }

CompiledImport import_xgboost_compiled(std::span<const uint8_t> bytes) {
  Parsed p = parse(bytes);
  CompiledImport out;
  out.model = build_model(p, false);
  auto ensemble = std::make_shared<tree::Ensemble>(std::move(p.e));
  out.kernels[0] = [ensemble](const KernelContext& ctx) { return tree::make_tree_kernel(ctx, std::move(*ensemble)); };
  return out;
}

}  // namespace flock
