// libFuzzer target: the text form of a flock.model value, as the type's input function gets it.
// flock_model_in hands the C string to PostgreSQL's byteain and the bytes to Model::load with
// format detection; byteain is reimplemented here (PostgreSQL 15, src/backend/utils/adt/varlena.c
// and encode.c) so the target runs without a server. A text the real byteain rejects is rejected
// here too, before the model loader sees it.
#include <cstring>
#include <optional>

#include "fuzz_common.hpp"

namespace {

std::optional<uint8_t> hex_value(char c) {
  if (c >= '0' && c <= '9') return static_cast<uint8_t>(c - '0');
  if (c >= 'a' && c <= 'f') return static_cast<uint8_t>(c - 'a' + 10);
  if (c >= 'A' && c <= 'F') return static_cast<uint8_t>(c - 'A' + 10);
  return std::nullopt;
}

// hex_decode: pairs of hex digits, white space allowed between pairs (not inside one).
std::optional<std::vector<uint8_t>> decode_hex(const char* s, size_t len) {
  std::vector<uint8_t> out;
  out.reserve(len / 2);
  size_t k = 0;
  while (k < len) {
    const char c = s[k];
    if (c == ' ' || c == '\n' || c == '\t' || c == '\r') {
      ++k;
      continue;
    }
    auto hi = hex_value(c);
    if (!hi) return std::nullopt;  // "invalid hexadecimal digit"
    if (++k >= len) return std::nullopt;  // "invalid hexadecimal data: odd number of digits"
    auto lo = hex_value(s[k++]);
    if (!lo) return std::nullopt;
    out.push_back(static_cast<uint8_t>(*hi << 4 | *lo));
  }
  return out;
}

bool is_octal(char c, char max) { return c >= '0' && c <= max; }

// The traditional escape format: \\ is a backslash, \ooo an octal byte (first digit 0-3), any other
// backslash is a syntax error; every other byte stands for itself.
std::optional<std::vector<uint8_t>> decode_escape(const char* s, size_t len) {
  std::vector<uint8_t> out;
  out.reserve(len);
  size_t k = 0;
  while (k < len) {
    if (s[k] != '\\') {
      out.push_back(static_cast<uint8_t>(s[k++]));
    } else if (k + 3 < len + 0 + 0 && is_octal(s[k + 1], '3') && is_octal(s[k + 2], '7') && is_octal(s[k + 3], '7')) {
      out.push_back(static_cast<uint8_t>((s[k + 1] - '0') << 6 | (s[k + 2] - '0') << 3 | (s[k + 3] - '0')));
      k += 4;
    } else if (k + 1 < len && s[k + 1] == '\\') {
      out.push_back('\\');
      k += 2;
    } else {
      return std::nullopt;  // "invalid input syntax for type bytea"
    }
  }
  return out;
}

// byteain: "\x" starts the hex format, anything else is the escape format.
std::optional<std::vector<uint8_t>> byteain(const char* text) {
  const size_t len = std::strlen(text);
  if (len >= 2 && text[0] == '\\' && text[1] == 'x') return decode_hex(text + 2, len - 2);
  return decode_escape(text, len);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The input function receives a NUL-terminated C string: the text up to the first NUL.
  std::string text(reinterpret_cast<const char*>(data), size);
  text.resize(std::strlen(text.c_str()));
  auto bytes = byteain(text.c_str());
  if (!bytes) return 0;
  flock::fuzz::load_and_score(*bytes, flock::ModelFormat::Auto);
  return 0;
}
