// bench/fanin: the monitor under the fan-in of many data-parallel jobs, one stream per rank.
//
// `--runs` jobs of `--ranks` ranks (64 x 16 = 1,024 streams) report healthy steps at
// `--steps-per-s` per rank, paced by a few load threads on gRPC's callback API (one
// reactor per stream, one connection per stream unless --streams-per-connection says
// otherwise). One more job of `--ranks` ranks runs in gated mode at `--gated-steps-per-s`:
// its rank 0 waits for the verdict on every step, timed from the report to the waiting
// thread waking up. The monitor is gradwatchd itself, a child process, so that its CPU
// time (/proc/<pid>/stat) holds none of the load generator's. After `--warmup-s`, one
// window of `--duration-s` is measured; then every report must be acknowledged.
// Prints one JSON line on stdout, a summary and progress on stderr. Exits 1 when a report
// was rejected, a stream failed or the reports were not all acknowledged.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../temp_dir.h"
#include "../ingest/scrape.h"
#include "monitor_process.h"
#include "rank_load.h"

namespace {

using gradwatch::bench::TempDir;

using namespace gradwatch;
using namespace std::chrono_literals;
using bench::SteadyClock;

struct Args {
  int runs = 64;
  int ranks = 16;
  int layers = 16;
  // Per rank: 64 x 16 x 2 = 2,048 reports/s, what this shared 2-core box held (README.md).
  double steps_per_s = 2;
  double gated_steps_per_s = 10;  // its 16 ranks add 160 reports/s
  int threads = 2;                // load threads
  int streams_per_connection = 1;
  double warmup_s = 10;
  double duration_s = 60;
  double scrape_s = 5;     // /metrics read this often in the window (as Prometheus would)
  std::string gradwatchd;  // "" = next to this executable
};

// Exits 2 after `why` on stderr; with --help (status 0) the same on stdout.
[[noreturn]] void Usage(const std::string& why, int status = 2) {
  std::fprintf(status == 0 ? stdout : stderr,
               "fanin_bench: %s\nflags: --runs N --ranks N --layers N --steps-per-s X --gated-steps-per-s X "
               "--threads N --streams-per-connection N --warmup-s X --duration-s X --scrape-s X "
               "--gradwatchd PATH --quick\n",
               why.c_str());
  std::exit(status);
}

void SetFlag(Args& a, const std::string& flag, const char* value) {
  double v = std::atof(value);
  if (flag == "--runs")
    a.runs = static_cast<int>(v);
  else if (flag == "--ranks")
    a.ranks = static_cast<int>(v);
  else if (flag == "--layers")
    a.layers = static_cast<int>(v);
  else if (flag == "--steps-per-s")
    a.steps_per_s = v;
  else if (flag == "--gated-steps-per-s")
    a.gated_steps_per_s = v;
  else if (flag == "--threads")
    a.threads = static_cast<int>(v);
  else if (flag == "--streams-per-connection")
    a.streams_per_connection = static_cast<int>(v);
  else if (flag == "--warmup-s")
    a.warmup_s = v;
  else if (flag == "--duration-s")
    a.duration_s = v;
  else if (flag == "--scrape-s")
    a.scrape_s = v;
  else if (flag == "--gradwatchd")
    a.gradwatchd = value;
  else
    Usage("unknown flag " + flag);
}

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      Usage("the monitor under the fan-in of many data-parallel jobs, gradwatchd as a child process (bench/fanin/README.md)", 0);
    } else if (flag == "--quick") {
      a.runs = 8, a.warmup_s = 2, a.duration_s = 5;
    } else if (i + 1 < argc) {
      SetFlag(a, flag, argv[++i]);
    } else {
      Usage(flag + " needs a value");
    }
  }
  if (a.runs < 1 || a.ranks < 1 || a.layers < 1 || a.threads < 1 || a.streams_per_connection < 1 ||
      a.steps_per_s <= 0 || a.gated_steps_per_s <= 0 || a.warmup_s < 0 || a.duration_s <= 0 || a.scrape_s <= 0) {
    Usage("counts must be >= 1 and rates and durations > 0");
  }
  if (a.gradwatchd.empty()) a.gradwatchd = bench::GradwatchdNextToSelf();
  return a;
}

void Require(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(what);
}

double Seconds(SteadyClock::duration d) { return std::chrono::duration<double>(d).count(); }

// The value at quantile q (0..1) of `v`, nearest rank.
double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(q * v.size()));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

