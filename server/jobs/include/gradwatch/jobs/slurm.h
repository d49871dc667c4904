// The Slurm launcher: a job is submitted with `sbatch`, followed with `scontrol show job`,
// stopped with `scancel`, and adopted again by its Slurm job id after a monitor restart
// (Process::identity "slurm:<id>").
//
// Nothing a launch config says is ever parsed by a shell or by sbatch as an option:
//   - sbatch runs from an argv (posix_spawn), its options built from the validated
//     resources (whole numbers), the job's folder (a validated run id below the monitor's
//     jobs folder) and the operator's flags (SlurmOptions, checked by CheckSlurmOptions);
//   - the job script holds no #SBATCH line, only `exec srun <trainer> --config <config.json>`,
//     the trainer's path and the config's path quoted for sh (both the monitor's own);
//   - the job's environment is sbatch's (--export=ALL): the reporter token and TLS paths
//     reach the ranks that way, never on a command line.
// States come from `scontrol show job --oneliner ID` (JobState, Reason, ExitCode): it knows
// pending, running and ended jobs alike until Slurm forgets them (MinJobAge, 300 s by
// default). sacct would outlive that but needs accounting (slurmdbd), which a cluster may
// not run. A job Slurm no longer knows ends as unknown and is judged by what it left.
//
// scontrol and scancel run on the launcher's own thread (scontrol once a second for every job
// followed, scancel as soon as Signal asks), so a slow or unreachable controller never holds
// up the Jobs manager or a gRPC reaction; only sbatch runs on the caller's thread (Start, in
// the Launch call), bounded by command_timeout_ms.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gradwatch/jobs/launcher.h"

namespace gradwatch::jobs {

// A command's outcome: its exit code (-1 when it could not run, or ran past its time) and
// what it wrote to stdout and to stderr.
struct CommandResult {
  int exit_code = -1;
  std::string out, err;
};
// Runs argv[0] (looked up in PATH) with `env` (empty = the monitor's own environment), with
// no shell, stdin from /dev/null; killed after `timeout_ms`.
using CommandRunner =
    std::function<CommandResult(const std::vector<std::string>& argv, const std::vector<std::string>& env)>;
CommandRunner SystemRunner(int64_t timeout_ms);

// The operator's choices for every Slurm job (gradwatchd --slurm-*).
struct SlurmOptions {
  std::string partition;             // --partition; "" = the cluster's default
  std::string account;               // --account; "" = the user's default
  std::string time;                  // --time, Slurm's format (30, 2:00:00, 1-0); "" = the partition's
  std::vector<std::string> options;  // more sbatch options, each "--name" or "--name=value"
  int64_t poll_interval_ms = 1000;   // how often scontrol is asked about each followed job
  int64_t command_timeout_ms = 30'000;
  bool poll_thread = true;  // false: nothing polls until Refresh() (tests)
  std::function<void(const std::string&)> log;  // scancel failures; one line each
};

// Every problem with `o`, "" when none: partition and account of [A-Za-z0-9._-], time of
// [0-9:-], options starting "--", without control characters, and none of those the
// launcher sets itself (--output, --chdir, --export, --wrap ...).
std::string CheckSlurmOptions(const SlurmOptions& o);

// `text` quoted for sh: '...' with each ' as '\''. Throws std::invalid_argument for control
// characters (a newline would end the script's line).
std::string ShellQuote(const std::string& text);

// The job script for `spec`: `#!/bin/sh`, a comment, `exec srun --kill-on-bad-exit=1 <program>
// <args...>`, each word ShellQuote'd.
std::string JobScript(const LaunchSpec& spec);
// sbatch's argv for `spec` with the script at `script_path` (argv[0] is "sbatch").
std::vector<std::string> SbatchArgv(const LaunchSpec& spec, const SlurmOptions& o, const std::string& script_path);

// What `scontrol show job --oneliner` says of one job.
struct SlurmJobInfo {
  std::string state;   // JobState: PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT, ...
  std::string reason;  // Reason, "" for None
  int exit_code = 0, exit_signal = 0;  // ExitCode=code:signal
  bool ended() const;
  bool pending() const { return state == "PENDING" || state == "CONFIGURING" || state == "REQUEUED"; }
  std::string Describe() const;  // "PENDING (Resources)", "RUNNING"
};
// Parses one job's line; nullopt when it holds no JobState.
std::optional<SlurmJobInfo> ParseScontrolJob(const std::string& text);
// The job id of `sbatch --parsable` ("1234" or "1234;cluster"); "" when it is not one.
std::string ParseSbatchJobId(const std::string& out);

class SlurmLauncher final : public Launcher {
 public:
  SlurmLauncher(SlurmOptions options, CommandRunner runner);
  ~SlurmLauncher() override;
  // Writes <job_dir>/job.sbatch and submits it. Throws std::runtime_error with sbatch's own
  // message when it refuses the job (the job then fails with it).
  std::unique_ptr<Process> Start(const LaunchSpec& spec) override;
  // "slurm:<id>": nullptr when Slurm no longer knows the job; a job it knows (running or
  // ended) is followed; one it cannot be asked about now (controller down) is followed too.
  std::unique_ptr<Process> Adopt(const std::string& identity) override;
  std::string name() const override { return "slurm"; }
  int max_nodes() const override { return 1024; }

  // Runs the scancels asked for, then asks scontrol about every followed job once (the
  // thread's work; tests call it).
  void Refresh();

 private:
  friend class SlurmProcess;
  struct Known {
    std::optional<SlurmJobInfo> info;  // nullopt until scontrol answered
    bool gone = false;                 // Slurm does not know the job (any more)
    std::string trouble;               // why scontrol could not tell, "" when it could
  };
  void Follow(const std::string& id);
  void Forget(const std::string& id);
  Known Lookup(const std::string& id) const;
  Known Ask(const std::string& id) const;  // runs scontrol
  void Cancel(const std::string& id, int signal, bool pending);  // queues a scancel
  void RunCancels();
  void PollLoop();

  SlurmOptions options_;
  CommandRunner runner_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Known> followed_;
  std::vector<std::vector<std::string>> cancels_;  // scancel argvs not run yet
  bool stopping_ = false;
  bool wake_ = false;  // a job to ask about or a scancel to run: the poller goes at once
  std::thread poller_;
};

}  // namespace gradwatch::jobs
