#include <gtest/gtest.h>

#include <cmath>

#include "gradwatch/detect/detectors.h"

namespace gradwatch::detect {
namespace {

StepSample Step(uint64_t step, double loss, double jaccard, double grad = 0.2) {
  StepSample s;
  s.step = step;
  s.loss = loss;
  s.jaccard_soft = jaccard;
  s.grad_norm = grad;
  return s;
}

// Feeds `healthy` learning steps then pinned ones; returns the step collapse fired at, or 0.
uint64_t CollapseStep(CollapseDetector& d, uint64_t healthy, StepSample pinned,
                      uint64_t pinned_steps) {
  for (uint64_t step = 1; step <= healthy; ++step)
    EXPECT_FALSE(d.OnStep(Step(step, 0.3 + 0.001 * static_cast<double>(step % 7), 0.7), 0.2));
  for (uint64_t step = healthy + 1; step <= healthy + pinned_steps; ++step) {
    pinned.step = step;
    if (d.OnStep(pinned, 0.2)) return step;
  }
  return 0;
}

TEST(CollapseDetector, flags_a_jaccard_loss_pinned_at_one_after_the_window) {
  CollapseDetector d(1.0, Thresholds{});
  EXPECT_EQ(CollapseStep(d, 100, Step(0, 1.0, 1e-15, 0.0), 20), 105u);  // 101..105
}

TEST(CollapseDetector, reports_the_evidence_in_its_message) {
  CollapseDetector d(1.0, Thresholds{});
  for (uint64_t step = 1; step <= 100; ++step) d.OnStep(Step(step, 0.3, 0.7), 0.2);
  std::optional<Event> e;
  for (uint64_t step = 101; !e && step < 120; ++step) e = d.OnStep(Step(step, 1.0, 1e-15, 0), 0.2);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, EventKind::kCollapse);
  EXPECT_EQ(e->severity, Severity::kCritical);
  EXPECT_NE(e->message.find("pinned at its bound 1"), std::string::npos) << e->message;
  EXPECT_NE(e->message.find("Jaccard 1e-15"), std::string::npos) << e->message;
}

TEST(CollapseDetector, flags_a_flat_unbounded_loss_with_zero_gradient) {
  CollapseDetector d(0, Thresholds{});
  StepSample flat = Step(0, 2.302585, NAN, 0.0);    // cross-entropy stuck at log(10)
  EXPECT_EQ(CollapseStep(d, 100, flat, 20), 106u);  // 101 is not flat yet: 102..106
}

TEST(CollapseDetector, needs_jaccard_or_gradient_evidence) {
  CollapseDetector d(1.0, Thresholds{});
  EXPECT_EQ(CollapseStep(d, 100, Step(0, 0.3, 0.7, 0.2), 50), 0u);  // flat but learning
}

TEST(CollapseDetector, accepts_a_pinned_bounded_loss_alone_when_nothing_else_is_reported) {
  CollapseDetector d(1.0, Thresholds{});
  StepSample pinned = Step(0, 1.0, NAN);
  pinned.has_grad_norm = false;
  EXPECT_EQ(CollapseStep(d, 100, pinned, 20), 105u);
}

TEST(CollapseDetector, ignores_a_run_that_starts_at_the_bound) {
  CollapseDetector d(1.0, Thresholds{});
  for (uint64_t step = 1; step <= 200; ++step)
    EXPECT_FALSE(d.OnStep(Step(step, 0.995, 0.005, 0.3), 0.3));
}

TEST(CollapseDetector, uses_the_short_window_on_epoch_level_histories) {
  CollapseDetector d(1.0, Thresholds{});
  EXPECT_EQ(CollapseStep(d, 11, Step(0, 1.0, 1e-15), 10), 13u);  // 12, 13
}

TEST(CollapseDetector, fires_again_after_a_recovery) {
  CollapseDetector d(1.0, Thresholds{});
  ASSERT_EQ(CollapseStep(d, 100, Step(0, 1.0, 0.0), 10), 105u);
  for (uint64_t step = 106; step <= 110; ++step) d.OnStep(Step(step, 1.0, 0.0), 0.2);
  EXPECT_FALSE(d.OnStep(Step(111, 0.4, 0.6), 0.2));
  std::optional<Event> again;
  for (uint64_t step = 112; !again && step < 130; ++step)
    again = d.OnStep(Step(step, 1.0, 0.0), 0.2);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->step, 116u);
}

TEST(VanishingDetector, flags_a_gradient_below_a_thousandth_of_healthy_for_the_window) {
  VanishingDetector d{Thresholds{}};
  EXPECT_FALSE(d.OnNorm(1, 0.2, 0.2));
  std::optional<Event> e;
  uint64_t step = 2;
  for (; !e && step < 30; ++step) e = d.OnNorm(step, 1e-5, 0.2);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->step, 11u);  // 2..11
  EXPECT_EQ(e->kind, EventKind::kVanishing);
  EXPECT_NEAR(e->value, 5e-5, 1e-9);
  EXPECT_FALSE(d.OnNorm(step, 1e-5, 0.2));
}

TEST(VanishingDetector, is_silent_until_the_healthy_level_is_known) {
  VanishingDetector d{Thresholds{}};
  for (uint64_t step = 1; step < 50; ++step) EXPECT_FALSE(d.OnNorm(step, 0.0, 0.0));
}

TEST(ValCollapseDetector, flags_validation_jaccard_falling_to_zero_from_its_best) {
  ValCollapseDetector d{Thresholds{}};
  for (uint64_t step = 1; step <= 11; ++step)
    EXPECT_FALSE(d.OnEval({step, 0.3, 0.06 * static_cast<double>(step), NAN, NAN}));
  auto e = d.OnEval({12, 1.0, 1.3e-15, NAN, NAN});
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, EventKind::kValCollapse);
  EXPECT_EQ(e->step, 12u);
  EXPECT_DOUBLE_EQ(e->value, 1.3e-15);
  EXPECT_FALSE(d.OnEval({13, 1.0, 1e-15, NAN, NAN}));
}

TEST(ValCollapseDetector, ignores_a_run_that_never_learned) {
  ValCollapseDetector d{Thresholds{}};
  EXPECT_FALSE(d.OnEval({1, 1.0, 0.02, NAN, NAN}));
  EXPECT_FALSE(d.OnEval({2, 1.0, 0.0, NAN, NAN}));
}

TEST(ValCollapseDetector, falls_back_to_hard_jaccard) {
  ValCollapseDetector d{Thresholds{}};
  EXPECT_FALSE(d.OnEval({1, NAN, NAN, 0.6, NAN}));
  EXPECT_TRUE(d.OnEval({2, NAN, NAN, 0.0, NAN}));
}

}  // namespace
}  // namespace gradwatch::detect
