// The vocabulary shared by the detectors, the incident tracker, policy and replay: what a
// training step and an evaluation report look like to a detector, the events detectors raise,
// and the healthy statistics policy derives its thresholds from. Plain values, no dependencies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace gradwatch::detect {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

enum class Severity { kWarning, kCritical };

enum class EventKind {
  kNonFinite,    // loss or grad norm NaN/Inf
  kGradSpike,    // grad norm far above its running level
  kLossSpike,    // loss far above its running mean
  kDivergence,   // smoothed loss persistently above its running minimum
  kCollapse,     // loss pinned at its bound or flat, with Jaccard ~0 and/or grad norm ~0
  kVanishing,    // grad norm orders of magnitude below its healthy level
  kValCollapse,  // validation Jaccard fell to ~0 from its best
  kLrJump,       // the learning rate jumped far above its level from one step to the next
  kUpdateSize,   // the update would move the weights far more than usual (||dw|| / ||w||)
  kNoProgress,   // the loss has not fallen since the start of the run
  kDataSuspect,  // many separate gradient spikes: suspect the batches, not the optimizer
  // Data parallel, from rank 0's step (RunDetector):
  kRankDeparture,  // one rank's local grad norm or loss far from the other ranks' (its batch)
  kStraggler,      // one rank's compute time a multiple of the others' for several steps
  kScalarLimit,  // a named user scalar crossed the run's scalar_max.NAME or scalar_min.NAME
  // Data parallel, from the streams and the clock (JobWatch):
  kHang,      // no rank reports a new step while every rank is connected
  kRankLag,   // a connected rank's reports far behind the job's
  kRankLost,  // a rank's stream ended without a goodbye while others still run
};

// Stable lower_snake names, fit for metric label values and logs:
// "non_finite", "grad_spike", "loss_spike", "divergence", "collapse", "vanishing", "val_collapse",
// "lr_jump", "update_size", "no_progress", "data_suspect", "rank_departure", "straggler",
// "scalar_limit", "hang", "rank_lag", "rank_lost".
const char* ToString(EventKind kind);
// Every kind in declaration order, e.g. to create a series per kind up front.
const std::vector<EventKind>& AllEventKinds();
// "warning", "critical".
const char* ToString(Severity severity);

// One training step as the trainer reported it. Non-finite values are data, never an error.
struct StepSample {
  uint64_t step = 0;
  uint32_t epoch = 0;
  double loss = kNaN;         // NaN/Inf raises a non-finite event
  double grad_norm = kNaN;    // global L2 norm; NaN/Inf raises a non-finite event...
  bool has_grad_norm = true;  // ...unless false: not reported (e.g. a CSV without it); then ignored
  const float* layer_norms = nullptr;  // per-layer grad norms in RunInfo::layer_names order; not
  size_t n_layers = 0;                 // owned, read only during the call; may be empty
  // Train Jaccard (IoU) metrics and accuracy in [0, 1]; NaN = not reported.
  double jaccard_soft = kNaN;
  double jaccard_hard = kNaN;
  double accuracy = kNaN;
  double learning_rate = kNaN;  // NaN = not reported
  // ||dw|| / ||w|| of this step's update as the optimizer proposes it (before clipping and any
  // verdict), global; NaN = not reported.
  double update_ratio = kNaN;
  // The first step after a rollback: the trainer restored its checkpoint of step
  // rolled_back_to (0 = the initial state). The detectors restore their statistics of that step.
  bool rolled_back = false;
  uint64_t rolled_back_to = 0;
  // The batch's training items, when the trainer reports them; not owned, read during the call.
  const uint64_t* sample_ids = nullptr;
  size_t n_samples = 0;
  // Named user scalars of the step (name, value), for Thresholds::scalar_max / scalar_min.
  std::vector<std::pair<std::string, double>> scalars;
  // Data parallel: rank 0's report of a job of n_ranks >= 2 ranks carries every rank's values
  // on this step, indexed by rank: its loss, its local grad norm before the all-reduce, and its
  // compute seconds before it entered the all-reduce. Not owned, read only during the call;
  // each is null (not reported) or holds n_ranks values. n_ranks = 0 for a single process.
  // `loss` is then the run-level loss: the plain mean of rank_losses (NaN if any is NaN), and
  // grad_norm the averaged gradient's norm.
  const double* rank_losses = nullptr;
  const double* rank_grad_norms = nullptr;
  const double* rank_compute_seconds = nullptr;
  size_t n_ranks = 0;
};

// One evaluation (validation) report; NaN = not reported.
struct EvalSample {
  uint64_t step = 0;
  double loss = kNaN;
  double jaccard_soft = kNaN;
  double jaccard_hard = kNaN;
  double accuracy = kNaN;
};

struct Event {
  uint64_t step = 0;
  EventKind kind = EventKind::kNonFinite;
  Severity severity = Severity::kWarning;
  double value = kNaN;  // the statistic that fired (a z-score, a ratio, a loss: see the detector)
  std::string message;  // a sentence with the numbers, e.g. "grad norm 226 is 31.2σ above ..."
  std::vector<std::string> top_layers;  // up to 3 departed layers, largest per-layer z first
  std::string first_layer;   // the layer that departed first in the preceding steps; "" if unknown
  uint64_t incident_id = 0;  // set by IncidentTracker::Assign; 0 = not assigned
  // A consequence of an earlier violent event (a dead network after an explosion): that event's
  // step, which a rollback must go back before. 0 = none.
  uint64_t cause_step = 0;
  // Data parallel: the rank the event names (a departed, slow, hung, lagging or lost rank, or
  // the rank a grad spike, loss spike or non-finite step came from); none = the job as a whole.
  std::optional<uint32_t> rank;
};

// What policy needs to derive thresholds: statistics over healthy steps only (steps with no
// event and no condition building). Linear units. EWMA with the detectors' alpha, so they follow
// the recent healthy level rather than the whole run's.
struct HealthyStats {
  bool warmed_up = false;  // enough healthy grad norms (Thresholds::spike_warmup) to trust these
  double grad_norm_mean = 0;
  double grad_norm_std = 0;
  double grad_norm_max = 0;  // recent maximum, decaying by spike_max_decay per healthy step
  double loss_mean = 0;
  uint64_t healthy_steps = 0;
};

struct RunInfo {
  // Names for StepSample::layer_norms, in order; missing ones are "layer<i>".
  std::vector<std::string> layer_names;
  double loss_upper_bound = 0;  // 0 = unbounded; 1 = Jaccard (IoU) or Dice loss
};

}  // namespace gradwatch::detect
