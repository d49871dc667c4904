#include "traces.h"

#include <algorithm>
#include <cmath>
#include <random>

namespace gradwatch::detect::testing {
namespace {

constexpr double kPi = 3.14159265358979323846;

double LearningRate(uint64_t t, uint64_t n) {
  if (t < 500) return 1e-3 * static_cast<double>(t) / 500;
  double progress = static_cast<double>(t - 500) / static_cast<double>(n - 500 + 1);
  return 1e-4 + 0.9e-3 * 0.5 * (1 + std::cos(kPi * progress));
}

double JaccardAt(uint64_t t) {
  double learned = t < 100 ? 0 : 1 - std::exp(-static_cast<double>(t - 100) / 800);
  return 0.005 + 0.745 * learned;
}

}  // namespace

Trace HealthyTrace(const Healthy& h) {
  std::mt19937 rng(h.seed);
  std::normal_distribution<double> normal(0, 1);
  Trace t;
  for (size_t i = 0; i < h.layers; ++i) t.layer_names.push_back("block" + std::to_string(i));
  t.steps.resize(h.steps);
  t.layers.resize(h.steps);
  for (uint64_t step = 1; step <= h.steps; ++step) {
    StepSample& s = t.at(step);
    double ts = static_cast<double>(step);
    s.step = step;
    s.epoch = static_cast<uint32_t>(step / 1000);
    s.learning_rate = LearningRate(step, h.steps);
    s.grad_norm = 0.2 * (1 + 2 * std::exp(-ts / 300)) * std::exp(h.grad_sigma * normal(rng));
    double jaccard = std::min(0.99, JaccardAt(step) * std::exp(0.05 * normal(rng)));
    s.jaccard_soft = jaccard;
    s.jaccard_hard = std::max(0.0, jaccard - 0.02);
    s.accuracy = 0.9 + 0.09 * jaccard;
    s.loss = h.jaccard_loss
                 ? 1 - jaccard
                 : (0.2 + 2 * std::exp(-ts / 1500)) * std::exp(h.loss_sigma * normal(rng));
    for (size_t i = 0; i < h.layers; ++i) {
      double share = (1 + 0.1 * static_cast<double>(i)) / std::sqrt(static_cast<double>(h.layers));
      t.layers_at(step).push_back(
          static_cast<float>(s.grad_norm * share * std::exp(0.2 * normal(rng))));
    }
    s.layer_norms = t.layers_at(step).data();
    s.n_layers = h.layers;
  }
  return t;
}

void Trace::Remean(uint64_t step) {
  const std::vector<double>& losses = rank_losses.at(step - 1);
  double sum = 0;
  for (double l : losses) sum += l;
  at(step).loss = sum / static_cast<double>(losses.size());
}

void AddRanks(Trace& t, const Ranks& r) {
  std::mt19937 rng(r.seed);
  std::normal_distribution<double> normal(0, 1);
  std::uniform_real_distribution<double> u(0, 1);
  const size_t n = t.steps.size();
  t.rank_losses.assign(n, std::vector<double>(r.n));
  t.rank_norms.assign(n, std::vector<double>(r.n));
  t.rank_compute.assign(n, std::vector<double>(r.n));
  for (size_t i = 0; i < n; ++i) {
    StepSample& s = t.steps[i];
    double sum = 0;
    for (size_t k = 0; k < r.n; ++k) {
      t.rank_norms[i][k] = s.grad_norm * 1.2 * std::exp(r.norm_sigma * normal(rng));
      sum += t.rank_losses[i][k] = std::exp(r.loss_sigma * normal(rng));
      double slow = u(rng) * r.slow_every * static_cast<double>(r.n) < 1 ? r.slow_factor : 1;
      t.rank_compute[i][k] = r.compute * std::exp(r.compute_sigma * normal(rng)) * slow;
    }
    for (double& loss : t.rank_losses[i]) loss *= s.loss * static_cast<double>(r.n) / sum;
    s.rank_losses = t.rank_losses[i].data();
    s.rank_grad_norms = t.rank_norms[i].data();
    s.rank_compute_seconds = t.rank_compute[i].data();
    s.n_ranks = r.n;
    t.Remean(i + 1);
  }
}

std::vector<Event> Feed(RunDetector& d, const Trace& t) {
  std::vector<Event> all;
  for (const StepSample& s : t.steps) {
    std::vector<Event> events = d.OnStep(s);
    all.insert(all.end(), events.begin(), events.end());
  }
  return all;
}

RunInfo InfoFor(const Trace& t, double loss_upper_bound) {
  RunInfo info;
  info.layer_names = t.layer_names;
  info.loss_upper_bound = loss_upper_bound;
  return info;
}

std::string Describe(const std::vector<Event>& events) {
  std::string out;
  for (const Event& e : events) {
    out += "step " + std::to_string(e.step) + " " + ToString(e.kind) + "/" + ToString(e.severity) +
           ": " + e.message + "\n";
  }
  return out;
}

}  // namespace gradwatch::detect::testing
