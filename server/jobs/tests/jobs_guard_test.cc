// What keeps one job or one bad file from hurting the monitor: job-written paths stay in
// the job's out/ folder, a corrupt record costs only its job, the queue is bounded, and a
// folder or record that cannot be written is reported, never half-left.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "gradwatch/common/file.h"
#include "gradwatch/jobs/jobs.h"
#include "gradwatch/jobs/launch_config.h"
#include "jobs_fixture.h"

namespace gradwatch::jobs {
namespace {

namespace fs = std::filesystem;
using fakes::JobsTest;

// Files this process writes fail past `bytes` (EFBIG), as on a full disk, for one scope.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    old_handler_ = ::signal(SIGXFSZ, SIG_IGN);
    ::getrlimit(RLIMIT_FSIZE, &old_);
    rlimit limit = old_;
    limit.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &limit);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &old_);
    ::signal(SIGXFSZ, old_handler_);
  }

 private:
  rlimit old_{};
  sighandler_t old_handler_;
};

bool Logged(const std::vector<std::string>& lines, const std::string& text) {
  for (const auto& line : lines) {
    if (line.find(text) != std::string::npos) return true;
  }
  return false;
}

TEST_F(JobsTest, a_jobs_outputs_cannot_overwrite_its_record_and_the_monitor_restarts) {
  {
    Jobs jobs(Options(), launcher_);
    EXPECT_THROW(jobs.Launch(R"({"trace_csv": "job.json"})", "r1"), InvalidLaunch);
    jobs.Launch(R"({"trace_csv": "trace.csv", "checkpoint_dir": "ck"})", "r2");
    auto config = nlohmann::json::parse(jobs.Get("r2")->config_json());
    EXPECT_EQ(config["trace_csv"], (dir_ / "r2" / "out" / "trace.csv").string());
    EXPECT_EQ(config["spool"], (dir_ / "r2" / "out" / "spool.gwspool").string());
    EXPECT_TRUE(fs::is_directory(dir_ / "r2" / "out"));
    std::ofstream(config["trace_csv"].get<std::string>()) << "step,loss\n1,0.5\n";  // what the trainer writes
  }
  Jobs again(Options(), launcher_);
  EXPECT_EQ(again.Get("r2")->state(), v1::JOB_STATE_RUNNING);
  EXPECT_TRUE(logged_.empty());
}

TEST_F(JobsTest, a_corrupt_record_costs_only_its_own_job) {
  {
    Jobs jobs(Options(), launcher_);
    jobs.Launch("{}", "healthy");
    jobs.Launch(R"({"steps": 9})", "broken");
  }
  const fs::path record = dir_ / "broken" / "job.json";
  std::ofstream(record, std::ios::trunc) << "{\"job\": {\"jobId\": \"bro";
  Jobs again(Options(), launcher_);  // starts
  EXPECT_EQ(again.Get("healthy")->state(), v1::JOB_STATE_RUNNING);
  v1::Job lost = *again.Get("broken");
  EXPECT_EQ(lost.state(), v1::JOB_STATE_LOST);
  EXPECT_NE(lost.error().find("job.json is unusable (not JSON: "), std::string::npos) << lost.error();
  EXPECT_EQ(nlohmann::json::parse(lost.config_json())["steps"], 9);
  EXPECT_EQ(ReadFileOrThrow(record.string() + ".corrupt"), "{\"job\": {\"jobId\": \"bro");
  EXPECT_TRUE(Logged(logged_, "JOB RECORD UNUSABLE: " + record.string())) << ::testing::PrintToString(logged_);

  logged_.clear();
  Jobs third(Options(), launcher_);  // the lost record written in its place reads back
  EXPECT_EQ(third.Get("broken")->state(), v1::JOB_STATE_LOST);
  EXPECT_TRUE(logged_.empty()) << ::testing::PrintToString(logged_);
}

