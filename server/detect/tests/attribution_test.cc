#include "gradwatch/detect/attribution.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "gradwatch/detect/run_detector.h"

namespace gradwatch::detect {
namespace {

const std::vector<std::string> kNames = {"enc1", "enc2", "mid", "dec1", "dec2"};

// Scores and learns `steps` steps of noisy norms ~0.1 per layer; returns the next step.
uint64_t Warm(LayerAttribution& a, uint64_t steps) {
  std::mt19937 rng(11);
  std::normal_distribution<double> normal(0, 0.1);
  std::vector<float> norms(kNames.size());
  for (uint64_t step = 1; step <= steps; ++step) {
    for (float& n : norms) n = static_cast<float>(0.1 * std::exp(normal(rng)));
    a.Score(step, norms.data(), norms.size());
    a.Learn();
  }
  return steps + 1;
}

Event At(uint64_t step) {
  Event e;
  e.step = step;
  return e;
}

TEST(LayerAttribution, names_the_layer_that_departed_first_not_just_the_largest) {
  LayerAttribution a(kNames, Thresholds{});
  uint64_t step = Warm(a, 100);
  std::vector<float> norms(5, 0.1f);
  norms[3] = 0.5f;  // dec1 departs two steps before the event
  a.Score(step++, norms.data(), norms.size());
  a.Score(step++, norms.data(), norms.size());
  norms = {0.1f, 0.1f, 100.0f, 5.0f, 0.1f};  // at the event, mid is by far the largest
  a.Score(step, norms.data(), norms.size());
  Event e = At(step);
  a.Attribute(&e);
  EXPECT_EQ(e.first_layer, "dec1");
  EXPECT_EQ(e.top_layers, (std::vector<std::string>{"mid", "dec1"}));
}

TEST(LayerAttribution, top_layers_lists_at_most_three_largest_first) {
  LayerAttribution a(kNames, Thresholds{});
  uint64_t step = Warm(a, 100);
  std::vector<float> norms = {1.0f, 2.0f, 4.0f, 8.0f, 16.0f};
  a.Score(step, norms.data(), norms.size());
  Event e = At(step);
  a.Attribute(&e);
  EXPECT_EQ(e.top_layers, (std::vector<std::string>{"dec2", "dec1", "mid"}));
  EXPECT_EQ(e.first_layer, "dec2");  // all departed together: the largest
}

TEST(LayerAttribution, ignores_a_departure_older_than_the_lookback) {
  LayerAttribution a(kNames, Thresholds{});
  uint64_t step = Warm(a, 100);
  std::vector<float> norms(5, 0.1f);
  norms[0] = 5.0f;  // enc1 departs, 10 steps before the event, and stays departed
  for (int i = 0; i < 10; ++i) a.Score(step++, norms.data(), norms.size());
  norms[4] = 50.0f;
  a.Score(step, norms.data(), norms.size());
  Event e = At(step);
  a.Attribute(&e);
  EXPECT_EQ(e.first_layer, "dec2");
}

TEST(LayerAttribution, names_layers_with_non_finite_norms) {
  LayerAttribution a(kNames, Thresholds{});
  uint64_t step = Warm(a, 100);
  std::vector<float> norms = {0.1f, NAN, 0.1f, 0.1f, 0.1f};
  a.Score(step, norms.data(), norms.size());
  Event e = At(step);
  a.Attribute(&e);
  EXPECT_EQ(e.top_layers, (std::vector<std::string>{"enc2"}));
  EXPECT_EQ(e.first_layer, "enc2");
}

TEST(LayerAttribution, leaves_events_of_other_steps_and_quiet_layers_alone) {
  LayerAttribution a(kNames, Thresholds{});
  uint64_t step = Warm(a, 100);
  std::vector<float> norms(5, 0.1f);
  a.Score(step, norms.data(), norms.size());
  Event same = At(step), other = At(step - 1);
  a.Attribute(&same);
  a.Attribute(&other);
  EXPECT_TRUE(same.top_layers.empty());
  EXPECT_EQ(same.first_layer, "");
  EXPECT_TRUE(other.top_layers.empty());
}

TEST(LayerAttribution, names_unnamed_layers_by_index) {
  LayerAttribution a({"only"}, Thresholds{});
  std::vector<float> norms = {0.1f, 0.1f, 0.1f};
  uint64_t step = 1;
  for (; step <= 50; ++step) {
    norms[2] = static_cast<float>(0.1 * (step % 2 ? 1.1 : 0.9));
    a.Score(step, norms.data(), norms.size());
    a.Learn();
  }
  norms[2] = 10.0f;
  a.Score(step, norms.data(), norms.size());
  Event e = At(step);
  a.Attribute(&e);
  EXPECT_EQ(e.first_layer, "layer2");
}

}  // namespace
}  // namespace gradwatch::detect
