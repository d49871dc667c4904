// An exponentially weighted mean and variance with a plain warm-up: the statistics behind the
// monitor's detectors and the trainer's adaptive clipping threshold. O(1) per sample, no
// allocation, no clock: everything counts samples.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace gradwatch {

// EWMA of mean and variance. The first `warmup` samples are averaged plainly (Welford) and seed
// the EWMA, as ZClip seeds its EMA from the mean and variance of its warm-up steps; after that
// mean += (1-alpha)(x-mean) and var = var_alpha*var + (1-var_alpha)(x-mean)^2.
// Inline: the monitor runs these for every layer of every report.
class Ewma {
 public:
  Ewma(double alpha, double var_alpha, uint64_t warmup)
      : alpha_(alpha), var_alpha_(var_alpha), warmup_(std::max<uint64_t>(warmup, 1)) {}
  void Add(double x) {
    ++n_;
    if (n_ <= warmup_) {
      double d = x - mean_;
      mean_ += d / static_cast<double>(n_);
      m2_ += d * (x - mean_);
      if (n_ == warmup_) var_ = var();
      return;
    }
    mean_ += (1 - alpha_) * (x - mean_);
    double d = x - mean_;
    var_ = var_alpha_ * var_ + (1 - var_alpha_) * d * d;
  }
  bool ready() const { return n_ >= warmup_; }  // the warm-up is over
  uint64_t count() const { return n_; }
  double mean() const { return mean_; }
  double var() const {
    if (n_ > warmup_) return var_;
    return n_ > 1 ? m2_ / static_cast<double>(n_ - 1) : 0;
  }
  double std() const { return std::sqrt(var()); }
  // (x - mean) / max(std, std_floor); 0 while warming up.
  double Z(double x, double std_floor) const {
    if (!ready()) return 0;
    return (x - mean_) / std::max(std(), std_floor);
  }
  // mean + z * max(std, std_floor): the value that has z-score z.
  double At(double z, double std_floor) const { return mean_ + z * std::max(std(), std_floor); }

 private:
  double alpha_, var_alpha_;
  uint64_t warmup_;
  uint64_t n_ = 0;
  double mean_ = 0;
  double m2_ = 0;   // Welford's sum of squared deviations, during the warm-up
  double var_ = 0;  // the EWMA variance, after it
};

}  // namespace gradwatch
