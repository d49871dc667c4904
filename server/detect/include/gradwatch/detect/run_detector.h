// All detectors of one run behind one call per report. Feed steps (and evaluations) in step
// order; each call is O(1), plus O(layers) for attribution and O(window) for the divergence fit.
// Not thread-safe: one per run, called from one thread at a time. No clock: windows count
// reports, attribution looks back in steps.
#pragma once

#include <cstdint>
#include <deque>
#include <utility>
#include <vector>

#include "gradwatch/detect/attribution.h"
#include "gradwatch/detect/detectors.h"
#include "gradwatch/detect/event.h"
#include "gradwatch/detect/stats.h"
#include "gradwatch/detect/thresholds.h"

namespace gradwatch::detect {

class RunDetector {
 public:
  RunDetector(RunInfo info, Thresholds t);

  // Runs every step detector on s (stragglers and the scalar limits also on a non-finite step).
  // Events come in EventKind order, each with top_layers and first_layer filled when s carries
  // per-layer norms; incident_id is left 0. A step with a non-finite loss or grad norm yields
  // only the non-finite event (once per episode; plus stragglers and scalar limits) and is not
  // learned from. A step with s.rolled_back first restores the statistics of s.rolled_back_to
  // (RestoreTo).
  // Data parallel (s.n_ranks >= 2): a grad spike, loss spike or non-finite event also names the
  // rank it came from (Event::rank, and "on rank R" in its message): the rank whose local grad
  // norm (loss for a loss spike) is the largest multiple of the other ranks' median, if that is
  // at least sqrt(rank_departure_ratio) (rank_loss_ratio for the loss), or whose value is
  // non-finite while the others' median is not; none when the whole job moved together.
  std::vector<Event> OnStep(const StepSample& s);
  // Runs the validation detectors on e.
  std::vector<Event> OnEval(const EvalSample& e);

  // Continues from the statistics as they were after step `step`: the newest snapshot at or
  // before it (taken every Thresholds::snapshot_every healthy steps), or the initial state. Later
  // snapshots are dropped: they belong to the abandoned trajectory. Returns the snapshot's step.
  uint64_t RestoreTo(uint64_t step);

  // Statistics over healthy steps: steps with no event and no detector's condition building.
  HealthyStats stats() const;
  const Thresholds& thresholds() const { return t_; }
  // z of the latest grad norm against its running statistics (0 for the first), for metrics.
  double grad_norm_z() const { return s_.grad.z(); }
  // The learning rate's level (the last accepted rate), 0 before any: gated mode clamps to it.
  double lr_level() const { return s_.update.lr_level(); }

 private:
  // Everything a report changes: copied whole for a snapshot.
  struct State {
    State(const RunInfo& info, const Thresholds& t);
    Latch non_finite;
    GradSpikeDetector grad;
    LossSpikeDetector loss;
    DivergenceDetector divergence;
    CollapseDetector collapse;
    VanishingDetector vanishing;
    DeadNetworkDetector dead;
    ValCollapseDetector val;
    UpdateDetector update;
    NoProgressDetector progress;
    DataSuspectDetector data;
    RankDepartureDetector ranks;
    ScalarLimitDetector scalars;
    LayerAttribution layers;
    Ewma healthy_grad;
    DecayingMax healthy_max;
    Ewma healthy_loss;
    uint64_t healthy_steps = 0;
  };

  void Detect(const StepSample& s, std::vector<Event>* out);
  void NoteViolent(const StepSample& s, const std::vector<Event>& events);
  bool Quiet() const;
  void Learn(const StepSample& s);
  void Snapshot(uint64_t step);  // keeps s_ as of `step`, the last snapshots_kept of them
  double HealthyGrad() const;

  RunInfo info_;
  Thresholds t_;
  State s_;
  // Compute times say nothing of the trajectory: a rollback does not restore them.
  StragglerDetector stragglers_;
  std::deque<std::pair<uint64_t, State>> snapshots_;  // (step, state), oldest first
};

}  // namespace gradwatch::detect
