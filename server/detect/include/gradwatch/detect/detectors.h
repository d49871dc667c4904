// The individual detectors RunDetector combines. Each is fed in step order, O(1) per report,
// returns an event only when its condition starts (or escalates), and exposes quiet(): false while
// its condition is on or building, so RunDetector learns healthy statistics only from quiet steps.
// Events come back without attribution or incident id; RunDetector adds those. Not thread-safe.
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "gradwatch/detect/event.h"
#include "gradwatch/detect/stats.h"
#include "gradwatch/detect/thresholds.h"

namespace gradwatch::detect {

// Gradient spike: z of log(grad norm) against an EWMA (critical ≥ spike_z_critical with the norm
// ≥ spike_crit_min_ratio x the recent max, warning ≥ spike_z_warning), or the norm ≥
// spike_max_ratio x the recent maximum (critical). From the second norm on: before the warm-up
// the ratio limit starts at spike_young_ratio and falls to spike_max_ratio, and z uses σ pooled
// with a prior (spike_prior_std), so a young run's noise stays below critical and a x1000 jump
// does not. A spike is clipped to the warning level before it is learned (as ZClip does), so
// statistics adapt to a lasting shift but are not dragged by one outlier. An episode lasts until
// z < spike_z_warning / 2 and the ratio < sqrt(spike_max_ratio) (hysteresis).
// Event value: the z-score, or the ratio when only the ratio test fired.
class GradSpikeDetector {
 public:
  explicit GradSpikeDetector(const Thresholds& t);
  // norm: a finite global grad norm. A zero norm is left to VanishingDetector.
  std::optional<Event> OnNorm(uint64_t step, double norm);
  bool quiet() const { return !latch_.on(); }
  bool warmed_up() const { return log_.ready(); }
  double z() const { return z_; }  // z of the latest norm; 0 for the first
  // The running level of the grad norm (geometric mean of the learned norms); 0 before any.
  double level() const { return log_.count() ? std::exp(log_.mean()) : 0; }

 private:
  double Z(double log_norm) const;
  double CriticalRatio() const;
  Event Spike(uint64_t step, double norm, double ratio, Severity severity) const;
  void Learn(double log_norm, double norm, bool spike);

  Thresholds t_;
  Ewma log_;
  DecayingMax max_;
  Latch latch_;
  double z_ = 0;
};

// Learning-rate jumps and update size, from the first step. The learning rate against its level
// (the last accepted rate: a rate within lr_jump_warning x of it, or one that lasted
// lr_accept_after reports): warning at lr_jump_warning x, critical at lr_jump_critical x, event
// kLrJump with value = rate / level. The update ratio ||dw||/||w|| (when reported): critical at
// update_abs_critical from the first step, or after the warm-up at update_jump x its running
// level (EWMA of its log), event kUpdateSize with value = the ratio. One event per step: an LR
// jump names the update size in its message. Each fires once per episode.
class UpdateDetector {
 public:
  explicit UpdateDetector(const Thresholds& t);
  std::optional<Event> OnStep(const StepSample& s);
  bool quiet() const { return !lr_latch_.on() && !size_latch_.on(); }
  double lr_level() const { return lr_level_; }  // 0 before the first rate

 private:
  double LrJump(double lr);
  bool SizeJump(double ratio, double* level) const;
  void LearnSize(double ratio, bool jumped);

  Thresholds t_;
  double lr_level_ = 0;
  uint64_t lr_high_ = 0;  // consecutive reports above the level
  Ewma size_;
  Latch lr_latch_, size_latch_;
};

// Loss spike: loss ≥ loss_spike_ratio x its running mean (critical at loss_spike_critical_ratio),
// or z of log loss ≥ loss_z; either only with z ≥ loss_z_min, so a noisy loss's ordinary swings
// do not count; or, whatever z, ≥ loss_spike_critical_ratio x the mean and loss_abs_jump x the
// initial level (mean of the first 10 losses) above it. After spike_warmup losses. Needs a
// positive loss; others are ignored.
// An episode lasts until the ratio < sqrt(loss_spike_ratio) and z < loss_z / 2 (hysteresis).
// Event value: loss / running mean.
class LossSpikeDetector {
 public:
  explicit LossSpikeDetector(const Thresholds& t);
  std::optional<Event> OnLoss(uint64_t step, double loss);  // loss: finite
  bool quiet() const { return !latch_.on(); }

 private:
  bool Spiking(double loss, double ratio, double z) const;
  void Learn(double loss, double log_loss, bool spike);

