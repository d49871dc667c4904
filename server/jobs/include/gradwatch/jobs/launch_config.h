// What a Launch request may ask for. A launch configuration is the trainer's own JSON
// config (trainer/train/config.h), checked field by field, then rewritten so the job can
// only run the configured trainer, report to this monitor, and write inside its own
// folder:
//   - unknown fields (a "program", "command" or "args") are refused by the trainer's schema;
//   - run_id matches [A-Za-z0-9._-]{1,64};
//   - monitor / no_monitor are the monitor's to set: a launched job reports here;
//   - checkpoint_dir, trace_csv and spool are relative paths of [A-Za-z0-9._/-] with no ".."
//     and are resolved inside the job's folder; summary_json is the launcher's own;
//   - data.dir is such a relative path under the monitor's datasets folder, and only when
//     the monitor has one.
// No string is ever handed to a shell; these rules keep a config from naming anything
// outside what the operator of the monitor chose.
#pragma once

#include <stdexcept>
#include <string>

namespace gradwatch::jobs {

// A bad launch request. `field` names the offending config field ("run_id", "data.dir",
// "config_json" for the document as a whole); what() is "field: reason".
class InvalidLaunch : public std::invalid_argument {
 public:
  InvalidLaunch(std::string field, const std::string& reason)
      : std::invalid_argument(field + ": " + reason), field_(std::move(field)) {}
  const std::string& field() const { return field_; }

 private:
  std::string field_;
};

struct LaunchContext {
  std::string job_dir;          // absolute; the job's folder, where its files go
  std::string monitor_address;  // host:port the trainer reports to
  std::string datasets_dir;     // absolute, or "" = synthetic data only
};

// Checks `config_json` (and `run_id`, the request's, which wins when both are given and
// must then agree) and returns the complete config to write into the job's folder, with
// run_id, monitor, summary_json, spool (default <job_dir>/spool.gwspool) and every path
// made absolute. Throws InvalidLaunch on the first problem, or with every problem the
// trainer's Validate found, joined by "; ".
std::string PrepareLaunchConfig(const std::string& config_json, const std::string& run_id,
                                const LaunchContext& context);

// Reads the run_id a config asks for, "" when none (the request's own is checked too).
// Throws InvalidLaunch like PrepareLaunchConfig for a document that is not a config.
std::string RequestedRunId(const std::string& config_json, const std::string& run_id);

}  // namespace gradwatch::jobs
