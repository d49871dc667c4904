#include "gradwatch/jobs/slurm.h"

#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "gradwatch/common/file.h"
#include "gradwatch/common/run_id.h"
#include "job_record.h"

namespace gradwatch::jobs {
namespace {

namespace fs = std::filesystem;

const char kIdentityPrefix[] = "slurm:";

bool AllOf(const std::string& text, const char* extra) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [extra](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string(extra).find(c) != std::string::npos;
  });
}

bool HasControl(const std::string& text) {
  return std::any_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

// Options the launcher sets itself, or that would replace or redirect the job.
const char* const kReserved[] = {"--output", "--error", "--input", "--chdir", "--export", "--export-file", "--wrap",
                                 "--parsable", "--job-name", "--open-mode", "--array", "--wait", "--test-only"};

// "Slurm: FAILED (NonZeroExitCode)".
std::string SlurmSays(const SlurmJobInfo& info) { return "Slurm: " + info.Describe(); }

}  // namespace

std::string CheckSlurmOptions(const SlurmOptions& o) {
  std::vector<std::string> problems;
  if (!o.partition.empty() && !AllOf(o.partition, "._-")) {
    problems.push_back("--slurm-partition \"" + Clean(o.partition) + "\": letters, digits and . _ - only");
  }
  if (!o.account.empty() && !AllOf(o.account, "._-")) {
    problems.push_back("--slurm-account \"" + Clean(o.account) + "\": letters, digits and . _ - only");
  }
  if (!o.time.empty() && !AllOf(o.time, ":-")) {
    problems.push_back("--slurm-time \"" + Clean(o.time) + "\": Slurm's time format, such as 30, 2:00:00 or 1-0");
  }
  for (const auto& opt : o.options) {
    const std::string name = opt.substr(0, opt.find('='));
    if (opt.rfind("--", 0) != 0 || opt.size() < 3) {
      problems.push_back("--slurm-option \"" + Clean(opt) + "\": must be an sbatch long option (--name or --name=value)");
    } else if (HasControl(opt)) {
      problems.push_back("--slurm-option \"" + Clean(opt) + "\": holds a control character (a newline?)");
    } else if (std::find(std::begin(kReserved), std::end(kReserved), name) != std::end(kReserved)) {
      problems.push_back("--slurm-option " + name + ": set by the launcher itself; leave it out");
    }
  }
  std::string joined;
  for (const auto& p : problems) joined += (joined.empty() ? "" : "; ") + p;
  return joined;
}

