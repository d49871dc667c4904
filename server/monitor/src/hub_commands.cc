// The hub's command path: issuing (policy and operators), acknowledgements, undo,
// policy updates, and the audit log's read side with each command's effect.
#include <cmath>
#include <cstdio>

#include "convert.h"
#include "gradwatch/detect/policy.h"
#include "gradwatch/detect/thresholds.h"
#include "gradwatch/metrics/exporter.h"
#include "gradwatch/monitor/hub.h"
#include "gradwatch/store/store.h"
#include "hub_internal.h"
#include "run_state.h"

namespace gradwatch::monitor {
namespace {

Status CheckCommand(const v1::Command& command) {
  if (command.action_case() == v1::Command::ACTION_NOT_SET) return Status::Invalid("command has no action");
  if (command.has_scale_learning_rate() &&
      !(command.scale_learning_rate() > 0 && std::isfinite(command.scale_learning_rate()))) {
    return Status::Invalid("scale_learning_rate must be a finite number > 0, got " +
                           Fmt(command.scale_learning_rate()));
  }
  const v1::Clipping::Kind kind = command.set_clipping().kind();
  if (command.has_set_clipping() && kind != v1::Clipping::KIND_OFF && kind != v1::Clipping::KIND_ADAPTIVE &&
      !(command.set_clipping().threshold() > 0 && std::isfinite(command.set_clipping().threshold()))) {
    return Status::Invalid("set_clipping.threshold must be a finite number > 0");
  }
  return {};
}

// Mean loss and grad norm over steps [from, to] of a run, from the store.
void Effect(const store::Store& store, const std::string& run_id, uint64_t from, uint64_t to, uint32_t* n,
            double* loss, double* norm) {
  auto steps = store.ListSteps(run_id, from > 0 ? from - 1 : 0, static_cast<uint32_t>(to - from + 1));
  double l = 0, g = 0;
  for (const auto& s : steps) {
    l += s.loss();
    g += s.grad_norm();
  }
  *n = static_cast<uint32_t>(steps.size());
  *loss = steps.empty() ? 0 : l / steps.size();
  *norm = steps.empty() ? 0 : g / steps.size();
}

}  // namespace

Status CheckOverrides(const v1::RunConfig& config) {
  detect::Thresholds thresholds;
  Status bad =
      thresholds.Apply(std::map<std::string, double>(config.thresholds().begin(), config.thresholds().end()));
  if (!bad.ok()) return Status::Invalid("thresholds: " + bad.message());
  policy::GuardConfig guard;
  bad = guard.Apply(std::map<std::string, double>(config.policy().begin(), config.policy().end()));
  return bad.ok() ? Status() : Status::Invalid("policy: " + bad.message());
}

detect::Thresholds ThresholdsOf(const v1::RunConfig& config) {
  detect::Thresholds thresholds;
  thresholds.Apply(std::map<std::string, double>(config.thresholds().begin(), config.thresholds().end()));
  return thresholds;
}

bool ClipsByPolicy(const v1::Command& command) {
  return command.has_set_clipping() && command.set_clipping().kind() != v1::Clipping::KIND_OFF &&
         command.issued_by() == kPolicyIssuer;
}

void Hub::MakePolicy(RunState& run) {
  policy::GuardConfig config;
  config.Apply(std::map<std::string, double>(run.run.config().policy().begin(), run.run.config().policy().end()));
  run.policy = std::make_unique<policy::GuardPolicy>(ToPolicyMode(run.run.mode()), config);
  run.policy->NoteClipping(run.clipping.kind() != v1::Clipping::KIND_OFF, run.clipping_by_policy);
}

void Hub::Issue(RunState& run, v1::Command command, CommandDone done, int64_t timeout_ms) {
  char id[32];
  std::snprintf(id, sizeof id, "c-%06llu", static_cast<unsigned long long>(next_command_++));
  command.set_id(id);
  CommandLedger::Pending p;
  p.record.set_run_id(run.run.run_id());
  *p.record.mutable_command() = command;
  p.record.set_issued_unix_millis(clock_.NowMillis());
  p.record.set_issued_at_step(run.max_step_seen);
  *p.record.mutable_previous_clipping() = run.clipping;
  p.record.set_previous_mode(run.run.mode());
  p.done = std::move(done);
  p.deadline_millis = clock_.NowMillis() + (timeout_ms > 0 ? timeout_ms : options_.command_timeout_ms);
  store_.PutCommand(p.record);
  exporter_.CountCommand(run.run.run_id(), ActionName(command), "sent");
  if (command.has_set_clipping()) {
    run.clipping_by_policy = ClipsByPolicy(command);
    ++run.clipping_commands;
    run.policy->NoteClipping(command.set_clipping().kind() != v1::Clipping::KIND_OFF, run.clipping_by_policy);
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
  run.ledger.Add(std::move(p));
}

void Hub::OnCommandAck(const std::string& run_id, const v1::CommandAck& received, uint32_t rank) {
  std::shared_ptr<RunState> run = Find(run_id);
  if (!run) return;
  std::lock_guard<std::mutex> lock(run->mu);
  v1::CommandAck ack = received;
  ack.set_rank(rank);
  run->ledger.set_ranks(run->data_parallel());
  if (rank != 0) {  // another rank applied it too: its ack joins the record
    if (std::optional<v1::CommandRecord> record = run->ledger.AddRankAck(ack)) {
      store_.PutCommand(*record);
      v1::RunUpdate update;
      *update.mutable_command() = *record;
      Publish(*run, update);
    }
    return;
  }
  std::optional<CommandLedger::Pending> p = run->ledger.Acknowledge(ack);
  if (!p) return;
  store_.PutCommand(p->record);
  bool applied = ack.result() == v1::CommandAck::RESULT_APPLIED;
  exporter_.CountCommand(run_id, ActionName(p->record.command()), applied ? "applied" : "rejected");
  if (p->record.command().has_stop() && applied) SetState(*run, v1::RUN_STATE_STOPPED);
  v1::RunUpdate update;
  *update.mutable_command() = p->record;
  Publish(*run, update);
  if (p->done) p->done(p->record, true);
}

Status Hub::SendCommand(const std::string& run_id, v1::Command command, int64_t timeout_ms, CommandDone done) {
  if (Status bad = CheckCommand(command); !bad.ok()) return bad;
  std::shared_ptr<RunState> run = Find(run_id);
  if (!run && !store_.GetRun(run_id)) return Status::NotFound("no run " + run_id);
  if (!run) return Status::Precondition("run " + run_id + " has ended: commands go to live runs");
  std::lock_guard<std::mutex> lock(run->mu);
  if (!run->sink && !command.has_set_mode()) {
    return Status::Precondition("run " + run_id + " has no live stream");
  }
  Issue(*run, std::move(command), std::move(done), timeout_ms);
  return {};
}

Status Hub::Undo(const std::string& run_id, const std::string& command_id, int64_t timeout_ms, CommandDone done) {
  std::optional<v1::CommandRecord> original;
  for (auto& c : store_.ListCommands(run_id)) {
    if (c.command().id() == command_id) original = std::move(c);
  }
  if (!original) return Status::NotFound("run " + run_id + " has no command " + command_id);
  v1::Command undo;
  if (Status cannot = InverseOf(*original, &undo); !cannot.ok()) return cannot;
  return SendCommand(run_id, std::move(undo), timeout_ms, std::move(done));
}

Status Hub::UpdatePolicy(const std::string& run_id, const std::map<std::string, double>& thresholds,
                         const std::map<std::string, double>& policy, PolicyDone done) {
  std::shared_ptr<RunState> run = Find(run_id);
  if (!run && !store_.GetRun(run_id)) return Status::NotFound("no run " + run_id);
  if (!run) return Status::Precondition("run " + run_id + " has ended: policies apply to live runs");
  {
    std::lock_guard<std::mutex> lock(run->mu);
    v1::RunConfig next = run->run.config();
    for (const auto& [k, v] : thresholds) (*next.mutable_thresholds())[k] = v;
    for (const auto& [k, v] : policy) (*next.mutable_policy())[k] = v;
    if (Status bad = CheckOverrides(next); !bad.ok()) return bad;
    // The job watch keeps what it learned (the step interval, open episodes).
    if (run->job_watch) run->job_watch->SetThresholds(ThresholdsOf(next));
    *run->run.mutable_config() = std::move(next);
    Persist(*run);
  }
  QueueRebuild(std::move(run), std::move(done));  // detectors from the stored steps, off this thread
  return {};
}

std::vector<v1::CommandRecord> Hub::ListCommands(const std::string& run_id) const {
  std::vector<v1::CommandRecord> records = store_.ListCommands(run_id);
  for (auto& r : records) {
    v1::CommandEffect* e = r.mutable_effect();
    const uint64_t issued = r.issued_at_step();
    uint32_t n = 0;
    double loss = 0, norm = 0;
    Effect(store_, run_id, issued >= kEffectWindow ? issued - kEffectWindow + 1 : 1, std::max<uint64_t>(issued, 1),
           &n, &loss, &norm);
    e->set_steps_before(n);
    e->set_loss_before(loss);
    e->set_grad_norm_before(norm);
    if (r.has_ack()) {
      const uint64_t at = std::max<uint64_t>(r.ack().applied_at_step(), 1);
      Effect(store_, run_id, at, at + kEffectWindow - 1, &n, &loss, &norm);
      e->set_steps_after(n);
      e->set_loss_after(loss);
      e->set_grad_norm_after(norm);
    }
  }
  return records;
}

}  // namespace gradwatch::monitor
