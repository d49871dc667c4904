// `replay --offline` runs a trace or a spool through this process's detectors: no monitor.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "gradwatch/reporter/spool.h"
#include "replay.h"
#include "run_cli.h"

namespace gradwatch::cli {
namespace {

// An address nothing listens on: an offline replay that called the monitor would fail.
const std::vector<std::string> kNoMonitor = {"--server", "127.0.0.1:1", "--timeout-ms", "300"};

class OfflineReplay : public ::testing::Test {
 protected:
  void TearDown() override { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

  CliResult Replay(std::vector<std::string> args) {
    args.insert(args.begin(), kNoMonitor.begin(), kNoMonitor.end());
    args.insert(args.begin() + kNoMonitor.size(), {"replay", path_, "--offline"});
    return Cli(args);
  }

  // A trainer's spool of `steps` healthy steps, the gradient 1000x at `spike` (0 = none),
  // and an evaluation every 20 steps.
  void WriteSpool(int steps, int spike) {
    v1::Hello hello;
    hello.set_run_id("spooled");
    hello.add_layer_names("enc.weight");
    reporter::Spool spool(path_, 1 << 20, hello);
    for (int i = 1; i <= steps; ++i) {
      v1::TrainerMessage m;
      v1::StepReport* s = m.mutable_step();
      s->set_step(i);
      s->set_loss(1.0 - 0.002 * i);
      s->set_learning_rate(0.01);
      double norm = (i == spike ? 1000.0 : 1.0) * (1 + 0.05 * std::sin(i));
      s->set_grad_norm(norm);
      s->add_layer_grad_norms(static_cast<float>(norm));
      ASSERT_TRUE(spool.Append(m));
      if (i % 20 == 0) {
        v1::TrainerMessage e;
        e.mutable_eval()->set_step(i);
        e.mutable_eval()->set_loss(1.0 - 0.002 * i);
        ASSERT_TRUE(spool.Append(e));
      }
    }
  }

 private:
  // One file per test process: ctest runs the tests of this file side by side.
  std::string path_ = ::testing::TempDir() + "cli_replay_test-" + std::to_string(::getpid()) + ".trace";
};

TEST_F(OfflineReplay, a_trace_without_events_says_so_with_its_row_count) {
  std::ofstream csv(path());
  csv << "step,loss,grad_norm\n";
  for (int i = 1; i <= 30; ++i) csv << i << "," << 1.0 - 0.01 * i << "," << 1 + 0.05 * std::sin(i) << "\n";
  csv.close();
  auto r = Replay({});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "30 rows, 0 events\n");
}

TEST_F(OfflineReplay, a_spool_goes_through_the_detectors_here_not_to_the_monitor) {
  WriteSpool(120, 100);
  auto r = Replay({});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("step 100  critical  grad_spike"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("120 steps, "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("delivered"), std::string::npos) << r.out;
}

TEST_F(OfflineReplay, a_spool_in_json_is_its_events_one_per_line) {
  WriteSpool(120, 100);
  auto r = Replay({"--json"});
  EXPECT_EQ(r.code, 0) << r.err;
  std::istringstream lines(r.out);
  std::string first;
  ASSERT_TRUE(std::getline(lines, first)) << r.out;
  auto event = nlohmann::json::parse(first);
  EXPECT_EQ(event["step"], 100);
  EXPECT_EQ(event["kind"], "grad_spike");
}

TEST_F(OfflineReplay, a_healthy_spool_has_no_events) {
  WriteSpool(60, 0);
  auto r = Replay({});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "60 steps, 0 events\n");
}

TEST(SpoolRecords, attach_each_evaluation_to_the_step_before_it) {
  std::vector<v1::TrainerMessage> messages(4);
  messages[0].mutable_eval()->set_step(0);  // before any step: dropped
  messages[1].mutable_step()->set_step(1);
  messages[1].mutable_step()->add_layer_grad_norms(2.5f);
  messages[2].mutable_step()->set_step(2);
  messages[3].mutable_eval()->set_step(2);
  messages[3].mutable_eval()->set_loss(0.5);
  auto records = SpoolRecords(messages);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_FALSE(records[0].eval);
  EXPECT_EQ(records[0].layer_norms, std::vector<float>{2.5f});
  ASSERT_TRUE(records[1].eval);
  EXPECT_EQ(records[1].eval->loss, 0.5);
  EXPECT_TRUE(std::isnan(records[1].step.jaccard_soft));  // not reported
}

}  // namespace
}  // namespace gradwatch::cli
