// bench/ingest: what the monitor's ingest path sustains, measured in one process.
//
// 1. Throughput: `--runs` reporters (observe mode, 64 layers) stream bursts of step
//    reports through the full monitor (gradwatch::monitor::Server: hub, detectors,
//    metrics, SQLite store; acks on commit) and through the same gRPC server setup with a
//    do-nothing handler that acks at once. Rounds alternate; throughput is reports /
//    seconds until every report is acknowledged. `throughput_ratio` = full / null medians.
// 2. Latency: one gated run times Report() -> AwaitVerdict() returning, one step every
//    `--gate-period-us`, while `--load-runs` runs stream at `--load-fraction` of the
//    measured full throughput. p50 and p99 in milliseconds.
// 3. Memory: VmRSS of this process after `--rss-warmup` reports through a fresh monitor,
//    and again after `--rss-reports` (or as many as fit `--rss-budget-s`), reported in
//    flushed chunks so that in-flight buffers stay the same size throughout.
// Prints one JSON line on stdout (progress on stderr). Exits 1 if a flush timed out or
// a report was dropped; a missed target is a figure, not a failure.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "gradwatch/monitor/server.h"
#include "load.h"
#include "null_telemetry.h"

namespace {

using namespace gradwatch;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

constexpr int kLayers = 64;

struct Args {
  int runs = 16;
  uint64_t reports = 160'000;  // per throughput round, all runs together
  int rounds = 3;              // full rounds; as many null rounds, interleaved
  int samples = 2000;          // gated latency samples
  int gate_period_us = 2000;
  int load_runs = 3;
  double load_fraction = 0.4;  // of the measured full throughput
  uint64_t rss_warmup = 100'000;
  uint64_t rss_reports = 1'000'000;
  double rss_budget_s = 150;   // stop the memory phase early past this
  double load_rate = 0;        // reports/s of the latency phase's load; 0 = load_fraction
  std::string only;            // "", or one of full, null, latency, memory (for profiling)
  bool Runs(const char* phase) const { return only.empty() || only == phase; }
};

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr,
               "ingest_bench: %s\nflags: --runs N --reports N --rounds N --samples N "
               "--gate-period-us N --load-runs N --load-fraction X --rss-warmup N "
               "--rss-reports N --rss-budget-s X --load-rate X --only full|null|latency|memory --quick\n",
               why.c_str());
  std::exit(2);
}

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--quick") {
      a.reports = 16'000, a.rounds = 1, a.samples = 200;
      a.rss_warmup = 20'000, a.rss_reports = 60'000, a.rss_budget_s = 30;
      continue;
    }
    if (i + 1 >= argc) Usage(flag + " needs a value");
    if (flag == "--only") {
      a.only = argv[++i];
      continue;
    }
    double v = std::atof(argv[++i]);
    if (flag == "--runs") a.runs = static_cast<int>(v);
    else if (flag == "--reports") a.reports = static_cast<uint64_t>(v);
    else if (flag == "--rounds") a.rounds = static_cast<int>(v);
    else if (flag == "--samples") a.samples = static_cast<int>(v);
    else if (flag == "--gate-period-us") a.gate_period_us = static_cast<int>(v);
    else if (flag == "--load-runs") a.load_runs = static_cast<int>(v);
    else if (flag == "--load-fraction") a.load_fraction = v;
    else if (flag == "--rss-warmup") a.rss_warmup = static_cast<uint64_t>(v);
    else if (flag == "--rss-reports") a.rss_reports = static_cast<uint64_t>(v);
    else if (flag == "--rss-budget-s") a.rss_budget_s = v;
    else if (flag == "--load-rate") a.load_rate = v;
    else Usage("unknown flag " + flag);
  }
  if (a.runs < 1 || a.rounds < 1 || a.samples < 1 || a.load_runs < 1 || a.reports < uint64_t(a.runs) ||
      a.rss_warmup < uint64_t(a.runs) || a.rss_reports < a.rss_warmup) {
    Usage("every count must be >= 1, --reports and --rss-warmup >= --runs, "
          "--rss-reports >= --rss-warmup");
  }
  return a;
}

void Require(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(what);
}

double Seconds(SteadyClock::time_point since) {
  return std::chrono::duration<double>(SteadyClock::now() - since).count();
}

// The value at quantile q (0..1) of `v`, nearest rank.
double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(q * v.size()));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

double VmRssMb() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atof(line.c_str() + 6) / 1024.0;  // kB
  }
  return 0;
}

