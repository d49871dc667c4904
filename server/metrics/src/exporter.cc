#include "gradwatch/metrics/exporter.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace gradwatch::metrics {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;
using Labels = std::map<std::string, std::string>;

namespace {

const char* kStates[] = {"running", "disconnected", "finished", "stopped", "failed"};
const char* kModes[] = {"observe", "guard", "gated"};

Family<Gauge>& G(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r);
}
Family<Counter>& C(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r);
}

}  // namespace

struct Exporter::Families {
  explicit Families(prometheus::Registry& r)
      : steps(C(r, "gradwatch_steps_total", "Distinct training steps received for the run.")),
        last_step(G(r, "gradwatch_last_step", "Highest step received for the run.")),
        last_step_ts(G(r, "gradwatch_last_step_timestamp_seconds",
                       "Unix time at which the run's last step ended, by the trainer's clock.")),
        loss(G(r, "gradwatch_loss", "Training loss of the run's last step.")),
        grad_norm(G(r, "gradwatch_grad_norm", "Global L2 gradient norm of the last step, before clipping.")),
        zscore(G(r, "gradwatch_grad_norm_zscore",
                 "z-score of log grad norm against the run's healthy running statistics.")),
        lr(G(r, "gradwatch_learning_rate", "Learning rate in force on the last step.")),
        jaccard(G(r, "gradwatch_jaccard_ratio", "Jaccard index (IoU) by split (train|val) and kind (soft|hard).")),
        accuracy(G(r, "gradwatch_accuracy_ratio", "Pixel accuracy by split (train|val).")),
        val_loss(G(r, "gradwatch_val_loss", "Validation loss of the last eval report.")),
        clip_on(G(r, "gradwatch_clipping_enabled", "1 while gradient clipping is in force on the run.")),
        clip_threshold(G(r, "gradwatch_clipping_threshold", "Clipping threshold in force (norm or value); 0 when off.")),
        step_seconds(G(r, "gradwatch_step_duration_seconds", "Wall time of the run's last step.")),
        layer(G(r, "gradwatch_layer_grad_norm",
                "Per-layer gradient L2 norm of the last step; layers past the cap fold into layer=\"(other)\".")),
        scalar(G(r, "gradwatch_scalar", "A named user scalar of the run's last step that reported it.")),
        scalars_unexported(C(r, "gradwatch_scalars_unexported_total",
                             "Scalar values not exported: their name came after the run's cap on scalar names.")),
        phase_seconds(G(r, "gradwatch_step_seconds",
                        "The last step's wall time by phase (data|forward_backward|report), by the trainer.")),
        resident(G(r, "gradwatch_process_resident_bytes", "The trainer process's resident set size.")),
        cuda_memory(G(r, "gradwatch_cuda_memory_bytes",
                      "The trainer's CUDA caching allocator by kind (allocated|reserved|peak_allocated).")),
        device_utilization(G(r, "gradwatch_device_utilization_ratio",
                             "Share of the training GPU's last NVML sample period in which a kernel ran.")),
        anomalies(C(r, "gradwatch_anomalies_total", "Anomaly events by kind and severity; counted as they happen.")),
        commands(C(r, "gradwatch_commands_total", "Commands sent to the run by action and result.")),
        gate_timeouts(C(r, "gradwatch_gate_timeouts_total", "Gated steps whose verdict came too late.")),
        state(G(r, "gradwatch_run_state", "1 for the run's current state, 0 for the others.")),
        mode(G(r, "gradwatch_run_mode", "1 for the run's current mode (observe|guard|gated).")),
        streams(G(r, "gradwatch_active_streams", "Telemetry streams currently connected.")),
        received(C(r, "gradwatch_messages_received_total", "Telemetry messages received by type.")),
        rejected(C(r, "gradwatch_messages_rejected_total", "Telemetry messages rejected by reason.")),
        ingest(prometheus::BuildHistogram()
                   .Name("gradwatch_ingest_latency_seconds")
                   .Help("Time from a step report's arrival to its detectors, policy and metrics done.")
                   .Register(r)),
        store_lag(G(r, "gradwatch_store_lag_records", "Records queued for the store and not yet committed.")),
        store_errors(C(r, "gradwatch_store_errors_total",
                       "Failed store write attempts (database locked, disk full, ...); each is retried.")),
        store_healthy(G(r, "gradwatch_store_healthy",
                        "1 while the store commits; 0 from a failed write until the next commit.")),
        build(G(r, "gradwatch_build_info", "Always 1; the monitor's version as a label.")),
        rank_norm(G(r, "gradwatch_rank_local_grad_norm",
                    "Data parallel: the rank's own gradient L2 norm before the all-reduce, last step.")),
        rank_loss(G(r, "gradwatch_rank_loss", "Data parallel: the rank's own loss on its last step.")),
        rank_compute(G(r, "gradwatch_rank_compute_seconds",
                       "Data parallel: the rank's compute time (forward, backward) on its last step.")),
        rank_last_step(G(r, "gradwatch_rank_last_step", "Data parallel: the highest step the rank reported.")),
        rank_connected(G(r, "gradwatch_rank_connected", "Data parallel: 1 while the rank's stream is open.")) {}

