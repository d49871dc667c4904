#include "gradwatch/common/suggest.h"

#include <algorithm>

namespace gradwatch {

size_t EditDistance(std::string_view a, std::string_view b) {
  // d[i][j]: distance between a's first i and b's first j characters, three rows kept.
  std::vector<size_t> before(b.size() + 1), prev(b.size() + 1), row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      row[j] = std::min({prev[j] + 1, row[j - 1] + 1, prev[j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        row[j] = std::min(row[j], before[j - 2] + 1);
      }
    }
    before.swap(prev);
    prev.swap(row);
  }
  return prev[b.size()];
}

std::string ClosestName(std::string_view typed, const std::vector<std::string>& known) {
  const size_t allowed = std::max<size_t>(1, typed.size() / 3);
  std::string best;
  size_t best_distance = allowed + 1;
  for (const auto& name : known) {
    size_t d = EditDistance(typed, name);
    if (d < best_distance) best = name, best_distance = d;
  }
  return best;
}

std::string DidYouMean(std::string_view typed, const std::vector<std::string>& known) {
  std::string best = ClosestName(typed, known);
  return best.empty() ? "" : "; did you mean \"" + best + "\"?";
}

}  // namespace gradwatch
