#include "gradwatch/detect/thresholds.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>

#include "gradwatch/detect/detectors.h"
#include "gradwatch/detect/event.h"

namespace gradwatch::detect {
namespace {

TEST(Thresholds, apply_sets_fields_by_name) {
  Thresholds t;
  EXPECT_TRUE(t.Apply({{"spike_z_critical", 8}, {"collapse_window", 7}, {"spike_alpha", 0.9}}).ok());
  EXPECT_EQ(t.spike_z_critical, 8);
  EXPECT_EQ(t.collapse_window, 7u);
  EXPECT_EQ(t.spike_alpha, 0.9);
}

TEST(Thresholds, apply_rejects_an_unknown_key_by_name_and_changes_nothing) {
  Thresholds t;
  Status error = t.Apply({{"spike_z_critical", 8}, {"spike_z", 3}});
  EXPECT_EQ(error.code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(error.message(), "unknown threshold 'spike_z'");
  EXPECT_EQ(t.spike_z_critical, 6);  // all or nothing
}

TEST(Thresholds, apply_names_the_closest_threshold_for_a_typo) {
  Thresholds t;
  EXPECT_EQ(t.Apply({{"spike_z_critcal", 8}}).message(),
            "unknown threshold 'spike_z_critcal'; did you mean \"spike_z_critical\"?");
}

TEST(Thresholds, apply_rejects_values_out_of_range) {
  Thresholds t;
  EXPECT_EQ(t.Apply({{"spike_alpha", 1.5}}).message(), "threshold 'spike_alpha' = 1.5 is outside [0, 1]");
  EXPECT_FALSE(t.Apply({{"loss_z", -1}}).ok());
  EXPECT_FALSE(t.Apply({{"vanish_ratio", NAN}}).ok());
  EXPECT_EQ(t.spike_alpha, 0.97);
}

TEST(Thresholds, apply_sets_limits_on_named_scalars) {
  Thresholds t;
  EXPECT_TRUE(t.Apply({{"scalar_max.data_time_ms", 50}, {"scalar_min.output_mean", 0.05}}).ok());
  EXPECT_EQ(t.scalar_max.at("data_time_ms"), 50);
  EXPECT_EQ(t.scalar_min.at("output_mean"), 0.05);
  EXPECT_EQ(t.Apply({{"scalar_max.", 1}}).message(), "threshold 'scalar_max.' names no scalar: write scalar_max.NAME");
  EXPECT_EQ(t.Apply({{"scalar_min.x", NAN}}).message(), "threshold 'scalar_min.x' = nan is not a finite number");
  EXPECT_EQ(t.scalar_min.count("x"), 0u);
  // The scalar's name follows the reports' rule: a name no report can carry is a typo.
  EXPECT_EQ(t.Apply({{"scalar_max.data time", 1}}).message(),
            "threshold 'scalar_max.data time': the scalar name is not 1 to 64 characters of [A-Za-z0-9_.:/-]");
  EXPECT_EQ(t.scalar_max.count("data time"), 0u);
}

// A warning when a scalar crosses its limit, naming it; once per excursion; none without limits.
TEST(ScalarLimitDetector, warns_once_per_excursion_naming_the_scalar) {
  Thresholds t;
  ASSERT_TRUE(t.Apply({{"scalar_min.output_mean", 0.05}, {"scalar_max.output_mean", 0.95}}).ok());
  ScalarLimitDetector d(t);
  std::vector<Event> events;
  StepSample s;
  for (double v : {0.5, 0.01, 0.001, 0.5, 0.99, double(NAN), 0.02}) {
    ++s.step;
    s.scalars = {{"other", 1e9}, {"output_mean", v}};
    d.OnStep(s, &events);
  }
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].step, 2u);
  EXPECT_EQ(events[0].kind, EventKind::kScalarLimit);
  EXPECT_EQ(events[0].severity, Severity::kWarning);
  EXPECT_EQ(events[0].message, "scalar output_mean 0.01 is below its limit scalar_min.output_mean = 0.05");
  EXPECT_EQ(events[1].step, 5u);
  EXPECT_EQ(events[1].message, "scalar output_mean 0.99 is above its limit scalar_max.output_mean = 0.95");
  EXPECT_EQ(events[2].step, 7u);  // NaN crossed no limit: a new excursion
  ScalarLimitDetector none{Thresholds{}};
  std::vector<Event> quiet;
  none.OnStep(s, &quiet);
  EXPECT_TRUE(quiet.empty());
}

TEST(Thresholds, apply_rejects_fractional_windows) {
  Thresholds t;
  EXPECT_EQ(t.Apply({{"div_window", 2.5}}).message(), "threshold 'div_window' = 2.5 is not a whole number");
  EXPECT_FALSE(t.Apply({{"collapse_window", 0}}).ok());  // a window needs at least one report
}

TEST(Thresholds, every_listed_name_is_accepted) {
  std::vector<std::string> names = Thresholds::Names();
  EXPECT_EQ(names.size(), 68u);
  for (const std::string& name : names) {
    Thresholds t;
    EXPECT_TRUE(t.Apply({{name, 1}}).ok()) << name;  // 1 is in every field's range
  }
}

TEST(EventNames, kinds_and_severities_have_stable_names) {
  EXPECT_STREQ(ToString(EventKind::kNonFinite), "non_finite");
  EXPECT_STREQ(ToString(EventKind::kGradSpike), "grad_spike");
  EXPECT_STREQ(ToString(EventKind::kLossSpike), "loss_spike");
  EXPECT_STREQ(ToString(EventKind::kDivergence), "divergence");
  EXPECT_STREQ(ToString(EventKind::kCollapse), "collapse");
  EXPECT_STREQ(ToString(EventKind::kVanishing), "vanishing");
  EXPECT_STREQ(ToString(EventKind::kValCollapse), "val_collapse");
  EXPECT_STREQ(ToString(EventKind::kRankDeparture), "rank_departure");
  EXPECT_STREQ(ToString(EventKind::kStraggler), "straggler");
  EXPECT_STREQ(ToString(EventKind::kHang), "hang");
  EXPECT_STREQ(ToString(EventKind::kRankLag), "rank_lag");
  EXPECT_STREQ(ToString(EventKind::kRankLost), "rank_lost");
  EXPECT_STREQ(ToString(Severity::kWarning), "warning");
  EXPECT_STREQ(ToString(Severity::kCritical), "critical");
}

TEST(EventNames, every_kind_is_listed_once_with_a_name_of_its_own) {
  std::set<std::string> names;
  for (EventKind kind : AllEventKinds()) {
    EXPECT_STRNE(ToString(kind), "unknown");
    EXPECT_TRUE(names.insert(ToString(kind)).second) << ToString(kind);
  }
  EXPECT_EQ(names.size(), 17u);
  EXPECT_EQ(AllEventKinds().back(), EventKind::kRankLost);
}

TEST(Thresholds, data_parallel_thresholds_have_their_documented_defaults_and_are_set_by_name) {
  Thresholds t;
  EXPECT_EQ(t.rank_departure_ratio, 10);
  EXPECT_EQ(t.rank_departure_self, 5);
  EXPECT_EQ(t.rank_loss_departure, 6);
  EXPECT_EQ(t.rank_loss_ratio, 2);
  EXPECT_EQ(t.straggler_ratio, 3);
  EXPECT_EQ(t.straggler_steps, 5u);
  EXPECT_EQ(t.straggler_min_seconds, 0.05);
  EXPECT_EQ(t.hang_min_seconds, 300);
  EXPECT_EQ(t.hang_factor, 20);
  EXPECT_EQ(t.hang_heartbeat_seconds, 15);
  EXPECT_EQ(t.rank_lag_steps, 100u);
  EXPECT_EQ(t.rank_lost_seconds, 0);
  EXPECT_TRUE(t.Apply({{"hang_min_seconds", 5}, {"straggler_steps", 3}, {"rank_lag_steps", 20}}).ok());
  EXPECT_EQ(t.hang_min_seconds, 5);
  EXPECT_EQ(t.straggler_steps, 3u);
  EXPECT_EQ(t.rank_lag_steps, 20u);
  EXPECT_EQ(t.Apply({{"straggler_steps", 0}}).message(), "threshold 'straggler_steps' = 0 is outside [1, 1e+09]");
  EXPECT_EQ(t.Apply({{"rank_departure_ratio", 0.5}}).message(),
            "threshold 'rank_departure_ratio' = 0.5 is outside [1, inf]");
  EXPECT_FALSE(t.Apply({{"hang_factor", -1}}).ok());
}

}  // namespace
}  // namespace gradwatch::detect
