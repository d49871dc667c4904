#include "gradwatch/jobs/jobs.h"

#include <google/protobuf/util/json_util.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "gradwatch/common/file.h"
#include "gradwatch/jobs/launch_config.h"
#include "names.h"

namespace gradwatch::jobs {

namespace fs = std::filesystem;
using nlohmann::json;

struct Jobs::Entry {
  v1::Job job;
  fs::path dir;
  std::string token;       // this job's reporter token, "" when tokens are off
  std::string identity;    // the process, while it runs (Launcher::Adopt)
  bool stop_requested = false;
  int64_t kill_at_ms = 0;  // SIGKILL when still running by then; 0 = not stopping
  bool killed = false;
  std::unique_ptr<Process> process;
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
  return said.empty() ? last : said;
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
  Load();
}

Jobs::~Jobs() = default;

void Jobs::Load() {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& item : fs::directory_iterator(options_.dir)) {
    fs::path record = item.path() / "job.json";
    if (!fs::exists(record)) continue;  // a launch that failed before its record was written
    std::string text;
    json doc = ReadWholeFile(record.string(), &text) ? json::parse(text, nullptr, false) : json();
    auto e = std::make_unique<Entry>();
    if (doc.is_discarded() || !doc.contains("job") ||
        !google::protobuf::util::JsonStringToMessage(doc["job"].dump(), &e->job).ok()) {
      throw std::runtime_error(record.string() + ": not a job record; move it away to start");
    }
    e->dir = item.path();
    e->token = doc.value("token", "");
    e->identity = doc.value("process", "");
    e->stop_requested = doc.value("stop_requested", false);
    e->kill_at_ms = doc.value("kill_at_ms", int64_t{0});
    if (e->job.state() == v1::JOB_STATE_RUNNING) {
      e->process = launcher_.Adopt(e->identity);
      if (!e->process) EndLocked(*e, ExitStatus{false, -1, 0});  // ended while we were down
    }
    jobs_[e->job.job_id()] = std::move(e);
  }
}

void Jobs::SaveLocked(const Entry& e) const {
  std::string job_json;
  google::protobuf::util::JsonPrintOptions opts;
  opts.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(e.job, &job_json, opts);
  json doc = {{"job", json::parse(job_json)},
              {"token", e.token},
              {"process", e.identity},
              {"stop_requested", e.stop_requested},
              {"kill_at_ms", e.kill_at_ms}};
  // Holds the job's reporter token: owner-only.
  WriteFileAtomically(e.dir / "job.json", doc.dump(2) + "\n", fs::perms::owner_read | fs::perms::owner_write);
}

std::string Jobs::NewId() {
  int64_t now = options_.now_ms();
  for (;;) {
    std::string id = "job-" + std::to_string(now) + "-" + std::to_string(++next_id_);
    if (!jobs_.count(id) && !fs::exists(fs::path(options_.dir) / id)) return id;
  }
}

v1::Job Jobs::Launch(const std::string& config_json, const std::string& run_id,
                     const std::function<bool(const std::string&)>& run_exists) {
  std::string id = RequestedRunId(config_json, run_id);
  std::lock_guard<std::mutex> lock(mu_);
  if (options_.trainer.empty()) {
    throw JobError(JobError::Code::kUnavailable, "this monitor has no trainer program to launch (gradwatchd --trainer)");
  }
  if (options_.monitor_address.empty()) throw JobError(JobError::Code::kUnavailable, "the monitor is still starting");
  if (id.empty()) id = NewId();
  if (jobs_.count(id) || fs::exists(fs::path(options_.dir) / id) || (run_exists && run_exists(id))) {
    throw JobError(JobError::Code::kAlreadyExists, "run " + id + " exists already; pick another run_id");
  }
  auto e = std::make_unique<Entry>();
  e->dir = fs::path(options_.dir) / id;
  LaunchContext ctx{e->dir.string(), options_.monitor_address, options_.datasets_dir};
  std::string config = PrepareLaunchConfig(config_json, id, ctx);  // throws InvalidLaunch

  fs::create_directories(e->dir);
  WriteFileAtomically(e->dir / "config.json", config);
  e->job.set_job_id(id);
  e->job.set_run_id(id);
  e->job.set_state(v1::JOB_STATE_QUEUED);
  e->job.set_created_unix_millis(options_.now_ms());
  e->job.set_config_json(config);
  if (options_.reporter_tokens) e->token = NewToken();
  SaveLocked(*e);
  Entry& entry = *e;
  jobs_[id] = std::move(e);
  StartQueuedLocked();
  return entry.job;
}

