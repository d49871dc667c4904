#include "csv.h"

#include <charconv>

namespace gradwatch::detect {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> SplitCells(std::string_view line) {
  std::vector<std::string_view> cells;
  size_t start = 0;
  for (size_t comma; (comma = line.find(',', start)) != std::string_view::npos; start = comma + 1)
    cells.push_back(Trim(line.substr(start, comma - start)));
  cells.push_back(Trim(line.substr(start)));
  return cells;
}

}  // namespace

std::vector<CsvLine> SplitCsv(std::string_view text) {
  std::vector<CsvLine> lines;
  size_t number = 0;
  while (!text.empty()) {
    size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
    ++number;
    if (!Trim(line).empty()) lines.push_back({number, SplitCells(line)});
  }
  return lines;
}

// std::from_chars is locale-independent and accepts nan/inf, but not a leading '+'.
bool ParseNumber(std::string_view cell, double* out) {
  if (!cell.empty() && cell.front() == '+') cell.remove_prefix(1);
  if (cell.empty()) return false;
  auto [end, ec] = std::from_chars(cell.data(), cell.data() + cell.size(), *out);
  return ec == std::errc() && end == cell.data() + cell.size();
}

bool ParseCount(std::string_view cell, uint64_t* out) {
  if (cell.empty()) return false;
  auto [end, ec] = std::from_chars(cell.data(), cell.data() + cell.size(), *out);
  return ec == std::errc() && end == cell.data() + cell.size();
}

}  // namespace gradwatch::detect
