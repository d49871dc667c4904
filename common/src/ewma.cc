#include "gradwatch/common/ewma.h"

#include <algorithm>
#include <cmath>

namespace gradwatch {

Ewma::Ewma(double alpha, double var_alpha, uint64_t warmup)
    : alpha_(alpha), var_alpha_(var_alpha), warmup_(std::max<uint64_t>(warmup, 1)) {}

void Ewma::Add(double x) {
  if (n_ < warmup_) {
    ++n_;
    double d = x - mean_;
    mean_ += d / static_cast<double>(n_);
    m2_ += d * (x - mean_);
    if (n_ == warmup_) var_ = var();
    return;
  }
  ++n_;
  mean_ += (1 - alpha_) * (x - mean_);
  double d = x - mean_;
  var_ = var_alpha_ * var_ + (1 - var_alpha_) * d * d;
}

double Ewma::var() const {
  if (n_ > warmup_) return var_;
  return n_ > 1 ? m2_ / static_cast<double>(n_ - 1) : 0;
}

double Ewma::std() const {
  return std::sqrt(var());
}

double Ewma::Z(double x, double std_floor) const {
  if (!ready()) return 0;
  return (x - mean_) / std::max(std(), std_floor);
}

double Ewma::At(double z, double std_floor) const {
  return mean_ + z * std::max(std(), std_floor);
}

}  // namespace gradwatch
