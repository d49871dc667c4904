// Groups the related events of one run into incidents: an event within `gap` steps of the open
// incident's last event joins it (a gradient spike, then the collapse it caused, is one incident,
// not two unrelated alerts); a later one opens a new incident. Not thread-safe: one per run.
#pragma once

#include <cstdint>
#include <vector>

#include "gradwatch/detect/event.h"

namespace gradwatch::detect {

struct Incident {
  uint64_t id = 0;  // 1, 2, ... within the run
  uint64_t first_step = 0;
  uint64_t last_step = 0;
  std::vector<EventKind> kinds;  // distinct kinds, in order of first appearance
  Severity worst = Severity::kWarning;
  uint64_t events = 0;
};

class IncidentTracker {
 public:
  explicit IncidentTracker(uint64_t gap_steps = 100);
  // Puts e into the open incident or opens a new one; sets e.incident_id and returns it.
  uint64_t Assign(Event& e);
  // The open (latest) incident; nullptr before the first event.
  const Incident* current() const { return current_.id ? &current_ : nullptr; }

 private:
  bool Joins(const Event& e) const;

  uint64_t gap_;
  Incident current_;
};

}  // namespace gradwatch::detect
