#include "gradwatch/detect/policy.h"

#include <gtest/gtest.h>

#include <cmath>

namespace gradwatch::policy {
namespace {

using detect::Event;
using detect::EventKind;
using detect::HealthyStats;
using detect::Severity;
using Kind = Action::Kind;

Event Make(EventKind kind, Severity severity = Severity::kCritical, uint64_t step = 300,
           uint64_t incident = 1) {
  Event e;
  e.step = step;
  e.kind = kind;
  e.severity = severity;
  e.incident_id = incident;
  return e;
}

// The case's healthy statistics: grad norm ~0.2.
HealthyStats CaseStats() {
  HealthyStats h;
  h.warmed_up = true;
  h.grad_norm_mean = 0.2;
  h.grad_norm_std = 0.05;
  h.grad_norm_max = 0.33;
  h.healthy_steps = 299;
  return h;
}

std::vector<Kind> Kinds(const std::vector<Action>& actions) {
  std::vector<Kind> kinds;
  for (const Action& a : actions) kinds.push_back(a.kind);
  return kinds;
}

TEST(GuardPolicy, observe_mode_never_acts) {
  GuardPolicy p(Mode::kObserve);
  for (EventKind k : {EventKind::kGradSpike, EventKind::kNonFinite, EventKind::kCollapse})
    EXPECT_TRUE(p.OnEvent(Make(k), CaseStats()).empty());
  detect::StepSample nan;
  nan.loss = NAN;
  EXPECT_EQ(p.OnGatedStep(nan, {}, CaseStats()).d, GuardPolicy::Verdict::kProceed);
}

TEST(GuardPolicy, critical_spike_switches_on_clipping_once_at_a_healthy_threshold) {
  GuardPolicy p(Mode::kGuard);
  std::vector<Action> first = p.OnEvent(Make(EventKind::kGradSpike), CaseStats());
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].kind, Kind::kClipNorm);
  EXPECT_DOUBLE_EQ(first[0].value, 0.35);  // max(0.2 + 3 * 0.05, 0.33)
  EXPECT_GE(first[0].value, 0.3);
  EXPECT_LE(first[0].value, 1.0);
  EXPECT_NE(first[0].reason.find("critical grad spike at step 300"), std::string::npos);
  EXPECT_TRUE(p.clipping());
  EXPECT_TRUE(
      p.OnEvent(Make(EventKind::kGradSpike, Severity::kCritical, 400, 2), CaseStats()).empty());
}

TEST(GuardPolicy, reissues_clipping_after_an_operator_switched_it_off) {
  GuardPolicy p(Mode::kGuard);
  p.OnEvent(Make(EventKind::kGradSpike), CaseStats());
  p.NoteClipping(false);
  EXPECT_EQ(p.OnEvent(Make(EventKind::kGradSpike), CaseStats()).size(), 1u);
}

TEST(GuardPolicy, warnings_and_other_kinds_only_alert) {
  GuardPolicy p(Mode::kGuard);
  EXPECT_TRUE(p.OnEvent(Make(EventKind::kGradSpike, Severity::kWarning), CaseStats()).empty());
  EXPECT_TRUE(p.OnEvent(Make(EventKind::kLossSpike), CaseStats()).empty());
  EXPECT_TRUE(p.OnEvent(Make(EventKind::kDivergence), CaseStats()).empty());
  EXPECT_TRUE(p.OnEvent(Make(EventKind::kVanishing), CaseStats()).empty());
}

TEST(GuardPolicy, clip_threshold_is_capped_at_five_times_the_healthy_mean) {
  GuardPolicy p(Mode::kGuard);
  HealthyStats h = CaseStats();
  h.grad_norm_std = 1.0;  // a wild healthy history
  EXPECT_DOUBLE_EQ(p.ClipThreshold(h), 1.0);
}

TEST(GuardPolicy, clip_threshold_falls_back_to_one_before_warmup) {
  GuardPolicy p(Mode::kGuard);
  EXPECT_DOUBLE_EQ(p.ClipThreshold(HealthyStats{}), 1.0);
}

