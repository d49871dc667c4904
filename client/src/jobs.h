// The verbs on launched jobs: launch (and follow), jobs, logs, and stopping a job.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "client.h"

namespace gradwatch::cli {

// `gradwatch launch`: the config sent is the CONFIG file's object with the --set fields over it.
struct LaunchOptions {
  std::string config_file, run_id;
  std::vector<std::string> sets;  // FIELD=JSON, e.g. steps=200, scenario="seed" (a bare word is a string)
  bool detach = false;
};

// Submits the job, prints its run id and, unless detached, follows it to its end:
// exit code 0 succeeded, 1 failed or lost, 3 stopped.
int Launch(Client& c, const Globals& g, const LaunchOptions& o, std::ostream& out, std::ostream& err);

void PrintJobs(const v1::ListJobsResponse& resp, const Globals& g, std::ostream& out);
nlohmann::json JobJson(const v1::Job& job);

// The job's log from the start; with `follow`, until the job ends.
int Logs(Client& c, const std::string& job_id, bool follow, std::ostream& out);

// Stops a launched job (SIGTERM, then SIGKILL after the grace period) and waits for it to
// end. Returns nullopt when RUN is not a launched job.
std::optional<int> StopJob(Client& c, const Globals& g, const std::string& job_id, uint32_t grace_ms,
                           std::ostream& out, std::ostream& err);

}  // namespace gradwatch::cli
