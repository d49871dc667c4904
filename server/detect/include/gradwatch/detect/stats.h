// Running statistics the detectors are built from: an exponentially weighted mean and variance
// with a plain warm-up (gradwatch/common/ewma.h, shared with the trainer's adaptive clipping), a
// decaying maximum, a window, and the latch that makes a condition fire once.
// O(1) per sample, no allocation, no clock: everything counts samples.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "gradwatch/common/ewma.h"
#include "gradwatch/detect/event.h"

namespace gradwatch::detect {

using gradwatch::Ewma;

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
  // i = 0 is the oldest. Inline and without a division: detectors read whole windows each step.
  double operator[](size_t i) const {
    if (!full()) return values_[i];
    size_t j = next_ + i;
    return values_[j < capacity_ ? j : j - capacity_];
  }
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