// The host's 1-minute load average: other work on the machine shows in every figure.
double LoadAverage() {
  std::ifstream in("/proc/loadavg");
  double load = 0;
  in >> load;
  return load;
}


// Each stream is a socket on both ends: both processes need the descriptors.
void RaiseFileLimit(rlim_t needed) {
  rlimit limit{};
  Require(::getrlimit(RLIMIT_NOFILE, &limit) == 0, "getrlimit(RLIMIT_NOFILE) failed");
  if (limit.rlim_cur >= needed) return;
  limit.rlim_cur = std::min(needed, limit.rlim_max);
  ::setrlimit(RLIMIT_NOFILE, &limit);
  Require(limit.rlim_cur >= needed, "open files are limited to " + std::to_string(limit.rlim_max) + ", " +
                                        std::to_string(needed) + " are needed (ulimit -n)");
}

// ---- the load ----

// Every job's streams, on their own connections (or `streams_per_connection` per connection).
struct Load {
  bench::StreamCounters counters;
  std::vector<std::unique_ptr<v1::Telemetry::Stub>> stubs;
  std::vector<bench::Job> jobs;  // the paced jobs, then the gated one
  size_t streams = 0;

  Load() = default;
  Load(const Load&) = delete;
  Load& operator=(const Load&) = delete;
  // Streams still open (after an error) are cancelled: a reactor must be done to go.
  ~Load() {
    ForEachStream([](bench::RankStream& s) {
      if (!s.done()) s.Cancel();
    });
    ForEachStream([](bench::RankStream& s) { s.WaitDone(std::chrono::seconds(5)); });
  }

  bench::Job& gated() { return jobs.back(); }
  uint64_t acked() {
    uint64_t n = 0;
    ForEachStream([&](bench::RankStream& s) { n += s.acked_through(); });
    return n;
  }
  template <typename F>
  void ForEachStream(F f) {
    for (auto& job : jobs) {
      for (auto& s : job.ranks) f(*s);
    }
  }
};

v1::Telemetry::Stub& StubFor(Load& load, const std::string& address, int per_connection) {
  if (load.streams % per_connection == 0) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own, as a rank process has
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 8'000);      // the reporter's keepalive
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 8'000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    load.stubs.push_back(
        v1::Telemetry::NewStub(grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args)));
  }
  ++load.streams;
  return *load.stubs.back();
}

// Opens every stream (the hellos) and waits until each is acknowledged; returns seconds.
double Connect(const Args& a, const std::string& address, Load& load) {
  auto start = SteadyClock::now();
  load.jobs.resize(a.runs + 1);
  for (int j = 0; j <= a.runs; ++j) {
    bench::Job& job = load.jobs[j];
    const bool gated = j == a.runs;
    job.run_id = gated ? "fanin-gated" : "fanin-" + std::to_string(j);
    for (int k = 0; k < a.ranks; ++k) {
      v1::Hello hello = bench::RankHello(job.run_id, a.layers, k, a.ranks, gated ? v1::MODE_GATED : v1::MODE_GUARD);
      job.ranks.push_back(
          std::make_unique<bench::RankStream>(StubFor(load, address, a.streams_per_connection), hello, load.counters));
    }
  }
  bool all = false;
  while (!all && SteadyClock::now() - start < 60s && load.counters.failed == 0) {
    std::this_thread::sleep_for(10ms);
    all = true;
    load.ForEachStream([&](bench::RankStream& s) { all = all && s.connected(); });
  }
  Require(all, "not every stream's hello was acknowledged within 60 s: " + load.counters.FirstProblem());
  return Seconds(SteadyClock::now() - start);
}

// The gated job's loop: every step, every rank reports, then rank 0 waits for the verdict.
class GatedLoop {
 public:
  struct Sample {
    SteadyClock::time_point sent;
    double wake_ms = 0;     // report queued -> the waiting thread woke with the verdict
    double arrival_ms = 0;  // report queued -> the verdict read on gRPC's thread
    bool got = false;
  };

