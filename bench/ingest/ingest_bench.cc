// bench/ingest: what the monitor's ingest path sustains, measured in one process.
//
// 1. Memory: VmRSS of this process after `--rss-warmup` reports through a fresh monitor,
//    and again after `--rss-reports` (or as many as fit `--rss-budget-s`). Reports go in
//    flushed chunks of `--rss-chunk`, so in-flight buffers keep one small size
//    throughout. Runs first, so that no earlier burst inflates the baseline.
// 2. Throughput: `--runs` reporters (observe mode, 64 layers) each stream a burst of step
//    reports through the full monitor (gradwatch::monitor::Server: hub, detectors,
//    metrics, SQLite store; acks on commit) and, in alternating rounds (ABBA order),
//    through the same gRPC server setup with a do-nothing handler that acks at once.
//    Throughput = reports / seconds until every report is acknowledged;
//    `throughput_ratio` = median full / median null.
// 3. Latency: one gated run times Report() -> AwaitVerdict() returning, one step every
//    `--gate-period-us`: first with no other load (`_idle`), then while `--load-runs`
//    runs stream at `--load-fraction` of the measured full throughput.
// Prints one JSON line on stdout, progress on stderr. Exits 1 if a flush timed out or a
// report was dropped; a missed target is a figure, not a failure.
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../temp_dir.h"
#include "gradwatch/monitor/server.h"
#include "load.h"
#include "null_telemetry.h"
#include "scrape.h"

