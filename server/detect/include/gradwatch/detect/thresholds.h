// Every number the detectors use, with its default and where the default comes from. One
// Thresholds per run; a run's configuration overrides fields by name (Apply).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "gradwatch/common/status.h"

namespace gradwatch::detect {

struct Thresholds {
  // --- Gradient spike: z of log(grad norm) against an EWMA, plus a ratio to the recent maximum.
  // EWMA weight of the running mean (ZClip: α 0.97); also used for the loss, per-layer and
  // healthy statistics.
  double spike_alpha = 0.97;
  // EWMA weight of the running variance (gradwatch; ZClip uses 0.97). A steadier σ: simulated
  // lognormal(σ=0.3) noise reached z ≥ 5 in 2.8% of 10,000-step runs at 0.97, 0.5% at 0.99.
  double spike_var_alpha = 0.99;
  // Reports before any statistic is trusted (ZClip: warm-up 25).
  uint64_t spike_warmup = 25;
  // Warning level (gradwatch, measured on 10,000-step healthy runs with lognormal(σ=0.3) grad
  // norms: z 3.5 fires ~5 times per run, a Gaussian tail; 5 in ~1.5% of runs; 5.5 in ~0.1%).
  double spike_z_warning = 5.5;
  // Critical level (OLMo-core SkipStep skips at 6σ).
  double spike_z_critical = 6.0;
  // Critical at 10x the recent maximum (Megatron rerun state machine: 10x the max seen).
  double spike_max_ratio = 10.0;
  // Per-report decay of the recent maximum (gradwatch: forgets a peak over ~100 steps).
  double spike_max_decay = 0.99;
  // Floor on σ of log grad norm: a very steady run needs a 1.8x jump to reach 6σ (gradwatch).
  double spike_std_floor = 0.1;
  // Critical by z also needs the norm at 3x the recent max: a smooth rise (0.05 -> 0.33 over 25
  // steps scored z 6.1 at 1.37x the max) or a noisy start's benign batches (z 8.3 at 2.6x) are
  // not explosions; every injected explosion in bench/detection is >= 30x (gradwatch).
  double spike_crit_min_ratio = 3.0;
  // From the second report on, before the warm-up ends: critical at this multiple of the max so
  // far, falling linearly to spike_max_ratio at the end of the warm-up. The evidence needed
  // scales with the history: with one norm seen a 20x jump pages, a young run's 2-3x noise
  // does not (gradwatch; an injected x1000 at step 21 is ~1000x).
  double spike_young_ratio = 20.0;
  // Until spike_warmup norms are seen, z uses σ pooled with this prior σ of log grad norm...
  // (a noisy start: benign batches at 2.5x are log 0.9, 1.8 prior σ)
  double spike_prior_std = 0.5;
  // ...counted as this many norms.
  double spike_prior_weight = 5;

  // --- Loss spike: the loss against its running mean (after the warm-up), or z on log loss.
  // Warning at 2x the running mean (llm-foundry KillLossSpike: outlier_multiplier 2; Lightning
  // SpikeDetection: rtol 2).
  double loss_spike_ratio = 2.0;
  // Critical at 4x (gradwatch).
  double loss_spike_critical_ratio = 4.0;
  // Warning at z of log loss ≥ 6, whatever the ratio (OLMo-core's 6σ).
  double loss_z = 6.0;
  // Either test also needs z ≥ 5.5: on a noisy loss (σ 0.25, batch 4) 2x is only 2.8σ
  // (gradwatch; 2x alone flagged most healthy 10,000-step runs with σ 0.2).
  double loss_z_min = 5.5;
  // Floor on σ of log loss (gradwatch).
  double loss_std_floor = 0.05;
  // Critical whatever the noise when the loss is loss_spike_critical_ratio x its running mean and
  // at least this fraction of the run's initial loss level above it: a loss near 0 whose log is
  // very noisy (σ ~1 at 1e-3) jumping back to 0.63 is an explosion (gradwatch).
  double loss_abs_jump = 0.5;

