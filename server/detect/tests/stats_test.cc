#include "gradwatch/detect/stats.h"

#include <gtest/gtest.h>

#include <cmath>

namespace gradwatch::detect {
namespace {

TEST(Ewma, seeds_its_mean_and_variance_from_the_warmup) {
  Ewma e(0.97, 0.99, 4);
  for (double x : {1.0, 2.0, 3.0}) e.Add(x);
  EXPECT_FALSE(e.ready());
  EXPECT_EQ(e.Z(100, 0), 0);  // no z-score while warming up
  e.Add(4);
  EXPECT_TRUE(e.ready());
  EXPECT_DOUBLE_EQ(e.mean(), 2.5);
  EXPECT_DOUBLE_EQ(e.var(), 5.0 / 3);  // sample variance of 1..4
}

TEST(Ewma, moves_toward_new_samples_at_rate_one_minus_alpha) {
  Ewma e(0.9, 0.9, 1);
  e.Add(0);
  e.Add(10);
  EXPECT_DOUBLE_EQ(e.mean(), 1.0);
  EXPECT_DOUBLE_EQ(e.var(), 0.1 * 81);  // (10 - new mean)^2 weighted by 1 - 0.9
}

TEST(Ewma, z_uses_the_std_floor_when_the_variance_is_smaller) {
  Ewma e(0.97, 0.99, 2);
  e.Add(1);
  e.Add(1);
  EXPECT_DOUBLE_EQ(e.Z(1.5, 0.1), 5.0);
  EXPECT_DOUBLE_EQ(e.At(5.0, 0.1), 1.5);
}

TEST(DecayingMax, forgets_a_peak_geometrically_but_never_drops_below_new_samples) {
  DecayingMax m(0.5);
  m.Add(8);
  m.Add(1);
  EXPECT_DOUBLE_EQ(m.value(), 4);
  m.Add(0);
  EXPECT_DOUBLE_EQ(m.value(), 2);
  m.Add(3);
  EXPECT_DOUBLE_EQ(m.value(), 3);
}

TEST(Latch, fires_once_per_episode_and_again_after_it_clears) {
  Latch l;
  EXPECT_TRUE(l.Update(true));
  EXPECT_FALSE(l.Update(true));
  EXPECT_FALSE(l.Update(false));
  EXPECT_TRUE(l.Update(true));
}

TEST(Latch, fires_again_when_a_warning_escalates_to_critical_but_not_back) {
  Latch l;
  EXPECT_TRUE(l.Update(true, Severity::kWarning));
  EXPECT_TRUE(l.Update(true, Severity::kCritical));
  EXPECT_FALSE(l.Update(true, Severity::kWarning));
  EXPECT_FALSE(l.Update(true, Severity::kCritical));
}

}  // namespace
}  // namespace gradwatch::detect