namespace {

using gradwatch::bench::TempDir;

using namespace gradwatch;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

constexpr int kLayers = 64;

struct Args {
  int runs = 16;
  uint64_t reports = 200'000;  // per throughput round, all runs together
  int rounds = 5;              // full rounds; as many null rounds, interleaved
  int samples = 2000;          // gated latency samples, per condition
  int gate_period_us = 2000;
  int load_runs = 3;
  double load_fraction = 0.4;  // of the measured full throughput
  double load_rate = 0;        // reports/s of background load; 0 = load_fraction
  uint64_t rss_warmup = 100'000;
  uint64_t rss_reports = 1'000'000;
  uint64_t rss_chunk = 2'000;  // reports in flight at most (all runs), flushed before more
  double rss_budget_s = 150;   // the memory phase stops reporting past this
  std::string only;            // "", or one phase: memory, full, null, latency (profiling)
  bool Runs(const std::string& phase) const { return only.empty() || only == phase; }
};

// Exits 2 after `why` on stderr; with --help (status 0) the same on stdout.
[[noreturn]] void Usage(const std::string& why, int status = 2) {
  std::fprintf(status == 0 ? stdout : stderr,
               "ingest_bench: %s\nflags: --runs N --reports N --rounds N --samples N "
               "--gate-period-us N --load-runs N --load-fraction X --load-rate X "
               "--rss-warmup N --rss-reports N --rss-chunk N --rss-budget-s X "
               "--only memory|full|null|latency --quick\n",
               why.c_str());
  std::exit(status);
}

void SetQuick(Args& a) {
  a.reports = 16'000, a.rounds = 1, a.samples = 200;
  a.rss_warmup = 20'000, a.rss_reports = 60'000, a.rss_chunk = 1'000, a.rss_budget_s = 30;
}

void SetFlag(Args& a, const std::string& flag, const char* value) {
  double v = std::atof(value);
  if (flag == "--only") a.only = value;
  else if (flag == "--runs") a.runs = static_cast<int>(v);
  else if (flag == "--reports") a.reports = static_cast<uint64_t>(v);
  else if (flag == "--rounds") a.rounds = static_cast<int>(v);
  else if (flag == "--samples") a.samples = static_cast<int>(v);
  else if (flag == "--gate-period-us") a.gate_period_us = static_cast<int>(v);
  else if (flag == "--load-runs") a.load_runs = static_cast<int>(v);
  else if (flag == "--load-fraction") a.load_fraction = v;
  else if (flag == "--load-rate") a.load_rate = v;
  else if (flag == "--rss-warmup") a.rss_warmup = static_cast<uint64_t>(v);
  else if (flag == "--rss-reports") a.rss_reports = static_cast<uint64_t>(v);
  else if (flag == "--rss-chunk") a.rss_chunk = static_cast<uint64_t>(v);
  else if (flag == "--rss-budget-s") a.rss_budget_s = v;
  else Usage("unknown flag " + flag);
}

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      Usage("what the monitor's ingest path sustains: throughput against a do-nothing server, gated latency idle and under load, memory (bench/ingest/README.md)", 0);
    } else if (flag == "--quick") {
      SetQuick(a);
    } else if (i + 1 < argc) {
      SetFlag(a, flag, argv[++i]);
    } else {
      Usage(flag + " needs a value");
    }
  }
  uint64_t runs = a.runs > 0 ? a.runs : 1;
  if (a.runs < 1 || a.rounds < 1 || a.samples < 1 || a.load_runs < 1 || a.reports < runs ||
      a.rss_chunk < runs || a.rss_warmup < a.rss_chunk * 5 || a.rss_reports < a.rss_warmup) {
    Usage("counts must be >= 1, --reports and --rss-chunk >= --runs, --rss-warmup >= 5 x "
          "--rss-chunk, --rss-reports >= --rss-warmup");
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


// The host's 1-minute load average: other work on the machine shows in every figure.
double LoadAverage() {
  std::ifstream in("/proc/loadavg");
  double load = 0;
  in >> load;
  return load;
}

// A full monitor with its store in a fresh folder. Metrics are computed on every report
// either way; the HTTP endpoint is on only when asked (stopping it takes ~2 s).
std::unique_ptr<monitor::Server> StartMonitor(const std::string& data_dir, const monitor::Clock& clock,
                                              bool metrics_endpoint = false) {
  monitor::ServerConfig config;
  config.listen = "127.0.0.1:0";
  config.metrics_listen = metrics_endpoint ? "127.0.0.1:0" : "";
  config.data_dir = data_dir;
  return std::make_unique<monitor::Server>(config, clock);
}

std::string Address(int port) { return "127.0.0.1:" + std::to_string(port); }

struct Totals {
  uint64_t reports = 0;
  uint64_t dropped = 0;
  void Add(const bench::Fleet& f) { reports += f.reported(), dropped += f.dropped(); }
};

// ---- memory ----

struct Memory {
  double warm_mb = 0, half_mb = 0, after_mb = 0, peak_mb = 0;
  double heap_warm_mb = 0, heap_after_mb = 0;  // bytes malloc has handed out and not freed
  double seconds = 0;
  uint64_t reports = 0;
};

// Bytes in use through malloc (live allocations, not what the allocator keeps), in MB.
double HeapInUseMb() {
  struct mallinfo2 info = ::mallinfo2();
  return static_cast<double>(info.uordblks + info.hblkhd) / (1024.0 * 1024.0);
}

// The median of the last `n` values of `v`.
double TailMedian(const std::vector<double>& v, size_t n) {
  n = std::min(n, v.size());
  return Quantile(std::vector<double>(v.end() - n, v.end()), 0.5);
}

// Reports go in flushed chunks of `--rss-chunk`, as a live fleet keeps only a few reports
// per run in flight; bigger bursts leave the allocator holding more freed memory. Each
// figure is the median of the samples taken after the last 5 chunks.
Memory MeasureMemory(const Args& a, const TempDir& dir, const monitor::Clock& clock, Totals& totals) {
  constexpr size_t kWindow = 5;
  auto monitor = StartMonitor(dir.Sub("memory"), clock);
  uint64_t chunk = a.rss_chunk / a.runs;  // per run
  bench::Fleet fleet({Address(monitor->grpc_port()), "memory", a.runs, kLayers, v1::MODE_OBSERVE,
                      chunk + 1024});
  Require(fleet.WaitConnected(10s), "memory: reporters did not connect");
  Memory m;
  std::vector<double> rss, heap;
  auto start = SteadyClock::now();
  auto report_until = [&](uint64_t target, double budget_s) {
    while (m.reports < target && Seconds(start) < budget_s) {
      fleet.ReportBurst(chunk);
      Require(fleet.Flush(120s), "memory: reports not acknowledged within 120 s");
      m.reports += chunk * a.runs;
      rss.push_back(VmRssMb());
      heap.push_back(HeapInUseMb());
    }
  };
  report_until(a.rss_warmup, 1e9);
  m.warm_mb = TailMedian(rss, kWindow), m.heap_warm_mb = TailMedian(heap, kWindow);
  uint64_t warm_reports = m.reports;
  report_until(a.rss_reports / 2, a.rss_budget_s / 2);
  m.half_mb = TailMedian(rss, kWindow);
  report_until(a.rss_reports, a.rss_budget_s);
  m.after_mb = TailMedian(rss, kWindow), m.heap_after_mb = TailMedian(heap, kWindow);
  m.peak_mb = Quantile(rss, 1);
  m.seconds = Seconds(start);
  totals.Add(fleet);
  std::fprintf(stderr, "ingest_bench: memory %.1f MB after %llu reports, %.1f MB after %llu (%.1f s)\n",
               m.warm_mb, static_cast<unsigned long long>(warm_reports), m.after_mb,
               static_cast<unsigned long long>(m.reports), m.seconds);
  return m;
}

// ---- throughput ----

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

double FullRound(const Args& a, const std::string& data_dir, uint64_t n, const monitor::Clock& clock,
                 Totals& totals) {
  auto monitor = StartMonitor(data_dir, clock);
  double rate = Round(Address(monitor->grpc_port()), "full", a.runs, n, totals);
  monitor.reset();
  std::filesystem::remove_all(data_dir);  // ~80 MB per 200,000 reports
  return rate;
}

double NullRound(const Args& a, uint64_t n, Totals& totals) {
  bench::NullServer server("127.0.0.1:0");
  double rate = Round(Address(server.port()), "null", a.runs, n, totals);
  const bench::NullCounters& c = server.counters();
  std::fprintf(stderr, "ingest_bench: null handler wrote %.2f acks per message read\n",
               static_cast<double>(c.acks) / std::max<uint64_t>(c.messages, 1));
  return rate;
}

struct Throughput {
  double full = 0, null = 0, ratio_min = 0, ratio_max = 0;
};

// Round 0 warms both up and is not counted; then ABBA order against drift.
Throughput MeasureThroughput(const Args& a, const TempDir& dir, const monitor::Clock& clock,
                             Totals& totals) {
  std::vector<double> full, null, ratios;
  for (int r = 0; r <= a.rounds; ++r) {
    uint64_t n = r == 0 ? a.reports / 8 : a.reports;
    double f = 0, z = 0;
    for (int k = 0; k < 2; ++k) {
      bool full_now = (k == 0) == (r % 2 == 0);
      if (full_now && a.Runs("full")) {
        f = FullRound(a, dir.Sub("full-" + std::to_string(r)), n, clock, totals);
      } else if (!full_now && a.Runs("null")) {
        z = NullRound(a, n, totals);
      }
    }
    std::fprintf(stderr, "ingest_bench: round %d full %.0f null %.0f reports/s\n", r, f, z);
    if (r == 0) continue;
    if (f > 0) full.push_back(f);
    if (z > 0) null.push_back(z);
    if (f > 0 && z > 0) ratios.push_back(f / z);
  }
  return {Quantile(full, 0.5), Quantile(null, 0.5), Quantile(ratios, 0), Quantile(ratios, 1)};
}

// ---- latency ----

// Reports on `fleet` at `rate` per second from a thread of its own, until stopped.
class Pacer {
 public:
  Pacer(bench::Fleet& fleet, double rate) : fleet_(fleet), rate_(rate) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~Pacer() { Stop(); }
  Pacer(const Pacer&) = delete;
  Pacer& operator=(const Pacer&) = delete;
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  double achieved() const { return sent_ / seconds_; }  // after Stop()

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

struct Gate {
  reporter::Reporter& reporter;
  uint64_t step = 0;
  uint64_t timeouts = 0;
};

// Milliseconds from Report() to AwaitVerdict() returning, one gated step per period;
// the first `warmup` are not kept.
std::vector<double> GatedSamples(Gate& gate, const Args& a, int warmup) {
  bench::StepSource source(kLayers);
  std::vector<double> ms;
  auto next = SteadyClock::now();
  for (int i = 0; i < warmup + a.samples; ++i) {
    next += std::chrono::microseconds(a.gate_period_us);
    std::this_thread::sleep_until(next);
    uint64_t step = ++gate.step;
    auto start = SteadyClock::now();
    gate.reporter.Report(source.Next(step, /*awaiting_verdict=*/true));
    bool got = gate.reporter.AwaitVerdict(step, 1000ms).has_value();
    double elapsed_ms = Seconds(start) * 1e3;
    if (i < warmup) continue;
    if (!got) ++gate.timeouts;
    ms.push_back(elapsed_ms);
  }
  return ms;
}

struct Latency {
  double idle_p50 = 0, idle_p99 = 0, p50 = 0, p99 = 0, max = 0, load_rate = 0;
  double server_idle_p99 = 0, server_p99 = 0;  // ms, bucket bounds; -1 = none or past 100 ms
  uint64_t timeouts = 0;
};

// Time the monitor spent handling each message (gradwatch_ingest_latency_seconds).
class IngestHistogram {
 public:
  explicit IngestHistogram(int port) : port_(port) { last_ = Scrape(); }
  // The 99th percentile in ms of the messages handled since the last call.
  double NextP99Ms() {
    bench::Histogram now = Scrape();
    bench::Histogram window = now.Since(last_);
    last_ = now;
    double p99 = window.Quantile(0.99);
    return window.count() > 0 && std::isfinite(p99) ? p99 * 1e3 : -1;
  }

 private:
  bench::Histogram Scrape() const {
    return bench::ScrapeHistogram(port_, "gradwatch_ingest_latency_seconds").value_or(bench::Histogram{});
  }
  int port_;
  bench::Histogram last_;
};

Latency MeasureLatency(const Args& a, double load_rate, const TempDir& dir,
                       const monitor::Clock& clock, Totals& totals) {
  auto monitor = StartMonitor(dir.Sub("latency"), clock, /*metrics_endpoint=*/true);
  std::string address = Address(monitor->grpc_port());
  bench::Fleet load({address, "load", a.load_runs, kLayers, v1::MODE_OBSERVE, 10'000'000, 1ms});
  bench::Fleet gated_fleet({address, "gated", 1, kLayers, v1::MODE_GATED, 100'000});
  Require(load.WaitConnected(10s) && gated_fleet.WaitConnected(10s), "latency: reporters did not connect");
  Gate gate{gated_fleet.reporter(0)};
  IngestHistogram server(monitor->metrics_port());
  Latency out;
  std::vector<double> idle = GatedSamples(gate, a, std::min(200, a.samples / 10));
  out.server_idle_p99 = server.NextP99Ms();
  Pacer pacer(load, load_rate);
  std::vector<double> loaded = GatedSamples(gate, a, std::min(200, a.samples / 10));
  pacer.Stop();
  out.server_p99 = server.NextP99Ms();
  out.load_rate = pacer.achieved();
  Require(load.Flush(120s) && gated_fleet.Flush(10s), "latency: reports not acknowledged within 120 s");
  totals.Add(load);
  totals.Add(gated_fleet);
  out.idle_p50 = Quantile(idle, 0.50), out.idle_p99 = Quantile(idle, 0.99);
  out.p50 = Quantile(loaded, 0.50), out.p99 = Quantile(loaded, 0.99), out.max = Quantile(loaded, 1);
  out.timeouts = gate.timeouts;
  std::fprintf(stderr, "ingest_bench: gated p50/p99 %.3f/%.3f ms idle, %.3f/%.3f ms at %.0f reports/s\n",
               out.idle_p50, out.idle_p99, out.p50, out.p99, out.load_rate);
  return out;
}

void PrintJson(const Args& a, const Memory& m, const Throughput& t, const Latency& l,
               const Totals& totals, double seconds, double load_start) {
  std::printf(
      "{\"bench\":\"ingest\",\"streams\":%d,\"layers\":%d,\"full_reports_per_s\":%.0f,"
      "\"null_reports_per_s\":%.0f,\"throughput_ratio\":%.3f,\"throughput_ratio_min\":%.3f,"
      "\"throughput_ratio_max\":%.3f,\"rounds\":%d,\"reports_per_round\":%llu,"
      "\"latency_ms_p50\":%.3f,\"latency_ms_p99\":%.3f,\"latency_ms_max\":%.3f,"
      "\"latency_ms_p50_idle\":%.3f,\"latency_ms_p99_idle\":%.3f,\"latency_samples\":%d,"
      "\"gate_timeouts\":%llu,\"load_reports_per_s\":%.0f,"
      "\"server_ingest_ms_p99_idle\":%g,\"server_ingest_ms_p99\":%g,"
      "\"rss_mb_warm\":%.1f,\"rss_mb_half\":%.1f,\"rss_mb_after\":%.1f,\"rss_mb_peak\":%.1f,"
      "\"heap_mb_warm\":%.1f,\"heap_mb_after\":%.1f,\"reports_for_rss_warm\":%llu,"
      "\"reports_for_rss\":%llu,\"rss_ratio\":%.3f,"
      "\"reports\":%llu,\"dropped\":%llu,\"seconds\":%.1f,\"loadavg_1m\":[%.2f,%.2f]}\n",
      a.runs, kLayers, t.full, t.null, t.null > 0 ? t.full / t.null : 0, t.ratio_min, t.ratio_max,
      a.rounds, static_cast<unsigned long long>(a.reports), l.p50, l.p99, l.max, l.idle_p50,
      l.idle_p99, a.samples, static_cast<unsigned long long>(l.timeouts), l.load_rate,
      l.server_idle_p99, l.server_p99, m.warm_mb,
      m.half_mb, m.after_mb, m.peak_mb, m.heap_warm_mb, m.heap_after_mb,
      static_cast<unsigned long long>(a.rss_warmup),
      static_cast<unsigned long long>(m.reports), m.warm_mb > 0 ? m.after_mb / m.warm_mb : 0,
      static_cast<unsigned long long>(totals.reports),
      static_cast<unsigned long long>(totals.dropped), seconds, load_start, LoadAverage());
}

}  // namespace

int main(int argc, char** argv) {
  Args a = Parse(argc, argv);
  try {
    TempDir dir("gradwatch-ingest");
    monitor::SystemClock clock;
    Totals totals;
    auto start = SteadyClock::now();
    double load_start = LoadAverage();
    Memory m;
    if (a.Runs("memory")) m = MeasureMemory(a, dir, clock, totals);
    Throughput t;
    if (a.Runs("full") || a.Runs("null")) t = MeasureThroughput(a, dir, clock, totals);
    Latency l;
    if (a.Runs("latency")) {
      double rate = a.load_rate > 0 ? a.load_rate : a.load_fraction * (t.full > 0 ? t.full : 50'000);
      l = MeasureLatency(a, rate, dir, clock, totals);
    }
    PrintJson(a, m, t, l, totals, Seconds(start), load_start);
    return totals.dropped == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ingest_bench: %s\n", e.what());
    return 1;
  }
}
