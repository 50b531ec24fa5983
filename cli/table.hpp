// Aligned plain-text tables for terminal output.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace flock::cli {

// Number of characters (UTF-8 code points) in s: its width on a terminal for most scripts.
std::size_t display_width(std::string_view s);

// s on one line (control characters become spaces), cut to at most max_width characters with a
// trailing "…" when it is longer.
std::string one_line(std::string_view s, std::size_t max_width);

struct Column {
  std::string header;
  bool right_aligned = false;
};

// Renders a header, a dashed rule and the rows, columns two spaces apart, no trailing spaces.
std::string render_table(const std::vector<Column>& columns, const std::vector<std::vector<std::string>>& rows);

}  // namespace flock::cli
