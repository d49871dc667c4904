// RunDetector end to end: healthy runs stay silent; the DESIGN.md case reads as one incident.
#include <gtest/gtest.h>

#include <cmath>

#include "gradwatch/detect/incident.h"
#include "gradwatch/detect/run_detector.h"
#include "traces.h"

namespace gradwatch::detect {
namespace {

using testing::Describe;
using testing::Feed;
using testing::Healthy;
using testing::HealthyTrace;
using testing::InfoFor;
using testing::Trace;

TEST(RunDetector, healthy_noisy_runs_raise_no_event_in_10000_steps) {
  for (uint32_t seed : {1u, 2u, 3u, 4u, 5u}) {
    Healthy h;
    h.seed = seed;
    Trace t = HealthyTrace(h);
    RunDetector d(InfoFor(t), Thresholds{});
    std::vector<Event> events = Feed(d, t);
    EXPECT_TRUE(events.empty()) << "seed " << seed << ":\n" << Describe(events);
  }
}

TEST(RunDetector, healthy_jaccard_loss_run_starting_at_the_bound_raises_no_event) {
  Healthy h;
  h.jaccard_loss = true;
  Trace t = HealthyTrace(h);
  ASSERT_GE(t.at(50).loss, 0.99);  // starts pinned at the bound, Jaccard ~0: not a collapse
  RunDetector d(InfoFor(t, 1.0), Thresholds{});
  std::vector<Event> events = Feed(d, t);
  EXPECT_TRUE(events.empty()) << Describe(events);
}

TEST(RunDetector, healthy_stats_follow_the_healthy_grad_norm) {
  Trace t = HealthyTrace(Healthy{});
  RunDetector d(InfoFor(t), Thresholds{});
  Feed(d, t);
  HealthyStats h = d.stats();
  EXPECT_TRUE(h.warmed_up);
  EXPECT_EQ(h.healthy_steps, t.steps.size());
  EXPECT_NEAR(h.grad_norm_mean, 0.2 * std::exp(0.3 * 0.3 / 2), 0.03);  // lognormal mean
  EXPECT_GT(h.grad_norm_max, h.grad_norm_mean);
  EXPECT_NEAR(h.loss_mean, 0.2 * std::exp(0.1 * 0.1 / 2), 0.02);
}

TEST(RunDetector, non_finite_loss_is_critical_at_once_even_before_warmup) {
  RunDetector d(RunInfo{}, Thresholds{});
  StepSample s;
  s.step = 1;
  s.loss = 0.7;
  s.grad_norm = 0.2;
  EXPECT_TRUE(d.OnStep(s).empty());
  s.step = 2;
  s.loss = NAN;
  std::vector<Event> events = d.OnStep(s);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, EventKind::kNonFinite);
  EXPECT_EQ(events[0].severity, Severity::kCritical);
  EXPECT_EQ(events[0].step, 2u);
}

TEST(RunDetector, non_finite_fires_once_per_episode_and_again_after_it_clears) {
  RunDetector d(RunInfo{}, Thresholds{});
  std::vector<uint64_t> fired;
  for (uint64_t step = 1; step <= 20; ++step) {
    StepSample s;
    s.step = step;
    s.loss = 0.5;
    bool bad = (step >= 5 && step <= 8) || step == 15;
    s.grad_norm = bad ? INFINITY : 0.2;
    for (const Event& e : d.OnStep(s)) fired.push_back(e.step);
  }
  EXPECT_EQ(fired, (std::vector<uint64_t>{5, 15}));
}

TEST(RunDetector, unreported_grad_norm_is_not_non_finite) {
  RunDetector d(RunInfo{}, Thresholds{});
  StepSample s;
  s.step = 1;
  s.loss = 0.5;
  s.has_grad_norm = false;  // grad_norm stays NaN
  EXPECT_TRUE(d.OnStep(s).empty());
}

// DESIGN.md's case at step resolution: healthy grad norm ~0.2; one step's gradient x1000; the
// loss then pins at 1.0 with Jaccard ~0 and grad norm 0 for good. Expect: a critical spike at
// the explosion naming the decoder layer that went first, then collapse and vanishing, all one
// incident.
Trace TheCase() {
  Healthy h;
  h.steps = 400;
  h.jaccard_loss = true;
  h.grad_sigma = 0.2;
  Trace t = HealthyTrace(h);
  t.layer_names[6] = "decoder.up3";
  for (uint64_t step = 297; step <= 299; ++step)  // the decoder layer departs first
    t.layers_at(step)[6] *= static_cast<float>(std::pow(4.0, static_cast<double>(step - 296)));
  t.at(300).grad_norm *= 1000;
  for (float& n : t.layers_at(300)) n *= 1000;
  t.layers_at(300)[6] *= 64;  // and it leads the explosion
  for (uint64_t step = 301; step <= 400; ++step) {
    StepSample& s = t.at(step);
    s.loss = 1.0;
    s.jaccard_soft = 1e-15;
    s.jaccard_hard = 0;
    s.grad_norm = 0;
    for (float& n : t.layers_at(step)) n = 0;
  }
  return t;
}

TEST(RunDetector, sees_the_case_as_a_spike_led_by_one_layer_then_collapse_in_one_incident) {
  Trace t = TheCase();
  RunDetector d(InfoFor(t, 1.0), Thresholds{});
  IncidentTracker incidents;
  std::vector<Event> events = Feed(d, t);
  for (Event& e : events) incidents.Assign(e);
  ASSERT_GE(events.size(), 3u) << Describe(events);
  EXPECT_EQ(events[0].step, 300u);
  EXPECT_EQ(events[0].kind, EventKind::kGradSpike);
  EXPECT_EQ(events[0].severity, Severity::kCritical);
  EXPECT_EQ(events[0].first_layer, "decoder.up3");
  ASSERT_FALSE(events[0].top_layers.empty());
  EXPECT_EQ(events[0].top_layers[0], "decoder.up3");
  bool collapse = false, vanishing = false;
  for (const Event& e : events) {
    EXPECT_EQ(e.incident_id, 1u) << Describe(events);
    collapse |= e.kind == EventKind::kCollapse && e.step == 305;  // 301..305: a 5-report window
    vanishing |= e.kind == EventKind::kVanishing && e.step == 310;
  }
  EXPECT_TRUE(collapse) << Describe(events);
  EXPECT_TRUE(vanishing) << Describe(events);
}

TEST(RunDetector, events_of_one_step_come_in_event_kind_order) {
  Healthy h;
  h.steps = 300;
  Trace t = HealthyTrace(h);
  t.at(300).grad_norm *= 1000;
  t.at(300).loss *= 5;
  RunDetector d(InfoFor(t), Thresholds{});
  std::vector<Event> events = Feed(d, t);
  ASSERT_EQ(events.size(), 2u) << Describe(events);
  EXPECT_EQ(events[0].kind, EventKind::kGradSpike);
  EXPECT_EQ(events[1].kind, EventKind::kLossSpike);
  EXPECT_EQ(events[1].severity, Severity::kCritical);
  EXPECT_EQ(events[1].step, 300u);
}

TEST(RunDetector, healthy_stats_exclude_the_spike_and_the_collapse) {
  Trace t = TheCase();
  RunDetector d(InfoFor(t, 1.0), Thresholds{});
  Feed(d, t);
  HealthyStats h = d.stats();
  EXPECT_EQ(h.healthy_steps, 299u);
  EXPECT_NEAR(h.grad_norm_mean, 0.2 * (1 + 2 * std::exp(-1.0)), 0.04);  // the trace's level at 300
  EXPECT_LT(h.grad_norm_max, 1.0);  // the x1000 step is not in it
}

}  // namespace
}  // namespace gradwatch::detect
