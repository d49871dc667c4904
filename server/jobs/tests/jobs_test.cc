#include "gradwatch/jobs/jobs.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "gradwatch/jobs/launch_config.h"
#include "jobs_fixture.h"

namespace gradwatch::jobs {
namespace {

namespace fs = std::filesystem;
using fakes::JobsTest;

TEST_F(JobsTest, runs_the_trainer_with_the_validated_config_and_records_success) {
  Jobs jobs(Options(), launcher_);
  v1::Job job = jobs.Launch(R"({"steps": 40})", "r1");
  EXPECT_EQ(job.job_id(), "r1");
  EXPECT_EQ(job.state(), v1::JOB_STATE_RUNNING);
  ASSERT_EQ(launcher_.started.size(), 1u);
  const LaunchSpec& spec = launcher_.started[0]->spec;
  EXPECT_EQ(spec.program, "/opt/gradwatch/bin/gradwatch-train");
  EXPECT_EQ(spec.args, (std::vector<std::string>{"--config", (dir_ / "r1" / "config.json").string()}));
  EXPECT_EQ(spec.workdir, (dir_ / "r1" / "out").string());
  EXPECT_EQ(spec.log_path, (dir_ / "r1" / "train.log").string());
  auto written = nlohmann::json::parse(std::ifstream(dir_ / "r1" / "config.json"));
  EXPECT_EQ(written["steps"], 40);
  EXPECT_EQ(written["monitor"], "127.0.0.1:7070");

  now_ += 1000;
  launcher_.started[0]->exit = ExitStatus{true, 0, 0};
  jobs.Tick();
  job = *jobs.Get("r1");
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.exit_code(), 0);
  EXPECT_EQ(job.ended_unix_millis() - job.started_unix_millis(), 1000);
}

// A scheduler that takes its time (sbatch against a busy controller): Start blocks until the
// test lets it go.
class SlowLauncher final : public Launcher {
 public:
  explicit SlowLauncher(Launcher& inner) : inner_(inner) {}
  std::unique_ptr<Process> Start(const LaunchSpec& spec) override {
    entered.set_value();
    release.get_future().wait();
    return inner_.Start(spec);
  }
  std::unique_ptr<Process> Adopt(const std::string& identity) override { return inner_.Adopt(identity); }
  std::string name() const override { return "slow"; }

  std::promise<void> entered, release;

 private:
  Launcher& inner_;
};

TEST_F(JobsTest, a_slow_start_holds_up_neither_the_other_calls_nor_a_stop_which_reaches_the_job_once_started) {
  SlowLauncher slow(launcher_);
  Jobs jobs(Options(), slow);
  auto launched = std::async(std::launch::async, [&] { return jobs.Launch(R"({"steps": 40})", "slow-1"); });
  slow.entered.get_future().wait();  // the launcher is inside Start, outside the jobs' lock
  ASSERT_EQ(jobs.List().size(), 1u);  // would wait on the lock for as long as Start takes
  EXPECT_EQ(jobs.Get("slow-1")->state(), v1::JOB_STATE_QUEUED);
  jobs.Tick();                                        // starts nothing twice, reaps, returns
  v1::Job stopping = jobs.Stop("slow-1", 1000);       // while it is being started
  EXPECT_NE(stopping.state(), v1::JOB_STATE_STOPPED);  // not "stopped before it started": it is starting
  slow.release.set_value();
  v1::Job job = launched.get();
  EXPECT_EQ(job.state(), v1::JOB_STATE_RUNNING);
  ASSERT_EQ(launcher_.started.size(), 1u);  // started once
  EXPECT_EQ(launcher_.started[0]->signals, std::vector<int>{SIGTERM});  // the stop, delivered on start
  now_ += 1000;
  jobs.Tick();
  EXPECT_EQ(launcher_.started[0]->signals, (std::vector<int>{SIGTERM, SIGKILL}));  // the grace still holds
}

TEST_F(JobsTest, a_failure_carries_the_trainers_last_words) {
  Jobs jobs(Options(), launcher_);
  jobs.Launch("{}", "r1");
  Log("r1", "step 1\ngradwatch-train: images/0.npy: not a .npy file (bad magic)\n\n");
  launcher_.started[0]->exit = ExitStatus{true, 1, 0};
  jobs.Tick();
  v1::Job job = *jobs.Get("r1");
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.exit_code(), 1);
  EXPECT_EQ(job.error(), "gradwatch-train: images/0.npy: not a .npy file (bad magic) (exit code 1)");
}

