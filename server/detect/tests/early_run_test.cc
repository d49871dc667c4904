// RunDetector from the first step: an explosion inside the warm-up and the dead network it leaves,
// young noise that must not page, statistics that follow a rollback, slow detectors of a run's
// course (no progress, suspect data) and a converged run that must stay quiet.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "gradwatch/detect/run_detector.h"
#include "traces.h"

namespace gradwatch::detect {
namespace {

using testing::Describe;

StepSample Step(uint64_t step, double loss, double norm) {
  StepSample s;
  s.step = step;
  s.loss = loss;
  s.grad_norm = norm;
  return s;
}

std::vector<Event> FeedAll(RunDetector& d, const std::vector<StepSample>& steps) {
  std::vector<Event> all;
  for (const StepSample& s : steps) {
    std::vector<Event> e = d.OnStep(s);
    all.insert(all.end(), e.begin(), e.end());
  }
  return all;
}

// gradwatch-train with a x1000 gradient at step 21: grad norm ~0.06 before, 64.5 at the spike,
// then decaying to ~0 within ten steps with the loss stuck around 0.72 (not at the bound).
std::vector<StepSample> EarlyExplosion(uint32_t seed = 1) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> noise(0, 0.08);
  std::vector<StepSample> steps;
  for (uint64_t i = 1; i <= 20; ++i) steps.push_back(Step(i, 0.79 * std::exp(noise(rng) / 4), 0.057 * std::exp(noise(rng))));
  steps.push_back(Step(21, 0.77, 64.5));
  const double after[] = {0.077, 0.056, 0.034, 0.019, 0.011, 0.004, 0.0026, 0.0015, 0.0009, 0.0005};
  for (double norm : after) steps.push_back(Step(steps.size() + 1, 0.72 * std::exp(noise(rng) / 2), norm));
  for (int i = 0; i < 30; ++i) steps.push_back(Step(steps.size() + 1, 0.72, 1e-5));
  return steps;
}

TEST(RunDetector, pages_on_an_explosion_inside_the_warmup_and_names_it_as_the_dead_networks_cause) {
  RunDetector d(RunInfo{}, Thresholds{});
  std::vector<Event> events = FeedAll(d, EarlyExplosion());
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events[0].step, 21u);
  EXPECT_EQ(events[0].kind, EventKind::kGradSpike);
  EXPECT_EQ(events[0].severity, Severity::kCritical) << Describe(events);
  const Event* dead = nullptr;
  for (const Event& e : events)
    if (e.kind == EventKind::kVanishing && e.cause_step != 0 && !dead) dead = &e;
  ASSERT_TRUE(dead) << Describe(events);
  EXPECT_EQ(dead->cause_step, 21u);
  EXPECT_LE(dead->step, 30u);  // within ten steps, not the 30 of the plain vanishing rule
  EXPECT_EQ(dead->severity, Severity::kCritical);
  EXPECT_NE(dead->message.find("since the gradient explosion at step 21"), std::string::npos) << dead->message;
}

TEST(RunDetector, a_noisy_start_never_pages) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    RunDetector d(RunInfo{}, Thresholds{});
    std::mt19937 rng(seed);
    std::normal_distribution<double> normal(0, 0.3);
    std::uniform_real_distribution<double> u(0, 1);
    std::vector<StepSample> steps;
    for (uint64_t i = 1; i <= 300; ++i) {
      double t = static_cast<double>(i);
      double benign = u(rng) < 0.08 ? 1.5 + u(rng) : 1.0;  // batches at 1.5-2.5x the level
      steps.push_back(Step(i, (0.3 + 2 * std::exp(-t / 100)) * std::exp(0.1 * normal(rng)),
                           (0.3 + 3 * std::exp(-t / 15)) * benign * std::exp(normal(rng))));
    }
    for (const Event& e : FeedAll(d, steps))
      EXPECT_NE(e.severity, Severity::kCritical) << "seed " << seed << ": " << Describe({e});
  }
}

TEST(RunDetector, restores_the_statistics_of_the_step_a_trainer_rolled_back_to) {
  testing::Trace t = testing::HealthyTrace(testing::Healthy{});
  RunDetector d(RunInfo{}, Thresholds{}), reference(RunInfo{}, Thresholds{});
  for (uint64_t step = 1; step <= 120; ++step) {
    StepSample s = t.at(step);
    s.layer_norms = nullptr;
    s.n_layers = 0;
    d.OnStep(s);
    if (step <= 100) reference.OnStep(s);
  }
  for (uint64_t step = 121; step <= 130; ++step) d.OnStep(Step(step, 5.0, 50.0));  // exploded
  StepSample resumed = t.at(131);
  resumed.layer_norms = nullptr;
  resumed.n_layers = 0;
  resumed.rolled_back = true;
  resumed.rolled_back_to = 100;  // the trainer's checkpoint (every 50, like the snapshots)
  std::vector<Event> events = d.OnStep(resumed);
  reference.OnStep(resumed);
  EXPECT_TRUE(events.empty()) << Describe(events);
  EXPECT_DOUBLE_EQ(d.stats().grad_norm_mean, reference.stats().grad_norm_mean);
  EXPECT_EQ(d.stats().healthy_steps, reference.stats().healthy_steps);
}