  Thresholds t_;
  double initial_ = 0;
  uint64_t seen_ = 0;
  Ewma linear_;
  Ewma log_;
  Latch latch_;
};

// Divergence, three rules, each ignoring changes smaller than div_floor x the run's initial loss
// level (so a converged loss near 0 never "diverges" on noise):
//   trend (warning): the least-squares slope of log loss over div_trend_window reports is
//     ≥ div_trend_t standard errors (or over the last half of them ≥ div_trend_short_t) and
//     ≥ div_trend_min_rate per report;
//   doubling (warning): the median of the last 5 losses ≥ div_double x the lowest smoothed loss
//     of the last div_window reports;
//   persistence (critical): the smoothed loss (EWMA, div_alpha) stays more than div_margin above
//     its running minimum for div_window consecutive reports.
// Rules start after spike_warmup reports (early losses fall fast). Event value: the fitted rate
// per report (trend), or the loss / its level. An episode lasts while any rule holds.
class DivergenceDetector {
 public:
  explicit DivergenceDetector(const Thresholds& t);
  std::optional<Event> OnLoss(uint64_t step, double loss);  // loss: finite
  bool quiet() const { return !latch_.on(); }

 private:
  struct Trend {
    double rate = 0, t = 0, rise = 0;  // per-report slope of log loss, its t, the fitted rise
    size_t n = 0;                      // reports fitted
  };
  Trend Fit(size_t n) const;
  double Median5() const;
  Event Make(uint64_t step, Severity severity, double value, std::string message) const;

  Thresholds t_;
  Ewma smooth_;
  double initial_ = 0;  // mean of the first 10 losses
  uint64_t seen_ = 0;
  double min_;
  uint64_t above_ = 0;
  Window logs_;    // the last div_trend_window log losses
  Window recent_;  // the last div_window smoothed losses
  Window last5_;   // the last 5 losses
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
// consecutive reports; before the healthy level is known, a grad norm of exactly ~0
// (≤ collapse_grad_eps) after a positive one, for as long. Event value: norm / healthy mean (0
// when it is not known yet). Critical.
class VanishingDetector {
 public:
  explicit VanishingDetector(const Thresholds& t);
  // healthy_grad: the healthy mean grad norm, 0 while unknown.
  std::optional<Event> OnNorm(uint64_t step, double norm, double healthy_grad);
  bool quiet() const { return below_ == 0; }

 private:
  Thresholds t_;
  bool seen_positive_ = false;
  uint64_t below_ = 0;
  Latch latch_;
};

// A dead network: after a violent event (NoteViolent), the grad norm falls below dead_ratio x its
// level before the event for dead_window consecutive reports, within dead_horizon reports. This
// is how an explosion that did not show as a collapse (a network stuck at "everything is
// foreground", loss 0.7) is caught within a few steps. Event kVanishing, critical, cause_step =
// the violent event's step. Once per violent event.
class DeadNetworkDetector {
 public:
  explicit DeadNetworkDetector(const Thresholds& t);
  // A violent event at `step`; level: the grad norm's level before it (0 = unknown: ignored).
  void NoteViolent(uint64_t step, const char* what, double level);
  std::optional<Event> OnNorm(uint64_t step, double norm);
  bool quiet() const { return below_ == 0; }

 private:
  Thresholds t_;
  uint64_t cause_ = 0;  // the violent event's step; 0 = none pending
  std::string what_;
  double level_ = 0;
  uint64_t since_ = 0;  // reports since the event
  uint64_t below_ = 0;
};

// A run that never learns: after progress_window reports, the smoothed loss (div_alpha) has never
// been progress_min_drop below its initial level (the mean of the first 10 losses). Warning, once
// per run. Event value: the lowest smoothed loss / the initial level.
class NoProgressDetector {
 public:
  explicit NoProgressDetector(const Thresholds& t);
  std::optional<Event> OnLoss(uint64_t step, double loss);  // loss: finite

 private:
  Thresholds t_;
  Ewma smooth_;
  double initial_ = 0;
  double lowest_;
  uint64_t seen_ = 0;
  bool done_ = false;
};

// Data suspects: data_spikes separate grad-spike episodes within data_window reports (each a new
// episode: the norm went back to its level in between, so the batch, not a lasting change).
// Warning, with the steps and, when the trainer reports its batches (StepSample::sample_ids), the
// items of those batches, the ones in more than one first; fires again only after data_window
// reports without a new episode. Event value: the number of episodes. Feed every report, with
// whether a grad-spike episode started on it.
class DataSuspectDetector {
 public:
  explicit DataSuspectDetector(const Thresholds& t);
  std::optional<Event> OnStep(const StepSample& s, bool spike_started);

 private:
  struct Start {
    uint64_t step;
    std::vector<uint64_t> items;  // the batch's items, if reported
  };
  std::string Items() const;