  GatedLoop(bench::Job& job, double steps_per_s, int layers)
      : job_(job),
        period_(std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(1 / steps_per_s))),
        steps_(layers, static_cast<int>(job.ranks.size()), 7) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~GatedLoop() { Stop(); }
  GatedLoop(const GatedLoop&) = delete;
  GatedLoop& operator=(const GatedLoop&) = delete;
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  const std::vector<Sample>& samples() const { return samples_; }  // after Stop()

 private:
  void Loop() {
    bench::NameThread("fanin-gated");
    std::vector<v1::StepReport> reports;
    for (auto next = SteadyClock::now(); !stop_;) {
      next += period_;
      std::this_thread::sleep_until(next);
      const uint64_t step = ++job_.step;
      steps_.Fill(step, reports);
      reports[0].set_awaiting_verdict(true);
      Sample s;
      s.sent = SteadyClock::now();
      for (size_t k = 0; k < reports.size(); ++k) job_.ranks[k]->Send(std::move(reports[k]));
      auto verdict = job_.ranks[0]->AwaitVerdict(step, 1000ms);
      s.wake_ms = Seconds(SteadyClock::now() - s.sent) * 1e3;
      s.got = verdict.has_value();
      if (verdict) s.arrival_ms = Seconds(*verdict - s.sent) * 1e3;
      samples_.push_back(s);
    }
  }

  bench::Job& job_;
  SteadyClock::duration period_;
  bench::JobSteps steps_;
  std::vector<Sample> samples_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// ---- measuring ----

struct Snapshot {
  SteadyClock::time_point at;
  bench::CpuTimes monitor, self;
  bench::ProcessIo io;
  uint64_t reports = 0, acks = 0, acked_steps = 0;
  bench::LatencyHistogram::Counts ack_latency{}, lateness{};
  double received_steps = -1;  // the monitor's own count (/metrics), -1 when unread
  double store_lag = -1;
  size_t metrics_bytes = 0;
  double scrape_ms = 0;
};

struct Metrics {
  std::string text;
  double ms = 0;
};

Metrics Scrape(int port) {
  auto start = SteadyClock::now();
  Metrics m;
  m.text = bench::ScrapeMetrics(port);
  m.ms = Seconds(SteadyClock::now() - start) * 1e3;
  return m;
}

double StoreLag(const std::string& metrics) {
  return bench::SumSamples(metrics, "gradwatch_store_lag_records").value_or(-1);
}

Snapshot Take(bench::MonitorProcess& monitor, Load& load, bench::LatencyHistogram& lateness) {
  Snapshot s;
  s.at = SteadyClock::now();
  s.monitor = monitor.Cpu();
  s.io = monitor.Io();
  s.self = bench::ReadCpuTimes(::getpid());
  s.reports = load.counters.reports.load();
  s.acks = load.counters.acks.load();
  s.acked_steps = load.acked();
  s.ack_latency = load.counters.ack_latency.Snapshot();
  s.lateness = lateness.Snapshot();
  Metrics m = Scrape(monitor.metrics_port());
  s.received_steps = bench::SumSamples(m.text, "gradwatch_messages_received_total", "type=\"step\"").value_or(-1);
  s.store_lag = StoreLag(m.text);
  s.metrics_bytes = m.text.size(), s.scrape_ms = m.ms;
  return s;
}

// Until every report queued is acknowledged, or `deadline`; returns seconds, -1 on timeout.
double Drain(Load& load, SteadyClock::duration deadline) {
  auto start = SteadyClock::now();
  for (;;) {
    bool all = true;
    load.ForEachStream([&](bench::RankStream& s) { all = all && s.acked_through() >= s.sent_through(); });
    if (all) return Seconds(SteadyClock::now() - start);
    if (SteadyClock::now() - start > deadline) return -1;
    std::this_thread::sleep_for(5ms);
  }
}

// Goodbye on every stream, then wait for each to end.
bool CloseAll(Load& load, std::chrono::seconds deadline) {
  load.ForEachStream([](bench::RankStream& s) { s.Close(); });
  auto until = SteadyClock::now() + deadline;
  bool all = true;
  load.ForEachStream([&](bench::RankStream& s) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - SteadyClock::now());
    all = s.WaitDone(std::max(left, std::chrono::milliseconds(1))) && all;
  });
  return all;
}

// ---- figures ----

