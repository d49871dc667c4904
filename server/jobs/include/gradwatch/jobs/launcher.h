// Starting and tracking job processes. The Jobs manager (jobs.h) decides what runs and
// when; a Launcher only starts a program and hands back a Process to poll and signal.
// LocalLauncher runs the program on this host, directly (posix_spawn, never a shell), in
// its own session and process group, with stdin from /dev/null and stdout and stderr
// appended to a log file. SlurmLauncher (slurm.h) submits it to Slurm instead. Tests
// substitute a fake Launcher.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gradwatch/v1/jobs.pb.h"

namespace gradwatch::jobs {

struct LaunchSpec {
  std::string program;            // absolute path, executed as is
  std::vector<std::string> args;  // argv[1..]
  std::vector<std::string> env;   // the whole environment, KEY=VALUE
  std::string workdir;            // the process starts here
  std::string log_path;           // stdout and stderr are appended here
  std::string job_dir;            // the job's folder (a scheduler's job script goes here)
  std::string name;               // the job's id: a run id (gradwatch/common/run_id.h)
  v1::JobResources resources;     // what a scheduler is asked for; LocalLauncher runs
                                  // tasks_per_node ranks with `--nproc` (nodes is 1)
};

struct ExitStatus {
  bool known = true;  // false for a process adopted after a restart: it was not our child
  int code = 0;       // the exit code, or 128 + the signal that ended it
  int signal = 0;     // the signal that ended it, 0 if it exited
  // A scheduler's word on how it ended ("Slurm: TIMEOUT (TimeLimit)"), "" if none.
  std::string reason;
  // The scheduler says it failed although the exit code is 0 (cancelled, timed out).
  bool scheduler_failed = false;
};

class Process {
 public:
  virtual ~Process() = default;
  virtual int64_t pid() const = 0;
  // Survives a monitor restart: Launcher::Adopt finds the same process from it.
  virtual std::string identity() const = 0;
  // nullopt while it runs; reaps it once it ended.
  virtual std::optional<ExitStatus> Poll() = 0;
  // Sends `signal` to the process's whole group (the trainer and anything it started).
  // A scheduler's job: SIGTERM reaches every rank (or cancels a job still pending);
  // SIGKILL ends the job at once.
  virtual void Signal(int signal) = 0;
  // A scheduler's job: its id, whether it still waits for resources, and the scheduler's
  // state with its reason ("PENDING (Resources)"). A local process: "", false, "".
  virtual std::string scheduler_job_id() const { return ""; }
  virtual bool pending() const { return false; }
  virtual std::string scheduler_state() const { return ""; }
};

class Launcher {
 public:
  virtual ~Launcher() = default;
  // Throws std::runtime_error saying why the program could not be started.
  virtual std::unique_ptr<Process> Start(const LaunchSpec& spec) = 0;
  // The process `identity` names, when it still runs (started by an earlier monitor);
  // nullptr when it is gone.
  virtual std::unique_ptr<Process> Adopt(const std::string& identity) = 0;
  virtual std::string name() const = 0;  // "local", "slurm": shown with each job
  // Nodes one job may span: a scheduler's, or 1 where every rank runs on this host.
  virtual int max_nodes() const { return 1; }
};

class LocalLauncher final : public Launcher {
 public:
  std::string name() const override { return "local"; }
  std::unique_ptr<Process> Start(const LaunchSpec& spec) override;
  std::unique_ptr<Process> Adopt(const std::string& identity) override;
};

}  // namespace gradwatch::jobs
