// `gradwatch replay`: a recorded trace (gradwatch CSV or Keras CSVLogger) through the
// detectors here or as a new run in the monitor, or a trainer's spool delivered.
#pragma once

#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "client.h"

namespace gradwatch::cli {

struct ReplayOptions {
  std::string file, format = "auto", run_id;
  bool offline = false;
  double loss_bound = 0;
  std::vector<std::string> thresholds;  // key=value
};

// NAME=NUMBER overrides (detector thresholds, policy); throws Failure naming the bad one.
std::map<std::string, double> ParseThresholds(const std::vector<std::string>& items);

int Replay(const ReplayOptions& o, const Globals& g, std::ostream& out, std::ostream& err);

}  // namespace gradwatch::cli
