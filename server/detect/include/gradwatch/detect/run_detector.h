// All detectors of one run behind one call per report. Feed steps (and evaluations) in step
// order; each call is O(1), plus O(layers) for attribution. Not thread-safe: one per run, called
// from one thread at a time. No clock: windows count reports, attribution looks back in steps.
#pragma once

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

  // Runs every step detector on s. Events come in EventKind order, each with top_layers and
  // first_layer filled when s carries per-layer norms; incident_id is left 0. A step with a
  // non-finite loss or grad norm yields only the non-finite event (once per episode) and is not
  // learned from.
  std::vector<Event> OnStep(const StepSample& s);
  // Runs the validation detectors on e.
  std::vector<Event> OnEval(const EvalSample& e);

  // Statistics over healthy steps: steps with no event and no detector's condition building.
  HealthyStats stats() const;
  const Thresholds& thresholds() const { return t_; }
  // z of the latest grad norm against its running statistics (0 during the warm-up), for metrics.
  double grad_norm_z() const { return grad_.z(); }

 private:
  void Detect(const StepSample& s, std::vector<Event>* out);
  bool Quiet() const;
  void Learn(const StepSample& s);
  double HealthyGrad() const;

  Thresholds t_;
  Latch non_finite_;
  GradSpikeDetector grad_;
  LossSpikeDetector loss_;
  DivergenceDetector divergence_;
  CollapseDetector collapse_;
  VanishingDetector vanishing_;
  ValCollapseDetector val_;
  LayerAttribution layers_;
  Ewma healthy_grad_;
  DecayingMax healthy_max_;
  Ewma healthy_loss_;
  uint64_t healthy_steps_ = 0;
};

}  // namespace gradwatch::detect
