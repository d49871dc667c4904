#include "gradwatch/common/log_line.h"
#include "ranks.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <iostream>
#include <map>
#include <stdexcept>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace gradwatch::train {
namespace {

using Clock = std::chrono::steady_clock;


// A port nothing listens on now: bound to 127.0.0.1:0, read back, released. Rank 0 binds it a
// moment later; another process could take it first (the rendezvous then fails, naming it).
uint16_t FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error(std::string("--nproc: no socket for a free port: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  ::close(fd);
  if (!ok) throw std::runtime_error(std::string("--nproc: cannot find a free port: ") + std::strerror(errno));
  return ntohs(addr.sin_port);
}

// This process's environment with torchrun's variables for `rank` in place of any inherited.
std::vector<std::string> RankEnvironment(int rank, int nproc, uint16_t port) {
  const std::map<std::string, std::string> set = {
      {"RANK", std::to_string(rank)},     {"WORLD_SIZE", std::to_string(nproc)},
      {"LOCAL_RANK", std::to_string(rank)}, {"LOCAL_WORLD_SIZE", std::to_string(nproc)},
      {"MASTER_ADDR", "127.0.0.1"},         {"MASTER_PORT", std::to_string(port)}};
  std::vector<std::string> out;
  for (char** e = environ; *e; ++e) {
    const std::string entry = *e;
    if (set.count(entry.substr(0, entry.find('='))) == 0) out.push_back(entry);
  }
  for (const auto& [k, v] : set) out.push_back(k + "=" + v);
  return out;
}

// Forks and execs one rank. Between fork and exec only async-signal-safe calls.
pid_t StartRank(char** argv, std::vector<std::string>& env, const sigset_t& original_mask) {
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("--nproc: fork: ") + std::strerror(errno));
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl
    ::sigprocmask(SIG_SETMASK, &original_mask, nullptr);
    ::execve("/proc/self/exe", argv, envp.data());
    ::_exit(127);
  }
  return pid;
}

int ExitCodeOf(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

std::string Describe(int status) {
  if (WIFSIGNALED(status)) return std::string("was killed by ") + ::strsignal(WTERMSIG(status));
  return "exited with code " + std::to_string(ExitCodeOf(status));
}

}  // namespace

int RunRanks(int nproc, char** argv, std::chrono::milliseconds grace) {
  sigset_t watched, original;
  sigemptyset(&watched);
  sigaddset(&watched, SIGTERM);
  sigaddset(&watched, SIGINT);
  sigaddset(&watched, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &watched, &original);  // taken with sigtimedwait below, never by a handler

  const uint16_t port = FreePort();
  std::map<pid_t, int> alive;  // pid -> rank
  for (int rank = 0; rank < nproc; ++rank) {
    std::vector<std::string> env = RankEnvironment(rank, nproc, port);
    const pid_t pid = StartRank(argv, env, original);
    alive[pid] = rank;
    LogLine("gradwatch-train: started rank ", rank, " of ", nproc, " (pid ", pid,
        ", MASTER_ADDR=127.0.0.1 MASTER_PORT=", port, ")");
  }

  int result = 0;
  bool stopping = false;
  Clock::time_point kill_at = Clock::time_point::max();
  const auto stop_all = [&](int sig) {
    for (const auto& [pid, rank] : alive) ::kill(pid, sig);
    if (!stopping) kill_at = Clock::now() + grace;
    stopping = true;
  };
  while (!alive.empty()) {
    const bool waiting_to_kill = kill_at != Clock::time_point::max();
    const Clock::duration wait = waiting_to_kill ? std::max(Clock::duration::zero(), kill_at - Clock::now())
                                                 : Clock::duration(std::chrono::seconds(1));
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(wait).count();
    timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
    const int sig = ::sigtimedwait(&watched, nullptr, &ts);
    if (sig == SIGTERM || sig == SIGINT) {
      LogLine("gradwatch-train: ", ::strsignal(sig), ": stopping ", alive.size(), " rank(s)");
      if (result == 0) result = 128 + sig;
      stop_all(sig);
    }
    int status = 0;
    pid_t pid;
    while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
      const auto it = alive.find(pid);
      if (it == alive.end()) continue;
      const int rank = it->second, code = ExitCodeOf(status);
      alive.erase(it);
      if (code == 0 || stopping) continue;
      LogLine("gradwatch-train: rank ", rank, " ", Describe(status), "; stopping the other ", alive.size(),
          " rank(s)");
      result = code;
      stop_all(SIGTERM);
    }
    if (waiting_to_kill && Clock::now() >= kill_at && !alive.empty()) {
      LogLine("gradwatch-train: ", alive.size(), " rank(s) still running after ",
          std::chrono::duration<double>(grace).count(), " s: killing them");
      for (const auto& [p, rank] : alive) ::kill(p, SIGKILL);
      kill_at = Clock::time_point::max();
    }
  }
  ::sigprocmask(SIG_SETMASK, &original, nullptr);
  return result;
}

}  // namespace gradwatch::train
