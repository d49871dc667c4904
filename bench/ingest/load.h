// The load generator: simulated training runs, each a gradwatch::reporter::Reporter on
// its own stream, reporting realistic, healthy StepReports (per-layer norms, loss, grad
// norm, Jaccard, accuracy, clipping, step time) with strictly increasing steps.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gradwatch/reporter/reporter.h"
#include "gradwatch/v1/telemetry.pb.h"

namespace gradwatch::bench {

// A hello for a U-Net-like run with `layers` parameter tensors and the Jaccard loss.
v1::Hello MakeHello(const std::string& run_id, int layers, v1::Mode mode);

// Healthy step reports with some variety, built once: Next() only stamps step and time.
// `loss` is the level the losses vary around (a few percent of noise).
class StepSource {
 public:
  explicit StepSource(int layers, double loss = 0.30);
  const v1::StepReport& Next(uint64_t step, bool awaiting_verdict = false);

 private:
  std::vector<v1::StepReport> pool_;
};

struct FleetOptions {
  std::string address;         // host:port of the server under test
  std::string run_prefix;      // run ids are <prefix>-<i>
  int runs = 16;
  int layers = 64;
  v1::Mode mode = v1::MODE_OBSERVE;
  size_t max_buffered = 100'000;  // per run; size it so that nothing is dropped
  std::chrono::milliseconds send_interval{5};
};

// `runs` reporters. Not thread-safe: one thread reports at a time.
class Fleet {
 public:
  explicit Fleet(const FleetOptions& options);
  ~Fleet();  // closes every reporter (flush, half-close)

  // True once every run's hello is acknowledged.
  bool WaitConnected(std::chrono::milliseconds deadline);
  // Reports the next `per_run` steps of every run, round-robin, as fast as Report() goes.
  void ReportBurst(uint64_t per_run);
  // Reports the next step of run `i % runs`.
  void ReportOne(size_t i);
  // True when every report of every run was acknowledged within `deadline`.
  bool Flush(std::chrono::milliseconds deadline);

  int runs() const { return static_cast<int>(reporters_.size()); }
  reporter::Reporter& reporter(size_t i) { return *reporters_.at(i); }
  uint64_t reported() const;
  uint64_t dropped() const;

 private:
  StepSource source_;
  std::vector<std::unique_ptr<reporter::Reporter>> reporters_;
  std::vector<uint64_t> last_step_;
};

}  // namespace gradwatch::bench
