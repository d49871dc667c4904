// gradwatch::torch against a real in-process monitor: every control takes effect at
// the step its acknowledgement names, and the reports show it.
#include "gradwatch/torch/session.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <future>

#include "gradwatch/torch/grad_stats.h"
#include "monitor_fixture.h"

namespace gradwatch::torchmon {
namespace {

using namespace std::chrono_literals;

TEST(GradStats, fused_norms_equal_the_per_parameter_norms) {
  torch::manual_seed(1);
  torch::nn::Sequential net(torch::nn::Linear(5, 4), torch::nn::ReLU(), torch::nn::Linear(4, 1));
  net->forward(torch::randn({3, 5})).sum().backward();
  auto params = net->parameters();
  GradStats fused = ComputeGradStats(params), slow = ComputeGradStatsPerItem(params);
  ASSERT_EQ(fused.layer_norms.size(), 4u);
  double sq = 0;
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(fused.layer_norms[i], slow.layer_norms[i], 1e-6);
    EXPECT_NEAR(fused.layer_norms[i], params[i].grad().norm().item<float>(), 1e-6);
    sq += double(fused.layer_norms[i]) * fused.layer_norms[i];
  }
  EXPECT_NEAR(fused.global_norm, std::sqrt(sq), 1e-6);
}

TEST(GradStats, fused_norms_on_cuda_match_the_cpu_ones) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(2);
  torch::nn::Sequential net(torch::nn::Linear(64, 32), torch::nn::ReLU(), torch::nn::Linear(32, 1));
  auto x = torch::randn({16, 64});
  net->forward(x).sum().backward();
  GradStats cpu = ComputeGradStats(net->parameters());
  net->to(torch::kCUDA);
  net->zero_grad();
  net->forward(x.to(torch::kCUDA)).sum().backward();
  GradStats gpu = ComputeGradStats(net->parameters());
  ASSERT_EQ(gpu.layer_norms.size(), cpu.layer_norms.size());
  for (size_t i = 0; i < cpu.layer_norms.size(); ++i) EXPECT_NEAR(gpu.layer_norms[i], cpu.layer_norms[i], 1e-3);
  EXPECT_NEAR(gpu.global_norm, cpu.global_norm, 1e-3 * cpu.global_norm);
}

TEST(GradStats, propagates_a_nan_gradient) {
  torch::nn::Linear fc(2, 1);
  fc->forward(torch::ones({1, 2})).sum().backward();
  fc->weight.grad()[0][0] = std::nan("");
  EXPECT_TRUE(std::isnan(ComputeGradStats(fc->parameters()).global_norm));
}

// Checkpoint files (checkpoint_dir) are replaced atomically: whole, or not there at all.
class CheckpointFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("gw-ckpt-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    options_.checkpoint_every = 1;
    options_.checkpoint_dir = dir_.string();
    options_.log = false;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path dir_;
  SessionOptions options_;
  torch::nn::Linear model_{4, 2};
  torch::optim::SGD optimizer_{model_->parameters(), torch::optim::SGDOptions(0.1)};
};

TEST_F(CheckpointFiles, are_written_whole_and_load_back) {
  Session session(*model_, optimizer_, options_);
  std::vector<std::string> names;
  for (const auto& f : std::filesystem::directory_iterator(dir_)) names.push_back(f.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"step-0.model.pt", "step-0.optim.pt"}));  // no temporaries
  torch::nn::Linear loaded(4, 2);
  torch::serialize::InputArchive in;
  in.load_from((dir_ / "step-0.model.pt").string());
  loaded->load(in);
  EXPECT_TRUE(torch::equal(loaded->weight, model_->weight));
}

