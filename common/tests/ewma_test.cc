#include "gradwatch/common/ewma.h"

#include <gtest/gtest.h>

namespace gradwatch {
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

}  // namespace
}  // namespace gradwatch
