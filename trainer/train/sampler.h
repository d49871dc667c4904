// Shuffled mini-batches of dataset indices, reproducible from a seed.
//
// The order is a pure function of (n, batch, seed) and the number of batches drawn so far, on every
// platform: the shuffle uses std::mt19937_64 with its own unbiased bounded draw rather than the
// implementation-defined std::uniform_int_distribution. To resume after k batches, construct with the
// same arguments and call next() k times. Not thread-safe; one sampler per training loop.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace gradwatch::train {

class BatchSampler {
 public:
  // Draws batches of `batch` distinct indices in [0, n). Each epoch is a fresh permutation of all n
  // indices, cut into n / batch batches; the incomplete remainder of an epoch is dropped.
  // Throws std::invalid_argument unless 1 <= batch <= n.
  BatchSampler(int64_t n, int64_t batch, uint64_t seed);

  // The next batch; starts a new epoch (and reshuffles) when the current one is used up.
  std::vector<int64_t> next();

  // The 0-based epoch of the batch most recently returned by next() (0 before the first call).
  int epoch() const { return epoch_; }

  // n / batch: the number of batches in each epoch.
  int64_t batches_per_epoch() const { return static_cast<int64_t>(order_.size()) / batch_; }

 private:
  void shuffle();

  int64_t batch_;
  std::mt19937_64 rng_;
  std::vector<int64_t> order_;
  int64_t cursor_ = 0;  // position in order_ of the next batch
  int epoch_ = 0;
  bool started_ = false;
};

// Data parallel: rank `rank` of `world` takes its slice of each global batch a BatchSampler(n,
// global_batch, seed) draws: items [rank * b, (rank + 1) * b) of it, b = global_batch / world.
// Every rank draws the same global order from the seed, the shards of one step are disjoint and
// together are exactly the global batch that one process would train on. Throws
// std::invalid_argument unless 0 <= rank < world and global_batch is a multiple of world (and
// as BatchSampler does).
class ShardSampler {
 public:
  ShardSampler(int64_t n, int64_t global_batch, uint64_t seed, int rank, int world);

  std::vector<int64_t> next();  // this rank's items of the next global batch
  int epoch() const { return global_.epoch(); }
  int64_t batch() const { return per_rank_; }  // global_batch / world

 private:
  BatchSampler global_;
  int64_t per_rank_;
  int64_t offset_;
};

}  // namespace gradwatch::train
