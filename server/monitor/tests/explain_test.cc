// ExplainRun on the case: an explosion led by one layer, then a collapse, then the
// monitor's clipping, rollback and lower learning rate.
#include "explain.h"

#include <gtest/gtest.h>

namespace gradwatch::monitor {
namespace {

std::vector<v1::StepReport> Steps(uint64_t n, uint64_t collapsed_from, uint64_t recovered_from) {
  std::vector<v1::StepReport> out;
  for (uint64_t i = 1; i <= n; ++i) {
    v1::StepReport s;
    s.set_step(i);
    bool pinned = i >= collapsed_from && i < recovered_from;
    s.set_loss(pinned ? 1.0 : 0.05);
    s.set_grad_norm(pinned ? 0.0 : 0.2 + 0.01 * (i % 5));
    out.push_back(s);
  }
  return out;
}

v1::Event Event(uint64_t step, const std::string& kind, const std::string& first_layer) {
  v1::Event e;
  e.set_step(step);
  e.set_kind(kind);
  e.set_severity(v1::SEVERITY_CRITICAL);
  e.set_message(kind + " message");
  e.set_first_layer(first_layer);
  e.set_incident_id(1);
  return e;
}

v1::CommandRecord Command(uint64_t issued, uint64_t applied, double clip) {
  v1::CommandRecord c;
  c.mutable_command()->set_issued_by("policy:guard");
  c.mutable_command()->mutable_set_clipping()->set_kind(v1::Clipping::KIND_NORM);
  c.mutable_command()->mutable_set_clipping()->set_threshold(clip);
  c.set_issued_at_step(issued);
  c.mutable_ack()->set_applied_at_step(applied);
  c.mutable_ack()->set_result(v1::CommandAck::RESULT_APPLIED);
  return c;
}

v1::Run MakeRun(uint64_t steps, double last_loss) {
  v1::Run r;
  r.set_run_id("case");
  r.set_state(v1::RUN_STATE_FINISHED);
  r.set_steps(steps);
  r.set_last_step(steps);
  r.set_last_loss(last_loss);
  return r;
}

TEST(ExplainRun, names_the_explosion_its_leading_layer_the_collapse_and_a_clip_threshold) {
  auto steps = Steps(600, 352, 700);  // never recovers
  std::string text = ExplainRun(MakeRun(600, 1.0),
                                {Event(351, "grad_spike", "dec1.up.weight"), Event(356, "collapse", "")},
                                {Command(351, 352, 0.65)}, steps);
  EXPECT_NE(text.find("steps 351-356: gradient explosion, then collapse"), std::string::npos) << text;
  EXPECT_NE(text.find("led by dec1.up.weight"), std::string::npos) << text;
  EXPECT_NE(text.find("clipping at 0.65 (step 352, policy:guard)"), std::string::npos) << text;
  EXPECT_NE(text.find("not recovered"), std::string::npos) << text;
  // Healthy norms before 351 are 0.20..0.24: the suggestion is about 2x the median.
  EXPECT_NE(text.find("clip the global gradient norm at ~0.44"), std::string::npos) << text;
}

// Data parallel: the events that name a rank say which rank to look at.
TEST(ExplainRun, names_the_hung_rank_and_the_rank_whose_batch_departed) {
  auto steps = Steps(60, 700, 700);
  v1::Event hang = Event(40, "hang", "");
  hang.set_rank(1);
  std::string hung = ExplainRun(MakeRun(60, 0.05), {hang}, {}, steps);
  EXPECT_NE(hung.find("hang"), std::string::npos) << hung;
  EXPECT_NE(hung.find("see where rank 1 is stuck while the others wait"), std::string::npos) << hung;
  v1::Event departed = Event(30, "rank_departure", "");
  departed.set_rank(3);
  std::string bad_batch = ExplainRun(MakeRun(60, 0.05), {departed}, {}, steps);
  EXPECT_NE(bad_batch.find("rank 3"), std::string::npos) << bad_batch;
  EXPECT_EQ(bad_batch.find("rank 1"), std::string::npos) << bad_batch;
}

TEST(ExplainRun, says_when_the_run_recovered) {
  auto steps = Steps(600, 352, 360);
  std::string text = ExplainRun(MakeRun(600, 0.05), {Event(351, "grad_spike", "head.weight")}, {}, steps);
  EXPECT_NE(text.find(": recovered"), std::string::npos) << text;
  EXPECT_NE(text.find("Done: nothing"), std::string::npos) << text;
}

TEST(ExplainRun, reports_a_quiet_run_as_such) {
  std::string text = ExplainRun(MakeRun(10, 0.1), {}, {}, Steps(10, 100, 100));
  EXPECT_NE(text.find("No anomalies detected."), std::string::npos);
}

}  // namespace
}  // namespace gradwatch::monitor
