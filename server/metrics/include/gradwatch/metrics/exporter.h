// Prometheus export of every run's live state and the monitor's own health.
//
// Conventions: prefix gradwatch_, base units, _total on counters, _ratio for 0..1
// values, run_id as the run label (never job, never a step or time label). Per-layer
// series are bounded: the first `max_layers - 1` layers of a run keep their own series
// and the rest fold into layer="(other)" as the L2 norm of their norms.
// Named user scalars are bounded the same way: the first `max_scalars` names a run reports
// keep a gradwatch_scalar{name} series; values of later names are counted in
// gradwatch_scalars_unexported_total and said once on stderr, not exported. The system metrics
// (step time by phase, RSS, CUDA memory) get their series on the first step that reports them.
// Metric handles are created once per run (a scalar's on its first report) and cached; the hot
// path only sets values.
//
// Thread-safety: all methods may be called concurrently.
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace prometheus {
class Registry;
}

namespace gradwatch::metrics {

struct StepValues {
  uint64_t step = 0;
  double unix_seconds = 0;
  double loss = 0, grad_norm = 0, grad_norm_zscore = 0, learning_rate = 0;
  double jaccard_soft = 0, jaccard_hard = 0, accuracy = 0;  // NaN = not reported
  bool clipping_enabled = false;
  double clipping_threshold = 0;
  double step_seconds = 0;
  const float* layer_norms = nullptr;
  size_t layer_count = 0;
  // Named user scalars; the views must outlive the call. Names past the cap are taken in
  // this order, so pass them sorted for a stable choice.
  std::vector<std::pair<std::string_view, double>> scalars;
  // The trainer's system metrics; NaN = not reported (no series until one is).
  double data_seconds = NAN, compute_seconds = NAN, report_seconds = NAN;
  double resident_bytes = NAN;
  double cuda_allocated_bytes = NAN, cuda_reserved_bytes = NAN, cuda_peak_allocated_bytes = NAN;
  double device_utilization = NAN;  // 0..1
};

// Data parallel: one rank's own values on its last step; NaN = not reported (kept).
struct RankValues {
  uint64_t step = 0;
  double loss = 0;
  double local_grad_norm = NAN;  // before the all-reduce
  double compute_seconds = NAN;
};

struct EvalValues {
  double loss = 0, jaccard_soft = 0, jaccard_hard = 0, accuracy = 0;  // NaN = not reported
};

struct ExporterOptions {
  size_t max_layers = 32;  // per run, including the folded "(other)" series
  size_t max_scalars = 32;  // gradwatch_scalar series per run; later names are not exported
  uint32_t max_ranks = 64;  // per-rank series per run: ranks 0..max_ranks-1; the others are not exported
  std::string version;  // gradwatch_build_info's label: the monitor's gradwatch::Version()
};

class Exporter {
 public:
  explicit Exporter(ExporterOptions options = {});
  ~Exporter();

  std::shared_ptr<prometheus::Registry> registry() const;

  // Declares a run (idempotent) with its layer names, creating its series.
  void AddRun(const std::string& run_id, const std::vector<std::string>& layer_names);
  // Removes every series of the run (after its retention time).
  void RemoveRun(const std::string& run_id);

  // Counts a newly stored step and sets the run's gauges. Repeated steps are not counted.
  void ObserveStep(const std::string& run_id, const StepValues& v);
  void ObserveEval(const std::string& run_id, const EvalValues& v);
  // Data parallel: a rank's own values (gradwatch_rank_*{run_id,rank}), and whether its
  // stream is open. Ranks at or past max_ranks have no series: the run-level series and
  // the events (which name the rank) still cover them.
  void ObserveRank(const std::string& run_id, uint32_t rank, const RankValues& v);
  void SetRankConnected(const std::string& run_id, uint32_t rank, bool connected);
  void CountAnomaly(const std::string& run_id, const std::string& kind, const std::string& severity);
  void CountCommand(const std::string& run_id, const std::string& action, const std::string& result);
  // state: running | disconnected | finished | stopped | failed
  void SetRunState(const std::string& run_id, const std::string& state);
  void SetMode(const std::string& run_id, const std::string& mode);

  // Monitor health.
  void StreamOpened();
  void StreamClosed();
  void MessageReceived(const std::string& type);
  void MessageRejected(const std::string& reason);
  void ObserveIngestSeconds(double seconds);
  void SetStoreLag(double records);
  // The store's writes: each failed attempt counts and marks it unhealthy; a commit after
  // failures marks it healthy again.
  void StoreWriteFailed();
  void SetStoreHealthy(bool healthy);
  void GateTimeout(const std::string& run_id);

 private:
  struct RunSeries;
  struct RankGauges;
  struct Families;
  RunSeries* Find(const std::string& run_id);  // requires mu_
  void SetLayers(RunSeries& r, const std::vector<std::string>& names);  // requires mu_
  void SetScalars(RunSeries& r, const StepValues& v);                    // requires mu_
  void SetSystem(RunSeries& r, const StepValues& v);                     // requires mu_
  RankGauges* RankSeries(const std::string& run_id, uint32_t rank);      // requires mu_

  ExporterOptions options_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<Families> f_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<RunSeries>> runs_;
};

}  // namespace gradwatch::metrics
