// Collapse, vanishing gradients and validation collapse: the "training has stopped learning"
// detectors, as opposed to the "something blew up" ones.
#include <cmath>

#include "format.h"
#include "gradwatch/detect/detectors.h"

namespace gradwatch::detect {
namespace {

bool AtMost(double v, double limit) {
  return v <= limit;
}  // false for NaN (not reported)

// The lower of the reported Jaccard values; NaN if neither is reported.
double LowestJaccard(double soft, double hard) {
  if (std::isnan(soft)) return hard;
  if (std::isnan(hard)) return soft;
  return std::fmin(soft, hard);
}

}  // namespace

CollapseDetector::CollapseDetector(double loss_upper_bound, const Thresholds& t)
    : t_(t), bound_(loss_upper_bound) {}

std::optional<Event> CollapseDetector::OnStep(const StepSample& s, double healthy_grad) {
  ++reports_;
  bool pinned = departed_ && Pinned(s.loss);
  bool flat = departed_ && Flat(s.loss);
  double jaccard = LowestJaccard(s.jaccard_soft, s.jaccard_hard);
  bool reported = s.has_grad_norm || !std::isnan(jaccard);
  bool zero = AtMost(jaccard, t_.collapse_jaccard_eps) || GradZero(s, healthy_grad);
  bool looks = (pinned || flat) && (zero || (pinned && !reported));
  run_ = looks ? run_ + 1 : 0;
  NoteDeparture(s.loss);
  prev_ = s.loss;
  if (!latch_.Update(run_ >= Window())) return std::nullopt;
  return Collapse(s, pinned);
}

bool CollapseDetector::Pinned(double loss) const {
  return bound_ > 0 && loss >= bound_ * (1 - t_.collapse_eps);
}

bool CollapseDetector::Flat(double loss) const {
  return std::fabs(loss - prev_) <= t_.collapse_flat_rtol * std::fabs(prev_);  // NaN prev: false
}

bool CollapseDetector::GradZero(const StepSample& s, double healthy_grad) const {
  if (!s.has_grad_norm) return false;
  return s.grad_norm <= t_.collapse_grad_eps ||
         (healthy_grad > 0 && s.grad_norm <= t_.vanish_ratio * healthy_grad);
}

// Collapse means returning to the bound (or going flat) after having learned something.
void CollapseDetector::NoteDeparture(double loss) {
  if (std::isnan(first_)) first_ = loss;
  if (bound_ > 0) {
    departed_ = departed_ || loss < bound_ * (1 - t_.collapse_departure);
  } else {
    departed_ = departed_ || std::fabs(loss - first_) > t_.collapse_departure * std::fabs(first_);
  }
}

uint64_t CollapseDetector::Window() const {
  return reports_ < t_.spike_warmup ? t_.collapse_short_window : t_.collapse_window;
}

Event CollapseDetector::Collapse(const StepSample& s, bool pinned) const {
  std::string how = pinned ? Format("pinned at its bound %g", bound_) : std::string("flat");
  std::string with;
  double jaccard = LowestJaccard(s.jaccard_soft, s.jaccard_hard);
  if (!std::isnan(jaccard)) with += Format(", Jaccard %.3g", jaccard);
  if (s.has_grad_norm) with += Format(", grad norm %.3g", s.grad_norm);
  Event e;
  e.step = s.step;
  e.kind = EventKind::kCollapse;
  e.severity = Severity::kCritical;
  e.value = s.loss;
  e.message = Format("loss %.4g %s%s for %llu reports: the model has stopped learning", s.loss,
                     how.c_str(), with.c_str(), static_cast<unsigned long long>(run_));
  return e;
}

VanishingDetector::VanishingDetector(const Thresholds& t) : t_(t) {}

std::optional<Event> VanishingDetector::OnNorm(uint64_t step, double norm, double healthy_grad) {
  bool below = healthy_grad > 0 ? norm < t_.vanish_ratio * healthy_grad
                                : seen_positive_ && norm <= t_.collapse_grad_eps;
  seen_positive_ = seen_positive_ || norm > t_.collapse_grad_eps;
  below_ = below ? below_ + 1 : 0;
  if (!latch_.Update(below_ >= t_.vanish_window)) return std::nullopt;
  Event e;
  e.step = step;
  e.kind = EventKind::kVanishing;
  e.severity = Severity::kCritical;
  e.value = healthy_grad > 0 ? norm / healthy_grad : 0;
  e.message =
      healthy_grad > 0
          ? Format("grad norm %.3g has been below %g%% of its healthy level %.3g for %llu steps",
                   norm, 100 * t_.vanish_ratio, healthy_grad,
                   static_cast<unsigned long long>(below_))
          : Format("grad norm %.3g has been zero for %llu steps since it was last positive", norm,
                   static_cast<unsigned long long>(below_));
  return e;
}

DeadNetworkDetector::DeadNetworkDetector(const Thresholds& t) : t_(t) {}

void DeadNetworkDetector::NoteViolent(uint64_t step, const char* what, double level) {
  if (!(level > 0) || cause_ != 0) return;  // the first violent event of an episode is the cause
  cause_ = step;
  what_ = what;
  level_ = level;
  since_ = below_ = 0;
}

std::optional<Event> DeadNetworkDetector::OnNorm(uint64_t step, double norm) {
  if (cause_ == 0 || step == cause_) return std::nullopt;
  if (++since_ > t_.dead_horizon) {
    cause_ = 0;
    below_ = 0;
    return std::nullopt;
  }
  below_ = norm < t_.dead_ratio * level_ ? below_ + 1 : 0;
  if (below_ < t_.dead_window) return std::nullopt;
  Event e;
  e.step = step;
  e.kind = EventKind::kVanishing;
  e.severity = Severity::kCritical;
  e.value = norm / level_;
  e.cause_step = cause_;
  e.message = Format(
      "grad norm %.3g has stayed below %g%% of its level %.3g for %llu steps since the %s at step "
      "%llu: the network went dead after it",
      norm, 100 * t_.dead_ratio, level_, static_cast<unsigned long long>(below_), what_.c_str(),
      static_cast<unsigned long long>(cause_));
  cause_ = 0;  // once per violent event
  below_ = 0;
  return e;
}

ValCollapseDetector::ValCollapseDetector(const Thresholds& t) : t_(t) {}

std::optional<Event> ValCollapseDetector::OnEval(const EvalSample& eval) {
  double j = std::isnan(eval.jaccard_soft) ? eval.jaccard_hard : eval.jaccard_soft;
  if (std::isnan(j)) return std::nullopt;  // no validation Jaccard in this report
  bool on = best_ >= t_.val_min_best && j <= t_.val_collapse_fraction * best_;
  double best = best_;
  if (std::isfinite(j)) best_ = std::fmax(best_, j);
  if (!latch_.Update(on)) return std::nullopt;
  Event e;
  e.step = eval.step;
  e.kind = EventKind::kValCollapse;
  e.severity = Severity::kCritical;
  e.value = j;
  e.message =
      Format("validation Jaccard %.3g fell to %.1f%% of its best %.3g", j, 100 * j / best, best);
  return e;
}

}  // namespace gradwatch::detect
