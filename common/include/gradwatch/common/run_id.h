// The one rule for a run id, shared by the monitor, the launcher, the trainer and the CLI:
// a run id names the run in the store, in metric labels and as a job's folder name.
#pragma once

#include <cstddef>
#include <string_view>

namespace gradwatch {

inline constexpr size_t kMaxRunIdLength = 128;

// What a valid run id is, for error messages.
inline constexpr const char* kRunIdRule = "1-128 characters from A-Z a-z 0-9 . _ -, not \".\" or \"..\"";

// Whether `id` follows kRunIdRule.
inline bool ValidRunId(std::string_view id) {
  if (id.empty() || id.size() > kMaxRunIdLength || id == "." || id == "..") return false;
  for (char ch : id) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                    ch == '.' || ch == '_' || ch == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace gradwatch
