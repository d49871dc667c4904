// printf into a std::string, for event messages and parse errors.
#pragma once

#include <string>

namespace gradwatch::detect {

std::string Format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// A ratio for a message: "980x" rather than "9.8e+02x", "4.13x".
std::string Times(double ratio);

}  // namespace gradwatch::detect