struct Figures {
  double window_s = 0, connect_s = 0;
  double target_per_s = 0, sent_per_s = 0, received_per_s = 0, acked_per_s = 0;
  double acks_per_report = 0;
  double ack_ms_p50 = 0, ack_ms_p99 = 0, late_ms_p99 = 0, late_ms_max = 0;
  double gated_p50 = 0, gated_p99 = 0, gated_max = 0, arrival_p50 = 0, arrival_p99 = 0;
  size_t verdicts = 0, gate_timeouts = 0;
  double monitor_cpu_s = 0, monitor_user_s = 0, monitor_sys_s = 0, monitor_cpu_per_1k = 0;
  double load_cpu_s = 0, load_cpu_per_1k = 0;
  double monitor_wait_s = 0, load_wait_s = 0;                 // threads ready to run, waiting for a core
  double disk_bytes_per_report = 0, syscalls_per_report = 0;  // the monitor's
  double lag_end = -1, lag_max = -1;
  double received_window = 0;
  size_t metrics_bytes = 0;
  double scrape_ms = 0;
  std::vector<bench::ThreadGroup> monitor_threads, load_threads;

  // The rate held: sent >= 98% of the target, acked >= 98% of sent, the store less than a
  // second behind at the end, and every verdict in time.
  bool Sustained() const {
    return sent_per_s >= 0.98 * target_per_s && acked_per_s >= 0.98 * sent_per_s && lag_end >= 0 &&
           lag_end < target_per_s && gate_timeouts == 0;
  }
};

void GatedFigures(const std::vector<GatedLoop::Sample>& samples, const Snapshot& a, const Snapshot& b, Figures& f) {
  std::vector<double> wake, arrival;
  for (const auto& s : samples) {
    if (s.sent < a.at || s.sent >= b.at) continue;
    wake.push_back(s.wake_ms);
    if (s.got)
      arrival.push_back(s.arrival_ms);
    else
      ++f.gate_timeouts;
  }
  f.verdicts = arrival.size();
  f.gated_p50 = Quantile(wake, 0.5), f.gated_p99 = Quantile(wake, 0.99), f.gated_max = Quantile(wake, 1);
  f.arrival_p50 = Quantile(arrival, 0.5), f.arrival_p99 = Quantile(arrival, 0.99);
}

Figures Compute(const Args& a, const Snapshot& s0, const Snapshot& s1) {
  Figures f;
  f.window_s = Seconds(s1.at - s0.at);
  const double reports = static_cast<double>(s1.reports - s0.reports);
  f.target_per_s = a.runs * a.ranks * a.steps_per_s + a.ranks * a.gated_steps_per_s;
  f.sent_per_s = reports / f.window_s;
  f.received_window =
      s1.received_steps >= 0 && s0.received_steps >= 0 ? s1.received_steps - s0.received_steps : reports;
  f.received_per_s = f.received_window / f.window_s;
  f.acked_per_s = static_cast<double>(s1.acked_steps - s0.acked_steps) / f.window_s;
  f.acks_per_report = static_cast<double>(s1.acks - s0.acks) / std::max(reports, 1.0);
  using H = bench::LatencyHistogram;
  f.ack_ms_p50 = H::QuantileMs(s1.ack_latency, s0.ack_latency, 0.5);
  f.ack_ms_p99 = H::QuantileMs(s1.ack_latency, s0.ack_latency, 0.99);
  f.late_ms_p99 = H::QuantileMs(s1.lateness, s0.lateness, 0.99);
  f.late_ms_max = H::QuantileMs(s1.lateness, s0.lateness, 1.0);
  f.monitor_user_s = s1.monitor.user - s0.monitor.user;
  f.monitor_sys_s = s1.monitor.system - s0.monitor.system;
  f.monitor_cpu_s = f.monitor_user_s + f.monitor_sys_s;
  f.monitor_cpu_per_1k = f.monitor_cpu_s / std::max(f.received_window / 1000, 1e-9);
  f.disk_bytes_per_report = (s1.io.storage_write_bytes - s0.io.storage_write_bytes) / std::max(f.received_window, 1.0);
  f.syscalls_per_report = (s1.io.syscalls - s0.io.syscalls) / std::max(f.received_window, 1.0);
  f.load_cpu_s = s1.self.total() - s0.self.total();
  f.load_cpu_per_1k = f.load_cpu_s / std::max(reports / 1000, 1e-9);
  f.lag_end = s1.store_lag;
  f.metrics_bytes = s1.metrics_bytes, f.scrape_ms = s1.scrape_ms;
  f.monitor_threads = bench::GroupByName(s1.monitor, s0.monitor);
  f.load_threads = bench::GroupByName(s1.self, s0.self);
  for (const auto& g : f.monitor_threads) f.monitor_wait_s += g.wait_seconds;
  for (const auto& g : f.load_threads) f.load_wait_s += g.wait_seconds;
  return f;
}

