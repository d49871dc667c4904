// The jobs a monitor launched: a queue (at most max_queued waiting) with a limit on how
// many run at once, each job in its own folder <dir>/<run_id>/ holding
//   config.json   the validated trainer config (launch_config.h)
//   train.log     the trainer's stdout and stderr
//   job.json      the job's record, replaced atomically and durably on every change
//   summary.json  written by the trainer when it finishes
//   out/          everything else the job writes (trace, spool, checkpoints); its working
//                 folder. The monitor writes nothing there and the config names nothing else.
// A job's id is its run id. States: queued -> running -> succeeded | failed | stopped, or
// lost when it ended while no monitor watched and left no sign of how. Queued is a job
// waiting for one of this monitor's slots (max_running), or one submitted to a scheduler
// that still waits there (Process::pending; scheduler_state says why). A submitted job
// holds a slot either way.
//
// A restarted monitor reads every job.json back. Jobs keep running while the monitor is
// down (they lead their own sessions); a job still running is adopted and followed to its
// end; one that ended meanwhile is judged by what it left: summary.json means it
// succeeded, a "gradwatch-train: ..." error as the log's last line that it failed. A
// record that cannot be read or parsed costs that job only: it is moved aside to
// job.json.corrupt, logged with its path, and the job is listed as lost with the reason.
//
// Time is injected (`now_ms`); Tick() does all the polling, so tests drive it by hand.
// Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "gradwatch/jobs/launcher.h"
#include "gradwatch/v1/jobs.pb.h"

namespace gradwatch::jobs {

struct JobsOptions {
  std::string dir;               // one folder per job below this; created
  std::string trainer;           // the program every job runs: `trainer --config <job>/config.json`
  std::string monitor_address;   // host:port launched trainers report to; may be set later
  std::string datasets_dir;      // data.dir resolves below this; "" = synthetic data only
  size_t max_running = 2;        // jobs running at once; the rest wait, queued
  size_t max_queued = 64;        // jobs waiting at once; past it Launch is refused (kResourceExhausted)
  int max_threads = 0;           // a job's `threads` at most; 0 = 2 x this host's CPUs, <= 256
  int max_ranks = 64;            // a job's ranks (nodes x tasks_per_node) at most
  int64_t default_grace_ms = 10'000;  // stop: SIGTERM, then SIGKILL after this long
  bool reporter_tokens = false;  // give each job its own reporter token (GRADWATCH_TOKEN)
  std::vector<std::string> env;  // the jobs' environment, KEY=VALUE (GRADWATCH_TOKEN is set per job)
  std::function<int64_t()> now_ms;  // Unix milliseconds
  // Where problems the caller cannot be told of go (a record moved aside, a record that
  // could not be saved during Tick); one line each, no newline. Default: stderr.
  std::function<void(const std::string&)> log;
};

// A launch refused for a reason other than a bad config (see InvalidLaunch).
class JobError : public std::runtime_error {
 public:
  enum class Code { kAlreadyExists, kNotFound, kUnavailable, kResourceExhausted };
  JobError(Code code, const std::string& message) : std::runtime_error(message), code_(code) {}
  Code code() const { return code_; }

 private:
  Code code_;
};

class Jobs {
 public:
  // Reads back every job under options.dir (a bad record is quarantined, see above). Throws
  // std::runtime_error naming a folder that cannot be created or listed.
  Jobs(JobsOptions options, Launcher& launcher);
  ~Jobs();
  Jobs(const Jobs&) = delete;
  Jobs& operator=(const Jobs&) = delete;

  // Validates the config, writes the job's folder and queues it (starting it at once when
  // a slot is free). The launcher starts jobs outside this object's lock: a scheduler slow to
  // take a job (sbatch) holds up that start only, never List, Get, Stop or Tick's reaping. Throws InvalidLaunch, JobError (kAlreadyExists, kUnavailable,
  // kResourceExhausted when max_queued jobs wait already) or std::runtime_error when the
  // job's folder cannot be written (then nothing of it is left).
  // `run_exists` says whether a run of that id is already known elsewhere (the hub).
  v1::Job Launch(const std::string& config_json, const std::string& run_id,
                 const std::function<bool(const std::string&)>& run_exists = nullptr);
  std::vector<v1::Job> List() const;  // oldest first
  std::optional<v1::Job> Get(const std::string& job_id) const;
  // Queued here: stopped at once. Submitted (running, or pending in a scheduler): SIGTERM
  // now, SIGKILL once `grace_ms` (0 = the default) passed. Ended: unchanged. Throws JobError kNotFound.
  v1::Job Stop(const std::string& job_id, int64_t grace_ms);
  // Reaps ended jobs, kills those past their grace, starts queued ones.
  void Tick();

  // Where launched trainers report; until set, Launch is refused as unavailable.
  void SetMonitorAddress(const std::string& address);

  std::string LogPath(const std::string& job_id) const;
  // The run a job's reporter token belongs to, for a job not yet ended; nullopt otherwise.
  std::optional<std::string> RunForToken(const std::string& token) const;

 private:
  struct Entry;
  struct Start;
  Start PrepareStartLocked(Entry& e);
  void FinishStartLocked(Entry& e, std::unique_ptr<Process> process, const std::string& error);
  bool FollowLocked(Entry& e);
  // Queued jobs to start now, oldest first, while fewer than max_running run or start; each
  // marked starting. RunStarts starts them, called without mu_.
  std::vector<Start> TakeStartsLocked();
  void RunStarts(std::vector<Start> starts);
  void EndLocked(Entry& e, const ExitStatus& status);
  void SaveLocked(const Entry& e) const;       // throws std::runtime_error
  void SaveOrLogLocked(const Entry& e) const;  // where no caller can be told
  v1::Job LaunchLocked(const std::string& id, const std::string& config_json);
  v1::Job LaunchChecked(const std::string& config_json, const std::string& run_id,
                        const std::function<bool(const std::string&)>& run_exists);
  void Load();
  void Quarantine(const std::string& folder, const std::string& reason);
  std::string NewId();

  JobsOptions options_;
  Launcher& launcher_;
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Entry>> jobs_;
  uint64_t next_id_ = 0;
};

}  // namespace gradwatch::jobs
