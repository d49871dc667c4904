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

}  // namespace gradwatch::train
