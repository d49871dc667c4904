#include <cmath>

#include "format.h"
#include "gradwatch/detect/detectors.h"

namespace gradwatch::detect {

GradSpikeDetector::GradSpikeDetector(const Thresholds& t)
    : t_(t), log_(t.spike_alpha, t.spike_var_alpha, t.spike_warmup), max_(t.spike_max_decay) {}

std::optional<Event> GradSpikeDetector::OnNorm(uint64_t step, double norm) {
  z_ = 0;
  if (norm <= 0) {  // log(0) = -inf; a zero norm is vanishing, not a spike
    latch_.Update(false);
    return std::nullopt;
  }
  double x = std::log(norm);
  if (!log_.ready()) {
    Learn(x, norm, false);
    return std::nullopt;
  }
  z_ = log_.Z(x, t_.spike_std_floor);
  double ratio = norm / max_.value();  // max_ > 0: every learned norm was > 0
  bool critical = z_ >= t_.spike_z_critical || ratio >= t_.spike_max_ratio;
  // Hysteresis: an episode holds until z is below half the warning level and the ratio below
  // the square root of its limit, so a norm hovering at a threshold fires once.
  bool held =
      latch_.on() && (z_ >= t_.spike_z_warning / 2 || ratio >= std::sqrt(t_.spike_max_ratio));
  bool on = critical || z_ >= t_.spike_z_warning || held;
  Severity severity = critical ? Severity::kCritical : Severity::kWarning;
  std::optional<Event> event;
  if (latch_.Update(on, severity)) event = Spike(step, norm, ratio, severity);
  Learn(x, norm, on);
  return event;
}

Event GradSpikeDetector::Spike(uint64_t step, double norm, double ratio, Severity severity) const {
  Event e;
  e.step = step;
  e.kind = EventKind::kGradSpike;
  e.severity = severity;
  e.value = z_ >= t_.spike_z_warning ? z_ : ratio;
  e.message = Format(
      "grad norm %.3g is %.1fσ above its running mean %.3g (z on log norm), %.3gx the recent "
      "max %.3g",
      norm, z_, std::exp(log_.mean()), ratio, max_.value());
  return e;
}

// A spike is learned clipped to the warning level, as ZClip learns its clipped norm; the
// recent maximum learns the clipped norm too, so a lasting new level becomes normal in both.
void GradSpikeDetector::Learn(double log_norm, double norm, bool spike) {
  if (spike) log_norm = std::fmin(log_norm, log_.At(t_.spike_z_warning, t_.spike_std_floor));
  log_.Add(log_norm);
  max_.Add(spike ? std::exp(log_norm) : norm);
}

}  // namespace gradwatch::detect
