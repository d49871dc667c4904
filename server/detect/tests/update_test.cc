#include <gtest/gtest.h>

#include <cmath>

#include "gradwatch/detect/detectors.h"

namespace gradwatch::detect {
namespace {

StepSample Step(uint64_t step, double lr, double update_ratio = kNaN) {
  StepSample s;
  s.step = step;
  s.loss = 0.5;
  s.grad_norm = 0.2;
  s.learning_rate = lr;
  s.update_ratio = update_ratio;
  return s;
}

TEST(UpdateDetector, flags_a_hundredfold_learning_rate_on_its_step_as_critical) {
  UpdateDetector d{Thresholds{}};
  for (uint64_t step = 1; step <= 351; ++step) EXPECT_FALSE(d.OnStep(Step(step, 0.01, 1.6e-3)));
  auto e = d.OnStep(Step(352, 1.0, 0.087));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, EventKind::kLrJump);
  EXPECT_EQ(e->severity, Severity::kCritical);
  EXPECT_DOUBLE_EQ(e->value, 100);
  EXPECT_NE(e->message.find("learning rate 1 is 100x its level 0.01"), std::string::npos) << e->message;
  EXPECT_NE(e->message.find("||dw||/||w|| of the update would be 0.087 (54.4x its level 0.0016)"),
            std::string::npos) << e->message;
  EXPECT_FALSE(d.OnStep(Step(353, 0.01, 1.6e-3)));
  EXPECT_DOUBLE_EQ(d.lr_level(), 0.01);  // the spike did not become the level
}

TEST(UpdateDetector, a_tenfold_rate_is_critical_and_threefold_a_warning) {
  for (double factor : {3.0, 10.0}) {
    UpdateDetector d{Thresholds{}};
    for (uint64_t step = 1; step <= 50; ++step) d.OnStep(Step(step, 0.01));
    auto e = d.OnStep(Step(51, 0.01 * factor));
    ASSERT_TRUE(e) << factor;
    EXPECT_EQ(e->severity, factor >= 10 ? Severity::kCritical : Severity::kWarning);
  }
}

TEST(UpdateDetector, adopts_a_rate_that_lasts_as_the_new_level) {
  UpdateDetector d{Thresholds{}};
  for (uint64_t step = 1; step <= 50; ++step) d.OnStep(Step(step, 0.001));
  int events = 0;
  for (uint64_t step = 51; step <= 100; ++step) events += d.OnStep(Step(step, 0.01)) ? 1 : 0;
  EXPECT_EQ(events, 1);
  EXPECT_DOUBLE_EQ(d.lr_level(), 0.01);
  EXPECT_TRUE(d.quiet());
}

TEST(UpdateDetector, warmup_and_decay_schedules_raise_nothing) {
  UpdateDetector d{Thresholds{}};
  for (uint64_t step = 1; step <= 2000; ++step) {
    double lr = step <= 500 ? 1e-3 * step / 500 : 1e-3 * std::pow(0.1, (step - 500) / 500.0);
    auto e = d.OnStep(Step(step, lr, 1e-3 * lr / 1e-3 + 1e-6));
    EXPECT_FALSE(e) << e->message;
  }
}

TEST(UpdateDetector, an_update_over_a_tenth_of_the_weights_is_critical_from_the_first_step) {
  UpdateDetector d{Thresholds{}};
  auto e = d.OnStep(Step(1, 0.1, 0.6));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, EventKind::kUpdateSize);
  EXPECT_EQ(e->severity, Severity::kCritical);
  EXPECT_NE(e->message.find("0.6"), std::string::npos);
}

TEST(UpdateDetector, flags_an_update_ten_times_its_level_after_the_warmup) {
  UpdateDetector d{Thresholds{}};
  for (uint64_t step = 1; step <= 100; ++step)
    EXPECT_FALSE(d.OnStep(Step(step, 0.01, 1e-3 * (step % 2 ? 1.2 : 0.8))));
  EXPECT_FALSE(d.OnStep(Step(101, 0.01, 5e-3)));
  auto e = d.OnStep(Step(102, 0.01, 2e-2));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, EventKind::kUpdateSize);
}

TEST(UpdateDetector, ignores_steps_that_report_neither) {
  UpdateDetector d{Thresholds{}};
  for (uint64_t step = 1; step <= 100; ++step) EXPECT_FALSE(d.OnStep(Step(step, kNaN)));
  EXPECT_TRUE(d.quiet());
}

}  // namespace
}  // namespace gradwatch::detect