std::string ShellQuote(const std::string& text) {
  if (HasControl(text)) throw std::invalid_argument("\"" + Clean(text) + "\" holds a control character");
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string JobScript(const LaunchSpec& spec) {
  std::string line = "exec srun --kill-on-bad-exit=1 " + ShellQuote(spec.program);
  for (const auto& a : spec.args) line += " " + ShellQuote(a);
  return "#!/bin/sh\n"
         "# gradwatch job " + ShellQuote(spec.name) + ", written and submitted by gradwatchd; its sbatch options\n"
         "# are on sbatch's command line. srun starts the ranks, each with the job's config.\n" +
         line + "\n";
}

std::vector<std::string> SbatchArgv(const LaunchSpec& spec, const SlurmOptions& o, const std::string& script_path) {
  const v1::JobResources& r = spec.resources;
  const uint32_t nodes = std::max(1u, r.nodes()), tasks = std::max(1u, r.tasks_per_node());
  std::vector<std::string> argv = {"sbatch",
                                   "--parsable",
                                   "--export=ALL",
                                   "--job-name=gradwatch-" + spec.name,
                                   "--output=" + spec.log_path,
                                   "--open-mode=append",
                                   "--chdir=" + spec.workdir,
                                   "--nodes=" + std::to_string(nodes),
                                   "--ntasks-per-node=" + std::to_string(tasks)};
  if (r.gpus_per_task()) argv.push_back("--gpus-per-task=" + std::to_string(r.gpus_per_task()));
  if (r.cpus_per_task()) argv.push_back("--cpus-per-task=" + std::to_string(r.cpus_per_task()));
  if (r.memory_mb()) argv.push_back("--mem=" + std::to_string(uint64_t{r.memory_mb()} * tasks) + "M");  // per node
  if (!o.partition.empty()) argv.push_back("--partition=" + o.partition);
  if (!o.account.empty()) argv.push_back("--account=" + o.account);
  if (!o.time.empty()) argv.push_back("--time=" + o.time);
  argv.insert(argv.end(), o.options.begin(), o.options.end());
  argv.push_back(script_path);
  return argv;
}

bool SlurmJobInfo::ended() const {
  static const char* const kEnded[] = {"COMPLETED", "FAILED",   "CANCELLED", "TIMEOUT",       "NODE_FAIL",
                                       "PREEMPTED", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "SPECIAL_EXIT",
                                       "REVOKED"};
  return std::find(std::begin(kEnded), std::end(kEnded), state) != std::end(kEnded);
}

std::string SlurmJobInfo::Describe() const { return reason.empty() ? state : state + " (" + reason + ")"; }

std::optional<SlurmJobInfo> ParseScontrolJob(const std::string& text) {
  // "Key=value" words; a value runs to the next space (values with spaces, such as a
  // Command path, are in fields not read here).
  std::map<std::string, std::string> fields;
  std::istringstream words(text.substr(0, text.find('\n')));
  for (std::string word; words >> word;) {
    auto eq = word.find('=');
    if (eq != std::string::npos && eq > 0 && !fields.count(word.substr(0, eq))) {
      fields[word.substr(0, eq)] = word.substr(eq + 1);
    }
  }
  auto state = fields.find("JobState");
  if (state == fields.end() || !AllOf(state->second, "_")) return std::nullopt;
  SlurmJobInfo info;
  info.state = state->second;
  info.reason = Clean(fields["Reason"]);
  if (info.reason == "None" || info.reason == "(null)") info.reason.clear();
  const std::string& exit = fields["ExitCode"];
  auto colon = exit.find(':');
  if (colon != std::string::npos) {
    info.exit_code = std::atoi(exit.substr(0, colon).c_str());
    info.exit_signal = std::atoi(exit.substr(colon + 1).c_str());
  }
  return info;
}

std::string ParseSbatchJobId(const std::string& out) {
  std::string id = out.substr(0, out.find_first_of(";\n"));
  return AllOf(id, "_") && id.size() <= 32 ? id : "";
}

// A Slurm job, as the launcher's poller last saw it.
class SlurmProcess final : public Process {
 public:
  SlurmProcess(SlurmLauncher& launcher, std::string id) : launcher_(launcher), id_(std::move(id)) {
    launcher_.Follow(id_);
  }
  ~SlurmProcess() override { launcher_.Forget(id_); }

  int64_t pid() const override { return 0; }
  std::string identity() const override { return kIdentityPrefix + id_; }
  std::string scheduler_job_id() const override { return id_; }

  std::optional<ExitStatus> Poll() override {
    known_ = launcher_.Lookup(id_);
    if (known_.gone) return ExitStatus{false, -1, 0, "Slurm no longer knows job " + id_};
    if (!known_.info || !known_.info->ended()) return std::nullopt;
    const SlurmJobInfo& info = *known_.info;
    ExitStatus s;
    s.signal = info.exit_signal;
    s.code = info.exit_signal ? 128 + info.exit_signal : info.exit_code;
    s.reason = SlurmSays(info);
    s.scheduler_failed = info.state != "COMPLETED";
    return s;
  }

  void Signal(int signal) override { launcher_.Cancel(id_, signal, pending()); }

  bool pending() const override { return !known_.info || known_.info->pending(); }
  std::string scheduler_state() const override {
    if (!known_.trouble.empty()) return (known_.info ? known_.info->Describe() + "; " : "") + known_.trouble;
    return known_.info ? known_.info->Describe() : "SUBMITTED";
  }

 private:
  SlurmLauncher& launcher_;
  std::string id_;
  SlurmLauncher::Known known_;
};

SlurmLauncher::SlurmLauncher(SlurmOptions options, CommandRunner runner)
    : options_(std::move(options)), runner_(std::move(runner)) {
  if (std::string problems = CheckSlurmOptions(options_); !problems.empty()) throw std::invalid_argument(problems);
  if (!options_.log) options_.log = [](const std::string&) {};
  if (options_.poll_thread) poller_ = std::thread([this] { PollLoop(); });
}

SlurmLauncher::~SlurmLauncher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (poller_.joinable()) poller_.join();
}

