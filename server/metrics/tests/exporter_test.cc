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
                           "val_collapse", "lr_jump", "update_size", "no_progress", "data_suspect", "scalar_limit", "alert"}) {
    for (const char* severity : {"warning", "critical"}) {
      EXPECT_TRUE(Has(text, std::string("gradwatch_anomalies_total{kind=\"") + kind + "\",run_id=\"r\",severity=\"" +
                                severity + "\"} 0"))
          << kind << " " << severity;
    }
  }
}

// The first max_scalars names keep series; a later name is counted, not exported, also when
// it comes back, while the names under the cap keep updating.
TEST(Exporter, exports_the_first_scalar_names_of_a_run_and_counts_the_rest) {
  ExporterOptions opts;
  opts.max_scalars = 2;
  Exporter e(opts);
  e.AddRun("r", {});
  StepValues v;
  v.step = 1;
  v.scalars = {{"a", 1.5}, {"b", 2.5}, {"c", 3.5}};
  e.ObserveStep("r", v);
  v.step = 2;
  v.scalars = {{"b", 4.0}, {"c", 5.0}, {"d", 6.0}};
  e.ObserveStep("r", v);
  std::string text = Scrape(e);
  EXPECT_TRUE(Has(text, "gradwatch_scalar{name=\"a\",run_id=\"r\"} 1.5")) << text;
  EXPECT_TRUE(Has(text, "gradwatch_scalar{name=\"b\",run_id=\"r\"} 4")) << text;
  EXPECT_FALSE(Has(text, "name=\"c\""));
  EXPECT_FALSE(Has(text, "name=\"d\""));
  EXPECT_TRUE(Has(text, "gradwatch_scalars_unexported_total{run_id=\"r\"} 3")) << text;
  e.RemoveRun("r");
  EXPECT_FALSE(Has(Scrape(e), "gradwatch_scalar{"));
}

// System series appear with the first step that reports them; CUDA memory never on CPU.
TEST(Exporter, exports_system_metrics_a_step_reports) {
  Exporter e;
  e.AddRun("r", {});
  StepValues v;
  v.step = 1;
  e.ObserveStep("r", v);
  EXPECT_FALSE(Has(Scrape(e), "gradwatch_step_seconds{"));
  v.step = 2;
  v.data_seconds = 0.5;
  v.compute_seconds = 0.25;
  v.report_seconds = 0.125;
  v.resident_bytes = 1048576;
  e.ObserveStep("r", v);
  std::string text = Scrape(e);
  EXPECT_TRUE(Has(text, "gradwatch_step_seconds{phase=\"data\",run_id=\"r\"} 0.5")) << text;
  EXPECT_TRUE(Has(text, "gradwatch_step_seconds{phase=\"forward_backward\",run_id=\"r\"} 0.25"));
  EXPECT_TRUE(Has(text, "gradwatch_step_seconds{phase=\"report\",run_id=\"r\"} 0.125"));
  EXPECT_TRUE(Has(text, "gradwatch_process_resident_bytes{run_id=\"r\"} 1048576"));
  EXPECT_FALSE(Has(text, "gradwatch_cuda_memory_bytes{"));
  EXPECT_FALSE(Has(text, "gradwatch_device_utilization_ratio{"));
  v.device_utilization = 0.75;
  v.cuda_allocated_bytes = 4096;
  v.cuda_reserved_bytes = 8192;
  v.cuda_peak_allocated_bytes = 6144;
  e.ObserveStep("r", v);
  text = Scrape(e);
  EXPECT_TRUE(Has(text, "gradwatch_cuda_memory_bytes{kind=\"allocated\",run_id=\"r\"} 4096")) << text;
  EXPECT_TRUE(Has(text, "gradwatch_cuda_memory_bytes{kind=\"peak_allocated\",run_id=\"r\"} 6144"));
  EXPECT_TRUE(Has(text, "gradwatch_device_utilization_ratio{run_id=\"r\"} 0.75")) << text;
  e.RemoveRun("r");
  EXPECT_FALSE(Has(Scrape(e), "gradwatch_step_seconds{"));
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
