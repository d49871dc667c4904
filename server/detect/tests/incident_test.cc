#include "gradwatch/detect/incident.h"

#include <gtest/gtest.h>

namespace gradwatch::detect {
namespace {

Event Make(uint64_t step, EventKind kind, Severity severity = Severity::kCritical) {
  Event e;
  e.step = step;
  e.kind = kind;
  e.severity = severity;
  return e;
}

TEST(IncidentTracker, groups_a_spike_and_the_collapse_that_follows) {
  IncidentTracker t(100);
  Event spike = Make(300, EventKind::kGradSpike);
  Event collapse = Make(305, EventKind::kCollapse);
  EXPECT_EQ(t.Assign(spike), 1u);
  EXPECT_EQ(t.Assign(collapse), 1u);
  EXPECT_EQ(spike.incident_id, 1u);
  EXPECT_EQ(collapse.incident_id, 1u);
  ASSERT_NE(t.current(), nullptr);
  EXPECT_EQ(t.current()->first_step, 300u);
  EXPECT_EQ(t.current()->last_step, 305u);
  EXPECT_EQ(t.current()->events, 2u);
}

TEST(IncidentTracker, opens_a_new_incident_after_the_gap) {
  IncidentTracker t(100);
  Event a = Make(100, EventKind::kGradSpike);
  Event b = Make(200, EventKind::kGradSpike);  // exactly the gap: joins
  Event c = Make(301, EventKind::kGradSpike);  // 101 after the last: new
  EXPECT_EQ(t.Assign(a), 1u);
  EXPECT_EQ(t.Assign(b), 1u);
  EXPECT_EQ(t.Assign(c), 2u);
  EXPECT_EQ(t.current()->first_step, 301u);
}

TEST(IncidentTracker, records_distinct_kinds_in_order_and_the_worst_severity) {
  IncidentTracker t;
  Event w = Make(10, EventKind::kGradSpike, Severity::kWarning);
  Event s = Make(11, EventKind::kGradSpike, Severity::kCritical);
  Event c = Make(15, EventKind::kCollapse, Severity::kCritical);
  t.Assign(w);
  EXPECT_EQ(t.current()->worst, Severity::kWarning);
  t.Assign(s);
  t.Assign(c);
  EXPECT_EQ(t.current()->kinds,
            (std::vector<EventKind>{EventKind::kGradSpike, EventKind::kCollapse}));
  EXPECT_EQ(t.current()->worst, Severity::kCritical);
}

TEST(IncidentTracker, joins_an_event_that_carries_an_earlier_step) {
  IncidentTracker t(10);
  Event late = Make(50, EventKind::kCollapse);
  Event eval = Make(45, EventKind::kValCollapse);
  t.Assign(late);
  EXPECT_EQ(t.Assign(eval), 1u);
  EXPECT_EQ(t.current()->first_step, 45u);
}

TEST(IncidentTracker, has_no_incident_before_the_first_event) {
  IncidentTracker t;
  EXPECT_EQ(t.current(), nullptr);
}

}  // namespace
}  // namespace gradwatch::detect