  Family<Counter>& steps;
  Family<Gauge>& last_step;
  Family<Gauge>& last_step_ts;
  Family<Gauge>& loss;
  Family<Gauge>& grad_norm;
  Family<Gauge>& zscore;
  Family<Gauge>& lr;
  Family<Gauge>& jaccard;
  Family<Gauge>& accuracy;
  Family<Gauge>& val_loss;
  Family<Gauge>& clip_on;
  Family<Gauge>& clip_threshold;
  Family<Gauge>& step_seconds;
  Family<Gauge>& layer;
  Family<Gauge>& scalar;
  Family<Counter>& scalars_unexported;
  Family<Gauge>& phase_seconds;
  Family<Gauge>& resident;
  Family<Gauge>& cuda_memory;
  Family<Gauge>& device_utilization;
  Family<Counter>& anomalies;
  Family<Counter>& commands;
  Family<Counter>& gate_timeouts;
  Family<Gauge>& state;
  Family<Gauge>& mode;
  Family<Gauge>& streams;
  Family<Counter>& received;
  Family<Counter>& rejected;
  Family<Histogram>& ingest;
  Family<Gauge>& store_lag;
  Family<Counter>& store_errors;
  Family<Gauge>& store_healthy;
  Family<Gauge>& build;
  Family<Gauge>& rank_norm;
  Family<Gauge>& rank_loss;
  Family<Gauge>& rank_compute;
  Family<Gauge>& rank_last_step;
  Family<Gauge>& rank_connected;
  Histogram* ingest_hist = nullptr;
  Counter* store_errors_c = nullptr;
  Gauge* store_healthy_g = nullptr;
  // The message types and rejection reasons the monitor counts, created once: the stream
  // path increments without building labels or taking the family's lock. Read-only after
  // the constructor.
  std::map<std::string, Counter*, std::less<>> received_by_type, rejected_by_reason;
};

// One rank's series of a data-parallel run.
struct Exporter::RankGauges {
  Gauge *norm, *loss, *compute, *last_step, *connected;
};

// Every series of one run, so removal is complete and the hot path never looks up labels.
struct Exporter::RunSeries {
  std::string run_id;
  uint64_t last_step = 0;
  std::vector<std::pair<Family<Gauge>*, Gauge*>> gauges;  // for removal
  std::vector<std::pair<Family<Counter>*, Counter*>> counters;
  Counter* steps;
  Gauge *last_step_g, *last_ts, *loss, *grad_norm, *zscore, *lr, *clip_on,
      *clip_threshold, *step_seconds, *val_loss;
  Gauge *jac_train_soft, *jac_train_hard, *jac_val_soft, *jac_val_hard, *acc_train, *acc_val;
  Counter* gate_timeouts;
  std::vector<Gauge*> layers;  // last one is "(other)" when has_other
  bool has_other = false;
  size_t layer_count = 0;      // layer names the series were made for
  std::map<std::string, Gauge*, std::less<>> scalars;  // created on a name's first report, up to the cap
  Counter* scalars_unexported = nullptr;
  bool scalars_capped = false;                           // said so on stderr
  // System series, created on the first report of each: data, forward_backward, report;
  // RSS; CUDA allocated, reserved, peak_allocated; GPU utilisation.
  Gauge* phase[3] = {nullptr, nullptr, nullptr};
  Gauge* resident = nullptr;
  Gauge* cuda[3] = {nullptr, nullptr, nullptr};
  Gauge* device_utilization = nullptr;
  std::map<std::string, Gauge*> states, modes;
  std::map<std::string, Counter*> anomalies, commands;  // created on first use
  std::map<uint32_t, RankGauges> ranks;  // data parallel: ranks below the cap, created on first use

