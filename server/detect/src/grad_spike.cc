#include <algorithm>
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
  if (log_.count() == 0) {  // nothing to compare the first norm with
    Learn(x, norm, false);
    return std::nullopt;
  }
  z_ = Z(x);
  double ratio = norm / max_.value();  // max_ > 0: every learned norm was > 0
  bool critical = ratio >= CriticalRatio() ||
                  (log_.ready() && z_ >= t_.spike_z_critical && ratio >= t_.spike_crit_min_ratio);
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

// After the warm-up, z against the EWMA. Before it, against the mean so far with σ pooled with
// a prior σ, so that two or three similar first norms do not make every later batch "6σ".
double GradSpikeDetector::Z(double log_norm) const {
  if (log_.ready()) return log_.Z(log_norm, t_.spike_std_floor);
  double n = static_cast<double>(log_.count());
  double w = t_.spike_prior_weight;
  double var = (w * t_.spike_prior_std * t_.spike_prior_std + (n - 1) * log_.var()) / (w + n - 1);
  return (log_norm - log_.mean()) / std::max(std::sqrt(var), t_.spike_std_floor);
}

// spike_young_ratio with one norm seen, falling linearly to spike_max_ratio at the warm-up's end.
double GradSpikeDetector::CriticalRatio() const {
  uint64_t warmup = std::max<uint64_t>(t_.spike_warmup, 2);
  if (log_.count() >= warmup) return t_.spike_max_ratio;
  double young = std::max(t_.spike_young_ratio, t_.spike_max_ratio);
  double f = static_cast<double>(log_.count() - 1) / static_cast<double>(warmup - 1);
  return young + f * (t_.spike_max_ratio - young);
}

Event GradSpikeDetector::Spike(uint64_t step, double norm, double ratio, Severity severity) const {
  Event e;
  e.step = step;
  e.kind = EventKind::kGradSpike;
  e.severity = severity;
  e.value = z_ >= t_.spike_z_warning ? z_ : ratio;
  std::string history =
      log_.ready() ? std::string()
                   : Format(" (%llu norms seen)", static_cast<unsigned long long>(log_.count()));
  e.message = Format(
      "grad norm %.3g is %.1fσ above its running mean %.3g (z on log norm), %.3gx the recent "
      "max %.3g%s",
      norm, z_, std::exp(log_.mean()), ratio, max_.value(), history.c_str());
  return e;
}

// A spike is learned clipped to the warning level, as ZClip learns its clipped norm; the
// recent maximum learns the clipped norm too, so a lasting new level becomes normal in both.
// Before the warm-up a spike is learned at the mean: there is no σ to clip to yet.
void GradSpikeDetector::Learn(double log_norm, double norm, bool spike) {
  if (spike) {
    log_norm = log_.ready() ? std::fmin(log_norm, log_.At(t_.spike_z_warning, t_.spike_std_floor))
                            : log_.mean();
  }
  log_.Add(log_norm);
  max_.Add(spike ? std::exp(log_norm) : norm);
}

}  // namespace gradwatch::detect
