#include "gradwatch/detect/run_detector.h"

#include <cmath>
#include <limits>

#include "format.h"

namespace gradwatch::detect {
namespace {

bool Finite(const StepSample& s) {
  return std::isfinite(s.loss) && (!s.has_grad_norm || std::isfinite(s.grad_norm));
}

Event NonFinite(const StepSample& s) {
  Event e;
  e.step = s.step;
  e.kind = EventKind::kNonFinite;
  e.severity = Severity::kCritical;
  e.value = std::isfinite(s.loss) ? s.grad_norm : s.loss;
  e.message = s.has_grad_norm
                  ? Format("non-finite values: loss %g, grad norm %g", s.loss, s.grad_norm)
                  : Format("non-finite loss %g", s.loss);
  return e;
}

void Push(std::optional<Event> e, std::vector<Event>* out) {
  if (e) out->push_back(std::move(*e));
}

// What a violent event is called in the dead-network message; nullptr if e is not one.
const char* Violent(const Event& e) {
  if (e.severity != Severity::kCritical) return nullptr;
  switch (e.kind) {
    case EventKind::kNonFinite: return "non-finite values";
    case EventKind::kGradSpike: return "gradient explosion";
    case EventKind::kLossSpike: return "loss explosion";
    case EventKind::kLrJump: return "learning-rate jump";
    case EventKind::kUpdateSize: return "oversized update";
    default: return nullptr;
  }
}

// Names the rank a run-level event of s's step came from (see OnStep in the header).
void AttributeRank(const StepSample& s, const Thresholds& t, Event* e) {
  if (s.n_ranks < 2) return;
  constexpr double kOnlyNonFinite = std::numeric_limits<double>::infinity();
  std::optional<RankLead> lead;
  const char* what = "local gradient norm";
  switch (e->kind) {
    case EventKind::kGradSpike:
      lead = LeadingRank(s.rank_grad_norms, s.n_ranks, std::sqrt(t.rank_departure_ratio));
      break;
    case EventKind::kLossSpike:
      lead = LeadingRank(s.rank_losses, s.n_ranks, t.rank_loss_ratio);
      what = "loss";
      break;
    case EventKind::kNonFinite:
      lead = LeadingRank(s.rank_grad_norms, s.n_ranks, kOnlyNonFinite);
      if (!lead) {
        lead = LeadingRank(s.rank_losses, s.n_ranks, kOnlyNonFinite);
        what = "loss";
      }
      break;
    default: return;
  }
  if (!lead) return;
  e->rank = lead->rank;
  const unsigned r = lead->rank;
  e->message += std::isfinite(lead->value)
                    ? Format(" on rank %u (its %s %.3g is %s the other ranks' median %.3g)", r,
                             what, lead->value, Times(lead->ratio).c_str(), lead->others_median)
                    : Format(" on rank %u (its %s is %g, the other ranks' median %.3g)", r, what,
                             lead->value, lead->others_median);
}

}  // namespace

RunDetector::State::State(const RunInfo& info, const Thresholds& t)
    : grad(t),
      loss(t),
      divergence(t),
      collapse(info.loss_upper_bound, t),
      vanishing(t),
      dead(t),
      val(t),
      update(t),
      progress(t),
      data(t),
      ranks(t),
      scalars(t),
      layers(info.layer_names, t),
      healthy_grad(t.spike_alpha, t.spike_var_alpha, t.spike_warmup),
      healthy_max(t.spike_max_decay),
      healthy_loss(t.spike_alpha, t.spike_var_alpha, t.spike_warmup) {}

RunDetector::RunDetector(RunInfo info, Thresholds t)
    : info_(std::move(info)), t_(t), s_(info_, t_), stragglers_(t_) {}

std::vector<Event> RunDetector::OnStep(const StepSample& s) {
  if (s.rolled_back) RestoreTo(s.rolled_back_to);
  std::vector<Event> out;
  s_.layers.Score(s.step, s.layer_norms, s.n_layers);
  bool finite = Finite(s);
  if (s_.non_finite.Update(!finite)) out.push_back(NonFinite(s));
  if (finite) Detect(s, &out);
  for (Event& e : out) {
    s_.layers.Attribute(&e);
    AttributeRank(s, t_, &e);
  }
  NoteViolent(s, out);
  const bool learn = finite && out.empty() && Quiet();
  // Last, in EventKind order; a slow rank or a user scalar past its limit says nothing of the
  // gradients and does not keep the step from the healthy statistics.
  stragglers_.OnStep(s, &out);
  s_.scalars.OnStep(s, &out);
  if (!learn) return out;
  Learn(s);
  if (t_.snapshot_every > 0 && s.step % t_.snapshot_every == 0) Snapshot(s.step);
  return out;
}

// Detectors run in EventKind order, so events come out in that order.
void RunDetector::Detect(const StepSample& s, std::vector<Event>* out) {
  double healthy = HealthyGrad();
  bool was_quiet = s_.grad.quiet();
  std::optional<Event> spike;
  if (s.has_grad_norm) spike = s_.grad.OnNorm(s.step, s.grad_norm);
  bool spike_started = spike && was_quiet;
  Push(std::move(spike), out);
  Push(s_.loss.OnLoss(s.step, s.loss), out);
  Push(s_.divergence.OnLoss(s.step, s.loss), out);
  Push(s_.collapse.OnStep(s, healthy), out);
  if (s.has_grad_norm) {
    Push(s_.dead.OnNorm(s.step, s.grad_norm), out);
    Push(s_.vanishing.OnNorm(s.step, s.grad_norm, healthy), out);
  }
  Push(s_.update.OnStep(s), out);
  Push(s_.progress.OnLoss(s.step, s.loss), out);
  Push(s_.data.OnStep(s, spike_started), out);
  s_.ranks.OnStep(s, out);
}

// A critical explosion, oversized update or non-finite step may leave a dead network behind.
void RunDetector::NoteViolent(const StepSample& s, const std::vector<Event>& events) {
  for (const Event& e : events) {
    if (const char* what = Violent(e)) {
      double level = HealthyGrad() > 0 ? HealthyGrad() : s_.grad.level();
      s_.dead.NoteViolent(s.step, what, level);
      return;
    }
  }
}

bool RunDetector::Quiet() const {
  return s_.grad.quiet() && s_.loss.quiet() && s_.divergence.quiet() && s_.collapse.quiet() &&
         s_.vanishing.quiet() && s_.dead.quiet() && s_.update.quiet() && s_.ranks.quiet();
}

void RunDetector::Learn(const StepSample& s) {
  ++s_.healthy_steps;
  s_.healthy_loss.Add(s.loss);
  if (s.has_grad_norm) {
    s_.healthy_grad.Add(s.grad_norm);
    s_.healthy_max.Add(s.grad_norm);
  }
  s_.layers.Learn();
  s_.ranks.Learn(s);
}

double RunDetector::HealthyGrad() const {
  return s_.healthy_grad.ready() ? s_.healthy_grad.mean() : 0;
}

// Once snapshots_kept are kept, the oldest is overwritten and moved to the back: assigning into
// it reuses its vectors and strings, where a fresh copy would allocate them all again.
void RunDetector::Snapshot(uint64_t step) {
  if (snapshots_.size() < t_.snapshots_kept) {
    snapshots_.emplace_back(step, s_);
    return;
  }
  std::pair<uint64_t, State> oldest = std::move(snapshots_.front());
  snapshots_.pop_front();
  oldest.first = step;
  oldest.second = s_;
  snapshots_.push_back(std::move(oldest));
}

uint64_t RunDetector::RestoreTo(uint64_t step) {
  while (!snapshots_.empty() && snapshots_.back().first > step) snapshots_.pop_back();
  if (snapshots_.empty()) {
    s_ = State(info_, t_);
    return 0;
  }
  s_ = snapshots_.back().second;
  return snapshots_.back().first;
}

std::vector<Event> RunDetector::OnEval(const EvalSample& e) {
  std::vector<Event> out;
  Push(s_.val.OnEval(e), &out);
  return out;
}

HealthyStats RunDetector::stats() const {
  HealthyStats h;
  h.warmed_up = s_.healthy_grad.ready();
  h.grad_norm_mean = s_.healthy_grad.mean();
  h.grad_norm_std = s_.healthy_grad.std();
  h.grad_norm_max = s_.healthy_max.value();
  h.loss_mean = s_.healthy_loss.mean();
  h.healthy_steps = s_.healthy_steps;
  return h;
}

}  // namespace gradwatch::detect