  Thresholds t_;
  std::vector<Start> starts_;  // episode starts within the window, oldest first
  uint64_t last_fired_ = 0;
  bool fired_ = false;
};

// Data parallel: the rank a step's trouble comes from. For each rank, its value against the
// median of the other ranks' values (with 2 ranks: the other rank's). Non-finite values sort
// above every finite one.
struct RankLead {
  uint32_t rank = 0;
  double value = kNaN;          // the rank's own value
  double others_median = kNaN;  // the median of the other ranks' values
  double ratio = kNaN;          // value / others_median; +inf for a non-finite value
};
// The rank whose value is the largest multiple of the others' median, if that is at least
// min_ratio; a non-finite value against a finite median leads at once (min_ratio = +inf: only
// such a rank). Nothing for v null, n < 2, or a median that is not positive and finite.
std::optional<RankLead> LeadingRank(const double* v, size_t n, double min_ratio);

// Rank departure: the rank whose batch went bad, from rank 0's step (StepSample::rank_grad_norms
// and rank_losses; nothing without them or with fewer than 2 ranks). A rank departs when
//   its local grad norm is >= rank_departure_ratio x the median of the other ranks' and
//   >= rank_departure_self x its own healthy level (from its first healthy norm on); or is
//   non-finite while that median is finite (critical: the averaged norm survived it); or
//   its loss (all ranks' losses positive and finite) has log(loss / the others' median) at
//   least rank_loss_departure σ above that log ratio's healthy mean (σ floored at
//   loss_std_floor; after spike_warmup healthy steps), and is >= rank_loss_ratio x both the
//   others' median and its own healthy level.
// The own-level tests keep a rank from "departing" because another rank's value fell (with 2
// ranks the other rank is the median). One event per rank per episode, warning unless
// non-finite; an episode holds while the rank's norm ratios stay at their square roots or its
// loss z at half its limit with the loss ratios at their square roots (hysteresis). Event
// value: the norm (else the loss) / the others' median; Event::rank names the rank.
// Per-rank levels learn from healthy steps only (Learn). O(n log n) per step, n = ranks.
class RankDepartureDetector {
 public:
  explicit RankDepartureDetector(const Thresholds& t);
  void OnStep(const StepSample& s, std::vector<Event>* out);
  // Learns every rank's levels from s, a healthy step (after OnStep(s)).
  void Learn(const StepSample& s);
  bool quiet() const { return on_ == 0; }

 private:
  struct Rank {
    Ewma norm;    // log local grad norm
    Ewma loss;    // log loss
    Ewma spread;  // log(loss / the others' median loss)
    Latch latch;
  };
  struct Check {  // one rank on one step
    bool nonfinite = false, norm = false, loss = false, hold = false;
    double norm_ratio = kNaN, loss_ratio = kNaN, loss_z = 0;
  };
  Check Judge(const StepSample& s, size_t r, bool losses_ok) const;
  Event Departure(const StepSample& s, size_t r, const Check& c) const;

  Thresholds t_;
  std::vector<Rank> ranks_;
  size_t on_ = 0;  // ranks whose episode is on
  // The other ranks' medians on the last step seen (reused: no allocation per step).
  std::vector<double> norm_median_, loss_median_;
  std::vector<std::pair<double, size_t>> scratch_;
};

// Stragglers: rank r's compute seconds (StepSample::rank_compute_seconds) at least
// straggler_ratio x the median of the other ranks' and straggler_min_seconds above it, for
// straggler_steps consecutive steps; the episode ends after straggler_steps consecutive steps
// below sqrt(straggler_ratio) x (or less than straggler_min_seconds above) that median. A
// missing (NaN) value is not slow. Warning, Event::rank names the rank, value = the ratio on
// the step it fired. Says nothing of the gradients: it does not keep a step from the healthy
// statistics.
class StragglerDetector {
 public:
  explicit StragglerDetector(const Thresholds& t);
  void OnStep(const StepSample& s, std::vector<Event>* out);

 private:
  struct Rank {
    uint64_t slow = 0;  // consecutive slow steps (while off)
    uint64_t fast = 0;  // consecutive steps below the hold level (while on)
    bool on = false;
  };
  Thresholds t_;
  std::vector<Rank> ranks_;
  std::vector<double> median_;
  std::vector<std::pair<double, size_t>> scratch_;
};

// User scalars against the run's limits (Thresholds::scalar_max / scalar_min): a warning when a
// named scalar goes above its max or below its min, naming the scalar and the limit; once per
// excursion, again after a report within its limits. A NaN crosses no limit. Event value: the
// scalar's value.
class ScalarLimitDetector {
 public:
  explicit ScalarLimitDetector(const Thresholds& t);
  void OnStep(const StepSample& s, std::vector<Event>* out);

 private:
  std::map<std::string, double> max_, min_;
  std::set<std::string> outside_;  // scalars past a limit on their last report
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
