#include "format.h"
#include "gradwatch/detect/detectors.h"

namespace gradwatch::detect {

ScalarLimitDetector::ScalarLimitDetector(const Thresholds& t) : max_(t.scalar_max), min_(t.scalar_min) {}

void ScalarLimitDetector::OnStep(const StepSample& s, std::vector<Event>* out) {
  if (max_.empty() && min_.empty()) return;
  for (const auto& [name, value] : s.scalars) {
    auto max = max_.find(name), min = min_.find(name);
    const bool above = max != max_.end() && value > max->second;
    const bool below = min != min_.end() && value < min->second;
    if (!above && !below) {
      outside_.erase(name);
      continue;
    }
    if (!outside_.insert(name).second) continue;  // the same excursion
    Event e;
    e.step = s.step;
    e.kind = EventKind::kScalarLimit;
    e.severity = Severity::kWarning;
    e.value = value;
    e.message = above ? Format("scalar %s %g is above its limit scalar_max.%s = %g", name.c_str(), value,
                               name.c_str(), max->second)
                      : Format("scalar %s %g is below its limit scalar_min.%s = %g", name.c_str(), value,
                               name.c_str(), min->second);
    out->push_back(std::move(e));
  }
}

}  // namespace gradwatch::detect