  Gauge* AddG(Family<Gauge>& f, Labels extra = {}) {
    extra["run_id"] = run_id;
    Gauge* g = &f.Add(extra);
    gauges.emplace_back(&f, g);
    return g;
  }
  Counter* AddC(Family<Counter>& f, Labels extra = {}) {
    extra["run_id"] = run_id;
    Counter* c = &f.Add(extra);
    counters.emplace_back(&f, c);
    return c;
  }
};

Exporter::Exporter(ExporterOptions options)
    : options_(std::move(options)), registry_(std::make_shared<prometheus::Registry>()),
      f_(std::make_unique<Families>(*registry_)) {
  f_->ingest_hist = &f_->ingest.Add(
      {}, Histogram::BucketBoundaries{1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1});
  f_->build.Add({{"version", options_.version}}).Set(1);
  f_->streams.Add({});
  f_->store_lag.Add({});
  f_->store_errors_c = &f_->store_errors.Add({});
  f_->store_healthy_g = &f_->store_healthy.Add({});
  f_->store_healthy_g->Set(1);
  // Every message type and rejection reason the monitor counts starts at 0, so rate() has
  // a series.
  for (const char* type : {"hello", "step", "eval", "command_ack", "goodbye", "duplicate_step", "heartbeat"}) {
    f_->received_by_type[type] = &f_->received.Add({{"type", type}});
  }
  for (const char* reason : {"step_range", "eval_ahead", "layer_count", "second_hello", "bad_hello", "run_taken",
                             "too_many_runs", "no_hello", "empty_message", "too_many_streams", "unauthorized",
                             "scalar_count", "scalar_name", "eval_rank", "rank_values"}) {
    f_->rejected_by_reason[reason] = &f_->rejected.Add({{"reason", reason}});
  }
}

Exporter::~Exporter() = default;

std::shared_ptr<prometheus::Registry> Exporter::registry() const { return registry_; }

// (Re)creates the run's per-layer series for `names`. Requires mu_.
void Exporter::SetLayers(RunSeries& r, const std::vector<std::string>& names) {
  for (Gauge* g : r.layers) {
    f_->layer.Remove(g);
    r.gauges.erase(std::find(r.gauges.begin(), r.gauges.end(), std::make_pair(&f_->layer, g)));
  }
  r.layers.clear();
  size_t cap = std::max<size_t>(options_.max_layers, 2);
  size_t own = names.size() <= cap ? names.size() : cap - 1;
  for (size_t i = 0; i < own; ++i) r.layers.push_back(r.AddG(f_->layer, {{"layer", names[i]}}));
  r.has_other = own < names.size();
  if (r.has_other) r.layers.push_back(r.AddG(f_->layer, {{"layer", "(other)"}}));
  r.layer_count = names.size();
}

