// Loss spike and divergence: the two detectors that read only the training loss.
#include <cmath>
#include <limits>

#include "format.h"
#include "gradwatch/detect/detectors.h"

namespace gradwatch::detect {
namespace {

Event LossSpike(uint64_t step, double loss, double mean, double ratio, double z,
                Severity severity) {
  Event e;
  e.step = step;
  e.kind = EventKind::kLossSpike;
  e.severity = severity;
  e.value = ratio;
  e.message =
      Format("loss %.3g is %.2fx its running mean %.3g (%.1fσ on log loss)", loss, ratio, mean, z);
  return e;
}

}  // namespace

LossSpikeDetector::LossSpikeDetector(const Thresholds& t)
    : t_(t),
      linear_(t.spike_alpha, t.spike_var_alpha, t.spike_warmup),
      log_(t.spike_alpha, t.spike_var_alpha, t.spike_warmup) {}

std::optional<Event> LossSpikeDetector::OnLoss(uint64_t step, double loss) {
  if (loss <= 0) {  // ratios and logs need a positive loss
    latch_.Update(false);
    return std::nullopt;
  }
  double x = std::log(loss);
  if (!log_.ready()) {
    Learn(loss, x, false);
    return std::nullopt;
  }
  double mean = linear_.mean();
  double ratio = loss / mean;
  double z = log_.Z(x, t_.loss_std_floor);
  bool on = Spiking(ratio, z);
  Severity severity =
      ratio >= t_.loss_spike_critical_ratio ? Severity::kCritical : Severity::kWarning;
  Learn(loss, x, on);
  if (!latch_.Update(on, severity)) return std::nullopt;
  return LossSpike(step, loss, mean, ratio, z, severity);
}

bool LossSpikeDetector::Spiking(double ratio, double z) const {
  bool jump = (ratio >= t_.loss_spike_ratio || z >= t_.loss_z) && z >= t_.loss_z_min;
  // Hysteresis as for grad spikes: held until the ratio is below its square root and z below half.
  bool held = latch_.on() && (ratio >= std::sqrt(t_.loss_spike_ratio) || z >= t_.loss_z / 2);
  return jump || held;
}

// A spike is clipped to the warning level before it is learned, like a grad spike.
void LossSpikeDetector::Learn(double loss, double log_loss, bool spike) {
  if (spike) {
    loss = std::fmin(loss, t_.loss_spike_ratio * linear_.mean());
    log_loss = std::fmin(log_loss, log_.At(t_.loss_z, t_.loss_std_floor));
  }
  linear_.Add(loss);
  log_.Add(log_loss);
}

DivergenceDetector::DivergenceDetector(const Thresholds& t)
    : t_(t), smooth_(t.div_alpha, t.div_alpha, 1), min_(std::numeric_limits<double>::infinity()) {}

std::optional<Event> DivergenceDetector::OnLoss(uint64_t step, double loss) {
  smooth_.Add(loss);
  if (smooth_.count() < t_.spike_warmup) return std::nullopt;  // early losses fall fast
  double s = smooth_.mean();
  min_ = std::fmin(min_, s);
  above_ = s > min_ + t_.div_margin * std::fabs(min_) ? above_ + 1 : 0;
  if (!latch_.Update(above_ >= t_.div_window)) return std::nullopt;
  Event e;
  e.step = step;
  e.kind = EventKind::kDivergence;
  e.severity = Severity::kCritical;
  e.value = s / min_;
  e.message = Format(
      "smoothed loss %.3g has stayed more than %.0f%% above its minimum %.3g for "
      "%llu steps",
      s, 100 * t_.div_margin, min_, static_cast<unsigned long long>(above_));
  return e;
}

}  // namespace gradwatch::detect