  // --- Divergence: the smoothed loss persistently above its running minimum.
  // EWMA weight of the smoothed loss (~10 steps).
  double div_alpha = 0.9;
  // "Above" = more than 50% over the minimum smoothed loss (gradwatch).
  double div_margin = 0.5;
  // For this many consecutive reports (gradwatch; llm-foundry's window is 100).
  uint64_t div_window = 50;
  // Absolute floor for every divergence rule, as a fraction of the run's initial loss level
  // (the mean of its first 10 losses): a rise smaller than this is noise however large it is
  // relative to a loss near 0 (a converged run at 2e-4 doubles on noise). Jaccard loss: 0.016.
  double div_floor = 0.02;
  // Trend test: least-squares slope of log loss over this many reports...
  uint64_t div_trend_window = 40;
  // ...warning when it is this many standard errors above 0...
  double div_trend_t = 6.0;
  // ...or over its last half this many (a steep rise is seen sooner; on Gaussian noise a t of 8
  // with 18 degrees of freedom is as rare as 6 with 38)...
  double div_trend_short_t = 8.0;
  // ...and at least 0.2% per report (a 1%-per-step rise is 49% over the window; bench/detection's
  // slowest creep, 0.3% a step, is caught 22 steps after the loss turns up).
  double div_trend_min_rate = 0.002;
  // A loss that doubles from its recent level: warning at once. "The loss" is the median of the
  // last 5 reports (one noisy batch is not the loss), "its recent level" the lowest smoothed
  // loss (div_alpha) of the last div_window reports.
  double div_double = 2.0;

  // --- Collapse: a loss pinned at its bound or flat, with Jaccard ~0 and/or grad norm ~0.
  // Pinned = within 1% of RunInfo::loss_upper_bound (a Jaccard loss ≥ 0.99).
  double collapse_eps = 0.01;
  // Counts only once the loss has been 10% below its bound (unbounded: 10% away from its first
  // value): a run that starts at the bound has not collapsed.
  double collapse_departure = 0.1;
  // Flat = relative change from the previous report ≤ 1e-4.
  double collapse_flat_rtol = 1e-4;
  // Jaccard ~0 = soft or hard Jaccard ≤ 0.01.
  double collapse_jaccard_eps = 0.01;
  // Grad norm ~0 = ≤ 1e-8, or ≤ vanish_ratio x the healthy mean.
  double collapse_grad_eps = 1e-8;
  // For this many consecutive reports...
  uint64_t collapse_window = 5;
  // ...or this many while the run has had fewer than spike_warmup reports: epoch-level logs,
  // where each point is an epoch and statistical warm-ups never finish (DESIGN.md's case).
  uint64_t collapse_short_window = 2;

  // --- Vanishing gradients: the grad norm far below its healthy level.
  // Below 0.1% of the healthy mean grad norm...
  double vanish_ratio = 1e-3;
  // ...for this many consecutive reports.
  uint64_t vanish_window = 10;
  // A dead network: within dead_horizon reports after a violent event (a critical grad spike or
  // update size, non-finite values), the grad norm below dead_ratio x its level before the
  // event for dead_window consecutive reports. Critical, one incident with its cause.
  double dead_ratio = 0.1;
  uint64_t dead_window = 3;
  uint64_t dead_horizon = 50;

  // --- Update size and learning-rate jumps (need StepSample::update_ratio / learning_rate).
  // An update that would move the weights by 10% of their norm is critical from the first step
  // (healthy: ~1e-3 with SGD, ~1e-2 early with Adam; gradwatch).
  double update_abs_critical = 0.1;
  // After the warm-up: critical at 10x the running level of ||dw||/||w|| (EWMA of its log).
  double update_jump = 10.0;
  // Learning rate at this multiple of its level (the last accepted rate): warning...
  double lr_jump_warning = 3.0;
  // ...critical (a one-step x10 or x100 learning rate). Gated mode clamps such a step's rate.
  // Cyclic schedules that restart high (SGDR) should raise this.
  double lr_jump_critical = 10.0;
  // A jumped rate that lasts this many reports becomes the new level (an intended change).
  uint64_t lr_accept_after = 5;

  // --- A run that never learns: after progress_window reports the smoothed loss never fell
  // below (1 - progress_min_drop) x its initial level. Warning, once.
  uint64_t progress_window = 300;
  double progress_min_drop = 0.05;

  // --- Data suspects: data_spikes separate grad-spike episodes (each back at the level within
  // a few steps) within data_window reports: the batches are the suspect. Warning.
  uint64_t data_spikes = 3;
  uint64_t data_window = 200;

  // --- Validation collapse: validation Jaccard fell to ~0 from its best (nnU-Net: val Dice 0).
  // At or below 5% of the best value seen...
  double val_collapse_fraction = 0.05;
  // ...once the best has reached at least 0.05.
  double val_min_best = 0.05;

  // --- Attribution: per-layer z of log layer grad norm.
  // A layer has departed while its z ≥ 3.
  double attr_z = 3.0;
  // first_layer looks this many steps back from the event.
  uint64_t attr_lookback = 5;

  // --- Incidents: an event within this many steps of the open incident's last event joins it.
  uint64_t incident_gap = 100;

