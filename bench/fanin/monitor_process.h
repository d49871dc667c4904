// gradwatchd as a child process, so that the monitor's CPU time is its own and the load
// generator's never counts in it: started on free loopback ports with its store in a
// given folder, its CPU time read from /proc, stopped with SIGTERM.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace gradwatch::bench {

// A process's CPU time so far: user and system seconds of the whole process (threads
// that ended included) and of each live thread, with the time each thread was ready to run
// but waited for a core (the scheduler's run queue): CPU starvation, not work.
struct CpuTimes {
  struct Thread {
    std::string name;
    double seconds = 0;       // user + system
    double wait_seconds = 0;  // runnable, waiting for a core
  };
  double user = 0, system = 0;
  std::map<pid_t, Thread> threads;  // by thread id
  double total() const { return user + system; }
};

// Reads /proc/<pid>/stat and /proc/<pid>/task/*/stat (clock ticks: 10 ms resolution) and
// /proc/<pid>/task/*/schedstat (ns; 0 where the kernel keeps none).
CpuTimes ReadCpuTimes(pid_t pid);

// The CPU time threads of one name took between two readings.
struct ThreadGroup {
  std::string name;
  int threads = 0;
  double seconds = 0;       // all of them together
  double max_thread = 0;    // the busiest one
  double wait_seconds = 0;  // all of them together, waiting for a core
};
// Busiest group first; a thread that ended in between is left out.
std::vector<ThreadGroup> GroupByName(const CpuTimes& later, const CpuTimes& earlier);

// A process's I/O so far (/proc/<pid>/io): bytes of storage pages it dirtied (its share of
// what goes to disk) and its read- and write-family system calls (read, pread, write,
// pwrite, ...; gRPC's sendmsg and recvmsg are not counted there).
struct ProcessIo {
  double storage_write_bytes = 0;
  double syscalls = 0;
};
ProcessIo ReadProcessIo(pid_t pid);

class MonitorProcess {
 public:
  // Runs `binary` with --listen/--metrics-listen on 127.0.0.1:0, --data-dir `data_dir`, a
  // ports file there, and `extra_args`; its output goes to <data_dir>/gradwatchd.log.
  // Throws std::runtime_error when it cannot start or has not written its ports within `wait`.
  MonitorProcess(const std::string& binary, const std::string& data_dir, const std::vector<std::string>& extra_args,
                 std::chrono::seconds wait);
  ~MonitorProcess();  // Stop(5 s) if still running
  MonitorProcess(const MonitorProcess&) = delete;
  MonitorProcess& operator=(const MonitorProcess&) = delete;

  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }
  pid_t pid() const { return pid_; }
  CpuTimes Cpu() const { return ReadCpuTimes(pid_); }
  ProcessIo Io() const { return ReadProcessIo(pid_); }
  // The last `bytes` of its log, for an error message.
  std::string LogTail(size_t bytes) const;

  // SIGTERM, then SIGKILL past `grace`; the exit code, or -1 when it was killed.
  int Stop(std::chrono::seconds grace);

 private:
  std::string log_path_;
  pid_t pid_ = -1;
  int grpc_port_ = 0, metrics_port_ = 0;
};

// gradwatchd next to the running executable (both go to the build's bin/).
std::string GradwatchdNextToSelf();

}  // namespace gradwatch::bench
