// Synthetic training traces for the detector tests. Deterministic: std::mt19937 with fixed seeds.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gradwatch/detect/event.h"
#include "gradwatch/detect/run_detector.h"

namespace gradwatch::detect::testing {

// A run: steps[i] is step i + 1; each step's layer_norms point into layers[i], and (after
// AddRanks) its rank values into rank_losses[i], rank_norms[i] and rank_compute[i].
struct Trace {
  std::vector<StepSample> steps;
  std::vector<std::vector<float>> layers;
  std::vector<std::string> layer_names;
  std::vector<std::vector<double>> rank_losses, rank_norms, rank_compute;
  StepSample& at(uint64_t step) { return steps.at(step - 1); }
  std::vector<float>& layers_at(uint64_t step) { return layers.at(step - 1); }
  double& rank_loss(uint64_t step, size_t rank) { return rank_losses.at(step - 1).at(rank); }
  double& rank_norm(uint64_t step, size_t rank) { return rank_norms.at(step - 1).at(rank); }
  double& rank_seconds(uint64_t step, size_t rank) { return rank_compute.at(step - 1).at(rank); }
  // The step's loss as the mean of its ranks' losses again, as convert.cc's ToSample makes it
  // (after a test changed a rank's loss).
  void Remean(uint64_t step);
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

// A data-parallel job: each rank's local grad norm is the run's grad norm x 1.2 (a local
// gradient is noisier than the average) with its own lognormal noise; each rank's loss has its
// own lognormal noise, scaled so that their mean is the run's loss; compute seconds around
// `compute` with their own noise, and now and then (slow_every steps on average) one rank's
// single step `slow_factor` slower (a GC pause, a checkpoint write).
struct Ranks {
  size_t n = 2;
  double norm_sigma = 0.3;
  double loss_sigma = 0.2;
  double compute = 0.2;
  double compute_sigma = 0.1;
  double slow_every = 100;
  double slow_factor = 5;
  uint32_t seed = 11;
};
void AddRanks(Trace& t, const Ranks& r);

// Feeds every step of t (no evaluations) and returns all events.
std::vector<Event> Feed(RunDetector& d, const Trace& t);

// RunInfo naming t's layers, with the given loss bound.
RunInfo InfoFor(const Trace& t, double loss_upper_bound = 0);

// A one-line summary of events, for failure messages.
std::string Describe(const std::vector<Event>& events);

}  // namespace gradwatch::detect::testing
