// The hub's report path: steps and evals through the run's detectors, events into
// incidents, the policy's commands and gated verdicts, and alerts from Alertmanager.
#include <cctype>
#include <cmath>

#include "convert.h"
#include "gradwatch/common/run_id.h"
#include "gradwatch/metrics/exporter.h"
#include "gradwatch/monitor/hub.h"
#include "gradwatch/store/store.h"
#include "hub_internal.h"
#include "run_state.h"

namespace gradwatch::monitor {
namespace {

metrics::StepValues ValuesOf(const v1::StepReport& step, const detect::StepSample& sample, double zscore) {
  metrics::StepValues v;
  v.step = step.step();
  v.unix_seconds = step.unix_millis() / 1000.0;
  v.loss = sample.loss;  // the run's: of a data-parallel job, the mean of its ranks' losses
  v.grad_norm = step.grad_norm();
  v.grad_norm_zscore = zscore;
  v.learning_rate = step.learning_rate();
  v.jaccard_soft = sample.jaccard_soft;  // NaN when not reported: the gauge keeps its value
  v.jaccard_hard = sample.jaccard_hard;
  v.accuracy = sample.accuracy;
  v.clipping_enabled = step.clipping().kind() != v1::Clipping::KIND_OFF;
  v.clipping_threshold = step.clipping().threshold();
  v.step_seconds = step.step_seconds();
  v.layer_norms = step.layer_grad_norms().data();
  v.layer_count = static_cast<size_t>(step.layer_grad_norms_size());
  // Views of the sample's scalars, already in name order (a stable choice under the cap).
  for (const auto& [name, value] : sample.scalars) v.scalars.emplace_back(name, value);
  const v1::SystemMetrics& sys = step.system();
  auto opt = [](bool has, double value) { return has ? value : detect::kNaN; };
  v.data_seconds = opt(sys.has_data_seconds(), sys.data_seconds());
  v.compute_seconds = opt(sys.has_compute_seconds(), sys.compute_seconds());
  v.report_seconds = opt(sys.has_report_seconds(), sys.report_seconds());
  v.resident_bytes = opt(sys.has_resident_bytes(), static_cast<double>(sys.resident_bytes()));
  v.cuda_allocated_bytes = opt(sys.has_cuda_allocated_bytes(), static_cast<double>(sys.cuda_allocated_bytes()));
  v.cuda_reserved_bytes = opt(sys.has_cuda_reserved_bytes(), static_cast<double>(sys.cuda_reserved_bytes()));
  v.cuda_peak_allocated_bytes =
      opt(sys.has_cuda_peak_allocated_bytes(), static_cast<double>(sys.cuda_peak_allocated_bytes()));
  v.device_utilization = opt(sys.has_device_utilization(), sys.device_utilization());
  return v;
}

// At most this many named scalars a step (telemetry.proto); names follow ValidScalarName.
constexpr int kMaxScalars = 64;

// Why the step's scalars cannot be taken, "" when they can.
std::string ScalarRefusal(const v1::StepReport& step, const char** reason) {
  auto at = [&] { return "step " + std::to_string(step.step()) + ": "; };  // only for a refusal
  if (step.scalars_size() > kMaxScalars) {
    *reason = "scalar_count";
    return at() + "scalars has " + std::to_string(step.scalars_size()) + " entries; at most " +
           std::to_string(kMaxScalars);
  }
  for (const auto& [name, value] : step.scalars()) {
    if (ValidScalarName(name)) continue;
    *reason = "scalar_name";
    std::string shown = name.substr(0, kMaxScalarNameLength);
    for (char& c : shown) {
      if (!std::isprint(static_cast<unsigned char>(c))) c = '?';  // the reason stays printable UTF-8
    }
    if (name.size() > kMaxScalarNameLength) shown += "...";
    return at() + "scalars name \"" + shown + "\" (" + std::to_string(name.size()) + " bytes) is not " +
           kScalarNameRule;
  }
  return "";
}

}  // namespace

// Why `step` cannot be taken, "" when it can.
// Rank 0's gathered values of a data-parallel step: each field none or one value per rank.
std::string RankValuesRefusal(const v1::StepReport& step, uint32_t world, const char** reason) {
  for (const auto& [field, n] : {std::pair{"rank_losses", step.rank_losses_size()},
                                 {"rank_grad_norms", step.rank_grad_norms_size()},
                                 {"rank_compute_seconds", step.rank_compute_seconds_size()}}) {
    if (n == 0 || (world >= 2 && n == static_cast<int>(world))) continue;
    *reason = "rank_values";
    return "step " + std::to_string(step.step()) + " has " + std::to_string(n) + " " + field + ", the run has " +
           std::to_string(std::max(world, 1u)) + " rank(s)";
  }
  return "";
}

std::string StepRefusal(const v1::StepReport& step, int layers, uint32_t world, const char** reason) {
  if (step.step() == 0 || step.step() > kMaxStep) {
    *reason = "step_range";
    return "step report has step " + std::to_string(step.step()) + "; steps run from 1 to " +
           std::to_string(kMaxStep);
  }
  if (step.layer_grad_norms_size() != 0 && step.layer_grad_norms_size() != layers) {
    *reason = "layer_count";
    return "step " + std::to_string(step.step()) + " has " + std::to_string(step.layer_grad_norms_size()) +
           " layer norms, hello declared " + std::to_string(layers) + " layers";
  }
  std::string bad = RankValuesRefusal(step, world, reason);
  return bad.empty() ? ScalarRefusal(step, reason) : bad;
}

void Hub::OnStep(const std::string& run_id, const v1::StepReport& step, StreamSink& sink, uint32_t rank) {
  OnStep(run_id, std::make_shared<const v1::StepReport>(step), sink, rank);
}

void Hub::OnStep(const std::string& run_id, std::shared_ptr<const v1::StepReport> report, StreamSink& sink,
                 uint32_t rank) {
  std::shared_ptr<RunState> state = Find(run_id);
  if (!state) return;
  RunState& run = *state;
  std::lock_guard<std::mutex> lock(run.mu);
  if (rank != 0) return OnRankStep(run, rank, std::move(report), sink);
  const v1::StepReport& step = *report;
  const char* reason = "";
  if (std::string why = StepRefusal(step, run.run.layer_names_size(), run.run.world_size(), &reason); !why.empty()) {
    exporter_.MessageRejected(reason);
    sink.Send(Rejection(step.step(), why));
    return;
  }
  if (step.step() <= run.max_step_seen) {
    // A resend after reconnect: already processed. Stored steps are acked on commit; a
    // step at or below what is stored gets its ack now.
    exporter_.MessageReceived("duplicate_step");
    if (step.step() <= run.stored_through) sink.Send(AckMessage(run.stored_through, run.evals_stored_through));
    return;
  }
  run.max_step_seen = step.step();
  const detect::StepSample sample = ToSample(step);
  if (run.rebuilding) run.rebuild_tail.push_back(step);
  std::vector<detect::Event> found = run.detector->OnStep(sample);
  exporter_.ObserveStep(run_id, ValuesOf(step, sample, run.detector->grad_norm_z()));

  run.clipping = step.clipping();
  // The policy's own clipping, in force but not known to a policy built before the first
  // report (a restarted monitor): it may release it again.
  if (run.clipping_by_policy && run.clipping.kind() != v1::Clipping::KIND_OFF && !run.policy->clipping()) {
    run.policy->NoteClipping(true, true);
  }
  run.run.set_steps(run.run.steps() + 1);
  run.run.set_last_step(step.step());
  run.run.set_last_unix_millis(step.unix_millis());
  run.run.set_last_loss(sample.loss);
  run.run.set_last_grad_norm(step.grad_norm());
  run.dirty = true;
  store_.PutStep(run_id, report);
  if (run.data_parallel()) {
    NoteRankStep(run, 0, step);
    if (run.job_watch) run.job_watch->OnLeaderStep(step.step(), clock_.NowMillis());
  }

  if (!run.watchers.empty()) {  // the update copies the whole report: only for a watcher
    v1::RunUpdate update;
    *update.mutable_step() = step;
    Publish(run, update);
  }
  const bool quiet = found.empty();
  HandleEvents(run, step, &sample, std::move(found), sink);
  // Guard actions that a quiet run has earned back (clipping released).
  for (const auto& action : run.policy->OnStep(step.step(), quiet)) Issue(run, ToCommand(action), nullptr, 0);
}

void Hub::HandleEvents(RunState& run, const v1::StepReport& step, const detect::StepSample* sample,
                       std::vector<detect::Event> found, StreamSink& sink) {
  const detect::HealthyStats stats = run.detector->stats();
  policy::GuardPolicy::Verdict verdict;
  if (step.awaiting_verdict() && sample != nullptr && run.run.mode() == v1::MODE_GATED) {
    verdict = run.policy->OnGatedStep(*sample, found, stats);
    // The event that decided a veto says so: the explain of the run shows why the update was
    // not applied as proposed.
    if (verdict.event >= 0) found[verdict.event].message += "; gated mode: " + verdict.reason;
  }
  for (auto& raw : found) RecordEvent(run, raw);
  if (step.awaiting_verdict()) sink.Send(ToVerdict(step.step(), verdict));
  if (run.run.mode() == v1::MODE_OBSERVE) return;
  for (const auto& e : found) {
    for (const auto& action : run.policy->OnEvent(e, stats)) {
      v1::Command command = ToCommand(action);
      // Roll back to before the incident began: its first step's update may be the bad one.
      const detect::Incident* incident = run.incidents.current();
      if (command.has_rollback() && command.rollback().to_step() == 0 && incident) {
        command.mutable_rollback()->set_to_step(incident->first_step > 1 ? incident->first_step - 1 : 0);
      }
      Issue(run, std::move(command), nullptr, 0);
    }
  }
}

// An event of the run: into its incidents, the store, the counters and its watchers.
v1::Event Hub::RecordEvent(RunState& run, detect::Event& raw) {
  const std::string& run_id = run.run.run_id();
  raw.incident_id = run.incidents.Assign(raw);
  v1::Event e = ToProto(raw, run_id, clock_.NowMillis());
  exporter_.CountAnomaly(run_id, e.kind(), e.severity() == v1::SEVERITY_CRITICAL ? "critical" : "warning");
  store_.PutEvent(e);
  run.run.set_events(run.run.events() + 1);
  run.run.set_incidents(static_cast<uint32_t>(raw.incident_id));
  run.dirty = true;
  v1::RunUpdate update;
  *update.mutable_event() = e;
  Publish(run, update);
  return e;
}

void Hub::OnEval(const std::string& run_id, const v1::EvalReport& eval, StreamSink& sink, uint32_t rank) {
  std::shared_ptr<RunState> state = Find(run_id);
  if (!state) return;
  RunState& run = *state;
  std::lock_guard<std::mutex> lock(run.mu);
  if (rank != 0) {  // the run's evaluation is its leader's
    exporter_.MessageRejected("eval_rank");
    sink.Send(Rejection(eval.step(), "eval reports come from rank 0 of a data-parallel run; this stream is rank " +
                                         std::to_string(rank)));
    return;
  }
  // An eval is acknowledged like its step: one past the steps seen would claim steps stored
  // that never came.
  if (eval.step() > run.max_step_seen) {
    exporter_.MessageRejected("eval_ahead");
    sink.Send(Rejection(eval.step(), "eval report for step " + std::to_string(eval.step()) +
                                         " comes before that step's report (last step " +
                                         std::to_string(run.max_step_seen) + ")"));
    return;
  }
  detect::EvalSample sample = ToSample(eval);
  exporter_.ObserveEval(run_id, {sample.loss, sample.jaccard_soft, sample.jaccard_hard, sample.accuracy});
  store_.PutEval(run_id, eval);
  std::vector<detect::Event> found = run.detector->OnEval(sample);
  v1::RunUpdate update;
  *update.mutable_eval() = eval;
  Publish(run, update);
  v1::StepReport at;
  at.set_step(eval.step());
  HandleEvents(run, at, nullptr, std::move(found), sink);
}

bool Hub::RecordAlert(const std::string& run_id, const std::string& alertname, const std::string& severity,
                      const std::string& status, const std::string& summary) {
  std::shared_ptr<RunState> run = FindOrLoad(run_id);
  if (!run) return false;
  std::lock_guard<std::mutex> lock(run->mu);
  v1::Event e;
  e.set_run_id(run_id);
  e.set_step(run->max_step_seen);
  e.set_kind("alert");
  e.set_severity(severity == "critical" ? v1::SEVERITY_CRITICAL : v1::SEVERITY_WARNING);
  e.set_message("Alertmanager: " + alertname + " " + status + (summary.empty() ? "" : ": " + summary));
  e.set_unix_millis(clock_.NowMillis());
  store_.PutEvent(e);
  run->run.set_events(run->run.events() + 1);
  run->dirty = true;
  v1::RunUpdate update;
  *update.mutable_event() = e;
  Publish(*run, update);
  return true;
}

}  // namespace gradwatch::monitor
