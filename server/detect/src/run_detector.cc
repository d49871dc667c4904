#include "gradwatch/detect/run_detector.h"

#include <cmath>

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

}  // namespace

RunDetector::RunDetector(RunInfo info, Thresholds t)
    : t_(t),
      grad_(t),
      loss_(t),
      divergence_(t),
      collapse_(info.loss_upper_bound, t),
      vanishing_(t),
      val_(t),
      layers_(std::move(info.layer_names), t),
      healthy_grad_(t.spike_alpha, t.spike_var_alpha, t.spike_warmup),
      healthy_max_(t.spike_max_decay),
      healthy_loss_(t.spike_alpha, t.spike_var_alpha, t.spike_warmup) {}

std::vector<Event> RunDetector::OnStep(const StepSample& s) {
  std::vector<Event> out;
  layers_.Score(s.step, s.layer_norms, s.n_layers);
  bool finite = Finite(s);
  if (non_finite_.Update(!finite)) out.push_back(NonFinite(s));
  if (finite) Detect(s, &out);
  for (Event& e : out) layers_.Attribute(&e);
  if (finite && out.empty() && Quiet()) Learn(s);
  return out;
}

// Detectors run in EventKind order, so events come out in that order.
void RunDetector::Detect(const StepSample& s, std::vector<Event>* out) {
  double healthy = HealthyGrad();
  if (s.has_grad_norm) Push(grad_.OnNorm(s.step, s.grad_norm), out);
  Push(loss_.OnLoss(s.step, s.loss), out);
  Push(divergence_.OnLoss(s.step, s.loss), out);
  Push(collapse_.OnStep(s, healthy), out);
  if (s.has_grad_norm) Push(vanishing_.OnNorm(s.step, s.grad_norm, healthy), out);
}

bool RunDetector::Quiet() const {
  return grad_.quiet() && loss_.quiet() && divergence_.quiet() && collapse_.quiet() &&
         vanishing_.quiet();
}

void RunDetector::Learn(const StepSample& s) {
  ++healthy_steps_;
  healthy_loss_.Add(s.loss);
  if (s.has_grad_norm) {
    healthy_grad_.Add(s.grad_norm);
    healthy_max_.Add(s.grad_norm);
  }
  layers_.Learn(s.layer_norms, s.n_layers);
}

double RunDetector::HealthyGrad() const {
  return healthy_grad_.ready() ? healthy_grad_.mean() : 0;
}

std::vector<Event> RunDetector::OnEval(const EvalSample& e) {
  std::vector<Event> out;
  Push(val_.OnEval(e), &out);
  return out;
}

HealthyStats RunDetector::stats() const {
  HealthyStats h;
  h.warmed_up = healthy_grad_.ready();
  h.grad_norm_mean = healthy_grad_.mean();
  h.grad_norm_std = healthy_grad_.std();
  h.grad_norm_max = healthy_max_.value();
  h.loss_mean = healthy_loss_.mean();
  h.healthy_steps = healthy_steps_;
  return h;
}

}  // namespace gradwatch::detect