TEST(GuardPolicy, non_finite_rolls_back_and_halves_lr_three_times_then_stops) {
  GuardPolicy p(Mode::kGuard);
  for (int i = 0; i < 3; ++i) {
    std::vector<Action> a = p.OnEvent(Make(EventKind::kNonFinite), CaseStats());
    ASSERT_EQ(Kinds(a), (std::vector<Kind>{Kind::kRollback, Kind::kScaleLr})) << i;
    EXPECT_DOUBLE_EQ(a[1].value, 0.5);
  }
  std::vector<Action> last = p.OnEvent(Make(EventKind::kNonFinite), CaseStats());
  EXPECT_EQ(Kinds(last), (std::vector<Kind>{Kind::kStop}));
  EXPECT_TRUE(p.stopped());
  EXPECT_TRUE(p.OnEvent(Make(EventKind::kGradSpike), CaseStats()).empty());  // stopped: silent
}

TEST(GuardPolicy, collapse_rolls_back_clips_and_halves_lr_once_per_incident) {
  GuardPolicy p(Mode::kGuard);
  std::vector<Action> a = p.OnEvent(Make(EventKind::kCollapse), CaseStats());
  EXPECT_EQ(Kinds(a), (std::vector<Kind>{Kind::kRollback, Kind::kClipNorm, Kind::kScaleLr}));
  EXPECT_TRUE(p.OnEvent(Make(EventKind::kValCollapse), CaseStats()).empty());  // same incident
  std::vector<Action> next =
      p.OnEvent(Make(EventKind::kCollapse, Severity::kCritical, 900, 2), CaseStats());
  EXPECT_EQ(Kinds(next), (std::vector<Kind>{Kind::kRollback, Kind::kScaleLr}));  // clip is on
}

TEST(GuardPolicy, gated_mode_skips_a_non_finite_update_without_rolling_back) {
  GuardPolicy p(Mode::kGated);
  detect::StepSample s;
  s.step = 300;
  s.loss = 0.5;
  s.grad_norm = INFINITY;
  GuardPolicy::Verdict v = p.OnGatedStep(s, {Make(EventKind::kNonFinite)}, CaseStats());
  EXPECT_EQ(v.d, GuardPolicy::Verdict::kSkip);
  EXPECT_NE(v.reason.find("step 300"), std::string::npos);
  EXPECT_TRUE(p.OnEvent(Make(EventKind::kNonFinite), CaseStats()).empty());
}

TEST(GuardPolicy, gated_mode_stops_after_three_non_finite_episodes) {
  GuardPolicy p(Mode::kGated);
  for (int i = 0; i < 3; ++i)
    EXPECT_TRUE(p.OnEvent(Make(EventKind::kNonFinite), CaseStats()).empty());
  EXPECT_EQ(Kinds(p.OnEvent(Make(EventKind::kNonFinite), CaseStats())),
            (std::vector<Kind>{Kind::kStop}));
}

TEST(GuardPolicy, gated_mode_clips_an_update_that_raised_a_critical_spike) {
  GuardPolicy p(Mode::kGated);
  detect::StepSample s;
  s.step = 300;
  s.loss = 0.5;
  s.grad_norm = 226;
  GuardPolicy::Verdict v = p.OnGatedStep(s, {Make(EventKind::kGradSpike)}, CaseStats());
  EXPECT_EQ(v.d, GuardPolicy::Verdict::kClip);
  EXPECT_DOUBLE_EQ(v.clip, 0.35);
  s.grad_norm = 0.2;
  EXPECT_EQ(p.OnGatedStep(s, {}, CaseStats()).d, GuardPolicy::Verdict::kProceed);
}

TEST(GuardPolicy, gives_no_gated_verdict_outside_gated_mode) {
  GuardPolicy p(Mode::kGuard);
  detect::StepSample s;
  s.loss = NAN;
  EXPECT_EQ(p.OnGatedStep(s, {Make(EventKind::kNonFinite)}, CaseStats()).d,
            GuardPolicy::Verdict::kProceed);
}

TEST(PolicyNames, modes_and_actions_round_trip) {
  Mode m = Mode::kObserve;
  EXPECT_TRUE(ParseMode("gated", &m));
  EXPECT_EQ(m, Mode::kGated);
  EXPECT_STREQ(ToString(Mode::kGuard), "guard");
  EXPECT_FALSE(ParseMode("paranoid", &m));
  EXPECT_STREQ(ToString(Kind::kClipNorm), "clip_norm");
  EXPECT_STREQ(ToString(Kind::kScaleLr), "scale_lr");
}

}  // namespace
}  // namespace gradwatch::policy