TEST_F(CheckpointFiles, a_failed_write_names_the_file_and_leaves_no_partial_one) {
  // Files this process writes fail past 64 bytes (EFBIG), as on a full disk.
  auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  rlimit old{}, small{};
  ::getrlimit(RLIMIT_FSIZE, &old);
  small = old;
  small.rlim_cur = 64;
  ::setrlimit(RLIMIT_FSIZE, &small);
  std::string error;
  try {
    Session session(*model_, optimizer_, options_);
  } catch (const std::runtime_error& e) {
    error = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  ::signal(SIGXFSZ, old_handler);
  EXPECT_EQ(error.rfind("checkpoint: cannot write " + (dir_ / "step-0.model.pt").string(), 0), 0u) << error;
  EXPECT_NE(error.find("File too large"), std::string::npos) << error;
  EXPECT_TRUE(std::filesystem::is_empty(dir_)) << "a partial checkpoint was left behind";
}

// A monitor in-process and a tiny model stepping under a Session.
class SessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    monitor_ = std::make_unique<testing::TestMonitor>(
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    torch::manual_seed(3);
    model_ = torch::nn::Linear(8, 1);
    optimizer_ = std::make_unique<torch::optim::SGD>(model_->parameters(), torch::optim::SGDOptions(0.1));
    SessionOptions o;
    o.monitor = monitor_->address();
    o.run_id = "session";
    o.mode = Mode::kObserve;  // only operator commands
    o.checkpoint_every = 5;
    o.log = false;
    session_ = std::make_unique<Session>(*model_, *optimizer_, o);
  }

  // One training step; returns false when the session stopped.
  bool Step(uint64_t step) {
    if (!session_->BeginStep(step)) return false;
    session_->SetLearningRate(0.1);
    optimizer_->zero_grad();
    auto x = torch::randn({4, 8});
    auto loss = (model_->forward(x) - 1).pow(2).mean() * 100;  // large gradients, so clipping bites
    loss.backward();
    if (session_->BeforeUpdate({step, 0, loss.item<double>()})) optimizer_->step();
    session_->AfterUpdate();
    return true;
  }

  // Sends `command` and keeps training until the trainer acknowledged it; `step` is the
  // last step trained.
  testing::CommandResult Send(Command command, uint64_t* step) {
    // The run must be known to the monitor before a command can reach it.
    while (monitor_->StepsOf("session") == 0 && *step < 100'000) Step(++*step);
    auto future = monitor_->Send("session", command, 20'000);
    while (future.wait_for(std::chrono::seconds(0)) != std::future_status::ready && *step < 100'000) {
      if (!Step(++*step)) break;
    }
    return future.get();
  }

  std::vector<testing::StoredStep> StoredSteps() {
    session_->Finish(10s);
    return monitor_->StoredSteps("session");
  }

  std::unique_ptr<testing::TestMonitor> monitor_;
  torch::nn::Linear model_{nullptr};
  std::unique_ptr<torch::optim::SGD> optimizer_;
  std::unique_ptr<Session> session_;
};

TEST_F(SessionTest, an_eval_is_refused_before_its_step_is_reported_or_out_of_step_order) {
  EXPECT_THROW(session_->ReportEval({1, 0.5}), std::invalid_argument);
  Step(1);
  session_->ReportEval({1, 0.5});
  ASSERT_TRUE(session_->BeginStep(2));
  try {
    session_->ReportEval({2, 0.5});
    ADD_FAILURE() << "an eval of a step not reported yet was taken";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("last step reported: 1"), std::string::npos) << e.what();
  }
  Step(3);
  session_->ReportEval({3, 0.4});
  EXPECT_THROW(session_->ReportEval({2, 0.4}), std::invalid_argument) << "an eval out of step order was taken";
  session_->ReportEval({3, 0.3});  // the same step again is in order
}

TEST_F(SessionTest, clipping_is_in_force_from_the_acknowledged_step) {
  uint64_t step = 0;
  Command c;
  c.action = Command::Action::kClip;
  c.clip = {Clip::Kind::kNorm, 0.5};
  testing::CommandResult rec = Send(c, &step);
  ASSERT_TRUE(rec.applied);
  uint64_t at = rec.applied_at_step;
  auto steps = StoredSteps();
  ASSERT_GE(steps.size(), at);
  EXPECT_EQ(steps[at - 2].clip.kind, Clip::Kind::kOff);
  EXPECT_EQ(steps[at - 1].step, at);
  EXPECT_EQ(steps[at - 1].clip.kind, Clip::Kind::kNorm);
  EXPECT_DOUBLE_EQ(steps[at - 1].clip.threshold, 0.5);
}

TEST_F(SessionTest, learning_rate_scale_shows_in_the_acknowledged_step) {
  uint64_t step = 0;
  Command c;
  c.action = Command::Action::kScaleLr;
  c.lr_scale = 0.25;
  testing::CommandResult rec = Send(c, &step);
  uint64_t at = rec.applied_at_step;
  auto steps = StoredSteps();
  EXPECT_DOUBLE_EQ(steps[at - 2].learning_rate, 0.1);
  EXPECT_DOUBLE_EQ(steps[at - 1].learning_rate, 0.025);
}

TEST_F(SessionTest, a_skipped_update_leaves_the_weights_unchanged) {
  uint64_t step = 0;
  Command c;
  c.action = Command::Action::kSkip;
  c.skip_count = 1;
  testing::CommandResult rec = Send(c, &step);
  uint64_t at = rec.applied_at_step;
  auto steps = StoredSteps();
  EXPECT_FALSE(steps[at - 2].update_skipped);
  EXPECT_TRUE(steps[at - 1].update_skipped);
  EXPECT_EQ(session_->updates_skipped(), 1u);
}

TEST_F(SessionTest, rollback_restores_the_checkpointed_weights) {
  uint64_t step = 0;
  for (int i = 0; i < 5; ++i) Step(++step);  // checkpoint at step 5
  Command c;
  c.action = Command::Action::kRollback;
  c.rollback_to = 5;
  testing::CommandResult rec = Send(c, &step);
  ASSERT_TRUE(rec.applied) << rec.detail;
  EXPECT_EQ(rec.detail, "restored the checkpoint of step 5");
  uint64_t at = rec.applied_at_step;
  auto steps = StoredSteps();
  EXPECT_EQ(steps[at - 1].rolled_back_to, 5u);
}

TEST_F(SessionTest, rollback_picks_the_newest_checkpoint_at_or_before_the_step) {
  uint64_t step = 0;
  Command c;
  c.action = Command::Action::kRollback;
  c.rollback_to = 1;  // checkpoints at 0, 5, 10, ...: only 0 is at or before 1
  testing::CommandResult rec = Send(c, &step);
  EXPECT_TRUE(rec.applied);
  EXPECT_EQ(rec.detail, "restored the checkpoint of step 0");
}

TEST_F(SessionTest, stop_ends_the_loop_at_the_acknowledged_step) {
  uint64_t step = 0;
  Command c;
  c.action = Command::Action::kStop;
  testing::CommandResult rec = Send(c, &step);
  EXPECT_TRUE(session_->stopped());
  EXPECT_EQ(rec.applied_at_step, step);  // the loop ended on the step it was applied
  auto steps = StoredSteps();
  EXPECT_EQ(steps.back().step, step - 1);  // no report for the step that did not run
}

}  // namespace
}  // namespace gradwatch::torchmon
