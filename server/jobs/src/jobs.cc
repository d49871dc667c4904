#include "gradwatch/jobs/jobs.h"

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <thread>

#include "gradwatch/common/file.h"
#include "gradwatch/common/run_id.h"
#include "gradwatch/jobs/launch_config.h"
#include "job_record.h"
#include "names.h"
#include "train/config.h"

namespace gradwatch::jobs {

namespace fs = std::filesystem;

struct Jobs::Entry {
  v1::Job job;
  fs::path dir;
  std::string token;       // this job's reporter token, "" when tokens are off
  std::string identity;    // the process, while it runs (Launcher::Adopt)
  bool stop_requested = false;
  int64_t kill_at_ms = 0;  // SIGKILL when still running by then; 0 = not stopping
  bool killed = false;
  bool starting = false;   // the launcher is starting it, outside mu_
  std::unique_ptr<Process> process;

  bool occupies_slot() const { return process != nullptr || starting; }
  bool waiting() const { return job.state() == v1::JOB_STATE_QUEUED && !occupies_slot(); }
};

// A queued job the launcher is to start: the entry (never erased) and what to start.
struct Jobs::Start {
  Entry* entry;
  LaunchSpec spec;
};

namespace {

// The last "gradwatch-train: ..." line of the log (how the trainer says why it stopped),
// else its last non-empty line; "" for an empty log. Reads at most the last 64 KiB.
std::string LastWords(const fs::path& log) {
  std::ifstream in(log, std::ios::binary | std::ios::ate);
  if (!in) return "";
  std::streamoff size = in.tellg();
  std::streamoff from = std::max<std::streamoff>(0, size - 65536);
  in.seekg(from);
  std::string tail(static_cast<size_t>(size - from), '\0');
  in.read(tail.data(), static_cast<std::streamsize>(tail.size()));
  std::istringstream lines(tail);
  std::string line, last, said;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    last = line;
    if (line.rfind("gradwatch-train: ", 0) == 0) said = line;
  }
  return Clean(said.empty() ? last : said);
}

int DefaultMaxThreads() {
  unsigned cpus = std::thread::hardware_concurrency();
  return cpus == 0 ? train::Limits::kThreads : std::min<int>(train::Limits::kThreads, static_cast<int>(cpus) * 2);
}

std::string NewToken() {
  std::random_device rd;
  std::ostringstream s;
  s << "job-";
  for (int i = 0; i < 4; ++i) s << std::hex << rd();
  return s.str();
}

}  // namespace

Jobs::Jobs(JobsOptions options, Launcher& launcher) : options_(std::move(options)), launcher_(launcher) {
  std::error_code ec;
  fs::create_directories(options_.dir, ec);
  if (ec) throw std::runtime_error("jobs folder " + options_.dir + ": " + ec.message());
  options_.dir = fs::absolute(options_.dir).string();
  if (!options_.datasets_dir.empty()) options_.datasets_dir = fs::absolute(options_.datasets_dir).string();
  if (options_.max_threads <= 0) options_.max_threads = DefaultMaxThreads();
  if (!options_.log) options_.log = [](const std::string& line) { std::cerr << "gradwatchd: " << line << std::endl; };
  Load();
}

Jobs::~Jobs() = default;

