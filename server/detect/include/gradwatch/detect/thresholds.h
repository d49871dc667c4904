// Every number the detectors use, with its default and where the default comes from. One
// Thresholds per run; a run's configuration overrides fields by name (Apply).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace gradwatch::detect {

struct Thresholds {
  // --- Gradient spike: z-score of log(grad norm) against an EWMA, plus a ratio to the recent max.
  double spike_alpha = 0.97;      // EWMA weight of the running mean (ZClip α 0.97); also used for the
                                  // loss, per-layer and healthy statistics
  double spike_var_alpha = 0.99;  // EWMA weight of the running variance. gradwatch: ZClip uses 0.97;
                                  // its noisier σ turned lognormal(σ=0.3) noise into ≥5σ "spikes" in
                                  // ~3% of 10,000-step runs (0.5% at 0.99)
  uint64_t spike_warmup = 25;     // reports before any statistic is trusted (ZClip warm-up 25)
  double spike_z_warning = 5.0;   // gradwatch: the 3.5 first proposed fires ~5 times per 10,000 steps
                                  // of healthy lognormal(σ=0.3) noise (Gaussian tail); 5 fires ~never
  double spike_z_critical = 6.0;  // OLMo-core SkipStep skips at 6σ
  double spike_max_ratio = 10.0;  // critical at 10x the recent maximum (Megatron rerun machine: 10x max)
  double spike_max_decay = 0.99;  // per-step decay of the recent maximum (gradwatch: ~100-step memory)
  double spike_std_floor = 0.1;   // floor on σ of log grad norm, so a very steady run needs a ≥1.8x
                                  // jump to reach 6σ (gradwatch)

  // --- Loss spike: loss against its running mean (after warm-up), or z on log loss.
  double loss_spike_ratio = 2.0;           // warning at 2x the running mean (llm-foundry KillLossSpike
                                           // outlier_multiplier 2; Lightning SpikeDetection rtol 2)
  double loss_spike_critical_ratio = 4.0;  // critical at 4x (gradwatch)
  double loss_z = 6.0;                     // warning at z of log loss ≥ 6 (OLMo-core's 6σ)
  double loss_std_floor = 0.05;            // floor on σ of log loss (gradwatch)

  // --- Divergence: smoothed loss persistently above its running minimum.
  double div_alpha = 0.9;     // EWMA weight of the smoothed loss (~10 steps)
  double div_margin = 0.5;    // "above" = more than 50% over the minimum smoothed loss (gradwatch)
  uint64_t div_window = 50;   // for this many consecutive reports (gradwatch; llm-foundry's window 100)

  // --- Collapse: loss pinned at its bound or flat, with Jaccard ~0 and/or grad norm ~0.
  double collapse_eps = 0.01;        // pinned = within 1% of RunInfo::loss_upper_bound (Jaccard loss ≥ 0.99)
  double collapse_departure = 0.1;   // counts only after the loss has been 10% below its bound (or, if
                                     // unbounded, 10% away from its first value): a run that starts at
                                     // the bound has not collapsed
  double collapse_flat_rtol = 1e-4;  // flat = relative change from the previous report ≤ 1e-4
  double collapse_jaccard_eps = 0.01;  // Jaccard ~0 = soft or hard Jaccard ≤ 0.01
  double collapse_grad_eps = 1e-8;     // grad norm ~0 = ≤ 1e-8, or ≤ vanish_ratio x healthy mean
  uint64_t collapse_window = 5;        // for this many consecutive reports...
  uint64_t collapse_short_window = 2;  // ...or this many while the run has fewer than spike_warmup
                                       // reports: epoch-level logs, where each point is an epoch

  // --- Vanishing gradients: grad norm far below its healthy level.
  double vanish_ratio = 1e-3;   // below 0.1% of the healthy mean grad norm...
  uint64_t vanish_window = 10;  // ...for this many consecutive reports

  // --- Validation collapse: validation Jaccard fell to ~0 from its best (nnU-Net: val Dice 0).
  double val_collapse_fraction = 0.05;  // at or below 5% of the best value seen...
  double val_min_best = 0.05;           // ...once the best has reached at least 0.05

  // --- Attribution: per-layer z-scores of log layer grad norm.
  double attr_z = 3.0;         // a layer has departed while its z ≥ 3
  uint64_t attr_lookback = 5;  // first_layer looks this many steps back from the event

  // --- Incidents: events within this many steps of an incident's last event join it.
  uint64_t incident_gap = 100;

  // Sets fields by name (the names above). Applies all or none. Returns "" on success, else an
  // error naming the key: "unknown threshold 'spike_z'" or "threshold 'spike_alpha' = 1.5 is
  // outside [0, 1]"; windows and counts must be whole numbers.
  std::string Apply(const std::map<std::string, double>& overrides);

  // All field names, in declaration order.
  static std::vector<std::string> Names();
};

}  // namespace gradwatch::detect
