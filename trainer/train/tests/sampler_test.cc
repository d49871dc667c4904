// BatchSampler: reproducible shuffled batches, every index once per epoch, remainder dropped.
#include "train/sampler.h"

#include <algorithm>
#include <set>
#include <stdexcept>
#include <vector>

#include <gtest/gtest.h>

namespace gradwatch::train {
namespace {

std::vector<std::vector<int64_t>> draw(BatchSampler& s, int count) {
  std::vector<std::vector<int64_t>> out;
  for (int i = 0; i < count; ++i) out.push_back(s.next());
  return out;
}

TEST(BatchSampler, same_seed_gives_the_same_batches) {
  BatchSampler a(20, 4, 7), b(20, 4, 7);
  EXPECT_EQ(draw(a, 12), draw(b, 12));
}

TEST(BatchSampler, different_seeds_give_different_orders) {
  BatchSampler a(20, 4, 7), b(20, 4, 8);
  EXPECT_NE(draw(a, 5), draw(b, 5));
}

TEST(BatchSampler, each_epoch_covers_every_index_once) {
  BatchSampler s(12, 3, 1);
  for (int epoch = 0; epoch < 3; ++epoch) {
    std::vector<int64_t> seen;
    for (const auto& batch : draw(s, 4)) {
      EXPECT_EQ(batch.size(), 3u);
      seen.insert(seen.end(), batch.begin(), batch.end());
    }
    std::sort(seen.begin(), seen.end());
    std::vector<int64_t> all(12);
    for (int64_t i = 0; i < 12; ++i) all[i] = i;
    EXPECT_EQ(seen, all) << "epoch " << epoch;
    EXPECT_EQ(s.epoch(), epoch);
  }
}

TEST(BatchSampler, drops_the_incomplete_last_batch_and_counts_epochs) {
  BatchSampler s(10, 3, 1);
  EXPECT_EQ(s.batches_per_epoch(), 3);
  EXPECT_EQ(s.epoch(), 0);
  std::set<int64_t> first_epoch;
  for (const auto& batch : draw(s, 3)) first_epoch.insert(batch.begin(), batch.end());
  EXPECT_EQ(first_epoch.size(), 9u);  // distinct, one index left out
  EXPECT_EQ(s.epoch(), 0);
  s.next();
  EXPECT_EQ(s.epoch(), 1);
}

TEST(BatchSampler, reshuffles_each_epoch) {
  BatchSampler s(32, 32, 3);
  const std::vector<int64_t> first = s.next();
  const std::vector<int64_t> second = s.next();
  EXPECT_NE(first, second);
  EXPECT_TRUE(std::is_permutation(first.begin(), first.end(), second.begin()));
  EXPECT_FALSE(std::is_sorted(first.begin(), first.end()));
}

TEST(BatchSampler, rejects_a_batch_larger_than_the_dataset_or_empty) {
  EXPECT_THROW(BatchSampler(3, 4, 1), std::invalid_argument);
  EXPECT_THROW(BatchSampler(3, 0, 1), std::invalid_argument);
  EXPECT_THROW(BatchSampler(0, 1, 1), std::invalid_argument);
  EXPECT_NO_THROW(BatchSampler(1, 1, 1).next());
}

TEST(ShardSampler, shards_are_disjoint_and_together_the_global_batch) {
  BatchSampler whole(30, 6, 5);
  ShardSampler r0(30, 6, 5, 0, 3), r1(30, 6, 5, 1, 3), r2(30, 6, 5, 2, 3);
  for (int step = 0; step < 12; ++step) {  // across epochs
    std::vector<int64_t> joined = r0.next(), b = r1.next(), c = r2.next();
    ASSERT_EQ(joined.size(), 2u);
    joined.insert(joined.end(), b.begin(), b.end());
    joined.insert(joined.end(), c.begin(), c.end());
    EXPECT_EQ(joined, whole.next()) << "step " << step;
    EXPECT_EQ(std::set<int64_t>(joined.begin(), joined.end()).size(), 6u);
    EXPECT_EQ(r0.epoch(), whole.epoch());
  }
}

TEST(ShardSampler, the_ranks_cover_every_item_once_per_epoch) {
  ShardSampler r0(16, 4, 9, 0, 2), r1(16, 4, 9, 1, 2);
  std::vector<int64_t> seen;
  for (int step = 0; step < 4; ++step) {
    for (auto* s : {&r0, &r1}) {
      auto part = s->next();
      seen.insert(seen.end(), part.begin(), part.end());
    }
  }
  std::sort(seen.begin(), seen.end());
  std::vector<int64_t> all(16);
  for (int64_t i = 0; i < 16; ++i) all[i] = i;
  EXPECT_EQ(seen, all);
}

TEST(ShardSampler, is_deterministic_from_the_seed) {
  ShardSampler a(40, 8, 3, 1, 4), b(40, 8, 3, 1, 4), other(40, 8, 4, 1, 4);
  EXPECT_EQ(a.batch(), 2);
  std::vector<std::vector<int64_t>> from_a, from_b, from_other;
  for (int i = 0; i < 10; ++i) {
    from_a.push_back(a.next());
    from_b.push_back(b.next());
    from_other.push_back(other.next());
  }
  EXPECT_EQ(from_a, from_b);
  EXPECT_NE(from_a, from_other);
}

TEST(ShardSampler, refuses_a_batch_that_does_not_split_and_a_rank_outside_the_job) {
  try {
    ShardSampler(40, 6, 1, 0, 4);
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "batch: 6 items do not split evenly over 4 ranks");
  }
  EXPECT_THROW(ShardSampler(40, 8, 1, 4, 4), std::invalid_argument);
  EXPECT_THROW(ShardSampler(40, 8, 1, -1, 4), std::invalid_argument);
  EXPECT_NO_THROW(ShardSampler(40, 8, 1, 0, 1).next());
}

}  // namespace
}  // namespace gradwatch::train