void Exporter::AddRun(const std::string& run_id, const std::vector<std::string>& layer_names) {
  std::lock_guard<std::mutex> lock(mu_);
  if (RunSeries* existing = Find(run_id)) {
    // A run that resumes with another layer list (e.g. none before) gets matching series.
    if (existing->layer_count != layer_names.size()) SetLayers(*existing, layer_names);
    return;
  }
  auto r = std::make_unique<RunSeries>();
  r->run_id = run_id;
  Families& f = *f_;
  r->steps = r->AddC(f.steps);
  r->last_step_g = r->AddG(f.last_step);
  r->last_ts = r->AddG(f.last_step_ts);
  r->loss = r->AddG(f.loss);
  r->grad_norm = r->AddG(f.grad_norm);
  r->zscore = r->AddG(f.zscore);
  r->lr = r->AddG(f.lr);
  r->clip_on = r->AddG(f.clip_on);
  r->clip_threshold = r->AddG(f.clip_threshold);
  r->step_seconds = r->AddG(f.step_seconds);
  r->val_loss = r->AddG(f.val_loss);
  r->jac_train_soft = r->AddG(f.jaccard, {{"split", "train"}, {"kind", "soft"}});
  r->jac_train_hard = r->AddG(f.jaccard, {{"split", "train"}, {"kind", "hard"}});
  r->jac_val_soft = r->AddG(f.jaccard, {{"split", "val"}, {"kind", "soft"}});
  r->jac_val_hard = r->AddG(f.jaccard, {{"split", "val"}, {"kind", "hard"}});
  r->acc_train = r->AddG(f.accuracy, {{"split", "train"}});
  r->acc_val = r->AddG(f.accuracy, {{"split", "val"}});
  r->gate_timeouts = r->AddC(f.gate_timeouts);
  r->scalars_unexported = r->AddC(f.scalars_unexported);
  SetLayers(*r, layer_names);
  for (const char* s : kStates) r->states[s] = r->AddG(f.state, {{"state", s}});
  for (const char* m : kModes) r->modes[m] = r->AddG(f.mode, {{"mode", m}});
  // Every series a run can have starts at 0, so increase() sees its first event.
  for (const char* sev : {"warning", "critical"}) {
    for (const char* kind : {"grad_spike", "non_finite", "collapse", "loss_spike", "divergence", "vanishing",
                             "val_collapse", "lr_jump", "update_size", "no_progress", "data_suspect", "scalar_limit", "alert",
                             "rank_departure", "straggler", "hang", "rank_lag", "rank_lost"}) {
      r->anomalies[std::string(kind) + "/" + sev] = r->AddC(f.anomalies, {{"kind", kind}, {"severity", sev}});
    }
  }
  for (const char* action : {"set_clipping", "scale_learning_rate", "skip_step", "rollback", "stop", "set_mode"}) {
    for (const char* result : {"sent", "applied", "rejected", "timeout"}) {
      r->commands[std::string(action) + "/" + result] = r->AddC(f.commands, {{"action", action}, {"result", result}});
    }
  }
  runs_[run_id] = std::move(r);
}

void Exporter::RemoveRun(const std::string& run_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = runs_.find(run_id);
  if (it == runs_.end()) return;
  for (auto& [family, g] : it->second->gauges) family->Remove(g);
  for (auto& [family, c] : it->second->counters) family->Remove(c);
  runs_.erase(it);
}

Exporter::RunSeries* Exporter::Find(const std::string& run_id) {
  auto it = runs_.find(run_id);
  return it == runs_.end() ? nullptr : it->second.get();
}

