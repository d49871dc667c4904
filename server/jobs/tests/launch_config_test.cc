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

TEST(LaunchConfig, RefusesAFieldThatNamesAnotherProgram) {
  EXPECT_EQ(RefusedField(R"({"program": "/bin/sh", "steps": 10})"), "program");
  EXPECT_EQ(RefusedField(R"({"args": ["-c", "id"]})"), "args");
}

TEST(LaunchConfig, RefusesShellSyntaxInTheRunId) {
  EXPECT_EQ(RefusedField("{}", "r1; rm -rf /"), "run_id");
  EXPECT_EQ(RefusedField(R"j({"run_id": "$(reboot)"})j", ""), "run_id");
  EXPECT_EQ(RefusedField("{}", ".."), "run_id");
}

TEST(LaunchConfig, RefusesPathsThatLeaveTheJobFolderOrHoldShellSyntax) {
  EXPECT_EQ(RefusedField(R"({"trace_csv": "../../etc/cron.d/x"})"), "trace_csv");
  EXPECT_EQ(RefusedField(R"({"checkpoint_dir": "/tmp/ck"})"), "checkpoint_dir");
  EXPECT_EQ(RefusedField(R"({"spool": "a`id`"})"), "spool");
  EXPECT_EQ(RefusedField(R"({"spool": "x;touch y"})"), "spool");
}

TEST(LaunchConfig, RefusesDataDirWithoutADatasetsFolderAndOutsideIt) {
  EXPECT_EQ(RefusedField(R"({"data": {"dir": "tiles"}})"), "data.dir");
  LaunchContext with_data = kContext;
  with_data.datasets_dir = "/srv/datasets";
  EXPECT_EQ(RefusedField(R"({"data": {"dir": "../secrets"}})", "r1", with_data), "data.dir");
  EXPECT_EQ(RefusedField(R"({"data": {"dir": "tiles"}})", "r1", with_data), "(accepted)");
}

TEST(LaunchConfig, LeavesTheMonitorAndSummaryToTheLauncher) {
  EXPECT_EQ(RefusedField(R"({"monitor": "evil.example:7070"})"), "monitor");
  EXPECT_EQ(RefusedField(R"({"no_monitor": true})"), "no_monitor");
  EXPECT_EQ(RefusedField(R"({"summary_json": "s.json"})"), "summary_json");
}

TEST(LaunchConfig, NamesTheFieldTheTrainerRefuses) {
  EXPECT_EQ(RefusedField(R"({"lr": -1})"), "lr");
  EXPECT_EQ(RefusedField(R"({"lr": "fast"})"), "lr");
  EXPECT_EQ(RefusedField("[1, 2]"), "config_json");
  EXPECT_EQ(RefusedField("{not json"), "config_json");
}

TEST(LaunchConfig, RunIdsFromTheRequestAndTheConfigMustAgree) {
  EXPECT_EQ(RefusedField(R"({"run_id": "a"})", "b"), "run_id");
  EXPECT_EQ(RequestedRunId(R"({"run_id": "a"})", ""), "a");
  EXPECT_EQ(RequestedRunId("{}", "b"), "b");
}

TEST(LaunchConfig, WritesAConfigThatReportsHereAndKeepsFilesInTheJobFolder) {
  auto out = nlohmann::json::parse(
      PrepareLaunchConfig(R"({"steps": 40, "trace_csv": "out/trace.csv", "scenario": "seed"})", "r1", kContext));
  EXPECT_EQ(out["run_id"], "r1");
  EXPECT_EQ(out["steps"], 40);
  EXPECT_EQ(out["scenario"], "seed");
  EXPECT_EQ(out["monitor"], "127.0.0.1:7070");
  EXPECT_EQ(out["no_monitor"], false);
  EXPECT_EQ(out["trace_csv"], "/var/gw/jobs/r1/out/trace.csv");
  EXPECT_EQ(out["summary_json"], "/var/gw/jobs/r1/summary.json");
  EXPECT_EQ(out["spool"], "/var/gw/jobs/r1/spool.gwspool");
}

}  // namespace
}  // namespace gradwatch::jobs