TEST_F(JobsTest, a_program_that_cannot_start_fails_the_job) {
  launcher_.fail = true;
  Jobs jobs(Options(), launcher_);
  v1::Job job = jobs.Launch("{}", "r1");
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(job.error().find("No such file"), std::string::npos);
}

TEST_F(JobsTest, limits_concurrent_jobs_and_starts_queued_ones_in_order) {
  Jobs jobs(Options(/*max_running=*/1), launcher_);
  EXPECT_EQ(jobs.Launch("{}", "a").state(), v1::JOB_STATE_RUNNING);
  now_ += 1;
  EXPECT_EQ(jobs.Launch("{}", "b").state(), v1::JOB_STATE_QUEUED);
  now_ += 1;
  EXPECT_EQ(jobs.Launch("{}", "c").state(), v1::JOB_STATE_QUEUED);
  jobs.Tick();
  EXPECT_EQ(launcher_.started.size(), 1u);
  launcher_.started[0]->exit = ExitStatus{true, 0, 0};
  jobs.Tick();
  EXPECT_EQ(jobs.Get("b")->state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(jobs.Get("c")->state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(launcher_.started.size(), 2u);
}

TEST_F(JobsTest, stop_signals_then_kills_after_the_grace_period) {
  Jobs jobs(Options(), launcher_);
  jobs.Launch("{}", "r1");
  jobs.Stop("r1", 2000);
  EXPECT_EQ(launcher_.started[0]->signals, std::vector<int>{SIGTERM});
  now_ += 1999;
  jobs.Tick();
  EXPECT_EQ(launcher_.started[0]->signals, std::vector<int>{SIGTERM}) << "killed before the grace period ended";
  now_ += 1;
  jobs.Tick();
  EXPECT_EQ(launcher_.started[0]->signals, (std::vector<int>{SIGTERM, SIGKILL}));
  launcher_.started[0]->exit = ExitStatus{true, 128 + SIGKILL, SIGKILL};
  jobs.Tick();
  v1::Job job = *jobs.Get("r1");
  EXPECT_EQ(job.state(), v1::JOB_STATE_STOPPED);
  EXPECT_EQ(job.exit_code(), 137);
  EXPECT_NE(job.error().find("killed"), std::string::npos);
}

TEST_F(JobsTest, a_job_that_stops_within_the_grace_is_not_killed) {
  Jobs jobs(Options(), launcher_);
  jobs.Launch("{}", "r1");
  jobs.Stop("r1", 0);  // the default grace, 5 s
  now_ += 300;
  launcher_.started[0]->exit = ExitStatus{true, 143, 0};
  jobs.Tick();
  now_ += 10'000;
  jobs.Tick();
  EXPECT_EQ(launcher_.started[0]->signals, std::vector<int>{SIGTERM});
  EXPECT_EQ(jobs.Get("r1")->state(), v1::JOB_STATE_STOPPED);
  EXPECT_EQ(jobs.Get("r1")->error(), "");
}

TEST_F(JobsTest, stopping_a_queued_job_never_starts_it) {
  Jobs jobs(Options(1), launcher_);
  jobs.Launch("{}", "a");
  jobs.Launch("{}", "b");
  EXPECT_EQ(jobs.Stop("b", 0).state(), v1::JOB_STATE_STOPPED);
  launcher_.started[0]->exit = ExitStatus{true, 0, 0};
  jobs.Tick();
  EXPECT_EQ(launcher_.started.size(), 1u);
  EXPECT_THROW(jobs.Stop("nope", 0), JobError);
}

TEST_F(JobsTest, refuses_a_run_id_in_use) {
  Jobs jobs(Options(), launcher_);
  jobs.Launch("{}", "r1");
  try {
    jobs.Launch("{}", "r1");
    FAIL();
  } catch (const JobError& e) {
    EXPECT_EQ(e.code(), JobError::Code::kAlreadyExists);
  }
  EXPECT_THROW(jobs.Launch("{}", "hand-started", [](const std::string& id) { return id == "hand-started"; }),
               JobError);
  EXPECT_THROW(jobs.Launch(R"({"program": "/bin/sh"})", "r2"), InvalidLaunch);
  EXPECT_FALSE(fs::exists(dir_ / "r2")) << "a refused launch left a folder behind";
}

TEST_F(JobsTest, generates_distinct_run_ids) {
  Jobs jobs(Options(10), launcher_);
  std::string a = jobs.Launch("{}", "").job_id(), b = jobs.Launch("{}", "").job_id();
  EXPECT_NE(a, b);
  EXPECT_EQ(nlohmann::json::parse(jobs.Get(a)->config_json())["run_id"], a);
}

TEST_F(JobsTest, gives_each_job_a_reporter_token_for_its_own_run) {
  JobsOptions o = Options();
  o.reporter_tokens = true;
  Jobs jobs(o, launcher_);
  jobs.Launch("{}", "r1");
  std::string token;
  for (const auto& e : launcher_.started[0]->spec.env) {
    if (e.rfind("GRADWATCH_TOKEN=", 0) == 0) token = e.substr(16);
  }
  ASSERT_FALSE(token.empty());
  EXPECT_EQ(jobs.RunForToken(token), "r1");
  EXPECT_EQ(jobs.RunForToken("other"), std::nullopt);
  launcher_.started[0]->exit = ExitStatus{true, 0, 0};
  jobs.Tick();
  EXPECT_EQ(jobs.RunForToken(token), std::nullopt) << "an ended job's token still works";
  EXPECT_EQ(fs::status(dir_ / "r1" / "job.json").permissions() & fs::perms::others_read, fs::perms::none);
}

TEST_F(JobsTest, a_restarted_monitor_adopts_running_jobs_and_keeps_every_record) {
  {
    Jobs jobs(Options(1), launcher_);
    jobs.Launch(R"({"steps": 77})", "running");
    jobs.Launch("{}", "queued");
  }
  Jobs again(Options(1), launcher_);
  v1::Job running = *again.Get("running");
  EXPECT_EQ(running.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(nlohmann::json::parse(running.config_json())["steps"], 77);
  EXPECT_EQ(again.Get("queued")->state(), v1::JOB_STATE_QUEUED);
  // The adopted job ends; it was not our child, so its summary tells how.
  std::ofstream(dir_ / "running" / "summary.json") << "{}";
  launcher_.started[0]->exit = ExitStatus{false, -1, 0};
  again.Tick();
  EXPECT_EQ(again.Get("running")->state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(again.Get("queued")->state(), v1::JOB_STATE_RUNNING);
}

TEST_F(JobsTest, a_job_that_ended_while_the_monitor_was_down_is_judged_by_what_it_left) {
  {
    Jobs jobs(Options(), launcher_);
    jobs.Launch("{}", "failed");
    jobs.Launch("{}", "vanished");
  }
  Log("failed", "gradwatch-train: device: cuda requested but LibTorch has no CUDA\n");
  for (auto& s : launcher_.started) s->exit = ExitStatus{false, -1, 0};
  Jobs again(Options(), launcher_);
  EXPECT_EQ(again.Get("failed")->state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(again.Get("failed")->error().find("no CUDA"), std::string::npos);
  EXPECT_EQ(again.Get("vanished")->state(), v1::JOB_STATE_LOST);
}

}  // namespace
}  // namespace gradwatch::jobs
