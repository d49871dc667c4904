// Data parallel, from rank 0's step: the rank whose batch went bad (departure, and the rank a
// run-level event names), stragglers, and healthy jobs that stay silent.
#include <gtest/gtest.h>

#include <cmath>

#include "gradwatch/detect/detectors.h"
#include "gradwatch/detect/run_detector.h"
#include "traces.h"

namespace gradwatch::detect {
namespace {

using testing::AddRanks;
using testing::Describe;
using testing::Feed;
using testing::Healthy;
using testing::HealthyTrace;
using testing::InfoFor;
using testing::Ranks;
using testing::Trace;

Trace Job(size_t ranks, uint64_t steps = 400, uint32_t seed = 1) {
  Healthy h;
  h.steps = steps;
  h.seed = seed;
  Trace t = HealthyTrace(h);
  Ranks r;
  r.n = ranks;
  r.seed = seed + 100;
  AddRanks(t, r);
  return t;
}

// The fault gradwatch-train injects on one rank: its gradient x`factor` before the all-reduce,
// so its local norm is x`factor` and the averaged gradient's norm about x`factor`/n.
void ExplodeOnRank(Trace& t, uint64_t step, size_t rank, double factor) {
  t.rank_norm(step, rank) *= factor;
  t.at(step).grad_norm *= factor / static_cast<double>(t.at(step).n_ranks);
}

std::vector<Event> OfKind(const std::vector<Event>& events, EventKind kind) {
  std::vector<Event> out;
  for (const Event& e : events)
    if (e.kind == kind) out.push_back(e);
  return out;
}

bool Has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(RankDeparture, names_rank_1_and_the_step_for_a_thousandfold_local_norm_of_2_and_of_4_ranks) {
  for (size_t n : {2u, 4u}) {
    Trace t = Job(n);
    ExplodeOnRank(t, 300, 1, 1000);
    RunDetector d(InfoFor(t), Thresholds{});
    std::vector<Event> departures = OfKind(Feed(d, t), EventKind::kRankDeparture);
    ASSERT_EQ(departures.size(), 1u) << n << " ranks:\n" << Describe(departures);
    const Event& e = departures[0];
    EXPECT_EQ(e.step, 300u);
    ASSERT_TRUE(e.rank.has_value());
    EXPECT_EQ(*e.rank, 1u);
    EXPECT_EQ(e.severity, Severity::kWarning);
    EXPECT_GT(e.value, 300);  // the ratio to the others' median
    EXPECT_TRUE(Has(e.message, "rank 1's local gradient norm")) << e.message;
    EXPECT_TRUE(Has(e.message, "at step 300: suspect rank 1's batch")) << e.message;
  }
}

TEST(RankDeparture, the_explosion_grad_spike_names_rank_1) {
  Trace t = Job(2);
  ExplodeOnRank(t, 300, 1, 1000);
  RunDetector d(InfoFor(t), Thresholds{});
  std::vector<Event> events = Feed(d, t);
  std::vector<Event> spikes = OfKind(events, EventKind::kGradSpike);
  ASSERT_EQ(spikes.size(), 1u) << Describe(events);
  EXPECT_EQ(spikes[0].step, 300u);
  EXPECT_EQ(spikes[0].severity, Severity::kCritical);
  ASSERT_TRUE(spikes[0].rank.has_value());
  EXPECT_EQ(*spikes[0].rank, 1u);
  EXPECT_TRUE(Has(spikes[0].message, "on rank 1 (its local gradient norm")) << spikes[0].message;
  // The spike comes first, in EventKind order; the step is not learned from.
  EXPECT_EQ(events[0].kind, EventKind::kGradSpike);
  EXPECT_EQ(d.stats().healthy_steps, 399u);
}

TEST(RankDeparture, a_spike_of_the_whole_job_names_no_rank_and_no_departure) {
  Trace t = Job(4);
  for (size_t r = 0; r < 4; ++r) t.rank_norm(300, r) *= 1000;
  t.at(300).grad_norm *= 1000;
  RunDetector d(InfoFor(t), Thresholds{});
  std::vector<Event> events = Feed(d, t);
  std::vector<Event> spikes = OfKind(events, EventKind::kGradSpike);
  ASSERT_EQ(spikes.size(), 1u) << Describe(events);
  EXPECT_FALSE(spikes[0].rank.has_value()) << spikes[0].message;
  EXPECT_FALSE(Has(spikes[0].message, "on rank"));
  EXPECT_TRUE(OfKind(events, EventKind::kRankDeparture).empty()) << Describe(events);
}

// With 2 ranks the other rank is the median: rank 0's norm falling 100x must not make rank 1
// "depart" (rank 1 is at its own level).
TEST(RankDeparture, a_rank_whose_norm_falls_does_not_make_the_other_depart) {
  Trace t = Job(2);
  for (uint64_t step = 300; step <= 305; ++step) t.rank_norm(step, 0) *= 0.01;
  RunDetector d(InfoFor(t), Thresholds{});
  std::vector<Event> events = Feed(d, t);
  EXPECT_TRUE(OfKind(events, EventKind::kRankDeparture).empty()) << Describe(events);
}

TEST(RankDeparture, fires_once_per_episode_and_again_after_it_clears) {
  Trace t = Job(4);
  for (uint64_t step : {300u, 301u, 302u, 350u}) t.rank_norm(step, 2) *= 50;
  RunDetector d(InfoFor(t), Thresholds{});
  std::vector<Event> departures = OfKind(Feed(d, t), EventKind::kRankDeparture);
  ASSERT_EQ(departures.size(), 2u) << Describe(departures);
  EXPECT_EQ(departures[0].step, 300u);
  EXPECT_EQ(departures[1].step, 350u);
  EXPECT_EQ(*departures[1].rank, 2u);
}

TEST(RankDeparture, names_the_rank_whose_loss_departs) {
  Trace t = Job(4);
  t.rank_loss(300, 2) *= 8;
  t.Remean(300);
  RunDetector d(InfoFor(t), Thresholds{});
  std::vector<Event> events = Feed(d, t);
  std::vector<Event> departures = OfKind(events, EventKind::kRankDeparture);
  ASSERT_EQ(departures.size(), 1u) << Describe(events);
  EXPECT_EQ(departures[0].step, 300u);
  EXPECT_EQ(*departures[0].rank, 2u);
  EXPECT_GT(departures[0].value, 4);
  EXPECT_TRUE(Has(departures[0].message, "rank 2's loss")) << departures[0].message;
  // The mean loss went up ~3x: a loss spike, named after rank 2 too.
  std::vector<Event> spikes = OfKind(events, EventKind::kLossSpike);
  ASSERT_EQ(spikes.size(), 1u) << Describe(events);
  ASSERT_TRUE(spikes[0].rank.has_value());
  EXPECT_EQ(*spikes[0].rank, 2u);
}

TEST(RankDeparture, a_non_finite_local_norm_names_its_rank_on_the_non_finite_event) {
  Trace t = Job(4);
  t.rank_norm(300, 2) = NAN;
  t.at(300).grad_norm = NAN;  // the averaged gradient carries it
  t.rank_loss(320, 3) = INFINITY;
  t.Remean(320);
  RunDetector d(InfoFor(t), Thresholds{});
  std::vector<Event> events = Feed(d, t);
  std::vector<Event> nonfinite = OfKind(events, EventKind::kNonFinite);
  ASSERT_EQ(nonfinite.size(), 2u) << Describe(events);
  EXPECT_EQ(nonfinite[0].step, 300u);
  EXPECT_EQ(*nonfinite[0].rank, 2u);
  EXPECT_TRUE(Has(nonfinite[0].message, "on rank 2 (its local gradient norm is nan")) << nonfinite[0].message;
  EXPECT_EQ(nonfinite[1].step, 320u);
  EXPECT_EQ(*nonfinite[1].rank, 3u);
  EXPECT_TRUE(Has(nonfinite[1].message, "on rank 3 (its loss is inf")) << nonfinite[1].message;
}

// A local norm that overflowed while the averaged one stayed finite: the departure says so.
TEST(RankDeparture, a_non_finite_local_norm_under_a_finite_average_is_a_critical_departure) {
  Trace t = Job(4);
  t.rank_norm(300, 3) = INFINITY;
  RunDetector d(InfoFor(t), Thresholds{});
  std::vector<Event> departures = OfKind(Feed(d, t), EventKind::kRankDeparture);
  ASSERT_EQ(departures.size(), 1u) << Describe(departures);
  EXPECT_EQ(*departures[0].rank, 3u);
  EXPECT_EQ(departures[0].severity, Severity::kCritical);
  EXPECT_TRUE(Has(departures[0].message, "rank 3's local gradient norm is inf")) << departures[0].message;
}

TEST(RankDeparture, healthy_jobs_of_2_and_8_ranks_raise_no_event_in_10000_steps) {
  for (size_t n : {2u, 8u}) {
    for (uint32_t seed : {1u, 2u, 3u}) {
      Trace t = Job(n, 10000, seed);
      RunDetector d(InfoFor(t), Thresholds{});
      std::vector<Event> events = Feed(d, t);
      EXPECT_TRUE(events.empty()) << n << " ranks, seed " << seed << ":\n" << Describe(events);
      EXPECT_EQ(d.stats().healthy_steps, 10000u);
    }
  }
}

TEST(LeadingRank, compares_each_rank_with_the_median_of_the_others) {
  const double two[] = {1.0, 50.0};
  auto lead = LeadingRank(two, 2, 10);
  ASSERT_TRUE(lead);
  EXPECT_EQ(lead->rank, 1u);
  EXPECT_EQ(lead->others_median, 1.0);
  EXPECT_EQ(lead->ratio, 50.0);
  const double four[] = {2.0, 1.0, 3.0, 40.0};  // rank 3's others: 1, 2, 3 -> 2
  lead = LeadingRank(four, 4, 10);
  ASSERT_TRUE(lead);
  EXPECT_EQ(lead->rank, 3u);
  EXPECT_EQ(lead->ratio, 20.0);
  const double five[] = {1.0, 2.0, 3.0, 4.0, 12.0};  // rank 4's others: 1, 2, 3, 4 -> 2.5
  lead = LeadingRank(five, 5, 1);
  ASSERT_TRUE(lead);
  EXPECT_EQ(lead->rank, 4u);
  EXPECT_DOUBLE_EQ(lead->others_median, 2.5);
  EXPECT_FALSE(LeadingRank(four, 4, 25));  // below the ratio asked for
  EXPECT_FALSE(LeadingRank(four, 1, 1));   // one rank: nothing to compare with
}

TEST(LeadingRank, a_non_finite_value_leads_only_against_a_finite_median) {
  const double one_nan[] = {1.0, NAN, 1.2, 0.9};
  auto lead = LeadingRank(one_nan, 4, INFINITY);
  ASSERT_TRUE(lead);
  EXPECT_EQ(lead->rank, 1u);
  EXPECT_FALSE(LeadingRank(std::vector<double>{1.0, 1.5, 1.2, 0.9}.data(), 4, INFINITY));
  const double all_nan[] = {NAN, NAN, INFINITY, NAN};
  EXPECT_FALSE(LeadingRank(all_nan, 4, 1));
}

// --- Stragglers ---

// n ranks at 0.2 s a step; `slow` runs at `seconds` on the steps [from, to].
struct Compute {
  std::vector<double> seconds;
  StepSample Step(uint64_t step) {
    StepSample s;
    s.step = step;
    s.loss = 0.5;
    s.grad_norm = 0.2;
    s.rank_compute_seconds = seconds.data();
    s.n_ranks = seconds.size();
    return s;
  }
};

std::vector<Event> RunStragglers(StragglerDetector& d, size_t n, size_t slow, double seconds,
                                 const std::vector<uint64_t>& slow_steps, uint64_t last) {
  std::vector<Event> out;
  Compute c{std::vector<double>(n, 0.2)};
  for (uint64_t step = 1; step <= last; ++step) {
    bool is_slow = std::find(slow_steps.begin(), slow_steps.end(), step) != slow_steps.end();
    c.seconds[slow] = is_slow ? seconds : 0.21;
    d.OnStep(c.Step(step), &out);
  }
  return out;
}

std::vector<uint64_t> Range(uint64_t from, uint64_t to) {
  std::vector<uint64_t> v;
  for (uint64_t s = from; s <= to; ++s) v.push_back(s);
  return v;
}

TEST(StragglerDetector, fires_after_straggler_steps_slow_steps_naming_the_rank) {
  StragglerDetector d{Thresholds{}};
  std::vector<Event> events = RunStragglers(d, 4, 2, 0.9, Range(20, 40), 60);
  ASSERT_EQ(events.size(), 1u) << Describe(events);
  EXPECT_EQ(events[0].step, 24u);  // 20..24: five in a row
  EXPECT_EQ(events[0].kind, EventKind::kStraggler);
  EXPECT_EQ(events[0].severity, Severity::kWarning);
  EXPECT_EQ(*events[0].rank, 2u);
  EXPECT_NEAR(events[0].value, 4.5, 1e-9);
  EXPECT_TRUE(Has(events[0].message, "rank 2's compute time 0.9 s is 4.5x the other ranks' median 0.2 s"))
      << events[0].message;
  EXPECT_TRUE(Has(events[0].message, "(steps 20-24)")) << events[0].message;
}

TEST(StragglerDetector, a_single_slow_step_or_an_interrupted_run_of_them_is_not_a_straggler) {
  StragglerDetector d{Thresholds{}};
  std::vector<uint64_t> slow = {10, 20, 21, 22, 23, 25, 26, 27, 28};  // 4 in a row at most
  EXPECT_TRUE(RunStragglers(d, 2, 1, 2.0, slow, 40).empty());
}

TEST(StragglerDetector, micro_noise_under_the_absolute_floor_is_not_a_straggler) {
  StragglerDetector d{Thresholds{}};
  Compute c{{0.001, 0.001, 0.001}};
  std::vector<Event> out;
  for (uint64_t step = 1; step <= 50; ++step) {
    c.seconds[0] = 0.02;  // 20x the others, but 19 ms
    d.OnStep(c.Step(step), &out);
  }
  EXPECT_TRUE(out.empty()) << Describe(out);
}

TEST(StragglerDetector, ends_after_straggler_steps_fast_steps_and_fires_again) {
  StragglerDetector d{Thresholds{}};
  std::vector<uint64_t> slow = Range(10, 30);
  slow.push_back(33);  // one slow step inside the 5 fast ones that end it: still on
  for (uint64_t s : Range(50, 60)) slow.push_back(s);
  std::vector<Event> events = RunStragglers(d, 2, 0, 1.0, slow, 80);
  ASSERT_EQ(events.size(), 2u) << Describe(events);
  EXPECT_EQ(events[0].step, 14u);
  EXPECT_EQ(events[1].step, 54u);
}

TEST(RunDetector, a_straggler_is_reported_but_does_not_keep_steps_from_the_healthy_statistics) {
  Trace t = Job(4, 400);
  for (uint64_t step = 200; step <= 400; ++step) t.rank_seconds(step, 3) = 1.5;
  RunDetector d(InfoFor(t), Thresholds{});
  std::vector<Event> events = Feed(d, t);
  ASSERT_EQ(events.size(), 1u) << Describe(events);
  EXPECT_EQ(events[0].kind, EventKind::kStraggler);
  EXPECT_EQ(events[0].step, 204u);
  EXPECT_EQ(*events[0].rank, 3u);
  EXPECT_EQ(d.stats().healthy_steps, 400u);
}

}  // namespace
}  // namespace gradwatch::detect
