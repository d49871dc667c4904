#include "gradwatch/jobs/launch_config.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace gradwatch::jobs {
namespace {

const LaunchContext kContext{"/var/gw/jobs/r1", "127.0.0.1:7070", ""};

// The field an InvalidLaunch names for `config`.
std::string RefusedField(const std::string& config, const std::string& run_id = "r1",
                         const LaunchContext& context = kContext) {
  try {
    PrepareLaunchConfig(config, run_id, context);
  } catch (const InvalidLaunch& e) {
    return e.field();
  }
  return "(accepted)";
}

TEST(LaunchConfig, refuses_a_field_that_names_another_program) {
  EXPECT_EQ(RefusedField(R"({"program": "/bin/sh", "steps": 10})"), "program");
  EXPECT_EQ(RefusedField(R"({"args": ["-c", "id"]})"), "args");
  EXPECT_EQ(RefusedField(R"({"steps": 40, "": "x"})"), "config_json");  // found by launch_config_fuzz
}

TEST(LaunchConfig, refuses_shell_syntax_in_the_run_id) {
  EXPECT_EQ(RefusedField("{}", "r1; rm -rf /"), "run_id");
  EXPECT_EQ(RefusedField(R"j({"run_id": "$(reboot)"})j", ""), "run_id");
  EXPECT_EQ(RefusedField("{}", ".."), "run_id");
}

TEST(LaunchConfig, refuses_paths_that_leave_the_job_folder_or_hold_shell_syntax) {
  EXPECT_EQ(RefusedField(R"({"trace_csv": "../../etc/cron.d/x"})"), "trace_csv");
  EXPECT_EQ(RefusedField(R"({"checkpoint_dir": "/tmp/ck"})"), "checkpoint_dir");
  EXPECT_EQ(RefusedField(R"({"spool": "a`id`"})"), "spool");
  EXPECT_EQ(RefusedField(R"({"spool": "x;touch y"})"), "spool");
}

TEST(LaunchConfig, refuses_data_dir_without_a_datasets_folder_and_outside_it) {
  EXPECT_EQ(RefusedField(R"({"data": {"dir": "tiles"}})"), "data.dir");
  LaunchContext with_data = kContext;
  with_data.datasets_dir = "/srv/datasets";
  EXPECT_EQ(RefusedField(R"({"data": {"dir": "../secrets"}})", "r1", with_data), "data.dir");
  EXPECT_EQ(RefusedField(R"({"data": {"dir": "tiles"}})", "r1", with_data), "(accepted)");
}

TEST(LaunchConfig, leaves_the_monitor_and_summary_to_the_launcher) {
  EXPECT_EQ(RefusedField(R"({"monitor": "evil.example:7070"})"), "monitor");
  EXPECT_EQ(RefusedField(R"({"no_monitor": true})"), "no_monitor");
  EXPECT_EQ(RefusedField(R"({"summary_json": "s.json"})"), "summary_json");
}

TEST(LaunchConfig, names_the_field_the_trainer_refuses) {
  EXPECT_EQ(RefusedField(R"({"lr": -1})"), "lr");
  EXPECT_EQ(RefusedField(R"({"lr": "fast"})"), "lr");
  EXPECT_EQ(RefusedField("[1, 2]"), "config_json");
  EXPECT_EQ(RefusedField("{not json"), "config_json");
}

TEST(LaunchConfig, run_ids_from_the_request_and_the_config_must_agree) {
  EXPECT_EQ(RefusedField(R"({"run_id": "a"})", "b"), "run_id");
  EXPECT_EQ(RequestedRunId(R"({"run_id": "a"})", ""), "a");
  EXPECT_EQ(RequestedRunId("{}", "b"), "b");
}

TEST(LaunchConfig, writes_a_config_that_reports_here_and_keeps_files_in_the_job_folder) {
  auto out = nlohmann::json::parse(
      PrepareLaunchConfig(R"({"steps": 40, "trace_csv": "out/trace.csv", "scenario": "seed"})", "r1", kContext));
  EXPECT_EQ(out["run_id"], "r1");
  EXPECT_EQ(out["steps"], 40);
  EXPECT_EQ(out["scenario"], "seed");
  EXPECT_EQ(out["monitor"], "127.0.0.1:7070");
  EXPECT_EQ(out["no_monitor"], false);
  EXPECT_EQ(out["trace_csv"], "/var/gw/jobs/r1/out/out/trace.csv");
  EXPECT_EQ(out["summary_json"], "/var/gw/jobs/r1/summary.json");
  EXPECT_EQ(out["spool"], "/var/gw/jobs/r1/out/spool.gwspool");
}

TEST(LaunchConfig, resolves_every_job_written_path_inside_the_output_folder) {
  auto out = nlohmann::json::parse(PrepareLaunchConfig(
      R"({"trace_csv": "./trace.csv", "spool": "s/r.gwspool", "checkpoint_dir": "ck//"})", "r1", kContext));
  EXPECT_EQ(out["trace_csv"], "/var/gw/jobs/r1/out/trace.csv");
  EXPECT_EQ(out["spool"], "/var/gw/jobs/r1/out/s/r.gwspool");
  EXPECT_EQ(out["checkpoint_dir"], "/var/gw/jobs/r1/out/ck/");
  EXPECT_EQ(OutputDir("/var/gw/jobs/r1"), "/var/gw/jobs/r1/out");
}

TEST(LaunchConfig, refuses_the_monitors_own_file_names_even_inside_the_output_folder) {
  for (const char* name : {"job.json", "config.json", "train.log", "summary.json", "job.json.tmp.x1", "a/job.json",
                           "job.json/x"}) {
    EXPECT_EQ(RefusedField(std::string(R"({"trace_csv": ")") + name + "\"}"), "trace_csv") << name;
  }
  EXPECT_EQ(RefusedField(R"({"spool": "config.json"})"), "spool");
  EXPECT_EQ(RefusedField(R"({"checkpoint_dir": "train.log"})"), "checkpoint_dir");
}

TEST(LaunchConfig, refuses_the_output_folder_itself_and_outputs_that_collide) {
  EXPECT_EQ(RefusedField(R"({"checkpoint_dir": "."})"), "checkpoint_dir");
  EXPECT_EQ(RefusedField(R"({"trace_csv": "./"})"), "trace_csv");
  EXPECT_EQ(RefusedField(R"({"trace_csv": "a.csv", "spool": "./a.csv"})"), "spool");
  EXPECT_EQ(RefusedField(R"({"checkpoint_dir": "ck", "trace_csv": "ck/step-0.model.pt"})"), "trace_csv");
  EXPECT_EQ(RefusedField(R"({"checkpoint_dir": "t/ck", "trace_csv": "t"})"), "trace_csv");
  EXPECT_EQ(RefusedField(R"({"checkpoint_dir": "ck", "trace_csv": "ck.csv", "spool": "ck2"})"), "(accepted)");
}

TEST(LaunchConfig, refuses_an_oversized_document_and_overlong_paths) {
  std::string big = R"({"scenario": "")" + std::string(kMaxLaunchConfigBytes, ' ') + "}";
  EXPECT_EQ(RefusedField(big), "config_json");
  EXPECT_THROW(RequestedRunId(big, ""), InvalidLaunch);
  EXPECT_EQ(RefusedField(R"({"faults": )" + std::string(20, '[') + std::string(20, ']') + "}"), "config_json");
  EXPECT_EQ(RefusedField(R"({"trace_csv": ")" + std::string(256, 'a') + "\"}"), "trace_csv");
  EXPECT_EQ(RefusedField(R"({"trace_csv": ")" + std::string(255, 'a') + "\"}"), "(accepted)");
}

// The trainer's own bounds (train::Limits) apply to a launch, and threads also the host's.
TEST(LaunchConfig, refuses_values_past_the_bounds_naming_field_value_and_bound) {
  LaunchContext host = kContext;
  host.max_threads = 16;
  try {
    PrepareLaunchConfig(R"({"threads": 296})", "r1", host);
    FAIL() << "296 threads accepted";
  } catch (const InvalidLaunch& e) {
    EXPECT_EQ(e.field(), "threads");
    EXPECT_EQ(std::string(e.what()), "threads: must be <= 16 (this monitor's limit for one job), got 296");
  }
  EXPECT_EQ(RefusedField(R"({"threads": 16})", "r1", host), "(accepted)");
  EXPECT_EQ(RefusedField(R"({"threads": 257})"), "threads");
  EXPECT_EQ(RefusedField(R"({"steps": 2000000000})"), "steps");
  EXPECT_EQ(RefusedField(R"({"data": {"size": 16384}})"), "data.size");
  EXPECT_EQ(RefusedField(R"({"data": {"images": 2000000}})"), "data.images");
  EXPECT_EQ(RefusedField(R"({"eval_every": 5000000000})"), "eval_every");
}

}  // namespace
}  // namespace gradwatch::jobs