void Exporter::ObserveStep(const std::string& run_id, const StepValues& v) {
  std::lock_guard<std::mutex> lock(mu_);
  RunSeries* r = Find(run_id);
  if (!r) return;
  if (v.step > r->last_step) {
    r->steps->Increment();
    r->last_step = v.step;
  }
  r->last_step_g->Set(static_cast<double>(r->last_step));
  r->last_ts->Set(v.unix_seconds);
  r->loss->Set(v.loss);
  r->grad_norm->Set(v.grad_norm);
  r->zscore->Set(v.grad_norm_zscore);
  r->lr->Set(v.learning_rate);
  r->clip_on->Set(v.clipping_enabled ? 1 : 0);
  r->clip_threshold->Set(v.clipping_enabled ? v.clipping_threshold : 0);
  r->step_seconds->Set(v.step_seconds);
  if (!std::isnan(v.jaccard_soft)) r->jac_train_soft->Set(v.jaccard_soft);
  if (!std::isnan(v.jaccard_hard)) r->jac_train_hard->Set(v.jaccard_hard);
  if (!std::isnan(v.accuracy)) r->acc_train->Set(v.accuracy);
  // The first layers have series of their own; the rest fold into "(other)" when the run
  // has one. A report with more layers than the run declared cannot index past them.
  size_t named = r->layers.size() - (r->has_other ? 1 : 0);
  for (size_t i = 0; i < named && i < v.layer_count; ++i) r->layers[i]->Set(v.layer_norms[i]);
  if (r->has_other && v.layer_count > named) {
    double sq = 0;
    for (size_t i = named; i < v.layer_count; ++i) sq += double(v.layer_norms[i]) * v.layer_norms[i];
    r->layers.back()->Set(std::sqrt(sq));
  }
  SetScalars(*r, v);
  SetSystem(*r, v);
}

// A name gets its series on its first report while the run is under the cap; the values of
// names past it are counted, and the first such name is said once. Requires mu_.
void Exporter::SetScalars(RunSeries& r, const StepValues& v) {
  for (const auto& [name, value] : v.scalars) {
    auto it = r.scalars.find(name);
    if (it == r.scalars.end()) {
      if (r.scalars.size() >= options_.max_scalars) {
        r.scalars_unexported->Increment();
        if (!r.scalars_capped) {
          r.scalars_capped = true;
          std::fprintf(stderr,
                       "gradwatchd: run %s: scalar \"%.*s\" and any later new name are not exported to "
                       "/metrics (at most %zu scalar names per run; stored and exported as usual)\n",
                       r.run_id.c_str(), static_cast<int>(name.size()), name.data(), options_.max_scalars);
        }
        continue;
      }
      it = r.scalars.emplace(std::string(name), r.AddG(f_->scalar, {{"name", std::string(name)}})).first;
    }
    it->second->Set(value);
  }
}

// Sets `g` to v when v is reported, creating its series on the first report. Requires mu_.
void Exporter::SetSystem(RunSeries& r, const StepValues& v) {
  // The label (name, value) is only made into Labels when the series is created: not per step.
  auto set = [&](Gauge*& g, Family<Gauge>& family, const char* name, const char* label, double value) {
    if (std::isnan(value)) return;
    if (!g) g = r.AddG(family, name ? Labels{{name, label}} : Labels{});
    g->Set(value);
  };
  set(r.phase[0], f_->phase_seconds, "phase", "data", v.data_seconds);
  set(r.phase[1], f_->phase_seconds, "phase", "forward_backward", v.compute_seconds);
  set(r.phase[2], f_->phase_seconds, "phase", "report", v.report_seconds);
  set(r.resident, f_->resident, nullptr, nullptr, v.resident_bytes);
  set(r.cuda[0], f_->cuda_memory, "kind", "allocated", v.cuda_allocated_bytes);
  set(r.cuda[1], f_->cuda_memory, "kind", "reserved", v.cuda_reserved_bytes);
  set(r.cuda[2], f_->cuda_memory, "kind", "peak_allocated", v.cuda_peak_allocated_bytes);
  set(r.device_utilization, f_->device_utilization, nullptr, nullptr, v.device_utilization);
}

void Exporter::ObserveEval(const std::string& run_id, const EvalValues& v) {
  std::lock_guard<std::mutex> lock(mu_);
  RunSeries* r = Find(run_id);
  if (!r) return;
  r->val_loss->Set(v.loss);
  if (!std::isnan(v.jaccard_soft)) r->jac_val_soft->Set(v.jaccard_soft);
  if (!std::isnan(v.jaccard_hard)) r->jac_val_hard->Set(v.jaccard_hard);
  if (!std::isnan(v.accuracy)) r->acc_val->Set(v.accuracy);
}