std::string Threads(const std::vector<bench::ThreadGroup>& groups, size_t top) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(2) << "{";
  for (size_t i = 0; i < groups.size() && i < top; ++i) {
    const auto& g = groups[i];
    out << (i ? "," : "") << "\"" << g.name << "\":{\"threads\":" << g.threads << ",\"cpu_s\":" << g.seconds
        << ",\"busiest_s\":" << g.max_thread << ",\"runq_wait_s\":" << g.wait_seconds << "}";
  }
  return out.str() + "}";
}

void PrintSummary(const Args& a, const Figures& f, size_t streams, const bench::StreamCounters& c) {
  auto line = [](const std::string& text) { std::fprintf(stderr, "fanin_bench: %s\n", text.c_str()); };
  char buf[512];
  std::snprintf(buf, sizeof buf, "%zu streams (%d jobs x %d ranks + a gated job), %.0f s window: rate %s", streams,
                a.runs, a.ranks, f.window_s, f.Sustained() ? "sustained" : "NOT sustained");
  line(buf);
  std::snprintf(buf, sizeof buf,
                "reports %.0f/s sent of %.0f/s target, %.0f/s received, %.0f/s acked; %.2f acks per report",
                f.sent_per_s, f.target_per_s, f.received_per_s, f.acked_per_s, f.acks_per_report);
  line(buf);
  std::snprintf(buf, sizeof buf,
                "monitor CPU %.1f s (%.2f cores; user %.1f, sys %.1f) = %.3f s per 1,000 reports; load generator %.3f",
                f.monitor_cpu_s, f.monitor_cpu_s / f.window_s, f.monitor_user_s, f.monitor_sys_s, f.monitor_cpu_per_1k,
                f.load_cpu_per_1k);
  line(buf);
  std::snprintf(buf, sizeof buf,
                "monitor per report: %.0f bytes of storage pages written, %.1f read/pread/write/pwrite calls",
                f.disk_bytes_per_report, f.syscalls_per_report);
  line(buf);
  std::snprintf(buf, sizeof buf, "threads ready to run but waiting for a core: monitor %.1f s, load generator %.1f s",
                f.monitor_wait_s, f.load_wait_s);
  line(buf);
  std::snprintf(buf, sizeof buf, "gated verdict p50/p99/max %.2f/%.2f/%.2f ms over %zu verdicts (%zu timeouts)",
                f.gated_p50, f.gated_p99, f.gated_max, f.verdicts, f.gate_timeouts);
  line(buf);
  std::snprintf(buf, sizeof buf,
                "ack p50/p99 %.1f/%.1f ms; store lag %.0f at the end (max %.0f); rejections %llu, failed streams %llu",
                f.ack_ms_p50, f.ack_ms_p99, f.lag_end, f.lag_max, static_cast<unsigned long long>(c.rejections.load()),
                static_cast<unsigned long long>(c.failed.load()));
  line(buf);
  for (size_t i = 0; i < f.monitor_threads.size() && i < 6; ++i) {
    const auto& g = f.monitor_threads[i];
    std::snprintf(buf, sizeof buf,
                  "  monitor thread %-16s x%-3d %6.1f s CPU (busiest %.1f s), %.1f s waiting for a core",
                  g.name.c_str(), g.threads, g.seconds, g.max_thread, g.wait_seconds);
    line(buf);
  }
  if (std::string problem = c.FirstProblem(); !problem.empty()) line("first problem: " + problem);
}

// The jobs spread over `--threads` load threads, their phases over one step period.
std::vector<std::unique_ptr<bench::Driver>> StartDrivers(const Args& a, Load& load, bench::LatencyHistogram& lateness) {
  std::vector<std::vector<bench::Job*>> shares(a.threads);
  const auto start = SteadyClock::now();
  const auto period = std::chrono::duration<double>(1 / a.steps_per_s);
  for (int j = 0; j < a.runs; ++j) {
    load.jobs[j].next_due = start + std::chrono::duration_cast<SteadyClock::duration>(period * j / a.runs);
    shares[j % a.threads].push_back(&load.jobs[j]);
  }
  std::vector<std::unique_ptr<bench::Driver>> drivers;
  for (int t = 0; t < a.threads; ++t) {
    drivers.push_back(std::make_unique<bench::Driver>(shares[t], a.steps_per_s, a.layers, 100 + t, lateness,
                                                      "fanin-load-" + std::to_string(t)));
  }
  return drivers;
}

