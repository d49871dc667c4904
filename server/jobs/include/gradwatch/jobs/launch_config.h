// What a Launch request may ask for. A launch configuration is the trainer's own JSON
// config (trainer/train/config.h), checked field by field, then rewritten so the job can
// only run the configured trainer, report to this monitor, and write inside its own
// folder:
//   - unknown fields (a "program", "command" or "args") are refused by the trainer's schema;
//   - run_id follows gradwatch/common/run_id.h;
//   - monitor / no_monitor are the monitor's to set: a launched job reports here;
//   - checkpoint_dir, trace_csv and spool are relative paths of [A-Za-z0-9._/-] with no "..",
//     at most 255 characters, resolved inside the job's output folder <job_dir>/out/ (also
//     the trainer's working folder), which the monitor itself never writes: a job cannot
//     name or reach job.json, config.json, train.log or summary.json. Still refused: a path
//     that names the output folder itself, holds a reserved name (those four, job.json.*),
//     or collides with another output (the same path, or one inside the other);
//     summary_json is the launcher's own (<job_dir>/summary.json);
//   - data.dir is such a relative path under the monitor's datasets folder, and only when
//     the monitor has one;
//   - "resources" (nodes, tasks_per_node, gpus_per_task, cpus_per_task, memory_mb) is what a
//     scheduler is asked for: whole numbers within kResourceLimits, taken out of the config
//     before the trainer sees it (LaunchResources);
//   - the document is at most kMaxLaunchConfigBytes; every number is bounded by the trainer's
//     own Validate (train::Limits in trainer/train/config.h), and threads also by the host
//     (LaunchContext::max_threads).
// No string is ever handed to a shell; these rules keep a config from naming anything
// outside what the operator of the monitor chose.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>

#include "gradwatch/v1/jobs.pb.h"

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

// A launch config larger than this is refused whole (a real one is under 2 KiB).
constexpr size_t kMaxLaunchConfigBytes = 64 * 1024;

struct LaunchContext {
  std::string job_dir;          // absolute; the job's folder (the monitor's files)
  std::string monitor_address;  // host:port the trainer reports to
  std::string datasets_dir;     // absolute, or "" = synthetic data only
  int max_threads = 0;          // threads of one host's ranks above this are refused; 0 = the
                                // trainer's own bound
  // Ranks a job may ask for (nodes x tasks_per_node), and nodes: a scheduler spreads ranks
  // over nodes, the local launcher runs them all on this host (max_nodes 1).
  int max_ranks = 1;
  int max_nodes = 1;
};

// The bounds of each "resources" field, inclusive.
struct ResourceLimit {
  const char* field;
  uint32_t min, max, fallback;  // fallback: the value when the field is left out
};
inline constexpr ResourceLimit kResourceLimits[] = {
    {"nodes", 1, 1024, 1},          {"tasks_per_node", 1, 256, 1}, {"gpus_per_task", 0, 16, 0},
    {"cpus_per_task", 0, 1024, 0}, {"memory_mb", 0, 4u << 20, 0},
};

// The config's "resources", every field filled in (defaults where left out). Throws
// InvalidLaunch ("resources.nodes: must be <= 1024, got 5000") like PrepareLaunchConfig.
v1::JobResources LaunchResources(const std::string& config_json, const LaunchContext& context);

// <job_dir>/out: where every path a launch config may set is resolved, and where the job runs.
std::string OutputDir(const std::string& job_dir);

// Checks `config_json` (and `run_id`, the request's, which wins when both are given and
// must then agree) and returns the complete config to write into the job's folder, with
// run_id, monitor, summary_json, spool (default <job_dir>/out/spool.gwspool) and every path
// made absolute. Throws InvalidLaunch on the first problem, or with every problem the
// trainer's Validate found, joined by "; "; nothing else (but std::bad_alloc), whatever
// the bytes of `config_json` and `run_id`.
std::string PrepareLaunchConfig(const std::string& config_json, const std::string& run_id,
                                const LaunchContext& context);

// Reads the run_id a config asks for, "" when none (the request's own is checked too).
// Throws InvalidLaunch like PrepareLaunchConfig for a document that is not a config.
std::string RequestedRunId(const std::string& config_json, const std::string& run_id);

}  // namespace gradwatch::jobs
