#include "convert.h"

#include <algorithm>
#include <cmath>

#include "hub_internal.h"

namespace gradwatch::monitor {

detect::StepSample ToSample(const v1::StepReport& step) {
  detect::StepSample s;
  s.step = step.step();
  s.epoch = step.epoch();
  s.loss = step.loss();
  s.grad_norm = step.grad_norm();
  s.layer_norms = step.layer_grad_norms().data();
  s.n_layers = static_cast<size_t>(step.layer_grad_norms_size());
  s.jaccard_soft = step.has_jaccard_soft() ? step.jaccard_soft() : detect::kNaN;
  s.jaccard_hard = step.has_jaccard_hard() ? step.jaccard_hard() : detect::kNaN;
  s.accuracy = step.has_accuracy() ? step.accuracy() : detect::kNaN;
  s.learning_rate = step.learning_rate();
  s.update_ratio = step.has_update_ratio() ? step.update_ratio() : detect::kNaN;
  s.rolled_back = step.rolled_back() || step.rolled_back_to() != 0;
  s.rolled_back_to = step.rolled_back_to();
  s.sample_ids = step.sample_ids().data();
  s.n_samples = static_cast<size_t>(step.sample_ids_size());
  s.scalars.assign(step.scalars().begin(), step.scalars().end());
  std::sort(s.scalars.begin(), s.scalars.end());  // events in name order
  // Data parallel (rank 0's report): views of every rank's values, world_size each; a field
  // with fewer values than the longest is left out, as if not reported. The run's loss is the
  // plain mean of the ranks' losses, NaN if any is: non-finite is data.
  const int n = std::max({step.rank_losses_size(), step.rank_grad_norms_size(), step.rank_compute_seconds_size()});
  if (n >= 2) {
    auto view = [n](const google::protobuf::RepeatedField<double>& f) { return f.size() == n ? f.data() : nullptr; };
    s.n_ranks = static_cast<size_t>(n);
    s.rank_losses = view(step.rank_losses());
    s.rank_grad_norms = view(step.rank_grad_norms());
    s.rank_compute_seconds = view(step.rank_compute_seconds());
    if (s.rank_losses) {
      double sum = 0;
      for (double loss : step.rank_losses()) sum += loss;
      s.loss = sum / n;
    }
  }
  return s;
}

detect::EvalSample ToSample(const v1::EvalReport& eval) {
  detect::EvalSample e;
  e.step = eval.step();
  e.loss = eval.loss();
  e.jaccard_soft = eval.has_jaccard_soft() ? eval.jaccard_soft() : detect::kNaN;
  e.jaccard_hard = eval.has_jaccard_hard() ? eval.jaccard_hard() : detect::kNaN;
  e.accuracy = eval.has_accuracy() ? eval.accuracy() : detect::kNaN;
  return e;
}

v1::Event ToProto(const detect::Event& event, const std::string& run_id, int64_t unix_millis) {
  v1::Event e;
  e.set_run_id(run_id);
  e.set_step(event.step);
  e.set_kind(detect::ToString(event.kind));
  e.set_severity(event.severity == detect::Severity::kCritical ? v1::SEVERITY_CRITICAL
                                                               : v1::SEVERITY_WARNING);
  e.set_message(event.message);
  e.set_value(event.value);
  for (const auto& layer : event.top_layers) e.add_top_layers(layer);
  e.set_first_layer(event.first_layer);
  e.set_incident_id(event.incident_id);
  e.set_unix_millis(unix_millis);
  if (event.rank) e.set_rank(*event.rank);
  return e;
}

v1::Command ToCommand(const policy::Action& action) {
  using K = policy::Action::Kind;
  v1::Command c;
  c.set_reason(action.reason);
  c.set_issued_by(kPolicyIssuer);
  auto clip = [&](v1::Clipping::Kind kind) {
    c.mutable_set_clipping()->set_kind(kind);
    c.mutable_set_clipping()->set_threshold(action.value);
  };
  switch (action.kind) {
    case K::kClipNorm: clip(v1::Clipping::KIND_NORM); break;
    case K::kClipValue: clip(v1::Clipping::KIND_VALUE); break;
    case K::kClipAdaptive: clip(v1::Clipping::KIND_ADAPTIVE); break;
    case K::kClipOff: clip(v1::Clipping::KIND_OFF); break;
    case K::kScaleLr: c.set_scale_learning_rate(action.value); break;
    case K::kSkip: c.mutable_skip_step()->set_count(std::max<uint32_t>(1, uint32_t(action.value))); break;
    case K::kRollback: c.mutable_rollback()->set_to_step(uint64_t(std::max(0.0, action.value))); break;
    case K::kStop: c.mutable_stop(); break;
  }
  return c;
}

v1::MonitorMessage ToVerdict(uint64_t step, const policy::GuardPolicy::Verdict& d) {
  using V = policy::GuardPolicy::Verdict;
  v1::MonitorMessage m;
  v1::Verdict* verdict = m.mutable_verdict();
  verdict->set_step(step);
  verdict->set_decision(d.d == V::kSkip      ? v1::Verdict::DECISION_SKIP
                        : d.d == V::kClip    ? v1::Verdict::DECISION_CLIP
                        : d.d == V::kScaleLr ? v1::Verdict::DECISION_SCALE_LR
                                             : v1::Verdict::DECISION_PROCEED);
  verdict->set_clip_norm(d.clip);
  if (d.d == V::kScaleLr) verdict->set_lr_scale(d.lr_scale);
  verdict->set_reason(d.reason);
  return m;
}

policy::Mode ToPolicyMode(v1::Mode mode) {
  switch (mode) {
    case v1::MODE_OBSERVE: return policy::Mode::kObserve;
    case v1::MODE_GATED: return policy::Mode::kGated;
    default: return policy::Mode::kGuard;
  }
}

}  // namespace gradwatch::monitor
