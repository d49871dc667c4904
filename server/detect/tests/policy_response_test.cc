// GuardPolicy's second-pass responses: a dead network rolled back to before its cause, guard
// actions released once the run is quiet again, and the gated veto of a jumped learning rate or
// an oversized update.
#include <gtest/gtest.h>

#include <cmath>

#include "gradwatch/detect/policy.h"

namespace gradwatch::policy {
namespace {

using detect::Event;
using detect::EventKind;
using detect::HealthyStats;
using detect::Severity;
using Kind = Action::Kind;

Event Make(EventKind kind, uint64_t step, double value = 0, Severity severity = Severity::kCritical) {
  Event e;
  e.step = step;
  e.kind = kind;
  e.severity = severity;
  e.value = value;
  e.incident_id = 1;
  return e;
}

std::vector<Kind> Kinds(const std::vector<Action>& actions) {
  std::vector<Kind> kinds;
  for (const Action& a : actions) kinds.push_back(a.kind);
  return kinds;
}

// Feeds n quiet steps from `step`; returns every action they produced.
std::vector<Action> Quiet(GuardPolicy& p, uint64_t step, int n) {
  std::vector<Action> all;
  for (int i = 0; i < n; ++i) {
    std::vector<Action> a = p.OnStep(step + i, true);
    all.insert(all.end(), a.begin(), a.end());
  }
  return all;
}

TEST(GuardPolicy, a_dead_network_rolls_back_to_before_the_event_that_killed_it) {
  GuardPolicy p(Mode::kGuard);
  Event dead = Make(EventKind::kVanishing, 29);
  dead.cause_step = 21;
  std::vector<Action> a = p.OnEvent(dead, HealthyStats{});
  ASSERT_EQ(Kinds(a), (std::vector<Kind>{Kind::kRollback, Kind::kClipNorm, Kind::kScaleLr}));
  EXPECT_DOUBLE_EQ(a[0].value, 20);  // the checkpoint at or before step 20: before the explosion
  EXPECT_NE(a[0].reason.find("dead network at step 29 after the violent event at step 21"),
            std::string::npos) << a[0].reason;
  EXPECT_DOUBLE_EQ(a[1].value, 1.0);  // no healthy statistics yet: the case's clipnorm=1
}

TEST(GuardPolicy, plain_vanishing_without_a_cause_only_alerts) {
  GuardPolicy p(Mode::kGuard);
  EXPECT_TRUE(p.OnEvent(Make(EventKind::kVanishing, 300), HealthyStats{}).empty());
}

TEST(GuardPolicy, releases_its_clipping_after_a_quiet_stretch) {
  GuardPolicy p(Mode::kGuard);
  p.OnEvent(Make(EventKind::kGradSpike, 50), HealthyStats{});
  p.NoteClipping(true, true);  // the hub notes the policy's own command
  EXPECT_TRUE(Quiet(p, 51, 199).empty());
  std::vector<Action> a = p.OnStep(250, true);
  ASSERT_EQ(Kinds(a), (std::vector<Kind>{Kind::kClipOff}));
  EXPECT_NE(a[0].reason.find("no event for 200 steps up to step 250: clipping released"), std::string::npos)
      << a[0].reason;
  EXPECT_FALSE(p.clipping());
  EXPECT_TRUE(Quiet(p, 251, 500).empty());  // once
}

TEST(GuardPolicy, an_event_restarts_the_quiet_count) {
  GuardPolicy p(Mode::kGuard);
  p.OnEvent(Make(EventKind::kGradSpike, 50), HealthyStats{});
  Quiet(p, 51, 150);
  p.OnStep(201, false);  // a warning somewhere
  EXPECT_TRUE(Quiet(p, 202, 199).empty());
  EXPECT_EQ(Kinds(p.OnStep(401, true)), (std::vector<Kind>{Kind::kClipOff}));
}

TEST(GuardPolicy, never_releases_an_operators_clipping) {
  GuardPolicy p(Mode::kGuard);
  p.NoteClipping(true, false);
  EXPECT_TRUE(Quiet(p, 1, 1000).empty());
  EXPECT_TRUE(p.clipping());
}

TEST(GuardPolicy, release_after_zero_keeps_clipping_on) {
  GuardConfig config;
  ASSERT_TRUE(config.Apply({{"release_after", 0}}).ok());
  GuardPolicy p(Mode::kGuard, config);
  p.OnEvent(Make(EventKind::kGradSpike, 50), HealthyStats{});
  EXPECT_TRUE(Quiet(p, 51, 1000).empty());
}

TEST(GuardPolicy, restores_the_learning_rate_after_a_single_recovery_only) {
  GuardPolicy p(Mode::kGuard);
  p.OnEvent(Make(EventKind::kCollapse, 100), HealthyStats{});  // rollback, clip, LR x0.5
  std::vector<Action> a = Quiet(p, 101, 200);
  ASSERT_EQ(Kinds(a), (std::vector<Kind>{Kind::kClipOff, Kind::kScaleLr}));
  EXPECT_DOUBLE_EQ(a[1].value, 2.0);

  Event again = Make(EventKind::kCollapse, 400);
  again.incident_id = 2;
  p.OnEvent(again, HealthyStats{});  // a second recovery: the lower rate stays
  EXPECT_EQ(Kinds(Quiet(p, 401, 300)), (std::vector<Kind>{Kind::kClipOff}));
}

TEST(GuardPolicy, gated_mode_runs_a_jumped_learning_rate_at_its_level) {
  GuardPolicy p(Mode::kGated);
  detect::StepSample s;
  s.step = 352;
  s.loss = 0.07;
  s.grad_norm = 0.2;
  s.learning_rate = 1.0;
  std::vector<Event> events = {Make(EventKind::kLrJump, 352, 100.0)};
  GuardPolicy::Verdict v = p.OnGatedStep(s, events, HealthyStats{});
  EXPECT_EQ(v.d, GuardPolicy::Verdict::kScaleLr);
  EXPECT_DOUBLE_EQ(v.lr_scale, 0.01);
  EXPECT_EQ(v.event, 0);
  EXPECT_EQ(v.reason, "learning rate 1 jumped 100x at step 352: update applied at 0.01 instead (gated veto)");
}

TEST(GuardPolicy, gated_mode_skips_an_oversized_update_and_lets_warnings_through) {
  GuardPolicy p(Mode::kGated);
  detect::StepSample s;
  s.step = 7;
  s.loss = 0.7;
  s.grad_norm = 0.2;
  std::vector<Event> events = {Make(EventKind::kLrJump, 7, 4.0, Severity::kWarning),
                               Make(EventKind::kUpdateSize, 7, 0.3)};
  GuardPolicy::Verdict v = p.OnGatedStep(s, events, HealthyStats{});
  EXPECT_EQ(v.d, GuardPolicy::Verdict::kSkip);
  EXPECT_EQ(v.event, 1);
  EXPECT_EQ(p.OnGatedStep(s, {events[0]}, HealthyStats{}).d, GuardPolicy::Verdict::kProceed);
}

TEST(GuardConfig, apply_names_the_release_keys) {
  GuardConfig c;
  EXPECT_TRUE(c.Apply({{"release_after", 50}, {"release_lr", 0}}).ok());
  EXPECT_EQ(c.release_after, 50);
  EXPECT_FALSE(c.release_lr);
  EXPECT_EQ(c.Apply({{"release_lr", 0.5}}).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(c.Apply({{"release_after", -1}}).code(), Status::Code::kInvalidArgument);
}

}  // namespace
}  // namespace gradwatch::policy
