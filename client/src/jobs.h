// The verbs on launched jobs: launch (and follow), jobs, logs; and stopping a job, which
// the `stop` verb tries before it sends a run a stop command.
#pragma once

#include <optional>
#include <string>

#include "verbs.h"

namespace gradwatch::cli {

// Stops the launched job `job_id` (SIGTERM, then SIGKILL after `grace_ms`, 0 = the
// monitor's default) and waits for it to end: exit code 0 when it stopped. nullopt when
// `job_id` is not a launched job.
std::optional<int> StopJob(Context& ctx, const std::string& job_id, uint32_t grace_ms);

}  // namespace gradwatch::cli