  // --- Rollback: the detectors keep a copy of their statistics every snapshot_every healthy
  // reports (the trainer's default checkpoint_every), the last snapshots_kept of them, and
  // restore the newest at or before the step a trainer rolled back to. 0 = never.
  uint64_t snapshot_every = 50;
  uint64_t snapshots_kept = 8;

  // --- Data parallel: rank departure (StepSample::rank_grad_norms / rank_losses, n_ranks >= 2).
  // A rank's local grad norm at this multiple of the median of the other ranks' local norms
  // (with 2 ranks: the other rank's)... Megatron's 10x-the-max, applied across ranks.
  double rank_departure_ratio = 10.0;
  // ...and at this multiple of its own healthy level (the geometric EWMA of its local norm over
  // healthy steps), so that one rank's unusually small norm does not make the other "depart"
  // (with 2 ranks the other rank is the median). On 30 healthy 10,000-step jobs of 2 ranks
  // with lognormal(σ 0.4) local noise, 10x the others and 3x its level fired 4 times, 5x its
  // level once; at σ 0.3 neither fired. 5x finds as many x20 faults as 3x (gradwatch).
  double rank_departure_self = 5.0;
  // A rank's loss departs when log(its loss / the other ranks' median loss) is this many σ
  // above its usual value (an EWMA of that log ratio over healthy steps, σ floored at
  // loss_std_floor; after spike_warmup healthy steps): the test scales with how much the
  // ranks' losses usually differ (OLMo-core's 6σ, across ranks). With lognormal(σ 0.2)
  // per-rank losses a x5 loss on one rank of 8 is found 9 times in 10, none on healthy jobs.
  double rank_loss_departure = 6.0;
  // ...and its loss is at least this multiple of both the others' median and its own healthy
  // level, so a very steady job's 6σ (a 1.3x loss) is not a bad batch (llm-foundry's 2x).
  double rank_loss_ratio = 2.0;

  // --- Data parallel: stragglers (StepSample::rank_compute_seconds). A rank whose compute
  // seconds are this multiple of the other ranks' median (the others wait in the all-reduce)...
  double straggler_ratio = 3.0;
  // ...for this many consecutive steps (a single slow step, e.g. a checkpoint write or a GC
  // pause, is not a straggler)...
  uint64_t straggler_steps = 5;
  // ...and at least this many seconds slower than that median (micro-noise on ~1 ms steps).
  // The episode ends after straggler_steps consecutive steps below sqrt(straggler_ratio) or
  // straggler_min_seconds (gradwatch).
  double straggler_min_seconds = 0.05;

  // --- Data parallel: the job as a whole (JobWatch, on the monitor's clock).
  // Hang: no rank reported a new step for max(hang_min_seconds, hang_factor x the median
  // interval between rank 0's recent steps) while every rank is connected. 5 minutes: longer
  // than most evaluations and checkpoint writes, shorter than NCCL's 10-minute watchdog, so the
  // hung rank is still alive to be inspected (gradwatch).
  double hang_min_seconds = 300;
  double hang_factor = 20;
  // A connected rank whose last heartbeat is older than this has stopped (the reporter sends
  // one every second or so while a rank is inside a phase).
  double hang_heartbeat_seconds = 15;
  // Lag: a connected rank's last reported step this many steps behind the job's highest
  // (ranks step together; a reporter that fell this far behind is stuck or backlogged). The
  // episode ends when it is back within half of it.
  uint64_t rank_lag_steps = 100;
  // Lost: a rank's stream closed without a goodbye for this long while another rank is still
  // connected (0 = at the first check: a rank that died while the others wait for it).
  double rank_lost_seconds = 0;
  // Never joined: a rank of the job that has not connected this long after the first of its
  // ranks did, while others run (it never started, cannot reach the monitor, or died while the
  // monitor was down). torchrun and srun start every rank within seconds; a monitor restart's
  // reconnects take at most the reporter's backoff, 30 s (gradwatch).
  double rank_join_seconds = 120;

  // --- User scalars (StepSample::scalars): no limit unless the run sets one. A warning when the
  // scalar NAME goes above scalar_max.NAME or below scalar_min.NAME (override keys), once per
  // excursion: again only after it came back within its limits.
  std::map<std::string, double> scalar_max, scalar_min;

  // Sets fields by name (the names above; a scalar's limit as "scalar_max.NAME" or
  // "scalar_min.NAME", any finite value). Applies all or none. An error is kInvalidArgument and
  // names the key: "unknown threshold 'spike_z'" or "threshold 'spike_alpha' = 1.5 is outside
  // [0, 1]"; windows and counts must be whole numbers.
  Status Apply(const std::map<std::string, double>& overrides);

  // All field names, in declaration order.
  static std::vector<std::string> Names();
};

}  // namespace gradwatch::detect
