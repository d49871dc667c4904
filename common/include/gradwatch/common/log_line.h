// One line on stderr in a single write: the lines of processes sharing a terminal or a
// launcher's pipe (the ranks of a data-parallel job) stay whole.
#pragma once

#include <iostream>
#include <sstream>

namespace gradwatch {

template <typename... Parts>
void LogLine(const Parts&... parts) {
  std::ostringstream line;
  (line << ... << parts);
  line << '\n';
  std::cerr << line.str() << std::flush;
}

}  // namespace gradwatch