std::unique_ptr<Process> SlurmLauncher::Start(const LaunchSpec& spec) {
  if (!ValidRunId(spec.name)) throw std::runtime_error("job name \"" + Clean(spec.name) + "\" is not a run id");
  const std::string script = (fs::path(spec.job_dir) / "job.sbatch").string();
  std::string text;
  try {
    text = JobScript(spec);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error("cannot write the job script: " + std::string(e.what()));
  }
  WriteFileAtomically(script, text, fs::perms::owner_all);
  CommandResult r = runner_(SbatchArgv(spec, options_, script), spec.env);
  std::string id = ParseSbatchJobId(r.out);
  if (r.exit_code != 0 || id.empty()) {
    std::string said = Clean(r.err.empty() ? r.out : r.err);
    while (!said.empty() && (said.back() == '\n' || said.back() == ' ')) said.pop_back();
    throw std::runtime_error("Slurm refused the job (sbatch exit code " + std::to_string(r.exit_code) + "): " +
                             (said.empty() ? "no message" : said));
  }
  auto p = std::make_unique<SlurmProcess>(*this, id);
  p->Poll();  // picks up what is known (nothing yet, unless a test refreshed)
  return p;
}

std::unique_ptr<Process> SlurmLauncher::Adopt(const std::string& identity) {
  if (identity.rfind(kIdentityPrefix, 0) != 0) return nullptr;
  std::string id = identity.substr(sizeof kIdentityPrefix - 1);
  if (ParseSbatchJobId(id) != id) return nullptr;
  Known k = Ask(id);
  if (k.gone) return nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    followed_[id] = k;
  }
  auto p = std::make_unique<SlurmProcess>(*this, id);
  p->Poll();
  return p;
}

void SlurmLauncher::Follow(const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    followed_.try_emplace(id);
    wake_ = true;
  }
  cv_.notify_all();  // asked about at once, not a poll interval later
}

void SlurmLauncher::Forget(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  followed_.erase(id);
}

SlurmLauncher::Known SlurmLauncher::Lookup(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = followed_.find(id);
  return it == followed_.end() ? Known{} : it->second;
}

SlurmLauncher::Known SlurmLauncher::Ask(const std::string& id) const {
  CommandResult r = runner_({"scontrol", "show", "job", "--oneliner", id}, {});
  Known k;
  if (r.exit_code == 0) {
    k.info = ParseScontrolJob(r.out);
    if (!k.info) k.trouble = "scontrol's answer has no JobState";
  } else if (r.err.find("Invalid job id") != std::string::npos) {
    k.gone = true;
  } else {
    std::string said = Clean(r.err.substr(0, r.err.find('\n')));
    k.trouble = "Slurm cannot be asked: " + (said.empty() ? "scontrol exit code " + std::to_string(r.exit_code) : said);
  }
  return k;
}

void SlurmLauncher::Refresh() {
  RunCancels();
  std::vector<std::string> ids;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, k] : followed_) {
      if (!k.gone && !(k.info && k.info->ended())) ids.push_back(id);
    }
  }
  for (const auto& id : ids) {
    Known k = Ask(id);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = followed_.find(id);
    if (it == followed_.end()) continue;
    if (!k.info && !k.gone) k.info = it->second.info;  // keep the last word while Slurm is unreachable
    it->second = k;
  }
}

void SlurmLauncher::Cancel(const std::string& id, int signal, bool pending) {
  std::vector<std::string> argv = {"scancel"};
  if (signal == SIGKILL) {
    argv.insert(argv.end(), {"--full", "--signal=KILL"});
  } else if (!pending) {
    argv.push_back("--signal=" + std::string(signal == SIGTERM ? "TERM" : std::to_string(signal)));
  }  // a job still pending is cancelled outright: it has no process to signal
  argv.push_back(id);
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancels_.push_back(std::move(argv));
    wake_ = true;
  }
  cv_.notify_all();  // run by the poller at once, never on the caller's thread
}

void SlurmLauncher::RunCancels() {
  std::vector<std::vector<std::string>> cancels;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancels.swap(cancels_);
  }
  for (const auto& argv : cancels) {
    CommandResult r = runner_(argv, {});
    if (r.exit_code != 0) {
      options_.log("scancel of Slurm job " + argv.back() + " failed (exit code " + std::to_string(r.exit_code) +
                   "): " + Clean(r.err.substr(0, r.err.find('\n'))));
    }
  }
}

void SlurmLauncher::PollLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, std::chrono::milliseconds(options_.poll_interval_ms), [this] { return stopping_ || wake_; });
    if (stopping_) break;
    wake_ = false;
    lock.unlock();
    Refresh();
    lock.lock();
  }
}

}  // namespace gradwatch::jobs
