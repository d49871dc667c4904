// The config `gradwatch launch` sends: the CONFIG file's JSON object with the --set
// fields over it, checked here against gradwatch-train's fields so that every mistake is
// reported at once, before the monitor is asked.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace gradwatch::cli {

struct LaunchOptions {
  std::string config_file, run_id;
  std::vector<std::string> sets;  // FIELD=JSON, e.g. steps=200, scenario="seed" (a bare word is a string)
  bool detach = false;
  // --launcher kubernetes --dry-run: print a Kubernetes manifest instead of launching.
  std::string launcher = "monitor";
  bool dry_run = false;
  std::string image, monitor_address, token_secret, name_space;
};

// The config as JSON text. Throws Failure for an unreadable file, a JSON syntax error (with
// its line and column), a file that is not an object, a malformed --set, or fields a
// launch cannot take (all of them, each with the reason or a did-you-mean).
std::string LaunchConfigJson(const LaunchOptions& o);

// Every field of `config` gradwatch-train does not know, or that a launch sets itself,
// each as "field: reason", by dotted path ("model.dept"), in the document's order.
std::vector<std::string> LaunchConfigProblems(const nlohmann::json& config);

}  // namespace gradwatch::cli
