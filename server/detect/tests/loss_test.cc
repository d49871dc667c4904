#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "gradwatch/detect/detectors.h"

namespace gradwatch::detect {
namespace {

// A loss around `level` with 5% lognormal noise, n steps from `step`; returns the next step.
template <class D>
uint64_t FeedLoss(D& d, uint64_t step, int n, double level, uint32_t seed = 3) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0, 0.05);
  for (int i = 0; i < n; ++i, ++step) EXPECT_FALSE(d.OnLoss(step, level * std::exp(normal(rng))));
  return step;
}

TEST(LossSpikeDetector, flags_a_doubled_loss_after_warmup_as_a_warning) {
  LossSpikeDetector d{Thresholds{}};
  uint64_t step = FeedLoss(d, 1, 100, 0.5);
  auto e = d.OnLoss(step, 1.1);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, EventKind::kLossSpike);
  EXPECT_EQ(e->severity, Severity::kWarning);
  EXPECT_NEAR(e->value, 2.2, 0.1);
}

TEST(LossSpikeDetector, is_critical_at_four_times_the_running_mean) {
  LossSpikeDetector d{Thresholds{}};
  uint64_t step = FeedLoss(d, 1, 100, 0.5);
  auto e = d.OnLoss(step, 2.5);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->severity, Severity::kCritical);
}

TEST(LossSpikeDetector, stays_silent_during_warmup) {
  LossSpikeDetector d{Thresholds{}};
  uint64_t step = FeedLoss(d, 1, 10, 0.5);
  EXPECT_FALSE(d.OnLoss(step, 5.0));
}

TEST(LossSpikeDetector, z_on_log_loss_catches_a_smaller_jump_in_a_steady_loss) {
  LossSpikeDetector d{Thresholds{}};
  uint64_t step = 1;
  for (int i = 0; i < 100; ++i) d.OnLoss(step++, 0.5);  // σ at its floor, 0.05
  auto e = d.OnLoss(step, 0.5 * 1.5);                   // 1.5x: z = ln 1.5 / 0.05 ~ 8
  ASSERT_TRUE(e);
  EXPECT_EQ(e->severity, Severity::kWarning);
}

TEST(DivergenceDetector, flags_a_loss_that_stays_above_its_minimum_for_the_window) {
  DivergenceDetector d{Thresholds{}};
  uint64_t step = FeedLoss(d, 1, 200, 1.0);
  uint64_t rise = step;
  std::optional<Event> e;
  for (; !e && step < rise + 200; ++step) e = d.OnLoss(step, 2.0);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, EventKind::kDivergence);
  EXPECT_EQ(e->severity, Severity::kCritical);
  // The smoothed loss crosses 1.5x the minimum after ~6 steps, then the 50-step window.
  EXPECT_GE(e->step, rise + 50);
  EXPECT_LE(e->step, rise + 60);
  EXPECT_FALSE(d.OnLoss(step, 2.0));  // once per episode
}

TEST(DivergenceDetector, ignores_a_short_excursion) {
  DivergenceDetector d{Thresholds{}};
  uint64_t step = FeedLoss(d, 1, 200, 1.0);
  for (int i = 0; i < 30; ++i) EXPECT_FALSE(d.OnLoss(step++, 3.0));
  FeedLoss(d, step, 200, 1.0);
}

}  // namespace
}  // namespace gradwatch::detect
