#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "gradwatch/detect/detectors.h"

namespace gradwatch::detect {
namespace {

// Feeds n lognormal grad norms (median 0.2, sigma) starting at `step`; returns the next step.
uint64_t FeedNoise(GradSpikeDetector& d, uint64_t step, int n, double sigma = 0.1,
                   uint32_t seed = 7) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0, sigma);
  for (int i = 0; i < n; ++i, ++step) EXPECT_FALSE(d.OnNorm(step, 0.2 * std::exp(normal(rng))));
  return step;
}

// Norms alternating exactly at median * e^{±sigma}, the high one first: mean log = log(median),
// std = sigma.
uint64_t FeedAlternating(GradSpikeDetector& d, uint64_t step, int n, double sigma) {
  for (int i = 0; i < n; ++i, ++step)
    EXPECT_FALSE(d.OnNorm(step, 0.2 * std::exp(i % 2 ? -sigma : sigma)));
  return step;
}

TEST(GradSpikeDetector, flags_a_tenfold_jump_after_warmup_as_critical) {
  GradSpikeDetector d{Thresholds{}};
  uint64_t step = FeedNoise(d, 1, 100);
  auto e = d.OnNorm(step, 2.0);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->step, step);
  EXPECT_EQ(e->kind, EventKind::kGradSpike);
  EXPECT_EQ(e->severity, Severity::kCritical);
  EXPECT_GT(e->value, 6);  // z on log norm
  EXPECT_NE(e->message.find("grad norm 2 is"), std::string::npos) << e->message;
}

TEST(GradSpikeDetector, pages_on_a_thousandfold_jump_from_the_second_norm) {
  for (int before : {1, 5, 19}) {
    GradSpikeDetector d{Thresholds{}};
    uint64_t step = FeedNoise(d, 1, before);
    auto e = d.OnNorm(step, 200.0);
    ASSERT_TRUE(e) << before << " norms before";
    EXPECT_EQ(e->severity, Severity::kCritical);
    EXPECT_FALSE(d.warmed_up());
    EXPECT_NE(e->message.find(std::to_string(before) + " norms seen"), std::string::npos) << e->message;
  }
}

// A noisy start: high, decaying norms with benign batches at 1.5-2.5x the level (the issue's
// false critical at step 31, z 8.3 at 2.6x the max, had this shape).
TEST(GradSpikeDetector, a_young_runs_noise_never_pages) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    GradSpikeDetector d{Thresholds{}};
    std::mt19937 rng(seed);
    std::normal_distribution<double> normal(0, 0.3);
    std::uniform_real_distribution<double> u(0, 1);
    for (uint64_t step = 1; step <= 200; ++step) {
      double level = 0.3 + 3 * std::exp(-static_cast<double>(step) / 15);
      double benign = u(rng) < 0.08 ? 1.5 + u(rng) : 1.0;
      auto e = d.OnNorm(step, level * benign * std::exp(normal(rng)));
      if (e) {
        EXPECT_EQ(e->severity, Severity::kWarning) << "seed " << seed << ": " << e->message;
      }
    }
  }
}

TEST(GradSpikeDetector, a_smooth_rise_is_not_critical) {
  GradSpikeDetector d{Thresholds{}};
  uint64_t step = 1;
  for (; step <= 24; ++step) d.OnNorm(step, 0.05 * std::exp(0.02 * std::sin(step)));
  for (int i = 0; i < 30; ++i, ++step) {  // 0.05 -> 0.33 over 30 steps: 6.5% a step
    auto e = d.OnNorm(step, 0.05 * std::pow(1.065, i));
    if (e) {
      EXPECT_EQ(e->severity, Severity::kWarning) << e->message;
    }
  }
}

TEST(GradSpikeDetector, warns_between_the_warning_and_critical_z) {
  GradSpikeDetector d{Thresholds{}};
  uint64_t step = FeedAlternating(d, 1, 200, 0.1);
  auto e = d.OnNorm(step, 0.2 * std::exp(0.58));  // z ~ 5.8
  ASSERT_TRUE(e);
  EXPECT_EQ(e->severity, Severity::kWarning);
  EXPECT_GE(e->value, 5.5);
  EXPECT_LT(e->value, 6);
}

TEST(GradSpikeDetector, fires_once_while_a_spike_persists_escalating_once) {
  GradSpikeDetector d{Thresholds{}};
  uint64_t step = FeedAlternating(d, 1, 200, 0.1);
  auto warning = d.OnNorm(step++, 0.2 * std::exp(0.58));
  auto critical = d.OnNorm(step++, 2.0);
  auto same = d.OnNorm(step++, 2.0);
  ASSERT_TRUE(warning && critical);
  EXPECT_EQ(critical->severity, Severity::kCritical);
  EXPECT_FALSE(same);
  EXPECT_FALSE(d.quiet());
}

TEST(GradSpikeDetector, fires_again_after_the_spike_clears) {
  GradSpikeDetector d{Thresholds{}};
  uint64_t step = FeedNoise(d, 1, 100);
  EXPECT_TRUE(d.OnNorm(step++, 5.0));
  EXPECT_FALSE(d.OnNorm(step++, 0.2));
  EXPECT_TRUE(d.quiet());
  EXPECT_TRUE(d.OnNorm(step++, 5.0));
}

TEST(GradSpikeDetector, ratio_to_the_recent_max_catches_a_jump_the_z_score_misses) {
  GradSpikeDetector d{Thresholds{}};
  uint64_t step = FeedAlternating(d, 1, 200, 1.5);  // very noisy: max ~0.2 * e^1.5
  double max = 0.2 * std::exp(1.5);
  auto e = d.OnNorm(step, 10.5 * max);  // z ~ 2.6 only
  ASSERT_TRUE(e);
  EXPECT_EQ(e->severity, Severity::kCritical);
  EXPECT_NEAR(e->value, 10.5, 0.5);  // the ratio fired, so the value is the ratio
}

TEST(GradSpikeDetector, adapts_to_a_lasting_shift_in_level_with_one_event) {
  for (double shift : {3.0, 5.0, 30.0}) {
    GradSpikeDetector d{Thresholds{}};
    uint64_t step = FeedNoise(d, 1, 100);
    std::mt19937 rng(5);
    std::normal_distribution<double> normal(0, 0.1);
    int events = 0;
    for (int i = 0; i < 2000; ++i)
      events += d.OnNorm(step++, 0.2 * shift * std::exp(normal(rng))) ? 1 : 0;
    EXPECT_EQ(events, 1) << "shift x" << shift;
    EXPECT_TRUE(d.quiet()) << "shift x" << shift;  // the new level has become normal
  }
}

TEST(GradSpikeDetector, leaves_zero_norms_to_the_vanishing_detector) {
  GradSpikeDetector d{Thresholds{}};
  uint64_t step = FeedNoise(d, 1, 100);
  EXPECT_FALSE(d.OnNorm(step++, 0.0));
  EXPECT_TRUE(d.quiet());
  EXPECT_TRUE(d.OnNorm(step++, 2.0));  // statistics untouched by the zero
}

}  // namespace
}  // namespace gradwatch::detect