void Jobs::Load() {
  std::lock_guard<std::mutex> lock(mu_);
  std::error_code ec;
  for (fs::directory_iterator it(options_.dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code kind;
    if (!it->is_directory(kind)) continue;
    const fs::path record = it->path() / "job.json";
    if (!fs::exists(record, kind) && !kind) continue;  // a launch that failed before its record was written
    std::string text, error;
    std::optional<JobRecord> r;
    if (!ReadWholeFile(record.string(), &text)) {
      error = std::string("cannot read: ") + std::strerror(errno);
    } else if ((r = ParseRecord(text, &error)) && r->job.job_id() != it->path().filename().string()) {
      error = "its job_id \"" + r->job.job_id() + "\" is not its folder's name";
      r.reset();
    }
    if (!r) {
      Quarantine(it->path().string(), Clean(error));
      continue;
    }
    auto e = std::make_unique<Entry>();
    e->dir = it->path();
    e->job = std::move(r->job);
    e->token = r->token;
    e->identity = r->process;
    e->stop_requested = r->stop_requested;
    e->kill_at_ms = r->kill_at_ms;
    if (e->job.state() == v1::JOB_STATE_RUNNING || (e->job.state() == v1::JOB_STATE_QUEUED && !e->identity.empty())) {
      e->process = launcher_.Adopt(e->identity);
      if (!e->process) EndLocked(*e, ExitStatus{false, -1, 0});  // ended while we were down
    }
    jobs_[e->job.job_id()] = std::move(e);
  }
  if (ec) throw std::runtime_error("jobs folder " + options_.dir + ": cannot list: " + ec.message());
}

// One bad record costs its own job only: moved aside, said loudly, listed as lost.
void Jobs::Quarantine(const std::string& folder, const std::string& reason) {
  const fs::path record = fs::path(folder) / "job.json";
  const fs::path kept = fs::path(folder) / "job.json.corrupt";
  std::error_code ec;
  fs::rename(record, kept, ec);
  const std::string id = fs::path(folder).filename().string();
  const bool listed = ValidRunId(id);
  options_.log("JOB RECORD UNUSABLE: " + record.string() + ": " + reason + "; " +
               (ec ? "could not move it aside (" + ec.message() + ")" : "moved to " + kept.string()) +
               (listed ? "; job " + id + " is listed as lost" : "; not a job id, left out"));
  if (!listed) return;
  auto e = std::make_unique<Entry>();
  e->dir = folder;
  e->job.set_job_id(id);
  e->job.set_run_id(id);
  e->job.set_state(v1::JOB_STATE_LOST);
  e->job.set_exit_code(-1);
  e->job.set_error("its record job.json is unusable (" + reason + ")" + (ec ? "" : ", kept as job.json.corrupt") +
                   "; a process it may have run is not followed");
  e->job.set_created_unix_millis(options_.now_ms());
  e->job.set_ended_unix_millis(options_.now_ms());
  std::string config;
  if (ReadWholeFile((e->dir / "config.json").string(), &config)) e->job.set_config_json(Clean(config));
  if (!ec) SaveOrLogLocked(*e);  // else the unusable record stays where it is, untouched
  jobs_[id] = std::move(e);
}

void Jobs::SaveLocked(const Entry& e) const {
  JobRecord r{e.job, e.token, e.identity, e.stop_requested, e.kill_at_ms};
  // Holds the job's reporter token: owner-only.
  WriteFileAtomically(e.dir / "job.json", RecordToJson(r), fs::perms::owner_read | fs::perms::owner_write);
}

void Jobs::SaveOrLogLocked(const Entry& e) const {
  try {
    SaveLocked(e);
  } catch (const std::exception& ex) {
    options_.log("job " + e.job.job_id() + ": its record is not saved: " + ex.what());
  }
}

std::string Jobs::NewId() {
  int64_t now = options_.now_ms();
  for (;;) {
    std::string id = "job-" + std::to_string(now) + "-" + std::to_string(++next_id_);
    if (!jobs_.count(id) && !fs::exists(fs::path(options_.dir) / id)) return id;
  }
}

v1::Job Jobs::LaunchChecked(const std::string& config_json, const std::string& run_id,
                            const std::function<bool(const std::string&)>& run_exists) {
  std::string id = RequestedRunId(config_json, run_id);
  if (options_.trainer.empty()) {
    throw JobError(JobError::Code::kUnavailable, "this monitor has no trainer program to launch (gradwatchd --trainer)");
  }
  if (options_.monitor_address.empty()) throw JobError(JobError::Code::kUnavailable, "the monitor is still starting");
  if (id.empty()) id = NewId();
  if (jobs_.count(id) || fs::exists(fs::path(options_.dir) / id) || (run_exists && run_exists(id))) {
    throw JobError(JobError::Code::kAlreadyExists, "run " + id + " exists already; pick another run_id");
  }
  size_t running = 0, queued = 0;
  for (const auto& [_, e] : jobs_) {
    running += e->occupies_slot();
    queued += e->waiting();
  }
  if (running >= options_.max_running && queued >= options_.max_queued) {
    throw JobError(JobError::Code::kResourceExhausted,
                   std::to_string(queued) + " jobs wait already, the most this monitor queues (--max-queued-jobs " +
                       std::to_string(options_.max_queued) + "); launch again once one started, or stop one");
  }
  return LaunchLocked(id, config_json);
}

v1::Job Jobs::Launch(const std::string& config_json, const std::string& run_id,
                     const std::function<bool(const std::string&)>& run_exists) {
  std::vector<Start> starts;
  std::string id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = LaunchChecked(config_json, run_id, run_exists).job_id();
    starts = TakeStartsLocked();
  }
  RunStarts(std::move(starts));
  std::lock_guard<std::mutex> lock(mu_);
  return jobs_.at(id)->job;  // as it is now: running, failed to start, or still queued
}

