#include "sampler.h"

#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>

namespace gradwatch::train {
namespace {

// Uniform integer in [0, bound) by rejection, the same on every standard library.
uint64_t uniform_below(std::mt19937_64& rng, uint64_t bound) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;  // largest multiple of bound, exclusive
  uint64_t x = rng();
  while (x >= limit) x = rng();
  return x % bound;
}

}  // namespace

BatchSampler::BatchSampler(int64_t n, int64_t batch, uint64_t seed)
    : batch_(batch), rng_(seed) {
  if (n < 1 || batch < 1 || batch > n) {
    throw std::invalid_argument("BatchSampler: need 1 <= batch <= n, got batch " +
                                std::to_string(batch) + " and n " + std::to_string(n));
  }
  order_.resize(static_cast<size_t>(n));
}

void BatchSampler::shuffle() {
  // Fisher-Yates over the identity, so each epoch's order depends only on the generator state.
  std::iota(order_.begin(), order_.end(), int64_t{0});
  for (size_t i = order_.size() - 1; i > 0; --i) {
    std::swap(order_[i], order_[uniform_below(rng_, i + 1)]);
  }
  cursor_ = 0;
}

std::vector<int64_t> BatchSampler::next() {
  if (!started_) {
    shuffle();
    started_ = true;
  } else if (cursor_ + batch_ > static_cast<int64_t>(order_.size())) {
    shuffle();
    ++epoch_;
  }
  std::vector<int64_t> out(order_.begin() + cursor_, order_.begin() + cursor_ + batch_);
  cursor_ += batch_;
  return out;
}

namespace {

int64_t PerRank(int64_t global_batch, int rank, int world) {
  if (world < 1 || rank < 0 || rank >= world) {
    throw std::invalid_argument("ShardSampler: rank " + std::to_string(rank) + " of " + std::to_string(world));
  }
  if (global_batch % world != 0) {
    throw std::invalid_argument("batch: " + std::to_string(global_batch) + " items do not split evenly over " +
                                std::to_string(world) + " ranks");
  }
  return global_batch / world;
}

}  // namespace

ShardSampler::ShardSampler(int64_t n, int64_t global_batch, uint64_t seed, int rank, int world)
    : global_(n, global_batch, seed), per_rank_(PerRank(global_batch, rank, world)), offset_(rank * per_rank_) {}

std::vector<int64_t> ShardSampler::next() {
  const std::vector<int64_t> all = global_.next();
  return std::vector<int64_t>(all.begin() + offset_, all.begin() + offset_ + per_rank_);
}

}  // namespace gradwatch::train