TEST_F(JobsTest, a_record_of_the_wrong_shape_or_for_another_folder_is_quarantined) {
  {
    Jobs jobs(Options(), launcher_);
    for (const char* id : {"a", "b", "c", "d"}) jobs.Launch("{}", id);
  }
  auto rewrite = [&](const std::string& id, auto edit) {
    auto doc = nlohmann::json::parse(ReadFileOrThrow((dir_ / id / "job.json").string()));
    edit(doc);
    std::ofstream(dir_ / id / "job.json", std::ios::trunc) << doc.dump();
  };
  rewrite("a", [](auto& d) { d["token"] = 42; });
  rewrite("b", [](auto& d) { d["job"]["jobId"] = "c"; });
  rewrite("c", [](auto& d) { d["job"]["state"] = "JOB_STATE_EXPLODED"; });
  std::ofstream(dir_ / "d" / "job.json", std::ios::trunc) << "\x1b[2J\xff\xfe";
  Jobs again(Options(), launcher_);
  EXPECT_NE(again.Get("a")->error().find("token: not a string"), std::string::npos) << again.Get("a")->error();
  EXPECT_NE(again.Get("b")->error().find("job_id \"c\" is not its folder's name"), std::string::npos);
  EXPECT_NE(again.Get("c")->error().find("job: "), std::string::npos) << again.Get("c")->error();
  for (const char* id : {"a", "b", "c", "d"}) EXPECT_EQ(again.Get(id)->state(), v1::JOB_STATE_LOST) << id;
  EXPECT_EQ(again.Get("d")->error().find('\x1b'), std::string::npos) << "a control byte reached the job's error";
}

TEST_F(JobsTest, refuses_a_launch_past_the_queue_limit_and_names_it) {
  JobsOptions o = Options(/*max_running=*/1);
  o.max_queued = 2;
  Jobs jobs(o, launcher_);
  jobs.Launch("{}", "a");
  jobs.Launch("{}", "b");
  jobs.Launch("{}", "c");
  try {
    jobs.Launch("{}", "d");
    FAIL() << "a third job was queued past max_queued 2";
  } catch (const JobError& e) {
    EXPECT_EQ(e.code(), JobError::Code::kResourceExhausted);
    EXPECT_NE(std::string(e.what()).find("--max-queued-jobs 2"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir_ / "d"));
  launcher_.started[0]->exit = ExitStatus{true, 0, 0};
  jobs.Tick();  // b starts: room in the queue again
  EXPECT_EQ(jobs.Launch("{}", "d").state(), v1::JOB_STATE_QUEUED);
}

TEST_F(JobsTest, refuses_more_threads_than_the_host_allows_one_job) {
  JobsOptions o = Options();
  o.max_threads = 8;
  Jobs jobs(o, launcher_);
  try {
    jobs.Launch(R"({"threads": 296})", "greedy");
    FAIL() << "296 threads accepted";
  } catch (const InvalidLaunch& e) {
    EXPECT_EQ(e.field(), "threads");
    EXPECT_NE(std::string(e.what()).find("must be <= 8"), std::string::npos) << e.what();
  }
  EXPECT_EQ(jobs.Launch(R"({"threads": 8})", "fair").state(), v1::JOB_STATE_RUNNING);
}

TEST_F(JobsTest, a_launch_whose_folder_cannot_be_written_leaves_nothing_behind) {
  Jobs jobs(Options(), launcher_);
  try {
    FileSizeLimit limit(64);  // config.json is larger
    jobs.Launch("{}", "r1");
    FAIL() << "launched without its config written";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("job r1: cannot write its folder: cannot write "), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("File too large"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir_ / "r1"));
  EXPECT_FALSE(jobs.Get("r1"));
  EXPECT_EQ(jobs.Launch("{}", "r1").state(), v1::JOB_STATE_RUNNING);  // the id is free again
}

TEST_F(JobsTest, a_record_that_cannot_be_saved_during_tick_is_logged_not_thrown) {
  Jobs jobs(Options(), launcher_);
  jobs.Launch("{}", "r1");
  launcher_.started[0]->exit = ExitStatus{true, 0, 0};
  {
    FileSizeLimit limit(64);
    EXPECT_NO_THROW(jobs.Tick());
  }
  EXPECT_EQ(jobs.Get("r1")->state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_TRUE(Logged(logged_, "job r1: its record is not saved: cannot write ")) << ::testing::PrintToString(logged_);
}

}  // namespace
}  // namespace gradwatch::jobs
