#include "table.hpp"

#include <algorithm>

namespace flock::cli {

std::size_t display_width(std::string_view s) {
  return static_cast<std::size_t>(
      std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

std::string one_line(std::string_view s, std::size_t max_width) {
  std::string out;
  std::size_t chars = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    bool starts_char = (c & 0xC0) != 0x80;
    if (starts_char) {
      if (chars == max_width) {
        // Too long: drop the last character kept and mark the cut.
        while (!out.empty() && (static_cast<unsigned char>(out.back()) & 0xC0) == 0x80) out.pop_back();
        if (!out.empty()) out.pop_back();
        while (!out.empty() && out.back() == ' ') out.pop_back();
        return out + "…";
      }
      ++chars;
    }
    out += (c < 0x20 || c == 0x7F) ? ' ' : static_cast<char>(c);
  }
  return out;
}

std::string render_table(const std::vector<Column>& columns, const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> widths;
  for (const auto& c : columns) widths.push_back(display_width(c.header));
  for (const auto& row : rows)
    for (std::size_t i = 0; i < columns.size() && i < row.size(); ++i)
      widths[i] = std::max(widths[i], display_width(row[i]));

  std::string out;
  auto emit = [&](auto cell_at) {
    std::string line;
    for (std::size_t i = 0; i < columns.size(); ++i) {
      std::string cell = cell_at(i);
      std::string pad(widths[i] - display_width(cell), ' ');
      if (i) line += "  ";
      line += columns[i].right_aligned ? pad + cell : cell + pad;
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + '\n';
  };
  emit([&](std::size_t i) { return columns[i].header; });
  emit([&](std::size_t i) { return std::string(widths[i], '-'); });
  for (const auto& row : rows) emit([&](std::size_t i) { return i < row.size() ? row[i] : std::string(); });
  return out;
}

}  // namespace flock::cli
