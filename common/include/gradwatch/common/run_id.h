// The names the project accepts from outside, one rule each, shared by the monitor, the
// launcher, the trainer and the CLI: a run id names the run in the store, in metric labels and
// as a job's folder name; a scalar name is a key of a step's user scalars, of its metric label
// and of a "scalar_max.NAME" threshold.
#pragma once

#include <cstddef>
#include <string_view>

namespace gradwatch {

// Whether every character of `text` is an ASCII letter or digit, or one of `extra`.
inline bool NameCharacters(std::string_view text, std::string_view extra) {
  for (char ch : text) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                    extra.find(ch) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

inline constexpr size_t kMaxRunIdLength = 128;

// What a valid run id is, for error messages.
inline constexpr const char* kRunIdRule = "1-128 characters from A-Z a-z 0-9 . _ -, not \".\" or \"..\"";

// Whether `id` follows kRunIdRule.
inline bool ValidRunId(std::string_view id) {
  if (id.empty() || id.size() > kMaxRunIdLength || id == "." || id == "..") return false;
  return NameCharacters(id, "._-");
}

inline constexpr size_t kMaxScalarNameLength = 64;

// What a valid scalar name is, for error messages.
inline constexpr const char* kScalarNameRule = "1 to 64 characters of [A-Za-z0-9_.:/-]";

// Whether `name` follows kScalarNameRule.
inline bool ValidScalarName(std::string_view name) {
  return !name.empty() && name.size() <= kMaxScalarNameLength && NameCharacters(name, "_.:/-");
}

}  // namespace gradwatch
