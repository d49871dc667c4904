// Running statistics the detectors are built from: an exponentially weighted mean and variance
// with a plain warm-up, a decaying maximum, and the latch that makes a condition fire once.
// O(1) per sample, no allocation, no clock: everything counts samples.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "gradwatch/detect/event.h"

namespace gradwatch::detect {

// EWMA of mean and variance. The first `warmup` samples are averaged plainly (Welford) and seed
// the EWMA, as ZClip seeds its EMA from the mean and variance of its warm-up steps; after that
// mean += (1-alpha)(x-mean) and var = var_alpha*var + (1-var_alpha)(x-mean)^2.
class Ewma {
 public:
  Ewma(double alpha, double var_alpha, uint64_t warmup);
  void Add(double x);
  bool ready() const { return n_ >= warmup_; }  // the warm-up is over
  uint64_t count() const { return n_; }
  double mean() const { return mean_; }
  double var() const;
  double std() const;
  // (x - mean) / max(std, std_floor); 0 while warming up.
  double Z(double x, double std_floor) const;
  // mean + z * max(std, std_floor): the value that has z-score z.
  double At(double z, double std_floor) const;

 private:
  double alpha_, var_alpha_;
  uint64_t warmup_;
  uint64_t n_ = 0;
  double mean_ = 0;
  double m2_ = 0;   // Welford's sum of squared deviations, during the warm-up
  double var_ = 0;  // the EWMA variance, after it
};

// max(x, previous max * decay): a maximum that forgets old peaks. 0 before any sample.
class DecayingMax {
 public:
  explicit DecayingMax(double decay) : decay_(decay) {}
  void Add(double x) { value_ = x > value_ * decay_ ? x : value_ * decay_; }
  double value() const { return value_; }

 private:
  double decay_;
  double value_ = 0;
};

// The last `capacity` samples, oldest first: a fixed window for the detectors that fit or rank.
// Push is O(1) and allocates only until the window is full.
class Window {
 public:
  explicit Window(size_t capacity) : capacity_(capacity > 0 ? capacity : 1) {}
  void Push(double x);
  size_t size() const { return values_.size(); }
  bool full() const { return values_.size() == capacity_; }
  double operator[](size_t i) const;  // i = 0 is the oldest
  double Min() const;                 // +inf when empty

 private:
  size_t capacity_;
  size_t next_ = 0;  // where the next sample goes once full
  std::vector<double> values_;
};

// Turns a per-step condition into events: fires when the condition starts, and again only if it
// escalates from warning to critical while on; re-arms once the condition clears.
class Latch {
 public:
  // Returns true when an event should fire for this step.
  bool Update(bool on, Severity severity = Severity::kCritical);
  bool on() const { return on_; }

 private:
  bool on_ = false;
  Severity level_ = Severity::kWarning;
};

}  // namespace gradwatch::detect
