// Numbers as people read them in gradwatch's messages, tables and explanations.
#pragma once

#include <cmath>
#include <cstdio>
#include <string>

namespace gradwatch {

// `v` with `digits` significant digits (%g), "nan" for any NaN.
inline std::string FormatNumber(double v, int digits = 4) {
  if (std::isnan(v)) return "nan";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

}  // namespace gradwatch
