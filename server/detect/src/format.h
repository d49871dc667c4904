// printf into a std::string, for event messages and parse errors.
#pragma once

#include <string>

namespace gradwatch::detect {

std::string Format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace gradwatch::detect
