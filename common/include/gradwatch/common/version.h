// The project's version, one string for every binary's --version (and anything else that
// reports it): project(gradwatch VERSION ...) in the top-level CMakeLists.txt, compiled into
// common/src/version.cc only, so a new version relinks rather than rebuilds everything.
#pragma once

namespace gradwatch {

// e.g. "0.1.0".
const char* Version();

}  // namespace gradwatch
