#include "gradwatch/metrics/exporter.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <cmath>

namespace gradwatch::metrics {
namespace {

std::string Scrape(const Exporter& e) {
  return prometheus::TextSerializer().Serialize(e.registry()->Collect());
}

bool Has(const std::string& text, const std::string& line) {
  return text.find(line) != std::string::npos;
}

TEST(Exporter, counts_each_step_once_and_sets_gauges) {
  Exporter e;
  e.AddRun("r1", {"a.weight", "a.bias"});
  float norms[] = {0.5f, 0.25f};
  for (uint64_t step : {1, 2, 3, 3, 2}) {  // resends do not count
    StepValues v;
    v.step = step;
    v.loss = 0.4;
    v.grad_norm = 1.5;
    v.jaccard_soft = v.jaccard_hard = v.accuracy = std::nan("");
    v.layer_norms = norms;
    v.layer_count = 2;
    e.ObserveStep("r1", v);
  }
  std::string text = Scrape(e);
  EXPECT_TRUE(Has(text, "gradwatch_steps_total{run_id=\"r1\"} 3")) << text;
  EXPECT_TRUE(Has(text, "gradwatch_last_step{run_id=\"r1\"} 3"));
  EXPECT_TRUE(Has(text, "gradwatch_grad_norm{run_id=\"r1\"} 1.5"));
  EXPECT_TRUE(Has(text, "gradwatch_layer_grad_norm{layer=\"a.bias\",run_id=\"r1\"} 0.25"));
}

TEST(Exporter, folds_layers_past_the_cap_into_other) {
  ExporterOptions opts;
  opts.max_layers = 3;
  Exporter e(opts);
  e.AddRun("r", {"l0", "l1", "l2", "l3"});
  float norms[] = {1, 2, 3, 4};
  StepValues v;
  v.step = 1;
  v.layer_norms = norms;
  v.layer_count = 4;
  e.ObserveStep("r", v);
  std::string text = Scrape(e);
  EXPECT_TRUE(Has(text, "layer=\"l1\""));
  EXPECT_FALSE(Has(text, "layer=\"l2\""));
  EXPECT_TRUE(Has(text, "gradwatch_layer_grad_norm{layer=\"(other)\",run_id=\"r\"} 5")) << text;
}

TEST(Exporter, gives_a_run_that_resumes_with_layers_their_series_and_never_indexes_past_them) {
  Exporter e;
  e.AddRun("r", {});
  float norms[] = {1, 2};
  StepValues v;
  v.step = 1;
  v.layer_norms = norms;
  v.layer_count = 2;
  e.ObserveStep("r", v);  // more layers than declared: ignored, no crash
  e.AddRun("r", {"a", "b"});
  v.step = 2;
  e.ObserveStep("r", v);
  std::string text = Scrape(e);
  EXPECT_TRUE(Has(text, "gradwatch_layer_grad_norm{layer=\"b\",run_id=\"r\"} 2")) << text;
  EXPECT_TRUE(Has(text, "gradwatch_steps_total{run_id=\"r\"} 2"));
}

TEST(Exporter, removes_every_series_of_a_finished_run) {
  Exporter e;
  e.AddRun("gone", {"w"});
  e.AddRun("kept", {"w"});
  e.CountAnomaly("gone", "vanishing", "warning");
  e.CountCommand("gone", "set_clipping", "applied");
  e.RemoveRun("gone");
  std::string text = Scrape(e);
  EXPECT_FALSE(Has(text, "run_id=\"gone\"")) << text;
  EXPECT_TRUE(Has(text, "run_id=\"kept\""));
}

TEST(Exporter, counts_anomalies_by_kind_and_severity) {
  Exporter e;
  e.AddRun("r", {});
  e.CountAnomaly("r", "grad_spike", "critical");
  e.CountAnomaly("r", "grad_spike", "critical");
  std::string text = Scrape(e);
  EXPECT_TRUE(Has(text,
                  "gradwatch_anomalies_total{kind=\"grad_spike\",run_id=\"r\",severity=\"critical\"} 2"))
      << text;
  EXPECT_TRUE(Has(text,
                  "gradwatch_anomalies_total{kind=\"non_finite\",run_id=\"r\",severity=\"critical\"} 0"));
}

// increase() sees a series' first event only if the series existed at 0 before it.
TEST(Exporter, starts_every_event_kind_of_a_run_at_zero) {
  Exporter e;
  e.AddRun("r", {});
  std::string text = Scrape(e);
  for (const char* kind : {"grad_spike", "non_finite", "collapse", "loss_spike", "divergence", "vanishing",
                           "val_collapse", "lr_jump", "update_size", "no_progress", "data_suspect", "alert"}) {
    for (const char* severity : {"warning", "critical"}) {
      EXPECT_TRUE(Has(text, std::string("gradwatch_anomalies_total{kind=\"") + kind + "\",run_id=\"r\",severity=\"" +
                                severity + "\"} 0"))
          << kind << " " << severity;
    }
  }
}

TEST(Exporter, marks_exactly_one_state) {
  Exporter e;
  e.AddRun("r", {});
  e.SetRunState("r", "running");
  e.SetRunState("r", "finished");
  std::string text = Scrape(e);
  EXPECT_TRUE(Has(text, "gradwatch_run_state{run_id=\"r\",state=\"finished\"} 1"));
  EXPECT_TRUE(Has(text, "gradwatch_run_state{run_id=\"r\",state=\"running\"} 0"));
}

}  // namespace
}  // namespace gradwatch::metrics
