// The individual detectors RunDetector combines. Each is fed in step order, O(1) per report,
// returns an event only when its condition starts (or escalates), and exposes quiet(): false while
// its condition is on or building, so RunDetector learns healthy statistics only from quiet steps.
// Events come back without attribution or incident id; RunDetector adds those. Not thread-safe.
#pragma once

#include <cstdint>
#include <optional>

#include "gradwatch/detect/event.h"
#include "gradwatch/detect/stats.h"
#include "gradwatch/detect/thresholds.h"

namespace gradwatch::detect {

// Gradient spike: z of log(grad norm) against an EWMA (critical ≥ spike_z_critical, warning ≥
// spike_z_warning), or the norm ≥ spike_max_ratio x the recent maximum (critical), after
// spike_warmup norms. A spike is clipped to the warning level before it is learned (as ZClip
// does), so statistics adapt to a lasting shift but are not dragged by one outlier. An episode
// lasts until z < spike_z_warning / 2 and the ratio < sqrt(spike_max_ratio) (hysteresis).
// Event value: the z-score, or the ratio when only the ratio test fired.
class GradSpikeDetector {
 public:
  explicit GradSpikeDetector(const Thresholds& t);
  // norm: a finite global grad norm. A zero norm is left to VanishingDetector.
  std::optional<Event> OnNorm(uint64_t step, double norm);
  bool quiet() const { return !latch_.on(); }
  bool warmed_up() const { return log_.ready(); }
  double z() const { return z_; }  // z of the latest norm; 0 during the warm-up

 private:
  Event Spike(uint64_t step, double norm, double ratio, Severity severity) const;
  void Learn(double log_norm, double norm, bool spike);

  Thresholds t_;
  Ewma log_;
  DecayingMax max_;
  Latch latch_;
  double z_ = 0;
};

// Loss spike: loss ≥ loss_spike_ratio x its running mean (critical at loss_spike_critical_ratio),
// or z of log loss ≥ loss_z; either only with z ≥ loss_z_min, so a noisy loss's ordinary swings
// do not count. After spike_warmup losses. Needs a positive loss; others are ignored.
// An episode lasts until the ratio < sqrt(loss_spike_ratio) and z < loss_z / 2 (hysteresis).
// Event value: loss / running mean.
class LossSpikeDetector {
 public:
  explicit LossSpikeDetector(const Thresholds& t);
  std::optional<Event> OnLoss(uint64_t step, double loss);  // loss: finite
  bool quiet() const { return !latch_.on(); }

 private:
  bool Spiking(double ratio, double z) const;
  void Learn(double loss, double log_loss, bool spike);

  Thresholds t_;
  Ewma linear_;
  Ewma log_;
  Latch latch_;
};

// Divergence: the smoothed loss (EWMA, div_alpha) stays more than div_margin above its running
// minimum for div_window consecutive reports. The minimum is tracked after spike_warmup reports.
// Event value: smoothed loss / minimum. Critical.
class DivergenceDetector {
 public:
  explicit DivergenceDetector(const Thresholds& t);
  std::optional<Event> OnLoss(uint64_t step, double loss);  // loss: finite
  bool quiet() const { return above_ == 0; }

 private:
  Thresholds t_;
  Ewma smooth_;
  double min_;
  uint64_t above_ = 0;
  Latch latch_;
};

// Collapse: a loss pinned at its bound (within collapse_eps) or flat (relative change ≤
// collapse_flat_rtol), together with Jaccard ≈ 0 and/or grad norm ≈ 0, for collapse_window
// consecutive reports, or collapse_short_window while the run has fewer than spike_warmup reports
// (epoch-level logs, where statistical warm-ups never finish). Counts only after the loss has
// left its bound (collapse_departure). A loss pinned at its bound needs no corroboration when
// neither Jaccard nor grad norm is reported. Event value: the loss. Critical.
class CollapseDetector {
 public:
  CollapseDetector(double loss_upper_bound, const Thresholds& t);
  // healthy_grad: the healthy mean grad norm, 0 while unknown.
  std::optional<Event> OnStep(const StepSample& s, double healthy_grad);
  bool quiet() const { return run_ == 0; }

 private:
  bool Pinned(double loss) const;
  bool Flat(double loss) const;
  bool GradZero(const StepSample& s, double healthy_grad) const;
  void NoteDeparture(double loss);
  uint64_t Window() const;
  Event Collapse(const StepSample& s, bool pinned) const;

  Thresholds t_;
  double bound_;
  double first_ = kNaN;
  double prev_ = kNaN;
  bool departed_ = false;
  uint64_t reports_ = 0;
  uint64_t run_ = 0;
  Latch latch_;
};

// Vanishing gradients: grad norm below vanish_ratio x the healthy mean for vanish_window
// consecutive reports. Silent until the healthy level is known. Event value: norm / healthy mean.
// Critical.
class VanishingDetector {
 public:
  explicit VanishingDetector(const Thresholds& t);
  // healthy_grad: the healthy mean grad norm, 0 while unknown.
  std::optional<Event> OnNorm(uint64_t step, double norm, double healthy_grad);
  bool quiet() const { return below_ == 0; }

 private:
  Thresholds t_;
  uint64_t below_ = 0;
  Latch latch_;
};

// Validation collapse: validation Jaccard (soft, else hard) at or below val_collapse_fraction of
// its best, once the best reached val_min_best. One report is enough: evaluations are sparse.
// Event value: the validation Jaccard. Critical.
class ValCollapseDetector {
 public:
  explicit ValCollapseDetector(const Thresholds& t);
  std::optional<Event> OnEval(const EvalSample& e);

 private:
  Thresholds t_;
  double best_ = 0;
  Latch latch_;
};

}  // namespace gradwatch::detect
