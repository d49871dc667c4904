// Loss spike and divergence: the two detectors that read only the training loss.
#include <algorithm>
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
  if (++seen_ <= 10) initial_ += (loss - initial_) / static_cast<double>(seen_);
  if (!log_.ready()) {
    Learn(loss, x, false);
    return std::nullopt;
  }
  double mean = linear_.mean();
  double ratio = loss / mean;
  double z = log_.Z(x, t_.loss_std_floor);
  bool on = Spiking(loss, ratio, z);
  Severity severity =
      ratio >= t_.loss_spike_critical_ratio ? Severity::kCritical : Severity::kWarning;
  Learn(loss, x, on);
  if (!latch_.Update(on, severity)) return std::nullopt;
  return LossSpike(step, loss, mean, ratio, z, severity);
}

bool LossSpikeDetector::Spiking(double loss, double ratio, double z) const {
  bool jump = (ratio >= t_.loss_spike_ratio || z >= t_.loss_z) && z >= t_.loss_z_min;
  jump = jump || (ratio >= t_.loss_spike_critical_ratio &&
                  loss - linear_.mean() >= t_.loss_abs_jump * initial_);
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
    : t_(t),
      smooth_(t.div_alpha, t.div_alpha, 1),
      min_(std::numeric_limits<double>::infinity()),
      logs_(t.div_trend_window),
      recent_(t.div_window),
      last5_(5) {}

std::optional<Event> DivergenceDetector::OnLoss(uint64_t step, double loss) {
  smooth_.Add(loss);
  if (++seen_ <= 10) initial_ += (loss - initial_) / static_cast<double>(seen_);
  if (loss > 0) logs_.Push(std::log(loss));
  last5_.Push(loss);
  double level = recent_.Min();  // before this report: the level it is compared with
  double s = smooth_.mean();
  recent_.Push(s);
  if (seen_ < t_.spike_warmup) return std::nullopt;  // early losses fall fast
  double floor = t_.div_floor * std::fabs(initial_);
  min_ = std::fmin(min_, s);
  above_ = s > min_ + std::fmax(t_.div_margin * std::fabs(min_), floor) ? above_ + 1 : 0;
  // The full window, and its second half with a stricter threshold: a steep rise is seen sooner.
  Trend trend = Fit(logs_.size());
  Trend recent = Fit(logs_.size() / 2);
  if (recent.t >= t_.div_trend_short_t && trend.t < t_.div_trend_t) trend = recent;
  double m5 = Median5();
  bool persistent = above_ >= t_.div_window;
  bool doubled = level > 0 && m5 >= t_.div_double * level && m5 - level >= floor;
  bool rising = (trend.t >= t_.div_trend_t || recent.t >= t_.div_trend_short_t) &&
                trend.rate >= t_.div_trend_min_rate && trend.rise >= floor;
  // Hysteresis: an episode holds while the trend stays at half its significance, the loss above
  // its minimum, or the recent loss above the square root of the doubling.
  bool held = latch_.on() && (trend.t >= t_.div_trend_t / 2 || above_ > 0 ||
                              (level > 0 && m5 >= std::sqrt(t_.div_double) * level));
  Severity severity = persistent ? Severity::kCritical : Severity::kWarning;
  if (!latch_.Update(persistent || doubled || rising || held, severity)) return std::nullopt;
  if (persistent) {
    return Make(step, severity, s / min_,
                Format("smoothed loss %.3g has stayed more than %.0f%% above its minimum %.3g for "
                       "%llu steps",
                       s, 100 * t_.div_margin, min_, static_cast<unsigned long long>(above_)));
  }
  if (doubled) {
    return Make(step, severity, m5 / level,
                Format("loss %.3g (median of the last 5) is %.2fx its recent level %.3g", m5,
                       m5 / level, level));
  }
  return Make(step, severity, trend.rate,
              Format("loss is rising %.2f%% per step over the last %zu steps (%.1f standard errors; "
                     "smoothed loss %.3g, its minimum %.3g)",
                     100 * trend.rate, trend.n, trend.t, s, min_));
}

// Least-squares line through the last n log losses against their index. Needs a full window.
DivergenceDetector::Trend DivergenceDetector::Fit(size_t n) const {
  Trend out;
  if (!logs_.full() || n < 3) return out;
  const size_t first = logs_.size() - n;
  const double count = static_cast<double>(n);
  double mx = (count - 1) / 2, my = 0;
  for (size_t i = 0; i < n; ++i) my += logs_[first + i];
  my /= count;
  // Centred sums in one more pass; sum of (i - mx)^2 over i < n is n(n^2 - 1)/12, and the
  // residual sum of squares is syy - b*sxy.
  double sxx = count * (count * count - 1) / 12, sxy = 0, syy = 0;
  for (size_t i = 0; i < n; ++i) {
    double dy = logs_[first + i] - my;
    sxy += (static_cast<double>(i) - mx) * dy;
    syy += dy * dy;
  }
  double b = sxy / sxx, ssr = std::fmax(syy - b * sxy, 0.0);
  out.n = n;
  double se = std::sqrt(ssr / static_cast<double>(n - 2) / sxx);
  out.rate = std::expm1(b);
  out.t = se > 0 ? b / se : (b > 0 ? std::numeric_limits<double>::infinity() : 0);
  out.rise = std::exp(my + b * mx) - std::exp(my - b * mx);  // fitted last - fitted first
  return out;
}

double DivergenceDetector::Median5() const {
  double v[5];
  size_t n = last5_.size();
  for (size_t i = 0; i < n; ++i) v[i] = last5_[i];
  std::nth_element(v, v + n / 2, v + n);
  return v[n / 2];
}

Event DivergenceDetector::Make(uint64_t step, Severity severity, double value,
                               std::string message) const {
  Event e;
  e.step = step;
  e.kind = EventKind::kDivergence;
  e.severity = severity;
  e.value = value;
  e.message = std::move(message);
  return e;
}

}  // namespace gradwatch::detect