struct Window {
  Snapshot start, end;
  double lag_max = -1;
};

// One window of --duration-s, /metrics read every --scrape-s for the store's lag.
Window Measure(const Args& a, bench::MonitorProcess& monitor, Load& load, bench::LatencyHistogram& lateness) {
  Window w;
  w.start = Take(monitor, load, lateness);
  std::vector<double> lags = {w.start.store_lag};
  auto span = [](double seconds) {
    return std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(seconds));
  };
  const auto end = w.start.at + span(a.duration_s);
  for (auto next = w.start.at + span(a.scrape_s); next < end; next += span(a.scrape_s)) {
    std::this_thread::sleep_until(next);
    lags.push_back(StoreLag(Scrape(monitor.metrics_port()).text));
  }
  std::this_thread::sleep_until(end);
  w.end = Take(monitor, load, lateness);
  lags.push_back(w.end.store_lag);
  w.lag_max = Quantile(lags, 1);
  return w;
}

// After the load: every report acknowledged, every stream closed, the monitor stopped.
struct Ending {
  double drain_s = -1;
  bool closed = false;
  double rejected = 0, anomalies = 0;       // the monitor's own counts (/metrics)
  std::vector<std::string> anomaly_series;  // each series of gradwatch_anomalies_total above 0
  int monitor_exit = -1;
  double load_after = 0;
};

// `acked_per_s` sizes the wait for the backlog of an overloaded run: 60 s, plus twice what
// the backlog takes at the rate measured.
Ending Finish(Load& load, bench::MonitorProcess& monitor, double acked_per_s) {
  Ending e;
  const double backlog = static_cast<double>(load.counters.reports.load() - load.acked());
  const auto backlog_s = std::chrono::duration<double>(2 * backlog / std::max(acked_per_s, 100.0));
  e.drain_s = Drain(load, 60s + std::chrono::duration_cast<SteadyClock::duration>(backlog_s));
  e.closed = CloseAll(load, 30s);
  const std::string metrics = Scrape(monitor.metrics_port()).text;
  e.rejected = bench::SumSamples(metrics, "gradwatch_messages_rejected_total").value_or(0);
  e.anomalies = bench::SumSamples(metrics, "gradwatch_anomalies_total").value_or(0);
  std::istringstream lines(metrics);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("gradwatch_anomalies_total{", 0) == 0 && line.substr(line.rfind(' ') + 1) != "0") {
      e.anomaly_series.push_back(line);
    }
  }
  e.load_after = LoadAverage();
  e.monitor_exit = monitor.Stop(30s);
  return e;
}