v1::Job Jobs::LaunchLocked(const std::string& id, const std::string& config_json) {
  auto e = std::make_unique<Entry>();
  e->dir = fs::path(options_.dir) / id;
  LaunchContext ctx{e->dir.string(), options_.monitor_address, options_.datasets_dir, options_.max_threads,
                    options_.max_ranks, launcher_.max_nodes()};
  std::string config = PrepareLaunchConfig(config_json, id, ctx);  // throws InvalidLaunch
  e->job.set_job_id(id);
  e->job.set_run_id(id);
  e->job.set_state(v1::JOB_STATE_QUEUED);
  e->job.set_created_unix_millis(options_.now_ms());
  e->job.set_config_json(config);
  *e->job.mutable_resources() = LaunchResources(config_json, ctx);
  e->job.set_launcher(launcher_.name());
  if (options_.reporter_tokens) e->token = NewToken();
  try {
    fs::create_directories(OutputDir(e->dir.string()));
    WriteFileAtomically(e->dir / "config.json", config);
    SaveLocked(*e);
  } catch (const std::exception& ex) {
    std::error_code ignored;
    fs::remove_all(e->dir, ignored);  // new a moment ago: nothing of the job is left behind
    throw std::runtime_error("job " + id + ": cannot write its folder: " + ex.what());
  }
  Entry& entry = *e;
  jobs_[id] = std::move(e);
  return entry.job;
}

Jobs::Start Jobs::PrepareStartLocked(Entry& e) {
  LaunchSpec spec;
  spec.program = options_.trainer;
  spec.args = {"--config", (e.dir / "config.json").string()};
  spec.env = options_.env;
  if (!e.token.empty()) spec.env.push_back("GRADWATCH_TOKEN=" + e.token);
  spec.workdir = OutputDir(e.dir.string());
  std::error_code ec;
  fs::create_directories(spec.workdir, ec);  // a job queued by an older monitor has none yet
  spec.log_path = (e.dir / "train.log").string();
  spec.job_dir = e.dir.string();
  spec.name = e.job.job_id();
  spec.resources = e.job.resources();
  e.job.set_started_unix_millis(options_.now_ms());
  e.starting = true;
  return Start{&e, std::move(spec)};
}

void Jobs::FinishStartLocked(Entry& e, std::unique_ptr<Process> process, const std::string& error) {
  e.starting = false;
  if (!process) {
    e.job.set_state(v1::JOB_STATE_FAILED);
    e.job.set_exit_code(-1);
    e.job.set_error(Clean(error));
    e.job.set_ended_unix_millis(options_.now_ms());
    SaveOrLogLocked(e);
    return;
  }
  e.process = std::move(process);
  e.identity = e.process->identity();
  e.job.set_pid(e.process->pid());
  e.job.set_scheduler_job_id(e.process->scheduler_job_id());
  if (e.stop_requested) e.process->Signal(SIGTERM);  // stopped while it was being started
  FollowLocked(e);
  SaveOrLogLocked(e);
}

void Jobs::RunStarts(std::vector<Start> starts) {
  for (Start& s : starts) {
    std::unique_ptr<Process> process;
    std::string error;
    try {
      process = launcher_.Start(s.spec);
    } catch (const std::exception& ex) {
      error = ex.what();
    }
    std::lock_guard<std::mutex> lock(mu_);
    FinishStartLocked(*s.entry, std::move(process), error);
  }
}

// The job's state as its process says: a scheduler's job may still wait (queued); true when
// anything shown changed.
bool Jobs::FollowLocked(Entry& e) {
  const v1::JobState state = e.process->pending() ? v1::JOB_STATE_QUEUED : v1::JOB_STATE_RUNNING;
  std::string said = e.process->scheduler_state();
  if (state == e.job.state() && said == e.job.scheduler_state()) return false;
  e.job.set_state(state);
  e.job.set_scheduler_state(std::move(said));
  return true;
}