void Exporter::CountAnomaly(const std::string& run_id, const std::string& kind,
                            const std::string& severity) {
  std::lock_guard<std::mutex> lock(mu_);
  RunSeries* r = Find(run_id);
  if (!r) return;
  Counter*& c = r->anomalies[kind + "/" + severity];
  if (!c) c = r->AddC(f_->anomalies, {{"kind", kind}, {"severity", severity}});
  c->Increment();
}

void Exporter::CountCommand(const std::string& run_id, const std::string& action,
                            const std::string& result) {
  std::lock_guard<std::mutex> lock(mu_);
  RunSeries* r = Find(run_id);
  if (!r) return;
  Counter*& c = r->commands[action + "/" + result];
  if (!c) c = r->AddC(f_->commands, {{"action", action}, {"result", result}});
  c->Increment();
}

void Exporter::SetRunState(const std::string& run_id, const std::string& state) {
  std::lock_guard<std::mutex> lock(mu_);
  RunSeries* r = Find(run_id);
  if (!r) return;
  for (auto& [name, g] : r->states) g->Set(name == state ? 1 : 0);
}

void Exporter::SetMode(const std::string& run_id, const std::string& mode) {
  std::lock_guard<std::mutex> lock(mu_);
  RunSeries* r = Find(run_id);
  if (!r) return;
  for (auto& [name, g] : r->modes) g->Set(name == mode ? 1 : 0);
}

void Exporter::GateTimeout(const std::string& run_id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (RunSeries* r = Find(run_id)) r->gate_timeouts->Increment();
}

void Exporter::StreamOpened() { f_->streams.Add({}).Increment(); }
void Exporter::StreamClosed() { f_->streams.Add({}).Decrement(); }
void Exporter::MessageReceived(const std::string& type) {
  auto it = f_->received_by_type.find(type);
  (it != f_->received_by_type.end() ? *it->second : f_->received.Add({{"type", type}})).Increment();
}

void Exporter::MessageRejected(const std::string& reason) {
  auto it = f_->rejected_by_reason.find(reason);
  (it != f_->rejected_by_reason.end() ? *it->second : f_->rejected.Add({{"reason", reason}})).Increment();
}
void Exporter::ObserveIngestSeconds(double seconds) { f_->ingest_hist->Observe(seconds); }
void Exporter::SetStoreLag(double records) { f_->store_lag.Add({}).Set(records); }
void Exporter::StoreWriteFailed() {
  f_->store_errors_c->Increment();
  f_->store_healthy_g->Set(0);
}
void Exporter::SetStoreHealthy(bool healthy) { f_->store_healthy_g->Set(healthy ? 1 : 0); }

// The rank's series, created on first use; null past the cap. Requires mu_.
Exporter::RankGauges* Exporter::RankSeries(const std::string& run_id, uint32_t rank) {
  RunSeries* r = Find(run_id);
  if (!r || rank >= options_.max_ranks) return nullptr;
  auto it = r->ranks.find(rank);
  if (it != r->ranks.end()) return &it->second;
  const Labels label{{"rank", std::to_string(rank)}};
  RankGauges series{r->AddG(f_->rank_norm, label), r->AddG(f_->rank_loss, label),
                         r->AddG(f_->rank_compute, label), r->AddG(f_->rank_last_step, label),
                         r->AddG(f_->rank_connected, label)};
  return &r->ranks.emplace(rank, series).first->second;
}

void Exporter::ObserveRank(const std::string& run_id, uint32_t rank, const RankValues& v) {
  std::lock_guard<std::mutex> lock(mu_);
  RankGauges* r = RankSeries(run_id, rank);
  if (!r) return;
  r->last_step->Set(static_cast<double>(v.step));
  r->loss->Set(v.loss);
  if (!std::isnan(v.local_grad_norm)) r->norm->Set(v.local_grad_norm);
  if (!std::isnan(v.compute_seconds)) r->compute->Set(v.compute_seconds);
}

void Exporter::SetRankConnected(const std::string& run_id, uint32_t rank, bool connected) {
  std::lock_guard<std::mutex> lock(mu_);
  if (RankGauges* r = RankSeries(run_id, rank)) r->connected->Set(connected ? 1 : 0);
}

}  // namespace gradwatch::metrics
