// Learning-rate jumps and update size: the detectors that read what the optimizer is about to do,
// so that gated mode can veto an update before it lands.
#include <cmath>

#include "format.h"
#include "gradwatch/detect/detectors.h"

namespace gradwatch::detect {
namespace {

// "0.12 (95x its level 0.0013)", or "0.12" when there is no level yet.
std::string Size(double ratio, double level) {
  if (level <= 0) return Format("%.3g", ratio);
  return Format("%.3g (%.3gx its level %.3g)", ratio, ratio / level, level);
}

}  // namespace

UpdateDetector::UpdateDetector(const Thresholds& t)
    : t_(t), size_(t.spike_alpha, t.spike_var_alpha, t.spike_warmup) {}

std::optional<Event> UpdateDetector::OnStep(const StepSample& s) {
  double level_before = lr_level_;
  double jump = LrJump(s.learning_rate);
  bool lr_on = jump >= t_.lr_jump_warning;
  Severity lr_severity = jump >= t_.lr_jump_critical ? Severity::kCritical : Severity::kWarning;
  bool lr_fire = lr_latch_.Update(lr_on, lr_severity);

  double ratio = s.update_ratio, size_level = 0;
  bool size_on = std::isfinite(ratio) && ratio > 0 && SizeJump(ratio, &size_level);
  bool size_fire = size_latch_.Update(size_on);
  if (std::isfinite(ratio) && ratio > 0) LearnSize(ratio, size_on || lr_on);

  std::string size_text;
  if (std::isfinite(ratio))
    size_text = "; ||dw||/||w|| of the update would be " + Size(ratio, size_level);
  Event e;
  e.step = s.step;
  if (lr_fire) {
    e.kind = EventKind::kLrJump;
    e.severity = lr_severity;
    e.value = jump;
    e.message = Format("learning rate %.3g is %.3gx its level %.3g from the previous steps%s",
                       s.learning_rate, jump, level_before, size_text.c_str());
    return e;
  }
  if (!size_fire || lr_on) return std::nullopt;  // an LR jump already said it
  e.kind = EventKind::kUpdateSize;
  e.severity = Severity::kCritical;
  e.value = ratio;
  e.message = "||dw||/||w|| of the update would be " + Size(ratio, size_level) +
              ": an update this size can wreck the model in one step";
  return e;
}

// rate / level; 1 when either is unknown or not positive. Follows rates within the warning
// factor, and adopts a higher one that lasted lr_accept_after reports.
double UpdateDetector::LrJump(double lr) {
  if (!(std::isfinite(lr) && lr > 0)) return 1;
  if (lr_level_ <= 0) {
    lr_level_ = lr;
    return 1;
  }
  double jump = lr / lr_level_;
  if (jump < t_.lr_jump_warning || ++lr_high_ >= t_.lr_accept_after) {
    lr_level_ = lr;
    lr_high_ = 0;
  }
  return jump;
}

bool UpdateDetector::SizeJump(double ratio, double* level) const {
  if (size_.ready()) *level = std::exp(size_.mean());
  return ratio >= t_.update_abs_critical || (*level > 0 && ratio >= t_.update_jump * *level);
}

// A jumped update is learned at the level, so one bad step does not move it.
void UpdateDetector::LearnSize(double ratio, bool jumped) {
  size_.Add(jumped && size_.count() > 0 ? size_.mean() : std::log(ratio));
}

}  // namespace gradwatch::detect
