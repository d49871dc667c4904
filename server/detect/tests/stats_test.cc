#include "gradwatch/detect/stats.h"

#include <gtest/gtest.h>

#include <cmath>

namespace gradwatch::detect {
namespace {

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
