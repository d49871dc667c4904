#include "gradwatch/detect/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace gradwatch::detect {

void Window::Push(double x) {
  if (values_.size() < capacity_) {
    values_.push_back(x);
    return;
  }
  values_[next_] = x;
  if (++next_ == capacity_) next_ = 0;
}

double Window::Min() const {
  double m = std::numeric_limits<double>::infinity();
  for (double v : values_) m = std::min(m, v);
  return m;
}

bool Latch::Update(bool on, Severity severity) {
  bool escalates = on_ && level_ == Severity::kWarning && severity == Severity::kCritical;
  bool fire = on && (!on_ || escalates);
  if (fire) level_ = severity;
  if (!on) level_ = Severity::kWarning;
  on_ = on;
  return fire;
}

}  // namespace gradwatch::detect
