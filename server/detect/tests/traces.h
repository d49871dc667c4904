// Synthetic training traces for the detector tests. Deterministic: std::mt19937 with fixed seeds.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gradwatch/detect/event.h"
#include "gradwatch/detect/run_detector.h"

namespace gradwatch::detect::testing {

// A run: steps[i] is step i + 1; each step's layer_norms point into layers[i].
struct Trace {
  std::vector<StepSample> steps;
  std::vector<std::vector<float>> layers;
  std::vector<std::string> layer_names;
  StepSample& at(uint64_t step) { return steps.at(step - 1); }
  std::vector<float>& layers_at(uint64_t step) { return layers.at(step - 1); }
};

struct Healthy {
  uint64_t steps = 10000;
  size_t layers = 8;
  double grad_sigma = 0.3;    // lognormal noise of the grad norm
  double loss_sigma = 0.1;    // lognormal noise of the loss
  bool jaccard_loss = false;  // loss = 1 - Jaccard, starting at the bound (sparse targets)
  uint32_t seed = 1;
};

// A healthy noisy run: LR warm-up over 500 steps then cosine decay, grad norm settling from ~0.6
// to ~0.2, loss decaying (cross-entropy-like from ~2.2 to 0.2, or a Jaccard loss from 0.995 to
// ~0.25), Jaccard rising, per-layer norms sharing the global noise plus their own.
Trace HealthyTrace(const Healthy& h);

// Feeds every step of t (no evaluations) and returns all events.
std::vector<Event> Feed(RunDetector& d, const Trace& t);

// RunInfo naming t's layers, with the given loss bound.
RunInfo InfoFor(const Trace& t, double loss_upper_bound = 0);

// A one-line summary of events, for failure messages.
std::string Describe(const std::vector<Event>& events);

}  // namespace gradwatch::detect::testing