void PrintJson(const Args& a, const Figures& f, Load& load, const Ending& e, double load_before) {
  const bench::StreamCounters& c = load.counters;
  auto u = [](uint64_t n) { return static_cast<unsigned long long>(n); };
  std::printf(
      "{\"bench\":\"fanin\",\"sustained\":%s,\"runs\":%d,\"ranks\":%d,\"streams\":%zu,\"layers\":%d,\"connections\":%"
      "zu,"
      "\"steps_per_s_per_rank\":%g,\"target_reports_per_s\":%.0f,\"sent_reports_per_s\":%.0f,"
      "\"received_reports_per_s\":%.0f,\"acked_reports_per_s\":%.0f,\"rate_ratio\":%.3f,"
      "\"reports_sent\":%llu,\"reports_acked\":%llu,\"acks_per_report\":%.3f,"
      "\"ack_ms_p50\":%.2f,\"ack_ms_p99\":%.2f,\"send_late_ms_p99\":%.2f,\"send_late_ms_max\":%.2f,"
      "\"gated_steps_per_s\":%g,\"verdicts\":%zu,\"gate_timeouts\":%zu,"
      "\"verdict_ms_p50\":%.3f,\"verdict_ms_p99\":%.3f,\"verdict_ms_max\":%.3f,"
      "\"verdict_arrival_ms_p50\":%.3f,\"verdict_arrival_ms_p99\":%.3f,"
      "\"monitor_cpu_s\":%.2f,\"monitor_user_s\":%.2f,\"monitor_sys_s\":%.2f,\"monitor_cores\":%.2f,"
      "\"monitor_cpu_s_per_1000_reports\":%.4f,\"load_cpu_s_per_1000_reports\":%.4f,"
      "\"monitor_runq_wait_s\":%.2f,\"load_runq_wait_s\":%.2f,"
      "\"monitor_disk_bytes_per_report\":%.0f,\"monitor_rw_syscalls_per_report\":%.2f,"
      "\"store_lag_end\":%.0f,\"store_lag_max\":%.0f,\"metrics_bytes\":%zu,\"scrape_ms\":%.1f,"
      "\"rejections\":%llu,\"rejections_monitor\":%.0f,\"failed_streams\":%llu,\"commands\":%llu,"
      "\"anomalies\":%.0f,\"max_outbox\":%zu,\"connect_s\":%.2f,\"drain_s\":%.2f,\"window_s\":%.1f,"
      "\"monitor_exit\":%d,\"monitor_threads\":%s,\"load_threads\":%s,\"loadavg_1m\":[%.2f,%.2f]}\n",
      f.Sustained() ? "true" : "false", a.runs, a.ranks, load.streams, a.layers, load.stubs.size(), a.steps_per_s,
      f.target_per_s, f.sent_per_s, f.received_per_s, f.acked_per_s, f.sent_per_s / f.target_per_s, u(c.reports.load()),
      u(load.acked()), f.acks_per_report, f.ack_ms_p50, f.ack_ms_p99, f.late_ms_p99, f.late_ms_max, a.gated_steps_per_s,
      f.verdicts, f.gate_timeouts, f.gated_p50, f.gated_p99, f.gated_max, f.arrival_p50, f.arrival_p99, f.monitor_cpu_s,
      f.monitor_user_s, f.monitor_sys_s, f.monitor_cpu_s / f.window_s, f.monitor_cpu_per_1k, f.load_cpu_per_1k,
      f.monitor_wait_s, f.load_wait_s, f.disk_bytes_per_report, f.syscalls_per_report, f.lag_end, f.lag_max,
      f.metrics_bytes, f.scrape_ms, u(c.rejections.load()), e.rejected, u(c.failed.load()), u(c.commands.load()),
      e.anomalies, c.max_outbox.load(), f.connect_s, e.drain_s, f.window_s, e.monitor_exit,
      Threads(f.monitor_threads, 6).c_str(), Threads(f.load_threads, 4).c_str(), load_before, e.load_after);
}

}  // namespace

int main(int argc, char** argv) {
  Args a = Parse(argc, argv);
  try {
    const size_t streams = static_cast<size_t>(a.runs + 1) * a.ranks;
    RaiseFileLimit(2 * streams + 256);
    const double load_before = LoadAverage();
    TempDir dir("gradwatch-fanin");
    bench::MonitorProcess monitor(
        a.gradwatchd, dir.Sub("monitor"),
        {"--max-streams", std::to_string(streams + 64), "--max-runs", std::to_string(a.runs + 64)}, 30s);
    std::fprintf(stderr, "fanin_bench: gradwatchd pid %d on port %d; opening %zu streams\n", monitor.pid(),
                 monitor.grpc_port(), streams);
    Load load;
    const double connect_s = Connect(a, "127.0.0.1:" + std::to_string(monitor.grpc_port()), load);
    bench::LatencyHistogram lateness;
    auto drivers = StartDrivers(a, load, lateness);
    GatedLoop gated(load.gated(), a.gated_steps_per_s, a.layers);
    std::fprintf(stderr, "fanin_bench: connected in %.1f s; warming up for %.0f s, then measuring %.0f s\n", connect_s,
                 a.warmup_s, a.duration_s);
    std::this_thread::sleep_for(std::chrono::duration<double>(a.warmup_s));
    Window w = Measure(a, monitor, load, lateness);
    for (auto& d : drivers) d->Stop();
    gated.Stop();

    Figures f = Compute(a, w.start, w.end);
    f.connect_s = connect_s, f.lag_max = w.lag_max;
    GatedFigures(gated.samples(), w.start, w.end, f);
    Ending e = Finish(load, monitor, f.acked_per_s);
    PrintSummary(a, f, streams, load.counters);
    for (const auto& series : e.anomaly_series) std::fprintf(stderr, "fanin_bench: anomaly: %s\n", series.c_str());
    PrintJson(a, f, load, e, load_before);
    const bench::StreamCounters& c = load.counters;
    return c.rejections == 0 && e.rejected == 0 && c.failed == 0 && e.drain_s >= 0 && e.closed ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fanin_bench: %s\n", e.what());
    return 1;
  }
}
