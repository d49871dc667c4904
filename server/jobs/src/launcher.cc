#include "gradwatch/jobs/launcher.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "spawn_attributes.h"

namespace gradwatch::jobs {
namespace {

// The process's start time in clock ticks since boot (/proc/PID/stat field 22): with the
// pid it names one process, even after the pid is reused. 0 when there is no such process;
// `zombie` tells whether it has ended but not been reaped.
uint64_t StartTicks(int64_t pid, bool* zombie = nullptr) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!in || !std::getline(in, text)) return 0;
  auto close = text.rfind(')');  // the command name may hold spaces and parentheses
  if (close == std::string::npos) return 0;
  std::istringstream rest(text.substr(close + 2));
  std::string field, state;
  rest >> state;  // field 3
  if (zombie) *zombie = state == "Z" || state == "X";
  for (int i = 4; i <= 22 && rest >> field; ++i) {
    if (i == 22) return std::strtoull(field.c_str(), nullptr, 10);
  }
  return 0;
}

class LocalProcess final : public Process {
 public:
  LocalProcess(pid_t pid, uint64_t start_ticks, bool child) : pid_(pid), start_ticks_(start_ticks), child_(child) {}

  int64_t pid() const override { return pid_; }
  std::string identity() const override { return std::to_string(pid_) + ":" + std::to_string(start_ticks_); }

  std::optional<ExitStatus> Poll() override {
    if (ended_) return ended_;
    if (child_) {
      int status = 0;
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == 0) return std::nullopt;
      ExitStatus s;
      if (r < 0) {
        s.known = false;  // reaped elsewhere
      } else if (WIFEXITED(status)) {
        s.code = WEXITSTATUS(status);
      } else if (WIFSIGNALED(status)) {
        s.signal = WTERMSIG(status);
        s.code = 128 + s.signal;
      }
      ended_ = s;
    } else {
      bool zombie = false;
      if (StartTicks(pid_, &zombie) == start_ticks_ && !zombie) return std::nullopt;
      ended_ = ExitStatus{false, -1, 0};
    }
    return ended_;
  }

  void Signal(int signal) override {
    if (!ended_) ::kill(-pid_, signal);  // the group: the job leads its own session
  }

 private:
  pid_t pid_;
  uint64_t start_ticks_;
  bool child_;
  std::optional<ExitStatus> ended_;
};

std::string Errno(const std::string& what, int err) { return what + ": " + std::strerror(err); }

}  // namespace

std::unique_ptr<Process> LocalLauncher::Start(const LaunchSpec& spec) {
  if (::access(spec.program.c_str(), X_OK) != 0) {
    throw std::runtime_error(Errno("cannot run " + spec.program, errno));
  }
  // The log is opened here, not in the child, so a log that cannot be opened is an error
  // with its path; never through a link planted in its place.
  int log = ::open(spec.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (log < 0) throw std::runtime_error(Errno("cannot open the log " + spec.log_path, errno));
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  int err = posix_spawn_file_actions_addopen(&files, 0, "/dev/null", O_RDONLY, 0);
  if (!err) err = posix_spawn_file_actions_adddup2(&files, log, 1);
  if (!err) err = posix_spawn_file_actions_adddup2(&files, log, 2);
  if (!err) err = posix_spawn_file_actions_addchdir_np(&files, spec.workdir.c_str());

  // A session of its own (signals reach the whole job, a terminal's ^C does not), the
  // default signal mask and dispositions: the monitor blocks SIGINT and SIGTERM for sigwait.
  posix_spawnattr_t attr;
  InitSpawnAttributes(&attr, POSIX_SPAWN_SETSID);

  std::vector<std::string> args = spec.args;
  if (const uint32_t ranks = spec.resources.tasks_per_node(); ranks > 1) {
    args.insert(args.end(), {"--nproc", std::to_string(ranks)});  // the trainer starts its ranks
  }
  std::vector<char*> argv{const_cast<char*>(spec.program.c_str())};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  pid_t pid = 0;
  if (!err) err = ::posix_spawn(&pid, spec.program.c_str(), &files, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&files);
  posix_spawnattr_destroy(&attr);
  ::close(log);
  if (err != 0) throw std::runtime_error(Errno("cannot start " + spec.program + " in " + spec.workdir, err));
  return std::make_unique<LocalProcess>(pid, StartTicks(pid), /*child=*/true);
}

std::unique_ptr<Process> LocalLauncher::Adopt(const std::string& identity) {
  auto colon = identity.find(':');
  if (colon == std::string::npos) return nullptr;
  pid_t pid = 0;
  uint64_t ticks = 0;
  try {
    pid = static_cast<pid_t>(std::stoll(identity.substr(0, colon)));
    ticks = std::stoull(identity.substr(colon + 1));
  } catch (const std::exception&) {
    return nullptr;
  }
  bool zombie = false;
  if (pid <= 0 || ticks == 0 || StartTicks(pid, &zombie) != ticks || zombie) return nullptr;
  return std::make_unique<LocalProcess>(pid, ticks, /*child=*/false);
}

}  // namespace gradwatch::jobs