TEST(RunDetector, keeps_only_the_newest_snapshots_and_each_holds_its_own_step) {
  Thresholds th;
  th.snapshot_every = 10;
  th.snapshots_kept = 2;  // after step 30 every snapshot overwrites the oldest
  testing::Trace t = testing::HealthyTrace(testing::Healthy{});
  RunDetector d(RunInfo{}, th), at50(RunInfo{}, th);
  for (uint64_t step = 1; step <= 60; ++step) {
    d.OnStep(t.at(step));
    if (step <= 50) at50.OnStep(t.at(step));
  }
  EXPECT_EQ(d.RestoreTo(55), 50u);
  EXPECT_DOUBLE_EQ(d.stats().grad_norm_mean, at50.stats().grad_norm_mean);
  EXPECT_EQ(d.stats().healthy_steps, at50.stats().healthy_steps);
  EXPECT_EQ(d.RestoreTo(45), 0u);  // 40 and older were overwritten
}

TEST(RunDetector, a_rollback_to_step_0_starts_the_statistics_afresh) {
  RunDetector d(RunInfo{}, Thresholds{});
  FeedAll(d, EarlyExplosion());
  EXPECT_EQ(d.RestoreTo(20), 0u);
  EXPECT_EQ(d.stats().healthy_steps, 0u);
  EXPECT_TRUE(FeedAll(d, {Step(70, 0.79, 0.057), Step(71, 0.78, 0.06)}).empty());
}

TEST(RunDetector, a_run_that_never_learns_is_a_warning_once) {
  RunDetector d(RunInfo{}, Thresholds{});
  std::mt19937 rng(3);
  std::normal_distribution<double> normal(0, 0.02);
  std::vector<StepSample> steps;
  for (uint64_t i = 1; i <= 600; ++i) steps.push_back(Step(i, 0.79 * std::exp(normal(rng)), 0.06 * std::exp(normal(rng))));
  std::vector<Event> events = FeedAll(d, steps);
  ASSERT_EQ(events.size(), 1u) << Describe(events);
  EXPECT_EQ(events[0].kind, EventKind::kNoProgress);
  EXPECT_EQ(events[0].severity, Severity::kWarning);
  EXPECT_EQ(events[0].step, 300u);
}

TEST(RunDetector, names_the_data_when_separate_spikes_keep_coming) {
  RunDetector d(RunInfo{}, Thresholds{});
  std::mt19937 rng(4);
  std::normal_distribution<double> normal(0, 0.1);
  std::vector<StepSample> steps;
  std::vector<std::vector<uint64_t>> batches;  // item 7 is in every bad batch
  for (uint64_t i = 1; i <= 400; ++i) {
    bool bad_batch = i == 150 || i == 190 || i == 240;
    steps.push_back(Step(i, 0.5 * std::exp(normal(rng) / 2), (bad_batch ? 20.0 : 0.2) * std::exp(normal(rng))));
    batches.push_back(bad_batch ? std::vector<uint64_t>{7, i % 30, 100 + i % 7} : std::vector<uint64_t>{i % 30});
  }
  for (size_t i = 0; i < steps.size(); ++i) {
    steps[i].sample_ids = batches[i].data();
    steps[i].n_samples = batches[i].size();
  }
  std::vector<Event> events = FeedAll(d, steps);
  std::vector<Event> suspects;
  for (const Event& e : events)
    if (e.kind == EventKind::kDataSuspect) suspects.push_back(e);
  ASSERT_EQ(suspects.size(), 1u) << Describe(events);
  EXPECT_EQ(suspects[0].step, 240u);
  EXPECT_NE(suspects[0].message.find("steps 150, 190, 240"), std::string::npos) << suspects[0].message;
  EXPECT_NE(suspects[0].message.find("items 7 (x3), "), std::string::npos) << suspects[0].message;
}

TEST(RunDetector, a_run_converged_near_zero_raises_nothing_critical_in_5000_steps) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    RunDetector d(RunInfo{{}, 1.0}, Thresholds{});
    std::mt19937 rng(seed);
    std::normal_distribution<double> normal(0, 1);
    std::vector<StepSample> steps;
    for (uint64_t i = 1; i <= 5000; ++i) {
      double t = static_cast<double>(i);
      // Log noise grows as the loss shrinks, as in the trainer's traces: 0.02 at 0.78, 0.5 near 0.
      double level = 2e-4 + 0.78 * std::exp(-t / 150);
      double sigma = 0.02 + 0.48 * (1 - level / 0.78);
      StepSample s = Step(i, level * std::exp(sigma * normal(rng)), 0.2 * std::exp(0.4 * normal(rng)));
      s.jaccard_soft = 1 - s.loss;
      steps.push_back(s);
    }
    for (const Event& e : FeedAll(d, steps))
      EXPECT_NE(e.severity, Severity::kCritical) << "seed " << seed << ": " << Describe({e});
  }
}

}  // namespace
}  // namespace gradwatch::detect
