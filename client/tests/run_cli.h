// Runs `gradwatch ARGS...` in this process, capturing stdout, stderr and the exit code.
#pragma once

#include <sstream>
#include <string>
#include <vector>

#include "gradwatch/cli/cli.h"

namespace gradwatch::cli {

struct CliResult {
  int code = -1;
  std::string out, err;
};

inline CliResult Cli(std::vector<std::string> args) {
  args.insert(args.begin(), "gradwatch");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::ostringstream out, err;
  CliResult r;
  r.code = RunCli(static_cast<int>(args.size()), argv.data(), out, err);
  r.out = out.str();
  r.err = err.str();
  return r;
}

}  // namespace gradwatch::cli
