#include "gradwatch/detect/replay.h"

#include <gtest/gtest.h>

#include <cmath>

namespace gradwatch::detect {
namespace {

// The DESIGN.md case as Keras' CSVLogger wrote it: 11 healthy epochs, the jump in epoch 12
// (0-based 11), then loss pinned at 1.0000 with Jaccard ~1e-15 and accuracy frozen.
constexpr char kKerasCase[] =
    "epoch,acc,jaccard_coef,jaccard_coef_int,loss,val_acc,val_jaccard_coef,val_jaccard_coef_int,"
    "val_loss\n"
    "0,0.8512,0.3801,0.3544,0.6199,0.8700,0.4100,0.3900,0.5900\n"
    "1,0.8790,0.4902,0.4711,0.5098,0.8850,0.5000,0.4800,0.5000\n"
    "2,0.8955,0.5603,0.5432,0.4397,0.8930,0.5500,0.5300,0.4500\n"
    "3,0.9071,0.6204,0.6050,0.3796,0.9010,0.5900,0.5700,0.4100\n"
    "4,0.9160,0.6700,0.6561,0.3300,0.9070,0.6200,0.6000,0.3800\n"
    "5,0.9232,0.7102,0.6977,0.2898,0.9110,0.6400,0.6200,0.3600\n"
    "6,0.9290,0.7498,0.7380,0.2502,0.9150,0.6600,0.6400,0.3400\n"
    "7,0.9338,0.7901,0.7793,0.2099,0.9180,0.6800,0.6600,0.3200\n"
    "8,0.9371,0.8199,0.8096,0.1801,0.9200,0.6900,0.6700,0.3100\n"
    "9,0.9395,0.8452,0.8350,0.1548,0.9210,0.6950,0.6750,0.3050\n"
    "10,0.9410,0.8620,0.8522,0.1380,0.9220,0.7000,0.6800,0.3000\n"
    "11,0.9302,0.8040,0.7850,0.1960,0.8851,1.3e-15,0.0000,1.0000\n"
    "12,0.8843,1.1e-15,0.0000,1.0000,0.8851,1.3e-15,0.0000,1.0000\n"
    "13,0.8843,1.0e-15,0.0000,1.0000,0.8851,1.3e-15,0.0000,1.0000\n"
    "14,0.8843,1.0e-15,0.0000,1.0000,0.8851,1.3e-15,0.0000,1.0000\n"
    "15,0.8843,1.0e-15,0.0000,1.0000,0.8851,1.3e-15,0.0000,1.0000\n"
    "16,0.8843,1.0e-15,0.0000,1.0000,0.8851,1.3e-15,0.0000,1.0000\n";

std::vector<std::pair<uint64_t, EventKind>> StepsAndKinds(const std::vector<Event>& events) {
  std::vector<std::pair<uint64_t, EventKind>> out;
  for (const Event& e : events) out.emplace_back(e.step, e.kind);
  return out;
}

TEST(ParseCsv, reads_keras_csvlogger_rows_as_one_based_steps) {
  ParseResult r = ParseCsv(kKerasCase, "keras.csv");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.format, CsvFormat::kKeras);
  ASSERT_EQ(r.records.size(), 17u);
  const ReplayRecord& epoch12 = r.records[11];
  EXPECT_EQ(epoch12.step.step, 12u);
  EXPECT_EQ(epoch12.step.epoch, 12u);
  EXPECT_DOUBLE_EQ(epoch12.step.loss, 0.196);
  EXPECT_DOUBLE_EQ(epoch12.step.jaccard_soft, 0.804);
  EXPECT_DOUBLE_EQ(epoch12.step.jaccard_hard, 0.785);
  EXPECT_DOUBLE_EQ(epoch12.step.accuracy, 0.9302);
  EXPECT_FALSE(epoch12.step.has_grad_norm);
  ASSERT_TRUE(epoch12.eval);
  EXPECT_EQ(epoch12.eval->step, 12u);
  EXPECT_DOUBLE_EQ(epoch12.eval->jaccard_soft, 1.3e-15);
  EXPECT_DOUBLE_EQ(epoch12.eval->loss, 1.0);
}

TEST(ReplayOffline, keras_case_flags_collapse_by_epoch_15_after_the_val_collapse_in_one_incident) {
  ParseResult r = ParseCsv(kKerasCase, "keras.csv");
  ASSERT_TRUE(r.ok()) << r.error;
  std::vector<Event> events = ReplayOffline(r.records, RunInfo{}, Thresholds{});  // bound unknown
  using P = std::pair<uint64_t, EventKind>;
  EXPECT_EQ(StepsAndKinds(events),
            (std::vector<P>{{12, EventKind::kValCollapse}, {15, EventKind::kCollapse}}));
  for (const Event& e : events) EXPECT_EQ(e.incident_id, 1u);
}

TEST(ReplayOffline, keras_case_with_the_jaccard_bound_flags_collapse_at_epoch_14) {
  ParseResult r = ParseCsv(kKerasCase, "keras.csv");
  ASSERT_TRUE(r.ok()) << r.error;
  RunInfo info;
  info.loss_upper_bound = 1.0;
  std::vector<Event> events = ReplayOffline(r.records, info, Thresholds{});
  using P = std::pair<uint64_t, EventKind>;
  EXPECT_EQ(StepsAndKinds(events),
            (std::vector<P>{{12, EventKind::kValCollapse}, {14, EventKind::kCollapse}}));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_NE(events[1].message.find("pinned at its bound 1"), std::string::npos)
      << events[1].message;
}

TEST(ParseCsv, reads_gradwatch_rows_with_optional_columns) {
  ParseResult r = ParseCsv(
      "step,epoch,loss,lr,grad_norm,jaccard_soft,val_jaccard_soft\n"
      "1,0,0.9,0.01,0.25,0.1,\n"
      "2,0,0.8,0.01,0.22,0.2,0.15\n",
      "run.csv");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.format, CsvFormat::kGradwatch);
  ASSERT_EQ(r.records.size(), 2u);
  EXPECT_EQ(r.records[1].step.step, 2u);
  EXPECT_DOUBLE_EQ(r.records[1].step.learning_rate, 0.01);
  EXPECT_DOUBLE_EQ(r.records[1].step.grad_norm, 0.22);
  EXPECT_TRUE(r.records[1].step.has_grad_norm);
  EXPECT_TRUE(std::isnan(r.records[1].step.jaccard_hard));  // no column: not reported
  EXPECT_FALSE(r.records[0].eval);                          // empty cell: no evaluation
  ASSERT_TRUE(r.records[1].eval);
  EXPECT_DOUBLE_EQ(r.records[1].eval->jaccard_soft, 0.15);
}