// A private data directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "gradwatch-ingest-XXXXXX").string();
    Require(::mkdtemp(pattern.data()) != nullptr, "cannot create a directory in " + pattern);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  std::string Sub(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// A full monitor with its store in a fresh folder.
std::unique_ptr<monitor::Server> StartMonitor(const std::string& data_dir, const monitor::Clock& clock) {
  monitor::ServerConfig config;
  config.listen = "127.0.0.1:0";
  config.metrics_listen = "";
  config.data_dir = data_dir;
  return std::make_unique<monitor::Server>(config, clock);
}

std::string Address(int port) { return "127.0.0.1:" + std::to_string(port); }

struct Totals {
  uint64_t reports = 0;
  uint64_t dropped = 0;
  void Add(const bench::Fleet& f) { reports += f.reported(), dropped += f.dropped(); }
};

// One burst of `total` reports over `runs` fresh runs; reports per second until all acked.
double Round(const std::string& address, const std::string& prefix, int runs, uint64_t total,
             Totals& totals) {
  uint64_t per_run = total / runs;
  bench::Fleet fleet({address, prefix, runs, kLayers, v1::MODE_OBSERVE, per_run + 1024});
  Require(fleet.WaitConnected(10s), prefix + ": reporters did not connect");
  auto start = SteadyClock::now();
  fleet.ReportBurst(per_run);
  Require(fleet.Flush(300s), prefix + ": reports not acknowledged within 300 s");
  double rate = per_run * runs / Seconds(start);
  totals.Add(fleet);
  return rate;
}

struct Throughput {
  double full = 0, null = 0;
};

Throughput MeasureThroughput(const Args& a, const TempDir& dir, const monitor::Clock& clock,
                             Totals& totals) {
  std::vector<double> full, null;
  for (int r = -1; r < a.rounds; ++r) {  // round 0 warms both up and is not counted
    uint64_t n = r < 0 ? a.reports / 8 : a.reports;
    std::string tag = "r" + std::to_string(r + 1);
    if (a.Runs("full")) {
      auto monitor = StartMonitor(dir.Sub("full-" + tag), clock);
      double rate = Round(Address(monitor->grpc_port()), "full-" + tag, a.runs, n, totals);
      if (r >= 0) full.push_back(rate);
      std::fprintf(stderr, "ingest_bench: round %s full %.0f reports/s\n", tag.c_str(), rate);
    }
    if (a.Runs("null")) {
      bench::NullServer null_server("127.0.0.1:0");
      double rate = Round(Address(null_server.port()), "null-" + tag, a.runs, n, totals);
      if (r >= 0) null.push_back(rate);
      std::fprintf(stderr, "ingest_bench: round %s null %.0f reports/s\n", tag.c_str(), rate);
    }
  }
  return {Quantile(full, 0.5), Quantile(null, 0.5)};
}

// Reports on `fleet` at `rate` per second from a thread of its own until `stop`.
class Pacer {
 public:
  Pacer(bench::Fleet& fleet, double rate) : fleet_(fleet), rate_(rate) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~Pacer() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  double achieved() const { return sent_ / seconds_; }

 private:
  void Loop() {
    auto start = SteadyClock::now();
    for (auto tick = start; !stop_; tick += 1ms) {
      std::this_thread::sleep_until(tick);
      auto due = static_cast<uint64_t>(rate_ * Seconds(start));
      for (; sent_ < due; ++sent_) fleet_.ReportOne(sent_);
    }
    seconds_ = Seconds(start);
  }
  bench::Fleet& fleet_;
  double rate_;
  std::atomic<bool> stop_{false};
  uint64_t sent_ = 0;
  double seconds_ = 1;
  std::thread thread_;
};

struct Latency {
  double p50_ms = 0, p99_ms = 0, max_ms = 0, load_rate = 0;
  uint64_t timeouts = 0;
};

// Report() -> AwaitVerdict() of one gated run, one step per period, under background load.
std::vector<double> GatedSamples(reporter::Reporter& gated, const Args& a, int warmup,
                                 uint64_t& timeouts) {
  bench::StepSource source(kLayers);
  std::vector<double> ms;
  auto next = SteadyClock::now();
  for (int i = 0; i < warmup + a.samples; ++i) {
    next += std::chrono::microseconds(a.gate_period_us);
    std::this_thread::sleep_until(next);
    uint64_t step = i + 1;
    auto start = SteadyClock::now();
    gated.Report(source.Next(step, /*awaiting_verdict=*/true));
    bool got = gated.AwaitVerdict(step, 1000ms).has_value();
    double elapsed_ms = Seconds(start) * 1e3;
    if (i < warmup) continue;
    if (!got) ++timeouts;
    ms.push_back(elapsed_ms);
  }
  return ms;
}

Latency MeasureLatency(const Args& a, double load_rate, const TempDir& dir,
                       const monitor::Clock& clock, Totals& totals) {
  auto monitor = StartMonitor(dir.Sub("latency"), clock);
  std::string address = Address(monitor->grpc_port());
  bench::Fleet load({address, "load", a.load_runs, kLayers, v1::MODE_OBSERVE, 1'000'000, 1ms});
  reporter::ReporterOptions ro;
  ro.address = address;
  ro.log_warnings = false;
  reporter::Reporter gated(ro, bench::MakeHello("gated", kLayers, v1::MODE_GATED));
  Require(load.WaitConnected(10s), "latency: load reporters did not connect");
  for (auto until = SteadyClock::now() + 10s; !gated.stats().connected;) {
    Require(SteadyClock::now() < until, "latency: the gated reporter did not connect");
    std::this_thread::sleep_for(1ms);
  }
  Latency out;
  Pacer pacer(load, load_rate);
  std::vector<double> ms = GatedSamples(gated, a, std::min(200, a.samples / 10), out.timeouts);
  pacer.Stop();
  out.load_rate = pacer.achieved();
  Require(load.Flush(120s) && gated.Flush(10s), "latency: reports not acknowledged within 120 s");
  totals.Add(load);
  totals.reports += gated.stats().reported;
  totals.dropped += gated.stats().dropped;
  out.p50_ms = Quantile(ms, 0.50);
  out.p99_ms = Quantile(ms, 0.99);
  out.max_ms = Quantile(ms, 1.0);
  return out;
}

struct Memory {
  double warm_mb = 0, after_mb = 0, seconds = 0;
  uint64_t reports = 0;
};

// VmRSS after the warm-up and after all reports (or the budget), in flushed chunks of a
// tenth of the warm-up.
Memory MeasureMemory(const Args& a, const TempDir& dir, const monitor::Clock& clock, Totals& totals) {
  auto monitor = StartMonitor(dir.Sub("memory"), clock);
  uint64_t chunk = std::max<uint64_t>(a.rss_warmup / 10 / a.runs, 1);
  bench::Fleet fleet({Address(monitor->grpc_port()), "memory", a.runs, kLayers, v1::MODE_OBSERVE,
                      chunk + 1024});
  Require(fleet.WaitConnected(10s), "memory: reporters did not connect");
  Memory m;
  auto start = SteadyClock::now();
  auto report_until = [&](uint64_t target, double budget_s) {
    while (m.reports < target && Seconds(start) < budget_s) {
      fleet.ReportBurst(chunk);
      Require(fleet.Flush(120s), "memory: reports not acknowledged within 120 s");
      m.reports += chunk * a.runs;
    }
  };
  report_until(a.rss_warmup, 1e9);
  m.warm_mb = VmRssMb();
  report_until(a.rss_reports, a.rss_budget_s);
  m.after_mb = VmRssMb();
  m.seconds = Seconds(start);
  totals.Add(fleet);
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  Args a = Parse(argc, argv);
  try {
    TempDir dir;
    monitor::SystemClock clock;
    Totals totals;
    auto start = SteadyClock::now();
    Throughput t;
    if (a.Runs("full") || a.Runs("null")) t = MeasureThroughput(a, dir, clock, totals);
    Latency l;
    if (a.Runs("latency")) {
      double rate = a.load_rate > 0 ? a.load_rate : a.load_fraction * (t.full > 0 ? t.full : 50'000);
      l = MeasureLatency(a, rate, dir, clock, totals);
      std::fprintf(stderr, "ingest_bench: gated p50 %.3f ms p99 %.3f ms\n", l.p50_ms, l.p99_ms);
    }
    Memory m;
    if (a.Runs("memory")) m = MeasureMemory(a, dir, clock, totals);
    std::printf(
        "{\"bench\":\"ingest\",\"streams\":%d,\"layers\":%d,\"full_reports_per_s\":%.0f,"
        "\"null_reports_per_s\":%.0f,\"throughput_ratio\":%.3f,\"rounds\":%d,"
        "\"latency_ms_p50\":%.3f,\"latency_ms_p99\":%.3f,\"latency_ms_max\":%.3f,"
        "\"latency_samples\":%d,\"gate_timeouts\":%llu,\"load_reports_per_s\":%.0f,"
        "\"rss_mb_warm\":%.1f,\"rss_mb_after\":%.1f,\"reports_for_rss\":%llu,\"rss_ratio\":%.3f,"
        "\"rss_seconds\":%.1f,\"reports\":%llu,\"dropped\":%llu,\"seconds\":%.1f}\n",
        a.runs, kLayers, t.full, t.null, t.null > 0 ? t.full / t.null : 0, a.rounds, l.p50_ms,
        l.p99_ms, l.max_ms, a.samples, static_cast<unsigned long long>(l.timeouts), l.load_rate,
        m.warm_mb, m.after_mb, static_cast<unsigned long long>(m.reports),
        m.warm_mb > 0 ? m.after_mb / m.warm_mb : 0, m.seconds,
        static_cast<unsigned long long>(totals.reports),
        static_cast<unsigned long long>(totals.dropped), Seconds(start));
    return totals.dropped == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ingest_bench: %s\n", e.what());
    return 1;
  }
}
