// Argument handling: usage errors exit 2 with "gradwatch: " and a did-you-mean; --help and
// --version succeed. None of these reach a monitor.
#include <gtest/gtest.h>

#include <regex>

#include "gradwatch/common/version.h"
#include "run_cli.h"

namespace gradwatch::cli {
namespace {


bool StartsWith(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

TEST(Arguments, an_unknown_verb_exits_2_and_names_the_closest_verb) {
  auto r = Cli({"rnus"});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(StartsWith(r.err, "gradwatch: unknown verb \"rnus\"; did you mean \"runs\"?")) << r.err;
  EXPECT_EQ(r.out, "");
}

TEST(Arguments, an_unknown_verb_far_from_every_verb_gets_no_suggestion) {
  auto r = Cli({"frobnicate"});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(StartsWith(r.err, "gradwatch: unknown verb \"frobnicate\"")) << r.err;
  EXPECT_EQ(r.err.find("did you mean"), std::string::npos) << r.err;
}

TEST(Arguments, a_mistyped_global_flag_names_the_closest_flag) {
  auto r = Cli({"--jsno", "runs"});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(StartsWith(r.err, "gradwatch: unknown flag \"--jsno\"; did you mean \"--json\"?")) << r.err;
}

TEST(Arguments, a_mistyped_flag_of_a_verb_names_the_verbs_flag) {
  auto r = Cli({"--server", "127.0.0.1:1", "export", "r1", "--fromat", "jsonl"});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(StartsWith(r.err, "gradwatch: unknown flag \"--fromat\" for export; did you mean \"--format\"?"))
      << r.err;
}

TEST(Arguments, a_flag_of_an_option_group_is_known) {
  auto r = Cli({"clip", "r1", "--max-nrom", "1"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("did you mean \"--max-norm\"?"), std::string::npos) << r.err;
}

TEST(Arguments, a_missing_run_id_exits_2_with_the_prefix) {
  auto r = Cli({"events"});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(StartsWith(r.err, "gradwatch: ")) << r.err;
  EXPECT_NE(r.err.find("RUN"), std::string::npos) << r.err;
}

TEST(Arguments, no_verb_exits_2) {
  auto r = Cli({});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(StartsWith(r.err, "gradwatch: ")) << r.err;
  EXPECT_NE(r.err.find("--help"), std::string::npos) << r.err;
}

TEST(Arguments, a_value_outside_its_choices_exits_2) {
  EXPECT_EQ(Cli({"export", "r1", "--format", "xml"}).code, 2);
  EXPECT_EQ(Cli({"mode", "r1", "fast"}).code, 2);
  EXPECT_EQ(Cli({"clip", "r1"}).code, 2);  // one of --max-norm, --max-value, --adaptive, --off
  EXPECT_EQ(Cli({"--timeout-ms", "soon", "runs"}).code, 2);
}

TEST(Arguments, version_prints_the_projects_version_and_succeeds) {
  auto r = Cli({"--version"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, std::string("gradwatch ") + Version() + "\n");
  EXPECT_TRUE(std::regex_match(Version(), std::regex(R"(\d+\.\d+\.\d+)"))) << Version();
}

TEST(Arguments, help_lists_every_family_of_verbs_and_succeeds) {
  auto r = Cli({"--help"});
  EXPECT_EQ(r.code, 0);
  for (const char* verb : {"runs", "export", "watch", "clip", "commands", "launch", "jobs", "replay"}) {
    EXPECT_NE(r.out.find(verb), std::string::npos) << verb;
  }
}

TEST(Arguments, a_malformed_threshold_is_a_failure_before_any_call) {
  auto r = Cli({"--server", "127.0.0.1:1", "policy", "r1", "--threshold", "spike_z_critical"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("expected NAME=NUMBER"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace gradwatch::cli