// `gradwatch export` of a data-parallel run: rank 0's rows (the run's values) are replayed,
// the other ranks' own rows are not.
TEST(ParseCsv, takes_rank_zeros_rows_of_a_data_parallel_export) {
  ParseResult r = ParseCsv(
      "step,rank,epoch,loss,lr,grad_norm,local_grad_norm\n"
      "1,0,0,0.9,0.01,0.25,0.2\n"
      "2,0,0,0.8,0.01,0.22,0.21\n"
      "1,1,0,0.7,0.01,0.25,0.3\n"
      "2,1,0,0.6,0.01,0.22,400\n",
      "dp.csv");
  ASSERT_TRUE(r.ok()) << r.error;
  ASSERT_EQ(r.records.size(), 2u);
  EXPECT_DOUBLE_EQ(r.records[0].step.loss, 0.9);
  EXPECT_DOUBLE_EQ(r.records[1].step.grad_norm, 0.22);
}

TEST(ParseCsv, empty_grad_norm_is_not_reported_but_nan_is_non_finite) {
  ParseResult r = ParseCsv("step,loss,grad_norm\n1,0.5,\n2,0.5,nan\n3,inf,-inf\n", "run.csv");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_FALSE(r.records[0].step.has_grad_norm);
  EXPECT_TRUE(r.records[1].step.has_grad_norm);
  EXPECT_TRUE(std::isnan(r.records[1].step.grad_norm));
  EXPECT_TRUE(std::isinf(r.records[2].step.loss));
  EXPECT_LT(r.records[2].step.grad_norm, 0);
  std::vector<Event> events = ReplayOffline(r.records, RunInfo{}, Thresholds{});
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].step, 2u);
  EXPECT_EQ(events[0].kind, EventKind::kNonFinite);
}

