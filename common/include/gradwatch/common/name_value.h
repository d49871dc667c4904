// NAME=NUMBER, as the command lines take detector overrides ("--threshold spike_z_critical=6").
#pragma once

#include <cstdlib>
#include <string>

namespace gradwatch {

// Splits `item` at its first '=' into a non-empty name and a number (strtod's syntax, the whole
// rest). False, with *name and *value untouched, when it is not of that form.
inline bool ParseNameValue(const std::string& item, std::string* name, double* value) {
  const size_t eq = item.find('=');
  if (eq == std::string::npos || eq == 0) return false;
  const char* begin = item.c_str() + eq + 1;
  char* end = nullptr;
  const double v = std::strtod(begin, &end);
  if (end == begin || *end != '\0') return false;
  *name = item.substr(0, eq);
  *value = v;
  return true;
}

// What a --threshold flag that ParseNameValue refuses is told: '--threshold "x": expected ...'.
inline std::string ThresholdFlagError(const std::string& item) {
  return "--threshold \"" + item + "\": expected NAME=NUMBER, e.g. spike_z_critical=6";
}

}  // namespace gradwatch
