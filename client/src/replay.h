// `gradwatch replay`: a recorded trace (gradwatch CSV or Keras CSVLogger) or a trainer's
// spool, through the detectors here (--offline) or delivered to the monitor as a run.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "gradwatch/detect/replay.h"
#include "gradwatch/v1/telemetry.pb.h"
#include "verbs.h"

namespace gradwatch::cli {

// NAME=NUMBER overrides (detector thresholds, policy); throws Failure naming the bad one.
std::map<std::string, double> ParseThresholds(const std::vector<std::string>& items);

// A spool's steps as detector records, each with the evaluation reported after it (an
// evaluation before the first step is dropped).
std::vector<detect::ReplayRecord> SpoolRecords(const std::vector<v1::TrainerMessage>& messages);

}  // namespace gradwatch::cli
