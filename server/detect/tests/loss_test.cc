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

// Feeds `n` losses `level * (1 + rate)^i` with lognormal noise sigma; returns the first event.
std::optional<Event> FeedTrend(DivergenceDetector& d, uint64_t* step, int n, double level,
                               double rate, double sigma, uint32_t seed = 5) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0, sigma);
  for (int i = 0; i < n; ++i) {
    auto e = d.OnLoss((*step)++, level * std::pow(1 + rate, i) * std::exp(normal(rng)));
    if (e) return e;
  }
  return std::nullopt;
}

TEST(DivergenceDetector, warns_at_once_when_the_loss_doubles_then_escalates_when_it_stays_up) {
  DivergenceDetector d{Thresholds{}};
  uint64_t step = FeedLoss(d, 1, 200, 1.0);
  uint64_t rise = step;
  std::vector<Event> events;
  for (; step < rise + 200; ++step)
    if (auto e = d.OnLoss(step, 2.0)) events.push_back(*e);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].severity, Severity::kWarning);
  EXPECT_EQ(events[0].step, rise + 2);  // the median of the last 5 losses has doubled
  EXPECT_NE(events[0].message.find("x its recent level"), std::string::npos) << events[0].message;
  EXPECT_EQ(events[1].severity, Severity::kCritical);
  // The smoothed loss crosses 1.5x the minimum after ~6 steps, then the 50-step window.
  EXPECT_GE(events[1].step, rise + 50);
  EXPECT_LE(events[1].step, rise + 60);
}

TEST(DivergenceDetector, a_short_excursion_is_a_warning_at_most) {
  DivergenceDetector d{Thresholds{}};
  uint64_t step = FeedLoss(d, 1, 200, 1.0);
  int warnings = 0;
  for (int i = 0; i < 30; ++i) {
    auto e = d.OnLoss(step++, 3.0);
    if (e) {
      EXPECT_EQ(e->severity, Severity::kWarning);
    }
    warnings += e ? 1 : 0;
  }
  EXPECT_EQ(warnings, 1);
  FeedLoss(d, step + 100, 200, 1.0);  // back to normal: nothing more
}

// The trainer's log loss varies by 0.01-0.05 from step to step at losses of 0.3-0.8 (batch 4 and
// 2, bench/detection's healthy traces); 0.1 is a noisier run than any of them.
TEST(DivergenceDetector, trend_test_flags_a_one_percent_per_step_rise_within_40_steps) {
  for (double sigma : {0.02, 0.05, 0.1}) {
    for (uint32_t seed : {1u, 2u, 3u, 4u, 5u}) {
      DivergenceDetector d{Thresholds{}};
      uint64_t step = FeedLoss(d, 1, 300, 0.4, seed);
      uint64_t start = step;
      auto e = FeedTrend(d, &step, 100, 0.4, 0.01, sigma, seed);
      ASSERT_TRUE(e) << "sigma " << sigma << " seed " << seed;
      EXPECT_LT(e->step - start, sigma < 0.1 ? 40u : 55u)
          << "sigma " << sigma << " seed " << seed << ": " << e->message;
      EXPECT_EQ(e->kind, EventKind::kDivergence);
    }
  }
}

TEST(DivergenceDetector, never_fires_on_a_noisy_loss_converging_to_near_zero) {
  for (uint32_t seed : {1u, 2u, 3u, 4u}) {
    DivergenceDetector d{Thresholds{}};
    std::mt19937 rng(seed);
    std::normal_distribution<double> normal(0, 0.5);  // log noise at the floor: loss ~2e-4 +-65%
    for (uint64_t step = 1; step <= 5000; ++step) {
      double level = 2e-4 + 0.78 * std::exp(-static_cast<double>(step) / 150);
      auto e = d.OnLoss(step, level * std::exp(normal(rng)));
      EXPECT_FALSE(e) << "seed " << seed << ": " << e->message;
    }
  }
}

TEST(DivergenceDetector, trend_test_stays_silent_on_a_flat_noisy_loss) {
  for (uint32_t seed = 1; seed <= 10; ++seed) {
    DivergenceDetector d{Thresholds{}};
    uint64_t step = 1;
    auto e = FeedTrend(d, &step, 10000, 0.5, 0, 0.25, seed);
    EXPECT_FALSE(e) << "seed " << seed << ": " << e->message;
  }
}

}  // namespace
}  // namespace gradwatch::detect
