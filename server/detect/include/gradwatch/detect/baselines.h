// The published stability rules, reimplemented as plain detectors over a step sequence, so the
// benchmarks can run them on the same traces as gradwatch. Each keeps its authors' defaults:
//   zclip            ZClip: z of the grad norm vs an EMA (α 0.97), z > 2.5, 25-step warm-up,
//                    the EMA updated with the clipped norm
//   olmo_skip_step   OLMo-core SkipStepOptimizer: loss or grad norm more than 6σ above the mean of
//                    the previous ≤128 steps, once 64 are seen (NaN compares as "skip")
//   megatron         Megatron rerun state machine: NaN/Inf loss or grad norm, or a loss or grad
//                    norm ≥ 10x the max of its first 100 values
//   llm_foundry_kill_loss_spike  KillLossSpike: loss ≥ 2x the mean of the last 100 losses for
//                    more than 4 consecutive steps (flags the 5th)
//   lightning_spike_detection    Lightning SpikeDetection: non-finite loss, or a loss that rose
//                    and is ≥ 2 x (relative) away from the mean of the last 10 (window 10, rtol 2)
//   keras_terminate_on_nan       Keras TerminateOnNaN: NaN/Inf loss
// Steps must come in order. Not thread-safe.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gradwatch/detect/event.h"

namespace gradwatch::detect {

class Baseline {
 public:
  virtual ~Baseline() = default;
  virtual std::string name() const = 0;
  // Feeds one step; true = this rule flags (would skip, clip or stop at) this step.
  virtual bool OnStep(const StepSample& s) = 0;
};

// One fresh instance of each rule above, in that order.
std::vector<std::unique_ptr<Baseline>> MakeBaselines();
// The rule with that name; nullptr if there is none.
std::unique_ptr<Baseline> MakeBaseline(std::string_view name);

}  // namespace gradwatch::detect