void Jobs::StartLocked(Entry& e) {
  LaunchSpec spec;
  spec.program = options_.trainer;
  spec.args = {"--config", (e.dir / "config.json").string()};
  spec.env = options_.env;
  if (!e.token.empty()) spec.env.push_back("GRADWATCH_TOKEN=" + e.token);
  spec.workdir = e.dir.string();
  spec.log_path = (e.dir / "train.log").string();
  e.job.set_started_unix_millis(options_.now_ms());
  try {
    e.process = launcher_.Start(spec);
  } catch (const std::exception& ex) {
    e.job.set_state(v1::JOB_STATE_FAILED);
    e.job.set_exit_code(-1);
    e.job.set_error(ex.what());
    e.job.set_ended_unix_millis(options_.now_ms());
    SaveLocked(e);
    return;
  }
  e.identity = e.process->identity();
  e.job.set_pid(e.process->pid());
  e.job.set_state(v1::JOB_STATE_RUNNING);
  SaveLocked(e);
}

void Jobs::EndLocked(Entry& e, const ExitStatus& status) {
  const fs::path log = e.dir / "train.log";
  e.process.reset();
  e.job.set_ended_unix_millis(options_.now_ms());
  e.job.set_pid(0);
  if (status.known) {
    e.job.set_exit_code(status.code);
    if (e.stop_requested) {
      e.job.set_state(v1::JOB_STATE_STOPPED);
      if (e.killed) e.job.set_error("did not stop within its grace period; killed");
    } else if (status.code == 0) {
      e.job.set_state(v1::JOB_STATE_SUCCEEDED);
    } else {
      e.job.set_state(v1::JOB_STATE_FAILED);
      std::string words = LastWords(log);
      std::string how = status.signal ? "killed by signal " + std::to_string(status.signal)
                                      : "exit code " + std::to_string(status.code);
      e.job.set_error(words.empty() ? how : words + " (" + how + ")");
    }
  } else {
    // Ended while no monitor watched it: judge by what it left.
    e.job.set_exit_code(-1);
    std::string words = LastWords(log);
    const std::string note = " (ended while the monitor was down; exit code unknown)";
    if (fs::exists(e.dir / "summary.json")) {
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
  SaveLocked(e);
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
  if (e.job.state() == v1::JOB_STATE_QUEUED) {
    e.job.set_state(v1::JOB_STATE_STOPPED);
    e.job.set_ended_unix_millis(options_.now_ms());
    e.job.set_error("stopped before it started");
  } else {
    e.kill_at_ms = options_.now_ms() + (grace_ms > 0 ? grace_ms : options_.default_grace_ms);
    if (e.process) e.process->Signal(SIGTERM);
  }
  SaveLocked(e);
  return e.job;
}

void Jobs::Tick() {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = options_.now_ms();
  for (auto& [_, e] : jobs_) {
    if (e->job.state() != v1::JOB_STATE_RUNNING || !e->process) continue;
    if (auto status = e->process->Poll()) {
      EndLocked(*e, *status);
      continue;
    }
    if (e->stop_requested && !e->killed && now >= e->kill_at_ms) {
      e->process->Signal(SIGKILL);
      e->killed = true;
    }
  }
  StartQueuedLocked();
}

void Jobs::StartQueuedLocked() {
  size_t running = 0;
  for (const auto& [_, e] : jobs_) running += e->job.state() == v1::JOB_STATE_RUNNING;
  // Queued jobs start in the order they came.
  std::vector<Entry*> queued;
  for (auto& [_, e] : jobs_) {
    if (e->job.state() == v1::JOB_STATE_QUEUED) queued.push_back(e.get());
  }
  std::stable_sort(queued.begin(), queued.end(), [](const Entry* a, const Entry* b) {
    return a->job.created_unix_millis() < b->job.created_unix_millis();
  });
  for (Entry* e : queued) {
    if (running >= options_.max_running) break;
    StartLocked(*e);
    running += e->job.state() == v1::JOB_STATE_RUNNING;
  }
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