void Jobs::EndLocked(Entry& e, const ExitStatus& status) {
  const fs::path log = e.dir / "train.log";
  if (e.process && !e.process->scheduler_state().empty()) e.job.set_scheduler_state(e.process->scheduler_state());
  e.process.reset();
  e.job.set_ended_unix_millis(options_.now_ms());
  e.job.set_pid(0);
  if (status.known) {
    e.job.set_exit_code(status.code);
    if (e.stop_requested) {
      e.job.set_state(v1::JOB_STATE_STOPPED);
      if (e.killed) e.job.set_error("did not stop within its grace period; killed");
    } else if (status.code == 0 && !status.scheduler_failed) {
      e.job.set_state(v1::JOB_STATE_SUCCEEDED);
    } else {
      e.job.set_state(v1::JOB_STATE_FAILED);
      std::string words = LastWords(log);
      std::string how = status.signal ? "killed by signal " + std::to_string(status.signal)
                                      : "exit code " + std::to_string(status.code);
      if (!status.reason.empty()) how += "; " + status.reason;
      e.job.set_error(words.empty() ? how : words + " (" + how + ")");
    }
  } else {
    // Ended while no monitor watched it: judge by what it left.
    e.job.set_exit_code(-1);
    std::string words = LastWords(log);
    const std::string note = " (ended while the monitor was down; exit code unknown)";
    std::error_code ec;
    if (fs::exists(e.dir / "summary.json", ec)) {
      e.job.set_state(e.stop_requested ? v1::JOB_STATE_STOPPED : v1::JOB_STATE_SUCCEEDED);
      e.job.set_exit_code(0);
    } else if (e.stop_requested) {
      e.job.set_state(v1::JOB_STATE_STOPPED);
    } else if (words.rfind("gradwatch-train: ", 0) == 0) {
      e.job.set_state(v1::JOB_STATE_FAILED);
      e.job.set_error(words + note);
    } else {
      e.job.set_state(v1::JOB_STATE_LOST);
      e.job.set_error("the trainer ended while the monitor was down and left no summary" +
                      (words.empty() ? std::string() : "; its log ends: " + words));
    }
  }
  SaveOrLogLocked(e);
}

std::vector<v1::Job> Jobs::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::Job> out;
  for (const auto& [_, e] : jobs_) out.push_back(e->job);
  std::stable_sort(out.begin(), out.end(), [](const v1::Job& a, const v1::Job& b) {
    return a.created_unix_millis() < b.created_unix_millis();
  });
  return out;
}

std::optional<v1::Job> Jobs::Get(const std::string& job_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return std::nullopt;
  return it->second->job;
}

v1::Job Jobs::Stop(const std::string& job_id, int64_t grace_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) throw JobError(JobError::Code::kNotFound, "no job " + job_id);
  Entry& e = *it->second;
  if (v1::JobEnded(e.job.state()) || e.stop_requested) return e.job;
  e.stop_requested = true;
  if (e.waiting()) {
    e.job.set_state(v1::JOB_STATE_STOPPED);
    e.job.set_ended_unix_millis(options_.now_ms());
    e.job.set_error("stopped before it started");
  } else {
    e.kill_at_ms = options_.now_ms() + (grace_ms > 0 ? grace_ms : options_.default_grace_ms);
    if (e.process) e.process->Signal(SIGTERM);
  }
  SaveOrLogLocked(e);
  return e.job;
}

void Jobs::Tick() {
  std::unique_lock<std::mutex> lock(mu_);
  const int64_t now = options_.now_ms();
  for (auto& [_, e] : jobs_) {
    if (!e->process) continue;
    if (auto status = e->process->Poll()) {
      EndLocked(*e, *status);
      continue;
    }
    if (FollowLocked(*e)) SaveOrLogLocked(*e);
    if (e->stop_requested && !e->killed && now >= e->kill_at_ms) {
      e->process->Signal(SIGKILL);
      e->killed = true;
    }
  }
  std::vector<Start> starts = TakeStartsLocked();
  lock.unlock();
  RunStarts(std::move(starts));
}

std::vector<Jobs::Start> Jobs::TakeStartsLocked() {
  size_t running = 0;
  for (const auto& [_, e] : jobs_) running += e->occupies_slot();
  // Queued jobs start in the order they came.
  std::vector<Entry*> queued;
  for (auto& [_, e] : jobs_) {
    if (e->waiting()) queued.push_back(e.get());
  }
  std::stable_sort(queued.begin(), queued.end(), [](const Entry* a, const Entry* b) {
    return a->job.created_unix_millis() < b->job.created_unix_millis();
  });
  std::vector<Start> starts;
  for (Entry* e : queued) {
    if (running >= options_.max_running) break;
    starts.push_back(PrepareStartLocked(*e));
    ++running;
  }
  return starts;
}

void Jobs::SetMonitorAddress(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  options_.monitor_address = address;
}

std::string Jobs::LogPath(const std::string& job_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) throw JobError(JobError::Code::kNotFound, "no job " + job_id);
  return (it->second->dir / "train.log").string();
}

std::optional<std::string> Jobs::RunForToken(const std::string& token) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, e] : jobs_) {
    if (!e->token.empty() && e->token == token && !v1::JobEnded(e->job.state())) return id;
  }
  return std::nullopt;
}

}  // namespace gradwatch::jobs
