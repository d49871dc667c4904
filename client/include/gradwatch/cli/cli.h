// `gradwatch`, the command-line client, as a library: RunCli parses the verb and its
// flags and talks to gradwatchd. Data goes to `out`, progress and errors to `err`; the
// return value is the process exit code (0 success, 1 failure with a one-line reason,
// 2 usage error).
#pragma once

#include <ostream>

namespace gradwatch::cli {

int RunCli(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace gradwatch::cli
