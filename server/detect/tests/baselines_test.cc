#include "gradwatch/detect/baselines.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

namespace gradwatch::detect {
namespace {

StepSample Step(uint64_t step, double loss, double grad = 0.2) {
  StepSample s;
  s.step = step;
  s.loss = loss;
  s.grad_norm = grad;
  return s;
}

// Feeds `n` steady steps (±5% alternating), then `last`; returns whether `last` is flagged.
bool FlagsAfter(const std::string& name, int n, StepSample last) {
  auto b = MakeBaseline(name);
  EXPECT_NE(b, nullptr) << name;
  if (!b) return false;
  for (int i = 1; i <= n; ++i) {
    double wiggle = i % 2 ? 1.05 : 0.95;
    EXPECT_FALSE(b->OnStep(Step(i, 1.0 * wiggle, 0.2 * wiggle))) << name << " step " << i;
  }
  last.step = n + 1;
  return b->OnStep(last);
}

TEST(Baselines, factory_returns_the_six_published_rules) {
  std::set<std::string> names;
  for (const auto& b : MakeBaselines()) names.insert(b->name());
  EXPECT_EQ(names, (std::set<std::string>{"zclip", "olmo_skip_step", "megatron",
                                          "llm_foundry_kill_loss_spike",
                                          "lightning_spike_detection", "keras_terminate_on_nan"}));
  EXPECT_EQ(MakeBaseline("nope"), nullptr);
}

TEST(Baselines, zclip_flags_a_grad_norm_2_5_sigma_above_its_ema_after_warmup) {
  EXPECT_TRUE(FlagsAfter("zclip", 50, Step(0, 1.0, 0.2 * 1.5)));  // σ ~0.01: z ~ 10
  EXPECT_FALSE(FlagsAfter("zclip", 10, Step(0, 1.0, 100)));       // still warming up
}

TEST(Baselines, olmo_skip_step_flags_6_sigma_once_64_steps_are_seen) {
  EXPECT_TRUE(FlagsAfter("olmo_skip_step", 100, Step(0, 1.5)));   // loss 10σ above
  EXPECT_FALSE(FlagsAfter("olmo_skip_step", 100, Step(0, 1.2)));  // 4σ
  EXPECT_FALSE(FlagsAfter("olmo_skip_step", 50, Step(0, 100)));   // too few steps
  EXPECT_TRUE(FlagsAfter("olmo_skip_step", 100, Step(0, NAN)));
}

TEST(Baselines, megatron_flags_ten_times_the_max_of_the_first_100_values_and_nan) {
  EXPECT_TRUE(FlagsAfter("megatron", 150, Step(0, 1.0, 2.2)));
  EXPECT_FALSE(FlagsAfter("megatron", 150, Step(0, 1.0, 2.0)));  // 9.5x the max 0.21
  EXPECT_FALSE(FlagsAfter("megatron", 50, Step(0, 1.0, 100)));   // still sampling its max
  EXPECT_TRUE(FlagsAfter("megatron", 5, Step(0, 1.0, NAN)));
}

TEST(Baselines, kill_loss_spike_flags_the_fifth_consecutive_doubled_loss) {
  auto b = MakeBaseline("llm_foundry_kill_loss_spike");
  uint64_t step = 1;
  for (; step <= 100; ++step) ASSERT_FALSE(b->OnStep(Step(step, 1.0)));
  for (int i = 0; i < 4; ++i) EXPECT_FALSE(b->OnStep(Step(step++, 3.0))) << i;
  EXPECT_TRUE(b->OnStep(Step(step, 3.0)));
}

TEST(Baselines, lightning_flags_a_loss_that_rose_to_three_times_its_window_mean) {
  EXPECT_TRUE(FlagsAfter("lightning_spike_detection", 20, Step(0, 3.2)));
  EXPECT_FALSE(FlagsAfter("lightning_spike_detection", 20, Step(0, 2.5)));
  EXPECT_TRUE(FlagsAfter("lightning_spike_detection", 20, Step(0, INFINITY)));
}

TEST(Baselines, keras_terminate_on_nan_flags_only_non_finite_loss) {
  EXPECT_TRUE(FlagsAfter("keras_terminate_on_nan", 3, Step(0, NAN)));
  EXPECT_FALSE(FlagsAfter("keras_terminate_on_nan", 3, Step(0, 1e30, INFINITY)));
}

}  // namespace
}  // namespace gradwatch::detect
