// SystemRunner: a command from an argv (posix_spawnp, no shell), its stdout and stderr read
// through pipes, killed when it runs past its time.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "gradwatch/jobs/slurm.h"
#include "spawn_attributes.h"

extern char** environ;

namespace gradwatch::jobs {
namespace {

constexpr size_t kMaxOutput = 1 << 20;  // a client's answer about one job is a few KiB

// Reads both pipes until they close or `deadline` passes; false when it passed.
bool Drain(int out_fd, int err_fd, std::chrono::steady_clock::time_point deadline, CommandResult& r) {
  pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
  std::string* sinks[2] = {&r.out, &r.err};
  int open = 2;
  char buf[4096];
  while (open > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    if (::poll(fds, 2, static_cast<int>(left.count())) < 0 && errno != EINTR) return false;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0 && sinks[i]->size() < kMaxOutput) sinks[i]->append(buf, static_cast<size_t>(n));
      if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
        fds[i].fd = -1;
        --open;
      }
    }
  }
  return true;
}

CommandResult Run(const std::vector<std::string>& argv, const std::vector<std::string>& env, int64_t timeout_ms) {
  CommandResult r;
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return {-1, "", std::strerror(errno)};
  if (::pipe2(err, O_CLOEXEC) != 0) {
    ::close(out[0]), ::close(out[1]);
    return {-1, "", std::strerror(errno)};
  }
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_addopen(&files, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&files, out[1], 1);
  posix_spawn_file_actions_adddup2(&files, err[1], 2);
  posix_spawnattr_t attr;
  InitSpawnAttributes(&attr, 0);
  std::vector<char*> args, envp;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  pid_t pid = 0;
  int spawned = ::posix_spawnp(&pid, args[0], &files, &attr, args.data(), env.empty() ? environ : envp.data());
  posix_spawn_file_actions_destroy(&files);
  posix_spawnattr_destroy(&attr);
  ::close(out[1]), ::close(err[1]);
  if (spawned != 0) {
    ::close(out[0]), ::close(err[0]);
    return {-1, "", "cannot run " + argv[0] + ": " + std::strerror(spawned)};
  }
  bool in_time = Drain(out[0], err[0], std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms), r);
  ::close(out[0]), ::close(err[0]);
  if (!in_time) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!in_time) {
    r.exit_code = -1;
    r.err += argv[0] + " did not answer within " + std::to_string(timeout_ms) + " ms";
  } else {
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  return r;
}

}  // namespace

CommandRunner SystemRunner(int64_t timeout_ms) {
  return [timeout_ms](const std::vector<std::string>& argv, const std::vector<std::string>& env) {
    return Run(argv, env, timeout_ms);
  };
}

}  // namespace gradwatch::jobs
