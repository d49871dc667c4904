#include "gradwatch/detect/incident.h"

#include <algorithm>

namespace gradwatch::detect {

IncidentTracker::IncidentTracker(uint64_t gap_steps) : gap_(gap_steps) {}

uint64_t IncidentTracker::Assign(Event& e) {
  if (!Joins(e)) {
    uint64_t id = current_.id + 1;
    current_ = Incident{};
    current_.id = id;
    current_.first_step = current_.last_step = e.step;
  }
  Incident& c = current_;
  c.first_step = std::min(c.first_step, e.step);
  c.last_step = std::max(c.last_step, e.step);
  if (std::find(c.kinds.begin(), c.kinds.end(), e.kind) == c.kinds.end()) c.kinds.push_back(e.kind);
  if (e.severity == Severity::kCritical) c.worst = Severity::kCritical;
  ++c.events;
  e.incident_id = c.id;
  return c.id;
}

// Within gap steps of the open incident, either side: an evaluation event may carry an earlier
// step.
bool IncidentTracker::Joins(const Event& e) const {
  if (current_.id == 0) return false;
  if (e.step >= current_.last_step) return e.step - current_.last_step <= gap_;
  return current_.first_step <= e.step + gap_;
}

}  // namespace gradwatch::detect
