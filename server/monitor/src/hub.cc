#include "gradwatch/monitor/hub.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <regex>
#include <sstream>
#include <tuple>

#include "gradwatch/common/format.h"
#include "convert.h"
#include "explain.h"
#include "gradwatch/detect/run_detector.h"
#include "gradwatch/detect/incident.h"
#include "gradwatch/detect/policy.h"
#include "gradwatch/metrics/exporter.h"
#include "gradwatch/store/store.h"

namespace gradwatch::monitor {

struct PendingCommand {
  v1::CommandRecord record;
  CommandDone done;  // may be empty (policy commands)
  int64_t deadline_millis = 0;
};

struct Hub::RunEntry {
  v1::Run run;
  std::unique_ptr<detect::RunDetector> detector;
  detect::IncidentTracker incidents;
  std::unique_ptr<policy::GuardPolicy> policy;
  std::shared_ptr<StreamSink> sink;
  v1::Clipping clipping;  // in force on the last reported step
  uint64_t max_step_seen = 0;
  uint64_t stored_through = 0;
  std::set<Watcher*> watchers;
  std::map<std::string, PendingCommand> pending;  // by command id
  int64_t ended_millis = 0;                       // when it left running, for retention
  int64_t disconnected_millis = 0;
  bool metrics_removed = false;
  bool dirty = false;  // header changed since last persisted
};

namespace {

bool ValidRunId(const std::string& id) {
  static const std::regex re("[A-Za-z0-9._-]{1,128}");
  return std::regex_match(id, re);
}

bool Ended(v1::RunState s) {
  return s == v1::RUN_STATE_FINISHED || s == v1::RUN_STATE_STOPPED || s == v1::RUN_STATE_FAILED;
}

v1::MonitorMessage Rejection(uint64_t step, const std::string& reason) {
  v1::MonitorMessage m;
  m.mutable_rejection()->set_step(step);
  m.mutable_rejection()->set_reason(reason);
  return m;
}

v1::MonitorMessage AckMessage(uint64_t through) {
  v1::MonitorMessage m;
  m.mutable_ack()->set_stored_through_step(through);
  return m;
}

std::string Fmt(double v) { return FormatNumber(v, 4); }

}  // namespace

// A run as the store holds it, with its step count and last step from the steps table
// (the header may lag behind them after a crash).
std::unique_ptr<Hub::RunEntry> Hub::Stored(v1::Run run) const {
  auto entry = std::make_unique<RunEntry>();
  entry->run = std::move(run);
  auto [count, last] = store_.StepCount(entry->run.run_id());
  entry->run.set_steps(count);
  entry->run.set_last_step(last);
  entry->max_step_seen = entry->stored_through = last;
  return entry;
}

Hub::Hub(HubOptions options, store::Store& store, metrics::Exporter& exporter, const Clock& clock)
    : options_(options), store_(store), exporter_(exporter), clock_(clock) {
  // Runs that were live before a restart: known, disconnected; their streams resume with
  // a hello. Ended runs stay in the store until someone asks for them.
  for (auto& run : store_.ListRuns()) {
    if (Ended(run.state())) continue;
    auto entry = Stored(std::move(run));
    entry->run.set_state(v1::RUN_STATE_DISCONNECTED);
    entry->disconnected_millis = clock_.NowMillis();
    runs_[entry->run.run_id()] = std::move(entry);
  }
}

Hub::~Hub() = default;

Hub::RunEntry* Hub::Find(const std::string& run_id) const {
  auto it = runs_.find(run_id);
  return it == runs_.end() ? nullptr : it->second.get();
}

Hub::RunEntry* Hub::FindOrLoad(const std::string& run_id) {
  if (RunEntry* run = Find(run_id)) return run;
  std::optional<v1::Run> stored = store_.GetRun(run_id);
  if (!stored) return nullptr;
  auto entry = Stored(std::move(*stored));
  entry->ended_millis = clock_.NowMillis();  // back in memory for one retention period
  entry->metrics_removed = true;             // it has no series until a stream resumes it
  RunEntry* raw = entry.get();
  runs_[run_id] = std::move(entry);
  return raw;
}

size_t Hub::LiveRuns() const {
  size_t n = 0;
  for (const auto& [id, run] : runs_) n += Ended(run->run.state()) ? 0 : 1;
  return n;
}

Hub::RunEntry& Hub::LoadOrCreate(const v1::Hello& hello) {
  auto& slot = runs_[hello.run_id()];
  if (!slot) {
    slot = std::make_unique<RunEntry>();
    slot->run.set_run_id(hello.run_id());
    slot->run.set_started_unix_millis(clock_.NowMillis());
  }
  RunEntry& run = *slot;
  // Overrides an operator set on the run (UpdatePolicy) win over a resuming trainer's hello.
  auto thresholds = run.run.config().thresholds();
  auto policy = run.run.config().policy();
  run.run.mutable_config()->CopyFrom(hello.config());
  for (const auto& [k, v] : thresholds) (*run.run.mutable_config()->mutable_thresholds())[k] = v;
  for (const auto& [k, v] : policy) (*run.run.mutable_config()->mutable_policy())[k] = v;
  run.run.mutable_layer_names()->CopyFrom(hello.layer_names());
  run.run.set_mode(hello.mode() == v1::MODE_UNSPECIFIED ? v1::MODE_GUARD : hello.mode());
  run.run.set_device(hello.device());
  run.run.set_host(hello.host());
  if (!run.detector) Rebuild(run);
  exporter_.AddRun(hello.run_id(),
                   std::vector<std::string>(hello.layer_names().begin(), hello.layer_names().end()));
  run.metrics_removed = false;
  return run;
}

// Detectors and incidents from the run's config, warmed on what is stored: after a monitor
// restart or a threshold change the run carries on with its healthy statistics instead of
// a fresh warm-up. Requires mu_.
void Hub::Rebuild(RunEntry& run) {
  detect::RunInfo info;
  info.layer_names.assign(run.run.layer_names().begin(), run.run.layer_names().end());
  info.loss_upper_bound = run.run.config().loss_upper_bound();
  detect::Thresholds thresholds;
  thresholds.Apply(std::map<std::string, double>(run.run.config().thresholds().begin(),
                                                 run.run.config().thresholds().end()));  // validated before
  run.detector = std::make_unique<detect::RunDetector>(info, thresholds);
  run.incidents = detect::IncidentTracker(static_cast<uint64_t>(thresholds.incident_gap));
  for (uint64_t after = 0;;) {
    auto page = store_.ListSteps(run.run.run_id(), after, 5000);
    if (page.empty()) break;
    for (const auto& s : page) run.detector->OnStep(ToSample(s));
    after = page.back().step();
  }
  MakePolicy(run);
}

void Hub::MakePolicy(RunEntry& run) {
  policy::GuardConfig config;
  config.Apply(std::map<std::string, double>(run.run.config().policy().begin(), run.run.config().policy().end()));
  run.policy = std::make_unique<policy::GuardPolicy>(ToPolicyMode(run.run.mode()), config);
  run.policy->NoteClipping(run.clipping.kind() != v1::Clipping::KIND_OFF);
}

// Both override maps, checked by name and range; "" when valid.
static std::string CheckOverrides(const v1::RunConfig& config) {
  detect::Thresholds thresholds;
  std::string bad = thresholds.Apply(
      std::map<std::string, double>(config.thresholds().begin(), config.thresholds().end()));
  if (!bad.empty()) return "thresholds: " + bad;
  policy::GuardConfig guard;
  bad = guard.Apply(std::map<std::string, double>(config.policy().begin(), config.policy().end()));
  return bad.empty() ? "" : "policy: " + bad;
}

namespace {

// "" when `text` fits in `limit` bytes; else the refusal naming the field.
std::string TooLong(const char* field, const std::string& text, size_t limit) {
  if (text.size() <= limit) return "";
  return std::string("hello.") + field + " is " + std::to_string(text.size()) + " bytes, the limit is " +
         std::to_string(limit);
}

// The hello's own content: run id, layer names, free text and overrides.
std::string CheckHello(const v1::Hello& hello, const HubOptions& o) {
  if (!ValidRunId(hello.run_id())) {
    return "hello.run_id \"" + hello.run_id().substr(0, 64) +
           "\" is invalid: use 1-128 characters from A-Z a-z 0-9 . _ -";
  }
  if (static_cast<size_t>(hello.layer_names_size()) > o.max_layers) {
    return "hello.layer_names has " + std::to_string(hello.layer_names_size()) + " names, the limit is " +
           std::to_string(o.max_layers);
  }
  for (int i = 0; i < hello.layer_names_size(); ++i) {
    std::string bad = TooLong(("layer_names[" + std::to_string(i) + "]").c_str(), hello.layer_names(i),
                              o.max_name_length);
    if (!bad.empty()) return bad;
  }
  const v1::RunConfig& c = hello.config();
  for (const auto& [field, text, limit] :
       {std::tuple{"host", &hello.host(), o.max_text_length}, {"device", &hello.device(), o.max_text_length},
        {"trainer_version", &hello.trainer_version(), o.max_text_length},
        {"config.model", &c.model(), o.max_config_text_length},
        {"config.optimizer", &c.optimizer(), o.max_config_text_length},
        {"config.loss", &c.loss(), o.max_config_text_length}}) {
    std::string bad = TooLong(field, *text, limit);
    if (!bad.empty()) return bad;
  }
  if (static_cast<size_t>(c.labels_size()) > o.max_labels) {
    return "hello.config.labels has " + std::to_string(c.labels_size()) + " entries, the limit is " +
           std::to_string(o.max_labels);
  }
  for (const auto& [k, v] : c.labels()) {
    std::string bad = TooLong("config.labels key", k, o.max_config_text_length);
    if (bad.empty()) bad = TooLong(("config.labels[" + k + "]").c_str(), v, o.max_config_text_length);
    if (!bad.empty()) return bad;
  }
  std::string bad = CheckOverrides(c);
  return bad.empty() ? "" : "hello.config." + bad;
}

}  // namespace

// Whether `hello` may take over `run`, which already exists. See Hello.trainer_instance.
Status Hub::CheckTakeover(const RunEntry& run, const v1::Hello& hello) const {
  const std::string& id = hello.run_id();
  if (run.run.layer_names_size() > 0 && run.run.layer_names_size() != hello.layer_names_size()) {
    return Status::Invalid("run " + id + " was started with " + std::to_string(run.run.layer_names_size()) +
                           " layers, this hello declares " + std::to_string(hello.layer_names_size()));
  }
  const uint64_t last = run.max_step_seen;
  if (last == 0) return {};  // nothing reported yet: anyone may (re)start it
  if (hello.trainer_instance() != 0 && hello.trainer_instance() == run.run.trainer_instance()) return {};
  if (hello.resume_after_step() == last) return {};  // an explicit resume
  return Status::Precondition(
      "run " + id + " already holds steps up to " + std::to_string(last) + " (" + StateName(run.run.state()) +
      ") from another trainer; use a new run id, or resume it with resume_after_step " + std::to_string(last) +
      (hello.resume_after_step() != 0 ? " (this hello says " + std::to_string(hello.resume_after_step()) + ")" : ""));
}

Status Hub::OnHello(const v1::Hello& hello, std::shared_ptr<StreamSink> sink) {
  if (std::string bad = CheckHello(hello, options_); !bad.empty()) return Status::Invalid(bad);
  std::lock_guard<std::mutex> lock(mu_);
  RunEntry* existing = FindOrLoad(hello.run_id());
  if (existing) {
    if (Status refused = CheckTakeover(*existing, hello); !refused.ok()) return refused;
  }
  if ((!existing || Ended(existing->run.state())) && LiveRuns() >= options_.max_runs) {
    return Status::Exhausted("the monitor guards " + std::to_string(LiveRuns()) +
                             " live runs, its limit (gradwatchd --max-runs); ended runs do not count");
  }
  RunEntry& run = LoadOrCreate(hello);
  run.sink = std::move(sink);
  run.run.set_trainer_instance(hello.trainer_instance());
  SetState(run, v1::RUN_STATE_RUNNING);
  exporter_.SetMode(run.run.run_id(), ModeName(run.run.mode()));
  Persist(run);
  run.sink->Send(AckMessage(run.stored_through));
  return {};
}

void Hub::OnStep(const std::string& run_id, const v1::StepReport& step, StreamSink& sink) {
  std::lock_guard<std::mutex> lock(mu_);
  RunEntry* run = Find(run_id);
  if (!run) return;
  int layers = run->run.layer_names_size();
  if (step.step() == 0 || step.step() > kMaxStep) {
    exporter_.MessageRejected("step_range");
    sink.Send(Rejection(step.step(), "step report has step " + std::to_string(step.step()) +
                                         "; steps run from 1 to " + std::to_string(kMaxStep)));
    return;
  }
  if (step.layer_grad_norms_size() != 0 && step.layer_grad_norms_size() != layers) {
    exporter_.MessageRejected("layer_count");
    sink.Send(Rejection(step.step(), "step " + std::to_string(step.step()) + " has " +
                                         std::to_string(step.layer_grad_norms_size()) +
                                         " layer norms, hello declared " + std::to_string(layers) +
                                         " layers"));
    return;
  }
  if (step.step() <= run->max_step_seen) {
    // A resend after reconnect: already processed. Stored steps are acked on commit; a
    // step at or below what is stored gets its ack now.
    exporter_.MessageReceived("duplicate_step");
    if (step.step() <= run->stored_through) sink.Send(AckMessage(run->stored_through));
    return;
  }
  run->max_step_seen = step.step();
  const detect::StepSample sample = ToSample(step);
  std::vector<detect::Event> found = run->detector->OnStep(sample);

  metrics::StepValues v;
  v.step = step.step();
  v.unix_seconds = step.unix_millis() / 1000.0;
  v.loss = step.loss();
  v.grad_norm = step.grad_norm();
  v.grad_norm_zscore = run->detector->grad_norm_z();
  v.learning_rate = step.learning_rate();
  v.jaccard_soft = sample.jaccard_soft;  // NaN when not reported: the gauge keeps its value
  v.jaccard_hard = sample.jaccard_hard;
  v.accuracy = sample.accuracy;
  v.clipping_enabled = step.clipping().kind() != v1::Clipping::KIND_OFF;
  v.clipping_threshold = step.clipping().threshold();
  v.step_seconds = step.step_seconds();
  v.layer_norms = step.layer_grad_norms().data();
  v.layer_count = static_cast<size_t>(step.layer_grad_norms_size());
  exporter_.ObserveStep(run_id, v);

  run->clipping = step.clipping();
  run->run.set_steps(run->run.steps() + 1);
  run->run.set_last_step(step.step());
  run->run.set_last_unix_millis(step.unix_millis());
  run->run.set_last_loss(step.loss());
  run->run.set_last_grad_norm(step.grad_norm());
  run->dirty = true;
  store_.PutStep(run_id, step);

  v1::RunUpdate update;
  *update.mutable_step() = step;
  Publish(*run, update);
  HandleEvents(*run, step, std::move(found), sink);
}

void Hub::HandleEvents(RunEntry& run, const v1::StepReport& step,
                       std::vector<detect::Event> found, StreamSink& sink) {
  const std::string& run_id = run.run.run_id();
  for (auto& raw : found) {
    raw.incident_id = run.incidents.Assign(raw);
    v1::Event e = ToProto(raw, run_id, clock_.NowMillis());
    exporter_.CountAnomaly(run_id, e.kind(),
                           e.severity() == v1::SEVERITY_CRITICAL ? "critical" : "warning");
    store_.PutEvent(e);
    run.run.set_events(run.run.events() + 1);
    run.run.set_incidents(static_cast<uint32_t>(raw.incident_id));
    v1::RunUpdate update;
    *update.mutable_event() = e;
    Publish(run, update);
  }
  const detect::HealthyStats stats = run.detector->stats();
  if (step.awaiting_verdict()) {
    v1::MonitorMessage m;
    v1::Verdict* verdict = m.mutable_verdict();
    verdict->set_step(step.step());
    if (run.run.mode() == v1::MODE_GATED) {
      auto d = run.policy->OnGatedStep(ToSample(step), found, stats);
      verdict->set_decision(d.d == policy::GuardPolicy::Verdict::kSkip   ? v1::Verdict::DECISION_SKIP
                            : d.d == policy::GuardPolicy::Verdict::kClip ? v1::Verdict::DECISION_CLIP
                                                                         : v1::Verdict::DECISION_PROCEED);
      verdict->set_clip_norm(d.clip);
      verdict->set_reason(d.reason);
    }
    sink.Send(m);
  }
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

void Hub::OnEval(const std::string& run_id, const v1::EvalReport& eval, StreamSink& sink) {
  std::lock_guard<std::mutex> lock(mu_);
  RunEntry* run = Find(run_id);
  if (!run) return;
  // An eval is acknowledged like its step: one past the steps seen would claim steps stored
  // that never came.
  if (eval.step() > run->max_step_seen) {
    exporter_.MessageRejected("eval_ahead");
    sink.Send(Rejection(eval.step(), "eval report for step " + std::to_string(eval.step()) +
                                         " comes before that step's report (last step " +
                                         std::to_string(run->max_step_seen) + ")"));
    return;
  }
  detect::EvalSample sample = ToSample(eval);
  exporter_.ObserveEval(run_id, {sample.loss, sample.jaccard_soft, sample.jaccard_hard, sample.accuracy});
  store_.PutEval(run_id, eval);
  std::vector<detect::Event> found = run->detector->OnEval(ToSample(eval));
  v1::RunUpdate update;
  *update.mutable_eval() = eval;
  Publish(*run, update);
  v1::StepReport at;
  at.set_step(eval.step());
  HandleEvents(*run, at, std::move(found), sink);
}

void Hub::Issue(RunEntry& run, v1::Command command, CommandDone done, int64_t timeout_ms) {
  char id[32];
  std::snprintf(id, sizeof id, "c-%06llu", static_cast<unsigned long long>(next_command_++));
  command.set_id(id);
  PendingCommand p;
  p.record.set_run_id(run.run.run_id());
  *p.record.mutable_command() = command;
  p.record.set_issued_unix_millis(clock_.NowMillis());
  p.record.set_issued_at_step(run.max_step_seen);
  *p.record.mutable_previous_clipping() = run.clipping;
  p.record.set_previous_mode(run.run.mode());
  p.done = std::move(done);
  p.deadline_millis = clock_.NowMillis() + (timeout_ms > 0 ? timeout_ms : 30'000);
  store_.PutCommand(p.record);
  exporter_.CountCommand(run.run.run_id(), ActionName(command), "sent");
  if (command.has_set_clipping()) {
    run.policy->NoteClipping(command.set_clipping().kind() != v1::Clipping::KIND_OFF);
  }
  if (command.has_set_mode()) {
    run.run.set_mode(command.set_mode());
    MakePolicy(run);
    exporter_.SetMode(run.run.run_id(), ModeName(command.set_mode()));
    run.dirty = true;
  }
  v1::RunUpdate update;
  *update.mutable_command() = p.record;
  Publish(run, update);
  if (!run.sink) {
    if (p.done) p.done(p.record, false);
    return;
  }
  v1::MonitorMessage m;
  *m.mutable_command() = command;
  run.sink->Send(m);
  run.pending[id] = std::move(p);
}

void Hub::OnCommandAck(const std::string& run_id, const v1::CommandAck& ack) {
  std::lock_guard<std::mutex> lock(mu_);
  RunEntry* run = Find(run_id);
  if (!run) return;
  auto it = run->pending.find(ack.command_id());
  if (it == run->pending.end()) return;
  PendingCommand p = std::move(it->second);
  run->pending.erase(it);
  *p.record.mutable_ack() = ack;
  store_.PutCommand(p.record);
  bool applied = ack.result() == v1::CommandAck::RESULT_APPLIED;
  exporter_.CountCommand(run_id, ActionName(p.record.command()), applied ? "applied" : "rejected");
  if (p.record.command().has_stop() && applied) SetState(*run, v1::RUN_STATE_STOPPED);
  v1::RunUpdate update;
  *update.mutable_command() = p.record;
  Publish(*run, update);
  if (p.done) p.done(p.record, true);
}

void Hub::OnStreamClosed(const std::string& run_id, const StreamSink* sink, bool clean) {
  std::lock_guard<std::mutex> lock(mu_);
  RunEntry* run = Find(run_id);
  if (!run || run->sink.get() != sink) return;  // a newer stream took over
  run->sink.reset();
  // A run that never reported a step has nothing to resume: it ends now rather than
  // holding a live slot until the stall timeout. A hello may start it again.
  const bool empty = run->max_step_seen == 0;
  if (run->run.state() == v1::RUN_STATE_RUNNING) {
    SetState(*run, clean ? v1::RUN_STATE_FINISHED
                   : empty ? v1::RUN_STATE_FAILED
                           : v1::RUN_STATE_DISCONNECTED);
  }
  if (!clean) run->disconnected_millis = clock_.NowMillis();
  for (auto& [id, p] : run->pending) {
    if (p.done) p.done(p.record, false);
  }
  run->pending.clear();
  Persist(*run);
}

void Hub::OnStored(const std::map<std::string, uint64_t>& stored_through) {
  std::lock_guard<std::mutex> lock(mu_);
  exporter_.SetStoreLag(static_cast<double>(store_.Lag()));
  for (const auto& [run_id, step] : stored_through) {
    RunEntry* run = Find(run_id);
    // Equal is re-acknowledged: an eval stored after its step's ack needs one too.
    if (!run || step < run->stored_through) continue;
    run->stored_through = step;
    if (run->sink) run->sink->Send(AckMessage(step));
  }
}

void Hub::SetState(RunEntry& run, v1::RunState state) {
  if (run.run.state() == state) return;
  run.run.set_state(state);
  run.dirty = true;
  run.ended_millis = Ended(state) ? clock_.NowMillis() : 0;
  exporter_.SetRunState(run.run.run_id(), StateName(state));
  v1::RunUpdate update;
  *update.mutable_run() = run.run;
  Publish(run, update);
  if (Ended(state)) {
    for (Watcher* w : run.watchers) w->End();
    run.watchers.clear();
  }
}

void Hub::Persist(RunEntry& run) {
  store_.PutRun(run.run);
  run.dirty = false;
}

void Hub::Publish(RunEntry& run, const v1::RunUpdate& update) {
  for (Watcher* w : run.watchers) w->Push(update);
}

std::vector<v1::Run> Hub::ListRuns() const {
  // Ended runs from the store (read outside the lock), live ones from memory.
  std::vector<v1::Run> stored = store_.ListRuns();
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::Run> out;
  for (auto& run : stored) {
    if (!Find(run.run_id())) out.push_back(std::move(run));
  }
  for (const auto& [id, run] : runs_) out.push_back(run->run);
  std::sort(out.begin(), out.end(), [](const v1::Run& a, const v1::Run& b) { return a.run_id() < b.run_id(); });
  return out;
}

std::optional<v1::Run> Hub::GetRun(const std::string& run_id) const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (RunEntry* run = Find(run_id)) return run->run;
  }
  return store_.GetRun(run_id);  // an ended run, out of memory
}

std::string Hub::SendCommand(const std::string& run_id, v1::Command command, int64_t timeout_ms,
                             CommandDone done) {
  if (command.action_case() == v1::Command::ACTION_NOT_SET) return "command has no action";
  if (command.has_scale_learning_rate() &&
      !(command.scale_learning_rate() > 0 && std::isfinite(command.scale_learning_rate()))) {
    return "scale_learning_rate must be a finite number > 0, got " +
           Fmt(command.scale_learning_rate());
  }
  if (command.has_set_clipping() && command.set_clipping().kind() != v1::Clipping::KIND_OFF &&
      command.set_clipping().kind() != v1::Clipping::KIND_ADAPTIVE &&
      !(command.set_clipping().threshold() > 0)) {
    return "set_clipping.threshold must be > 0";
  }
  std::lock_guard<std::mutex> lock(mu_);
  RunEntry* run = Find(run_id);
  if (!run) return "no run " + run_id;
  if (!run->sink && !command.has_set_mode()) return "run " + run_id + " has no live stream";
  Issue(*run, std::move(command), std::move(done), timeout_ms);
  return "";
}

std::string Hub::Undo(const std::string& run_id, const std::string& command_id, int64_t timeout_ms,
                      CommandDone done) {
  std::optional<v1::CommandRecord> original;
  for (auto& c : store_.ListCommands(run_id)) {
    if (c.command().id() == command_id) original = std::move(c);
  }
  if (!original) return "run " + run_id + " has no command " + command_id;
  const v1::Command& c = original->command();
  v1::Command undo;
  if (c.has_set_clipping()) {
    *undo.mutable_set_clipping() = original->previous_clipping();
  } else if (c.has_scale_learning_rate()) {
    undo.set_scale_learning_rate(1.0 / c.scale_learning_rate());
  } else if (c.has_set_mode()) {
    undo.set_set_mode(original->previous_mode());
  } else {
    return std::string("a ") + ActionName(c) + " cannot be undone (only clipping, learning-rate and mode commands)";
  }
  undo.set_issued_by("operator");
  undo.set_reason("undo of " + command_id + " (" + ActionName(c) + ")");
  return SendCommand(run_id, std::move(undo), timeout_ms, std::move(done));
}

std::string Hub::UpdatePolicy(const std::string& run_id, const std::map<std::string, double>& thresholds,
                              const std::map<std::string, double>& policy, v1::Run* updated) {
  // The detectors are rebuilt from the store: let it catch up first. Not under mu_, which
  // the store's commit callback takes.
  store_.Flush();
  std::lock_guard<std::mutex> lock(mu_);
  RunEntry* run = Find(run_id);
  if (!run) return "no run " + run_id;
  v1::RunConfig next = run->run.config();
  for (const auto& [k, v] : thresholds) (*next.mutable_thresholds())[k] = v;
  for (const auto& [k, v] : policy) (*next.mutable_policy())[k] = v;
  std::string bad = CheckOverrides(next);
  if (!bad.empty()) return bad;
  *run->run.mutable_config() = std::move(next);
  if (run->detector) Rebuild(*run);
  Persist(*run);
  *updated = run->run;
  return "";
}

std::vector<v1::CommandRecord> Hub::ListCommands(const std::string& run_id) const {
  std::vector<v1::CommandRecord> records = store_.ListCommands(run_id);
  for (auto& r : records) {
    auto effect = [&](uint64_t from, uint64_t to, uint32_t* n, double* loss, double* norm) {
      auto steps = store_.ListSteps(run_id, from > 0 ? from - 1 : 0, static_cast<uint32_t>(to - from + 1));
      double l = 0, g = 0;
      for (const auto& s : steps) {
        l += s.loss();
        g += s.grad_norm();
      }
      *n = static_cast<uint32_t>(steps.size());
      *loss = steps.empty() ? 0 : l / steps.size();
      *norm = steps.empty() ? 0 : g / steps.size();
    };
    v1::CommandEffect* e = r.mutable_effect();
    uint64_t issued = r.issued_at_step();
    uint32_t n = 0;
    double loss = 0, norm = 0;
    effect(issued > 19 ? issued - 19 : 1, std::max<uint64_t>(issued, 1), &n, &loss, &norm);
    e->set_steps_before(n);
    e->set_loss_before(loss);
    e->set_grad_norm_before(norm);
    if (r.has_ack()) {
      uint64_t at = std::max<uint64_t>(r.ack().applied_at_step(), 1);
      effect(at, at + 19, &n, &loss, &norm);
      e->set_steps_after(n);
      e->set_loss_after(loss);
      e->set_grad_norm_after(norm);
    }
  }
  return records;
}

bool Hub::RecordAlert(const std::string& run_id, const std::string& alertname, const std::string& severity,
                      const std::string& status, const std::string& summary) {
  std::lock_guard<std::mutex> lock(mu_);
  RunEntry* run = FindOrLoad(run_id);
  if (!run) return false;
  v1::Event e;
  e.set_run_id(run_id);
  e.set_step(run->max_step_seen);
  e.set_kind("alert");
  e.set_severity(severity == "critical" ? v1::SEVERITY_CRITICAL : v1::SEVERITY_WARNING);
  e.set_message("Alertmanager: " + alertname + " " + status + (summary.empty() ? "" : ": " + summary));
  e.set_unix_millis(clock_.NowMillis());
  store_.PutEvent(e);
  run->run.set_events(run->run.events() + 1);
  v1::RunUpdate update;
  *update.mutable_event() = e;
  Publish(*run, update);
  return true;
}

bool Hub::Watch(const std::string& run_id, Watcher* watcher) {
  std::lock_guard<std::mutex> lock(mu_);
  RunEntry* run = FindOrLoad(run_id);
  if (!run) return false;
  v1::RunUpdate snapshot;
  *snapshot.mutable_run() = run->run;
  watcher->Push(snapshot);
  if (Ended(run->run.state())) {
    watcher->End();
    return true;
  }
  run->watchers.insert(watcher);
  return true;
}

void Hub::Unwatch(const std::string& run_id, Watcher* watcher) {
  std::lock_guard<std::mutex> lock(mu_);
  if (RunEntry* run = Find(run_id)) run->watchers.erase(watcher);
}

void Hub::Tick() {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = clock_.NowMillis();
  exporter_.SetStoreLag(static_cast<double>(store_.Lag()));
  for (auto entry = runs_.begin(); entry != runs_.end();) {
    const std::string& id = entry->first;
    RunEntry* run = entry->second.get();
    for (auto it = run->pending.begin(); it != run->pending.end();) {
      if (it->second.deadline_millis <= now) {
        if (it->second.done) it->second.done(it->second.record, false);
        exporter_.CountCommand(id, ActionName(it->second.record.command()), "timeout");
        it = run->pending.erase(it);
      } else {
        ++it;
      }
    }
    if (run->run.state() == v1::RUN_STATE_DISCONNECTED &&
        now - run->disconnected_millis >= options_.stall_timeout_ms) {
      SetState(*run, v1::RUN_STATE_FAILED);
    }
    if (Ended(run->run.state()) && !run->metrics_removed &&
        now - run->ended_millis >= options_.retention_ms) {
      exporter_.RemoveRun(id);
      run->metrics_removed = true;
    }
    if (run->dirty) Persist(*run);
    // An ended run leaves memory with its series; the store keeps it for every read.
    const bool evict = Ended(run->run.state()) && run->metrics_removed && !run->sink && run->watchers.empty() &&
                       run->pending.empty() && now - run->ended_millis >= options_.retention_ms;
    entry = evict ? runs_.erase(entry) : std::next(entry);
  }
}

std::string Hub::Explain(const std::string& run_id) const {
  std::optional<v1::Run> run = GetRun(run_id);
  if (!run) return "";
  std::vector<v1::StepReport> steps;
  for (uint64_t after = 0; steps.size() < 1'000'000;) {  // the record, a page at a time
    auto page = store_.ListSteps(run_id, after, 10'000);
    if (page.empty()) break;
    after = page.back().step();
    steps.insert(steps.end(), std::make_move_iterator(page.begin()), std::make_move_iterator(page.end()));
  }
  return ExplainRun(*run, store_.ListEvents(run_id), store_.ListCommands(run_id), steps);
}

}  // namespace gradwatch::monitor