TEST(ParseCsv, keras_na_cells_are_not_reported) {
  ParseResult r = ParseCsv("epoch,loss,val_loss\n0,0.5,NA\n", "k.csv");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_FALSE(r.records[0].eval);
}

TEST(ParseCsv, tolerates_crlf_spaces_blank_lines_and_unknown_columns) {
  ParseResult r = ParseCsv("step, loss ,note\r\n\r\n1, 0.5 ,x\r\n2,+0.25,y\r\n", "w.csv");
  ASSERT_TRUE(r.ok()) << r.error;
  ASSERT_EQ(r.records.size(), 2u);
  EXPECT_DOUBLE_EQ(r.records[1].step.loss, 0.25);
}

TEST(ParseCsv, honours_an_explicit_format) {
  // An "epoch" header alone would autodetect as Keras; forced gradwatch needs "step".
  ParseResult r = ParseCsv("epoch,loss\n0,0.5\n", "x.csv", CsvFormat::kGradwatch);
  EXPECT_EQ(r.error, "x.csv:1: no 'step' column in the header");
}

TEST(ParseCsv, error_names_line_and_column_of_a_bad_number) {
  ParseResult r = ParseCsv("step,loss\n1,0.5\n\n2,abc\n", "trace.csv");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.error, "trace.csv:4: column 2 (loss): 'abc' is not a number");
  EXPECT_TRUE(r.records.empty());
}

TEST(ParseCsv, error_names_a_missing_required_column) {
  EXPECT_EQ(ParseCsv("step,grad_norm\n1,0.5\n", "t.csv").error,
            "t.csv:1: no 'loss' column in the header");
  EXPECT_EQ(ParseCsv("epoch,acc\n0,0.5\n", "k.csv").error,
            "k.csv:1: no 'loss' column in the header");
}

TEST(ParseCsv, error_names_a_row_with_the_wrong_number_of_cells) {
  EXPECT_EQ(ParseCsv("step,loss\n1,0.5,7\n", "t.csv").error, "t.csv:2: 3 cells, the header has 2");
}

TEST(ParseCsv, error_names_a_step_out_of_order_or_not_whole) {
  EXPECT_EQ(ParseCsv("step,loss\n5,0.5\n5,0.4\n", "t.csv").error,
            "t.csv:3: column 1 (step): '5' does not follow the previous step 5");
  EXPECT_EQ(ParseCsv("step,loss\n1.5,0.5\n", "t.csv").error,
            "t.csv:2: column 1 (step): '1.5' is not a whole number");
}

TEST(ParseCsv, error_names_a_missing_loss_and_a_duplicated_column) {
  EXPECT_EQ(ParseCsv("step,loss\n1,\n", "t.csv").error,
            "t.csv:2: column 2 (loss): '' is not reported; every row needs a loss");
  EXPECT_EQ(ParseCsv("epoch,acc,loss,accuracy\n", "k.csv").error,
            "k.csv:1: column 4 (accuracy): 'accuracy' duplicates column 2 (acc)");
}

TEST(ParseCsv, error_on_an_empty_file) {
  EXPECT_EQ(ParseCsv("\n\n", "t.csv").error, "t.csv: empty file");
}

TEST(ReadCsvFile, names_a_file_it_cannot_open) {
  ParseResult r = ReadCsvFile("/nonexistent/trace.csv");
  EXPECT_EQ(r.error, "/nonexistent/trace.csv: cannot open: No such file or directory");
}

TEST(ReplayRecord, sample_points_into_its_own_layer_norms) {
  ReplayRecord r;
  r.layer_norms = {1.0f, 2.0f};
  StepSample s = r.sample();
  EXPECT_EQ(s.layer_norms, r.layer_norms.data());
  EXPECT_EQ(s.n_layers, 2u);
}

}  // namespace
}  // namespace gradwatch::detect
