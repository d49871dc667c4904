// `launch` checks its config before asking the monitor: syntax errors with their position,
// and every field a launch cannot take, at once.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "client.h"
#include "launch_config.h"
#include "run_cli.h"
#include "train/config.h"

namespace gradwatch::cli {
namespace {


class LaunchConfig : public ::testing::Test {
 protected:
  std::string Write(const std::string& text) {
    std::ofstream(path_) << text;
    return path_;
  }
  void TearDown() override { std::remove(path_.c_str()); }

  // Unreachable: a config that fails its checks must never be sent.
  CliResult Launch(std::vector<std::string> args) {
    args.insert(args.begin(), {"--server", "127.0.0.1:1", "--timeout-ms", "200", "launch"});
    return Cli(args);
  }

 private:
  // One file per test process: ctest runs the tests of this file side by side.
  std::string path_ = ::testing::TempDir() + "launch_config_test-" + std::to_string(::getpid()) + ".json";
};


TEST_F(LaunchConfig, a_json_syntax_error_is_reported_with_its_line_and_column) {
  auto r = Launch({Write("{\"steps\": 10,\n  \"lr\": }\n")});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find(".json: JSON syntax error at line 2, column"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("not a JSON object"), std::string::npos) << r.err;
}

TEST_F(LaunchConfig, a_document_that_is_not_an_object_is_named_as_such) {
  auto r = Launch({Write("[1, 2]")});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("a config is a JSON object ({...}); this file holds a JSON array"), std::string::npos) << r.err;
}

TEST_F(LaunchConfig, every_field_a_launch_cannot_take_is_reported_at_once) {
  auto r = Launch({Write(R"({"stpes": 10, "model": {"dept": 3}, "monitor": "h:1", "summary_json": "s.json",
                             "faults": [{"kind": "nan", "stepp": 3}], "lr": 0.1})")});
  EXPECT_EQ(r.code, 1);
  for (const char* line : {"has 5 fields a launch cannot take:",
                           "\n  stpes: unknown field; did you mean \"steps\"?",
                           "\n  model.dept: unknown field; did you mean \"model.depth\"?",
                           "\n  monitor: a launched job reports to this monitor; leave it out",
                           "\n  summary_json: set by the launcher; leave it out",
                           "\n  faults[0].stepp: unknown field; did you mean \"faults[0].step\"?"}) {
    EXPECT_NE(r.err.find(line), std::string::npos) << line << "\n" << r.err;
  }
  EXPECT_EQ(r.err.find("cannot reach"), std::string::npos) << "the config was sent: " << r.err;
}

TEST_F(LaunchConfig, a_mistyped_set_field_is_reported_with_a_suggestion) {
  auto r = Launch({"--set", "stesp=10", "--set", "data.dri=tiles"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("the config has 2 fields"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("data.dri: unknown field; did you mean \"data.dir\"?"), std::string::npos) << r.err;
}

TEST_F(LaunchConfig, a_set_without_a_value_is_refused) {
  auto r = Launch({"--set", "steps"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--set steps: expected FIELD=VALUE"), std::string::npos) << r.err;
}

TEST(LaunchConfigProblems, a_printed_trainer_config_needs_only_the_launchers_fields_removed) {
  auto problems = LaunchConfigProblems(nlohmann::json::parse(train::ToJson(train::TrainConfig{})));
  ASSERT_EQ(problems.size(), 3u);
  EXPECT_EQ(problems[0].rfind("monitor: ", 0), 0u) << problems[0];
  EXPECT_EQ(problems[1].rfind("no_monitor: ", 0), 0u) << problems[1];
  EXPECT_EQ(problems[2].rfind("summary_json: ", 0), 0u) << problems[2];
}

TEST(LaunchConfigJson, sets_fields_over_the_file_by_dotted_path) {
  LaunchOptions o;
  o.sets = {"steps=200", "data.dir=tiles", "scenario=\"seed\""};
  auto config = nlohmann::json::parse(LaunchConfigJson(o));
  EXPECT_EQ(config["steps"], 200);
  EXPECT_EQ(config["data"]["dir"], "tiles");
  EXPECT_EQ(config["scenario"], "seed");
}

}  // namespace
}  // namespace gradwatch::cli
