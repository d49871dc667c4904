// The little CSV both replay formats need: comma-separated cells, no quoting, CRLF tolerated,
// cells trimmed of spaces, blank lines skipped; numbers parsed without the C locale's help.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace gradwatch::detect {

struct CsvLine {
  size_t number = 0;  // 1-based line number in the text
  std::vector<std::string_view> cells;
};

// Views into text; text must outlive the result.
std::vector<CsvLine> SplitCsv(std::string_view text);

// A decimal or scientific double, "nan", "inf", "infinity", with an optional sign. False when
// the whole cell is not one number.
bool ParseNumber(std::string_view cell, double* out);
// A non-negative integer; false otherwise.
bool ParseCount(std::string_view cell, uint64_t* out);

}  // namespace gradwatch::detect
