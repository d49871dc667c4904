#include "monitor_process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace gradwatch::bench {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// The number after "key": in the ports file's JSON, 0 when absent.
int JsonInt(const std::string& json, const std::string& key) {
  size_t at = json.find("\"" + key + "\"");
  if (at == std::string::npos) return 0;
  at = json.find(':', at);
  return at == std::string::npos ? 0 : std::atoi(json.c_str() + at + 1);
}

struct TaskStat {
  std::string name;
  double user = 0, system = 0;  // seconds
  bool ok = false;
};

// /proc/.../stat: "pid (comm) state ppid ... utime stime ..." (utime is field 14). The
// name may hold spaces and parentheses, so the fields are counted from the last ')'.
TaskStat ReadStat(const std::string& path) {
  TaskStat s;
  std::string text = ReadFile(path);
  size_t open = text.find('('), close = text.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) return s;
  s.name = text.substr(open + 1, close - open - 1);
  std::istringstream fields(text.substr(close + 2));
  std::string skip;
  for (int field = 3; field < 14; ++field) fields >> skip;
  unsigned long long utime = 0, stime = 0;
  fields >> utime >> stime;
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  s.user = utime / tick, s.system = stime / tick, s.ok = static_cast<bool>(fields);
  return s;
}

}  // namespace

CpuTimes ReadCpuTimes(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid);
  CpuTimes out;
  TaskStat all = ReadStat(dir + "/stat");
  out.user = all.user, out.system = all.system;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator(dir + "/task", ec)) {
    TaskStat t = ReadStat(task.path().string() + "/stat");
    if (!t.ok) continue;  // ended meanwhile
    // "run_ns wait_ns timeslices"
    std::istringstream sched(ReadFile(task.path().string() + "/schedstat"));
    double run_ns = 0, wait_ns = 0;
    sched >> run_ns >> wait_ns;
    out.threads[std::atoi(task.path().filename().c_str())] = {t.name, t.user + t.system, wait_ns / 1e9};
  }
  return out;
}

ProcessIo ReadProcessIo(pid_t pid) {
  std::istringstream lines(ReadFile("/proc/" + std::to_string(pid) + "/io"));  // "name: value" lines
  ProcessIo io;
  std::string name;
  for (double value = 0; lines >> name >> value;) {
    if (name == "write_bytes:") io.storage_write_bytes = value;
    if (name == "syscr:" || name == "syscw:") io.syscalls += value;
  }
  return io;
}

std::vector<ThreadGroup> GroupByName(const CpuTimes& later, const CpuTimes& earlier) {
  std::map<std::string, ThreadGroup> groups;
  for (const auto& [tid, t] : later.threads) {
    auto before = earlier.threads.find(tid);
    const bool known = before != earlier.threads.end();
    double seconds = t.seconds - (known ? before->second.seconds : 0);
    ThreadGroup& g = groups[t.name];
    g.wait_seconds += t.wait_seconds - (known ? before->second.wait_seconds : 0);
    g.name = t.name;
    ++g.threads;
    g.seconds += seconds;
    g.max_thread = std::max(g.max_thread, seconds);
  }
  std::vector<ThreadGroup> out;
  for (auto& [name, g] : groups) out.push_back(std::move(g));
  std::sort(out.begin(), out.end(), [](const ThreadGroup& a, const ThreadGroup& b) { return a.seconds > b.seconds; });
  return out;
}

MonitorProcess::MonitorProcess(const std::string& binary, const std::string& data_dir,
                               const std::vector<std::string>& extra_args, std::chrono::seconds wait) {
  std::filesystem::create_directories(data_dir);
  const std::string ports = data_dir + "/ports.json";
  log_path_ = data_dir + "/gradwatchd.log";
  std::vector<std::string> args = {binary,        "--listen",   "127.0.0.1:0", "--metrics-listen",
                                   "127.0.0.1:0", "--data-dir", data_dir,      "--ports-file",
                                   ports};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_addopen(&files, STDOUT_FILENO, log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&files, STDOUT_FILENO, STDERR_FILENO);
  int err = posix_spawn(&pid_, binary.c_str(), &files, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&files);
  if (err != 0) throw std::runtime_error("cannot run " + binary + ": " + std::strerror(err));

  auto until = std::chrono::steady_clock::now() + wait;
  while (grpc_port_ == 0 || metrics_port_ == 0) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error(binary + " exited at start: " + LogTail(2000));
    }
    if (std::chrono::steady_clock::now() > until) {
      Stop(std::chrono::seconds(2));
      throw std::runtime_error(binary + " wrote no ports to " + ports + " in time: " + LogTail(2000));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::string json = ReadFile(ports);
    grpc_port_ = JsonInt(json, "grpc_port"), metrics_port_ = JsonInt(json, "metrics_port");
  }
}

MonitorProcess::~MonitorProcess() {
  if (pid_ > 0) Stop(std::chrono::seconds(5));
}

std::string MonitorProcess::LogTail(size_t bytes) const {
  std::string log = ReadFile(log_path_);
  return log.size() > bytes ? log.substr(log.size() - bytes) : log;
}

int MonitorProcess::Stop(std::chrono::seconds grace) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  auto until = std::chrono::steady_clock::now() + grace;
  int status = 0;
  while (::waitpid(pid_, &status, WNOHANG) != pid_) {
    if (std::chrono::steady_clock::now() > until) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string GradwatchdNextToSelf() {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "gradwatchd" : (self.parent_path() / "gradwatchd").string();
}

}  // namespace gradwatch::bench
