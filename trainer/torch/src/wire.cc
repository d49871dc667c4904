#include "gradwatch/torch/wire.h"

#include "names.h"

namespace gradwatch::torchmon {

const char* ActionName(Command::Action action) {
  Command c;
  c.action = action;
  return v1::ActionName(ToWire(c));  // one list of names, in proto/names.h
}

v1::Clipping ToWire(const Clip& clip) {
  v1::Clipping w;
  switch (clip.kind) {
    case Clip::Kind::kOff: w.set_kind(v1::Clipping::KIND_OFF); break;
    case Clip::Kind::kNorm: w.set_kind(v1::Clipping::KIND_NORM); break;
    case Clip::Kind::kValue: w.set_kind(v1::Clipping::KIND_VALUE); break;
    case Clip::Kind::kAdaptive: w.set_kind(v1::Clipping::KIND_ADAPTIVE); break;
  }
  w.set_threshold(clip.threshold);
  return w;
}

Clip FromWire(const v1::Clipping& clip) {
  Clip c;
  switch (clip.kind()) {
    case v1::Clipping::KIND_NORM: c.kind = Clip::Kind::kNorm; break;
    case v1::Clipping::KIND_VALUE: c.kind = Clip::Kind::kValue; break;
    case v1::Clipping::KIND_ADAPTIVE: c.kind = Clip::Kind::kAdaptive; break;
    default: c.kind = Clip::Kind::kOff;
  }
  c.threshold = clip.threshold();
  return c;
}

v1::Mode ToWire(Mode mode) {
  return mode == Mode::kObserve ? v1::MODE_OBSERVE : mode == Mode::kGated ? v1::MODE_GATED : v1::MODE_GUARD;
}

Mode FromWire(v1::Mode mode) {
  return mode == v1::MODE_OBSERVE ? Mode::kObserve : mode == v1::MODE_GATED ? Mode::kGated : Mode::kGuard;
}

v1::RunConfig ToWire(const RunDescription& run) {
  v1::RunConfig w;
  w.set_model(run.model);
  w.set_optimizer(run.optimizer);
  w.set_loss(run.loss);
  w.set_learning_rate(run.learning_rate);
  w.set_loss_upper_bound(run.loss_upper_bound);
  w.set_batch_size(run.batch_size);
  w.set_eval_every(run.eval_every);
  w.set_checkpoint_every(run.checkpoint_every);
  w.set_total_steps(run.total_steps);
  for (const auto& [k, v] : run.labels) (*w.mutable_labels())[k] = v;
  for (const auto& [k, v] : run.thresholds) (*w.mutable_thresholds())[k] = v;
  return w;
}

namespace {

// The segmentation metrics a step or an eval measured; NaN = not measured, left unset.
template <typename Record, typename Report>
void SetSegmentation(const Record& in, Report& out) {
  if (!std::isnan(in.jaccard_soft)) out.set_jaccard_soft(in.jaccard_soft);
  if (!std::isnan(in.jaccard_hard)) out.set_jaccard_hard(in.jaccard_hard);
  if (!std::isnan(in.accuracy)) out.set_accuracy(in.accuracy);
}

}  // namespace

v1::StepReport ToWire(const StepRecord& s) {
  v1::StepReport r;
  r.set_step(s.step);
  r.set_epoch(s.epoch);
  r.set_loss(s.loss);
  r.set_learning_rate(s.learning_rate);
  r.set_grad_norm(s.grad_norm);
  r.mutable_layer_grad_norms()->Add(s.layer_norms.begin(), s.layer_norms.end());
  SetSegmentation(s, r);
  *r.mutable_clipping() = ToWire(s.clip);
  r.set_step_seconds(s.step_seconds);
  r.set_unix_millis(s.unix_millis);
  r.set_update_skipped(s.update_skipped);
  r.set_rolled_back_to(s.rolled_back_to);
  r.set_rolled_back(s.rolled_back);
  r.set_awaiting_verdict(s.awaiting_verdict);
  if (!std::isnan(s.update_ratio)) r.set_update_ratio(s.update_ratio);
  r.mutable_sample_ids()->Add(s.sample_ids.begin(), s.sample_ids.end());
  for (const auto& [name, value] : s.scalars) (*r.mutable_scalars())[name] = value;
  *r.mutable_system() = ToWire(s.system);
  if (!std::isnan(s.local_grad_norm)) r.set_local_grad_norm(s.local_grad_norm);
  r.mutable_rank_losses()->Add(s.rank_losses.begin(), s.rank_losses.end());
  r.mutable_rank_grad_norms()->Add(s.rank_grad_norms.begin(), s.rank_grad_norms.end());
  r.mutable_rank_compute_seconds()->Add(s.rank_compute_seconds.begin(), s.rank_compute_seconds.end());
  return r;
}

v1::SystemMetrics ToWire(const SystemSample& s) {
  v1::SystemMetrics w;
  if (!std::isnan(s.data_seconds)) w.set_data_seconds(s.data_seconds);
  if (!std::isnan(s.compute_seconds)) w.set_compute_seconds(s.compute_seconds);
  if (!std::isnan(s.report_seconds)) w.set_report_seconds(s.report_seconds);
  if (s.resident_bytes >= 0) w.set_resident_bytes(static_cast<uint64_t>(s.resident_bytes));
  if (s.cuda_allocated_bytes >= 0) w.set_cuda_allocated_bytes(static_cast<uint64_t>(s.cuda_allocated_bytes));
  if (s.cuda_reserved_bytes >= 0) w.set_cuda_reserved_bytes(static_cast<uint64_t>(s.cuda_reserved_bytes));
  if (s.cuda_peak_allocated_bytes >= 0) {
    w.set_cuda_peak_allocated_bytes(static_cast<uint64_t>(s.cuda_peak_allocated_bytes));
  }
  if (std::isfinite(s.device_utilization)) w.set_device_utilization(s.device_utilization);
  return w;
}

v1::EvalReport ToWire(const EvalRecord& e) {
  v1::EvalReport r;
  r.set_step(e.step);
  r.set_loss(e.loss);
  SetSegmentation(e, r);
  return r;
}

v1::Command ToWire(const Command& c) {
  v1::Command w;
  w.set_id(c.id);
  w.set_issued_by(c.issued_by);
  w.set_reason(c.reason);
  switch (c.action) {
    case Command::Action::kClip: *w.mutable_set_clipping() = ToWire(c.clip); break;
    case Command::Action::kScaleLr: w.set_scale_learning_rate(c.lr_scale); break;
    case Command::Action::kSkip: w.mutable_skip_step()->set_count(c.skip_count); break;
    case Command::Action::kRollback: w.mutable_rollback()->set_to_step(c.rollback_to); break;
    case Command::Action::kStop: w.mutable_stop(); break;
    case Command::Action::kMode: w.set_set_mode(ToWire(c.mode)); break;
    default: break;
  }
  return w;
}

Command FromWire(const v1::Command& w) {
  Command c;
  c.id = w.id();
  c.issued_by = w.issued_by();
  c.reason = w.reason();
  switch (w.action_case()) {
    case v1::Command::kSetClipping: c.action = Command::Action::kClip; c.clip = FromWire(w.set_clipping()); break;
    case v1::Command::kScaleLearningRate: c.action = Command::Action::kScaleLr; c.lr_scale = w.scale_learning_rate(); break;
    case v1::Command::kSkipStep: c.action = Command::Action::kSkip; c.skip_count = w.skip_step().count(); break;
    case v1::Command::kRollback: c.action = Command::Action::kRollback; c.rollback_to = w.rollback().to_step(); break;
    case v1::Command::kStop: c.action = Command::Action::kStop; break;
    case v1::Command::kSetMode: c.action = Command::Action::kMode; c.mode = FromWire(w.set_mode()); break;
    default: c.action = Command::Action::kNone;
  }
  return c;
}

v1::CommandAck ToWire(const CommandAck& a) {
  v1::CommandAck w;
  w.set_command_id(a.command_id);
  w.set_applied_at_step(a.applied_at_step);
  w.set_result(a.applied ? v1::CommandAck::RESULT_APPLIED : v1::CommandAck::RESULT_REJECTED);
  w.set_detail(a.detail);
  return w;
}

}  // namespace gradwatch::torchmon
