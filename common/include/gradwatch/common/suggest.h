// "Did you mean": the known name closest to a mistyped one, by edit distance.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace gradwatch {

// Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
// adjacent characters each cost 1 ("rnus" is 1 from "runs").
size_t EditDistance(std::string_view a, std::string_view b);

// The name in `known` closest to `typed` when it is close enough to be a typo (at most a
// third of its length, at least 1, edits away), else "". Ties go to the first listed.
std::string ClosestName(std::string_view typed, const std::vector<std::string>& known);

// "; did you mean \"runs\"?" for ClosestName, or "" when nothing is close.
std::string DidYouMean(std::string_view typed, const std::vector<std::string>& known);

}  // namespace gradwatch
